//! The rule index: rules compiled once into maps keyed by (cloud, service,
//! operation), so the cost per event does not grow with the number of rules.
//!
//! A rule lands in exactly one bucket, by what it fixes:
//! - service and operation: `by_operation["cloud|service|operation"]`;
//! - operation only (Sigma rules often give `eventName` alone):
//!   `by_cloud_operation[cloud]["operation"]`;
//! - service only: `by_service["cloud|service"]`;
//! - neither, but the identity type (CloudTrail `userIdentity.type`, which
//!   Sigma rules about the root user or role sessions fix):
//!   `by_principal_type[cloud]["type"]`;
//! - none of these: the short per-cloud fallback list.
//!
//! Keys are lower-cased: Azure writes operation names in any case. An event's
//! lookup key `cloud|service|operation` is built once, in a stack buffer
//! ([`LowerKey`]); the other two keys are its prefix and its suffix, so a
//! lookup allocates nothing and lower-cases each name once.
//! The maps hash with foldhash (hashbrown's default): three lookups per event
//! on short keys, where SipHash's resistance to chosen keys buys nothing (the
//! keys are the rules', not the input's).
//!
//! What those lookups yield depends on the event's cloud, service, operation
//! and identity type alone, and a log repeats a few hundred of them. So each
//! thread keeps the candidate list of the combinations it has seen ([`Memo`]),
//! keyed by the names as written: one hash and one comparison per event
//! instead of lower-casing, five hashes and five lookups.

use std::cell::RefCell;

use hashbrown::HashMap;

use super::rule::Rule;
use crate::event::{AuditEvent, Cloud};
use crate::util::{LowerKey, Memo, memo_owner};

#[derive(Debug, Default)]
pub struct RuleIndex {
    /// Tells this index's entries apart from another's in a thread's [`Memo`].
    id: u64,
    by_operation: HashMap<Box<str>, Vec<u32>>,
    by_cloud_operation: [HashMap<Box<str>, Vec<u32>>; 3],
    by_service: HashMap<Box<str>, Vec<u32>>,
    by_principal_type: [HashMap<Box<str>, Vec<u32>>; 3],
    fallback: [Vec<u32>; 3],
}

fn cloud_slot(cloud: Cloud) -> usize {
    match cloud {
        Cloud::Aws => 0,
        Cloud::Azure => 1,
        Cloud::Gcp => 2,
    }
}

fn owned_key(parts: &[&str]) -> Box<str> {
    LowerKey::owned(parts)
}

fn lookup<'m>(map: &'m HashMap<Box<str>, Vec<u32>>, key: &str) -> &'m [u32] {
    map.get(key).map(Vec::as_slice).unwrap_or(&[])
}

thread_local! {
    /// This thread's candidate lists, by cloud slot, service, operation and
    /// identity type as written.
    static MEMO: RefCell<Memo<Box<[u32]>>> = RefCell::default();
}

impl RuleIndex {
    pub fn build(rules: &[Rule]) -> RuleIndex {
        let mut index = RuleIndex {
            id: memo_owner(),
            ..RuleIndex::default()
        };
        for (i, rule) in rules.iter().enumerate() {
            let i = i as u32;
            let cloud = rule.cloud.as_str();
            match (rule.services.is_empty(), rule.operations.is_empty()) {
                (false, false) => {
                    for service in &rule.services {
                        for operation in &rule.operations {
                            index
                                .by_operation
                                .entry(owned_key(&[cloud, service, operation]))
                                .or_default()
                                .push(i);
                        }
                    }
                }
                (true, false) => {
                    for operation in &rule.operations {
                        index.by_cloud_operation[cloud_slot(rule.cloud)]
                            .entry(owned_key(&[operation]))
                            .or_default()
                            .push(i);
                    }
                }
                (false, true) => {
                    for service in &rule.services {
                        index
                            .by_service
                            .entry(owned_key(&[cloud, service]))
                            .or_default()
                            .push(i);
                    }
                }
                (true, true) if !rule.principal_types.is_empty() => {
                    for kind in &rule.principal_types {
                        index.by_principal_type[cloud_slot(rule.cloud)]
                            .entry(owned_key(&[kind]))
                            .or_default()
                            .push(i);
                    }
                }
                (true, true) => index.fallback[cloud_slot(rule.cloud)].push(i),
            }
        }
        index
    }

    /// Calls `f` with the index of every rule that could match the event; each
    /// rule at most once (a rule lives in one bucket and a bucket lists it once
    /// per key), in the order of the buckets above.
    pub fn candidates(&self, event: &AuditEvent<'_>, mut f: impl FnMut(u32)) {
        let slot = cloud_slot(event.cloud);
        let kind = event
            .principal
            .native_type
            .as_deref()
            .filter(|_| !self.by_principal_type[slot].is_empty());
        let slot_byte = [slot as u8];
        let parts: [&[u8]; 4] = [
            &slot_byte,
            event.service.as_bytes(),
            event.operation.as_bytes(),
            kind.unwrap_or_default().as_bytes(),
        ];
        // Without an identity type, one part fewer: `None` and `Some("")`
        // are different keys.
        let parts = &parts[..if kind.is_some() { 4 } else { 3 }];
        let hit = Memo::with(
            &MEMO,
            self.id,
            parts,
            || {
                let mut list = Vec::new();
                self.look_up(event, kind, |i| list.push(i));
                list.into_boxed_slice()
            },
            |list| list.iter().for_each(|&i| f(i)),
        );
        if hit.is_none() {
            self.look_up(event, kind, f);
        }
    }

    /// [`candidates`](Self::candidates) without the memo.
    fn look_up(&self, event: &AuditEvent<'_>, kind: Option<&str>, mut f: impl FnMut(u32)) {
        let cloud = event.cloud.as_str();
        let (service, operation) = (&*event.service, &*event.operation);
        let slot = cloud_slot(event.cloud);
        LowerKey::with(&[cloud, service, operation], |key| {
            // `cloud|service` and `operation`: the key's two ends.
            let cloud_service = cloud.len() + 1 + service.len();
            let (head, tail) = (
                key.get(..cloud_service).unwrap_or_default(),
                key.get(cloud_service + 1..).unwrap_or_default(),
            );
            for &i in lookup(&self.by_operation, key) {
                f(i);
            }
            for &i in lookup(&self.by_cloud_operation[slot], tail) {
                f(i);
            }
            for &i in lookup(&self.by_service, head) {
                f(i);
            }
        });
        if let Some(kind) = kind {
            LowerKey::with(&[kind], |key| {
                for &i in lookup(&self.by_principal_type[slot], key) {
                    f(i);
                }
            });
        }
        for &i in &self.fallback[slot] {
            f(i);
        }
    }

    /// Number of rules in the fallback lists (checked at every event).
    pub fn fallback_len(&self) -> usize {
        self.fallback.iter().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::detect::loader::load_builtin;
    use crate::event::Decoder;
    use crate::util::{MEMO_ENTRIES, MEMO_KEY};

    fn direct(index: &RuleIndex, event: &AuditEvent<'_>) -> Vec<u32> {
        let slot = cloud_slot(event.cloud);
        let kind = event
            .principal
            .native_type
            .as_deref()
            .filter(|_| !index.by_principal_type[slot].is_empty());
        let mut list = Vec::new();
        index.look_up(event, kind, |i| list.push(i));
        list
    }

    fn memoized(index: &RuleIndex, event: &AuditEvent<'_>) -> Vec<u32> {
        let mut list = Vec::new();
        index.candidates(event, |i| list.push(i));
        list
    }

    /// The pack's own test events (all three clouds), and variants of each
    /// that a memo keyed by the names as written could mix up.
    fn events() -> Vec<AuditEvent<'static>> {
        let decoder = Decoder::default();
        let mut events = Vec::new();
        for rule in load_builtin().unwrap() {
            for test in &rule.tests {
                for event in decoder.decode_owned(test.event_json.as_bytes()) {
                    let event = event.unwrap();
                    let mut upper = event.clone();
                    upper.operation = Cow::Owned(event.operation.to_ascii_uppercase());
                    upper.service = Cow::Owned(event.service.to_ascii_uppercase());
                    // The same bytes split differently between the names.
                    let mut shifted = event.clone();
                    let joined = format!("{}{}", event.service, event.operation);
                    let cut = event.service.len().saturating_sub(1);
                    shifted.service = Cow::Owned(joined[..cut].to_owned());
                    shifted.operation = Cow::Owned(joined[cut..].to_owned());
                    let mut typeless = event.clone();
                    typeless.principal.native_type = None;
                    let mut root = event.clone();
                    root.principal.native_type = Some(Cow::Borrowed("Root"));
                    events.extend([event, upper, shifted, typeless, root]);
                }
            }
        }
        events
    }

    #[test]
    fn memoized_candidates_are_the_direct_lookup() {
        let rules = load_builtin().unwrap();
        let index = RuleIndex::build(&rules);
        let events = events();
        assert!(events.len() > 500, "{} events", events.len());
        let mut found = 0;
        // Twice: the first pass fills the memo, the second reads it.
        for _ in 0..2 {
            for event in &events {
                let expected = direct(&index, event);
                found += expected.len();
                assert_eq!(
                    memoized(&index, event),
                    expected,
                    "{} {} {} {:?}",
                    event.cloud,
                    event.service,
                    event.operation,
                    event.principal.native_type
                );
            }
        }
        assert!(found > events.len(), "the events find candidates");
    }

    #[test]
    fn each_index_has_its_own_memo_entries_and_the_memo_is_bounded() {
        let rules = load_builtin().unwrap();
        let (full, empty) = (RuleIndex::build(&rules), RuleIndex::build(&[]));
        let events = events();
        for event in &events {
            assert!(memoized(&empty, event).is_empty());
            assert_eq!(memoized(&full, event), direct(&full, event));
        }
        // Ever-new operations: the memo starts over instead of growing.
        let mut event = events[0].clone();
        for n in 0..MEMO_ENTRIES + 10 {
            event.operation = Cow::Owned(format!("Op{n}"));
            memoized(&full, &event);
            assert!(Memo::len(&MEMO) <= MEMO_ENTRIES);
        }
        assert!(Memo::len(&MEMO) > 0);
        // Names too long for a memo key are looked up directly.
        event.operation = Cow::Owned("x".repeat(MEMO_KEY));
        assert_eq!(memoized(&full, &event), direct(&full, &event));
    }
}
