//! The `seamwatch` binary, driven as a user would: files, directories, `.gz`,
//! stdin, the dead-letter file, exit codes and a closed pipe.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use assert_cmd::prelude::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn seamwatch() -> Command {
    Command::cargo_bin("seamwatch").unwrap()
}

fn stdout_lines(output: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn version_and_help() {
    let out = seamwatch().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = seamwatch().arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("parse"));
}

#[test]
fn parse_a_file_prints_one_event_per_line_and_a_summary() {
    let out = seamwatch()
        .args(["parse"])
        .arg(fixtures().join("aws/s3-object.json"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let events = stdout_lines(&out);
    assert_eq!(events.len(), 7);
    assert!(
        events
            .iter()
            .all(|e| e["cloud"] == "aws" && e["shape"] == "cloud_trail_s3_object")
    );
    assert_eq!(events[2]["source"]["index"], 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("parsed 7 events (aws=7)"), "{stderr}");
}

#[test]
fn parse_a_directory_recursively_with_gzip_files() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("AWSLogs/1/CloudTrail/us-east-1/2024/07/31");
    std::fs::create_dir_all(&nested).unwrap();
    let plain = std::fs::read(fixtures().join("aws/cloudtrail-records.jsonl")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    std::fs::write(
        nested.join("1_CloudTrail_us-east-1_x.json.gz"),
        gz.finish().unwrap(),
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("gcp/audit.jsonl"),
        dir.path().join("gcp.jsonl"),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a log").unwrap();

    let out = seamwatch().arg("parse").arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    let events = stdout_lines(&out);
    let aws = events.iter().filter(|e| e["cloud"] == "aws").count();
    let gcp = events.iter().filter(|e| e["cloud"] == "gcp").count();
    assert_eq!((aws, gcp), (11, 8));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("from 2 input(s)"), "{stderr}");
}

#[test]
fn parse_reads_stdin() {
    for args in [vec!["parse"], vec!["parse", "-"]] {
        let mut child = seamwatch()
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let input = std::fs::read(fixtures().join("azure/eventhub-batch.json")).unwrap();
        child.stdin.take().unwrap().write_all(&input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let events = stdout_lines(&out);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["service"], "Microsoft.Insights");
        assert_eq!(events[0]["source"]["file"], "-");
    }
}

#[test]
fn rejected_records_go_to_the_dead_letter_file_and_strict_fails() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dead.jsonl");
    let out = seamwatch()
        .args(["parse", "--strict", "--dead-letter"])
        .arg(&dlq)
        .arg(fixtures().join("gcp/logging-export.jsonl"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout_lines(&out).len(), 9);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 rejected") && stderr.contains("not_audit_log"),
        "{stderr}"
    );
    let dead: Vec<serde_json::Value> = std::fs::read_to_string(&dlq)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|d| d["reason"] == "not_audit_log"));
    assert!(dead[0]["raw"].as_str().unwrap().contains("Payload"));
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = seamwatch()
        .args(["parse", "/no/such/file.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/no/such/file.json"), "{stderr}");
}

#[test]
fn a_closed_pipe_ends_quietly_with_success() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.jsonl");
    let line = std::fs::read_to_string(fixtures().join("aws/cloudtrail-records.jsonl")).unwrap();
    std::fs::write(&big, line.repeat(3000)).unwrap();
    let mut child = seamwatch()
        .arg("parse")
        .arg(&big)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.contains("\"cloud\":\"aws\""));
    drop(reader);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn the_config_file_sets_defaults_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seamwatch.toml");
    std::fs::write(&config, "[input]\nformat = \"gcp\"\n").unwrap();
    let file = fixtures().join("aws/array.json");
    let out = seamwatch()
        .arg("--config")
        .arg(&config)
        .arg("parse")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(stdout_lines(&out).is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("format_mismatch"));
    let out = seamwatch()
        .arg("--config")
        .arg(&config)
        .args(["parse", "--format", "cloudtrail"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(stdout_lines(&out).len(), 2);

    std::fs::write(&config, "[input]\nformt = \"gcp\"\n").unwrap();
    let out = seamwatch()
        .arg("--config")
        .arg(&config)
        .arg("parse")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("formt") && stderr.contains("line 2"),
        "{stderr}"
    );
}

#[test]
fn matrix_check_reports_errors_with_line_numbers_and_old_reviews() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("matrix.toml");
    std::fs::write(&bad, "[review]\nlast_reviewed = 2020-01-01\n\n[services.\"s3.amazonaws.com\"]\ncloud = \"aws\"\nmodel = \"paas\"\n").unwrap();
    let out = seamwatch()
        .args(["matrix", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("line 4") && stdout.contains("identity"),
        "{stdout}"
    );

    let old = dir.path().join("old.toml");
    std::fs::write(&old, "[review]\nlast_reviewed = 2020-01-01\n").unwrap();
    let out = seamwatch()
        .args(["matrix", "check"])
        .arg(&old)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("days ago"));

    let out = seamwatch()
        .args(["matrix", "check"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/responsibility.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
}

#[test]
fn rules_test_and_check_report_pass_fail_and_rejections() {
    let out = seamwatch()
        .args(["rules", "test", "--quiet"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 0 failed"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "rules:\n  - id: bad\n    title: t\n    severity: low\n    cloud: aws\n    domain: data\n    match:\n      service: s3.amazonaws.com\n      where:\n        - field: x\n          regex: '('\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("failing.yaml"),
        "rules:\n  - id: failing\n    title: t\n    severity: low\n    cloud: aws\n    domain: data\n    match:\n      service: s3.amazonaws.com\n      operation: PutBucketAcl\n    tests:\n      - expect: match\n        event: {\"eventSource\": \"s3.amazonaws.com\", \"eventName\": \"GetObject\", \"eventTime\": \"2024-01-01T00:00:00Z\"}\n",
    )
    .unwrap();
    let out = seamwatch()
        .args(["rules", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rejected") && stdout.contains("bad regex"),
        "{stdout}"
    );
    let out = seamwatch()
        .args(["rules", "test"])
        .arg(dir.path().join("failing.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL") && stdout.contains("did not match"),
        "{stdout}"
    );
}

#[test]
fn replay_prints_findings_for_an_attack() {
    let out = seamwatch()
        .args(["replay"])
        .arg(fixtures().join("aws/cloudtrail-records.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let findings = stdout_lines(&out);
    let rules: Vec<&str> = findings
        .iter()
        .filter_map(|f| f["rule_id"].as_str())
        .collect();
    assert!(
        rules.contains(&"aws.logging.cloudtrail_stopped"),
        "{rules:?}"
    );
    assert!(
        rules.contains(&"aws.network.sg_ingress_open_to_internet"),
        "{rules:?}"
    );
    let stopped = findings
        .iter()
        .find(|f| f["rule_id"] == "aws.logging.cloudtrail_stopped")
        .unwrap();
    assert_eq!(stopped["responsibility"], "customer");
    assert!(
        stopped["evidence"][0]["source"]
            .as_str()
            .unwrap()
            .ends_with("cloudtrail-records.jsonl:1")
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("findings"));
}

#[test]
fn replay_says_when_events_came_later_than_the_allowed_lateness() {
    // The fixture's records are days apart, not in time order. A file that
    // small is sorted whole; stdin is taken as it comes, as live.
    let file = fixtures().join("aws/cloudtrail-records.jsonl");
    let sorted = seamwatch().args(["replay"]).arg(&file).output().unwrap();
    let mut child = seamwatch()
        .args(["replay", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = std::fs::read(&file).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let streamed = child.wait_with_output().unwrap();
    assert!(sorted.status.success() && streamed.status.success());
    let stderr = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).into_owned();
    let late = |text: &str| -> u64 {
        let at = text.find(" late beyond").expect("correlation line");
        text[..at].rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(late(&stderr(&sorted)), 0, "{}", stderr(&sorted));
    assert!(!stderr(&sorted).contains("note: some events came"));
    assert!(late(&stderr(&streamed)) > 0, "{}", stderr(&streamed));
    assert!(
        stderr(&streamed).contains("note: some events came more than the allowed lateness"),
        "{}",
        stderr(&streamed)
    );
    // Each event's own findings come out once, whichever way it was read.
    let rule_ids = |out: &std::process::Output| -> Vec<String> {
        let mut ids: Vec<String> = stdout_lines(out)
            .iter()
            .filter(|f| f["kind"] != "correlation")
            .map(|f| f["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let (sorted_ids, streamed_ids) = (rule_ids(&sorted), rule_ids(&streamed));
    assert!(sorted_ids.len() > 1, "{sorted_ids:?}");
    assert_eq!(streamed_ids, sorted_ids);
}

#[test]
fn replay_reads_a_json_lines_file_larger_than_the_document_limit() {
    let file = fixtures().join("aws/cloudtrail-records.jsonl");
    let size = std::fs::metadata(&file).unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seamwatch.toml");
    // Below the file's 13.5 KB, above its longest line (2.2 KB).
    std::fs::write(
        &config,
        "[limits]\nmax_record_bytes = 4096\nmax_document_bytes = 4096\n",
    )
    .unwrap();
    assert!(size > 4096);
    let ids = |out: &std::process::Output| -> Vec<String> {
        let mut ids: Vec<String> = stdout_lines(out)
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let unlimited = seamwatch().args(["replay"]).arg(&file).output().unwrap();
    let limited = seamwatch()
        .arg("--config")
        .arg(&config)
        .arg("replay")
        .arg(&file)
        .output()
        .unwrap();
    assert!(limited.status.success());
    assert!(!ids(&unlimited).is_empty());
    assert_eq!(ids(&limited), ids(&unlimited));
}

#[test]
fn replay_compare_prints_the_findings_two_rule_sets_disagree_on() {
    let dir = tempfile::tempdir().unwrap();
    let rule = |id: &str, operation: &str| {
        format!(
            "rules:\n  - id: {id}\n    title: {id}\n    description: test rule\n    severity: low\n    cloud: aws\n    domain: logging\n    match: {{operation: {operation}}}\n"
        )
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("r.yaml"), rule("test.only_a", "StopLogging")).unwrap();
    std::fs::write(
        b.join("r.yaml"),
        rule("test.only_b", "AuthorizeSecurityGroupIngress"),
    )
    .unwrap();
    let out = seamwatch()
        .args(["replay", "--compare"])
        .arg(&a)
        .arg(&b)
        .arg(fixtures().join("aws/cloudtrail-records.jsonl"))
        .output()
        .unwrap();
    // They differ: status 1, and only the two test rules are listed.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = stdout_lines(&out);
    let sides: std::collections::BTreeSet<(String, String)> = lines
        .iter()
        .map(|f| {
            (
                f["rule_id"].as_str().unwrap().to_owned(),
                f["only_in"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        sides,
        std::collections::BTreeSet::from([
            ("test.only_a".to_owned(), "a".to_owned()),
            ("test.only_b".to_owned(), "b".to_owned())
        ]),
        "{lines:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 rules differ"), "{stderr}");

    // The same set twice: no difference, status 0.
    let out = seamwatch()
        .args(["replay", "--compare"])
        .arg(&a)
        .arg(&a)
        .arg(fixtures().join("aws/cloudtrail-records.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(stdout_lines(&out).is_empty());
}

#[test]
fn replay_writes_ocsf_to_a_file_and_delivers_through_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let delivered = dir.path().join("delivered.jsonl");
    let config = dir.path().join("seamwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[alerts]\noutbox = {:?}\n[[alerts.sinks]]\nname = \"file\"\ntype = \"jsonl\"\npath = {:?}\n",
            dir.path().join("outbox.redb"),
            delivered
        ),
    )
    .unwrap();
    let ocsf = dir.path().join("findings.ocsf.jsonl");
    let out = seamwatch()
        .arg("--config")
        .arg(&config)
        .args(["replay", "--format", "ocsf", "--deliver", "--output"])
        .arg(&ocsf)
        .arg(fixtures().join("aws/cloudtrail-records.jsonl"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.is_empty(),
        "findings went to --output, not stdout"
    );
    let findings: Vec<serde_json::Value> = std::fs::read_to_string(&ocsf)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(findings.len() >= 2, "{findings:?}");
    assert!(findings.iter().all(|f| f["class_uid"] == 2004));
    // Every finding reached the destination as an alert notice (creates and
    // updates; none was a resolution here).
    let notices: Vec<serde_json::Value> = std::fs::read_to_string(&delivered)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let delivered_ids: std::collections::BTreeSet<&str> = notices
        .iter()
        .filter_map(|n| n["finding_id"].as_str())
        .collect();
    let ocsf_ids: std::collections::BTreeSet<&str> = findings
        .iter()
        .filter_map(|f| f["finding_info"]["uid"].as_str())
        .collect();
    assert_eq!(delivered_ids, ocsf_ids);
}

#[test]
fn replay_timeline_lists_every_finding_in_event_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let timeline = dir.path().join("timeline.md");
    let out = seamwatch()
        .args(["replay", "--timeline"])
        .arg(&timeline)
        .arg(fixtures().join("aws"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let findings = stdout_lines(&out);
    let text = std::fs::read_to_string(&timeline).unwrap();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("| 2") || l.starts_with("| -"))
        .collect();
    assert_eq!(rows.len(), findings.len(), "{text}");
    let times: Vec<&str> = rows
        .iter()
        .map(|r| r.split('|').nth(1).unwrap().trim())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "rows are not in time order");
    for f in &findings {
        assert!(
            text.contains(f["rule_id"].as_str().unwrap()),
            "{} missing",
            f["rule_id"]
        );
    }

    // The same as a self-contained HTML page: one row per finding, nothing
    // from the logs unescaped.
    let html = dir.path().join("timeline.html");
    let out = seamwatch()
        .args(["replay", "-q", "--timeline"])
        .arg(&html)
        .arg(fixtures().join("aws"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!doctype html>"));
    assert_eq!(page.matches("<tr class=").count(), findings.len());
    assert!(!page.contains("<script"), "no script, no external resource");
}
