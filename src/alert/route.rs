//! Which destinations a finding goes to (routes) and whether it goes to any
//! (suppressions), compiled once from `[alerts]`.

use chrono::{DateTime, Utc};
use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};

use super::config::{AlertConfigError, AlertsConfig, RouteConfig};
use crate::detect::{Finding, Severity};
use crate::event::Cloud;
use crate::matrix::Domain;

struct Route {
    sinks: Vec<usize>,
    min_severity: Option<Severity>,
    domains: Vec<Domain>,
    teams: Vec<String>,
    clouds: Vec<Cloud>,
    rules: Option<GlobSet>,
    tags: Option<GlobSet>,
}

struct Suppression {
    rule: Option<GlobMatcher>,
    principal: Option<GlobMatcher>,
    resource: Option<GlobMatcher>,
    account: Option<String>,
    expires: DateTime<Utc>,
    reason: String,
}

/// Compiled routes and suppressions.
pub struct Router {
    sink_count: usize,
    routes: Vec<Route>,
    suppressions: Vec<Suppression>,
}

fn glob_set(globs: &[String]) -> Result<Option<GlobSet>, globset::Error> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for g in globs {
        builder.add(Glob::new(g)?);
    }
    builder.build().map(Some)
}

fn matcher(glob: &Option<String>) -> Result<Option<GlobMatcher>, globset::Error> {
    glob.as_deref()
        .map(|g| Glob::new(g).map(|g| g.compile_matcher()))
        .transpose()
}

impl Router {
    /// Compiles validated settings.
    pub fn new(config: &AlertsConfig) -> Result<Router, AlertConfigError> {
        let index_of = |name: &str| config.sinks.iter().position(|s| s.name == name);
        let mut routes = Vec::new();
        for (index, r) in config.routes.iter().enumerate() {
            let err = |message: String| AlertConfigError::Route { index, message };
            let RouteConfig {
                sinks,
                min_severity,
                domains,
                teams,
                clouds,
                rules,
                tags,
            } = r;
            let sinks = sinks
                .iter()
                .map(|n| index_of(n).ok_or_else(|| err(format!("unknown sink {n:?}"))))
                .collect::<Result<Vec<_>, _>>()?;
            routes.push(Route {
                sinks,
                min_severity: *min_severity,
                domains: domains.clone(),
                teams: teams.clone(),
                clouds: clouds.clone(),
                rules: glob_set(rules).map_err(|e| err(e.to_string()))?,
                tags: glob_set(tags).map_err(|e| err(e.to_string()))?,
            });
        }
        let mut suppressions = Vec::new();
        for (index, s) in config.suppress.iter().enumerate() {
            let err = |message: String| AlertConfigError::Suppress { index, message };
            suppressions.push(Suppression {
                rule: matcher(&s.rule).map_err(|e| err(e.to_string()))?,
                principal: matcher(&s.principal).map_err(|e| err(e.to_string()))?,
                resource: matcher(&s.resource).map_err(|e| err(e.to_string()))?,
                account: s.account.clone(),
                expires: s.expires.ok_or_else(|| err("needs expires".into()))?,
                reason: s.reason.clone(),
            });
        }
        Ok(Router {
            sink_count: config.sinks.len(),
            routes,
            suppressions,
        })
    }

    /// The destinations (indexes into `[[alerts.sinks]]`) of a finding, in
    /// order, each once.
    pub fn destinations(&self, finding: &Finding) -> Vec<usize> {
        if self.routes.is_empty() {
            return (0..self.sink_count).collect();
        }
        let mut out: Vec<usize> = Vec::new();
        for route in self.routes.iter().filter(|r| r.matches(finding)) {
            for &s in &route.sinks {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// The reason of the first unexpired suppression matching the finding.
    pub fn suppressed(&self, finding: &Finding, now: DateTime<Utc>) -> Option<&str> {
        self.suppressions
            .iter()
            .find(|s| now < s.expires && s.matches(finding))
            .map(|s| s.reason.as_str())
    }

    /// Suppressions whose expiry has passed (for a warning at start-up).
    pub fn expired_suppressions(&self, now: DateTime<Utc>) -> impl Iterator<Item = &str> {
        self.suppressions
            .iter()
            .filter(move |s| now >= s.expires)
            .map(|s| s.reason.as_str())
    }
}

impl Route {
    fn matches(&self, f: &Finding) -> bool {
        self.min_severity.is_none_or(|min| f.severity >= min)
            && (self.domains.is_empty() || f.domain.is_some_and(|d| self.domains.contains(&d)))
            && (self.teams.is_empty()
                || f.owner_team
                    .as_ref()
                    .is_some_and(|t| self.teams.iter().any(|x| x == t)))
            && (self.clouds.is_empty() || self.clouds.contains(&f.cloud))
            && self.rules.as_ref().is_none_or(|g| g.is_match(&f.rule_id))
            && self.tags.as_ref().is_none_or(|g| {
                f.attack
                    .iter()
                    .chain(f.compliance.iter())
                    .any(|t| g.is_match(t))
            })
    }
}

impl Suppression {
    fn matches(&self, f: &Finding) -> bool {
        self.rule.as_ref().is_none_or(|g| g.is_match(&f.rule_id))
            && self.principal.as_ref().is_none_or(|g| {
                [&f.principal.id, &f.principal.name]
                    .into_iter()
                    .flatten()
                    .any(|p| g.is_match(p))
            })
            && self
                .resource
                .as_ref()
                .is_none_or(|g| f.resources.iter().any(|r| g.is_match(r)))
            && self
                .account
                .as_ref()
                .is_none_or(|a| f.account.as_deref() == Some(a.as_str()))
    }
}
