//! Alert fan-out: from findings to the people and systems that act on them.
//!
//! ```text
//! pipeline ─► Outbox::append/sync ─► store (redb: dedup, suppression, routes, queue)
//!                                          │
//!                       Dispatcher ◄───────┘ per destination: rate, concurrency,
//!                           │                retries with backoff, dead letters
//!                           ▼
//!              webhook (json, OCSF, Slack, PagerDuty, template) · Kafka topic · JSON Lines
//! ```
//! - [`model`]: what is delivered: a [`Notice`] (an alert created, updated or
//!   closed, or a digest of what an alert budget held back).
//! - [`format`](mod@format): a notice rendered for one destination's API.
//!
//! A finding is durable once [`store::Outbox::sync`] returns; only then may the
//! pipeline commit the offsets it came from. Delivery is at least once, and
//! every request carries an idempotency key so receivers can drop repeats.

pub mod config;
pub mod deliver;
pub mod format;
pub mod model;
pub mod route;
pub mod sign;
pub mod store;

pub use model::{Action, AlertNotice, DigestLine, DigestNotice, Notice};
