//! Rendering a [`Notice`] for one destination's API.
//!
//! A [`Formatter`] turns a notice into the body of one request, or into
//! nothing when its format does not send that kind of notice. Five formats:
//!
//! | format | body | create | update | close | digest |
//! | --- | --- | --- | --- | --- | --- |
//! | [`json`](Formatter::json) | the notice as serde writes it | ✓ | ✓ | ✓ | ✓ |
//! | [`ocsf`](Formatter::ocsf) | an OCSF 1.5.0 Detection Finding (`class_uid` 2004) | activity Create | activity Update | activity Close | `None` |
//! | [`slack`](Formatter::slack) | a Slack incoming-webhook message (`text` + Block Kit `blocks`) | ✓ | `None` | ✓ (":white_check_mark: resolved") | ✓ |
//! | [`pagerduty`](Formatter::pagerduty) | a PagerDuty Events API v2 event | `trigger` | `trigger` (same `dedup_key`) | `resolve` | `trigger` |
//! | [`template`](Formatter::template) | a minijinja template of the operator's | ✓ | ✓ | ✓ | ✓ |
//!
//! Choices worth knowing:
//!
//! - **OCSF.** The event declares the `cloud` and `host` profiles (`host`
//!   carries `actor`) in `metadata.profiles`. `metadata.uid` is the notice's
//!   idempotency key and `metadata.correlation_uid` the alert id, as is
//!   `finding_info.uid`, so a consumer folds a create, its updates and its
//!   close into one finding. `status_id` is New for a create *and* an update
//!   (more occurrences say nothing about whether anyone is reviewing it, which
//!   is what In Progress means) and Resolved for a close. `time` is the
//!   latest occurrence (the render time only if the notice carries no time
//!   at all), `count` the occurrences. seamwatch's own
//!   fields (responsibility side, owner team, data tier, control domain,
//!   correlation detail, approved change paths, …) go in `unmapped`.
//!   A digest renders to `None`: it reports no detection and spans clouds,
//!   while the cloud profile requires one `cloud.provider`; the held-back
//!   alerts stay in the outbox, and a budget belongs on human channels.
//! - **Slack.** An update returns `None`: a webhook can only post a new
//!   message, and more occurrences must not notify people again. Every
//!   string from an audit log is escaped (`&`, `<`, `>`) before it goes into
//!   `mrkdwn`, so a resource named `<!channel>` cannot ping a channel.
//! - **PagerDuty.** `dedup_key` is the alert id, so updates fold into the open
//!   alert and the close resolves it; a resolve carries only `routing_key`,
//!   `event_action` and `dedup_key`. Severities map critical → `critical`,
//!   high → `error`, medium → `warning`, low and info → `info`. The routing
//!   key is a secret: `Debug` never prints it.
//! - **Templates** are compiled when the formatter is built, so a syntax
//!   error (with its line) is reported at start-up, not at the first alert.
//!   The context holds `notice` (the notice as the `json` format writes it)
//!   and the shortcuts `action` (`create`, `update`, `close` or `digest`),
//!   `alert_id` (the digest id for a digest), `finding` (absent for a
//!   digest), `digest` (only for a digest), `severity` and `idempotency_key`.
//!   For a JSON content type (`application/json`, `…+json`) output is
//!   auto-escaped as JSON — `{{ finding.title }}` writes a quoted, escaped
//!   string, so audit-log values cannot break the document; use
//!   `{{ x|safe }}` to opt out. HTML and XML content types escape as HTML;
//!   other types are not escaped. Undefined values, and attributes of them,
//!   render empty (optional fields are often absent, and a digest has no
//!   `finding`), so a missing field does not fail a delivery.

use std::fmt;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value as TemplateValue};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::model::{Action, AlertNotice, DigestNotice, Notice};
use crate::detect::{Finding, FindingKind, FindingPrincipal, Severity};
use crate::event::{Cloud, PrincipalKind};

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("template: {0}")]
    Template(String),
    #[error("cannot encode notice: {0}")]
    Json(#[from] serde_json::Error),
}

/// A rendered request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub body: Vec<u8>,
    pub content_type: String,
}

/// How notices are rendered for one destination.
#[derive(Clone)]
pub struct Formatter {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Json,
    Ocsf,
    Slack,
    PagerDuty {
        routing_key: String,
    },
    Template {
        env: Box<Environment<'static>>,
        content_type: String,
    },
}

/// The OCSF schema version the `ocsf` format follows (and is validated
/// against in `tests/alert_formats.rs`).
pub const OCSF_VERSION: &str = "1.5.0";

const JSON: &str = "application/json";
/// The name the template is registered under (it shows in error messages).
const TEMPLATE_NAME: &str = "template";
/// PagerDuty's documented limit for `payload.summary`.
const PD_SUMMARY_MAX: usize = 1024;

impl Formatter {
    /// seamwatch's own JSON: the notice as it is.
    pub fn json() -> Formatter {
        Formatter { kind: Kind::Json }
    }

    /// An OCSF 1.5.0 Detection Finding (`class_uid` 2004).
    pub fn ocsf() -> Formatter {
        Formatter { kind: Kind::Ocsf }
    }

    /// A Slack incoming-webhook message.
    pub fn slack() -> Formatter {
        Formatter { kind: Kind::Slack }
    }

    /// A PagerDuty Events API v2 event for the integration `routing_key`.
    pub fn pagerduty(routing_key: String) -> Formatter {
        Formatter {
            kind: Kind::PagerDuty { routing_key },
        }
    }

    /// A minijinja template producing a body of `content_type`, compiled now:
    /// a syntax error is returned here, with its line.
    pub fn template(source: &str, content_type: &str) -> Result<Formatter, FormatError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        let escape = auto_escape_for(content_type);
        env.set_auto_escape_callback(move |_| escape.clone());
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| FormatError::Template(describe_template_error(&e)))?;
        Ok(Formatter {
            kind: Kind::Template {
                env: Box::new(env),
                content_type: content_type.to_owned(),
            },
        })
    }

    /// `json`, `ocsf`, `slack`, `pagerduty` or `template`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Json => "json",
            Kind::Ocsf => "ocsf",
            Kind::Slack => "slack",
            Kind::PagerDuty { .. } => "pagerduty",
            Kind::Template { .. } => "template",
        }
    }

    /// The body for `notice`, or `None` when this format does not send it.
    pub fn render(&self, notice: &Notice) -> Result<Option<Rendered>, FormatError> {
        let value = match &self.kind {
            Kind::Json => return Ok(Some(json_body(serde_json::to_vec(notice)?))),
            Kind::Template { env, content_type } => {
                return render_template(env, content_type, notice).map(Some);
            }
            Kind::Ocsf => ocsf(notice),
            Kind::Slack => slack(notice),
            Kind::PagerDuty { routing_key } => Some(pagerduty(routing_key, notice)),
        };
        match value {
            Some(v) => Ok(Some(json_body(serde_json::to_vec(&v)?))),
            None => Ok(None),
        }
    }
}

impl fmt::Debug for Formatter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Formatter");
        s.field("format", &self.name());
        match &self.kind {
            Kind::PagerDuty { .. } => {
                s.field("routing_key", &"<redacted>");
            }
            Kind::Template { content_type, .. } => {
                s.field("content_type", content_type);
            }
            Kind::Json | Kind::Ocsf | Kind::Slack => {}
        }
        s.finish()
    }
}

fn json_body(body: Vec<u8>) -> Rendered {
    Rendered {
        body,
        content_type: JSON.into(),
    }
}

// ---------------------------------------------------------------------------
// Template

fn auto_escape_for(content_type: &str) -> AutoEscape {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        AutoEscape::Json
    } else if matches!(
        essence.as_str(),
        "text/html" | "application/xhtml+xml" | "text/xml" | "application/xml"
    ) || essence.ends_with("+xml")
    {
        AutoEscape::Html
    } else {
        AutoEscape::None
    }
}

fn describe_template_error(err: &minijinja::Error) -> String {
    let mut msg = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    if let Some(line) = err.line() {
        let _ = write!(msg, " (line {line})");
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let _ = write!(msg, ": {cause}");
        source = cause.source();
    }
    msg
}

fn render_template(
    env: &Environment<'static>,
    content_type: &str,
    notice: &Notice,
) -> Result<Rendered, FormatError> {
    let template = env
        .get_template(TEMPLATE_NAME)
        .map_err(|e| FormatError::Template(describe_template_error(&e)))?;
    let (action, alert_id, finding, digest) = match notice {
        Notice::Alert(a) => (
            a.action.as_str(),
            a.alert_id.as_str(),
            TemplateValue::from(Serde(&a.finding)),
            TemplateValue::UNDEFINED,
        ),
        Notice::Digest(d) => (
            "digest",
            d.id.as_str(),
            TemplateValue::UNDEFINED,
            TemplateValue::from(Serde(d)),
        ),
    };
    let ctx = minijinja::context! {
        notice => TemplateValue::from(Serde(notice)),
        action => action,
        alert_id => alert_id,
        finding => finding,
        digest => digest,
        severity => notice.severity().as_str(),
        idempotency_key => notice.idempotency_key(),
    };
    let body = template
        .render(ctx)
        .map_err(|e| FormatError::Template(describe_template_error(&e)))?;
    Ok(Rendered {
        body: body.into_bytes(),
        content_type: content_type.to_owned(),
    })
}

// ---------------------------------------------------------------------------
// Shared helpers

/// A serde unit enum as its wire string (`customer`, `high`, …).
fn wire<T: Serialize>(value: &T) -> Option<String> {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// When the notice's change happened: the latest occurrence, else the
/// finding's event time, else the first occurrence.
fn notice_time(a: &AlertNotice) -> Option<DateTime<Utc>> {
    a.last_seen.or(a.finding.event_time).or(a.first_seen)
}

fn principal_label(p: &FindingPrincipal) -> String {
    match (&p.name, &p.id) {
        (Some(name), Some(id)) if name != id => format!("{name} ({id})"),
        (Some(name), _) => name.clone(),
        (None, Some(id)) => id.clone(),
        (None, None) => format!("{} principal", p.kind.as_str()),
    }
}

fn cloud_name(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Aws => "AWS",
        Cloud::Azure => "Azure",
        Cloud::Gcp => "GCP",
    }
}

/// `AWS 123456789012/us-east-1`, `GCP acme-prod`, `Azure`.
fn location(f: &Finding) -> String {
    let mut s = cloud_name(f.cloud).to_owned();
    match (&f.account, &f.region) {
        (Some(a), Some(r)) => {
            let _ = write!(s, " {a}/{r}");
        }
        (Some(a), None) => {
            let _ = write!(s, " {a}");
        }
        (None, Some(r)) => {
            let _ = write!(s, " {r}");
        }
        (None, None) => {}
    }
    s
}

/// One line: what, who, where.
fn alert_summary(a: &AlertNotice) -> String {
    let f = &a.finding;
    let mut s = format!(
        "[{}] {}: {} in {}",
        f.severity.as_str().to_ascii_uppercase(),
        f.title,
        principal_label(&f.principal),
        location(f)
    );
    if a.occurrences > 1 {
        let _ = write!(s, " ({} occurrences)", a.occurrences);
    }
    if a.action == Action::Close {
        s.insert_str(0, "Resolved: ");
    }
    s
}

fn digest_title(d: &DigestNotice) -> String {
    let noun = if d.count == 1 { "alert" } else { "alerts" };
    format!("{} {noun} held back by the alert budget", d.count)
}

/// At most `max` characters, with an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn is_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

/// seamwatch's own fields of a finding, for places the target format has no
/// field for (OCSF `unmapped`, PagerDuty `custom_details`).
fn seamwatch_fields(a: &AlertNotice) -> Map<String, Value> {
    let f = &a.finding;
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        if !(v.is_null() || v.as_array().is_some_and(Vec::is_empty)) {
            m.insert(k.to_owned(), v);
        }
    };
    put("finding_id", json!(a.finding_id));
    put("finding_kind", json!(f.kind));
    put("rule_id", json!(f.rule_id));
    put("rule_severity", json!(f.rule_severity));
    put("responsibility", json!(f.responsibility));
    put("owner_team", json!(f.owner_team));
    put("data_tier", json!(f.data_tier));
    put("control_domain", json!(f.domain));
    put("service", json!(f.service));
    put("operation", json!(f.operation));
    put("principal_kind", json!(f.principal.kind));
    put("approved_paths", json!(f.approved_paths));
    put("compliance", json!(f.compliance));
    put("detail", json!(f.detail));
    put("author", json!(f.author));
    put("correlation", json!(f.correlation));
    put("closed_by", json!(a.closed_by));
    m
}

// ---------------------------------------------------------------------------
// OCSF Detection Finding

fn ocsf(notice: &Notice) -> Option<Value> {
    match notice {
        Notice::Alert(a) => Some(ocsf_alert(a, &notice.idempotency_key())),
        Notice::Digest(_) => None,
    }
}

fn ocsf_severity(s: Severity) -> (u8, &'static str) {
    match s {
        Severity::Info => (1, "Informational"),
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

/// OCSF `user.type_id`: only the kinds that map cleanly; the rest are Other
/// with seamwatch's kind as `type`.
fn ocsf_user_type(kind: PrincipalKind) -> (u8, &'static str) {
    match kind {
        PrincipalKind::User => (1, "User"),
        PrincipalKind::Root => (2, "Admin"),
        PrincipalKind::ProviderService => (3, "System"),
        PrincipalKind::Unknown => (0, "Unknown"),
        other => (99, other.as_str()),
    }
}

/// `T1562.008` → technique T1562 + sub-technique T1562.008; `T1578` →
/// technique; `TA0005` → tactic; anything else → a technique by name.
fn ocsf_attack(id: &str) -> Value {
    let digits = |s: &str| s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit());
    let technique_url = |t: &str| format!("https://attack.mitre.org/techniques/{t}/");
    if let Some(rest) = id.strip_prefix("TA")
        && digits(rest)
    {
        return json!({ "tactic": { "uid": id, "src_url": format!("https://attack.mitre.org/tactics/{id}/") } });
    }
    if let Some(rest) = id.strip_prefix('T') {
        match rest.split_once('.') {
            Some((main, sub))
                if digits(main) && sub.len() == 3 && sub.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let parent = format!("T{main}");
                return json!({
                    "technique": { "uid": parent, "src_url": technique_url(&parent) },
                    "sub_technique": { "uid": id, "src_url": technique_url(&format!("{parent}/{sub}")) },
                });
            }
            None if digits(rest) => {
                return json!({ "technique": { "uid": id, "src_url": technique_url(id) } });
            }
            _ => {}
        }
    }
    json!({ "technique": { "name": id } })
}

fn ocsf_cloud(f: &Finding) -> Value {
    let mut cloud = Map::new();
    cloud.insert("provider".into(), json!(cloud_name(f.cloud)));
    if let Some(account) = &f.account {
        let mut acc = Map::new();
        acc.insert("uid".into(), json!(account));
        // Azure's account may be a subscription or a tenant: no type there.
        match f.cloud {
            Cloud::Aws => {
                acc.insert("type_id".into(), json!(10));
                acc.insert("type".into(), json!("AWS Account"));
            }
            Cloud::Gcp => {
                acc.insert("type_id".into(), json!(11));
                acc.insert("type".into(), json!("GCP Project"));
                cloud.insert("project_uid".into(), json!(account));
            }
            Cloud::Azure => {}
        }
        cloud.insert("account".into(), Value::Object(acc));
    }
    if let Some(region) = &f.region {
        cloud.insert("region".into(), json!(region));
        if f.cloud == Cloud::Aws {
            cloud.insert("cloud_partition".into(), json!(aws_partition(region)));
        }
    }
    Value::Object(cloud)
}

fn aws_partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

fn ocsf_actor(p: &FindingPrincipal) -> Option<Value> {
    if p.id.is_none() && p.name.is_none() {
        return None; // OCSF's user needs a uid or a name
    }
    let (type_id, type_name) = ocsf_user_type(p.kind);
    let mut user = Map::new();
    if let Some(id) = &p.id {
        user.insert("uid".into(), json!(id));
    }
    if let Some(name) = &p.name {
        user.insert("name".into(), json!(name));
    }
    user.insert("type_id".into(), json!(type_id));
    user.insert("type".into(), json!(type_name));
    Some(json!({ "user": user }))
}

fn ocsf_resource(f: &Finding, uid: &str) -> Value {
    let mut r = Map::new();
    r.insert("uid".into(), json!(uid));
    // arn:partition:service:region:account:resource
    let arn: Vec<&str> = uid.splitn(6, ':').collect();
    if arn.len() == 6 && arn[0] == "arn" {
        r.insert("cloud_partition".into(), json!(arn[1]));
        // `trail/org-trail` → `cloudtrail:trail`; `my-bucket` → `s3`.
        let resource_type = arn[5]
            .split_once(['/', ':'])
            .map(|(t, _)| t)
            .filter(|t| !t.is_empty());
        match resource_type {
            Some(t) if !arn[2].is_empty() => {
                r.insert("type".into(), json!(format!("{}:{t}", arn[2])));
            }
            _ if !arn[2].is_empty() => {
                r.insert("type".into(), json!(arn[2]));
            }
            _ => {}
        }
        if !arn[3].is_empty() {
            r.insert("region".into(), json!(arn[3]));
        }
    }
    if !r.contains_key("region")
        && let Some(region) = &f.region
    {
        r.insert("region".into(), json!(region));
    }
    Value::Object(r)
}

fn ocsf_alert(a: &AlertNotice, idempotency_key: &str) -> Value {
    let f = &a.finding;
    let (activity_id, activity_name, status_id, status) = match a.action {
        Action::Create => (1, "Create", 1, "New"),
        Action::Update => (2, "Update", 1, "New"),
        Action::Close => (3, "Close", 4, "Resolved"),
    };
    let (severity_id, severity) = ocsf_severity(f.severity);
    let time = notice_time(a).unwrap_or_else(Utc::now);

    let mut event = Map::new();
    let mut put = |k: &str, v: Value| {
        event.insert(k.to_owned(), v);
    };
    put("class_uid", json!(2004));
    put("class_name", json!("Detection Finding"));
    put("category_uid", json!(2));
    put("category_name", json!("Findings"));
    put("activity_id", json!(activity_id));
    put("activity_name", json!(activity_name));
    put("type_uid", json!(200400 + activity_id));
    put(
        "type_name",
        json!(format!("Detection Finding: {activity_name}")),
    );
    put("time", json!(millis(time)));
    put("severity_id", json!(severity_id));
    put("severity", json!(severity));
    put("status_id", json!(status_id));
    put("status", json!(status));
    put("is_alert", json!(a.action != Action::Close));
    put("message", json!(alert_summary(a)));
    put("count", json!(a.occurrences));
    if let Some(first) = a.first_seen {
        put("start_time", json!(millis(first)));
    }
    if let Some(last) = a.last_seen {
        put("end_time", json!(millis(last)));
    }
    put(
        "metadata",
        json!({
            "version": OCSF_VERSION,
            "profiles": ["cloud", "host"],
            "product": {
                "name": "seamwatch",
                "vendor_name": "seamwatch",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "uid": idempotency_key,
            "correlation_uid": a.alert_id,
            "event_code": f.rule_id,
        }),
    );
    put("finding_info", ocsf_finding_info(a));
    put("cloud", ocsf_cloud(f));
    let actor = ocsf_actor(&f.principal);
    if let Some(actor) = &actor {
        put("actor", actor.clone());
    }
    let api = json!({ "operation": f.operation, "service": { "name": f.service } });
    if f.correlation.is_none() {
        put("api", api.clone());
    }
    let resources: Vec<Value> = f.resources.iter().map(|r| ocsf_resource(f, r)).collect();
    if !resources.is_empty() {
        put("resources", json!(resources));
    }
    if let Some(desc) = &f.remediation {
        let mut remediation = Map::new();
        remediation.insert("desc".into(), json!(desc));
        if !f.references.is_empty() {
            remediation.insert("references".into(), json!(f.references));
        }
        put("remediation", Value::Object(remediation));
    }
    // One evidence per event. A single-event finding also names the call,
    // the caller and the resources; a correlation's events differ, so only
    // their ids and sources.
    let single = f.correlation.is_none() && f.evidence.len() == 1;
    let evidences: Vec<Value> = f
        .evidence
        .iter()
        .map(|e| {
            let mut ev = Map::new();
            ev.insert("uid".into(), json!(e.event_id));
            ev.insert("data".into(), json!({ "source": e.source }));
            if single {
                ev.insert("api".into(), api.clone());
                if let Some(actor) = &actor {
                    ev.insert("actor".into(), actor.clone());
                }
                if !resources.is_empty() {
                    ev.insert("resources".into(), json!(resources));
                }
            }
            Value::Object(ev)
        })
        .collect();
    if !evidences.is_empty() {
        put("evidences", json!(evidences));
    }
    let mut unmapped = seamwatch_fields(a);
    if f.remediation.is_none() && !f.references.is_empty() {
        unmapped.insert("references".into(), json!(f.references));
    }
    put("unmapped", Value::Object(unmapped));
    Value::Object(event)
}

fn ocsf_finding_info(a: &AlertNotice) -> Value {
    let f = &a.finding;
    let mut info = Map::new();
    let mut put = |k: &str, v: Value| {
        info.insert(k.to_owned(), v);
    };
    put("uid", json!(a.alert_id));
    put("title", json!(f.title));
    let mut desc = format!(
        "{} on {} by {} in {}.",
        f.operation,
        f.service,
        principal_label(&f.principal),
        location(f)
    );
    if let Some(detail) = &f.detail {
        let _ = write!(desc, " {detail}");
    }
    if let Some(c) = &f.correlation {
        let _ = write!(
            desc,
            " Correlation ({}) over {} events for {} between {} and {}.",
            c.kind,
            c.events,
            c.group,
            rfc3339(c.window_start),
            rfc3339(c.window_end)
        );
    }
    put("desc", json!(desc));
    put("types", json!([wire(&f.kind).unwrap_or_default()]));
    put(
        "analytic",
        json!({
            "uid": f.rule_id,
            "name": f.title,
            "type_id": 1,
            "type": "Rule",
        }),
    );
    if let Some(first) = a.first_seen {
        put("first_seen_time", json!(millis(first)));
        put("created_time", json!(millis(first)));
    }
    if let Some(last) = a.last_seen {
        put("last_seen_time", json!(millis(last)));
        if a.action != Action::Create {
            put("modified_time", json!(millis(last)));
        }
    }
    if !f.attack.is_empty() {
        let attacks: Vec<Value> = f.attack.iter().map(|t| ocsf_attack(t)).collect();
        put("attacks", json!(attacks));
    }
    if !f.evidence.is_empty() {
        let related: Vec<Value> = f
            .evidence
            .iter()
            .map(|e| json!({ "uid": e.event_id }))
            .collect();
        put("related_events", json!(related));
    }
    let related_count = match &f.correlation {
        Some(c) => u64::from(c.events),
        None => f.evidence.len() as u64,
    };
    put("related_events_count", json!(related_count));
    if f.kind == FindingKind::Sigma {
        put("data_sources", json!(["sigma"]));
    }
    Value::Object(info)
}

// ---------------------------------------------------------------------------
// Slack

/// Escapes what Slack's `mrkdwn` treats as control characters.
fn mrkdwn_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

fn mrkdwn(text: String) -> Value {
    json!({ "type": "mrkdwn", "text": truncate(&text, 3000) })
}

fn field(label: &str, value: &str) -> Value {
    json!({ "type": "mrkdwn", "text": truncate(&format!("*{label}*\n{}", mrkdwn_escape(value)), 2000) })
}

fn section(text: String) -> Value {
    json!({ "type": "section", "text": mrkdwn(text) })
}

fn header(text: &str) -> Value {
    json!({ "type": "header", "text": { "type": "plain_text", "text": truncate(text, 150), "emoji": true } })
}

fn context(text: String) -> Value {
    json!({ "type": "context", "elements": [mrkdwn(text)] })
}

fn severity_emoji(s: Severity) -> &'static str {
    match s {
        Severity::Critical => ":red_circle:",
        Severity::High => ":large_orange_circle:",
        Severity::Medium => ":large_yellow_circle:",
        Severity::Low => ":large_blue_circle:",
        Severity::Info => ":white_circle:",
    }
}

/// A bulleted list of at most `max` items, saying how many were left out.
fn bullets(items: &[String], max: usize) -> String {
    let mut s = String::new();
    for item in items.iter().take(max) {
        let _ = writeln!(s, "• {}", mrkdwn_escape(item));
    }
    if items.len() > max {
        let _ = writeln!(s, "… and {} more", items.len() - max);
    }
    s.trim_end().to_owned()
}

fn slack(notice: &Notice) -> Option<Value> {
    match notice {
        Notice::Alert(a) => match a.action {
            Action::Create => Some(slack_create(a)),
            Action::Update => None,
            Action::Close => Some(slack_close(a)),
        },
        Notice::Digest(d) => Some(slack_digest(d)),
    }
}

fn slack_facts(a: &AlertNotice) -> Vec<Value> {
    let f = &a.finding;
    let mut fields = vec![
        field("Severity", f.severity.as_str()),
        field("Principal", &principal_label(&f.principal)),
        field("Account / region", &location(f)),
    ];
    if let Some(team) = &f.owner_team {
        fields.push(field("Owner team", team));
    }
    if let Some(side) = f.responsibility.as_ref().and_then(wire) {
        fields.push(field("Responsibility", &side));
    }
    if let Some(domain) = f.domain.as_ref().and_then(wire) {
        fields.push(field("Control domain", &domain));
    }
    if let Some(tier) = f.data_tier.as_ref().and_then(wire) {
        fields.push(field("Data tier", &tier));
    }
    if a.occurrences > 1 {
        fields.push(field("Occurrences", &a.occurrences.to_string()));
    }
    fields
}

fn slack_footer(a: &AlertNotice) -> Value {
    let f = &a.finding;
    let mut s = format!(
        "alert `{}` · rule `{}`",
        mrkdwn_escape(&a.alert_id),
        mrkdwn_escape(&f.rule_id)
    );
    if !f.attack.is_empty() {
        let _ = write!(s, " · ATT&amp;CK {}", mrkdwn_escape(&f.attack.join(", ")));
    }
    let _ = write!(s, " · seamwatch {}", env!("CARGO_PKG_VERSION"));
    context(s)
}

fn slack_create(a: &AlertNotice) -> Value {
    let f = &a.finding;
    let mut blocks = vec![header(&format!(
        "{} {}",
        severity_emoji(f.severity),
        f.title
    ))];
    let mut what = format!(
        "`{}` on `{}`",
        mrkdwn_escape(&f.operation),
        mrkdwn_escape(&f.service)
    );
    if let Some(detail) = &f.detail {
        let _ = write!(what, "\n{}", mrkdwn_escape(detail));
    }
    if let Some(c) = &f.correlation {
        let _ = write!(
            what,
            "\n{} correlation over {} events for {}",
            mrkdwn_escape(&c.kind),
            c.events,
            mrkdwn_escape(&c.group)
        );
    }
    blocks.push(section(what));
    blocks.push(json!({ "type": "section", "fields": slack_facts(a) }));
    if !f.resources.is_empty() {
        blocks.push(section(format!(
            "*Resources*\n{}",
            bullets(&f.resources, 10)
        )));
    }
    if let Some(remediation) = &f.remediation {
        let mut text = format!("*Remediation*\n{}", mrkdwn_escape(remediation));
        for reference in f.references.iter().filter(|r| is_url(r)).take(5) {
            let _ = write!(text, "\n<{}>", mrkdwn_escape(reference));
        }
        blocks.push(section(text));
    }
    if !f.approved_paths.is_empty() {
        blocks.push(section(format!(
            "*Approved change paths*\n{}",
            bullets(&f.approved_paths, 5)
        )));
    }
    blocks.push(slack_footer(a));
    json!({
        "text": truncate(&format!(":rotating_light: {}", mrkdwn_escape(&alert_summary(a))), 3000),
        "blocks": blocks,
    })
}

fn slack_close(a: &AlertNotice) -> Value {
    let f = &a.finding;
    let mut text = format!(":white_check_mark: *Resolved:* {}", mrkdwn_escape(&f.title));
    if let Some(by) = &a.closed_by {
        let _ = write!(text, "\nclosed by rule `{}`", mrkdwn_escape(by));
    }
    let blocks = vec![
        section(text),
        json!({ "type": "section", "fields": slack_facts(a) }),
        slack_footer(a),
    ];
    json!({
        "text": truncate(&format!(":white_check_mark: resolved: {}", mrkdwn_escape(&f.title)), 3000),
        "blocks": blocks,
    })
}

fn slack_digest(d: &DigestNotice) -> Value {
    let title = digest_title(d);
    let lines: Vec<String> = d
        .by_rule
        .iter()
        .map(|l| format!("{} × {} ({}, {})", l.count, l.title, l.rule_id, l.severity))
        .collect();
    let mut blocks = vec![
        header(&format!(":inbox_tray: {title}")),
        section(format!(
            "Between {} and {} for *{}* (highest severity: {}).\n{}",
            rfc3339(d.window_start),
            rfc3339(d.window_end),
            mrkdwn_escape(&d.destination),
            d.max_severity,
            bullets(&lines, 20)
        )),
    ];
    let mut footer = format!("digest `{}`", mrkdwn_escape(&d.id));
    if !d.sample.is_empty() {
        let sample: Vec<String> = d
            .sample
            .iter()
            .take(5)
            .map(|id| format!("`{}`", mrkdwn_escape(id)))
            .collect();
        let _ = write!(footer, " · alerts {}", sample.join(", "));
        if d.sample.len() > 5 {
            footer.push_str(", …");
        }
    }
    blocks.push(context(footer));
    json!({
        "text": format!(":inbox_tray: {} ({})", title, mrkdwn_escape(&d.destination)),
        "blocks": blocks,
    })
}

// ---------------------------------------------------------------------------
// PagerDuty Events API v2

fn pd_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "info",
    }
}

fn pagerduty(routing_key: &str, notice: &Notice) -> Value {
    match notice {
        Notice::Alert(a) if a.action == Action::Close => json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": a.alert_id,
        }),
        Notice::Alert(a) => pd_trigger(routing_key, a),
        Notice::Digest(d) => pd_digest(routing_key, d),
    }
}

fn pd_trigger(routing_key: &str, a: &AlertNotice) -> Value {
    let f = &a.finding;
    let source = f.resources.first().cloned().unwrap_or_else(|| location(f));
    let mut payload = Map::new();
    payload.insert(
        "summary".into(),
        json!(truncate(&alert_summary(a), PD_SUMMARY_MAX)),
    );
    payload.insert("source".into(), json!(source));
    payload.insert("severity".into(), json!(pd_severity(f.severity)));
    if let Some(t) = notice_time(a) {
        payload.insert("timestamp".into(), json!(rfc3339(t)));
    }
    payload.insert("component".into(), json!(f.service));
    payload.insert("group".into(), json!(location(f)));
    payload.insert("class".into(), json!(f.rule_id));

    let mut details = Map::new();
    details.insert("alert_id".into(), json!(a.alert_id));
    details.insert("title".into(), json!(f.title));
    details.insert("severity".into(), json!(f.severity));
    details.insert("occurrences".into(), json!(a.occurrences));
    if let Some(t) = a.first_seen {
        details.insert("first_seen".into(), json!(rfc3339(t)));
    }
    if let Some(t) = a.last_seen {
        details.insert("last_seen".into(), json!(rfc3339(t)));
    }
    details.insert("cloud".into(), json!(f.cloud));
    if let Some(account) = &f.account {
        details.insert("account".into(), json!(account));
    }
    if let Some(region) = &f.region {
        details.insert("region".into(), json!(region));
    }
    details.insert("principal".into(), json!(f.principal));
    if !f.resources.is_empty() {
        details.insert("resources".into(), json!(f.resources));
    }
    if !f.attack.is_empty() {
        details.insert("attack".into(), json!(f.attack));
    }
    if let Some(r) = &f.remediation {
        details.insert("remediation".into(), json!(r));
    }
    if !f.references.is_empty() {
        details.insert("references".into(), json!(f.references));
    }
    details.extend(seamwatch_fields(a));
    payload.insert("custom_details".into(), Value::Object(details));

    let mut event = Map::new();
    event.insert("routing_key".into(), json!(routing_key));
    event.insert("event_action".into(), json!("trigger"));
    event.insert("dedup_key".into(), json!(a.alert_id));
    event.insert("payload".into(), Value::Object(payload));
    event.insert("client".into(), json!("seamwatch"));
    let links: Vec<Value> = f
        .references
        .iter()
        .filter(|r| is_url(r))
        .map(|r| json!({ "href": r, "text": r }))
        .collect();
    if !links.is_empty() {
        event.insert("links".into(), json!(links));
    }
    Value::Object(event)
}

fn pd_digest(routing_key: &str, d: &DigestNotice) -> Value {
    let summary = format!(
        "{} for {} between {} and {}",
        digest_title(d),
        d.destination,
        rfc3339(d.window_start),
        rfc3339(d.window_end)
    );
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": d.id,
        "client": "seamwatch",
        "payload": {
            "summary": truncate(&summary, PD_SUMMARY_MAX),
            "source": format!("seamwatch:{}", d.destination),
            "severity": pd_severity(d.max_severity),
            "timestamp": rfc3339(d.window_end),
            "component": "alert budget",
            "group": d.destination,
            "class": "alert_budget_digest",
            "custom_details": {
                "digest_id": d.id,
                "destination": d.destination,
                "window_start": rfc3339(d.window_start),
                "window_end": rfc3339(d.window_end),
                "held_back": d.count,
                "max_severity": d.max_severity,
                "by_rule": d.by_rule,
                "sample_alert_ids": d.sample,
            },
        },
    })
}
