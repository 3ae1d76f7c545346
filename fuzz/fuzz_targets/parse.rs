//! Fuzz target for the decoder's entry point: any bytes, any format hint, tight
//! limits. The decoder must never panic, never drop invalid input without an
//! error, and every native-field lookup on what it returns must be safe too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use seamwatch::event::{Decoded, Decoder, FieldPath, FormatHint, Limits};

fuzz_target!(|data: &[u8]| {
    let (hint, payload) = match data.split_first() {
        Some((selector, rest)) => (
            match selector % 4 {
                0 => FormatHint::Auto,
                1 => FormatHint::CloudTrail,
                2 => FormatHint::Azure,
                _ => FormatHint::Gcp,
            },
            rest,
        ),
        None => (FormatHint::Auto, data),
    };
    let limits = Limits { max_record_bytes: 64 << 10, max_document_bytes: 1 << 20, max_depth: 32 };
    let decoder = Decoder::new(hint, limits);
    let paths = ["requestParameters.bucketName", "properties.requestbody.properties", "protoPayload.request.policy.bindings.role"]
        .map(|p| FieldPath::parse(p).unwrap());
    let mut outcomes = 0usize;
    decoder.decode(payload, &mut |d: Decoded<'_>| {
        outcomes += 1;
        if let Ok(event) = d.result {
            for path in &paths {
                let _ = event.field(path);
            }
            let _ = serde_json::to_string(&event).unwrap();
        }
    });
    // Nothing is dropped silently: a payload without any outcome must be valid
    // JSON whose record arrays are empty (`[]`, `{"Records":[]}`), or gzip of it.
    if outcomes == 0 && !payload.starts_with(&[0x1f, 0x8b]) {
        assert!(
            serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok(),
            "no outcome for an invalid payload of {} bytes",
            payload.len()
        );
    }
});
