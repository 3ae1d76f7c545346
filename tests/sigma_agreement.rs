//! seamwatch's Sigma evaluation agrees with the reference evaluator, the
//! `rsigma` CLI, on which SigmaHQ cloud rule matches which corpus record.
//!
//! The reference answer is `tests/expected/sigma-rsigma-matches.json`,
//! produced by `rsigma engine eval` (0.23.0) over the same records. With
//! `UPDATE_GOLDEN=1` and `rsigma` on PATH (or `RSIGMA=/path/to/rsigma`) the
//! test runs rsigma and rewrites that file; otherwise it compares against it.
//! Records are read from the shared corpus: bare CloudTrail records, GCP
//! LogEntry records and Azure records in the Event Hubs shape (the shape
//! rsigma reads field by field; the REST shape nests `operationName.value`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use seamwatch::detect::RuleSet;
use seamwatch::detect::loader::load_path;
use seamwatch::event::Decoder;

const FILES: &[&str] = &[
    "aws/cloud-custodian-cloudtrail-records.jsonl",
    "aws/otel-contrib-records.jsonl",
    "aws/otrf-ec2-proxy-s3-exfiltration.jsonl",
    "azure/otel-contrib-activity-categories.jsonl",
    "azure/msdocs-eventhub-storage-records.jsonl",
    "azure/sumologic-eventhub-record.jsonl",
    "gcp/cloud-custodian-audit.jsonl",
    "gcp/google-cloudevents-audit.jsonl",
    "gcp/otel-contrib-audit.jsonl",
];

type Matches = BTreeMap<String, BTreeSet<String>>;

fn corpus() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("SEAMWATCH_REQUIRE_CORPUS").is_none(),
        "corpus required but missing"
    );
    eprintln!("NOTE: shared corpus not found; Sigma agreement test not run");
    None
}

/// (key "file:line", record) for every record, Stratus detonations included.
fn records(corpus: &Path) -> Vec<(String, String)> {
    let mut files: Vec<String> = FILES.iter().map(|f| (*f).to_owned()).collect();
    let mut stratus: Vec<String> = std::fs::read_dir(corpus.join("events/aws/stratus-red-team"))
        .unwrap()
        .map(|e| {
            format!(
                "aws/stratus-red-team/{}",
                e.unwrap().file_name().to_string_lossy()
            )
        })
        .collect();
    stratus.sort();
    files.extend(stratus);
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(corpus.join("events").join(&file)).unwrap();
        for (i, line) in text.lines().enumerate() {
            if !line.trim().is_empty() {
                out.push((format!("{file}:{}", i + 1), line.to_owned()));
            }
        }
    }
    out
}

fn seamwatch_matches(corpus: &Path, records: &[(String, String)]) -> Matches {
    let set = RuleSet::new(load_path(&corpus.join("sigma/rules/cloud")).unwrap().rules);
    let mut out = Matches::new();
    for (key, line) in records {
        for event in Decoder::default()
            .decode_owned(line.as_bytes())
            .into_iter()
            .flatten()
        {
            set.matching(&event, |rule| {
                let id = rule
                    .meta
                    .id
                    .strip_prefix("sigma.")
                    .unwrap_or(&rule.meta.id)
                    .to_owned();
                out.entry(key.clone()).or_default().insert(id);
            });
        }
    }
    out
}

/// rsigma, run per cloud (its rules on that cloud's records), since it tries
/// every rule on every event unless told a log source.
fn rsigma_matches(corpus: &Path, records: &[(String, String)], rsigma: &str) -> Matches {
    let mut out = Matches::new();
    for cloud in ["aws", "azure", "gcp"] {
        let cloud_records: Vec<&(String, String)> = records
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{cloud}/")))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.jsonl");
        std::fs::write(
            &events,
            cloud_records
                .iter()
                .map(|(_, l)| format!("{l}\n"))
                .collect::<String>(),
        )
        .unwrap();
        let output = Command::new(rsigma)
            .args(["engine", "eval", "-r"])
            .arg(corpus.join("sigma/rules/cloud").join(cloud))
            .arg("-e")
            .arg(format!("@{}", events.display()))
            .args([
                "--output-format",
                "ndjson",
                "--include-event",
                "-q",
                "--no-stats",
            ])
            .output()
            .expect("run rsigma");
        assert!(
            output.status.success() || output.status.code() == Some(1),
            "rsigma failed: {output:?}"
        );
        // rsigma prints no event index: join on the record itself.
        let canonical = |v: &serde_json::Value| serde_json::to_string(v).unwrap();
        let by_record: BTreeMap<String, &String> = cloud_records
            .iter()
            .map(|(k, l)| (canonical(&serde_json::from_str(l).unwrap()), k))
            .collect();
        for line in String::from_utf8(output.stdout).unwrap().lines() {
            let hit: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = by_record
                .get(&canonical(&hit["event"]))
                .unwrap_or_else(|| panic!("unknown event in {line}"));
            let id = hit["rule_id"].as_str().unwrap().to_owned();
            out.entry((*key).clone()).or_default().insert(id);
        }
    }
    out
}

#[test]
fn seamwatch_agrees_with_rsigma_on_sigma_matches() {
    let Some(corpus) = corpus() else { return };
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expected/sigma-rsigma-matches.json");
    let records = records(&corpus);
    let ours = seamwatch_matches(&corpus, &records);
    let reference: Matches = if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let rsigma = std::env::var("RSIGMA").unwrap_or_else(|_| "rsigma".into());
        let reference = rsigma_matches(&corpus, &records, &rsigma);
        std::fs::write(
            &golden,
            serde_json::to_string_pretty(&reference).unwrap() + "\n",
        )
        .unwrap();
        reference
    } else {
        serde_json::from_str(&std::fs::read_to_string(&golden).unwrap()).unwrap()
    };
    let pairs = |m: &Matches| -> BTreeSet<(String, String)> {
        m.iter()
            .flat_map(|(k, ids)| ids.iter().map(move |id| (k.clone(), id.clone())))
            .collect()
    };
    let (ours, reference) = (pairs(&ours), pairs(&reference));
    let only_ours: Vec<_> = ours.difference(&reference).collect();
    let only_reference: Vec<_> = reference.difference(&ours).collect();
    eprintln!(
        "{} records; rsigma: {} matches; seamwatch: {} matches; only seamwatch: {only_ours:?}; only rsigma: {only_reference:?}",
        records.len(),
        reference.len(),
        ours.len()
    );
    assert!(
        !reference.is_empty(),
        "the reference found no match at all: nothing was compared"
    );
    assert!(
        only_ours.is_empty() && only_reference.is_empty(),
        "disagreements with rsigma"
    );
}
