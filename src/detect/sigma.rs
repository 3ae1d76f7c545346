//! SigmaHQ rules, compiled into seamwatch [`Rule`]s.
//!
//! Rules are parsed with `rsigma-parser` (no hand-written grammar), then
//! compiled: each named detection becomes a [`Condition`], the condition
//! expression combines them, and Sigma's field names are mapped to native
//! fields or to normalized event fields per log source:
//!
//! | logsource | cloud | field names |
//! |---|---|---|
//! | `aws` / `cloudtrail` | aws | native CloudTrail names, as they are |
//! | `azure` / `activitylogs` | azure | native names; Log Analytics columns (`OperationNameValue`, `CategoryValue`, `ResourceProviderValue`, `ResourceId`, …) mapped |
//! | `azure` / `auditlogs` | azure | Entra ID audit records, as the same diagnostic-setting export delivers them (`properties.*`, `Category`, `OperationName`, `TargetResources.*`, …) |
//! | `gcp` / `gcp.audit` | gcp | ECS-style `gcp.audit.*` names and `data.protoPayload.*` mapped to `protoPayload.*` |
//!
//! Matching follows Sigma: strings compare case-insensitively, `*` and `?` are
//! wildcards, a list means any value, `|all` means every value, `null` means
//! absent, `|re` is a case-sensitive regular expression, `|fieldref` compares
//! two fields. Rules that use what seamwatch cannot evaluate (`base64`, `N of`,
//! unknown log sources) are rejected with the reason, never half-loaded.
//!
//! Indexing: when a selection the condition requires fixes `eventName`
//! (`operationName`, `methodName`) or `eventSource` to plain values, the rule is
//! indexed by them; otherwise it sits in its cloud's fallback list.

use std::path::Path;

use rsigma_parser::value::{SpecialChar, StringPart};
use rsigma_parser::{
    ConditionExpr, ConditionOperator, CorrelationCondition, CorrelationRule, CorrelationType,
    Detection, DetectionItem, Level, Modifier, Quantifier as SigmaQuantifier, SelectorPattern,
    SigmaRule, SigmaValue, WindowMode,
};

use super::condition::{CmpOp, Condition, EventField, FieldSource, Matcher, Quantifier};
use super::finding::Severity;
use super::rule::{OutcomeSet, Rule, RuleMeta, RuleOrigin};
use crate::correlate::rule::{CorrelationDef, KeyField, Kind, Selector, StepDef};
use crate::event::Cloud;
use crate::event::field::FieldPath;
use crate::matrix::Domain;

/// One file's outcome: compiled rules, and rejected ones with the reason.
#[derive(Debug, Default)]
pub struct SigmaLoad {
    pub rules: Vec<Rule>,
    pub correlations: Vec<CorrelationDef>,
    pub rejected: Vec<(String, String)>,
}

/// Parses and compiles one Sigma YAML file (it may hold several documents).
pub fn load_sigma_text(text: &str, path: &Path) -> SigmaLoad {
    let mut load = SigmaLoad::default();
    let collection = match rsigma_parser::parse_sigma_yaml(text) {
        Ok(collection) => collection,
        Err(e) => {
            load.rejected
                .push((path.display().to_string(), format!("not a Sigma rule: {e}")));
            return load;
        }
    };
    for error in &collection.errors {
        load.rejected
            .push((path.display().to_string(), error.clone()));
    }
    for rule in &collection.rules {
        let name = rule.id.clone().unwrap_or_else(|| rule.title.clone());
        match compile(rule, path) {
            Ok(compiled) => load.rules.push(compiled),
            Err(reason) => load.rejected.push((name, reason)),
        }
    }
    for correlation in &collection.correlations {
        let name = correlation
            .id
            .clone()
            .unwrap_or_else(|| correlation.title.clone());
        match compile_correlation(correlation, &collection.rules, path) {
            Ok(def) => load.correlations.push(def),
            Err(reason) => load.rejected.push((name, reason)),
        }
    }
    load
}

/// A Sigma correlation rule, as a [`CorrelationDef`] whose steps are the
/// referenced rules. Group-by and counted fields are mapped with the field
/// mapping of the referenced rule's log source when that rule is in the same
/// file (aliases give a field per rule); otherwise they are native paths.
fn compile_correlation(
    c: &CorrelationRule,
    file_rules: &[SigmaRule],
    path: &Path,
) -> Result<CorrelationDef, String> {
    let kind = match c.correlation_type {
        CorrelationType::EventCount => Kind::Threshold,
        CorrelationType::ValueCount => Kind::Distinct,
        CorrelationType::Temporal => Kind::Temporal,
        CorrelationType::TemporalOrdered => Kind::Sequence,
        other => {
            return Err(format!(
                "`{}` correlations are not supported (event_count, value_count, temporal and temporal_ordered are)",
                other.as_str()
            ));
        }
    };
    if c.window != WindowMode::Sliding {
        return Err(format!(
            "`window: {}` is not supported (sliding windows are)",
            c.window.as_str()
        ));
    }
    if c.rules.is_empty() {
        return Err("the correlation names no rules".into());
    }
    let within_ms = i64::try_from(c.timespan.seconds)
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .filter(|&ms| ms > 0)
        .ok_or_else(|| format!("bad timespan `{}`", c.timespan.original))?;
    let (count, field) = match &c.condition {
        CorrelationCondition::Threshold {
            predicates, field, ..
        } => {
            let mut at_least = None;
            for (op, n) in predicates {
                let n = u32::try_from(*n).map_err(|_| "threshold too large".to_string())?;
                at_least = Some(match op {
                    ConditionOperator::Gte => n,
                    ConditionOperator::Gt => n.saturating_add(1),
                    other => {
                        return Err(format!(
                            "condition `{other:?}` is not supported: seamwatch fires when a count reaches a threshold (gte, gt)"
                        ));
                    }
                });
            }
            (at_least, field.as_ref().and_then(|f| f.first().cloned()))
        }
        CorrelationCondition::Extended(_) => {
            return Err("boolean conditions over rules are not supported".into());
        }
    };
    let count = match kind {
        Kind::Threshold | Kind::Distinct => {
            count.ok_or("a count condition (gte) is required")?.max(1)
        }
        _ => {
            if count.is_some_and(|n| n as usize != c.rules.len()) {
                return Err(
                    "temporal conditions other than `gte: <number of rules>` are not supported"
                        .into(),
                );
            }
            1
        }
    };
    if kind == Kind::Distinct && field.is_none() {
        return Err("value_count needs `condition.field`".into());
    }
    let id = c.id.clone().unwrap_or_else(|| format!("sigma:{}", c.title));
    let source_of = |reference: &str| {
        file_rules
            .iter()
            .find(|r| r.id.as_deref() == Some(reference) || r.name.as_deref() == Some(reference))
            .and_then(|r| Source::of(r).ok())
    };
    let map = |reference: &str, name: &str| -> Result<KeyField, String> {
        let name = c
            .aliases
            .iter()
            .find(|a| a.alias == name)
            .and_then(|a| a.mapping.get(reference))
            .map(String::as_str)
            .unwrap_or(name);
        match source_of(reference) {
            Some(source) => source.map_field(name).map(KeyField::Field),
            None => KeyField::parse(name),
        }
    };
    let mut steps = Vec::new();
    for reference in &c.rules {
        steps.push(StepDef {
            name: reference.clone(),
            selector: Selector::Rules(vec![reference.clone()]),
            min_count: 1,
            customer_change: false,
            tier: None,
            keys: c
                .group_by
                .iter()
                .map(|g| map(reference, g))
                .collect::<Result<_, _>>()?,
            value: field.as_deref().map(|f| map(reference, f)).transpose()?,
        });
    }
    if steps.len() > crate::correlate::rule::MAX_STEPS {
        return Err("too many rules".into());
    }
    Ok(CorrelationDef {
        meta: RuleMeta {
            resolves: Vec::new(),
            id: format!("sigma.{id}"),
            title: c.title.clone(),
            description: c.description.clone().unwrap_or_default(),
            severity: severity(c.level),
            domain: domain(&c.tags),
            attack: attack_ids(&c.tags).into(),
            compliance: Default::default(),
            remediation: None,
            references: c.references.clone().into(),
            tags: c.tags.clone(),
            author: c.author.clone().map(Into::into),
            name: c.name.clone(),
            file: path.to_owned(),
        },
        origin: RuleOrigin::Sigma,
        kind,
        within_ms,
        count,
        group_by: c.group_by.clone(),
        steps,
        generate: c.generate,
        tests: Vec::new(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    CloudTrail,
    ActivityLogs,
    EntraAuditLogs,
    GcpAudit,
}

impl Source {
    fn of(rule: &SigmaRule) -> Result<Source, String> {
        let product = rule
            .logsource
            .product
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase();
        let service = rule
            .logsource
            .service
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase();
        match (product.as_str(), service.as_str()) {
            ("aws", "cloudtrail") => Ok(Source::CloudTrail),
            ("azure", "activitylogs") => Ok(Source::ActivityLogs),
            ("azure", "auditlogs") => Ok(Source::EntraAuditLogs),
            ("gcp", "gcp.audit") => Ok(Source::GcpAudit),
            _ => Err(format!(
                "unsupported logsource product `{product}` service `{service}`"
            )),
        }
    }

    fn cloud(self) -> Cloud {
        match self {
            Source::CloudTrail => Cloud::Aws,
            Source::ActivityLogs | Source::EntraAuditLogs => Cloud::Azure,
            Source::GcpAudit => Cloud::Gcp,
        }
    }

    /// Sigma field name → where seamwatch reads it.
    fn map_field(self, name: &str) -> Result<FieldSource, String> {
        let event = |f| Ok(FieldSource::Event(f));
        let native = |path: &str| {
            FieldPath::parse(path)
                .map(FieldSource::Native)
                .map_err(|e| e.to_string())
        };
        match self {
            // Fields the normalized event holds verbatim are read from it: no
            // scan of the record. The rest are native paths.
            Source::CloudTrail => match name {
                "eventSource" => event(EventField::Service),
                "eventName" => event(EventField::Operation),
                // Read from the record: the event's error code is also set
                // for a failed console sign-in, which logs none.
                "errorCode" => native("errorCode"),
                "userAgent" => event(EventField::UserAgent),
                "sourceIPAddress" => event(EventField::SourceIp),
                "awsRegion" => event(EventField::Region),
                // Parsed with the record (`userIdentity` is read on every
                // one): a native lookup would scan it again, on every record,
                // for the rules that are not indexed by operation.
                "userIdentity.type" => event(EventField::PrincipalType),
                "userIdentity.sessionContext.sessionIssuer.type" => event(EventField::IssuerType),
                "userIdentity.arn" => event(EventField::PrincipalArn),
                other => native(other),
            },
            Source::ActivityLogs | Source::EntraAuditLogs => match name {
                "operationName"
                | "OperationName"
                | "OperationNameValue"
                | "ActivityDisplayName" => event(EventField::Operation),
                "ResourceProviderValue" | "resourceProviderName" => event(EventField::Service),
                "ResourceId" | "resourceId" => event(EventField::Resources),
                "CategoryValue" | "Category" => native("category"),
                "ActivityStatusValue" | "Result" | "resultType" => native("resultType"),
                "ActivitySubstatusValue" => native("resultSignature"),
                "Caller" | "caller" => event(EventField::PrincipalName),
                "CallerIpAddress" => event(EventField::SourceIp),
                "LoggedByService" => native("properties.loggedByService"),
                "ResultReason" => native("properties.resultReason"),
                "AADOperationType" => native("properties.operationType"),
                other if other.starts_with("TargetResources.") => native(&format!(
                    "properties.targetResources.{}",
                    lower_first_segments(&other["TargetResources.".len()..])
                )),
                other if other.starts_with("InitiatedBy.") => native(&format!(
                    "properties.initiatedBy.{}",
                    lower_first_segments(&other["InitiatedBy.".len()..])
                )),
                "TargetResources" => native("properties.targetResources"),
                "InitiatedBy" => native("properties.initiatedBy"),
                other => native(other),
            },
            Source::GcpAudit => match name {
                "gcp.audit.method_name" | "methodName" => event(EventField::Operation),
                "gcp.audit.service_name" | "serviceName" => event(EventField::Service),
                "gcp.audit.resource_name" => native("protoPayload.resourceName"),
                "gcp.audit.principal_email" | "gcp.audit.authentication_info.principal_email" => {
                    event(EventField::PrincipalName)
                }
                other if other.starts_with("data.protoPayload.") => native(&other["data.".len()..]),
                other if other.starts_with("data.") => native(&other["data.".len()..]),
                other => native(other),
            },
        }
    }

    /// The Sigma field names that fix the operation and the service.
    fn is_operation_field(self, name: &str) -> bool {
        match self {
            Source::CloudTrail => name == "eventName",
            Source::ActivityLogs => matches!(name, "operationName" | "OperationNameValue"),
            Source::EntraAuditLogs => false,
            Source::GcpAudit => matches!(
                name,
                "gcp.audit.method_name" | "methodName" | "data.protoPayload.methodName"
            ),
        }
    }

    fn is_service_field(self, name: &str) -> bool {
        match self {
            Source::CloudTrail => name == "eventSource",
            Source::GcpAudit => matches!(
                name,
                "gcp.audit.service_name" | "data.protoPayload.serviceName"
            ),
            _ => false,
        }
    }
}

/// `ModifiedProperties.NewValue` → `modifiedProperties.newValue`: Entra's export
/// writes camelCase where Sigma (after Log Analytics) writes PascalCase.
fn lower_first_segments(path: &str) -> String {
    path.split('.')
        .map(|seg| {
            let mut chars = seg.chars();
            match chars.next() {
                Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn severity(level: Option<Level>) -> Severity {
    match level {
        Some(Level::Informational) => Severity::Info,
        Some(Level::Low) => Severity::Low,
        Some(Level::Medium) | None => Severity::Medium,
        Some(Level::High) => Severity::High,
        Some(Level::Critical) => Severity::Critical,
    }
}

/// MITRE ids from Sigma tags (`attack.t1562.008` → `T1562.008`).
fn attack_ids(tags: &[String]) -> Vec<String> {
    tags.iter()
        .filter_map(|t| t.strip_prefix("attack.t"))
        .map(|t| format!("T{}", t.to_ascii_uppercase()))
        .collect()
}

/// The control domain Sigma's ATT&CK tactics suggest.
fn domain(tags: &[String]) -> Option<Domain> {
    let has = |t: &str| tags.iter().any(|tag| tag == t);
    if has("attack.defense-evasion") || has("attack.defense_evasion") {
        Some(Domain::Logging)
    } else if has("attack.persistence")
        || has("attack.privilege-escalation")
        || has("attack.credential-access")
    {
        Some(Domain::Identity)
    } else if has("attack.exfiltration") || has("attack.collection") || has("attack.impact") {
        Some(Domain::Data)
    } else if has("attack.execution") || has("attack.lateral-movement") {
        Some(Domain::Compute)
    } else if has("attack.initial-access") {
        Some(Domain::Identity)
    } else {
        None
    }
}

fn compile(rule: &SigmaRule, path: &Path) -> Result<Rule, String> {
    let source = Source::of(rule)?;
    let detections = &rule.detection;
    if detections.conditions.is_empty() {
        return Err("no condition".into());
    }
    if detections.timeframe.is_some() {
        return Err("timeframe conditions belong to correlation, not yet supported".into());
    }
    let mut compiled = Vec::new();
    for expr in &detections.conditions {
        compiled.push(compile_expr(expr, rule, source)?);
    }
    let condition = if compiled.len() == 1 {
        compiled.remove(0)
    } else {
        Condition::AnyOf(compiled)
    };
    let IndexKeys {
        services,
        operations,
        principal_types,
    } = index_keys(rule, source);
    let id = rule
        .id
        .clone()
        .unwrap_or_else(|| format!("sigma:{}", rule.title));
    Ok(Rule {
        meta: RuleMeta {
            resolves: Vec::new(),
            id: format!("sigma.{id}"),
            title: rule.title.clone(),
            description: rule.description.clone().unwrap_or_default(),
            severity: severity(rule.level),
            domain: domain(&rule.tags),
            attack: attack_ids(&rule.tags).into(),
            compliance: Default::default(),
            remediation: None,
            references: rule.references.clone().into(),
            tags: rule.tags.clone(),
            author: rule.author.clone().map(Into::into),
            name: rule.name.clone(),
            file: path.to_owned(),
        },
        origin: RuleOrigin::Sigma,
        cloud: source.cloud(),
        services,
        operations,
        principal_types,
        // Sigma matches whatever the log says; outcomes are fields like any other.
        outcomes: OutcomeSet::ANY,
        condition,
        tests: Vec::new(),
        emit: true,
    })
}

fn compile_expr(
    expr: &ConditionExpr,
    rule: &SigmaRule,
    source: Source,
) -> Result<Condition, String> {
    Ok(match expr {
        ConditionExpr::And(parts) => Condition::AllOf(
            parts
                .iter()
                .map(|p| compile_expr(p, rule, source))
                .collect::<Result<_, _>>()?,
        ),
        ConditionExpr::Or(parts) => Condition::AnyOf(
            parts
                .iter()
                .map(|p| compile_expr(p, rule, source))
                .collect::<Result<_, _>>()?,
        ),
        ConditionExpr::Not(inner) => Condition::Not(Box::new(compile_expr(inner, rule, source)?)),
        ConditionExpr::Identifier(name) => {
            let detection = rule
                .detection
                .named
                .get(name)
                .ok_or_else(|| format!("condition names `{name}`, which is not defined"))?;
            compile_detection(detection, source)?
        }
        ConditionExpr::Selector {
            quantifier,
            pattern,
        } => {
            let names = selected(rule, pattern);
            if names.is_empty() {
                return Err(format!("selector `{pattern}` matches no detection"));
            }
            let parts = names
                .into_iter()
                .map(|n| compile_detection(&rule.detection.named[n], source))
                .collect::<Result<Vec<_>, _>>()?;
            match quantifier {
                SigmaQuantifier::Any => Condition::AnyOf(parts),
                SigmaQuantifier::All => Condition::AllOf(parts),
                SigmaQuantifier::Count(n) => {
                    return Err(format!("`{n} of` selectors are not supported"));
                }
            }
        }
    })
}

fn compile_detection(detection: &Detection, source: Source) -> Result<Condition, String> {
    match detection {
        Detection::AllOf(items) => Ok(Condition::AllOf(
            items
                .iter()
                .map(|item| compile_item(item, source))
                .collect::<Result<_, _>>()?,
        )),
        Detection::AnyOf(subs) => Ok(Condition::AnyOf(
            subs.iter()
                .map(|d| compile_detection(d, source))
                .collect::<Result<_, _>>()?,
        )),
        Detection::Keywords(values) => {
            let parts = values
                .iter()
                .map(|v| value_matcher(v, &[], true).map(|matcher| (matcher, FieldSource::RawText)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Condition::AnyOf(
                parts
                    .into_iter()
                    .map(|(matcher, source)| Condition::Field {
                        source,
                        matcher,
                        quantifier: Quantifier::Any,
                    })
                    .collect(),
            ))
        }
        other => Err(format!("detection construct not supported: {other:?}")
            .chars()
            .take(120)
            .collect()),
    }
}

fn compile_item(item: &DetectionItem, source: Source) -> Result<Condition, String> {
    let Some(name) = item.field.name.as_deref() else {
        return compile_detection(&Detection::Keywords(item.values.clone()), source);
    };
    let field = source.map_field(name)?;
    let modifiers = &item.field.modifiers;
    for m in modifiers {
        match m {
            Modifier::Contains
            | Modifier::StartsWith
            | Modifier::EndsWith
            | Modifier::All
            | Modifier::Re
            | Modifier::Cidr
            | Modifier::Cased
            | Modifier::Exists
            | Modifier::Gt
            | Modifier::Gte
            | Modifier::Lt
            | Modifier::Lte
            | Modifier::Neq
            | Modifier::FieldRef => {}
            other => return Err(format!("modifier `{other:?}` on `{name}` is not supported")),
        }
    }
    let all = modifiers.contains(&Modifier::All);
    let neq = modifiers.contains(&Modifier::Neq);
    if modifiers.contains(&Modifier::FieldRef) {
        let refs = item
            .values
            .iter()
            .map(|v| match v {
                SigmaValue::String(s) => {
                    source
                        .map_field(&s.original)
                        .map(|other| Condition::FieldRef {
                            field: field.clone(),
                            other,
                        })
                }
                _ => Err(format!("`{name}|fieldref` needs a field name")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let combined = if all {
            Condition::AllOf(refs)
        } else {
            Condition::AnyOf(refs)
        };
        return Ok(if neq {
            Condition::Not(Box::new(combined))
        } else {
            combined
        });
    }
    let mut conditions = Vec::new();
    for value in &item.values {
        let matcher = if matches!(value, SigmaValue::Null) {
            Matcher::Exists(false)
        } else {
            value_matcher(value, modifiers, false)?
        };
        conditions.push(Condition::Field {
            source: field.clone(),
            matcher,
            quantifier: Quantifier::Any,
        });
    }
    let combined = match (conditions.len(), all) {
        (0, _) => Condition::Field {
            source: field,
            matcher: Matcher::Exists(false),
            quantifier: Quantifier::Any,
        },
        (1, _) => conditions.remove(0),
        (_, true) => Condition::AllOf(conditions),
        (_, false) => Condition::AnyOf(conditions),
    };
    Ok(if neq {
        Condition::Not(Box::new(combined))
    } else {
        combined
    })
}

/// A Sigma string with wildcards, as a matcher.
fn string_matcher(
    parts: &[StringPart],
    mode: Option<&Modifier>,
    cased: bool,
    keyword: bool,
) -> Result<Matcher, String> {
    let plain: Option<String> = parts.iter().try_fold(String::new(), |mut acc, p| match p {
        StringPart::Plain(s) => {
            acc.push_str(s);
            Some(acc)
        }
        StringPart::Special(_) => None,
    });
    if let Some(text) = plain {
        let values = vec![text.clone().into_boxed_str()];
        return Ok(match (mode, keyword) {
            (_, true) | (Some(Modifier::Contains), _) => Matcher::contains(&[text], cased)?,
            (Some(Modifier::StartsWith), _) => Matcher::Prefix {
                values,
                case_sensitive: cased,
            },
            (Some(Modifier::EndsWith), _) => Matcher::Suffix {
                values,
                case_sensitive: cased,
            },
            _ => Matcher::Equals {
                values,
                case_sensitive: cased,
            },
        });
    }
    // Wildcards: an anchored regular expression.
    let mut pattern = String::new();
    if !cased {
        pattern.push_str("(?i)");
    }
    let anchored_start =
        !(keyword || matches!(mode, Some(Modifier::Contains) | Some(Modifier::EndsWith)));
    let anchored_end =
        !(keyword || matches!(mode, Some(Modifier::Contains) | Some(Modifier::StartsWith)));
    pattern.push_str(if anchored_start { "^" } else { "" });
    for part in parts {
        match part {
            StringPart::Plain(s) => pattern.push_str(&regex::escape(s)),
            StringPart::Special(SpecialChar::WildcardMulti) => pattern.push_str("(?s:.*)"),
            StringPart::Special(SpecialChar::WildcardSingle) => pattern.push_str("(?s:.)"),
        }
    }
    if anchored_end {
        pattern.push('$');
    }
    Matcher::regex(&pattern, true)
}

fn value_matcher(
    value: &SigmaValue,
    modifiers: &[Modifier],
    keyword: bool,
) -> Result<Matcher, String> {
    let cased = modifiers.contains(&Modifier::Cased);
    let compare = modifiers.iter().find_map(|m| match m {
        Modifier::Gt => Some(CmpOp::Gt),
        Modifier::Gte => Some(CmpOp::Gte),
        Modifier::Lt => Some(CmpOp::Lt),
        Modifier::Lte => Some(CmpOp::Lte),
        _ => None,
    });
    if modifiers.contains(&Modifier::Exists) {
        return match value {
            SigmaValue::Bool(b) => Ok(Matcher::Exists(*b)),
            _ => Err("`exists` takes true or false".into()),
        };
    }
    if let Some(op) = compare {
        return match value {
            SigmaValue::Integer(i) => Ok(Matcher::Compare(op, *i as f64)),
            SigmaValue::Float(f) => Ok(Matcher::Compare(op, *f)),
            _ => Err("numeric comparison needs a number".into()),
        };
    }
    let text = match value {
        SigmaValue::String(s) if modifiers.contains(&Modifier::Re) => {
            return Matcher::regex(&s.original, true);
        }
        SigmaValue::String(s) if modifiers.contains(&Modifier::Cidr) => {
            return Matcher::cidr(std::slice::from_ref(&s.original));
        }
        SigmaValue::String(s) => {
            let mode = modifiers.iter().find(|m| {
                matches!(
                    m,
                    Modifier::Contains | Modifier::StartsWith | Modifier::EndsWith
                )
            });
            return string_matcher(&s.parts, mode, cased, keyword);
        }
        SigmaValue::Integer(i) => i.to_string(),
        SigmaValue::Float(f) => f.to_string(),
        SigmaValue::Bool(b) => b.to_string(),
        SigmaValue::Null => return Ok(Matcher::Exists(false)),
    };
    Ok(Matcher::Equals {
        values: vec![text.into_boxed_str()],
        case_sensitive: cased,
    })
}

/// The detections a selector (`1 of selection_*`) names, in name order: the
/// map's own order changes from run to run.
fn selected<'r>(rule: &'r SigmaRule, pattern: &SelectorPattern) -> Vec<&'r String> {
    let mut names: Vec<&String> = rule
        .detection
        .named
        .keys()
        .filter(|name| pattern.matches_detection_name(name))
        .collect();
    names.sort_unstable();
    names
}

/// Operations and services fixed by a selection the condition requires.
/// What a rule is indexed by (see [`RuleIndex`](super::index::RuleIndex)):
/// the values the condition needs the service, the operation, or the
/// identity type to hold.
struct IndexKeys {
    services: Vec<String>,
    operations: Vec<String>,
    principal_types: Vec<String>,
}

fn index_keys(rule: &SigmaRule, source: Source) -> IndexKeys {
    let fixed = |is_field: &dyn Fn(&str) -> bool| match rule.detection.conditions.as_slice() {
        [condition] => fixed_values(rule, condition, is_field).unwrap_or_default(),
        _ => Vec::new(),
    };
    IndexKeys {
        services: fixed(&|name| source.is_service_field(name)),
        operations: fixed(&|name| source.is_operation_field(name)),
        principal_types: match source {
            Source::CloudTrail => fixed(&|name| name == "userIdentity.type"),
            _ => Vec::new(),
        },
    }
}

/// The plain values (lower-cased) one of the fields `is_field` names must
/// hold for `expr` to hold; `None` when `expr` does not pin them. Under an
/// AND, the first part that pins them (the rule's own condition still
/// applies the rest); under an OR (`1 of`), the union, when every branch
/// pins them.
fn fixed_values(
    rule: &SigmaRule,
    expr: &ConditionExpr,
    is_field: &dyn Fn(&str) -> bool,
) -> Option<Vec<String>> {
    let named = |name: &String| {
        rule.detection
            .named
            .get(name)
            .and_then(|d| fixed_in(d, is_field))
    };
    match expr {
        ConditionExpr::Identifier(name) => named(name),
        ConditionExpr::And(parts) => parts.iter().find_map(|p| fixed_values(rule, p, is_field)),
        ConditionExpr::Or(parts) => union(parts.iter().map(|p| fixed_values(rule, p, is_field))),
        ConditionExpr::Selector {
            quantifier,
            pattern,
        } => {
            let mut names = selected(rule, pattern).into_iter();
            match quantifier {
                SigmaQuantifier::All => names.find_map(named),
                SigmaQuantifier::Any => union(names.map(named)),
                SigmaQuantifier::Count(_) => None,
            }
        }
        ConditionExpr::Not(_) => None,
    }
}

/// A detection's pinned values: a plain (no modifier, no wildcard) item of
/// the field in a mapping; in a list of mappings, the union.
fn fixed_in(detection: &Detection, is_field: &dyn Fn(&str) -> bool) -> Option<Vec<String>> {
    match detection {
        Detection::AllOf(items) => items.iter().find_map(|item| {
            let field = item.field.name.as_deref()?;
            if !is_field(field) || !item.field.modifiers.is_empty() {
                return None;
            }
            let values: Option<Vec<String>> = item
                .values
                .iter()
                .map(|v| match v {
                    SigmaValue::String(s) if !s.contains_wildcards() => {
                        s.as_plain().map(|p| p.to_ascii_lowercase())
                    }
                    _ => None,
                })
                .collect();
            values.filter(|v| !v.is_empty())
        }),
        Detection::AnyOf(parts) => union(parts.iter().map(|d| fixed_in(d, is_field))),
        _ => None,
    }
}

/// Every branch's values, sorted, when every branch (and at least one) has
/// some.
fn union(branches: impl Iterator<Item = Option<Vec<String>>>) -> Option<Vec<String>> {
    let mut all: Vec<String> = Vec::new();
    for values in branches {
        all.extend(values?);
    }
    all.sort_unstable();
    all.dedup();
    (!all.is_empty()).then_some(all)
}

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use super::*;
    use crate::event::decode::{Decoder, FormatHint, Limits};

    fn values(source: &FieldSource, event: &crate::event::AuditEvent<'_>) -> Vec<String> {
        let mut out = Vec::new();
        let _ = source.visit_values(event, &mut |v| {
            out.push(v.to_owned());
            ControlFlow::Continue(())
        });
        out
    }

    /// One CloudTrail Sigma rule with this detection block, compiled.
    fn rule_with(detection: &str) -> Rule {
        let text = format!(
            "title: t\nid: 00000000-0000-4000-8000-000000000001\nlogsource:\n  product: aws\n  service: cloudtrail\ndetection:\n{detection}\nlevel: high\n"
        );
        let mut load = load_sigma_text(&text, Path::new("t.yml"));
        assert!(load.rejected.is_empty(), "{:?}", load.rejected);
        load.rules.remove(0)
    }

    /// What pins a rule in the index: the values every way the condition
    /// can hold needs, in the service, the operation or the identity type.
    #[test]
    fn rules_are_indexed_by_what_every_branch_of_their_condition_needs() {
        let keys = |r: &Rule| {
            (
                r.services.clone(),
                r.operations.clone(),
                r.principal_types.clone(),
            )
        };
        let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Either of two calls: indexed under both.
        let saml = rule_with(
            "  selection_sts:\n    eventSource: sts.amazonaws.com\n    eventName: AssumeRoleWithSAML\n  selection_iam:\n    eventSource: iam.amazonaws.com\n    eventName: UpdateSAMLProvider\n  condition: 1 of selection_*",
        );
        assert_eq!(
            keys(&saml),
            (
                v(&["iam.amazonaws.com", "sts.amazonaws.com"]),
                v(&["assumerolewithsaml", "updatesamlprovider"]),
                v(&[])
            )
        );
        // A branch that needs no operation: no operation pinned.
        let open = rule_with(
            "  a:\n    eventName: DeleteTrail\n  b:\n    userAgent|contains: evil\n  condition: a or b",
        );
        assert_eq!(keys(&open), (v(&[]), v(&[]), v(&[])));
        // The identity type, when nothing else is pinned; a negated part pins nothing.
        let root = rule_with(
            "  selection:\n    userIdentity.type: Root\n  filter:\n    eventType: AwsServiceEvent\n  condition: selection and not filter",
        );
        assert_eq!(keys(&root), (v(&[]), v(&[]), v(&["root"])));
        let not_root =
            rule_with("  selection:\n    userIdentity.type: Root\n  condition: not selection");
        assert_eq!(keys(&not_root), (v(&[]), v(&[]), v(&[])));
        // A list of mappings is a union; a modifier or a wildcard pins nothing.
        let list = rule_with(
            "  selection:\n    - userIdentity.type: AssumedRole\n    - userIdentity.type: [FederatedUser, Root]\n  condition: selection",
        );
        assert_eq!(
            keys(&list),
            (v(&[]), v(&[]), v(&["assumedrole", "federateduser", "root"]))
        );
        for loose in [
            "  selection:\n    userIdentity.type|contains: Root\n  condition: selection",
            "  selection:\n    userIdentity.type: Ro*\n  condition: selection",
            "  selection:\n    - userIdentity.type: Root\n    - userAgent: x\n  condition: selection",
        ] {
            assert_eq!(keys(&rule_with(loose)), (v(&[]), v(&[]), v(&[])), "{loose}");
        }

        // The index hands a type-pinned rule to events of that type, in any
        // case, and only to them; the rule decides the rest.
        let set = crate::detect::engine::RuleSet::new(vec![root]);
        assert_eq!(set.index().fallback_len(), 0);
        let decoder = Decoder::new(FormatHint::Auto, Limits::default());
        for (kind, event_type, candidate, matched) in [
            ("Root", "AwsApiCall", true, true),
            ("ROOT", "AwsApiCall", true, true),
            ("Root", "AwsServiceEvent", true, false),
            ("IAMUser", "AwsApiCall", false, false),
        ] {
            let record = format!(
                r#"{{"eventVersion":"1.09","userIdentity":{{"type":"{kind}","arn":"arn:aws:iam::1:root"}},"eventTime":"2025-03-01T10:00:00Z","eventSource":"s3.amazonaws.com","eventName":"ListBuckets","eventType":"{event_type}","eventID":"e"}}"#
            );
            decoder.decode(record.as_bytes(), &mut |d| {
                let event = d.result.unwrap();
                let mut candidates = 0;
                set.index().candidates(&event, |_| candidates += 1);
                assert_eq!(candidates == 1, candidate, "{kind} {event_type}");
                let mut matches = 0;
                set.matching(&event, |_| matches += 1);
                assert_eq!(matches == 1, matched, "{kind} {event_type}");
            });
        }
    }

    /// CloudTrail fields read from the normalized event give what the
    /// native path gives, on every record: the mapping saves a scan, it must
    /// not change a match. (`errorCode` is read from the record: a failed
    /// console sign-in logs none, and the event gives its error message.)
    #[test]
    fn cloudtrail_fields_read_from_the_event_agree_with_their_native_paths() {
        let names = [
            "eventSource",
            "eventName",
            "userAgent",
            "sourceIPAddress",
            "awsRegion",
            "userIdentity.type",
            "userIdentity.sessionContext.sessionIssuer.type",
            "userIdentity.arn",
        ];
        let inputs: [&[u8]; 4] = [
            include_bytes!("../../tests/fixtures/aws/cloudtrail-records.jsonl"),
            include_bytes!("../../tests/fixtures/aws/s3-object.json"),
            include_bytes!("../../tests/fixtures/aws/eventbridge.jsonl"),
            include_bytes!("../../tests/fixtures/aws/lookupevents-items.jsonl"),
        ];
        let (mut compared, mut found) = (0, 0);
        let mut mapped = 0;
        for name in names {
            let source = Source::CloudTrail.map_field(name).unwrap();
            mapped += usize::from(matches!(source, FieldSource::Event(_)));
            let native = FieldSource::Native(FieldPath::parse(name).unwrap());
            for input in inputs {
                Decoder::new(FormatHint::Auto, Limits::default()).decode(input, &mut |d| {
                    let Ok(event) = d.result else { return };
                    // Insights events name the API they are about inside
                    // `insightDetails`, where the event finds it on purpose.
                    if event.raw.contains("\"insightDetails\"") && name.starts_with("event") {
                        return;
                    }
                    let (ours, theirs) = (values(&source, &event), values(&native, &event));
                    assert_eq!(ours, theirs, "{name} in {}", event.raw);
                    compared += 1;
                    found += usize::from(!ours.is_empty());
                });
            }
        }
        assert_eq!(mapped, names.len(), "every name is read from the event");
        assert!(
            matches!(
                Source::CloudTrail.map_field("errorCode"),
                Ok(FieldSource::Native(_))
            ),
            "errorCode is read from the record"
        );
        assert!(
            compared > 50 && found > 30,
            "{compared} compared, {found} found"
        );
        // Both identity types occur in the fixtures.
        let issuer = FieldSource::Event(EventField::IssuerType);
        let mut issuers = 0;
        Decoder::new(FormatHint::Auto, Limits::default()).decode(inputs[0], &mut |d| {
            if let Ok(event) = d.result {
                issuers += values(&issuer, &event).len();
            }
        });
        assert!(issuers > 0, "no session issuer type in the fixtures");
    }
}
