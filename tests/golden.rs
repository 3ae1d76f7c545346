//! Golden tests: every fixture file decodes to exactly its expected normalized
//! output (tests/expected/<file>.jsonl), plain and gzipped, and together the
//! fixtures cover every native shape of the three clouds.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use seamwatch::event::{Decoded, Decoder};

fn fixture_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| {
            let s = p.to_string_lossy();
            // fixtures/alerts holds findings and API references, not audit logs.
            (s.ends_with(".json") || s.ends_with(".jsonl"))
                && !s.contains("/licenses/")
                && !s.contains("/fixtures/alerts/")
        })
        .collect();
    files.sort();
    files
}

/// One JSON line per record: the event with its location, or the error reason.
fn render(bytes: &[u8]) -> (String, Vec<serde_json::Value>) {
    let mut out = String::new();
    let mut events = Vec::new();
    Decoder::default().decode(bytes, &mut |d: Decoded<'_>| {
        let line = match &d.result {
            Ok(event) => {
                let mut v = serde_json::to_value(event).unwrap();
                v["location"] = serde_json::to_value(d.location).unwrap();
                events.push(v.clone());
                v
            }
            Err(e) => serde_json::json!({"location": d.location, "error": e.reason.as_str()}),
        };
        out.push_str(&serde_json::to_string(&line).unwrap());
        out.push('\n');
    });
    (out, events)
}

#[test]
fn fixtures_match_golden_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let files = fixture_files();
    assert!(files.len() >= 15, "fixtures missing: {files:?}");
    let mut mismatches = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root.join("tests/fixtures")).unwrap();
        let expected_path = root
            .join("tests/expected")
            .join(format!("{}.out.jsonl", rel.display()));
        let (actual, _) = render(&std::fs::read(&file).unwrap());
        assert!(!actual.is_empty(), "{} produced nothing", rel.display());
        if update {
            std::fs::create_dir_all(expected_path.parent().unwrap()).unwrap();
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "missing {}; run with UPDATE_GOLDEN=1",
                expected_path.display()
            )
        });
        if expected != actual {
            mismatches.push(rel.display().to_string());
        }
    }
    assert!(
        mismatches.is_empty(),
        "golden output differs for {mismatches:?}"
    );
}

#[test]
fn gzipped_fixtures_decode_identically() {
    for file in fixture_files() {
        let plain = std::fs::read(&file).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(render(&plain).0, render(&gz).0, "{}", file.display());
    }
}

#[test]
fn fixtures_cover_every_shape_of_every_cloud() {
    let mut shapes = BTreeSet::new();
    for file in fixture_files() {
        for event in render(&std::fs::read(&file).unwrap()).1 {
            shapes.insert(event["shape"].as_str().unwrap().to_owned());
        }
    }
    let expected = [
        "cloud_trail_record",
        "cloud_trail_s3_object",
        "cloud_trail_event_bridge",
        "cloud_trail_cloud_watch_logs",
        "cloud_trail_lookup_events",
        "azure_record",
        "azure_event_hubs_batch",
        "azure_rest",
        "gcp_log_entry",
        "gcp_pub_sub_push",
    ];
    for shape in expected {
        assert!(
            shapes.contains(shape),
            "no fixture produces shape {shape}; got {shapes:?}"
        );
    }
}
