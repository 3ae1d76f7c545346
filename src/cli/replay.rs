//! `seamwatch replay FILES`: read archived audit logs, run them through the
//! same analyzer (detector and correlator) as the live pipeline, and print
//! findings as JSON Lines, with a summary on stderr. The whole replay is one
//! correlation stream; at the end it is flushed up to the last event time. (The replay issue adds archive layouts, S3 and
//! LookupEvents sources, event-time ordering and reports.)

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::input::{expand_inputs, read_input};
use super::parse::write_json_line;
use crate::analyze::{Analyzer, Scratch};
use crate::config::Config;
use crate::correlate::Stream;
use crate::detect::Finding;
use crate::detect::finding::SourceRef;
use crate::detect::loader::{LoadReport, load_builtin_report, load_path};
use crate::event::{DecodeStats, Decoded, Decoder};
use crate::matrix::Matrix;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Files or directories to read (recursively); `-` or nothing reads stdin.
    pub inputs: Vec<PathBuf>,

    /// Extra rule files or folders (seamwatch or Sigma rules); repeatable.
    #[arg(long = "rules", value_name = "PATH")]
    pub rules: Vec<PathBuf>,

    /// Do not load the built-in rule pack.
    #[arg(long)]
    pub no_builtin: bool,

    /// Responsibility matrix [default: config/responsibility.toml if present, else the built-in one].
    #[arg(long, value_name = "FILE")]
    pub matrix: Option<PathBuf>,

    /// Print the summary only.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Built-in pack plus extra paths, rules and correlations; rejected rules
/// are warned about.
pub(crate) fn load_report(extra: &[PathBuf], builtin: bool) -> anyhow::Result<LoadReport> {
    let mut report = LoadReport::default();
    if builtin {
        report = load_builtin_report().context("loading the built-in rule pack")?;
    }
    for path in extra {
        report.merge(
            load_path(path).with_context(|| format!("loading rules from {}", path.display()))?,
        );
    }
    for rejected in &report.rejected {
        tracing::warn!(file = %rejected.file, rule = rejected.rule.as_deref().unwrap_or(""), reason = %rejected.reason, "rule not loaded");
    }
    report.rejected.clear();
    Ok(report)
}

/// Rules, correlations and matrix, built into an analyzer.
pub(crate) fn build_analyzer(
    extra: &[PathBuf],
    builtin: bool,
    matrix: Matrix,
    config: &Config,
) -> anyhow::Result<Analyzer> {
    let report = load_report(extra, builtin)?;
    let (analyzer, rejected) = Analyzer::build(report, Arc::new(matrix), config.correlation);
    for rejected in &rejected {
        tracing::warn!(rule = rejected.rule.as_deref().unwrap_or(""), reason = %rejected.reason, "correlation not loaded");
    }
    tracing::info!(
        rules = analyzer.detector().rules().len(),
        correlations = analyzer.correlator().correlations().len(),
        "rules loaded"
    );
    Ok(analyzer)
}

pub(crate) fn load_matrix(path: Option<&PathBuf>) -> anyhow::Result<Matrix> {
    let default = PathBuf::from("config/responsibility.toml");
    match path.or(default.exists().then_some(&default)) {
        Some(path) => Matrix::load(path).map_err(anyhow::Error::from),
        None => Ok(Matrix::builtin()),
    }
}

pub fn run(args: ReplayArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let matrix = load_matrix(args.matrix.as_ref())?;
    let analyzer = build_analyzer(&args.rules, !args.no_builtin, matrix, config)?;
    let mut stream = Stream::new();
    let mut scratch = Scratch::default();
    let decoder = Decoder::new(config.input.format, config.limits);
    let files = expand_inputs(&args.inputs)?;

    let mut out = BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut stats = DecodeStats::default();
    let mut by_rule: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_severity: BTreeMap<String, u64> = BTreeMap::new();
    let mut findings = Vec::new();
    let mut write_error = None;
    let mut report = |findings: &mut Vec<Finding>, out: &mut BufWriter<_>| -> io::Result<()> {
        for finding in findings.drain(..) {
            *by_rule.entry(finding.rule_id.clone()).or_default() += 1;
            *by_severity.entry(finding.severity.to_string()).or_default() += 1;
            if !args.quiet {
                write_json_line(out, &finding)?;
            }
        }
        Ok(())
    };
    for file in &files {
        let (name, bytes) = read_input(file)?;
        decoder.decode(&bytes, &mut |decoded: Decoded<'_>| {
            stats.record(&decoded);
            let Ok(event) = decoded.result else { return };
            let source = SourceRef::File {
                path: &name,
                line: decoded.location.line,
                index: decoded.location.index,
            };
            analyzer.process(&event, source, &mut stream, &mut scratch, &mut findings);
            if let Err(e) = report(&mut findings, &mut out)
                && write_error.is_none()
            {
                write_error = Some(e);
            }
        });
        if let Some(e) = write_error.take() {
            return Err(e).context("writing findings");
        }
    }
    analyzer.finish(&mut stream, &mut findings);
    report(&mut findings, &mut out).context("writing findings")?;
    out.flush().context("writing findings")?;
    let total: u64 = by_rule.values().sum();
    eprintln!(
        "replayed {} events from {} input(s) ({} rejected): {total} findings",
        stats.events,
        files.len(),
        stats.total_errors()
    );
    let c = analyzer.correlator().stats();
    eprintln!(
        "  correlation: {} observations, {} fired, {} late beyond the allowed lateness, {} without a group, {} groups evicted, {} still open",
        c.observations, c.fired, c.late, c.ungrouped, c.evicted, c.keys
    );
    for (severity, n) in by_severity.iter().rev() {
        eprintln!("  {severity:<9} {n}");
    }
    for (rule, n) in &by_rule {
        eprintln!("  {n:>6}  {rule}");
    }
    Ok(ExitCode::SUCCESS)
}
