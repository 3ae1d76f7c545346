//! Archives in the three clouds' native layouts, written from the demo
//! corpus with their real directory structure, for the replay tests.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::collections::BTreeSet;

use chrono::{DateTime, TimeZone, Utc};
use seamwatch::analyze::Analyzer;
use seamwatch::correlate::Stream;
use seamwatch::event::Decoder;
use seamwatch::pipeline::demo::{AZURE_TOPIC, CLOUDTRAIL_TOPIC, DemoRecord, GCP_TOPIC};
use seamwatch::replay::{Filter, ReadOptions, Store, analyze, plan};

pub fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).unwrap()
}

pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Writes the records into the three layouts under `root`; returns the
/// records that parse (the demo adds a few broken ones), sorted by time.
pub fn write_archive(root: &Path, records: &[DemoRecord]) -> usize {
    // CloudTrail: by account and region, delivered every 5 minutes with the
    // events of the 15 minutes before, so files overlap and are unordered.
    let mut trail: BTreeMap<(String, String, i64), Vec<serde_json::Value>> = BTreeMap::new();
    let mut azure: BTreeMap<(String, i64), Vec<u8>> = BTreeMap::new();
    let mut gcp: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    let mut broken = 0;
    for (n, r) in records.iter().enumerate() {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&r.payload) else {
            broken += 1;
            continue;
        };
        let hour = r.time_ms.div_euclid(3_600_000) * 3_600_000;
        match r.topic {
            t if t == CLOUDTRAIL_TOPIC => {
                let account = value["recipientAccountId"]
                    .as_str()
                    .or(value["userIdentity"]["accountId"].as_str())
                    .unwrap_or("000000000000")
                    .to_owned();
                let region = value["awsRegion"]
                    .as_str()
                    .unwrap_or("us-east-1")
                    .to_owned();
                // Delivery 0–15 minutes after the event, on a 5-minute grid.
                let delay = (n as i64 * 7919) % 900_000;
                let delivery = (r.time_ms + delay).div_euclid(300_000) * 300_000 + 300_000;
                trail
                    .entry((account, region, delivery))
                    .or_default()
                    .push(value);
            }
            t if t == AZURE_TOPIC => {
                let sub = value["resourceId"]
                    .as_str()
                    .and_then(|id| id.split('/').nth(2))
                    .unwrap_or("00000000-0000-0000-0000-000000000000")
                    .to_uppercase();
                let line = azure.entry((sub, hour)).or_default();
                line.extend_from_slice(&r.payload);
                line.push(b'\n');
            }
            t if t == GCP_TOPIC => {
                let line = gcp.entry(hour).or_default();
                line.extend_from_slice(&r.payload);
                line.push(b'\n');
            }
            _ => {}
        }
    }
    for ((account, region, delivery), mut events) in trail {
        // Newest first inside the file: order must come from the replay.
        events.reverse();
        let at = time(delivery);
        let dir = if account.ends_with('1') {
            root.join(format!(
                "AWSLogs/o-exampleorg/{account}/CloudTrail/{region}"
            ))
        } else {
            root.join(format!("AWSLogs/{account}/CloudTrail/{region}"))
        };
        let name = format!(
            "{}/{account}_CloudTrail_{region}_{}_x{delivery}.json.gz",
            at.format("%Y/%m/%d"),
            at.format("%Y%m%dT%H%MZ")
        );
        let body = serde_json::to_vec(&serde_json::json!({ "Records": events })).unwrap();
        write(&dir.join(name), &gz(&body));
        // A digest beside it, which is not an audit log and must be skipped.
        let digest = root.join(format!(
            "AWSLogs/{account}/CloudTrail-Digest/{region}/{}/{account}_CloudTrail-Digest_{region}_{}.json.gz",
            at.format("%Y/%m/%d"),
            at.format("%Y%m%dT%H%MZ")
        ));
        write(
            &digest,
            &gz(b"{\"awsAccountId\":\"x\",\"digestStartTime\":\"2025-01-01T00:00:00Z\"}"),
        );
    }
    for ((sub, hour), body) in azure {
        let at = time(hour);
        let path = root.join(format!(
            "insights-activity-logs/resourceId=/SUBSCRIPTIONS/{sub}/y={}/m={}/d={}/h={}/m=00/PT1H.json",
            at.format("%Y"),
            at.format("%m"),
            at.format("%d"),
            at.format("%H")
        ));
        write(&path, &body);
    }
    for (hour, body) in gcp {
        let at = time(hour);
        let path = root.join(format!(
            "cloudaudit.googleapis.com/activity/{}/{}:00:00_{}:59:59_S0.json",
            at.format("%Y/%m/%d"),
            at.format("%H"),
            at.format("%H")
        ));
        write(&path, &body);
    }
    broken
}

pub fn files(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    out.sort();
    out
}

/// Finding ids of the archive, replayed.
pub fn replay_ids(
    analyzer: &Analyzer,
    root: &Path,
    filter: &Filter,
) -> (BTreeSet<String>, u64, usize, usize) {
    let plan = plan(&files(root), filter);
    let (skipped, pruned) = (plan.digests_skipped, plan.pruned);
    let mut stream = Stream::in_time_order();
    let mut findings = Vec::new();
    let mut events = 0u64;
    let store = Store::default();
    let options = ReadOptions::new(Decoder::default(), filter, 2, &store);
    analyze(
        &plan,
        &options,
        analyzer,
        &mut stream,
        |found| {
            events += 1;
            findings.append(found);
        },
        |_, _| {},
        |_| {},
    )
    .unwrap();
    analyzer.finish(&mut stream, &mut findings);
    // In order means in order: nothing reached the correlator later than
    // its allowed lateness, across files and across hours.
    assert_eq!(
        analyzer.correlator().stats().late,
        0,
        "late events in replay"
    );
    (
        findings.into_iter().map(|f| f.id).collect(),
        events,
        skipped,
        pruned,
    )
}
