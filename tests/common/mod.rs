//! Helpers shared by integration tests.
// Each test binary uses some of these helpers, not all.
#![allow(dead_code)]

pub mod archive;
pub mod broker;
pub mod lookup_events;
pub mod pipeline;
pub mod receiver;
pub mod services;

use std::time::{Duration, Instant};

/// A port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The built-in rules and correlations on the built-in matrix.
pub fn builtin_analyzer() -> seamwatch::analyze::Analyzer {
    seamwatch::analyze::Analyzer::build(
        seamwatch::detect::loader::load_builtin_report().unwrap(),
        std::sync::Arc::new(seamwatch::matrix::Matrix::builtin()),
        seamwatch::correlate::CorrelationConfig::default(),
    )
    .0
}

/// Polls `done` every 20 ms until it holds; panics, naming `what`, after
/// `timeout`.
pub fn wait_for(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A finding for feed tests: `user-<n>` changed `target-<n>`, owned by `team`.
pub fn finding(
    id: &str,
    n: usize,
    severity: seamwatch::detect::Severity,
    rule: &str,
    team: &str,
) -> seamwatch::detect::Finding {
    serde_json::from_value(serde_json::json!({
        "id": id, "kind": "rule", "rule_id": rule,
        "title": format!("{rule} #{n}"), "severity": severity.as_str(),
        "rule_severity": severity.as_str(), "cloud": "aws", "account": "111122223333",
        "service": "iam.amazonaws.com", "operation": "AttachUserPolicy",
        "principal": {"kind": "user", "name": format!("user-{n}")},
        "resources": [format!("arn:aws:iam::111122223333:user/target-{n}")],
        "domain": "identity", "owner_team": team,
        "event_time": "2026-11-28T10:00:00Z", "evidence": []
    }))
    .unwrap()
}
