//! GCP Cloud Audit Logs `LogEntry` → [`AuditEvent`].
//!
//! Covers the four audit streams (activity, data_access, system_event, policy),
//! read from `logName`. The principal kind comes from the email's form:
//! `*.gserviceaccount.com` is a service account (Google-managed service agents,
//! `service-…@` / `…@gcp-sa-…` / `…@cloudservices…`, count as the provider),
//! `principal://` subjects are federated, anything else with an `@` is a user.
//! `serviceAccountDelegationInfo` becomes the impersonation chain. `status.code`
//! 7 (PERMISSION_DENIED) and 16 (UNAUTHENTICATED), and every entry of the policy
//! stream, are denials.

use std::borrow::Cow;

use smallvec::SmallVec;
use sonic_rs::{JsonValueTrait, LazyValue};

use super::decode::{ErrorReason, Rejection, get_str, hash_fields, reject, sub_str};
use super::probe::{GcpAuditLog, GcpAuthenticationInfo, GcpMonitoredResource, Key, Probe};
use super::time::parse_time;
use super::{
    AuditEvent, Cloud, EventId, HotSubtree, Outcome, Principal, PrincipalKind, Resource, Shape,
    SourceIp, Str, non_empty,
};

const AUDIT_LOG_TYPE: &str = "type.googleapis.com/google.cloud.audit.AuditLog";

/// Which audit stream an entry belongs to, from its `logName`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditStream {
    Activity,
    DataAccess,
    SystemEvent,
    Policy,
    Other,
}

pub fn audit_stream(log_name: &str) -> AuditStream {
    let suffix = log_name
        .rsplit_once("cloudaudit.googleapis.com")
        .map(|(_, s)| {
            s.trim_start_matches("%2F")
                .trim_start_matches("%2f")
                .trim_start_matches('/')
        })
        .unwrap_or("");
    match suffix {
        "activity" => AuditStream::Activity,
        "data_access" => AuditStream::DataAccess,
        "system_event" => AuditStream::SystemEvent,
        "policy" => AuditStream::Policy,
        _ => AuditStream::Other,
    }
}

pub(crate) fn normalize<'a>(
    probe: &Probe<'a>,
    raw: &'a str,
    shape: Shape,
) -> Result<AuditEvent<'a>, Rejection> {
    let Some(payload) = probe.typed::<GcpAuditLog<'a>>(Key::ProtoPayload)? else {
        return reject(ErrorReason::MissingField, "LogEntry without `protoPayload`");
    };
    if let Some(type_url) = payload.type_url.as_deref()
        && type_url != AUDIT_LOG_TYPE
    {
        return reject(
            ErrorReason::NotAuditLog,
            format!("protoPayload of type `{type_url}` is not a Cloud Audit Logs AuditLog"),
        );
    }
    let Some(service) = non_empty(payload.service_name) else {
        return reject(ErrorReason::MissingField, "AuditLog without `serviceName`");
    };
    let Some(operation) = non_empty(payload.method_name) else {
        return reject(ErrorReason::MissingField, "AuditLog without `methodName`");
    };
    let time_text = match probe.str(Key::Timestamp)? {
        Some(t) => Some(t),
        None => probe.str(Key::ReceiveTimestamp)?,
    };
    let time = match time_text.as_deref() {
        Some(text) => match parse_time(text) {
            Some(t) => Some(t),
            None => {
                return reject(
                    ErrorReason::BadTimestamp,
                    format!("`timestamp` `{text}` is not a timestamp"),
                );
            }
        },
        None => None,
    };
    let event_id = match probe.str(Key::InsertId)? {
        Some(id) => EventId::Native(id),
        None => EventId::Hash(hash_fields(&[Some(raw)])),
    };
    let log_name = probe.str(Key::LogName)?;
    let stream = log_name
        .as_deref()
        .map(audit_stream)
        .unwrap_or(AuditStream::Other);

    let resource_name = non_empty(payload.resource_name);
    let (resource_type, labels) = match probe.typed::<GcpMonitoredResource<'a>>(Key::Resource)? {
        Some(r) => (non_empty(r.kind), r.labels),
        None => (None, None),
    };
    let (project, region) = match labels {
        Some(l) => (
            non_empty(l.project_id),
            non_empty(l.location)
                .or(non_empty(l.zone))
                .or(non_empty(l.region)),
        ),
        None => (None, None),
    };
    let account = project
        .or_else(|| log_name.as_ref().and_then(scope_of_log_name))
        .or_else(|| resource_name.as_ref().and_then(|n| project_of_resource(n)));
    let region = region.or_else(|| payload.resource_location.as_ref().and_then(first_location));

    let (source_ip, user_agent) = match payload.request_metadata {
        Some(m) => (
            non_empty(m.caller_ip).map(SourceIp::parse),
            non_empty(m.caller_supplied_user_agent),
        ),
        None => (None, None),
    };

    let (mut outcome, mut error_code) = match payload.status.as_ref().and_then(|s| s.code) {
        None | Some(0) => (Outcome::Success, None),
        Some(code @ (7 | 16)) => (Outcome::Denied, Some(Cow::Borrowed(grpc_code_name(code)))),
        Some(code) => (Outcome::Failed, Some(Cow::Borrowed(grpc_code_name(code)))),
    };
    if stream == AuditStream::Policy && outcome == Outcome::Success {
        outcome = Outcome::Denied;
        error_code = Some(Cow::Borrowed("POLICY_DENIED"));
    }

    let read_only = match stream {
        AuditStream::Activity | AuditStream::SystemEvent => Some(false),
        AuditStream::DataAccess | AuditStream::Policy => Some(is_read_method(&operation)),
        AuditStream::Other => None,
    };

    let mut resources = SmallVec::new();
    if let Some(id) = resource_name {
        resources.push(Resource {
            id,
            kind: resource_type,
        });
    }

    Ok(AuditEvent {
        cloud: Cloud::Gcp,
        shape,
        time,
        event_id,
        account,
        region,
        service,
        operation,
        principal: principal(payload.authentication_info),
        source_ip,
        user_agent,
        outcome,
        error_code,
        read_only,
        resources,
        raw: Cow::Borrowed(raw),
        hot: [
            HotSubtree::locate("protoPayload", raw, probe.raw(Key::ProtoPayload)),
            None,
        ],
    })
}

fn principal(info: Option<GcpAuthenticationInfo<'_>>) -> Principal<'_> {
    let Some(info) = info else {
        return Principal::unknown();
    };
    let email = non_empty(info.principal_email);
    let subject = non_empty(info.principal_subject);
    let kind = match (email.as_deref(), subject.as_deref()) {
        (Some(e), _) if e.ends_with(".gserviceaccount.com") => {
            if is_service_agent(e) {
                PrincipalKind::ProviderService
            } else {
                PrincipalKind::ServiceAccount
            }
        }
        (Some(e), _) if e.starts_with("system:") => PrincipalKind::ProviderService,
        (Some(e), _) if e.contains('@') => PrincipalKind::User,
        (_, Some(s)) if s.starts_with("principal://") || s.starts_with("principalSet://") => {
            PrincipalKind::Federated
        }
        _ => PrincipalKind::Unknown,
    };
    let mut chain = SmallVec::new();
    if let Some(delegation) = info.service_account_delegation_info.as_ref() {
        delegation_chain(delegation, &mut chain);
    }
    Principal {
        kind,
        id: email.clone().or(subject),
        name: email,
        account: None,
        issuer: chain.first().cloned(),
        chain,
        mfa: None,
        access_key_id: non_empty(info.service_account_key_name),
        native_type: None,
        issuer_type: None,
        arn: None,
    }
}

fn is_service_agent(email: &str) -> bool {
    email.starts_with("service-")
        || email.contains("@gcp-sa-")
        || email.contains("@cloudservices.")
        || email.contains("@container-engine-robot.")
        || email.contains("@cloudbuild.")
        || email.contains("@compute-system.")
}

/// `[{firstPartyPrincipal:{principalEmail}}, {thirdPartyPrincipal:{...}}]` →
/// the principals, outermost (original caller) first.
fn delegation_chain<'a>(delegation: &LazyValue<'a>, chain: &mut SmallVec<[Str<'a>; 1]>) {
    let Cow::Borrowed(text) = delegation.as_raw_cow() else {
        return;
    };
    if !delegation.is_array() {
        return;
    }
    for entry in sonic_rs::to_array_iter(text).flatten() {
        let Cow::Borrowed(entry) = entry.as_raw_cow() else {
            continue;
        };
        let principal = sonic_rs::get_from_str(entry, ["firstPartyPrincipal"])
            .ok()
            .and_then(|p| match p.as_raw_cow() {
                Cow::Borrowed(p) => {
                    get_str(p, "principalEmail").or_else(|| get_str(p, "principalSubject"))
                }
                Cow::Owned(_) => None,
            })
            .or_else(|| get_str(entry, "principalSubject"));
        if let Some(principal) = principal {
            chain.push(principal);
        }
    }
}

/// `projects/p/logs/...` → `p`; `organizations/1/logs/...` → `organizations/1`.
fn scope_of_log_name<'a>(log_name: &Str<'a>) -> Option<Str<'a>> {
    let (kind, rest) = log_name.split_once('/')?;
    let id = rest.split('/').next().filter(|id| !id.is_empty())?;
    match kind {
        "projects" => Some(sub_str(log_name, id)),
        "organizations" | "folders" | "billingAccounts" => {
            Some(sub_str(log_name, &log_name[..kind.len() + 1 + id.len()]))
        }
        _ => None,
    }
}

/// `projects/p/...` (or `//service/projects/p/...`) → `p`.
fn project_of_resource<'a>(name: &Str<'a>) -> Option<Str<'a>> {
    let start = name.find("projects/")? + "projects/".len();
    let rest = &name[start..];
    let id = rest
        .split('/')
        .next()
        .filter(|id| !id.is_empty() && *id != "_")?;
    Some(sub_str(name, id))
}

fn first_location<'a>(location: &LazyValue<'a>) -> Option<Str<'a>> {
    let Cow::Borrowed(text) = location.as_raw_cow() else {
        return None;
    };
    let first = sonic_rs::get_from_str(text, sonic_rs::pointer!["currentLocations", 0]).ok()?;
    match first.as_raw_cow() {
        Cow::Borrowed(raw) => super::decode::json_string(raw).filter(|s| !s.is_empty()),
        Cow::Owned(_) => None,
    }
}

fn is_read_method(method: &str) -> bool {
    let verb = method.rsplit(['.', '/']).next().unwrap_or(method);
    let verb = verb.to_ascii_lowercase();
    [
        "get",
        "list",
        "search",
        "lookup",
        "query",
        "read",
        "testiampermissions",
        "aggregated",
    ]
    .iter()
    .any(|prefix| verb.starts_with(prefix))
}

fn grpc_code_name(code: i64) -> &'static str {
    match code {
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN_CODE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_audit_stream_from_log_name() {
        assert_eq!(
            audit_stream("projects/p/logs/cloudaudit.googleapis.com%2Factivity"),
            AuditStream::Activity
        );
        assert_eq!(
            audit_stream("projects/p/logs/cloudaudit.googleapis.com%2Fdata_access"),
            AuditStream::DataAccess
        );
        assert_eq!(
            audit_stream("organizations/1/logs/cloudaudit.googleapis.com%2Fpolicy"),
            AuditStream::Policy
        );
        assert_eq!(
            audit_stream("projects/p/logs/cloudaudit.googleapis.com/system_event"),
            AuditStream::SystemEvent
        );
        assert_eq!(audit_stream("projects/p/logs/syslog"), AuditStream::Other);
    }

    #[test]
    fn scopes_from_names() {
        let log: Str<'_> = "organizations/123/logs/x".into();
        assert_eq!(
            scope_of_log_name(&log).as_deref(),
            Some("organizations/123")
        );
        let log: Str<'_> = "projects/my-proj/logs/x".into();
        assert_eq!(scope_of_log_name(&log).as_deref(), Some("my-proj"));
        let res: Str<'_> = "projects/_/buckets/b".into();
        assert!(project_of_resource(&res).is_none());
        let res: Str<'_> = "projects/p1/zones/z/instances/i".into();
        assert_eq!(project_of_resource(&res).as_deref(), Some("p1"));
    }

    #[test]
    fn read_methods() {
        assert!(is_read_method("storage.objects.get"));
        assert!(is_read_method("google.iam.admin.v1.ListServiceAccounts"));
        assert!(!is_read_method("v1.compute.firewalls.insert"));
        assert!(!is_read_method("SetIamPolicy"));
    }
}
