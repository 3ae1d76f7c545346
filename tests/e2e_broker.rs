//! End to end against a real, separate Kafka-protocol broker: `seamwatch run`
//! as its own process consumes a corpus of the three clouds; it is killed
//! (`kill -9`) mid-stream and started again, and every expected finding still
//! reaches the alert destination (at-least-once: repeats are allowed, losses
//! are not): Kafka → detection → durable outbox → delivery to a JSON Lines
//! sink, across the kill.
//!
//! The broker address comes from `SEAMWATCH_TEST_BROKERS` (`.ci/run` starts
//! one and sets it, together with `SEAMWATCH_REQUIRE_BROKER=1`, which makes
//! a missing broker a failure instead of a notice).

mod common;

use common::broker;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use seamwatch::analyze::Scratch;
use seamwatch::correlate::Stream;
use seamwatch::detect::Finding;
use seamwatch::detect::finding::SourceRef;
use seamwatch::event::Decoder;
use seamwatch::pipeline::demo::demo_records;

fn start(config: &Path, brokers: &str, topics: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_seamwatch"))
        .args(["--config"])
        .arg(config)
        .args(["run"])
        .env("SEAMWATCH_KAFKA_BROKERS", brokers)
        .env("SEAMWATCH_KAFKA_TOPICS", topics)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The finding ids of the alert notices (creates and updates) delivered.
fn outbox_ids(path: &Path) -> (BTreeSet<String>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut ids = BTreeSet::new();
    let mut lines = 0;
    for line in text.lines() {
        // A kill -9 may cut the last line being written.
        if let Ok(notice) = serde_json::from_str::<serde_json::Value>(line) {
            lines += 1;
            let kind = &notice["finding"]["kind"];
            if notice["type"] == "alert"
                && notice["action"] != "close"
                && kind != "correlation"
                && kind != "unmapped_service"
            {
                ids.insert(notice["finding_id"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    (ids, lines)
}

#[test]
fn seamwatch_run_survives_kill_9_without_losing_a_finding() {
    let Some(brokers) = broker::brokers("real-broker end-to-end test") else {
        return;
    };
    let analyzer = common::builtin_analyzer();
    let records = demo_records(analyzer.correlator().correlations(), 3_000);

    // What must arrive: every single-event finding of the corpus.
    let decoder = Decoder::default();
    let mut expected: Vec<Finding> = Vec::new();
    let mut stream = Stream::new();
    let mut scratch = Scratch::default();
    for record in &records {
        decoder.decode(&record.payload, &mut |d| {
            if let Ok(event) = d.result {
                analyzer.process(
                    &event,
                    SourceRef::Unknown,
                    &mut stream,
                    &mut scratch,
                    &mut expected,
                );
            }
        });
    }
    let expected: BTreeSet<String> = expected
        .iter()
        .filter(|f| {
            !matches!(
                f.kind,
                seamwatch::detect::FindingKind::Correlation
                    | seamwatch::detect::FindingKind::UnmappedService
            )
        })
        // A resolution closes alerts instead of raising one.
        .filter(|f| f.resolves.is_empty())
        .map(|f| f.id.clone())
        .collect();
    assert!(expected.len() > 50, "{}", expected.len());

    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let topic_of = |t: &str| format!("e2e-{run_id}-{t}");
    let dlq = topic_of("dead-letter");
    broker::create_topics(
        &brokers,
        &[
            (topic_of("cloudtrail"), 3),
            (topic_of("azure-activity"), 2),
            (topic_of("gcp-audit"), 2),
            (dlq.clone(), 1),
        ],
    );
    let topics = format!(
        "{}:cloudtrail,{}:azure,{}:gcp",
        topic_of("cloudtrail"),
        topic_of("azure-activity"),
        topic_of("gcp-audit")
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seamwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\ngroup_id = \"e2e-{run_id}\"\ndead_letter_topic = \"{dlq}\"\ncommit_interval = \"300ms\"\nbatch = 50\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n[alerts]\noutbox = {outbox_db:?}\n[[alerts.sinks]]\nname = \"file\"\ntype = \"jsonl\"\npath = {outbox:?}\n",
            outbox_db = dir.path().join("outbox.redb"),
            outbox = dir.path().join("alerts.jsonl"),
        ),
    )
    .unwrap();
    let outbox = dir.path().join("alerts.jsonl");

    // First half, then kill -9 while it works.
    let half = records.len() / 2;
    let mut child = start(&config, &brokers, &topics);
    broker::produce(&brokers, &records[..half], &topic_of);
    let deadline = Instant::now() + Duration::from_secs(60);
    while outbox_ids(&outbox).0.len() < expected.len() / 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let a commit or two happen, so the restart resumes mid-stream.
    std::thread::sleep(Duration::from_millis(800));
    child.kill().unwrap(); // SIGKILL: no drain, no final commit
    child.wait().unwrap();
    let before = outbox_ids(&outbox).0.len();

    // Second half; a new process resumes from the last commit.
    broker::produce(&brokers, &records[half..], &topic_of);
    let mut child = start(&config, &brokers, &topics);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got = outbox_ids(&outbox).0;
    while !expected.is_subset(&got) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        got = outbox_ids(&outbox).0;
    }
    // SIGTERM: drain and commit, then exit cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");

    let missing: Vec<&String> = expected.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} of {} findings lost after kill -9 (first run had written {before}): {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(5)]
    );
    let (_, lines) = outbox_ids(&outbox);
    eprintln!(
        "e2e: {} expected findings all delivered; {lines} outbox lines ({} before the kill)",
        expected.len(),
        before
    );
}
