//! The one-pass view of a JSON object that might be any supported shape.
//!
//! Every record or envelope is read once into a [`Probe`]: a table of the raw
//! JSON text of each known top-level key of all shapes (CloudTrail records and
//! their envelopes, Azure Event Hubs / REST / SDK records, GCP `LogEntry` and
//! the Pub/Sub push envelope). Nothing is parsed beyond finding where each value
//! ends (a SIMD skip); strings are decoded on access, borrowed unless they hold
//! escapes, and nested objects are parsed on access into the small typed structs
//! below. A first version derived `Deserialize` for a 2.8 KB struct of `Option`
//! fields; initializing and moving it cost more than parsing the record.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use sonic_rs::LazyValue;

use super::Str;
use super::decode::{ErrorReason, Rejection, get_str, json_string, reject};

/// A boolean that some logs write as `true` and others as `"true"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct BoolLike(pub Option<bool>);

impl<'de> Deserialize<'de> for BoolLike {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BoolLikeVisitor;
        impl<'de> Visitor<'de> for BoolLikeVisitor {
            type Value = BoolLike;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a boolean or a string holding one")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<BoolLike, E> {
                Ok(BoolLike(Some(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BoolLike, E> {
                Ok(BoolLike(parse_bool_text(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<BoolLike, E> {
                Ok(BoolLike(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<BoolLike, E> {
                Ok(BoolLike(None))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<BoolLike, D::Error> {
                d.deserialize_any(BoolLikeVisitor)
            }
        }
        deserializer.deserialize_any(BoolLikeVisitor)
    }
}

/// Deserializes an optional string borrowed from the input when it has no
/// escapes. (`#[serde(borrow)]` only borrows a bare `Cow<str>` field; behind an
/// `Option` serde's own `Cow` impl always allocates.)
pub(crate) fn opt_str<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Str<'de>>, D::Error> {
    struct OptStr;
    impl<'de> Visitor<'de> for OptStr {
        type Value = Option<Str<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(OptStr)
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
    }
    deserializer.deserialize_option(OptStr)
}

/// `true`/`false`/`yes`/`no` in any case.
pub(crate) fn parse_bool_text(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("yes") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") || v.eq_ignore_ascii_case("no") {
        Some(false)
    } else {
        None
    }
}

/// CloudTrail `userIdentity`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct AwsIdentity<'a> {
    #[serde(
        borrow,
        deserialize_with = "crate::event::probe::opt_str",
        rename = "type"
    )]
    pub kind: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub principal_id: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub arn: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub account_id: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub access_key_id: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub user_name: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub invoked_by: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub identity_provider: Option<Str<'a>>,
    #[serde(borrow)]
    pub session_context: Option<AwsSessionContext<'a>>,
    #[serde(borrow)]
    pub on_behalf_of: Option<AwsOnBehalfOf<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct AwsSessionContext<'a> {
    #[serde(borrow)]
    pub session_issuer: Option<AwsSessionIssuer<'a>>,
    pub attributes: Option<AwsSessionAttributes>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct AwsSessionIssuer<'a> {
    #[serde(
        borrow,
        deserialize_with = "crate::event::probe::opt_str",
        rename = "type"
    )]
    pub kind: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub arn: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub user_name: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct AwsSessionAttributes {
    pub mfa_authenticated: BoolLike,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct AwsOnBehalfOf<'a> {
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub user_id: Option<Str<'a>>,
}

/// GCP `protoPayload` (an `AuditLog`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct GcpAuditLog<'a> {
    #[serde(
        borrow,
        deserialize_with = "crate::event::probe::opt_str",
        rename = "@type"
    )]
    pub type_url: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub service_name: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub method_name: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub resource_name: Option<Str<'a>>,
    #[serde(borrow)]
    pub authentication_info: Option<GcpAuthenticationInfo<'a>>,
    #[serde(borrow)]
    pub request_metadata: Option<GcpRequestMetadata<'a>>,
    #[serde(borrow)]
    pub status: Option<GcpStatus<'a>>,
    #[serde(borrow)]
    pub resource_location: Option<LazyValue<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct GcpAuthenticationInfo<'a> {
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub principal_email: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub principal_subject: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub service_account_key_name: Option<Str<'a>>,
    #[serde(borrow)]
    pub service_account_delegation_info: Option<LazyValue<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct GcpRequestMetadata<'a> {
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub caller_ip: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub caller_supplied_user_agent: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct GcpStatus<'a> {
    pub code: Option<i64>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub message: Option<Str<'a>>,
}

/// `resource` of a GCP `LogEntry`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct GcpMonitoredResource<'a> {
    #[serde(
        borrow,
        deserialize_with = "crate::event::probe::opt_str",
        rename = "type"
    )]
    pub kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub labels: Option<GcpResourceLabels<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct GcpResourceLabels<'a> {
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub project_id: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub location: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub zone: Option<Str<'a>>,
    #[serde(borrow, deserialize_with = "crate::event::probe::opt_str")]
    pub region: Option<Str<'a>>,
}

/// The top-level keys of every supported shape. See [`Probe`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Key {
    // CloudTrail S3 object envelope
    Records,
    // Event Hubs batch / storage blob envelope
    RecordsAzure,
    // CloudWatch Logs subscription payload
    LogEvents,
    // LookupEvents item: the record as a JSON string
    CloudTrailEvent,
    // LookupEvents response
    Events,
    // EventBridge event
    DetailType,
    Detail,
    // Pub/Sub push envelope
    Message,
    Subscription,
    // CloudTrail
    EventVersion,
    EventTime,
    // Logstash exports
    AtTimestamp,
    EventSource,
    // a string in CloudTrail, {value} in Azure REST
    EventName,
    AwsRegion,
    SourceIpAddress,
    UserAgent,
    ErrorCode,
    ErrorMessage,
    EventId,
    ReadOnly,
    EventType,
    RecipientAccountId,
    UserIdentity,
    Resources,
    AdditionalEventData,
    ResponseElements,
    InsightDetails,
    RequestParameters,
    // Azure Event Hubs / storage shape
    Time,
    ResourceId,
    OperationName,
    Category,
    ResultType,
    ResultSignature,
    CallerIpAddress,
    CorrelationId,
    Identity,
    Properties,
    Location,
    // Azure REST (camelCase) and SDK (snake_case) shapes
    EventTimestamp,
    EventTimestampSnake,
    OperationNameSnake,
    EventDataId,
    EventDataIdSnake,
    CorrelationIdSnake,
    ResourceIdSnake,
    SubscriptionId,
    SubscriptionIdSnake,
    ResourceProviderName,
    ResourceProviderNameSnake,
    Caller,
    Claims,
    Authorization,
    Status,
    SubStatus,
    HttpRequest,
    HttpRequestSnake,
    // GCP LogEntry
    ProtoPayload,
    JsonPayload,
    TextPayload,
    LogName,
    Timestamp,
    ReceiveTimestamp,
    InsertId,
    Resource,
}

const KEY_COUNT: usize = 66;
const _: () = assert!(KEY_COUNT <= 128, "Probe::escaped has a bit per key");

impl Key {
    fn from_name(name: &str) -> Option<Key> {
        Some(match name {
            "Records" => Key::Records,
            "records" => Key::RecordsAzure,
            "logEvents" => Key::LogEvents,
            "CloudTrailEvent" => Key::CloudTrailEvent,
            "Events" => Key::Events,
            "detail-type" => Key::DetailType,
            "detail" => Key::Detail,
            "message" => Key::Message,
            "subscription" => Key::Subscription,
            "eventVersion" => Key::EventVersion,
            "eventTime" => Key::EventTime,
            "@timestamp" => Key::AtTimestamp,
            "eventSource" => Key::EventSource,
            "eventName" => Key::EventName,
            "awsRegion" => Key::AwsRegion,
            "sourceIPAddress" => Key::SourceIpAddress,
            "userAgent" => Key::UserAgent,
            "errorCode" => Key::ErrorCode,
            "errorMessage" => Key::ErrorMessage,
            "eventID" => Key::EventId,
            "readOnly" => Key::ReadOnly,
            "eventType" => Key::EventType,
            "recipientAccountId" => Key::RecipientAccountId,
            "userIdentity" => Key::UserIdentity,
            "resources" => Key::Resources,
            "additionalEventData" => Key::AdditionalEventData,
            "responseElements" => Key::ResponseElements,
            "insightDetails" => Key::InsightDetails,
            "requestParameters" => Key::RequestParameters,
            "time" => Key::Time,
            "resourceId" => Key::ResourceId,
            "operationName" => Key::OperationName,
            "category" => Key::Category,
            "resultType" => Key::ResultType,
            "resultSignature" => Key::ResultSignature,
            "callerIpAddress" => Key::CallerIpAddress,
            "correlationId" => Key::CorrelationId,
            "identity" => Key::Identity,
            "properties" => Key::Properties,
            "location" => Key::Location,
            "eventTimestamp" => Key::EventTimestamp,
            "event_timestamp" => Key::EventTimestampSnake,
            "operation_name" => Key::OperationNameSnake,
            "eventDataId" => Key::EventDataId,
            "event_data_id" => Key::EventDataIdSnake,
            "correlation_id" => Key::CorrelationIdSnake,
            "resource_id" => Key::ResourceIdSnake,
            "subscriptionId" => Key::SubscriptionId,
            "subscription_id" => Key::SubscriptionIdSnake,
            "resourceProviderName" => Key::ResourceProviderName,
            "resource_provider_name" => Key::ResourceProviderNameSnake,
            "caller" => Key::Caller,
            "claims" => Key::Claims,
            "authorization" => Key::Authorization,
            "status" => Key::Status,
            "subStatus" => Key::SubStatus,
            "httpRequest" => Key::HttpRequest,
            "http_request" => Key::HttpRequestSnake,
            "protoPayload" => Key::ProtoPayload,
            "jsonPayload" => Key::JsonPayload,
            "textPayload" => Key::TextPayload,
            "logName" => Key::LogName,
            "timestamp" => Key::Timestamp,
            "receiveTimestamp" => Key::ReceiveTimestamp,
            "insertId" => Key::InsertId,
            "resource" => Key::Resource,
            _ => return None,
        })
    }

    /// The key as written in the record.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Key::Records => "Records",
            Key::RecordsAzure => "records",
            Key::LogEvents => "logEvents",
            Key::CloudTrailEvent => "CloudTrailEvent",
            Key::Events => "Events",
            Key::DetailType => "detail-type",
            Key::Detail => "detail",
            Key::Message => "message",
            Key::Subscription => "subscription",
            Key::EventVersion => "eventVersion",
            Key::EventTime => "eventTime",
            Key::AtTimestamp => "@timestamp",
            Key::EventSource => "eventSource",
            Key::EventName => "eventName",
            Key::AwsRegion => "awsRegion",
            Key::SourceIpAddress => "sourceIPAddress",
            Key::UserAgent => "userAgent",
            Key::ErrorCode => "errorCode",
            Key::ErrorMessage => "errorMessage",
            Key::EventId => "eventID",
            Key::ReadOnly => "readOnly",
            Key::EventType => "eventType",
            Key::RecipientAccountId => "recipientAccountId",
            Key::UserIdentity => "userIdentity",
            Key::Resources => "resources",
            Key::AdditionalEventData => "additionalEventData",
            Key::ResponseElements => "responseElements",
            Key::InsightDetails => "insightDetails",
            Key::RequestParameters => "requestParameters",
            Key::Time => "time",
            Key::ResourceId => "resourceId",
            Key::OperationName => "operationName",
            Key::Category => "category",
            Key::ResultType => "resultType",
            Key::ResultSignature => "resultSignature",
            Key::CallerIpAddress => "callerIpAddress",
            Key::CorrelationId => "correlationId",
            Key::Identity => "identity",
            Key::Properties => "properties",
            Key::Location => "location",
            Key::EventTimestamp => "eventTimestamp",
            Key::EventTimestampSnake => "event_timestamp",
            Key::OperationNameSnake => "operation_name",
            Key::EventDataId => "eventDataId",
            Key::EventDataIdSnake => "event_data_id",
            Key::CorrelationIdSnake => "correlation_id",
            Key::ResourceIdSnake => "resource_id",
            Key::SubscriptionId => "subscriptionId",
            Key::SubscriptionIdSnake => "subscription_id",
            Key::ResourceProviderName => "resourceProviderName",
            Key::ResourceProviderNameSnake => "resource_provider_name",
            Key::Caller => "caller",
            Key::Claims => "claims",
            Key::Authorization => "authorization",
            Key::Status => "status",
            Key::SubStatus => "subStatus",
            Key::HttpRequest => "httpRequest",
            Key::HttpRequestSnake => "http_request",
            Key::ProtoPayload => "protoPayload",
            Key::JsonPayload => "jsonPayload",
            Key::TextPayload => "textPayload",
            Key::LogName => "logName",
            Key::Timestamp => "timestamp",
            Key::ReceiveTimestamp => "receiveTimestamp",
            Key::InsertId => "insertId",
            Key::Resource => "resource",
        }
    }
}

/// The raw JSON text of each known top-level key of one object.
///
/// Built in one pass: keys are matched against [`Key`], the value of a known key
/// is kept as its raw text (a SIMD skip, no parsing), unknown keys are skipped.
/// Shape detection is then a few presence checks, and the normalizers read the
/// values they need through the typed accessors, which name the field in their
/// errors. Nested objects (`userIdentity`, `protoPayload`, …) are parsed on
/// demand from their raw text into small typed structs.
pub(crate) struct Probe<'a> {
    values: [Option<&'a str>; KEY_COUNT],
    /// One bit per [`Key`]: its value is a string holding escapes (the
    /// parser's skip tells, so that reading a string needs no second
    /// search for a backslash).
    escaped: u128,
    /// `userIdentity`, parsed in the same pass (it is on every CloudTrail
    /// record and a second pass over it cost ~10% of the parse). `Some(None)`:
    /// present but not an object.
    user_identity: Option<Option<AwsIdentity<'a>>>,
}

/// An object parsed as `T`, or anything else recorded as `None`: how
/// `userIdentity` was read before [`IdentityVisitor`], which the tests hold
/// it to.
#[cfg(test)]
struct ObjectOr<T>(Option<T>);

#[cfg(test)]
impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOr<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = ObjectOr<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_map<M: de::MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|t| ObjectOr(Some(t)))
            }
            fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(ObjectOr(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(ObjectOr(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(ObjectOr(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(ObjectOr(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(ObjectOr(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(ObjectOr(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ObjectOr(None))
            }
        }
        deserializer.deserialize_any(V(std::marker::PhantomData))
    }
}

/// sonic-rs hands the raw text of a value to a newtype visitor of this name
/// (it is how its own `LazyValue` deserializes): a skip, no parse. Pinned by
/// `Cargo.lock`; the golden tests fail if a sonic-rs upgrade changes it.
const SONIC_RAW_VALUE_TOKEN: &str = "$sonic_rs::LazyValue";

/// Deserializes any value as its raw JSON text, borrowed from `base`, and
/// whether it is a string holding escapes.
struct RawValueSeed<'a> {
    base: &'a str,
}

impl<'de> de::DeserializeSeed<'de> for RawValueSeed<'de> {
    type Value = (&'de str, bool);
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        struct RawVisitor<'a> {
            base: &'a str,
        }
        impl<'de> Visitor<'de> for RawVisitor<'de> {
            type Value = (&'de str, bool);
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, raw: &'de str) -> Result<Self::Value, E> {
                Ok((raw, false))
            }
            // Strings holding escapes (and only those) arrive without the
            // input's lifetime, but they are still slices of the input:
            // find them in `base`.
            fn visit_str<E: de::Error>(self, raw: &str) -> Result<Self::Value, E> {
                let offset = (raw.as_ptr() as usize).wrapping_sub(self.base.as_ptr() as usize);
                self.base
                    .get(offset..offset.wrapping_add(raw.len()))
                    .filter(|found| found.as_ptr() == raw.as_ptr())
                    .map(|found| (found, true))
                    .ok_or_else(|| E::custom("raw value is not part of the input"))
            }
        }
        deserializer
            .deserialize_newtype_struct(SONIC_RAW_VALUE_TOKEN, RawVisitor { base: self.base })
    }
}

struct KeySeed(Option<Key>);

impl<'de> Deserialize<'de> for KeySeed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeySeed;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeySeed, E> {
                Ok(KeySeed(Key::from_name(v)))
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// `userIdentity`: an object parsed into the slot it is given, anything
/// else `None`. Read in place: returned by value, the ~300-byte struct was
/// moved through half a dozen layers of `Result` and `Option`, 4% of a
/// replay's CPU in copies. Errors of type (not of syntax, nor an early end)
/// are marked as the identity's, which [`classify_sonic_error`] reports as
/// a wrong type.
struct IdentitySeed<'p, 'a>(&'p mut Option<AwsIdentity<'a>>);

impl<'de> de::DeserializeSeed<'de> for IdentitySeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer
            .deserialize_any(IdentityVisitor(self.0))
            .map_err(|e| {
                let message = e.to_string();
                const TYPE_ERRORS: [&str; 6] = [
                    "invalid type",
                    "invalid value",
                    "invalid length",
                    "missing field",
                    "duplicate field",
                    "unknown variant",
                ];
                if TYPE_ERRORS.iter().any(|t| message.contains(t)) {
                    <D::Error as de::Error>::custom(format!("{USER_IDENTITY_ERROR}{message}"))
                } else {
                    e
                }
            })
    }
}

/// The fields of [`AwsIdentity`], by the names CloudTrail writes.
#[derive(Clone, Copy)]
enum IdentityField {
    Kind,
    PrincipalId,
    Arn,
    AccountId,
    AccessKeyId,
    UserName,
    InvokedBy,
    IdentityProvider,
    SessionContext,
    OnBehalfOf,
    Other,
}

impl IdentityField {
    /// Matched as `#[derive(Deserialize)]` and [`Key::from_name`] match: a
    /// jump on the length, then one comparison.
    fn from_name(name: &str) -> IdentityField {
        match name {
            "type" => IdentityField::Kind,
            "principalId" => IdentityField::PrincipalId,
            "arn" => IdentityField::Arn,
            "accountId" => IdentityField::AccountId,
            "accessKeyId" => IdentityField::AccessKeyId,
            "userName" => IdentityField::UserName,
            "invokedBy" => IdentityField::InvokedBy,
            "identityProvider" => IdentityField::IdentityProvider,
            "sessionContext" => IdentityField::SessionContext,
            "onBehalfOf" => IdentityField::OnBehalfOf,
            _ => IdentityField::Other,
        }
    }

    /// The name as CloudTrail writes it (in a duplicate field's error).
    fn name(self) -> &'static str {
        match self {
            IdentityField::Kind => "type",
            IdentityField::PrincipalId => "principalId",
            IdentityField::Arn => "arn",
            IdentityField::AccountId => "accountId",
            IdentityField::AccessKeyId => "accessKeyId",
            IdentityField::UserName => "userName",
            IdentityField::InvokedBy => "invokedBy",
            IdentityField::IdentityProvider => "identityProvider",
            IdentityField::SessionContext => "sessionContext",
            IdentityField::OnBehalfOf => "onBehalfOf",
            IdentityField::Other => "",
        }
    }
}

impl<'de> Deserialize<'de> for IdentityField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = IdentityField;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("field identifier")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdentityField, E> {
                Ok(IdentityField::from_name(v))
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

/// An optional string, as [`opt_str`] reads it.
struct OptStrSeed;

impl<'de> de::DeserializeSeed<'de> for OptStrSeed {
    type Value = Option<Str<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        opt_str(deserializer)
    }
}

/// Reads `userIdentity` as `#[derive(Deserialize)]` on [`AwsIdentity`]
/// would (every field optional, unknown ones skipped, a repeated one an
/// error), into the slot.
struct IdentityVisitor<'p, 'a>(&'p mut Option<AwsIdentity<'a>>);

impl<'de> Visitor<'de> for IdentityVisitor<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_map<M: de::MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        let identity = self.0.insert(AwsIdentity::default());
        let mut seen = 0u16;
        while let Some(field) = map.next_key::<IdentityField>()? {
            if let IdentityField::Other = field {
                map.next_value::<de::IgnoredAny>()?;
                continue;
            }
            let bit = 1u16 << field as u16;
            if seen & bit != 0 {
                return Err(de::Error::duplicate_field(field.name()));
            }
            seen |= bit;
            let text = match field {
                IdentityField::Kind => &mut identity.kind,
                IdentityField::PrincipalId => &mut identity.principal_id,
                IdentityField::Arn => &mut identity.arn,
                IdentityField::AccountId => &mut identity.account_id,
                IdentityField::AccessKeyId => &mut identity.access_key_id,
                IdentityField::UserName => &mut identity.user_name,
                IdentityField::InvokedBy => &mut identity.invoked_by,
                IdentityField::IdentityProvider => &mut identity.identity_provider,
                IdentityField::SessionContext => {
                    identity.session_context = map.next_value()?;
                    continue;
                }
                IdentityField::OnBehalfOf => {
                    identity.on_behalf_of = map.next_value()?;
                    continue;
                }
                IdentityField::Other => continue,
            };
            *text = map.next_value_seed(OptStrSeed)?;
        }
        Ok(())
    }
    fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        *self.0 = None;
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        *self.0 = None;
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        *self.0 = None;
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        *self.0 = None;
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        *self.0 = None;
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        *self.0 = None;
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        *self.0 = None;
        Ok(())
    }
}

/// Fills a [`Probe`] in place: the table is ~1.4 KB, and returning it by
/// value through serde's layers cost ~10% of a parse in copies.
struct ProbeVisitor<'p, 'a> {
    base: &'a str,
    probe: &'p mut Probe<'a>,
    /// Where in `base` the object's first key may start (just after its
    /// `{`): the object's text so far ends here while it has no entry.
    after_open: usize,
}

impl<'de> Visitor<'de> for ProbeVisitor<'_, 'de> {
    /// Where in `base` the object's last value ends, when it was read as
    /// raw text (every value but `userIdentity`).
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<M: de::MapAccess<'de>>(self, mut map: M) -> Result<Option<usize>, M::Error> {
        let probe = self.probe;
        let base = self.base.as_ptr() as usize;
        let end_of = |raw: &str| Some(raw.as_ptr() as usize + raw.len() - base);
        let mut end = Some(self.after_open);
        while let Some(KeySeed(key)) = map.next_key()? {
            match key {
                Some(Key::UserIdentity) => {
                    // Parsed where it stands, in this pass. Its text is not
                    // kept: lookups under `userIdentity` scan for it from
                    // the start of the record, where CloudTrail writes it
                    // (second), and the parse is a third of the cost of a
                    // skip and a parse.
                    map.next_value_seed(IdentitySeed(probe.user_identity.insert(None)))?;
                    end = None;
                }
                Some(key) => {
                    let (raw, escaped) = map.next_value_seed(RawValueSeed { base: self.base })?;
                    probe.values[key as usize] = Some(raw);
                    probe.escaped |= u128::from(escaped) << key as u32;
                    end = end_of(raw);
                }
                None => {
                    // Skipped as raw text (the same validating skip as
                    // `IgnoredAny`), to know where it ends.
                    let (raw, _) = map.next_value_seed(RawValueSeed { base: self.base })?;
                    end = end_of(raw);
                }
            }
        }
        Ok(end)
    }
}

impl<'a> Probe<'a> {
    pub(crate) fn new() -> Probe<'a> {
        Probe {
            values: [None; KEY_COUNT],
            escaped: 0,
            user_identity: None,
        }
    }

    /// Reads one JSON object into `self` (which must be fresh). Fails on
    /// invalid JSON (`Truncated` when it ends early, `Syntax` otherwise), on
    /// anything but an object, and on trailing characters after it.
    pub(crate) fn parse_into(&mut self, text: &'a str) -> Result<(), Rejection> {
        let mut deserializer = sonic_rs::Deserializer::from_str(text);
        Deserializer::deserialize_map(
            &mut deserializer,
            ProbeVisitor {
                base: text,
                probe: self,
                after_open: 0,
            },
        )
        .map_err(|e| classify_sonic_error(&e))?;
        deserializer.end().map_err(|e| classify_sonic_error(&e))
    }

    /// Reads the JSON object at the start of `text` (its first byte is the
    /// `{`) into `self` (which must be fresh), leaving whatever follows it
    /// unread, and returns the object's length: the walk over an array of
    /// records reads each record once, where finding its end first and
    /// then reading it took a second pass. `None` when the object did not
    /// read; `Some(None)` when it did but where it ends is not known (its
    /// last value is `userIdentity`, which is parsed rather than skipped).
    pub(crate) fn parse_prefix(&mut self, text: &'a str) -> Option<Option<usize>> {
        let mut deserializer = sonic_rs::Deserializer::from_str(text);
        let last = Deserializer::deserialize_map(
            &mut deserializer,
            ProbeVisitor {
                base: text,
                probe: self,
                after_open: 1,
            },
        )
        .ok()?;
        let Some(last) = last else {
            return Some(None);
        };
        // The object read, so only white space stands between its last
        // value and its `}`.
        let bytes = text.as_bytes();
        let close = last
            + bytes
                .get(last..)?
                .iter()
                .position(|b| !b.is_ascii_whitespace())?;
        Some((bytes[close] == b'}').then_some(close + 1))
    }

    /// The parsed `userIdentity`, moved out; `Some(None)` when it is not an object.
    pub(crate) fn take_user_identity(&mut self) -> Option<Option<AwsIdentity<'a>>> {
        self.user_identity.take()
    }
}

/// Prefix of errors from the `userIdentity` parse in the probe pass.
const USER_IDENTITY_ERROR: &str = "field `userIdentity`: ";

/// Truncated input is told apart from other invalid JSON.
pub(crate) fn classify_sonic_error(e: &sonic_rs::Error) -> Rejection {
    let message = e.to_string();
    let reason = if e.is_eof() {
        ErrorReason::Truncated
    } else if message.contains(USER_IDENTITY_ERROR) {
        // The one nested struct parsed in the probe pass.
        ErrorReason::WrongType
    } else {
        ErrorReason::Syntax
    };
    (reason, message)
}

fn wrong_type<T>(key: Key, expected: &str) -> Result<T, Rejection> {
    reject(
        ErrorReason::WrongType,
        format!("field `{}` must be {expected}", key.name()),
    )
}

impl<'a> Probe<'a> {
    /// The raw JSON text of a key, `None` when absent or `null`.
    pub(crate) fn raw(&self, key: Key) -> Option<&'a str> {
        self.values[key as usize].filter(|raw| *raw != "null")
    }

    pub(crate) fn has(&self, key: Key) -> bool {
        self.raw(key).is_some()
    }

    /// A string field; `None` when absent, null or empty.
    pub(crate) fn str(&self, key: Key) -> Result<Option<Str<'a>>, Rejection> {
        match self.raw(key) {
            None => Ok(None),
            // A string the parser found no escape in: its text as it stands.
            Some(raw) if raw.starts_with('"') && self.escaped & (1 << key as u32) == 0 => {
                let text = raw.get(1..raw.len().saturating_sub(1)).unwrap_or("");
                Ok((!text.is_empty()).then_some(Cow::Borrowed(text)))
            }
            Some(raw) if raw.starts_with('"') => match json_string(raw) {
                Some(s) if s.is_empty() => Ok(None),
                Some(s) => Ok(Some(s)),
                None => wrong_type(key, "a valid string"),
            },
            Some(_) => wrong_type(key, "a string"),
        }
    }

    /// A string, or an object whose `value` is one (Azure REST writes
    /// `operationName: {value, localizedValue}`). The flag says it was an object.
    pub(crate) fn str_or_value(&self, key: Key) -> Result<Option<(Str<'a>, bool)>, Rejection> {
        match self.raw(key) {
            Some(raw) if raw.starts_with('{') => Ok(get_str(raw, "value").map(|s| (s, true))),
            _ => Ok(self.str(key)?.map(|s| (s, false))),
        }
    }

    /// Whether the key holds an object (rather than a string); `false` if absent.
    pub(crate) fn is_object(&self, key: Key) -> bool {
        self.raw(key).is_some_and(|raw| raw.starts_with('{'))
    }

    /// A boolean written as `true` or `"true"`.
    pub(crate) fn bool_like(&self, key: Key) -> Result<Option<bool>, Rejection> {
        match self.raw(key) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(raw) if raw.starts_with('"') => {
                Ok(json_string(raw).and_then(|s| parse_bool_text(&s)))
            }
            Some(_) => wrong_type(key, "a boolean"),
        }
    }

    /// The raw text of an object field; a wrong type is an error.
    pub(crate) fn object(&self, key: Key) -> Result<Option<&'a str>, Rejection> {
        match self.raw(key) {
            None => Ok(None),
            Some(raw) if raw.starts_with('{') => Ok(Some(raw)),
            Some(_) => wrong_type(key, "an object"),
        }
    }

    /// The raw text of an array field; a wrong type is an error.
    pub(crate) fn array(&self, key: Key) -> Result<Option<&'a str>, Rejection> {
        match self.raw(key) {
            None => Ok(None),
            Some(raw) if raw.starts_with('[') => Ok(Some(raw)),
            Some(_) => wrong_type(key, "an array"),
        }
    }

    /// An object field parsed into a typed struct.
    pub(crate) fn typed<T: Deserialize<'a>>(&self, key: Key) -> Result<Option<T>, Rejection> {
        let Some(raw) = self.object(key)? else {
            return Ok(None);
        };
        match sonic_rs::from_str(raw) {
            Ok(value) => Ok(Some(value)),
            Err(_) => {
                let mut de = sonic_rs::Deserializer::from_str(raw);
                let detail = match serde_path_to_error::deserialize::<_, T>(&mut de) {
                    Ok(_) => format!("field `{}` is malformed", key.name()),
                    Err(e) => format!("field `{}.{}`: {}", key.name(), e.path(), e.inner()),
                };
                reject(ErrorReason::WrongType, detail)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record's `userIdentity` as the probe reads it: the identity (as
    /// `Debug` text), or the error.
    fn probed(identity: &str) -> Result<String, Rejection> {
        let record =
            format!(r#"{{"eventVersion":"1.09","userIdentity":{identity},"eventName":"x"}}"#);
        let mut probe = Probe::new();
        probe.parse_into(&record)?;
        Ok(format!("{:?}", probe.take_user_identity()))
    }

    /// The same through `#[derive(Deserialize)]`, marked as the probe
    /// marked its errors before.
    fn derived(identity: &str) -> Result<String, Rejection> {
        fn old<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AwsIdentity<'de>>, D::Error> {
            ObjectOr::<AwsIdentity<'de>>::deserialize(d)
                .map(|identity| identity.0)
                .map_err(|e| {
                    let message = e.to_string();
                    if ["invalid type", "duplicate field"]
                        .iter()
                        .any(|t| message.contains(t))
                    {
                        <D::Error as de::Error>::custom(format!("{USER_IDENTITY_ERROR}{message}"))
                    } else {
                        e
                    }
                })
        }
        #[derive(Deserialize)]
        struct Record<'a> {
            #[serde(borrow, rename = "userIdentity", deserialize_with = "old")]
            user_identity: Option<AwsIdentity<'a>>,
        }
        let record =
            format!(r#"{{"eventVersion":"1.09","userIdentity":{identity},"eventName":"x"}}"#);
        let parsed: Record<'_> =
            sonic_rs::from_str(&record).map_err(|e| classify_sonic_error(&e))?;
        Ok(format!("{:?}", Some(parsed.user_identity)))
    }

    /// A string the parser found no escape in is read as it stands; one
    /// with escapes is unescaped, whichever comes first when a key repeats.
    #[test]
    fn strings_are_unescaped_only_where_the_parser_saw_escapes() {
        let record = r#"{"eventName":"Put\u0042ucket","eventSource":"s3.amazonaws.com","awsRegion":"a\"b","errorCode":"","errorMessage":"x\\","userAgent":"plain","userAgent":"tw\u006f","eventType":"tw\u006f","eventType":"plain","eventID":5}"#;
        let mut probe = Probe::new();
        probe.parse_into(record).unwrap();
        let read = |key| probe.str(key).unwrap();
        assert_eq!(read(Key::EventName), Some(Cow::Owned("PutBucket".into())));
        assert!(matches!(
            read(Key::EventSource),
            Some(Cow::Borrowed("s3.amazonaws.com"))
        ));
        assert_eq!(read(Key::AwsRegion).as_deref(), Some("a\"b"));
        assert_eq!(read(Key::ErrorCode), None);
        assert_eq!(read(Key::ErrorMessage).as_deref(), Some("x\\"));
        assert_eq!(read(Key::UserAgent).as_deref(), Some("two"));
        assert_eq!(read(Key::EventType).as_deref(), Some("plain"));
        assert_eq!(read(Key::Category), None);
        assert_eq!(
            probe.str(Key::EventId).unwrap_err().0,
            ErrorReason::WrongType
        );
    }

    /// The in-place reading of `userIdentity` gives what the derived one
    /// gave: the same fields, and the same errors, word for word.
    #[test]
    fn user_identity_read_in_place_is_what_derive_read() {
        let cases = [
            r#"{"type":"AssumedRole","principalId":"AROA:s","arn":"arn:aws:sts::1:assumed-role/r/s","accountId":"1","accessKeyId":"ASIA","userName":"u","invokedBy":"x.amazonaws.com","identityProvider":"p","sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::1:role/r","userName":"r","principalId":"AROA"},"attributes":{"creationDate":"2025-01-01T00:00:00Z","mfaAuthenticated":"true"},"webIdFederationData":{}},"onBehalfOf":{"userId":"u1","identityStoreArn":"a"}}"#,
            r#"{}"#,
            r#"{ "type" : "Root" , "arn" : null , "extra" : [1, {"a": [true]}], "userName": "a\u0041\"b" }"#,
            r#"{"type":"IAMUser","sessionContext":null,"onBehalfOf":null}"#,
            r#""root""#,
            r#"null"#,
            r#"[1,2,{"a":3}]"#,
            r#"5"#,
            r#"true"#,
            r#"{"type":5}"#,
            r#"{"arn":{"x":1}}"#,
            r#"{"arn":["a"]}"#,
            r#"{"type":"A","type":"B"}"#,
            r#"{"sessionContext":{},"sessionContext":{}}"#,
            r#"{"sessionContext":"s"}"#,
            r#"{"sessionContext":{"sessionIssuer":{"type":1}}}"#,
            r#"{"sessionContext":{"attributes":{"mfaAuthenticated":"maybe"}}}"#,
            r#"{"onBehalfOf":{"userId":7}}"#,
            r#"{"type":IAMUser}"#,
            r#"{"type":"IAMUser""#,
            r#"{"type":"IAMUser",}"#,
        ];
        for identity in cases {
            assert_eq!(probed(identity), derived(identity), "{identity}");
        }
        // The cases reach every outcome.
        assert!(
            probed(cases[0])
                .unwrap()
                .contains("mfa_authenticated: BoolLike(Some(true))")
        );
        assert!(probed(cases[4]).unwrap().contains("Some(None)"));
        assert_eq!(probed(cases[12]).unwrap_err().0, ErrorReason::WrongType);
        assert_eq!(probed(cases[18]).unwrap_err().0, ErrorReason::Syntax);
    }
}
