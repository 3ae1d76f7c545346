//! `/metrics` in the Prometheus text exposition format (version 0.0.4):
//! the pipeline's counters, the outbox's decisions and depth, delivery per
//! destination, the correlator's state, and the latency histograms as
//! summaries (quantiles from hdrhistogram, in milliseconds).

use std::fmt::{Display, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use super::AdminState;
use crate::pipeline::metrics::Latency;

struct Text(String);

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn summary(&mut self, name: &str, labels: &[(&str, &str)], l: &Latency) {
        for (q, v) in [("0.5", l.p50), ("0.99", l.p99), ("0.999", l.p999)] {
            let mut with_q = labels.to_vec();
            with_q.push(("quantile", q));
            self.sample(name, &with_q, v);
        }
        self.sample(&format!("{name}_sum"), labels, l.sum);
        self.sample(&format!("{name}_count"), labels, l.count);
    }
}

fn n(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

pub(super) fn render(state: &AdminState) -> String {
    let mut t = Text(String::with_capacity(8192));
    let m = &state.metrics;

    t.one(
        "seamwatch_messages_total",
        "counter",
        "Kafka messages consumed.",
        n(&m.messages),
    );
    t.family(
        "seamwatch_events_total",
        "counter",
        "Audit events decoded, by topic, partition and cloud.",
    );
    let mut events: Vec<_> = m
        .events
        .iter()
        .map(|e| (e.key().clone(), *e.value()))
        .collect();
    events.sort();
    for ((topic, partition, cloud), v) in events {
        t.sample(
            "seamwatch_events_total",
            &[
                ("topic", &topic),
                ("partition", &partition.to_string()),
                ("cloud", cloud),
            ],
            v,
        );
    }
    t.family(
        "seamwatch_parse_errors_total",
        "counter",
        "Records that did not decode, by reason (each went to the dead-letter topic).",
    );
    let mut errors: Vec<_> = m.errors.iter().map(|e| (*e.key(), *e.value())).collect();
    errors.sort();
    for (reason, v) in errors {
        t.sample("seamwatch_parse_errors_total", &[("reason", reason)], v);
    }
    t.one(
        "seamwatch_dead_lettered_total",
        "counter",
        "Records sent to the dead-letter topic.",
        n(&m.dead_lettered),
    );
    t.one(
        "seamwatch_findings_total",
        "counter",
        "Findings handed to the outbox.",
        n(&m.findings),
    );
    t.family(
        "seamwatch_findings_by_rule_total",
        "counter",
        "Findings made durable, by rule and severity.",
    );
    let mut by_rule: Vec<_> = state
        .hub
        .by_rule
        .iter()
        .map(|e| (e.key().0.clone(), e.key().1, *e.value()))
        .collect();
    by_rule.sort();
    for (rule, severity, v) in by_rule {
        t.sample(
            "seamwatch_findings_by_rule_total",
            &[("rule", &rule), ("severity", severity.as_str())],
            v,
        );
    }
    t.one(
        "seamwatch_assigned_partitions",
        "gauge",
        "Partitions assigned to this consumer-group member.",
        n(&m.assigned),
    );
    t.family(
        "seamwatch_consumer_lag",
        "gauge",
        "High watermark minus committed offset, per partition (refreshed every 10 s).",
    );
    let mut lag: Vec<_> = m
        .commit_lag
        .iter()
        .map(|e| (e.key().clone(), *e.value()))
        .collect();
    lag.sort();
    for ((topic, partition), v) in lag {
        t.sample(
            "seamwatch_consumer_lag",
            &[("topic", &topic), ("partition", &partition.to_string())],
            v,
        );
    }

    t.family(
        "seamwatch_event_to_finding_ms",
        "summary",
        "Event time to finding, milliseconds.",
    );
    t.summary("seamwatch_event_to_finding_ms", &[], &m.event_latency());
    t.family(
        "seamwatch_append_to_finding_ms",
        "summary",
        "Kafka append time to finding, milliseconds.",
    );
    t.summary("seamwatch_append_to_finding_ms", &[], &m.append_latency());
    t.family(
        "seamwatch_consumed_to_outbox_ms",
        "summary",
        "Consumer hand-over to the finding durable in the outbox (time inside seamwatch), milliseconds.",
    );
    t.summary("seamwatch_consumed_to_outbox_ms", &[], &m.inside_latency());

    if let Some(analyzer) = &state.analyzer {
        let c = analyzer.correlator().stats();
        t.one(
            "seamwatch_correlation_keys",
            "gauge",
            "Correlation groups tracked now.",
            c.keys,
        );
        t.one(
            "seamwatch_correlation_evicted_total",
            "counter",
            "Correlation groups evicted to stay within max_keys.",
            c.evicted,
        );
        t.one(
            "seamwatch_correlation_observations_total",
            "counter",
            "Events observed by correlations.",
            c.observations,
        );
        t.one(
            "seamwatch_correlation_late_total",
            "counter",
            "Events later than the allowed lateness.",
            c.late,
        );
        t.one(
            "seamwatch_correlation_fired_total",
            "counter",
            "Correlation findings.",
            c.fired,
        );
    }

    if let Some(outbox) = &state.outbox {
        let s = &outbox.stats;
        for (name, help, value) in [
            (
                "seamwatch_outbox_alerts_created_total",
                "Alerts opened.",
                n(&s.created),
            ),
            (
                "seamwatch_outbox_deduplicated_total",
                "Findings folded into an open alert (dedup window).",
                n(&s.updated),
            ),
            (
                "seamwatch_outbox_redelivered_total",
                "Findings already in the outbox (redelivered input), ignored.",
                n(&s.repeated),
            ),
            (
                "seamwatch_outbox_suppressed_total",
                "Alerts matched by a suppression: stored, not sent.",
                n(&s.suppressed),
            ),
            (
                "seamwatch_outbox_closed_total",
                "Alerts closed by a resolving finding.",
                n(&s.closed),
            ),
            (
                "seamwatch_outbox_held_total",
                "Notices held back by an alert budget.",
                n(&s.held),
            ),
        ] {
            t.one(name, "counter", help, value);
        }
        if let Ok(depth) = outbox.depth() {
            t.family(
                "seamwatch_outbox_depth",
                "gauge",
                "Notices waiting per destination (state=queued) and given up (state=dead).",
            );
            for (sink, (queued, dead)) in depth {
                t.sample(
                    "seamwatch_outbox_depth",
                    &[("destination", &sink), ("state", "queued")],
                    queued,
                );
                t.sample(
                    "seamwatch_outbox_depth",
                    &[("destination", &sink), ("state", "dead")],
                    dead,
                );
            }
        }
    }

    if !state.sinks.is_empty() {
        for (name, help, pick) in [
            (
                "seamwatch_delivered_total",
                "Notices delivered, per destination.",
                (|s: &crate::alert::deliver::SinkStats| n(&s.delivered))
                    as fn(&crate::alert::deliver::SinkStats) -> u64,
            ),
            (
                "seamwatch_delivery_failures_total",
                "Failed delivery attempts (each retry counts), per destination.",
                |s| n(&s.failed),
            ),
            (
                "seamwatch_delivery_dead_total",
                "Notices given up on, per destination.",
                |s| n(&s.dead),
            ),
        ] {
            t.family(name, "counter", help);
            for s in &state.sinks {
                t.sample(name, &[("destination", &s.name)], pick(s));
            }
        }
        t.family(
            "seamwatch_finding_to_delivered_ms",
            "summary",
            "Outbox to delivered, milliseconds, per destination.",
        );
        for s in &state.sinks {
            let h = s.latency_ms.lock().unwrap_or_else(|e| e.into_inner());
            t.summary(
                "seamwatch_finding_to_delivered_ms",
                &[("destination", &s.name)],
                &Latency::of(&h),
            );
        }
    }
    t.0
}
