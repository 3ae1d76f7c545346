//! Tabletop drills: a built-in attack scenario ([`crate::loadgen::scenario`])
//! run through the configured rules, correlations and responsibility
//! matrix, step by step. The report says which findings each step raised,
//! how far into the attack (event time) and how fast (processing time),
//! who is paged (the owning team), which side owns the control, and which
//! expected detections did not fire: the gaps in the map, found before an
//! attacker finds them.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use chrono::DateTime;

use crate::analyze::{Analyzer, Scratch};
use crate::correlate::Stream;
use crate::detect::Finding;
use crate::detect::finding::SourceRef;
use crate::event::Decoder;
use crate::loadgen::scenario::{Scenario, Step};

/// What one step of a drill raised.
#[derive(Debug)]
pub struct StepResult<'s> {
    pub step: &'s Step,
    /// Findings whose evidence ends with this step's record.
    pub findings: Vec<Finding>,
    /// Expected here and not raised.
    pub missing: Vec<&'static str>,
    /// The time the step's record took through detection and correlation.
    pub processing: Duration,
}

/// The outcome of a drill.
#[derive(Debug)]
pub struct DrillReport<'s> {
    pub scenario: &'s Scenario,
    pub steps: Vec<StepResult<'s>>,
    /// Findings raised once time passed (absence rules), after the last step.
    pub after: Vec<Finding>,
    pub missing_after: Vec<&'static str>,
    /// Records the decoder refused (a scenario bug, reported, never hidden).
    pub undecodable: Vec<String>,
}

impl DrillReport<'_> {
    /// Every expected detection that did not fire.
    pub fn gaps(&self) -> Vec<&'static str> {
        self.steps
            .iter()
            .flat_map(|s| s.missing.iter().copied())
            .chain(self.missing_after.iter().copied())
            .collect()
    }

    pub fn findings(&self) -> impl Iterator<Item = &Finding> {
        self.steps
            .iter()
            .flat_map(|s| s.findings.iter())
            .chain(self.after.iter())
    }

    /// Event time from the first step to the first finding, if any fired.
    pub fn time_to_first_detection(&self) -> Option<i64> {
        let start = self.scenario.steps.first()?.time_ms;
        self.steps
            .iter()
            .find(|s| !s.findings.is_empty())
            .map(|s| s.step.time_ms - start)
    }
}

/// Runs `scenario` through `analyzer` on a fresh stream.
pub fn run<'s>(analyzer: &Analyzer, scenario: &'s Scenario) -> DrillReport<'s> {
    let decoder = Decoder::default();
    let mut stream = Stream::in_time_order();
    let mut scratch = Scratch::default();
    let mut raised: Vec<Finding> = Vec::new();
    let mut step_of: HashMap<String, usize> = HashMap::new();
    let mut processing = vec![Duration::ZERO; scenario.steps.len()];
    let mut undecodable = Vec::new();
    for (i, step) in scenario.steps.iter().enumerate() {
        for decoded in decoder.decode_owned(step.json.as_bytes()) {
            match decoded {
                Ok(event) => {
                    step_of.insert(event.event_id.to_string(), i);
                    let started = Instant::now();
                    analyzer.process(
                        &event,
                        SourceRef::Unknown,
                        &mut stream,
                        &mut scratch,
                        &mut raised,
                    );
                    processing[i] += started.elapsed();
                }
                Err((reason, detail)) => {
                    undecodable.push(format!("step {}: {reason:?}: {detail}", i + 1))
                }
            }
        }
    }
    // Let time pass until every absence rule is due, then close the stream.
    if let Some(end) = DateTime::from_timestamp_millis(scenario.end_ms() + 60_000) {
        analyzer
            .correlator()
            .advance_to(&mut stream, end, &mut raised);
    }
    analyzer.finish(&mut stream, &mut raised);

    let after_ids: BTreeSet<&str> = scenario.expect_after.iter().map(|(id, _)| *id).collect();
    let mut per_step: Vec<Vec<Finding>> = scenario.steps.iter().map(|_| Vec::new()).collect();
    let mut after = Vec::new();
    for finding in raised {
        let last = finding
            .evidence
            .iter()
            .filter_map(|e| step_of.get(&e.event_id).copied())
            .max();
        match last {
            Some(i) if !after_ids.contains(finding.rule_id.as_str()) => per_step[i].push(finding),
            _ => after.push(finding),
        }
    }
    // A step's expectation is met by a finding on that step only: one that
    // fires elsewhere is a different detection (too late, or by chance).
    let steps = scenario
        .steps
        .iter()
        .zip(per_step)
        .zip(processing)
        .map(|((step, findings), processing)| StepResult {
            missing: step
                .expect
                .iter()
                .copied()
                .filter(|id| !findings.iter().any(|f| f.rule_id == *id))
                .collect(),
            step,
            findings,
            processing,
        })
        .collect();
    let after_fired: BTreeSet<&str> = after.iter().map(|f| f.rule_id.as_str()).collect();
    let missing_after = scenario
        .expect_after
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !after_fired.contains(id))
        .collect();
    DrillReport {
        scenario,
        steps,
        after,
        missing_after,
        undecodable,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::correlate::CorrelationConfig;
    use crate::detect::loader::load_builtin_report;
    use crate::event::Cloud;
    use crate::loadgen::scenario::{ScenarioKind, Setting, build};
    use crate::matrix::Matrix;

    fn analyzer() -> Analyzer {
        let report = load_builtin_report().unwrap();
        let (analyzer, rejected) = Analyzer::build(
            report,
            Arc::new(Matrix::builtin()),
            CorrelationConfig::default(),
        );
        assert!(rejected.is_empty(), "{rejected:?}");
        analyzer
    }

    #[test]
    fn every_scenario_is_covered_by_the_builtin_pack() {
        for cloud in [Cloud::Aws, Cloud::Azure, Cloud::Gcp] {
            for kind in ScenarioKind::ALL {
                let scenario = build(kind, cloud, &Setting::default_for(cloud, 1_740_823_200_000));
                assert!(scenario.expected().count() >= 2, "{kind:?} {cloud:?}");
                let analyzer = analyzer();
                let report = run(&analyzer, &scenario);
                assert!(report.undecodable.is_empty(), "{:?}", report.undecodable);
                assert_eq!(report.gaps(), Vec::<&str>::new(), "{kind:?} on {cloud:?}");
                // Each expected finding is on its step, and pages the
                // payments team the bundled matrix names for the account.
                for step in &report.steps {
                    for id in &step.step.expect {
                        assert!(
                            step.findings.iter().any(|f| f.rule_id == *id),
                            "{kind:?} {cloud:?}: {id} not on step {:?}",
                            step.step.action
                        );
                    }
                }
                assert!(
                    report
                        .findings()
                        .all(|f| f.owner_team.as_deref() == Some("payments-platform")),
                    "{kind:?} {cloud:?}"
                );
            }
        }
    }

    #[test]
    fn a_missing_rule_is_reported_as_a_gap() {
        let mut report = load_builtin_report().unwrap();
        report
            .rules
            .retain(|r| r.meta.id != "aws.logging.cloudtrail_stopped");
        let (analyzer, _) = Analyzer::build(
            report,
            Arc::new(Matrix::builtin()),
            CorrelationConfig::default(),
        );
        let scenario = build(
            ScenarioKind::CompromisedKey,
            Cloud::Aws,
            &Setting::default_for(Cloud::Aws, 1_740_823_200_000),
        );
        let drill = run(&analyzer, &scenario);
        assert_eq!(drill.gaps(), vec!["aws.logging.cloudtrail_stopped"]);
        assert!(drill.time_to_first_detection().is_some());
    }
}
