//! Alert delivery throughput and latency: N distinct findings go into the
//! outbox in pipeline-sized batches (append + fsynced sync), while the
//! dispatcher delivers them to a fast webhook receiver on loopback (axum,
//! answering 200 at once). Prints findings/s into the outbox, notices/s
//! delivered, and the finding → delivered latency (queued in the outbox →
//! receiver answered) percentiles from the dispatcher's hdrhistogram.
//!
//! `cargo bench --bench deliver` (N = 20 000; `SEAMWATCH_BENCH_FINDINGS`
//! changes it; `SEAMWATCH_BENCH_FORMAT` = json | ocsf).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use seamwatch::alert::config::{AlertsConfig, FormatName, SinkConfig};
use seamwatch::alert::deliver::{Destination, Dispatcher, Policy};
use seamwatch::alert::store::Outbox;
use seamwatch::detect::{Evidence, Finding, FindingKind, FindingPrincipal, Severity};
use seamwatch::event::{Cloud, PrincipalKind};
use seamwatch::matrix::{Domain, Side, Tier};

fn finding(i: usize) -> Finding {
    Finding {
        id: format!("{i:032x}"),
        kind: FindingKind::Rule,
        rule_id: "aws.network.sg_ingress_open_to_internet".into(),
        title: "Security group opened to the internet".into(),
        severity: Severity::High,
        rule_severity: Severity::High,
        cloud: Cloud::Aws,
        account: Some(format!("{:012}", 100_000_000_000u64 + (i % 50) as u64)),
        region: Some("eu-west-1".into()),
        service: "ec2.amazonaws.com".into(),
        operation: "AuthorizeSecurityGroupIngress".into(),
        principal: FindingPrincipal {
            kind: PrincipalKind::AssumedRole,
            id: Some(format!(
                "arn:aws:sts::123456789012:assumed-role/dev/user{i}"
            )),
            name: Some(format!("user{i}")),
        },
        resources: vec![format!("sg-{i:017x}")],
        domain: Some(Domain::Network),
        responsibility: Some(Side::Customer),
        owner_team: Some("platform".into()),
        data_tier: Some(Tier::Medium),
        event_time: Some(chrono::Utc::now()),
        evidence: vec![Evidence {
            event_id: format!("4a1c2b3d-0000-4000-8000-{i:012x}"),
            source: format!("kafka:cloudtrail/3@{i}"),
        }],
        attack: ["T1562.007".to_owned()].into(),
        compliance: ["CIS AWS 5.2".to_owned()].into(),
        remediation: Some("Remove the 0.0.0.0/0 rule.".into()),
        references: Default::default(),
        approved_paths: vec![],
        detail: None,
        author: None,
        correlation: None,
        resolves: vec![],
    }
}

fn main() {
    let n: usize = std::env::var("SEAMWATCH_BENCH_FINDINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let format = match std::env::var("SEAMWATCH_BENCH_FORMAT").as_deref() {
        Ok("ocsf") => FormatName::Ocsf,
        _ => FormatName::Json,
    };
    let received = Arc::new(AtomicU64::new(0));
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = server
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counter = received.clone();
    server.spawn(async move {
        let app = Router::new().route(
            "/",
            post(move |_body: axum::body::Bytes| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    "ok"
                }
            }),
        );
        axum::serve(listener, app).await.expect("serve");
    });

    let (throughput, _) = run(n, None, format, addr, &received);
    println!("burst: {throughput}");
    let rate: f64 = std::env::var("SEAMWATCH_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000.0);
    received.store(0, Ordering::Relaxed);
    let (paced, latency) = run(n / 2, Some(rate), format, addr, &received);
    println!("paced at {rate:.0} findings/s in batches of 100: {paced}");
    println!("finding → delivered at that rate: {latency}");
}

/// Puts `n` findings into a fresh outbox (as fast as it goes, or paced at
/// `rate` per second) while the dispatcher delivers; returns the
/// throughput line and the latency line.
fn run(
    n: usize,
    rate: Option<f64>,
    format: FormatName,
    addr: std::net::SocketAddr,
    received: &AtomicU64,
) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink: SinkConfig = toml::from_str(&format!(
        "name = \"bench\"\ntype = \"webhook\"\nurl = \"http://{addr}/\"\nconcurrency = 16\n"
    ))
    .expect("sink");
    let sink = SinkConfig { format, ..sink };
    let config = AlertsConfig {
        sinks: vec![sink.clone()],
        ..AlertsConfig::default()
    };
    let outbox = Arc::new(
        Outbox::open(&dir.path().join("outbox.redb"), &config, Default::default()).expect("outbox"),
    );
    let dest = Destination::from_config(&sink, 0, None).expect("destination");
    let dispatcher =
        Dispatcher::start(outbox.clone(), vec![dest], vec![Policy::of(&config, &sink)])
            .expect("dispatcher");

    let findings: Vec<Finding> = (0..n).map(finding).collect();
    let batch = if rate.is_some() { 100 } else { 500 };
    let start = Instant::now();
    for (i, chunk) in findings.chunks(batch).enumerate() {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64((i * batch) as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        outbox.append(chunk);
        outbox.sync().expect("sync");
    }
    let into_outbox = start.elapsed();
    while (received.load(Ordering::Relaxed) as usize) < n
        && start.elapsed() < Duration::from_secs(300)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let delivered_in = start.elapsed();
    let stats = dispatcher.stats[0].clone();
    dispatcher.shutdown(Duration::from_secs(5));
    let h = stats.latency_ms.lock().expect("histogram").clone();
    (
        format!(
            "{n} findings ({format:?}): into the outbox at {:.0} findings/s ({} fsynced batches of {batch}); {} delivered in {:.2} s = {:.0} notices/s",
            n as f64 / into_outbox.as_secs_f64(),
            n.div_ceil(batch),
            received.load(Ordering::Relaxed),
            delivered_in.as_secs_f64(),
            n as f64 / delivered_in.as_secs_f64()
        ),
        format!(
            "p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms, max {} ms ({} samples)",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.len()
        ),
    )
}
