//! Azure Activity Log record → [`AuditEvent`], for the three shapes it comes in:
//! the Event Hubs / storage shape (`time`, `operationName` string, `identity`),
//! the REST / portal shape (`eventTimestamp`, `operationName.value`, `caller`,
//! `claims`) and the SDK's snake_case shape (`event_timestamp`,
//! `operation_name.value`, `http_request.client_ip_address`).
//!
//! Quirks handled: upper-cased `operationName` and `resourceId` (the service is
//! mapped to the provider's canonical spelling, `MICROSOFT.STORAGE` →
//! `Microsoft.Storage`); `identity` as a plain string; absent
//! `callerIpAddress` (the `ipaddr` claim is used); `resultType` `Start`/`Accept`
//! (pending) vs `Success` vs `Failure` (denied when the status is `Forbidden`);
//! PIM records whose `operationName` is prose (the provider comes from the
//! resource id). The JWT claims are enrichment: a claims object that does not
//! parse leaves the principal less specific instead of rejecting the record.

use std::borrow::Cow;

use serde::Deserialize;
use smallvec::SmallVec;
use sonic_rs::{JsonValueTrait, LazyValue};

use super::decode::{ErrorReason, Rejection, get_str, hash_fields, json_string, reject, sub_str};
use super::probe::Probe;
use super::time::parse_time;
use super::{
    AuditEvent, Cloud, EventId, Outcome, Principal, PrincipalKind, Resource, Shape, SourceIp, Str,
    non_empty,
};

/// Resource providers by canonical spelling; logs upper-case them freely.
const PROVIDERS: &[&str] = &[
    "Microsoft.Aad",
    "Microsoft.AADIAM",
    "Microsoft.Advisor",
    "Microsoft.AlertsManagement",
    "Microsoft.ApiManagement",
    "Microsoft.App",
    "Microsoft.AppConfiguration",
    "Microsoft.Authorization",
    "Microsoft.Automation",
    "Microsoft.Batch",
    "Microsoft.Blueprint",
    "Microsoft.Cache",
    "Microsoft.Cdn",
    "Microsoft.CognitiveServices",
    "Microsoft.Compute",
    "Microsoft.ContainerInstance",
    "Microsoft.ContainerRegistry",
    "Microsoft.ContainerService",
    "Microsoft.DataFactory",
    "Microsoft.DataProtection",
    "Microsoft.Databricks",
    "Microsoft.DBforMySQL",
    "Microsoft.DBforPostgreSQL",
    "Microsoft.DocumentDB",
    "Microsoft.EventGrid",
    "Microsoft.EventHub",
    "Microsoft.Insights",
    "Microsoft.KeyVault",
    "Microsoft.Kusto",
    "Microsoft.Logic",
    "Microsoft.MachineLearningServices",
    "Microsoft.ManagedIdentity",
    "Microsoft.Management",
    "Microsoft.Network",
    "Microsoft.OperationalInsights",
    "Microsoft.OperationsManagement",
    "Microsoft.PolicyInsights",
    "Microsoft.RecoveryServices",
    "Microsoft.ResourceHealth",
    "Microsoft.Resources",
    "Microsoft.Search",
    "Microsoft.Security",
    "Microsoft.SecurityInsights",
    "Microsoft.ServiceBus",
    "Microsoft.SignalRService",
    "Microsoft.Sql",
    "Microsoft.Storage",
    "Microsoft.Subscription",
    "Microsoft.Support",
    "Microsoft.Synapse",
    "Microsoft.Web",
];

/// The canonical spelling of a provider namespace, or the input as logged.
pub fn canonical_provider<'a>(provider: Str<'a>) -> Str<'a> {
    match PROVIDERS.iter().find(|p| p.eq_ignore_ascii_case(&provider)) {
        Some(canonical) => Cow::Borrowed(canonical),
        None => provider,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Identity<'a> {
    #[serde(borrow)]
    authorization: Option<Authorization<'a>>,
    #[serde(borrow)]
    claims: Option<LazyValue<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Authorization<'a> {
    #[serde(borrow)]
    scope: Option<Str<'a>>,
    #[serde(borrow)]
    evidence: Option<Evidence<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Evidence<'a> {
    #[serde(borrow)]
    principal_id: Option<Str<'a>>,
    #[serde(borrow)]
    principal_type: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Claims<'a> {
    #[serde(borrow, rename = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn")]
    upn_uri: Option<Str<'a>>,
    #[serde(borrow)]
    upn: Option<Str<'a>>,
    #[serde(borrow)]
    unique_name: Option<Str<'a>>,
    #[serde(borrow, rename = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name")]
    name_uri: Option<Str<'a>>,
    #[serde(borrow)]
    appid: Option<Str<'a>>,
    #[serde(borrow)]
    idtyp: Option<Str<'a>>,
    #[serde(borrow, rename = "http://schemas.microsoft.com/identity/claims/objectidentifier")]
    oid_uri: Option<Str<'a>>,
    #[serde(borrow)]
    oid: Option<Str<'a>>,
    #[serde(borrow, rename = "http://schemas.microsoft.com/identity/claims/tenantid")]
    tid_uri: Option<Str<'a>>,
    #[serde(borrow)]
    tid: Option<Str<'a>>,
    #[serde(borrow, rename = "http://schemas.microsoft.com/claims/authnmethodsreferences")]
    amr_uri: Option<LazyValue<'a>>,
    #[serde(borrow)]
    amr: Option<LazyValue<'a>>,
    #[serde(borrow)]
    ipaddr: Option<Str<'a>>,
}

pub(crate) fn normalize<'a>(
    probe: Probe<'a>,
    raw: &'a str,
    shape: Shape,
) -> Result<AuditEvent<'a>, Rejection> {
    let operation = probe
        .operation_name
        .and_then(|o| o.value)
        .or_else(|| probe.operation_name_snake.and_then(|o| o.value))
        // `az monitor activity-log list --query` output may keep only `authorization`.
        .or_else(|| match probe.authorization.as_ref().map(|a| a.as_raw_cow()) {
            Some(Cow::Borrowed(text)) => get_str(text, "action"),
            _ => None,
        });
    let Some(operation) = non_empty(operation) else {
        return reject(ErrorReason::MissingField, "Azure activity record without `operationName`");
    };

    let time_text = probe
        .time
        .as_deref()
        .or(probe.event_timestamp.as_deref())
        .or(probe.event_timestamp_snake.as_deref());
    let time = match time_text {
        Some(text) => match parse_time(text) {
            Some(t) => Some(t),
            None => return reject(ErrorReason::BadTimestamp, format!("`time` `{text}` is not a timestamp")),
        },
        None => None,
    };

    let resource_id = non_empty(probe.resource_id.or(probe.resource_id_snake));
    let identity: Option<Identity<'a>> = probe
        .identity
        .as_ref()
        .filter(|v| v.is_object())
        .and_then(|v| match v.as_raw_cow() {
            Cow::Borrowed(text) => sonic_rs::from_str(text).ok(),
            Cow::Owned(_) => None,
        });
    let authorization_scope = identity
        .as_ref()
        .and_then(|i| i.authorization.as_ref())
        .and_then(|a| a.scope.clone())
        .or_else(|| top_level_scope(probe.authorization.as_ref()));

    let service = service(&operation, probe.resource_provider_name.or(probe.resource_provider_name_snake).and_then(|p| p.value), resource_id.as_ref());

    let event_id = match non_empty(probe.event_data_id.or(probe.event_data_id_snake)) {
        Some(id) => EventId::Native(id),
        None => {
            let correlation = probe.correlation_id.as_deref().or(probe.correlation_id_snake.as_deref());
            if correlation.is_some() || time_text.is_some() {
                EventId::Hash(hash_fields(&[
                    correlation,
                    Some(&operation),
                    probe.result_type.as_deref(),
                    time_text,
                ]))
            } else {
                EventId::Hash(hash_fields(&[Some(raw)]))
            }
        }
    };

    let account = resource_id
        .as_ref()
        .and_then(|id| subscription_of(id))
        .or_else(|| non_empty(probe.subscription_id.or(probe.subscription_id_snake)))
        .or_else(|| authorization_scope.as_ref().and_then(|s| subscription_of(s)));

    let claims_value = identity
        .as_ref()
        .and_then(|i| i.claims.clone())
        .or(probe.claims);
    let claims: Claims<'a> = claims_value
        .as_ref()
        .filter(|v| v.is_object())
        .and_then(|v| match v.as_raw_cow() {
            Cow::Borrowed(text) => sonic_rs::from_str(text).ok(),
            Cow::Owned(_) => None,
        })
        .unwrap_or_default();
    let identity_string = probe
        .identity
        .as_ref()
        .filter(|v| v.is_str())
        .and_then(|v| match v.as_raw_cow() {
            Cow::Borrowed(raw) => json_string(raw),
            Cow::Owned(raw) => json_string(&raw).map(|s| Cow::Owned(s.into_owned())),
        });
    let evidence = identity
        .and_then(|i| i.authorization)
        .and_then(|a| a.evidence);
    let caller = non_empty(probe.caller).or(identity_string);
    let source_ip = non_empty(probe.caller_ip_address)
        .or_else(|| http_client_ip(probe.http_request.as_ref().or(probe.http_request_snake.as_ref())))
        .or_else(|| non_empty(claims.ipaddr.clone()))
        .map(SourceIp::parse);
    let principal = principal(claims, evidence, caller);

    let status = probe
        .result_type
        .clone()
        .or_else(|| probe.status.and_then(|s| s.value));
    let (outcome, error_code) = outcome(
        status.as_deref(),
        &operation,
        probe.result_signature,
        probe.sub_status.and_then(|s| s.value),
        probe.properties.as_ref(),
    );

    let read_only = if ends_with_ignore_case(&operation, "/read") {
        Some(true)
    } else if operation.contains('/') {
        Some(false)
    } else {
        None
    };

    let mut resources = SmallVec::new();
    if let Some(id) = resource_id.or(authorization_scope).or_else(|| {
        probe
            .properties
            .as_ref()
            .and_then(|p| match p.as_raw_cow() {
                Cow::Borrowed(text) => get_str(text, "entity"),
                Cow::Owned(_) => None,
            })
    }) {
        resources.push(Resource { id, kind: None });
    }

    Ok(AuditEvent {
        cloud: Cloud::Azure,
        shape,
        time,
        event_id,
        account,
        region: non_empty(probe.location),
        service,
        operation,
        principal,
        source_ip,
        user_agent: None,
        outcome,
        error_code,
        read_only,
        resources,
        raw: Cow::Borrowed(raw),
    })
}

fn top_level_scope<'a>(authorization: Option<&LazyValue<'a>>) -> Option<Str<'a>> {
    match authorization?.as_raw_cow() {
        Cow::Borrowed(text) => get_str(text, "scope"),
        Cow::Owned(_) => None,
    }
}

fn http_client_ip<'a>(http_request: Option<&LazyValue<'a>>) -> Option<Str<'a>> {
    match http_request?.as_raw_cow() {
        Cow::Borrowed(text) => get_str(text, "clientIpAddress").or_else(|| get_str(text, "client_ip_address")),
        Cow::Owned(_) => None,
    }
}

fn service<'a>(operation: &Str<'a>, provider_name: Option<Str<'a>>, resource_id: Option<&Str<'a>>) -> Str<'a> {
    if let Some(provider) = non_empty(provider_name) {
        return canonical_provider(provider);
    }
    if let Some((provider, _)) = operation.split_once('/') {
        if provider.contains('.') {
            return canonical_provider(sub_str(operation, provider));
        }
    }
    if let Some(provider) = resource_id.and_then(|id| provider_of(id)) {
        return canonical_provider(provider);
    }
    Cow::Borrowed("unknown")
}

/// The segment after `/<marker>/` in a resource id, case-insensitively.
fn segment_after<'a>(id: &Str<'a>, marker: &str) -> Option<Str<'a>> {
    let bytes = id.as_bytes();
    let m = marker.as_bytes();
    let start = (0..bytes.len().saturating_sub(m.len() - 1))
        .find(|&i| bytes[i..i + m.len()].eq_ignore_ascii_case(m))?
        + m.len();
    let rest = &id[start..];
    let end = rest.find('/').unwrap_or(rest.len());
    let segment = &rest[..end];
    (!segment.is_empty()).then(|| sub_str(id, segment))
}

/// `/SUBSCRIPTIONS/<id>/...` → `<id>`.
pub fn subscription_of<'a>(id: &Str<'a>) -> Option<Str<'a>> {
    segment_after(id, "/subscriptions/")
}

fn provider_of<'a>(id: &Str<'a>) -> Option<Str<'a>> {
    segment_after(id, "/providers/")
}

fn principal<'a>(claims: Claims<'a>, evidence: Option<Evidence<'a>>, caller: Option<Str<'a>>) -> Principal<'a> {
    let upn = non_empty(claims.upn_uri).or(non_empty(claims.upn)).or(non_empty(claims.unique_name));
    let (evidence_id, evidence_type) = match evidence {
        Some(e) => (non_empty(e.principal_id), non_empty(e.principal_type)),
        None => (None, None),
    };
    let oid = non_empty(claims.oid_uri).or(non_empty(claims.oid)).or(evidence_id);
    let appid = non_empty(claims.appid);
    let kind = match evidence_type.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("User") || t.eq_ignore_ascii_case("Group") => PrincipalKind::User,
        Some(t) if t.eq_ignore_ascii_case("ServicePrincipal") || t.eq_ignore_ascii_case("MSI") || t.eq_ignore_ascii_case("ManagedIdentity") => {
            PrincipalKind::ServicePrincipal
        }
        _ => match claims.idtyp.as_deref() {
            Some("app") => PrincipalKind::ServicePrincipal,
            Some("user") => PrincipalKind::User,
            _ if upn.is_some() => PrincipalKind::User,
            _ if appid.is_some() && oid.is_some() => PrincipalKind::ServicePrincipal,
            _ => match caller.as_deref() {
                Some(c) if c.contains('@') => PrincipalKind::User,
                Some(c) if looks_like_guid(c) => PrincipalKind::ServicePrincipal,
                _ => PrincipalKind::Unknown,
            },
        },
    };
    let mfa = claims
        .amr_uri
        .as_ref()
        .or(claims.amr.as_ref())
        .map(|amr| amr.as_raw_str().to_ascii_lowercase().contains("mfa"));
    Principal {
        kind,
        id: oid.or_else(|| caller.clone()),
        name: upn.or(caller).or(non_empty(claims.name_uri)),
        account: non_empty(claims.tid_uri).or(non_empty(claims.tid)),
        issuer: appid,
        chain: SmallVec::new(),
        mfa,
        access_key_id: None,
    }
}

fn looks_like_guid(s: &str) -> bool {
    s.len() == 36 && s.bytes().filter(|b| *b == b'-').count() == 4
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len() && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

fn outcome<'a>(
    status: Option<&str>,
    operation: &str,
    result_signature: Option<Str<'a>>,
    sub_status: Option<Str<'a>>,
    properties: Option<&LazyValue<'a>>,
) -> (Outcome, Option<Str<'a>>) {
    let Some(status) = status.map(str::to_ascii_lowercase) else {
        return (Outcome::Success, None);
    };
    if matches!(status.as_str(), "start" | "started" | "accept" | "accepted" | "inprogress" | "in progress") {
        return (Outcome::Pending, None);
    }
    if !(status.starts_with("fail") || status == "error" || status == "canceled" || status == "cancelled") {
        return (Outcome::Success, None);
    }
    let status_code = properties.and_then(|p| match p.as_raw_cow() {
        Cow::Borrowed(text) => get_str(text, "statusCode"),
        Cow::Owned(_) => None,
    });
    let code = status_code.or(non_empty(sub_status)).or(non_empty(result_signature));
    let denied = ends_with_ignore_case(operation, "/deny/action")
        || code.as_deref().is_some_and(|c| {
            let c = c.to_ascii_lowercase();
            c.contains("forbidden") || c.contains("unauthorized") || c.contains("authorizationfailed")
        });
    (if denied { Outcome::Denied } else { Outcome::Failed }, code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalizes_providers() {
        assert_eq!(canonical_provider("MICROSOFT.STORAGE".into()), "Microsoft.Storage");
        assert_eq!(canonical_provider("microsoft.insights".into()), "Microsoft.Insights");
        assert_eq!(canonical_provider("Contoso.Custom".into()), "Contoso.Custom");
    }

    #[test]
    fn finds_subscription_and_provider_in_resource_ids() {
        let id: Str<'_> = "/SUBSCRIPTIONS/1111/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/V".into();
        assert_eq!(subscription_of(&id).as_deref(), Some("1111"));
        assert_eq!(provider_of(&id).as_deref(), Some("MICROSOFT.KEYVAULT"));
        let none: Str<'_> = "/RESOURCE_ID".into();
        assert!(subscription_of(&none).is_none());
        let short: Str<'_> = "/s".into();
        assert!(subscription_of(&short).is_none());
    }

    #[test]
    fn failure_with_forbidden_is_denied() {
        let props = sonic_rs::get_from_str(r#"{"p":{"statusCode":"Forbidden"}}"#, ["p"]).unwrap();
        let (outcome, code) = outcome(Some("Failure"), "Microsoft.Storage/storageAccounts/write", None, None, Some(&props));
        assert_eq!(outcome, Outcome::Denied);
        assert_eq!(code.as_deref(), Some("Forbidden"));
        let (outcome, _) = outcome_for("Start");
        assert_eq!(outcome, Outcome::Pending);
        let (outcome, _) = outcome_for("Succeeded");
        assert_eq!(outcome, Outcome::Success);
        let (outcome, _) = outcome_for("Failed");
        assert_eq!(outcome, Outcome::Failed);
    }

    fn outcome_for(status: &str) -> (Outcome, Option<Str<'static>>) {
        outcome(Some(status), "Microsoft.Compute/virtualMachines/write", None, None, None)
    }
}
