//! `seamwatch run`: the live pipeline on Kafka until SIGINT or SIGTERM, then
//! a graceful drain and a synchronous commit. `seamwatch demo`: the same
//! pipeline against an in-process Kafka-protocol cluster with bundled
//! traffic, no setup.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::replay::{DetectionArgs, build_analyzer, load_matrix};
use crate::admin::{AdminState, FindingsHub, HubSink};
use crate::alert::config::AlertsConfig;
use crate::alert::deliver::{Destination, Dispatcher, Policy};
use crate::alert::store::Outbox;
use crate::config::Config;
use crate::detect::Finding;
use crate::pipeline::config::TopicConfig;
use crate::pipeline::demo::{
    AZURE_TOPIC, CLOUDTRAIL_TOPIC, DEAD_LETTER_TOPIC, GCP_TOPIC, demo_records,
};
use crate::pipeline::outbox::{FindingSink, OutboxError, Tee};
use crate::pipeline::{KafkaConfig, Metrics, run};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub detection: DetectionArgs,
    /// The alert outbox (an embedded database) [default: `[alerts] outbox`].
    /// Findings are in it, durably, before their offsets are committed.
    #[arg(long, value_name = "FILE")]
    pub outbox: Option<PathBuf>,
    /// Also print each finding on stdout as it is found.
    #[arg(long)]
    pub print: bool,
    /// Where the admin server listens [default: `[admin] listen`, 127.0.0.1:9464].
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<std::net::SocketAddr>,
    /// Do not start the admin server.
    #[arg(long, conflicts_with = "admin")]
    pub no_admin: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Background CloudTrail events to produce besides the attack sequences.
    #[arg(long, default_value_t = 50_000)]
    pub events: usize,
    /// Where the outbox goes [default: a file in the system's temp folder].
    #[arg(long, value_name = "FILE")]
    pub outbox: Option<PathBuf>,
    /// Print the summary only.
    #[arg(long, short)]
    pub quiet: bool,
    /// Serve the admin server and web view (`[admin] listen`) during the
    /// demo, and keep serving after it until Ctrl-C.
    #[arg(long)]
    pub serve: bool,
}

/// Prints findings as they are handed over; counts them by rule.
struct Printer {
    quiet: bool,
    by_rule: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl FindingSink for Printer {
    fn append(&self, findings: &[Finding]) -> Result<(), OutboxError> {
        let mut by_rule = self.by_rule.lock().unwrap_or_else(|e| e.into_inner());
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for f in findings {
            *by_rule.entry(f.rule_id.clone()).or_default() += 1;
            if !self.quiet {
                let who = f
                    .principal
                    .name
                    .as_deref()
                    .or(f.principal.id.as_deref())
                    .unwrap_or("?");
                let _ = writeln!(
                    out,
                    "{:<8} {:<5} {:<12} {}  [{}] {} in {}{}",
                    f.severity.as_str().to_uppercase(),
                    f.cloud.as_str(),
                    f.event_time
                        .map(|t| t.format("%m-%d %H:%M").to_string())
                        .unwrap_or_default(),
                    f.title,
                    f.rule_id,
                    who,
                    f.account.as_deref().unwrap_or("?"),
                    f.detail
                        .as_deref()
                        .filter(|_| f.correlation.is_some())
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default(),
                );
            }
        }
        Ok(())
    }
    fn sync(&self) -> Result<(), OutboxError> {
        Ok(())
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn run(args: RunArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let env = |k: &str| std::env::var(k).ok();
    let kafka = config.kafka.clone().with_env(env)?;
    if kafka.topics.is_empty() {
        return Err(crate::pipeline::config::KafkaConfigError::NoTopics.into());
    }
    let client = kafka.client_config(env)?;
    let analyzer = Arc::new(args.detection.analyzer(None, config)?);
    let alerts = &config.alerts;
    let outbox_path = args.outbox.clone().unwrap_or_else(|| alerts.outbox.clone());
    let store = Arc::new(
        Outbox::open(&outbox_path, alerts, resolvable_rules(&analyzer))
            .map_err(|e| anyhow::anyhow!(e))?,
    );
    let dispatcher = start_dispatcher(&store, alerts, Some(&client))?;
    let mut admin = config.admin.clone();
    admin.enabled &= !args.no_admin;
    if let Some(addr) = args.admin {
        admin.listen = addr;
    }
    let token = if admin.enabled { admin.token()? } else { None };
    let hub = Arc::new(FindingsHub::new(admin.recent));
    // The outbox first: the feed shows what it has made durable.
    let mut sinks: Vec<Arc<dyn FindingSink>> =
        vec![store.clone(), Arc::new(HubSink::new(hub.clone()))];
    if args.print {
        sinks.push(Arc::new(Printer {
            quiet: false,
            by_rule: Default::default(),
        }));
    }
    let sink: Arc<dyn FindingSink> = Arc::new(Tee(sinks));
    let metrics = Arc::new(Metrics::default());
    let stop = Arc::new(AtomicBool::new(false));
    let rt = runtime()?;
    let admin_stop = if admin.enabled {
        let state = AdminState {
            hub,
            metrics: metrics.clone(),
            analyzer: Some(analyzer.clone()),
            outbox: Some(store.clone()),
            sinks: dispatcher.stats.clone(),
            token,
            silent_after: admin.silent_after,
        };
        Some(start_admin(&rt, admin.listen, state)?)
    } else {
        None
    };
    let summary = rt.block_on(async {
        let signal_stop = stop.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping: draining in-flight work, then committing");
            signal_stop.store(true, Ordering::Relaxed);
        });
        run::run(
            &kafka,
            client,
            config.limits,
            analyzer,
            sink,
            metrics.clone(),
            stop,
        )
        .await
    })?;
    if let Some(admin) = admin_stop {
        admin.send_replace(true);
    }
    eprintln!(
        "consumed {} messages: {} events, {} rejected ({} dead-lettered), {} findings; commit lag at exit {}",
        summary.messages,
        summary.events,
        summary.errors,
        summary.dead_lettered,
        summary.findings,
        summary.commit_lag
    );
    stop_delivery(dispatcher, Duration::from_secs(10), &store)?;
    Ok(ExitCode::SUCCESS)
}

/// Starts the admin server on `rt`; sending `true` stops it.
fn start_admin(
    rt: &tokio::runtime::Runtime,
    listen: std::net::SocketAddr,
    state: AdminState,
) -> anyhow::Result<tokio::sync::watch::Sender<bool>> {
    let stop = tokio::sync::watch::Sender::new(false);
    let mut stopped = stop.subscribe();
    let (addr, _) = rt.block_on(crate::admin::serve(listen, Arc::new(state), async move {
        let _ = stopped.wait_for(|s| *s).await;
    }))?;
    eprintln!("admin server on http://{addr}/ (web view, /metrics, /findings/stream)");
    Ok(stop)
}

/// Rule ids some rule `resolves`: their alerts are indexed for closing.
pub fn resolvable_rules(analyzer: &crate::analyze::Analyzer) -> HashSet<String> {
    analyzer
        .detector()
        .rules()
        .rules()
        .iter()
        .flat_map(|r| r.meta.resolves.iter().cloned())
        .collect()
}

/// Builds every `[[alerts.sinks]]` destination and starts delivering.
pub fn start_dispatcher(
    store: &Arc<Outbox>,
    alerts: &AlertsConfig,
    kafka: Option<&ClientConfig>,
) -> anyhow::Result<Dispatcher> {
    let destinations = alerts
        .sinks
        .iter()
        .enumerate()
        .map(|(i, s)| Destination::from_config(s, i, kafka))
        .collect::<Result<Vec<_>, _>>()?;
    let policies = alerts.sinks.iter().map(|s| Policy::of(alerts, s)).collect();
    for sink in &alerts.sinks {
        tracing::info!(sink = %sink.name, kind = ?sink.kind, format = ?sink.format, "alert destination");
    }
    Dispatcher::start(store.clone(), destinations, policies).context("starting alert delivery")
}

/// Stops delivery (waiting up to `grace` for requests in flight), then
/// reports per destination what was delivered and what the outbox decided.
pub fn stop_delivery(
    dispatcher: Dispatcher,
    grace: Duration,
    store: &Outbox,
) -> anyhow::Result<()> {
    // Digests of budget windows still open go out now rather than on the
    // next start; what is waiting gets up to `grace` to be delivered, and
    // stays in the outbox otherwise.
    if let Err(e) = store.flush_budgets() {
        tracing::error!(error = %e, "cannot queue the budget digests");
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && store
            .depth()
            .is_ok_and(|d| d.values().any(|(queued, _)| *queued > 0))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = dispatcher.stats.clone();
    dispatcher.shutdown(Duration::from_secs(2));
    for s in &stats {
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let latency = s.latency_ms.lock().unwrap_or_else(|e| e.into_inner());
        eprintln!(
            "  {}: {} delivered, {} skipped by the format, {} failed attempts, {} given up; finding → delivered p50 {} ms, p99 {} ms",
            s.name,
            n(&s.delivered),
            n(&s.skipped),
            n(&s.failed),
            n(&s.dead),
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.99)
        );
    }
    print_outbox_summary(store)
}

/// What the outbox decided, and what is still waiting, on stderr.
pub fn print_outbox_summary(store: &Outbox) -> anyhow::Result<()> {
    let s = &store.stats;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    eprintln!(
        "outbox {}: {} alerts created, {} repeats folded in, {} closed, {} suppressed, {} held by budgets ({} digests), {} redelivered findings ignored",
        store.path().display(),
        n(&s.created),
        n(&s.updated),
        n(&s.closed),
        n(&s.suppressed),
        n(&s.held),
        n(&s.digests),
        n(&s.repeated),
    );
    for (sink, (queued, dead)) in store.depth()? {
        eprintln!("  {sink}: {queued} waiting, {dead} dead letters");
    }
    Ok(())
}

pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub fn demo(args: DemoArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let matrix = load_matrix(None)?;
    let analyzer = Arc::new(build_analyzer(&[], true, matrix, config)?);
    let records = demo_records(analyzer.correlator().correlations(), args.events);

    let cluster = MockCluster::new(1).context("starting the in-process Kafka cluster")?;
    for (topic, partitions) in [
        (CLOUDTRAIL_TOPIC, 16),
        (AZURE_TOPIC, 4),
        (GCP_TOPIC, 4),
        (DEAD_LETTER_TOPIC, 1),
    ] {
        cluster
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("creating topic {topic}"))?;
    }
    let brokers = cluster.bootstrap_servers();
    eprintln!(
        "demo: in-process Kafka cluster at {brokers}; producing {} records to {CLOUDTRAIL_TOPIC}, {AZURE_TOPIC} and {GCP_TOPIC}",
        records.len()
    );
    let kafka = KafkaConfig {
        brokers: brokers.clone(),
        group_id: "seamwatch-demo".into(),
        topics: vec![
            TopicConfig {
                name: CLOUDTRAIL_TOPIC.into(),
                format: crate::event::FormatHint::CloudTrail,
            },
            TopicConfig {
                name: AZURE_TOPIC.into(),
                format: crate::event::FormatHint::Azure,
            },
            TopicConfig {
                name: GCP_TOPIC.into(),
                format: crate::event::FormatHint::Gcp,
            },
        ],
        dead_letter_topic: DEAD_LETTER_TOPIC.into(),
        commit_interval: "1s".into(),
        // The producer runs alongside: fetch what is there without waiting.
        properties: [("fetch.wait.max.ms".to_owned(), "10".to_owned())]
            .into_iter()
            .collect(),
        ..KafkaConfig::default()
    };
    let client = kafka.client_config(|_| None)?;
    let outbox_path = args
        .outbox
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("seamwatch-demo-outbox.redb"));
    let _ = std::fs::remove_file(&outbox_path);
    let store = Arc::new(
        Outbox::open(&outbox_path, &config.alerts, resolvable_rules(&analyzer))
            .map_err(|e| anyhow::anyhow!(e))?,
    );
    let dispatcher = start_dispatcher(&store, &config.alerts, Some(&client))?;
    let printer = Arc::new(Printer {
        quiet: args.quiet,
        by_rule: Default::default(),
    });
    let hub = Arc::new(FindingsHub::new(config.admin.recent));
    let sink: Arc<dyn FindingSink> = Arc::new(Tee(vec![
        store.clone(),
        Arc::new(HubSink::new(hub.clone())),
        printer.clone(),
    ]));
    let metrics = Arc::new(Metrics::default());
    let stop = Arc::new(AtomicBool::new(false));
    let total = records.len() as u64;
    let rt = runtime()?;
    let admin = if args.serve {
        let state = AdminState {
            hub,
            metrics: metrics.clone(),
            analyzer: Some(analyzer.clone()),
            outbox: Some(store.clone()),
            sinks: dispatcher.stats.clone(),
            token: config.admin.token()?,
            silent_after: config.admin.silent_after,
        };
        Some(start_admin(&rt, config.admin.listen, state)?)
    } else {
        None
    };

    // Produce while consuming: the mock keeps only a few MiB per partition.
    let producer: BaseProducer = {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &brokers).set("linger.ms", "5");
        c.create().context("creating the demo producer")?
    };
    let started = Instant::now();
    // The in-process cluster keeps only a few MiB per partition: stay at
    // most this many messages ahead of the consumer.
    const AHEAD: u64 = 20_000;
    let produced_metrics = metrics.clone();
    let producing = std::thread::spawn(move || -> anyhow::Result<()> {
        for (i, record) in records.iter().enumerate() {
            while i as u64 > produced_metrics.messages.load(Ordering::Relaxed) + AHEAD {
                producer.poll(Duration::from_millis(5));
            }
            let mut r = Some(
                BaseRecord::to(record.topic)
                    .key(record.key.as_bytes())
                    .payload(record.payload.as_slice()),
            );
            while let Some(next) = r.take() {
                if let Err((e, back)) = producer.send(next) {
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        producer.poll(Duration::from_millis(10));
                        r = Some(back);
                    } else {
                        return Err(e).context("producing demo traffic");
                    }
                }
            }
            producer.poll(Duration::ZERO);
        }
        producer
            .flush(Duration::from_secs(60))
            .context("flushing demo traffic")?;
        Ok(())
    });
    let watch_metrics = metrics.clone();
    let watch_stop = stop.clone();
    // Measures from the first message consumed (after the group join) to the last.
    let watcher = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut first = None;
        loop {
            let seen = watch_metrics.messages.load(Ordering::Relaxed);
            if seen > 0 && first.is_none() {
                first = Some((Instant::now(), seen));
            }
            if seen >= total || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        watch_stop.store(true, Ordering::Relaxed);
        first.map(|(at, seen)| {
            (watch_metrics.messages.load(Ordering::Relaxed) - seen) as f64
                / at.elapsed().as_secs_f64().max(1e-3)
        })
    });
    let summary = rt.block_on(run::run(
        &kafka,
        client,
        config.limits,
        analyzer.clone(),
        sink,
        metrics.clone(),
        stop,
    ))?;
    producing
        .join()
        .map_err(|_| anyhow::anyhow!("the demo producer panicked"))??;
    let steady = watcher.join().ok().flatten();
    let elapsed = started.elapsed();

    eprintln!();
    eprintln!(
        "demo: {} messages consumed in {:.1} s ({:.0} events/s): {} events, {} rejected and dead-lettered ({} to {DEAD_LETTER_TOPIC}), {} findings",
        summary.messages,
        elapsed.as_secs_f64(),
        summary.events as f64 / elapsed.as_secs_f64(),
        summary.events,
        summary.errors,
        summary.dead_lettered,
        summary.findings,
    );
    if let Some(rate) = steady {
        eprintln!(
            "  {rate:.0} messages/s from the first message consumed to the last (the group join takes ~3 s on the in-process cluster)"
        );
    }
    for entry in metrics.errors.iter() {
        eprintln!("  rejected: {} {}", entry.value(), entry.key());
    }
    eprintln!(
        "  commit lag after the final commit: {} messages",
        summary.commit_lag
    );
    let batches = metrics.committed_batches.load(Ordering::Relaxed).max(1);
    eprintln!(
        "  {} outbox syncs (then offset stores), {:.0} messages each on average",
        batches,
        summary.messages as f64 / batches as f64
    );
    let append = metrics.append_latency();
    eprintln!(
        "  Kafka append → finding: p50 {} ms, p99 {} ms, max {} ms",
        append.p50, append.p99, append.max
    );
    let by_rule = printer.by_rule.lock().unwrap_or_else(|e| e.into_inner());
    for (rule, n) in by_rule.iter() {
        eprintln!("  {n:>6}  {rule}");
    }
    stop_delivery(dispatcher, Duration::from_secs(5), &store)?;
    if let Some(admin) = admin {
        eprintln!("demo: done; the web view stays up until Ctrl-C");
        rt.block_on(wait_for_signal());
        admin.send_replace(true);
    }
    Ok(ExitCode::SUCCESS)
}
