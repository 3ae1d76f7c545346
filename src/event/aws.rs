//! CloudTrail record → [`AuditEvent`].
//!
//! Field meanings follow the CloudTrail record reference: `userIdentity.type`
//! decides the principal kind; temporary credentials carry the role they were
//! issued from in `sessionContext.sessionIssuer` and the MFA flag as the *string*
//! `"true"`/`"false"`; `ConsoleLogin` reports MFA in `additionalEventData.MFAUsed`
//! (a string or a boolean) and failure in `responseElements.ConsoleLogin`
//! without an `errorCode`.

use std::borrow::Cow;

use smallvec::SmallVec;
use sonic_rs::{JsonValueTrait, LazyValue};

use super::decode::{ErrorReason, Rejection, get_str, hash_fields, reject};
use super::probe::{AwsIdentity, Probe, parse_bool_text};
use super::time::parse_time;
use super::{
    AuditEvent, Cloud, EventId, Outcome, Principal, PrincipalKind, Resource, Shape, SourceIp, Str,
    non_empty,
};

pub(crate) fn normalize<'a>(
    probe: Probe<'a>,
    raw: &'a str,
    shape: Shape,
) -> Result<AuditEvent<'a>, Rejection> {
    // Insights events name the API they are about in `insightDetails`.
    let insight = probe.insight_details.as_ref().and_then(|d| match d.as_raw_cow() {
        Cow::Borrowed(text) => Some(text),
        Cow::Owned(_) => None,
    });
    let service = non_empty(probe.event_source).or_else(|| insight.and_then(|d| get_str(d, "eventSource")));
    let Some(service) = service else {
        return reject(ErrorReason::MissingField, "CloudTrail record without `eventSource`");
    };
    let operation = non_empty(probe.event_name.and_then(|n| n.value))
        .or_else(|| insight.and_then(|d| get_str(d, "eventName")));
    let Some(operation) = operation else {
        return reject(ErrorReason::MissingField, "CloudTrail record without `eventName`");
    };
    let time = match probe.event_time.as_deref().or(probe.at_timestamp.as_deref()) {
        Some(text) => match parse_time(text) {
            Some(t) => Some(t),
            None => {
                return reject(ErrorReason::BadTimestamp, format!("`eventTime` `{text}` is not a timestamp"));
            }
        },
        None => None,
    };
    let event_id = match non_empty(probe.event_id) {
        Some(id) => EventId::Native(id),
        None => EventId::Hash(hash_fields(&[Some(raw)])),
    };

    let is_console_login = operation == "ConsoleLogin";
    let mut principal = principal(probe.user_identity);
    if is_console_login || principal.mfa.is_none() {
        if let Some(mfa) = probe.additional_event_data.as_ref().and_then(mfa_used) {
            principal.mfa = Some(mfa);
        }
    }

    let error_code = non_empty(probe.error_code);
    let (outcome, error_code) = match error_code {
        Some(code) => (classify_error(&code), Some(code)),
        None if is_console_login && console_login_failed(probe.response_elements.as_ref()) => {
            (Outcome::Failed, non_empty(probe.error_message).or(Some(Cow::Borrowed("Failure"))))
        }
        None => (Outcome::Success, None),
    };

    let account = non_empty(probe.recipient_account_id).or_else(|| principal.account.clone());
    Ok(AuditEvent {
        cloud: Cloud::Aws,
        shape,
        time,
        event_id,
        account,
        region: non_empty(probe.aws_region),
        service,
        operation,
        principal,
        source_ip: non_empty(probe.source_ip_address).map(SourceIp::parse),
        user_agent: non_empty(probe.user_agent),
        outcome,
        error_code,
        read_only: probe.read_only.0,
        resources: resources(probe.resources.as_ref()),
        raw: Cow::Borrowed(raw),
    })
}

fn principal(identity: Option<AwsIdentity<'_>>) -> Principal<'_> {
    let Some(identity) = identity else {
        return Principal::unknown();
    };
    let kind = match identity.kind.as_deref() {
        Some("Root") => PrincipalKind::Root,
        Some("IAMUser") => PrincipalKind::User,
        Some("AssumedRole") => PrincipalKind::AssumedRole,
        Some("FederatedUser" | "SAMLUser" | "WebIdentityUser" | "IdentityCenterUser") => {
            PrincipalKind::Federated
        }
        Some("AWSService") => PrincipalKind::ProviderService,
        Some("AWSAccount") => PrincipalKind::Account,
        None if identity.invoked_by.is_some() => PrincipalKind::ProviderService,
        _ => PrincipalKind::Unknown,
    };
    let (issuer, mfa) = match identity.session_context {
        Some(context) => (
            context.session_issuer.and_then(|issuer| non_empty(issuer.arn)),
            context.attributes.and_then(|a| a.mfa_authenticated.0),
        ),
        None => (None, None),
    };
    let arn = non_empty(identity.arn);
    let name = match kind {
        PrincipalKind::AssumedRole => arn.as_ref().map(|arn| session_name(arn)),
        PrincipalKind::Root => Some(Cow::Borrowed("root")),
        PrincipalKind::ProviderService => non_empty(identity.invoked_by.clone()),
        _ => non_empty(identity.user_name)
            .or_else(|| identity.on_behalf_of.and_then(|o| non_empty(o.user_id))),
    };
    let id = match kind {
        PrincipalKind::ProviderService => arn.or_else(|| non_empty(identity.invoked_by)),
        _ => arn.or_else(|| non_empty(identity.principal_id)),
    };
    Principal {
        kind,
        id,
        name,
        account: non_empty(identity.account_id),
        issuer: issuer.or_else(|| non_empty(identity.identity_provider)),
        chain: SmallVec::new(),
        mfa,
        access_key_id: non_empty(identity.access_key_id),
    }
}

/// `arn:aws:sts::123:assumed-role/Role/session` → `session`.
fn session_name<'a>(arn: &Str<'a>) -> Str<'a> {
    match arn.rsplit_once('/') {
        Some((_, session)) => super::decode::sub_str(arn, session),
        None => arn.clone(),
    }
}

fn mfa_used(additional: &LazyValue<'_>) -> Option<bool> {
    let value = additional.get("MFAUsed")?;
    value.as_bool().or_else(|| value.as_str().and_then(parse_bool_text))
}

fn console_login_failed(response: Option<&LazyValue<'_>>) -> bool {
    response
        .and_then(|r| r.get("ConsoleLogin"))
        .and_then(|v| v.as_str().map(|s| s.eq_ignore_ascii_case("Failure")))
        .unwrap_or(false)
}

/// `AccessDenied`, `Client.UnauthorizedOperation`, `AuthorizationError`, … are
/// denials; anything else is a failure.
pub(crate) fn classify_error(code: &str) -> Outcome {
    const DENIAL_MARKERS: [&str; 5] = ["accessdenied", "unauthorized", "forbidden", "authorizationerror", "notauthorized"];
    let lower = code.to_ascii_lowercase();
    if DENIAL_MARKERS.iter().any(|m| lower.contains(m)) {
        Outcome::Denied
    } else {
        Outcome::Failed
    }
}

fn resources<'a>(value: Option<&LazyValue<'a>>) -> SmallVec<[Resource<'a>; 2]> {
    let mut out = SmallVec::new();
    let Some(value) = value.filter(|v| v.is_array()) else {
        return out;
    };
    let Cow::Borrowed(text) = value.as_raw_cow() else {
        return out;
    };
    for item in sonic_rs::to_array_iter(text).flatten() {
        let Cow::Borrowed(item) = item.as_raw_cow() else {
            continue;
        };
        let Some(arn) = get_str(item, "ARN") else {
            continue;
        };
        out.push(Resource {
            id: arn,
            kind: get_str(item, "type"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_error_codes() {
        for denied in ["AccessDenied", "AccessDeniedException", "Client.UnauthorizedOperation", "UnauthorizedOperation", "AuthorizationError", "Forbidden"] {
            assert_eq!(classify_error(denied), Outcome::Denied, "{denied}");
        }
        for failed in ["NoSuchBucket", "ThrottlingException", "InvalidParameterValue"] {
            assert_eq!(classify_error(failed), Outcome::Failed, "{failed}");
        }
    }

    #[test]
    fn session_name_is_the_last_arn_segment() {
        let arn: Str<'_> = Cow::Borrowed("arn:aws:sts::1:assumed-role/Admin/alice@example.com");
        assert_eq!(session_name(&arn), "alice@example.com");
    }
}
