//! Correlation cost, with the built-in pack (rules and correlations):
//! - `correlate/detect_only`: the detector alone over 1 M synthetic CloudTrail
//!   events of 100 k principals (pre-decoded), for reference;
//! - `correlate/detect_correlate_{1,2}_threads`: detector and correlator, on
//!   one stream, and on two streams (events split by account, as Kafka
//!   partitions split them) sharing one analyzer;
//! - a one-off measurement, printed: heap bytes per tracked key with 1 M keys
//!   (a counting allocator wraps the system one).
//!
//! `cargo bench --bench correlate`. Set `SEAMWATCH_BENCH_EVENTS` to change
//! the 1 M.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use seamwatch::analyze::{Analyzer, Scratch};
use seamwatch::correlate::{CorrelationConfig, Stream};
use seamwatch::detect::finding::SourceRef;
use seamwatch::detect::loader::load_builtin_report;
use seamwatch::event::{AuditEvent, Decoder};
use seamwatch::matrix::Matrix;
use seamwatch::synth::{Generator, SynthConfig};

struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn analyzer(config: CorrelationConfig) -> Analyzer {
    Analyzer::build(
        load_builtin_report().unwrap(),
        Arc::new(Matrix::builtin()),
        config,
    )
    .0
}

fn events_wanted() -> usize {
    std::env::var("SEAMWATCH_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Heap bytes per key: 1 M principals each delete one snapshot inside ten
/// minutes, so the mass-deletion threshold tracks one key per principal.
fn bytes_per_key() {
    let n = events_wanted() as u64;
    let analyzer = analyzer(CorrelationConfig {
        max_keys: 2_000_000,
        ..CorrelationConfig::default()
    });
    let decoder = Decoder::default();
    let mut stream = Stream::new();
    let mut scratch = Scratch::default();
    let mut out = Vec::new();
    let before = ALLOCATED.load(Ordering::Relaxed);
    for i in 0..n {
        // 0.5 ms apart: 1 M events span about eight minutes.
        let ms = 1_740_823_200_000i64 + (i as i64) / 2;
        let time = chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ");
        let json = format!(
            r#"{{"eventVersion":"1.09","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::100000000000:user/u{i}","accountId":"100000000000","userName":"u{i}"}},"eventTime":"{time}","eventSource":"ec2.amazonaws.com","eventName":"DeleteSnapshot","awsRegion":"us-east-1","eventID":"{i:08x}-0000-4000-8000-000000000000","recipientAccountId":"100000000000","requestParameters":{{"snapshotId":"snap-{i}"}}}}"#
        );
        decoder.decode(json.as_bytes(), &mut |d| {
            if let Ok(event) = d.result {
                analyzer.process(
                    &event,
                    SourceRef::Unknown,
                    &mut stream,
                    &mut scratch,
                    &mut out,
                );
            }
        });
        out.clear();
    }
    analyzer.finish(&mut stream, &mut out);
    out.clear();
    out.shrink_to_fit();
    let after = ALLOCATED.load(Ordering::Relaxed);
    let keys = analyzer.correlator().stats().keys;
    println!(
        "correlate/bytes_per_key: {keys} keys, {:.1} MiB, {:.0} bytes per key",
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) as f64 / keys.max(1) as f64
    );
}

fn bench(c: &mut Criterion) {
    bytes_per_key();

    let n = events_wanted();
    let generated: Vec<_> = Generator::new(SynthConfig {
        principals: 100_000,
        accounts: 16,
        mean_gap_ms: 2,
        security_share: 0.3,
        ..SynthConfig::default()
    })
    .take(n)
    .collect();
    let decoder = Decoder::default();
    let events: Vec<AuditEvent<'static>> = generated
        .iter()
        .filter_map(|e| decoder.decode_owned(e.json.as_bytes()).pop()?.ok())
        .collect();
    let halves: Vec<Vec<&AuditEvent<'static>>> = (0..2)
        .map(|w| {
            events
                .iter()
                .zip(&generated)
                .filter(|(_, g)| (g.account.bytes().last().unwrap() % 2) as usize == w)
                .map(|(e, _)| e)
                .collect()
        })
        .collect();

    let mut group = c.benchmark_group("correlate");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events.len() as u64));

    let reference = analyzer(CorrelationConfig::default());
    group.bench_function("detect_only", |b| {
        let mut out = Vec::new();
        let mut matched = seamwatch::detect::Matched::new();
        b.iter(|| {
            for event in &events {
                matched.clear();
                reference.detector().detect_matched(
                    event,
                    SourceRef::Unknown,
                    &mut out,
                    &mut matched,
                );
                out.clear();
            }
        })
    });

    group.bench_function("detect_correlate_1_thread", |b| {
        b.iter_with_setup(
            || analyzer(CorrelationConfig::default()),
            |analyzer| {
                let mut stream = Stream::new();
                let mut scratch = Scratch::default();
                let mut out = Vec::new();
                for event in &events {
                    analyzer.process(
                        event,
                        SourceRef::Unknown,
                        &mut stream,
                        &mut scratch,
                        &mut out,
                    );
                    out.clear();
                }
                analyzer.finish(&mut stream, &mut out);
                analyzer
            },
        )
    });

    group.bench_function("detect_correlate_2_threads", |b| {
        b.iter_with_setup(
            || analyzer(CorrelationConfig::default()),
            |analyzer| {
                std::thread::scope(|scope| {
                    for half in &halves {
                        let analyzer = &analyzer;
                        scope.spawn(move || {
                            let mut stream = Stream::new();
                            let mut scratch = Scratch::default();
                            let mut out = Vec::new();
                            for event in half {
                                analyzer.process(
                                    event,
                                    SourceRef::Unknown,
                                    &mut stream,
                                    &mut scratch,
                                    &mut out,
                                );
                                out.clear();
                            }
                            analyzer.finish(&mut stream, &mut out);
                        });
                    }
                });
                analyzer
            },
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
