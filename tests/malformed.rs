//! Bad input never hurts: each kind of malformed record gets the right typed
//! reason, good records around bad ones still come out, and no input panics.

use std::io::Write;

use proptest::prelude::*;
use seamwatch::event::{Decoded, Decoder, ErrorReason, FormatHint, Limits};

const GOOD_CT: &str = r#"{"eventVersion":"1.08","eventTime":"2024-07-31T13:06:24Z","eventSource":"cloudtrail.amazonaws.com","eventName":"StopLogging","awsRegion":"us-east-1","eventID":"e1","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/a"},"sourceIPAddress":"1.2.3.4"}"#;

fn outcomes(decoder: &Decoder, input: &[u8]) -> Vec<Result<String, ErrorReason>> {
    let mut out = Vec::new();
    decoder.decode(input, &mut |d: Decoded<'_>| {
        out.push(
            d.result
                .map(|e| e.event_id.to_string())
                .map_err(|e| e.reason),
        );
    });
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

#[test]
fn each_kind_of_bad_input_gets_its_reason() {
    use ErrorReason::*;
    let deep = format!("{{\"eventName\":{}1{}}}", "[".repeat(100), "]".repeat(100));
    let large = format!(
        r#"{{"eventSource":"s3.amazonaws.com","eventName":"PutObject","eventTime":"2024-01-01T00:00:00Z","pad":"{}"}}"#,
        "x".repeat(5000)
    );
    let mut invalid_utf8 = GOOD_CT.as_bytes().to_vec();
    invalid_utf8[60] = 0xff;
    let mut corrupt_gzip = gzip(GOOD_CT.as_bytes());
    let n = corrupt_gzip.len();
    corrupt_gzip[n / 2] ^= 0xff;
    corrupt_gzip.truncate(n - 4);
    let bad_base64 =
        r#"{"message":{"data":"!!!not base64!!!"},"subscription":"projects/p/subscriptions/s"}"#;
    let pubsub_not_utf8 = format!(
        r#"{{"message":{{"data":"{}"}},"subscription":"s"}}"#,
        base64_of(&[0xc3, 0x28, 0x7b])
    );

    let cases: Vec<(&str, Vec<u8>, ErrorReason)> = vec![
        ("truncated record", GOOD_CT[..80].into(), Truncated),
        ("bare word value", br#"{"eventName": StopLogging}"#.to_vec(), Syntax),
        ("trailing garbage", format!("{GOOD_CT} xyz").into_bytes(), Syntax),
        ("not JSON at all", b"hello world".to_vec(), Syntax),
        ("JSON scalar", b"42".to_vec(), UnknownFormat),
        ("empty object", b"{}".to_vec(), UnknownFormat),
        ("unknown object", br#"{"foo":"bar","n":1}"#.to_vec(), UnknownFormat),
        ("eventName is a number", GOOD_CT.replace(r#""StopLogging""#, "5").into_bytes(), WrongType),
        ("userIdentity is a string", GOOD_CT.replace(r#"{"type":"IAMUser","arn":"arn:aws:iam::1:user/a"}"#, r#""root""#).into_bytes(), WrongType),
        ("eventTime is a number", GOOD_CT.replace(r#""2024-07-31T13:06:24Z""#, "1722431184").into_bytes(), WrongType),
        ("userIdentity.userName is a number", GOOD_CT.replace(r#""arn":"arn:aws:iam::1:user/a""#, r#""userName":5"#).into_bytes(), WrongType),
        ("userIdentity holds a bare word", GOOD_CT.replace(r#""type":"IAMUser""#, r#""type":IAMUser"#).into_bytes(), Syntax),
        ("record cut inside userIdentity", GOOD_CT[..GOOD_CT.find("arn:aws").unwrap()].into(), Truncated),
        ("protoPayload is an array", br#"{"protoPayload":[1,2],"insertId":"x"}"#.to_vec(), WrongType),
        ("eventName missing", br#"{"eventVersion":"1.08","eventSource":"s3.amazonaws.com"}"#.to_vec(), MissingField),
        ("eventSource missing", br#"{"eventVersion":"1.08","eventName":"PutObject"}"#.to_vec(), MissingField),
        ("Azure operationName empty", br#"{"operationName":"","time":"2024-01-01T00:00:00Z"}"#.to_vec(), MissingField),
        ("GCP methodName missing", br#"{"protoPayload":{"@type":"type.googleapis.com/google.cloud.audit.AuditLog","serviceName":"iam.googleapis.com"}}"#.to_vec(), MissingField),
        ("bad timestamp", GOOD_CT.replace("2024-07-31T13:06:24Z", "yesterday").into_bytes(), BadTimestamp),
        ("Azure bad time", br#"{"operationName":"MICROSOFT.STORAGE/STORAGEACCOUNTS/WRITE","time":"31/12/2024"}"#.to_vec(), BadTimestamp),
        ("GCP non-audit payload type", br#"{"protoPayload":{"@type":"type.googleapis.com/google.appengine.logging.v1.RequestLog","serviceName":"a","methodName":"b"}}"#.to_vec(), NotAuditLog),
        ("GCP jsonPayload entry", br#"{"jsonPayload":{"msg":"hi"},"logName":"projects/p/logs/app","insertId":"1"}"#.to_vec(), NotAuditLog),
        ("EventBridge event not from CloudTrail", br#"{"version":"0","detail-type":"EC2 Instance State-change Notification","source":"aws.ec2","detail":{"state":"running"}}"#.to_vec(), NotAuditLog),
        ("EventBridge CloudTrail event without detail", br#"{"version":"0","detail-type":"AWS API Call via CloudTrail","source":"aws.s3"}"#.to_vec(), BadEnvelope),
        ("Records is not an array", br#"{"Records":{"eventName":"x"}}"#.to_vec(), BadEnvelope),
        ("CloudTrailEvent is not a string", br#"{"EventId":"1","CloudTrailEvent":5}"#.to_vec(), BadEnvelope),
        ("logEvents message is not a string", br#"{"messageType":"DATA_MESSAGE","logEvents":[{"id":"1","message":{"a":1}}]}"#.to_vec(), BadEnvelope),
        ("array of numbers", b"[1]".to_vec(), BadEnvelope),
        ("Pub/Sub data not base64", bad_base64.as_bytes().to_vec(), BadEnvelope),
        ("Pub/Sub data not UTF-8", pubsub_not_utf8.into_bytes(), InvalidUtf8),
        ("CloudTrailEvent holds truncated JSON", br#"{"EventId":"1","CloudTrailEvent":"{\"eventVersion\":\"1.08\",\"eventSo"}"#.to_vec(), Truncated),
        ("invalid UTF-8", invalid_utf8, InvalidUtf8),
        ("record over the size limit", large.into_bytes(), TooLarge),
        ("nesting over the depth limit", deep.into_bytes(), TooDeep),
        ("corrupt gzip", corrupt_gzip, Decompression),
        ("empty payload", Vec::new(), Empty),
        ("white space only", b"  \n\t\n".to_vec(), Empty),
        ("Azure record inside a CloudTrail S3 object", br#"{"Records":[{"operationName":"MICROSOFT.STORAGE/STORAGEACCOUNTS/WRITE","time":"2024-01-01T00:00:00Z"}]}"#.to_vec(), FormatMismatch),
    ];
    assert!(cases.len() >= 20);
    let decoder = Decoder::new(
        FormatHint::Auto,
        Limits {
            max_record_bytes: 4096,
            ..Limits::default()
        },
    );
    for (name, input, expected) in &cases {
        let got = outcomes(&decoder, input);
        assert_eq!(got, vec![Err(*expected)], "case `{name}`");
    }

    // Every reason but the hint mismatch is exercised above; that one needs a hint.
    let gcp_only = Decoder::new(FormatHint::Gcp, Limits::default());
    assert_eq!(
        outcomes(&gcp_only, GOOD_CT.as_bytes()),
        vec![Err(FormatMismatch)]
    );
    let covered: std::collections::BTreeSet<_> =
        cases.iter().map(|c| c.2).chain([FormatMismatch]).collect();
    assert_eq!(
        covered.len(),
        ErrorReason::ALL.len(),
        "a reason has no test case"
    );
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn good_lines_survive_bad_neighbours() {
    let other = GOOD_CT.replace(r#""eventID":"e1""#, r#""eventID":"e2""#);
    let mut input = Vec::new();
    input.extend_from_slice(GOOD_CT.as_bytes());
    input.extend_from_slice(b"\n{\"eventVersion\":\"1.08\",\"eventSo\n");
    input.extend_from_slice(b"{\"eventName\":\"x\xff\"}\n\n");
    input.extend_from_slice(other.as_bytes());
    input.push(b'\n');
    let mut seen = Vec::new();
    Decoder::default().decode(&input, &mut |d: Decoded<'_>| {
        seen.push((
            d.location.line,
            d.result
                .map(|e| e.event_id.to_string())
                .map_err(|e| e.reason),
        ));
    });
    assert_eq!(
        seen,
        vec![
            (1, Ok("e1".to_owned())),
            (2, Err(ErrorReason::Truncated)),
            (3, Err(ErrorReason::InvalidUtf8)),
            (5, Ok("e2".to_owned())),
        ]
    );
}

#[test]
fn truncated_envelope_keeps_the_records_before_the_cut() {
    let other = GOOD_CT.replace(r#""eventID":"e1""#, r#""eventID":"e2""#);
    let envelope = format!(r#"{{"Records":[{GOOD_CT},{other},{GOOD_CT}"#);
    let cut = &envelope[..envelope.len() - 40];
    let got = outcomes(&Decoder::default(), cut.as_bytes());
    // A cut-off archive object still yields the complete records before the cut.
    assert_eq!(
        got,
        vec![
            Ok("e1".into()),
            Ok("e2".into()),
            Err(ErrorReason::Truncated)
        ]
    );
    // A complete envelope with one bad record keeps the other two.
    let mixed = format!(r#"{{"Records":[{GOOD_CT},{{"eventVersion":"1.08"}},{other}]}}"#);
    assert_eq!(
        outcomes(&Decoder::default(), mixed.as_bytes()),
        vec![
            Ok("e1".into()),
            Err(ErrorReason::MissingField),
            Ok("e2".into())
        ]
    );
}

#[test]
fn every_truncation_of_real_records_is_an_error_not_a_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for file in [
        "aws/s3-object.json",
        "azure/eventhub-batch.json",
        "gcp/pubsub-push.json",
        "aws/cloudwatch-logs.json",
    ] {
        let bytes = std::fs::read(root.join(file)).unwrap();
        let text = std::str::from_utf8(&bytes).unwrap().trim_end();
        for cut in (1..text.len()).step_by(7) {
            let results = outcomes(&Decoder::default(), &text.as_bytes()[..cut]);
            assert!(!results.is_empty(), "{file} cut at {cut} produced nothing");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = outcomes(&Decoder::default(), &bytes);
    }

    #[test]
    fn mutated_records_never_panic(pos in 0usize..GOOD_CT.len(), byte in any::<u8>(), cut in 0usize..GOOD_CT.len()) {
        let mut bytes = GOOD_CT.as_bytes().to_vec();
        bytes[pos] = byte;
        bytes.truncate(cut.max(pos + 1));
        let results = outcomes(&Decoder::default(), &bytes);
        prop_assert!(!results.is_empty());
    }
}

/// Found by the fuzzer: garbage after a top-level array was dropped silently.
#[test]
fn regression_trailing_garbage_after_an_array_is_an_error() {
    let input = format!("[{GOOD_CT}] /0``");
    assert_eq!(
        outcomes(&Decoder::default(), input.as_bytes()),
        vec![Ok("e1".into()), Err(ErrorReason::Syntax)]
    );
    assert_eq!(
        outcomes(&Decoder::default(), b"[ ]\t/ 0``"),
        vec![Err(ErrorReason::Syntax)]
    );
    // An empty batch is valid and simply holds no records.
    assert!(outcomes(&Decoder::default(), br#"{"Records":[]}"#).is_empty());
}
