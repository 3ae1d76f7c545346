//! Correlation: patterns over several events, in event time.
//!
//! - [`rule`]: the correlation rule format (threshold, distinct, sequence,
//!   temporal, absence, session, silence), Sigma-compatible, in the same
//!   files as single-event rules; steps refer to rules or match inline.
//! - [`engine`]: the [`Correlator`] (shared, concurrent state) and the
//!   per-input [`Stream`] (watermark, reorder buffer, deadlines).
//! - [`evidence`]: compact records of contributing events.
//! - [`testing`]: running correlations' embedded multi-event tests.
//!
//! The correlator sees an event after the detector, with the indices of the
//! rules it matched; it never needs to know where the event came from.

pub mod engine;
pub mod evidence;
pub mod rule;
pub mod testing;

pub use engine::{
    CorrelationConfig, Correlator, CorrelatorStats, Observations, ObserveScratch, Stream,
};
pub use rule::{Correlation, CorrelationDef, Kind};
