//! The live pipeline on Kafka: settings ([`config`]), the consumer and its
//! workers ([`run`]), the outbox interface findings are handed to
//! ([`outbox`]), and metrics ([`metrics`]). `seamwatch run` and
//! `seamwatch demo` are thin layers over [`run::run`].

pub mod config;
pub mod demo;
pub mod metrics;
pub mod outbox;
pub mod run;

pub use config::KafkaConfig;
pub use metrics::Metrics;
pub use outbox::{FindingSink, JsonlOutbox};
pub use run::{PipelineError, RunSummary};
