//! Forensic replay of archived audit logs: which files to read ([`plan`],
//! pruned by the dates in their paths before any is opened), and reading
//! them in event-time order ([`read_ordered`]) with decompression and
//! parsing on every core.
//!
//! Files are grouped into buckets by the hour their path says they cover
//! (files without a date form one bucket, read first). Buckets are read in
//! time order; inside a bucket every file is decoded in parallel and the
//! events are merged by event time (stable: ties keep file and record
//! order), so the correlator sees them as the live pipeline would after its
//! reorder buffer. Events of a bucket that straddle the next one (CloudTrail
//! files hold events up to ~15 minutes older than their delivery) are within
//! the correlator's allowed lateness and still land in order.

pub mod layout;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Timelike, Utc};

pub use layout::{ArchiveFile, Layout, classify};

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
type FileResult = (usize, Vec<ReplayEvent>, DecodeStats, u64, u64);

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
pub fn read_ordered(
    plan: &Plan,
    decoder: &Decoder,
    filter: &Filter,
    threads: usize,
    mut sink: impl FnMut(&ReplayEvent),
    mut rejected: impl FnMut(usize, ErrorReason),
    mut progress: impl FnMut(&ReadStats),
) -> Result<ReadStats, ReadError> {
    let mut buckets: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, f) in plan.files.iter().enumerate() {
        buckets.entry(bucket_of(f)).or_default().push(i);
    }
    let mut stats = ReadStats::default();
    let threads = threads.max(1);
    for files in buckets.values() {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<FileResult>> = Mutex::new(Vec::new());
        let failure: Mutex<Option<ReadError>> = Mutex::new(None);
        let errors: Mutex<Vec<(usize, ErrorReason)>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..threads.min(files.len()) {
                scope.spawn(|| {
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = files.get(k) else { break };
                        let file = &plan.files[i];
                        let bytes = match std::fs::read(&file.path) {
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
                                    events.push(ReplayEvent {
                                        event: event.into_owned(),
                                        file: i,
                                        line: d.location.line,
                                        index: d.location.index,
                                    })
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
        let mut merged = Vec::new();
        for (_, events, local, filtered, bytes) in results {
            stats.decode.merge(&local);
            stats.filtered += filtered;
            stats.bytes += bytes;
            stats.files += 1;
            merged.extend(events);
        }
        for (file, reason) in errors.into_inner().unwrap_or_else(|e| e.into_inner()) {
            rejected(file, reason);
        }
        merged.sort_by_key(|e| e.event.time);
        for event in &merged {
            sink(event);
        }
        progress(&stats);
    }
    Ok(stats)
}
