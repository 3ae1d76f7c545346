//! Alert delivery end to end: findings go into a real outbox file, a real
//! dispatcher sends them over HTTP to real receivers on loopback
//! (`common::receiver`: axum on `127.0.0.1`), and the tests look at what
//! arrived there. Nothing of seamwatch's is mocked.
//!
//! - A receiver that fails every way a webhook can (5xx, 429 with
//!   `Retry-After`, no answer within the timeout, port closed) and then
//!   recovers gets every notice; `Retry-After` is honoured; nothing goes to
//!   the dead letters.
//! - Requests are signed (checked with `hmac`/`sha2` directly and with
//!   `seamwatch::alert::sign::verify`) and carry the bearer token; a 400 or
//!   404 sends a notice to the dead letters after one attempt, and
//!   `retry_dead` re-drives it.
//! - What the store decides, seen at the receiver: a repeated finding,
//!   updates within the dedup window, closes, suppressions (live and
//!   expired), alert budgets and their digest, routes.
//! - `seamwatch outbox deliver` killed with SIGKILL mid-delivery and run
//!   again with `--until-empty` loses nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::Once;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use hmac::{KeyInit, Mac};
use seamwatch::alert::config::AlertsConfig;
use seamwatch::alert::deliver::{Destination, Dispatcher, Policy};
use seamwatch::alert::sign::{VerifyError, verify};
use seamwatch::alert::store::Outbox;
use seamwatch::alert::{Action, AlertNotice, Notice};
use seamwatch::detect::{Finding, Severity};
use serde::Deserialize;

use common::receiver::{Hit, Receiver, Reply};
use common::wait_for;

const SECRET_VAR: &str = "SEAMWATCH_ALERTS_TEST_SIGNING_SECRET";
const SECRET: &str = "whsec-alerts-test-5f1c0e";
const TOKEN_VAR: &str = "SEAMWATCH_ALERTS_TEST_BEARER_TOKEN";
const TOKEN: &str = "bearer-alerts-test-92ab7d";

/// How long any one stage of a test may take before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// Sets the variables the sinks read their secrets from. Every test calls
/// this first.
fn init() {
    static ENV: Once = Once::new();
    ENV.call_once(|| {
        // SAFETY: every test calls `init` before anything else, and `Once`
        // holds the others back until it returns, so no thread of this
        // process reads the environment while it is written.
        unsafe {
            std::env::set_var(SECRET_VAR, SECRET);
            std::env::set_var(TOKEN_VAR, TOKEN);
            // Loopback never goes through a proxy set for the machine.
            std::env::set_var("NO_PROXY", "127.0.0.1,localhost");
        }
    });
}

// ---------------------------------------------------------------------------
// Findings, settings, outbox and dispatcher

fn fixture() -> Finding {
    serde_json::from_str(include_str!("fixtures/alerts/findings/rule.json"))
        .expect("findings/rule.json is a finding")
}

/// The fixture finding with id `id` and a resource of its own, so that it
/// has a dedup key of its own.
fn finding(id: &str) -> Finding {
    let mut f = fixture();
    f.id = id.to_owned();
    f.resources = vec![format!(
        "arn:aws:cloudtrail:us-east-1:143434273843:trail/{id}"
    )];
    f
}

fn ids(findings: &[Finding]) -> BTreeSet<String> {
    findings.iter().map(|f| f.id.clone()).collect()
}

#[derive(Deserialize)]
struct ConfigFile {
    alerts: AlertsConfig,
}

fn parse_config(text: &str) -> AlertsConfig {
    toml::from_str::<ConfigFile>(text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .alerts
}

/// `[alerts]` with the outbox in `dir`, a one-hour dedup window and fast
/// retries that practically never give up.
fn alerts_section(dir: &Path) -> String {
    let outbox = toml::Value::String(dir.join("outbox.redb").display().to_string());
    format!(
        r#"[alerts]
outbox = {outbox}
dedup_window = "1h"

[alerts.retry]
max_attempts = 100
initial_backoff = "50ms"
max_backoff = "400ms"
"#
    )
}

/// A `[[alerts.sinks]]` webhook; `extra` adds lines to it.
fn webhook(name: &str, url: &str, extra: &str) -> String {
    format!("\n[[alerts.sinks]]\nname = \"{name}\"\ntype = \"webhook\"\nurl = \"{url}\"\n{extra}\n")
}

fn open(config: &AlertsConfig, resolvable: &[&str]) -> Arc<Outbox> {
    let resolvable: HashSet<String> = resolvable.iter().map(|r| r.to_string()).collect();
    Arc::new(Outbox::open(&config.outbox, config, resolvable).expect("the outbox opens"))
}

fn start(config: &AlertsConfig, outbox: &Arc<Outbox>) -> Dispatcher {
    let destinations = config
        .sinks
        .iter()
        .enumerate()
        .map(|(i, s)| Destination::from_config(s, i, None).expect("a destination"))
        .collect();
    let policies = config.sinks.iter().map(|s| Policy::of(config, s)).collect();
    Dispatcher::start(outbox.clone(), destinations, policies).expect("the dispatcher starts")
}

fn queued(outbox: &Outbox) -> u64 {
    outbox
        .depth()
        .expect("depth")
        .values()
        .map(|(q, _)| q)
        .sum()
}

fn failed(dispatcher: &Dispatcher) -> u64 {
    dispatcher
        .stats
        .iter()
        .map(|s| s.failed.load(Relaxed))
        .sum()
}

fn dead(dispatcher: &Dispatcher) -> u64 {
    dispatcher.stats.iter().map(|s| s.dead.load(Relaxed)).sum()
}

fn delivered(dispatcher: &Dispatcher) -> u64 {
    dispatcher
        .stats
        .iter()
        .map(|s| s.delivered.load(Relaxed))
        .sum()
}

/// One receiver, one outbox in a temporary folder, one dispatcher.
struct Rig {
    rx: Receiver,
    outbox: Arc<Outbox>,
    dispatcher: Dispatcher,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// `sinks` writes the sinks, routes and suppressions for the receiver.
    fn new(rx: Receiver, resolvable: &[&str], sinks: impl FnOnce(&Receiver) -> String) -> Rig {
        init();
        let dir = tempfile::tempdir().expect("a temporary folder");
        let config = parse_config(&(alerts_section(dir.path()) + &sinks(&rx)));
        let outbox = open(&config, resolvable);
        let dispatcher = start(&config, &outbox);
        Rig {
            rx,
            outbox,
            dispatcher,
            _dir: dir,
        }
    }

    fn feed(&self, findings: &[Finding]) {
        self.outbox.append(findings);
        self.outbox.sync().expect("sync");
    }

    /// Waits until nothing is queued any more, and stops delivering.
    fn finish(self) -> (Receiver, Arc<Outbox>) {
        wait_for(PATIENCE, "the queue to drain", || queued(&self.outbox) == 0);
        self.dispatcher.shutdown(Duration::from_secs(2));
        (self.rx, self.outbox)
    }
}

/// The notices a receiver got, by idempotency key (each must come once).
fn notices_by_key(hits: &[Hit]) -> BTreeMap<String, Notice> {
    let mut out = BTreeMap::new();
    for h in hits {
        let notice: Notice = serde_json::from_slice(&h.body).expect("a notice in json format");
        assert_eq!(
            h.key(),
            notice.idempotency_key(),
            "the header is the notice's key"
        );
        let again = out.insert(h.key().to_owned(), notice);
        assert!(again.is_none(), "{} arrived twice", h.key());
    }
    out
}

fn alert(notice: &Notice) -> &AlertNotice {
    match notice {
        Notice::Alert(a) => a,
        Notice::Digest(d) => panic!("expected an alert notice, got digest {}", d.id),
    }
}

// ---------------------------------------------------------------------------
// 1. A flaky receiver

/// The idempotency keys that got answer `reply` at least once.
fn keys_answered(hits: &[Hit], reply: Reply) -> BTreeSet<String> {
    hits.iter()
        .filter(|h| h.reply == reply)
        .map(|h| h.key().to_owned())
        .collect()
}

/// For each request answered 429, the time until its notice came again
/// (when it did).
fn gaps_after_429(hits: &[Hit]) -> Vec<Duration> {
    hits.iter()
        .enumerate()
        .filter(|(_, h)| matches!(h.reply, Reply::RetryAfter(429, _)))
        .filter_map(|(i, h)| {
            let next = hits[i + 1..].iter().find(|n| n.key() == h.key())?;
            Some(next.at - h.at)
        })
        .collect()
}

#[test]
fn a_flaky_receiver_gets_every_notice() {
    let rig = Rig::new(Receiver::always(Reply::Status(500)), &[], |rx| {
        webhook(
            "hook",
            &rx.url("/hook"),
            "timeout = \"1s\"\nconcurrency = 4",
        )
    });
    let Rig {
        mut rx,
        outbox,
        dispatcher,
        _dir,
    } = rig;
    let findings: Vec<Finding> = (0..40).map(|i| finding(&format!("flaky-{i:02}"))).collect();
    let expected = ids(&findings);
    outbox.append(&findings);
    outbox.sync().expect("sync");
    assert_eq!(outbox.stats.created.load(Relaxed), 40);

    // Server errors, until every notice has been refused once.
    wait_for(PATIENCE, "every notice to get a 500", || {
        keys_answered(&rx.hits(), Reply::Status(500)) == expected
    });

    // Too many requests, come back in a second; until some notice has.
    rx.set(|_| Reply::RetryAfter(429, 1));
    wait_for(PATIENCE, "a notice to come back after its 429", || {
        !gaps_after_429(&rx.hits()).is_empty()
    });

    // No answer within the client's timeout (1 s), nor for a minute:
    // only the timeout ends these attempts. With 4 requests in flight at
    // most, 8 hung requests mean at least 4 were given up by the client.
    let hang = Reply::Hang(Duration::from_secs(60));
    rx.set(move |_| hang);
    wait_for(PATIENCE, "requests to time out", || {
        rx.hits().iter().filter(|h| h.reply == hang).count() >= 8
    });

    // Down: the port is closed, connections are refused. (Up to 4 of the
    // failures counted next may be requests still hung when it closed.)
    rx.stop();
    let before = failed(&dispatcher);
    wait_for(
        PATIENCE,
        "attempts to fail while the receiver is down",
        || failed(&dispatcher) >= before + 8,
    );
    assert!(
        rx.delivered_keys().is_empty(),
        "nothing was answered 200 yet"
    );

    // Back on the same port, and well.
    rx.set(|_| Reply::Status(200));
    rx.restart();
    wait_for(PATIENCE, "every notice to be delivered", || {
        queued(&outbox) == 0
    });
    let (failures, dead_letters, delivered_count) = (
        failed(&dispatcher),
        dead(&dispatcher),
        delivered(&dispatcher),
    );
    dispatcher.shutdown(Duration::from_secs(2));

    let hits = rx.hits();
    assert_eq!(
        rx.delivered_keys(),
        expected,
        "unique keys answered 200 are exactly the notices"
    );
    assert!(hits.iter().all(|h| expected.contains(h.key())));
    assert!(failures > 0, "there were retries");
    assert_eq!(dead_letters, 0);
    assert!(outbox.list(None, true).expect("list").is_empty());
    assert_eq!(delivered_count, 40, "one success per notice");

    // `Retry-After: 1` beats the 400 ms backoff ceiling: every notice came
    // back at least (about) a second after its 429.
    let gaps = gaps_after_429(&hits);
    assert!(!gaps.is_empty());
    let shortest = gaps.iter().min().copied().unwrap_or_default();
    assert!(
        shortest >= Duration::from_millis(900),
        "a notice came back {shortest:?} after a 429 with Retry-After: 1"
    );
}

// ---------------------------------------------------------------------------
// 2. Signatures, bearer tokens, dead letters

/// `sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>`, computed here
/// rather than by seamwatch.
fn hmac_signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn requests_are_signed_and_carry_the_bearer_token() {
    let rig = Rig::new(Receiver::always(Reply::Status(200)), &[], |rx| {
        let signed = format!("secret_env = \"{SECRET_VAR}\"\ntoken_env = \"{TOKEN_VAR}\"");
        webhook("signed", &rx.url("/signed"), &signed) + &webhook("plain", &rx.url("/plain"), "")
    });
    let findings: Vec<Finding> = (0..5).map(|i| finding(&format!("signed-{i}"))).collect();
    rig.feed(&findings);
    let (rx, _outbox) = rig.finish();

    let hits = rx.hits();
    let (signed, plain): (Vec<&Hit>, Vec<&Hit>) = hits.iter().partition(|h| h.path == "/signed");
    assert_eq!(signed.len(), 5);
    assert_eq!(plain.len(), 5);
    let now = Utc::now().timestamp();
    for h in &signed {
        let timestamp = h.header("seamwatch-timestamp").expect("a timestamp");
        let signature = h.header("seamwatch-signature").expect("a signature");
        assert!((now - timestamp.parse::<i64>().expect("seconds")).abs() < 300);
        assert_eq!(
            signature,
            hmac_signature(SECRET.as_bytes(), timestamp, &h.body)
        );
        assert_eq!(
            verify(SECRET.as_bytes(), timestamp, &h.body, signature, now, 300),
            Ok(())
        );
        // The same request checked with another secret, or altered, fails.
        assert_ne!(
            signature,
            hmac_signature(b"not-the-secret", timestamp, &h.body)
        );
        assert_eq!(
            verify(b"not-the-secret", timestamp, &h.body, signature, now, 300),
            Err(VerifyError::Mismatch)
        );
        let mut altered = h.body.to_vec();
        altered.push(b' ');
        assert_eq!(
            verify(SECRET.as_bytes(), timestamp, &altered, signature, now, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            h.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(h.header("content-type"), Some("application/json"));
    }
    for h in &plain {
        assert!(h.header("seamwatch-timestamp").is_some());
        assert_eq!(
            h.header("seamwatch-signature"),
            None,
            "no secret, no signature"
        );
        assert_eq!(
            h.header("authorization"),
            None,
            "no token, no Authorization"
        );
    }
    let signed_keys: Vec<Hit> = signed.into_iter().cloned().collect();
    assert_eq!(
        notices_by_key(&signed_keys)
            .into_keys()
            .collect::<BTreeSet<_>>(),
        ids(&findings)
    );
}

#[test]
fn a_rejected_notice_is_a_dead_letter_after_one_attempt_until_retried() {
    let rejected = Receiver::start(|h| match h.key() {
        "bad-request" => Reply::Status(400),
        "not-found" => Reply::Status(404),
        _ => Reply::Status(200),
    });
    let rig = Rig::new(rejected, &[], |rx| {
        webhook("hook", &rx.url("/hook"), "max_attempts = 5")
    });
    let findings = ["bad-request", "not-found", "fine-1", "fine-2"].map(finding);
    rig.feed(&findings);
    wait_for(PATIENCE, "two dead letters", || dead(&rig.dispatcher) == 2);
    wait_for(PATIENCE, "the queue to drain", || queued(&rig.outbox) == 0);

    let dead_letters = rig.outbox.list(Some("hook"), true).expect("list");
    let by_key: BTreeMap<String, _> = dead_letters
        .iter()
        .map(|(_, _, d)| (d.notice.idempotency_key(), d))
        .collect();
    assert_eq!(
        by_key.keys().map(String::as_str).collect::<Vec<_>>(),
        ["bad-request", "not-found"]
    );
    for (key, status) in [("bad-request", "400"), ("not-found", "404")] {
        let d = by_key[key];
        assert_eq!(d.attempts, 1, "{key}: a 4xx is not retried");
        let error = d.last_error.as_deref().unwrap_or_default();
        assert!(error.contains(status), "{key}: last error {error:?}");
        let tries = rig.rx.hits().iter().filter(|h| h.key() == key).count();
        assert_eq!(tries, 1, "{key}: requests received");
    }

    // The receiver is fixed; the dead letters go out again.
    rig.rx.set(|_| Reply::Status(200));
    assert_eq!(rig.outbox.retry_dead(Some("hook"), None).expect("retry"), 2);
    assert!(rig.outbox.list(None, true).expect("list").is_empty());
    wait_for(PATIENCE, "the re-driven notices to be delivered", || {
        rig.rx.delivered_keys() == ids(&findings)
    });
    let (rx, outbox) = rig.finish();
    assert_eq!(outbox.depth().expect("depth")["hook"], (0, 0));
    for key in ["bad-request", "not-found"] {
        let replies: Vec<Reply> = rx
            .hits()
            .iter()
            .filter(|h| h.key() == key)
            .map(|h| h.reply)
            .collect();
        assert_eq!(replies.len(), 2, "{key}: refused once, delivered once");
        assert!(replies[1].is_success());
    }
}

// ---------------------------------------------------------------------------
// 3. What the store decides, as the receiver sees it

fn ok() -> Receiver {
    Receiver::always(Reply::Status(200))
}

fn one_hook(rx: &Receiver) -> String {
    webhook("hook", &rx.url("/hook"), "")
}

#[test]
fn a_finding_seen_twice_is_one_create() {
    let rig = Rig::new(ok(), &[], one_hook);
    let f = finding("twice");
    rig.feed(&[f.clone(), f.clone()]);
    rig.feed(std::slice::from_ref(&f)); // again, after a restart of the input
    let (rx, outbox) = rig.finish();

    assert_eq!(outbox.stats.repeated.load(Relaxed), 2);
    assert_eq!(outbox.stats.created.load(Relaxed), 1);
    let notices = notices_by_key(&rx.hits());
    assert_eq!(notices.len(), 1);
    let a = alert(&notices["twice"]);
    assert_eq!((a.action, a.occurrences), (Action::Create, 1));
}

#[test]
fn repeats_within_the_dedup_window_update_the_alert() {
    let rig = Rig::new(ok(), &[], one_hook);
    let first = finding("first");
    let t0 = first.event_time.expect("an event time");
    let mut repeat = first.clone();
    repeat.id = "repeat".into();
    repeat.event_time = Some(t0 + TimeDelta::minutes(10));
    let mut later = first.clone();
    later.id = "later".into();
    later.event_time = Some(t0 + TimeDelta::hours(2));
    rig.feed(&[first]);
    rig.feed(&[repeat]);
    rig.feed(&[later]);
    let (rx, outbox) = rig.finish();

    assert_eq!(outbox.stats.created.load(Relaxed), 2);
    assert_eq!(outbox.stats.updated.load(Relaxed), 1);
    let notices = notices_by_key(&rx.hits());
    assert_eq!(notices.len(), 3);
    let created = alert(&notices["first"]);
    assert_eq!((created.action, created.occurrences), (Action::Create, 1));
    let updated = alert(&notices["repeat"]);
    assert_eq!(updated.action, Action::Update);
    assert_eq!(updated.alert_id, "first");
    assert_eq!(updated.finding_id, "repeat");
    assert_eq!(updated.occurrences, 2);
    assert_eq!(updated.first_seen, Some(t0));
    assert_eq!(updated.last_seen, Some(t0 + TimeDelta::minutes(10)));
    let fresh = alert(&notices["later"]);
    assert_eq!(
        (fresh.action, fresh.alert_id.as_str(), fresh.occurrences),
        (Action::Create, "later", 1),
        "two hours on, outside the one-hour window: a new alert"
    );
}

#[test]
fn a_resolving_finding_closes_the_open_alert() {
    let stopped = fixture().rule_id;
    let rig = Rig::new(ok(), &[&stopped], one_hook);
    let open_a = finding("open-a");
    let open_b = finding("open-b");
    let mut started = finding("started");
    started.rule_id = "aws.logging.cloudtrail_started".into();
    started.title = "CloudTrail logging started".into();
    started.resources = open_a.resources.clone();
    started.resolves = vec![stopped.clone()];
    rig.feed(&[open_a.clone(), open_b]);
    rig.feed(&[started]);
    let (rx, outbox) = rig.finish();

    assert_eq!(
        outbox.stats.created.load(Relaxed),
        2,
        "a resolution is no alert"
    );
    assert_eq!(outbox.stats.closed.load(Relaxed), 1);
    let notices = notices_by_key(&rx.hits());
    assert_eq!(
        notices.keys().map(String::as_str).collect::<Vec<_>>(),
        ["open-a", "open-a-close", "open-b"],
        "open-b (another resource) stays open; `started` is no create"
    );
    let close = alert(&notices["open-a-close"]);
    assert_eq!(close.action, Action::Close);
    assert_eq!(close.alert_id, "open-a");
    assert_eq!(close.finding_id, "started");
    assert_eq!(
        close.closed_by.as_deref(),
        Some("aws.logging.cloudtrail_started")
    );
    assert_eq!(close.finding, open_a, "a close carries the alert's finding");
}

#[test]
fn suppressions_hold_notices_back_until_they_expire() {
    let rig = Rig::new(ok(), &[], |rx| {
        let tomorrow = Utc::now() + TimeDelta::days(1);
        let yesterday = Utc::now() - TimeDelta::days(1);
        one_hook(rx)
            + &format!(
                r#"
[[alerts.suppress]]
rule = "aws.logging.*"
expires = "{}"
reason = "trail migration, CHG-1234"

[[alerts.suppress]]
rule = "aws.iam.*"
expires = "{}"
reason = "old change window"
"#,
                tomorrow.to_rfc3339(),
                yesterday.to_rfc3339()
            )
    });
    let held: Vec<Finding> = (0..2).map(|i| finding(&format!("held-{i}"))).collect();
    let sent: Vec<Finding> = (0..2)
        .map(|i| {
            let mut f = finding(&format!("sent-{i}"));
            f.rule_id = "aws.iam.access_key_created".into();
            f
        })
        .collect();
    rig.feed(&[held.clone(), sent.clone()].concat());
    let (rx, outbox) = rig.finish();

    assert_eq!(outbox.stats.suppressed.load(Relaxed), 2);
    assert_eq!(
        notices_by_key(&rx.hits())
            .into_keys()
            .collect::<BTreeSet<_>>(),
        ids(&sent),
        "the expired suppression does not hold anything back"
    );
}

#[test]
fn a_budget_sends_the_rest_of_its_window_as_one_digest() {
    let rig = Rig::new(ok(), &[], |rx| {
        webhook(
            "hook",
            &rx.url("/hook"),
            "budget = { max = 3, per = \"1s\" }",
        )
    });
    let findings: Vec<Finding> = (0..10).map(|i| finding(&format!("budget-{i}"))).collect();
    let now = Utc::now();
    rig.outbox.append(&findings);
    rig.outbox.sync_at(now).expect("sync");
    wait_for(PATIENCE, "the three notices within budget", || {
        rig.rx.hits().len() >= 3
    });
    rig.outbox
        .roll_budgets(now + TimeDelta::seconds(2))
        .expect("roll");
    wait_for(PATIENCE, "the digest", || rig.rx.hits().len() >= 4);
    let (rx, outbox) = rig.finish();

    assert_eq!(outbox.stats.held.load(Relaxed), 7);
    assert_eq!(outbox.stats.digests.load(Relaxed), 1);
    let hits = rx.hits();
    let (digests, alerts): (Vec<&Hit>, Vec<&Hit>) =
        hits.iter().partition(|h| h.json()["type"] == "digest");
    assert_eq!(
        alerts
            .iter()
            .map(|h| h.key().to_owned())
            .collect::<BTreeSet<_>>(),
        ids(&findings[..3])
    );
    assert_eq!(digests.len(), 1);
    let body = digests[0].json();
    assert_eq!(body["count"], 7);
    assert_eq!(body["destination"], "hook");
    let Notice::Digest(digest) = serde_json::from_value(body).expect("a digest") else {
        unreachable!("type is digest")
    };
    assert_eq!(
        digest.window_start.timestamp_millis(),
        now.timestamp_millis()
    );
    assert_eq!(digest.by_rule.len(), 1);
    assert_eq!(digest.by_rule[0].rule_id, fixture().rule_id);
    assert_eq!(digest.by_rule[0].count, 7);
    assert_eq!(digest.max_severity, Severity::Critical);
    let sample: BTreeSet<String> = digest.sample.into_iter().collect();
    assert_eq!(sample, ids(&findings[3..]));
    assert!(
        digests[0].wall >= digest.window_end,
        "the digest waits for its window to end"
    );
}

#[test]
fn routes_pick_sinks_and_a_sink_gets_each_notice_once() {
    let rig = Rig::new(ok(), &[], |rx| {
        webhook("a", &rx.url("/a"), "")
            + &webhook("b", &rx.url("/b"), "")
            + r#"
[[alerts.routes]]
sinks = ["a"]
min_severity = "high"

[[alerts.routes]]
sinks = ["a", "b"]
rules = ["aws.logging.*"]
"#
    });
    let both = finding("logging-critical"); // both routes
    let mut high = finding("iam-high"); // the first route
    high.rule_id = "aws.iam.access_key_created".into();
    high.severity = Severity::High;
    let mut low = finding("iam-low"); // no route
    low.rule_id = "aws.iam.access_key_created".into();
    low.severity = Severity::Low;
    rig.feed(&[both, high, low]);
    let (rx, _outbox) = rig.finish();

    let mut got: BTreeMap<(String, String), usize> = BTreeMap::new();
    for h in rx.hits() {
        *got.entry((h.path.clone(), h.key().to_owned())).or_default() += 1;
    }
    let want: BTreeMap<(String, String), usize> = [
        ("/a", "logging-critical"),
        ("/a", "iam-high"),
        ("/b", "logging-critical"),
    ]
    .into_iter()
    .map(|(p, k)| ((p.to_owned(), k.to_owned()), 1))
    .collect();
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------
// 4. kill -9 in the middle of `seamwatch outbox deliver`

fn seamwatch_deliver(config: &Path, until_empty: bool, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("a log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_seamwatch"));
    cmd.arg("--config")
        .arg(config)
        .args(["outbox", "deliver"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("a log file"))
        .stderr(log);
    if until_empty {
        cmd.arg("--until-empty");
    }
    cmd.spawn().expect("seamwatch starts")
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn outbox_deliver_killed_mid_delivery_loses_nothing() {
    init();
    let rx = Receiver::always(Reply::Slow(Duration::from_millis(50), 200));
    let dir = tempfile::tempdir().expect("a temporary folder");
    let text = alerts_section(dir.path()) + &webhook("hook", &rx.url("/hook"), "concurrency = 2");
    let config_path = dir.path().join("seamwatch.toml");
    std::fs::write(&config_path, &text).expect("writing the config");
    let config = parse_config(&text);

    let findings: Vec<Finding> = (0..200).map(|i| finding(&format!("kill-{i:03}"))).collect();
    let expected = ids(&findings);
    {
        let outbox = open(&config, &[]);
        outbox.append(&findings);
        outbox.sync().expect("sync");
        assert_eq!(queued(&outbox), 200);
    } // closed: the file lock is released for seamwatch

    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let mut first = seamwatch_deliver(&config_path, false, &dir.path().join("first.log"));
    wait_for(PATIENCE, "the first run to deliver some", || {
        rx.delivered_keys().len() >= 30
    });
    first.kill().expect("SIGKILL");
    let status = first.wait().expect("wait");
    assert_eq!(status.code(), None, "killed by a signal: {status:?}");
    let before_kill = rx.delivered_keys().len();
    assert!(
        before_kill < 200,
        "killed too late to test anything ({before_kill} delivered)\n{}",
        log("first.log")
    );

    let mut second = seamwatch_deliver(&config_path, true, &dir.path().join("second.log"));
    let status = wait_exit(&mut second, Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "`outbox deliver --until-empty` ended with {status:?}\n{}",
        log("second.log")
    );
    assert_eq!(rx.delivered_keys(), expected, "every notice arrived");

    let outbox = open(&config, &[]);
    let depth = outbox.depth().expect("depth");
    assert_eq!(
        depth,
        BTreeMap::from([("hook".to_owned(), (0, 0))]),
        "nothing waiting, nothing dead"
    );
    eprintln!(
        "kill -9 after {before_kill} notices; {} requests for 200 notices in all",
        rx.hits().len()
    );
}

// ---------------------------------------------------------------------------
// A Kafka alerts topic, on librdkafka's in-process Kafka-protocol cluster

#[test]
fn a_kafka_sink_publishes_each_notice_keyed_by_its_idempotency_key() {
    use rdkafka::ClientConfig;
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    use rdkafka::mocking::MockCluster;

    init();
    let cluster = MockCluster::new(1).expect("the in-process cluster starts");
    cluster
        .create_topic("seamwatch-alerts", 1, 1)
        .expect("topic");
    let dir = tempfile::tempdir().unwrap();
    let config = parse_config(&format!(
        "{}\n[[alerts.sinks]]\nname = \"topic\"\ntype = \"kafka\"\ntopic = \"seamwatch-alerts\"\nbrokers = \"{}\"\nformat = \"ocsf\"\n",
        alerts_section(dir.path()),
        cluster.bootstrap_servers()
    ));
    let outbox = open(&config, &[]);
    let dispatcher = start(&config, &outbox);
    let findings: Vec<Finding> = (0..12).map(|i| finding(&format!("kafka-{i}"))).collect();
    outbox.append(&findings);
    outbox.sync().unwrap();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "alerts-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["seamwatch-alerts"]).unwrap();
    let mut got: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let deadline = Instant::now() + PATIENCE;
    while got.len() < findings.len() && Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        let header = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "idempotency-key"))
            .and_then(|h| h.value)
            .map(|v| String::from_utf8(v.to_vec()).unwrap());
        assert_eq!(header.as_deref(), Some(key.as_str()));
        let body: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        got.insert(key, body);
    }
    // The broker's ack can reach the dispatcher after the consumer's read.
    wait_for(PATIENCE, "every notice to be acknowledged", || {
        queued(&outbox) == 0
    });
    dispatcher.shutdown(Duration::from_secs(2));
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), ids(&findings));
    for body in got.values() {
        // OCSF Detection Finding, Create.
        assert_eq!(body["class_uid"], 2004, "{body}");
        assert_eq!(body["activity_id"], 1, "{body}");
    }
    assert_eq!(queued(&outbox), 0);
}
