//! The correlator: event-time windows over the detector's matches.
//!
//! # Time
//! Every [`Stream`] (a Kafka partition, or a replay's merged input) keeps a
//! watermark: the highest event time it has seen minus the allowed lateness.
//! An event's observations wait in the stream's reorder buffer until the
//! watermark passes them, then are applied in event-time order (ties broken
//! by a hash of the event id), interleaved with the deadlines that fall
//! between them. So any arrival order within the allowed lateness gives the
//! same findings as sorted input, and absence, session and silence rules fire
//! when event time passes their deadline, never on a wall-clock timer: replay
//! gives the same answer as live. An event later than the lateness is applied
//! at once and counted as late; it is never dropped.
//!
//! # State
//! One sharded concurrent map (dashmap) keyed by a 64-bit hash of
//! (correlation, group-by values) holds a small fixed-size [`KeyState`] per
//! group, with its evidence inline for the first event. No lock is global,
//! and no map guard is held while another shard is touched. Each new key puts
//! one (deadline, key) entry on its stream's deadline heap; when the entry
//! comes due and the key's deadline has moved, it is pushed again, so expiry
//! costs a heap pop per key rather than a scan. At `max_keys` the key with
//! the nearest deadline is evicted (counted); evidence per key is capped at
//! `max_events_per_key` (counts go on).
//!
//! # Findings
//! The id is xxh3-128 of (correlation id, group values, window start), so a
//! replay or a restart derives the same id; the finding cites every kept
//! contributing event.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::evidence::{Ev, EvId, Names, Src};
use super::rule::{Correlation, KeyField, Kind, Step};
use crate::detect::finding::{
    CorrelationDetail, Finding, FindingKind, FindingPrincipal, SourceRef, finding_id,
};
use crate::detect::rule::Rule;
use crate::event::{AuditEvent, Cloud, EventId, Outcome, PrincipalKind};
use crate::matrix::{Domain, Matrix, Side};

/// Settings (`[correlation]` in `seamwatch.toml`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelationConfig {
    /// How late (in event time) an event may arrive and still be ordered
    /// exactly; correlation findings wait this long in event time.
    #[serde(rename = "allowed_lateness", with = "duration_ms")]
    pub allowed_lateness_ms: i64,
    /// Most groups tracked at once; beyond it the nearest deadline is evicted.
    pub max_keys: usize,
    /// Most events kept as evidence per group (the count goes on).
    pub max_events_per_key: usize,
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        CorrelationConfig {
            allowed_lateness_ms: 5 * 60 * 1000,
            max_keys: 1_000_000,
            max_events_per_key: 64,
        }
    }
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        let duration = humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration (30s, 5m): {e}"))
        })?;
        i64::try_from(duration.as_millis()).map_err(serde::de::Error::custom)
    }
}

/// Keys are already xxh3 hashes: pass them through.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The event a finding is reported against (the one that completed a
/// pattern, or opened a window): its fields and group label, as text in a
/// shared buffer. A replay's buffer holds the text of a whole file's events,
/// so that an observation (which seldom reports its event) copies and
/// allocates nothing on the ordering thread; a key that keeps its event
/// keeps a copy of the event's own text (`Ctx::kept`).
#[derive(Clone, Debug)]
pub struct Ctx {
    buf: Arc<String>,
    /// Where the event's text starts in `buf`; `ends` and `label` count
    /// from there.
    start: u32,
    /// Where the event's account, region, service, operation, principal
    /// id and name, and resources (one per line) end, back to back.
    ends: [u32; 7],
    /// Where the group label is.
    label: (u32, u32),
    cloud: Cloud,
    kind: PrincipalKind,
}

impl Ctx {
    fn text(&self, from: u32, to: u32) -> &str {
        let start = self.start as usize;
        self.buf
            .get(start + from as usize..start + to as usize)
            .unwrap_or("")
    }
    fn part(&self, i: usize) -> &str {
        let from = if i == 0 { 0 } else { self.ends[i - 1] };
        self.text(from, self.ends[i])
    }
    fn opt(&self, i: usize) -> Option<&str> {
        Some(self.part(i)).filter(|s| !s.is_empty())
    }
    fn label(&self) -> &str {
        self.text(self.label.0, self.label.1)
    }
    fn cloud(&self) -> Cloud {
        self.cloud
    }
    fn account(&self) -> Option<&str> {
        self.opt(0)
    }
    fn region(&self) -> Option<&str> {
        self.opt(1)
    }
    fn service(&self) -> &str {
        self.part(2)
    }
    fn operation(&self) -> &str {
        self.part(3)
    }
    fn principal(&self) -> FindingPrincipal {
        FindingPrincipal {
            kind: self.kind,
            id: self.opt(4).map(str::to_owned),
            name: self.opt(5).map(str::to_owned),
        }
    }
    fn resources(&self) -> impl Iterator<Item = &str> {
        self.part(6).split('\n').filter(|r| !r.is_empty())
    }

    /// For a key that keeps the event: its fields and label copied out of
    /// the shared buffer (which may hold a whole file's text), so that the
    /// key holds no more than its own event.
    fn kept(self) -> Box<Ctx> {
        let fields = self.text(0, self.ends[6]);
        let label = self.label();
        let mut own = String::with_capacity(fields.len() + label.len());
        own.push_str(fields);
        own.push_str(label);
        Box::new(Ctx {
            label: (self.ends[6], own.len() as u32),
            buf: Arc::new(own),
            start: 0,
            ..self
        })
    }
}

/// The event's fields for [`Ctx`], appended to `buf`; returns where each
/// part ends, counted from where they start.
fn write_event_text(buf: &mut String, event: &AuditEvent<'_>) -> [u32; 7] {
    let start = buf.len();
    let mut ends = [0u32; 7];
    let p = &event.principal;
    let parts = [
        event.account.as_deref(),
        event.region.as_deref(),
        Some(&*event.service),
        Some(&*event.operation),
        p.id.as_deref(),
        p.name.as_deref(),
    ];
    for (i, part) in parts.into_iter().enumerate() {
        buf.push_str(part.unwrap_or(""));
        ends[i] = (buf.len() - start) as u32;
    }
    for (i, r) in event.resources.iter().enumerate() {
        if i > 0 {
            buf.push('\n');
        }
        buf.push_str(&r.id);
    }
    ends[6] = (buf.len() - start) as u32;
    ends
}

/// Per-group state: 24 bytes of counters, the reporting event where the kind
/// needs it later, and the evidence (the first event inline).
pub struct KeyState {
    /// Window start (ms): first event of the window, or the opener.
    start: i64,
    /// When this state is due (ms): window end, absence deadline.
    expires: i64,
    /// Events that took part (not capped).
    count: u32,
    /// The correlation's index; the top bit says the window has fired.
    corr: u16,
    /// Sequence: the step being completed; temporal: steps seen, as bits.
    step: u8,
    /// Sequence: events of the current step so far.
    progress: u8,
    ctx: Option<Box<Ctx>>,
    /// The first one is the first step's event: a sequence's `differ`
    /// compares against its value.
    evidence: SmallVec<[Ev; 1]>,
}

const FIRED: u16 = 1 << 15;

impl KeyState {
    fn corr(&self) -> usize {
        usize::from(self.corr & !FIRED)
    }
    fn fired(&self) -> bool {
        self.corr & FIRED != 0
    }
    /// One more event took part; kept as evidence while there is room.
    fn join(&mut self, ev: Ev, cap: usize) {
        self.count += 1;
        if self.evidence.len() < cap {
            self.evidence.push(ev);
        }
    }
    fn set_fired(&mut self, fired: bool) {
        if fired {
            self.corr |= FIRED;
        } else {
            self.corr &= !FIRED;
        }
    }
}

/// A matched event waiting for the watermark: a small heap entry; the
/// payload waits in the stream's slab.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct PendingKey {
    time: i64,
    tie: u64,
    corr: u16,
    steps: u8,
    slot: u32,
}

impl PendingKey {
    /// The order among keys of one time, as one integer: what the derived
    /// order compares after the time (sorting a second's observations by
    /// it took half the time the field-by-field comparison took).
    fn within_time(&self) -> u128 {
        (u128::from(self.tie) << 64)
            | (u128::from(self.corr) << 40)
            | (u128::from(self.steps) << 32)
            | u128::from(self.slot)
    }
}

struct Payload {
    key: u64,
    ev: Ev,
    ctx: Option<Ctx>,
}

/// An observation being applied.
struct Pending {
    time: i64,
    corr: u16,
    steps: u8,
    key: u64,
    ev: Ev,
    /// Only where the kind may report this event (see [`needs_ctx`]).
    ctx: Option<Ctx>,
}

/// Whether an observation of these steps may be the event a finding reports:
/// the completing event of a threshold, distinct, temporal or sequence (its
/// last step), the opener of an absence or session, any event of a silence.
fn needs_ctx(corr: &Correlation, steps: u8) -> bool {
    match corr.kind {
        Kind::Threshold | Kind::Distinct | Kind::Temporal | Kind::Silence => true,
        Kind::Sequence => steps & (1 << (corr.steps.len() - 1)) != 0,
        Kind::Absence | Kind::Session => steps & 1 != 0,
    }
}

/// Reusable space for [`Correlator::observations`]: the group label being
/// built, and the last source name interned (runs of one file or topic skip
/// the interner).
#[derive(Debug, Default)]
pub struct ObserveScratch {
    label: String,
    last_source: Option<(String, Src)>,
    /// The event text of [`Correlator::observe`].
    text: String,
    /// What [`Correlator::observe`] hands on for an event none of whose
    /// observations may report it.
    no_text: Arc<String>,
}

impl ObserveScratch {
    fn src(&mut self, names: &Names, source: SourceRef<'_>) -> Src {
        let name = match source {
            SourceRef::File { path, .. } => path,
            SourceRef::Kafka { topic, .. } => topic,
            SourceRef::Unknown => return names.src(source),
        };
        if let Some((last, src)) = &self.last_source
            && last == name
        {
            return src.with_position(source);
        }
        let src = names.src(source);
        self.last_source = Some((name.to_owned(), src));
        src
    }
}

/// What one event brings to the correlations, worked out from the event and
/// its matches alone ([`Correlator::observations`]): no stream and no order
/// are needed, so a replay does this on its decoding threads, where the
/// event's bytes are still in cache. [`Correlator::observe_prepared`] then
/// applies it to a stream in event-time order. Owns what it holds (the
/// event itself may be gone by then), except the event's text, which goes
/// to a buffer of the caller's (a replay keeps one per file), shared by
/// the observations that may report the event (see [`Ctx`]).
#[derive(Debug)]
pub struct Observations {
    /// Event time (ms); `None`: the event has none and is not correlated.
    time: Option<i64>,
    /// The tie-break between events of one millisecond.
    tie: u64,
    /// What every observation cites the event as.
    id: EvId,
    src: Src,
    list: SmallVec<[Observation; 3]>,
    /// Observations dropped because a group-by field was absent.
    ungrouped: u32,
    /// Where the event's text is in the caller's buffer: its fields, then
    /// the labels of the observations that may report it (see [`Ctx`]);
    /// `None` when none may.
    text: Option<(u32, u32)>,
    ends: [u32; 7],
    cloud: Cloud,
    kind: PrincipalKind,
}

impl Default for Observations {
    fn default() -> Self {
        Observations {
            time: None,
            tie: 0,
            id: EvId::Hash(0),
            src: Src::default(),
            list: SmallVec::new(),
            ungrouped: 0,
            text: None,
            ends: [0; 7],
            // Set with the text.
            cloud: Cloud::Aws,
            kind: PrincipalKind::Unknown,
        }
    }
}

/// One correlation an event takes part in: the steps it matched, its group
/// key, and the hash of its counted or compared value.
#[derive(Debug)]
struct Observation {
    corr: u16,
    steps: u8,
    key: u64,
    value: u64,
    /// Where the group label is in the event's text (counted from its
    /// start), when this observation may report the event (see
    /// [`needs_ctx`]).
    label: Option<(u32, u32)>,
}

/// One ordered input: a Kafka partition, or a replay. Owned by one worker.
pub struct Stream {
    max_seen: i64,
    watermark: i64,
    /// Observations that arrived in time order, oldest first: O(1) both
    /// ends. Equal times may be in any order here.
    in_order: VecDeque<PendingKey>,
    /// All observations of the time being released, sorted by tie-break.
    ready: VecDeque<PendingKey>,
    /// Those that arrived behind a later one: usually few.
    pending: BinaryHeap<Reverse<PendingKey>>,
    slab: Vec<Option<Payload>>,
    free: Vec<u32>,
    deadlines: BinaryHeap<Reverse<(i64, u64)>>,
    muted: bool,
    /// Overrides the allowed lateness for this stream (a replay, which
    /// delivers in event-time order already).
    lateness: Option<i64>,
    /// A replay's stream holds back the observations of a sequence's later
    /// steps ([`Correlator::resolve_deferred`]): most find no sequence
    /// begun for their group, and would cross the stream only to be
    /// dropped when applied.
    ordered: bool,
    /// Those observations, until every observation of their time is in.
    deferred: Vec<(PendingKey, Payload)>,
    /// Sequence starts waiting in the stream, by group key: a held-back
    /// observation of one of these groups goes into the stream after all.
    starts: hashbrown::HashMap<u64, u32, BuildHasherDefault<IdHasher>>,
    /// Scratch for working out an event's observations.
    scratch: ObserveScratch,
    /// Counters kept here and added to the shared ones now and then, so
    /// that workers do not bounce one cache line between cores per event.
    local: LocalCounters,
}

#[derive(Debug, Default, Clone, Copy)]
struct LocalCounters {
    events: u64,
    observations: u64,
    late: u64,
    ungrouped: u64,
}

impl Default for Stream {
    fn default() -> Self {
        Stream {
            max_seen: i64::MIN,
            watermark: i64::MIN,
            in_order: VecDeque::new(),
            ready: VecDeque::new(),
            pending: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            deadlines: BinaryHeap::new(),
            muted: false,
            lateness: None,
            ordered: false,
            deferred: Vec::new(),
            starts: hashbrown::HashMap::default(),
            scratch: ObserveScratch::default(),
            local: LocalCounters::default(),
        }
    }
}

impl Stream {
    pub fn new() -> Stream {
        Stream::default()
    }

    /// A stream whose input is in event-time order already (a replay): it
    /// releases each millisecond's observations once time moves past it,
    /// instead of holding them for the allowed lateness, and drops the
    /// observations of a sequence's later steps whose group has no sequence
    /// begun once their millisecond is complete. The findings are the same
    /// (observations and deadlines are applied in the same order, and a
    /// dropped observation would have done nothing); less is held, and for
    /// less long.
    pub fn in_time_order() -> Stream {
        Stream {
            lateness: Some(1),
            ordered: true,
            ..Stream::default()
        }
    }

    /// The latest event time seen.
    pub fn latest(&self) -> Option<DateTime<Utc>> {
        (self.max_seen != i64::MIN)
            .then(|| DateTime::from_timestamp_millis(self.max_seen))
            .flatten()
    }

    /// Event time up to which everything has been applied.
    pub fn watermark(&self) -> Option<DateTime<Utc>> {
        (self.watermark != i64::MIN)
            .then(|| DateTime::from_timestamp_millis(self.watermark))
            .flatten()
    }

    /// Observations waiting for the watermark.
    pub fn pending(&self) -> usize {
        self.ready.len() + self.in_order.len() + self.pending.len() + self.deferred.len()
    }

    /// A sequence start has left the stream (to be applied).
    fn start_applied(&mut self, key: u64) {
        if let Some(n) = self.starts.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.starts.remove(&key);
            }
        }
    }

    /// Time of the oldest waiting observation.
    fn next_time(&self) -> Option<i64> {
        if let Some(first) = self.ready.front() {
            return Some(first.time);
        }
        let a = self.in_order.front().map(|k| k.time);
        let b = self.pending.peek().map(|Reverse(k)| k.time);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// While muted (warm-up after a rebalance), state is rebuilt but no
    /// finding is emitted.
    pub fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
    }

    fn push(&mut self, key: PendingKey, payload: Payload) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some(payload);
                slot
            }
            None => {
                self.slab.push(Some(payload));
                (self.slab.len() - 1) as u32
            }
        };
        let key = PendingKey { slot, ..key };
        if self
            .in_order
            .back()
            .is_none_or(|last| last.time <= key.time)
        {
            self.in_order.push_back(key);
        } else {
            self.pending.push(Reverse(key));
        }
    }

    fn pop(&mut self) -> Option<Pending> {
        if self.ready.is_empty() {
            // Gather every observation of the earliest time, then order them
            // by the tie-break, whatever order they arrived in.
            let t = self.next_time()?;
            while self.in_order.front().is_some_and(|k| k.time == t) {
                self.ready.extend(self.in_order.pop_front());
            }
            while self.pending.peek().is_some_and(|Reverse(k)| k.time == t) {
                self.ready.extend(self.pending.pop().map(|Reverse(k)| k));
            }
            self.ready
                .make_contiguous()
                .sort_unstable_by_key(PendingKey::within_time);
        }
        let key = self.ready.pop_front()?;
        let payload = self.slab[key.slot as usize].take()?;
        self.free.push(key.slot);
        if self.pending.is_empty() && self.in_order.is_empty() && self.ready.is_empty() {
            // Nothing waits: reuse the slab from the start.
            self.slab.clear();
            self.free.clear();
        }
        Some(Pending {
            time: key.time,
            corr: key.corr,
            steps: key.steps,
            key: payload.key,
            ev: payload.ev,
            ctx: payload.ctx,
        })
    }

    /// Releases spare capacity (after a flush).
    pub fn shrink(&mut self) {
        self.pending.shrink_to_fit();
        self.in_order.shrink_to_fit();
        self.ready.shrink_to_fit();
        self.slab.shrink_to_fit();
        self.free.shrink_to_fit();
        self.deadlines.shrink_to_fit();
        self.deferred.shrink_to_fit();
        self.starts.shrink_to_fit();
    }
}

/// Counters, shared by every stream, on cache lines of their own so that
/// their writes do not evict the read-mostly fields next to them.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Counters {
    observations: AtomicU64,
    late: AtomicU64,
    untimed: AtomicU64,
    ungrouped: AtomicU64,
    duplicates: AtomicU64,
    evicted: AtomicU64,
    rejected_keys: AtomicU64,
    fired: AtomicU64,
    muted: AtomicU64,
}

/// A snapshot of the correlator's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CorrelatorStats {
    pub observations: u64,
    pub late: u64,
    pub untimed: u64,
    pub ungrouped: u64,
    pub duplicates: u64,
    pub evicted: u64,
    pub rejected_keys: u64,
    pub fired: u64,
    pub muted: u64,
    pub keys: u64,
}

type StepRef = (u16, u8);

/// The number of tracked keys, alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct KeyCount(AtomicUsize);

impl std::ops::Deref for KeyCount {
    type Target = AtomicUsize;
    fn deref(&self) -> &AtomicUsize {
        &self.0
    }
}

pub struct Correlator {
    correlations: Vec<Correlation>,
    /// Rule index → the steps it feeds.
    by_rule: Vec<SmallVec<[StepRef; 2]>>,
    /// Steps selected by filters only, checked on every event.
    filter_steps: Vec<StepRef>,
    /// Rule index → the rule's control domain (for `customer_change`).
    rule_domains: Vec<Option<Domain>>,
    state: DashMap<u64, KeyState, BuildHasherDefault<IdHasher>>,
    keys: KeyCount,
    matrix: Arc<Matrix>,
    names: Names,
    config: CorrelationConfig,
    counters: Counters,
}

impl Correlator {
    /// `rules` are the detector's rules (the steps' rule indices point into them).
    pub fn new(
        correlations: Vec<Correlation>,
        rules: &[Rule],
        matrix: Arc<Matrix>,
        config: CorrelationConfig,
    ) -> Correlator {
        let mut by_rule = vec![SmallVec::new(); rules.len()];
        let mut filter_steps = Vec::new();
        for (c, corr) in correlations.iter().enumerate() {
            for (s, step) in corr.steps.iter().enumerate() {
                let at = (c as u16, s as u8);
                if step.generic {
                    filter_steps.push(at);
                }
                for &r in &step.rules {
                    by_rule[r as usize].push(at);
                }
            }
        }
        Correlator {
            correlations,
            by_rule,
            filter_steps,
            // Hidden rules of correlation steps are not controls: only real
            // detections say an event changed a customer-owned control.
            rule_domains: rules
                .iter()
                .map(|r| {
                    (!r.meta.id.contains('#'))
                        .then_some(r.meta.domain)
                        .flatten()
                })
                .collect(),
            // Many small shards: workers rarely meet on one lock.
            state: DashMap::with_hasher_and_shard_amount(BuildHasherDefault::default(), 64),
            keys: KeyCount::default(),
            matrix,
            names: Names::default(),
            config,
            counters: Counters::default(),
        }
    }

    pub fn correlations(&self) -> &[Correlation] {
        &self.correlations
    }

    pub fn config(&self) -> &CorrelationConfig {
        &self.config
    }

    /// Streams add their counts every 4096 events and when flushed or dropped.
    pub fn stats(&self) -> CorrelatorStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CorrelatorStats {
            observations: get(&c.observations),
            late: get(&c.late),
            untimed: get(&c.untimed),
            ungrouped: get(&c.ungrouped),
            duplicates: get(&c.duplicates),
            evicted: get(&c.evicted),
            rejected_keys: get(&c.rejected_keys),
            fired: get(&c.fired),
            muted: get(&c.muted),
            keys: self.keys.load(Ordering::Relaxed) as u64,
        }
    }

    /// Feeds one event (and the indices of the rules it matched) to the
    /// stream; appends the findings that become due to `out`. The same as
    /// [`Correlator::observations`] then [`Correlator::observe_prepared`].
    pub fn observe(
        &self,
        stream: &mut Stream,
        event: &AuditEvent<'_>,
        matched: &[u32],
        source: SourceRef<'_>,
        out: &mut Vec<Finding>,
    ) {
        let mut text = std::mem::take(&mut stream.scratch.text);
        text.clear();
        let mut observations = Observations::default();
        self.observations(
            event,
            matched,
            source,
            &mut stream.scratch,
            &mut observations,
            &mut text,
        );
        // The event's own text, exactly as long as it is: observations
        // may wait in the stream for as long as the allowed lateness.
        let shared = match observations.text {
            Some(_) => Arc::new(text.as_str().to_owned()),
            None => Arc::clone(&stream.scratch.no_text),
        };
        self.observe_prepared(stream, &mut observations, &shared, out);
        stream.scratch.text = text;
    }

    /// The half of [`Correlator::observe`] that needs neither the stream
    /// nor event-time order: which correlation steps the event feeds, under
    /// which group keys, and what it is cited as, into `into` (made with
    /// `Observations::default()`), in place. The event's text, where an
    /// observation may report the event, is appended to `text`.
    pub fn observations(
        &self,
        event: &AuditEvent<'_>,
        matched: &[u32],
        source: SourceRef<'_>,
        scratch: &mut ObserveScratch,
        into: &mut Observations,
        text: &mut String,
    ) {
        let Some(time) = event.time else {
            return;
        };
        let t = time.timestamp_millis();
        into.time = Some(t);
        let mut hits: SmallVec<[(u16, u8); 4]> = SmallVec::new();
        let mut add = |(c, s): StepRef| match hits.iter_mut().find(|(hc, _)| *hc == c) {
            Some((_, mask)) => *mask |= 1 << s,
            None => hits.push((c, 1 << s)),
        };
        for &r in matched {
            if let Some(steps) = self.by_rule.get(r as usize) {
                steps.iter().copied().for_each(&mut add);
            }
        }
        let change = !self.filter_steps.is_empty() && self.customer_change(event, matched);
        if change {
            self.filter_steps.iter().copied().for_each(&mut add);
        }
        if !hits.is_empty() {
            self.observe_steps(event, &hits, change, source, scratch, into, text);
        }
    }

    /// Applies what [`Correlator::observations`] made of an event to the
    /// stream, in the order events arrive (taking its observations out);
    /// `text` is the buffer its text went to (observations that may
    /// report the event share it). Appends the findings that become due to
    /// `out`.
    pub fn observe_prepared(
        &self,
        stream: &mut Stream,
        observations: &mut Observations,
        text: &Arc<String>,
        out: &mut Vec<Finding>,
    ) {
        let Some(t) = observations.time else {
            self.counters.untimed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        stream.local.ungrouped += u64::from(observations.ungrouped);
        for o in observations.list.drain(..) {
            let ctx = o
                .label
                .zip(observations.text)
                .map(|(label, (start, _))| Ctx {
                    buf: Arc::clone(text),
                    start,
                    ends: observations.ends,
                    label,
                    cloud: observations.cloud,
                    kind: observations.kind,
                });
            let ev = Ev {
                time: t,
                value: o.value,
                id: observations.id.clone(),
                src: observations.src,
            };
            stream.local.observations += 1;
            if t <= stream.watermark {
                stream.local.late += 1;
                let pending = Pending {
                    time: t,
                    corr: o.corr,
                    steps: o.steps,
                    key: o.key,
                    ev,
                    ctx,
                };
                self.apply(stream, pending, out);
            } else {
                let key = PendingKey {
                    time: t,
                    tie: observations.tie,
                    corr: o.corr,
                    steps: o.steps,
                    slot: 0,
                };
                let payload = Payload {
                    key: o.key,
                    ev,
                    ctx,
                };
                if stream.ordered && self.correlations[o.corr as usize].kind == Kind::Sequence {
                    if o.steps & 1 == 0 {
                        stream.deferred.push((key, payload));
                        continue;
                    }
                    *stream.starts.entry(o.key).or_default() += 1;
                }
                stream.push(key, payload);
            }
        }
        self.advance(stream, t, out);
        stream.local.events += 1;
        if stream.local.events >= 4096 {
            self.publish(stream);
        }
    }

    /// Adds the stream's local counters to the shared ones.
    fn publish(&self, stream: &mut Stream) {
        let local = std::mem::take(&mut stream.local);
        let c = &self.counters;
        c.observations
            .fetch_add(local.observations, Ordering::Relaxed);
        c.late.fetch_add(local.late, Ordering::Relaxed);
        c.ungrouped.fetch_add(local.ungrouped, Ordering::Relaxed);
    }

    /// Releases everything the stream holds up to the latest event time it
    /// has seen (end of a replay). Deadlines past that time stay pending: the
    /// end of the input is not the passing of time.
    pub fn flush(&self, stream: &mut Stream, out: &mut Vec<Finding>) {
        if stream.max_seen == i64::MIN {
            self.publish(stream);
            return;
        }
        stream.watermark = stream.max_seen;
        self.release(stream, stream.max_seen, out);
        stream.shrink();
        self.publish(stream);
    }

    /// Moves the stream's event time forward without an event, as if one
    /// of that time had arrived (an idle partition in `run`): the watermark
    /// follows, less the allowed lateness, and deadlines before it fire.
    pub fn advance_to(&self, stream: &mut Stream, time: DateTime<Utc>, out: &mut Vec<Finding>) {
        self.advance(stream, time.timestamp_millis(), out);
    }

    /// Drops every group state (a partition was revoked). Shared state of
    /// other streams is left alone: only the keys on this stream's heap go.
    pub fn drop_stream(&self, mut stream: Stream) {
        self.publish(&mut stream);
        for Reverse((_, key)) in stream.deadlines {
            if self.state.remove(&key).is_some() {
                self.keys.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn customer_change(&self, event: &AuditEvent<'_>, matched: &[u32]) -> bool {
        event.outcome == Outcome::Success
            && event.read_only != Some(true)
            && matched.iter().any(|&r| self.rule_domain_customer(event, r))
    }

    fn rule_domain_customer(&self, event: &AuditEvent<'_>, rule: u32) -> bool {
        let Some(domain) = self.rule_domains.get(rule as usize).copied().flatten() else {
            return false;
        };
        matches!(
            self.matrix.owner_side(event.cloud, &event.service, domain),
            Some(Side::Customer | Side::Shared)
        )
    }

    /// Works out the observations of an event with these step hits into
    /// `into`.
    #[allow(clippy::too_many_arguments)]
    fn observe_steps(
        &self,
        event: &AuditEvent<'_>,
        hits: &[(u16, u8)],
        change: bool,
        source: SourceRef<'_>,
        scratch: &mut ObserveScratch,
        into: &mut Observations,
        text: &mut String,
    ) {
        into.tie = match &event.event_id {
            EventId::Hash(h) => *h,
            EventId::Native(id) => xxhash_rust::xxh3::xxh3_64(id.as_bytes()),
        };
        let mut tier = None;
        for &(c, mut mask) in hits {
            let corr = &self.correlations[c as usize];
            // Step filters.
            for (s, step) in corr.steps.iter().enumerate() {
                if mask & (1 << s) == 0 {
                    continue;
                }
                let mut keep = !step.customer_change || change;
                if keep && let Some(want) = step.tier {
                    let have = *tier.get_or_insert_with(|| {
                        let resources: SmallVec<[&str; 2]> =
                            event.resources.iter().map(|r| &*r.id).collect();
                        self.matrix.data_tier(event.account.as_deref(), &resources)
                    });
                    keep = have == Some(want);
                }
                if !keep {
                    mask &= !(1 << s);
                }
            }
            // A specific step wins over a generic one for the same event.
            let generic: u8 = corr
                .steps
                .iter()
                .enumerate()
                .filter(|(_, s)| s.generic)
                .fold(0, |m, (i, _)| m | (1 << i));
            if mask & !generic != 0 {
                mask &= !generic;
            }
            if mask == 0 {
                continue;
            }
            let first = &corr.steps[mask.trailing_zeros() as usize];
            let Some(key) = self.group_key(c, corr, first, event, &mut scratch.label) else {
                into.ungrouped += 1;
                continue;
            };
            let value = first
                .value
                .as_ref()
                .and_then(|f| self.field_hash(f, event))
                .unwrap_or(0);
            // The event's id and source, made once for all its observations.
            if into.list.is_empty() {
                into.id = EvId::of(&event.event_id);
                into.src = scratch.src(&self.names, source);
            }
            let label = needs_ctx(corr, mask).then(|| {
                let start = match into.text {
                    Some((start, _)) => start as usize,
                    None => {
                        let start = text.len();
                        into.ends = write_event_text(text, event);
                        into.cloud = event.cloud;
                        into.kind = event.principal.kind;
                        start
                    }
                };
                let from = text.len() - start;
                text.push_str(&scratch.label);
                into.text = Some((start as u32, text.len() as u32));
                (from as u32, (text.len() - start) as u32)
            });
            into.list.push(Observation {
                corr: c,
                steps: mask,
                key,
                value,
                label,
            });
        }
    }

    fn first_value(&self, field: &KeyField, event: &AuditEvent<'_>, f: impl FnOnce(&str)) -> bool {
        match field {
            KeyField::Person => {
                let p = &event.principal;
                let ids: SmallVec<[&str; 2]> = [p.id.as_deref(), p.name.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect();
                match self.matrix.person_of(event.cloud, &ids) {
                    Some(person) => {
                        f(person);
                        true
                    }
                    None => false,
                }
            }
            KeyField::Field(source) => {
                let mut f = Some(f);
                let mut found = false;
                let _ = source.visit_values(event, &mut |value| {
                    if value.is_empty() {
                        return ControlFlow::Continue(());
                    }
                    if let Some(f) = f.take() {
                        f(value);
                    }
                    found = true;
                    ControlFlow::Break(())
                });
                found
            }
        }
    }

    fn field_hash(&self, field: &KeyField, event: &AuditEvent<'_>) -> Option<u64> {
        let mut hash = None;
        self.first_value(field, event, |v| {
            hash = Some(xxhash_rust::xxh3::xxh3_64(v.as_bytes()) | 1)
        });
        hash
    }

    /// Writes the group label (`name=value, …`) into `buf` and returns the
    /// key: a hash of the correlation and the label. `None` when a group-by
    /// field is absent.
    fn group_key(
        &self,
        c: u16,
        corr: &Correlation,
        step: &Step,
        event: &AuditEvent<'_>,
        buf: &mut String,
    ) -> Option<u64> {
        buf.clear();
        for (name, field) in corr.group_by.iter().zip(&step.keys) {
            let found = self.first_value(field, event, |value| {
                if !buf.is_empty() {
                    buf.push_str(", ");
                }
                buf.push_str(name);
                buf.push('=');
                buf.push_str(value);
            });
            if !found {
                return None;
            }
        }
        Some(xxhash_rust::xxh3::xxh3_64_with_seed(
            buf.as_bytes(),
            u64::from(c) << 32 | corr.steps.len() as u64,
        ))
    }

    fn advance(&self, stream: &mut Stream, t: i64, out: &mut Vec<Finding>) {
        if t > stream.max_seen {
            stream.max_seen = t;
            let lateness = stream.lateness.unwrap_or(self.config.allowed_lateness_ms);
            let wm = t.saturating_sub(lateness);
            if wm > stream.watermark {
                stream.watermark = wm;
                self.release(stream, wm, out);
            }
        }
    }

    /// Applies pending observations and fires deadlines up to `upto`, in
    /// event-time order (an observation before a deadline at the same time).
    fn release(&self, stream: &mut Stream, upto: i64, out: &mut Vec<Finding>) {
        if stream.deferred.iter().any(|(k, _)| k.time <= upto) {
            self.resolve_deferred(stream, upto);
        }
        loop {
            let obs = stream.next_time().filter(|&t| t <= upto);
            let due = stream
                .deadlines
                .peek()
                .map(|Reverse((d, _))| *d)
                .filter(|&d| d <= upto);
            match (obs, due) {
                (Some(t), Some(d)) if t <= d => {
                    let Some(p) = self.pop(stream) else {
                        break;
                    };
                    self.apply(stream, p, out);
                }
                (Some(_), None) => {
                    let Some(p) = self.pop(stream) else {
                        break;
                    };
                    self.apply(stream, p, out);
                }
                (_, Some(_)) => {
                    let Some(Reverse((d, key))) = stream.deadlines.pop() else {
                        break;
                    };
                    self.deadline(stream, d, key, out);
                }
                (None, None) => break,
            }
        }
    }

    /// The stream's next observation, with its sequence start (if it is
    /// one) no longer counted as waiting.
    fn pop(&self, stream: &mut Stream) -> Option<Pending> {
        let p = stream.pop()?;
        if stream.ordered
            && p.steps & 1 != 0
            && self.correlations[p.corr as usize].kind == Kind::Sequence
        {
            stream.start_applied(p.key);
        }
        Some(p)
    }

    /// Settles the held-back observations of times up to `upto`, every
    /// observation of which is in (the stream is in time order, and time
    /// has moved past them). One whose group has a sequence begun, or a
    /// start waiting in the stream, goes into the stream, where it sorts
    /// among its time's observations as it always did; any other would
    /// find no sequence when applied, which does nothing, and is dropped.
    fn resolve_deferred(&self, stream: &mut Stream, upto: i64) {
        let mut deferred = std::mem::take(&mut stream.deferred);
        for (key, payload) in deferred.drain(..) {
            if key.time > upto {
                stream.deferred.push((key, payload));
            } else if stream.starts.contains_key(&payload.key)
                || self.state.contains_key(&payload.key)
            {
                stream.push(key, payload);
            }
        }
        if stream.deferred.is_empty() {
            // Keeps the allocation.
            stream.deferred = deferred;
        }
    }

    fn cap(&self, corr: &Correlation) -> usize {
        self.config
            .max_events_per_key
            .max(corr.count as usize)
            .max(1)
    }

    /// Makes room for one more key: evicts the nearest deadline of this
    /// stream. Returns false when nothing could be evicted.
    fn make_room(&self, stream: &mut Stream) -> bool {
        while self.keys.load(Ordering::Relaxed) >= self.config.max_keys {
            let Some(Reverse((_, key))) = stream.deadlines.pop() else {
                self.counters.rejected_keys.fetch_add(1, Ordering::Relaxed);
                return false;
            };
            if self.state.remove(&key).is_some() {
                self.keys.fetch_sub(1, Ordering::Relaxed);
                self.counters.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }

    fn new_state(&self, corr: u16, t: i64, expires: i64) -> KeyState {
        KeyState {
            start: t,
            expires,
            count: 0,
            corr,
            step: 0,
            progress: 0,
            ctx: None,
            evidence: SmallVec::new(),
        }
    }

    fn apply(&self, stream: &mut Stream, p: Pending, out: &mut Vec<Finding>) {
        let corr = &self.correlations[p.corr as usize];
        let w = corr.within_ms;
        // Only the kinds that start state on this event need room for a key.
        let opens = match corr.kind {
            Kind::Absence | Kind::Session | Kind::Sequence => p.steps & 1 != 0,
            _ => true,
        };
        if opens
            && self.keys.load(Ordering::Relaxed) >= self.config.max_keys
            && !self.state.contains_key(&p.key)
            && !self.make_room(stream)
        {
            return;
        }
        let entry = self.state.entry(p.key);
        let created = matches!(entry, Entry::Vacant(_));
        match corr.kind {
            Kind::Threshold | Kind::Distinct => {
                let mut st = entry.or_insert_with(|| self.new_state(p.corr, p.time, p.time + w));
                if st.fired() && p.time > st.start + w {
                    st.set_fired(false);
                    st.count = 0;
                    st.evidence.clear();
                }
                if st.evidence.iter().any(|e| e.id == p.ev.id) {
                    self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                } else if st.fired() {
                    st.join(p.ev, self.cap(corr));
                } else {
                    if corr.kind == Kind::Distinct
                        && let Some(i) = st.evidence.iter().position(|e| e.value == p.ev.value)
                    {
                        // Keep the latest occurrence of each value.
                        st.evidence.remove(i);
                    }
                    let at = st.evidence.partition_point(|e| e.time <= p.time);
                    st.evidence.insert(at, p.ev);
                    let newest = st.evidence.last().map_or(p.time, |e| e.time);
                    let stale = st.evidence.partition_point(|e| e.time < newest - w);
                    st.evidence.drain(..stale);
                    let reached = match corr.kind {
                        Kind::Distinct => distinct_values(&st.evidence) >= corr.count as usize,
                        _ => st.evidence.len() >= corr.count as usize,
                    };
                    st.count = st.evidence.len() as u32;
                    if reached {
                        st.set_fired(true);
                        st.start = st.evidence[0].time;
                        self.fire(stream, corr, p.ctx.as_ref(), &st, newest, out);
                    } else {
                        let evidence_cap = self.cap(corr);
                        if st.evidence.len() > evidence_cap {
                            let extra = st.evidence.len() - evidence_cap;
                            st.evidence.drain(..extra);
                        }
                    }
                    st.expires = st.expires.max(newest + w);
                }
                if st.fired() {
                    st.expires = st.expires.max(st.start + w);
                }
                drop(st);
                if created {
                    self.created(stream, p.key, p.time + w);
                }
            }
            Kind::Sequence => self.apply_sequence(stream, corr, entry, p, out),
            Kind::Temporal => {
                let mut st = entry.or_insert_with(|| self.new_state(p.corr, p.time, p.time + w));
                if p.time > st.start + w {
                    st.start = p.time;
                    st.expires = p.time + w;
                    st.step = 0;
                    st.count = 0;
                    st.evidence.clear();
                }
                if st.evidence.iter().any(|e| e.id == p.ev.id) {
                    self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                st.step |= p.steps;
                st.join(p.ev, self.cap(corr));
                let all = ((1u16 << corr.steps.len()) - 1) as u8;
                if st.step == all {
                    self.fire(stream, corr, p.ctx.as_ref(), &st, p.time, out);
                    drop(st);
                    self.remove(p.key);
                } else {
                    let expires = st.expires;
                    drop(st);
                    if created {
                        self.created(stream, p.key, expires);
                    }
                }
            }
            Kind::Absence => {
                let pending_opener = match &entry {
                    Entry::Occupied(o) => Some(o.get().start),
                    Entry::Vacant(_) => None,
                };
                // The second step cancels an opener at or before it.
                if p.steps & 2 != 0
                    && let Some(start) = pending_opener
                    && p.time >= start
                {
                    if let Entry::Occupied(o) = entry {
                        o.remove();
                        self.keys.fetch_sub(1, Ordering::Relaxed);
                    }
                    return;
                }
                if p.steps & 1 == 0 {
                    return;
                }
                match entry {
                    Entry::Occupied(mut o) => {
                        let st = o.get_mut();
                        if !st.evidence.iter().any(|e| e.id == p.ev.id) {
                            st.join(p.ev, self.cap(corr));
                        }
                    }
                    Entry::Vacant(v) => {
                        let mut st = self.new_state(p.corr, p.time, p.time + w);
                        st.count = 1;
                        st.evidence.push(p.ev);
                        st.ctx = p.ctx.map(Ctx::kept);
                        v.insert(st);
                        self.created(stream, p.key, p.time + w);
                    }
                }
            }
            Kind::Session => match entry {
                Entry::Vacant(v) => {
                    if p.steps & 1 == 0 {
                        return;
                    }
                    let mut st = self.new_state(p.corr, p.time, p.time + w);
                    st.count = 1;
                    st.evidence.push(p.ev);
                    st.ctx = p.ctx.map(Ctx::kept);
                    v.insert(st);
                    self.created(stream, p.key, p.time + w);
                }
                Entry::Occupied(mut o) => {
                    let st = o.get_mut();
                    if p.time <= st.start + w && !st.evidence.iter().any(|e| e.id == p.ev.id) {
                        st.join(p.ev, self.cap(corr));
                    }
                }
            },
            Kind::Silence => match entry {
                Entry::Vacant(v) => {
                    let mut st = self.new_state(p.corr, p.time, p.time + w);
                    st.count = 1;
                    st.evidence.push(p.ev);
                    st.ctx = p.ctx.map(Ctx::kept);
                    v.insert(st);
                    self.created(stream, p.key, p.time + w);
                }
                Entry::Occupied(mut o) => {
                    let st = o.get_mut();
                    st.count += 1;
                    if p.time >= st.start {
                        st.start = p.time;
                        st.expires = st.expires.max(p.time + w);
                        st.evidence.clear();
                        st.evidence.push(p.ev);
                    }
                }
            },
        }
    }

    fn apply_sequence(
        &self,
        stream: &mut Stream,
        corr: &Correlation,
        entry: Entry<'_, u64, KeyState>,
        p: Pending,
        out: &mut Vec<Finding>,
    ) {
        let w = corr.within_ms;
        let mut entry = entry;
        // A window that has run out is gone.
        if let Entry::Occupied(o) = entry {
            if p.time > o.get().start + w {
                o.remove();
                self.keys.fetch_sub(1, Ordering::Relaxed);
                entry = self.state.entry(p.key);
            } else {
                entry = Entry::Occupied(o);
            }
        }
        let mut st = match entry {
            Entry::Occupied(o) => o.into_ref(),
            Entry::Vacant(v) => {
                if p.steps & 1 == 0 {
                    return;
                }
                let st = self.new_state(p.corr, p.time, p.time + w);
                let r = v.insert(st);
                self.created(stream, p.key, p.time + w);
                r
            }
        };
        if st.evidence.iter().any(|e| e.id == p.ev.id) {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let cur = st.step as usize;
        let differs = cur == 0 || corr.steps[0].value.is_none() || {
            let v = p.ev.value;
            v != 0 && st.evidence.first().is_none_or(|first| v != first.value)
        };
        if p.steps & (1 << cur) != 0 && differs {
            st.progress = st.progress.saturating_add(1);
            st.join(p.ev, self.cap(corr));
            if u32::from(st.progress) >= corr.steps[cur].min_count {
                st.step += 1;
                st.progress = 0;
            }
            if st.step as usize == corr.steps.len() {
                self.fire(stream, corr, p.ctx.as_ref(), &st, p.time, out);
                drop(st);
                self.remove(p.key);
            }
        } else if p.steps & ((1 << cur) - 1) != 0 {
            // More of an earlier step: evidence, not progress.
            st.join(p.ev, self.cap(corr));
        }
    }

    fn created(&self, stream: &mut Stream, key: u64, expires: i64) {
        self.keys.fetch_add(1, Ordering::Relaxed);
        stream.deadlines.push(Reverse((expires, key)));
    }

    fn remove(&self, key: u64) {
        if self.state.remove(&key).is_some() {
            self.keys.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn deadline(&self, stream: &mut Stream, due: i64, key: u64, out: &mut Vec<Finding>) {
        let Entry::Occupied(mut o) = self.state.entry(key) else {
            return;
        };
        let st = o.get_mut();
        if st.expires > due {
            stream.deadlines.push(Reverse((st.expires, key)));
            return;
        }
        let corr = &self.correlations[st.corr()];
        match corr.kind {
            Kind::Absence | Kind::Session | Kind::Silence => {
                self.fire(stream, corr, st.ctx.as_deref(), st, st.expires, out);
            }
            _ => {}
        }
        o.remove();
        self.keys.fetch_sub(1, Ordering::Relaxed);
    }

    /// Reports the group's window `[st.start, end]` with its evidence.
    fn fire(
        &self,
        stream: &Stream,
        corr: &Correlation,
        ctx: Option<&Ctx>,
        st: &KeyState,
        end: i64,
        out: &mut Vec<Finding>,
    ) {
        let Some(ctx) = ctx else {
            // Every kind keeps the event it reports (`needs_ctx`): a bug if not.
            tracing::error!(correlation = %corr.meta.id, "correlation fired without its reporting event");
            return;
        };
        if stream.muted {
            self.counters.muted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.counters.fired.fetch_add(1, Ordering::Relaxed);
        out.push(self.finding(corr, ctx, &st.evidence, st.count, st.start, end));
    }

    fn finding(
        &self,
        corr: &Correlation,
        ctx: &Ctx,
        evidence: &[Ev],
        count: u32,
        start: i64,
        end: i64,
    ) -> Finding {
        let meta = &corr.meta;
        let resources: Vec<&str> = ctx.resources().collect();
        let tier = self.matrix.data_tier(ctx.account(), &resources);
        let time = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
        let window = format_window(end - start);
        let detail = match corr.kind {
            Kind::Threshold => format!("{count} events within {window} ({})", ctx.label()),
            Kind::Distinct => format!(
                "{} distinct values within {window} ({})",
                distinct_values(evidence),
                ctx.label()
            ),
            Kind::Sequence | Kind::Temporal => format!(
                "{} within {window} ({})",
                corr.steps
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" → "),
                ctx.label()
            ),
            Kind::Absence => format!(
                "{} not followed by {} within {} ({})",
                corr.steps[0].name,
                corr.steps[1].name,
                format_window(corr.within_ms),
                ctx.label()
            ),
            Kind::Session => format!("{count} events in the session window ({})", ctx.label()),
            Kind::Silence => format!(
                "no events for {} after the last one ({})",
                format_window(corr.within_ms),
                ctx.label()
            ),
        };
        Finding {
            id: finding_id(&[&meta.id, ctx.label(), &start.to_string()]),
            kind: FindingKind::Correlation,
            rule_id: meta.id.clone(),
            title: meta.title.clone(),
            severity: meta.severity.for_tier(tier),
            rule_severity: meta.severity,
            cloud: ctx.cloud(),
            account: ctx.account().map(str::to_owned),
            region: ctx.region().map(str::to_owned),
            service: ctx.service().to_owned(),
            operation: ctx.operation().to_owned(),
            principal: ctx.principal(),
            resources: resources.iter().map(|r| (*r).to_owned()).collect(),
            domain: meta.domain,
            responsibility: meta
                .domain
                .and_then(|d| self.matrix.owner_side(ctx.cloud(), ctx.service(), d)),
            owner_team: self
                .matrix
                .owning_team(ctx.account(), &resources)
                .map(str::to_owned),
            data_tier: tier,
            event_time: Some(time(end)),
            evidence: evidence.iter().map(|e| e.evidence(&self.names)).collect(),
            attack: meta.attack.clone(),
            compliance: meta.compliance.clone(),
            remediation: meta.remediation.clone(),
            references: meta.references.clone(),
            approved_paths: Vec::new(),
            detail: Some(detail),
            author: meta.author.clone(),
            correlation: Some(CorrelationDetail {
                kind: std::borrow::Cow::Borrowed(corr.kind.as_str()),
                group: ctx.label().to_owned(),
                window_start: time(start),
                window_end: time(end),
                events: count,
            }),
            resolves: meta.resolves.clone(),
        }
    }
}

fn distinct_values(evidence: &[Ev]) -> usize {
    let mut seen: SmallVec<[u64; 8]> = SmallVec::new();
    for e in evidence {
        if e.value != 0 && !seen.contains(&e.value) {
            seen.push(e.value);
        }
    }
    seen.len()
}

fn format_window(ms: i64) -> String {
    let secs = (ms.max(0) / 1000) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A kept event is read as it was in the shared buffer, and holds its
    /// own text only.
    #[test]
    fn a_kept_event_reads_as_it_did_from_the_shared_buffer() {
        let before = "other event's text|label";
        let fields = ["111", "us-east-1", "s3", "PutBucketAcl", "AIDA1", "mallory"];
        let mut buf = before.to_owned();
        let start = buf.len();
        let mut ends = [0u32; 7];
        for (i, f) in fields.iter().enumerate() {
            buf.push_str(f);
            ends[i] = (buf.len() - start) as u32;
        }
        buf.push_str("arn:aws:s3:::a\narn:aws:s3:::b");
        ends[6] = (buf.len() - start) as u32;
        buf.push_str("first label");
        let label_from = (buf.len() - start) as u32;
        buf.push_str("mallory@111");
        let label = (label_from, (buf.len() - start) as u32);
        buf.push_str("the next event's text");
        let ctx = Ctx {
            buf: Arc::new(buf),
            start: start as u32,
            ends,
            label,
            cloud: Cloud::Aws,
            kind: PrincipalKind::User,
        };
        let read = |c: &Ctx| {
            (
                c.account().map(str::to_owned),
                c.region().map(str::to_owned),
                c.service().to_owned(),
                c.operation().to_owned(),
                c.principal(),
                c.resources().map(str::to_owned).collect::<Vec<_>>(),
                c.label().to_owned(),
                c.cloud(),
            )
        };
        let shared = read(&ctx);
        assert_eq!(shared.0.as_deref(), Some("111"));
        assert_eq!(shared.3, "PutBucketAcl");
        assert_eq!(shared.4.name.as_deref(), Some("mallory"));
        assert_eq!(shared.5, ["arn:aws:s3:::a", "arn:aws:s3:::b"]);
        assert_eq!(shared.6, "mallory@111");
        let kept = ctx.kept();
        assert_eq!(read(&kept), shared);
        assert_eq!(
            kept.buf.as_str(),
            "111us-east-1s3PutBucketAclAIDA1malloryarn:aws:s3:::a\narn:aws:s3:::bmallory@111"
        );
    }

    proptest! {
        /// Keys of one time sort by [`PendingKey::within_time`] as the
        /// derived order sorts them.
        #[test]
        fn one_integer_orders_keys_of_one_time_as_their_fields_do(
            fields in prop::collection::vec((0u64..4, any::<u64>(), any::<u16>(), any::<u8>(), any::<u32>()), 0..64),
            narrow in any::<bool>(),
        ) {
            let keys: Vec<PendingKey> = fields
                .into_iter()
                .map(|(small, tie, corr, steps, slot)| PendingKey {
                    time: 7,
                    // Narrow ties make the later fields decide.
                    tie: if narrow { small } else { tie },
                    corr: if narrow { corr % 3 } else { corr },
                    steps: if narrow { steps % 3 } else { steps },
                    slot,
                })
                .collect();
            let mut by_fields = keys.clone();
            by_fields.sort_unstable();
            let mut by_integer = keys;
            by_integer.sort_unstable_by_key(PendingKey::within_time);
            prop_assert!(by_fields == by_integer);
        }
    }
}
