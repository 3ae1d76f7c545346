//! The demo's traffic: a realistic mix for the three clouds, in event-time
//! order. Background CloudTrail activity from the synthetic generator, the
//! attack sequences of the built-in correlations' own tests (three clouds;
//! each moved to its own hour so they do not overlap), and a few broken
//! records for the dead-letter topic.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use crate::correlate::Correlation;
use crate::synth::{Generator, SynthConfig};

/// One record to produce.
#[derive(Clone, Debug)]
pub struct DemoRecord {
    pub topic: &'static str,
    pub key: String,
    pub payload: Vec<u8>,
    pub time_ms: i64,
}

pub const CLOUDTRAIL_TOPIC: &str = "cloudtrail";
pub const AZURE_TOPIC: &str = "azure-activity";
pub const GCP_TOPIC: &str = "gcp-audit";
pub const DEAD_LETTER_TOPIC: &str = "seamwatch-dead-letter";

/// Moves a native record's event time by `by`, returning its new time (ms).
fn shift(record: &mut Value, by: Duration) -> Option<(i64, &'static str)> {
    for (key, topic) in [
        ("eventTime", CLOUDTRAIL_TOPIC),
        ("time", AZURE_TOPIC),
        ("timestamp", GCP_TOPIC),
    ] {
        if let Some(Value::String(text)) = record.get_mut(key) {
            let time: DateTime<Utc> = text.parse().ok()?;
            let moved = time + by;
            *text = moved.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            return Some((moved.timestamp_millis(), topic));
        }
    }
    None
}

fn account_of(record: &Value) -> String {
    record
        .get("recipientAccountId")
        .and_then(Value::as_str)
        .or_else(|| {
            record
                .pointer("/resource/labels/project_id")
                .and_then(Value::as_str)
        })
        .or_else(|| {
            record
                .get("resourceId")
                .and_then(Value::as_str)
                .and_then(|r| r.split('/').nth(2))
        })
        .unwrap_or("unknown")
        .to_owned()
}

/// `background` synthetic CloudTrail events plus every attack sequence.
pub fn demo_records(correlations: &[Correlation], background: usize) -> Vec<DemoRecord> {
    let config = SynthConfig {
        principals: 200,
        accounts: 6,
        mean_gap_ms: 500,
        security_share: 0.05,
        ..SynthConfig::default()
    };
    let start = config.start_ms;
    let mut records: Vec<DemoRecord> = Generator::new(config)
        .take(background)
        .map(|e| DemoRecord {
            topic: CLOUDTRAIL_TOPIC,
            key: e.account,
            payload: e.json.into_bytes(),
            time_ms: e.time_ms,
        })
        .collect();
    // The correlation tests start at 2025-03-01T10:00Z; give each its own hour.
    let mut slot = 0i64;
    for correlation in correlations {
        for test in correlation.tests.iter().filter(|t| t.findings > 0) {
            slot += 1;
            for event in &test.events {
                let Ok(mut record) = serde_json::from_str::<Value>(event) else {
                    continue;
                };
                let Some((time_ms, topic)) = shift(&mut record, Duration::hours(slot)) else {
                    continue;
                };
                records.push(DemoRecord {
                    topic,
                    key: account_of(&record),
                    payload: record.to_string().into_bytes(),
                    time_ms,
                });
            }
        }
    }
    let broken: [&[u8]; 3] = [
        br#"{"eventVersion":"1.09","eventSource":"s3.amazonaws.com","eventName":"GetObj"#,
        br#"{"message":"not an audit record"}"#,
        b"\xff\xfe{\"eventName\":\"ConsoleLogin\"}",
    ];
    for (i, payload) in broken.into_iter().enumerate() {
        records.push(DemoRecord {
            topic: CLOUDTRAIL_TOPIC,
            key: "broken".into(),
            payload: payload.to_vec(),
            time_ms: start + 60_000 * (i as i64 + 1),
        });
    }
    records.sort_by_key(|r| r.time_ms);
    records
}
