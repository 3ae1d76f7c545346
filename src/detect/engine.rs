//! The detector: one event in, findings out.
//!
//! For each event: the index yields the candidate rules (remembered per
//! thread by the event's cloud, service, operation and identity type, with
//! whether the matrix lists the service: `Route`); each whose outcome
//! filter and conditions hold produces a finding, enriched from the matrix
//! (responsibility side of the rule's domain for the event's service, owning
//! team, data tier, severity adjusted by the tier). Then three matrix checks:
//! - **out-of-band change**: a successful, non-read-only event matched a rule
//!   on a customer-owned (or shared) control, the scope has approved change
//!   paths, and neither the principal nor the user agent is one of them;
//! - **unmapped service**: the matrix does not list the service (one finding
//!   per cloud and service, ever: the first event's);
//! - **compliance boundary**: the account is inside a boundary that does not
//!   authorize the service (one finding per boundary and service).
//!
//! The detector is `Sync`: the dedup sets are sharded concurrent maps
//! (dashmap), so several workers share one detector without a global lock.

use std::sync::Arc;

use dashmap::DashSet;

use super::finding::{
    Evidence, Finding, FindingKind, FindingPrincipal, Severity, SourceRef, finding_id,
};
use super::index::RuleIndex;
use super::rule::{Rule, RuleMeta, RuleOrigin};
use crate::event::{AuditEvent, Outcome};
use crate::matrix::{Matrix, Side};
use crate::util::{LowerKey, Memo, memo_owner};

/// Compiled rules and their index.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    index: RuleIndex,
}

impl RuleSet {
    pub fn new(rules: Vec<Rule>) -> RuleSet {
        let index = RuleIndex::build(&rules);
        RuleSet { rules, index }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn index(&self) -> &RuleIndex {
        &self.index
    }

    /// Calls `f` with each rule that matches the event.
    pub fn matching<'r>(&'r self, event: &AuditEvent<'_>, mut f: impl FnMut(&'r Rule)) {
        self.matching_indexed(event, |_, rule| f(rule));
    }

    /// Calls `f` with the index and the rule of each rule that matches the event.
    pub fn matching_indexed<'r>(
        &'r self,
        event: &AuditEvent<'_>,
        mut f: impl FnMut(u32, &'r Rule),
    ) {
        self.index.candidates(event, |i| {
            if let Some(rule) = self.check(i, event) {
                f(i, rule);
            }
        });
    }

    /// Rule `i` if it matches the event (its outcome filter and conditions).
    fn check(&self, i: u32, event: &AuditEvent<'_>) -> Option<&Rule> {
        self.rules
            .get(i as usize)
            .filter(|rule| rule.outcomes.contains(event.outcome) && rule.condition.matches(event))
    }
}

/// What distinguishes one finding from another of the same event.
struct Head<'a> {
    kind: FindingKind,
    rule_id: &'a str,
    title: String,
    severity: Severity,
    id: String,
    /// The rule's own lists (ATT&CK, compliance, references); empty for
    /// findings of seamwatch's own checks.
    meta: Option<&'a RuleMeta>,
}

/// The indices of the rules one event matched, for the correlator. Inline:
/// an event matches a handful of rules at most, and a replay keeps one list
/// per event from the decoding threads to the ordering thread, where a heap
/// list would be freed across threads.
pub type Matched = smallvec::SmallVec<[u32; 6]>;

/// What an event's cloud, service, operation and identity type resolve to:
/// the same for every event that shares them, and a log repeats a few
/// hundred such combinations. Each thread remembers them ([`ROUTES`]): one
/// hash of the names as written instead of lower-casing them three times
/// and five map lookups (the index's four, the matrix's one).
struct Route {
    /// The index's candidate rules, in its order.
    candidates: Box<[u32]>,
    /// Whether the matrix lists the service.
    mapped: bool,
}

thread_local! {
    static ROUTES: std::cell::RefCell<Memo<Route>> = std::cell::RefCell::default();
}

pub struct Detector {
    rules: RuleSet,
    matrix: Arc<Matrix>,
    /// This detector's entries in [`ROUTES`].
    memo_id: u64,
    /// `cloud|service`, lower-cased ([`LowerKey`]): looked up for every
    /// event of a service the matrix does not list.
    unmapped_seen: DashSet<Box<str>, hashbrown::DefaultHashBuilder>,
    boundary_seen: DashSet<(String, String)>,
}

impl Detector {
    pub fn new(rules: RuleSet, matrix: Arc<Matrix>) -> Detector {
        Detector {
            rules,
            matrix,
            memo_id: memo_owner(),
            unmapped_seen: DashSet::default(),
            boundary_seen: DashSet::new(),
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn matrix(&self) -> &Matrix {
        &self.matrix
    }

    /// Calls `read` with what the event's names resolve to, from this
    /// thread's memo.
    fn route<R>(&self, event: &AuditEvent<'_>, read: impl FnOnce(&Route) -> R) -> R {
        let index = self.rules.index();
        let kind = index.identity_type(event);
        let cloud = [event.cloud as u8];
        let parts: [&[u8]; 4] = [
            &cloud,
            event.service.as_bytes(),
            event.operation.as_bytes(),
            kind.unwrap_or_default().as_bytes(),
        ];
        // Without an identity type, one part fewer: no type and an empty
        // one are different keys.
        let parts = &parts[..if kind.is_some() { 4 } else { 3 }];
        let make = || {
            let mut candidates = Vec::new();
            index.candidates(event, |i| candidates.push(i));
            Route {
                candidates: candidates.into_boxed_slice(),
                mapped: self.matrix.service(event.cloud, &event.service).is_some(),
            }
        };
        Memo::with(&ROUTES, self.memo_id, parts, make, read)
    }

    /// Appends the event's findings to `out`.
    pub fn detect(&self, event: &AuditEvent<'_>, source: SourceRef<'_>, out: &mut Vec<Finding>) {
        self.detect_matched(event, source, out, &mut Matched::new());
    }

    /// Appends the event's findings to `out` and the indices of every rule
    /// that matched (including those that emit no finding of their own, such
    /// as correlation steps) to `matched`, for the correlator.
    pub fn detect_matched(
        &self,
        event: &AuditEvent<'_>,
        source: SourceRef<'_>,
        out: &mut Vec<Finding>,
        matched: &mut Matched,
    ) {
        let first = out.len();
        let mapped = self.route(event, |route| {
            for &i in &route.candidates {
                let Some(rule) = self.rules.check(i, event) else {
                    continue;
                };
                matched.push(i);
                if rule.emit {
                    // An event that matches matches one rule, nearly always:
                    // a list made for it (in a replay, one per event) holds one.
                    if out.capacity() == 0 {
                        out.reserve_exact(1);
                    }
                    out.push(self.rule_finding(rule, event, source));
                }
            }
            route.mapped
        });
        let matched = first..out.len();
        if let Some(oob) = self.out_of_band(event, source, &out[matched]) {
            out.push(oob);
        }
        if !mapped && let Some(unmapped) = self.unmapped(event, source) {
            out.push(unmapped);
        }
        self.boundaries(event, source, out);
    }

    /// The event's resource ids; inline, as an event names a few at most.
    fn resources<'e>(event: &'e AuditEvent<'_>) -> smallvec::SmallVec<[&'e str; 4]> {
        event.resources.iter().map(|r| &*r.id).collect()
    }

    fn base_finding(
        &self,
        event: &AuditEvent<'_>,
        source: SourceRef<'_>,
        head: Head<'_>,
    ) -> Finding {
        let Head {
            kind,
            rule_id,
            title,
            severity,
            id,
            meta,
        } = head;
        let list =
            |pick: fn(&RuleMeta) -> &Arc<[String]>| meta.map(pick).cloned().unwrap_or_default();
        let resources = Self::resources(event);
        let account = event.account.as_deref();
        let tier = self.matrix.data_tier(account, &resources);
        Finding {
            id,
            kind,
            rule_id: rule_id.to_owned(),
            title,
            severity: severity.for_tier(tier),
            rule_severity: severity,
            cloud: event.cloud,
            account: account.map(str::to_owned),
            region: event.region.as_deref().map(str::to_owned),
            service: event.service.to_string(),
            operation: event.operation.to_string(),
            principal: FindingPrincipal::of(event),
            resources: resources.iter().map(|r| (*r).to_owned()).collect(),
            domain: None,
            responsibility: None,
            owner_team: self
                .matrix
                .owning_team(account, &resources)
                .map(str::to_owned),
            data_tier: tier,
            event_time: event.time,
            evidence: vec![Evidence {
                event_id: event.event_id.text().into_owned(),
                source: source.text(),
            }],
            attack: list(|m| &m.attack),
            compliance: list(|m| &m.compliance),
            remediation: None,
            references: list(|m| &m.references),
            approved_paths: Vec::new(),
            detail: None,
            author: None,
            correlation: None,
            resolves: Vec::new(),
        }
    }

    fn rule_finding(&self, rule: &Rule, event: &AuditEvent<'_>, source: SourceRef<'_>) -> Finding {
        let meta = &rule.meta;
        let event_key = event.event_id.text();
        let kind = match rule.origin {
            RuleOrigin::Native => FindingKind::Rule,
            RuleOrigin::Sigma => FindingKind::Sigma,
        };
        let mut finding = self.base_finding(
            event,
            source,
            Head {
                kind,
                rule_id: &meta.id,
                title: meta.title.clone(),
                severity: meta.severity,
                id: finding_id(&[&meta.id, &event_key]),
                meta: Some(meta),
            },
        );
        finding.domain = meta.domain;
        finding.responsibility = meta
            .domain
            .and_then(|d| self.matrix.owner_side(event.cloud, &event.service, d));
        finding.remediation = meta.remediation.clone();
        finding.author = meta.author.clone();
        finding.resolves = meta.resolves.clone();
        if let Some(point) = self.matrix.connection_point(&Self::resources(event)) {
            finding.detail = Some(format!(
                "connection point `{}`, owned jointly by {}",
                point.name,
                point.teams.join(" and ")
            ));
        }
        finding
    }

    fn out_of_band(
        &self,
        event: &AuditEvent<'_>,
        source: SourceRef<'_>,
        matched: &[Finding],
    ) -> Option<Finding> {
        if event.outcome != Outcome::Success || event.read_only == Some(true) {
            return None;
        }
        let change = matched.iter().find(|f| {
            matches!(f.responsibility, Some(Side::Customer | Side::Shared))
                && f.kind != FindingKind::UnmappedService
        })?;
        let resources = Self::resources(event);
        let paths = self
            .matrix
            .change_paths_for(event.account.as_deref(), &resources);
        if paths.is_empty() {
            return None;
        }
        let p = &event.principal;
        let ids: Vec<&str> = [p.id.as_deref(), p.name.as_deref(), p.issuer.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        if paths
            .iter()
            .any(|path| path.admits(&ids, event.user_agent.as_deref()))
        {
            return None;
        }
        let event_key = event.event_id.text();
        let mut finding = self.base_finding(
            event,
            source,
            Head {
                kind: FindingKind::OutOfBandChange,
                rule_id: "seamwatch.out_of_band_change",
                title: format!(
                    "Out-of-band change to a customer-owned control: {}",
                    change.title
                ),
                severity: change.rule_severity,
                id: finding_id(&["seamwatch.out_of_band_change", &event_key]),
                meta: None,
            },
        );
        finding.domain = change.domain;
        finding.responsibility = change.responsibility;
        finding.approved_paths = paths
            .iter()
            .map(|path| format!("{}: {}", path.name, path.described.join(", ")))
            .collect();
        finding.detail = Some(format!(
            "made by {} ({}) outside the approved change paths; triggered by rule {}",
            p.id.as_deref()
                .or(p.name.as_deref())
                .unwrap_or("an unknown principal"),
            event.user_agent.as_deref().unwrap_or("no user agent"),
            change.rule_id
        ));
        finding.remediation = Some(
            "Confirm the change with its author, then bring it back under the IaC pipeline (or revert it); \
             review who can change this control outside the pipeline."
                .into(),
        );
        Some(finding)
    }

    /// The finding for the first event of a service the matrix does not list.
    fn unmapped(&self, event: &AuditEvent<'_>, source: SourceRef<'_>) -> Option<Finding> {
        let parts = [event.cloud.as_str(), &*event.service];
        if LowerKey::with(&parts, |key| self.unmapped_seen.contains(key))
            || !self.unmapped_seen.insert(LowerKey::owned(&parts))
        {
            return None;
        }
        let mut finding = self.base_finding(
            event,
            source,
            Head {
                kind: FindingKind::UnmappedService,
                rule_id: "seamwatch.unmapped_service",
                title: format!(
                    "Service {} is not in the responsibility matrix",
                    event.service
                ),
                severity: Severity::Low,
                id: finding_id(&[
                    "seamwatch.unmapped_service",
                    event.cloud.as_str(),
                    &event.service.to_ascii_lowercase(),
                ]),
                meta: None,
            },
        );
        finding.severity = Severity::Low;
        finding.remediation = Some(
            format!(
                "Add `{}` to the responsibility matrix with its service model and the owner of each control domain.",
                event.service
            )
            .into(),
        );
        Some(finding)
    }

    fn boundaries(&self, event: &AuditEvent<'_>, source: SourceRef<'_>, out: &mut Vec<Finding>) {
        let mut boundaries = self
            .matrix
            .boundaries_for(event.account.as_deref())
            .peekable();
        if boundaries.peek().is_none() {
            return;
        }
        for boundary in boundaries {
            // Authorized names are lower-cased at load.
            if boundary
                .authorized_services
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&event.service))
            {
                continue;
            }
            let service = event.service.to_ascii_lowercase();
            let key = (boundary.name.clone(), service.clone());
            if self.boundary_seen.contains(&key) || !self.boundary_seen.insert(key) {
                continue;
            }
            let mut finding = self.base_finding(
                event,
                source,
                Head {
                    kind: FindingKind::ComplianceBoundary,
                    rule_id: "seamwatch.compliance_boundary",
                    title: format!(
                        "{} used inside the {} boundary, which does not authorize it",
                        event.service, boundary.name
                    ),
                    severity: Severity::Medium,
                    id: finding_id(&["seamwatch.compliance_boundary", &boundary.name, &service]),
                    meta: None,
                },
            );
            finding.compliance = boundary.frameworks.clone().into();
            finding.detail = Some(format!(
                "frameworks in force: {}; using a service outside the authorization shifts its controls back to the customer",
                boundary.frameworks.join(", ")
            ));
            out.push(finding);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::detect::loader::load_builtin;
    use crate::event::Decoder;

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
                    let mut unlisted = event.clone();
                    unlisted.service = Cow::Owned(format!("x{}", event.service));
                    events.extend([event, upper, shifted, typeless, root, unlisted]);
                }
            }
        }
        events
    }

    fn direct(detector: &Detector, event: &AuditEvent<'_>) -> (Vec<u32>, bool) {
        let mut candidates = Vec::new();
        detector
            .rules
            .index()
            .candidates(event, |i| candidates.push(i));
        let mapped = detector
            .matrix
            .service(event.cloud, &event.service)
            .is_some();
        (candidates, mapped)
    }

    fn routed(detector: &Detector, event: &AuditEvent<'_>) -> (Vec<u32>, bool) {
        detector.route(event, |r| (r.candidates.to_vec(), r.mapped))
    }

    #[test]
    fn remembered_routes_are_the_index_and_matrix_answers() {
        let detector = Detector::new(
            RuleSet::new(load_builtin().unwrap()),
            Arc::new(Matrix::builtin()),
        );
        let events = events();
        assert!(events.len() > 500, "{} events", events.len());
        let (mut candidates, mut unmapped) = (0, 0);
        // Twice: the first pass fills the memo, the second reads it.
        for _ in 0..2 {
            for event in &events {
                let expected = direct(&detector, event);
                candidates += expected.0.len();
                unmapped += usize::from(!expected.1);
                assert_eq!(
                    routed(&detector, event),
                    expected,
                    "{} {} {} {:?}",
                    event.cloud,
                    event.service,
                    event.operation,
                    event.principal.native_type
                );
            }
        }
        assert!(candidates > events.len(), "the events find candidates");
        assert!(unmapped >= 2 * events.len() / 6, "the unlisted services");
        // Another detector (other rules) on the same thread has its own.
        let empty = Detector::new(RuleSet::new(Vec::new()), Arc::new(Matrix::builtin()));
        for event in &events {
            assert!(routed(&empty, event).0.is_empty());
            assert_eq!(routed(&detector, event), direct(&detector, event));
        }
    }
}
