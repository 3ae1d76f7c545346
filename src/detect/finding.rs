//! What a detection produces: a [`Finding`], with a deterministic id, the rule's
//! metadata, and the matrix context (responsibility side, owning team, data
//! tier) an analyst needs to act on it.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{AuditEvent, Cloud, PrincipalKind};
use crate::matrix::{Domain, Side, Tier};

/// Severity, ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[serde(alias = "informational")]
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn raised(self) -> Severity {
        match self {
            Severity::Info => Severity::Low,
            Severity::Low => Severity::Medium,
            Severity::Medium => Severity::High,
            Severity::High | Severity::Critical => Severity::Critical,
        }
    }

    pub fn lowered(self) -> Severity {
        match self {
            Severity::Info | Severity::Low => Severity::Info,
            Severity::Medium => Severity::Low,
            Severity::High => Severity::Medium,
            Severity::Critical => Severity::High,
        }
    }

    /// Adjusted for the data tier: one step up for high, one down for low.
    pub fn for_tier(self, tier: Option<Tier>) -> Severity {
        match tier {
            Some(Tier::High) => self.raised(),
            Some(Tier::Low) => self.lowered(),
            _ => self,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of detection produced a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A rule of seamwatch's own format matched.
    Rule,
    /// A Sigma rule matched.
    Sigma,
    /// A customer-owned control was changed outside the approved change paths.
    OutOfBandChange,
    /// An event from a service the matrix does not map.
    UnmappedService,
    /// A service used inside a compliance boundary that does not authorize it.
    ComplianceBoundary,
    /// A correlation rule over several events fired.
    Correlation,
}

/// Where the evidence came from.
#[derive(Clone, Copy, Debug)]
pub enum SourceRef<'a> {
    File {
        path: &'a str,
        line: u64,
        index: u32,
    },
    Kafka {
        topic: &'a str,
        partition: i32,
        offset: i64,
    },
    Unknown,
}

impl SourceRef<'_> {
    /// The reference as text (what `Display` writes), built without the
    /// formatting machinery: every finding carries one.
    pub fn text(&self) -> String {
        let mut numbers = itoa::Buffer::new();
        match self {
            SourceRef::File { path, line, index } => {
                let mut out = String::with_capacity(path.len() + 24);
                out.push_str(path);
                out.push(':');
                out.push_str(numbers.format(*line));
                if *index != 0 {
                    out.push('#');
                    out.push_str(numbers.format(*index));
                }
                out
            }
            other => other.to_string(),
        }
    }
}

impl fmt::Display for SourceRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceRef::File {
                path,
                line,
                index: 0,
            } => write!(f, "{path}:{line}"),
            SourceRef::File { path, line, index } => write!(f, "{path}:{line}#{index}"),
            SourceRef::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "kafka:{topic}/{partition}@{offset}"),
            SourceRef::Unknown => f.write_str("unknown"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub event_id: String,
    pub source: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingPrincipal {
    pub kind: PrincipalKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One finding. `id` is deterministic: the same rule on the same event always
/// yields the same id, so replays and redeliveries deduplicate downstream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    pub kind: FindingKind,
    pub rule_id: String,
    pub title: String,
    /// After the data-tier adjustment.
    pub severity: Severity,
    /// As the rule states it.
    pub rule_severity: Severity,
    pub cloud: Cloud,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub service: String,
    pub operation: String,
    pub principal: FindingPrincipal,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<Domain>,
    /// Who owns the control, per the matrix; `None` for an unmapped service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responsibility: Option<Side>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_team: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_tier: Option<Tier>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::util::serialize_time"
    )]
    pub event_time: Option<DateTime<Utc>>,
    pub evidence: Vec<Evidence>,
    #[serde(default, skip_serializing_if = "<[String]>::is_empty")]
    pub attack: Arc<[String]>,
    #[serde(default, skip_serializing_if = "<[String]>::is_empty")]
    pub compliance: Arc<[String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "<[String]>::is_empty")]
    pub references: Arc<[String]>,
    /// For out-of-band changes: the change paths that would have been approved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved_paths: Vec<String>,
    /// Extra words specific to the finding (the boundary, the person, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Sigma rule authors, kept as the Detection Rule License asks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<Arc<str>>,
    /// For correlation findings: the group, the window and the event count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation: Option<CorrelationDetail>,
    /// Rules whose open alerts this finding closes (same account, same
    /// resource); such a finding is a resolution, not an alert of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolves: Vec<String>,
}

/// What a correlation finding adds: which group it is about, over which
/// window of event time, and how many events took part (the evidence list
/// is capped; `events` is not).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrelationDetail {
    /// `threshold`, `distinct`, `sequence`, `temporal`, `absence`, `session`, `silence`.
    pub kind: std::borrow::Cow<'static, str>,
    /// The group-by values, `name=value` joined by `, `.
    pub group: String,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub events: u32,
}

/// Deterministic finding id: xxh3-128 of the parts, in hex.
pub fn finding_id(parts: &[&str]) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update(&[0]);
    }
    // The digest's hex, as `{:032x}` writes it, without the formatting
    // machinery (every finding has an id).
    hex::encode(hasher.digest128().to_be_bytes())
}

impl FindingPrincipal {
    pub fn of(event: &AuditEvent<'_>) -> Self {
        FindingPrincipal {
            kind: event.principal.kind,
            id: event.principal.id.as_deref().map(str::to_owned),
            name: event.principal.name.as_deref().map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_moves_one_step_with_the_tier() {
        assert_eq!(Severity::Medium.for_tier(Some(Tier::High)), Severity::High);
        assert_eq!(
            Severity::Critical.for_tier(Some(Tier::High)),
            Severity::Critical
        );
        assert_eq!(Severity::Medium.for_tier(Some(Tier::Low)), Severity::Low);
        assert_eq!(Severity::Info.for_tier(Some(Tier::Low)), Severity::Info);
        assert_eq!(Severity::High.for_tier(Some(Tier::Medium)), Severity::High);
        assert_eq!(Severity::High.for_tier(None), Severity::High);
    }

    /// The fast text of a source reference is what `Display` writes.
    #[test]
    fn source_text_is_what_display_writes() {
        let refs = [
            SourceRef::File {
                path: "AWSLogs/1/x.json.gz",
                line: 0,
                index: 0,
            },
            SourceRef::File {
                path: "export.jsonl",
                line: 123_456,
                index: 0,
            },
            SourceRef::File {
                path: "s3.json",
                line: 7,
                index: 42,
            },
            SourceRef::Kafka {
                topic: "cloudtrail",
                partition: 3,
                offset: 99,
            },
            SourceRef::Unknown,
        ];
        for r in refs {
            assert_eq!(r.text(), r.to_string());
        }
    }

    #[test]
    fn finding_ids_are_stable_and_distinct() {
        assert_eq!(finding_id(&["r", "e"]), finding_id(&["r", "e"]));
        assert_ne!(finding_id(&["r", "e"]), finding_id(&["re", ""]));
        assert_eq!(finding_id(&["r"]).len(), 32);
        // The same text as the formatted digest (ids must not change).
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(b"r\0e\0");
        assert_eq!(
            finding_id(&["r", "e"]),
            format!("{:032x}", hasher.digest128())
        );
    }
}
