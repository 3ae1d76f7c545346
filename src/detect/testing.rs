//! Running rules' embedded tests: each test's native record is decoded with
//! the real decoder and run through the real index and conditions, so a test
//! fails when the rule names a wrong operation as surely as when a condition
//! is wrong.

use super::engine::RuleSet;
use super::rule::{Expect, Rule};
use crate::event::Decoder;

/// One test's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    pub rule_id: String,
    pub test: String,
    pub expect: Expect,
    pub passed: bool,
    /// Why it failed.
    pub detail: Option<String>,
}

/// Runs every embedded test of every rule in `set`.
pub fn run_rule_tests(set: &RuleSet) -> Vec<TestResult> {
    let decoder = Decoder::default();
    let mut results = Vec::new();
    for rule in set.rules() {
        for test in &rule.tests {
            let (passed, detail) = run_one(set, rule, &decoder, &test.event_json, test.expect);
            results.push(TestResult {
                rule_id: rule.meta.id.clone(),
                test: test.name.clone(),
                expect: test.expect,
                passed,
                detail,
            });
        }
    }
    results
}

fn run_one(
    set: &RuleSet,
    rule: &Rule,
    decoder: &Decoder,
    json: &str,
    expect: Expect,
) -> (bool, Option<String>) {
    let decoded = decoder.decode_owned(json.as_bytes());
    let event = match decoded.as_slice() {
        [Ok(event)] => event,
        [Err((reason, detail))] => {
            return (
                false,
                Some(format!("the test event does not parse: {reason}: {detail}")),
            );
        }
        _ => {
            return (
                false,
                Some(format!(
                    "the test event holds {} records, not one",
                    decoded.len()
                )),
            );
        }
    };
    let mut matched = false;
    set.matching(event, |r| matched |= r.meta.id == rule.meta.id);
    let passed = matched == (expect == Expect::Match);
    let detail = (!passed).then(|| {
        if matched {
            "matched, but the test expects no match".to_owned()
        } else {
            format!(
                "did not match (event: {} {} {}, outcome {})",
                event.cloud,
                event.service,
                event.operation,
                event.outcome.as_str()
            )
        }
    });
    (passed, detail)
}
