//! The Stratus Red Team AWS detonation logs (`../shared/corpus/events/aws/
//! stratus-red-team/`, one file per attack technique) against the built-in
//! pack: a technique counts as detected when a rule finding on its records
//! carries one of the technique's ATT&CK ids, or sits in a control domain
//! equivalent to one of its tactics. At least 80% must be detected, and the
//! exact set is recorded below so a regression shows up as a diff.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use seamwatch::detect::finding::SourceRef;
use seamwatch::detect::loader::load_builtin;
use seamwatch::detect::{Detector, FindingKind, RuleSet};
use seamwatch::event::{Decoded, Decoder};
use seamwatch::matrix::{Domain, Matrix};

/// Techniques the built-in pack detects (kept in sync by this test). Missed:
/// ec2-get-password-data, lambda-layer-extension and lambda-overwrite-code fire
/// compute-domain rules whose ATT&CK ids the catalogue does not list for them.
const DETECTED: &[&str] = &[
    "aws.credential-access.ec2-steal-instance-credentials",
    "aws.credential-access.secretsmanager-batch-retrieve-secrets",
    "aws.credential-access.secretsmanager-retrieve-secrets",
    "aws.credential-access.ssm-retrieve-securestring-parameters",
    "aws.defense-evasion.cloudtrail-delete",
    "aws.defense-evasion.cloudtrail-event-selectors",
    "aws.defense-evasion.cloudtrail-stop",
    "aws.defense-evasion.dns-delete-logs",
    "aws.defense-evasion.organizations-leave",
    "aws.defense-evasion.vpc-remove-flow-logs",
    "aws.discovery.ec2-download-user-data",
    "aws.execution.ec2-launch-unusual-instances",
    "aws.execution.ec2-user-data",
    "aws.execution.ssm-send-command",
    "aws.execution.ssm-start-session",
    "aws.exfiltration.ec2-security-group-open-port-22-ingress",
    "aws.exfiltration.ec2-share-ami",
    "aws.exfiltration.ec2-share-ebs-snapshot",
    "aws.exfiltration.rds-share-snapshot",
    "aws.impact.bedrock-invoke-model",
    "aws.initial-access.console-login-without-mfa",
    "aws.lateral-movement.ec2-instance-connect",
    "aws.lateral-movement.ec2-serial-console-send-ssh-public-key",
    "aws.persistence.iam-backdoor-role",
    "aws.persistence.iam-backdoor-user",
    "aws.persistence.iam-create-admin-user",
    "aws.persistence.iam-create-backdoor-role",
    "aws.persistence.iam-create-user-login-profile",
    "aws.persistence.lambda-backdoor-function",
    "aws.persistence.rolesanywhere-create-trust-anchor",
    "aws.persistence.sts-federation-token",
    "aws.privilege-escalation.iam-update-user-login-profile",
];

fn equivalent_domains(tactic: &str) -> &'static [Domain] {
    match tactic {
        "Defense Evasion" => &[Domain::Logging, Domain::Guardrails],
        "Persistence" | "Privilege Escalation" | "Initial Access" => &[Domain::Identity],
        "Credential Access" => &[Domain::Identity, Domain::Data],
        "Exfiltration" | "Collection" => &[Domain::Data, Domain::Network],
        "Execution" => &[Domain::Compute],
        "Discovery" => &[Domain::Compute, Domain::Data],
        "Lateral Movement" => &[Domain::Compute, Domain::Network],
        "Impact" => &[Domain::Data, Domain::Compute],
        _ => &[],
    }
}

struct Technique {
    tactics: Vec<String>,
    attack_ids: Vec<String>,
}

fn catalogue(corpus: &Path) -> BTreeMap<String, Technique> {
    let text = std::fs::read_to_string(corpus.join("stratus-red-team/index.yaml")).unwrap();
    let doc: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
    let mut out = BTreeMap::new();
    for (_, techniques) in doc["AWS"].as_mapping().unwrap() {
        for t in techniques.as_sequence().unwrap() {
            let id = t["id"].as_str().unwrap().to_owned();
            let tactics = t["mitreAttackTactics"]
                .as_sequence()
                .map(|s| {
                    s.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let mut attack_ids = Vec::new();
            if let Some(mappings) = t["frameworkmappings"].as_sequence() {
                for m in mappings {
                    for tech in m["techniques"].as_sequence().into_iter().flatten() {
                        if let Some(tid) = tech["id"].as_str() {
                            attack_ids.push(tid.to_owned());
                        }
                    }
                }
            }
            out.insert(
                id,
                Technique {
                    tactics,
                    attack_ids,
                },
            );
        }
    }
    out
}

#[test]
fn stratus_detonations_are_detected() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if !corpus.is_dir() {
        assert!(
            std::env::var_os("SEAMWATCH_REQUIRE_CORPUS").is_none(),
            "corpus required but missing"
        );
        eprintln!("NOTE: shared corpus not found; Stratus test not run");
        return;
    }
    let catalogue = catalogue(&corpus);
    let detector = Detector::new(
        RuleSet::new(load_builtin().unwrap()),
        Arc::new(Matrix::builtin()),
    );
    let dir = corpus.join("events/aws/stratus-red-team");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut detected = BTreeSet::new();
    let mut report = Vec::new();
    for file in &files {
        let technique = file.file_stem().unwrap().to_string_lossy().into_owned();
        let meta = catalogue
            .get(&technique)
            .unwrap_or_else(|| panic!("{technique} not in the catalogue"));
        let bytes = std::fs::read(file).unwrap();
        let mut findings = Vec::new();
        Decoder::default().decode(&bytes, &mut |d: Decoded<'_>| {
            let event = d.result.expect("stratus records parse");
            detector.detect(&event, SourceRef::Unknown, &mut findings);
        });
        let hit = findings
            .iter()
            .filter(|f| matches!(f.kind, FindingKind::Rule))
            .find(|f| {
                f.attack.iter().any(|a| {
                    meta.attack_ids
                        .iter()
                        .any(|t| a.starts_with(t.as_str()) || t.starts_with(a.as_str()))
                }) || meta.tactics.iter().any(|tactic| {
                    f.domain
                        .is_some_and(|d| equivalent_domains(tactic).contains(&d))
                })
            });
        match hit {
            Some(f) => {
                detected.insert(technique.clone());
                report.push(format!("detected  {technique:<60} by {}", f.rule_id));
            }
            None => report.push(format!(
                "MISSED    {technique:<60} ({} findings)",
                findings.len()
            )),
        }
    }
    eprintln!("{}", report.join("\n"));
    let ratio = detected.len() as f64 / files.len() as f64;
    eprintln!(
        "{} of {} techniques detected ({:.0}%)",
        detected.len(),
        files.len(),
        ratio * 100.0
    );
    assert!(
        ratio >= 0.8,
        "only {:.0}% of techniques detected",
        ratio * 100.0
    );
    let expected: BTreeSet<String> = DETECTED.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        detected, expected,
        "the detected set changed: update DETECTED after checking why"
    );
}
