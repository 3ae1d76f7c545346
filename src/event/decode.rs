//! From bytes to [`AuditEvent`]s: decompression, framing, envelope unwrapping,
//! shape detection, input limits and typed errors.
//!
//! # Pipeline for one payload (a Kafka message value, a file's contents)
//! 1. **Decompress** if the bytes start with the gzip magic (multi-member gzip,
//!    bounded by [`Limits::max_document_bytes`]). A plain payload over that
//!    limit is refused unless it opens as JSON Lines, whose limit holds per
//!    line.
//! 2. **Validate UTF-8** (SIMD). An invalid document is re-split by lines so the
//!    good lines of a JSON Lines file still come out.
//! 3. **Frame**: one JSON document (an object, or an array of records or
//!    envelopes) or JSON Lines. A payload is JSON Lines when it has several lines
//!    and its first line is a complete JSON value on its own; a pretty-printed
//!    document never is. A JSON Lines file whose first line is truncated is still
//!    recognized by its second line.
//! 4. **Probe** each object once (the probe module's `Probe`) and dispatch on the
//!    keys present: `Records` (CloudTrail S3 object), `records` (Event Hubs
//!    batch), `logEvents` (CloudWatch Logs subscription), `Events` /
//!    `CloudTrailEvent` (LookupEvents), `detail-type` (EventBridge), `message.data`
//!    (Pub/Sub push), `protoPayload` (GCP), `eventSource`/`eventName` (CloudTrail),
//!    `operationName` (Azure). Envelopes recurse at most [`MAX_ENVELOPE_NESTING`]
//!    levels.
//! 5. **Normalize** per cloud.
//!
//! Every record yields exactly one [`Decoded`]: an event, or a [`ParseError`]
//! with an [`ErrorReason`] and the record's raw bytes (for the dead-letter
//! destination). A bad record never hides the good ones around it, and no input
//! panics (a fuzz target in `fuzz/` checks this).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sonic_rs::JsonValueTrait;

use super::probe::{Key, Probe, classify_sonic_error};
use super::{AuditEvent, Cloud, Shape, aws, azure, gcp};

/// Envelopes nest at most this deep (LookupEvents response → item → record).
pub const MAX_ENVELOPE_NESTING: u8 = 3;

/// Input limits. Anything beyond them is an error with a reason, not a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest single record, in bytes (CloudTrail caps records at 256 KiB;
    /// Azure and GCP stay well below 1 MiB).
    pub max_record_bytes: usize,
    /// Largest payload or file after decompression, in bytes.
    pub max_document_bytes: usize,
    /// Deepest JSON nesting accepted.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record_bytes: 1 << 20,
            max_document_bytes: 512 << 20,
            max_depth: 64,
        }
    }
}

/// Which log a source carries. `Auto` detects per record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatHint {
    #[default]
    Auto,
    #[serde(alias = "aws")]
    CloudTrail,
    Azure,
    Gcp,
}

impl FormatHint {
    fn allows(self, cloud: Cloud) -> bool {
        match self {
            FormatHint::Auto => true,
            FormatHint::CloudTrail => cloud == Cloud::Aws,
            FormatHint::Azure => cloud == Cloud::Azure,
            FormatHint::Gcp => cloud == Cloud::Gcp,
        }
    }
}

impl FromStr for FormatHint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(FormatHint::Auto),
            "cloudtrail" | "aws" => Ok(FormatHint::CloudTrail),
            "azure" => Ok(FormatHint::Azure),
            "gcp" => Ok(FormatHint::Gcp),
            other => Err(format!(
                "unknown format `{other}` (expected auto, cloudtrail, azure or gcp)"
            )),
        }
    }
}

impl fmt::Display for FormatHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FormatHint::Auto => "auto",
            FormatHint::CloudTrail => "cloudtrail",
            FormatHint::Azure => "azure",
            FormatHint::Gcp => "gcp",
        })
    }
}

/// Why a record was rejected. Counted per reason; the label is stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorReason {
    /// The bytes are not UTF-8.
    InvalidUtf8,
    /// A record or document over the size limit.
    TooLarge,
    /// Nesting deeper than the limit.
    TooDeep,
    /// The JSON ends early.
    Truncated,
    /// Not valid JSON.
    Syntax,
    /// A known field has the wrong JSON type.
    WrongType,
    /// A field the shape requires is absent.
    MissingField,
    /// A timestamp that does not parse.
    BadTimestamp,
    /// Valid JSON of no known audit-log shape.
    UnknownFormat,
    /// A recognized log entry that is not an audit record (EventBridge events not
    /// from CloudTrail, GCP entries with `jsonPayload`/`textPayload`).
    NotAuditLog,
    /// The record is from another cloud than the source's format hint says.
    FormatMismatch,
    /// An envelope whose wrapping is malformed (non-array `Records`, a
    /// `CloudTrailEvent` that is not a string, bad base64, too much nesting).
    BadEnvelope,
    /// The gzip stream is corrupt.
    Decompression,
    /// An empty payload.
    Empty,
}

impl ErrorReason {
    pub const ALL: [ErrorReason; 14] = [
        ErrorReason::InvalidUtf8,
        ErrorReason::TooLarge,
        ErrorReason::TooDeep,
        ErrorReason::Truncated,
        ErrorReason::Syntax,
        ErrorReason::WrongType,
        ErrorReason::MissingField,
        ErrorReason::BadTimestamp,
        ErrorReason::UnknownFormat,
        ErrorReason::NotAuditLog,
        ErrorReason::FormatMismatch,
        ErrorReason::BadEnvelope,
        ErrorReason::Decompression,
        ErrorReason::Empty,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::InvalidUtf8 => "invalid_utf8",
            ErrorReason::TooLarge => "too_large",
            ErrorReason::TooDeep => "too_deep",
            ErrorReason::Truncated => "truncated",
            ErrorReason::Syntax => "syntax",
            ErrorReason::WrongType => "wrong_type",
            ErrorReason::MissingField => "missing_field",
            ErrorReason::BadTimestamp => "bad_timestamp",
            ErrorReason::UnknownFormat => "unknown_format",
            ErrorReason::NotAuditLog => "not_audit_log",
            ErrorReason::FormatMismatch => "format_mismatch",
            ErrorReason::BadEnvelope => "bad_envelope",
            ErrorReason::Decompression => "decompression",
            ErrorReason::Empty => "empty",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected record: why, in words, and its raw bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct ParseError<'a> {
    pub reason: ErrorReason,
    pub detail: String,
    /// The record's bytes as received (for the dead-letter destination). For a
    /// record unwrapped from a JSON string, the unescaped record.
    pub raw: &'a [u8],
}

/// Where in a payload a record sits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct RecordLocation {
    /// 1-based line of the payload the record (or its envelope) starts on.
    pub line: u64,
    /// 0-based position inside its envelope; 0 for a bare record.
    pub index: u32,
}

/// One outcome per record.
#[derive(Debug)]
pub struct Decoded<'a> {
    pub location: RecordLocation,
    pub result: Result<AuditEvent<'a>, ParseError<'a>>,
}

/// Counts of decoded events and of errors per reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub events: u64,
    errors: [u64; ErrorReason::ALL.len()],
}

impl DecodeStats {
    pub fn record(&mut self, decoded: &Decoded<'_>) {
        match &decoded.result {
            Ok(_) => self.events += 1,
            Err(e) => self.errors[e.reason.index()] += 1,
        }
    }

    pub fn errors(&self, reason: ErrorReason) -> u64 {
        self.errors[reason.index()]
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Non-zero error counts, by reason.
    pub fn error_counts(&self) -> impl Iterator<Item = (ErrorReason, u64)> + '_ {
        ErrorReason::ALL
            .iter()
            .map(|r| (*r, self.errors[r.index()]))
            .filter(|(_, n)| *n > 0)
    }

    pub fn merge(&mut self, other: &DecodeStats) {
        self.events += other.events;
        for (a, b) in self.errors.iter_mut().zip(other.errors.iter()) {
            *a += b;
        }
    }
}

/// Decodes payloads into events. Cheap to clone; holds no state between calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct Decoder {
    pub hint: FormatHint,
    pub limits: Limits,
}

/// An error before the record could be normalized: reason and detail.
pub(crate) type Rejection = (ErrorReason, String);

pub(crate) fn reject<T>(reason: ErrorReason, detail: impl Into<String>) -> Result<T, Rejection> {
    Err((reason, detail.into()))
}

struct Ctx<'s, F> {
    decoder: &'s Decoder,
    sink: &'s mut F,
}

impl Decoder {
    pub fn new(hint: FormatHint, limits: Limits) -> Self {
        Decoder { hint, limits }
    }

    /// A gzipped payload inflated (within the document size limit), so that
    /// the events [`Decoder::decode`] finds in it can borrow from a buffer
    /// the caller keeps; `None` for a payload that is not gzip or does not
    /// inflate (decoding it reports why).
    pub fn inflate_gzip(&self, payload: &[u8]) -> Option<Vec<u8>> {
        if payload.starts_with(&GZIP_MAGIC) {
            inflate(payload, self.limits.max_document_bytes).ok()
        } else {
            None
        }
    }

    /// Decodes one payload and calls `sink` once per record found in it.
    pub fn decode<F>(&self, payload: &[u8], sink: &mut F)
    where
        F: FnMut(Decoded<'_>),
    {
        let mut ctx = Ctx {
            decoder: self,
            sink,
        };
        ctx.payload(payload);
    }

    /// [`Decoder::decode`] for a payload already known to be UTF-8 (a caller
    /// that checked it for its own use need not pay twice).
    pub fn decode_str<F>(&self, text: &str, sink: &mut F)
    where
        F: FnMut(Decoded<'_>),
    {
        Ctx {
            decoder: self,
            sink,
        }
        .payload_str(text);
    }

    /// Decodes a run of whole JSON Lines cut from a larger text at line ends
    /// (a piece of a big export read a piece at a time), numbering them from
    /// `first_line`. Framing is not guessed: every non-blank line is a record,
    /// as in a JSON Lines payload; the document limit holds per line.
    pub fn decode_lines<F>(&self, bytes: &[u8], first_line: u64, sink: &mut F)
    where
        F: FnMut(Decoded<'_>),
    {
        match simdutf8::basic::from_utf8(bytes) {
            Ok(text) => self.decode_str_lines(text, first_line, sink),
            Err(_) => Ctx {
                decoder: self,
                sink,
            }
            .invalid_utf8_lines(bytes, first_line),
        }
    }

    /// [`Decoder::decode_lines`] for text already known to be UTF-8 (a
    /// caller that checked it for its own use need not pay twice).
    pub fn decode_str_lines<F>(&self, text: &str, first_line: u64, sink: &mut F)
    where
        F: FnMut(Decoded<'_>),
    {
        let mut ctx = Ctx {
            decoder: self,
            sink,
        };
        ctx.json_lines(text, first_line);
    }

    /// Decodes a payload and returns its events detached from it, with the
    /// errors' reasons; convenient for tests and small inputs.
    pub fn decode_owned(
        &self,
        payload: &[u8],
    ) -> Vec<Result<AuditEvent<'static>, (ErrorReason, String)>> {
        let mut out = Vec::new();
        self.decode(payload, &mut |d: Decoded<'_>| {
            out.push(
                d.result
                    .map(|e| e.into_owned())
                    .map_err(|e| (e.reason, e.detail)),
            );
        });
        out
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

impl<F> Ctx<'_, F>
where
    F: FnMut(Decoded<'_>),
{
    fn limits(&self) -> &Limits {
        &self.decoder.limits
    }

    fn emit_error(
        &mut self,
        location: RecordLocation,
        reason: ErrorReason,
        detail: String,
        raw: &[u8],
    ) {
        (self.sink)(Decoded {
            location,
            result: Err(ParseError {
                reason,
                detail,
                raw,
            }),
        });
    }

    fn payload(&mut self, payload: &[u8]) {
        let top = RecordLocation { line: 1, index: 0 };
        if payload.starts_with(&GZIP_MAGIC) {
            match inflate(payload, self.limits().max_document_bytes) {
                Ok(inflated) => self.bytes(&inflated),
                Err((reason, detail)) => self.emit_error(top, reason, detail, payload),
            }
            return;
        }
        if !self.too_large(payload) {
            self.bytes(payload);
        }
    }

    /// [`Ctx::payload`] for text known to be UTF-8 (so not gzip).
    fn payload_str(&mut self, text: &str) {
        if !self.too_large(text.as_bytes()) {
            self.text(text);
        }
    }

    /// Whether a payload is over the document limit (reported if so). JSON
    /// Lines is a sequence of documents: the limit holds for each line, not
    /// for a whole export file.
    fn too_large(&mut self, payload: &[u8]) -> bool {
        let limit = self.limits().max_document_bytes;
        if payload.len() <= limit || starts_as_json_lines(payload) {
            return false;
        }
        let detail = format!(
            "payload of {} bytes exceeds the limit of {limit} bytes",
            payload.len()
        );
        let top = RecordLocation { line: 1, index: 0 };
        self.emit_error(top, ErrorReason::TooLarge, detail, payload);
        true
    }

    fn bytes(&mut self, bytes: &[u8]) {
        match simdutf8::basic::from_utf8(bytes) {
            Ok(text) => self.text(text),
            Err(_) => self.invalid_utf8_lines(bytes, 1),
        }
    }

    /// An invalid document: handle it line by line so good lines survive.
    fn invalid_utf8_lines(&mut self, bytes: &[u8], first_line: u64) {
        for (line_no, line) in lines(bytes) {
            let location = RecordLocation {
                line: first_line - 1 + line_no,
                index: 0,
            };
            match simdutf8::compat::from_utf8(line) {
                Ok(text) => self.line(text, location),
                Err(e) => {
                    let detail = format!("invalid UTF-8 at byte {} of the record", e.valid_up_to());
                    self.emit_error(location, ErrorReason::InvalidUtf8, detail, line);
                }
            }
        }
    }

    /// Each non-blank line a record, numbered from `first_line`.
    fn json_lines(&mut self, text: &str, first_line: u64) {
        for (line_no, line) in str_lines(text) {
            let location = RecordLocation {
                line: first_line - 1 + line_no,
                index: 0,
            };
            self.line(line, location);
        }
    }

    /// One line of JSON Lines: a document, within the limit per line.
    fn line(&mut self, line: &str, location: RecordLocation) {
        if line.len() > self.limits().max_document_bytes {
            let detail = format!(
                "line of {} bytes exceeds the limit of {} bytes",
                line.len(),
                self.limits().max_document_bytes
            );
            self.emit_error(location, ErrorReason::TooLarge, detail, line.as_bytes());
            return;
        }
        self.document(line, location);
    }

    fn text(&mut self, text: &str) {
        if is_json_lines(text) {
            self.json_lines(text, 1);
        } else {
            let leading_lines = text[..text.len() - text.trim_start().len()]
                .bytes()
                .filter(|b| *b == b'\n')
                .count() as u64;
            let location = RecordLocation {
                line: 1 + leading_lines,
                index: 0,
            };
            if text.trim().is_empty() {
                self.emit_error(
                    location,
                    ErrorReason::Empty,
                    "empty payload".into(),
                    text.as_bytes(),
                );
                return;
            }
            self.document(text, location);
        }
    }

    /// One JSON document: an object (record or envelope) or an array of them.
    fn document(&mut self, text: &str, location: RecordLocation) {
        if let Err((reason, detail)) = check_depth(text.as_bytes(), self.limits().max_depth) {
            self.emit_error(location, reason, detail, text.as_bytes());
            return;
        }
        match text.trim_start().as_bytes().first() {
            Some(b'{') => {
                if let Some((key, records, shape)) = records_envelope(text) {
                    // A CloudTrail S3 object or an Event Hubs batch, walked
                    // without probing the envelope first (a whole extra pass
                    // over the file or message).
                    if let Some(end) = self.array(records, Some(shape), location, 0)
                        && let Err(detail) = rest_of_envelope(key, text, records, end)
                    {
                        self.emit_error(location, ErrorReason::Syntax, detail, text.as_bytes());
                    }
                } else {
                    self.value(text, None, location, 0);
                }
            }
            Some(b'[') => {
                if self.array(text, None, location, 0).is_some() {
                    // The walk stops at the closing bracket; what follows it must be blank.
                    if let Err(e) = sonic_rs::from_str::<serde::de::IgnoredAny>(text) {
                        let detail = format!("after the array: {e}");
                        self.emit_error(location, ErrorReason::Syntax, detail, text.as_bytes());
                    }
                }
            }
            Some(_) => {
                let reason = match sonic_rs::from_str::<serde::de::IgnoredAny>(text) {
                    Ok(_) => ErrorReason::UnknownFormat,
                    Err(e) => classify_sonic_error(&e).0,
                };
                self.emit_error(
                    location,
                    reason,
                    "expected a JSON object or array of audit records".into(),
                    text.as_bytes(),
                );
            }
            None => self.emit_error(
                location,
                ErrorReason::Empty,
                "empty record".into(),
                text.as_bytes(),
            ),
        }
    }

    /// Each element of a JSON array, as a record of the given envelope shape.
    /// Returns where the last element ends in `text` (just after the `[`
    /// when there is none) if the walk reached the end of the array.
    ///
    /// Each object element is read once, where it stands ([`Ctx::element`]).
    /// The first element that does not read that way (one that is not an
    /// object, does not parse, or whose end is not known), and everything
    /// after it, is walked as before: found whole first, then read.
    fn array(
        &mut self,
        text: &str,
        shape: Option<Shape>,
        location: RecordLocation,
        nesting: u8,
    ) -> Option<usize> {
        let bytes = text.as_bytes();
        let skip_space = |at: usize| {
            bytes[at..]
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .map_or(bytes.len(), |n| at + n)
        };
        let open = skip_space(0);
        if bytes.get(open) != Some(&b'[') {
            return self.array_walk(text, shape, location, nesting, 0);
        }
        let (mut at, mut end) = (skip_space(open + 1), open + 1);
        let mut index = 0u32;
        loop {
            match bytes.get(at) {
                Some(b']') => return Some(end),
                Some(b',') if index > 0 => at = skip_space(at + 1),
                _ if index == 0 => {}
                // Not a `,` or `]` after an element: the walk reports it.
                _ => return self.array_walk(text, shape, location, nesting, index),
            }
            // Not an object: the walk reports it.
            if bytes.get(at) != Some(&b'{') {
                return self.array_walk(text, shape, location, nesting, index);
            }
            let element_location = RecordLocation {
                line: location.line,
                index,
            };
            match self.element(&text[at..], shape, element_location, nesting + 1) {
                Some(len) => {
                    end = at + len;
                    at = skip_space(end);
                    index += 1;
                }
                None => return self.array_walk(text, shape, location, nesting, index),
            }
        }
    }

    /// Reads the object at the start of `text` as a record and returns its
    /// length; `None`, having emitted nothing, when it does not read (see
    /// [`Probe::parse_prefix`]). A record whose end the read does not tell
    /// (its last key is `userIdentity`: so in every record of an archive
    /// written with sorted keys) is skipped over once more to find it.
    fn element(
        &mut self,
        text: &str,
        shape: Option<Shape>,
        location: RecordLocation,
        nesting: u8,
    ) -> Option<usize> {
        if nesting > MAX_ENVELOPE_NESTING {
            return None;
        }
        let mut probe = Probe::new();
        let len = match probe.parse_prefix(text)? {
            Some(len) => len,
            None => first_value_len(text)?,
        };
        let record = &text[..len];
        if let Err((reason, detail)) = self.dispatch(record, &mut probe, shape, location, nesting) {
            self.emit_error(location, reason, detail, record.as_bytes());
        }
        Some(len)
    }

    /// [`Ctx::array`] the way that finds each element whole before reading
    /// it, from element `from` on (those before it were read already).
    fn array_walk(
        &mut self,
        text: &str,
        shape: Option<Shape>,
        location: RecordLocation,
        nesting: u8,
        from: u32,
    ) -> Option<usize> {
        let mut end = text.find('[').map_or(0, |at| at + 1);
        for (index, element) in (0u32..).zip(sonic_rs::to_array_iter(text)) {
            let element_location = RecordLocation {
                line: location.line,
                index,
            };
            match element {
                Ok(element) => {
                    let raw = element.as_raw_str();
                    end =
                        (raw.as_ptr() as usize + raw.len()).saturating_sub(text.as_ptr() as usize);
                    if index < from {
                        continue;
                    }
                    if raw.trim_start().starts_with('{') {
                        self.value(raw, shape, element_location, nesting + 1);
                    } else {
                        self.emit_error(
                            element_location,
                            ErrorReason::BadEnvelope,
                            "array element is not a JSON object".into(),
                            raw.as_bytes(),
                        );
                    }
                }
                Err(e) => {
                    let reason = if e.is_eof() {
                        ErrorReason::Truncated
                    } else {
                        ErrorReason::Syntax
                    };
                    let detail = format!("array element {index}: {e}");
                    self.emit_error(element_location, reason, detail, text.as_bytes());
                    return None;
                }
            }
        }
        Some(end.min(text.len()))
    }

    /// A record held as a JSON string (CloudWatch Logs, LookupEvents, Pub/Sub).
    fn embedded(&mut self, text: &str, shape: Shape, location: RecordLocation, nesting: u8) {
        if let Err((reason, detail)) = check_depth(text.as_bytes(), self.limits().max_depth) {
            self.emit_error(location, reason, detail, text.as_bytes());
            return;
        }
        self.value(text, Some(shape), location, nesting + 1);
    }

    /// One JSON object: probe it, then unwrap it or normalize it.
    fn value(&mut self, text: &str, shape: Option<Shape>, location: RecordLocation, nesting: u8) {
        if nesting > MAX_ENVELOPE_NESTING {
            let detail = format!("envelopes nested more than {MAX_ENVELOPE_NESTING} deep");
            self.emit_error(location, ErrorReason::BadEnvelope, detail, text.as_bytes());
            return;
        }
        let mut probe = Probe::new();
        match probe.parse_into(text) {
            Ok(()) => {}
            Err((reason, detail)) => {
                if reason == ErrorReason::Truncated
                    && let Some((records, shape)) = truncated_envelope_records(text)
                {
                    // A cut-off archive object: keep the records before the cut;
                    // the array walk reports the truncation itself.
                    let _ = self.array(records, Some(shape), location, nesting);
                    return;
                }
                self.emit_error(location, reason, detail, text.as_bytes());
                return;
            }
        };
        if let Err((reason, detail)) = self.dispatch(text, &mut probe, shape, location, nesting) {
            self.emit_error(location, reason, detail, text.as_bytes());
        }
    }

    fn dispatch<'t>(
        &mut self,
        text: &'t str,
        probe: &mut Probe<'t>,
        shape: Option<Shape>,
        location: RecordLocation,
        nesting: u8,
    ) -> Result<(), Rejection> {
        // Envelopes first: their keys never appear in records.
        if let Some(records) = probe.array(Key::Records).map_err(as_bad_envelope)? {
            let _ = self.array(records, Some(Shape::CloudTrailS3Object), location, nesting);
            return Ok(());
        }
        if let Some(records) = probe.array(Key::RecordsAzure).map_err(as_bad_envelope)? {
            let _ = self.array(records, Some(Shape::AzureEventHubsBatch), location, nesting);
            return Ok(());
        }
        if let Some(log_events) = probe.array(Key::LogEvents).map_err(as_bad_envelope)? {
            self.cloudwatch_log_events(log_events, location, nesting);
            return Ok(());
        }
        if let Some(events) = probe.array(Key::Events).map_err(as_bad_envelope)? {
            let _ = self.array(
                events,
                Some(Shape::CloudTrailLookupEvents),
                location,
                nesting,
            );
            return Ok(());
        }
        if let Some(raw) = probe.raw(Key::CloudTrailEvent) {
            let Some(record) = raw.starts_with('"').then(|| json_string(raw)).flatten() else {
                return reject(
                    ErrorReason::BadEnvelope,
                    "`CloudTrailEvent` is not a string holding a record",
                );
            };
            let record = record.into_owned();
            self.embedded(&record, Shape::CloudTrailLookupEvents, location, nesting);
            return Ok(());
        }
        if let Some(detail_type) = probe.str(Key::DetailType)? {
            if !is_cloudtrail_detail_type(&detail_type) {
                return reject(
                    ErrorReason::NotAuditLog,
                    format!(
                        "EventBridge event of detail-type `{detail_type}` is not a CloudTrail record"
                    ),
                );
            }
            let Some(detail) = probe.raw(Key::Detail).filter(|d| d.starts_with('{')) else {
                return reject(
                    ErrorReason::BadEnvelope,
                    "EventBridge event has no `detail` object",
                );
            };
            self.value(
                detail,
                Some(Shape::CloudTrailEventBridge),
                location,
                nesting + 1,
            );
            return Ok(());
        }
        if let Some(message) = probe.object(Key::Message).ok().flatten()
            && !probe.has(Key::ProtoPayload)
            && (probe.has(Key::Subscription) || get_str(message, "data").is_some())
        {
            let entry = pubsub_data(message)?;
            self.embedded(&entry, Shape::GcpPubSubPush, location, nesting);
            return Ok(());
        }
        // Records.
        let (cloud, default_shape) = if probe.has(Key::ProtoPayload) {
            (Cloud::Gcp, Shape::GcpLogEntry)
        } else if probe.has(Key::JsonPayload) || probe.has(Key::TextPayload) {
            return reject(
                ErrorReason::NotAuditLog,
                "log entry with jsonPayload/textPayload is not a Cloud Audit Logs entry",
            );
        } else if probe.has(Key::EventSource)
            || probe.has(Key::EventVersion)
            || (probe.has(Key::EventName) && !probe.is_object(Key::EventName))
        {
            (Cloud::Aws, Shape::CloudTrailRecord)
        } else if probe.has(Key::OperationName)
            || probe.has(Key::OperationNameSnake)
            || (probe.has(Key::Authorization)
                && (probe.has(Key::Caller) || probe.has(Key::EventTimestamp)))
        {
            let rest = probe.is_object(Key::OperationName)
                || probe.has(Key::OperationNameSnake)
                || probe.has(Key::EventTimestamp)
                || probe.has(Key::Caller);
            (
                Cloud::Azure,
                if rest {
                    Shape::AzureRest
                } else {
                    Shape::AzureRecord
                },
            )
        } else {
            return reject(
                ErrorReason::UnknownFormat,
                "JSON object of no known audit-log shape (no eventSource/eventName, operationName or protoPayload)",
            );
        };
        let shape = match shape {
            Some(envelope) if envelope.cloud() != cloud => {
                return reject(
                    ErrorReason::FormatMismatch,
                    format!("{cloud} record inside a {} envelope", envelope.cloud()),
                );
            }
            // The REST shape is recognized whatever envelope it came in.
            Some(_) if default_shape == Shape::AzureRest => default_shape,
            Some(envelope) => envelope,
            None => default_shape,
        };
        if !self.decoder.hint.allows(cloud) {
            return reject(
                ErrorReason::FormatMismatch,
                format!(
                    "{cloud} record on a source declared as {}",
                    self.decoder.hint
                ),
            );
        }
        if text.len() > self.limits().max_record_bytes {
            return reject(
                ErrorReason::TooLarge,
                format!(
                    "record of {} bytes exceeds the limit of {} bytes",
                    text.len(),
                    self.limits().max_record_bytes
                ),
            );
        }
        let event = match cloud {
            Cloud::Aws => aws::normalize(probe, text, shape)?,
            Cloud::Azure => azure::normalize(probe, text, shape)?,
            Cloud::Gcp => gcp::normalize(probe, text, shape)?,
        };
        (self.sink)(Decoded {
            location,
            result: Ok(event),
        });
        Ok(())
    }

    fn cloudwatch_log_events(&mut self, log_events: &str, location: RecordLocation, nesting: u8) {
        for (index, element) in (0u32..).zip(sonic_rs::to_array_iter(log_events)) {
            let element_location = RecordLocation {
                line: location.line,
                index,
            };
            let element = match element {
                Ok(element) => element,
                Err(e) => {
                    let reason = if e.is_eof() {
                        ErrorReason::Truncated
                    } else {
                        ErrorReason::Syntax
                    };
                    self.emit_error(
                        element_location,
                        reason,
                        format!("logEvents: {e}"),
                        log_events.as_bytes(),
                    );
                    return;
                }
            };
            let message = element.get("message");
            match message.as_ref().and_then(|m| m.as_str()) {
                Some(record) => {
                    let record = record.to_owned();
                    self.embedded(
                        &record,
                        Shape::CloudTrailCloudWatchLogs,
                        element_location,
                        nesting,
                    );
                }
                None => self.emit_error(
                    element_location,
                    ErrorReason::BadEnvelope,
                    "CloudWatch Logs event without a string `message`".into(),
                    element.as_raw_str().as_bytes(),
                ),
            }
        }
    }
}

/// For a truncated `{"Records":[…` / `{"records":[…` document, the array part
/// and its shape, so the complete records before the cut can still be read.
fn truncated_envelope_records(text: &str) -> Option<(&str, Shape)> {
    let rest = text.trim_start().strip_prefix('{')?.trim_start();
    let (rest, shape) = if let Some(rest) = rest.strip_prefix("\"Records\"") {
        (rest, Shape::CloudTrailS3Object)
    } else {
        (
            rest.strip_prefix("\"records\"")?,
            Shape::AzureEventHubsBatch,
        )
    };
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    rest.starts_with('[').then_some((rest, shape))
}

/// An envelope key of the wrong type is a malformed envelope.
fn as_bad_envelope((_, detail): Rejection) -> Rejection {
    (ErrorReason::BadEnvelope, detail)
}

fn is_cloudtrail_detail_type(detail_type: &str) -> bool {
    matches!(
        detail_type,
        "AWS API Call via CloudTrail"
            | "AWS Console Sign In via CloudTrail"
            | "AWS Console Signin via CloudTrail"
            | "AWS Console Action via CloudTrail"
            | "AWS Service Event via CloudTrail"
    )
}

fn pubsub_data(message: &str) -> Result<String, Rejection> {
    let Some(data) = get_str(message, "data") else {
        return reject(
            ErrorReason::BadEnvelope,
            "Pub/Sub message without a string `data`",
        );
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&*data)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&*data))
        .map_err(|e| {
            (
                ErrorReason::BadEnvelope,
                format!("Pub/Sub `message.data` is not base64: {e}"),
            )
        })?;
    String::from_utf8(bytes).map_err(|e| {
        (
            ErrorReason::InvalidUtf8,
            format!(
                "Pub/Sub `message.data` is not UTF-8 at byte {}",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

fn inflate(payload: &[u8], limit: usize) -> Result<Vec<u8>, Rejection> {
    if let Some(whole) = inflate_whole(payload, limit) {
        return Ok(whole);
    }
    // Inflated straight into the vector's spare capacity (a reader zeroes
    // each chunk of it first), every gzip member in turn as `gunzip` does;
    // zlib checks each member's header, CRC and length.
    let too_large = || {
        reject(
            ErrorReason::TooLarge,
            format!("decompressed payload exceeds the limit of {limit} bytes"),
        )
    };
    let broken = |detail: &dyn std::fmt::Display| -> Rejection {
        (ErrorReason::Decompression, format!("gzip: {detail}"))
    };
    let mut out = Vec::with_capacity(inflated_size_hint(payload).min(limit.saturating_add(1)));
    let mut input = payload;
    loop {
        let mut member = flate2::Decompress::new_gzip(15);
        loop {
            if out.len() > limit {
                return too_large();
            }
            if out.len() == out.capacity() {
                // Never more than one byte past the limit, however the
                // payload claims to inflate.
                let room = (limit + 1).saturating_sub(out.len());
                out.reserve_exact(out.capacity().clamp(64 << 10, 64 << 20).min(room));
            }
            let (read, written) = (member.total_in(), member.total_out());
            let status = member
                .decompress_vec(input, &mut out, flate2::FlushDecompress::None)
                .map_err(|e| broken(&e))?;
            input = input
                .get((member.total_in() - read) as usize..)
                .unwrap_or_default();
            match status {
                flate2::Status::StreamEnd => break,
                // Room left and nothing more to read: the stream broke off.
                _ if input.is_empty() && out.len() < out.capacity() => {
                    return Err(broken(&"unexpected end of file"));
                }
                _ if member.total_in() == read && member.total_out() == written => {
                    return Err(broken(&"no progress"));
                }
                _ => {}
            }
        }
        if out.len() > limit {
            return too_large();
        }
        if input.is_empty() {
            return Ok(out);
        }
    }
}

/// The usual gzip payload in one call: a single member whose trailer
/// gives its size, within the limit, inflated by libdeflate into a buffer
/// of exactly that size (a third less time than zlib's streaming inflate on
/// CloudTrail archives). libdeflate checks the header, the CRC and the
/// size. `None` for anything else (several members, a trailer that does
/// not tell the size, a broken stream), which [`inflate`]'s streaming path
/// then reads, or reports.
fn inflate_whole(payload: &[u8], limit: usize) -> Option<Vec<u8>> {
    let trailer = <[u8; 4]>::try_from(payload.get(payload.len().checked_sub(4)?..)?).ok()?;
    let size = u32::from_le_bytes(trailer) as usize;
    // Deflate cannot expand more than ~1032:1: a bigger claim is a corrupt
    // trailer, not a reason to reserve memory.
    if size == 0 || size > limit || size > payload.len().saturating_mul(1032) {
        return None;
    }
    let decompressor = Decompressor::new()?;
    let mut out = Vec::<u8>::with_capacity(size);
    let (mut read, mut written) = (0usize, 0usize);
    // SAFETY: the decompressor is live (freed only on drop); the input is
    // `payload`, whole; the output is the vector's `size` bytes of spare
    // capacity, which libdeflate writes at most of; both counts are valid
    // places to write to.
    let result = unsafe {
        libdeflate_sys::libdeflate_gzip_decompress_ex(
            decompressor.0,
            payload.as_ptr().cast(),
            payload.len(),
            out.as_mut_ptr().cast(),
            size,
            &mut read,
            &mut written,
        )
    };
    // One member, all of the payload, all of the size it claimed.
    if result != libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS
        || read != payload.len()
        || written != size
    {
        return None;
    }
    // SAFETY: libdeflate wrote `written` (== `size`, the capacity) bytes.
    unsafe { out.set_len(written) };
    Some(out)
}

/// A libdeflate decompressor, freed on drop.
struct Decompressor(*mut libdeflate_sys::libdeflate_decompressor);

impl Decompressor {
    fn new() -> Option<Decompressor> {
        // SAFETY: no arguments; a null result (out of memory) is checked.
        let raw = unsafe { libdeflate_sys::libdeflate_alloc_decompressor() };
        (!raw.is_null()).then_some(Decompressor(raw))
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // SAFETY: allocated by `libdeflate_alloc_decompressor`, freed once.
        unsafe { libdeflate_sys::libdeflate_free_decompressor(self.0) }
    }
}

/// JSON's whitespace (`str::trim` would also take other Unicode spaces).
fn is_json_blank(text: &str) -> bool {
    text.bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

fn trim_json_start(text: &str) -> &str {
    text.trim_start_matches([' ', '\t', '\n', '\r'])
}

fn trim_json_end(text: &str) -> &str {
    text.trim_end_matches([' ', '\t', '\n', '\r'])
}

/// The key, the `[…]` and the envelope shape of a document that is exactly
/// `{"Records": […]}` (a CloudTrail S3 object) or `{"records": […]}` (an
/// Event Hubs batch), by its first and last characters; the array walk
/// checks that the array really ends at the last `]`.
fn records_envelope(text: &str) -> Option<(&'static str, &str, Shape)> {
    let rest = trim_json_start(text).strip_prefix('{')?;
    let rest = trim_json_start(rest);
    let (key, shape, rest) = if let Some(rest) = rest.strip_prefix("\"Records\"") {
        ("Records", Shape::CloudTrailS3Object, rest)
    } else {
        let rest = rest.strip_prefix("\"records\"")?;
        ("records", Shape::AzureEventHubsBatch, rest)
    };
    let rest = trim_json_start(trim_json_start(rest).strip_prefix(':')?);
    let body = trim_json_end(trim_json_end(rest).strip_suffix('}')?);
    (body.starts_with('[') && body.ends_with(']')).then_some((key, body, shape))
}

/// Checks what follows the array of a document walked by
/// [`records_envelope`], the array's last element ending at `end` of
/// `records`: usually the closing `}`; other keys after the array are valid
/// (and ignored, as the probe does), anything else is a syntax error.
fn rest_of_envelope(key: &str, text: &str, records: &str, end: usize) -> Result<(), String> {
    let close = trim_json_start(records.get(end..).unwrap_or_default());
    let at = (close.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
    if !close.starts_with(']') {
        return Err(format!("the `{key}` array does not close"));
    }
    let rest = trim_json_start(text.get(at + 1..).unwrap_or_default());
    if rest.strip_prefix('}').is_some_and(is_json_blank) {
        return Ok(());
    }
    let more = rest
        .strip_prefix(',')
        .map(|keys| format!("{{{keys}"))
        .ok_or_else(|| format!("unexpected content after the `{key}` array"))?;
    sonic_rs::from_str::<serde::de::IgnoredAny>(&more)
        .map(|_| ())
        .map_err(|e| format!("after the `{key}` array: {e}"))
}

/// How large a gzip payload inflates to, to size the output once: growing
/// it by doubling copied the text over and over (audit logs compress 10 to
/// 30 times). The gzip trailer holds the last member's size modulo 2^32; a
/// payload of several members or over 4 GiB grows past it as usual.
fn inflated_size_hint(payload: &[u8]) -> usize {
    let trailer = payload
        .len()
        .checked_sub(4)
        .and_then(|at| payload.get(at..))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, |b| u32::from_le_bytes(b) as usize);
    // A corrupt trailer must not reserve gigabytes for a small payload:
    // deflate cannot expand more than ~1032:1.
    trailer
        .min(payload.len().saturating_mul(1032))
        .max(payload.len().saturating_mul(4))
        .saturating_add(1)
}

/// Non-blank lines with their 1-based numbers; `\r\n` endings are trimmed.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    line_ranges(bytes).map(|(n, range)| (n, bytes.get(range).unwrap_or_default()))
}

/// [`lines`] of a text: lines cut at '\n' (ASCII) are valid UTF-8 already,
/// so they are sliced, not validated again.
fn str_lines(text: &str) -> impl Iterator<Item = (u64, &str)> {
    line_ranges(text.as_bytes()).map(|(n, range)| (n, text.get(range).unwrap_or_default()))
}

/// Where [`lines`] are: numbers and byte ranges, `\r` and blank lines left out.
fn line_ranges(bytes: &[u8]) -> impl Iterator<Item = (u64, std::ops::Range<usize>)> + '_ {
    // memchr finds the line ends (SIMD); a byte-by-byte split was 12% of a replay.
    let mut start = 0usize;
    let mut ends = memchr::memchr_iter(b'\n', bytes).chain(std::iter::once(bytes.len()));
    let mut line_no = 0u64;
    std::iter::from_fn(move || {
        let end = ends.next()?;
        let line = start..end;
        start = end + 1;
        line_no += 1;
        let end = if bytes.get(line.clone())?.ends_with(b"\r") {
            end - 1
        } else {
            end
        };
        Some((line_no, line.start..end))
    })
    .filter(|(_, range)| {
        bytes
            .get(range.clone())
            .is_some_and(|line| !line.iter().all(u8::is_ascii_whitespace))
    })
}

/// See the module docs, step 3.
fn is_json_lines(text: &str) -> bool {
    // The common case, one record on one line, costs one memchr.
    let trimmed = text.trim_end();
    if memchr::memchr(b'\n', trimmed.as_bytes()).is_none() {
        return false;
    }
    let mut non_blank = trimmed
        .split('\n')
        .map(str::trim)
        .filter(|line| !line.is_empty());
    let Some(first) = non_blank.next() else {
        return false;
    };
    let Some(second) = non_blank.next() else {
        return false;
    };
    if is_complete_json_value(first) {
        return true;
    }
    // A truncated first line: it starts a record but does not open a
    // pretty-printed document, and the next line is a whole record.
    first.starts_with('{') && !first.ends_with(['{', '[']) && is_complete_json_value(second)
}

/// Whether a payload too large to be one document opens as JSON Lines,
/// judged by its first lines (as `is_json_lines` judges a whole text).
pub fn starts_as_json_lines(payload: &[u8]) -> bool {
    let end = memchr::memchr_iter(b'\n', payload)
        .nth(2)
        .map_or(payload.len(), |at| at + 1);
    simdutf8::basic::from_utf8(&payload[..end]).is_ok_and(is_json_lines)
}

fn is_complete_json_value(line: &str) -> bool {
    matches!(line.as_bytes().first(), Some(b'{' | b'['))
        && sonic_rs::from_str::<serde::de::IgnoredAny>(line).is_ok()
}

/// Rejects nesting deeper than `max_depth`. The common case (fewer openers in
/// the whole text than the limit) costs one vectorized count.
fn check_depth(bytes: &[u8], max_depth: usize) -> Result<(), Rejection> {
    let openers = bytecount::count(bytes, b'{') + bytecount::count(bytes, b'[');
    if openers > max_depth && super::depth::deeper_than(bytes, max_depth) {
        return reject(
            ErrorReason::TooDeep,
            format!("JSON nesting exceeds the limit of {max_depth} levels"),
        );
    }
    Ok(())
}

/// Hash of identifying fields, for records without a native id.
pub(crate) fn hash_fields(fields: &[Option<&str>]) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for field in fields {
        match field {
            Some(value) => {
                hasher.update(&[1]);
                hasher.update(value.as_bytes());
            }
            None => hasher.update(&[0]),
        }
        hasher.update(&[0xff]);
    }
    hasher.digest()
}

/// A string field of a JSON object, borrowed unless escapes force a copy;
/// `None` when absent, empty or not a string.
pub(crate) fn get_str<'a>(object: &'a str, key: &str) -> Option<Cow<'a, str>> {
    let value = sonic_rs::get_from_str(object, [key]).ok()?;
    match value.as_raw_cow() {
        Cow::Borrowed(raw) => json_string(raw),
        Cow::Owned(raw) => json_string(&raw).map(|s| Cow::Owned(s.into_owned())),
    }
    .filter(|s| !s.is_empty())
}

/// The string a JSON string literal denotes, borrowed when it has no escapes.
pub(crate) fn json_string(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        sonic_rs::from_str::<String>(raw).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// The length of the JSON value at the start of `text` (found with a
/// validating skip, not parsed); `None` when it does not read.
fn first_value_len(text: &str) -> Option<usize> {
    let mut deserializer = sonic_rs::Deserializer::from_str(text);
    let value: sonic_rs::LazyValue<'_> = serde::Deserialize::deserialize(&mut deserializer).ok()?;
    let raw = value.as_raw_str();
    let start = (raw.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
    (start + raw.len() <= text.len()).then_some(start + raw.len())
}

/// Borrows `part` (a sub-slice of `whole`) with `whole`'s lifetime when `whole`
/// is borrowed; copies it otherwise.
pub(crate) fn sub_str<'a>(whole: &Cow<'a, str>, part: &str) -> Cow<'a, str> {
    match whole {
        Cow::Borrowed(w) => {
            let start = part.as_ptr() as usize - w.as_ptr() as usize;
            Cow::Borrowed(&w[start..start + part.len()])
        }
        Cow::Owned(_) => Cow::Owned(part.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_json_lines_and_documents() {
        assert!(is_json_lines("{\"a\":1}\n{\"b\":2}\n"));
        assert!(is_json_lines("{\"a\":1\n{\"b\":2}\n"));
        assert!(!is_json_lines("{\"a\":1}\n"));
        assert!(!is_json_lines(
            "{\n  \"Records\": [\n    {\"a\":1},\n    {\"b\":2}\n  ]\n}\n"
        ));
        assert!(!is_json_lines("{\"records\": [\n{\"a\":1},\n{\"b\":2}\n]}"));
        assert!(!is_json_lines("[\n{\"a\":1},\n{\"b\":2}\n]"));
    }

    #[test]
    fn depth_check_ignores_brackets_in_strings() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(
            check_depth(deep.as_bytes(), 64).unwrap_err().0,
            ErrorReason::TooDeep
        );
        let in_string = format!("{{\"a\":\"{}\"}}", "[".repeat(100));
        assert!(check_depth(in_string.as_bytes(), 64).is_ok());
        let escaped = format!("{{\"a\":\"\\\"{}\"}}", "{".repeat(100));
        assert!(check_depth(escaped.as_bytes(), 64).is_ok());
    }

    const RECORD: &str = r#"{"eventVersion":"1.08","eventTime":"2024-01-01T00:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","awsRegion":"us-east-1","eventID":"e1","recipientAccountId":"111111111111","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/a"}}"#;

    fn reasons(text: &str) -> (usize, Vec<ErrorReason>) {
        let mut events = 0;
        let mut errors = Vec::new();
        Decoder::default().decode(text.as_bytes(), &mut |d: Decoded<'_>| match d.result {
            Ok(_) => events += 1,
            Err(e) => errors.push(e.reason),
        });
        (events, errors)
    }

    #[test]
    fn records_object_is_walked_directly() {
        let doc = format!("{{\"Records\":[{RECORD},{RECORD}]}}");
        assert_eq!(
            records_envelope(&doc).map(|(key, body, shape)| (key, body.len(), shape)),
            Some(("Records", doc.len() - 12, Shape::CloudTrailS3Object))
        );
        assert_eq!(reasons(&doc), (2, vec![]));
        let pretty = format!(" {{\n \"Records\" : [\n  {RECORD} ,\n {RECORD}\n ] \n}}\n");
        assert!(records_envelope(&pretty).is_some());
        assert_eq!(reasons(&pretty), (2, vec![]));
        assert_eq!(reasons("{\"Records\":[ ]}"), (0, vec![]));
        // Other keys after the array are ignored, as the probe does.
        let more = format!("{{\"Records\":[{RECORD}],\"x\":[1]}}");
        assert_eq!(reasons(&more), (1, vec![]));
        let first = format!("{{\"x\":1,\"Records\":[{RECORD}]}}");
        assert!(records_envelope(&first).is_none());
        assert_eq!(reasons(&first), (1, vec![]));
        assert!(records_envelope("{\"Records\":\"[x]\"}").is_none());
        // Event Hubs batches take the same path, with their own shape.
        let azure = r#"{"operationName":"MICROSOFT.STORAGE/STORAGEACCOUNTS/WRITE","time":"2024-01-01T00:00:00Z","resourceId":"/SUBSCRIPTIONS/S1/RESOURCEGROUPS/G/PROVIDERS/MICROSOFT.STORAGE/STORAGEACCOUNTS/A","category":"Administrative","resultType":"Success"}"#;
        let batch = format!("{{\"records\": [{azure}, {azure}]}}");
        assert_eq!(
            records_envelope(&batch).map(|(key, _, shape)| (key, shape)),
            Some(("records", Shape::AzureEventHubsBatch))
        );
        assert_eq!(reasons(&batch), (2, vec![]));
        let mixed = format!("{{\"records\":[{RECORD}]}}");
        assert_eq!(reasons(&mixed), (0, vec![ErrorReason::FormatMismatch]));
        // The array closes before the last `]`: its records are kept and
        // what follows is a syntax error, not silently ignored.
        let trailing = format!("{{\"Records\":[{RECORD}], [1]}}");
        assert_eq!(reasons(&trailing), (1, vec![ErrorReason::Syntax]));
        let broken = format!("{{\"Records\":[{RECORD}, x]}}");
        assert_eq!(reasons(&broken), (1, vec![ErrorReason::Syntax]));
    }

    /// What a walk over an array of records delivers, in a form to compare:
    /// each record's position and event (as JSON, with its raw text) or
    /// error (reason, detail, dead-letter bytes), and where the walk ended.
    fn walked(text: &str, one_pass: bool) -> (Vec<String>, Option<usize>) {
        let decoder = Decoder::default();
        let mut seen = Vec::new();
        let mut sink = |d: Decoded<'_>| {
            seen.push(match d.result {
                Ok(e) => format!(
                    "{:?} {} {}",
                    d.location,
                    sonic_rs::to_string(&e).unwrap(),
                    e.raw
                ),
                Err(e) => format!(
                    "{:?} {:?} {} {}",
                    d.location,
                    e.reason,
                    e.detail,
                    String::from_utf8_lossy(e.raw)
                ),
            })
        };
        let mut ctx = Ctx {
            decoder: &decoder,
            sink: &mut sink,
        };
        let location = RecordLocation { line: 3, index: 0 };
        let shape = Some(Shape::CloudTrailS3Object);
        let end = if one_pass {
            ctx.array(text, shape, location, 0)
        } else {
            ctx.array_walk(text, shape, location, 0, 0)
        };
        (seen, end)
    }

    /// A record with `userIdentity` second, as CloudTrail writes it
    /// (`RECORD` has it last: the probe cannot tell where that ends, so
    /// such a record is skipped over once more to find it).
    const SECOND: &str = r#"{"eventVersion":"1.08","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/a"},"eventTime":"2024-01-01T00:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","awsRegion":"us-east-1","eventID":"e1","recipientAccountId":"111111111111"}"#;
    const LAST_IDENTITY: &str = r#"{"eventTime":"2024-01-01T00:00:01Z","eventSource":"iam.amazonaws.com","eventName":"CreateUser","eventID":"e2","recipientAccountId":"111111111111","userIdentity":{"type":"Root"}}"#;
    const ESCAPED: &str = r#"{"eventTime":"2024-01-01T00:00:02Z","eventSource":"s3.amazonaws.com","eventName":"PutObject","eventID":"e3","userIdentity":{"type":"IAMUser"},"requestParameters":{"key":"a\"}b"},"tail":"\u007d"}"#;
    const WRONG_TYPE: &str = r#"{"eventTime":5,"eventSource":"s3.amazonaws.com","eventName":"GetObject","eventID":"e4"}"#;
    const NESTED_LAST: &str = r#"{"eventTime":"2024-01-01T00:00:03Z","eventSource":"ec2.amazonaws.com","eventName":"RunInstances","eventID":"e5","x":[{"y":[1,{"z":"}]"}]}] }"#;

    #[test]
    fn records_read_in_one_pass_come_out_as_when_found_whole_first() {
        let (r, last_identity, escaped) = (SECOND, LAST_IDENTITY, ESCAPED);
        let (wrong_type, nested_last) = (WRONG_TYPE, NESTED_LAST);
        let docs = [
            format!("[{r},{r}]"),
            format!("[ \n {r} \r\n,\t{escaped} ,{nested_last}\n]"),
            format!("[{r},{last_identity},{r}]"),
            format!("[{r},{RECORD},{r},{RECORD}]"),
            format!("[{r},{wrong_type},{r}]"),
            format!("[{r},7,{r}]"),
            format!("[{r},{{}},{r}]"),
            format!("[{r} {r}]"),
            format!("[{r},,{r}]"),
            format!("[,{r}]"),
            format!("[{r},{r}"),
            format!("[{r},{}", &RECORD[..RECORD.len() / 2]),
            format!("[{r},{{\"Records\":[{r}]}}]"),
            "[]".to_owned(),
            " [ ] ".to_owned(),
            "[".to_owned(),
            "no array".to_owned(),
        ];
        for doc in &docs {
            let (fast, fast_end) = walked(doc, true);
            let (walk, walk_end) = walked(doc, false);
            assert_eq!(fast, walk, "{doc}");
            assert_eq!(fast_end, walk_end, "{doc}");
        }
        // The cases read in one pass, and those that are not.
        let decoder = Decoder::default();
        let mut sink = |_: Decoded<'_>| {};
        let mut ctx = Ctx {
            decoder: &decoder,
            sink: &mut sink,
        };
        let location = RecordLocation::default();
        for record in [r, escaped, nested_last, "{ }"] {
            let followed = format!("{record} ,{r}]");
            assert_eq!(
                ctx.element(&followed, None, location, 1),
                Some(record.len())
            );
        }
        // Its end found by a skip: `userIdentity` last.
        for record in [last_identity, RECORD] {
            let followed = format!("{record}\n,{r}]");
            assert_eq!(
                ctx.element(&followed, None, location, 1),
                Some(record.len())
            );
        }
        assert_eq!(ctx.element(&r[..40], None, location, 1), None);
        assert_eq!(ctx.element(&RECORD[..40], None, location, 1), None);
    }

    proptest::proptest! {
        /// Arrays of records, good and bad, with any white space between
        /// them, cut anywhere or with one byte changed: read in one pass,
        /// they come out exactly as when each is found whole first.
        #[test]
        fn any_array_reads_the_same_in_one_pass(
            elements in proptest::collection::vec(
                (0usize..10, 0usize..6),
                0..6,
            ),
            cut in proptest::option::of(0usize..2000),
            change in proptest::option::of((0usize..2000, proptest::sample::select(b"{}[],\" :x0".to_vec()))),
        ) {
            const PARTS: [&str; 10] = [
                SECOND, RECORD, LAST_IDENTITY, ESCAPED, WRONG_TYPE, NESTED_LAST, "7", "{}", "[{}]",
                r#"{"eventSource":"s3.amazonaws.com","e\u0076entName":"X","n":-1.5e3}"#,
            ];
            const GAPS: [&str; 6] = [",", " , ", ",\n\t", "", ",,", "\r\n,"];
            let mut doc = String::from(" [ ");
            for (i, (part, gap)) in elements.iter().enumerate() {
                if i > 0 {
                    doc.push_str(GAPS[*gap]);
                }
                doc.push_str(PARTS[*part]);
            }
            doc.push_str(" ]");
            let mut bytes = doc.into_bytes();
            if let Some((at, byte)) = change {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.min(bytes.len()));
            }
            // Changes and cuts are ASCII among ASCII: still text.
            let doc = String::from_utf8(bytes).unwrap();
            let (fast, fast_end) = walked(&doc, true);
            let (walk, walk_end) = walked(&doc, false);
            proptest::prop_assert_eq!(fast, walk, "{}", doc);
            proptest::prop_assert_eq!(fast_end, walk_end, "{}", doc);
        }
    }

    /// A decoder whose documents (and lines) may be 1000 bytes.
    fn small_limits() -> Decoder {
        Decoder::new(
            FormatHint::Auto,
            Limits {
                max_record_bytes: 1000,
                max_document_bytes: 1000,
                max_depth: 64,
            },
        )
    }

    #[test]
    fn lines_of_a_piece_are_numbered_from_its_first_line() {
        let decoder = small_limits();
        let long = format!("{{\"a\":\"{}\"}}", "x".repeat(1000));
        let decode = |bytes: &[u8]| {
            let mut out = Vec::new();
            decoder.decode_lines(bytes, 41, &mut |d: Decoded<'_>| {
                out.push((d.location.line, d.result.err().map(|e| e.reason)));
            });
            out
        };
        // A single line is a record (framing is not guessed), blank lines
        // are skipped, and the limit holds per line.
        let text = format!("{RECORD}\n\n{RECORD}\r\n{long}\n{{\"broken\"\n");
        assert_eq!(
            decode(text.as_bytes()),
            vec![
                (41, None),
                (43, None),
                (44, Some(ErrorReason::TooLarge)),
                (45, Some(ErrorReason::Truncated)),
            ]
        );
        assert_eq!(decode(RECORD.as_bytes()), vec![(41, None)]);
        // Invalid UTF-8 spoils its line only.
        let mut bad = format!("{RECORD}\n").into_bytes();
        bad.extend_from_slice(b"{\"a\":\"\xff\"}\n");
        bad.extend_from_slice(RECORD.as_bytes());
        assert_eq!(
            decode(&bad),
            vec![(41, None), (42, Some(ErrorReason::InvalidUtf8)), (43, None)]
        );
        // Text known to be UTF-8 decodes the same without the check.
        let mut from_str = Vec::new();
        decoder.decode_str_lines(&text, 41, &mut |d: Decoded<'_>| {
            from_str.push((d.location.line, d.result.err().map(|e| e.reason)));
        });
        assert_eq!(from_str, decode(text.as_bytes()));
    }

    #[test]
    fn document_limit_holds_per_line_of_json_lines() {
        let decoder = small_limits();
        // The same through `decode` and `decode_str` (text checked already).
        let outcomes = |text: &str| {
            let mut seen = [(0, Vec::new()), (0, Vec::new())];
            for (i, (events, errors)) in seen.iter_mut().enumerate() {
                let mut tally = |d: Decoded<'_>| match d.result {
                    Ok(_) => *events += 1,
                    Err(e) => errors.push((d.location.line, e.reason)),
                };
                if i == 0 {
                    decoder.decode(text.as_bytes(), &mut tally);
                } else {
                    decoder.decode_str(text, &mut tally);
                }
            }
            let [bytes, checked] = seen;
            assert_eq!(bytes, checked, "decode and decode_str differ");
            bytes
        };
        // Ten records, 3 KB in all: each line is within the limit.
        let lines = format!("{RECORD}\n").repeat(10);
        assert!(lines.len() > 1000);
        assert_eq!(outcomes(&lines), (10, vec![]));
        // A line over the limit is refused alone.
        let long = format!(
            "{RECORD}\n{}\n{RECORD}\n",
            RECORD.replace("e1", &"x".repeat(800))
        );
        assert_eq!(outcomes(&long), (2, vec![(2, ErrorReason::TooLarge)]));
        // One document over the limit is still refused whole.
        let pretty = format!("{{\n\"Records\": [\n{}\n]\n}}\n", [RECORD; 5].join(",\n"));
        assert_eq!(outcomes(&pretty), (0, vec![(1, ErrorReason::TooLarge)]));
    }

    #[test]
    fn gzip_size_hint_reads_the_trailer_within_bounds() {
        let text = RECORD.repeat(200);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut enc, text.as_bytes()).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(inflated_size_hint(&gz), text.len() + 1);
        assert_eq!(inflate(&gz, 1 << 30).unwrap(), text.as_bytes());
        // A trailer claiming 4 GiB for a few bytes is not believed.
        let mut lying = gz[..20].to_vec();
        lying.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(inflated_size_hint(&lying), 24 * 1032 + 1);
        assert_eq!(inflated_size_hint(&[]), 1);
    }

    /// Every member of a multi-member gzip inflates; a stream that breaks
    /// off, has a wrong CRC, is followed by garbage or inflates past the
    /// limit is refused, and a bomb is stopped at the limit.
    #[test]
    fn inflate_reads_every_member_and_refuses_what_is_broken() {
        let gz = |text: &[u8]| {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut enc, text).unwrap();
            enc.finish().unwrap()
        };
        let (a, b) = (RECORD.repeat(300), "x".repeat(100_000));
        let mut two = gz(a.as_bytes());
        two.extend_from_slice(&gz(b.as_bytes()));
        assert_eq!(
            inflate(&two, 1 << 30).unwrap(),
            format!("{a}{b}").as_bytes()
        );
        let reason = |r: Result<Vec<u8>, Rejection>| r.map(|_| ()).unwrap_err().0;
        let one = gz(a.as_bytes());
        assert_eq!(
            reason(inflate(&one[..one.len() / 2], 1 << 30)),
            ErrorReason::Decompression
        );
        let mut bad_crc = one.clone();
        let at = bad_crc.len() - 8;
        bad_crc[at] ^= 0xff;
        assert_eq!(
            reason(inflate(&bad_crc, 1 << 30)),
            ErrorReason::Decompression
        );
        let mut trailing = one.clone();
        trailing.extend_from_slice(b"not gzip");
        assert_eq!(
            reason(inflate(&trailing, 1 << 30)),
            ErrorReason::Decompression
        );
        assert_eq!(reason(inflate(&one, a.len() - 1)), ErrorReason::TooLarge);
        assert_eq!(inflate(&one, a.len()).unwrap().len(), a.len());
        // 64 MB of zeros in a few tens of KB: stopped at the limit.
        let bomb = gz(&vec![0u8; 64 << 20]);
        assert_eq!(reason(inflate(&bomb, 1 << 20)), ErrorReason::TooLarge);
        // One whole member takes the one-call path; everything else above
        // is the streaming path's to read or report.
        assert_eq!(inflate_whole(&one, 1 << 30).unwrap(), a.as_bytes());
        assert_eq!(inflate_whole(&one, a.len()).unwrap().len(), a.len());
        for other in [&two, &one[..one.len() / 2], &bad_crc, &trailing] {
            assert!(inflate_whole(other, 1 << 30).is_none());
        }
        assert!(inflate_whole(&one, a.len() - 1).is_none());
        assert!(inflate_whole(&bomb, 1 << 20).is_none());
        // A trailer that lies about the size.
        let mut wrong_size = one.clone();
        let at = wrong_size.len() - 4;
        wrong_size[at] ^= 1;
        assert!(inflate_whole(&wrong_size, 1 << 30).is_none());
        assert_eq!(
            reason(inflate(&wrong_size, 1 << 30)),
            ErrorReason::Decompression
        );
    }

    #[test]
    fn sub_str_borrows_from_borrowed() {
        let whole: Cow<'_, str> = Cow::Borrowed("/subscriptions/abc/x");
        let part = &whole[15..18];
        assert!(matches!(sub_str(&whole, part), Cow::Borrowed("abc")));
    }

    #[test]
    fn hash_distinguishes_absent_from_empty() {
        assert_ne!(
            hash_fields(&[None, Some("a")]),
            hash_fields(&[Some(""), Some("a")])
        );
        assert_ne!(
            hash_fields(&[Some("ab"), Some("c")]),
            hash_fields(&[Some("a"), Some("bc")])
        );
    }

    /// Lookups that start from a remembered subtree (`AuditEvent::hot`:
    /// the request and the caller) find what a scan of the whole record finds,
    /// present, null or absent, nested or not, in every shape: records read
    /// where they stand and records unwrapped from envelopes.
    #[test]
    fn lookups_from_remembered_values_agree_with_a_scan_of_the_record() {
        use crate::event::field::{FieldPath, lookup};
        let inputs: [&[u8]; 14] = [
            include_bytes!("../../tests/fixtures/aws/cloudtrail-records.jsonl"),
            include_bytes!("../../tests/fixtures/aws/s3-object.json"),
            include_bytes!("../../tests/fixtures/aws/eventbridge.jsonl"),
            include_bytes!("../../tests/fixtures/aws/lookupevents-items.jsonl"),
            include_bytes!("../../tests/fixtures/aws/lookupevents-response.json"),
            include_bytes!("../../tests/fixtures/aws/cloudwatch-logs.json"),
            include_bytes!("../../tests/fixtures/azure/excerpts.jsonl"),
            include_bytes!("../../tests/fixtures/azure/eventhub-batch.json"),
            include_bytes!("../../tests/fixtures/azure/rest.jsonl"),
            include_bytes!("../../tests/fixtures/azure/sdk.jsonl"),
            // `identity` as a string holding JSON: read through, either way.
            include_bytes!("../../tests/fixtures/azure/eventhub-identity-as-string.json"),
            include_bytes!("../../tests/fixtures/gcp/audit.jsonl"),
            include_bytes!("../../tests/fixtures/gcp/logging-export.jsonl"),
            include_bytes!("../../tests/fixtures/gcp/pubsub-push.json"),
        ];
        let paths = [
            "userIdentity.type",
            "userIdentity.arn",
            "userIdentity.sessionContext.sessionIssuer.type",
            "userIdentity.nope",
            "requestParameters.bucketName",
            "requestParameters",
            "responseElements",
            "responseElements.ConsoleLogin",
            "additionalEventData.MFAUsed",
            "errorCode",
            "errorMessage",
            "userAgent",
            "eventType",
            "eventSource",
            "sourceIPAddress",
            "readOnly",
            "resources.ARN",
            "identity.claims.name",
            "identity.authorization.action",
            "properties.statusCode",
            "category",
            "resultType",
            "caller",
            "status.value",
            "claims",
            "protoPayload.methodName",
            "protoPayload.authenticationInfo.principalEmail",
            "logName",
            "resource.labels.project_id",
            "insertId",
            "eventName",
            "nope",
        ];
        let paths: Vec<FieldPath> = paths.iter().map(|p| FieldPath::parse(p).unwrap()).collect();
        let (mut checked, mut found, mut absent, mut placed) = (0, 0, 0, 0);
        for input in inputs {
            Decoder::new(FormatHint::Auto, Limits::default()).decode(input, &mut |d| {
                let Ok(event) = d.result else { return };
                placed += usize::from(event.hot.iter().any(Option::is_some));
                for path in &paths {
                    let fast = event.field(path).map(|v| v.raw_json().to_owned());
                    let scan = lookup(&event.raw, path).map(|v| v.raw_json().to_owned());
                    assert_eq!(fast, scan, "{path} in {}", event.raw);
                    checked += 1;
                    found += usize::from(fast.is_some());
                    absent += usize::from(fast.is_none());
                }
            });
        }
        assert!(
            checked > 500 && found > 150 && absent > 150,
            "{checked} lookups, {found} found, {absent} absent"
        );
        assert!(placed > 30, "{placed} events with a remembered subtree");
    }
}
