//! Forensic replay of archived audit logs: which files to read ([`plan`],
//! pruned by the dates in their paths before any is opened), and reading
//! them in event-time order ([`read_ordered`]) with decompression and
//! parsing on every core.
//!
//! Files are grouped into buckets by the hour in which the period their
//! path says they cover starts (files without a date form one bucket, read
//! first). Buckets are decoded in time order, one ahead of the one being
//! consumed, each file on its own thread; a bucket's events are sorted by
//! event time (stable: ties keep file and record order) and merged with the
//! events held back from the bucket before. Events at or after the earliest
//! start of the next bucket's files are held back for it, so hours that
//! overlap in event time (CloudTrail files hold events up to ~15 minutes
//! older than their delivery) still reach the correlator in order: the same
//! order the live pipeline's reorder buffer restores.

pub mod layout;
pub mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Timelike, Utc};

pub use layout::{ArchiveFile, Layout, classify, classify_prefix};
pub use source::{AwsOptions, SourceError, Store};

use crate::analyze::Analyzer;
use crate::correlate::Stream;
use crate::detect::{Finding, SourceRef};
use crate::event::{AuditEvent, Cloud, DecodeStats, Decoded, Decoder, ErrorReason};

/// What to keep: a time range and account, region and cloud filters
/// (empty lists keep everything).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub accounts: Vec<String>,
    pub regions: Vec<String>,
    pub clouds: Vec<Cloud>,
}

impl Filter {
    fn account_ok(&self, account: Option<&str>) -> bool {
        self.accounts.is_empty()
            || account.is_some_and(|a| self.accounts.iter().any(|x| x.eq_ignore_ascii_case(a)))
    }

    fn region_ok(&self, region: Option<&str>) -> bool {
        self.regions.is_empty()
            || region.is_some_and(|r| self.regions.iter().any(|x| x.eq_ignore_ascii_case(r)))
    }

    /// Whether a file may hold anything kept, judging by its path alone.
    pub fn keeps_file(&self, f: &ArchiveFile) -> bool {
        if let Some((start, end)) = f.period
            && (self.since.is_some_and(|s| end <= s) || self.until.is_some_and(|u| start >= u))
        {
            return false;
        }
        (self.clouds.is_empty() || f.cloud.is_none_or(|c| self.clouds.contains(&c)))
            && (f.account.is_none() || self.account_ok(f.account.as_deref()))
            && (f.region.is_none() || self.region_ok(f.region.as_deref()))
    }

    /// Whether an event is kept.
    pub fn keeps_event(&self, e: &AuditEvent<'_>) -> bool {
        let in_time = match e.time {
            Some(t) => self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u),
            None => self.since.is_none() && self.until.is_none(),
        };
        in_time
            && (self.clouds.is_empty() || self.clouds.contains(&e.cloud))
            && self.account_ok(e.account.as_deref())
            && self.region_ok(e.region.as_deref())
    }
}

/// The files a replay reads, and what was left out.
#[derive(Debug, Default)]
pub struct Plan {
    pub files: Vec<ArchiveFile>,
    pub digests_skipped: usize,
    pub pruned: usize,
    /// Bytes on disk of the files to read.
    pub bytes: u64,
}

/// Classifies and prunes `files` (already expanded from directories).
pub fn plan(files: &[PathBuf], filter: &Filter) -> Plan {
    let mut plan = Plan::default();
    for path in files {
        let Some(file) = classify(path) else {
            plan.digests_skipped += 1;
            continue;
        };
        if !filter.keeps_file(&file) {
            plan.pruned += 1;
            continue;
        }
        plan.bytes += std::fs::metadata(path).map_or(0, |m| m.len());
        plan.files.push(file);
    }
    plan
}

/// One event of a replay, detached from its file's bytes.
pub struct ReplayEvent {
    pub event: AuditEvent<'static>,
    /// Index into [`Plan::files`].
    pub file: usize,
    pub line: u64,
    pub index: u32,
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading {path}: {source}")]
pub struct ReadError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// What reading found: events kept, records rejected (by reason), events
/// filtered out, bytes read.
#[derive(Debug, Default)]
pub struct ReadStats {
    pub decode: DecodeStats,
    pub filtered: u64,
    pub bytes: u64,
    pub files: usize,
}

/// One file's outcome: its position in the bucket, its events, its decode
/// counts, events filtered out, bytes read.
type FileResult<T> = (usize, Vec<(ReplayEvent, T)>, DecodeStats, u64, u64);

fn bucket_of(f: &ArchiveFile) -> i64 {
    f.period.map_or(i64::MIN, |(start, _)| {
        start
            .with_minute(0)
            .and_then(|t| t.with_second(0))
            .map_or(start.timestamp(), |t| t.timestamp())
    })
}

/// Reads every planned file, bucket by bucket in time order, decoding on
/// `threads` threads, and hands each event to `sink` in event-time order.
/// `progress` is called after each bucket with the stats so far. A file
/// that cannot be read is an error; a record that does not parse is counted
/// (and given to `rejected` with its file) and the rest go on.
///
/// `prepare` runs on the decoding threads, once per kept event, for work
/// that needs no order (detection); its result reaches `sink` with the
/// event. The next hour is decoded while `sink` works through this one.
pub fn read_ordered<T: Send>(
    plan: &Plan,
    options: &ReadOptions<'_>,
    prepare: impl Fn(&ReplayEvent) -> T + Sync,
    mut sink: impl FnMut(&ReplayEvent, T),
    mut rejected: impl FnMut(usize, ErrorReason),
    mut progress: impl FnMut(&ReadStats),
) -> Result<ReadStats, ReadError> {
    let mut buckets: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, f) in plan.files.iter().enumerate() {
        buckets.entry(bucket_of(f)).or_default().push(i);
    }
    // Events of a bucket at or after the earliest start of the next
    // bucket's files wait for that bucket, so that hours overlapping in
    // event time merge in order; the last bucket lets everything through.
    let starts: Vec<Option<DateTime<Utc>>> = buckets
        .values()
        .map(|files| {
            files
                .iter()
                .filter_map(|&i| plan.files[i].period.map(|(start, _)| start))
                .min()
        })
        .collect();
    let cutoffs: Vec<Option<DateTime<Utc>>> = (0..starts.len())
        .map(|k| starts.get(k + 1).copied().flatten())
        .collect();
    let mut stats = ReadStats::default();
    let ReadOptions {
        decoder,
        filter,
        threads,
        store,
    } = options;
    let (decoder, filter, threads, store) = (decoder, *filter, (*threads).max(1), *store);
    // One hour decoded ahead of the one being consumed.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Bucket<T>, ReadError>>(1);
    std::thread::scope(|outer| {
        let prepare = &prepare;
        outer.spawn(move || {
            for files in buckets.values() {
                let result = decode_bucket(plan, store, decoder, filter, threads, files, prepare);
                let failed = result.is_err();
                if tx.send(result).is_err() || failed {
                    return;
                }
            }
        });
        let mut carry: Vec<(ReplayEvent, T)> = Vec::new();
        for (k, bucket) in rx.into_iter().enumerate() {
            let bucket = bucket?;
            for (local, filtered, bytes) in &bucket.files {
                stats.decode.merge(local);
                stats.filtered += filtered;
                stats.bytes += bytes;
                stats.files += 1;
            }
            for (file, reason) in bucket.errors {
                rejected(file, reason);
            }
            let mut merged = merge(std::mem::take(&mut carry), bucket.events);
            if let Some(cutoff) = cutoffs.get(k).copied().flatten() {
                let split = merged.partition_point(|(e, _)| e.event.time < Some(cutoff));
                carry = merged.split_off(split);
            }
            for (event, prepared) in merged {
                sink(&event, prepared);
            }
            progress(&stats);
        }
        for (event, prepared) in carry {
            sink(&event, prepared);
        }
        Ok(stats)
    })
}

/// Merges two lists sorted by event time; on ties `a` (from earlier files)
/// comes first.
fn merge<T>(a: Vec<(ReplayEvent, T)>, b: Vec<(ReplayEvent, T)>) -> Vec<(ReplayEvent, T)> {
    if a.is_empty() {
        return b;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.0.event.time <= y.0.event.time,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        out.extend(if take_a { a.next() } else { b.next() });
    }
}

/// How to read: the decoder (its format hint applies where a file's layout
/// does not say), the filter, and how many decoding threads.
pub struct ReadOptions<'a> {
    pub decoder: Decoder,
    pub filter: &'a Filter,
    pub threads: usize,
    /// Where files are read from (disk, S3, pulled event history).
    pub store: &'a Store,
}

/// Where a replayed event came from, for its findings' evidence; `names`
/// holds the plan's file paths as text.
pub fn source_of<'a>(names: &'a [String], e: &ReplayEvent) -> SourceRef<'a> {
    SourceRef::File {
        path: &names[e.file],
        line: e.line,
        index: e.index,
    }
}

/// The plan's file paths as text, for [`source_of`].
pub fn file_names(plan: &Plan) -> Vec<String> {
    plan.files
        .iter()
        .map(|f| f.path.display().to_string())
        .collect()
}

/// Replays the plan through `analyzer` as `seamwatch replay` does:
/// detection on the decoding threads, correlation in event-time order on
/// `stream`. `found` gets each event's findings (it may drain them). The
/// stream is not flushed: call [`Analyzer::finish`] at the end.
pub fn analyze(
    plan: &Plan,
    options: &ReadOptions<'_>,
    analyzer: &Analyzer,
    stream: &mut Stream,
    mut found: impl FnMut(&mut Vec<Finding>),
    rejected: impl FnMut(usize, ErrorReason),
    progress: impl FnMut(&ReadStats),
) -> Result<ReadStats, ReadError> {
    let names = file_names(plan);
    read_ordered(
        plan,
        options,
        |e| {
            let (mut out, mut matched) = (Vec::new(), Vec::new());
            analyzer.detect(&e.event, source_of(&names, e), &mut out, &mut matched);
            (out, matched)
        },
        |e, (mut out, matched)| {
            analyzer.correlate(stream, &e.event, &matched, source_of(&names, e), &mut out);
            found(&mut out);
        },
        rejected,
        progress,
    )
}

/// One hour, decoded and sorted by event time.
struct Bucket<T> {
    events: Vec<(ReplayEvent, T)>,
    /// Per file: decode counts, events filtered out, bytes read.
    files: Vec<(DecodeStats, u64, u64)>,
    errors: Vec<(usize, ErrorReason)>,
}

fn decode_bucket<T: Send>(
    plan: &Plan,
    store: &Store,
    decoder: &Decoder,
    filter: &Filter,
    threads: usize,
    files: &[usize],
    prepare: &(impl Fn(&ReplayEvent) -> T + Sync),
) -> Result<Bucket<T>, ReadError> {
    {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<FileResult<T>>> = Mutex::new(Vec::new());
        let failure: Mutex<Option<ReadError>> = Mutex::new(None);
        let errors: Mutex<Vec<(usize, ErrorReason)>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..threads.min(files.len()) {
                scope.spawn(|| {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = files.get(k) else { break };
                        let file = &plan.files[i];
                        let bytes = match store.read(&file.path) {
                            Ok(b) => b,
                            Err(source) => {
                                let mut slot = failure.lock().unwrap_or_else(|e| e.into_inner());
                                slot.get_or_insert(ReadError {
                                    path: file.path.clone(),
                                    source,
                                });
                                break;
                            }
                        };
                        let decoder = Decoder {
                            hint: if decoder.hint == crate::event::FormatHint::Auto {
                                file.hint()
                            } else {
                                decoder.hint
                            },
                            ..*decoder
                        };
                        let mut events = Vec::new();
                        let mut local = DecodeStats::default();
                        let mut filtered = 0u64;
                        let mut bad = Vec::new();
                        decoder.decode(&bytes, &mut |d: Decoded<'_>| {
                            local.record(&d);
                            match d.result {
                                Ok(event) if filter.keeps_event(&event) => {
                                    let event = ReplayEvent {
                                        event: event.into_owned(),
                                        file: i,
                                        line: d.location.line,
                                        index: d.location.index,
                                    };
                                    let prepared = prepare(&event);
                                    events.push((event, prepared));
                                }
                                Ok(_) => filtered += 1,
                                Err(e) => bad.push((i, e.reason)),
                            }
                        });
                        errors.lock().unwrap_or_else(|e| e.into_inner()).extend(bad);
                        results.lock().unwrap_or_else(|e| e.into_inner()).push((
                            k,
                            events,
                            local,
                            filtered,
                            bytes.len() as u64,
                        ));
                    }
                });
            }
        });
        if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
        // File order first, so that the stable sort below breaks ties the
        // same way on every run.
        results.sort_by_key(|r| r.0);
        let mut bucket = Bucket {
            events: Vec::new(),
            files: Vec::with_capacity(results.len()),
            errors: errors.into_inner().unwrap_or_else(|e| e.into_inner()),
        };
        for (_, events, local, filtered, bytes) in results {
            bucket.files.push((local, filtered, bytes));
            bucket.events.extend(events);
        }
        // Sort keys, not the events (hundreds of bytes each), then move
        // each event once into its place.
        let mut order: Vec<(Option<DateTime<Utc>>, u32)> = bucket
            .events
            .iter()
            .enumerate()
            .map(|(i, (e, _))| (e.event.time, i as u32))
            .collect();
        order.sort_by_key(|&(time, i)| (time, i));
        let mut slots: Vec<Option<(ReplayEvent, T)>> =
            bucket.events.into_iter().map(Some).collect();
        bucket.events = order
            .into_iter()
            .filter_map(|(_, i)| slots[i as usize].take())
            .collect();
        Ok(bucket)
    }
}
