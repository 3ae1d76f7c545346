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
//! What the lookups yield depends on the event's cloud, service, operation
//! and identity type alone, and a log repeats a few hundred of those: the
//! detector remembers the answers per thread
//! ([`Detector`](super::engine::Detector)).

use hashbrown::HashMap;

use super::rule::Rule;
use crate::event::{AuditEvent, Cloud};
use crate::util::LowerKey;

#[derive(Debug, Default)]
pub struct RuleIndex {
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

impl RuleIndex {
    pub fn build(rules: &[Rule]) -> RuleIndex {
        let mut index = RuleIndex::default();
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

    /// The event's identity type as the index reads it: `None` when it has
    /// none, or when no rule of its cloud is indexed by type (then its
    /// candidates do not depend on it).
    pub fn identity_type<'e>(&self, event: &'e AuditEvent<'_>) -> Option<&'e str> {
        event
            .principal
            .native_type
            .as_deref()
            .filter(|_| !self.by_principal_type[cloud_slot(event.cloud)].is_empty())
    }

    /// Calls `f` with the index of every rule that could match the event; each
    /// rule at most once (a rule lives in one bucket and a bucket lists it once
    /// per key), in the order of the buckets above.
    pub fn candidates(&self, event: &AuditEvent<'_>, mut f: impl FnMut(u32)) {
        let slot = cloud_slot(event.cloud);
        let kind = self.identity_type(event);
        let cloud = event.cloud.as_str();
        let (service, operation) = (&*event.service, &*event.operation);
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
