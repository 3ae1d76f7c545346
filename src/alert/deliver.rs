//! Delivery: one task per destination takes due notices from the outbox,
//! sends them (webhook, Kafka topic or JSON Lines), and settles the outcome.
//!
//! - At most `concurrency` requests in flight per destination, at most
//!   `rate` started per second.
//! - A failed attempt (connection error, timeout, 408, 425, 429, 5xx) is
//!   retried with exponential backoff and jitter; `Retry-After` on 429 and
//!   503 is honoured (seconds or an HTTP date).
//! - Other 4xx answers, and any failure after `max_attempts`, move the
//!   notice to the destination's dead letters (`seamwatch outbox list
//!   --dead`, `retry` re-drives them). Nothing is dropped silently.
//! - The dispatcher runs on its own threads, so a slow destination or an
//!   fsync never stalls the consumer.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::config::{AlertConfigError, AlertsConfig, FormatName, Secret, SinkConfig, SinkType};
use super::format::Formatter;
use super::model::Notice;
use super::sign::{IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use super::store::{Delivery, Outbox, Settle};

/// Deliveries kept in memory per destination; more wait in the outbox.
const LOADED: usize = 4096;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// The destination's format does not send this notice (a Slack update).
    Skipped,
    Retry {
        error: String,
        after: Option<Duration>,
    },
    Permanent {
        error: String,
    },
}

/// A destination ready to send.
pub enum Destination {
    Webhook(Webhook),
    Kafka(KafkaTopic),
    Jsonl(JsonLines),
}

pub struct Webhook {
    client: reqwest::Client,
    url: Secret,
    formatter: Formatter,
    secret: Option<Secret>,
    token: Option<Secret>,
    timeout: Duration,
}

pub struct KafkaTopic {
    producer: FutureProducer,
    topic: String,
    formatter: Formatter,
    timeout: Duration,
}

pub struct JsonLines {
    out: Mutex<Box<dyn Write + Send>>,
    formatter: Formatter,
}

fn formatter(sink: &SinkConfig, index: usize) -> Result<Formatter, AlertConfigError> {
    let err = |message: String| AlertConfigError::Sink { index, message };
    Ok(match sink.format {
        FormatName::Json => Formatter::json(),
        FormatName::Ocsf => Formatter::ocsf(),
        FormatName::Slack => Formatter::slack(),
        FormatName::Pagerduty => {
            let key = Secret::load(
                sink.routing_key_env.as_deref(),
                sink.routing_key_file.as_deref(),
            )?
            .ok_or_else(|| err("needs routing_key_env or routing_key_file".into()))?;
            Formatter::pagerduty(key.expose().to_owned())
        }
        FormatName::Template => {
            let text = match (&sink.template, &sink.template_file) {
                (Some(t), _) => t.clone(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| err(format!("template_file {}: {e}", path.display())))?,
                (None, None) => return Err(err("needs template or template_file".into())),
            };
            let content_type = sink.content_type.as_deref().unwrap_or("application/json");
            Formatter::template(&text, content_type).map_err(|e| err(e.to_string()))?
        }
    })
}

impl Destination {
    /// Builds destination `index` of `[[alerts.sinks]]`, reading its secrets.
    /// `kafka` is the base client config for Kafka sinks (brokers, security).
    pub fn from_config(
        sink: &SinkConfig,
        index: usize,
        kafka: Option<&ClientConfig>,
    ) -> Result<Destination, AlertConfigError> {
        let err = |message: String| AlertConfigError::Sink { index, message };
        let formatter = formatter(sink, index)?;
        Ok(match sink.kind {
            SinkType::Webhook => {
                let url = match &sink.url {
                    Some(u) => Secret::new(u.clone()),
                    None => Secret::load(sink.url_env.as_deref(), sink.url_file.as_deref())?
                        .ok_or_else(|| err("needs url".into()))?,
                };
                let client = reqwest::Client::builder()
                    .user_agent(concat!("seamwatch/", env!("CARGO_PKG_VERSION")))
                    .connect_timeout(sink.timeout.min(Duration::from_secs(10)))
                    .pool_max_idle_per_host(sink.concurrency)
                    .build()
                    .map_err(|e| err(format!("HTTP client: {e}")))?;
                Destination::Webhook(Webhook {
                    client,
                    url,
                    formatter,
                    secret: Secret::load(sink.secret_env.as_deref(), sink.secret_file.as_deref())?,
                    token: Secret::load(sink.token_env.as_deref(), sink.token_file.as_deref())?,
                    timeout: sink.timeout,
                })
            }
            SinkType::Kafka => {
                let mut config = kafka.cloned().unwrap_or_default();
                if let Some(brokers) = &sink.brokers {
                    config.set("bootstrap.servers", brokers);
                }
                if config.get("bootstrap.servers").is_none() {
                    return Err(err("needs brokers (or [kafka] brokers)".into()));
                }
                for consumer_only in [
                    "group.id",
                    "enable.auto.commit",
                    "enable.auto.offset.store",
                    "auto.offset.reset",
                    "enable.partition.eof",
                    "session.timeout.ms",
                    "fetch.wait.max.ms",
                    "partition.assignment.strategy",
                    "isolation.level",
                ] {
                    config.remove(consumer_only);
                }
                config
                    .set("enable.idempotence", "true")
                    .set("linger.ms", "5");
                let producer = config
                    .create()
                    .map_err(|e| err(format!("Kafka producer: {e}")))?;
                Destination::Kafka(KafkaTopic {
                    producer,
                    topic: sink.topic.clone().unwrap_or_default(),
                    formatter,
                    timeout: sink.timeout,
                })
            }
            SinkType::Jsonl => {
                let path = sink.path.as_deref().unwrap_or(Path::new("-"));
                let out: Box<dyn Write + Send> = if path == Path::new("-") {
                    Box::new(std::io::stdout())
                } else {
                    Box::new(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(path)
                            .map_err(|e| err(format!("{}: {e}", path.display())))?,
                    )
                };
                Destination::Jsonl(JsonLines {
                    out: Mutex::new(out),
                    formatter,
                })
            }
        })
    }

    /// One attempt.
    pub async fn send(&self, notice: &Notice) -> Outcome {
        let formatter = match self {
            Destination::Webhook(w) => &w.formatter,
            Destination::Kafka(k) => &k.formatter,
            Destination::Jsonl(j) => &j.formatter,
        };
        let rendered = match formatter.render(notice) {
            Ok(Some(r)) => r,
            Ok(None) => return Outcome::Skipped,
            Err(e) => {
                return Outcome::Permanent {
                    error: format!("rendering: {e}"),
                };
            }
        };
        let key = notice.idempotency_key();
        match self {
            Destination::Webhook(w) => w.post(&key, rendered.content_type, rendered.body).await,
            Destination::Kafka(k) => {
                let record = FutureRecord::to(&k.topic)
                    .key(key.as_bytes())
                    .payload(&rendered.body)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "idempotency-key",
                        value: Some(key.as_bytes()),
                    }));
                match k.producer.send(record, k.timeout).await {
                    Ok(_) => Outcome::Delivered,
                    Err((e, _)) => Outcome::Retry {
                        error: format!("Kafka: {e}"),
                        after: None,
                    },
                }
            }
            Destination::Jsonl(j) => {
                let mut out = j.out.lock().unwrap_or_else(|e| e.into_inner());
                let written = out
                    .write_all(&rendered.body)
                    .and_then(|()| out.write_all(b"\n"))
                    .and_then(|()| out.flush());
                match written {
                    Ok(()) => Outcome::Delivered,
                    Err(e) => Outcome::Retry {
                        error: format!("writing: {e}"),
                        after: None,
                    },
                }
            }
        }
    }
}

impl Webhook {
    async fn post(&self, key: &str, content_type: String, body: Vec<u8>) -> Outcome {
        let timestamp = Utc::now().timestamp().to_string();
        let mut request = self
            .client
            .post(self.url.expose())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, content_type)
            .header(IDEMPOTENCY_HEADER, key)
            .header(TIMESTAMP_HEADER, &timestamp);
        if let Some(secret) = &self.secret {
            request = request.header(
                SIGNATURE_HEADER,
                sign(secret.expose().as_bytes(), &timestamp, &body),
            );
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        match request.body(body).send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return Outcome::Delivered;
                }
                let after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(retry_after);
                let error = format!("HTTP {status}");
                match status.as_u16() {
                    429 | 503 => Outcome::Retry { error, after },
                    408 | 425 | 500..=599 => Outcome::Retry { error, after: None },
                    _ => Outcome::Permanent { error },
                }
            }
            Err(e) => Outcome::Retry {
                error: describe(e),
                after: None,
            },
        }
    }
}

/// A request error with its causes (timed out, connection refused, …) but
/// without the URL: a Slack webhook URL is a secret.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The longest `Retry-After` honoured; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After`: seconds, or an HTTP date.
pub fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let ms = at.timestamp_millis() - Utc::now().timestamp_millis();
    Some(Duration::from_millis(ms.max(0) as u64).min(MAX_RETRY_AFTER))
}

/// How one destination is driven.
#[derive(Clone, Debug)]
pub struct Policy {
    pub concurrency: usize,
    /// Requests started per second at most; 0: unlimited.
    pub rate: f64,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Policy {
    pub fn of(config: &AlertsConfig, sink: &SinkConfig) -> Policy {
        Policy {
            concurrency: sink.concurrency,
            rate: sink.rate,
            max_attempts: sink.max_attempts.unwrap_or(config.retry.max_attempts),
            initial_backoff: config.retry.initial_backoff,
            max_backoff: config.retry.max_backoff,
        }
    }

    /// Exponential backoff with "equal jitter": half the step fixed, half
    /// random, so retries spread out but never come back at once.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let step = self
            .initial_backoff
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
            .min(self.max_backoff);
        let half = step / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// Per-destination delivery counters and the finding → delivered latency.
#[derive(Debug)]
pub struct SinkStats {
    pub name: String,
    pub delivered: AtomicU64,
    pub skipped: AtomicU64,
    /// Attempts that failed (each retry counts).
    pub failed: AtomicU64,
    pub dead: AtomicU64,
    /// Milliseconds from queued (the finding reached the outbox) to delivered.
    pub latency_ms: Mutex<Histogram<u64>>,
}

impl SinkStats {
    fn new(name: &str) -> SinkStats {
        SinkStats {
            name: name.to_owned(),
            delivered: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            latency_ms: Mutex::new(
                Histogram::new_with_bounds(1, 24 * 3_600_000, 3).expect("valid histogram bounds"),
            ),
        }
    }
}

/// The delivery tasks of every destination, on a runtime of their own.
pub struct Dispatcher {
    outbox: Arc<Outbox>,
    runtime: Option<tokio::runtime::Runtime>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub stats: Vec<Arc<SinkStats>>,
}

impl Dispatcher {
    /// Starts delivering. `destinations[i]` and `policies[i]` belong to the
    /// outbox's sink `i`.
    pub fn start(
        outbox: Arc<Outbox>,
        destinations: Vec<Destination>,
        policies: Vec<Policy>,
    ) -> std::io::Result<Dispatcher> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("seamwatch-deliver")
            .enable_all()
            .build()?;
        let (stop, stop_rx) = watch::channel(false);
        let names: Vec<String> = outbox.sink_names().map(str::to_owned).collect();
        let mut tasks = Vec::new();
        let mut stats = Vec::new();
        for (index, (dest, policy)) in destinations.into_iter().zip(policies).enumerate() {
            let sink_stats = Arc::new(SinkStats::new(&names[index]));
            stats.push(sink_stats.clone());
            tasks.push(runtime.spawn(sink_loop(
                outbox.clone(),
                index,
                names[index].clone(),
                Arc::new(dest),
                policy,
                sink_stats,
                stop_rx.clone(),
            )));
        }
        tasks.push(runtime.spawn(maintenance(outbox.clone(), stop_rx)));
        Ok(Dispatcher {
            outbox,
            runtime: Some(runtime),
            stop,
            tasks,
            stats,
        })
    }

    /// Stops starting deliveries, waits up to `grace` for those in flight,
    /// and stops. What is not delivered stays in the outbox for next time.
    pub fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        if let Some(runtime) = self.runtime.take() {
            let tasks = std::mem::take(&mut self.tasks);
            runtime.block_on(async {
                let all = async {
                    for t in tasks {
                        let _ = t.await;
                    }
                };
                if tokio::time::timeout(grace, all).await.is_err() {
                    tracing::warn!(
                        grace = ?grace,
                        "deliveries still in flight at shutdown; they stay in the outbox"
                    );
                }
            });
            runtime.shutdown_timeout(Duration::from_millis(100));
        }
        if let Err(e) = self.outbox.checkpoint() {
            tracing::error!(error = %e, "cannot make the delivery records durable");
        }
    }

    /// Delivered notices, summed over destinations.
    pub fn delivered(&self) -> u64 {
        self.stats
            .iter()
            .map(|s| s.delivered.load(Ordering::Relaxed) + s.skipped.load(Ordering::Relaxed))
            .sum()
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn maintenance(outbox: Arc<Outbox>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        n += 1;
        let outbox = outbox.clone();
        let result = tokio::task::spawn_blocking(move || {
            outbox.checkpoint()?;
            outbox.roll_budgets(Utc::now())?;
            if n.is_multiple_of(300) {
                outbox.expire()?;
            }
            Ok::<_, super::store::StoreError>(())
        })
        .await;
        if let Ok(Err(e)) = result {
            tracing::error!(error = %e, "outbox maintenance failed");
        }
    }
}

type Attempt = (u64, Delivery, Outcome);

async fn sink_loop(
    outbox: Arc<Outbox>,
    index: usize,
    name: String,
    dest: Arc<Destination>,
    policy: Policy,
    stats: Arc<SinkStats>,
    mut stop: watch::Receiver<bool>,
) {
    let notify = outbox.notifier(index);
    // Due time and sequence → delivery.
    let mut ready: BTreeMap<(i64, u64), Delivery> = BTreeMap::new();
    let mut loaded_upto = 0u64;
    let mut inflight: JoinSet<Attempt> = JoinSet::new();
    let mut settle: Vec<Settle> = Vec::new();
    let mut pacer = (policy.rate > 0.0).then(|| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / policy.rate));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut stopping = *stop.borrow();
    // A `Retry-After` pauses the whole destination, not just one notice.
    let mut paused_until = 0i64;
    loop {
        if !stopping && ready.len() < LOADED / 4 {
            let (o, n) = (outbox.clone(), name.clone());
            match tokio::task::spawn_blocking(move || o.load(&n, loaded_upto, LOADED)).await {
                Ok(Ok(batch)) => {
                    for (seq, d) in batch {
                        loaded_upto = seq;
                        ready.insert((d.next_attempt_ms, seq), d);
                    }
                }
                Ok(Err(e)) => tracing::error!(sink = %name, error = %e, "cannot read the outbox"),
                Err(e) => tracing::error!(sink = %name, error = %e, "outbox read task failed"),
            }
        }
        let now = Utc::now().timestamp_millis();
        while !stopping && now >= paused_until && inflight.len() < policy.concurrency {
            let Some(entry) = ready.first_entry() else {
                break;
            };
            if entry.key().0 > now {
                break;
            }
            if let Some(p) = pacer.as_mut() {
                p.tick().await;
            }
            let ((_, seq), delivery) = entry.remove_entry();
            let dest = dest.clone();
            inflight.spawn(async move {
                let outcome = dest.send(&delivery.notice).await;
                (seq, delivery, outcome)
            });
        }
        if !settle.is_empty() {
            let batch = std::mem::take(&mut settle);
            let (o, n) = (outbox.clone(), name.clone());
            match tokio::task::spawn_blocking(move || o.settle(&n, &batch)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(sink = %name, error = %e, "cannot record deliveries; they may be sent again")
                }
                Err(e) => tracing::error!(sink = %name, error = %e, "settle task failed"),
            }
        }
        if stopping && inflight.is_empty() {
            return;
        }
        let wait = ready.first_key_value().map_or(1000, |((due, _), _)| {
            (due.max(&paused_until) - now).clamp(1, 1000)
        });
        let room = inflight.len() < policy.concurrency && !stopping;
        tokio::select! {
            Some(result) = inflight.join_next(), if !inflight.is_empty() => {
                let mut results = vec![result];
                while let Some(r) = inflight.try_join_next() {
                    results.push(r);
                }
                for r in results {
                    match r {
                        Ok(attempt) => {
                            if let Outcome::Retry { after: Some(after), .. } = &attempt.2 {
                                let until = Utc::now().timestamp_millis() + after.as_millis() as i64;
                                paused_until = paused_until.max(until);
                            }
                            handle(attempt, &policy, &stats, &name, &mut ready, &mut settle)
                        }
                        Err(e) => tracing::error!(sink = %name, error = %e, "delivery task failed; the notice stays in the outbox"),
                    }
                }
            }
            _ = notify.notified(), if !stopping => {}
            _ = tokio::time::sleep(Duration::from_millis(wait as u64)), if room => {}
            changed = stop.changed(), if !stopping => {
                stopping = changed.is_err() || *stop.borrow();
            }
        }
    }
}

fn handle(
    (seq, mut delivery, outcome): Attempt,
    policy: &Policy,
    stats: &SinkStats,
    name: &str,
    ready: &mut BTreeMap<(i64, u64), Delivery>,
    settle: &mut Vec<Settle>,
) {
    let now = Utc::now().timestamp_millis();
    delivery.attempts += 1;
    match outcome {
        Outcome::Delivered | Outcome::Skipped => {
            if outcome == Outcome::Delivered {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                let ms = (now - delivery.enqueued_ms).max(1) as u64;
                stats
                    .latency_ms
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .saturating_record(ms);
            } else {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
            }
            settle.push(Settle::Delivered { seq });
        }
        Outcome::Retry { error, after } if delivery.attempts < policy.max_attempts => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            let delay = after.unwrap_or_else(|| policy.backoff(delivery.attempts));
            tracing::debug!(sink = name, seq, attempts = delivery.attempts, error = %error, delay = ?delay, "delivery failed; will retry");
            delivery.next_attempt_ms = now + delay.as_millis() as i64;
            delivery.last_error = Some(error);
            ready.insert((delivery.next_attempt_ms, seq), delivery.clone());
            settle.push(Settle::Retry { seq, delivery });
        }
        Outcome::Retry { error, .. } | Outcome::Permanent { error } => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            stats.dead.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(sink = name, seq, attempts = delivery.attempts, error = %error, "delivery given up; moved to the dead letters (`seamwatch outbox retry` re-drives it)");
            delivery.last_error = Some(error);
            settle.push(Settle::Dead { seq, delivery });
        }
    }
}
