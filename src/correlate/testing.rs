//! Running correlations' embedded tests: each test's events are decoded with
//! the real decoder, run through the real detector and a fresh correlator in
//! arrival order, and the stream is flushed; the test counts the findings of
//! its correlation (and the evidence of the first).

use std::sync::Arc;

use super::engine::{CorrelationConfig, Correlator, Stream};
use super::rule::Correlation;
use crate::detect::finding::SourceRef;
use crate::detect::{Detector, Finding};
use crate::event::Decoder;
use crate::matrix::Matrix;

/// One test's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorrelationTestResult {
    pub correlation: String,
    pub test: String,
    pub passed: bool,
    pub detail: Option<String>,
}

/// Runs every embedded test of every correlation; each test gets a fresh
/// correlator over the same detector.
pub fn run_correlation_tests(
    detector: &Detector,
    correlations: &[Correlation],
    matrix: &Arc<Matrix>,
) -> Vec<CorrelationTestResult> {
    let decoder = Decoder::default();
    let mut results = Vec::new();
    for correlation in correlations {
        for test in &correlation.tests {
            let correlator = Correlator::new(
                vec![correlation.clone()],
                detector.rules().rules(),
                matrix.clone(),
                CorrelationConfig::default(),
            );
            let outcome = run_one(detector, &correlator, &decoder, &test.events);
            let (passed, detail) = match outcome {
                Err(detail) => (false, Some(detail)),
                Ok(findings) => {
                    let mine: Vec<&Finding> = findings
                        .iter()
                        .filter(|f| f.rule_id == correlation.meta.id)
                        .collect();
                    let evidence = mine.first().map(|f| f.evidence.len() as u32);
                    if mine.len() as u32 != test.findings {
                        (
                            false,
                            Some(format!(
                                "expected {} finding(s), got {}",
                                test.findings,
                                mine.len()
                            )),
                        )
                    } else if let Some(want) = test.evidence
                        && evidence != Some(want)
                    {
                        (
                            false,
                            Some(format!(
                                "expected {want} event(s) of evidence, got {}",
                                evidence.unwrap_or(0)
                            )),
                        )
                    } else {
                        (true, None)
                    }
                }
            };
            results.push(CorrelationTestResult {
                correlation: correlation.meta.id.clone(),
                test: test.name.clone(),
                passed,
                detail,
            });
        }
    }
    results
}

fn run_one(
    detector: &Detector,
    correlator: &Correlator,
    decoder: &Decoder,
    events: &[String],
) -> Result<Vec<Finding>, String> {
    let mut stream = Stream::new();
    let mut findings = Vec::new();
    let mut matched = crate::detect::Matched::new();
    for (i, json) in events.iter().enumerate() {
        let decoded = decoder.decode_owned(json.as_bytes());
        let event = match decoded.as_slice() {
            [Ok(event)] => event,
            [Err((reason, detail))] => {
                return Err(format!(
                    "event {} does not parse: {reason}: {detail}",
                    i + 1
                ));
            }
            _ => return Err(format!("event {} holds {} records", i + 1, decoded.len())),
        };
        if event.time.is_none() {
            return Err(format!("event {} has no time", i + 1));
        }
        matched.clear();
        let source = SourceRef::File {
            path: "test",
            line: i as u64 + 1,
            index: 0,
        };
        detector.detect_matched(event, source, &mut findings, &mut matched);
        correlator.observe(&mut stream, event, &matched, source, &mut findings);
    }
    correlator.flush(&mut stream, &mut findings);
    Ok(findings)
}
