//! The live findings feed: findings the outbox has made durable, numbered
//! in the order they were handed over, kept in a bounded ring for
//! `/findings` (and for a client resuming with `Last-Event-ID`), broadcast
//! to `/findings/stream` subscribers, and counted by rule and severity for
//! `/metrics` and by severity and domain per minute for the web view.
//!
//! [`HubSink`] puts the hub behind the outbox: in a [`Tee`](crate::pipeline::outbox::Tee)
//! after it, it publishes a batch only once the outbox has synced it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use tokio::sync::broadcast;

use super::filter::FindingFilter;
use crate::detect::{Finding, Severity};
use crate::pipeline::outbox::{FindingSink, OutboxError};

/// A finding as the feed carries it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Published {
    /// Which feed: random per process, so that a position from another
    /// process (a restart, another replica) is not taken for one of ours.
    pub feed: u32,
    /// Position in the feed (1, 2, …).
    pub seq: u64,
    /// When the hub got it.
    pub received: DateTime<Utc>,
    pub finding: Finding,
}

/// Findings of one minute by (severity, domain).
type MinuteCounts = BTreeMap<(Severity, &'static str), u64>;

impl Published {
    /// The SSE event id: `<feed>-<seq>`.
    pub fn position(&self) -> String {
        format!("{:08x}-{}", self.feed, self.seq)
    }
}

struct Ring {
    items: VecDeque<Arc<Published>>,
    ids: HashSet<String>,
    next: u64,
    /// Per minute (Unix minute): counts by (severity, domain).
    minutes: VecDeque<(i64, MinuteCounts)>,
}

/// See the module docs.
pub struct FindingsHub {
    feed: u32,
    ring: Mutex<Ring>,
    capacity: usize,
    tx: broadcast::Sender<Arc<Published>>,
    /// Findings per (rule, severity), since start.
    pub by_rule: DashMap<(String, Severity), u64>,
}

/// Counts over the last hour, for the web view.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    pub by_severity: BTreeMap<&'static str, u64>,
    pub by_domain: BTreeMap<&'static str, u64>,
    pub total: u64,
}

impl FindingsHub {
    /// A hub keeping the last `capacity` findings.
    pub fn new(capacity: usize) -> FindingsHub {
        let (tx, _) = broadcast::channel(1024);
        FindingsHub {
            feed: fastrand::u32(..),
            ring: Mutex::new(Ring {
                items: VecDeque::with_capacity(capacity.min(4096)),
                ids: HashSet::new(),
                next: 1,
                minutes: VecDeque::new(),
            }),
            capacity: capacity.max(1),
            tx,
            by_rule: DashMap::new(),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds findings to the feed (a finding id already in the ring, handed
    /// over again after a retried sync, is not repeated).
    pub fn publish(&self, findings: impl IntoIterator<Item = Finding>) {
        let now = Utc::now();
        let minute = now.timestamp().div_euclid(60);
        let mut ring = self.ring();
        for finding in findings {
            if ring.ids.contains(&finding.id) {
                continue;
            }
            *self
                .by_rule
                .entry((finding.rule_id.clone(), finding.severity))
                .or_default() += 1;
            let domain = finding.domain.map_or("none", |d| d.as_str());
            if ring.minutes.back().is_none_or(|(m, _)| *m != minute) {
                ring.minutes.push_back((minute, BTreeMap::new()));
            }
            while ring.minutes.front().is_some_and(|(m, _)| *m <= minute - 60) {
                ring.minutes.pop_front();
            }
            if let Some((_, counts)) = ring.minutes.back_mut() {
                *counts.entry((finding.severity, domain)).or_default() += 1;
            }
            let seq = ring.next;
            ring.next += 1;
            ring.ids.insert(finding.id.clone());
            let item = Arc::new(Published {
                feed: self.feed,
                seq,
                received: now,
                finding,
            });
            ring.items.push_back(item.clone());
            while ring.items.len() > self.capacity {
                if let Some(old) = ring.items.pop_front() {
                    ring.ids.remove(&old.finding.id);
                }
            }
            // No subscriber is fine.
            let _ = self.tx.send(item);
        }
    }

    /// New findings as they are published.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }

    /// How many live subscribers (open `/findings/stream` connections and
    /// in-process followers) the feed has now.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// This process's feed id.
    pub fn feed(&self) -> u32 {
        self.feed
    }

    /// The position a client resumes after: `<feed>-<seq>` (an SSE event
    /// id) or a bare `<seq>`. A position from another feed (the server
    /// restarted, or this is another replica) resumes from the start of
    /// this one: none of its findings can have been seen.
    pub fn resume_after(&self, position: &str) -> Option<u64> {
        match position.split_once('-') {
            Some((feed, seq)) => {
                let same = u32::from_str_radix(feed, 16).is_ok_and(|f| f == self.feed);
                let seq: u64 = seq.parse().ok()?;
                Some(if same { seq } else { 0 })
            }
            None => position.parse().ok(),
        }
    }

    /// Kept findings that pass `filter` and were received at or after
    /// `since`, oldest first. With `after` (a position), the oldest `limit`
    /// beyond it, so that a client pages forward without gaps; without, the
    /// newest `limit`.
    pub fn recent(
        &self,
        filter: &FindingFilter,
        since: Option<DateTime<Utc>>,
        after: Option<u64>,
        limit: usize,
    ) -> Vec<Arc<Published>> {
        let ring = self.ring();
        let keep = |p: &&Arc<Published>| {
            after.is_none_or(|a| p.seq > a)
                && since.is_none_or(|s| p.received >= s)
                && filter.matches(&p.finding)
        };
        if after.is_some() {
            return ring
                .items
                .iter()
                .filter(keep)
                .take(limit)
                .cloned()
                .collect();
        }
        let mut out: Vec<Arc<Published>> = ring
            .items
            .iter()
            .rev()
            .filter(keep)
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// Findings per severity and domain received in the last hour.
    pub fn last_hour(&self) -> Summary {
        let minute = Utc::now().timestamp().div_euclid(60);
        let ring = self.ring();
        let mut summary = Summary::default();
        for (m, counts) in &ring.minutes {
            if *m <= minute - 60 {
                continue;
            }
            for ((severity, domain), n) in counts {
                *summary.by_severity.entry(severity.as_str()).or_default() += n;
                *summary.by_domain.entry(domain).or_default() += n;
                summary.total += n;
            }
        }
        summary
    }
}

/// Publishes to a hub what the sinks before it in a `Tee` have synced.
/// Pipeline workers append and sync their own batches on their own
/// threads, so what waits is kept per thread: a worker's sync publishes its
/// batch, not one another worker appended after the outbox sync began.
pub struct HubSink {
    hub: Arc<FindingsHub>,
    pending: Mutex<HashMap<std::thread::ThreadId, Vec<Finding>>>,
}

impl HubSink {
    pub fn new(hub: Arc<FindingsHub>) -> HubSink {
        HubSink {
            hub,
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<std::thread::ThreadId, Vec<Finding>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl FindingSink for HubSink {
    fn append(&self, findings: &[Finding]) -> Result<(), OutboxError> {
        self.pending()
            .entry(std::thread::current().id())
            .or_default()
            .extend_from_slice(findings);
        Ok(())
    }

    fn sync(&self) -> Result<(), OutboxError> {
        let batch = self
            .pending()
            .remove(&std::thread::current().id())
            .unwrap_or_default();
        self.hub.publish(batch);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn finding(id: &str, rule: &str, severity: Severity) -> Finding {
        serde_json::from_value(serde_json::json!({
            "id": id, "kind": "rule", "rule_id": rule, "title": rule,
            "severity": severity.as_str(), "rule_severity": severity.as_str(),
            "cloud": "aws", "account": "111122223333", "service": "s3.amazonaws.com",
            "operation": "PutBucketPolicy", "principal": {"kind": "user", "name": "alice"},
            "domain": "data", "owner_team": "storage", "evidence": []
        }))
        .unwrap()
    }

    #[test]
    fn the_ring_keeps_the_newest_numbers_them_and_skips_repeats() {
        let hub = FindingsHub::new(3);
        assert_eq!(hub.subscribers(), 0);
        let mut rx = hub.subscribe();
        assert_eq!(hub.subscribers(), 1);
        hub.publish((0..5).map(|i| finding(&format!("f{i}"), "r", Severity::High)));
        hub.publish([finding("f4", "r", Severity::High)]);
        let all = hub.recent(&FindingFilter::default(), None, None, 10);
        let ids: Vec<_> = all.iter().map(|p| (p.seq, p.finding.id.as_str())).collect();
        assert_eq!(ids, [(3, "f2"), (4, "f3"), (5, "f4")]);
        assert_eq!(
            hub.recent(&FindingFilter::default(), None, Some(4), 10)
                .len(),
            1
        );
        // Paging forward from a position gives the oldest beyond it.
        let page = hub.recent(&FindingFilter::default(), None, Some(2), 1);
        assert_eq!(page[0].seq, 3);
        let newest = hub.recent(&FindingFilter::default(), None, None, 1);
        assert_eq!(newest[0].seq, 5);
        // Positions: ours resume, another feed's start over.
        assert_eq!(hub.resume_after(&all[0].position()), Some(3));
        let other = format!("{:08x}-4000", hub.feed().wrapping_add(1));
        assert_eq!(hub.resume_after(&other), Some(0));
        assert_eq!(hub.resume_after("7"), Some(7));
        assert_eq!(hub.resume_after("x"), None);
        assert_eq!(rx.try_recv().unwrap().seq, 1);
        assert_eq!(
            hub.by_rule.get(&("r".into(), Severity::High)).map(|n| *n),
            Some(5)
        );
        let summary = hub.last_hour();
        assert_eq!((summary.total, summary.by_domain["data"]), (5, 5));
    }

    #[test]
    fn the_sink_publishes_on_sync_only() {
        let hub = Arc::new(FindingsHub::new(10));
        let sink = HubSink::new(hub.clone());
        sink.append(&[finding("a", "r", Severity::Low)]).unwrap();
        assert!(
            hub.recent(&FindingFilter::default(), None, None, 10)
                .is_empty()
        );
        sink.sync().unwrap();
        assert_eq!(
            hub.recent(&FindingFilter::default(), None, None, 10).len(),
            1
        );
    }
}
