//! Scale-out on Kafka itself, with real processes against a real, separate
//! Kafka-protocol broker: three `seamwatch run` processes in one consumer
//! group split the partitions; one is killed (SIGKILL) mid-stream; the other
//! two take its partitions, rebuild the open correlation windows by
//! re-reading the lookback from the log (warm-up), and go on; the killed one
//! comes back on its own outbox (as a StatefulSet pod would) and delivers
//! what it had made durable. Every expected finding reaches the webhook,
//! correlations included, and a finding delivered twice carries the same id.
//!
//! Records are keyed by account, so everything one correlation joins lives
//! on one partition. The broker comes from `SEAMWATCH_TEST_BROKERS` (`.ci/run`
//! starts one; `SEAMWATCH_REQUIRE_BROKER=1` makes its absence a failure).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::broker;
use common::receiver::{Receiver, Reply};
use seamwatch::analyze::Scratch;
use seamwatch::correlate::Stream;
use seamwatch::detect::finding::SourceRef;
use seamwatch::detect::{Finding, FindingKind};
use seamwatch::event::Decoder;
use seamwatch::pipeline::demo::demo_records;

struct Member {
    config: PathBuf,
    admin: u16,
    child: Option<Child>,
}

impl Member {
    fn new(dir: &Path, i: usize, run_id: u128, hook: &str) -> Member {
        let admin = common::free_port();
        let config = dir.join(format!("member-{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "[kafka]\ngroup_id = \"scale-{run_id}\"\ndead_letter_topic = \"\"\ncommit_interval = \"300ms\"\nbatch = 50\nidle_advance = \"2s\"\n\
                 [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n\
                 [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
                 [alerts]\noutbox = {outbox:?}\n[[alerts.sinks]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{hook}\"\n",
                outbox = dir.join(format!("outbox-{i}.redb")),
            ),
        )
        .unwrap();
        Member {
            config,
            admin,
            child: None,
        }
    }

    fn start(&mut self, brokers: &str, topics: &str) {
        let child = Command::new(env!("CARGO_BIN_EXE_seamwatch"))
            .arg("--config")
            .arg(&self.config)
            .args(["--log-format", "json", "run"])
            .env("SEAMWATCH_KAFKA_BROKERS", brokers)
            .env("SEAMWATCH_KAFKA_TOPICS", topics)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL: no drain, no commit, no goodbye
            child.wait().unwrap();
        }
    }

    fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        // A graceful stop drains and commits; it must not take forever.
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Partitions assigned now, from its /metrics (None: not answering).
    fn assigned(&self) -> Option<u64> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.admin)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        text.lines()
            .find(|l| l.starts_with("seamwatch_assigned_partitions "))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Finding ids of the delivered alert notices, with how often each came.
fn delivered(receiver: &Receiver) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for hit in receiver.hits() {
        let notice = hit.json();
        if notice["type"] == "alert" && notice["action"] != "close" {
            let id = notice["finding_id"].as_str().unwrap().to_owned();
            // The idempotency key is the finding id: a receiver dedups on it.
            assert_eq!(hit.key(), id);
            *ids.entry(id).or_default() += 1;
        }
    }
    ids
}

#[test]
fn three_processes_split_the_partitions_and_survive_a_kill_9() {
    let Some(brokers) = broker::brokers("scale-out test") else {
        return;
    };
    let analyzer = common::builtin_analyzer();
    let records = demo_records(analyzer.correlator().correlations(), 3_000);

    // What must arrive: the corpus's findings, each account's records in
    // order on a stream of its own (what a partition keyed by account sees).
    let decoder = Decoder::default();
    let mut streams: BTreeMap<String, Stream> = BTreeMap::new();
    let mut scratch = Scratch::default();
    let mut found: Vec<Finding> = Vec::new();
    for record in &records {
        let stream = streams.entry(record.key.clone()).or_default();
        decoder.decode(&record.payload, &mut |d| {
            if let Ok(event) = d.result {
                analyzer.process(&event, SourceRef::Unknown, stream, &mut scratch, &mut found);
            }
        });
    }
    // What only the end of the input releases (held for the allowed
    // lateness, which live waits out in wall-clock time) may come or not.
    let mut at_end: Vec<Finding> = Vec::new();
    for stream in streams.values_mut() {
        analyzer.finish(stream, &mut at_end);
    }
    let is_expected = |f: &Finding| {
        f.resolves.is_empty()
            && f.kind != FindingKind::UnmappedService
            // Silence and absence fire on time passing, not on records.
            && !matches!(
                f.rule_id.as_str(),
                "correlation.source_went_silent"
                    | "aws.correlation.cloudtrail_not_restarted"
                    | "azure.correlation.policy_assignment_not_restored"
            )
    };
    let expected: BTreeSet<String> = found
        .iter()
        .filter(|f| is_expected(f))
        .map(|f| f.id.clone())
        .collect();
    let correlations = found
        .iter()
        .filter(|f| is_expected(f) && f.kind == FindingKind::Correlation)
        .count();
    assert!(
        expected.len() > 50 && correlations >= 10,
        "{} / {correlations}",
        expected.len()
    );

    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let topic_of = |t: &str| format!("scale-{run_id}-{t}");
    broker::create_topics(
        &brokers,
        &[
            (topic_of("cloudtrail"), 6),
            (topic_of("azure-activity"), 3),
            (topic_of("gcp-audit"), 3),
        ],
    );
    let total_partitions = 12;
    let topics = format!(
        "{}:cloudtrail,{}:azure,{}:gcp",
        topic_of("cloudtrail"),
        topic_of("azure-activity"),
        topic_of("gcp-audit")
    );
    let receiver = Receiver::always(Reply::Status(200));
    let hook = receiver.url("/hook");
    let dir = tempfile::tempdir().unwrap();
    let mut members: Vec<Member> = (0..3)
        .map(|i| Member::new(dir.path(), i, run_id, &hook))
        .collect();
    for member in &mut members {
        member.start(&brokers, &topics);
    }
    // The group forms and splits the partitions between the three.
    common::wait_for(
        Duration::from_secs(90),
        "three members sharing the partitions",
        || {
            let counts: Vec<Option<u64>> = members.iter().map(Member::assigned).collect();
            counts.iter().all(|c| c.is_some_and(|n| n > 0))
                && counts.iter().flatten().sum::<u64>() == total_partitions
        },
    );

    // The first half, then the second member is killed mid-stream.
    let half = records.len() / 2;
    broker::produce(&brokers, &records[..half], &topic_of);
    common::wait_for(
        Duration::from_secs(60),
        "findings from the first half",
        || delivered(&receiver).len() >= expected.len() / 4,
    );
    std::thread::sleep(Duration::from_millis(800)); // a commit or two
    members[1].kill();
    common::wait_for(
        Duration::from_secs(90),
        "the survivors to take every partition",
        || {
            members[0].assigned().unwrap_or(0) + members[2].assigned().unwrap_or(0)
                == total_partitions
        },
    );

    // The second half goes to the two survivors; then the killed member
    // comes back on its own outbox and delivers what it had made durable.
    broker::produce(&brokers, &records[half..], &topic_of);
    members[1].start(&brokers, &topics);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut missing: Vec<&Finding> = Vec::new();
    while Instant::now() < deadline {
        let got = delivered(&receiver);
        missing = found
            .iter()
            .filter(|f| expected.contains(&f.id) && !got.contains_key(&f.id))
            .collect();
        if missing.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        missing.is_empty(),
        "{} of {} expected findings not delivered: {:?}",
        missing.len(),
        expected.len(),
        missing
            .iter()
            .take(8)
            .map(|f| (&f.rule_id, f.event_time, &f.detail))
            .collect::<Vec<_>>()
    );
    for member in &mut members {
        assert!(member.terminate(), "a member did not stop cleanly");
    }

    let got = delivered(&receiver);
    // Nothing but the expected ids (and the time-driven ones left out above):
    // a correlation rebuilt on another member has the same id, not a new one.
    let time_driven: BTreeSet<String> = found
        .iter()
        .filter(|f| !is_expected(f))
        .chain(&at_end)
        .map(|f| f.id.clone())
        .collect();
    let unexpected: Vec<&String> = got
        .keys()
        .filter(|id| !expected.contains(*id) && !time_driven.contains(*id))
        .collect();
    let unexpected_rules: Vec<String> = receiver
        .hits()
        .iter()
        .map(|h| h.json())
        .filter(|n| unexpected.iter().any(|id| n["finding_id"] == ***id))
        .map(|n| n["finding"]["rule_id"].as_str().unwrap_or("").to_owned())
        .collect();
    // Silence and absence findings depend on when idle partitions advance;
    // everything else must be one of the expected ids.
    assert!(
        unexpected_rules.iter().all(|r| matches!(
            r.as_str(),
            "correlation.source_went_silent"
                | "aws.correlation.cloudtrail_not_restarted"
                | "azure.correlation.policy_assignment_not_restored"
        )),
        "unexpected findings: {unexpected_rules:?}"
    );
    let repeats = got.values().filter(|&&n| n > 1).count();
    eprintln!(
        "scale-out: {} expected findings ({correlations} correlations) all delivered by 3 members across a kill -9; {repeats} delivered more than once, under the same id",
        expected.len()
    );
}
