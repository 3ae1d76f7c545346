//! What a destination receives. An *alert* is one finding plus the repeats
//! folded into it (same rule, same account, same principal and resources
//! within the dedup window); a [`Notice`] is one change to an alert
//! (created, updated with more occurrences, closed) or a digest that stands
//! for the alerts an alert budget held back.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::detect::{Finding, Severity};

/// What happened to an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new alert (the first finding of its dedup key within the window).
    Create,
    /// More occurrences folded into an open alert.
    Update,
    /// The condition resolved (for example, logging was restored).
    Close,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Close => "close",
        }
    }
}

/// One change to one alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertNotice {
    pub action: Action,
    /// The alert's id: the id of its first finding, stable across updates.
    pub alert_id: String,
    /// The finding that caused this notice (for a close: the resolving one).
    pub finding_id: String,
    /// Findings folded into the alert so far, the first included.
    pub occurrences: u64,
    /// Event time of the first and the latest occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    /// For a close: the rule whose finding resolved the alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    /// The alert's latest finding (for a close: the alert's own finding).
    pub finding: Finding,
}

/// One line of a digest: how many alerts of one rule were held back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestLine {
    pub rule_id: String,
    pub title: String,
    pub severity: Severity,
    pub count: u64,
}

/// What an alert budget held back during one budget window, sent once the
/// window ends instead of one message per alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestNotice {
    /// Deterministic: the destination and the window start.
    pub id: String,
    pub destination: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// Notices held back (creates and updates).
    pub count: u64,
    pub max_severity: Severity,
    /// Per rule, most frequent first.
    pub by_rule: Vec<DigestLine>,
    /// The first alert ids held back (at most 20), to look up in the outbox.
    pub sample: Vec<String>,
}

/// What one destination is sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
// Notices are built once per finding and destination, never in bulk on the
// hot path; boxing the common variant would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Notice {
    Alert(AlertNotice),
    Digest(DigestNotice),
}

impl Notice {
    /// The idempotency key a request carries: the finding id for a create
    /// or an update, `<alert id>-close` for a close, the digest id for a
    /// digest. A receiver that has seen the key has seen the request.
    pub fn idempotency_key(&self) -> String {
        match self {
            Notice::Alert(a) if a.action == Action::Close => format!("{}-close", a.alert_id),
            Notice::Alert(a) => a.finding_id.clone(),
            Notice::Digest(d) => d.id.clone(),
        }
    }

    pub fn severity(&self) -> Severity {
        match self {
            Notice::Alert(a) => a.finding.severity,
            Notice::Digest(d) => d.max_severity,
        }
    }
}
