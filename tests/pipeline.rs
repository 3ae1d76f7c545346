//! The Kafka pipeline against librdkafka's in-process cluster (the real
//! Kafka protocol on a loopback port): messages in, findings in the outbox,
//! broken records on the dead-letter topic with their headers; offsets only
//! after the outbox sync (a failing outbox commits nothing and the next run
//! gets every message again); a graceful stop commits everything; two
//! members of one group split the partitions; a new member rebuilds the
//! correlation state of its partitions without repeating a finding.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use seamwatch::analyze::{Analyzer, Scratch};
use seamwatch::correlate::{CorrelationConfig, Stream};
use seamwatch::detect::finding::SourceRef;
use seamwatch::detect::loader::load_builtin_report;
use seamwatch::detect::{Finding, FindingKind};
use seamwatch::event::{Decoder, FormatHint, Limits};
use seamwatch::matrix::Matrix;
use seamwatch::pipeline::config::TopicConfig;
use seamwatch::pipeline::outbox::{FindingSink, OutboxError};
use seamwatch::pipeline::run::run;
use seamwatch::pipeline::{JsonlOutbox, KafkaConfig, Metrics, PipelineError, RunSummary};
use seamwatch::synth::{Generator, SynthConfig};

mod common;

const TOPIC: &str = "ct";
const DLQ: &str = "dlq";
const PARTITIONS: i32 = 4;

fn analyzer() -> Arc<Analyzer> {
    Arc::new(
        Analyzer::build(
            load_builtin_report().unwrap(),
            Arc::new(Matrix::builtin()),
            CorrelationConfig::default(),
        )
        .0,
    )
}

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    cluster.create_topic(DLQ, 1, 1).unwrap();
    cluster
}

const BROKEN: [&[u8]; 2] = [
    br#"{"eventVersion":"1.09","eventSource":"s3.amazonaws.com","eventName":"GetObj"#,
    br#"{"message":"not an audit record"}"#,
];

/// Produces `n` synthetic CloudTrail events (keyed by account) and the two
/// broken records; returns the records.
fn produce(brokers: &str, n: usize) -> Vec<Vec<u8>> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let mut records = Vec::new();
    for event in Generator::new(SynthConfig {
        security_share: 0.5,
        ..SynthConfig::default()
    })
    .take(n)
    {
        producer
            .send(
                BaseRecord::to(TOPIC)
                    .key(event.account.as_bytes())
                    .payload(event.json.as_bytes()),
            )
            .unwrap();
        records.push(event.json.into_bytes());
    }
    for broken in BROKEN {
        producer
            .send(BaseRecord::<[u8], [u8]>::to(TOPIC).payload(broken))
            .unwrap();
        records.push(broken.to_vec());
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    records
}

fn kafka(brokers: &str, group: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.into(),
        group_id: group.into(),
        topics: vec![TopicConfig {
            name: TOPIC.into(),
            format: FormatHint::CloudTrail,
        }],
        dead_letter_topic: DLQ.into(),
        commit_interval: "200ms".into(),
        workers: 2,
        // A member that left is noticed quickly when the next one joins.
        properties: [
            ("session.timeout.ms".to_owned(), "6000".to_owned()),
            ("heartbeat.interval.ms".to_owned(), "1000".to_owned()),
        ]
        .into_iter()
        .collect(),
        ..KafkaConfig::default()
    }
}

/// Runs the pipeline until it has consumed `until` messages (or 60 s).
fn run_until(
    kafka: &KafkaConfig,
    sink: Arc<dyn FindingSink>,
    until: u64,
) -> (Result<RunSummary, PipelineError>, Arc<Metrics>) {
    common::pipeline::run_until(kafka, analyzer(), sink, until, Duration::from_secs(60))
}

fn outbox(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Committed offsets of the group, summed over the topic's partitions.
fn committed(brokers: &str, group: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(TOPIC, p);
    }
    let offsets = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    offsets
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(n) => n,
            _ => 0,
        })
        .sum()
}

#[test]
fn messages_become_findings_and_broken_records_are_dead_lettered() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    // More records than the consumer hands over in one burst, all waiting
    // when it starts: none may fall between two bursts.
    let records = produce(&brokers, 2500);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.jsonl");
    let sink: Arc<dyn FindingSink> = Arc::new(JsonlOutbox::open(&path).unwrap());
    let (result, metrics) = run_until(&kafka(&brokers, "g1"), sink, records.len() as u64);
    let summary = result.unwrap();
    assert_eq!(summary.messages, records.len() as u64);
    assert_eq!(summary.events, 2500);
    assert_eq!(summary.dead_lettered, 2);
    assert_eq!(metrics.total_errors(), 2);

    // Single-event findings are exactly those of the same records run
    // directly through an analyzer (partitions do not change them).
    let analyzer = analyzer();
    let decoder = Decoder::new(FormatHint::CloudTrail, Limits::default());
    let mut expected: Vec<Finding> = Vec::new();
    let mut stream = Stream::new();
    let mut scratch = Scratch::default();
    for record in &records {
        decoder.decode(record, &mut |d| {
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
        .filter(|f| f.kind != FindingKind::Correlation && f.kind != FindingKind::UnmappedService)
        .map(|f| f.id.clone())
        .collect();
    let got: BTreeSet<String> = outbox(&path)
        .iter()
        .filter(|f| f["kind"] != "correlation" && f["kind"] != "unmapped_service")
        .map(|f| f["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(got, expected);
    // Evidence cites the Kafka position.
    let any = &outbox(&path)[0];
    assert!(
        any["evidence"][0]["source"]
            .as_str()
            .unwrap()
            .starts_with("kafka:ct/"),
        "{any}"
    );

    // The dead-letter topic holds the records unchanged, with the reason.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "dlq-reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(DLQ, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut dead = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dead.len() < 2 && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m.headers().unwrap();
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            assert_eq!(header("seamwatch.source.topic").as_deref(), Some(TOPIC));
            assert!(header("seamwatch.source.offset").is_some());
            dead.insert(
                header("seamwatch.reason").unwrap(),
                m.payload().unwrap().to_vec(),
            );
        }
    }
    assert_eq!(dead.get("truncated").map(Vec::as_slice), Some(BROKEN[0]));
    assert_eq!(
        dead.get("unknown_format").map(Vec::as_slice),
        Some(BROKEN[1])
    );

    // The graceful stop committed every message: no lag left.
    assert_eq!(committed(&brokers, "g1"), records.len() as i64);
    assert_eq!(summary.commit_lag, 0);
}

#[test]
fn commit_lag_counts_what_was_not_consumed() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let records = produce(&brokers, 600);
    let dir = tempfile::tempdir().unwrap();
    let sink: Arc<dyn FindingSink> =
        Arc::new(JsonlOutbox::open(&dir.path().join("o.jsonl")).unwrap());
    let config = KafkaConfig {
        batch: 10,
        queue: 10,
        ..kafka(&brokers, "g5")
    };
    let (result, _) = run_until(&config, sink, 50);
    let summary = result.unwrap();
    assert!(summary.messages < records.len() as u64, "{summary:?}");
    assert_eq!(
        summary.commit_lag,
        records.len() as i64 - committed(&brokers, "g5")
    );
    assert_eq!(committed(&brokers, "g5"), summary.messages as i64);
    assert!(summary.commit_lag > 0);
}

/// An outbox whose sync always fails: nothing may be committed.
struct BrokenOutbox;

impl FindingSink for BrokenOutbox {
    fn append(&self, _: &[Finding]) -> Result<(), OutboxError> {
        Ok(())
    }
    fn sync(&self) -> Result<(), OutboxError> {
        Err(OutboxError::Io {
            path: "broken".into(),
            source: std::io::Error::other("disk full"),
        })
    }
}

#[test]
fn offsets_move_only_after_the_outbox_sync() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let records = produce(&brokers, 200);
    let (result, _) = run_until(&kafka(&brokers, "g2"), Arc::new(BrokenOutbox), 1);
    let err = result.unwrap_err().to_string();
    assert!(err.contains("disk full"), "{err}");
    assert_eq!(committed(&brokers, "g2"), 0);

    // The next run of the group gets every message again.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.jsonl");
    let sink: Arc<dyn FindingSink> = Arc::new(JsonlOutbox::open(&path).unwrap());
    let (result, _) = run_until(&kafka(&brokers, "g2"), sink, records.len() as u64);
    assert_eq!(result.unwrap().messages, records.len() as u64);
    assert!(!outbox(&path).is_empty());
    assert_eq!(committed(&brokers, "g2"), records.len() as i64);
}

#[test]
fn two_members_of_one_group_split_the_partitions() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let total = 402u64;
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let all_metrics: Vec<Arc<Metrics>> = (0..2).map(|_| Arc::default()).collect();
    let members: Vec<_> = (0..2)
        .map(|i| {
            let kafka = kafka(&brokers, "g3");
            let path = dir.path().join(format!("outbox-{i}.jsonl"));
            let done = done.clone();
            let metrics = all_metrics[i].clone();
            std::thread::spawn(move || {
                let stop = Arc::new(AtomicBool::new(false));
                let watcher = {
                    let (metrics, stop, done) = (metrics.clone(), stop.clone(), done.clone());
                    std::thread::spawn(move || {
                        let deadline = Instant::now() + Duration::from_secs(60);
                        let mut seen = 0;
                        while done.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                            let now = metrics.messages.load(Ordering::Relaxed);
                            done.fetch_add(now - seen, Ordering::Relaxed);
                            seen = now;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        stop.store(true, Ordering::Relaxed);
                    })
                };
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let sink: Arc<dyn FindingSink> = Arc::new(JsonlOutbox::open(&path).unwrap());
                let client = kafka.client_config(|_| None).unwrap();
                let summary = rt
                    .block_on(run(
                        &kafka,
                        client,
                        Limits::default(),
                        analyzer(),
                        sink,
                        metrics,
                        stop,
                    ))
                    .unwrap();
                watcher.join().unwrap();
                summary.messages
            })
        })
        .collect();
    // Both have joined the group and split its partitions before there
    // is anything to read.
    let assigned = |m: &Arc<Metrics>| m.assigned.load(Ordering::Relaxed);
    common::wait_for(Duration::from_secs(60), "both members' assignments", || {
        all_metrics.iter().all(|m| assigned(m) > 0)
            && all_metrics.iter().map(assigned).sum::<u64>() == PARTITIONS as u64
    });
    produce(&brokers, 400);
    let counts: Vec<u64> = members.into_iter().map(|m| m.join().unwrap()).collect();
    assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    assert!(counts.iter().sum::<u64>() >= total, "{counts:?}");
}

fn deletion(minute: u32) -> String {
    format!(
        r#"{{"eventVersion":"1.09","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/mallory","accountId":"111111111111","userName":"mallory"}},"eventTime":"2025-03-01T10:{minute:02}:00Z","eventSource":"ec2.amazonaws.com","eventName":"DeleteSnapshot","awsRegion":"us-east-1","eventID":"00000000-0000-4000-8000-0000000000{minute:02}","recipientAccountId":"111111111111","requestParameters":{{"snapshotId":"snap-{minute}"}}}}"#
    )
}

fn produce_raw(brokers: &str, records: &[String]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for record in records {
        producer
            .send(
                BaseRecord::to(TOPIC)
                    .key("111111111111")
                    .payload(record.as_str()),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Fails with `warm_up = "0s"`: the first three deletions are then forgotten.
#[test]
fn a_new_member_rebuilds_correlation_state_without_repeating_findings() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let mass = |path: &Path| {
        outbox(path)
            .into_iter()
            .filter(|f| f["rule_id"] == "correlation.mass_deletion_of_recovery_points")
            .collect::<Vec<_>>()
    };

    // Three deletions: below the threshold of five. Stop (and commit).
    produce_raw(&brokers, &[deletion(0), deletion(1), deletion(2)]);
    let first = dir.path().join("first.jsonl");
    let sink: Arc<dyn FindingSink> = Arc::new(JsonlOutbox::open(&first).unwrap());
    let (result, _) = run_until(&kafka(&brokers, "g4"), sink, 3);
    result.unwrap();
    assert!(mass(&first).is_empty());
    assert_eq!(committed(&brokers, "g4"), 3);

    // Two more, read by a new process: it re-reads the first three, muted,
    // so the pattern completes once and nothing old is reported again.
    produce_raw(&brokers, &[deletion(3), deletion(4)]);
    let second = dir.path().join("second.jsonl");
    let sink: Arc<dyn FindingSink> = Arc::new(JsonlOutbox::open(&second).unwrap());
    let (result, _) = run_until(&kafka(&brokers, "g4"), sink, 2);
    assert_eq!(result.unwrap().messages, 2);
    let found = mass(&second);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["evidence"].as_array().unwrap().len(), 5);
    for finding in outbox(&second) {
        if finding["kind"] == "correlation" {
            continue;
        }
        let source = finding["evidence"][0]["source"]
            .as_str()
            .unwrap()
            .to_owned();
        let offset: i64 = source.rsplit('@').next().unwrap().parse().unwrap();
        assert!(
            offset >= 3,
            "a finding of an already committed record came again: {finding}"
        );
    }
}
