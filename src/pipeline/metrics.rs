//! Pipeline metrics: counters per topic and cloud, parse errors per reason,
//! findings, dead-lettered records, and two latency histograms (hdrhistogram,
//! milliseconds): event time → finding and Kafka append time → finding.
//! Workers keep their own histograms and merge them here once per batch.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;
use hdrhistogram::Histogram;

use crate::event::ErrorReason;

pub struct Metrics {
    pub messages: AtomicU64,
    /// Events decoded, by topic, partition and cloud.
    pub events: DashMap<(String, i32, &'static str), u64>,
    pub errors: DashMap<&'static str, u64>,
    pub findings: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub committed_batches: AtomicU64,
    /// High watermark − committed offset, per partition, refreshed every 10 s.
    pub commit_lag: DashMap<(String, i32), i64>,
    /// Partitions assigned to this member now.
    pub assigned: AtomicU64,
    /// Set when the pipeline failed (the outbox refused findings): not ready.
    pub failed: AtomicBool,
    /// Wall-clock time (Unix ms) of the last event per topic and cloud, to
    /// tell a silent source.
    pub last_seen: DashMap<(String, &'static str), i64>,
    event_latency: Mutex<Histogram<u64>>,
    append_latency: Mutex<Histogram<u64>>,
    /// Consumer hand-over to the finding durable in the outbox: the time
    /// spent inside seamwatch, without the broker's.
    inside_latency: Mutex<Histogram<u64>>,
}

/// Latencies are kept from 1 ms to 30 days, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 30 * 24 * 3_600_000, 3).expect("static bounds are valid")
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            messages: AtomicU64::new(0),
            events: DashMap::new(),
            errors: DashMap::new(),
            findings: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            committed_batches: AtomicU64::new(0),
            commit_lag: DashMap::new(),
            assigned: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            last_seen: DashMap::new(),
            event_latency: Mutex::new(histogram()),
            append_latency: Mutex::new(histogram()),
            inside_latency: Mutex::new(histogram()),
        }
    }
}

/// A worker's share, merged once per batch.
pub struct LocalMetrics {
    pub messages: u64,
    pub events: BTreeMap<(String, i32, &'static str), u64>,
    pub errors: BTreeMap<&'static str, u64>,
    pub findings: u64,
    pub dead_lettered: u64,
    pub event_latency: Histogram<u64>,
    pub append_latency: Histogram<u64>,
    pub inside_latency: Histogram<u64>,
}

impl Default for LocalMetrics {
    fn default() -> Self {
        LocalMetrics {
            messages: 0,
            events: BTreeMap::new(),
            errors: BTreeMap::new(),
            findings: 0,
            dead_lettered: 0,
            event_latency: histogram(),
            append_latency: histogram(),
            inside_latency: histogram(),
        }
    }
}

impl LocalMetrics {
    pub fn error(&mut self, reason: ErrorReason) {
        *self.errors.entry(reason.as_str()).or_default() += 1;
    }
}

/// Percentiles of a histogram, ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    /// Sum of the recorded values (ms), as near as the histogram knows.
    pub sum: u64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            sum: (h.mean() * h.len() as f64) as u64,
        }
    }
}

impl Metrics {
    pub fn merge(&self, local: &mut LocalMetrics) {
        self.messages.fetch_add(local.messages, Ordering::Relaxed);
        self.findings.fetch_add(local.findings, Ordering::Relaxed);
        self.dead_lettered
            .fetch_add(local.dead_lettered, Ordering::Relaxed);
        let now = chrono::Utc::now().timestamp_millis();
        for (key, n) in std::mem::take(&mut local.events) {
            if n > 0 {
                self.last_seen.insert((key.0.clone(), key.2), now);
            }
            *self.events.entry(key).or_default() += n;
        }
        for (key, n) in std::mem::take(&mut local.errors) {
            *self.errors.entry(key).or_default() += n;
        }
        if !local.event_latency.is_empty() {
            let mut h = self.event_latency.lock().unwrap_or_else(|e| e.into_inner());
            let _ = h.add(&local.event_latency);
            local.event_latency.reset();
        }
        if !local.append_latency.is_empty() {
            let mut h = self
                .append_latency
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let _ = h.add(&local.append_latency);
            local.append_latency.reset();
        }
        if !local.inside_latency.is_empty() {
            let mut h = self
                .inside_latency
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let _ = h.add(&local.inside_latency);
            local.inside_latency.reset();
        }
        local.messages = 0;
        local.findings = 0;
        local.dead_lettered = 0;
    }

    pub fn event_latency(&self) -> Latency {
        Latency::of(&self.event_latency.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn inside_latency(&self) -> Latency {
        Latency::of(
            &self
                .inside_latency
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    pub fn append_latency(&self) -> Latency {
        Latency::of(
            &self
                .append_latency
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    pub fn total_events(&self) -> u64 {
        self.events.iter().map(|e| *e.value()).sum()
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.iter().map(|e| *e.value()).sum()
    }
}
