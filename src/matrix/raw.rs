//! The matrix file as written: serde shapes with spans, and their validation
//! into [`Matrix`] (patterns compiled, references checked, line numbers kept
//! for every error).

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use serde::Deserialize;
use toml::Spanned;

use super::{
    ChangePath, ComplianceBoundary, ConnectionPoint, Domain, IdentityLink, Matrix, OwnerRule,
    Review, Scope, ServiceEntry, ServiceModel, Side, Tier, TierRule, glob,
};
use crate::event::Cloud;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatrix {
    #[serde(default)]
    review: RawReview,
    #[serde(default)]
    services: BTreeMap<String, Spanned<RawService>>,
    #[serde(default)]
    data_tiers: Vec<Spanned<RawTier>>,
    #[serde(default)]
    owners: Vec<Spanned<RawOwner>>,
    #[serde(default)]
    change_paths: Vec<Spanned<RawChangePath>>,
    #[serde(default)]
    identity_links: Vec<Spanned<RawIdentityLink>>,
    #[serde(default)]
    compliance_boundaries: Vec<Spanned<RawBoundary>>,
    #[serde(default)]
    connection_points: Vec<Spanned<RawConnectionPoint>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReview {
    last_reviewed: Option<Spanned<toml::value::Datetime>>,
    #[serde(default)]
    provider_documents: Vec<String>,
    #[serde(default)]
    reviewers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    cloud: Cloud,
    model: ServiceModel,
    identity: Option<Side>,
    network: Option<Side>,
    data: Option<Side>,
    logging: Option<Side>,
    guardrails: Option<Side>,
    compute: Option<Side>,
    #[serde(default)]
    notes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    tier: Tier,
    #[serde(default)]
    accounts: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOwner {
    team: String,
    #[serde(default)]
    accounts: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    contact: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChangePath {
    name: String,
    #[serde(default)]
    accounts: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    principals: Vec<String>,
    #[serde(default)]
    user_agents: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentityLink {
    person: String,
    #[serde(default)]
    aws: Vec<String>,
    #[serde(default)]
    azure: Vec<String>,
    #[serde(default)]
    gcp: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoundary {
    name: String,
    frameworks: Vec<String>,
    #[serde(default)]
    accounts: Vec<String>,
    authorized_services: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnectionPoint {
    name: String,
    resources: Vec<String>,
    teams: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

fn scope(accounts: &[String], resources: &[String]) -> Result<Scope, String> {
    let compiled = resources
        .iter()
        .map(|r| glob(r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Scope {
        accounts: accounts.to_vec(),
        resources: compiled,
    })
}

impl RawMatrix {
    pub(super) fn validate(self, text: &str) -> Result<Matrix, String> {
        let at = |span: std::ops::Range<usize>, message: String| {
            format!("line {}: {message}", line_of(text, span.start))
        };
        let last_reviewed = match self.review.last_reviewed {
            None => None,
            Some(value) => {
                let span = value.span();
                let date = value.into_inner().date.and_then(|d| {
                    NaiveDate::from_ymd_opt(d.year.into(), d.month.into(), d.day.into())
                });
                match date {
                    Some(date) => Some(date),
                    None => {
                        return Err(at(
                            span,
                            "review.last_reviewed must be a date (YYYY-MM-DD)".into(),
                        ));
                    }
                }
            }
        };
        let mut matrix = Matrix {
            review: Review {
                last_reviewed,
                provider_documents: self.review.provider_documents,
                reviewers: self.review.reviewers,
            },
            ..Matrix::default()
        };

        for (name, service) in self.services {
            let span = service.span();
            let raw = service.into_inner();
            if name.trim().is_empty() {
                return Err(at(span, "a service needs a name".into()));
            }
            let _ = &raw.notes;
            let mut owners = HashMap::default();
            for (domain, side) in [
                (Domain::Identity, raw.identity),
                (Domain::Network, raw.network),
                (Domain::Data, raw.data),
                (Domain::Logging, raw.logging),
                (Domain::Guardrails, raw.guardrails),
                (Domain::Compute, raw.compute),
            ] {
                let Some(side) = side else {
                    return Err(at(
                        span,
                        format!("service `{name}` does not say who owns the `{domain}` domain"),
                    ));
                };
                owners.insert(domain, side);
            }
            matrix.insert_service(
                &name,
                ServiceEntry {
                    cloud: raw.cloud,
                    model: raw.model,
                    owners,
                },
            );
        }

        for tier in self.data_tiers {
            let span = tier.span();
            let raw = tier.into_inner();
            let _ = &raw.description;
            if raw.accounts.is_empty() && raw.resources.is_empty() {
                return Err(at(
                    span,
                    "a data tier entry needs accounts or resources".into(),
                ));
            }
            let scope = scope(&raw.accounts, &raw.resources).map_err(|e| at(span, e))?;
            matrix.tiers.push(TierRule {
                tier: raw.tier,
                scope,
            });
        }

        for owner in self.owners {
            let span = owner.span();
            let raw = owner.into_inner();
            let _ = &raw.contact;
            if raw.team.trim().is_empty() {
                return Err(at(span, "an owner entry needs a team".into()));
            }
            if raw.accounts.is_empty() && raw.resources.is_empty() {
                return Err(at(
                    span,
                    format!("owner `{}` needs accounts or resources", raw.team),
                ));
            }
            let scope = scope(&raw.accounts, &raw.resources).map_err(|e| at(span, e))?;
            matrix.owners.push(OwnerRule {
                team: raw.team,
                scope,
            });
        }

        for path in self.change_paths {
            let span = path.span();
            let raw = path.into_inner();
            if raw.principals.is_empty() && raw.user_agents.is_empty() {
                return Err(at(
                    span,
                    format!(
                        "change path `{}` names no principals and no user agents",
                        raw.name
                    ),
                ));
            }
            let compile = |patterns: &[String]| {
                patterns
                    .iter()
                    .map(|p| glob(p))
                    .collect::<Result<Vec<_>, _>>()
            };
            let principals = compile(&raw.principals).map_err(|e| at(span.clone(), e))?;
            let user_agents = compile(&raw.user_agents).map_err(|e| at(span.clone(), e))?;
            let described = raw
                .principals
                .iter()
                .map(|p| format!("principal {p}"))
                .chain(raw.user_agents.iter().map(|u| format!("user agent {u}")))
                .collect();
            matrix.change_paths.push(ChangePath {
                name: raw.name,
                scope: scope(&raw.accounts, &raw.resources).map_err(|e| at(span, e))?,
                principals,
                user_agents,
                described,
            });
        }

        for link in self.identity_links {
            let span = link.span();
            let raw = link.into_inner();
            let mut identities = Vec::new();
            for (cloud, patterns) in [
                (Cloud::Aws, &raw.aws),
                (Cloud::Azure, &raw.azure),
                (Cloud::Gcp, &raw.gcp),
            ] {
                for pattern in patterns {
                    identities.push((cloud, glob(pattern).map_err(|e| at(span.clone(), e))?));
                }
            }
            if identities.len() < 2 {
                return Err(at(
                    span,
                    format!(
                        "identity link `{}` needs at least two identities",
                        raw.person
                    ),
                ));
            }
            matrix.identity_links.push(IdentityLink {
                person: raw.person,
                identities,
            });
        }

        for boundary in self.compliance_boundaries {
            let span = boundary.span();
            let raw = boundary.into_inner();
            if raw.frameworks.is_empty() {
                return Err(at(
                    span,
                    format!("compliance boundary `{}` names no framework", raw.name),
                ));
            }
            if raw.accounts.is_empty() {
                return Err(at(
                    span,
                    format!("compliance boundary `{}` names no account", raw.name),
                ));
            }
            matrix.compliance_boundaries.push(ComplianceBoundary {
                name: raw.name,
                frameworks: raw.frameworks,
                scope: scope(&raw.accounts, &[]).map_err(|e| at(span, e))?,
                authorized_services: raw
                    .authorized_services
                    .iter()
                    .map(|s| s.to_ascii_lowercase())
                    .collect(),
            });
        }

        for point in self.connection_points {
            let span = point.span();
            let raw = point.into_inner();
            let _ = &raw.description;
            if raw.teams.len() < 2 {
                return Err(at(
                    span,
                    format!(
                        "connection point `{}` is owned jointly: name both teams",
                        raw.name
                    ),
                ));
            }
            matrix.connection_points.push(ConnectionPoint {
                name: raw.name,
                scope: scope(&[], &raw.resources).map_err(|e| at(span, e))?,
                teams: raw.teams,
            });
        }
        Ok(matrix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_line_numbers() {
        let text = "[review]\nlast_reviewed = 2026-01-01\n\n[services.\"s3.amazonaws.com\"]\ncloud = \"aws\"\nmodel = \"paas\"\nidentity = \"customer\"\n";
        let err = Matrix::from_toml(text).unwrap_err();
        assert!(err.contains("line 4") && err.contains("network"), "{err}");
        let err = Matrix::from_toml("[review]\nlast_reviewd = 2026-01-01\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("last_reviewd"),
            "{err}"
        );
        let err = Matrix::from_toml("[[owners]]\nteam = \"x\"\n").unwrap_err();
        assert!(
            err.contains("line 1") && err.contains("accounts or resources"),
            "{err}"
        );
        let err = Matrix::from_toml(
            "\n[[connection_points]]\nname = \"vpn\"\nresources = [\"a\"]\nteams = [\"net\"]\n",
        )
        .unwrap_err();
        assert!(err.contains("line 2") && err.contains("jointly"), "{err}");
        let err = Matrix::from_toml("[[data_tiers]]\ntier = \"secret\"\naccounts = [\"1\"]\n")
            .unwrap_err();
        assert!(err.contains("secret"), "{err}");
    }

    #[test]
    fn scope_accounts_match_whatever_their_case_and_star_matches_any() {
        let named = scope(&["Prod-Sub-A".into(), "123456789012".into()], &[]).unwrap();
        for account in ["prod-sub-a", "PROD-SUB-A", "Prod-Sub-A", "123456789012"] {
            assert!(named.matches_account(Some(account)), "{account}");
        }
        for account in ["prod-sub-b", "12345678901", "", "prod-sub-a "] {
            assert!(!named.matches_account(Some(account)), "{account}");
        }
        assert!(!named.matches_account(None));
        let any = scope(&["*".into()], &[]).unwrap();
        assert!(any.matches_account(Some("whatever")));
        assert!(!any.matches_account(None));
    }
}
