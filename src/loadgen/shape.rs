//! Native record shapes: one builder per cloud that writes a complete audit
//! record as the provider delivers it (CloudTrail record, Azure Activity Log
//! record as Event Hubs and the storage export carry it, GCP `LogEntry` with
//! an `AuditLog` payload), with the identity, network and request fields the
//! parsers and rules read. Text is written directly (no intermediate tree),
//! so the generator keeps up with a Kafka producer.

use std::fmt::Write as _;

use chrono::DateTime;

/// Who acts: one identity in one account (AWS account id, Azure subscription
/// id, GCP project id).
#[derive(Clone, Debug)]
pub struct Actor {
    pub account: String,
    /// AWS: user name or role session; Azure: UPN; GCP: e-mail.
    pub name: String,
    /// AWS: the access key id (`AKIA…` for users, `ASIA…` for sessions).
    pub key: String,
    pub ip: String,
    pub user_agent: String,
    pub kind: ActorKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActorKind {
    /// A long-term IAM user / Entra ID user / Google account.
    User,
    /// An assumed role (AWS), service principal (Azure), service account (GCP).
    Service,
    /// AWS: instance profile credentials delivered to EC2.
    InstanceRole,
}

/// JSON string literal of `text` (quotes included).
pub fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

fn aws_time(ms: i64) -> impl std::fmt::Display {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
}

fn azure_time(ms: i64) -> impl std::fmt::Display {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3f0000Z")
}

fn gcp_time(ms: i64) -> impl std::fmt::Display {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3f412Z")
}

/// A pseudo-random but stable hex id of `n` digits from a 64-bit seed.
pub fn hex_id(seed: u64, n: usize) -> String {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut out = String::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let _ = write!(out, "{:016x}", x);
    }
    out.truncate(n);
    out
}

fn uuid(seed: u64) -> String {
    let h = hex_id(seed, 32);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// One CloudTrail API call.
pub struct AwsCall<'a> {
    pub source: &'a str,
    pub name: &'a str,
    pub region: &'a str,
    /// JSON object text, or `null`.
    pub params: &'a str,
    /// JSON object text, or `null`.
    pub response: &'a str,
    /// `(errorCode, errorMessage)` when the call failed.
    pub error: Option<(&'a str, &'a str)>,
    pub read_only: bool,
}

/// A CloudTrail record (as in the `Records` array of a trail file).
pub fn aws(actor: &Actor, time_ms: i64, seq: u64, call: &AwsCall<'_>) -> String {
    let account = &actor.account;
    let t = aws_time(time_ms);
    let identity = match actor.kind {
        ActorKind::User => format!(
            r#"{{"type":"IAMUser","principalId":"AIDA{pid}","arn":"arn:aws:iam::{account}:user/{name}","accountId":"{account}","accessKeyId":"{key}","userName":"{name}"}}"#,
            pid = &hex_id(seed_of(&actor.name), 17).to_uppercase(),
            name = actor.name,
            key = actor.key,
        ),
        ActorKind::Service | ActorKind::InstanceRole => {
            let (role, session, delivery) = if actor.kind == ActorKind::InstanceRole {
                (
                    "app-instance-role",
                    actor.name.as_str(),
                    r#","ec2RoleDelivery":"2.0""#,
                )
            } else {
                (actor.name.as_str(), "session-1", "")
            };
            let rid = hex_id(seed_of(role), 17).to_uppercase();
            format!(
                r#"{{"type":"AssumedRole","principalId":"AROA{rid}:{session}","arn":"arn:aws:sts::{account}:assumed-role/{role}/{session}","accountId":"{account}","accessKeyId":"{key}","sessionContext":{{"sessionIssuer":{{"type":"Role","principalId":"AROA{rid}","arn":"arn:aws:iam::{account}:role/{role}","accountId":"{account}","userName":"{role}"}},"attributes":{{"creationDate":"{t}","mfaAuthenticated":"false"}}{delivery}}}}}"#,
                key = actor.key,
            )
        }
    };
    let error = call
        .error
        .map(|(code, message)| {
            format!(
                r#","errorCode":{},"errorMessage":{}"#,
                quoted(code),
                quoted(message)
            )
        })
        .unwrap_or_default();
    let host = call.source.replace(".amazonaws.com", "");
    format!(
        r#"{{"eventVersion":"1.09","userIdentity":{identity},"eventTime":"{t}","eventSource":"{source}","eventName":"{name}","awsRegion":"{region}","sourceIPAddress":"{ip}","userAgent":{ua},"requestParameters":{params},"responseElements":{response}{error},"requestID":"{req}","eventID":"{id}","readOnly":{ro},"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"{account}","eventCategory":"Management","tlsDetails":{{"tlsVersion":"TLSv1.3","cipherSuite":"TLS_AES_128_GCM_SHA256","clientProvidedHostHeader":"{host}.{region}.amazonaws.com"}}}}"#,
        source = call.source,
        name = call.name,
        region = call.region,
        ip = actor.ip,
        ua = quoted(&actor.user_agent),
        params = call.params,
        response = call.response,
        req = uuid(seq.wrapping_mul(31)),
        id = uuid(seq),
        ro = call.read_only,
    )
}

/// A console sign-in (`signin.amazonaws.com`, `ConsoleLogin`).
pub fn aws_console_login(actor: &Actor, time_ms: i64, seq: u64, ok: bool, mfa: bool) -> String {
    let account = &actor.account;
    let t = aws_time(time_ms);
    let result = if ok { "Success" } else { "Failure" };
    let error = if ok {
        String::new()
    } else {
        r#","errorMessage":"Failed authentication""#.to_owned()
    };
    format!(
        r#"{{"eventVersion":"1.09","userIdentity":{{"type":"IAMUser","principalId":"AIDA{pid}","arn":"arn:aws:iam::{account}:user/{name}","accountId":"{account}","userName":"{name}"}},"eventTime":"{t}","eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin","awsRegion":"us-east-1","sourceIPAddress":"{ip}","userAgent":{ua},"requestParameters":null,"responseElements":{{"ConsoleLogin":"{result}"}}{error},"additionalEventData":{{"LoginTo":"https://console.aws.amazon.com/console/home","MobileVersion":"No","MFAUsed":"{mfa}"}},"eventID":"{id}","readOnly":false,"eventType":"AwsConsoleSignIn","managementEvent":true,"recipientAccountId":"{account}","eventCategory":"Management"}}"#,
        pid = hex_id(seed_of(&actor.name), 17).to_uppercase(),
        name = actor.name,
        ip = actor.ip,
        ua = quoted(&actor.user_agent),
        mfa = if mfa { "Yes" } else { "No" },
        id = uuid(seq),
    )
}

/// One Azure Resource Manager operation.
pub struct AzureOp<'a> {
    /// Path below the subscription: `resourceGroups/…/providers/…`.
    pub resource: &'a str,
    pub operation: &'a str,
    /// `Start`, `Success`, `Failure`, `Accept`.
    pub result: &'a str,
    /// The request body (JSON text) carried as a string on Start records.
    pub body: Option<&'a str>,
    /// Built-in role in the authorization evidence.
    pub role: &'a str,
}

const TENANT: &str = "9b2e6d41-0c7a-4f3e-8d15-2a6b4c8e0f97";

/// An Azure Activity Log record (Administrative category).
pub fn azure(actor: &Actor, time_ms: i64, seq: u64, op: &AzureOp<'_>) -> String {
    let sub = &actor.account;
    let t = azure_time(time_ms);
    let resource_id = format!("/subscriptions/{sub}/{}", op.resource);
    let oid = uuid(seed_of(&actor.name));
    let (principal_type, idtyp, appid) = match actor.kind {
        ActorKind::User => (
            "User",
            "user",
            "c44b4083-3bb0-49c1-b47d-974e53cbdf3c".to_owned(),
        ),
        _ => ("ServicePrincipal", "app", uuid(seed_of(&actor.name) ^ 7)),
    };
    let upn = match actor.kind {
        ActorKind::User => format!(
            r#","http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn":{},"name":{}"#,
            quoted(&actor.name),
            quoted(actor.name.split('@').next().unwrap_or_default())
        ),
        _ => String::new(),
    };
    let signature = match op.result {
        "Start" => "Started.",
        "Success" => "Succeeded.",
        "Accept" => "Accepted.Created",
        _ => "Failed.Forbidden",
    };
    let body = op
        .body
        .map(|b| format!(r#","requestbody":{}"#, quoted(b)))
        .unwrap_or_default();
    let status = if op.result == "Failure" {
        r#","statusCode":"Forbidden""#
    } else {
        ""
    };
    format!(
        r#"{{"time":"{t}","resourceId":"{resource_id}","operationName":"{operation}","category":"Administrative","resultType":"{result}","resultSignature":"{signature}","durationMs":"{duration}","callerIpAddress":"{ip}","correlationId":"{corr}","identity":{{"authorization":{{"scope":"{resource_id}","action":"{operation}","evidence":{{"role":"{role}","roleAssignmentScope":"/subscriptions/{sub}","roleAssignmentId":"{ra}","roleDefinitionId":"{rd}","principalId":"{pid}","principalType":"{principal_type}"}}}},"claims":{{"aud":"https://management.core.windows.net/","iss":"https://sts.windows.net/{TENANT}/","iat":"{iat}","appid":"{appid}","appidacr":"0","http://schemas.microsoft.com/identity/claims/objectidentifier":"{oid}","http://schemas.microsoft.com/identity/claims/tenantid":"{TENANT}","ver":"1.0","http://schemas.microsoft.com/claims/authnmethodsreferences":"pwd,mfa","idtyp":"{idtyp}"{upn}}}}},"level":"Informational","properties":{{"eventCategory":"Administrative","entity":"{resource_id}","message":"{operation}","hierarchy":"{TENANT}/{sub}"{status}{body}}},"tenantId":"{TENANT}"}}"#,
        operation = op.operation,
        result = op.result,
        duration = if op.result == "Start" {
            0
        } else {
            120 + seq % 900
        },
        ip = actor.ip,
        corr = uuid(seq ^ 0x5a5a),
        role = op.role,
        ra = hex_id(seq ^ 0xabcd, 32),
        rd = hex_id(seed_of(op.role), 32),
        pid = oid.replace('-', ""),
        iat = time_ms / 1000 - 600,
    )
}

/// One GCP API call in a Cloud Audit Log (Admin Activity).
pub struct GcpCall<'a> {
    pub service: &'a str,
    pub method: &'a str,
    pub resource_name: &'a str,
    /// The monitored resource type (`gce_instance`, `gcs_bucket`, …).
    pub resource_type: &'a str,
    /// JSON object text of `protoPayload.request`, or empty.
    pub request: &'a str,
    /// JSON object text of `protoPayload.serviceData`/`metadata` (with its key), or empty.
    pub extra: &'a str,
    /// `(code, message)` when the call failed (7 = PERMISSION_DENIED).
    pub error: Option<(u32, &'a str)>,
}

/// A GCP `LogEntry` carrying an `AuditLog`.
pub fn gcp(actor: &Actor, time_ms: i64, seq: u64, call: &GcpCall<'_>) -> String {
    let project = &actor.account;
    let t = gcp_time(time_ms);
    let status = match call.error {
        Some((code, message)) => format!(r#"{{"code":{code},"message":{}}}"#, quoted(message)),
        None => "{}".to_owned(),
    };
    let request = if call.request.is_empty() {
        String::new()
    } else {
        format!(r#","request":{}"#, call.request)
    };
    let extra = if call.extra.is_empty() {
        String::new()
    } else {
        format!(",{}", call.extra)
    };
    let severity = if call.error.is_some() {
        "ERROR"
    } else {
        "NOTICE"
    };
    format!(
        r#"{{"protoPayload":{{"@type":"type.googleapis.com/google.cloud.audit.AuditLog","status":{status},"authenticationInfo":{{"principalEmail":{email}}},"requestMetadata":{{"callerIp":"{ip}","callerSuppliedUserAgent":{ua},"requestAttributes":{{"time":"{t}","auth":{{}}}},"destinationAttributes":{{}}}},"serviceName":"{service}","methodName":"{method}","authorizationInfo":[{{"resource":{rn},"permission":"{perm}","granted":{granted},"resourceAttributes":{{}}}}],"resourceName":{rn}{request}{extra}}},"insertId":"{insert}","resource":{{"type":"{rtype}","labels":{{"project_id":"{project}"}}}},"timestamp":"{t}","severity":"{severity}","logName":"projects/{project}/logs/cloudaudit.googleapis.com%2Factivity","receiveTimestamp":"{t}"}}"#,
        email = quoted(&actor.name),
        ip = actor.ip,
        ua = quoted(&actor.user_agent),
        service = call.service,
        method = call.method,
        rn = quoted(call.resource_name),
        perm = permission_of(call.method),
        granted = call.error.is_none(),
        insert = hex_id(seq, 12),
        rtype = call.resource_type,
    )
}

/// A plausible IAM permission for a method name (`v1.compute.firewalls.insert`
/// → `compute.firewalls.insert`).
fn permission_of(method: &str) -> String {
    let parts: Vec<&str> = method.split('.').collect();
    match parts.as_slice() {
        [_, service, kind, verb] => format!("{service}.{kind}.{verb}"),
        _ => method.to_owned(),
    }
}

/// A stable 64-bit seed from text.
pub fn seed_of(text: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}
