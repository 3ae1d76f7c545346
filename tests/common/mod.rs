//! Helpers shared by integration tests.

pub mod receiver;

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
