//! `seamwatch gen`: synthetic audit traffic for the three clouds (see
//! [`crate::loadgen`]) written to archives in the native layouts, to JSON
//! Lines, or to Kafka topics at a target rate, from a fixed seed.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rdkafka::ClientContext;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use super::replay::parse_cloud;
use crate::config::Config;
use crate::event::Cloud;
use crate::loadgen::archive::ArchiveWriter;
use crate::loadgen::{GenConfig, GenEvent, Generator};
use crate::pipeline::demo::{AZURE_TOPIC, CLOUDTRAIL_TOPIC, GCP_TOPIC};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("output").required(true).args(["out", "jsonl", "kafka"])))]
pub struct GenArgs {
    /// Records to generate.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    pub events: u64,
    /// Seed: the same seed and settings give the same records.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Clouds, comma-separated (records alternate between them).
    #[arg(long, value_delimiter = ',', value_parser = parse_cloud, default_value = "aws,azure,gcp")]
    pub clouds: Vec<Cloud>,
    /// Accounts (subscriptions, projects) per cloud.
    #[arg(long, default_value_t = 6)]
    pub accounts: u32,
    /// Principals per account.
    #[arg(long, default_value_t = 40)]
    pub principals: u32,
    /// Event time of the first record (RFC 3339) [default: 2025-03-01T10:00:00Z
    /// for files; now for Kafka, so event time follows the wall clock].
    #[arg(long)]
    pub start: Option<String>,
    /// Records per second of event time, how dense the traffic is
    /// [default: 50; for Kafka with --rate, the rate].
    #[arg(long)]
    pub density: Option<f64>,
    /// Share of background records that are security-relevant changes.
    #[arg(long, default_value_t = 0.02)]
    pub security_share: f64,
    /// Chance per record that an attack scenario starts (compromised key,
    /// public bucket, network breach), in the record's cloud and account.
    #[arg(long, default_value_t = 0.0005)]
    pub attack_share: f64,

    /// Write archives in the native layouts under this folder
    /// (CloudTrail S3 layout, Azure export, GCP sink).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Write one record per line to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
    /// Produce to Kafka (brokers and security from `[kafka]` or --brokers),
    /// keyed by account so one account's records share a partition.
    #[arg(long)]
    pub kafka: bool,
    /// Kafka bootstrap servers [default: `[kafka] brokers`].
    #[arg(long, env = "SEAMWATCH_KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// Topic for CloudTrail records.
    #[arg(long, default_value = CLOUDTRAIL_TOPIC)]
    pub aws_topic: String,
    /// Topic for Azure Activity Log records.
    #[arg(long, default_value = AZURE_TOPIC)]
    pub azure_topic: String,
    /// Topic for GCP audit log records.
    #[arg(long, default_value = GCP_TOPIC)]
    pub gcp_topic: String,
    /// Target records per second, wall clock (Kafka only; 0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
}

fn gen_config(args: &GenArgs) -> anyhow::Result<GenConfig> {
    let start_ms = match &args.start {
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .with_context(|| format!("--start {text:?}: expected RFC 3339"))?
            .timestamp_millis(),
        None if args.kafka => chrono::Utc::now().timestamp_millis(),
        None => 1_740_823_200_000,
    };
    let density = match args.density {
        Some(density) => density,
        None if args.kafka && args.rate > 0.0 => args.rate,
        None => 50.0,
    };
    for (name, share) in [
        ("--security-share", args.security_share),
        ("--attack-share", args.attack_share),
    ] {
        anyhow::ensure!(
            (0.0..=1.0).contains(&share),
            "{name} {share}: expected 0 to 1"
        );
    }
    anyhow::ensure!(
        density >= 1e-3,
        "--density {density}: expected at least 0.001"
    );
    anyhow::ensure!(
        args.rate == 0.0 || args.rate >= 1e-3,
        "--rate {}: expected 0 (as fast as possible) or at least 0.001",
        args.rate
    );
    anyhow::ensure!(
        (1..=65_536).contains(&args.accounts),
        "--accounts {}: expected 1 to 65536",
        args.accounts
    );
    anyhow::ensure!(!args.clouds.is_empty(), "--clouds: name at least one cloud");
    Ok(GenConfig {
        seed: args.seed,
        clouds: args.clouds.clone(),
        accounts: args.accounts,
        principals: args.principals.max(1),
        start_ms,
        events_per_second: density,
        security_share: args.security_share,
        attack_share: args.attack_share,
    })
}

/// A line on stderr every second on a terminal.
struct Progress {
    on: bool,
    started: Instant,
    last: Instant,
    total: u64,
}

impl Progress {
    fn new(total: u64) -> Progress {
        Progress {
            on: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: Instant::now(),
            total,
        }
    }

    fn tick(&mut self, done: u64) {
        if self.on && self.last.elapsed() >= Duration::from_secs(1) {
            self.last = Instant::now();
            let rate = done as f64 / self.started.elapsed().as_secs_f64();
            eprint!("\rgen: {done}/{} records, {:.0}/s   ", self.total, rate);
        }
    }

    fn done(&self) {
        if self.on {
            eprint!("\r\x1b[2K");
        }
    }
}

pub fn run(args: GenArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let mut generator = Generator::new(gen_config(&args)?);
    let started = Instant::now();
    let mut progress = Progress::new(args.events);
    let mut extra = String::new();
    if let Some(root) = &args.out {
        // Hourly Azure and GCP files are appended to: a second run into the
        // same folder would mix two archives.
        if std::fs::read_dir(root).is_ok_and(|mut entries| entries.next().is_some()) {
            anyhow::bail!(
                "--out {}: the folder is not empty; remove it or choose another",
                root.display()
            );
        }
        let mut writer = ArchiveWriter::new(root);
        for n in 0..args.events {
            let event = generator.next_event();
            writer
                .push(&event)
                .with_context(|| format!("writing under {}", root.display()))?;
            if n % 4096 == 0 {
                progress.tick(n);
            }
        }
        let stats = writer
            .finish()
            .with_context(|| format!("writing under {}", root.display()))?;
        extra = format!(
            ", {} files, {:.1} MB on disk, under {}",
            stats.files,
            stats.disk_bytes as f64 / 1e6,
            root.display()
        );
    } else if let Some(path) = &args.jsonl {
        let sink: Box<dyn Write> = if path.as_os_str() == "-" {
            Box::new(std::io::stdout().lock())
        } else {
            Box::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            )
        };
        let mut out = BufWriter::with_capacity(1 << 20, sink);
        for n in 0..args.events {
            let event = generator.next_event();
            out.write_all(event.json.as_bytes())?;
            out.write_all(b"\n")?;
            if n % 4096 == 0 {
                progress.tick(n);
            }
        }
        out.flush()?;
    } else {
        extra = produce(&args, config, &mut generator, &mut progress)?;
    }
    progress.done();
    let stats = generator.stats();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "gen: {} records ({} security-relevant, {} attack scenarios), {:.1} MB of JSON, {:.1} s, {:.0} records/s{extra}",
        stats.events,
        stats.security,
        stats.scenarios,
        stats.bytes as f64 / 1e6,
        secs,
        stats.events as f64 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

/// Counts what the broker acknowledged and refused.
#[derive(Default)]
struct Deliveries {
    acked: AtomicU64,
    failed: AtomicU64,
}

#[derive(Clone)]
struct Counting(Arc<Deliveries>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.acked.fetch_add(1, Ordering::Relaxed),
            Err((err, _)) => {
                if self.0.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::error!(error = %err, "the broker refused a record");
                }
                0
            }
        };
    }
}

fn produce(
    args: &GenArgs,
    config: &Config,
    generator: &mut Generator,
    progress: &mut Progress,
) -> anyhow::Result<String> {
    let env = |k: &str| std::env::var(k).ok();
    let mut kafka = config.kafka.clone();
    if let Some(brokers) = &args.brokers {
        kafka.brokers = brokers.clone();
    }
    let mut client = kafka.client_config(env)?;
    client
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("enable.idempotence", "false");
    let deliveries = Arc::new(Deliveries::default());
    let producer: ThreadedProducer<Counting> = client
        .create_with_context(Counting(deliveries.clone()))
        .context("creating the Kafka producer")?;
    let started = Instant::now();
    let topic_of = |event: &GenEvent| match event.cloud {
        Cloud::Aws => args.aws_topic.as_str(),
        Cloud::Azure => args.azure_topic.as_str(),
        Cloud::Gcp => args.gcp_topic.as_str(),
    };
    for n in 0..args.events {
        if args.rate > 0.0 && n % 256 == 0 {
            let due = Duration::from_secs_f64(n as f64 / args.rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let event = generator.next_event();
        let mut record = BaseRecord::to(topic_of(&event))
            .key(event.account.as_bytes())
            .payload(event.json.as_bytes());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((err, back))
                    if err.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((err, _)) => return Err(err).context("producing to Kafka"),
            }
        }
        if n % 4096 == 0 {
            progress.tick(n);
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .context("waiting for the broker to acknowledge every record")?;
    let (acked, failed) = (
        deliveries.acked.load(Ordering::Relaxed),
        deliveries.failed.load(Ordering::Relaxed),
    );
    anyhow::ensure!(
        failed == 0,
        "the broker refused {failed} of {} records",
        args.events
    );
    Ok(format!(
        ", {acked} acknowledged by {} in {:.1} s",
        kafka.brokers,
        started.elapsed().as_secs_f64()
    ))
}
