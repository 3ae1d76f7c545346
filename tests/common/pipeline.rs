//! Running the live pipeline in a test: on a runtime of its own, until told
//! to stop or until it has consumed a number of messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use seamwatch::analyze::Analyzer;
use seamwatch::event::Limits;
use seamwatch::pipeline::outbox::FindingSink;
use seamwatch::pipeline::run::run;
use seamwatch::pipeline::{KafkaConfig, Metrics, PipelineError, RunSummary};

/// Runs the pipeline until `stop` is set.
pub fn run_pipeline(
    kafka: &KafkaConfig,
    analyzer: Arc<Analyzer>,
    sink: Arc<dyn FindingSink>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, PipelineError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client = kafka.client_config(|_| None).unwrap();
    rt.block_on(run(
        kafka,
        client,
        Limits::default(),
        analyzer,
        sink,
        metrics,
        stop,
    ))
}

/// Runs the pipeline until it has consumed `until` messages (or `timeout`
/// passed), then stops it gracefully.
pub fn run_until(
    kafka: &KafkaConfig,
    analyzer: Arc<Analyzer>,
    sink: Arc<dyn FindingSink>,
    until: u64,
    timeout: Duration,
) -> (Result<RunSummary, PipelineError>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::default());
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (metrics, stop) = (metrics.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + timeout;
            while metrics.messages.load(Ordering::Relaxed) < until && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    let result = run_pipeline(kafka, analyzer, sink, metrics.clone(), stop.clone());
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    (result, metrics)
}
