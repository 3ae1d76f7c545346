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
use sonic_rs::JsonValueTrait;

use super::decode::{ErrorReason, Rejection, get_str, hash_fields, reject};
use super::probe::{AwsIdentity, Key, Probe, parse_bool_text};
use super::time::parse_time;
use super::{
    AuditEvent, Cloud, EventId, HotSubtree, Outcome, Principal, PrincipalKind, Resource, Shape,
    SourceIp, Str, non_empty,
};

pub(crate) fn normalize<'a>(
    probe: &mut Probe<'a>,
    raw: &'a str,
    shape: Shape,
) -> Result<AuditEvent<'a>, Rejection> {
    // Insights events name the API they are about in `insightDetails`.
    let insight = probe.object(Key::InsightDetails)?;
    let service = match probe.str(Key::EventSource)? {
        Some(service) => Some(service),
        None => insight.and_then(|d| get_str(d, "eventSource")),
    };
    let Some(service) = service else {
        return reject(
            ErrorReason::MissingField,
            "CloudTrail record without `eventSource`",
        );
    };
    let operation = match probe.str(Key::EventName)? {
        Some(operation) => Some(operation),
        None => insight.and_then(|d| get_str(d, "eventName")),
    };
    let Some(operation) = operation else {
        return reject(
            ErrorReason::MissingField,
            "CloudTrail record without `eventName`",
        );
    };
    let time_text = match probe.str(Key::EventTime)? {
        Some(t) => Some(t),
        None => probe.str(Key::AtTimestamp)?,
    };
    let time = match time_text.as_deref() {
        Some(text) => match parse_time(text) {
            Some(t) => Some(t),
            None => {
                return reject(
                    ErrorReason::BadTimestamp,
                    format!("`eventTime` `{text}` is not a timestamp"),
                );
            }
        },
        None => None,
    };
    let event_id = match probe.str(Key::EventId)? {
        Some(id) => EventId::Native(id),
        None => EventId::Hash(hash_fields(&[Some(raw)])),
    };

    let is_console_login = operation == "ConsoleLogin";
    let identity = match probe.take_user_identity() {
        Some(Some(identity)) => Some(identity),
        Some(None) => {
            return reject(
                ErrorReason::WrongType,
                "field `userIdentity` must be an object",
            );
        }
        None => None,
    };
    let mut principal = principal(identity);
    // Console sign-ins report MFA in `additionalEventData.MFAUsed`.
    if is_console_login
        && let Some(mfa) = probe.object(Key::AdditionalEventData)?.and_then(mfa_used)
    {
        principal.mfa = Some(mfa);
    }

    let (outcome, error_code) = match probe.str(Key::ErrorCode)? {
        Some(code) => (classify_error(&code), Some(code)),
        None if is_console_login && console_login_failed(probe.object(Key::ResponseElements)?) => (
            Outcome::Failed,
            probe
                .str(Key::ErrorMessage)?
                .or(Some(Cow::Borrowed("Failure"))),
        ),
        None => (Outcome::Success, None),
    };

    let account = match probe.str(Key::RecipientAccountId)? {
        Some(account) => Some(account),
        None => principal.account.clone(),
    };
    Ok(AuditEvent {
        cloud: Cloud::Aws,
        shape,
        time,
        event_id,
        account,
        region: probe.str(Key::AwsRegion)?,
        service,
        operation,
        principal,
        source_ip: probe.str(Key::SourceIpAddress)?.map(SourceIp::parse),
        user_agent: probe.str(Key::UserAgent)?,
        outcome,
        error_code,
        read_only: probe.bool_like(Key::ReadOnly)?,
        resources: resources(probe.array(Key::Resources)?),
        raw: Cow::Borrowed(raw),
        hot: [
            HotSubtree::locate("requestParameters", raw, probe.raw(Key::RequestParameters)),
            // `userIdentity` is parsed, not kept as text (see the probe);
            // it comes second in a CloudTrail record, a short scan away.
            None,
        ],
    })
}

fn principal(identity: Option<AwsIdentity<'_>>) -> Principal<'_> {
    let Some(identity) = identity else {
        return Principal::unknown();
    };
    let native_type = identity.kind;
    let kind = match native_type.as_deref() {
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
    let (issuer, issuer_type, mfa) = match identity.session_context {
        Some(context) => {
            let (arn, kind) = match context.session_issuer {
                Some(issuer) => (non_empty(issuer.arn), issuer.kind),
                None => (None, None),
            };
            (
                arn,
                kind,
                context.attributes.and_then(|a| a.mfa_authenticated.0),
            )
        }
        None => (None, None, None),
    };
    let native_arn = identity.arn;
    let arn = non_empty(native_arn.clone());
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
        native_type,
        issuer_type,
        arn: native_arn,
    }
}

/// `arn:aws:sts::123:assumed-role/Role/session` → `session`.
fn session_name<'a>(arn: &Str<'a>) -> Str<'a> {
    match arn.rsplit_once('/') {
        Some((_, session)) => super::decode::sub_str(arn, session),
        None => arn.clone(),
    }
}

fn mfa_used(additional: &str) -> Option<bool> {
    let value = sonic_rs::get_from_str(additional, ["MFAUsed"]).ok()?;
    value
        .as_bool()
        .or_else(|| value.as_str().and_then(parse_bool_text))
}

fn console_login_failed(response: Option<&str>) -> bool {
    response
        .and_then(|r| get_str(r, "ConsoleLogin"))
        .is_some_and(|v| v.eq_ignore_ascii_case("Failure"))
}

/// `AccessDenied`, `Client.UnauthorizedOperation`, `AuthorizationError`, … are
/// denials; anything else is a failure.
pub(crate) fn classify_error(code: &str) -> Outcome {
    const DENIAL_MARKERS: [&str; 5] = [
        "accessdenied",
        "unauthorized",
        "forbidden",
        "authorizationerror",
        "notauthorized",
    ];
    let lower = code.to_ascii_lowercase();
    if DENIAL_MARKERS.iter().any(|m| lower.contains(m)) {
        Outcome::Denied
    } else {
        Outcome::Failed
    }
}

fn resources(text: Option<&str>) -> SmallVec<[Resource<'_>; 2]> {
    let mut out = SmallVec::new();
    let Some(text) = text else {
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
        for denied in [
            "AccessDenied",
            "AccessDeniedException",
            "Client.UnauthorizedOperation",
            "UnauthorizedOperation",
            "AuthorizationError",
            "Forbidden",
        ] {
            assert_eq!(classify_error(denied), Outcome::Denied, "{denied}");
        }
        for failed in [
            "NoSuchBucket",
            "ThrottlingException",
            "InvalidParameterValue",
        ] {
            assert_eq!(classify_error(failed), Outcome::Failed, "{failed}");
        }
    }

    #[test]
    fn session_name_is_the_last_arn_segment() {
        let arn: Str<'_> = Cow::Borrowed("arn:aws:sts::1:assumed-role/Admin/alice@example.com");
        assert_eq!(session_name(&arn), "alice@example.com");
    }
}
