//! Parse + normalize throughput per cloud, one record per payload (as Kafka
//! delivers them), on one core. Reports events/s (elements) and MB/s (bytes)
//! as two benchmark groups over the same inputs.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use seamwatch::event::{Decoded, Decoder};

/// The fixture's non-blank lines, each a single record.
fn records(file: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

fn decode_all(decoder: &Decoder, inputs: &[Vec<u8>]) -> usize {
    let mut events = 0;
    for input in inputs {
        decoder.decode(input, &mut |d: Decoded<'_>| {
            if let Ok(event) = d.result {
                events += 1;
                std::hint::black_box(&event);
            }
        });
    }
    events
}

fn bench_parse(c: &mut Criterion) {
    let inputs = [
        ("cloudtrail", records("aws/cloudtrail-records.jsonl")),
        ("azure", records("azure/activity-categories.jsonl")),
        ("gcp", records("gcp/audit.jsonl")),
    ];
    let decoder = Decoder::default();
    for (unit, name) in [("events", "parse_events"), ("bytes", "parse_bytes")] {
        let mut group = c.benchmark_group(name);
        for (cloud, records) in &inputs {
            let bytes: usize = records.iter().map(Vec::len).sum();
            assert_eq!(
                decode_all(&decoder, records),
                records.len(),
                "{cloud} fixtures must all parse"
            );
            group.throughput(if unit == "events" {
                Throughput::Elements(records.len() as u64)
            } else {
                Throughput::Bytes(bytes as u64)
            });
            group.bench_with_input(BenchmarkId::from_parameter(cloud), records, |b, records| {
                b.iter(|| decode_all(&decoder, records))
            });
        }
        group.finish();
    }
}

/// The floor: validating and skipping the same records with sonic-rs alone,
/// and a borrowed serde_json parse of a few typed fields, for comparison.
fn bench_baselines(c: &mut Criterion) {
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Few<'a> {
        #[serde(borrow, rename = "eventName")]
        event_name: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, rename = "eventSource")]
        event_source: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, rename = "eventTime")]
        event_time: Option<std::borrow::Cow<'a, str>>,
    }
    let records = records("aws/cloudtrail-records.jsonl");
    let texts: Vec<&str> = records
        .iter()
        .map(|r| std::str::from_utf8(r).unwrap())
        .collect();
    let mut group = c.benchmark_group("baseline_cloudtrail");
    group.throughput(Throughput::Elements(texts.len() as u64));
    group.bench_function("sonic_skip", |b| {
        b.iter(|| {
            for t in &texts {
                std::hint::black_box(sonic_rs::from_str::<serde::de::IgnoredAny>(t).unwrap());
            }
        })
    });
    group.bench_function("sonic_typed_3_fields", |b| {
        b.iter(|| {
            for t in &texts {
                std::hint::black_box(sonic_rs::from_str::<Few<'_>>(t).unwrap());
            }
        })
    });
    let mut tree = sonic_rs::PointerTree::new();
    for path in [
        "eventVersion",
        "eventTime",
        "eventSource",
        "eventName",
        "awsRegion",
        "sourceIPAddress",
        "userAgent",
        "errorCode",
        "errorMessage",
        "eventID",
        "readOnly",
        "eventType",
        "recipientAccountId",
        "resources",
        "Records",
        "records",
        "logEvents",
        "CloudTrailEvent",
        "detail-type",
        "protoPayload",
        "operationName",
        "time",
        "resourceId",
        "identity",
    ] {
        tree.add_path([path]);
    }
    for path in [
        "type",
        "arn",
        "principalId",
        "accountId",
        "accessKeyId",
        "userName",
        "invokedBy",
    ] {
        tree.add_path(["userIdentity", path]);
    }
    tree.add_path([
        "userIdentity",
        "sessionContext",
        "attributes",
        "mfaAuthenticated",
    ]);
    tree.add_path(["userIdentity", "sessionContext", "sessionIssuer", "arn"]);
    group.bench_function("sonic_get_many_33_paths", |b| {
        b.iter(|| {
            for t in &texts {
                std::hint::black_box(sonic_rs::get_many(*t, &tree).unwrap());
            }
        })
    });
    group.bench_function("serde_json_typed_3_fields", |b| {
        b.iter(|| {
            for t in &texts {
                std::hint::black_box(serde_json::from_str::<Few<'_>>(t).unwrap());
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench_parse, bench_baselines
}
criterion_main!(benches);
