//! Every audit record of the shared corpus (`../shared/corpus/events`) parses
//! without error, and its non-audit negatives are rejected with a clear reason.
//!
//! The corpus sits beside the repository, not in it. Without it this test says
//! so on stderr and passes; CI sets `SEAMWATCH_REQUIRE_CORPUS=1` so that there
//! a missing corpus fails instead.

use std::path::{Path, PathBuf};

use seamwatch::event::{Decoded, Decoder, ErrorReason};

/// Files whose every record is a non-audit negative, per the corpus README.
const NEGATIVE_FILES: [&str; 1] = ["aws/cloud-custodian-eventbridge-other.jsonl"];
/// Files with some non-audit lines: (file, number of such lines).
const MIXED_FILES: [(&str, usize); 1] = [("gcp/plaso-gcp-logging.jsonl", 2)];

fn corpus_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/events");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("SEAMWATCH_REQUIRE_CORPUS").is_none(),
        "SEAMWATCH_REQUIRE_CORPUS is set but {} does not exist",
        dir.display()
    );
    eprintln!(
        "NOTE: shared corpus not found at {}; corpus test not run",
        dir.display()
    );
    None
}

/// Records in a file, counted independently of seamwatch's decoder.
fn count_records(path: &Path) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    if path.extension().is_some_and(|e| e == "jsonl") {
        return text.lines().filter(|l| !l.trim().is_empty()).count();
    }
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    ["Records", "records", "logEvents"]
        .iter()
        .find_map(|k| doc.get(*k).and_then(|v| v.as_array()).map(Vec::len))
        .unwrap_or(1)
}

#[test]
fn every_corpus_audit_record_parses_and_negatives_are_rejected() {
    let Some(dir) = corpus_dir() else { return };
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "jsonl"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 50,
        "corpus looks incomplete: {} files",
        files.len()
    );

    let (mut total_events, mut total_rejected) = (0usize, 0usize);
    for file in &files {
        let rel = file
            .strip_prefix(&dir)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(file).unwrap();
        let mut events = 0usize;
        let mut rejected = Vec::new();
        Decoder::default().decode(&bytes, &mut |d: Decoded<'_>| match d.result {
            Ok(_) => events += 1,
            Err(e) => rejected.push((d.location.line, e.reason, e.detail)),
        });
        let records = count_records(file);
        let expected_negatives = if NEGATIVE_FILES.contains(&rel.as_str()) {
            records
        } else {
            MIXED_FILES
                .iter()
                .find(|(f, _)| *f == rel)
                .map(|(_, n)| *n)
                .unwrap_or(0)
        };
        assert_eq!(
            rejected.len(),
            expected_negatives,
            "{rel}: unexpected rejections {rejected:?}"
        );
        for (line, reason, detail) in &rejected {
            assert_eq!(*reason, ErrorReason::NotAuditLog, "{rel}:{line}: {detail}");
            assert!(!detail.is_empty());
        }
        assert_eq!(events + rejected.len(), records, "{rel}: records lost");
        total_events += events;
        total_rejected += rejected.len();
    }
    eprintln!(
        "corpus: {total_events} audit records parsed, {total_rejected} non-audit negatives rejected"
    );
    assert_eq!(total_rejected, 13);
    assert!(total_events >= 550, "only {total_events} events");
}
