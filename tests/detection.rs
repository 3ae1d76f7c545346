//! The detector end to end: built-in pack tests, the matrix's context on
//! findings (side, team, tier-adjusted severity), out-of-band changes,
//! unmapped services, compliance boundaries and deterministic ids.

use std::collections::BTreeSet;
use std::sync::Arc;

use seamwatch::detect::finding::SourceRef;
use seamwatch::detect::loader::load_builtin;
use seamwatch::detect::rule::{Expect, RuleOrigin};
use seamwatch::detect::testing::run_rule_tests;
use seamwatch::detect::{Detector, Finding, FindingKind, RuleSet, Severity};
use seamwatch::event::{Cloud, Decoder};
use seamwatch::matrix::{Domain, Matrix, Side, Tier};

fn detector() -> Detector {
    Detector::new(
        RuleSet::new(load_builtin().unwrap()),
        Arc::new(Matrix::builtin()),
    )
}

fn detect(detector: &Detector, json: &str) -> Vec<Finding> {
    let events = Decoder::default().decode_owned(json.as_bytes());
    let mut out = Vec::new();
    for event in events {
        detector.detect(
            &event.unwrap(),
            SourceRef::File {
                path: "test.json",
                line: 1,
                index: 0,
            },
            &mut out,
        );
    }
    out
}

fn stop_logging(account: &str, identity: &str, user_agent: &str) -> String {
    format!(
        r#"{{"eventVersion":"1.10","eventTime":"2024-07-31T13:06:24Z","eventSource":"cloudtrail.amazonaws.com","eventName":"StopLogging","awsRegion":"eu-west-1","eventID":"ev-{account}","readOnly":false,"recipientAccountId":"{account}","requestParameters":{{"name":"org-trail"}},"sourceIPAddress":"203.0.113.9","userAgent":"{user_agent}","userIdentity":{identity}}}"#
    )
}

const HUMAN: &str = r#"{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/mallory","userName":"mallory","accountId":"111111111111"}"#;
const PIPELINE: &str = r#"{"type":"AssumedRole","arn":"arn:aws:sts::111111111111:assumed-role/terraform-deployer/run-42","accountId":"111111111111","sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::111111111111:role/terraform-deployer"}}}"#;

#[test]
fn the_builtin_pack_passes_its_tests_and_covers_every_domain_and_cloud() {
    let rules = load_builtin().unwrap();
    let set = RuleSet::new(rules);
    let results = run_rule_tests(&set);
    let failures: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    assert!(failures.is_empty(), "failing rule tests: {failures:#?}");
    for rule in set.rules() {
        assert_eq!(rule.origin, RuleOrigin::Native);
        assert!(
            rule.tests.iter().any(|t| t.expect == Expect::Match),
            "{} has no match test",
            rule.meta.id
        );
        assert!(
            rule.tests.iter().any(|t| t.expect == Expect::NoMatch),
            "{} has no no_match test",
            rule.meta.id
        );
        assert!(
            !rule.meta.attack.is_empty() || !rule.meta.compliance.is_empty(),
            "{} cites nothing",
            rule.meta.id
        );
    }
    let domains: BTreeSet<Domain> = set.rules().iter().filter_map(|r| r.meta.domain).collect();
    let clouds: BTreeSet<Cloud> = set.rules().iter().map(|r| r.cloud).collect();
    assert_eq!(domains.len(), 6, "domains covered: {domains:?}");
    assert_eq!(clouds.len(), 3, "clouds covered: {clouds:?}");
    assert!(set.len() >= 70, "only {} built-in rules", set.len());
    // Nearly every built-in rule is indexed; the few that must see every event
    // (root activity of any kind) stay a short list.
    assert!(
        set.index().fallback_len() <= 2,
        "{} fallback rules",
        set.index().fallback_len()
    );
}

#[test]
fn findings_carry_the_matrix_context_and_tier_adjusted_severity() {
    let d = detector();
    // 111111111111 is high tier (payments), owned by payments-platform.
    let findings = detect(&d, &stop_logging("111111111111", HUMAN, "aws-cli/2.15"));
    let rule = findings
        .iter()
        .find(|f| f.rule_id == "aws.logging.cloudtrail_stopped")
        .expect("rule fired");
    assert_eq!(rule.kind, FindingKind::Rule);
    assert_eq!(rule.rule_severity, Severity::High);
    assert_eq!(rule.severity, Severity::Critical);
    assert_eq!(rule.data_tier, Some(Tier::High));
    assert_eq!(rule.responsibility, Some(Side::Customer));
    assert_eq!(rule.domain, Some(Domain::Logging));
    assert_eq!(rule.owner_team.as_deref(), Some("payments-platform"));
    assert_eq!(rule.evidence[0].event_id, "ev-111111111111");
    assert_eq!(rule.evidence[0].source, "test.json:1");
    assert!(rule.attack.contains(&"T1562.008".to_owned()));

    // A sandbox account (low tier): one step down, default team.
    let findings = detect(&d, &stop_logging("999999999999", HUMAN, "aws-cli/2.15"));
    let rule = findings
        .iter()
        .find(|f| f.rule_id == "aws.logging.cloudtrail_stopped")
        .unwrap();
    assert_eq!(rule.severity, Severity::Medium);
    assert_eq!(rule.owner_team.as_deref(), Some("cloud-platform"));
}

#[test]
fn a_change_outside_the_approved_paths_is_an_out_of_band_finding() {
    let d = detector();
    let by_human = detect(
        &d,
        &stop_logging("111111111111", HUMAN, "console.amazonaws.com"),
    );
    let oob = by_human
        .iter()
        .find(|f| f.kind == FindingKind::OutOfBandChange)
        .expect("out-of-band finding");
    assert!(
        oob.approved_paths
            .iter()
            .any(|p| p.contains("terraform-deployer")),
        "{:?}",
        oob.approved_paths
    );
    assert!(oob.detail.as_deref().unwrap().contains("mallory"));
    assert_eq!(oob.responsibility, Some(Side::Customer));

    let by_pipeline = detect(
        &d,
        &stop_logging(
            "111111111111",
            PIPELINE,
            "APN/1.0 HashiCorp/1.0 Terraform/1.9.0",
        ),
    );
    assert!(
        by_pipeline
            .iter()
            .any(|f| f.rule_id == "aws.logging.cloudtrail_stopped")
    );
    assert!(
        !by_pipeline
            .iter()
            .any(|f| f.kind == FindingKind::OutOfBandChange)
    );

    // A scope without change paths: nothing to be out of band from.
    let elsewhere = detect(&d, &stop_logging("444444444444", HUMAN, "aws-cli/2.15"));
    assert!(
        !elsewhere
            .iter()
            .any(|f| f.kind == FindingKind::OutOfBandChange)
    );
}

#[test]
fn an_unmapped_service_is_reported_once() {
    let d = detector();
    let event_of = |id: &str, source: &str| {
        format!(
            r#"{{"eventVersion":"1.08","eventTime":"2024-01-01T00:00:00Z","eventSource":"{source}","eventName":"CreateLedger","eventID":"{id}","recipientAccountId":"444444444444","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::444444444444:user/a"}}}}"#
        )
    };
    let event = |id: &str| event_of(id, "quantumledger.amazonaws.com");
    let unmapped_in = |text: &str| {
        detect(&d, text)
            .iter()
            .filter(|f| f.kind == FindingKind::UnmappedService)
            .count()
    };
    let first = detect(&d, &event("a"));
    let unmapped: Vec<_> = first
        .iter()
        .filter(|f| f.kind == FindingKind::UnmappedService)
        .collect();
    assert_eq!(unmapped.len(), 1);
    assert_eq!(unmapped[0].severity, Severity::Low);
    assert!(unmapped[0].responsibility.is_none());
    assert!(
        detect(&d, &event("b"))
            .iter()
            .all(|f| f.kind != FindingKind::UnmappedService)
    );
    // The same service written otherwise is the same service; another is new.
    assert_eq!(
        unmapped_in(&event_of("c", "QuantumLedger.AmazonAWS.com")),
        0
    );
    assert_eq!(unmapped_in(&event_of("d", "otherledger.amazonaws.com")), 1);
    assert_eq!(unmapped_in(&event_of("e", "otherledger.amazonaws.com")), 0);
}

#[test]
fn a_service_outside_a_compliance_boundary_is_a_finding() {
    let d = detector();
    let event = |id: &str| {
        format!(
            r#"{{"eventVersion":"1.08","eventTime":"2024-01-01T00:00:00Z","eventSource":"bedrock.amazonaws.com","eventName":"InvokeModel","eventID":"{id}","readOnly":true,"recipientAccountId":"111111111111","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/a"}}}}"#
        )
    };
    let findings = detect(&d, &event("x"));
    let boundary: Vec<_> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::ComplianceBoundary)
        .collect();
    assert_eq!(boundary.len(), 1, "{findings:#?}");
    assert!(boundary[0].title.contains("cardholder-data-environment"));
    assert_eq!(*boundary[0].compliance, ["PCI DSS 4.0".to_owned()]);
    assert!(
        detect(&d, &event("y"))
            .iter()
            .all(|f| f.kind != FindingKind::ComplianceBoundary)
    );
    // An authorized service in the same account is fine.
    let ok = detect(&d, &stop_logging("111111111111", PIPELINE, "Terraform"));
    assert!(ok.iter().all(|f| f.kind != FindingKind::ComplianceBoundary));
}

#[test]
fn finding_ids_are_deterministic_across_detectors() {
    let event = stop_logging("111111111111", HUMAN, "aws-cli/2.15");
    let ids =
        |d: &Detector| -> Vec<String> { detect(d, &event).into_iter().map(|f| f.id).collect() };
    let (a, b) = (ids(&detector()), ids(&detector()));
    assert!(!a.is_empty());
    assert_eq!(a, b);
}
