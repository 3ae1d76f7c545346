//! Native field lookup by path, for rules.
//!
//! A [`FieldPath`] is parsed once (when a rule compiles) from dotted text:
//! `requestParameters.bucketName`, `resources[0].ARN`,
//! `identity.claims."http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn"`.
//! Lookup walks the record's JSON text lazily with sonic-rs, skipping what it
//! does not need, so it costs a scan of part of the record and no tree.
//!
//! Two behaviours make paths work on real logs:
//! - **Fan-out over arrays**: a key segment applied to an array applies to every
//!   element, so `requestParameters.ipPermissions.items.ipRanges.items.cidrIp`
//!   reaches every CIDR of every permission. [`visit`] yields them all;
//!   [`lookup`] returns the first.
//! - **Embedded JSON**: a segment applied to a string that holds JSON (Azure's
//!   `properties.requestbody`, `properties.policies`) decodes the string and
//!   continues inside it. Values found there are owned copies.

use std::borrow::Cow;
use std::fmt;
use std::ops::ControlFlow;

/// Paths nest at most this deep; deeper paths are rejected when parsed.
const MAX_PATH_SEGMENTS: usize = 32;

/// One step of a [`FieldPath`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A parsed field path. See the module docs for the syntax.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldPath {
    segments: Vec<Segment>,
    text: String,
}

/// Why a path could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldPathError {
    #[error("field path is empty")]
    Empty,
    #[error("field path `{0}` has an empty segment")]
    EmptySegment(String),
    #[error("field path `{0}` has an unterminated quote or bracket")]
    Unterminated(String),
    #[error("field path `{0}` has a bad index")]
    BadIndex(String),
    #[error("field path `{0}` has more than {MAX_PATH_SEGMENTS} segments")]
    TooLong(String),
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<Self, FieldPathError> {
        if text.is_empty() {
            return Err(FieldPathError::Empty);
        }
        let mut segments = Vec::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        let mut expect_segment = true;
        while i < bytes.len() {
            match bytes[i] {
                b'.' => {
                    if expect_segment {
                        return Err(FieldPathError::EmptySegment(text.to_owned()));
                    }
                    expect_segment = true;
                    i += 1;
                }
                b'[' => {
                    let end = text[i..]
                        .find(']')
                        .ok_or_else(|| FieldPathError::Unterminated(text.to_owned()))?;
                    let inner = &text[i + 1..i + end];
                    let index = inner
                        .parse::<usize>()
                        .map_err(|_| FieldPathError::BadIndex(text.to_owned()))?;
                    segments.push(Segment::Index(index));
                    expect_segment = false;
                    i += end + 1;
                }
                b'"' => {
                    let end = text[i + 1..]
                        .find('"')
                        .ok_or_else(|| FieldPathError::Unterminated(text.to_owned()))?;
                    segments.push(Segment::Key(text[i + 1..i + 1 + end].to_owned()));
                    expect_segment = false;
                    i += end + 2;
                }
                _ => {
                    let end = text[i..]
                        .find(['.', '['])
                        .map(|e| i + e)
                        .unwrap_or(text.len());
                    segments.push(Segment::Key(text[i..end].to_owned()));
                    expect_segment = false;
                    i = end;
                }
            }
            if segments.len() > MAX_PATH_SEGMENTS {
                return Err(FieldPathError::TooLong(text.to_owned()));
            }
        }
        if expect_segment {
            return Err(FieldPathError::EmptySegment(text.to_owned()));
        }
        Ok(FieldPath {
            segments,
            text: text.to_owned(),
        })
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for FieldPath {
    type Err = FieldPathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FieldPath::parse(s)
    }
}

/// The JSON type of a [`FieldValue`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

/// A value found by a path: its JSON text, borrowed from the record where it can be.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldValue<'a> {
    json: Cow<'a, str>,
}

impl<'a> FieldValue<'a> {
    /// Wraps JSON text (trimmed of surrounding white space).
    pub fn from_json(json: Cow<'a, str>) -> Self {
        let json = match json {
            Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
            Cow::Owned(s) if s.trim().len() == s.len() => Cow::Owned(s),
            Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
        };
        FieldValue { json }
    }

    pub fn raw_json(&self) -> &str {
        &self.json
    }

    pub fn kind(&self) -> ValueKind {
        match self.json.as_bytes().first() {
            Some(b'"') => ValueKind::String,
            Some(b'{') => ValueKind::Object,
            Some(b'[') => ValueKind::Array,
            Some(b't' | b'f') => ValueKind::Bool,
            Some(b'n') | None => ValueKind::Null,
            Some(_) => ValueKind::Number,
        }
    }

    pub fn is_null(&self) -> bool {
        self.kind() == ValueKind::Null
    }

    /// The string value, unescaped; `None` if the value is not a string.
    pub fn as_str(&self) -> Option<Cow<'_, str>> {
        super::decode::json_string(&self.json)
    }

    pub fn as_bool(&self) -> Option<bool> {
        match &*self.json {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        if self.kind() != ValueKind::Number {
            return None;
        }
        self.json.parse().ok()
    }

    /// Scalars as text (strings unescaped, numbers and booleans as written);
    /// `None` for null, arrays and objects.
    pub fn as_scalar_text(&self) -> Option<Cow<'_, str>> {
        match self.kind() {
            ValueKind::String => self.as_str(),
            ValueKind::Number | ValueKind::Bool => Some(Cow::Borrowed(&self.json)),
            _ => None,
        }
    }

    /// Calls `f` for each element of an array value; nothing for other kinds.
    pub fn for_each_element(&self, mut f: impl FnMut(FieldValue<'_>)) {
        if self.kind() != ValueKind::Array {
            return;
        }
        for element in sonic_rs::to_array_iter(&*self.json).flatten() {
            f(FieldValue::from_json(Cow::Borrowed(element.as_raw_str())));
        }
    }
}

/// The first value the path reaches in `json`, if any.
pub fn lookup<'a>(json: &'a str, path: &FieldPath) -> Option<FieldValue<'a>> {
    let mut found = None;
    let _ = visit(json, path, &mut |value| {
        found = Some(value);
        ControlFlow::Break(())
    });
    found
}

/// Calls `f` for every value the path reaches in `json` (several when it fans
/// out over arrays), until `f` breaks.
pub fn visit<'a>(
    json: &'a str,
    path: &FieldPath,
    f: &mut dyn FnMut(FieldValue<'a>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    visit_segments(Cow::Borrowed(json), &path.segments, f)
}

/// Like [`visit`], on a value already reached by the path's first segment.
pub(crate) fn visit_after_first<'a>(
    value_json: &'a str,
    path: &FieldPath,
    f: &mut dyn FnMut(FieldValue<'a>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    visit_segments(Cow::Borrowed(value_json), &path.segments[1..], f)
}

fn visit_segments<'a>(
    json: Cow<'a, str>,
    segments: &[Segment],
    f: &mut dyn FnMut(FieldValue<'a>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let Some((segment, rest)) = segments.split_first() else {
        return f(FieldValue::from_json(json));
    };
    let first = json.trim_start().as_bytes().first().copied();
    match (first, segment) {
        (Some(b'{'), Segment::Key(key)) => {
            let child = child_by_key(json, key);
            match child {
                Some(child) => visit_segments(child, rest, f),
                None => ControlFlow::Continue(()),
            }
        }
        (Some(b'['), Segment::Index(index)) => match json {
            Cow::Borrowed(text) => match sonic_rs::get_from_str(text, [*index]) {
                Ok(child) => visit_segments(child.as_raw_cow(), rest, f),
                Err(_) => ControlFlow::Continue(()),
            },
            Cow::Owned(text) => match sonic_rs::get_from_str(&text, [*index]) {
                Ok(child) => visit_segments(Cow::Owned(child.as_raw_str().to_owned()), rest, f),
                Err(_) => ControlFlow::Continue(()),
            },
        },
        (Some(b'['), Segment::Key(_)) => match json {
            Cow::Borrowed(text) => {
                for element in sonic_rs::to_array_iter(text).flatten() {
                    visit_segments(element.as_raw_cow(), segments, f)?;
                }
                ControlFlow::Continue(())
            }
            Cow::Owned(text) => {
                for element in sonic_rs::to_array_iter(&text).flatten() {
                    let owned = Cow::Owned(element.as_raw_str().to_owned());
                    visit_segments(owned, segments, f)?;
                }
                ControlFlow::Continue(())
            }
        },
        (Some(b'"'), _) => {
            // A string that holds JSON: decode it and go on inside.
            let Ok(decoded) = sonic_rs::from_str::<String>(&json) else {
                return ControlFlow::Continue(());
            };
            match decoded.trim_start().as_bytes().first() {
                Some(b'{' | b'[') => visit_segments(Cow::Owned(decoded), segments, f),
                _ => ControlFlow::Continue(()),
            }
        }
        _ => ControlFlow::Continue(()),
    }
}

fn child_by_key<'a>(json: Cow<'a, str>, key: &str) -> Option<Cow<'a, str>> {
    match json {
        // A record's own text, which the decoder validated whole.
        Cow::Borrowed(text) => raw_child(text, key).map(Cow::Borrowed),
        // Text decoded from a string, which nothing has validated.
        Cow::Owned(text) => sonic_rs::get_from_str(&text, [key])
            .ok()
            .map(|lazy| Cow::Owned(lazy.as_raw_str().to_owned())),
    }
}

/// The raw text of `key`'s value in the JSON object `object` (the first,
/// if the key repeats), found by skipping the other values unparsed, as
/// sonic-rs's lookup does, without the two allocations that lookup makes
/// on every call (a key buffer, and an error for an absent key, which most
/// are). For text already validated; anything else gives `None` or some
/// slice of it, never a panic.
fn raw_child<'a>(object: &'a str, key: &str) -> Option<&'a str> {
    let b = object.as_bytes();
    let mut i = skip_blank(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_blank(b, i + 1);
    while b.get(i) == Some(&b'"') {
        let name_end = string_end(b, i)?;
        let name = object.get(i..name_end)?;
        i = skip_blank(b, name_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_blank(b, i + 1);
        let end = value_end(b, i)?;
        if name_is(name, key) {
            return object.get(i..end);
        }
        i = skip_blank(b, end);
        if b.get(i) != Some(&b',') {
            return None;
        }
        i = skip_blank(b, i + 1);
    }
    None
}

/// Whether a quoted JSON string denotes `key`.
fn name_is(quoted: &str, key: &str) -> bool {
    let inner = quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or("");
    if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
        inner == key
    } else {
        crate::event::decode::json_string(quoted).is_some_and(|name| name == key)
    }
}

fn skip_blank(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Just past the closing quote of the string that opens at `start`.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let at = i + memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b[at] == b'"' {
            return Some(at + 1);
        }
        // A backslash and the character it escapes.
        i = at + 2;
    }
}

/// Just past the value that starts at `start`.
fn value_end(b: &[u8], start: usize) -> Option<usize> {
    match *b.get(start)? {
        b'"' => string_end(b, start),
        open @ (b'{' | b'[') => {
            // `}` and `]` come two after `{` and `[`; brackets of the other
            // kind nest inside and balance out.
            let close = open + 2;
            let (mut depth, mut i) = (0usize, start);
            loop {
                let at = i + memchr::memchr3(b'"', open, close, b.get(i..)?)?;
                i = at + 1;
                match b[at] {
                    b'"' => i = string_end(b, at)?,
                    c if c == open => depth += 1,
                    _ => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return Some(i);
                        }
                    }
                }
            }
        }
        // A number or a literal: up to what ends it.
        _ => {
            let rest = b.get(start..)?;
            let len = rest
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(rest.len());
            Some(start + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 6] = ["a", "b", "k\"q", "é", "x\\y", ""];

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z{}\\[\\]\",:\\\\ é]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(NAMES.to_vec()), inner), 0..6)
                    .prop_map(|entries| {
                        Value::Object(
                            entries
                                .into_iter()
                                .map(|(k, v)| (k.to_owned(), v))
                                .collect(),
                        )
                    }),
            ]
        })
    }

    proptest! {
        /// The lookup finds what sonic-rs's lookup finds, in compact and in
        /// pretty-printed JSON, for keys present, repeated and absent.
        #[test]
        fn raw_child_finds_what_sonic_finds(value in json_value(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&value).unwrap()
            } else {
                serde_json::to_string(&value).unwrap()
            };
            for key in NAMES.iter().chain(&["absent"]) {
                let sonic = sonic_rs::get_from_str(&text, [*key]).ok();
                let sonic = sonic.as_ref().map(|v| v.as_raw_str());
                prop_assert_eq!(raw_child(&text, key), sonic, "{} in {}", key, text);
            }
        }

        /// Text that is not JSON gives an answer, never a panic.
        #[test]
        fn raw_child_takes_any_text(text in "[{}\\[\\]\":,\\\\ a1]{0,40}") {
            let _ = raw_child(&text, "a");
        }
    }

    fn path(s: &str) -> FieldPath {
        FieldPath::parse(s).unwrap()
    }

    fn all(json: &str, p: &str) -> Vec<String> {
        let mut out = Vec::new();
        let _ = visit(json, &path(p), &mut |v| {
            out.push(v.raw_json().to_owned());
            ControlFlow::Continue(())
        });
        out
    }

    #[test]
    fn parses_paths() {
        assert_eq!(
            path("a.b[2].c").segments(),
            &[
                Segment::Key("a".into()),
                Segment::Key("b".into()),
                Segment::Index(2),
                Segment::Key("c".into())
            ]
        );
        assert_eq!(
            path(r#"claims."http://x.org/upn""#).segments(),
            &[
                Segment::Key("claims".into()),
                Segment::Key("http://x.org/upn".into())
            ]
        );
        assert!(FieldPath::parse("").is_err());
        assert!(FieldPath::parse("a..b").is_err());
        assert!(FieldPath::parse("a.").is_err());
        assert!(FieldPath::parse("a[x]").is_err());
        assert!(FieldPath::parse("a[1").is_err());
        assert!(FieldPath::parse("\"a").is_err());
    }

    #[test]
    fn looks_up_nested_keys_and_indexes() {
        let json = r#"{"a":{"b":[{"c":1},{"c":"two"}]},"n":null}"#;
        assert_eq!(
            lookup(json, &path("a.b[1].c")).unwrap().as_str().unwrap(),
            "two"
        );
        assert_eq!(lookup(json, &path("a.b[0].c")).unwrap().as_f64(), Some(1.0));
        assert!(lookup(json, &path("a.x")).is_none());
        assert!(lookup(json, &path("a.b[5]")).is_none());
        assert!(lookup(json, &path("n")).unwrap().is_null());
        assert!(lookup(json, &path("n.deeper")).is_none());
    }

    #[test]
    fn fans_out_over_arrays() {
        let json = r#"{"p":{"items":[{"r":{"items":[{"cidr":"10.0.0.0/8"},{"cidr":"0.0.0.0/0"}]}},{"r":{"items":[{"cidr":"::/0"}]}}]}}"#;
        assert_eq!(
            all(json, "p.items.r.items.cidr"),
            vec![r#""10.0.0.0/8""#, r#""0.0.0.0/0""#, r#""::/0""#]
        );
    }

    #[test]
    fn descends_into_json_held_in_strings() {
        let json = r#"{"properties":{"requestbody":"{\"properties\":{\"scope\":\"/subscriptions/1\",\"roles\":[\"Owner\"]}}"}}"#;
        let v = lookup(json, &path("properties.requestbody.properties.scope")).unwrap();
        assert_eq!(v.as_str().unwrap(), "/subscriptions/1");
        assert_eq!(
            all(json, "properties.requestbody.properties.roles[0]"),
            vec![r#""Owner""#]
        );
        // the string itself is still reachable
        let body = lookup(json, &path("properties.requestbody")).unwrap();
        assert!(body.as_str().unwrap().starts_with("{\"properties\""));
    }

    #[test]
    fn unescapes_strings() {
        let json = r#"{"s":"a\"b\u00e9"}"#;
        assert_eq!(lookup(json, &path("s")).unwrap().as_str().unwrap(), "a\"bé");
    }

    #[test]
    fn bad_json_finds_nothing_and_does_not_panic() {
        for json in ["", "{", r#"{"a":"#, "[1,2", r#"{"a":{"b":"#, "\"\\u12\""] {
            let _ = lookup(json, &path("a.b"));
            let _ = all(json, "a.b.c");
        }
    }
}
