//! `seamwatch bench`: the end-to-end benchmark against a running Kafka-protocol
//! broker, one table at the end. Three phases, each run `--runs` times and
//! reported as the median:
//!
//! - **throughput**: N generated records (three clouds, ~1.3 KB) are put on
//!   the topics first, then a `seamwatch run` process drains them into its
//!   outbox; events/s and MB/s while it drains, its CPU seconds per million
//!   events and its peak RSS (from `/proc`).
//! - **latency**: records are produced at a steady rate while `seamwatch run`
//!   delivers findings to a webhook receiver in this process; the latency of
//!   each finding is the time from its record's Kafka timestamp (set when the
//!   producer hands the record over) to the webhook request arriving
//!   (hdrhistogram: p50, p99, p99.9).
//! - **sigma**: the same CloudTrail records and the same SigmaHQ rules through
//!   `seamwatch replay` and through `rsigma engine eval`, in events per CPU
//!   second (children's user + system time), and the ratio.
//!
//! The pipeline runs as a separate process, as in production, so its CPU and
//! memory are its own.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, ValueEnum};
use dashmap::DashMap;
use hdrhistogram::Histogram;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Config;
use crate::event::Cloud;
use crate::loadgen::{GenConfig, GenEvent, Generator};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Phase {
    Throughput,
    /// Throughput with 1, 2, … processes in one consumer group (`--members`).
    Scaling,
    Latency,
    Sigma,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Kafka bootstrap servers of the broker to use (benches/e2e.sh starts one).
    #[arg(long, env = "SEAMWATCH_KAFKA_BROKERS")]
    pub brokers: String,
    /// Phases to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "throughput,latency,sigma"
    )]
    pub phases: Vec<Phase>,
    /// Repetitions of each phase; the table shows medians.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Process counts for the scaling phase.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub members: Vec<usize>,
    /// Records for the throughput phase.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Partitions per topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Records per second in the latency phase; several give a curve.
    #[arg(long, value_delimiter = ',', default_value = "20000")]
    pub latency_rate: Vec<f64>,
    /// The broker's process id, to report the CPU it used in each phase
    /// (benches/e2e.sh passes it when it starts the broker).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Length of the latency phase.
    #[arg(long, default_value_t = 30)]
    pub latency_seconds: u64,
    /// The latency phase's producer linger (`linger.ms`). A record's Kafka
    /// time is stamped when the producer takes it, so its linger counts in
    /// every latency below unless the broker stamps append times.
    #[arg(long, default_value_t = 5)]
    pub latency_linger_ms: u32,
    /// CloudTrail records for the Sigma comparison.
    #[arg(long, default_value_t = 500_000)]
    pub sigma_events: u64,
    /// SigmaHQ CloudTrail rules (a checkout's `rules/cloud/aws/cloudtrail`).
    #[arg(
        long,
        default_value = "../shared/corpus/sigma/rules/cloud/aws/cloudtrail"
    )]
    pub sigma_rules: PathBuf,
    /// The rsigma binary (`cargo install rsigma`).
    #[arg(long, default_value = "rsigma")]
    pub rsigma: PathBuf,
    /// A librdkafka consumer property for `seamwatch run`, KEY=VALUE; repeatable.
    #[arg(long = "consumer-property", value_name = "KEY=VALUE")]
    pub consumer_properties: Vec<String>,
    /// Producer compression for the benchmark's records (none, lz4, zstd…).
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Working folder (outboxes, generated files) [default: a temporary one].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// Records of the benchmark mix: three clouds, a little security traffic.
fn generator(seed: u64, clouds: Vec<Cloud>, start_ms: i64, density: f64) -> Generator {
    Generator::new(GenConfig {
        seed,
        clouds,
        accounts: 24,
        principals: 200,
        start_ms,
        events_per_second: density,
        security_share: 0.01,
        attack_share: 0.0002,
    })
}

/// Remembers the Kafka timestamp of every record the broker acknowledged.
#[derive(Clone, Default)]
struct Acks {
    times: Arc<DashMap<String, i64>>,
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    remember: bool,
    /// Produce → acknowledgement, in ms, of every remembered record: the
    /// broker's share of the latency.
    ack_ms: Arc<std::sync::Mutex<Vec<u32>>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                if self.remember {
                    let ts = m.timestamp().to_millis().unwrap_or_else(now_ms);
                    if let Ok(mut a) = self.ack_ms.lock() {
                        a.push((now_ms() - ts).clamp(0, i64::from(u32::MAX)) as u32);
                    }
                    self.times.insert(
                        format!("kafka:{}/{}@{}", m.topic(), m.partition(), m.offset()),
                        ts,
                    );
                }
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

struct Topics {
    aws: String,
    azure: String,
    gcp: String,
}

impl Topics {
    fn new(run: &str) -> Topics {
        Topics {
            aws: format!("bench-{run}-cloudtrail"),
            azure: format!("bench-{run}-azure"),
            gcp: format!("bench-{run}-gcp"),
        }
    }

    fn of(&self, event: &GenEvent) -> &str {
        match event.cloud {
            Cloud::Aws => &self.aws,
            Cloud::Azure => &self.azure,
            Cloud::Gcp => &self.gcp,
        }
    }

    fn all(&self) -> [&str; 3] {
        [&self.aws, &self.azure, &self.gcp]
    }
}

/// Removes a run's topics from the broker (best effort): a benchmark should
/// not leave gigabytes behind.
fn delete_topics(rt: &tokio::runtime::Runtime, brokers: &str, topics: &Topics) {
    let Ok(admin) = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    if let Err(e) = rt.block_on(admin.delete_topics(&topics.all(), &AdminOptions::new())) {
        tracing::warn!(error = %e, "benchmark topics not deleted");
    }
}

fn create_topics(
    rt: &tokio::runtime::Runtime,
    brokers: &str,
    topics: &Topics,
    partitions: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .context("connecting to the broker")?;
    let new: Vec<NewTopic<'_>> = topics
        .all()
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = rt
        .block_on(admin.create_topics(&new, &AdminOptions::new()))
        .context("creating the benchmark topics")?;
    for result in results {
        if let Err((topic, code)) = result
            && code != RDKafkaErrorCode::TopicAlreadyExists
        {
            anyhow::bail!("creating topic {topic}: {code}");
        }
    }
    Ok(())
}

fn producer(
    brokers: &str,
    acks: Acks,
    linger_ms: &str,
    compression: &str,
) -> anyhow::Result<ThreadedProducer<Acks>> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", linger_ms)
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("enable.idempotence", "false")
        .set("compression.type", compression)
        .create_with_context(acks)
        .context("creating the producer")
}

fn send(producer: &ThreadedProducer<Acks>, topic: &str, event: &GenEvent) -> anyhow::Result<()> {
    let mut record = BaseRecord::to(topic)
        .key(event.account.as_bytes())
        .payload(event.json.as_bytes());
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((err, back)) if err.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((err, _)) => return Err(err).context("producing"),
        }
    }
}

/// User + system CPU seconds of a process so far (`self` for this one).
fn cpu_seconds(pid: &str) -> f64 {
    // SAFETY: sysconf only reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user: f64 = fields.get(11)?.parse().ok()?;
            let system: f64 = fields.get(12)?.parse().ok()?;
            Some((user + system) / ticks)
        })
        .unwrap_or(f64::NAN)
}

/// `[kafka.properties]` from KEY=VALUE pairs.
fn properties(pairs: &[String]) -> anyhow::Result<String> {
    if pairs.is_empty() {
        return Ok(String::new());
    }
    let mut table = String::from("[kafka.properties]\n");
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--consumer-property {pair:?}: expected KEY=VALUE"))?;
        table.push_str(&format!(
            "{} = {}\n",
            crate::loadgen::shape::quoted(key.trim()),
            crate::loadgen::shape::quoted(value.trim())
        ));
    }
    Ok(table)
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The pipeline under test: `seamwatch run` as its own process.
struct Pipeline {
    child: Child,
    admin: SocketAddr,
}

impl Pipeline {
    fn start(
        work: &Path,
        name: &str,
        group: &str,
        brokers: &str,
        topics: &Topics,
        webhook: Option<SocketAddr>,
        consumer_properties: &[String],
    ) -> anyhow::Result<Pipeline> {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let outbox = work.join(format!("{name}-outbox.redb"));
        let _ = std::fs::remove_file(&outbox);
        let sink = webhook
            .map(|addr| {
                format!(
                    "[[alerts.sinks]]\nname = \"bench\"\ntype = \"webhook\"\nurl = \"http://{addr}/hook\"\nformat = \"json\"\n"
                )
            })
            .unwrap_or_default();
        let config = format!(
            r#"[kafka]
brokers = "{brokers}"
group_id = "bench-{group}"
start = "earliest"
dead_letter_topic = ""
commit_interval = "1s"
[[kafka.topics]]
name = "{aws}"
format = "cloudtrail"
[[kafka.topics]]
name = "{azure}"
format = "azure"
[[kafka.topics]]
name = "{gcp}"
format = "gcp"
{properties}
[admin]
enabled = true
listen = "{admin}"
[alerts]
outbox = "{outbox}"
{sink}"#,
            aws = topics.aws,
            azure = topics.azure,
            gcp = topics.gcp,
            outbox = outbox.display(),
            properties = properties(consumer_properties)?,
        );
        let path = work.join(format!("{name}.toml"));
        std::fs::write(&path, config)?;
        let log = std::fs::File::create(work.join(format!("{name}.log")))?;
        let mut command = Command::new(std::env::current_exe()?);
        // SAFETY: prctl is async-signal-safe; the child dies with this process
        // instead of outliving an interrupted benchmark.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .arg("--config")
            .arg(&path)
            .args(["--log-format", "json", "run"])
            .env_remove("SEAMWATCH_KAFKA_BROKERS")
            .env_remove("SEAMWATCH_KAFKA_TOPICS")
            .env_remove("SEAMWATCH_KAFKA_GROUP")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting seamwatch run")?;
        Ok(Pipeline { child, admin })
    }

    /// (events, parse errors) from its /metrics.
    async fn counts(&self, http: &reqwest::Client) -> Option<(u64, u64)> {
        let text = http
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let sum = |name: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(name) && !l.starts_with('#'))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        Some((
            sum("seamwatch_events_total"),
            sum("seamwatch_parse_errors_total"),
        ))
    }

    /// (CPU seconds, peak RSS in MB) so far, from /proc.
    fn usage(&self) -> (f64, f64) {
        let pid = self.child.id();
        let cpu = cpu_seconds(&pid.to_string());
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
                let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kb / 1024.0)
            })
            .unwrap_or(f64::NAN);
        (cpu, rss)
    }

    fn stop(mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Default, Clone)]
struct ThroughputRun {
    events_per_s: f64,
    mb_per_s: f64,
    cpu_s_per_m: f64,
    peak_rss_mb: f64,
}

fn throughput(
    args: &BenchArgs,
    rt: &tokio::runtime::Runtime,
    work: &Path,
    run: usize,
    members: usize,
) -> anyhow::Result<ThroughputRun> {
    let name = format!("tp{run}x{members}-{}", now_ms());
    let topics = Topics::new(&name);
    create_topics(rt, &args.brokers, &topics, args.partitions)?;
    eprintln!(
        "bench: throughput run {}: producing {} records",
        run + 1,
        args.events
    );
    let acks = Acks::default();
    let producer = producer(&args.brokers, acks.clone(), "20", &args.compression)?;
    let mut generator = generator(
        run as u64 + 1,
        vec![Cloud::Aws, Cloud::Azure, Cloud::Gcp],
        1_740_823_200_000,
        200.0,
    );
    let mut bytes = 0u64;
    for _ in 0..args.events {
        let event = generator.next_event();
        bytes += event.json.len() as u64;
        send(&producer, topics.of(&event), &event)?;
    }
    producer.flush(Duration::from_secs(120))?;
    anyhow::ensure!(
        acks.failed.load(Ordering::Relaxed) == 0,
        "the broker refused records"
    );
    eprintln!(
        "bench: throughput run {}: draining with seamwatch run",
        run + 1
    );
    let mut pipelines: Vec<Pipeline> = (0..members)
        .map(|m| {
            Pipeline::start(
                work,
                &format!("{name}-m{m}"),
                &name,
                &args.brokers,
                &topics,
                None,
                &args.consumer_properties,
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let http = reqwest::Client::new();
    let total = args.events;
    let cpu = |ps: &[Pipeline]| ps.iter().map(|p| p.usage().0).sum::<f64>();
    let result = rt.block_on(async {
        let mut first: Option<(Instant, u64, f64)> = None;
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            anyhow::ensure!(
                Instant::now() < deadline,
                "the pipeline did not drain within 30 minutes"
            );
            let mut done = 0;
            for p in pipelines.iter_mut() {
                if let Ok(Some(status)) = p.child.try_wait() {
                    anyhow::bail!(
                        "seamwatch run exited early ({status}); see its log in {}",
                        work.display()
                    );
                }
            }
            for p in &pipelines {
                if let Some((events, errors)) = p.counts(&http).await {
                    done += events + errors;
                }
            }
            if first.is_none() && done > 0 {
                first = Some((Instant::now(), done, cpu(&pipelines)));
            }
            // A member that restarts after a rebalance may count some
            // records twice: at least every record is consumed.
            if done >= total {
                let (t0, n0, cpu0) = first.unwrap_or((Instant::now(), 0, 0.0));
                let secs = t0.elapsed().as_secs_f64().max(1e-3);
                let drained = (done - n0) as f64;
                let rss = pipelines.iter().map(|p| p.usage().1).fold(0.0, f64::max);
                return Ok(ThroughputRun {
                    events_per_s: drained / secs,
                    mb_per_s: bytes as f64 / total as f64 * drained / secs / 1e6,
                    cpu_s_per_m: (cpu(&pipelines) - cpu0) / drained * 1e6,
                    peak_rss_mb: rss,
                });
            }
        }
    });
    for p in pipelines {
        p.stop();
    }
    delete_topics(rt, &args.brokers, &topics);
    result
}

/// A row of the latency table: name, the value of one run, unit.
type LatencyRow = (&'static str, fn(&LatencyRun) -> f64, &'static str);

#[derive(Debug, Default, Clone)]
struct LatencyRun {
    findings: u64,
    unmatched: u64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    achieved_rate: f64,
    /// Consumer hand-over → finding durable in the outbox (the pipeline's own
    /// histogram): the part of the latency spent inside seamwatch.
    inside_p50_ms: f64,
    inside_p99_ms: f64,
    inside_p999_ms: f64,
    /// Produce → broker acknowledgement: the broker's share.
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    /// Kafka append → finding durable (the pipeline's own histogram): the
    /// broker's share, the fetch, and the pipeline.
    append_p50_ms: f64,
    append_p99_ms: f64,
    /// Cores in use while records were produced: the pipeline, the broker,
    /// and this process (generator, producer, webhook receiver).
    pipeline_cores: f64,
    broker_cores: f64,
    bench_cores: f64,
}

/// The webhook receiver: each finding's latency from its records' Kafka time.
/// What the webhook receiver saw: each single-event finding's record
/// sources and when it arrived (µs). Matched to the records' Kafka times
/// only after every acknowledgement is in, so a finding that beats its
/// record's acknowledgement is still counted.
type Arrivals = Arc<std::sync::Mutex<Vec<(Vec<String>, i64)>>>;

/// The webhook receiver.
async fn receiver(arrivals: Arrivals) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let arrivals = arrivals.clone();
            async move {
                let received = now_us();
                // Correlations fire when their window says so (an absence
                // rule 15 minutes on): only single-event findings are timed.
                if memchr::memmem::find(&body, b"\"kind\":\"correlation\"").is_some() {
                    return "ok";
                }
                let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let mut sources = Vec::new();
                collect_sources(&value, &mut sources);
                let sources = sources.into_iter().map(str::to_owned).collect();
                if let Ok(mut a) = arrivals.lock() {
                    a.push((sources, received));
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

fn collect_sources<'v>(value: &'v serde_json::Value, out: &mut Vec<&'v str>) {
    match value {
        serde_json::Value::String(s) if s.starts_with("kafka:") => out.push(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_sources(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_sources(v, out)),
        _ => {}
    }
}

fn latency(
    args: &BenchArgs,
    rate: f64,
    rt: &tokio::runtime::Runtime,
    work: &Path,
    run: usize,
) -> anyhow::Result<LatencyRun> {
    let name = format!("lat{run}-{}", now_ms());
    let topics = Topics::new(&name);
    create_topics(rt, &args.brokers, &topics, args.partitions)?;
    let acks = Acks {
        remember: true,
        ..Acks::default()
    };
    let arrivals: Arrivals = Arc::default();
    let (addr, task) = rt.block_on(receiver(arrivals.clone()))?;
    let pipeline = Pipeline::start(
        work,
        &name,
        &name,
        &args.brokers,
        &topics,
        Some(addr),
        &args.consumer_properties,
    )?;
    // Let it join the group and get its partitions before the clock starts.
    let http = reqwest::Client::new();
    let ready = rt.block_on(async {
        for _ in 0..600 {
            if let Ok(r) = http
                .get(format!("http://{}/readyz", pipeline.admin))
                .send()
                .await
                && r.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    });
    if !ready {
        pipeline.stop();
        anyhow::bail!(
            "seamwatch run did not get its partitions within 60 s (see {})",
            work.join(format!("{name}.log")).display()
        );
    }
    eprintln!(
        "bench: latency run {}: {} records/s for {} s",
        run + 1,
        rate,
        args.latency_seconds
    );
    let producer = producer(
        &args.brokers,
        acks.clone(),
        &args.latency_linger_ms.to_string(),
        &args.compression,
    )?;
    let mut generator = generator(
        run as u64 + 100,
        vec![Cloud::Aws, Cloud::Azure, Cloud::Gcp],
        now_ms(),
        rate,
    );
    let total = (rate * args.latency_seconds as f64) as u64;
    let broker = args.broker_pid.map(|p| p.to_string());
    let cpu_before = (
        pipeline.usage().0,
        broker.as_deref().map_or(f64::NAN, cpu_seconds),
        cpu_seconds("self"),
    );
    let started = Instant::now();
    for n in 0..total {
        if n % 64 == 0 {
            let due = Duration::from_secs_f64(n as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let event = generator.next_event();
        send(&producer, topics.of(&event), &event)?;
    }
    let secs = started.elapsed().as_secs_f64();
    let achieved_rate = total as f64 / secs;
    let cores = (
        (pipeline.usage().0 - cpu_before.0) / secs,
        (broker.as_deref().map_or(f64::NAN, cpu_seconds) - cpu_before.1) / secs,
        (cpu_seconds("self") - cpu_before.2) / secs,
    );
    producer.flush(Duration::from_secs(60))?;
    // Wait for the pipeline to catch up and deliver.
    let inside = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Some((events, errors)) = pipeline.counts(&http).await
                && events + errors >= total
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Where the time went, by the pipeline's own histograms.
        if let Ok(r) = http
            .get(format!("http://{}/metrics", pipeline.admin))
            .send()
            .await
            && let Ok(text) = r.text().await
        {
            let quantile = |metric: &str, q: &str| {
                text.lines()
                    .find(|l| {
                        l.starts_with(metric)
                            && l[metric.len()..].starts_with('{')
                            && l.contains(&format!("quantile=\"{q}\""))
                    })
                    .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
            };
            let inside = "seamwatch_consumed_to_outbox_ms";
            let append = "seamwatch_append_to_finding_ms";
            return [
                quantile(inside, "0.5"),
                quantile(inside, "0.99"),
                quantile(inside, "0.999"),
                quantile(append, "0.5"),
                quantile(append, "0.99"),
            ];
        }
        [f64::NAN; 5]
    });
    pipeline.stop();
    task.abort();
    delete_topics(rt, &args.brokers, &topics);
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut unmatched = 0;
    for (sources, received) in arrivals
        .lock()
        .map_err(|_| anyhow::anyhow!("arrivals lock"))?
        .iter()
    {
        match sources
            .iter()
            .filter_map(|s| acks.times.get(s).map(|t| *t))
            .max()
        {
            Some(ms) => {
                let _ = h.record(((received - ms * 1000).max(1)) as u64);
            }
            None => unmatched += 1,
        }
    }
    let mut acked = Histogram::<u64>::new_with_bounds(1, 600_000, 3)?;
    for &ms in acks
        .ack_ms
        .lock()
        .map_err(|_| anyhow::anyhow!("ack lock"))?
        .iter()
    {
        let _ = acked.record(u64::from(ms).max(1));
    }
    // No finding timed: no percentiles (not zeros).
    let ack = |q: f64| quantile(&acked, q);
    let ms = |q: f64| quantile(&h, q) / 1000.0;
    Ok(LatencyRun {
        findings: h.len(),
        unmatched,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: ms(1.0),
        achieved_rate,
        inside_p50_ms: inside[0],
        inside_p99_ms: inside[1],
        inside_p999_ms: inside[2],
        ack_p50_ms: ack(0.5),
        ack_p99_ms: ack(0.99),
        append_p50_ms: inside[3],
        append_p99_ms: inside[4],
        pipeline_cores: cores.0,
        broker_cores: cores.1,
        bench_cores: cores.2,
    })
}

/// A histogram's value at `q`; NaN (not zero) when it holds none.
fn quantile(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        f64::NAN
    } else {
        h.value_at_quantile(q) as f64
    }
}

#[derive(Debug, Default, Clone)]
struct SigmaRun {
    seamwatch_per_cpu_s: f64,
    rsigma_per_cpu_s: f64,
    seamwatch_matches: u64,
    rsigma_matches: u64,
}

fn children_cpu() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU seconds of a child and the lines it printed on stdout.
fn measure(command: &mut Command) -> anyhow::Result<(f64, u64)> {
    let before = children_cpu();
    let output = command
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{command:?} failed: {}",
        output.status
    );
    let lines = output.stdout.iter().filter(|b| **b == b'\n').count() as u64;
    Ok((children_cpu() - before, lines))
}

fn sigma(args: &BenchArgs, work: &Path, run: usize) -> anyhow::Result<SigmaRun> {
    anyhow::ensure!(
        args.sigma_rules.is_dir(),
        "--sigma-rules {}: not a folder (a SigmaHQ checkout's rules/cloud/aws/cloudtrail)",
        args.sigma_rules.display()
    );
    let file = work.join("sigma-events.jsonl");
    if run == 0 {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let mut generator = Generator::new(GenConfig {
            clouds: vec![Cloud::Aws],
            security_share: 0.05,
            attack_share: 0.001,
            ..GenConfig::default()
        });
        for _ in 0..args.sigma_events {
            out.write_all(generator.next_event().json.as_bytes())?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    eprintln!("bench: sigma run {}: seamwatch replay", run + 1);
    let (ours, ours_matches) = measure(
        Command::new(std::env::current_exe()?)
            .args(["replay", "--no-builtin", "--rules"])
            .arg(&args.sigma_rules)
            .arg(&file),
    )?;
    eprintln!("bench: sigma run {}: rsigma engine eval", run + 1);
    let (theirs, their_matches) = measure(
        Command::new(&args.rsigma)
            .args([
                "engine",
                "eval",
                "--output-format",
                "ndjson",
                "-q",
                "--no-stats",
                "-r",
            ])
            .arg(&args.sigma_rules)
            .arg("-e")
            .arg(format!("@{}", file.display())),
    )?;
    let n = args.sigma_events as f64;
    Ok(SigmaRun {
        seamwatch_per_cpu_s: n / ours.max(1e-6),
        rsigma_per_cpu_s: n / theirs.max(1e-6),
        seamwatch_matches: ours_matches,
        rsigma_matches: their_matches,
    })
}

pub fn run(args: BenchArgs, _config: &Config) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // A folder of our own is removed at the end (outboxes, generated
    // records: hundreds of MB); one named with --work-dir is kept.
    let (work, _cleanup) = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            (dir.clone(), None)
        }
        None => {
            let dir = tempfile_dir()?;
            (dir.clone(), Some(RemoveOnDrop(dir)))
        }
    };
    let mut out = std::io::stdout().lock();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    writeln!(
        out,
        "seamwatch {} · {cores} cores · broker {} · {} partitions per topic · medians of {} runs\n",
        env!("CARGO_PKG_VERSION"),
        args.brokers,
        args.partitions,
        args.runs
    )?;
    writeln!(out, "| measure | median | runs |")?;
    writeln!(out, "|---|---|---|")?;
    let row = |out: &mut std::io::StdoutLock<'_>,
               name: &str,
               values: &mut Vec<f64>,
               unit: &str|
     -> std::io::Result<()> {
        let runs: Vec<String> = values.iter().map(|v| format!("{v:.1}")).collect();
        let m = median(values);
        writeln!(out, "| {name} | **{m:.1}** {unit} | {} |", runs.join(", "))
    };
    if args.phases.contains(&Phase::Throughput) {
        let runs: Vec<ThroughputRun> = (0..args.runs)
            .map(|i| throughput(&args, &rt, &work, i, 1))
            .collect::<anyhow::Result<_>>()?;
        row(
            &mut out,
            &format!("Kafka → outbox, {} records", args.events),
            &mut runs.iter().map(|r| r.events_per_s).collect(),
            "events/s",
        )?;
        row(
            &mut out,
            "Kafka → outbox",
            &mut runs.iter().map(|r| r.mb_per_s).collect(),
            "MB/s",
        )?;
        row(
            &mut out,
            "CPU per million events",
            &mut runs.iter().map(|r| r.cpu_s_per_m).collect(),
            "CPU s",
        )?;
        row(
            &mut out,
            "peak RSS of `seamwatch run`",
            &mut runs.iter().map(|r| r.peak_rss_mb).collect(),
            "MB",
        )?;
    }
    if args.phases.contains(&Phase::Scaling) {
        for &members in &args.members {
            let runs: Vec<ThroughputRun> = (0..args.runs)
                .map(|i| throughput(&args, &rt, &work, i, members.max(1)))
                .collect::<anyhow::Result<_>>()?;
            row(
                &mut out,
                &format!("{members} process(es) in one group, Kafka → outbox"),
                &mut runs.iter().map(|r| r.events_per_s).collect(),
                "events/s",
            )?;
            row(
                &mut out,
                &format!("{members} process(es): CPU per million events"),
                &mut runs.iter().map(|r| r.cpu_s_per_m).collect(),
                "CPU s",
            )?;
        }
    }
    if args.phases.contains(&Phase::Latency) {
        for &rate in &args.latency_rate {
            let runs: Vec<LatencyRun> = (0..args.runs)
                .map(|i| latency(&args, rate, &rt, &work, i))
                .collect::<anyhow::Result<_>>()?;
            let label = format!("{rate:.0} events/s");
            let rows: [LatencyRow; 17] = [
                ("Kafka → webhook p50", |r| r.p50_ms, "ms"),
                ("Kafka → webhook p99", |r| r.p99_ms, "ms"),
                ("Kafka → webhook p99.9", |r| r.p999_ms, "ms"),
                ("Kafka → webhook max", |r| r.max_ms, "ms"),
                ("produce → broker ack p50", |r| r.ack_p50_ms, "ms"),
                ("produce → broker ack p99", |r| r.ack_p99_ms, "ms"),
                (
                    "Kafka append → finding in outbox p50",
                    |r| r.append_p50_ms,
                    "ms",
                ),
                (
                    "Kafka append → finding in outbox p99",
                    |r| r.append_p99_ms,
                    "ms",
                ),
                (
                    "inside seamwatch (consumed → outbox) p50",
                    |r| r.inside_p50_ms,
                    "ms",
                ),
                (
                    "inside seamwatch (consumed → outbox) p99",
                    |r| r.inside_p99_ms,
                    "ms",
                ),
                (
                    "inside seamwatch (consumed → outbox) p99.9",
                    |r| r.inside_p999_ms,
                    "ms",
                ),
                ("findings timed", |r| r.findings as f64, ""),
                ("producer rate achieved", |r| r.achieved_rate, "events/s"),
                ("cores used by `seamwatch run`", |r| r.pipeline_cores, ""),
                ("cores used by the broker", |r| r.broker_cores, ""),
                (
                    "cores used by generator + producer + receiver",
                    |r| r.bench_cores,
                    "",
                ),
                (
                    "findings without a timed record",
                    |r| r.unmatched as f64,
                    "",
                ),
            ];
            for (name, pick, unit) in rows {
                let mut values: Vec<f64> = runs.iter().map(pick).collect();
                if values.iter().all(|v| v.is_nan()) {
                    continue;
                }
                row(&mut out, &format!("{name} at {label}"), &mut values, unit)?;
            }
        }
    }
    if args.phases.contains(&Phase::Sigma) {
        let runs: Vec<SigmaRun> = (0..args.runs)
            .map(|i| sigma(&args, &work, i))
            .collect::<anyhow::Result<_>>()?;
        let mut ratio: Vec<f64> = runs
            .iter()
            .map(|r| r.seamwatch_per_cpu_s / r.rsigma_per_cpu_s)
            .collect();
        row(
            &mut out,
            &format!(
                "SigmaHQ CloudTrail rules, {} events: seamwatch",
                args.sigma_events
            ),
            &mut runs.iter().map(|r| r.seamwatch_per_cpu_s).collect(),
            "events per CPU s",
        )?;
        row(
            &mut out,
            "same events and rules: rsigma",
            &mut runs.iter().map(|r| r.rsigma_per_cpu_s).collect(),
            "events per CPU s",
        )?;
        row(&mut out, "ratio seamwatch / rsigma", &mut ratio, "×")?;
        let r = &runs[0];
        writeln!(
            out,
            "| matches (seamwatch / rsigma) | {} / {} | |",
            r.seamwatch_matches, r.rsigma_matches
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh private working folder: created here (never reused) and readable
/// by this user only, since the configurations in it may carry properties.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!(
        "seamwatch-bench-{}-{}",
        std::process::id(),
        now_us()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
