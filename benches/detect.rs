//! Detection throughput, one core:
//! - `parse_detect/*`: parse + detect of CloudTrail records, one per payload,
//!   with the built-in pack, and with the Sigma cloud rules added when the
//!   shared corpus is beside the repository;
//! - `detect_only/{50,500}_rules`: detection on parsed events with 50 and 500
//!   generated rules, to show the cost per event does not grow with the number
//!   of rules (the index looks up the event's (cloud, service, operation)).

use std::path::Path;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use seamwatch::detect::finding::SourceRef;
use seamwatch::detect::loader::{load_builtin, load_path};
use seamwatch::detect::rule::parse_rule_file;
use seamwatch::detect::{Detector, RuleSet};
use seamwatch::event::{AuditEvent, Decoded, Decoder};
use seamwatch::matrix::Matrix;

fn records() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out: Vec<Vec<u8>> =
        std::fs::read_to_string(root.join("tests/fixtures/aws/cloudtrail-records.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.as_bytes().to_vec())
            .collect();
    // More variety from the shared corpus when it is there.
    let corpus = root.join("../shared/corpus/events/aws/otrf-ec2-proxy-s3-exfiltration.jsonl");
    if let Ok(text) = std::fs::read_to_string(corpus) {
        out.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.as_bytes().to_vec()),
        );
    }
    out
}

fn detector(with_sigma: bool) -> Detector {
    let mut rules = load_builtin().unwrap();
    let sigma = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/sigma/rules/cloud");
    if with_sigma && sigma.is_dir() {
        rules.extend(load_path(&sigma).unwrap().rules);
    }
    Detector::new(RuleSet::new(rules), Arc::new(Matrix::builtin()))
}

fn run(
    detector: &Detector,
    decoder: &Decoder,
    inputs: &[Vec<u8>],
    findings: &mut Vec<seamwatch::detect::Finding>,
) -> usize {
    let mut n = 0;
    for input in inputs {
        decoder.decode(input, &mut |d: Decoded<'_>| {
            if let Ok(event) = d.result {
                findings.clear();
                detector.detect(&event, SourceRef::Unknown, findings);
                n += findings.len();
            }
        });
    }
    n
}

fn bench_parse_detect(c: &mut Criterion) {
    let inputs = records();
    let decoder = Decoder::default();
    let mut group = c.benchmark_group("parse_detect");
    group.throughput(Throughput::Elements(inputs.len() as u64));
    for (name, with_sigma) in [("builtin_pack", false), ("builtin_and_sigma", true)] {
        let detector = detector(with_sigma);
        let mut findings = Vec::new();
        group.bench_function(
            BenchmarkId::from_parameter(format!("{name}_{}_rules", detector.rules().len())),
            |b| b.iter(|| run(&detector, &decoder, &inputs, &mut findings)),
        );
    }
    group.finish();
}

/// `n` rules over `n` distinct operations of a few services, each with a condition.
fn generated_rules(n: usize) -> RuleSet {
    let mut yaml = String::from("rules:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - id: gen.rule_{i}\n    title: generated {i}\n    severity: low\n    cloud: aws\n    domain: compute\n    match:\n      service: svc{}.amazonaws.com\n      operation: Op{i}\n      where:\n        - field: requestParameters.name\n          prefix: prod-\n",
            i % 7
        ));
    }
    // The events' own operations, so they find candidates too.
    yaml.push_str("  - id: gen.real\n    title: real\n    severity: low\n    cloud: aws\n    domain: compute\n    match:\n      service: ec2.amazonaws.com\n      operation: [RunInstances, DescribeInstances, AuthorizeSecurityGroupIngress]\n      where:\n        - field: requestParameters.instanceType\n          prefix: p3\n");
    RuleSet::new(parse_rule_file(&yaml, Path::new("generated.yaml")).unwrap())
}

fn bench_rule_count(c: &mut Criterion) {
    let inputs = records();
    let events: Vec<AuditEvent<'static>> = inputs
        .iter()
        .flat_map(|i| Decoder::default().decode_owned(i))
        .filter_map(Result::ok)
        .collect();
    let mut group = c.benchmark_group("detect_only");
    group.throughput(Throughput::Elements(events.len() as u64));
    for n in [50, 500] {
        let detector = Detector::new(generated_rules(n), Arc::new(Matrix::builtin()));
        let mut findings = Vec::new();
        group.bench_function(BenchmarkId::from_parameter(format!("{n}_rules")), |b| {
            b.iter(|| {
                let mut total = 0;
                for event in &events {
                    findings.clear();
                    detector.detect(event, SourceRef::Unknown, &mut findings);
                    total += findings.len();
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench_parse_detect, bench_rule_count
}
criterion_main!(benches);
