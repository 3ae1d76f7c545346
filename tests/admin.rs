//! The admin server and `seamwatch tail`, over real HTTP on loopback: the
//! SSE feed delivers findings in order with filters applied and resumes
//! with `Last-Event-ID`; the token is required beyond loopback; `/metrics`
//! parses as Prometheus text and moves as events flow through the Kafka
//! pipeline (librdkafka's in-process cluster), and `/readyz` follows the
//! assignment; `tail` prints the expected lines and ends quietly on a
//! closed pipe; the web view, in headless Chromium, shows a finding and
//! hides it under a filter.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use assert_cmd::prelude::*;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use seamwatch::admin::{AdminConfig, AdminError, AdminState, FindingsHub, HubSink, Published};
use seamwatch::analyze::Analyzer;
use seamwatch::correlate::CorrelationConfig;
use seamwatch::detect::loader::load_builtin_report;
use seamwatch::detect::{Finding, Severity};
use seamwatch::event::FormatHint;
use seamwatch::matrix::Matrix;
use seamwatch::pipeline::config::TopicConfig;
use seamwatch::pipeline::outbox::{FindingSink, Tee};
use seamwatch::pipeline::{JsonlOutbox, KafkaConfig, Metrics};
use seamwatch::synth::{Generator, SynthConfig};

mod common;
use common::wait_for;

fn finding(n: usize, severity: Severity, rule: &str) -> Finding {
    common::finding(
        &format!("finding-{n:04}"),
        n,
        severity,
        rule,
        "platform-security",
    )
}

/// An admin server on a free loopback port, on its own runtime.
struct Server {
    addr: SocketAddr,
    hub: Arc<FindingsHub>,
    runtime: tokio::runtime::Runtime,
}

fn start(state: AdminState, addr: SocketAddr) -> Server {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let hub = state.hub.clone();
    let (addr, _) = runtime
        .block_on(seamwatch::admin::serve(
            addr,
            Arc::new(state),
            std::future::pending(),
        ))
        .unwrap();
    Server { addr, hub, runtime }
}

fn state(hub: Arc<FindingsHub>, metrics: Arc<Metrics>) -> AdminState {
    AdminState {
        hub,
        metrics,
        analyzer: None,
        outbox: None,
        sinks: Vec::new(),
        token: None,
        silent_after: Duration::from_secs(900),
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn get(url: &str) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let r = reqwest::get(url).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

#[test]
fn sse_delivers_findings_in_order_with_filters_and_resumes() {
    let server = start(
        state(Arc::new(FindingsHub::new(100)), Arc::default()),
        loopback(),
    );
    let url = format!(
        "http://{}/findings/stream?severity=high&rule=aws.identity.*",
        server.addr
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Published>();
    let reader = server.runtime.spawn(async move {
        let response = reqwest::get(url).await.unwrap();
        assert!(response.status().is_success());
        let mut events = response.bytes_stream().eventsource();
        while let Some(Ok(e)) = events.next().await {
            if e.event == "finding" {
                let p: Published = serde_json::from_str(&e.data).unwrap();
                assert_eq!(e.id, p.position());
                if tx.send(p).is_err() {
                    break;
                }
            }
        }
    });
    // Once the stream has subscribed (a loaded host may take seconds to
    // get there), publish a mix.
    wait_for(Duration::from_secs(30), "the SSE subscriber", || {
        server.hub.subscribers() > 0
    });
    let severities = [
        Severity::High,
        Severity::Low,
        Severity::Critical,
        Severity::Medium,
    ];
    let all: Vec<Finding> = (0..40)
        .map(|n| {
            let rule = if n % 5 == 0 {
                "azure.identity.x"
            } else {
                "aws.identity.admin_policy_attached"
            };
            finding(n, severities[n % 4], rule)
        })
        .collect();
    for chunk in all.chunks(7) {
        server.hub.publish(chunk.to_vec());
    }
    let expected: Vec<String> = all
        .iter()
        .filter(|f| f.severity >= Severity::High && f.rule_id.starts_with("aws.identity."))
        .map(|f| f.id.clone())
        .collect();
    assert!(expected.len() >= 10 && expected.len() < 40);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < expected.len() && Instant::now() < deadline {
        if let Ok(p) = rx.try_recv() {
            got.push(p);
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let ids: Vec<String> = got.iter().map(|p| p.finding.id.clone()).collect();
    assert_eq!(ids, expected);
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    reader.abort();

    // Resuming after the fifth finding sent gives the rest, from the ring.
    let resume_from = got[4].position();
    let rest = server.runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(format!(
                "http://{}/findings/stream?severity=high&rule=aws.identity.*",
                server.addr
            ))
            .header("Last-Event-ID", resume_from)
            .send()
            .await
            .unwrap();
        let mut events = response.bytes_stream().eventsource();
        let mut out = Vec::new();
        while out.len() < expected.len() - 5 {
            let e = tokio::time::timeout(Duration::from_secs(30), events.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            out.push(
                serde_json::from_str::<Published>(&e.data)
                    .unwrap()
                    .finding
                    .id,
            );
        }
        out
    });
    assert_eq!(rest, expected[5..]);

    // `/findings` pages the same way; a bad filter is a 400 that says why.
    let (status, body) = get(&format!(
        "http://{}/findings?severity=critical&limit=3",
        server.addr
    ));
    assert_eq!(status, 200);
    let recent: Vec<Published> = serde_json::from_str(&body).unwrap();
    assert_eq!(recent.len(), 3);
    assert!(
        recent
            .iter()
            .all(|p| p.finding.severity == Severity::Critical)
    );
    assert!(recent.windows(2).all(|w| w[0].seq < w[1].seq));
    let (status, body) = get(&format!("http://{}/findings?severity=urgent", server.addr));
    assert_eq!(status, 400);
    assert!(body.contains("unknown severity"), "{body}");
    // Paging forward from a position: the oldest beyond it, no gaps.
    let (_, body) = get(&format!(
        "http://{}/findings?after={}&limit=2",
        server.addr,
        got[0].position()
    ));
    let page: Vec<Published> = serde_json::from_str(&body).unwrap();
    assert_eq!(
        page.iter().map(|p| p.seq).collect::<Vec<_>>(),
        [got[0].seq + 1, got[0].seq + 2]
    );
    // A position from another feed (a restarted server) starts over.
    let foreign = format!("{:08x}-{}", got[0].feed.wrapping_add(1), 1_000_000);
    let (_, body) = get(&format!(
        "http://{}/findings?after={foreign}&limit=1",
        server.addr
    ));
    let page: Vec<Published> = serde_json::from_str(&body).unwrap();
    assert_eq!(page[0].seq, 1);
    assert_eq!(
        get(&format!("http://{}/findings?after=nonsense", server.addr)).0,
        400
    );

    // Without a token, only loopback host names (DNS rebinding).
    let status = server.runtime.block_on(async {
        reqwest::Client::new()
            .get(format!("http://{}/findings", server.addr))
            .header("Host", "attacker.example")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 403);
    let port = server.addr.port();
    assert_eq!(get(&format!("http://localhost:{port}/findings")).0, 200);
}

#[test]
fn the_token_is_required_beyond_loopback() {
    let exposed = AdminConfig {
        listen: SocketAddr::from(([0, 0, 0, 0], 0)),
        ..AdminConfig::default()
    };
    assert!(matches!(exposed.token(), Err(AdminError::TokenRequired(_))));
    assert!(AdminConfig::default().token().unwrap().is_none());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "s3cret-token\n").unwrap();
    let config = AdminConfig {
        token_file: Some(file),
        ..exposed
    };
    let token = config.token().unwrap().unwrap();
    assert_eq!(format!("{token:?}"), "[redacted]");
    let mut s = state(Arc::new(FindingsHub::new(10)), Arc::default());
    s.token = Some(token);
    let server = start(s, config.listen);
    let port = server.addr.port();
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(get(&format!("{base}/healthz")).0, 200);
    // Probes need no token; not ready here (nothing assigned).
    assert_eq!(get(&format!("{base}/readyz")).0, 503);
    for path in [
        "/",
        "/metrics",
        "/findings",
        "/findings/stream",
        "/api/overview",
    ] {
        assert_eq!(
            get(&format!("{base}{path}")).0,
            401,
            "{path} without a token"
        );
        assert_eq!(
            get(&format!("{base}{path}?access_token=wrong")).0,
            401,
            "{path} with a wrong token"
        );
    }
    let status = server.runtime.block_on(async {
        reqwest::Client::new()
            .get(format!("{base}/metrics"))
            .bearer_auth("s3cret-token")
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    assert_eq!(
        get(&format!("{base}/findings?access_token=s3cret-token")).0,
        200
    );
}

fn metric(samples: &prometheus_parse::Scrape, name: &str) -> f64 {
    samples
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let (status, text) = get(&format!("http://{addr}/metrics"));
    assert_eq!(status, 200);
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text")
}

fn produce(brokers: &str, topic: &str, generator: &mut Generator, n: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for _ in 0..n {
        let e = generator.next_event();
        producer
            .send(
                BaseRecord::to(topic)
                    .key(e.account.as_bytes())
                    .payload(e.json.as_bytes()),
            )
            .unwrap();
    }
    producer
        .send(BaseRecord::<[u8], [u8]>::to(topic).payload(b"{\"truncated\":"))
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
}

#[test]
fn metrics_parse_and_move_as_events_flow_and_readiness_follows_the_assignment() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("ct", 2, 1).unwrap();
    cluster.create_topic("dlq", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let analyzer = Arc::new(
        Analyzer::build(
            load_builtin_report().unwrap(),
            Arc::new(Matrix::builtin()),
            CorrelationConfig::default(),
        )
        .0,
    );
    let metrics = Arc::new(Metrics::default());
    let hub = Arc::new(FindingsHub::new(1000));
    let mut s = state(hub.clone(), metrics.clone());
    s.analyzer = Some(analyzer.clone());
    let server = start(s, loopback());
    assert_eq!(get(&format!("http://{}/readyz", server.addr)).0, 503);

    let dir = tempfile::tempdir().unwrap();
    let sink: Arc<dyn FindingSink> = Arc::new(Tee(vec![
        Arc::new(JsonlOutbox::open(&dir.path().join("outbox.jsonl")).unwrap()),
        Arc::new(HubSink::new(hub.clone())),
    ]));
    let kafka = KafkaConfig {
        brokers: brokers.clone(),
        group_id: "admin-metrics".into(),
        topics: vec![TopicConfig {
            name: "ct".into(),
            format: FormatHint::CloudTrail,
        }],
        dead_letter_topic: "dlq".into(),
        commit_interval: "200ms".into(),
        workers: 2,
        ..KafkaConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let pipeline = {
        let (metrics, stop, analyzer) = (metrics.clone(), stop.clone(), analyzer.clone());
        std::thread::spawn(move || {
            common::pipeline::run_pipeline(&kafka, analyzer, sink, metrics, stop).unwrap()
        })
    };
    let mut generator = Generator::new(SynthConfig {
        security_share: 0.3,
        ..SynthConfig::default()
    });
    produce(&brokers, "ct", &mut generator, 300);
    wait_for(Duration::from_secs(60), "the first batch", || {
        metrics.messages.load(Ordering::Relaxed) >= 301
    });
    wait_for(Duration::from_secs(30), "an assignment", || {
        get(&format!("http://{}/readyz", server.addr)).0 == 200
    });
    let before = scrape(server.addr);
    assert_eq!(metric(&before, "seamwatch_events_total"), 300.0);
    assert_eq!(metric(&before, "seamwatch_parse_errors_total"), 1.0);
    assert_eq!(metric(&before, "seamwatch_assigned_partitions"), 2.0);
    let findings_before = metric(&before, "seamwatch_findings_by_rule_total");
    assert!(findings_before > 0.0);
    assert!(
        before
            .samples
            .iter()
            .any(|s| s.metric == "seamwatch_findings_by_rule_total"
                && s.labels.get("severity").is_some()
                && s.labels.get("rule").is_some())
    );
    assert!(
        before
            .samples
            .iter()
            .any(|s| s.metric == "seamwatch_append_to_finding_ms"),
        "latency summary"
    );

    produce(&brokers, "ct", &mut generator, 200);
    wait_for(Duration::from_secs(60), "the second batch", || {
        metrics.messages.load(Ordering::Relaxed) >= 502
    });
    let after = scrape(server.addr);
    assert_eq!(metric(&after, "seamwatch_events_total"), 500.0);
    assert_eq!(metric(&after, "seamwatch_messages_total"), 502.0);
    assert_eq!(metric(&after, "seamwatch_parse_errors_total"), 2.0);
    assert!(metric(&after, "seamwatch_findings_by_rule_total") > findings_before);
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric == "seamwatch_correlation_keys"),
        "correlation state"
    );

    let (status, overview) = get(&format!("http://{}/api/overview", server.addr));
    assert_eq!(status, 200);
    let overview: serde_json::Value = serde_json::from_str(&overview).unwrap();
    assert_eq!(overview["health"]["ready"], true);
    assert_eq!(overview["events"], 500);
    assert!(overview["last_hour"]["total"].as_u64().unwrap() > 0);

    stop.store(true, Ordering::Relaxed);
    pipeline.join().unwrap();
}

fn tail(addr: SocketAddr, extra: &[&str]) -> std::process::Child {
    Command::cargo_bin("seamwatch")
        .unwrap()
        .arg("tail")
        .arg("--url")
        .arg(format!("http://{addr}"))
        .args(extra)
        .env_remove("SEAMWATCH_ADMIN_TOKEN")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn tail_prints_the_findings_it_is_asked_for_and_ends_on_a_closed_pipe() {
    let server = start(
        state(Arc::new(FindingsHub::new(100)), Arc::default()),
        loopback(),
    );
    server.hub.publish([
        finding(1, Severity::High, "aws.identity.admin_policy_attached"),
        finding(2, Severity::Low, "aws.identity.console_login"),
    ]);
    let mut child = tail(server.addr, &["--severity", ">=high"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.split_whitespace().collect::<Vec<_>>()
            == [
                "2026-11-28",
                "10:00:00",
                "HIGH",
                "aws.identity.admin_policy_attached",
                "user-1",
                "arn:aws:iam::111122223333:user/target-1",
                "111122223333",
                "platform-security"
            ],
        "{first:?}"
    );
    // Published while it follows: only the high and critical ones show.
    std::thread::sleep(Duration::from_millis(300));
    server.hub.publish([
        finding(3, Severity::Medium, "aws.network.x"),
        finding(4, Severity::Critical, "aws.logging.cloudtrail_stopped"),
    ]);
    let next = lines.next().unwrap().unwrap();
    assert!(
        next.contains("CRITICAL")
            && next.contains("aws.logging.cloudtrail_stopped")
            && next.contains("user-4"),
        "{next:?}"
    );
    // The reader goes away (`| head -2`): the next finding ends tail, status 0.
    drop(lines);
    server
        .hub
        .publish([finding(5, Severity::High, "aws.identity.y")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 6;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "tail did not end on a closed pipe"
        );
        n += 1;
        server
            .hub
            .publish([finding(n, Severity::High, "aws.identity.z")]);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");

    // --json --no-follow: the recent ones as JSON, then exit.
    let output = tail(
        server.addr,
        &["--json", "--no-follow", "--rule", "aws.logging.*"],
    )
    .wait_with_output()
    .unwrap();
    assert!(output.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0]["finding"]["rule_id"],
        "aws.logging.cloudtrail_stopped"
    );
}

#[test]
fn tail_reconnects_and_says_so() {
    // Nothing listens yet: tail says it reconnects, then gets the findings
    // once a server appears on that port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let output = tail(addr, &["--no-follow"]).wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is `seamwatch run` running"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let hub = Arc::new(FindingsHub::new(100));
    let server = start(state(hub.clone(), Arc::default()), addr);
    let mut child = tail(server.addr, &[]);
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    // Once tail follows the stream (not before, or it finds no server and
    // gives up rather than reconnects), the server goes away.
    wait_for(Duration::from_secs(30), "tail to follow", || {
        hub.subscribers() > 0
    });
    drop(server);
    let note = stderr.next().unwrap().unwrap();
    assert!(note.contains("reconnecting"), "{note}");
    let server = start(state(hub.clone(), Arc::default()), addr);
    std::thread::sleep(Duration::from_millis(200));
    server
        .hub
        .publish([finding(9, Severity::High, "aws.identity.after_reconnect")]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        assert!(Instant::now() < deadline);
        let line = stdout.next().unwrap().unwrap();
        if line.contains("after_reconnect") {
            break line;
        }
    };
    assert!(line.contains("user-9"));
    child.kill().unwrap();
    let _ = child.wait();
}

fn notice(action: seamwatch::alert::Action, f: Finding) -> Vec<u8> {
    serde_json::to_vec(&seamwatch::alert::Notice::Alert(
        seamwatch::alert::AlertNotice {
            action,
            alert_id: f.id.clone(),
            finding_id: f.id.clone(),
            occurrences: 1,
            first_seen: f.event_time,
            last_seen: f.event_time,
            closed_by: None,
            finding: f,
        },
    ))
    .unwrap()
}

#[test]
fn tail_reads_the_alerts_topic_directly() {
    use seamwatch::alert::Action;
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("alerts", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let send = |key: &str, payload: Vec<u8>| {
        producer
            .send(BaseRecord::to("alerts").key(key).payload(&payload))
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    };
    send(
        "a1",
        notice(
            Action::Create,
            finding(1, Severity::High, "aws.identity.admin_policy_attached"),
        ),
    );
    send(
        "a2",
        notice(
            Action::Create,
            finding(2, Severity::Low, "aws.identity.quiet"),
        ),
    );
    send("junk", b"not a notice".to_vec());
    let run = |extra: &[&str]| {
        Command::cargo_bin("seamwatch")
            .unwrap()
            .args(["tail", "--kafka-topic", "alerts", "--brokers", &brokers])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let output = run(&["--no-follow", "--severity", "high"])
        .wait_with_output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(lines[0].contains("aws.identity.admin_policy_attached") && lines[0].contains("user-1"));

    // Following: a close produced later shows as CLOSED.
    // Tail follows from the end it finds on start, and says nothing when
    // it gets there: closes go on being produced until one shows (a loaded
    // host may take seconds to start it).
    let mut child = run(&["--recent", "0"]);
    let out = BufReader::new(child.stdout.take().unwrap());
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 2;
    let line = loop {
        assert!(Instant::now() < deadline, "tail printed no close");
        n += 1;
        send(
            "a1",
            notice(
                Action::Close,
                finding(n, Severity::Info, "aws.logging.cloudtrail_started"),
            ),
        );
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(500)) {
            break line;
        }
    };
    let shown: usize = line
        .strip_prefix("CLOSED finding-")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not a close line: {line}"));
    assert!((3..=n).contains(&shown), "{line}");
    child.kill().unwrap();
    let _ = child.wait();
}
