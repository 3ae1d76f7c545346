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
use sonic_rs::LazyValue;

use super::decode::{ErrorReason, Rejection, get_str, hash_fields, json_string, reject, sub_str};
use super::probe::{Key, Probe};
use super::time::parse_time;
use super::{
    AuditEvent, Cloud, EventId, HotSubtree, Outcome, Principal, PrincipalKind, Resource, Shape,
    SourceIp, Str, non_empty,
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
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    scope: Option<Str<'a>>,
    #[serde(borrow)]
    evidence: Option<Evidence<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Evidence<'a> {
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    principal_id: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    principal_type: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Claims<'a> {
    #[serde(
        borrow,
        deserialize_with = "crate::event::probe::opt_str",
        rename = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"
    )]
    upn_uri: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    upn: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    unique_name: Option<Str<'a>>,
    #[serde(
        borrow,
        deserialize_with = "crate::event::probe::opt_str",
        rename = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
    )]
    name_uri: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    appid: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    idtyp: Option<Str<'a>>,
    #[serde(
        borrow,
        deserialize_with = "crate::event::probe::opt_str",
        rename = "http://schemas.microsoft.com/identity/claims/objectidentifier"
    )]
    oid_uri: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    oid: Option<Str<'a>>,
    #[serde(
        borrow,
        deserialize_with = "crate::event::probe::opt_str",
        rename = "http://schemas.microsoft.com/identity/claims/tenantid"
    )]
    tid_uri: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    tid: Option<Str<'a>>,
    #[serde(
        borrow,
        rename = "http://schemas.microsoft.com/claims/authnmethodsreferences"
    )]
    amr_uri: Option<LazyValue<'a>>,
    #[serde(borrow)]
    amr: Option<LazyValue<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    ipaddr: Option<Str<'a>>,
}

/// The first present string among `keys`.
fn first_str<'a>(probe: &Probe<'a>, keys: &[Key]) -> Result<Option<Str<'a>>, Rejection> {
    for key in keys {
        if let Some(value) = probe.str(*key)? {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// A string field of an object field (`authorization.scope`), leniently.
fn nested_str<'a>(probe: &Probe<'a>, key: Key, field: &str) -> Option<Str<'a>> {
    probe
        .raw(key)
        .filter(|raw| raw.starts_with('{'))
        .and_then(|raw| get_str(raw, field))
}

pub(crate) fn normalize<'a>(
    probe: &Probe<'a>,
    raw: &'a str,
    shape: Shape,
) -> Result<AuditEvent<'a>, Rejection> {
    let operation = match probe.str_or_value(Key::OperationName)? {
        Some((operation, _)) => Some(operation),
        None => match probe.str_or_value(Key::OperationNameSnake)? {
            Some((operation, _)) => Some(operation),
            // `az monitor activity-log list --query` output may keep only `authorization`.
            None => nested_str(probe, Key::Authorization, "action"),
        },
    };
    let Some(operation) = operation else {
        return reject(
            ErrorReason::MissingField,
            "Azure activity record without `operationName`",
        );
    };

    let time_text = first_str(
        probe,
        &[Key::Time, Key::EventTimestamp, Key::EventTimestampSnake],
    )?;
    let time = match time_text.as_deref() {
        Some(text) => match parse_time(text) {
            Some(t) => Some(t),
            None => {
                return reject(
                    ErrorReason::BadTimestamp,
                    format!("`time` `{text}` is not a timestamp"),
                );
            }
        },
        None => None,
    };

    let resource_id = first_str(probe, &[Key::ResourceId, Key::ResourceIdSnake])?;
    // `identity` is an object in the Event Hubs shape, and sometimes a plain string.
    let identity: Option<Identity<'a>> = probe
        .raw(Key::Identity)
        .filter(|raw| raw.starts_with('{'))
        .and_then(|raw| sonic_rs::from_str(raw).ok());
    let identity_string = probe
        .raw(Key::Identity)
        .filter(|raw| raw.starts_with('"'))
        .and_then(json_string);
    let authorization_scope = identity
        .as_ref()
        .and_then(|i| i.authorization.as_ref())
        .and_then(|a| a.scope.clone())
        .or_else(|| nested_str(probe, Key::Authorization, "scope"));

    let provider_name = match probe.str_or_value(Key::ResourceProviderName)? {
        Some((name, _)) => Some(name),
        None => probe
            .str_or_value(Key::ResourceProviderNameSnake)?
            .map(|(name, _)| name),
    };
    let service = service(&operation, provider_name, resource_id.as_ref());

    let event_id = match first_str(probe, &[Key::EventDataId, Key::EventDataIdSnake])? {
        Some(id) => EventId::Native(id),
        None => {
            let correlation = first_str(probe, &[Key::CorrelationId, Key::CorrelationIdSnake])?;
            let result_type = probe.str(Key::ResultType)?;
            if correlation.is_some() || time_text.is_some() {
                EventId::Hash(hash_fields(&[
                    correlation.as_deref(),
                    Some(&operation),
                    result_type.as_deref(),
                    time_text.as_deref(),
                ]))
            } else {
                EventId::Hash(hash_fields(&[Some(raw)]))
            }
        }
    };

    let account = match resource_id.as_ref().and_then(|id| subscription_of(id)) {
        Some(account) => Some(account),
        None => match first_str(probe, &[Key::SubscriptionId, Key::SubscriptionIdSnake])? {
            Some(account) => Some(account),
            None => authorization_scope
                .as_ref()
                .and_then(|s| subscription_of(s)),
        },
    };

    // The JWT claims are enrichment: claims that do not parse are ignored.
    let claims_raw = identity
        .as_ref()
        .and_then(|i| i.claims.as_ref())
        .and_then(|c| match c.as_raw_cow() {
            Cow::Borrowed(raw) => Some(raw),
            Cow::Owned(_) => None,
        })
        .or_else(|| probe.raw(Key::Claims))
        .filter(|raw| raw.starts_with('{'));
    let claims: Claims<'a> = claims_raw
        .and_then(|raw| sonic_rs::from_str(raw).ok())
        .unwrap_or_default();
    let evidence = identity
        .and_then(|i| i.authorization)
        .and_then(|a| a.evidence);
    let caller = probe.str(Key::Caller)?.or(identity_string);
    let http_request = probe
        .raw(Key::HttpRequest)
        .or(probe.raw(Key::HttpRequestSnake))
        .filter(|r| r.starts_with('{'));
    let source_ip = match probe.str(Key::CallerIpAddress)? {
        Some(ip) => Some(ip),
        None => http_request
            .and_then(|r| get_str(r, "clientIpAddress").or_else(|| get_str(r, "client_ip_address")))
            .or_else(|| non_empty(claims.ipaddr.clone())),
    }
    .map(SourceIp::parse);
    let principal = principal(claims, evidence, caller);

    let status = match probe.str(Key::ResultType)? {
        Some(status) => Some(status),
        None => probe.str_or_value(Key::Status)?.map(|(status, _)| status),
    };
    let sub_status = probe.str_or_value(Key::SubStatus)?.map(|(s, _)| s);
    let (outcome, error_code) = outcome(
        status.as_deref(),
        &operation,
        probe.str(Key::ResultSignature)?,
        sub_status,
        probe.raw(Key::Properties).filter(|p| p.starts_with('{')),
    );

    let read_only = if ends_with_ignore_case(&operation, "/read") {
        Some(true)
    } else if operation.contains('/') {
        Some(false)
    } else {
        None
    };

    let mut resources = SmallVec::new();
    let resource = resource_id
        .or(authorization_scope)
        .or_else(|| nested_str(probe, Key::Properties, "entity"));
    if let Some(id) = resource {
        resources.push(Resource { id, kind: None });
    }

    Ok(AuditEvent {
        cloud: Cloud::Azure,
        shape,
        time,
        event_id,
        account,
        region: probe.str(Key::Location).ok().flatten(),
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
        hot: [
            HotSubtree::locate("properties", raw, probe.raw(Key::Properties)),
            HotSubtree::locate("identity", raw, probe.raw(Key::Identity)),
        ],
    })
}

fn service<'a>(
    operation: &Str<'a>,
    provider_name: Option<Str<'a>>,
    resource_id: Option<&Str<'a>>,
) -> Str<'a> {
    if let Some(provider) = non_empty(provider_name) {
        return canonical_provider(provider);
    }
    if let Some((provider, _)) = operation.split_once('/')
        && provider.contains('.')
    {
        return canonical_provider(sub_str(operation, provider));
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

fn principal<'a>(
    claims: Claims<'a>,
    evidence: Option<Evidence<'a>>,
    caller: Option<Str<'a>>,
) -> Principal<'a> {
    let upn = non_empty(claims.upn_uri)
        .or(non_empty(claims.upn))
        .or(non_empty(claims.unique_name));
    let (evidence_id, evidence_type) = match evidence {
        Some(e) => (non_empty(e.principal_id), non_empty(e.principal_type)),
        None => (None, None),
    };
    let oid = non_empty(claims.oid_uri)
        .or(non_empty(claims.oid))
        .or(evidence_id);
    let appid = non_empty(claims.appid);
    let kind = match evidence_type.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("User") || t.eq_ignore_ascii_case("Group") => {
            PrincipalKind::User
        }
        Some(t)
            if t.eq_ignore_ascii_case("ServicePrincipal")
                || t.eq_ignore_ascii_case("MSI")
                || t.eq_ignore_ascii_case("ManagedIdentity") =>
        {
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
        native_type: None,
        issuer_type: None,
        arn: None,
    }
}

fn looks_like_guid(s: &str) -> bool {
    s.len() == 36 && s.bytes().filter(|b| *b == b'-').count() == 4
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

fn outcome<'a>(
    status: Option<&str>,
    operation: &str,
    result_signature: Option<Str<'a>>,
    sub_status: Option<Str<'a>>,
    properties: Option<&'a str>,
) -> (Outcome, Option<Str<'a>>) {
    let Some(status) = status.map(str::to_ascii_lowercase) else {
        return (Outcome::Success, None);
    };
    if matches!(
        status.as_str(),
        "start" | "started" | "accept" | "accepted" | "inprogress" | "in progress"
    ) {
        return (Outcome::Pending, None);
    }
    if !(status.starts_with("fail")
        || status == "error"
        || status == "canceled"
        || status == "cancelled")
    {
        return (Outcome::Success, None);
    }
    let status_code = properties.and_then(|p| get_str(p, "statusCode"));
    let code = status_code
        .or(non_empty(sub_status))
        .or(non_empty(result_signature));
    let denied = ends_with_ignore_case(operation, "/deny/action")
        || code.as_deref().is_some_and(|c| {
            let c = c.to_ascii_lowercase();
            c.contains("forbidden")
                || c.contains("unauthorized")
                || c.contains("authorizationfailed")
        });
    (
        if denied {
            Outcome::Denied
        } else {
            Outcome::Failed
        },
        code,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalizes_providers() {
        assert_eq!(
            canonical_provider("MICROSOFT.STORAGE".into()),
            "Microsoft.Storage"
        );
        assert_eq!(
            canonical_provider("microsoft.insights".into()),
            "Microsoft.Insights"
        );
        assert_eq!(
            canonical_provider("Contoso.Custom".into()),
            "Contoso.Custom"
        );
    }

    #[test]
    fn finds_subscription_and_provider_in_resource_ids() {
        let id: Str<'_> =
            "/SUBSCRIPTIONS/1111/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.KEYVAULT/VAULTS/V".into();
        assert_eq!(subscription_of(&id).as_deref(), Some("1111"));
        assert_eq!(provider_of(&id).as_deref(), Some("MICROSOFT.KEYVAULT"));
        let none: Str<'_> = "/RESOURCE_ID".into();
        assert!(subscription_of(&none).is_none());
        let short: Str<'_> = "/s".into();
        assert!(subscription_of(&short).is_none());
    }

    #[test]
    fn failure_with_forbidden_is_denied() {
        let props = r#"{"statusCode":"Forbidden"}"#;
        let (outcome, code) = outcome(
            Some("Failure"),
            "Microsoft.Storage/storageAccounts/write",
            None,
            None,
            Some(props),
        );
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
        outcome(
            Some(status),
            "Microsoft.Compute/virtualMachines/write",
            None,
            None,
            None,
        )
    }
}
