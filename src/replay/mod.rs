//! Forensic replay of archived audit logs: which files to read ([`plan`],
//! pruned by the dates in their paths before any is opened), and reading
//! them in event-time order ([`read_ordered`]) with decompression and
//! parsing on every core.
//!
//! Files are grouped into buckets by the five minutes in which the period
//! their path says they cover starts (files without a date form one
//! bucket, read first). Buckets are decoded in time order, ahead of the
//! one being consumed (the next one's files queued behind the current
//! one's, so that no thread waits for a bucket's slowest file), each file
//! on one thread; a bucket's events are sorted by event time (stable: ties
//! keep file and record order) and merged with the events held back from
//! the bucket before. Events at or after the earliest start of the next
//! bucket's files are held back for it, so periods that
//! overlap in event time (CloudTrail files hold events up to ~15 minutes
//! older than their delivery) still reach the correlator in order: the same
//! order the live pipeline's reorder buffer restores.
//!
//! What needs no order runs where each event is decoded: [`analyze`] has
//! the decoding threads detect, and work out what each event brings to the
//! correlations (steps, group keys, citation), as soon as the event is
//! parsed ([`read_prepared`]); they keep a compact record per event (its
//! text in one buffer per file) and drop the event. The ordering thread
//! merges times and applies the records to the correlator's stream in
//! order, and never touches an event's bytes.
//!
//! Files without a date are read first. A large JSON Lines file among them
//! (an export of any size) is read in pieces ([`Store::pieces`]), a few per
//! thread per round, instead of whole: holding a whole export and its
//! decoded events took about three times the file's size in memory. Its
//! events are held until every such file still being read has moved past
//! them by the allowed lateness, which is how the live pipeline orders a
//! partition; so disorder within the lateness is undone exactly, and an
//! event further behind goes on where it stands (counted late by the
//! correlator), as it would live.

pub mod layout;
pub mod source;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

pub use layout::{ArchiveFile, Layout, classify, classify_prefix};
pub use source::{AwsOptions, Piece, Pieces, SourceError, Store, Text};

use crate::analyze::Analyzer;
use crate::correlate::{Observations, ObserveScratch, Stream};
use crate::detect::{Finding, Matched, SourceRef};
use crate::event::{
    AuditEvent, Cloud, DecodeStats, Decoded, Decoder, ErrorReason, ParseError, RecordLocation,
};

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

/// One event of a replay, borrowed from its file's decompressed bytes.
pub struct ReplayEvent<'a> {
    pub event: AuditEvent<'a>,
    /// Index into [`Plan::files`].
    pub file: usize,
    pub line: u64,
    pub index: u32,
}

type Events<'a> = Vec<ReplayEvent<'a>>;

self_cell::self_cell!(
    /// A file's decompressed bytes and the events decoded from them, which
    /// borrow those bytes: nothing is copied out of the file.
    struct FileEvents {
        owner: Text,
        // SmallVec makes events invariant over their lifetime.
        #[not_covariant]
        dependent: Events,
    }
);

/// A decoded file: its events (unless the sink needs only what `prepare`
/// made of them), what `prepare` made of each (handed to the sink when the
/// event's turn comes), their times, its decode counts, events filtered
/// out, bytes read.
struct DecodedFile<T> {
    /// Index into [`Plan::files`].
    file: usize,
    /// The decoding thread that made it.
    decoder: usize,
    events: Option<FileEvents>,
    prepared: Vec<Option<T>>,
    /// Text `prepare` wrote for the sink (see [`read_prepared`]), shared
    /// with what the sink keeps of it.
    notes: Arc<String>,
    times: Vec<Option<DateTime<Utc>>>,
    stats: DecodeStats,
    filtered: u64,
    bytes: u64,
    /// The latest event time among the kept events.
    latest: Option<DateTime<Utc>>,
    /// Whether this is the file's first (or only) piece.
    first: bool,
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

/// The width of a bucket: files are grouped by the 5 minutes in which their
/// period starts. Narrow buckets hold few events at a time (a CloudTrail
/// file's events wait at most for the files whose periods overlap theirs).
const BUCKET_SECS: i64 = 300;

fn bucket_of(f: &ArchiveFile) -> i64 {
    f.period.map_or(i64::MIN, |(start, _)| {
        start.timestamp().div_euclid(BUCKET_SECS) * BUCKET_SECS
    })
}

/// An event's place in the merge: its time, then its bucket, file and
/// position (ties keep file and record order).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    time: Option<DateTime<Utc>>,
    bucket: u32,
    file: u32,
    event: u32,
}

/// Reads every planned file, bucket by bucket in time order, decoding on
/// `threads` threads, and hands each event to `sink` in event-time order.
/// `progress` is called after each bucket with the stats so far. A file
/// that cannot be read is an error; a record that does not parse is counted
/// (and given to `rejected` with its file) and the rest go on.
///
/// `prepare` runs on the decoding threads, once per kept event, for work
/// that needs no order (detection); its result reaches `sink` with the
/// event. The next bucket is decoded while `sink` works through this one.
/// Events borrow their file's decompressed bytes, which are kept until the
/// last of its events has reached the sink.
///
/// Large JSON Lines files without a date in their path are read in pieces
/// of [`ReadOptions::piece_bytes`] (each file's next pieces form the next
/// round, decoded in parallel), so memory stays bounded however large the
/// export. Their order is restored as the live pipeline restores a
/// partition's: an event is held until every file still being read has
/// passed its time by [`ReadOptions::lateness_ms`]. Input within that
/// lateness comes out exactly as if each file had been sorted whole; an
/// event further behind reaches the sink late, and the correlator counts it
/// as late, as it would live.
pub fn read_ordered<T: Send>(
    plan: &Plan,
    options: &ReadOptions<'_>,
    prepare: impl Fn(&ReplayEvent<'_>) -> T + Sync,
    mut sink: impl FnMut(&ReplayEvent<'_>, T),
    rejected: impl FnMut(usize, ErrorReason),
    progress: impl FnMut(&ReadStats),
) -> Result<ReadStats, ReadError> {
    let sink = |event: Option<&ReplayEvent<'_>>, prepared: &mut Option<T>, _: &Arc<String>| {
        if let (Some(event), Some(prepared)) = (event, prepared.take()) {
            sink(event, prepared);
        }
    };
    let prepare = |event: &ReplayEvent<'_>, list: &mut Vec<Option<T>>, _: &mut String| {
        list.push(Some(prepare(event)));
    };
    read(plan, options, true, prepare, sink, rejected, progress)
}

/// [`read_ordered`] for a sink that needs only what `prepare` made of each
/// event: the events are dropped on the decoding threads once prepared, so
/// the ordering thread never touches their bytes, and their memory is
/// freed where it was allocated. Each event is prepared as soon as it is
/// decoded, into a `T::default()` in place, and the sink works on it in
/// place (it is dropped with its round). Text that `prepare` makes goes to
/// a buffer of its file's (the second argument), one allocation per file,
/// which the sink is given with each event, shared: what the sink keeps
/// of it keeps the buffer.
pub fn read_prepared<T: Send + Default>(
    plan: &Plan,
    options: &ReadOptions<'_>,
    prepare: impl Fn(&ReplayEvent<'_>, &mut T, &mut String) + Sync,
    mut sink: impl FnMut(&mut T, &Arc<String>),
    rejected: impl FnMut(usize, ErrorReason),
    progress: impl FnMut(&ReadStats),
) -> Result<ReadStats, ReadError> {
    let sink = |_: Option<&ReplayEvent<'_>>, prepared: &mut Option<T>, notes: &Arc<String>| {
        if let Some(prepared) = prepared {
            sink(prepared, notes);
        }
    };
    // Made in place: moving a large `T` in, then filling it, cost a
    // tenth of the decoding threads' time.
    let prepare = |event: &ReplayEvent<'_>, list: &mut Vec<Option<T>>, notes: &mut String| {
        if let Some(slot) = list.push_mut(Some(T::default())) {
            prepare(event, slot, notes);
        }
    };
    read(plan, options, false, prepare, sink, rejected, progress)
}

/// [`read_ordered`], keeping the events for the sink or not.
fn read<T: Send>(
    plan: &Plan,
    options: &ReadOptions<'_>,
    keep: bool,
    prepare: impl Fn(&ReplayEvent<'_>, &mut Vec<Option<T>>, &mut String) + Sync,
    mut sink: impl FnMut(Option<&ReplayEvent<'_>>, &mut Option<T>, &Arc<String>),
    mut rejected: impl FnMut(usize, ErrorReason),
    mut progress: impl FnMut(&ReadStats),
) -> Result<ReadStats, ReadError> {
    let mut buckets: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, f) in plan.files.iter().enumerate() {
        buckets.entry(bucket_of(f)).or_default().push(i);
    }
    // Events of a bucket at or after the earliest start of the next
    // bucket's files wait for that bucket, so that periods overlapping in
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
    let lateness = chrono::Duration::milliseconds(options.lateness_ms.max(0));
    // A decoded round waits here while the sink works through the one
    // before, and two more are on the decoding threads.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Bucket<T>, ReadError>>(1);
    std::thread::scope(|outer| {
        let (decoders, graveyard) = Decoders::start(outer, plan, options, keep, &prepare);
        let rounds = Rounds {
            plan,
            options,
            buckets: buckets
                .iter()
                .zip(&cutoffs)
                .map(|((key, files), cutoff)| (*key, files.as_slice(), *cutoff))
                .collect::<Vec<_>>()
                .into_iter(),
            reading: Vec::new(),
            next_bucket: None,
        };
        outer.spawn(move || {
            read_rounds(rounds, &decoders, &tx);
            // Dropping `decoders` here ends the decoding threads.
        });
        // Rounds whose events are still to reach the sink, by number.
        let mut live: BTreeMap<u32, Bucket<T>> = BTreeMap::new();
        let mut carry: Vec<Entry> = Vec::new();
        // The latest event time of each file being read in pieces.
        let mut latest: BTreeMap<usize, DateTime<Utc>> = BTreeMap::new();
        let mut emit = |live: &mut BTreeMap<u32, Bucket<T>>, entries: &[Entry]| {
            for entry in entries {
                let Some(bucket) = live.get_mut(&entry.bucket) else {
                    continue;
                };
                let file = &mut bucket.files[entry.file as usize];
                let Some(prepared) = file.prepared.get_mut(entry.event as usize) else {
                    continue;
                };
                match &file.events {
                    Some(events) => events.with_dependent(|_, events| {
                        sink(events.get(entry.event as usize), prepared, &file.notes);
                    }),
                    None => sink(None, prepared, &file.notes),
                }
            }
        };
        for (k, bucket) in rx.into_iter().enumerate() {
            let mut bucket = bucket?;
            let number = k as u32;
            for file in &bucket.files {
                stats.decode.merge(&file.stats);
                stats.filtered += file.filtered;
                stats.bytes += file.bytes;
                stats.files += usize::from(file.first);
                if let Some(t) = file.latest {
                    let slot = latest.entry(file.file).or_insert(t);
                    *slot = (*slot).max(t);
                }
            }
            for (file, reason) in std::mem::take(&mut bucket.errors) {
                rejected(file, reason);
            }
            let order = bucket.order(number);
            let release = bucket.hold.release(&latest, lateness);
            live.insert(number, bucket);
            let mut merged = merge(std::mem::take(&mut carry), order);
            if let Release::Before(cutoff) = release {
                let split = merged.partition_point(|e| e.time < cutoff);
                carry = merged.split_off(split);
            }
            emit(&mut live, &merged);
            // A round none of whose events wait any more is dropped, even
            // when an older one still waits (an export that jumps back in
            // time leaves its last events waiting to the end).
            let waiting: std::collections::BTreeSet<u32> = carry.iter().map(|e| e.bucket).collect();
            for (_, bucket) in live.extract_if(.., |n, _| !waiting.contains(n)) {
                graveyard.bury(bucket);
            }
            progress(&stats);
        }
        emit(&mut live, &carry);
        Ok(stats)
    })
}

/// What of a round (and of what waits from rounds before) may go on.
enum Release {
    All,
    /// Events before this time; `None` holds everything.
    Before(Option<DateTime<Utc>>),
}

/// What a round's events wait for.
enum Hold {
    /// The next bucket's earliest start (`None`: nothing, the last bucket).
    NextBucket(Option<DateTime<Utc>>),
    /// These files, still being read in pieces, to pass their time by the
    /// lateness; and the next bucket's start.
    Reading {
        files: Vec<usize>,
        next_bucket: Option<DateTime<Utc>>,
    },
}

impl Hold {
    fn release(
        &self,
        latest: &BTreeMap<usize, DateTime<Utc>>,
        lateness: chrono::Duration,
    ) -> Release {
        match self {
            Hold::NextBucket(None) => Release::All,
            Hold::NextBucket(Some(start)) => Release::Before(Some(*start)),
            Hold::Reading { files, next_bucket } => {
                let mut cutoff = *next_bucket;
                for file in files {
                    // A file with no event time yet holds everything.
                    let Some(t) = latest.get(file) else {
                        return Release::Before(None);
                    };
                    let passed = *t - lateness;
                    cutoff = Some(cutoff.map_or(passed, |c| c.min(passed)));
                }
                Release::Before(cutoff)
            }
        }
    }
}

/// What one decoding task reads: a whole file, or a piece of one.
enum Work {
    Whole(usize),
    Piece {
        file: usize,
        piece: Piece,
        first: bool,
    },
}

/// A bucket's key, its files, and the next bucket's earliest start.
type BucketFiles<'a> = (i64, &'a [usize], Option<DateTime<Utc>>);

/// The plan's rounds in order, made one at a time: one round for a bucket
/// of dated files; for the undated, rounds of the next pieces of every
/// large JSON Lines file until all are read.
struct Rounds<'a> {
    plan: &'a Plan,
    options: &'a ReadOptions<'a>,
    /// The buckets not yet started.
    buckets: std::vec::IntoIter<BucketFiles<'a>>,
    /// The current bucket's files still being read in pieces: the file,
    /// its pieces, and whether the next piece is its first.
    reading: Vec<(usize, Pieces, bool)>,
    /// The earliest start of the files of the bucket after the current one.
    next_bucket: Option<DateTime<Utc>>,
}

impl Rounds<'_> {
    /// The next round's work and what its events wait for; `None` when
    /// every file is read; `Err` when a file could not be read (nothing
    /// after it is read).
    fn next_round(&mut self) -> Option<Result<(Vec<Work>, Hold), ReadError>> {
        let mut work = Vec::new();
        if self.reading.is_empty() {
            let (key, files, next_bucket) = self.buckets.next()?;
            self.next_bucket = next_bucket;
            for &i in files {
                let path = &self.plan.files[i].path;
                // Only files without a date are read in pieces: a dated
                // file's bucket is ordered whole.
                let pieces = if key == i64::MIN {
                    self.options.store.pieces(path, self.options.piece_bytes)
                } else {
                    Ok(None)
                };
                match pieces {
                    Ok(Some(pieces)) => self.reading.push((i, pieces, true)),
                    Ok(None) => work.push(Work::Whole(i)),
                    Err(source) => return Some(Err(self.failed(i, source))),
                }
            }
        }
        // Enough pieces of each file to keep every thread busy.
        let threads = self.options.threads.max(1);
        let per_file = threads.div_ceil(self.reading.len().max(1));
        for (i, pieces, first) in &mut self.reading {
            for _ in 0..per_file {
                match pieces.next_piece() {
                    Ok(Some(piece)) => work.push(Work::Piece {
                        file: *i,
                        piece,
                        first: std::mem::take(first),
                    }),
                    Ok(None) => break,
                    Err(source) => {
                        let file = *i;
                        return Some(Err(self.failed(file, source)));
                    }
                }
            }
        }
        self.reading.retain(|(_, pieces, _)| !pieces.done());
        let hold = if self.reading.is_empty() {
            Hold::NextBucket(self.next_bucket)
        } else {
            Hold::Reading {
                files: self.reading.iter().map(|(i, _, _)| *i).collect(),
                next_bucket: self.next_bucket,
            }
        };
        Some(Ok((work, hold)))
    }

    /// A file that could not be read: the error, and nothing more to read.
    fn failed(&mut self, file: usize, source: std::io::Error) -> ReadError {
        self.buckets = Vec::new().into_iter();
        self.reading.clear();
        ReadError {
            path: self.plan.files[file].path.clone(),
            source,
        }
    }
}

/// Hands the plan's rounds, decoded, to `tx` in order, keeping the next
/// round's tasks queued behind the current one's: a decoding thread that
/// finishes its last task of a round goes on to the next round rather than
/// waiting for the round's slowest file. Stops at the first error (sent
/// after the rounds before it) or when the consumer has gone.
fn read_rounds<T: Send>(
    mut rounds: Rounds<'_>,
    decoders: &Decoders<T>,
    tx: &std::sync::mpsc::SyncSender<Result<Bucket<T>, ReadError>>,
) {
    const IN_FLIGHT: usize = 2;
    let mut in_flight: std::collections::VecDeque<Round<T>> = Default::default();
    let mut failure = None;
    let mut number = 0u64;
    loop {
        while failure.is_none() && in_flight.len() < IN_FLIGHT {
            match rounds.next_round() {
                Some(Ok((work, hold))) => match decoders.submit(number, work, hold) {
                    Ok(round) => {
                        in_flight.push_back(round);
                        number += 1;
                    }
                    Err(e) => failure = Some(e),
                },
                Some(Err(e)) => failure = Some(e),
                None => break,
            }
        }
        let Some(round) = in_flight.pop_front() else {
            if let Some(e) = failure {
                let _ = tx.send(Err(e));
            }
            return;
        };
        let result = decoders.finish(round, &mut in_flight);
        let failed = result.is_err();
        if tx.send(result).is_err() || failed {
            return;
        }
    }
}

/// Merges two lists sorted by event time; on ties `a` (from earlier
/// buckets) comes first.
fn merge(a: Vec<Entry>, b: Vec<Entry>) -> Vec<Entry> {
    if a.is_empty() {
        return b;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.time <= y.time,
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
    /// The size of a piece of a large undated JSON Lines file.
    pub piece_bytes: usize,
    /// How far behind the latest event of such a file an event may come
    /// and still be put in order: the correlation's allowed lateness.
    pub lateness_ms: i64,
}

/// [`ReadOptions::piece_bytes`] unless told otherwise: big enough that a
/// piece is a couple of thousand records, small enough that the rounds in
/// flight stay a few MB. (8 MB pieces peaked 60 MB higher on a 200 MB
/// export, and the extra first-touch page faults cost about a tenth of the
/// run's CPU.)
pub const PIECE_BYTES: usize = 2 << 20;

impl<'a> ReadOptions<'a> {
    /// Options for reading `store` with `threads` threads, pieces of
    /// [`PIECE_BYTES`], and the default allowed lateness.
    pub fn new(decoder: Decoder, filter: &'a Filter, threads: usize, store: &'a Store) -> Self {
        ReadOptions {
            decoder,
            filter,
            threads,
            store,
            piece_bytes: PIECE_BYTES,
            lateness_ms: crate::correlate::CorrelationConfig::default().allowed_lateness_ms,
        }
    }
}

/// Where a replayed event came from, for its findings' evidence; `names`
/// holds the plan's file paths as text.
pub fn source_of<'a>(names: &'a [String], e: &ReplayEvent<'_>) -> SourceRef<'a> {
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
/// detection, and the observations each event brings to the correlations,
/// on the decoding threads; correlation in event-time order on `stream`
/// (best made with [`Stream::in_time_order`]: the reader delivers in order,
/// so nothing needs holding for the allowed lateness). `found` gets each
/// event's findings: those it leaves are freed with their round, by the
/// thread that made them, which is cheaper than freeing them where they
/// were sent. The stream is not flushed: call [`Analyzer::finish`] at the
/// end.
pub fn analyze(
    plan: &Plan,
    options: &ReadOptions<'_>,
    analyzer: &Analyzer,
    stream: &mut Stream,
    mut found: impl FnMut(&mut Vec<Finding>),
    rejected: impl FnMut(usize, ErrorReason),
    progress: impl FnMut(&ReadStats),
) -> Result<ReadStats, ReadError> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<ObserveScratch> = Default::default();
    }
    let names = file_names(plan);
    read_prepared(
        plan,
        options,
        |e, (out, observations): &mut (Vec<Finding>, Observations), text| {
            let mut matched = Matched::new();
            let source = source_of(&names, e);
            analyzer.detect(&e.event, source, out, &mut matched);
            SCRATCH.with_borrow_mut(|scratch| {
                let correlator = analyzer.correlator();
                correlator.observations(&e.event, &matched, source, scratch, observations, text)
            });
        },
        |(out, observations), text| {
            analyzer
                .correlator()
                .observe_prepared(stream, observations, text, out);
            found(out);
        },
        rejected,
        progress,
    )
}

/// One round of files and pieces, decoded.
struct Bucket<T> {
    /// In plan order, pieces of a file in file order.
    files: Vec<DecodedFile<T>>,
    errors: Vec<(usize, ErrorReason)>,
    hold: Hold,
}

impl<T> Bucket<T> {
    /// The bucket's events in event-time order (stable: ties keep file and
    /// record order).
    fn order(&self, bucket: u32) -> Vec<Entry> {
        let mut order: Vec<Entry> =
            Vec::with_capacity(self.files.iter().map(|f| f.times.len()).sum());
        for (file, decoded) in self.files.iter().enumerate() {
            order.extend(
                decoded
                    .times
                    .iter()
                    .enumerate()
                    .map(|(event, &time)| Entry {
                        time,
                        bucket,
                        file: file as u32,
                        event: event as u32,
                    }),
            );
        }
        // Stable, for the runs it finds: an archive file's events are
        // mostly in time order already, so this merges a few runs (the
        // keys are distinct, so any sort gives this order).
        order.sort();
        order
    }
}

/// Decodes one file or piece: its events (kept ones, borrowing the
/// decompressed bytes) when `keep` says so, `prepare`'s result for each,
/// and its records that did not parse. Without `keep`, each event is
/// prepared as soon as it is decoded, while its bytes are in cache, and
/// dropped. `prepare` adds exactly one entry to the list per event (made
/// in place there), so that an event's entry and its time share an index.
/// `thread` is the decoding thread's number: the file goes back there to be
/// freed ([`Graveyard`]).
#[allow(clippy::too_many_arguments)]
fn decode_file<T>(
    work: Work,
    bytes: Text,
    decoder: &Decoder,
    filter: &Filter,
    keep: bool,
    prepare: &(impl Fn(&ReplayEvent<'_>, &mut Vec<Option<T>>, &mut String) + Sync),
    errors: &mut Vec<(usize, ErrorReason)>,
    thread: usize,
) -> DecodedFile<T> {
    let (index, first_line, line_ends, first, corrupt, read) = match work {
        Work::Whole(i) => (i, None, None, true, None, bytes.len() as u64),
        Work::Piece { file, piece, first } => (
            file,
            Some(piece.first_line),
            Some(piece.lines),
            first,
            piece.corrupt,
            piece.read,
        ),
    };
    // Inflated here rather than by the decoder, so that the events can
    // borrow the inflated bytes; a payload that does not inflate is handed
    // to the decoder as it is, which reports why.
    let text = match first_line {
        Some(_) => bytes,
        None => decoder.inflate_gzip(&bytes).map_or(bytes, Text::new),
    };
    let mut records = Records {
        decoder,
        filter,
        file: index,
        first_line,
        line_ends,
        corrupt,
        stats: DecodeStats::default(),
        filtered: 0,
        latest: None,
        errors,
    };
    // Sized once: growing a vector of a whole file's events by doubling
    // copies it over and over into freshly zeroed pages. A line per record
    // (JSON Lines), or at least ~400 bytes per record; memory reserved and
    // not written costs no resident memory.
    let capacity = |text: &[u8]| {
        let lines = line_ends.map_or_else(|| bytecount::count(text, b'\n'), |n| n as usize) + 1;
        lines.max(text.len() / 400)
    };
    let mut prepared: Vec<Option<T>> = Vec::with_capacity(capacity(&text));
    let mut times = Vec::with_capacity(prepared.capacity());
    // For `read_prepared`, reserved for about 300 bytes of text per event
    // (the reporting event's fields and labels), so that it does not grow
    // by copying; `read_ordered` writes none.
    let mut notes = String::with_capacity(if keep { 0 } else { prepared.capacity() * 300 });
    let events = if keep {
        let events = FileEvents::new(text, |text| {
            let mut events = Vec::with_capacity(prepared.capacity());
            records.decode(text, |e, base| {
                events.push(ReplayEvent {
                    event: e.event.rebase(base),
                    ..e
                })
            });
            events
        });
        events.with_dependent(|_, events| {
            for e in events {
                times.push(e.event.time);
                prepare(e, &mut prepared, &mut notes);
            }
        });
        Some(events)
    } else {
        records.decode(&text, |e, _| {
            times.push(e.event.time);
            prepare(&e, &mut prepared, &mut notes);
        });
        None
    };
    DecodedFile {
        file: index,
        decoder: thread,
        events,
        prepared,
        notes: Arc::new(notes),
        times,
        stats: records.stats,
        filtered: records.filtered,
        bytes: read,
        latest: records.latest,
        first,
    }
}

/// Decoding one file's or piece's records: what it needs, and what it
/// counts.
struct Records<'a> {
    decoder: &'a Decoder,
    filter: &'a Filter,
    file: usize,
    first_line: Option<u64>,
    line_ends: Option<u64>,
    corrupt: Option<String>,
    stats: DecodeStats,
    filtered: u64,
    /// The latest event time among the kept events.
    latest: Option<DateTime<Utc>>,
    errors: &'a mut Vec<(usize, ErrorReason)>,
}

impl Records<'_> {
    /// Decodes `text` (a whole file, or a piece's lines), counting every
    /// record and handing each kept event to `kept`, with the text as a
    /// `str` when it is valid UTF-8 (the common case; else empty) for
    /// events to borrow from.
    fn decode<'t>(&mut self, text: &'t [u8], mut kept: impl FnMut(ReplayEvent<'_>, &'t str)) {
        let valid = simdutf8::basic::from_utf8(text).ok();
        let base = valid.unwrap_or("");
        let (file, decoder) = (self.file, self.decoder);
        let mut each = |d: Decoded<'_>| {
            self.stats.record(&d);
            match d.result {
                Ok(event) if self.filter.keeps_event(&event) => {
                    self.latest = self.latest.max(event.time);
                    let e = ReplayEvent {
                        event,
                        file,
                        line: d.location.line,
                        index: d.location.index,
                    };
                    kept(e, base);
                }
                Ok(_) => self.filtered += 1,
                Err(e) => self.errors.push((file, e.reason)),
            }
        };
        match (self.first_line, valid) {
            (Some(line), Some(text)) => decoder.decode_str_lines(text, line, &mut each),
            (Some(line), None) => decoder.decode_lines(text, line, &mut each),
            (None, Some(text)) => decoder.decode_str(text, &mut each),
            (None, None) => decoder.decode(text, &mut each),
        }
        // A gzip stream that broke off: what inflated before is kept, and
        // the break is a rejected record of its own.
        if let Some(detail) = self.corrupt.take() {
            each(Decoded {
                location: RecordLocation {
                    line: self.first_line.unwrap_or(1) + self.line_ends.unwrap_or(0),
                    index: 0,
                },
                result: Err(ParseError {
                    reason: ErrorReason::Decompression,
                    detail,
                    raw: &[],
                }),
            });
        }
    }
}

/// What a decoding thread hands back for one task: its round and its
/// number in the round, the decoded file or why it could not be read, and
/// its records that did not parse.
type Done<T> = ((u64, usize), Decoding<T>);

/// A decoded file or why it could not be read, and its records that did
/// not parse.
type Decoding<T> = (Result<DecodedFile<T>, ReadError>, Vec<(usize, ErrorReason)>);

/// The decoding threads, started once for the whole replay rather than
/// once per round (a hundred starts, each with a fresh allocator heap, on
/// a 200 MB export). A round's tasks go out on `work`; their results come
/// back on `done`.
struct Decoders<T> {
    work: std::sync::mpsc::Sender<((u64, usize), Work)>,
    done: std::sync::mpsc::Receiver<Done<T>>,
}

/// Where the ordering thread sends a round it is done with: each file back
/// to the decoding thread that made it, which frees it between tasks. Freed
/// where they were sent, a replay's findings and records cost the
/// allocator's slower path for memory of another thread's, on the thread
/// the replay waits for.
struct Graveyard<T> {
    graves: Vec<std::sync::mpsc::Sender<DecodedFile<T>>>,
}

impl<T> Graveyard<T> {
    fn bury(&self, bucket: Bucket<T>) {
        for file in bucket.files {
            // A thread that has ended leaves its files to be freed here.
            if let Some(grave) = self.graves.get(file.decoder) {
                let _ = grave.send(file);
            }
        }
    }
}

impl<T: Send> Decoders<T> {
    fn start<'scope, 'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        plan: &'env Plan,
        options: &'env ReadOptions<'env>,
        keep: bool,
        prepare: &'env (impl Fn(&ReplayEvent<'_>, &mut Vec<Option<T>>, &mut String) + Sync),
    ) -> (Decoders<T>, Graveyard<T>)
    where
        T: 'scope,
    {
        let (work, tasks) = std::sync::mpsc::channel::<((u64, usize), Work)>();
        let (finished, done) = std::sync::mpsc::channel::<Done<T>>();
        let tasks = std::sync::Arc::new(Mutex::new(tasks));
        let mut graves = Vec::new();
        for thread in 0..options.threads.max(1) {
            let (tasks, finished) = (std::sync::Arc::clone(&tasks), finished.clone());
            let (grave, spent) = std::sync::mpsc::channel::<DecodedFile<T>>();
            graves.push(grave);
            scope.spawn(move || {
                loop {
                    // What this thread decoded and the sink is done with,
                    // freed here, where it was allocated.
                    while let Ok(file) = spent.try_recv() {
                        drop(file);
                    }
                    let next = tasks.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((k, work)) = next else { break };
                    let file = match &work {
                        Work::Whole(i) => *i,
                        Work::Piece { file, .. } => *file,
                    };
                    let task = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        decode_task(plan, options, work, keep, prepare, thread)
                    }));
                    match task {
                        Ok(decoding) => {
                            if finished.send((k, decoding)).is_err() {
                                break;
                            }
                        }
                        Err(panic) => {
                            // The round learns it failed rather than waiting
                            // for this task; the panic then ends the scope.
                            let source = std::io::Error::other("decoding thread panicked");
                            let path = plan.files[file].path.clone();
                            let failed = Err(ReadError { path, source });
                            let _ = finished.send((k, (failed, Vec::new())));
                            std::panic::resume_unwind(panic);
                        }
                    }
                }
            });
        }
        (Decoders { work, done }, Graveyard { graves })
    }

    /// Puts a round's files and pieces on the decoding threads' queue.
    fn submit(&self, number: u64, work: Vec<Work>, hold: Hold) -> Result<Round<T>, ReadError> {
        let count = work.len();
        for (k, task) in work.into_iter().enumerate() {
            self.work.send(((number, k), task)).map_err(|_| gone())?;
        }
        Ok(Round {
            number,
            count,
            hold,
            results: Vec::with_capacity(count),
            errors: Vec::new(),
            failure: None,
            received: 0,
        })
    }

    /// Waits for the rest of a round's tasks; results of the rounds queued
    /// behind it that come in meanwhile go to them.
    fn finish(
        &self,
        mut round: Round<T>,
        later: &mut std::collections::VecDeque<Round<T>>,
    ) -> Result<Bucket<T>, ReadError> {
        while round.received < round.count {
            let ((number, k), decoding) = self.done.recv().map_err(|_| gone())?;
            if number == round.number {
                round.take(k, decoding);
            } else if let Some(other) = later.iter_mut().find(|r| r.number == number) {
                other.take(k, decoding);
            }
        }
        round.into_bucket()
    }
}

/// A round whose tasks are on the decoding threads, and what has come
/// back of them.
struct Round<T> {
    number: u64,
    count: usize,
    hold: Hold,
    results: Vec<(usize, DecodedFile<T>)>,
    errors: Vec<(usize, usize, ErrorReason)>,
    /// The first failed task of the round, in plan order.
    failure: Option<(usize, ReadError)>,
    received: usize,
}

impl<T> Round<T> {
    fn take(&mut self, k: usize, (result, bad): Decoding<T>) {
        self.received += 1;
        match result {
            Ok(decoded) => self.results.push((k, decoded)),
            Err(e) if self.failure.as_ref().is_none_or(|(f, _)| k < *f) => {
                self.failure = Some((k, e))
            }
            Err(_) => {}
        }
        self.errors
            .extend(bad.into_iter().map(|(i, reason)| (k, i, reason)));
    }

    fn into_bucket(mut self) -> Result<Bucket<T>, ReadError> {
        if let Some((_, e)) = self.failure {
            return Err(e);
        }
        // Plan order, so that ties break the same way on every run.
        self.results.sort_by_key(|r| r.0);
        // Work order (plan order, pieces in file order), then record order.
        self.errors.sort_by_key(|e| e.0);
        Ok(Bucket {
            files: self.results.into_iter().map(|(_, f)| f).collect(),
            errors: self.errors.into_iter().map(|(_, i, r)| (i, r)).collect(),
            hold: self.hold,
        })
    }
}

/// The decoding threads went away (one panicked).
fn gone() -> ReadError {
    ReadError {
        path: PathBuf::new(),
        source: std::io::Error::other("the decoding threads stopped"),
    }
}

/// Reads (a whole file) and decodes one task of a round.
fn decode_task<T>(
    plan: &Plan,
    options: &ReadOptions<'_>,
    mut work: Work,
    keep: bool,
    prepare: &(impl Fn(&ReplayEvent<'_>, &mut Vec<Option<T>>, &mut String) + Sync),
    thread: usize,
) -> Decoding<T> {
    let (i, bytes) = match &mut work {
        Work::Whole(i) => (*i, options.store.read(&plan.files[*i].path).map(Text::new)),
        Work::Piece { file, piece, .. } => (*file, Ok(std::mem::take(&mut piece.text))),
    };
    let file = &plan.files[i];
    let bytes = match bytes {
        Ok(b) => b,
        Err(source) => {
            let path = file.path.clone();
            return (Err(ReadError { path, source }), Vec::new());
        }
    };
    let decoder = Decoder {
        hint: if options.decoder.hint == crate::event::FormatHint::Auto {
            file.hint()
        } else {
            options.decoder.hint
        },
        ..options.decoder
    };
    let mut bad = Vec::new();
    let decoded = decode_file(
        work,
        bytes,
        &decoder,
        options.filter,
        keep,
        prepare,
        &mut bad,
        thread,
    );
    (Ok(decoded), bad)
}
