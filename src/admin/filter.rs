//! Which findings a feed shows: a minimum severity, clouds, accounts, rule
//! id globs, owning teams and control domains. The same filter is the query
//! string of `/findings` and `/findings/stream` (`severity=high&cloud=aws&
//! rule=aws.identity.*`; lists comma-separated or repeated) and the flags of
//! `seamwatch tail`, which sends it to the server.

use globset::{Glob, GlobMatcher};

use crate::detect::{Finding, Severity};
use crate::event::Cloud;

/// Why a filter does not parse.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("unknown severity {0:?}: expected info, low, medium, high or critical (optionally >=)")]
    Severity(String),
    #[error("unknown cloud {0:?}: expected aws, azure or gcp")]
    Cloud(String),
    #[error("bad rule pattern {0:?}: {1}")]
    Rule(String, String),
    #[error("unknown filter {0:?}: expected severity, cloud, account, rule, team or domain")]
    Key(String),
}

/// See the module docs; empty lists pass everything.
#[derive(Clone, Debug, Default)]
pub struct FindingFilter {
    pub min_severity: Option<Severity>,
    pub clouds: Vec<Cloud>,
    pub accounts: Vec<String>,
    pub rules: Vec<(String, GlobMatcher)>,
    pub teams: Vec<String>,
    pub domains: Vec<String>,
}

/// `high`, `>=high`: at least high.
pub fn parse_severity(text: &str) -> Result<Severity, FilterError> {
    let name = text.trim().trim_start_matches(">=").trim();
    match name.to_ascii_lowercase().as_str() {
        "info" | "informational" => Ok(Severity::Info),
        "low" => Ok(Severity::Low),
        "medium" => Ok(Severity::Medium),
        "high" => Ok(Severity::High),
        "critical" => Ok(Severity::Critical),
        _ => Err(FilterError::Severity(text.to_owned())),
    }
}

fn parse_cloud(text: &str) -> Result<Cloud, FilterError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "aws" => Ok(Cloud::Aws),
        "azure" => Ok(Cloud::Azure),
        "gcp" => Ok(Cloud::Gcp),
        _ => Err(FilterError::Cloud(text.to_owned())),
    }
}

fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

impl FindingFilter {
    /// Adds one `key=value` of a query string (or one flag).
    pub fn add(&mut self, key: &str, value: &str) -> Result<(), FilterError> {
        match key {
            "severity" => self.min_severity = Some(parse_severity(value)?),
            "cloud" => {
                for c in items(value) {
                    self.clouds.push(parse_cloud(c)?);
                }
            }
            "account" => self.accounts.extend(items(value).map(str::to_owned)),
            "rule" => {
                for pattern in items(value) {
                    let glob = Glob::new(pattern)
                        .map_err(|e| FilterError::Rule(pattern.to_owned(), e.to_string()))?;
                    self.rules
                        .push((pattern.to_owned(), glob.compile_matcher()));
                }
            }
            "team" => self.teams.extend(items(value).map(str::to_owned)),
            "domain" => self
                .domains
                .extend(items(value).map(|d| d.to_ascii_lowercase())),
            // Not filters: paging and auth, read by the endpoints.
            "since" | "limit" | "after" | "access_token" => {}
            _ => return Err(FilterError::Key(key.to_owned())),
        }
        Ok(())
    }

    /// From a query string's pairs.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<FindingFilter, FilterError> {
        let mut filter = FindingFilter::default();
        for (k, v) in pairs {
            filter.add(k, v)?;
        }
        Ok(filter)
    }

    /// The filter as query pairs, for a client to send.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(s) = self.min_severity {
            out.push(("severity", s.as_str().to_owned()));
        }
        let join = |v: Vec<&str>| v.join(",");
        if !self.clouds.is_empty() {
            out.push((
                "cloud",
                join(self.clouds.iter().map(|c| c.as_str()).collect()),
            ));
        }
        for (key, list) in [
            ("account", &self.accounts),
            ("team", &self.teams),
            ("domain", &self.domains),
        ] {
            if !list.is_empty() {
                out.push((key, join(list.iter().map(String::as_str).collect())));
            }
        }
        if !self.rules.is_empty() {
            out.push((
                "rule",
                join(self.rules.iter().map(|(p, _)| p.as_str()).collect()),
            ));
        }
        out
    }

    pub fn matches(&self, f: &Finding) -> bool {
        self.min_severity.is_none_or(|min| f.severity >= min)
            && (self.clouds.is_empty() || self.clouds.contains(&f.cloud))
            && (self.accounts.is_empty()
                || f.account
                    .as_deref()
                    .is_some_and(|a| self.accounts.iter().any(|x| x.eq_ignore_ascii_case(a))))
            && (self.rules.is_empty() || self.rules.iter().any(|(_, g)| g.is_match(&f.rule_id)))
            && (self.teams.is_empty()
                || f.owner_team
                    .as_deref()
                    .is_some_and(|t| self.teams.iter().any(|x| x.eq_ignore_ascii_case(t))))
            && (self.domains.is_empty()
                || f.domain
                    .is_some_and(|d| self.domains.iter().any(|x| x == d.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::hub::tests::finding;

    #[test]
    fn filters_parse_match_and_round_trip() {
        let f = finding("a", "aws.data.bucket_public", Severity::High);
        let filter = FindingFilter::from_pairs([
            ("severity", ">=high"),
            ("cloud", "aws"),
            ("rule", "aws.data.*"),
            ("team", "Storage"),
            ("domain", "data"),
            ("account", "111122223333"),
        ])
        .unwrap();
        assert!(filter.matches(&f));
        let again =
            FindingFilter::from_pairs(filter.to_pairs().iter().map(|(k, v)| (*k, v.as_str())))
                .unwrap();
        assert!(again.matches(&f));
        for (key, value) in [
            ("severity", "critical"),
            ("cloud", "gcp"),
            ("rule", "azure.*"),
            ("team", "network"),
            ("domain", "identity"),
            ("account", "999"),
        ] {
            let filter = FindingFilter::from_pairs([(key, value)]).unwrap();
            assert!(!filter.matches(&f), "{key}={value} should hide it");
        }
        assert!(FindingFilter::from_pairs([("severity", "urgent")]).is_err());
        assert!(FindingFilter::from_pairs([("colour", "red")]).is_err());
    }
}
