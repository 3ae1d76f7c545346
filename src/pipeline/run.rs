//! The Kafka pipeline: a consumer-group member that feeds the analyzer and
//! hands findings to the outbox without losing one.
//!
//! ```text
//! StreamConsumer ──(by partition)──► worker 1..N ──► outbox.append + sync ──► store offsets ──► commit
//!   (tokio task)    bounded queues    decode, detect,    (durable)              (after sync)    (periodic,
//!                                     correlate                                                revoke, stop)
//! ```
//! - A partition always goes to the same worker, so events of a partition
//!   are handled in order and its correlation [`Stream`] lives in one place.
//! - Bounded queues give backpressure: when workers fall behind, the
//!   consumer task waits instead of buffering without limit.
//! - **At-least-once, on purpose**: a worker stores a partition's offset only
//!   after the findings of every message up to it are appended to the outbox
//!   *and* synced, and after its dead-lettered records are acknowledged by the
//!   broker. librdkafka commits stored offsets every `commit_interval`; on
//!   revoke and on shutdown every worker drains its queue first and the
//!   commit is synchronous. A crash re-delivers at most the messages after
//!   the last commit, and deterministic finding ids make that harmless.
//! - Records that do not parse go to the dead-letter topic unchanged, with
//!   headers naming the reason, the source topic, partition and offset.
//! - On revoke, the correlation state of the revoked partitions is dropped.
//!   On assign, each partition is re-read from the widest correlation window
//!   plus the allowed lateness ago (by append time, capped by `warm_up`) up
//!   to its committed offset, in a muted stream: the state the previous owner
//!   had is rebuilt and nothing it already reported is reported again.
//! - A partition quiet for `idle_advance` moves its event time on by its
//!   quiet time (the one use of the wall clock: `idle_target`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use futures_util::{FutureExt, StreamExt};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use super::config::{KafkaConfig, StartPosition};
use super::metrics::{LocalMetrics, Metrics};
use super::outbox::{FindingSink, OutboxError};
use crate::analyze::{Analyzer, Scratch};
use crate::correlate::Stream;
use crate::detect::finding::SourceRef;
use crate::event::{Decoded, Decoder, FormatHint, Limits};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Config(#[from] super::config::KafkaConfigError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("a worker stopped: {0}")]
    Worker(String),
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    pub messages: u64,
    pub events: u64,
    pub errors: u64,
    pub findings: u64,
    pub dead_lettered: u64,
    /// Messages not yet committed at the end (high watermark − committed
    /// offset, summed over the partitions the member held).
    pub commit_lag: i64,
}

/// Commit lag per assigned partition: high watermark − committed offset.
pub fn commit_lag<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    timeout: Duration,
) -> Vec<(String, i32, i64)> {
    let Ok(assignment) = consumer.assignment() else {
        return Vec::new();
    };
    let Ok(committed) = consumer.committed_offsets(assignment, timeout) else {
        return Vec::new();
    };
    committed
        .elements()
        .iter()
        .filter_map(|e| {
            let (low, high) = consumer
                .fetch_watermarks(e.topic(), e.partition(), timeout)
                .ok()?;
            let done = match e.offset() {
                Offset::Offset(n) => n,
                _ => low,
            };
            Some((e.topic().to_owned(), e.partition(), (high - done).max(0)))
        })
        .collect()
}

enum Work {
    /// A message, and when the consumer handed it over.
    Message(Received, Instant),
    /// Flush, drop the correlation state of these partitions, acknowledge.
    Revoke(Vec<(String, i32)>, SyncSender<()>),
    /// Shutdown: flush, release what the correlation streams hold (up to the
    /// latest event time each has seen) into the outbox, acknowledge.
    Finish(SyncSender<()>),
    /// Messages of a newly assigned partition from before its committed
    /// offset: rebuild its correlation state, emit nothing.
    WarmUp((String, i32), Vec<OwnedMessage>),
}

/// Rebalance hooks: on revoke, every worker drains its queue (so every
/// offset that can be stored is), then the commit is synchronous.
pub struct PipelineContext {
    workers: Mutex<Vec<SyncSender<Work>>>,
    /// For the warm-up reader.
    client: ClientConfig,
    /// How far back (append time) a newly assigned partition is re-read; 0: not at all.
    lookback_ms: i64,
    metrics: Arc<Metrics>,
}

impl ClientContext for PipelineContext {}

impl PipelineContext {
    /// Re-reads each assigned partition from `lookback_ms` ago up to its
    /// committed offset and hands the messages to the partition's worker
    /// before any live message: the correlation state a previous owner had is
    /// rebuilt, in a muted stream, so no finding is emitted twice.
    fn warm_up(&self, consumer: &BaseConsumer<Self>, list: &TopicPartitionList) {
        if self.lookback_ms <= 0 || list.count() == 0 {
            return;
        }
        let timeout = Duration::from_secs(10);
        let Ok(committed) = consumer.committed_offsets(list.clone(), timeout) else {
            return;
        };
        let since = chrono::Utc::now().timestamp_millis() - self.lookback_ms;
        let mut times = TopicPartitionList::new();
        for e in committed.elements() {
            let _ = times.add_partition_offset(e.topic(), e.partition(), Offset::Offset(since));
        }
        // Brokers that cannot look offsets up by time answer `End`.
        let starts = consumer.offsets_for_times(times, timeout).ok();
        let workers = self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if workers.is_empty() {
            return;
        }
        for e in committed.elements() {
            let Offset::Offset(end) = e.offset() else {
                continue; // a new group: nothing to rebuild
            };
            let start = match starts
                .as_ref()
                .and_then(|s| s.find_partition(e.topic(), e.partition()))
                .map(|s| s.offset())
            {
                Some(Offset::Offset(start)) => start,
                // No answer by time: scan the last stretch before the
                // committed offset, keeping what was appended since then.
                _ => {
                    let low = consumer
                        .fetch_watermarks(e.topic(), e.partition(), timeout)
                        .map_or(0, |(low, _)| low);
                    low.max(end - MAX_WARM_UP_SCAN)
                }
            };
            if start >= end {
                continue;
            }
            let messages = read_range(&self.client, e.topic(), e.partition(), start, end, since);
            tracing::info!(
                topic = e.topic(),
                partition = e.partition(),
                from = start,
                to = end,
                messages = messages.len(),
                "warming up correlation state"
            );
            let worker = &workers[e.partition().unsigned_abs() as usize % workers.len()];
            let _ = worker.send(Work::WarmUp(
                (e.topic().to_owned(), e.partition()),
                messages,
            ));
        }
    }
}

/// A message as the consumer handed it over, read where librdkafka holds
/// it: not copied on the consumer's thread, which is the pipeline's one
/// serial step.
///
/// Its lifetime is cut loose from the consumer's borrow so that it can
/// cross to a worker. That is sound because librdkafka only needs a message
/// destroyed before its consumer, and the consumer outlives every
/// `Received`: each is dropped by a worker, or with the worker's channel,
/// and the workers hold the consumer (in [`Shared`]) until they end.
struct Received(BorrowedMessage<'static>);

impl Received {
    /// # Safety
    /// The consumer `message` came from must outlive the `Received`.
    unsafe fn new(message: BorrowedMessage<'_>) -> Received {
        // SAFETY: only the lifetime changes; the caller keeps the consumer.
        Received(unsafe {
            std::mem::transmute::<BorrowedMessage<'_>, BorrowedMessage<'static>>(message)
        })
    }
}

impl std::ops::Deref for Received {
    type Target = BorrowedMessage<'static>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The most messages handed over before the consumer looks at its timers.
const BURST: usize = 1024;

/// `first`, then up to `limit - 1` more that `ready` has without waiting,
/// each taken from `ready` only when asked for: none is taken and dropped.
struct Burst<T, F> {
    first: Option<T>,
    left: usize,
    ready: F,
}

impl<T, F: FnMut() -> Option<T>> Burst<T, F> {
    fn new(first: T, limit: usize, ready: F) -> Self {
        Burst {
            first: Some(first),
            left: limit,
            ready,
        }
    }
}

impl<T, F: FnMut() -> Option<T>> Iterator for Burst<T, F> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let item = self.first.take().or_else(&mut self.ready);
        if item.is_none() {
            self.left = 0;
        }
        item
    }
}

/// The most messages a warm-up scans when the broker cannot look up by time.
const MAX_WARM_UP_SCAN: i64 = 200_000;

/// Messages `[start, end)` of one partition appended at or after `since`
/// (ms), read without a group.
fn read_range(
    client: &ClientConfig,
    topic: &str,
    partition: i32,
    start: i64,
    end: i64,
    since: i64,
) -> Vec<OwnedMessage> {
    let mut config = client.clone();
    config
        .set("group.id", "seamwatch-warm-up")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    let Ok(reader) = config.create::<BaseConsumer>() else {
        return Vec::new();
    };
    let mut tpl = TopicPartitionList::new();
    if tpl
        .add_partition_offset(topic, partition, Offset::Offset(start))
        .is_err()
        || reader.assign(&tpl).is_err()
    {
        return Vec::new();
    }
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let offset = m.offset();
                let recent = m.timestamp().to_millis().is_none_or(|t| t >= since);
                if offset < end && recent {
                    out.push(m.detach());
                }
                if offset + 1 >= end {
                    break;
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => {
                tracing::warn!(topic, partition, error = %e, "warm-up read");
                break;
            }
            None => {}
        }
    }
    out
}

impl ConsumerContext for PipelineContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.warm_up(consumer, list);
        }
        if let Ok(assignment) = consumer.assignment() {
            self.metrics
                .assigned
                .store(assignment.count() as u64, Ordering::Relaxed);
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let partitions: Vec<(String, i32)> = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        tracing::info!(
            partitions = partitions.len(),
            "partitions revoked: draining, then committing"
        );
        let workers = self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut acks = Vec::new();
        for worker in &workers {
            let (tx, rx) = sync_channel(1);
            if worker.send(Work::Revoke(partitions.clone(), tx)).is_ok() {
                acks.push(rx);
            }
        }
        for ack in acks {
            let _ = ack.recv_timeout(Duration::from_secs(60));
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit is not an error.
            tracing::debug!(error = %e, "commit on revoke");
        }
    }
}

/// Everything a worker shares.
struct Shared {
    analyzer: Arc<Analyzer>,
    sink: Arc<dyn FindingSink>,
    consumer: Arc<StreamConsumer<PipelineContext>>,
    producer: Option<BaseProducer>,
    dead_letter_topic: String,
    formats: HashMap<String, FormatHint>,
    limits: Limits,
    batch: usize,
    idle_advance: Option<Duration>,
    metrics: Arc<Metrics>,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
}

/// Consumer properties seamwatch sets unless the configuration names them:
/// librdkafka's defaults stall a consumer that keeps up. When its prefetch
/// queue is full (`queued.max.messages.kbytes`, 64 MB by default) it waits
/// `fetch.queue.backoff.ms` (1 s by default) before it fetches again, though
/// the pipeline drains the queue in a quarter of that: measured, 1 M
/// queued records were drained at 128 k/s with the defaults and 188 k/s with
/// these, in 180 MB of memory instead of 230.
pub const CONSUMER_DEFAULTS: [(&str, &str); 2] = [
    ("fetch.queue.backoff.ms", "10"),
    ("queued.max.messages.kbytes", "16384"),
];

/// The consumer settings on top of the shared client settings.
pub fn consumer_config(kafka: &KafkaConfig, client: &ClientConfig) -> ClientConfig {
    let mut config = client.clone();
    for (key, value) in CONSUMER_DEFAULTS {
        config.set(key, value);
    }
    config
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.commit.interval.ms",
            kafka.commit_interval_ms().to_string(),
        )
        .set(
            "auto.offset.reset",
            match kafka.start {
                StartPosition::Earliest => "earliest",
                StartPosition::Latest => "latest",
            },
        )
        .set("enable.partition.eof", "false");
    // Caller-given properties win.
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config
}

/// Runs until `stop` is set, then drains, commits and returns.
pub async fn run(
    kafka: &KafkaConfig,
    client: ClientConfig,
    limits: Limits,
    analyzer: Arc<Analyzer>,
    sink: Arc<dyn FindingSink>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, PipelineError> {
    if kafka.topics.is_empty() {
        return Err(super::config::KafkaConfigError::NoTopics.into());
    }
    let lookback_ms = match kafka.warm_up_lookback() {
        Some(cap) => {
            let widest = analyzer
                .correlator()
                .correlations()
                .iter()
                .map(|c| c.within_ms)
                .max()
                .unwrap_or(0);
            let need = widest + analyzer.correlator().config().allowed_lateness_ms;
            need.min(cap.as_millis() as i64)
        }
        None => 0,
    };
    let context = PipelineContext {
        workers: Mutex::new(Vec::new()),
        client: client.clone(),
        lookback_ms,
        metrics: metrics.clone(),
    };
    let consumer: StreamConsumer<PipelineContext> =
        consumer_config(kafka, &client).create_with_context(context)?;
    let consumer = Arc::new(consumer);
    let topics: Vec<&str> = kafka.topics.iter().map(|t| t.name.as_str()).collect();
    consumer.subscribe(&topics)?;
    let producer: Option<BaseProducer> = if kafka.dead_letter_topic.is_empty() {
        None
    } else {
        let mut config = client.clone();
        config
            .set("enable.idempotence", "false")
            .set("linger.ms", "5");
        Some(config.create()?)
    };
    let shared = Arc::new(Shared {
        analyzer,
        sink,
        consumer: consumer.clone(),
        producer,
        dead_letter_topic: kafka.dead_letter_topic.clone(),
        formats: kafka
            .topics
            .iter()
            .map(|t| (t.name.clone(), t.format))
            .collect(),
        limits,
        batch: kafka.batch.max(1),
        idle_advance: kafka.idle_advance(),
        metrics,
        failed: AtomicBool::new(false),
        failure: Mutex::new(None),
    });
    let n = kafka.workers();
    let mut senders = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = sync_channel::<Work>(kafka.queue.max(1));
        senders.push(tx);
        let shared = shared.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("seamwatch-worker-{i}"))
                .spawn(move || worker(rx, &shared))
                .map_err(|e| PipelineError::Worker(e.to_string()))?,
        );
    }
    *consumer
        .context()
        .workers
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = senders.clone();
    tracing::info!(topics = ?topics, workers = n, group = %kafka.group_id, "consuming");

    let mut lag_check = Instant::now();
    // One stream for the whole run: what is ready is taken without a timer.
    let mut messages = consumer.stream();
    while !stop.load(Ordering::Relaxed) && !shared.failed.load(Ordering::Relaxed) {
        if lag_check.elapsed() >= Duration::from_secs(10) {
            lag_check = Instant::now();
            let (lag_consumer, metrics) = (consumer.clone(), shared.metrics.clone());
            // Broker round trips: off the consumer task.
            tokio::task::spawn_blocking(move || {
                let lag = commit_lag(&*lag_consumer, Duration::from_secs(5));
                let total: i64 = lag.iter().map(|(_, _, n)| n).sum();
                for (topic, partition, n) in lag {
                    metrics.commit_lag.insert((topic, partition), n);
                }
                tracing::info!(commit_lag = total, "commit lag");
            });
        }
        let Ok(Some(first)) =
            tokio::time::timeout(Duration::from_millis(100), messages.next()).await
        else {
            continue;
        };
        // What arrived with it is taken without waiting, stamped with the
        // same hand-over time (a clock read per burst, not per message).
        let mut at = Instant::now();
        let ready = || messages.next().now_or_never().flatten();
        for result in Burst::new(first, BURST, ready) {
            match result {
                Ok(message) => {
                    // SAFETY: `shared`, which every worker holds, holds the
                    // consumer: it outlives the message.
                    let message = unsafe { Received::new(message) };
                    let worker = &senders[message.partition().unsigned_abs() as usize % n];
                    let mut work = Work::Message(message, at);
                    // Backpressure: wait for room, but keep noticing a stop.
                    loop {
                        match worker.try_send(work) {
                            Ok(()) => break,
                            Err(TrySendError::Full(back)) => {
                                work = back;
                                if shared.failed.load(Ordering::Relaxed) {
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(1)).await;
                                at = Instant::now();
                            }
                            Err(TrySendError::Disconnected(_)) => break,
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "kafka consumer error"),
            }
            // A stop ends the burst: what is not handed over is not taken.
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
    }
    drop(messages);

    // Drain: every worker finishes its queue (storing offsets) and releases
    // its correlation streams into the outbox, then commit.
    let mut acks = Vec::new();
    for worker in &senders {
        let (tx, rx) = sync_channel(1);
        if worker.send(Work::Finish(tx)).is_ok() {
            acks.push(rx);
        }
    }
    for ack in acks {
        let _ = ack.recv_timeout(Duration::from_secs(120));
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "final commit");
    }
    let lag_consumer = consumer.clone();
    let lag =
        tokio::task::spawn_blocking(move || commit_lag(&*lag_consumer, Duration::from_secs(5)))
            .await
            .unwrap_or_default();
    for (topic, partition, n) in &lag {
        shared
            .metrics
            .commit_lag
            .insert((topic.clone(), *partition), *n);
    }
    let commit_lag: i64 = lag.iter().map(|(_, _, n)| n).sum();
    consumer
        .context()
        .workers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    drop(senders);
    for handle in handles {
        let _ = handle.join();
    }
    consumer.unsubscribe();
    // librdkafka can hang for good in close() when the consumer still holds
    // an assignment, or a rebalance is pending, as it closes (its issue
    // 4884): let the revoke that unsubscribe starts run its course while
    // the consumer is still polled, then drop it with nothing assigned.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline
        && consumer.assignment().is_ok_and(|a| a.count() > 0)
    {
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
    }
    if let Some(failure) = shared
        .failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        return Err(PipelineError::Worker(failure));
    }
    let m = &shared.metrics;
    Ok(RunSummary {
        messages: m.messages.load(Ordering::Relaxed),
        events: m.total_events(),
        errors: m.total_errors(),
        findings: m.findings.load(Ordering::Relaxed),
        dead_lettered: m.dead_lettered.load(Ordering::Relaxed),
        commit_lag,
    })
}

/// When a partition last had a message: wall clock, and its event time then.
#[derive(Clone, Copy)]
struct Anchor {
    at: Instant,
    event_time: DateTime<Utc>,
}

/// The one place wall-clock time enters correlation. A partition quiet for
/// at least `idle` is taken to have moved on in event time by as long as it
/// has been quiet; returns the event time to advance its stream to.
fn idle_target(anchor: Anchor, now: Instant, idle: Duration) -> Option<DateTime<Utc>> {
    let quiet = now.checked_duration_since(anchor.at)?;
    if quiet < idle {
        return None;
    }
    let quiet = chrono::Duration::from_std(quiet).ok()?;
    Some(anchor.event_time + quiet)
}

fn advance_idle(
    shared: &Shared,
    streams: &mut HashMap<(String, i32), Stream>,
    anchors: &HashMap<(String, i32), Anchor>,
    local: &mut LocalMetrics,
) {
    let Some(idle) = shared.idle_advance else {
        return;
    };
    let now = Instant::now();
    let mut findings = Vec::new();
    for (partition, anchor) in anchors {
        if let (Some(target), Some(stream)) =
            (idle_target(*anchor, now, idle), streams.get_mut(partition))
        {
            shared
                .analyzer
                .correlator()
                .advance_to(stream, target, &mut findings);
        }
    }
    if findings.is_empty() {
        return;
    }
    local.findings += findings.len() as u64;
    if let Err(e) = shared
        .sink
        .append(&findings)
        .and_then(|()| shared.sink.sync())
    {
        tracing::error!(error = %e, "findings of idle partitions not handed to the outbox");
        *shared.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
        shared.failed.store(true, Ordering::Relaxed);
        shared.metrics.failed.store(true, Ordering::Relaxed);
    }
    shared.metrics.merge(local);
}

fn worker(rx: Receiver<Work>, shared: &Shared) {
    let mut streams: HashMap<(String, i32), Stream> = HashMap::new();
    let mut anchors: HashMap<(String, i32), Anchor> = HashMap::new();
    let mut last_idle_check = Instant::now();
    let mut decoders: HashMap<String, Decoder> = HashMap::new();
    let mut scratch = Scratch::default();
    let mut local = LocalMetrics::default();
    let mut batch: Vec<Received> = Vec::with_capacity(shared.batch);
    let mut received: Vec<Instant> = Vec::with_capacity(shared.batch);
    loop {
        if last_idle_check.elapsed() >= Duration::from_secs(1) {
            advance_idle(shared, &mut streams, &anchors, &mut local);
            last_idle_check = Instant::now();
        }
        let first = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(work) => work,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut control = None;
        match first {
            Work::Message(m, at) => {
                batch.push(m);
                received.push(at);
            }
            other => control = Some(other),
        }
        while control.is_none() && batch.len() < shared.batch {
            match rx.try_recv() {
                Ok(Work::Message(m, at)) => {
                    batch.push(m);
                    received.push(at);
                }
                Ok(other) => control = Some(other),
                Err(_) => break,
            }
        }
        if !batch.is_empty() && !shared.failed.load(Ordering::Relaxed) {
            if let Err(e) = process_batch(
                shared,
                &batch,
                &received,
                &mut streams,
                &mut decoders,
                &mut scratch,
                &mut local,
            ) {
                // Offsets are not stored: the batch will be delivered again.
                tracing::error!(error = %e, "batch not handed to the outbox; stopping");
                *shared.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                shared.failed.store(true, Ordering::Relaxed);
                shared.metrics.failed.store(true, Ordering::Relaxed);
            }
            shared.metrics.merge(&mut local);
            let now = Instant::now();
            for message in &batch {
                let key = (message.topic().to_owned(), message.partition());
                if let Some(event_time) = streams.get(&key).and_then(Stream::latest) {
                    anchors.insert(
                        key,
                        Anchor {
                            at: now,
                            event_time,
                        },
                    );
                }
            }
        }
        batch.clear();
        received.clear();
        match control {
            Some(Work::Finish(ack)) => {
                let mut findings = Vec::new();
                for stream in streams.values_mut() {
                    shared.analyzer.finish(stream, &mut findings);
                }
                local.findings += findings.len() as u64;
                let written = shared
                    .sink
                    .append(&findings)
                    .and_then(|()| shared.sink.sync());
                if let Err(e) = written {
                    tracing::error!(error = %e, "final findings not handed to the outbox");
                    *shared.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                }
                shared.metrics.merge(&mut local);
                let _ = ack.send(());
            }
            Some(Work::WarmUp(key, messages)) => {
                let stream = streams.entry(key.clone()).or_default();
                stream.set_muted(true);
                let mut discarded = Vec::new();
                for message in &messages {
                    let decoder = decoders.entry(key.0.clone()).or_insert_with(|| {
                        Decoder::new(
                            shared.formats.get(&key.0).copied().unwrap_or_default(),
                            shared.limits,
                        )
                    });
                    let payload = message.payload().unwrap_or_default();
                    decoder.decode(payload, &mut |d: Decoded<'_>| {
                        if let Ok(event) = d.result {
                            let source = SourceRef::Kafka {
                                topic: &key.0,
                                partition: key.1,
                                offset: message.offset(),
                            };
                            shared.analyzer.process(
                                &event,
                                source,
                                stream,
                                &mut scratch,
                                &mut discarded,
                            );
                            // Already reported by the previous owner of the partition.
                            discarded.clear();
                        }
                    });
                }
                stream.set_muted(false);
            }
            Some(Work::Revoke(partitions, ack)) => {
                for partition in partitions {
                    anchors.remove(&partition);
                    if let Some(stream) = streams.remove(&partition) {
                        shared.analyzer.correlator().drop_stream(stream);
                    }
                }
                let _ = ack.send(());
            }
            _ => {}
        }
    }
}

fn process_batch(
    shared: &Shared,
    batch: &[Received],
    received: &[Instant],
    streams: &mut HashMap<(String, i32), Stream>,
    decoders: &mut HashMap<String, Decoder>,
    scratch: &mut Scratch,
    local: &mut LocalMetrics,
) -> Result<(), PipelineError> {
    let mut findings = Vec::new();
    let mut dead: Vec<(usize, Vec<u8>, &'static str, String)> = Vec::new();
    // Messages that raised findings, to time them once the outbox has them.
    let mut raised: Vec<usize> = Vec::new();
    let now_ms = chrono::Utc::now().timestamp_millis();
    for (i, message) in batch.iter().enumerate() {
        local.messages += 1;
        let topic = message.topic();
        let decoder = decoders.entry(topic.to_owned()).or_insert_with(|| {
            Decoder::new(
                shared.formats.get(topic).copied().unwrap_or_default(),
                shared.limits,
            )
        });
        let stream = streams
            .entry((topic.to_owned(), message.partition()))
            .or_default();
        let append_ms = message.timestamp().to_millis();
        let payload = message.payload().unwrap_or_default();
        let first = findings.len();
        decoder.decode(payload, &mut |decoded: Decoded<'_>| match decoded.result {
            Ok(event) => {
                *local
                    .events
                    .entry((topic.to_owned(), message.partition(), event.cloud.as_str()))
                    .or_default() += 1;
                let source = SourceRef::Kafka {
                    topic,
                    partition: message.partition(),
                    offset: message.offset(),
                };
                shared
                    .analyzer
                    .process(&event, source, stream, scratch, &mut findings);
            }
            Err(error) => {
                local.error(error.reason);
                dead.push((i, error.raw.to_vec(), error.reason.as_str(), error.detail));
            }
        });
        if findings.len() > first {
            raised.push(i);
        }
        for finding in &findings[first..] {
            if let Some(t) = finding.event_time {
                let _ = local
                    .event_latency
                    .record((now_ms - t.timestamp_millis()).max(1) as u64);
            }
            if let Some(append) = append_ms {
                let _ = local.append_latency.record((now_ms - append).max(1) as u64);
            }
        }
    }
    local.findings += findings.len() as u64;
    shared.sink.append(&findings)?;
    shared.sink.sync()?;
    let synced = Instant::now();
    for i in raised {
        if let Some(at) = received.get(i) {
            let ms = synced.saturating_duration_since(*at).as_millis() as u64;
            let _ = local.inside_latency.record(ms.max(1));
        }
    }
    dead_letter(shared, batch, &dead, local)?;
    // Only now may the offsets move: the last message of each partition.
    let mut last: HashMap<(&str, i32), i64> = HashMap::new();
    for message in batch {
        last.insert((message.topic(), message.partition()), message.offset());
    }
    for ((topic, partition), offset) in last {
        if let Err(e) = shared.consumer.store_offset(topic, partition, offset) {
            // A partition revoked meanwhile: its offsets are no longer ours.
            tracing::debug!(topic, partition, offset, error = %e, "offset not stored");
        }
    }
    shared
        .metrics
        .committed_batches
        .fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn dead_letter(
    shared: &Shared,
    batch: &[Received],
    dead: &[(usize, Vec<u8>, &'static str, String)],
    local: &mut LocalMetrics,
) -> Result<(), PipelineError> {
    if dead.is_empty() {
        return Ok(());
    }
    let Some(producer) = &shared.producer else {
        for (i, _, reason, detail) in dead {
            let m = &batch[*i];
            tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), reason, detail = %detail, "record rejected (no dead-letter topic)");
        }
        return Ok(());
    };
    for (i, raw, reason, detail) in dead {
        let m = &batch[*i];
        let partition = m.partition().to_string();
        let offset = m.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "seamwatch.reason",
                value: Some(*reason),
            })
            .insert(Header {
                key: "seamwatch.detail",
                value: Some(detail.as_str()),
            })
            .insert(Header {
                key: "seamwatch.source.topic",
                value: Some(m.topic()),
            })
            .insert(Header {
                key: "seamwatch.source.partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "seamwatch.source.offset",
                value: Some(offset.as_str()),
            });
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&shared.dead_letter_topic)
            .payload(raw.as_slice())
            .headers(headers);
        if let Some(key) = m.key() {
            record = record.key(key);
        }
        let mut record = Some(record);
        while let Some(r) = record.take() {
            if let Err((e, back)) = producer.send(r) {
                if matches!(
                    e.rdkafka_error_code(),
                    Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                ) {
                    producer.poll(Duration::from_millis(50));
                    record = Some(back);
                } else {
                    return Err(e.into());
                }
            }
        }
        local.dead_lettered += 1;
    }
    // Acknowledged by the broker before the offsets move.
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst stops at its limit or when nothing is ready, and takes from
    /// the source only what it hands over.
    #[test]
    fn a_burst_takes_only_what_it_hands_over() {
        let mut source = 1..2500;
        let taken: Vec<u32> = Burst::new(0, 1024, || source.next()).collect();
        assert_eq!(taken, (0..1024).collect::<Vec<_>>());
        assert_eq!(source.next(), Some(1024));
        // Nothing ready: the first alone, and the source is not asked again.
        let mut asked = 0;
        let taken: Vec<u32> = Burst::new(7, 1024, || {
            asked += 1;
            None
        })
        .collect();
        assert_eq!((taken, asked), (vec![7], 1));
    }

    /// The consumer's own defaults apply, and the configuration's properties
    /// win over them.
    #[test]
    fn consumer_defaults_give_way_to_configured_properties() {
        let mut kafka = KafkaConfig::default();
        let config = consumer_config(&kafka, &ClientConfig::new());
        for (key, value) in CONSUMER_DEFAULTS {
            assert_eq!(config.get(key), Some(value), "{key}");
        }
        kafka
            .properties
            .insert("fetch.queue.backoff.ms".into(), "250".into());
        let config = consumer_config(&kafka, &ClientConfig::new());
        assert_eq!(config.get("fetch.queue.backoff.ms"), Some("250"));
        assert_eq!(config.get("queued.max.messages.kbytes"), Some("16384"));
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
    }

    #[test]
    fn a_quiet_partition_moves_on_by_its_quiet_time_only_after_the_threshold() {
        let at = Instant::now();
        let event_time: DateTime<Utc> = "2025-03-01T10:00:00Z".parse().unwrap();
        let anchor = Anchor { at, event_time };
        let idle = Duration::from_secs(60);
        assert_eq!(
            idle_target(anchor, at + Duration::from_secs(59), idle),
            None
        );
        assert_eq!(
            idle_target(anchor, at + Duration::from_secs(20 * 60), idle),
            Some("2025-03-01T10:20:00Z".parse().unwrap())
        );
    }
}
