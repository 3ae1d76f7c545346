//! Correlation rules: their YAML shape (a `correlations:` list in the same
//! files as single-event rules; documented in `config/rules/README.md`), the
//! parsed [`CorrelationDef`] whose steps may still name rules by id, and the
//! compiled [`Correlation`] the engine runs once those names are resolved.
//!
//! ```yaml
//! correlations:
//!   - id: aws.correlation.cloudtrail_cover_up
//!     title: CloudTrail stopped, a control changed, CloudTrail started again
//!     severity: critical
//!     domain: logging
//!     kind: sequence            # threshold | distinct | sequence | temporal | absence | session | silence
//!     within: 1h
//!     group_by: [event.principal.id]
//!     steps:
//!       - name: logging_off
//!         rules: [aws.logging.cloudtrail_stopped]
//!       - name: change
//!         customer_change: true
//!       - name: logging_on
//!         match: { service: cloudtrail.amazonaws.com, operation: StartLogging }
//!     tests:
//!       - name: stop, open a security group, start
//!         findings: 1
//!         events: [ {...}, {...}, {...} ]
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::detect::condition::FieldSource;
use crate::detect::finding::Severity;
use crate::detect::rule::{OneOrMany, RawMatch, Rule, RuleMeta, RuleOrigin, compile_match};
use crate::event::Cloud;
use crate::matrix::{Domain, Tier};

/// What a correlation looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// At least `count` events of the steps within `within`, per group
    /// (Sigma `event_count`).
    #[serde(alias = "event_count")]
    Threshold,
    /// At least `count` distinct values of `field` within `within`, per group
    /// (Sigma `value_count`).
    #[serde(alias = "value_count")]
    Distinct,
    /// Every step, in order, within `within` of the first (Sigma `temporal_ordered`).
    #[serde(alias = "temporal_ordered")]
    Sequence,
    /// Every step, in any order, within `within` of the first (Sigma `temporal`).
    Temporal,
    /// The first step, not followed by the second within `within`.
    Absence,
    /// The first step opens a window of `within`; every event of the second
    /// step in it joins one finding, reported when the window closes.
    Session,
    /// No event of the step for `within` after the last one, per group.
    Silence,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Threshold => "threshold",
            Kind::Distinct => "distinct",
            Kind::Sequence => "sequence",
            Kind::Temporal => "temporal",
            Kind::Absence => "absence",
            Kind::Session => "session",
            Kind::Silence => "silence",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCorrelation {
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub severity: Severity,
    #[serde(default)]
    pub domain: Option<Domain>,
    pub kind: Kind,
    /// A duration: `90s`, `15m`, `1h`, `1d`.
    pub within: String,
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Threshold and distinct: the count to reach.
    #[serde(default)]
    pub count: Option<u32>,
    /// Distinct: the field (or alias) whose distinct values are counted.
    #[serde(default)]
    pub field: Option<String>,
    /// Sequence: a field (or alias) whose value in later steps must differ
    /// from its value in the first (a new source IP, another account).
    #[serde(default)]
    pub differ: Option<String>,
    pub steps: Vec<RawStep>,
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
    #[serde(default)]
    pub tests: Vec<RawCorrelationTest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub name: String,
    /// Rule ids (globs allowed: `aws.identity.*`) whose matches are this step.
    #[serde(default)]
    pub rules: Option<OneOrMany<String>>,
    /// An inline match, as in single-event rules; `{}` is every event.
    #[serde(default, rename = "match")]
    pub matcher: Option<RawMatch>,
    /// The cloud of an inline match (default: the three).
    #[serde(default)]
    pub cloud: Option<Cloud>,
    /// Events of this step needed before it counts as done (sequence).
    #[serde(default)]
    pub count: Option<u32>,
    /// Only events that matched a rule on a control the matrix says the
    /// customer owns (or shares), that succeeded and changed something.
    #[serde(default)]
    pub customer_change: bool,
    /// Only events in accounts the matrix gives this data tier.
    #[serde(default)]
    pub tier: Option<Tier>,
    /// Alias → field for this step (when a group-by field is named
    /// differently in this step's events).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCorrelationTest {
    #[serde(default)]
    pub name: Option<String>,
    /// How many findings of this correlation the events must produce.
    pub findings: u32,
    /// How many events the (first) finding must cite as evidence.
    #[serde(default)]
    pub evidence: Option<u32>,
    /// Native records, in arrival order (which need not be event-time order).
    pub events: Vec<yaml_serde::Value>,
}

/// An embedded correlation test.
#[derive(Clone, Debug)]
pub struct CorrelationTest {
    pub name: String,
    pub findings: u32,
    pub evidence: Option<u32>,
    /// One JSON record per event, in arrival order.
    pub events: Vec<String>,
}

/// How a step selects its events, before rule names are resolved.
#[derive(Clone, Debug)]
pub enum Selector {
    /// Rule ids, Sigma names or globs over ids.
    Rules(Vec<String>),
    /// Compiled inline match: one hidden rule per cloud.
    Inline(Vec<Rule>),
    /// Every event that passes the step's filters (customer change, tier).
    Filters,
}

/// A group-by field (or the counted / differing field), per step.
#[derive(Clone, Debug)]
pub enum KeyField {
    Field(FieldSource),
    /// `event.person`: the person the matrix's identity links give the principal.
    Person,
}

impl KeyField {
    pub fn parse(text: &str) -> Result<KeyField, String> {
        if text == "event.person" || text == "person" {
            return Ok(KeyField::Person);
        }
        FieldSource::parse(text).map(KeyField::Field)
    }
}

#[derive(Clone, Debug)]
pub struct StepDef {
    pub name: String,
    pub selector: Selector,
    pub min_count: u32,
    pub customer_change: bool,
    pub tier: Option<Tier>,
    /// One per group-by name, in order.
    pub keys: Vec<KeyField>,
    /// The distinct or differ field, when the correlation has one.
    pub value: Option<KeyField>,
}

/// A parsed correlation whose rule references are not resolved yet.
#[derive(Clone, Debug)]
pub struct CorrelationDef {
    pub meta: RuleMeta,
    pub origin: RuleOrigin,
    pub kind: Kind,
    pub within_ms: i64,
    pub count: u32,
    pub group_by: Vec<String>,
    pub steps: Vec<StepDef>,
    /// Sigma `generate`: whether the referenced rules keep their own findings.
    pub generate: bool,
    pub tests: Vec<CorrelationTest>,
}

/// A compiled step: which rules feed it, and its filters.
#[derive(Clone, Debug)]
pub struct Step {
    pub name: String,
    pub rules: Vec<u32>,
    pub min_count: u32,
    pub customer_change: bool,
    pub tier: Option<Tier>,
    pub keys: Vec<KeyField>,
    pub value: Option<KeyField>,
    /// Selects by filters only: yields to a more specific step of the same
    /// correlation when an event matches both.
    pub generic: bool,
}

/// A compiled correlation.
#[derive(Clone, Debug)]
pub struct Correlation {
    pub meta: RuleMeta,
    pub kind: Kind,
    pub within_ms: i64,
    pub count: u32,
    pub group_by: Vec<String>,
    pub steps: Vec<Step>,
    pub tests: Vec<CorrelationTest>,
}

/// Parses `15m`, `1h`, `90s`, `2d`, `1h 30m`.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration (15m, 1h, 2d): {e}"))?;
    let ms = i64::try_from(duration.as_millis()).map_err(|_| format!("`{text}` is too long"))?;
    if ms <= 0 {
        return Err(format!("`{text}` must be longer than zero"));
    }
    Ok(ms)
}

/// The most steps a correlation may have (the engine keeps them in a bit set).
pub const MAX_STEPS: usize = 8;

/// Parses and checks one correlation of seamwatch's format.
pub fn parse(raw: RawCorrelation, path: &Path) -> Result<CorrelationDef, String> {
    if raw.id.trim().is_empty() || raw.id.contains(char::is_whitespace) {
        return Err("the id must be non-empty and without spaces".into());
    }
    let within_ms = parse_duration_ms(&raw.within)?;
    let kind = raw.kind;
    let step_range = match kind {
        Kind::Threshold | Kind::Distinct => 1..=MAX_STEPS,
        Kind::Sequence | Kind::Temporal => 2..=MAX_STEPS,
        Kind::Absence | Kind::Session => 2..=2,
        Kind::Silence => 1..=1,
    };
    if !step_range.contains(&raw.steps.len()) {
        return Err(format!(
            "a {} correlation takes {} to {} steps, not {}",
            kind.as_str(),
            step_range.start(),
            step_range.end(),
            raw.steps.len()
        ));
    }
    let count = match (kind, raw.count) {
        (Kind::Threshold | Kind::Distinct, Some(0)) => {
            return Err("count must be at least 1".into());
        }
        (Kind::Threshold | Kind::Distinct, Some(n)) => n,
        (Kind::Threshold | Kind::Distinct, None) => {
            return Err(format!("a {} correlation needs `count`", kind.as_str()));
        }
        (_, Some(_)) => {
            return Err(format!(
                "`count` belongs to threshold and distinct correlations (a step of a {} takes its own `count`)",
                kind.as_str()
            ));
        }
        (_, None) => 1,
    };
    let value_name = match (kind, raw.field, raw.differ) {
        (Kind::Distinct, Some(field), None) => Some(field),
        (Kind::Distinct, None, _) => return Err("a distinct correlation needs `field`".into()),
        (Kind::Sequence, None, differ) => differ,
        (_, Some(_), _) => return Err("`field` belongs to distinct correlations".into()),
        (_, None, Some(_)) => return Err("`differ` belongs to sequence correlations".into()),
        (_, None, None) => None,
    };
    let meta = RuleMeta {
        resolves: Vec::new(),
        id: raw.id.clone(),
        title: raw.title,
        description: raw.description,
        severity: raw.severity,
        domain: raw.domain,
        attack: raw.attack.into(),
        compliance: raw.compliance.into(),
        remediation: raw.remediation.map(Into::into),
        references: raw.references.into(),
        tags: raw.tags,
        author: None,
        name: None,
        file: path.to_owned(),
    };
    let mut steps = Vec::with_capacity(raw.steps.len());
    for (i, step) in raw.steps.into_iter().enumerate() {
        let name = step.name.clone();
        let parsed = parse_step(step, i, &meta, &raw.group_by, value_name.as_deref())
            .map_err(|e| format!("step `{name}`: {e}"))?;
        if steps.iter().any(|s: &StepDef| s.name == parsed.name) {
            return Err(format!("two steps are named `{}`", parsed.name));
        }
        steps.push(parsed);
    }
    if kind != Kind::Sequence && steps.iter().any(|s| s.min_count > 1) {
        return Err(format!(
            "a step `count` belongs to sequence correlations, not {}",
            kind.as_str()
        ));
    }
    let tests = raw
        .tests
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let events = t
                .events
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("test {}: {e}", i + 1))?;
            if events.is_empty() {
                return Err(format!("test {}: no events", i + 1));
            }
            Ok(CorrelationTest {
                name: t.name.unwrap_or_else(|| format!("test {}", i + 1)),
                findings: t.findings,
                evidence: t.evidence,
                events,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(CorrelationDef {
        meta,
        origin: RuleOrigin::Native,
        kind,
        within_ms,
        count,
        group_by: raw.group_by,
        steps,
        generate: true,
        tests,
    })
}

fn parse_step(
    step: RawStep,
    index: usize,
    meta: &RuleMeta,
    group_by: &[String],
    value_name: Option<&str>,
) -> Result<StepDef, String> {
    let selector = match (step.rules, step.matcher) {
        (Some(_), Some(_)) => return Err("takes `rules` or `match`, not both".into()),
        (Some(rules), None) => {
            if step.cloud.is_some() {
                return Err("`cloud` goes with `match`".into());
            }
            Selector::Rules(rules.into_vec())
        }
        (None, Some(matcher)) => {
            let (services, operations, outcomes, condition) = compile_match(matcher, true)?;
            let clouds = match step.cloud {
                Some(cloud) => vec![cloud],
                None => vec![Cloud::Aws, Cloud::Azure, Cloud::Gcp],
            };
            Selector::Inline(
                clouds
                    .into_iter()
                    .map(|cloud| Rule {
                        meta: RuleMeta {
                            resolves: Vec::new(),
                            id: format!("{}#{}.{}", meta.id, step.name, cloud.as_str()),
                            title: format!("{} (step {})", meta.title, step.name),
                            description: String::new(),
                            severity: meta.severity,
                            domain: meta.domain,
                            attack: Default::default(),
                            compliance: Default::default(),
                            remediation: None,
                            references: Default::default(),
                            tags: Vec::new(),
                            author: None,
                            name: None,
                            file: meta.file.clone(),
                        },
                        origin: RuleOrigin::Native,
                        cloud,
                        services: services.clone(),
                        operations: operations.clone(),
                        principal_types: Vec::new(),
                        outcomes,
                        condition: condition.clone(),
                        tests: Vec::new(),
                        emit: false,
                    })
                    .collect(),
            )
        }
        (None, None) if step.customer_change || step.tier.is_some() => Selector::Filters,
        (None, None) => {
            return Err("needs `rules`, `match` or a filter (`customer_change`, `tier`)".into());
        }
    };
    if step.count == Some(0) {
        return Err("count must be at least 1".into());
    }
    let field = |name: &str| -> Result<KeyField, String> {
        let path = step.fields.get(name).map(String::as_str).unwrap_or(name);
        KeyField::parse(path).map_err(|e| format!("field `{name}`: {e}"))
    };
    for alias in step.fields.keys() {
        if !group_by.contains(alias) && value_name != Some(alias) {
            return Err(format!(
                "`fields` names `{alias}`, which is neither a group-by field nor the counted field"
            ));
        }
    }
    let name = if step.name.trim().is_empty() {
        format!("step{}", index + 1)
    } else {
        step.name
    };
    Ok(StepDef {
        name,
        selector,
        min_count: step.count.unwrap_or(1),
        customer_change: step.customer_change,
        tier: step.tier,
        keys: group_by
            .iter()
            .map(|name| field(name))
            .collect::<Result<_, _>>()?,
        value: value_name.map(field).transpose()?,
    })
}

/// Resolves the steps' rule references against the loaded rules; appends the
/// steps' hidden inline rules to `rules`. Rules a Sigma correlation uses
/// with `generate: false` stop emitting findings of their own.
pub fn resolve(defs: Vec<CorrelationDef>, rules: &mut Vec<Rule>) -> ResolveOutcome {
    let mut outcome = ResolveOutcome::default();
    for def in defs {
        match resolve_one(def.clone(), rules) {
            Ok(correlation) => outcome.correlations.push(correlation),
            Err(reason) => outcome.rejected.push((def.meta.id, reason)),
        }
    }
    outcome
}

#[derive(Debug, Default)]
pub struct ResolveOutcome {
    pub correlations: Vec<Correlation>,
    /// (correlation id, reason)
    pub rejected: Vec<(String, String)>,
}

fn resolve_one(def: CorrelationDef, rules: &mut Vec<Rule>) -> Result<Correlation, String> {
    let mut steps = Vec::with_capacity(def.steps.len());
    let mut silenced = Vec::new();
    for step in def.steps {
        let (indices, generic) = match step.selector {
            Selector::Rules(patterns) => {
                let mut indices = Vec::new();
                for pattern in &patterns {
                    let glob = globset::Glob::new(pattern)
                        .map_err(|e| format!("step `{}`: `{pattern}`: {e}", step.name))?
                        .compile_matcher();
                    let before = indices.len();
                    for (i, rule) in rules.iter().enumerate() {
                        let id = &rule.meta.id;
                        let hit = glob.is_match(id)
                            || id.strip_prefix("sigma.") == Some(pattern.as_str())
                            || rule.meta.name.as_deref() == Some(pattern.as_str());
                        if hit && !id.contains('#') {
                            indices.push(i as u32);
                        }
                    }
                    if indices.len() == before {
                        return Err(format!(
                            "step `{}`: no loaded rule is `{pattern}`",
                            step.name
                        ));
                    }
                }
                indices.sort_unstable();
                indices.dedup();
                if !def.generate {
                    silenced.extend(indices.iter().copied());
                }
                (indices, false)
            }
            Selector::Inline(inline) => {
                let first = rules.len() as u32;
                let n = inline.len() as u32;
                rules.extend(inline);
                ((first..first + n).collect(), false)
            }
            Selector::Filters => (Vec::new(), true),
        };
        steps.push(Step {
            name: step.name,
            rules: indices,
            min_count: step.min_count,
            customer_change: step.customer_change,
            tier: step.tier,
            keys: step.keys,
            value: step.value,
            generic,
        });
    }
    for i in silenced {
        rules[i as usize].emit = false;
    }
    Ok(Correlation {
        meta: def.meta,
        kind: def.kind,
        within_ms: def.within_ms,
        count: def.count,
        group_by: def.group_by,
        steps,
        tests: def.tests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_yaml(yaml: &str) -> Result<CorrelationDef, String> {
        #[derive(Deserialize)]
        struct File {
            correlations: Vec<RawCorrelation>,
        }
        let file: File = yaml_serde::from_str(yaml).map_err(|e| e.to_string())?;
        parse(
            file.correlations.into_iter().next().unwrap(),
            Path::new("t.yaml"),
        )
    }

    const BASE: &str = "correlations:\n  - id: t\n    title: t\n    severity: high\n    kind: threshold\n    within: 10m\n    count: 3\n    group_by: [event.principal.id]\n    steps:\n      - name: denied\n        match: { outcome: denied }\n";

    #[test]
    fn a_threshold_parses_with_an_inline_step_per_cloud() {
        let def = parse_yaml(BASE).unwrap();
        assert_eq!(def.within_ms, 600_000);
        assert_eq!(def.count, 3);
        let Selector::Inline(rules) = &def.steps[0].selector else {
            panic!("inline expected")
        };
        assert_eq!(rules.len(), 3);
        assert!(rules.iter().all(|r| !r.emit));
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (BASE.replace("    count: 3\n", ""), "needs `count`"),
            (BASE.replace("10m", "soon"), "not a duration"),
            (
                BASE.replace("kind: threshold", "kind: absence"),
                "takes 2 to 2 steps",
            ),
            (
                BASE.replace(
                    "match: { outcome: denied }",
                    "rules: [x]\n        match: {}",
                ),
                "not both",
            ),
            (
                BASE.replace(
                    "match: { outcome: denied }",
                    "match: {}\n        fields: { nope: a.b }",
                ),
                "neither a group-by field",
            ),
            (
                BASE.replace("event.principal.id", "event.nope"),
                "unknown event field",
            ),
        ];
        for (yaml, expected) in cases {
            let err = parse_yaml(&yaml).unwrap_err();
            assert!(err.contains(expected), "{err} (expected {expected})");
        }
    }

    #[test]
    fn references_resolve_by_id_glob_and_fail_when_unknown() {
        let mut rules = crate::detect::loader::load_builtin().unwrap();
        let yaml = BASE.replace(
            "match: { outcome: denied }",
            "rules: [\"aws.logging.cloudtrail_*\"]",
        );
        let def = parse_yaml(&yaml).unwrap();
        let outcome = resolve(vec![def], &mut rules);
        assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
        let step = &outcome.correlations[0].steps[0];
        assert!(step.rules.len() >= 3);
        assert!(step.rules.iter().all(|&i| {
            rules[i as usize]
                .meta
                .id
                .starts_with("aws.logging.cloudtrail_")
        }));
        let missing =
            parse_yaml(&BASE.replace("match: { outcome: denied }", "rules: [no.such]")).unwrap();
        let outcome = resolve(vec![missing], &mut rules);
        assert!(
            outcome.rejected[0]
                .1
                .contains("no loaded rule is `no.such`")
        );
    }
}
