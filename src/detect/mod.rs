//! Detection: rules, their index, and the detector that turns events into
//! findings on the shared-responsibility map.
//!
//! - [`rule`]: seamwatch's YAML rule format, compiled into [`Rule`]s.
//! - [`sigma`]: SigmaHQ rules (parsed with `rsigma-parser`), compiled into the
//!   same [`Rule`]s through a field mapping.
//! - [`condition`]: the compiled field conditions both share.
//! - [`index`]: rules keyed by (cloud, service, operation).
//! - [`engine`]: the [`Detector`], which adds the matrix's context and the
//!   out-of-band, unmapped-service and compliance-boundary checks.
//! - [`loader`]: finding rule files (the built-in pack is embedded in the binary).
//! - [`testing`]: running the rules' embedded tests.

pub mod condition;
pub mod engine;
pub mod finding;
pub mod index;
pub mod loader;
pub mod rule;
pub mod sigma;
pub mod testing;

pub use engine::{Detector, Matched, RuleSet};
pub use finding::{
    CorrelationDetail, Evidence, Finding, FindingKind, FindingPrincipal, Severity, SourceRef,
};
pub use rule::{Rule, RuleError};
