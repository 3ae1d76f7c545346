//! Replay of a gzipped CloudTrail archive in the S3 layout, end to end:
//! generate N synthetic CloudTrail events (seeded, ~750 bytes each) into
//! `AWSLogs/<account>/CloudTrail/<region>/<y>/<m>/<d>/…json.gz` files of 5
//! minutes each, then plan, read on all cores, order by event time and run
//! the built-in pack (detection and correlation) on them. Prints events/s,
//! MB/s (compressed and uncompressed) and the peak RSS.
//!
//! `cargo bench --bench replay` (N = 500 000; `SEAMWATCH_BENCH_EVENTS`
//! changes it; the archive is generated in a temp folder, or kept in
//! `SEAMWATCH_BENCH_DIR` and reused by later runs with the same N).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use seamwatch::analyze::Analyzer;
use seamwatch::correlate::{CorrelationConfig, Stream};
use seamwatch::detect::loader::load_builtin_report;
use seamwatch::event::Decoder;
use seamwatch::matrix::Matrix;
use seamwatch::replay::{Filter, ReadOptions, analyze, plan};
use seamwatch::synth::{Generator, SynthConfig};

// The allocator the `seamwatch` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Writes `n` events as gzipped `Records` files, one per account and
/// 5-minute delivery, as it goes (the generator runs in time order, so only
/// one delivery is held at a time); returns the JSON and gzipped sizes.
fn generate(root: &std::path::Path, n: usize) -> (u64, u64) {
    let mut generator = Generator::new(SynthConfig {
        principals: 20_000,
        accounts: 20,
        mean_gap_ms: 20,
        ..SynthConfig::default()
    });
    let started = Instant::now();
    let (mut raw_bytes, mut gz_bytes, mut count) = (0u64, 0u64, 0usize);
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    let mut write = |delivery: i64, files: &mut BTreeMap<String, Vec<String>>| {
        let at = Utc.timestamp_millis_opt(delivery).unwrap();
        for (account, events) in std::mem::take(files) {
            let path = root.join(format!(
                "AWSLogs/{account}/CloudTrail/us-east-1/{}/{account}_CloudTrail_us-east-1_{}_bench.json.gz",
                at.format("%Y/%m/%d"),
                at.format("%Y%m%dT%H%MZ")
            ));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut body = String::from("{\"Records\":[");
            body.push_str(&events.join(","));
            body.push_str("]}");
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(body.as_bytes()).unwrap();
            let gz = enc.finish().unwrap();
            gz_bytes += gz.len() as u64;
            count += 1;
            std::fs::write(&path, gz).unwrap();
        }
    };
    for _ in 0..n {
        let e = generator.next_event();
        raw_bytes += e.json.len() as u64;
        let delivery = e.time_ms.div_euclid(300_000) * 300_000 + 300_000;
        if let Some(previous) = current.filter(|&p| p != delivery) {
            write(previous, &mut files);
        }
        current = Some(delivery);
        files.entry(e.account).or_default().push(e.json);
    }
    if let Some(last) = current {
        write(last, &mut files);
    }
    eprintln!(
        "generated {n} events in {count} files ({:.0} MB JSON, {:.0} MB gzipped) in {:.1} s",
        raw_bytes as f64 / 1e6,
        gz_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    (raw_bytes, gz_bytes)
}

fn main() {
    // As the binary does (src/main.rs): no transparent huge pages.
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    let n: usize = std::env::var("SEAMWATCH_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    // `SEAMWATCH_BENCH_DIR` keeps the archive between runs (generated when
    // the folder holds none), so that a profile shows the replay alone.
    let temp;
    let root = match std::env::var_os("SEAMWATCH_BENCH_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => {
            temp = tempfile::tempdir().expect("tempdir");
            temp.path().to_owned()
        }
    };
    let meta = root.join("bench-archive.json");
    let (raw_bytes, gz_bytes) = match std::fs::read(&meta)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(|m| m["events"].as_u64() == Some(n as u64))
    {
        Some(m) => {
            eprintln!("reusing the archive in {}", root.display());
            (
                m["json_bytes"].as_u64().unwrap_or(0),
                m["gz_bytes"].as_u64().unwrap_or(0),
            )
        }
        None => {
            let _ = std::fs::remove_dir_all(root.join("AWSLogs"));
            let sizes = generate(&root, n);
            std::fs::write(
                &meta,
                serde_json::json!({"events": n, "json_bytes": sizes.0, "gz_bytes": sizes.1})
                    .to_string(),
            )
            .unwrap();
            sizes
        }
    };

    let analyzer = Analyzer::build(
        load_builtin_report().unwrap(),
        Arc::new(Matrix::builtin()),
        CorrelationConfig::default(),
    )
    .0;
    let paths: Vec<_> = walkdir::WalkDir::new(root.join("AWSLogs"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started = Instant::now();
    let filter = Filter::default();
    let plan = plan(&paths, &filter);
    let mut stream = Stream::in_time_order();
    let mut findings = Vec::new();
    let mut found = 0usize;
    let store = seamwatch::replay::Store::default();
    let options = ReadOptions::new(Decoder::default(), &filter, threads, &store);
    let stats = analyze(
        &plan,
        &options,
        &analyzer,
        &mut stream,
        |out| found += out.len(),
        |_, _| {},
        |_| {},
    )
    .unwrap();
    analyzer.finish(&mut stream, &mut findings);
    found += findings.len();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "replay: {} events, {} findings in {:.2} s on {threads} threads: {:.0} events/s, {:.1} MB/s gzipped, {:.1} MB/s JSON; peak RSS {:.0} MB",
        stats.decode.events,
        found,
        secs,
        stats.decode.events as f64 / secs,
        gz_bytes as f64 / 1e6 / secs,
        raw_bytes as f64 / 1e6 / secs,
        peak_rss_mb()
    );
}
