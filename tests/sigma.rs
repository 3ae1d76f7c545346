//! Sigma rules: semantics on self-written rules (modifiers, wildcards, null,
//! keywords, selectors, filters, field mapping per cloud), the share of the
//! SigmaHQ cloud rules that load, and agreement with the reference evaluator.

use std::path::Path;

use seamwatch::detect::RuleSet;
use seamwatch::detect::loader::load_path;
use seamwatch::event::Decoder;

fn fixture_rules() -> RuleSet {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sigma/semantics.yml");
    let report = load_path(&path).unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(report.rules.len(), 4);
    RuleSet::new(report.rules)
}

/// One Sigma rule, written to a folder and loaded as the loader loads it.
fn one_rule(yaml: &str) -> RuleSet {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.yml"), yaml).unwrap();
    RuleSet::new(load_path(dir.path()).unwrap().rules)
}

fn matched(set: &RuleSet, json: &str) -> Vec<String> {
    let event = Decoder::default()
        .decode_owned(json.as_bytes())
        .remove(0)
        .unwrap();
    let mut ids = Vec::new();
    set.matching(&event, |r| ids.push(r.meta.id.clone()));
    ids.sort();
    ids
}

fn ct(name: &str, extra: &str) -> String {
    format!(
        r#"{{"eventVersion":"1.08","eventTime":"2024-01-01T00:00:00Z","eventSource":"cloudtrail.amazonaws.com","eventName":"{name}","eventID":"e","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::1:user/bob"}}{extra}}}"#
    )
}

const TRAIL: &str = "sigma.7f1b7a3e-0000-4000-8000-000000000001";
const KEYWORDS: &str = "sigma.7f1b7a3e-0000-4000-8000-000000000002";
const GCP: &str = "sigma.7f1b7a3e-0000-4000-8000-000000000003";
const AZURE: &str = "sigma.7f1b7a3e-0000-4000-8000-000000000004";

#[test]
fn sigma_semantics() {
    let set = fixture_rules();
    assert_eq!(
        matched(&set, &ct("StopLogging", r#","userAgent":"aws-cli/2""#)),
        vec![TRAIL]
    );
    // `Delete*` is a wildcard, matched case-insensitively.
    assert_eq!(matched(&set, &ct("deleteTrail", "")), vec![TRAIL]);
    // `errorCode: null` means absent: a denied call does not match.
    assert!(matched(&set, &ct("StopLogging", r#","errorCode":"AccessDenied""#)).is_empty());
    // `contains|all`: both words must appear to be filtered out.
    assert!(
        matched(
            &set,
            &ct(
                "StopLogging",
                r#","userAgent":"APN/1.0 HashiCorp/1.0 Terraform/1.9""#
            )
        )
        .is_empty()
    );
    assert_eq!(
        matched(&set, &ct("StopLogging", r#","userAgent":"terraform-ish""#)),
        vec![TRAIL]
    );
    assert!(matched(&set, &ct("StartLogging", "")).is_empty());
    // Keywords search the whole record; `|re` is case-sensitive.
    assert_eq!(
        matched(
            &set,
            &ct(
                "AttachUserPolicy",
                r#","requestParameters":{"policyArn":"arn:aws:iam::aws:policy/AdministratorAccess"}"#
            )
        ),
        vec![KEYWORDS]
    );
    let admin = r#"{"eventVersion":"1.08","eventTime":"2024-01-01T00:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","eventID":"e","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/admin"}}"#;
    assert_eq!(matched(&set, admin), vec![KEYWORDS]);
    assert!(matched(&set, &admin.replace("user/admin", "user/ADMIN")).is_empty());

    let gcp = r#"{"protoPayload":{"@type":"type.googleapis.com/google.cloud.audit.AuditLog","serviceName":"logging.googleapis.com","methodName":"google.logging.v2.ConfigServiceV2.DeleteSink"},"insertId":"i","timestamp":"2024-01-01T00:00:00Z","logName":"projects/p/logs/cloudaudit.googleapis.com%2Factivity"}"#;
    assert_eq!(matched(&set, gcp), vec![GCP]);
    let azure = r#"{"time":"2024-01-01T00:00:00Z","resourceId":"/SUBSCRIPTIONS/1/PROVIDERS/MICROSOFT.INSIGHTS/DIAGNOSTICSETTINGS/X","operationName":"MICROSOFT.INSIGHTS/DIAGNOSTICSETTINGS/DELETE","category":"Administrative","resultType":"Success"}"#;
    assert_eq!(matched(&set, azure), vec![AZURE]);
}

#[test]
fn sigma_rules_are_indexed_by_the_fields_they_require() {
    let set = fixture_rules();
    let by_id = |id: &str| set.rules().iter().find(|r| r.meta.id == id).unwrap();
    let trail = by_id(TRAIL);
    assert_eq!(trail.services, vec!["cloudtrail.amazonaws.com"]);
    // `Delete*` has a wildcard: the operation cannot be fixed, the service can.
    assert!(trail.operations.is_empty());
    assert_eq!(
        by_id(AZURE).operations,
        vec!["microsoft.insights/diagnosticsettings/delete"]
    );
    assert!(by_id(KEYWORDS).operations.is_empty() && by_id(KEYWORDS).services.is_empty());
}

#[test]
fn at_least_90_percent_of_the_sigmahq_cloud_rules_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/sigma/rules/cloud");
    if !dir.is_dir() {
        assert!(
            std::env::var_os("SEAMWATCH_REQUIRE_CORPUS").is_none(),
            "corpus required but missing"
        );
        eprintln!("NOTE: shared corpus not found; SigmaHQ load test not run");
        return;
    }
    let report = load_path(&dir).unwrap();
    let total = report.rules.len() + report.rejected.len();
    assert_eq!(total, 152);
    assert!(
        report.rejected.is_empty(),
        "rejected: {:?}",
        report.rejected
    );
    let ratio = report.rules.len() as f64 / total as f64;
    eprintln!(
        "{} of {total} SigmaHQ cloud rules loaded; rejected: {:?}",
        report.rules.len(),
        report.rejected
    );
    assert!(ratio >= 0.9, "only {:.0}% loaded", ratio * 100.0);
    for rejected in &report.rejected {
        assert!(!rejected.reason.is_empty());
    }
}

#[test]
fn fieldref_compares_two_fields() {
    let set = one_rule(
        "title: t\nid: 7f1b7a3e-0000-4000-8000-000000000009\nlogsource:\n    product: aws\n    service: cloudtrail\ndetection:\n    selection:\n        eventName: UpdateLoginProfile\n    filter_self:\n        userIdentity.userName|fieldref: requestParameters.userName\n    condition: selection and not filter_self\nlevel: high\n",
    );
    let event = |target: &str| {
        format!(
            r#"{{"eventVersion":"1.08","eventTime":"2024-01-01T00:00:00Z","eventSource":"iam.amazonaws.com","eventName":"UpdateLoginProfile","eventID":"e","userIdentity":{{"type":"IAMUser","userName":"alice"}},"requestParameters":{{"userName":"{target}"}}}}"#
        )
    };
    assert_eq!(matched(&set, &event("bob")).len(), 1);
    assert!(matched(&set, &event("alice")).is_empty());
}

/// Sigma's `errorCode` is CloudTrail's own field: a failed console sign-in
/// logs none (the failure is in `responseElements`), so `errorCode: null`
/// holds for it, as in any other Sigma engine.
#[test]
fn error_code_is_the_record_s_own_field() {
    let set = one_rule(
        "title: t\nid: 7f1b7a3e-0000-4000-8000-00000000000a\nlogsource:\n    product: aws\n    service: cloudtrail\ndetection:\n    selection:\n        eventName: ConsoleLogin\n        errorCode: null\n    condition: selection\nlevel: low\n",
    );
    let login = |extra: &str| {
        format!(
            r#"{{"eventVersion":"1.08","eventTime":"2024-01-01T00:00:00Z","eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin","eventID":"e","userIdentity":{{"type":"IAMUser","userName":"alice"}},"responseElements":{{"ConsoleLogin":"Failure"}},"errorMessage":"Failed authentication"{extra}}}"#
        )
    };
    assert_eq!(matched(&set, &login("")).len(), 1);
    assert!(matched(&set, &login(r#","errorCode":"AccessDenied""#)).is_empty());
}
