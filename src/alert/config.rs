//! `[alerts]` settings: the outbox file, the dedup window, retries, the
//! destinations (`[[alerts.sinks]]`), the routes that pick destinations for
//! a finding (`[[alerts.routes]]`) and the suppressions (`[[alerts.suppress]]`).
//!
//! Secrets (HMAC signing keys, bearer tokens, PagerDuty routing keys) are
//! never written in the file: each is named by an environment variable
//! (`*_env`) or a file (`*_file`) and read at start-up into a [`Secret`],
//! whose `Debug` and `Display` print `[redacted]`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::detect::Severity;
use crate::event::Cloud;
use crate::matrix::Domain;

/// Why the alert settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum AlertConfigError {
    #[error("alerts.sinks[{index}]: {message}")]
    Sink { index: usize, message: String },
    #[error("alerts.routes[{index}]: {message}")]
    Route { index: usize, message: String },
    #[error("alerts.suppress[{index}]: {message}")]
    Suppress { index: usize, message: String },
    #[error("alerts: {0}")]
    Invalid(String),
    #[error("cannot read the secret file {path}: {source}")]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret variable {0} is not set")]
    SecretEnv(String),
}

/// `[alerts]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// The durable outbox (an embedded database file).
    pub outbox: PathBuf,
    /// Repeats of a finding (same rule, account, principal and resources)
    /// within this much event time fold into the first one's alert as
    /// updates instead of new alerts.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    pub retry: RetryConfig,
    pub sinks: Vec<SinkConfig>,
    pub routes: Vec<RouteConfig>,
    pub suppress: Vec<SuppressConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            outbox: PathBuf::from("seamwatch-outbox.redb"),
            dedup_window: Duration::from_secs(3600),
            retry: RetryConfig::default(),
            sinks: Vec::new(),
            routes: Vec::new(),
            suppress: Vec::new(),
        }
    }
}

/// `[alerts.retry]`: exponential backoff with full jitter.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts before a notice moves to the destination's dead letters.
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 12,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

/// What kind of destination a sink is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkType {
    /// HTTP POST to `url`.
    Webhook,
    /// A Kafka topic (`topic`), on `brokers` or the `[kafka]` brokers.
    Kafka,
    /// JSON Lines appended to `path` (`-`: standard output).
    Jsonl,
}

/// How a webhook body is rendered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormatName {
    Json,
    Ocsf,
    Slack,
    Pagerduty,
    Template,
}

/// `[[alerts.sinks]]`: one destination.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique; routes and `seamwatch outbox` refer to it.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SinkType,
    /// The webhook URL, or the variable or file holding it (Slack's URLs
    /// carry their token, so they count as secrets).
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub brokers: Option<String>,
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default = "default_format")]
    pub format: FormatName,
    /// For `format = "template"`: the template (minijinja) or a file with it.
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub template_file: Option<PathBuf>,
    #[serde(default)]
    pub content_type: Option<String>,
    /// Per request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Requests per second at most (0: unlimited).
    #[serde(default)]
    pub rate: f64,
    /// The HMAC-SHA256 signing key.
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Sent as `Authorization: Bearer …`.
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PagerDuty's integration (routing) key.
    #[serde(default)]
    pub routing_key_env: Option<String>,
    #[serde(default)]
    pub routing_key_file: Option<PathBuf>,
    /// At most `max` creates and updates per `per`; the rest are summed up in
    /// one digest when the window ends. Closes always go through.
    #[serde(default)]
    pub budget: Option<BudgetConfig>,
    /// Overrides `[alerts.retry] max_attempts` for this destination.
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

fn default_format() -> FormatName {
    FormatName::Json
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_concurrency() -> usize {
    4
}

/// An alert budget.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub max: u64,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
}

/// `[[alerts.routes]]`: findings matching every criterion given go to
/// `sinks`. Several routes may match; a finding goes to each sink once.
/// Without any route, every finding goes to every sink.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    pub sinks: Vec<String>,
    pub min_severity: Option<Severity>,
    pub domains: Vec<Domain>,
    pub teams: Vec<String>,
    pub clouds: Vec<Cloud>,
    /// Globs over rule ids.
    pub rules: Vec<String>,
    /// Globs over the rule's ATT&CK ids and compliance references.
    pub tags: Vec<String>,
}

/// `[[alerts.suppress]]`: findings matching every pattern given are stored
/// and counted but not delivered, until `expires`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SuppressConfig {
    /// Glob over rule ids.
    pub rule: Option<String>,
    /// Glob over the principal's id or name.
    pub principal: Option<String>,
    /// Glob over any of the finding's resources.
    pub resource: Option<String>,
    pub account: Option<String>,
    /// RFC 3339; required, so that no suppression outlives its reason.
    pub expires: Option<DateTime<Utc>>,
    pub reason: String,
}

impl AlertsConfig {
    /// Checks what can be checked without IO.
    pub fn validate(&self) -> Result<(), AlertConfigError> {
        if self.dedup_window.is_zero() {
            return Err(AlertConfigError::Invalid(
                "dedup_window must be greater than zero".into(),
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err(AlertConfigError::Invalid(
                "retry.max_attempts must be at least 1".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (index, sink) in self.sinks.iter().enumerate() {
            let err = |message: String| AlertConfigError::Sink { index, message };
            if sink.name.is_empty() || sink.name.contains(['/', '\0']) {
                return Err(err(format!("invalid name {:?}", sink.name)));
            }
            if !names.insert(sink.name.as_str()) {
                return Err(err(format!("duplicate name {:?}", sink.name)));
            }
            match sink.kind {
                SinkType::Webhook => {
                    let given = [
                        sink.url.is_some(),
                        sink.url_env.is_some(),
                        sink.url_file.is_some(),
                    ];
                    if given.iter().filter(|g| **g).count() != 1 {
                        return Err(err("needs exactly one of url, url_env, url_file".into()));
                    }
                    if let Some(url) = &sink.url
                        && !(url.starts_with("http://") || url.starts_with("https://"))
                    {
                        return Err(err("url must start with http:// or https://".into()));
                    }
                }
                SinkType::Kafka if sink.topic.is_none() => {
                    return Err(err("needs topic".into()));
                }
                SinkType::Jsonl if sink.path.is_none() => {
                    return Err(err("needs path (`-` for standard output)".into()));
                }
                _ => {}
            }
            if sink.format == FormatName::Template
                && sink.template.is_none() == sink.template_file.is_none()
            {
                return Err(err(
                    "format = \"template\" needs exactly one of template, template_file".into(),
                ));
            }
            if sink.format == FormatName::Pagerduty
                && sink.routing_key_env.is_none()
                && sink.routing_key_file.is_none()
            {
                return Err(err(
                    "format = \"pagerduty\" needs routing_key_env or routing_key_file".into(),
                ));
            }
            if sink.concurrency == 0 {
                return Err(err("concurrency must be at least 1".into()));
            }
            if !(sink.rate >= 0.0 && sink.rate.is_finite()) {
                return Err(err("rate must be a non-negative number".into()));
            }
            if let Some(b) = &sink.budget
                && (b.max == 0 || b.per.is_zero())
            {
                return Err(err("budget needs max > 0 and per > 0".into()));
            }
        }
        for (index, route) in self.routes.iter().enumerate() {
            let err = |message: String| AlertConfigError::Route { index, message };
            if route.sinks.is_empty() {
                return Err(err("names no sinks".into()));
            }
            for name in &route.sinks {
                if !names.contains(name.as_str()) {
                    return Err(err(format!("unknown sink {name:?}")));
                }
            }
            for glob in route.rules.iter().chain(&route.tags) {
                globset::Glob::new(glob).map_err(|e| err(e.to_string()))?;
            }
        }
        for (index, s) in self.suppress.iter().enumerate() {
            let err = |message: String| AlertConfigError::Suppress { index, message };
            if s.reason.trim().is_empty() {
                return Err(err("needs a reason".into()));
            }
            if s.expires.is_none() {
                return Err(err("needs expires (RFC 3339)".into()));
            }
            if s.rule.is_none() && s.principal.is_none() && s.resource.is_none() {
                return Err(err("needs at least one of rule, principal, resource".into()));
            }
            for glob in [&s.rule, &s.principal, &s.resource].into_iter().flatten() {
                globset::Glob::new(glob).map_err(|e| err(e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// A secret read from the environment or a file. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// Reads `env` or `file`, whichever is given; `None` when neither is.
    pub fn load(
        env: Option<&str>,
        file: Option<&Path>,
    ) -> Result<Option<Secret>, AlertConfigError> {
        if let Some(var) = env {
            return match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(Secret(v))),
                _ => Err(AlertConfigError::SecretEnv(var.to_owned())),
            };
        }
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|source| AlertConfigError::SecretFile {
                    path: path.to_owned(),
                    source,
                })?;
            return Ok(Some(Secret(text.trim_end_matches(['\r', '\n']).to_owned())));
        }
        Ok(None)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
