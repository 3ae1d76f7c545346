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

impl Finding {
    /// Appends the finding as JSON to `out`: the bytes its `Serialize`
    /// writes (a test holds the two equal), with each key written as it
    /// stands rather than escaped anew through serde's walk of the struct.
    /// A replay writes every finding; the walk cost it ~8% of its
    /// instructions on a Sigma run that matched a third of its events.
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), sonic_rs::Error> {
        fn field<T: Serialize + ?Sized>(
            out: &mut Vec<u8>,
            key: &str,
            value: &T,
        ) -> Result<(), sonic_rs::Error> {
            out.extend_from_slice(key.as_bytes());
            value.serialize(&mut sonic_rs::Serializer::new(&mut *out))
        }
        fn some<T: Serialize + ?Sized>(
            out: &mut Vec<u8>,
            key: &str,
            value: Option<&T>,
        ) -> Result<(), sonic_rs::Error> {
            value.map_or(Ok(()), |v| field(out, key, v))
        }
        fn list<T: Serialize>(
            out: &mut Vec<u8>,
            key: &str,
            values: &[T],
        ) -> Result<(), sonic_rs::Error> {
            if values.is_empty() {
                Ok(())
            } else {
                field(out, key, values)
            }
        }
        field(out, "{\"id\":", self.id.as_str())?;
        field(out, ",\"kind\":", &self.kind)?;
        field(out, ",\"rule_id\":", self.rule_id.as_str())?;
        field(out, ",\"title\":", self.title.as_str())?;
        field(out, ",\"severity\":", &self.severity)?;
        field(out, ",\"rule_severity\":", &self.rule_severity)?;
        field(out, ",\"cloud\":", &self.cloud)?;
        some(out, ",\"account\":", self.account.as_deref())?;
        some(out, ",\"region\":", self.region.as_deref())?;
        field(out, ",\"service\":", self.service.as_str())?;
        field(out, ",\"operation\":", self.operation.as_str())?;
        field(out, ",\"principal\":", &self.principal)?;
        list(out, ",\"resources\":", &self.resources)?;
        some(out, ",\"domain\":", self.domain.as_ref())?;
        some(out, ",\"responsibility\":", self.responsibility.as_ref())?;
        some(out, ",\"owner_team\":", self.owner_team.as_deref())?;
        some(out, ",\"data_tier\":", self.data_tier.as_ref())?;
        if self.event_time.is_some() {
            out.extend_from_slice(b",\"event_time\":");
            crate::util::serialize_time(
                &self.event_time,
                &mut sonic_rs::Serializer::new(&mut *out),
            )?;
        }
        field(out, ",\"evidence\":", &self.evidence)?;
        list(out, ",\"attack\":", &self.attack)?;
        list(out, ",\"compliance\":", &self.compliance)?;
        some(out, ",\"remediation\":", self.remediation.as_deref())?;
        list(out, ",\"references\":", &self.references)?;
        list(out, ",\"approved_paths\":", &self.approved_paths)?;
        some(out, ",\"detail\":", self.detail.as_deref())?;
        some(out, ",\"author\":", self.author.as_deref())?;
        some(out, ",\"correlation\":", self.correlation.as_ref())?;
        list(out, ",\"resolves\":", &self.resolves)?;
        out.push(b'}');
        Ok(())
    }
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

    /// Text that JSON must escape, and text it must not.
    fn text() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::prop_oneof![
            proptest::strategy::Just(String::new()),
            "[a-z0-9:/._-]{1,12}",
            "[\"\\\\\u{0}-\u{1f}\u{7f}é東🚀\u{2028}a-c]{0,8}",
        ]
    }

    fn texts() -> impl proptest::strategy::Strategy<Value = Vec<String>> {
        proptest::collection::vec(text(), 0..3)
    }

    proptest::proptest! {
        /// `write_json` writes what `Serialize` writes (through sonic-rs,
        /// as replay wrote findings before, and through serde_json), with
        /// every optional field present or absent, empty or not.
        #[test]
        fn written_json_is_what_serialize_writes(
            strings in proptest::collection::vec(text(), 12),
            lists in proptest::collection::vec(texts(), 6),
            present in proptest::collection::vec(proptest::bool::ANY, 12),
            time in proptest::option::of(-62_000_000_000_000i64..400_000_000_000_000),
            evidence in 0usize..3,
        ) {
            let opt = |i: usize| present[i].then(|| strings[i].clone());
            let time = time.and_then(chrono::DateTime::<Utc>::from_timestamp_millis);
            let finding = Finding {
                id: strings[0].clone(),
                kind: FindingKind::Sigma,
                rule_id: strings[1].clone(),
                title: strings[2].clone(),
                severity: Severity::High,
                rule_severity: Severity::Medium,
                cloud: Cloud::Azure,
                account: opt(3),
                region: opt(4),
                service: strings[5].clone(),
                operation: strings[6].clone(),
                principal: FindingPrincipal {
                    kind: PrincipalKind::AssumedRole,
                    id: opt(7),
                    name: opt(8),
                },
                resources: lists[0].clone(),
                domain: present[0].then_some(Domain::Logging),
                responsibility: present[1].then_some(Side::Shared),
                owner_team: opt(9),
                data_tier: present[2].then_some(Tier::High),
                event_time: time,
                evidence: (0..evidence)
                    .map(|i| Evidence {
                        event_id: strings[i].clone(),
                        source: strings[i + 1].clone(),
                    })
                    .collect(),
                attack: lists[1].clone().into(),
                compliance: lists[2].clone().into(),
                remediation: opt(10).map(Into::into),
                references: lists[3].clone().into(),
                approved_paths: lists[4].clone(),
                detail: opt(11),
                author: opt(5).map(Into::into),
                correlation: time.filter(|_| present[6]).map(|t| CorrelationDetail {
                    kind: "sequence".into(),
                    group: strings[7].clone(),
                    window_start: t,
                    window_end: t,
                    events: 3,
                }),
                resolves: lists[5].clone(),
            };
            let mut written = Vec::new();
            finding.write_json(&mut written).unwrap();
            let written = String::from_utf8(written).unwrap();
            proptest::prop_assert_eq!(&written, &sonic_rs::to_string(&finding).unwrap());
            proptest::prop_assert_eq!(&written, &serde_json::to_string(&finding).unwrap());
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
