//! Replay of the three clouds' native archive layouts, generated here with
//! their real directory structure from the demo corpus (synthetic CloudTrail
//! background plus the correlation tests' attack sequences for AWS, Azure and
//! GCP):
//!
//! - CloudTrail S3 layout (`AWSLogs/<account>/CloudTrail/<region>/<y>/<m>/<d>/…json.gz`,
//!   one gzipped `Records` object per account, region and 5-minute delivery,
//!   each holding the events of the 15 minutes before it, out of order), an
//!   organization trail prefix, and digest files that must be skipped;
//! - Azure Activity Log export (`resourceId=/SUBSCRIPTIONS/<id>/y=/m=/d=/h=/m=00/PT1H.json`);
//! - GCP Cloud Storage sink (`cloudaudit.googleapis.com/activity/<y>/<m>/<d>/<hh>:00:00_<hh>:59:59_S0.json`).
//!
//! Replaying the tree must give exactly the findings of the same events fed
//! one by one in event-time order, and `--since`/`--until` must prune files by
//! their path dates and drop events outside the range.

use std::collections::BTreeSet;
use std::sync::Arc;

use seamwatch::analyze::{Analyzer, Scratch};
use seamwatch::correlate::{CorrelationConfig, Stream};
use seamwatch::detect::SourceRef;
use seamwatch::detect::loader::load_builtin_report;
use seamwatch::event::{Decoder, FormatHint};
use seamwatch::matrix::Matrix;
use seamwatch::pipeline::demo::{AZURE_TOPIC, DemoRecord, GCP_TOPIC, demo_records};
use seamwatch::replay::Filter;

mod common;
use common::archive::{replay_ids, time, write_archive};

fn analyzer() -> Analyzer {
    Analyzer::build(
        load_builtin_report().unwrap(),
        Arc::new(Matrix::builtin()),
        CorrelationConfig::default(),
    )
    .0
}

/// Finding ids of the same records fed one by one in event-time order.
fn sorted_ids(records: &[DemoRecord], filter: &Filter) -> (BTreeSet<String>, u64) {
    let analyzer = analyzer();
    let mut sorted: Vec<&DemoRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.time_ms);
    let mut stream = Stream::new();
    let mut scratch = Scratch::default();
    let mut findings = Vec::new();
    let mut events = 0;
    for r in sorted {
        let hint = match r.topic {
            t if t == AZURE_TOPIC => FormatHint::Azure,
            t if t == GCP_TOPIC => FormatHint::Gcp,
            _ => FormatHint::CloudTrail,
        };
        let decoder = Decoder {
            hint,
            ..Decoder::default()
        };
        for event in decoder.decode_owned(&r.payload).into_iter().flatten() {
            if filter.keeps_event(&event) {
                events += 1;
                analyzer.process(
                    &event,
                    SourceRef::Unknown,
                    &mut stream,
                    &mut scratch,
                    &mut findings,
                );
            }
        }
    }
    analyzer.finish(&mut stream, &mut findings);
    (findings.into_iter().map(|f| f.id).collect(), events)
}

#[test]
fn archive_layouts_replay_to_the_findings_of_time_ordered_input() {
    let records = demo_records(analyzer().correlator().correlations(), 4_000);
    let dir = tempfile::tempdir().unwrap();
    let broken = write_archive(dir.path(), &records);
    assert!(broken > 0, "the demo corpus carries broken records");

    let all = Filter::default();
    let (replayed, events, digests, pruned) = replay_ids(&analyzer(), dir.path(), &all);
    let (expected, expected_events) = sorted_ids(&records, &all);
    assert!(digests > 10, "digest files skipped: {digests}");
    assert_eq!(pruned, 0);
    assert_eq!(events, expected_events);
    assert!(expected.len() > 50, "{}", expected.len());
    let missing: Vec<_> = expected.difference(&replayed).take(5).collect();
    let extra: Vec<_> = replayed.difference(&expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "replay differs from time-ordered input: {} missing {missing:?}, {} extra {extra:?}",
        expected.difference(&replayed).count(),
        replayed.difference(&expected).count()
    );
}

#[test]
fn since_and_until_prune_files_by_path_and_events_by_time() {
    let records = demo_records(analyzer().correlator().correlations(), 4_000);
    let dir = tempfile::tempdir().unwrap();
    write_archive(dir.path(), &records);
    let mut times: Vec<i64> = records.iter().map(|r| r.time_ms).collect();
    times.sort();
    // The middle third of the time range.
    let (lo, hi) = (times[0], times[times.len() - 1]);
    let since = time(lo + (hi - lo) / 3);
    let until = time(lo + 2 * (hi - lo) / 3);
    let filter = Filter {
        since: Some(since),
        until: Some(until),
        ..Filter::default()
    };
    let (_, events, _, pruned) = replay_ids(&analyzer(), dir.path(), &filter);
    let (_, expected_events) = sorted_ids(&records, &filter);
    assert!(pruned > 0, "no file was pruned by its path date");
    assert_eq!(events, expected_events);
    assert!(events > 0);
    let (_, all_events, _, _) = replay_ids(&analyzer(), dir.path(), &Filter::default());
    assert!(events < all_events);
}
