//! seamwatch's rule format (YAML; documented in `config/rules/README.md`):
//! raw serde shapes, and their compilation into [`Rule`]s.
//!
//! ```yaml
//! rules:
//!   - id: aws.logging.cloudtrail_stopped
//!     title: CloudTrail logging stopped
//!     severity: high
//!     cloud: aws
//!     domain: logging
//!     match:
//!       service: cloudtrail.amazonaws.com
//!       operation: [StopLogging, DeleteTrail]
//!       where:
//!         - field: requestParameters.name
//!           exists: true
//!     attack: [T1562.008]
//!     compliance: [CIS AWS 3.1]
//!     remediation: Start logging again and find out who stopped it.
//!     tests:
//!       - expect: match
//!         event: { eventSource: cloudtrail.amazonaws.com, eventName: StopLogging, ... }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::condition::{CmpOp, Condition, FieldSource, Matcher, Quantifier, scalar_text};
use super::finding::Severity;
use crate::correlate::rule::CorrelationDef;
use crate::event::{Cloud, Outcome};
use crate::matrix::Domain;

/// Why rules could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// A value or a list of values.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    #[serde(default)]
    pub rules: Vec<RawRule>,
    /// Correlation rules (see `crate::correlate::rule`).
    #[serde(default)]
    pub correlations: Vec<crate::correlate::rule::RawCorrelation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub severity: Severity,
    pub cloud: Cloud,
    pub domain: Domain,
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    #[serde(default)]
    pub attack: Vec<String>,
    #[serde(default)]
    pub compliance: Vec<String>,
    #[serde(default)]
    pub remediation: Option<String>,
    #[serde(default)]
    pub references: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Rules whose open alerts a finding of this rule closes.
    #[serde(default)]
    pub resolves: Vec<String>,
    #[serde(default)]
    pub tests: Vec<RawTest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    pub service: Option<OneOrMany<String>>,
    #[serde(default)]
    pub operation: Option<OneOrMany<String>>,
    /// Default: `success`. `any` matches every outcome.
    #[serde(default)]
    pub outcome: Option<OneOrMany<String>>,
    #[serde(default, rename = "where")]
    pub conditions: Vec<RawCondition>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCondition {
    pub field: Option<String>,
    pub any_of: Option<Vec<RawCondition>>,
    pub all_of: Option<Vec<RawCondition>>,
    /// A list (native path) whose elements are tested one at a time with `where`.
    pub each: Option<String>,
    #[serde(rename = "where")]
    pub each_where: Option<Vec<RawCondition>>,
    #[serde(alias = "one_of")]
    pub equals: Option<OneOrMany<yaml_serde::Value>>,
    pub contains: Option<OneOrMany<String>>,
    pub prefix: Option<OneOrMany<String>>,
    pub suffix: Option<OneOrMany<String>>,
    pub regex: Option<String>,
    pub cidr: Option<OneOrMany<String>>,
    pub exists: Option<bool>,
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
    /// Every value of the field must match (default: any value).
    #[serde(default)]
    pub all: bool,
    #[serde(default)]
    pub negate: bool,
    #[serde(default)]
    pub case_sensitive: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTest {
    #[serde(default)]
    pub name: Option<String>,
    pub expect: Expect,
    /// The native record, as YAML (or inline JSON, which is YAML too).
    pub event: yaml_serde::Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Match,
    NoMatch,
}

/// Outcomes a rule accepts, as a bit set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutcomeSet(u8);

impl OutcomeSet {
    pub const ANY: OutcomeSet = OutcomeSet(0b1111);
    pub const SUCCESS: OutcomeSet = OutcomeSet(1);

    fn bit(outcome: Outcome) -> u8 {
        match outcome {
            Outcome::Success => 1,
            Outcome::Denied => 2,
            Outcome::Failed => 4,
            Outcome::Pending => 8,
        }
    }

    pub fn contains(self, outcome: Outcome) -> bool {
        self.0 & Self::bit(outcome) != 0
    }

    fn parse(names: Vec<String>) -> Result<OutcomeSet, String> {
        let mut bits = 0;
        for name in names {
            bits |= match name.as_str() {
                "any" => Self::ANY.0,
                "success" => 1,
                "denied" => 2,
                "failed" => 4,
                "pending" => 8,
                other => {
                    return Err(format!(
                        "unknown outcome `{other}` (any, success, denied, failed, pending)"
                    ));
                }
            };
        }
        Ok(OutcomeSet(bits))
    }
}

/// Where a rule came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleOrigin {
    Native,
    Sigma,
}

/// A rule's descriptive metadata, copied into its findings.
#[derive(Clone, Debug)]
pub struct RuleMeta {
    pub id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    pub domain: Option<Domain>,
    // Shared with every finding of the rule (a count, not a copy, each).
    pub attack: Arc<[String]>,
    pub compliance: Arc<[String]>,
    pub remediation: Option<Arc<str>>,
    pub references: Arc<[String]>,
    pub tags: Vec<String>,
    pub author: Option<Arc<str>>,
    /// Sigma's `name` attribute, by which correlation rules may refer to a rule.
    pub name: Option<String>,
    /// Rules whose open alerts a finding of this rule closes (logging
    /// restarted closes "logging stopped" for the same account and resource).
    pub resolves: Vec<String>,
    pub file: PathBuf,
}

/// An embedded rule test: a native record and the expected verdict.
#[derive(Clone, Debug)]
pub struct RuleTest {
    pub name: String,
    pub expect: Expect,
    /// The record as JSON text.
    pub event_json: String,
}

/// A compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    pub meta: RuleMeta,
    pub origin: RuleOrigin,
    pub cloud: Cloud,
    /// Lower-cased; empty means any service.
    pub services: Vec<String>,
    /// Lower-cased; empty means any operation.
    pub operations: Vec<String>,
    /// The identity types (CloudTrail `userIdentity.type`) the rule needs,
    /// lower-cased; empty means any. Indexes a rule that fixes neither
    /// service nor operation, which every event would otherwise check.
    pub principal_types: Vec<String>,
    pub outcomes: OutcomeSet,
    pub condition: Condition,
    pub tests: Vec<RuleTest>,
    /// Whether a match is a finding of its own. Steps of correlation rules
    /// (and Sigma rules a correlation uses with `generate: false`) only feed
    /// the correlator.
    pub emit: bool,
}

impl Rule {
    pub fn id(&self) -> &str {
        &self.meta.id
    }
}

/// Parses one YAML file of native rules (correlations are ignored).
pub fn parse_rule_file(text: &str, path: &Path) -> Result<Vec<Rule>, RuleError> {
    parse_rule_document(text, path).map(|(rules, _)| rules)
}

/// Parses one YAML file of native rules and correlation rules.
pub fn parse_rule_document(
    text: &str,
    path: &Path,
) -> Result<(Vec<Rule>, Vec<CorrelationDef>), RuleError> {
    let invalid = |message: String| RuleError::Invalid {
        path: path.to_owned(),
        message,
    };
    let file: RuleFile = yaml_serde::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let rules = file
        .rules
        .into_iter()
        .map(|raw| {
            let id = raw.id.clone();
            compile_rule(raw, path).map_err(|e| invalid(format!("rule `{id}`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let correlations = file
        .correlations
        .into_iter()
        .map(|raw| {
            let id = raw.id.clone();
            crate::correlate::rule::parse(raw, path)
                .map_err(|e| invalid(format!("correlation `{id}`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((rules, correlations))
}

fn compile_rule(raw: RawRule, path: &Path) -> Result<Rule, String> {
    if raw.id.trim().is_empty() || raw.id.contains(char::is_whitespace) {
        return Err("the id must be non-empty and without spaces".into());
    }
    let (services, operations, outcomes, condition) = compile_match(raw.matcher, false)?;
    let tests = raw
        .tests
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let event_json =
                serde_json::to_string(&t.event).map_err(|e| format!("test {}: {e}", i + 1))?;
            Ok(RuleTest {
                name: t.name.unwrap_or_else(|| format!("test {}", i + 1)),
                expect: t.expect,
                event_json,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Rule {
        meta: RuleMeta {
            id: raw.id,
            title: raw.title,
            description: raw.description,
            severity: raw.severity,
            domain: Some(raw.domain),
            attack: raw.attack.into(),
            compliance: raw.compliance.into(),
            remediation: raw.remediation.map(Into::into),
            references: raw.references.into(),
            tags: raw.tags,
            author: None,
            name: None,
            resolves: raw.resolves,
            file: path.to_owned(),
        },
        origin: RuleOrigin::Native,
        cloud: raw.cloud,
        services,
        operations,
        principal_types: Vec::new(),
        outcomes,
        condition,
        tests,
        emit: true,
    })
}

/// What a `match:` block compiles to: services and operations (lower-cased,
/// for the index), accepted outcomes, and the field conditions.
pub type CompiledMatch = (Vec<String>, Vec<String>, OutcomeSet, Condition);

/// Compiles a `match:` block. An empty block (every event) is an error in a
/// rule, but a valid correlation step (`allow_empty`).
pub fn compile_match(matcher: RawMatch, allow_empty: bool) -> Result<CompiledMatch, String> {
    let lower = |values: Option<OneOrMany<String>>| -> Vec<String> {
        values
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.to_ascii_lowercase())
            .collect()
    };
    let services = lower(matcher.service);
    let operations = lower(matcher.operation);
    let outcomes = match matcher.outcome {
        Some(names) => OutcomeSet::parse(names.into_vec())?,
        None => OutcomeSet::SUCCESS,
    };
    let conditions = matcher
        .conditions
        .into_iter()
        .map(compile_condition)
        .collect::<Result<Vec<_>, _>>()?;
    if !allow_empty && services.is_empty() && operations.is_empty() && conditions.is_empty() {
        return Err("match needs a service, an operation or a condition".into());
    }
    Ok((services, operations, outcomes, Condition::AllOf(conditions)))
}

fn strings(values: OneOrMany<String>) -> Vec<String> {
    values.into_vec()
}

fn boxed(values: Vec<String>) -> Vec<Box<str>> {
    values.into_iter().map(String::into_boxed_str).collect()
}

pub fn compile_condition(raw: RawCondition) -> Result<Condition, String> {
    let negate = raw.negate;
    let condition = if let Some(path) = raw.each {
        let source = FieldSource::parse(&path)?;
        if !matches!(source, FieldSource::Native(_)) {
            return Err(format!("`each: {path}` needs a native path to a list"));
        }
        let Some(inner) = raw.each_where else {
            return Err(format!(
                "`each: {path}` needs `where:` conditions on the element"
            ));
        };
        let inner = inner
            .into_iter()
            .map(compile_condition)
            .collect::<Result<Vec<_>, _>>()?;
        Condition::Each {
            path: source,
            quantifier: if raw.all {
                Quantifier::All
            } else {
                Quantifier::Any
            },
            inner: Box::new(Condition::AllOf(inner)),
        }
    } else if let Some(any) = raw.any_of {
        Condition::AnyOf(
            any.into_iter()
                .map(compile_condition)
                .collect::<Result<_, _>>()?,
        )
    } else if let Some(all) = raw.all_of {
        Condition::AllOf(
            all.into_iter()
                .map(compile_condition)
                .collect::<Result<_, _>>()?,
        )
    } else {
        let Some(field) = raw.field else {
            return Err("a condition needs `field` (or `any_of` / `all_of`)".into());
        };
        let source = FieldSource::parse(&field)?;
        let cs = raw.case_sensitive;
        let mut matchers = Vec::new();
        if let Some(values) = raw.equals {
            // `OneOrMany<Value>` reads a YAML list as one `Value::Sequence`: flatten it.
            let values: Vec<yaml_serde::Value> = values
                .into_vec()
                .into_iter()
                .flat_map(|v| match v {
                    yaml_serde::Value::Sequence(items) => items,
                    other => vec![other],
                })
                .collect();
            let values = values
                .iter()
                .map(|v| {
                    scalar_text(v).map(|s| s.into_owned()).ok_or_else(|| {
                        format!("`{field}`: equals takes strings, numbers or booleans")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            matchers.push(Matcher::Equals {
                values: boxed(values),
                case_sensitive: cs,
            });
        }
        if let Some(values) = raw.contains {
            matchers.push(Matcher::contains(&strings(values), cs)?);
        }
        if let Some(values) = raw.prefix {
            matchers.push(Matcher::Prefix {
                values: boxed(strings(values)),
                case_sensitive: cs,
            });
        }
        if let Some(values) = raw.suffix {
            matchers.push(Matcher::Suffix {
                values: boxed(strings(values)),
                case_sensitive: cs,
            });
        }
        if let Some(pattern) = raw.regex {
            matchers.push(Matcher::regex(&pattern, cs)?);
        }
        if let Some(networks) = raw.cidr {
            matchers.push(Matcher::cidr(&strings(networks))?);
        }
        if let Some(exists) = raw.exists {
            matchers.push(Matcher::Exists(exists));
        }
        for (op, bound) in [
            (CmpOp::Gt, raw.gt),
            (CmpOp::Gte, raw.gte),
            (CmpOp::Lt, raw.lt),
            (CmpOp::Lte, raw.lte),
        ] {
            if let Some(bound) = bound {
                matchers.push(Matcher::Compare(op, bound));
            }
        }
        let quantifier = if raw.all {
            Quantifier::All
        } else {
            Quantifier::Any
        };
        let mut conditions: Vec<Condition> = matchers
            .into_iter()
            .map(|matcher| Condition::Field {
                source: source.clone(),
                matcher,
                quantifier,
            })
            .collect();
        match conditions.len() {
            0 => {
                return Err(format!(
                    "condition on `{field}` has no operator (equals, contains, prefix, suffix, regex, cidr, exists, gt, gte, lt, lte)"
                ));
            }
            1 => conditions.remove(0),
            // Several operators on one field all apply (e.g. gte and lte).
            _ => Condition::AllOf(conditions),
        }
    };
    Ok(if negate {
        Condition::Not(Box::new(condition))
    } else {
        condition
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reported by the rule authors: a list under `equals` was rejected.
    #[test]
    fn equals_takes_a_list() {
        let yaml = "rules:\n  - id: t\n    title: t\n    severity: low\n    cloud: aws\n    domain: data\n    match:\n      service: s3.amazonaws.com\n      where:\n        - field: requestParameters.x\n          equals: [a, 2, true]\n        - field: requestParameters.y\n          one_of: [b]\n";
        let rules = parse_rule_file(yaml, Path::new("t.yaml")).unwrap();
        let Condition::AllOf(conditions) = &rules[0].condition else {
            panic!()
        };
        let Condition::Field {
            matcher: Matcher::Equals { values, .. },
            ..
        } = &conditions[0]
        else {
            panic!()
        };
        assert_eq!(
            values.iter().map(|v| &**v).collect::<Vec<_>>(),
            ["a", "2", "true"]
        );
    }
}

#[cfg(test)]
mod each_tests {
    use super::*;

    #[test]
    fn each_groups_parse_and_require_where() {
        let ok = "rules:\n  - id: t\n    title: t\n    severity: low\n    cloud: gcp\n    domain: identity\n    match:\n      service: cloudresourcemanager.googleapis.com\n      where:\n        - each: protoPayload.serviceData.policyDelta.bindingDeltas\n          where:\n            - field: role\n              equals: roles/owner\n            - field: action\n              equals: ADD\n";
        let rules = parse_rule_file(ok, Path::new("t.yaml")).unwrap();
        let Condition::AllOf(conditions) = &rules[0].condition else {
            panic!()
        };
        assert!(matches!(
            conditions[0],
            Condition::Each {
                quantifier: Quantifier::Any,
                ..
            }
        ));
        let missing = ok.replace("          where:\n            - field: role\n              equals: roles/owner\n            - field: action\n              equals: ADD\n", "");
        let err = parse_rule_file(&missing, Path::new("t.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs `where:`"), "{err}");
    }
}
