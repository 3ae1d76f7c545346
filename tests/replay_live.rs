//! Replay equals live. The demo corpus (CloudTrail background, the
//! correlation tests' attack sequences for the three clouds, a few broken
//! records) is produced to a Kafka topic in delivery order (records up to two
//! minutes late, as collectors deliver them) and consumed by the live
//! pipeline (`seamwatch run`'s) into an outbox; the same records, written as
//! archives in the clouds' native layouts, are replayed. The finding ids must
//! be the same, correlations included.
//!
//! The topic has one partition: the live pipeline keeps one correlation
//! stream per partition and a replay is one stream, so this is the setting
//! in which "the same findings" is the promise (README, "Replay and live").

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use seamwatch::analyze::Analyzer;
use seamwatch::correlate::CorrelationConfig;
use seamwatch::detect::loader::load_builtin_report;
use seamwatch::event::FormatHint;
use seamwatch::matrix::Matrix;
use seamwatch::pipeline::config::TopicConfig;
use seamwatch::pipeline::demo::demo_records;
use seamwatch::pipeline::outbox::FindingSink;
use seamwatch::pipeline::{JsonlOutbox, KafkaConfig};
use seamwatch::replay::Filter;

mod common;
use common::archive::{replay_ids, write_archive};
use common::pipeline::run_until;

const TOPIC: &str = "audit";

fn analyzer() -> Analyzer {
    Analyzer::build(
        load_builtin_report().unwrap(),
        Arc::new(Matrix::builtin()),
        CorrelationConfig::default(),
    )
    .0
}

#[test]
fn live_pipeline_and_replay_of_the_archive_find_the_same() {
    let records = demo_records(analyzer().correlator().correlations(), 3_000);

    // Live: produce in delivery order, each record up to two minutes late.
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 1, 1).unwrap();
    cluster.create_topic("dlq", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut delivery: Vec<(i64, usize)> = records
        .iter()
        .enumerate()
        .map(|(n, r)| (r.time_ms + (n as i64 * 7919) % 120_000, n))
        .collect();
    delivery.sort();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for &(_, n) in &delivery {
        let r = &records[n];
        loop {
            match producer.send(
                BaseRecord::to(TOPIC)
                    .key(r.key.as_bytes())
                    .payload(&r.payload),
            ) {
                Ok(()) => break,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.jsonl");
    let sink: Arc<dyn FindingSink> = Arc::new(JsonlOutbox::open(&outbox).unwrap());
    let kafka = KafkaConfig {
        brokers: brokers.clone(),
        group_id: "replay-equals-live".into(),
        topics: vec![TopicConfig {
            name: TOPIC.into(),
            format: FormatHint::Auto,
        }],
        dead_letter_topic: "dlq".into(),
        commit_interval: "200ms".into(),
        workers: 2,
        ..KafkaConfig::default()
    };
    let (summary, _) = run_until(
        &kafka,
        Arc::new(analyzer()),
        sink,
        records.len() as u64,
        Duration::from_secs(120),
    );
    let summary = summary.unwrap();
    assert_eq!(summary.messages, records.len() as u64);
    assert!(
        summary.dead_lettered > 0,
        "the demo corpus carries broken records"
    );
    let live: BTreeSet<String> = std::fs::read_to_string(&outbox)
        .unwrap()
        .lines()
        .map(|l| {
            let f: serde_json::Value = serde_json::from_str(l).unwrap();
            f["id"].as_str().unwrap().to_owned()
        })
        .collect();

    // Replay: the same records in the three clouds' archive layouts.
    let archive = dir.path().join("archive");
    write_archive(&archive, &records);
    let (replayed, events, _, _) = replay_ids(&analyzer(), &archive, &Filter::default());
    assert_eq!(events, summary.events, "events seen live and replayed");

    assert!(live.len() > 50, "{} findings live", live.len());
    let missing: Vec<_> = live.difference(&replayed).take(5).collect();
    let extra: Vec<_> = replayed.difference(&live).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "replay differs from live: {} only live {missing:?}, {} only replayed {extra:?}",
        live.difference(&replayed).count(),
        replayed.difference(&live).count()
    );
}
