//! The real, separate Kafka-protocol broker of the end-to-end and scale-out
//! tests: its address from `SEAMWATCH_TEST_BROKERS` (`.ci/run` starts one and
//! sets `SEAMWATCH_REQUIRE_BROKER=1`, which makes its absence a failure),
//! topic creation, and producing the demo corpus keyed as it says.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use seamwatch::pipeline::demo::DemoRecord;

/// The broker, or None with a notice saying which test did not run.
pub fn brokers(test: &str) -> Option<String> {
    match std::env::var("SEAMWATCH_TEST_BROKERS") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            assert!(
                std::env::var("SEAMWATCH_REQUIRE_BROKER").is_err(),
                "SEAMWATCH_REQUIRE_BROKER is set but SEAMWATCH_TEST_BROKERS is not"
            );
            eprintln!(
                "NOTE: SEAMWATCH_TEST_BROKERS is not set; the {test} did not run (.ci/run runs it)"
            );
            None
        }
    }
}

pub fn create_topics(brokers: &str, topics: &[(String, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for result in rt
        .block_on(admin.create_topics(&new, &AdminOptions::new()))
        .unwrap()
    {
        result.unwrap();
    }
}

/// Produces the records in order, each to `topic_of(its demo topic)`, keyed
/// by its key; waits until the broker has them all.
pub fn produce(brokers: &str, records: &[DemoRecord], topic_of: &dyn Fn(&str) -> String) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for record in records {
        let topic = topic_of(record.topic);
        let mut next = Some(
            BaseRecord::to(&topic)
                .key(record.key.as_bytes())
                .payload(record.payload.as_slice()),
        );
        while let Some(r) = next.take() {
            match producer.send(r) {
                Ok(()) => {}
                Err((e, back)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(20));
                    next = Some(back);
                }
                Err((e, _)) => panic!("producing to {topic}: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}
