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
//!
//! Large undated JSON Lines exports are read a piece at a time: within the
//! allowed lateness that must be the same as reading each file whole and
//! sorting it; an event further behind must still arrive, counted late.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use seamwatch::analyze::{Analyzer, Scratch};
use seamwatch::correlate::{CorrelationConfig, Stream};
use seamwatch::detect::SourceRef;
use seamwatch::detect::loader::load_builtin_report;
use seamwatch::event::ErrorReason;
use seamwatch::event::{Decoder, FormatHint};
use seamwatch::matrix::Matrix;
use seamwatch::pipeline::demo::{AZURE_TOPIC, DemoRecord, GCP_TOPIC, demo_records};
use seamwatch::replay::{
    Filter, ReadOptions, ReadStats, Store, file_names, plan, read_ordered, source_of,
};

mod common;
use common::archive::{gz, replay_ids, time, write_archive};

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

/// A replay prepares each event on the decoding threads (detection and the
/// correlation observations) and drops it there; a reader that keeps every
/// event and runs the whole analyzer on the ordering thread must find the
/// same findings, whole (evidence, context, counts) and in the same order.
#[test]
fn events_prepared_where_they_are_decoded_find_what_the_whole_analyzer_finds() {
    let records = demo_records(analyzer().correlator().correlations(), 4_000);
    let dir = tempfile::tempdir().unwrap();
    write_archive(dir.path(), &records);
    let all = Filter::default();
    let plan = plan(&common::archive::files(dir.path()), &all);
    let store = Store::default();
    let options = ReadOptions::new(Decoder::default(), &all, 2, &store);
    let run = |prepared: bool| {
        let analyzer = analyzer();
        let mut stream = Stream::in_time_order();
        let mut findings = Vec::new();
        if prepared {
            seamwatch::replay::analyze(
                &plan,
                &options,
                &analyzer,
                &mut stream,
                |found| findings.append(found),
                |_, _| {},
                |_| {},
            )
            .unwrap();
        } else {
            let names = file_names(&plan);
            let mut scratch = Scratch::default();
            read_ordered(
                &plan,
                &options,
                |_| (),
                |e, ()| {
                    let source = source_of(&names, e);
                    analyzer.process(&e.event, source, &mut stream, &mut scratch, &mut findings);
                },
                |_, _| {},
                |_| {},
            )
            .unwrap();
        }
        analyzer.finish(&mut stream, &mut findings);
        findings
    };
    let (prepared, whole) = (run(true), run(false));
    assert!(
        prepared.iter().filter(|f| f.correlation.is_some()).count() > 10,
        "correlation findings: {}",
        prepared.iter().filter(|f| f.correlation.is_some()).count()
    );
    assert_eq!(prepared.len(), whole.len());
    for (a, b) in prepared.iter().zip(&whole) {
        assert_eq!(a, b);
    }
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

/// What a replay of JSON Lines files did.
struct Replayed {
    /// Each event as it reached the correlator: time (ms), file, line.
    order: Vec<(i64, usize, u64)>,
    ids: BTreeSet<String>,
    /// Rounds of decoding (progress calls).
    rounds: usize,
    late: u64,
    stats: ReadStats,
}

fn replay_in_pieces(paths: &[PathBuf], piece_bytes: usize) -> Replayed {
    let analyzer = analyzer();
    let filter = Filter::default();
    let plan = plan(paths, &filter);
    let names = file_names(&plan);
    let store = Store::default();
    let options = ReadOptions {
        piece_bytes,
        ..ReadOptions::new(Decoder::default(), &filter, 2, &store)
    };
    let (mut stream, mut scratch) = (Stream::in_time_order(), Scratch::default());
    let (mut order, mut findings, mut rounds) = (Vec::new(), Vec::new(), 0);
    let stats = read_ordered(
        &plan,
        &options,
        |_| (),
        |e, ()| {
            let time = e.event.time.map_or(i64::MIN, |t| t.timestamp_millis());
            order.push((time, e.file, e.line));
            let source = source_of(&names, e);
            analyzer.process(&e.event, source, &mut stream, &mut scratch, &mut findings);
        },
        |_, _| {},
        |_| rounds += 1,
    )
    .unwrap();
    analyzer.finish(&mut stream, &mut findings);
    Replayed {
        order,
        ids: findings.into_iter().map(|f| f.id).collect(),
        rounds,
        late: analyzer.correlator().stats().late,
        stats,
    }
}

/// Writes `records` as JSON Lines, alternately into `a.jsonl` and
/// `b.jsonl` (two exports covering the same hours).
fn write_exports(dir: &Path, records: &[&DemoRecord]) -> Vec<PathBuf> {
    let paths = vec![dir.join("a.jsonl"), dir.join("b.jsonl")];
    let mut texts = [Vec::new(), Vec::new()];
    for (i, r) in records.iter().enumerate() {
        texts[i % 2].extend_from_slice(&r.payload);
        texts[i % 2].push(b'\n');
    }
    for (path, text) in paths.iter().zip(&texts) {
        std::fs::write(path, text).unwrap();
    }
    paths
}

/// One-line demo records in event-time order, each moved by up to a
/// minute (well within the five minutes of allowed lateness).
fn jittered_records(records: &[DemoRecord]) -> Vec<&DemoRecord> {
    let mut lines: Vec<&DemoRecord> = records
        .iter()
        .filter(|r| !r.payload.contains(&b'\n'))
        .collect();
    assert!(
        lines.len() * 10 > records.len() * 9,
        "demo records are one line each"
    );
    lines.sort_by_key(|r| r.time_ms + (r.time_ms.wrapping_mul(2_654_435_761) % 60_000).abs());
    // A good record first, so that both files open as JSON Lines.
    let good = lines
        .iter()
        .position(|r| {
            !Decoder::default()
                .decode_owned(&r.payload)
                .iter()
                .any(Result::is_err)
        })
        .unwrap();
    lines.swap(0, good);
    lines.swap(1, good + 1);
    lines
}

/// Each file's lines in the order they reached the correlator.
fn lines_per_file(order: &[(i64, usize, u64)]) -> [Vec<u64>; 2] {
    let mut out = [Vec::new(), Vec::new()];
    for &(_, file, line) in order {
        out[file].push(line);
    }
    out
}

#[test]
fn undated_exports_read_in_pieces_replay_as_if_read_whole() {
    let records = demo_records(analyzer().correlator().correlations(), 4_000);
    let dir = tempfile::tempdir().unwrap();
    let lines = jittered_records(&records);
    let paths = write_exports(dir.path(), &lines);

    let pieces = replay_in_pieces(&paths, 16 << 10);
    let whole = replay_in_pieces(&paths, usize::MAX);
    assert_eq!(whole.rounds, 1);
    assert!(pieces.rounds > 20, "read in {} rounds", pieces.rounds);

    // The same events, in event-time order, each file's in the same order.
    assert!(pieces.order.len() > 3_000, "{}", pieces.order.len());
    assert_eq!(pieces.order.len(), whole.order.len());
    let times = |r: &Replayed| r.order.iter().map(|o| o.0).collect::<Vec<_>>();
    assert!(times(&pieces).is_sorted(), "pieces out of order");
    assert_eq!(times(&pieces), times(&whole));
    assert_eq!(lines_per_file(&pieces.order), lines_per_file(&whole.order));

    // The same findings, and those of the records fed in time order.
    assert_eq!((pieces.late, whole.late), (0, 0));
    assert!(whole.ids.len() > 50, "{}", whole.ids.len());
    assert_eq!(pieces.ids, whole.ids);
    let owned: Vec<DemoRecord> = lines
        .iter()
        .map(|r| DemoRecord {
            topic: r.topic,
            key: r.key.clone(),
            payload: r.payload.clone(),
            time_ms: r.time_ms,
        })
        .collect();
    assert_eq!(pieces.ids, sorted_ids(&owned, &Filter::default()).0);
}

#[test]
fn an_event_further_behind_than_the_lateness_still_arrives_counted_late() {
    let records = demo_records(analyzer().correlator().correlations(), 4_000);
    let dir = tempfile::tempdir().unwrap();
    let mut lines = jittered_records(&records);
    // An early record that the correlator observes, moved to the end: more
    // than 15 minutes behind the events around it.
    let probe = analyzer();
    let observed = |r: &DemoRecord| {
        let before = probe.correlator().stats().observations;
        let (mut stream, mut scratch, mut out) = (Stream::new(), Scratch::default(), Vec::new());
        for event in Decoder::default()
            .decode_owned(&r.payload)
            .into_iter()
            .flatten()
        {
            probe.process(
                &event,
                SourceRef::Unknown,
                &mut stream,
                &mut scratch,
                &mut out,
            );
        }
        probe.finish(&mut stream, &mut out);
        probe.correlator().stats().observations > before
    };
    let end = lines.last().unwrap().time_ms;
    let at = (2..lines.len())
        .find(|&i| end - lines[i].time_ms > 15 * 60_000 && observed(lines[i]))
        .unwrap();
    let moved = lines.remove(at);
    lines.push(moved);
    // Both files end with it, so each has an event far behind.
    lines.push(moved);
    let paths = write_exports(dir.path(), &lines);

    let pieces = replay_in_pieces(&paths, 16 << 10);
    let whole = replay_in_pieces(&paths, usize::MAX);
    // Nothing lost: every event arrives in both.
    assert_eq!(pieces.order.len(), whole.order.len());
    let mut a = pieces.order.clone();
    let mut b = whole.order.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // Read whole, each file is sorted; in pieces, the two moved events come
    // behind newer ones (one per file), and the correlator counts them late.
    assert_eq!(whole.late, 0);
    assert!(pieces.late >= 2, "late: {}", pieces.late);
    let descents = |r: &Replayed| {
        r.order
            .windows(2)
            .filter(|w| w[1].0 < w[0].0)
            .map(|w| w[1].0)
            .collect::<Vec<_>>()
    };
    assert_eq!(descents(&whole), Vec::<i64>::new());
    assert_eq!(descents(&pieces), vec![moved.time_ms; 2]);
}

#[test]
fn a_gzipped_export_is_read_in_pieces_and_a_broken_one_keeps_what_inflated() {
    let records = demo_records(analyzer().correlator().correlations(), 4_000);
    let dir = tempfile::tempdir().unwrap();
    let lines = jittered_records(&records);
    let mut text = Vec::new();
    for r in &lines {
        text.extend_from_slice(&r.payload);
        text.push(b'\n');
    }
    let packed = gz(&text);
    let whole_gz = dir.path().join("export.jsonl.gz");
    std::fs::write(&whole_gz, &packed).unwrap();

    let pieces = replay_in_pieces(std::slice::from_ref(&whole_gz), 16 << 10);
    let whole = replay_in_pieces(std::slice::from_ref(&whole_gz), usize::MAX);
    assert_eq!(whole.rounds, 1);
    assert!(pieces.rounds > 20, "read in {} rounds", pieces.rounds);
    assert!(pieces.order.len() > 3_000, "{}", pieces.order.len());
    assert_eq!(pieces.order, whole.order);
    assert_eq!(pieces.ids, whole.ids);
    // Progress counts the file's bytes read, compressed, as for any file.
    assert_eq!(pieces.stats.bytes, packed.len() as u64);
    assert_eq!(whole.stats.bytes, packed.len() as u64);

    // Cut short at two thirds: read whole, the file inflates to nothing;
    // in pieces, what inflated before the cut is replayed, and the cut is
    // one rejected record.
    let cut = dir.path().join("cut.jsonl.gz");
    std::fs::write(&cut, &packed[..packed.len() * 2 / 3]).unwrap();
    let pieces = replay_in_pieces(std::slice::from_ref(&cut), 16 << 10);
    let whole = replay_in_pieces(std::slice::from_ref(&cut), usize::MAX);
    assert_eq!(whole.order.len(), 0);
    assert_eq!(whole.stats.decode.errors(ErrorReason::Decompression), 1);
    assert_eq!(pieces.stats.decode.errors(ErrorReason::Decompression), 1);
    let kept = pieces.order.len();
    assert!(kept > whole_len(&lines) / 2, "{kept} events kept");
    assert!(kept < whole_len(&lines), "{kept} events kept");
    // They are the first events of the file, in order.
    assert!(pieces.order.iter().map(|o| o.0).is_sorted());
}

fn whole_len(lines: &[&DemoRecord]) -> usize {
    lines
        .iter()
        .map(|r| {
            Decoder::default()
                .decode_owned(&r.payload)
                .iter()
                .filter(|e| e.is_ok())
                .count()
        })
        .sum()
}

#[test]
fn a_file_gone_before_it_is_read_stops_the_replay_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let records = demo_records(&[], 200);
    let ordered: Vec<&DemoRecord> = records.iter().collect();
    let paths = write_exports(dir.path(), &ordered);
    let filter = Filter::default();
    let plan = plan(&paths, &filter);
    // Planned, then gone: the decoding threads cannot read it.
    std::fs::remove_file(&paths[1]).unwrap();
    let store = Store::default();
    for threads in [1, 2, 4] {
        let options = ReadOptions::new(Decoder::default(), &filter, threads, &store);
        let mut reached = 0;
        let err = read_ordered(
            &plan,
            &options,
            |_| (),
            |_, ()| reached += 1,
            |_, _| {},
            |_| {},
        )
        .expect_err("a missing file is an error");
        assert_eq!(err.path, paths[1], "{threads} threads");
        assert_eq!(err.source.kind(), std::io::ErrorKind::NotFound);
        // Nothing of a round that failed reaches the sink.
        assert_eq!(reached, 0, "{threads} threads");
    }
}
