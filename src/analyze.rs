//! The analyzer: detector and correlator together, the one thing every
//! source (Kafka, archives, the demo) feeds. An event goes through the
//! detector (single-event findings, plus the indices of every rule that
//! matched) and then into the correlator on the caller's [`Stream`].

use std::sync::Arc;

use crate::correlate::rule::resolve;
use crate::correlate::{CorrelationConfig, Correlator, Stream};
use crate::detect::finding::SourceRef;
use crate::detect::loader::{LoadReport, Rejected};
use crate::detect::{Detector, Finding, Matched, RuleSet};
use crate::event::AuditEvent;
use crate::matrix::Matrix;

pub struct Analyzer {
    detector: Detector,
    correlator: Correlator,
}

/// Per-worker scratch space, reused from event to event.
#[derive(Debug, Default)]
pub struct Scratch {
    matched: Matched,
}

impl Analyzer {
    /// Resolves the correlations' rule references and builds both halves.
    /// Correlations that cannot be resolved are returned as rejected.
    pub fn build(
        report: LoadReport,
        matrix: Arc<Matrix>,
        config: CorrelationConfig,
    ) -> (Analyzer, Vec<Rejected>) {
        let mut rules = report.rules;
        let resolved = resolve(report.correlations, &mut rules);
        let rejected = resolved
            .rejected
            .into_iter()
            .map(|(id, reason)| Rejected {
                file: String::new(),
                rule: Some(id),
                reason,
            })
            .collect();
        let correlator = Correlator::new(resolved.correlations, &rules, matrix.clone(), config);
        let detector = Detector::new(RuleSet::new(rules), matrix);
        (
            Analyzer {
                detector,
                correlator,
            },
            rejected,
        )
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    pub fn correlator(&self) -> &Correlator {
        &self.correlator
    }

    /// Appends the findings of one event (and those its time makes due) to `out`.
    pub fn process(
        &self,
        event: &AuditEvent<'_>,
        source: SourceRef<'_>,
        stream: &mut Stream,
        scratch: &mut Scratch,
        out: &mut Vec<Finding>,
    ) {
        scratch.matched.clear();
        self.detector
            .detect_matched(event, source, out, &mut scratch.matched);
        self.correlator
            .observe(stream, event, &scratch.matched, source, out);
    }

    /// The first half of [`Analyzer::process`], which needs no order and no
    /// stream: single-event findings into `out`, and the indices of every
    /// rule that matched into `matched` (cleared first), for
    /// [`Analyzer::correlate`].
    pub fn detect(
        &self,
        event: &AuditEvent<'_>,
        source: SourceRef<'_>,
        out: &mut Vec<Finding>,
        matched: &mut Matched,
    ) {
        matched.clear();
        self.detector.detect_matched(event, source, out, matched);
    }

    /// The second half of [`Analyzer::process`], in event-time order on one
    /// stream: what the event's matches do to the correlations.
    pub fn correlate(
        &self,
        stream: &mut Stream,
        event: &AuditEvent<'_>,
        matched: &[u32],
        source: SourceRef<'_>,
        out: &mut Vec<Finding>,
    ) {
        self.correlator.observe(stream, event, matched, source, out);
    }

    /// End of a finite input: releases what the stream still holds.
    pub fn finish(&self, stream: &mut Stream, out: &mut Vec<Finding>) {
        self.correlator.flush(stream, out);
    }
}
