//! The responsibility matrix: the team's map of who owns which control, where.
//!
//! Loaded from `config/responsibility.toml` (documented there) in two steps:
//! the raw TOML shape (the `raw` module) is deserialized with spans, then validated
//! without IO into [`Matrix`], whose lookups the detector calls per finding:
//!
//! - per service (`s3.amazonaws.com`, `Microsoft.Storage`, `storage.googleapis.com`):
//!   the service model and, per [`Domain`], the [`Side`] that owns it;
//! - the data tier of an account / subscription / project or resource;
//! - the owning team of an account or resource (who gets paged);
//! - the approved change paths (IaC principals and user agents) per scope;
//! - identity links across clouds (one person, three identities);
//! - compliance boundaries (frameworks in force, services authorized inside);
//! - connection points between clouds or to on-premises, owned jointly;
//! - review metadata (last review, provider documents checked against).
//!
//! Patterns are globs (`arn:aws:iam::*:role/terraform-*`), matched
//! case-insensitively. Lookups take the first matching entry in file order, so
//! specific entries go before general ones.

mod raw;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::event::Cloud;
use crate::util::{LowerKey, Memo, memo_owner};

pub use raw::RawMatrix;

/// The six control domains the shared responsibility model splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    /// Identity & access management.
    #[serde(alias = "identity_access")]
    Identity,
    /// Network exposure.
    #[serde(alias = "network_exposure")]
    Network,
    /// Data protection & encryption.
    #[serde(alias = "data_protection")]
    Data,
    /// Logging & monitoring.
    #[serde(alias = "logging_monitoring")]
    Logging,
    /// Guardrails & policy.
    #[serde(alias = "guardrails_policy")]
    Guardrails,
    /// Compute & runtime.
    #[serde(alias = "compute_runtime")]
    Compute,
}

impl Domain {
    pub const ALL: [Domain; 6] = [
        Domain::Identity,
        Domain::Network,
        Domain::Data,
        Domain::Logging,
        Domain::Guardrails,
        Domain::Compute,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Identity => "identity",
            Domain::Network => "network",
            Domain::Data => "data",
            Domain::Logging => "logging",
            Domain::Guardrails => "guardrails",
            Domain::Compute => "compute",
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who owns a control.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Provider,
    Customer,
    Shared,
}

/// The service model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceModel {
    Iaas,
    Paas,
    Saas,
}

/// Data sensitivity: public, internal, regulated (PII/PHI/financial).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Low,
    Medium,
    High,
}

/// Why a matrix could not be loaded. Messages carry the line number.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    #[error("cannot read matrix {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// One service's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceEntry {
    pub cloud: Cloud,
    pub model: ServiceModel,
    /// Read for every finding: hashed with foldhash, not SipHash.
    pub owners: HashMap<Domain, Side, hashbrown::DefaultHashBuilder>,
}

/// A set of scopes: accounts / subscriptions / projects, and resource globs.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    accounts: Vec<String>,
    resources: Vec<GlobMatcher>,
}

impl Scope {
    /// Whether the scope names no account and no resource (it then covers everything).
    pub fn is_global(&self) -> bool {
        self.accounts.is_empty() && self.resources.is_empty()
    }

    pub fn matches_account(&self, account: Option<&str>) -> bool {
        account.is_some_and(|a| {
            self.accounts
                .iter()
                .any(|s| s == "*" || s.eq_ignore_ascii_case(a))
        })
    }

    pub fn matches_resource(&self, resource: &str) -> bool {
        self.resources.iter().any(|g| g.is_match(resource))
    }

    /// Account match, or any resource match, or a global scope.
    pub fn matches(&self, account: Option<&str>, resources: &[&str]) -> bool {
        self.is_global()
            || self.matches_account(account)
            || resources.iter().any(|r| self.matches_resource(r))
    }
}

#[derive(Clone, Debug)]
pub struct TierRule {
    pub tier: Tier,
    pub scope: Scope,
}

#[derive(Clone, Debug)]
pub struct OwnerRule {
    pub team: String,
    pub scope: Scope,
}

/// The IaC pipeline's principals and user agents for a scope.
#[derive(Clone, Debug)]
pub struct ChangePath {
    pub name: String,
    pub scope: Scope,
    pub principals: Vec<GlobMatcher>,
    pub user_agents: Vec<GlobMatcher>,
    /// The patterns as written, to name them in findings.
    pub described: Vec<String>,
}

impl ChangePath {
    /// Whether this principal / user agent is this path.
    pub fn admits(&self, principal_ids: &[&str], user_agent: Option<&str>) -> bool {
        let principal_ok = self.principals.is_empty()
            || principal_ids
                .iter()
                .any(|p| self.principals.iter().any(|g| g.is_match(p)));
        let agent_ok = self.user_agents.is_empty()
            || user_agent.is_some_and(|ua| self.user_agents.iter().any(|g| g.is_match(ua)));
        principal_ok && agent_ok
    }
}

/// One person's identities in the three clouds.
#[derive(Clone, Debug)]
pub struct IdentityLink {
    pub person: String,
    pub identities: Vec<(Cloud, GlobMatcher)>,
}

#[derive(Clone, Debug)]
pub struct ComplianceBoundary {
    pub name: String,
    pub frameworks: Vec<String>,
    pub scope: Scope,
    /// Lower-cased service names authorized inside the boundary.
    pub authorized_services: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct ConnectionPoint {
    pub name: String,
    pub scope: Scope,
    pub teams: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Review {
    pub last_reviewed: Option<NaiveDate>,
    pub provider_documents: Vec<String>,
    pub reviewers: Vec<String>,
}

/// The validated matrix. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct Matrix {
    /// Rows by `cloud|service`, lower-cased (see [`crate::util::LowerKey`]).
    /// Hashed with foldhash: looked up for every event and finding, through
    /// a per-thread memo of the names as written ([`SERVICES`]).
    services: hashbrown::HashMap<Box<str>, u32>,
    /// (name as written, row), in the order of first insertion.
    rows: Vec<(String, ServiceEntry)>,
    /// This matrix's entries in [`SERVICES`]: a new number whenever
    /// the rows change.
    memo_id: u64,
    pub tiers: Vec<TierRule>,
    pub owners: Vec<OwnerRule>,
    pub change_paths: Vec<ChangePath>,
    pub identity_links: Vec<IdentityLink>,
    pub compliance_boundaries: Vec<ComplianceBoundary>,
    pub connection_points: Vec<ConnectionPoint>,
    pub review: Review,
}

thread_local! {
    /// This thread's row numbers, by cloud and service as written.
    static SERVICES: std::cell::RefCell<Memo<Option<u32>>> = std::cell::RefCell::default();
}

/// Warnings found by [`Matrix::check`]: valid, but worth a look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixWarning(pub String);

/// Reviews older than this draw a warning.
pub const REVIEW_MAX_AGE_DAYS: i64 = 90;

impl Matrix {
    pub fn load(path: &Path) -> Result<Matrix, MatrixError> {
        let text = std::fs::read_to_string(path).map_err(|source| MatrixError::Read {
            path: path.to_owned(),
            source,
        })?;
        Matrix::from_toml(&text).map_err(|message| MatrixError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses and validates matrix text. Errors name the line.
    pub fn from_toml(text: &str) -> Result<Matrix, String> {
        let raw: RawMatrix =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        raw.validate(text)
    }

    /// The built-in default matrix (`config/responsibility.toml`).
    pub fn builtin() -> Matrix {
        Matrix::from_toml(include_str!("../../config/responsibility.toml"))
            .expect("the bundled responsibility matrix is valid (tested)")
    }

    pub(crate) fn insert_service(&mut self, name: &str, entry: ServiceEntry) {
        let key = LowerKey::owned(&[entry.cloud.as_str(), name]);
        let row = (name.to_owned(), entry);
        match self.services.get(&key) {
            Some(&at) => self.rows[at as usize] = row,
            None => {
                self.services.insert(key, self.rows.len() as u32);
                self.rows.push(row);
            }
        }
        self.memo_id = memo_owner();
    }

    /// The service's row; case-insensitive, no allocation.
    pub fn service(&self, cloud: Cloud, service: &str) -> Option<&ServiceEntry> {
        let find = || {
            LowerKey::with(&[cloud.as_str(), service], |key| {
                self.services.get(key).copied()
            })
        };
        let parts = [cloud.as_str().as_bytes(), service.as_bytes()];
        let at = Memo::with(&SERVICES, self.memo_id, &parts, find, |at| *at);
        at.and_then(|at| self.rows.get(at as usize))
            .map(|(_, row)| row)
    }

    /// (name as written, row) for every service.
    pub fn services(&self) -> impl Iterator<Item = (&str, &ServiceEntry)> {
        self.rows.iter().map(|(name, entry)| (name.as_str(), entry))
    }

    /// Who owns `domain` for this service; `None` for an unmapped service.
    pub fn owner_side(&self, cloud: Cloud, service: &str, domain: Domain) -> Option<Side> {
        self.service(cloud, service)
            .map(|s| s.owners.get(&domain).copied().unwrap_or(Side::Customer))
    }

    pub fn data_tier(&self, account: Option<&str>, resources: &[&str]) -> Option<Tier> {
        // Resource patterns are more specific than accounts: look at them first.
        self.tiers
            .iter()
            .find(|t| resources.iter().any(|r| t.scope.matches_resource(r)))
            .or_else(|| self.tiers.iter().find(|t| t.scope.matches_account(account)))
            .map(|t| t.tier)
    }

    pub fn owning_team(&self, account: Option<&str>, resources: &[&str]) -> Option<&str> {
        self.owners
            .iter()
            .find(|o| resources.iter().any(|r| o.scope.matches_resource(r)))
            .or_else(|| {
                self.owners
                    .iter()
                    .find(|o| o.scope.matches_account(account))
            })
            .map(|o| o.team.as_str())
    }

    /// The change paths that govern this scope (empty: the scope has none).
    pub fn change_paths_for<'m>(
        &'m self,
        account: Option<&str>,
        resources: &[&str],
    ) -> Vec<&'m ChangePath> {
        self.change_paths
            .iter()
            .filter(|p| p.scope.matches(account, resources))
            .collect()
    }

    /// The person behind an identity, through the identity links.
    pub fn person_of(&self, cloud: Cloud, identities: &[&str]) -> Option<&str> {
        if self.identity_links.is_empty() {
            return None;
        }
        // Each identity prepared for matching once, not once per pattern.
        let candidates: smallvec::SmallVec<[globset::Candidate<'_>; 2]> =
            identities.iter().map(globset::Candidate::new).collect();
        self.identity_links
            .iter()
            .find(|link| {
                link.identities
                    .iter()
                    .any(|(c, g)| *c == cloud && candidates.iter().any(|i| g.is_match_candidate(i)))
            })
            .map(|link| link.person.as_str())
    }

    /// The boundaries this account is inside of.
    pub fn boundaries_for(
        &self,
        account: Option<&str>,
    ) -> impl Iterator<Item = &ComplianceBoundary> {
        self.compliance_boundaries
            .iter()
            .filter(move |b| b.scope.matches_account(account))
    }

    pub fn connection_point(&self, resources: &[&str]) -> Option<&ConnectionPoint> {
        self.connection_points
            .iter()
            .find(|c| resources.iter().any(|r| c.scope.matches_resource(r)))
    }

    /// Non-fatal findings about the matrix itself, as of `today`.
    pub fn check(&self, today: NaiveDate) -> Vec<MatrixWarning> {
        let mut warnings = Vec::new();
        match self.review.last_reviewed {
            None => warnings.push(MatrixWarning("review.last_reviewed is not set".into())),
            Some(date) => {
                let age = (today - date).num_days();
                if age > REVIEW_MAX_AGE_DAYS {
                    warnings.push(MatrixWarning(format!(
                        "last reviewed on {date}, {age} days ago (more than {REVIEW_MAX_AGE_DAYS}): review it against the providers' current documents"
                    )));
                }
            }
        }
        if self.change_paths.is_empty() {
            warnings.push(MatrixWarning(
                "no change_paths: out-of-band changes cannot be told from pipeline changes".into(),
            ));
        }
        warnings
    }
}

pub(crate) fn glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .case_insensitive(true)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("invalid pattern `{pattern}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundled() -> Matrix {
        Matrix::builtin()
    }

    #[test]
    fn identities_lead_to_their_person_in_their_own_cloud_only() {
        let m = bundled();
        let person = |cloud, ids: &[&str]| m.person_of(cloud, ids).map(str::to_owned);
        let sso = "arn:aws:sts::111:assumed-role/AWSReservedSSO_Admin_1/bob@example.com";
        assert_eq!(person(Cloud::Aws, &["AIDA1", sso]), Some("bob".into()));
        assert_eq!(
            person(Cloud::Aws, &["arn:aws:iam::222:user/alice"]),
            Some("alice".into())
        );
        assert_eq!(
            person(Cloud::Azure, &["alice@example.com"]),
            Some("alice".into())
        );
        assert_eq!(person(Cloud::Aws, &["alice@example.com"]), None);
        assert_eq!(person(Cloud::Gcp, &["carol@example.com"]), None);
        assert_eq!(person(Cloud::Gcp, &[]), None);
    }

    #[test]
    fn bundled_matrix_is_valid_and_answers_lookups() {
        let m = bundled();
        assert_eq!(
            m.owner_side(Cloud::Aws, "cloudtrail.amazonaws.com", Domain::Logging),
            Some(Side::Customer)
        );
        assert_eq!(
            m.owner_side(Cloud::Azure, "MICROSOFT.STORAGE", Domain::Data),
            Some(Side::Customer)
        );
        assert!(m.service(Cloud::Gcp, "storage.googleapis.com").is_some());
        assert!(
            m.owner_side(Cloud::Aws, "nosuch.amazonaws.com", Domain::Data)
                .is_none()
        );
    }

    #[test]
    fn service_rows_are_found_as_written_again_and_after_a_change() {
        let mut m = bundled();
        let names = m
            .services()
            .map(|(name, row)| (name.to_owned(), row.cloud, row.model))
            .collect::<Vec<_>>();
        assert!(names.len() > 10);
        // Twice: the second time from this thread's memo.
        for _ in 0..2 {
            for (name, cloud, model) in &names {
                for written in [name.clone(), name.to_ascii_uppercase()] {
                    let row = m.service(*cloud, &written).map(|r| (r.cloud, r.model));
                    assert_eq!(row, Some((*cloud, *model)), "{written}");
                }
                let other = match cloud {
                    Cloud::Aws => Cloud::Gcp,
                    _ => Cloud::Aws,
                };
                let listed = names
                    .iter()
                    .any(|n| n.1 == other && n.0.eq_ignore_ascii_case(name));
                assert_eq!(
                    m.service(other, name).is_some(),
                    listed,
                    "{name} in {other}"
                );
            }
        }
        assert!(m.service(Cloud::Aws, "new.amazonaws.com").is_none());
        // A row added after lookups is found; a replaced row reads anew.
        let (name, cloud, model) = names[0].clone();
        let mut row = m.service(cloud, &name).unwrap().clone();
        let other_model = if model == ServiceModel::Iaas {
            ServiceModel::Saas
        } else {
            ServiceModel::Iaas
        };
        row.model = other_model;
        m.insert_service(&name, row.clone());
        row.cloud = Cloud::Aws;
        m.insert_service("new.amazonaws.com", row);
        assert_eq!(m.service(cloud, &name).map(|r| r.model), Some(other_model));
        assert!(m.service(Cloud::Aws, "NEW.amazonaws.com").is_some());
        assert_eq!(m.services().count(), names.len() + 1);
        // The bundled matrix, read on this thread before, still answers as before.
        let fresh = bundled();
        assert_eq!(fresh.service(cloud, &name).map(|r| r.model), Some(model));
        assert!(fresh.service(Cloud::Aws, "new.amazonaws.com").is_none());
    }

    #[test]
    fn review_age_warns_after_90_days() {
        let m = bundled();
        let reviewed = m.review.last_reviewed.unwrap();
        let fresh = m.check(reviewed + chrono::Days::new(30));
        assert!(fresh.iter().all(|w| !w.0.contains("days ago")), "{fresh:?}");
        let stale = m.check(reviewed + chrono::Days::new(120));
        assert!(
            stale.iter().any(|w| w.0.contains("120 days ago")),
            "{stale:?}"
        );
    }
}
