//! seamwatch: a streaming analyzer for cloud audit logs that watches the seams
//! of the shared responsibility model.
//!
//! # The pipeline on one page
//! ```text
//! source ─► framer ─► parser ─► enricher ─► detector ─► correlator ─► finding ─► outbox ─► sinks
//! ```
//! - [`event`]: bytes → [`event::AuditEvent`]. Framing (JSON Lines, documents,
//!   arrays, gzip), envelope unwrapping (CloudTrail S3 objects, EventBridge,
//!   CloudWatch Logs, LookupEvents; Azure Event Hubs batches; GCP Pub/Sub push),
//!   per-cloud normalization, native field lookup for rules, and typed, counted
//!   errors for bad input.
//! - [`detect`]: single-event rules (seamwatch's and Sigma's) and the
//!   detector, with the responsibility matrix's context ([`matrix`]).
//! - [`correlate`]: patterns over several events in event time (thresholds,
//!   sequences, absence, sessions, silence), Sigma correlations too.
//! - [`analyze`]: detector and correlator together, what every source feeds.
//! - [`alert`]: the durable outbox (dedup, suppression, routes, budgets) and
//!   delivery to webhooks (JSON, OCSF, Slack, PagerDuty, templates), Kafka
//!   and JSON Lines, with retries, signatures and dead letters.
//! - [`pipeline`]: the Kafka consumer that feeds the analyzer and commits
//!   offsets only after the outbox has the findings.
//! - [`admin`]: the admin HTTP server: probes, Prometheus metrics, the
//!   live findings feed (JSON and Server-Sent Events) and its web view.
//! - [`config`]: the configuration file, validated in two steps.
//! - [`synth`]: reproducible synthetic CloudTrail traffic (tests, benchmarks).
//! - [`cli`]: the command-line interface (`seamwatch parse`, …).
//!
//! Detection and correlation never need to know where an event came from,
//! which is what makes replay give the same findings as live processing.

pub mod admin;
pub mod alert;
pub mod analyze;
pub mod cli;
pub mod config;
pub mod correlate;
pub mod detect;
pub mod drill;
pub mod event;
pub mod loadgen;
pub mod matrix;
pub mod pipeline;
pub mod replay;
pub mod synth;
pub mod util;
