//! Field conditions: the compiled form of a rule's `where` clause (and of a
//! Sigma detection), evaluated against one event without allocating on the
//! common path.
//!
//! A condition reads the values of one field, either a native field by path
//! (`requestParameters.ipPermissions.items.ipRanges.items.cidrIp`, fanning out
//! over arrays and into JSON held in strings) or a normalized field of the
//! event (`event.principal.kind`), and applies one [`Matcher`] to them, for
//! *any* value (the default) or *all* of them. Conditions combine with
//! `AllOf`, `AnyOf` and `Not`. String comparisons ignore ASCII case unless a
//! rule asks otherwise (Sigma's default, and Azure writes names in any case).

use std::borrow::Cow;
use std::net::IpAddr;
use std::ops::ControlFlow;

use aho_corasick::AhoCorasick;
use ipnet::IpNet;
use regex::Regex;

use crate::event::field::{self, FieldPath, FieldValue, ValueKind};
use crate::event::{AuditEvent, parse_ip_tolerant};

/// A normalized field of [`AuditEvent`], addressed as `event.<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventField {
    Cloud,
    Service,
    Operation,
    Account,
    Region,
    EventId,
    PrincipalKind,
    PrincipalId,
    PrincipalName,
    PrincipalAccount,
    PrincipalIssuer,
    PrincipalType,
    IssuerType,
    PrincipalArn,
    PrincipalChain,
    PrincipalMfa,
    AccessKeyId,
    SourceIp,
    UserAgent,
    Outcome,
    ErrorCode,
    ReadOnly,
    Resources,
}

impl EventField {
    pub const NAMES: [(&'static str, EventField); 23] = [
        ("cloud", EventField::Cloud),
        ("service", EventField::Service),
        ("operation", EventField::Operation),
        ("account", EventField::Account),
        ("region", EventField::Region),
        ("event_id", EventField::EventId),
        ("principal.kind", EventField::PrincipalKind),
        ("principal.id", EventField::PrincipalId),
        ("principal.name", EventField::PrincipalName),
        ("principal.account", EventField::PrincipalAccount),
        ("principal.issuer", EventField::PrincipalIssuer),
        ("principal.type", EventField::PrincipalType),
        ("principal.issuer_type", EventField::IssuerType),
        ("principal.arn", EventField::PrincipalArn),
        ("principal.chain", EventField::PrincipalChain),
        ("principal.mfa", EventField::PrincipalMfa),
        ("principal.access_key_id", EventField::AccessKeyId),
        ("source_ip", EventField::SourceIp),
        ("user_agent", EventField::UserAgent),
        ("outcome", EventField::Outcome),
        ("error_code", EventField::ErrorCode),
        ("read_only", EventField::ReadOnly),
        ("resources", EventField::Resources),
    ];

    pub fn parse(name: &str) -> Option<EventField> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
    }

    /// Calls `f` with each value of this field (none when absent).
    fn visit<'e>(
        self,
        event: &'e AuditEvent<'_>,
        f: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        fn opt(value: Option<&str>, f: &mut dyn FnMut(&str) -> ControlFlow<()>) -> ControlFlow<()> {
            match value {
                Some(v) => f(v),
                None => ControlFlow::Continue(()),
            }
        }
        fn flag(
            value: Option<bool>,
            f: &mut dyn FnMut(&str) -> ControlFlow<()>,
        ) -> ControlFlow<()> {
            opt(value.map(|b| if b { "true" } else { "false" }), f)
        }
        let p = &event.principal;
        match self {
            EventField::Cloud => f(event.cloud.as_str()),
            EventField::Service => f(&event.service),
            EventField::Operation => f(&event.operation),
            EventField::Account => opt(event.account.as_deref(), f),
            EventField::Region => opt(event.region.as_deref(), f),
            EventField::EventId => match &event.event_id {
                crate::event::EventId::Native(id) => f(id),
                other => f(&other.to_string()),
            },
            EventField::PrincipalKind => f(p.kind.as_str()),
            EventField::PrincipalId => opt(p.id.as_deref(), f),
            EventField::PrincipalName => opt(p.name.as_deref(), f),
            EventField::PrincipalAccount => opt(p.account.as_deref(), f),
            EventField::PrincipalIssuer => opt(p.issuer.as_deref(), f),
            EventField::PrincipalType => opt(p.native_type.as_deref(), f),
            EventField::IssuerType => opt(p.issuer_type.as_deref(), f),
            EventField::PrincipalArn => opt(p.arn.as_deref(), f),
            EventField::PrincipalChain => {
                for link in &p.chain {
                    f(link)?;
                }
                ControlFlow::Continue(())
            }
            EventField::PrincipalMfa => flag(p.mfa, f),
            EventField::AccessKeyId => opt(p.access_key_id.as_deref(), f),
            EventField::SourceIp => opt(event.source_ip.as_ref().map(|ip| &*ip.raw), f),
            EventField::UserAgent => opt(event.user_agent.as_deref(), f),
            EventField::Outcome => f(event.outcome.as_str()),
            EventField::ErrorCode => opt(event.error_code.as_deref(), f),
            EventField::ReadOnly => flag(event.read_only, f),
            EventField::Resources => {
                for r in &event.resources {
                    f(&r.id)?;
                }
                ControlFlow::Continue(())
            }
        }
    }
}

/// What a condition is evaluated against: the whole event, or one element of
/// a list inside it (an `each` group), whose native paths are relative to it.
#[derive(Clone, Copy)]
pub enum Scope<'s, 'e> {
    Event(&'s AuditEvent<'e>),
    Element(&'s str),
}

/// Where a condition reads its values.
#[derive(Clone, Debug)]
pub enum FieldSource {
    Native(FieldPath),
    Event(EventField),
    /// The whole native record as text (Sigma keyword search).
    RawText,
}

impl FieldSource {
    /// `event.<name>` is a normalized field; anything else a native path.
    pub fn parse(text: &str) -> Result<FieldSource, String> {
        if let Some(name) = text.strip_prefix("event.") {
            return EventField::parse(name)
                .map(FieldSource::Event)
                .ok_or_else(|| {
                    let known: Vec<&str> = EventField::NAMES.iter().map(|(n, _)| *n).collect();
                    format!(
                        "unknown event field `{text}` (known: event.{})",
                        known.join(", event.")
                    )
                });
        }
        FieldPath::parse(text)
            .map(FieldSource::Native)
            .map_err(|e| e.to_string())
    }

    /// Calls `f` with each scalar value of the field in `event`, as text.
    pub fn visit_values(
        &self,
        event: &AuditEvent<'_>,
        f: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        self.visit(Scope::Event(event), f)
    }

    /// Calls `f` with each scalar value, as text; arrays at the end of a path
    /// count as their elements; nulls do not count.
    fn visit(
        &self,
        scope: Scope<'_, '_>,
        f: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let mut scalars = |value: FieldValue<'_>| {
            if value.kind() == ValueKind::Array {
                let mut flow = ControlFlow::Continue(());
                value.for_each_element(|element| {
                    if flow.is_continue() {
                        flow = visit_scalar(&element, f);
                    }
                });
                flow
            } else {
                visit_scalar(&value, f)
            }
        };
        match (self, scope) {
            (FieldSource::Event(field), Scope::Event(event)) => field.visit(event, f),
            // Normalized fields belong to the event, not to a list element.
            (FieldSource::Event(_), Scope::Element(_)) => ControlFlow::Continue(()),
            (FieldSource::RawText, Scope::Event(event)) => f(&event.raw),
            (FieldSource::RawText, Scope::Element(json)) => f(json),
            (FieldSource::Native(path), Scope::Event(event)) => {
                event.visit_field(path, &mut scalars)
            }
            (FieldSource::Native(path), Scope::Element(json)) => {
                field::visit(json, path, &mut scalars)
            }
        }
    }

    /// Calls `f` with each element reached by the path: the elements of arrays,
    /// objects as they are.
    fn visit_elements(
        &self,
        scope: Scope<'_, '_>,
        f: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let mut each = |value: FieldValue<'_>| match value.kind() {
            ValueKind::Array => {
                let mut flow = ControlFlow::Continue(());
                value.for_each_element(|element| {
                    if flow.is_continue() {
                        flow = f(element.raw_json());
                    }
                });
                flow
            }
            ValueKind::Object => f(value.raw_json()),
            _ => ControlFlow::Continue(()),
        };
        match (self, scope) {
            (FieldSource::Native(path), Scope::Event(event)) => event.visit_field(path, &mut each),
            (FieldSource::Native(path), Scope::Element(json)) => {
                field::visit(json, path, &mut each)
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

fn visit_scalar(
    value: &FieldValue<'_>,
    f: &mut dyn FnMut(&str) -> ControlFlow<()>,
) -> ControlFlow<()> {
    match value.kind() {
        ValueKind::Null => ControlFlow::Continue(()),
        // Objects and arrays compare as their JSON text (rarely useful, but defined).
        ValueKind::Object | ValueKind::Array => f(value.raw_json()),
        _ => match value.as_scalar_text() {
            Some(text) => f(&text),
            None => ControlFlow::Continue(()),
        },
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A regular expression, and a literal every match contains where the
/// pattern has one (`.+:assumed-role/aws:.+`): looked for first, with a
/// SIMD substring search. Patterns that open with `.+` or `.*` give the
/// regex engine no prefix to start from, and a Sigma rule of that kind,
/// checked on every record, cost 3% of a replay.
#[derive(Clone, Debug)]
pub struct RegexMatcher {
    regex: Regex,
    required: Option<memchr::memmem::Finder<'static>>,
}

/// The longest literal that every match of `hir` contains: a literal, or
/// the longest literal among the parts of a concatenation (each of which
/// every match goes through).
fn required_literal(hir: &regex_syntax::hir::Hir) -> Option<Vec<u8>> {
    use regex_syntax::hir::HirKind;
    match hir.kind() {
        HirKind::Literal(literal) => Some(literal.0.to_vec()),
        HirKind::Capture(capture) => required_literal(&capture.sub),
        HirKind::Concat(parts) => parts
            .iter()
            .filter_map(required_literal)
            .max_by_key(Vec::len),
        _ => None,
    }
}

/// How one value is tested.
#[derive(Clone, Debug)]
pub enum Matcher {
    Equals {
        values: Vec<Box<str>>,
        case_sensitive: bool,
    },
    Contains(AhoCorasick),
    Prefix {
        values: Vec<Box<str>>,
        case_sensitive: bool,
    },
    Suffix {
        values: Vec<Box<str>>,
        case_sensitive: bool,
    },
    Regex(Box<RegexMatcher>),
    /// The value is an IP address (or a CIDR range) inside one of the networks.
    Cidr(Vec<IpNet>),
    /// The field has (true) or lacks (false) a non-null value.
    Exists(bool),
    Compare(CmpOp, f64),
}

impl Matcher {
    pub fn contains(needles: &[String], case_sensitive: bool) -> Result<Matcher, String> {
        AhoCorasick::builder()
            .ascii_case_insensitive(!case_sensitive)
            .build(needles)
            .map(Matcher::Contains)
            .map_err(|e| format!("bad contains list: {e}"))
    }

    pub fn regex(pattern: &str, case_sensitive: bool) -> Result<Matcher, String> {
        let regex = regex::RegexBuilder::new(pattern)
            .case_insensitive(!case_sensitive)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("bad regex `{pattern}`: {e}"))?;
        let required = regex_syntax::ParserBuilder::new()
            .case_insensitive(!case_sensitive)
            .build()
            .parse(pattern)
            .ok()
            .and_then(|hir| required_literal(&hir))
            .filter(|literal| literal.len() >= 3)
            .map(|literal| memchr::memmem::Finder::new(&literal).into_owned());
        Ok(Matcher::Regex(Box::new(RegexMatcher { regex, required })))
    }

    pub fn cidr(networks: &[String]) -> Result<Matcher, String> {
        networks
            .iter()
            .map(|n| {
                n.parse::<IpNet>()
                    .or_else(|_| n.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|e| format!("bad network `{n}`: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Matcher::Cidr)
    }

    fn test(&self, value: &str) -> bool {
        fn eq(a: &str, b: &str, cs: bool) -> bool {
            if cs {
                a == b
            } else {
                a.eq_ignore_ascii_case(b)
            }
        }
        match self {
            Matcher::Equals {
                values,
                case_sensitive,
            } => values.iter().any(|v| eq(v, value, *case_sensitive)),
            Matcher::Contains(ac) => ac.is_match(value),
            Matcher::Prefix {
                values,
                case_sensitive,
            } => values.iter().any(|p| {
                value.len() >= p.len()
                    && value.is_char_boundary(p.len())
                    && eq(&value[..p.len()], p, *case_sensitive)
            }),
            Matcher::Suffix {
                values,
                case_sensitive,
            } => values.iter().any(|s| {
                let start = value.len().wrapping_sub(s.len());
                value.len() >= s.len()
                    && value.is_char_boundary(start)
                    && eq(&value[start..], s, *case_sensitive)
            }),
            Matcher::Regex(matcher) => {
                let RegexMatcher { regex, required } = &**matcher;
                required
                    .as_ref()
                    .is_none_or(|r| r.find(value.as_bytes()).is_some())
                    && regex.is_match(value)
            }
            Matcher::Cidr(networks) => {
                if let Some(addr) = parse_ip_tolerant(value) {
                    networks.iter().any(|n| n.contains(&addr))
                } else if let Ok(range) = value.trim().parse::<IpNet>() {
                    // A range matches a network that contains it (0.0.0.0/0 in 0.0.0.0/0).
                    networks.iter().any(|n| n.contains(&range))
                } else {
                    false
                }
            }
            Matcher::Exists(_) => true,
            Matcher::Compare(op, bound) => match value.trim().parse::<f64>() {
                Ok(v) => match op {
                    CmpOp::Gt => v > *bound,
                    CmpOp::Gte => v >= *bound,
                    CmpOp::Lt => v < *bound,
                    CmpOp::Lte => v <= *bound,
                },
                Err(_) => false,
            },
        }
    }
}

/// Any value (the default) or every value must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantifier {
    Any,
    All,
}

impl Quantifier {
    /// Whether `test` holds for any (or every, and at least one) item that
    /// `visit` produces; stops visiting as soon as the answer is known.
    fn holds(
        self,
        visit: impl FnOnce(&mut dyn FnMut(&str) -> ControlFlow<()>) -> ControlFlow<()>,
        test: impl Fn(&str) -> bool,
    ) -> bool {
        let (mut seen, mut decided) = (false, false);
        let _ = visit(&mut |item| {
            seen = true;
            let ok = test(item);
            if ok == (self == Quantifier::Any) {
                decided = true;
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        match self {
            Quantifier::Any => decided,
            Quantifier::All => seen && !decided,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Condition {
    AllOf(Vec<Condition>),
    AnyOf(Vec<Condition>),
    Not(Box<Condition>),
    Field {
        source: FieldSource,
        matcher: Matcher,
        quantifier: Quantifier,
    },
    /// Conditions that must hold together on one element of a list (any
    /// element, or every element with `Quantifier::All`): `each` groups.
    Each {
        path: FieldSource,
        quantifier: Quantifier,
        inner: Box<Condition>,
    },
    /// A value of `field` equals a value of `other` (Sigma's `fieldref`).
    FieldRef {
        field: FieldSource,
        other: FieldSource,
    },
    /// A constant, for empty groups and Sigma's keyword-free edge cases.
    Const(bool),
}

impl Condition {
    pub fn matches(&self, event: &AuditEvent<'_>) -> bool {
        self.matches_in(Scope::Event(event))
    }

    fn matches_in(&self, scope: Scope<'_, '_>) -> bool {
        match self {
            Condition::AllOf(all) => all.iter().all(|c| c.matches_in(scope)),
            Condition::AnyOf(any) => any.iter().any(|c| c.matches_in(scope)),
            Condition::Not(inner) => !inner.matches_in(scope),
            Condition::Const(b) => *b,
            Condition::Each {
                path,
                quantifier,
                inner,
            } => quantifier.holds(
                |f| path.visit_elements(scope, f),
                |element| inner.matches_in(Scope::Element(element)),
            ),
            Condition::FieldRef { field, other } => {
                let mut others: Vec<String> = Vec::new();
                let _ = other.visit(scope, &mut |v| {
                    others.push(v.to_owned());
                    ControlFlow::Continue(())
                });
                let mut found = false;
                let _ = field.visit(scope, &mut |v| {
                    found = others.iter().any(|o| o.eq_ignore_ascii_case(v));
                    if found {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                });
                found
            }
            Condition::Field {
                source,
                matcher,
                quantifier,
            } => {
                if let Matcher::Exists(want) = matcher {
                    let mut seen = false;
                    let _ = source.visit(scope, &mut |_| {
                        seen = true;
                        ControlFlow::Break(())
                    });
                    return seen == *want;
                }
                quantifier.holds(|f| source.visit(scope, f), |value| matcher.test(value))
            }
        }
    }
}

/// The text of a value as rules write it (numbers and booleans as written).
pub fn scalar_text(value: &yaml_serde::Value) -> Option<Cow<'_, str>> {
    match value {
        yaml_serde::Value::String(s) => Some(Cow::Borrowed(s)),
        yaml_serde::Value::Number(n) => Some(Cow::Owned(n.to_string())),
        yaml_serde::Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Decoder;

    fn event(json: &str) -> AuditEvent<'static> {
        Decoder::default()
            .decode_owned(json.as_bytes())
            .remove(0)
            .unwrap()
    }

    fn field(path: &str, matcher: Matcher) -> Condition {
        Condition::Field {
            source: FieldSource::parse(path).unwrap(),
            matcher,
            quantifier: Quantifier::Any,
        }
    }

    /// A regex matcher's required literal is one every match contains, and
    /// looking for it first changes no verdict.
    #[test]
    fn a_regex_required_literal_changes_no_verdict() {
        let required = |pattern: &str, cased: bool| match Matcher::regex(pattern, cased).unwrap() {
            Matcher::Regex(matcher) => matcher
                .required
                .map(|f| String::from_utf8(f.needle().to_vec()).unwrap()),
            _ => unreachable!(),
        };
        assert_eq!(
            required(".+:assumed-role/aws:.+", true).as_deref(),
            Some(":assumed-role/aws:")
        );
        assert_eq!(
            required("^(?:ab|cd)x(food)bar$", true).as_deref(),
            Some("food")
        );
        // No literal every match holds (or too short, or any case).
        for (pattern, cased) in [
            ("ab|cdefg", true),
            ("(?:xyzzy)?", true),
            ("a.b.c", true),
            ("assumed-role", false),
            ("(?i)assumed-role", true),
            ("[0-9]{12}", true),
        ] {
            assert_eq!(required(pattern, cased), None, "{pattern}");
        }
        let patterns = [
            (".+:assumed-role/aws:.+", true),
            ("^arn:aws:iam::[0-9]+:root$", true),
            ("(?:root|admin)-user", true),
            ("x(foo)+bar", true),
            ("é東.*🚀", true),
            ("ASSUMED", false),
            ("(?i)role/AWS", true),
            ("^$", true),
        ];
        let values = [
            "arn:aws:sts::1:assumed-role/aws:ec2-instance/i-1",
            "arn:aws:sts::1:assumed-role/app/s",
            "arn:aws:iam::123456789012:root",
            "admin-user",
            "xfoofoobar",
            "xbar",
            "é東 and 🚀",
            "",
            "ROLE/aws",
        ];
        let mut hits = 0;
        for (pattern, cased) in patterns {
            let matcher = Matcher::regex(pattern, cased).unwrap();
            let plain = regex::RegexBuilder::new(pattern)
                .case_insensitive(!cased)
                .build()
                .unwrap();
            for value in values {
                assert_eq!(
                    matcher.test(value),
                    plain.is_match(value),
                    "{pattern} on {value}"
                );
                hits += usize::from(plain.is_match(value));
            }
        }
        assert!(hits >= 8, "{hits}");
    }

    const SG: &str = r#"{"eventVersion":"1.08","eventTime":"2024-01-01T00:00:00Z","eventSource":"ec2.amazonaws.com","eventName":"AuthorizeSecurityGroupIngress","userIdentity":{"type":"Root","arn":"arn:aws:iam::1:root"},"sourceIPAddress":"075.050.255.67","requestParameters":{"groupId":"sg-1","ipPermissions":{"items":[{"fromPort":22,"toPort":22,"ipRanges":{"items":[{"cidrIp":"10.0.0.0/8"},{"cidrIp":"0.0.0.0/0"}]}}]}}}"#;

    #[test]
    fn matchers_on_native_and_event_fields() {
        let e = event(SG);
        let eq = |v: &str| Matcher::Equals {
            values: vec![v.into()],
            case_sensitive: false,
        };
        assert!(
            field(
                "requestParameters.ipPermissions.items.ipRanges.items.cidrIp",
                eq("0.0.0.0/0")
            )
            .matches(&e)
        );
        assert!(
            !field(
                "requestParameters.ipPermissions.items.ipRanges.items.cidrIp",
                eq("::/0")
            )
            .matches(&e)
        );
        assert!(field("event.principal.kind", eq("ROOT")).matches(&e));
        assert!(
            field(
                "event.source_ip",
                Matcher::cidr(&["75.50.0.0/16".into()]).unwrap()
            )
            .matches(&e)
        );
        assert!(
            field(
                "requestParameters.ipPermissions.items.fromPort",
                Matcher::Compare(CmpOp::Lte, 22.0)
            )
            .matches(&e)
        );
        assert!(
            !field(
                "requestParameters.ipPermissions.items.fromPort",
                Matcher::Compare(CmpOp::Gt, 22.0)
            )
            .matches(&e)
        );
        assert!(
            field(
                "requestParameters.groupId",
                Matcher::Prefix {
                    values: vec!["SG-".into()],
                    case_sensitive: false
                }
            )
            .matches(&e)
        );
        assert!(
            !field(
                "requestParameters.groupId",
                Matcher::Prefix {
                    values: vec!["SG-".into()],
                    case_sensitive: true
                }
            )
            .matches(&e)
        );
        assert!(
            field(
                "requestParameters.groupId",
                Matcher::Suffix {
                    values: vec!["-1".into()],
                    case_sensitive: false
                }
            )
            .matches(&e)
        );
        assert!(
            field(
                "eventName",
                Matcher::contains(&["securitygroup".into()], false).unwrap()
            )
            .matches(&e)
        );
        assert!(
            field(
                "eventName",
                Matcher::regex("^authorize.*ingress$", false).unwrap()
            )
            .matches(&e)
        );
        assert!(field("requestParameters.groupId", Matcher::Exists(true)).matches(&e));
        assert!(field("requestParameters.nope", Matcher::Exists(false)).matches(&e));
        assert!(!field("requestParameters.nope", Matcher::Exists(true)).matches(&e));
        // A CIDR value is inside a network that contains the whole range.
        assert!(
            field(
                "requestParameters.ipPermissions.items.ipRanges.items.cidrIp",
                Matcher::cidr(&["0.0.0.0/0".into()]).unwrap()
            )
            .matches(&e)
        );
        let all_private = Condition::Field {
            source: FieldSource::parse(
                "requestParameters.ipPermissions.items.ipRanges.items.cidrIp",
            )
            .unwrap(),
            matcher: Matcher::cidr(&["10.0.0.0/8".into()]).unwrap(),
            quantifier: Quantifier::All,
        };
        assert!(!all_private.matches(&e));
        let any_private = Condition::Field {
            source: FieldSource::parse(
                "requestParameters.ipPermissions.items.ipRanges.items.cidrIp",
            )
            .unwrap(),
            matcher: Matcher::cidr(&["10.0.0.0/8".into()]).unwrap(),
            quantifier: Quantifier::Any,
        };
        assert!(any_private.matches(&e));
        assert!(Condition::Not(Box::new(all_private)).matches(&e));
        assert!(FieldSource::parse("event.nope").is_err());
    }

    #[test]
    fn each_tests_conditions_on_one_element_at_a_time() {
        // Port 22 is open to 10/8, port 443 to the world: no single permission
        // opens 22 to the world, though the fields taken apart would say so.
        let json = SG.replace(
            r#"{"fromPort":22,"toPort":22,"ipRanges":{"items":[{"cidrIp":"10.0.0.0/8"},{"cidrIp":"0.0.0.0/0"}]}}"#,
            r#"{"fromPort":22,"toPort":22,"ipRanges":{"items":[{"cidrIp":"10.0.0.0/8"}]}},{"fromPort":443,"toPort":443,"ipRanges":{"items":[{"cidrIp":"0.0.0.0/0"}]}}"#,
        );
        let e = event(&json);
        let eq = |v: &str| Matcher::Equals {
            values: vec![v.into()],
            case_sensitive: false,
        };
        let port22_open = |quantifier| Condition::Each {
            path: FieldSource::parse("requestParameters.ipPermissions.items").unwrap(),
            quantifier,
            inner: Box::new(Condition::AllOf(vec![
                field("fromPort", Matcher::Compare(CmpOp::Lte, 22.0)),
                field("toPort", Matcher::Compare(CmpOp::Gte, 22.0)),
                field("ipRanges.items.cidrIp", eq("0.0.0.0/0")),
            ])),
        };
        assert!(!port22_open(Quantifier::Any).matches(&e));
        let apart = Condition::AllOf(vec![
            field(
                "requestParameters.ipPermissions.items.fromPort",
                Matcher::Compare(CmpOp::Lte, 22.0),
            ),
            field(
                "requestParameters.ipPermissions.items.ipRanges.items.cidrIp",
                eq("0.0.0.0/0"),
            ),
        ]);
        assert!(apart.matches(&e), "fields taken apart over-match");
        assert!(port22_open(Quantifier::Any).matches(&event(SG)));
        let all_have_ranges = Condition::Each {
            path: FieldSource::parse("requestParameters.ipPermissions.items").unwrap(),
            quantifier: Quantifier::All,
            inner: Box::new(field("ipRanges.items.cidrIp", Matcher::Exists(true))),
        };
        assert!(all_have_ranges.matches(&e));
    }
}
