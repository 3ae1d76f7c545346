//! `seamwatch replay` from remote sources, against real servers on
//! loopback:
//!
//! - `s3://bucket/prefix`: the three layouts uploaded to an S3 server
//!   (moto), replayed through the AWS SDK with path-style addressing, must
//!   give exactly the findings of the same files on disk, and `--since` /
//!   `--until` must prune whole folders from the listing;
//! - `cloudtrail://regions`: CloudTrail's event history through LookupEvents
//!   (a server of the tests' own, which pages, filters and throttles as the
//!   API does) must give the findings of the same records replayed from a
//!   file, following every page, never above two requests per second per
//!   region, and riding out throttling.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use assert_cmd::prelude::*;
use seamwatch::analyze::Analyzer;
use seamwatch::correlate::CorrelationConfig;
use seamwatch::detect::loader::load_builtin_report;
use seamwatch::matrix::Matrix;
use seamwatch::pipeline::demo::{CLOUDTRAIL_TOPIC, demo_records};

mod common;
use common::archive::{files, write_archive};
use common::lookup_events::LookupServer;
use common::services::s3_server;

fn analyzer() -> Analyzer {
    Analyzer::build(
        load_builtin_report().unwrap(),
        std::sync::Arc::new(Matrix::builtin()),
        CorrelationConfig::default(),
    )
    .0
}

/// `seamwatch replay` with test credentials; findings go to `out`.
fn replay(args: &[&str], out: &Path) -> Output {
    let output = Command::cargo_bin("seamwatch")
        .unwrap()
        .arg("replay")
        .args(args)
        .arg("--output")
        .arg(out)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "replay {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Finding ids in a findings file, by rule.
fn finding_ids(path: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let f: serde_json::Value = serde_json::from_str(line).unwrap();
        ids.entry(f["rule_id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(f["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Rules whose findings differ: (rule, expected count, got count).
fn differences(
    expected: &BTreeMap<String, BTreeSet<String>>,
    got: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<(String, usize, usize)> {
    let rules: BTreeSet<&String> = expected.keys().chain(got.keys()).collect();
    rules
        .into_iter()
        .filter(|r| expected.get(*r) != got.get(*r))
        .map(|r| {
            let count = |m: &BTreeMap<String, BTreeSet<String>>| m.get(r).map_or(0, BTreeSet::len);
            (r.clone(), count(expected), count(got))
        })
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// "… N pruned by date …" from a replay's plan line.
fn pruned(o: &Output) -> usize {
    let text = stderr(o);
    text.split(" pruned by date")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn upload(endpoint: &str, bucket: &str, prefix: &str, root: &Path) -> usize {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    let client = aws_sdk_s3::Client::from_conf(config);
    let paths = files(root);
    runtime.block_on(async {
        client.create_bucket().bucket(bucket).send().await.unwrap();
        for path in &paths {
            let key = format!(
                "{prefix}{}",
                path.strip_prefix(root).unwrap().to_str().unwrap()
            );
            client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(std::fs::read(path).unwrap().into())
                .send()
                .await
                .unwrap();
        }
    });
    paths.len()
}

#[test]
fn s3_archive_replays_to_the_findings_of_the_same_files_on_disk() {
    let Some(s3) = s3_server() else { return };
    let records = demo_records(analyzer().correlator().correlations(), 2_000);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("archive");
    write_archive(&archive, &records);
    // A fresh bucket, as the server may outlive one run.
    let bucket = format!("trail-archive-{}", std::process::id());
    let url = format!("s3://{bucket}/org/");
    let uploaded = upload(&s3.endpoint, &bucket, "org/", &archive);
    assert!(uploaded > 50, "{uploaded} objects");
    let (local_out, s3_out) = (dir.path().join("local.jsonl"), dir.path().join("s3.jsonl"));

    let local = replay(&[archive.to_str().unwrap()], &local_out);
    let remote = replay(&[&url, "--endpoint-url", &s3.endpoint], &s3_out);
    let (expected, got) = (finding_ids(&local_out), finding_ids(&s3_out));
    assert!(
        expected.values().map(BTreeSet::len).sum::<usize>() > 50,
        "{expected:?}"
    );
    assert!(
        expected.keys().any(|rule| rule.contains("correlation.")),
        "no correlation among {:?}",
        expected.keys()
    );
    assert_eq!(differences(&expected, &got), vec![], "{}", stderr(&remote));
    assert!(stderr(&remote).contains("digest"), "{}", stderr(&remote));
    assert!(stderr(&local).contains("replayed"));

    // The middle of the time range: whole folders are left unlisted.
    let mut times: Vec<i64> = records.iter().map(|r| r.time_ms).collect();
    times.sort();
    let at = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339()
    };
    let (lo, hi) = (times[0], times[times.len() - 1]);
    let (since, until) = (at(lo + (hi - lo) / 3), at(lo + 2 * (hi - lo) / 3));
    let range = ["--since", &since, "--until", &until];
    let local = replay(
        &[&[archive.to_str().unwrap()][..], &range[..]].concat(),
        &local_out,
    );
    let remote = replay(
        &[&[&url, "--endpoint-url", &s3.endpoint][..], &range[..]].concat(),
        &s3_out,
    );
    assert_eq!(finding_ids(&s3_out), finding_ids(&local_out));
    assert!(pruned(&local) > 0, "{}", stderr(&local));
    assert!(pruned(&remote) > 0, "{}", stderr(&remote));
}

#[test]
fn s3_errors_are_clear() {
    let Some(s3) = s3_server() else { return };
    let out = tempfile::NamedTempFile::new().unwrap();
    let output = Command::cargo_bin("seamwatch")
        .unwrap()
        .args([
            "replay",
            "s3://no-such-bucket/x/",
            "--endpoint-url",
            &s3.endpoint,
            "--output",
        ])
        .arg(out.path())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(
        text.contains("listing s3://no-such-bucket/x/") && text.contains("NoSuchBucket"),
        "{text}"
    );
}

/// The demo's CloudTrail records, in two regions.
fn cloudtrail_records() -> Vec<serde_json::Value> {
    demo_records(analyzer().correlator().correlations(), 400)
        .into_iter()
        .filter(|r| r.topic == CLOUDTRAIL_TOPIC)
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.payload).ok())
        .filter(|v| {
            v["eventTime"]
                .as_str()
                .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
        })
        .map(|mut v| {
            if v["awsRegion"] != "eu-west-1" {
                v["awsRegion"] = "us-east-1".into();
            }
            v
        })
        .collect()
}

#[test]
fn cloudtrail_event_history_replays_paced_paged_and_through_throttling() {
    let records = cloudtrail_records();
    let regions: BTreeSet<&str> = records
        .iter()
        .map(|r| r["awsRegion"].as_str().unwrap())
        .collect();
    assert_eq!(regions.len(), 2, "{regions:?}");
    // The second request is throttled: the replay backs off and asks again.
    let server = LookupServer::start(&records, BTreeSet::from([1]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.jsonl");
    let lines: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let (from_file, from_history) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));

    replay(&[file.to_str().unwrap()], &from_file);
    let output = replay(
        &[
            "cloudtrail://us-east-1,eu-west-1",
            "--endpoint-url",
            &server.endpoint,
        ],
        &from_history,
    );
    let expected = finding_ids(&from_file);
    assert!(
        expected.values().map(BTreeSet::len).sum::<usize>() > 5,
        "{expected:?}"
    );
    assert_eq!(
        differences(&expected, &finding_ids(&from_history)),
        vec![],
        "{}",
        stderr(&output)
    );

    let requests = server.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.target == "CloudTrail_20131101.LookupEvents")
    );
    for region in ["us-east-1", "eu-west-1"] {
        let mine: Vec<_> = requests.iter().filter(|r| r.region == region).collect();
        let held = records.iter().filter(|r| r["awsRegion"] == region).count();
        let answered = mine.iter().filter(|r| !r.throttled).count();
        // Every page, and a request for each: ceil(held / 50).
        assert_eq!(answered, held.div_ceil(50), "{region}: {held} events");
        // Paced at 500 ms when sent; arrivals may be closer on a loaded
        // host, but not the few ms apart of an unpaced client.
        for pair in mine.windows(2) {
            let gap = pair[1].at.duration_since(pair[0].at);
            assert!(
                gap.as_millis() >= 250,
                "{region}: two requests {gap:?} apart"
            );
        }
    }
    // Only the one the test asked for was throttled, and it was retried.
    assert_eq!(requests.iter().filter(|r| r.throttled).count(), 1);
}

#[test]
fn cloudtrail_event_history_passes_time_range_and_lookup_attribute() {
    let records = cloudtrail_records();
    let server = LookupServer::start(&records, BTreeSet::new());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let output = replay(
        &[
            "cloudtrail://us-east-1?EventName=StopLogging",
            "--endpoint-url",
            &server.endpoint,
            "--since",
            "2020-01-01T00:00:00Z",
            "--until",
            "2100-01-01T00:00:00Z",
        ],
        &out,
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let body = &requests[0].body;
    assert_eq!(body["LookupAttributes"][0]["AttributeKey"], "EventName");
    assert_eq!(body["LookupAttributes"][0]["AttributeValue"], "StopLogging");
    assert_eq!(body["StartTime"].as_f64(), Some(1_577_836_800.0));
    assert_eq!(body["EndTime"].as_f64(), Some(4_102_444_800.0));
    let stops = records
        .iter()
        .filter(|r| r["awsRegion"] == "us-east-1" && r["eventName"] == "StopLogging")
        .count();
    assert!(stops > 0);
    assert!(
        stderr(&output).contains(&format!("replayed {stops} events")),
        "{}",
        stderr(&output)
    );
    let found = finding_ids(&out);
    assert!(
        found.contains_key("aws.logging.cloudtrail_stopped"),
        "{found:?}"
    );

    // A bad attribute is a clear error before any request.
    let output = Command::cargo_bin("seamwatch")
        .unwrap()
        .args([
            "replay",
            "cloudtrail://us-east-1?Colour=blue",
            "--endpoint-url",
            &server.endpoint,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("unknown lookup attribute \"Colour\""),
        "{}",
        stderr(&output)
    );
}
