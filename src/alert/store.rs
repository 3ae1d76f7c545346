//! The durable outbox: an embedded [redb](https://docs.rs/redb) database
//! that holds every finding's alert state and every notice not yet
//! delivered, per destination.
//!
//! Why redb: it is an embedded, pure-Rust, copy-on-write B-tree store with
//! ACID transactions and a checksummed commit, so one `fsync`ed write
//! transaction per pipeline batch makes the whole batch durable at once, and
//! a `kill -9` leaves either the old or the new state, never a torn one. It
//! needs no C toolchain, no server and no schema migrations (values are
//! JSON). SQLite would do the same job with a C dependency and SQL in
//! between.
//!
//! One [`Outbox::sync`] = one write transaction that, for each finding
//! appended since the last sync:
//! 1. drops it if its id was seen before (a redelivery after a restart);
//! 2. closes the open alerts it resolves, if its rule `resolves` others;
//! 3. folds it into the open alert of its dedup key (rule, account,
//!    principal, resources; for a correlation, rule and group) when the
//!    event times are within the dedup window: an *update*; otherwise it
//!    opens a new alert: a *create*;
//! 4. stores a suppressed alert and counts it, without queuing anything;
//! 5. queues the notice for each destination its routes name, unless the
//!    destination's alert budget for the current window is spent, in which
//!    case the notice is summed into the window's digest.
//!
//! Tables: `alerts` (dedup key → state), `seen` (finding id → event time),
//! `open` (resolvable rule, account, resource → dedup key), `queue` and
//! `dead` ((destination, sequence) → delivery), `budget` (destination →
//! window), `meta` (sequence counter, event-time watermark).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::config::{AlertsConfig, BudgetConfig};
use super::model::{Action, AlertNotice, DigestLine, DigestNotice, Notice};
use super::route::Router;
use crate::detect::finding::finding_id;
use crate::detect::{Finding, Severity};

const ALERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("alerts");
const SEEN: TableDefinition<&str, u64> = TableDefinition::new("seen");
const OPEN: TableDefinition<&str, &str> = TableDefinition::new("open");
const QUEUE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queue");
const DEAD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead");
const BUDGET: TableDefinition<&str, &[u8]> = TableDefinition::new("budget");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// How many held-back alert ids a digest lists.
const DIGEST_SAMPLE: usize = 20;

/// Why the outbox failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("outbox {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("outbox {path}: a stored record does not decode: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// One notice waiting for (or given up on by) one destination.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub notice: Notice,
    /// Attempts made so far.
    pub attempts: u32,
    /// Wall-clock milliseconds when the notice was queued.
    pub enqueued_ms: i64,
    /// Not before this wall-clock millisecond.
    pub next_attempt_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What became of one delivery attempt.
#[derive(Debug)]
pub enum Settle {
    Delivered { seq: u64 },
    Retry { seq: u64, delivery: Delivery },
    Dead { seq: u64, delivery: Delivery },
}

#[derive(Debug, Serialize, Deserialize)]
struct AlertState {
    alert_id: String,
    first_seen_ms: i64,
    last_seen_ms: i64,
    occurrences: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    suppressed: Option<String>,
    closed: bool,
    finding: Finding,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct BudgetState {
    window_start_ms: i64,
    sent: u64,
    held: u64,
    max_severity: Option<Severity>,
    /// rule id → (title, severity, count).
    by_rule: BTreeMap<String, (String, Severity, u64)>,
    sample: Vec<String>,
}

/// Counters of what the outbox decided, for the summary and `/metrics`.
#[derive(Debug, Default)]
pub struct OutboxStats {
    pub findings: AtomicU64,
    /// Findings whose id was already in the outbox (redelivered input).
    pub repeated: AtomicU64,
    pub created: AtomicU64,
    /// Findings folded into an open alert.
    pub updated: AtomicU64,
    pub closed: AtomicU64,
    pub suppressed: AtomicU64,
    /// Notices summed into a digest by an alert budget.
    pub held: AtomicU64,
    pub digests: AtomicU64,
    pub queued: AtomicU64,
    pub syncs: AtomicU64,
}

struct SinkInfo {
    name: String,
    budget: Option<BudgetConfig>,
}

/// The durable outbox, shared by the pipeline's workers (which append and
/// sync) and the dispatcher (which delivers and settles).
pub struct Outbox {
    path: PathBuf,
    db: Database,
    router: Router,
    sinks: Vec<SinkInfo>,
    resolvable: HashSet<String>,
    window_ms: i64,
    pending: Mutex<Vec<Finding>>,
    commit: Mutex<()>,
    notify: Vec<Arc<Notify>>,
    /// Deliveries settled since the last durable commit.
    unsynced: std::sync::atomic::AtomicBool,
    pub stats: OutboxStats,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The key repeats of a finding share.
pub fn dedup_key(f: &Finding) -> String {
    if let Some(c) = &f.correlation {
        return finding_id(&["corr", &f.rule_id, &c.group]);
    }
    let mut resources: Vec<&str> = f.resources.iter().map(String::as_str).collect();
    resources.sort_unstable();
    let principal = f
        .principal
        .id
        .as_deref()
        .or(f.principal.name.as_deref())
        .unwrap_or("");
    let mut parts = vec![
        "rule",
        &f.rule_id,
        f.account.as_deref().unwrap_or(""),
        principal,
    ];
    parts.extend(resources);
    finding_id(&parts)
}

fn open_key(rule: &str, account: &str, resource: &str) -> String {
    format!("{rule}\0{account}\0{resource}")
}

struct Tables<'t> {
    alerts: Table<'t, &'static str, &'static [u8]>,
    seen: Table<'t, &'static str, u64>,
    open: Table<'t, &'static str, &'static str>,
    queue: Table<'t, (&'static str, u64), &'static [u8]>,
    budget: Table<'t, &'static str, &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
}

impl Outbox {
    /// Opens (or creates) the outbox file. `resolvable`: rule ids that some
    /// rule `resolves`, whose alerts are indexed for closing.
    pub fn open(
        path: &Path,
        config: &AlertsConfig,
        resolvable: HashSet<String>,
    ) -> Result<Outbox, Box<dyn std::error::Error + Send + Sync>> {
        config.validate()?;
        let router = Router::new(config)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let db = Database::create(path).map_err(|e| StoreError::Db {
            path: path.to_owned(),
            source: Box::new(e.into()),
        })?;
        let outbox = Outbox {
            path: path.to_owned(),
            db,
            router,
            sinks: config
                .sinks
                .iter()
                .map(|s| SinkInfo {
                    name: s.name.clone(),
                    budget: s.budget.clone(),
                })
                .collect(),
            resolvable,
            window_ms: i64::try_from(config.dedup_window.as_millis()).unwrap_or(i64::MAX),
            pending: Mutex::new(Vec::new()),
            commit: Mutex::new(()),
            notify: config
                .sinks
                .iter()
                .map(|_| Arc::new(Notify::new()))
                .collect(),
            unsynced: std::sync::atomic::AtomicBool::new(false),
            stats: OutboxStats::default(),
        };
        // Create the tables, so that readers never meet a missing one.
        outbox.write(redb::Durability::Immediate, |tx| {
            Self::tables(tx)?;
            tx.open_table(DEAD)?;
            Ok(())
        })?;
        for reason in outbox.router.expired_suppressions(Utc::now()) {
            tracing::warn!(reason, "suppression has expired and no longer applies");
        }
        Ok(outbox)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Destination names, in configuration order.
    pub fn sink_names(&self) -> impl Iterator<Item = &str> {
        self.sinks.iter().map(|s| s.name.as_str())
    }

    /// Woken when notices are queued for destination `index`.
    pub fn notifier(&self, index: usize) -> Arc<Notify> {
        self.notify[index].clone()
    }

    fn db_err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            source: Box::new(e.into()),
        }
    }

    fn decode<T: for<'de> Deserialize<'de>>(&self, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
            path: self.path.clone(),
            source,
        })
    }

    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        // Our own plain data types: serialization cannot fail.
        serde_json::to_vec(value).unwrap_or_default()
    }

    fn tables(tx: &WriteTransaction) -> Result<Tables<'_>, redb::Error> {
        Ok(Tables {
            alerts: tx.open_table(ALERTS)?,
            seen: tx.open_table(SEEN)?,
            open: tx.open_table(OPEN)?,
            queue: tx.open_table(QUEUE)?,
            budget: tx.open_table(BUDGET)?,
            meta: tx.open_table(META)?,
        })
    }

    fn write<T>(
        &self,
        durability: redb::Durability,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreWriteError>,
    ) -> Result<T, StoreError> {
        let mut tx = self.db.begin_write().map_err(|e| self.db_err(e))?;
        tx.set_durability(durability).map_err(|e| self.db_err(e))?;
        let value = f(&tx).map_err(|e| match e {
            StoreWriteError::Db(e) => self.db_err(e),
            StoreWriteError::Decode(source) => StoreError::Decode {
                path: self.path.clone(),
                source,
            },
        })?;
        tx.commit().map_err(|e| self.db_err(e))?;
        Ok(value)
    }

    /// Adds findings; they are durable once [`Outbox::sync`] returns.
    pub fn append(&self, findings: &[Finding]) {
        if findings.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.extend_from_slice(findings);
    }

    /// Makes every appended finding durable (one fsynced transaction) and
    /// wakes the destinations that got notices.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.sync_at(Utc::now())
    }

    /// [`Outbox::sync`] with the wall-clock time given (suppression expiry,
    /// alert budgets).
    pub fn sync_at(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        // Holding `commit` while taking `pending` means a sync returns only
        // after a transaction holding everything appended before it commits.
        let _commit = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return Ok(());
        }
        let mut woken = vec![false; self.sinks.len()];
        self.write(redb::Durability::Immediate, |tx| {
            let mut t = Self::tables(tx)?;
            for finding in &batch {
                self.ingest(&mut t, finding, now, &mut woken)?;
            }
            Ok(())
        })?;
        self.stats.syncs.fetch_add(1, Ordering::Relaxed);
        for (i, w) in woken.iter().enumerate() {
            if *w {
                self.notify[i].notify_one();
            }
        }
        Ok(())
    }

    fn ingest(
        &self,
        t: &mut Tables<'_>,
        f: &Finding,
        now: DateTime<Utc>,
        woken: &mut [bool],
    ) -> Result<(), StoreWriteError> {
        self.stats.findings.fetch_add(1, Ordering::Relaxed);
        if t.seen.get(f.id.as_str())?.is_some() {
            self.stats.repeated.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let now_ms = now.timestamp_millis();
        let ev_ms = f.event_time.map_or(now_ms, |t| t.timestamp_millis());
        t.seen.insert(f.id.as_str(), ev_ms.max(0) as u64)?;
        let watermark = t.meta.get("watermark")?.map_or(0, |v| v.value());
        if ev_ms.max(0) as u64 > watermark {
            t.meta.insert("watermark", ev_ms.max(0) as u64)?;
        }
        if !f.resolves.is_empty() {
            return self.resolve(t, f, now_ms, woken);
        }
        let key = dedup_key(f);
        let existing: Option<AlertState> = match t.alerts.get(key.as_str())? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        };
        let (state, action) = match existing {
            Some(mut s)
                if !s.closed
                    && ev_ms - s.first_seen_ms <= self.window_ms
                    && s.last_seen_ms - ev_ms <= self.window_ms =>
            {
                s.occurrences += 1;
                s.first_seen_ms = s.first_seen_ms.min(ev_ms);
                if ev_ms >= s.last_seen_ms {
                    s.last_seen_ms = ev_ms;
                    s.finding = f.clone();
                }
                (s, Action::Update)
            }
            _ => {
                let s = AlertState {
                    alert_id: f.id.clone(),
                    first_seen_ms: ev_ms,
                    last_seen_ms: ev_ms,
                    occurrences: 1,
                    suppressed: self.router.suppressed(f, now).map(str::to_owned),
                    closed: false,
                    finding: f.clone(),
                };
                if self.resolvable.contains(&f.rule_id) {
                    let account = f.account.as_deref().unwrap_or("");
                    if f.resources.is_empty() {
                        t.open
                            .insert(open_key(&f.rule_id, account, "").as_str(), key.as_str())?;
                    }
                    for r in &f.resources {
                        t.open
                            .insert(open_key(&f.rule_id, account, r).as_str(), key.as_str())?;
                    }
                }
                (s, Action::Create)
            }
        };
        match action {
            Action::Create => &self.stats.created,
            _ => &self.stats.updated,
        }
        .fetch_add(1, Ordering::Relaxed);
        t.alerts
            .insert(key.as_str(), Self::encode(&state).as_slice())?;
        if state.suppressed.is_some() {
            self.stats.suppressed.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.announce(t, state, action, f, now_ms, woken)
    }

    /// Queues the notice of `action` on `state` (caused by finding `cause`)
    /// for every destination its routes name.
    fn announce(
        &self,
        t: &mut Tables<'_>,
        state: AlertState,
        action: Action,
        cause: &Finding,
        now_ms: i64,
        woken: &mut [bool],
    ) -> Result<(), StoreWriteError> {
        let destinations = self.router.destinations(&state.finding);
        let notice = Notice::Alert(AlertNotice {
            action,
            alert_id: state.alert_id,
            finding_id: cause.id.clone(),
            occurrences: state.occurrences,
            first_seen: Some(time(state.first_seen_ms)),
            last_seen: Some(time(state.last_seen_ms)),
            closed_by: (action == Action::Close).then(|| cause.rule_id.clone()),
            finding: state.finding,
        });
        for sink in destinations {
            self.enqueue(t, sink, &notice, now_ms, woken)?;
        }
        Ok(())
    }

    /// Closes the open alerts `f` resolves: same account, and a resource in
    /// common (or no resources on either side).
    fn resolve(
        &self,
        t: &mut Tables<'_>,
        f: &Finding,
        now_ms: i64,
        woken: &mut [bool],
    ) -> Result<(), StoreWriteError> {
        let account = f.account.as_deref().unwrap_or("");
        let mut keys = Vec::new();
        for rule in &f.resolves {
            let prefix = open_key(rule, account, "");
            let end = format!("{prefix}\u{10FFFF}");
            for entry in t.open.range(prefix.as_str()..end.as_str())? {
                let (k, v) = entry?;
                let resource = &k.value()[prefix.len()..];
                if resource.is_empty()
                    || f.resources.is_empty()
                    // Azure resource ids are case-insensitive, and Event
                    // Hubs exports upper-case them.
                    || f.resources.iter().any(|r| r.eq_ignore_ascii_case(resource))
                {
                    keys.push((k.value().to_owned(), v.value().to_owned()));
                }
            }
        }
        for (open_key, dedup) in keys {
            t.open.remove(open_key.as_str())?;
            let Some(bytes) = t.alerts.get(dedup.as_str())?.map(|v| v.value().to_vec()) else {
                continue;
            };
            let mut state: AlertState = serde_json::from_slice(&bytes)?;
            if state.closed {
                continue;
            }
            state.closed = true;
            t.alerts
                .insert(dedup.as_str(), Self::encode(&state).as_slice())?;
            self.stats.closed.fetch_add(1, Ordering::Relaxed);
            if state.suppressed.is_some() {
                continue;
            }
            self.announce(t, state, Action::Close, f, now_ms, woken)?;
        }
        Ok(())
    }

    fn push(
        t: &mut Tables<'_>,
        sink: &str,
        notice: Notice,
        now_ms: i64,
    ) -> Result<u64, StoreWriteError> {
        let seq = t.meta.get("seq")?.map_or(0, |v| v.value()) + 1;
        t.meta.insert("seq", seq)?;
        let delivery = Delivery {
            notice,
            attempts: 0,
            enqueued_ms: now_ms,
            next_attempt_ms: now_ms,
            last_error: None,
        };
        t.queue
            .insert((sink, seq), Self::encode(&delivery).as_slice())?;
        Ok(seq)
    }

    fn enqueue(
        &self,
        t: &mut Tables<'_>,
        sink: usize,
        notice: &Notice,
        now_ms: i64,
        woken: &mut [bool],
    ) -> Result<(), StoreWriteError> {
        let info = &self.sinks[sink];
        let budgeted = matches!(notice, Notice::Alert(a) if a.action != Action::Close);
        if let (Some(budget), true) = (&info.budget, budgeted) {
            let per = i64::try_from(budget.per.as_millis()).unwrap_or(i64::MAX);
            let mut state: BudgetState = match t.budget.get(info.name.as_str())? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => BudgetState {
                    window_start_ms: now_ms,
                    ..Default::default()
                },
            };
            if now_ms >= state.window_start_ms.saturating_add(per) {
                if state.held > 0 {
                    self.push_digest(t, sink, &state, per, None)?;
                    woken[sink] = true;
                }
                state = BudgetState {
                    window_start_ms: now_ms,
                    ..Default::default()
                };
            }
            if state.sent >= budget.max {
                let Notice::Alert(a) = notice else {
                    unreachable!()
                };
                state.held += 1;
                let f = &a.finding;
                state.max_severity = state.max_severity.max(Some(f.severity));
                let line = state
                    .by_rule
                    .entry(f.rule_id.clone())
                    .or_insert_with(|| (f.title.clone(), f.severity, 0));
                line.1 = line.1.max(f.severity);
                line.2 += 1;
                if state.sample.len() < DIGEST_SAMPLE && !state.sample.contains(&a.alert_id) {
                    state.sample.push(a.alert_id.clone());
                }
                t.budget
                    .insert(info.name.as_str(), Self::encode(&state).as_slice())?;
                self.stats.held.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            state.sent += 1;
            t.budget
                .insert(info.name.as_str(), Self::encode(&state).as_slice())?;
        }
        Self::push(t, &info.name, notice.clone(), now_ms)?;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        woken[sink] = true;
        Ok(())
    }

    fn push_digest(
        &self,
        t: &mut Tables<'_>,
        sink: usize,
        state: &BudgetState,
        per: i64,
        at: Option<i64>,
    ) -> Result<(), StoreWriteError> {
        let name = &self.sinks[sink].name;
        let mut by_rule: Vec<DigestLine> = state
            .by_rule
            .iter()
            .map(|(rule, (title, severity, count))| DigestLine {
                rule_id: rule.clone(),
                title: title.clone(),
                severity: *severity,
                count: *count,
            })
            .collect();
        by_rule.sort_by(|a, b| b.count.cmp(&a.count).then(a.rule_id.cmp(&b.rule_id)));
        let end = state.window_start_ms.saturating_add(per);
        let digest = DigestNotice {
            id: finding_id(&["digest", name, &state.window_start_ms.to_string()]),
            destination: name.clone(),
            window_start: time(state.window_start_ms),
            window_end: time(end),
            count: state.held,
            max_severity: state.max_severity.unwrap_or(Severity::Info),
            by_rule,
            sample: state.sample.clone(),
        };
        Self::push(t, name, Notice::Digest(digest), at.unwrap_or(end))?;
        self.stats.digests.fetch_add(1, Ordering::Relaxed);
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Queues the digest of every budget window that has ended with notices
    /// held back. Returns how many were queued.
    pub fn roll_budgets(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        self.roll(now.timestamp_millis(), false)
    }

    /// Queues the digest of every budget window holding notices back, ended
    /// or not, to be sent now (before a delivery-only run exits).
    pub fn flush_budgets(&self) -> Result<usize, StoreError> {
        self.roll(now_ms(), true)
    }

    fn roll(&self, now_ms: i64, flush: bool) -> Result<usize, StoreError> {
        let due: Vec<usize> = {
            let rx = self.db.begin_read().map_err(|e| self.db_err(e))?;
            let table = rx.open_table(BUDGET).map_err(|e| self.db_err(e))?;
            let mut due = Vec::new();
            for (i, info) in self.sinks.iter().enumerate() {
                let (Some(budget), Some(v)) = (
                    &info.budget,
                    table.get(info.name.as_str()).map_err(|e| self.db_err(e))?,
                ) else {
                    continue;
                };
                let state: BudgetState = self.decode(v.value())?;
                let per = i64::try_from(budget.per.as_millis()).unwrap_or(i64::MAX);
                if state.held > 0 && (flush || now_ms >= state.window_start_ms.saturating_add(per))
                {
                    due.push(i);
                }
            }
            due
        };
        if due.is_empty() {
            return Ok(0);
        }
        let _commit = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        let queued = self.write(redb::Durability::Immediate, |tx| {
            let mut t = Self::tables(tx)?;
            let mut queued = 0;
            for &i in &due {
                let info = &self.sinks[i];
                let Some(budget) = &info.budget else { continue };
                let per = i64::try_from(budget.per.as_millis()).unwrap_or(i64::MAX);
                let Some(bytes) = t
                    .budget
                    .get(info.name.as_str())?
                    .map(|v| v.value().to_vec())
                else {
                    continue;
                };
                let state: BudgetState = serde_json::from_slice(&bytes)?;
                if state.held == 0 || (!flush && now_ms < state.window_start_ms.saturating_add(per))
                {
                    continue;
                }
                self.push_digest(&mut t, i, &state, per, flush.then_some(now_ms))?;
                t.budget.remove(info.name.as_str())?;
                queued += 1;
            }
            Ok(queued)
        })?;
        for &i in &due {
            self.notify[i].notify_one();
        }
        Ok(queued)
    }

    /// Forgets alerts and finding ids older than the dedup window behind the
    /// newest event time seen. Returns how many alerts were dropped.
    pub fn expire(&self) -> Result<usize, StoreError> {
        let _commit = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        self.write(redb::Durability::Immediate, |tx| {
            let mut t = Self::tables(tx)?;
            let watermark = t.meta.get("watermark")?.map_or(0, |v| v.value()) as i64;
            let horizon = watermark.saturating_sub(self.window_ms.saturating_mul(2));
            let mut dropped = 0;
            let mut gone = HashSet::new();
            let mut stale = Vec::new();
            for entry in t.alerts.iter()? {
                let (k, v) = entry?;
                let state: AlertState = serde_json::from_slice(v.value())?;
                if state.last_seen_ms < horizon {
                    stale.push(k.value().to_owned());
                }
            }
            for k in &stale {
                t.alerts.remove(k.as_str())?;
                gone.insert(k.clone());
                dropped += 1;
            }
            t.seen.retain(|_, ms| (ms as i64) >= horizon)?;
            t.open.retain(|_, dedup| !gone.contains(dedup))?;
            Ok(dropped)
        })
    }

    /// Up to `limit` queued deliveries of destination `sink` with a sequence
    /// number above `after`, in order.
    pub fn load(
        &self,
        sink: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Delivery)>, StoreError> {
        let rx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = rx.open_table(QUEUE).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for entry in table
            .range((sink, after.saturating_add(1))..=(sink, u64::MAX))
            .map_err(|e| self.db_err(e))?
        {
            let (k, v) = entry.map_err(|e| self.db_err(e))?;
            out.push((k.value().1, self.decode(v.value())?));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Records delivery outcomes of destination `sink`: delivered notices
    /// leave the queue, retried ones are rescheduled, given-up ones move to
    /// the dead letters. Not fsynced on its own: after a crash a delivered
    /// notice may be sent again (receivers deduplicate on the idempotency
    /// key), never lost.
    pub fn settle(&self, sink: &str, outcomes: &[Settle]) -> Result<(), StoreError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.unsynced.store(true, Ordering::Relaxed);
        self.write(redb::Durability::None, |tx| {
            let mut queue = tx.open_table(QUEUE)?;
            let mut dead = tx.open_table(DEAD)?;
            for outcome in outcomes {
                match outcome {
                    Settle::Delivered { seq } => {
                        queue.remove((sink, *seq))?;
                    }
                    Settle::Retry { seq, delivery } => {
                        queue.insert((sink, *seq), Self::encode(delivery).as_slice())?;
                    }
                    Settle::Dead { seq, delivery } => {
                        queue.remove((sink, *seq))?;
                        dead.insert((sink, *seq), Self::encode(delivery).as_slice())?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Makes the delivery records settled so far durable (the dispatcher
    /// calls it every second and at shutdown), so that a crash re-sends at
    /// most the last second's deliveries.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        if !self.unsynced.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        self.write(redb::Durability::Immediate, |tx| {
            tx.open_table(META)?
                .insert("checkpoint", now_ms().max(0) as u64)?;
            Ok(())
        })
    }

    /// Queued (or dead) deliveries, optionally of one destination.
    pub fn list(
        &self,
        sink: Option<&str>,
        dead: bool,
    ) -> Result<Vec<(String, u64, Delivery)>, StoreError> {
        let rx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = rx
            .open_table(if dead { DEAD } else { QUEUE })
            .map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = entry.map_err(|e| self.db_err(e))?;
            let (name, seq) = k.value();
            if sink.is_some_and(|s| s != name) {
                continue;
            }
            out.push((name.to_owned(), seq, self.decode(v.value())?));
        }
        Ok(out)
    }

    /// (queued, dead) per destination name.
    pub fn depth(&self) -> Result<BTreeMap<String, (u64, u64)>, StoreError> {
        let rx = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for name in self.sink_names() {
            out.insert(name.to_owned(), (0, 0));
        }
        for (dead, def) in [(false, QUEUE), (true, DEAD)] {
            let table = rx.open_table(def).map_err(|e| self.db_err(e))?;
            for entry in table.iter().map_err(|e| self.db_err(e))? {
                let (k, _) = entry.map_err(|e| self.db_err(e))?;
                let slot = out.entry(k.value().0.to_owned()).or_default();
                if dead {
                    slot.1 += 1;
                } else {
                    slot.0 += 1;
                }
            }
        }
        Ok(out)
    }

    /// Moves dead letters (of one destination, or one sequence number) back
    /// to the queue with their attempts reset. Returns how many.
    pub fn retry_dead(&self, sink: Option<&str>, seq: Option<u64>) -> Result<usize, StoreError> {
        let _commit = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        self.write(redb::Durability::Immediate, |tx| {
            let mut t = Self::tables(tx)?;
            let mut dead = tx.open_table(DEAD)?;
            let mut moved = Vec::new();
            for entry in dead.iter()? {
                let (k, v) = entry?;
                let (name, s) = k.value();
                if sink.is_some_and(|x| x != name) || seq.is_some_and(|x| x != s) {
                    continue;
                }
                let d: Delivery = serde_json::from_slice(v.value())?;
                moved.push((name.to_owned(), s, d));
            }
            for (name, s, d) in &moved {
                dead.remove((name.as_str(), *s))?;
                Self::push(&mut t, name, d.notice.clone(), now)?;
            }
            Ok(moved)
        })
        .map(|moved| {
            for (name, _, _) in &moved {
                if let Some(i) = self.sinks.iter().position(|s| &s.name == name) {
                    self.notify[i].notify_one();
                }
            }
            moved.len()
        })
    }

    /// Deletes queued or dead deliveries (of one destination). Returns how many.
    pub fn purge(&self, sink: Option<&str>, dead: bool) -> Result<usize, StoreError> {
        let _commit = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        self.write(redb::Durability::Immediate, |tx| {
            let mut table = tx.open_table(if dead { DEAD } else { QUEUE })?;
            let before = table.len()?;
            table.retain(|(name, _), _| sink.is_some_and(|s| s != name))?;
            Ok((before - table.len()?) as usize)
        })
    }
}

/// Errors inside a write transaction, mapped to [`StoreError`] with the path.
#[derive(Debug)]
enum StoreWriteError {
    Db(redb::Error),
    Decode(serde_json::Error),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreWriteError {
            fn from(e: $t) -> Self {
                StoreWriteError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::TableError,
    redb::StorageError,
    redb::TransactionError,
    redb::CommitError
);

impl From<serde_json::Error> for StoreWriteError {
    fn from(e: serde_json::Error) -> Self {
        StoreWriteError::Decode(e)
    }
}
