//! Helpers shared by integration tests.
// Each test binary uses some of these helpers, not all.
#![allow(dead_code)]

pub mod archive;
pub mod lookup_events;
pub mod receiver;
pub mod services;

use std::time::{Duration, Instant};

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
