//! The normalized audit event: one shape for CloudTrail, Azure Activity Log and
//! GCP Cloud Audit Logs records, and the decoder that produces it.
//!
//! # Model
//! An [`AuditEvent`] borrows from the bytes of the native record it was parsed
//! from: every string is a [`Str`] (`Cow<'a, str>`) that stays borrowed unless a
//! JSON escape forced a copy, so the common path allocates nothing per field.
//! The native record stays reachable as [`AuditEvent::raw`], and
//! [`AuditEvent::field`] looks up any native field by a dotted path
//! (`requestParameters.bucketName`, `properties.requestbody.properties.scope`,
//! `protoPayload.request.policy.bindings`) for rules; it descends into fields
//! that hold JSON encoded as a string (Azure's `requestbody`) transparently.
//!
//! # Invariants
//! - `service` and `operation` are never empty: a record without them is an error.
//! - `event_id` is stable for the same record: the native id where the log has one
//!   (CloudTrail `eventID`, GCP `insertId`, Azure REST `eventDataId`), else a hash
//!   of the fields that identify the record (see [`EventId::Hash`]). Findings and
//!   deduplication depend on this.
//! - `time` is the native event time in UTC; it is `None` only for abridged
//!   records that carry no time at all (documentation excerpts do).
//!
//! The per-cloud normalizers live in [`aws`], [`azure`] and [`gcp`]; framing,
//! envelope unwrapping, shape detection and input limits live in [`decode`].

pub mod aws;
pub mod azure;
pub mod decode;
mod depth;
pub mod field;
pub mod gcp;
mod probe;
mod time;

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use smallvec::SmallVec;

pub use decode::{
    DecodeStats, Decoded, Decoder, ErrorReason, FormatHint, Limits, ParseError, RecordLocation,
};
pub use field::{FieldPath, FieldValue};

/// A string borrowed from the record, or owned where JSON escapes forced a copy.
pub type Str<'a> = Cow<'a, str>;

/// The cloud a record comes from.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    Aws,
    Azure,
    Gcp,
}

impl Cloud {
    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Azure => "azure",
            Cloud::Gcp => "gcp",
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The native shape a record arrived in: which envelope it was unwrapped from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// A bare CloudTrail record.
    CloudTrailRecord,
    /// One record of a CloudTrail S3 log object `{"Records":[...]}`.
    CloudTrailS3Object,
    /// The `detail` of an EventBridge "... via CloudTrail" event.
    CloudTrailEventBridge,
    /// A record carried as a JSON string in a CloudWatch Logs subscription payload.
    CloudTrailCloudWatchLogs,
    /// A record carried as a JSON string in a LookupEvents result item.
    CloudTrailLookupEvents,
    /// A single Azure Activity Log record in the Event Hubs / storage shape.
    AzureRecord,
    /// One record of an Event Hubs batch `{"records":[...]}`.
    AzureEventHubsBatch,
    /// An Azure Activity Log event in the REST / SDK shape (`operationName.value`).
    AzureRest,
    /// A GCP Cloud Audit Logs `LogEntry`.
    GcpLogEntry,
    /// A `LogEntry` carried base64-encoded in a Pub/Sub push envelope.
    GcpPubSubPush,
}

impl Shape {
    pub fn cloud(self) -> Cloud {
        match self {
            Shape::CloudTrailRecord
            | Shape::CloudTrailS3Object
            | Shape::CloudTrailEventBridge
            | Shape::CloudTrailCloudWatchLogs
            | Shape::CloudTrailLookupEvents => Cloud::Aws,
            Shape::AzureRecord | Shape::AzureEventHubsBatch | Shape::AzureRest => Cloud::Azure,
            Shape::GcpLogEntry | Shape::GcpPubSubPush => Cloud::Gcp,
        }
    }
}

/// Who made the call, as far as the log says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// AWS account root user.
    Root,
    /// A human or workload user identity (IAM user, Entra ID user, Google account).
    User,
    /// An assumed role session (AWS `AssumedRole`).
    AssumedRole,
    /// An application identity: Entra ID service principal or managed identity.
    ServicePrincipal,
    /// A GCP service account.
    ServiceAccount,
    /// A federated identity (SAML, web identity, `FederatedUser`, Identity Center).
    Federated,
    /// The provider acting on its own behalf (`AWSService`, Google service agents).
    ProviderService,
    /// Another AWS account acting cross-account (`AWSAccount`).
    Account,
    /// The log does not say, or says something we do not recognize.
    Unknown,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Root => "root",
            PrincipalKind::User => "user",
            PrincipalKind::AssumedRole => "assumed_role",
            PrincipalKind::ServicePrincipal => "service_principal",
            PrincipalKind::ServiceAccount => "service_account",
            PrincipalKind::Federated => "federated",
            PrincipalKind::ProviderService => "provider_service",
            PrincipalKind::Account => "account",
            PrincipalKind::Unknown => "unknown",
        }
    }
}

/// The identity behind an event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Principal<'a> {
    pub kind: PrincipalKind,
    /// The most specific stable identifier: ARN, object id, email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Str<'a>>,
    /// A human-readable name: IAM user name, UPN, email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<Str<'a>>,
    /// The account / tenant the identity belongs to, when the log says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<Str<'a>>,
    /// Who issued the session: the role or user an AWS session was assumed from,
    /// the Entra ID application id of a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<Str<'a>>,
    /// Impersonation / delegation chain, outermost first (GCP
    /// `serviceAccountDelegationInfo`).
    #[serde(skip_serializing_if = "SmallVec::is_empty")]
    pub chain: SmallVec<[Str<'a>; 1]>,
    /// Whether the session was authenticated with MFA, where the log says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa: Option<bool>,
    /// The access key used (AWS), where the log says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<Str<'a>>,
    /// The identity's type as the log writes it (CloudTrail
    /// `userIdentity.type`), where `kind` sorts it. This and the next two
    /// are verbatim copies of native fields, kept for rules (read on every
    /// record, not scanned for again); not part of the normalized output.
    #[serde(skip)]
    pub native_type: Option<Str<'a>>,
    /// The type of the identity a session was issued from, as the log
    /// writes it (CloudTrail `sessionContext.sessionIssuer.type`).
    #[serde(skip)]
    pub issuer_type: Option<Str<'a>>,
    /// The identity's ARN as the log writes it (CloudTrail
    /// `userIdentity.arn`, even empty), where `id` may fall back to another.
    #[serde(skip)]
    pub arn: Option<Str<'a>>,
}

impl Principal<'_> {
    pub fn unknown() -> Self {
        Principal {
            kind: PrincipalKind::Unknown,
            id: None,
            name: None,
            account: None,
            issuer: None,
            chain: SmallVec::new(),
            mfa: None,
            access_key_id: None,
            native_type: None,
            issuer_type: None,
            arn: None,
        }
    }
}

/// Whether the call succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    /// Refused for lack of permission (AccessDenied, PERMISSION_DENIED, Forbidden).
    Denied,
    /// Failed for another reason.
    Failed,
    /// Accepted and still running (Azure `Start` / `Accept` records).
    Pending,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
            Outcome::Pending => "pending",
        }
    }
}

/// The caller's address as logged, and as an IP address when it is one.
///
/// Real logs carry service names (`AWS Internal`, `s3.amazonaws.com`,
/// `gce-internal-ip`) and zero-padded octets (`075.050.255.67`); `addr` is
/// `None` for the former and parses the latter.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceIp<'a> {
    pub raw: Str<'a>,
    pub addr: Option<IpAddr>,
}

impl<'a> SourceIp<'a> {
    pub fn parse(raw: Str<'a>) -> Self {
        let addr = parse_ip_tolerant(&raw);
        SourceIp { raw, addr }
    }
}

impl Serialize for SourceIp<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.addr {
            Some(addr) => serializer.collect_str(&addr),
            None => serializer.serialize_str(&self.raw),
        }
    }
}

/// Parses an IP address, accepting zero-padded IPv4 octets (`075.050.255.67`,
/// decimal, as CloudTrail means them) and a trailing `:port` on IPv4.
pub fn parse_ip_tolerant(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Some(addr);
    }
    // `[v6]:port` or `v4:port`
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let host = match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => text,
    };
    let mut octets = [0u8; 4];
    let mut parts = host.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(IpAddr::from(octets))
}

/// A resource the event touched.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Resource<'a> {
    /// ARN, Azure resource id, GCP resource name.
    pub id: Str<'a>,
    /// The type where the log gives one (`AWS::S3::Bucket`, `gcs_bucket`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Str<'a>>,
}

/// The stable identity of one record, used to deduplicate and to cite evidence.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventId<'a> {
    /// The log's own id: CloudTrail `eventID`, GCP `insertId`, Azure `eventDataId`.
    Native(Str<'a>),
    /// xxh3-64 of the identifying fields, for records without a native id
    /// (Azure Event Hubs records: `correlationId`, `operationName`, `resultType`,
    /// `time`; or the whole record when those are absent).
    Hash(u64),
}

impl EventId<'_> {
    /// The id as text (what `Display` writes), borrowed when it is native.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            EventId::Native(id) => Cow::Borrowed(id),
            EventId::Hash(_) => Cow::Owned(self.to_string()),
        }
    }
}

impl fmt::Display for EventId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventId::Native(id) => f.write_str(id),
            EventId::Hash(hash) => write!(f, "h:{hash:016x}"),
        }
    }
}

impl Serialize for EventId<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            EventId::Native(id) => serializer.serialize_str(id),
            EventId::Hash(_) => serializer.collect_str(self),
        }
    }
}

impl EventId<'_> {
    pub fn into_owned(self) -> EventId<'static> {
        match self {
            EventId::Native(id) => EventId::Native(Cow::Owned(id.into_owned())),
            EventId::Hash(hash) => EventId::Hash(hash),
        }
    }
}

/// One audit record, normalized. See the module docs for the invariants.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEvent<'a> {
    pub cloud: Cloud,
    pub shape: Shape,
    /// Event time in UTC (`eventTime`, `time`, `timestamp`).
    pub time: Option<DateTime<Utc>>,
    pub event_id: EventId<'a>,
    /// AWS account, Azure subscription, GCP project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<Str<'a>>,
    /// AWS region, Azure location, GCP location or zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<Str<'a>>,
    /// CloudTrail `eventSource`, Azure resource provider (canonical spelling where
    /// known, e.g. `Microsoft.Storage`), GCP `serviceName`.
    pub service: Str<'a>,
    /// CloudTrail `eventName`, Azure `operationName`, GCP `methodName`, as logged.
    pub operation: Str<'a>,
    pub principal: Principal<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<SourceIp<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<Str<'a>>,
    pub outcome: Outcome,
    /// The error code of a denied or failed call (`AccessDenied`, `7`, `Forbidden`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<Str<'a>>,
    /// Whether the call only reads; `None` where the log does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(skip_serializing_if = "SmallVec::is_empty")]
    pub resources: SmallVec<[Resource<'a>; 2]>,
    /// The native record's JSON text, the base of [`AuditEvent::field`].
    #[serde(skip)]
    pub raw: Str<'a>,
    /// Where the subtrees most rule paths start from sit in `raw`: the
    /// request (`requestParameters`, `properties`, `protoPayload`) and
    /// Azure's caller (`identity`), so lookups under them skip the scan of
    /// the rest of the record. (CloudTrail's `userIdentity` is second in its
    /// record: found at once.)
    #[serde(skip)]
    pub(crate) hot: [Option<HotSubtree>; 2],
}

/// A top-level key's value, as a byte range of [`AuditEvent::raw`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HotSubtree {
    pub key: &'static str,
    pub start: u32,
    pub end: u32,
}

impl HotSubtree {
    /// Locates `value` (a slice of `raw`) under `key`.
    pub(crate) fn locate(key: &'static str, raw: &str, value: Option<&str>) -> Option<HotSubtree> {
        let value = value?;
        let start = (value.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?;
        let end = start.checked_add(value.len())?;
        (end <= raw.len()).then_some(HotSubtree {
            key,
            start: u32::try_from(start).ok()?,
            end: u32::try_from(end).ok()?,
        })
    }
}

impl<'a> AuditEvent<'a> {
    /// Looks up a native field of the record by path; see [`field`].
    pub fn field(&self, path: &FieldPath) -> Option<FieldValue<'_>> {
        let mut found = None;
        let _ = self.visit_field(path, &mut |value| {
            found = Some(value);
            std::ops::ControlFlow::Break(())
        });
        found
    }

    /// Calls `f` with every value the path reaches; see [`field::visit`].
    pub fn visit_field<'s>(
        &'s self,
        path: &FieldPath,
        f: &mut dyn FnMut(FieldValue<'s>) -> std::ops::ControlFlow<()>,
    ) -> std::ops::ControlFlow<()> {
        if let Some(field::Segment::Key(first)) = path.segments().first()
            && let Some(hot) = self.hot.iter().flatten().find(|h| first == h.key)
            && let Some(subtree) = self.raw.get(hot.start as usize..hot.end as usize)
        {
            return field::visit_after_first(subtree, path, f);
        }
        field::visit(&self.raw, path, f)
    }

    /// Detaches the event from the buffer it was parsed from.
    pub fn into_owned(self) -> AuditEvent<'static> {
        // No text lies inside an empty base: every string is copied.
        self.rebase("")
    }

    /// The event with every string it borrows from inside `base` borrowed
    /// from `base` instead, and any other borrowed string copied: an event
    /// parsed from a buffer, re-tied to a longer-lived view of that same
    /// buffer without copying it (strings the parser had to unescape, or
    /// that came from elsewhere, are owned already or copied).
    pub fn rebase<'b>(mut self, base: &'b str) -> AuditEvent<'b> {
        // Checked and copied in place, then re-typed: building a new event
        // field by field moved the whole struct and cost ~5% of a replay.
        let range = base.as_ptr() as usize..base.as_ptr() as usize + base.len();
        let tie = |s: &mut Str<'_>| {
            if let Cow::Borrowed(text) = s {
                let start = text.as_ptr() as usize;
                let inside = range.contains(&start)
                    && start + text.len() <= range.end
                    && base
                        .get(start - range.start..start - range.start + text.len())
                        .is_some();
                if !inside {
                    *s = Cow::Owned((*text).to_owned());
                }
            }
        };
        let tie_opt = |s: &mut Option<Str<'_>>| {
            if let Some(s) = s {
                tie(s);
            }
        };
        // Destructured without `..`: a field added to the event (or to its
        // parts) does not compile until it is handled here, which the
        // re-typing below depends on.
        let AuditEvent {
            cloud: _,
            shape: _,
            time: _,
            event_id,
            account,
            region,
            service,
            operation,
            principal,
            source_ip,
            user_agent,
            outcome: _,
            error_code,
            read_only: _,
            resources,
            raw,
            hot: _,
        } = &mut self;
        let Principal {
            kind: _,
            id,
            name,
            account: principal_account,
            issuer,
            chain,
            mfa: _,
            access_key_id,
            native_type,
            issuer_type,
            arn,
        } = principal;
        match event_id {
            EventId::Native(id) => tie(id),
            EventId::Hash(_) => {}
        }
        for s in [account, region, user_agent, error_code] {
            tie_opt(s);
        }
        for s in [
            id,
            name,
            principal_account,
            issuer,
            access_key_id,
            native_type,
            issuer_type,
            arn,
        ] {
            tie_opt(s);
        }
        chain.iter_mut().for_each(tie);
        tie(service);
        tie(operation);
        tie(raw);
        if let Some(SourceIp { raw, addr: _ }) = source_ip {
            tie(raw);
        }
        for Resource { id, kind } in resources.iter_mut() {
            tie(id);
            tie_opt(kind);
        }
        // SAFETY: the two types differ only in the lifetime of the strings
        // they borrow. Every borrowed string of the event (all reached
        // above, the destructuring being exhaustive) now lies inside
        // `base`, which lives for 'b: it was checked to, or replaced by an
        // owned copy. Two live allocations cannot overlap, so a string
        // inside `base`'s bytes is a view of `base`.
        unsafe { std::mem::transmute::<AuditEvent<'_>, AuditEvent<'b>>(self) }
    }
}

/// Treats an empty string as absent: logs write `""` for "not applicable".
pub(crate) fn non_empty(s: Option<Str<'_>>) -> Option<Str<'_>> {
    s.filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_parsing_is_tolerant() {
        let cases = [
            ("1.2.3.4", Some("1.2.3.4")),
            ("075.050.255.67", Some("75.50.255.67")),
            ("001.002.003.004", Some("1.2.3.4")),
            ("10.0.0.1:443", Some("10.0.0.1")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("[2001:db8::1]:443", Some("2001:db8::1")),
            ("AWS Internal", None),
            ("s3.amazonaws.com", None),
            ("256.1.1.1", None),
            ("1.2.3", None),
            ("1.2.3.4.5", None),
            ("1.2.3.0004", None),
            ("", None),
            ("private", None),
        ];
        for (input, expected) in cases {
            let got = parse_ip_tolerant(input).map(|a| a.to_string());
            assert_eq!(got.as_deref(), expected, "input {input:?}");
        }
    }

    /// Rebasing keeps every string's text; a string inside the new base is
    /// borrowed from it, any other is copied.
    #[test]
    fn rebase_borrows_what_lies_in_the_base_and_copies_the_rest() {
        let record = r#"{"eventVersion":"1.09","userIdentity":{"type":"AssumedRole","principalId":"AROA1:s","arn":"arn:aws:sts::111122223333:assumed-role/r/s","accountId":"111122223333","accessKeyId":"ASIA1","sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::111122223333:role/r","userName":"r"},"attributes":{"mfaAuthenticated":"true"}}},"eventTime":"2025-03-01T10:00:00Z","eventSource":"s3.amazonaws.com","eventName":"PutBucketPolicy","awsRegion":"us-east-1","sourceIPAddress":"198.51.100.7","userAgent":"aws-cli/2","errorCode":"AccessDenied","eventID":"e-1","readOnly":false,"recipientAccountId":"111122223333","resources":[{"ARN":"arn:aws:s3:::b","type":"AWS::S3::Bucket"}],"requestParameters":{"bucketName":"b\u0041"}}"#;
        let decoder = Decoder::new(FormatHint::Auto, Limits::default());
        let mut events = Vec::new();
        decoder.decode(record.as_bytes(), &mut |d: Decoded<'_>| {
            events.push(d.result.unwrap().into_owned());
        });
        let event = events.pop().unwrap();
        let json = |e: &AuditEvent<'_>| serde_json::to_string(e).unwrap();
        let expected = json(&event);
        // Borrowed from a buffer of its own, then rebased onto that buffer,
        // onto its second half, and onto nothing.
        let text = record.to_owned();
        let mut parsed = Vec::new();
        decoder.decode(text.as_bytes(), &mut |d: Decoded<'_>| {
            parsed.push(d.result.unwrap().rebase(&text));
        });
        let whole = parsed.pop().unwrap();
        let half = &text[text.find("\"eventName\"").unwrap()..];
        let inside = |s: &str, base: &str| {
            let (p, b) = (s.as_ptr() as usize, base.as_ptr() as usize);
            p >= b && p + s.len() <= b + base.len()
        };
        assert!(matches!(whole.service, Cow::Borrowed(_)));
        assert!(matches!(whole.raw, Cow::Borrowed(_)));
        assert!(inside(&whole.operation, &text));
        let halved = whole.clone().rebase(half);
        let owned = whole.clone().rebase("");
        for e in [&whole, &halved, &owned] {
            assert_eq!(json(e), expected);
            assert_eq!(e.raw, record);
        }
        // Before `eventName`: copied; from it on: borrowed from `half`.
        assert!(matches!(halved.service, Cow::Owned(_)));
        assert!(matches!(halved.principal.arn, Some(Cow::Owned(_))));
        assert!(matches!(halved.operation, Cow::Borrowed(_)));
        assert!(inside(&halved.operation, half));
        assert!(matches!(halved.region, Some(Cow::Borrowed(_))));
        assert!(matches!(halved.resources[0].id, Cow::Borrowed(_)));
        assert!(matches!(halved.raw, Cow::Owned(_)));
        for s in [
            &*owned.service,
            &owned.operation,
            owned.region.as_deref().unwrap(),
            owned.principal.arn.as_deref().unwrap(),
            &owned.resources[0].id,
            &owned.raw,
        ] {
            assert!(!inside(s, &text));
        }
    }

    #[test]
    fn event_id_displays_hash_as_hex() {
        assert_eq!(EventId::Hash(0xab).to_string(), "h:00000000000000ab");
        assert_eq!(EventId::Native("x".into()).to_string(), "x");
    }
}
