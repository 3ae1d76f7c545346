//! The one-pass view of a JSON object that might be any supported shape.
//!
//! Every record or envelope is deserialized once into [`Probe`], a superset of
//! the top-level keys of all shapes: CloudTrail records and their envelopes,
//! Azure Event Hubs / REST / SDK records, GCP `LogEntry` and the Pub/Sub push
//! envelope. Strings borrow from the input; nested objects the normalizers need
//! are typed (`userIdentity`, `protoPayload`), and everything that differs in
//! type between shapes, or is only sometimes needed, is a lazy raw slice
//! ([`sonic_rs::LazyValue`]) that costs a SIMD skip unless it is read. Unknown
//! keys are skipped. Shape detection is then a few `Option` checks.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use sonic_rs::LazyValue;

use super::Str;

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

/// A value that is either a string or an object with a `value` string (Azure
/// REST writes `operationName: {value, localizedValue}`, Event Hubs a string).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StrOrValue<'a> {
    pub value: Option<Str<'a>>,
    /// Whether it was written as an object (`{"value": ...}`).
    pub object: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for StrOrValue<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct WithValue<'a> {
            #[serde(borrow, default)]
            value: Option<Cow<'a, str>>,
        }
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = StrOrValue<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an object with a `value` string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StrOrValue { value: Some(Cow::Borrowed(v)), object: false })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StrOrValue { value: Some(Cow::Owned(v.to_owned())), object: false })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(StrOrValue { value: None, object: false })
            }
            fn visit_map<M: de::MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
                let inner = WithValue::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(StrOrValue { value: inner.value, object: true })
            }
        }
        deserializer.deserialize_any(V(std::marker::PhantomData))
    }
}

/// CloudTrail `userIdentity`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct AwsIdentity<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub principal_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub arn: Option<Str<'a>>,
    #[serde(borrow)]
    pub account_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub access_key_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub user_name: Option<Str<'a>>,
    #[serde(borrow)]
    pub invoked_by: Option<Str<'a>>,
    #[serde(borrow)]
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
    #[serde(borrow, rename = "type")]
    pub kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub arn: Option<Str<'a>>,
    #[serde(borrow)]
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
    #[serde(borrow)]
    pub user_id: Option<Str<'a>>,
}

/// GCP `protoPayload` (an `AuditLog`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct GcpAuditLog<'a> {
    #[serde(borrow, rename = "@type")]
    pub type_url: Option<Str<'a>>,
    #[serde(borrow)]
    pub service_name: Option<Str<'a>>,
    #[serde(borrow)]
    pub method_name: Option<Str<'a>>,
    #[serde(borrow)]
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
    #[serde(borrow)]
    pub principal_email: Option<Str<'a>>,
    #[serde(borrow)]
    pub principal_subject: Option<Str<'a>>,
    #[serde(borrow)]
    pub service_account_key_name: Option<Str<'a>>,
    #[serde(borrow)]
    pub service_account_delegation_info: Option<LazyValue<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct GcpRequestMetadata<'a> {
    #[serde(borrow)]
    pub caller_ip: Option<Str<'a>>,
    #[serde(borrow)]
    pub caller_supplied_user_agent: Option<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct GcpStatus<'a> {
    pub code: Option<i64>,
    #[serde(borrow)]
    pub message: Option<Str<'a>>,
}

/// `resource` of a GCP `LogEntry`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct GcpMonitoredResource<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Option<Str<'a>>,
    #[serde(borrow)]
    pub labels: Option<GcpResourceLabels<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct GcpResourceLabels<'a> {
    #[serde(borrow)]
    pub project_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub location: Option<Str<'a>>,
    #[serde(borrow)]
    pub zone: Option<Str<'a>>,
    #[serde(borrow)]
    pub region: Option<Str<'a>>,
}

/// The superset of top-level keys. See the module docs.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Probe<'a> {
    // ---- envelopes ----
    /// CloudTrail S3 object.
    #[serde(borrow, rename = "Records")]
    pub records_aws: Option<LazyValue<'a>>,
    /// Azure Event Hubs batch / storage blob.
    #[serde(borrow, rename = "records")]
    pub records_azure: Option<LazyValue<'a>>,
    /// CloudWatch Logs subscription payload.
    #[serde(borrow, rename = "logEvents")]
    pub log_events: Option<LazyValue<'a>>,
    /// LookupEvents result item: the record as a JSON string.
    #[serde(borrow, rename = "CloudTrailEvent")]
    pub cloudtrail_event: Option<LazyValue<'a>>,
    /// LookupEvents response: `{"Events":[...], "NextToken": ...}`.
    #[serde(borrow, rename = "Events")]
    pub lookup_events: Option<LazyValue<'a>>,
    /// EventBridge event.
    #[serde(borrow, rename = "detail-type")]
    pub detail_type: Option<Str<'a>>,
    #[serde(borrow)]
    pub detail: Option<LazyValue<'a>>,
    /// Pub/Sub push envelope: `{"message":{"data":"<base64>"},"subscription":...}`.
    #[serde(borrow)]
    pub message: Option<LazyValue<'a>>,
    #[serde(borrow)]
    pub subscription: Option<LazyValue<'a>>,

    // ---- CloudTrail ----
    #[serde(borrow, rename = "eventVersion")]
    pub event_version: Option<Str<'a>>,
    #[serde(borrow, rename = "eventTime")]
    pub event_time: Option<Str<'a>>,
    /// Logstash-shipped exports replace `eventTime` with `@timestamp`.
    #[serde(borrow, rename = "@timestamp")]
    pub at_timestamp: Option<Str<'a>>,
    #[serde(borrow, rename = "eventSource")]
    pub event_source: Option<Str<'a>>,
    /// A string in CloudTrail; `{value, localizedValue}` in Azure's REST shape.
    #[serde(borrow, rename = "eventName")]
    pub event_name: Option<StrOrValue<'a>>,
    /// CloudTrail Insights events name the API in `insightDetails`.
    #[serde(borrow, rename = "insightDetails")]
    pub insight_details: Option<LazyValue<'a>>,
    #[serde(borrow, rename = "awsRegion")]
    pub aws_region: Option<Str<'a>>,
    #[serde(borrow, rename = "sourceIPAddress")]
    pub source_ip_address: Option<Str<'a>>,
    #[serde(borrow, rename = "userAgent")]
    pub user_agent: Option<Str<'a>>,
    #[serde(borrow, rename = "errorCode")]
    pub error_code: Option<Str<'a>>,
    #[serde(borrow, rename = "errorMessage")]
    pub error_message: Option<Str<'a>>,
    #[serde(borrow, rename = "eventID")]
    pub event_id: Option<Str<'a>>,
    #[serde(rename = "readOnly")]
    pub read_only: BoolLike,
    #[serde(borrow, rename = "eventType")]
    pub event_type: Option<Str<'a>>,
    #[serde(borrow, rename = "recipientAccountId")]
    pub recipient_account_id: Option<Str<'a>>,
    #[serde(borrow, rename = "userIdentity")]
    pub user_identity: Option<AwsIdentity<'a>>,
    #[serde(borrow)]
    pub resources: Option<LazyValue<'a>>,
    #[serde(borrow, rename = "additionalEventData")]
    pub additional_event_data: Option<LazyValue<'a>>,
    #[serde(borrow, rename = "responseElements")]
    pub response_elements: Option<LazyValue<'a>>,

    // ---- Azure: Event Hubs / storage shape ----
    #[serde(borrow)]
    pub time: Option<Str<'a>>,
    #[serde(borrow, rename = "resourceId")]
    pub resource_id: Option<Str<'a>>,
    #[serde(borrow, rename = "operationName")]
    pub operation_name: Option<StrOrValue<'a>>,
    #[serde(borrow)]
    pub category: Option<StrOrValue<'a>>,
    #[serde(borrow, rename = "resultType")]
    pub result_type: Option<Str<'a>>,
    #[serde(borrow, rename = "resultSignature")]
    pub result_signature: Option<Str<'a>>,
    #[serde(borrow, rename = "callerIpAddress")]
    pub caller_ip_address: Option<Str<'a>>,
    #[serde(borrow, rename = "correlationId")]
    pub correlation_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub identity: Option<LazyValue<'a>>,
    #[serde(borrow)]
    pub properties: Option<LazyValue<'a>>,
    #[serde(borrow)]
    pub location: Option<Str<'a>>,

    // ---- Azure: REST (camelCase) and SDK (snake_case) shapes ----
    #[serde(borrow, rename = "eventTimestamp")]
    pub event_timestamp: Option<Str<'a>>,
    #[serde(borrow, rename = "event_timestamp")]
    pub event_timestamp_snake: Option<Str<'a>>,
    #[serde(borrow, rename = "operation_name")]
    pub operation_name_snake: Option<StrOrValue<'a>>,
    #[serde(borrow, rename = "eventDataId")]
    pub event_data_id: Option<Str<'a>>,
    #[serde(borrow, rename = "event_data_id")]
    pub event_data_id_snake: Option<Str<'a>>,
    #[serde(borrow, rename = "correlation_id")]
    pub correlation_id_snake: Option<Str<'a>>,
    #[serde(borrow, rename = "resource_id")]
    pub resource_id_snake: Option<Str<'a>>,
    #[serde(borrow, rename = "subscriptionId")]
    pub subscription_id: Option<Str<'a>>,
    #[serde(borrow, rename = "subscription_id")]
    pub subscription_id_snake: Option<Str<'a>>,
    #[serde(borrow, rename = "resourceProviderName")]
    pub resource_provider_name: Option<StrOrValue<'a>>,
    #[serde(borrow, rename = "resource_provider_name")]
    pub resource_provider_name_snake: Option<StrOrValue<'a>>,
    #[serde(borrow)]
    pub caller: Option<Str<'a>>,
    #[serde(borrow)]
    pub claims: Option<LazyValue<'a>>,
    #[serde(borrow)]
    pub authorization: Option<LazyValue<'a>>,
    #[serde(borrow)]
    pub status: Option<StrOrValue<'a>>,
    #[serde(borrow, rename = "subStatus")]
    pub sub_status: Option<StrOrValue<'a>>,
    #[serde(borrow, rename = "httpRequest")]
    pub http_request: Option<LazyValue<'a>>,
    #[serde(borrow, rename = "http_request")]
    pub http_request_snake: Option<LazyValue<'a>>,

    // ---- GCP LogEntry ----
    #[serde(borrow, rename = "protoPayload")]
    pub proto_payload: Option<GcpAuditLog<'a>>,
    #[serde(borrow, rename = "jsonPayload")]
    pub json_payload: Option<LazyValue<'a>>,
    #[serde(borrow, rename = "textPayload")]
    pub text_payload: Option<LazyValue<'a>>,
    #[serde(borrow, rename = "logName")]
    pub log_name: Option<Str<'a>>,
    #[serde(borrow)]
    pub timestamp: Option<Str<'a>>,
    #[serde(borrow, rename = "receiveTimestamp")]
    pub receive_timestamp: Option<Str<'a>>,
    #[serde(borrow, rename = "insertId")]
    pub insert_id: Option<Str<'a>>,
    #[serde(borrow)]
    pub resource: Option<GcpMonitoredResource<'a>>,
}
