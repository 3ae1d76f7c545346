//! The correlator end to end, on the built-in pack: arrival order within the
//! allowed lateness does not change findings (property test), several worker
//! threads on separate streams find what one finds, bounded state evicts and
//! counts, late events are counted and still applied, a muted stream emits
//! nothing, and Sigma correlation rules load and fire.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use seamwatch::analyze::{Analyzer, Scratch};
use seamwatch::correlate::{CorrelationConfig, Stream};
use seamwatch::detect::finding::SourceRef;
use seamwatch::detect::loader::{LoadReport, load_builtin_report};
use seamwatch::detect::sigma::load_sigma_text;
use seamwatch::detect::{Finding, FindingKind};
use seamwatch::event::{AuditEvent, Decoder};
use seamwatch::matrix::Matrix;
use seamwatch::synth::{Generator, SynthConfig, SynthEvent};

fn analyzer(config: CorrelationConfig) -> Analyzer {
    let (analyzer, rejected) = Analyzer::build(
        load_builtin_report().unwrap(),
        Arc::new(Matrix::builtin()),
        config,
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    analyzer
}

fn decode(events: &[SynthEvent]) -> Vec<AuditEvent<'static>> {
    let decoder = Decoder::default();
    events
        .iter()
        .map(|e| {
            let mut d = decoder.decode_owned(e.json.as_bytes());
            d.pop().unwrap().unwrap()
        })
        .collect()
}

/// Correlation findings as comparable JSON, by id. Each event's source is
/// its generation index, whatever order it is fed in.
fn run(analyzer: &Analyzer, events: &[(usize, &AuditEvent<'_>)]) -> BTreeMap<String, String> {
    let mut stream = Stream::new();
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    for (i, event) in events {
        let source = SourceRef::File {
            path: "synth",
            line: *i as u64,
            index: 0,
        };
        analyzer.process(event, source, &mut stream, &mut scratch, &mut out);
    }
    analyzer.finish(&mut stream, &mut out);
    correlation_findings(out)
}

fn correlation_findings(out: Vec<Finding>) -> BTreeMap<String, String> {
    out.into_iter()
        .filter(|f| f.kind == FindingKind::Correlation)
        .map(|f| (f.id.clone(), serde_json::to_string(&f).unwrap()))
        .collect()
}

fn synth(seed: u64, n: usize, principals: u32) -> Vec<SynthEvent> {
    Generator::new(SynthConfig {
        seed,
        principals,
        accounts: 3,
        mean_gap_ms: 4_000,
        security_share: 0.5,
        ..SynthConfig::default()
    })
    .take(n)
    .collect()
}

const LATENESS_MS: i64 = 5 * 60 * 1000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Each event is delayed by a random amount below the allowed lateness;
    /// arriving in that order, the findings are exactly those of sorted input.
    #[test]
    fn shuffled_within_lateness_equals_sorted(seed in 0u64..10_000, delays in proptest::collection::vec(0i64..LATENESS_MS, 600)) {
        let analyzer_sorted = analyzer(CorrelationConfig::default());
        let analyzer_shuffled = analyzer(CorrelationConfig::default());
        let generated = synth(seed, delays.len(), 6);
        let events = decode(&generated);
        let sorted: Vec<(usize, &AuditEvent<'_>)> = events.iter().enumerate().collect();
        let mut shuffled = sorted.clone();
        shuffled.sort_by_key(|(i, _)| (generated[*i].time_ms + delays[*i], *i));
        let a = run(&analyzer_sorted, &sorted);
        let b = run(&analyzer_shuffled, &shuffled);
        prop_assert!(!a.is_empty(), "the mix should produce correlation findings");
        prop_assert_eq!(a, b);
        prop_assert_eq!(analyzer_shuffled.correlator().stats().late, 0);
    }
}

#[test]
fn arrival_beyond_the_lateness_is_counted_and_still_applied() {
    let analyzer = analyzer(CorrelationConfig::default());
    let generated = synth(11, 400, 4);
    let events = decode(&generated);
    let mut order: Vec<(usize, &AuditEvent<'_>)> = events.iter().enumerate().collect();
    // The first event arrives last: an hour late.
    let first = order.remove(0);
    order.push(first);
    run(&analyzer, &order);
    let stats = analyzer.correlator().stats();
    assert!(stats.late >= 1, "{stats:?}");
    assert!(stats.observations > stats.late);
}

#[test]
fn two_workers_on_separate_streams_find_what_one_finds() {
    let generated = synth(5, 4_000, 40);
    let events = decode(&generated);
    let one = analyzer(CorrelationConfig::default());
    let all: Vec<(usize, &AuditEvent<'_>)> = events.iter().enumerate().collect();
    let expected = run(&one, &all);
    assert!(expected.len() > 10, "{}", expected.len());

    // Partition by account, as Kafka keys would: every group lives in one.
    let shared = analyzer(CorrelationConfig::default());
    let parts: Vec<Vec<(usize, &AuditEvent<'_>)>> = (0..2)
        .map(|w| {
            all.iter()
                .filter(|(i, _)| (generated[*i].account.bytes().last().unwrap() % 2) as usize == w)
                .copied()
                .collect()
        })
        .collect();
    let results: Vec<BTreeMap<String, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter()
            .map(|part| scope.spawn(|| run(&shared, part)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut merged = BTreeMap::new();
    for r in results {
        merged.extend(r);
    }
    // The silence rule sees each partition's own clock; compare the rest.
    let silence = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        m.iter()
            .filter(|(_, v)| !v.contains("correlation.source_went_silent"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(silence(&merged), silence(&expected));
}

#[test]
fn state_is_bounded_evictions_are_counted_and_expiry_frees_keys() {
    let config = CorrelationConfig {
        max_keys: 50,
        ..CorrelationConfig::default()
    };
    let analyzer = analyzer(config);
    let generated = synth(3, 5_000, 2_000);
    let events = decode(&generated);
    let all: Vec<(usize, &AuditEvent<'_>)> = events.iter().enumerate().collect();
    run(&analyzer, &all);
    let stats = analyzer.correlator().stats();
    assert!(stats.keys <= 50, "{stats:?}");
    assert!(stats.evicted > 0, "{stats:?}");

    // Unbounded, the keys of windows long past are gone by the end.
    let analyzer = self::analyzer(CorrelationConfig::default());
    run(&analyzer, &all);
    let stats = analyzer.correlator().stats();
    assert_eq!(stats.evicted, 0);
    assert!(stats.keys < 2_000, "{stats:?}");
}

#[test]
fn a_muted_stream_rebuilds_state_but_emits_nothing() {
    let analyzer = analyzer(CorrelationConfig::default());
    let generated = synth(9, 2_000, 5);
    let events = decode(&generated);
    let mut stream = Stream::new();
    stream.set_muted(true);
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    for event in &events {
        analyzer.process(
            event,
            SourceRef::Unknown,
            &mut stream,
            &mut scratch,
            &mut out,
        );
    }
    analyzer.finish(&mut stream, &mut out);
    assert!(out.iter().all(|f| f.kind != FindingKind::Correlation));
    assert!(analyzer.correlator().stats().muted > 0);
}

#[test]
fn finding_ids_are_the_same_on_a_second_run() {
    let generated = synth(21, 1_500, 5);
    let events = decode(&generated);
    let all: Vec<(usize, &AuditEvent<'_>)> = events.iter().enumerate().collect();
    let a = run(&analyzer(CorrelationConfig::default()), &all);
    let b = run(&analyzer(CorrelationConfig::default()), &all);
    assert!(!a.is_empty());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
}

const SIGMA: &str = r#"
title: Snapshot deleted
id: 0b6a1c5e-0000-4000-8000-00000000aaaa
name: snapshot_deleted
status: test
logsource:
    product: aws
    service: cloudtrail
detection:
    selection:
        eventSource: ec2.amazonaws.com
        eventName: DeleteSnapshot
    condition: selection
level: low
---
title: Many snapshots deleted by one identity
id: 0b6a1c5e-0000-4000-8000-00000000bbbb
status: test
correlation:
    type: event_count
    rules:
        - snapshot_deleted
    group-by:
        - userIdentity.arn
    timespan: 10m
    condition:
        gte: 3
level: high
---
title: Regions with deletions
id: 0b6a1c5e-0000-4000-8000-00000000cccc
status: test
correlation:
    type: value_count
    rules:
        - snapshot_deleted
    group-by:
        - userIdentity.arn
    timespan: 10m
    condition:
        field: awsRegion
        gte: 2
level: medium
---
title: Median is not supported
id: 0b6a1c5e-0000-4000-8000-00000000dddd
status: test
correlation:
    type: value_median
    rules:
        - snapshot_deleted
    group-by:
        - userIdentity.arn
    timespan: 10m
    condition:
        field: awsRegion
        gte: 2
level: medium
"#;

#[test]
fn sigma_correlations_load_resolve_and_fire() {
    let load = load_sigma_text(SIGMA, Path::new("snapshots.yml"));
    assert_eq!(load.rules.len(), 1);
    assert_eq!(load.correlations.len(), 2, "{:?}", load.rejected);
    assert!(
        load.rejected
            .iter()
            .any(|(_, reason)| reason.contains("value_median")),
        "{:?}",
        load.rejected
    );
    let report = LoadReport {
        rules: load.rules,
        correlations: load.correlations,
        ..LoadReport::default()
    };
    let (analyzer, rejected) = Analyzer::build(
        report,
        Arc::new(Matrix::builtin()),
        CorrelationConfig::default(),
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    // `generate` defaults to false: the base rule feeds the correlation only.
    assert!(!analyzer.detector().rules().rules()[0].emit);

    let event = |minute: u32, n: u32, region: &str| {
        format!(
            r#"{{"eventVersion":"1.09","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/mallory","accountId":"111111111111","userName":"mallory"}},"eventTime":"2025-03-01T10:{minute:02}:00Z","eventSource":"ec2.amazonaws.com","eventName":"DeleteSnapshot","awsRegion":"{region}","eventID":"00000000-0000-4000-8000-{n:012}","recipientAccountId":"111111111111","requestParameters":{{"snapshotId":"snap-{n}"}}}}"#
        )
    };
    let records = [
        event(0, 1, "us-east-1"),
        event(1, 2, "us-east-1"),
        event(2, 3, "eu-west-1"),
    ];
    let decoder = Decoder::default();
    let mut stream = Stream::new();
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    for record in &records {
        for event in decoder.decode_owned(record.as_bytes()) {
            analyzer.process(
                &event.unwrap(),
                SourceRef::Unknown,
                &mut stream,
                &mut scratch,
                &mut out,
            );
        }
    }
    analyzer.finish(&mut stream, &mut out);
    let mut ids: Vec<&str> = out.iter().map(|f| f.rule_id.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "sigma.0b6a1c5e-0000-4000-8000-00000000bbbb",
            "sigma.0b6a1c5e-0000-4000-8000-00000000cccc"
        ]
    );
    let count = out.iter().find(|f| f.rule_id.ends_with("bbbb")).unwrap();
    assert_eq!(count.evidence.len(), 3);
    assert_eq!(
        count.correlation.as_ref().unwrap().group,
        "userIdentity.arn=arn:aws:iam::111111111111:user/mallory"
    );
}

#[test]
fn moving_an_idle_stream_on_fires_an_absence_deadline() {
    let analyzer = analyzer(CorrelationConfig::default());
    let stop = r#"{"eventVersion":"1.09","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/mallory","accountId":"111111111111","userName":"mallory"},"eventTime":"2025-03-01T10:00:00Z","eventSource":"cloudtrail.amazonaws.com","eventName":"StopLogging","awsRegion":"us-east-1","eventID":"00000000-0000-4000-8000-0000000000aa","recipientAccountId":"111111111111","requestParameters":{"name":"org-trail"}}"#;
    let event = Decoder::default()
        .decode_owned(stop.as_bytes())
        .pop()
        .unwrap()
        .unwrap();
    let mut stream = Stream::new();
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    analyzer.process(
        &event,
        SourceRef::Unknown,
        &mut stream,
        &mut scratch,
        &mut out,
    );
    let absence = |out: &[Finding]| {
        out.iter()
            .filter(|f| f.rule_id == "aws.correlation.cloudtrail_not_restarted")
            .count()
    };
    // 15 minutes later, less the 5 minutes of lateness: not yet due.
    let at = |m: u32| format!("2025-03-01T10:{m:02}:00Z").parse().unwrap();
    analyzer
        .correlator()
        .advance_to(&mut stream, at(19), &mut out);
    assert_eq!(absence(&out), 0);
    analyzer
        .correlator()
        .advance_to(&mut stream, at(21), &mut out);
    assert_eq!(absence(&out), 1);
}

/// A replay's stream holds back the observations of a sequence's later
/// steps until their millisecond is complete, and drops those whose group
/// has no sequence begun. A start of the same millisecond that arrives
/// after such an observation but sorts before it must still count: the
/// ordered stream finds what the stream with lateness finds, in every
/// arrival order, however the event ids' tie-break falls.
#[test]
fn held_back_sequence_steps_meet_a_start_of_the_same_millisecond() {
    let analyzer = analyzer(CorrelationConfig::default());
    let created = |id: usize, time: &str, key: &str| {
        format!(
            r#"{{"eventVersion":"1.09","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/mallory","accountId":"111111111111","userName":"mallory","principalId":"AIDAEXAMPLEMALLORY01","accessKeyId":"AKIAEXAMPLEMALLORY01"}},"eventTime":"{time}","eventSource":"iam.amazonaws.com","eventName":"CreateAccessKey","awsRegion":"us-east-1","sourceIPAddress":"198.51.100.7","requestParameters":{{"userName":"svc-deploy"}},"responseElements":{{"accessKey":{{"accessKeyId":"{key}","status":"Active","userName":"svc-deploy"}}}},"eventID":"c0a1e7e5-0000-4000-8000-{id:012}","readOnly":false,"eventType":"AwsApiCall","recipientAccountId":"111111111111"}}"#
        )
    };
    let used = |id: usize, time: &str, key: &str| {
        format!(
            r#"{{"eventVersion":"1.09","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/svc-deploy","accountId":"111111111111","userName":"svc-deploy","principalId":"AIDAEXAMPLESVCDEPLOY","accessKeyId":"{key}"}},"eventTime":"{time}","eventSource":"s3.amazonaws.com","eventName":"ListBuckets","awsRegion":"us-east-1","sourceIPAddress":"203.0.113.99","requestParameters":null,"responseElements":null,"eventID":"c0a1e7e5-0000-4000-8000-{id:012}","readOnly":true,"eventType":"AwsApiCall","recipientAccountId":"111111111111"}}"#
        )
    };
    let decoder = Decoder::default();
    let decode = |json: &str| {
        decoder
            .decode_owned(json.as_bytes())
            .pop()
            .unwrap()
            .unwrap()
    };
    let same = "2025-03-01T10:00:00Z";
    // Group state is shared by the streams of one analyzer: each run has
    // keys of its own, and findings are compared by rule and evidence.
    let mut run_number = 0;
    let mut findings = |n: usize, order: &[usize], later: bool, mut stream: Stream| {
        run_number += 1;
        let key = format!("AKIAEXAMPLE{n:02}R{run_number:04}");
        // Another key used in the same millisecond: no sequence, dropped.
        let other = format!("AKIAEXAMPLEOTHER{run_number:04}");
        let events = [
            decode(&used(100 + n, same, &key)),
            decode(&used(200 + n, same, &other)),
            decode(&created(300 + n, same, &key)),
            decode(&used(400 + n, "2025-03-01T10:00:01Z", &key)),
        ];
        let mut scratch = Scratch::default();
        let mut out = Vec::new();
        let fed = order.iter().copied().chain(later.then_some(3));
        for i in fed {
            let source = SourceRef::File {
                path: "held-back",
                line: i as u64,
                index: 0,
            };
            analyzer.process(&events[i], source, &mut stream, &mut scratch, &mut out);
        }
        analyzer.finish(&mut stream, &mut out);
        out.into_iter()
            .filter(|f| f.kind == FindingKind::Correlation)
            .map(|f| {
                let ids: Vec<String> = f.evidence.iter().map(|e| e.event_id.clone()).collect();
                (f.rule_id, ids)
            })
            .collect::<Vec<_>>()
    };
    let (mut fired, mut silent) = (0, 0);
    for n in 0..12 {
        // Every arrival order of the three events of one millisecond, and
        // with a use a second later (which fires whatever the tie-break).
        for order in [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ] {
            for later in [false, true] {
                let expected = findings(n, &order, later, Stream::new());
                assert_eq!(
                    findings(n, &order, later, Stream::in_time_order()),
                    expected,
                    "ids {n}, order {order:?}, later use {later}"
                );
                if later {
                    assert_eq!(expected.len(), 1, "the later use fires");
                } else if expected.is_empty() {
                    silent += 1;
                } else {
                    fired += 1;
                }
            }
        }
    }
    // The tie-break put the start first for some ids and last for others.
    assert!(fired > 0 && silent > 0, "fired {fired}, silent {silent}");
}
