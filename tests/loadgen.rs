//! `seamwatch gen` and `seamwatch drill`, driven as a user would: archives
//! in the native layouts that `replay` reads back, repeatable output from a
//! seed, records produced to a Kafka-protocol cluster keyed by account, and
//! drills that pass with the built-in pack and report gaps without it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use assert_cmd::prelude::*;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;

fn seamwatch() -> Command {
    let mut command = Command::cargo_bin("seamwatch").unwrap();
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

fn files_under(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            e.path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn gen_writes_native_layouts_that_replay_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let out = seamwatch()
        .args([
            "gen",
            "-n",
            "6000",
            "--density",
            "2",
            "--attack-share",
            "0.003",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("gen: 6000 records"), "{summary}");
    let files = files_under(dir.path());
    for needle in [
        "AWSLogs/",
        "insights-activity-logs/resourceId=/SUBSCRIPTIONS/",
        "cloudaudit.googleapis.com/activity/",
    ] {
        assert!(
            files.iter().any(|f| f.starts_with(needle)),
            "no {needle} in {files:?}"
        );
    }
    let out = seamwatch()
        .args(["replay", "--no-builtin", "--rules", "config/rules"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("replayed 6000 events") && stderr.contains("(0 rejected"),
        "{stderr}"
    );
    let rules: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|f| f["rule_id"].as_str().unwrap().to_owned())
        .collect();
    // Security-relevant changes of all three clouds, and at least one
    // correlation from a woven-in attack scenario.
    for prefix in ["aws.", "azure.", "gcp."] {
        assert!(rules.iter().any(|r| r.starts_with(prefix)), "{rules:?}");
    }
    assert!(rules.iter().any(|r| r.contains("correlation")), "{rules:?}");
}

#[test]
fn gen_repeats_with_the_seed_and_differs_without_it() {
    let run = |seed: &str| {
        let out = seamwatch()
            .args(["gen", "-n", "500", "--jsonl", "-", "--seed", seed])
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout
    };
    let (a, b, c) = (run("11"), run("11"), run("12"));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let lines: Vec<&[u8]> = a.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 500);
    for line in lines {
        serde_json::from_slice::<serde_json::Value>(line).expect("a JSON record per line");
    }
}

#[test]
fn gen_rejects_bad_settings_with_a_clear_error() {
    let out = seamwatch()
        .args(["gen", "--jsonl", "-", "--attack-share", "3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--attack-share 3: expected 0 to 1"));
    let out = seamwatch().args(["gen", "-n", "5"]).output().unwrap();
    assert!(!out.status.success(), "an output is required");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep.txt"), "x").unwrap();
    let out = seamwatch()
        .args(["gen", "-n", "5", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the folder is not empty"));
}

#[test]
fn gen_produces_to_kafka_keyed_by_account() {
    let cluster = MockCluster::new(1).expect("the in-process cluster starts");
    for topic in ["t-aws", "t-azure", "t-gcp"] {
        cluster.create_topic(topic, 4, 1).unwrap();
    }
    let out = seamwatch()
        .args([
            "gen",
            "-n",
            "3000",
            "--kafka",
            "--rate",
            "20000",
            "--aws-topic",
            "t-aws",
            "--azure-topic",
            "t-azure",
            "--gcp-topic",
            "t-gcp",
            "--brokers",
        ])
        .arg(cluster.bootstrap_servers())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("3000 acknowledged"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "gen-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["t-aws", "t-azure", "t-gcp"]).unwrap();
    let mut per_topic: BTreeMap<String, usize> = BTreeMap::new();
    // Which partition each account went to: always the same one.
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen < 3000 && Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        seen += 1;
        *per_topic.entry(m.topic().to_owned()).or_default() += 1;
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        let body: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let account = match m.topic() {
            "t-aws" => body["recipientAccountId"].as_str().unwrap().to_owned(),
            "t-azure" => body["resourceId"]
                .as_str()
                .unwrap()
                .split('/')
                .nth(2)
                .unwrap()
                .to_owned(),
            _ => body["resource"]["labels"]["project_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        };
        assert_eq!(key, account);
        let previous = partition_of.insert(format!("{}/{key}", m.topic()), m.partition());
        assert!(
            previous.is_none_or(|p| p == m.partition()),
            "{key} moved partitions"
        );
    }
    assert_eq!(seen, 3000);
    assert_eq!(per_topic.len(), 3, "{per_topic:?}");
    assert!(per_topic.values().all(|&n| n >= 900), "{per_topic:?}");
}

#[test]
fn drills_pass_with_the_builtin_pack() {
    let out = seamwatch().arg("drill").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("9 drills, 0 gaps"), "{text}");
    for name in ["compromised-key", "public-bucket", "network-breach"] {
        for cloud in ["aws", "azure", "gcp"] {
            assert!(text.contains(&format!("Drill {name} ({cloud})")), "{text}");
        }
    }
    assert!(text.contains("paged: payments-platform"), "{text}");
    assert!(
        text.contains("aws.correlation.cloudtrail_not_restarted"),
        "{text}"
    );
}

#[test]
fn a_drill_without_the_correlations_reports_the_gaps_and_fails() {
    // Only the AWS single-event rules: the correlations the scenario expects
    // are missing from the map.
    let out = seamwatch()
        .args([
            "drill",
            "compromised-key",
            "--cloud",
            "aws",
            "--no-builtin",
            "--rules",
            "config/rules/aws",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gaps: BTreeSet<&str> = report["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert_eq!(
        gaps,
        BTreeSet::from([
            "correlation.denied_burst_then_privileged_success",
            "aws.correlation.new_access_key_used_from_new_ip",
            "aws.correlation.cloudtrail_not_restarted",
        ])
    );
    // The single-event rules still fire on their steps.
    let step = &report["steps"][7];
    assert_eq!(
        step["missing"][0],
        "correlation.denied_burst_then_privileged_success"
    );
    assert!(
        step["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["rule_id"] == "aws.identity.access_key_created_for_user")
    );
    let out = seamwatch().args(["drill", "tabletop"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scenario \"tabletop\""));
}
