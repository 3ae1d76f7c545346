//! `seamwatch replay FILES|DIRS`: read archived audit logs (plain files and
//! the native archive layouts of the three clouds, pruned by the dates in
//! their paths), run them in event-time order through the same analyzer
//! (detector and correlator) as the live pipeline, and print findings as
//! JSON Lines, with progress and a summary on stderr. The whole replay is one
//! correlation stream, flushed at the end up to the last event time.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use anyhow::Context;
use clap::Args;

use super::input::{expand_inputs, read_input};
use super::parse::write_json_line;
use crate::alert::format::Formatter;
use crate::alert::store::Outbox;
use crate::alert::{Action, AlertNotice, Notice};
use crate::analyze::{Analyzer, Scratch};
use crate::config::Config;
use crate::correlate::Stream;
use crate::detect::Finding;
use crate::detect::finding::SourceRef;
use crate::detect::loader::{LoadReport, load_builtin_report, load_path};
use crate::event::{Cloud, DecodeStats, Decoded, Decoder};
use crate::matrix::Matrix;
use crate::replay::source::is_remote;
use crate::replay::{AwsOptions, Filter, Plan, ReadOptions, Store, file_names, source_of};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Files or directories to read (recursively), `s3://bucket/prefix`
    /// (listed and pruned by the dates in the keys), or
    /// `cloudtrail://REGION[,REGION…][?ATTRIBUTE=VALUE]` (CloudTrail's
    /// event history through LookupEvents, e.g. `?EventName=StopLogging`);
    /// `-` or nothing reads stdin.
    pub inputs: Vec<PathBuf>,

    /// Endpoint for S3 and CloudTrail (an S3-compatible store; implies
    /// path-style addressing) [env: AWS_ENDPOINT_URL].
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,

    #[command(flatten)]
    pub detection: DetectionArgs,

    /// Print the summary only.
    #[arg(long, short)]
    pub quiet: bool,

    /// Only events at or after this time (RFC 3339, or a date: 2024-08-01).
    /// Files whose path dates fall before it are not opened.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<DateTime<Utc>>,

    /// Only events before this time (RFC 3339, or a date).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<DateTime<Utc>>,

    /// Only this account, subscription or project; repeatable.
    #[arg(long = "account", value_name = "ID")]
    pub accounts: Vec<String>,

    /// Only this region; repeatable.
    #[arg(long = "region", value_name = "REGION")]
    pub regions: Vec<String>,

    /// Only this cloud (aws, azure, gcp); repeatable.
    #[arg(long = "cloud", value_name = "CLOUD", value_parser = parse_cloud)]
    pub clouds: Vec<Cloud>,

    /// Decoding threads [default: one per core].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Replay the inputs through two rule sets (each added to the built-in
    /// pack and --rules) and print the findings that differ, as JSON Lines
    /// with `"only_in": "a"` or `"b"`; exit status 1 when they differ.
    #[arg(long, num_args = 2, value_names = ["RULES_A", "RULES_B"])]
    pub compare: Vec<PathBuf>,

    /// How findings are written: seamwatch's JSON, or OCSF Detection Findings.
    #[arg(long, value_enum, default_value = "json")]
    pub format: OutputFormat,

    /// Write findings to this file instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Also hand findings to the alert outbox (`[alerts]`) and deliver them
    /// to the configured destinations, with dedup, routes and suppressions,
    /// before exiting.
    #[arg(long)]
    pub deliver: bool,

    /// Write an incident timeline (Markdown: findings in event-time order,
    /// with who, where, what and the evidence) for the case file.
    #[arg(long, value_name = "FILE.md")]
    pub timeline: Option<PathBuf>,
}

/// `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Json,
    Ocsf,
}

/// Where findings are written: standard output or `--output`.
fn output(args: &ReplayArgs) -> anyhow::Result<Box<dyn Write>> {
    Ok(match &args.output {
        Some(path) => Box::new(BufWriter::with_capacity(
            1 << 16,
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => {
            widen_pipe(&io::stdout());
            Box::new(BufWriter::with_capacity(1 << 16, io::stdout().lock()))
        }
    })
}

/// When `out` is a pipe, asks for a 1 MiB pipe buffer (the most Linux
/// grants an unprivileged process by default) in place of 64 KiB: a replay
/// writes findings faster than most readers take them, and with the small
/// buffer the writer and the reader woke each other for every 64 KiB (a
/// replay writing 63 MB of findings into `cat` switched context ~2 000
/// times; ~570 with 1 MiB). Anything else, or a refusal, leaves the output
/// as it is.
fn widen_pipe(out: &impl std::os::fd::AsRawFd) {
    #[cfg(target_os = "linux")]
    {
        let fd = out.as_raw_fd();
        // SAFETY: fstat and fcntl on a descriptor this process holds open,
        // with a zeroed stat buffer it owns and plain integer arguments.
        unsafe {
            let mut stat: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut stat) == 0 && (stat.st_mode & libc::S_IFMT) == libc::S_IFIFO {
                libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
            }
        }
    }
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("{text:?} is neither RFC 3339 nor YYYY-MM-DD"))
}

pub(crate) fn parse_cloud(text: &str) -> Result<Cloud, String> {
    match text.to_ascii_lowercase().as_str() {
        "aws" => Ok(Cloud::Aws),
        "azure" => Ok(Cloud::Azure),
        "gcp" => Ok(Cloud::Gcp),
        _ => Err(format!("{text:?}: expected aws, azure or gcp")),
    }
}

/// Which rules and matrix a command analyzes with (`replay`, `run`).
#[derive(Debug, Clone, Args)]
pub struct DetectionArgs {
    /// Extra rule files or folders (seamwatch or Sigma rules); repeatable.
    #[arg(long = "rules", value_name = "PATH")]
    pub rules: Vec<PathBuf>,

    /// Do not load the built-in rule pack.
    #[arg(long)]
    pub no_builtin: bool,

    /// Responsibility matrix [default: config/responsibility.toml if present, else the built-in one].
    #[arg(long, value_name = "FILE")]
    pub matrix: Option<PathBuf>,
}

impl DetectionArgs {
    /// The analyzer these rules (plus `extra`) and this matrix make.
    pub(crate) fn analyzer(
        &self,
        extra: Option<&PathBuf>,
        config: &Config,
    ) -> anyhow::Result<Analyzer> {
        let mut rules = self.rules.clone();
        rules.extend(extra.cloned());
        let matrix = load_matrix(self.matrix.as_ref())?;
        build_analyzer(&rules, !self.no_builtin, matrix, config)
    }
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
    let analyzer = args.detection.analyzer(None, config)?;
    let mut stream = Stream::in_time_order();
    let decoder = Decoder::new(config.input.format, config.limits);
    let filter = Filter {
        since: args.since,
        until: args.until,
        accounts: args.accounts.clone(),
        regions: args.regions.clone(),
        clouds: args.clouds.clone(),
    };
    if args.inputs.is_empty() || args.inputs.iter().any(|p| p.as_os_str() == "-") {
        return replay_stdin(&args, config, &analyzer, &decoder, &filter);
    }
    let (plan, store) = plan_inputs(&args, &filter)?;
    if let [a, b] = args.compare.as_slice() {
        return compare(&args, config, &plan, &store, &decoder, &filter, [a, b]);
    }
    if plan.digests_skipped + plan.pruned > 0 {
        eprintln!(
            "replay: {} files to read ({:.1} MB); {} pruned by date, account, region or cloud; {} CloudTrail digest files skipped",
            plan.files.len(),
            plan.bytes as f64 / 1e6,
            plan.pruned,
            plan.digests_skipped
        );
    }
    let names = file_names(&plan);
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let show_progress = io::stderr().is_terminal();
    let started = Instant::now();

    let mut out = output(&args)?;
    let mut summary = Summary::new(&args);
    let delivery = start_outbox(&args, config, &analyzer, &mut summary)?;
    let mut write_error = None;
    let options = ReadOptions {
        lateness_ms: analyzer.correlator().config().allowed_lateness_ms,
        ..ReadOptions::new(decoder, &filter, threads, &store)
    };
    let read = crate::replay::analyze(
        &plan,
        &options,
        &analyzer,
        &mut stream,
        |found| {
            if let Err(err) = summary.report(found, &mut out, args.quiet)
                && write_error.is_none()
            {
                write_error = Some(err);
            }
        },
        |file, reason| tracing::debug!(file = %names[file], reason = reason.as_str(), "record rejected"),
        |stats| {
            if show_progress {
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                let done = stats.bytes as f64 / plan.bytes.max(1) as f64;
                let eta = if done > 0.0 { secs / done - secs } else { 0.0 };
                eprint!(
                    "\r  {}/{} files, {:.1}/{:.1} MB, {:.0} events/s, ETA {:.0} s   ",
                    stats.files,
                    plan.files.len(),
                    stats.bytes as f64 / 1e6,
                    plan.bytes as f64 / 1e6,
                    stats.decode.events as f64 / secs,
                    eta.max(0.0)
                );
            }
        },
    )?;
    if show_progress {
        eprintln!();
    }
    summary.close(
        write_error.take(),
        &analyzer,
        &mut stream,
        &mut out,
        args.quiet,
    )?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "replayed {} events from {} file(s) ({} rejected, {} filtered out) in {:.2} s: {:.0} events/s, {:.1} MB/s; {} findings",
        read.decode.events - read.filtered,
        read.files,
        read.decode.total_errors(),
        read.filtered,
        secs,
        (read.decode.events - read.filtered) as f64 / secs,
        read.bytes as f64 / 1e6 / secs,
        summary.total()
    );
    summary.print(&analyzer);
    if let (Some(path), Some(findings)) = (&args.timeline, &mut summary.timeline) {
        write_timeline(path, findings)?;
    }
    finish_delivery(&summary, delivery)?;
    Ok(ExitCode::SUCCESS)
}

/// The files to read: local paths expanded and classified, remote sources
/// listed (S3) or pulled (CloudTrail event history).
fn plan_inputs(args: &ReplayArgs, filter: &Filter) -> anyhow::Result<(Plan, Store)> {
    let (remote, local): (Vec<&PathBuf>, Vec<&PathBuf>) =
        args.inputs.iter().partition(|p| is_remote(p));
    let local: Vec<PathBuf> = local.into_iter().cloned().collect();
    let mut plan = if local.is_empty() {
        Plan::default()
    } else {
        crate::replay::plan(&expand_inputs(&local)?, filter)
    };
    let mut store = Store::default();
    let options = AwsOptions {
        endpoint_url: args.endpoint_url.clone(),
    };
    for url in remote {
        let url = url.to_string_lossy();
        if url.starts_with("cloudtrail://") && !std::io::stderr().is_terminal() {
            tracing::info!(source = %url, "pulling CloudTrail event history (2 requests/s per region)");
        } else if url.starts_with("cloudtrail://") {
            eprintln!("replay: pulling {url} (LookupEvents, 2 requests/s per region)…");
        }
        store.add(&url, filter, &options, &mut plan)?;
    }
    Ok((plan, store))
}

/// `--compare A B`: one read of the archive, two analyzers.
fn compare(
    args: &ReplayArgs,
    config: &Config,
    plan: &crate::replay::Plan,
    store: &Store,
    decoder: &Decoder,
    filter: &Filter,
    sets: [&PathBuf; 2],
) -> anyhow::Result<ExitCode> {
    let mut sides = Vec::new();
    for set in sets {
        let analyzer = args.detection.analyzer(Some(set), config)?;
        sides.push((
            analyzer,
            Stream::in_time_order(),
            Scratch::default(),
            Vec::<Finding>::new(),
        ));
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let names = file_names(plan);
    // The longer lateness of the two sides: order restored for both.
    let lateness_ms = sides
        .iter()
        .map(|(a, ..)| a.correlator().config().allowed_lateness_ms)
        .max()
        .unwrap_or_default();
    let options = ReadOptions {
        lateness_ms,
        ..ReadOptions::new(*decoder, filter, threads, store)
    };
    let read = crate::replay::read_ordered(
        plan,
        &options,
        |_| (),
        |e, ()| {
            for (analyzer, stream, scratch, found) in sides.iter_mut() {
                analyzer.process(&e.event, source_of(&names, e), stream, scratch, found);
            }
        },
        |_, _| {},
        |_| {},
    )?;
    let mut found: Vec<BTreeMap<String, Finding>> = Vec::new();
    for (analyzer, mut stream, _, mut list) in sides {
        analyzer.finish(&mut stream, &mut list);
        found.push(list.into_iter().map(|f| (f.id.clone(), f)).collect());
    }
    let mut out = BufWriter::new(io::stdout().lock());
    // rule → (in a, in b, only in a, only in b)
    let mut by_rule: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    for (side, (this, other)) in [(&found[0], &found[1]), (&found[1], &found[0])]
        .into_iter()
        .enumerate()
    {
        for (id, finding) in this {
            let counts = by_rule.entry(finding.rule_id.clone()).or_default();
            counts[side] += 1;
            if other.contains_key(id) {
                continue;
            }
            counts[2 + side] += 1;
            if !args.quiet {
                let mut value = serde_json::to_value(finding).context("encoding a finding")?;
                value["only_in"] = serde_json::Value::from(["a", "b"][side]);
                write_json_line(&mut out, &value).context("writing findings")?;
            }
        }
    }
    out.flush().context("writing findings")?;
    let differing: Vec<_> = by_rule.iter().filter(|(_, c)| c[2] + c[3] > 0).collect();
    eprintln!(
        "compared {} events: {} findings with {}, {} with {}; {} rules differ",
        read.decode.events - read.filtered,
        found[0].len(),
        sets[0].display(),
        found[1].len(),
        sets[1].display(),
        differing.len()
    );
    if !differing.is_empty() {
        eprintln!(
            "  {:>7} {:>7} {:>7} {:>7}  rule",
            "a", "b", "only a", "only b"
        );
        for (rule, c) in &differing {
            eprintln!("  {:>7} {:>7} {:>7} {:>7}  {rule}", c[0], c[1], c[2], c[3]);
        }
    }
    Ok(if differing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Findings counted by rule and severity, and written unless quiet.
#[derive(Default)]
struct Summary {
    by_rule: BTreeMap<String, u64>,
    by_severity: BTreeMap<crate::detect::Severity, u64>,
    by_account: BTreeMap<String, u64>,
    by_domain: BTreeMap<String, u64>,
    /// `--format ocsf`.
    ocsf: Option<Formatter>,
    /// `--deliver`: the alert outbox, and findings not yet synced to it.
    outbox: Option<Arc<Outbox>>,
    unsynced: usize,
    /// `--timeline`: every finding, kept for the report.
    timeline: Option<Vec<Finding>>,
    /// Findings written and not yet handed to the output: written straight
    /// into this buffer and handed on [`PENDING_BYTES`] at a time, rather
    /// than each into a buffer of its own and copied into the output's.
    pending: Vec<u8>,
}

/// How much written output [`Summary`] holds before handing it on.
const PENDING_BYTES: usize = 1 << 18;

/// One more under `key`; the key is copied only the first time.
fn count(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

impl Summary {
    fn new(args: &ReplayArgs) -> Summary {
        Summary {
            ocsf: (args.format == OutputFormat::Ocsf).then(Formatter::ocsf),
            timeline: args.timeline.as_ref().map(|_| Vec::new()),
            ..Summary::default()
        }
    }

    /// Writes a finding: as JSON, or (`--format ocsf`) as an OCSF
    /// Detection Finding, an alert created by it.
    fn write(&mut self, out: &mut impl Write, finding: &Finding) -> io::Result<()> {
        match &self.ocsf {
            None => {
                let before = self.pending.len();
                if let Err(e) = finding.write_json(&mut self.pending) {
                    self.pending.truncate(before);
                    return Err(io::Error::other(e));
                }
                self.pending.push(b'\n');
            }
            Some(ocsf) => {
                let notice = Notice::Alert(AlertNotice {
                    action: Action::Create,
                    alert_id: finding.id.clone(),
                    finding_id: finding.id.clone(),
                    occurrences: 1,
                    first_seen: finding.event_time,
                    last_seen: finding.event_time,
                    closed_by: None,
                    finding: finding.clone(),
                });
                match ocsf.render(&notice) {
                    Ok(Some(rendered)) => {
                        self.pending.extend_from_slice(&rendered.body);
                        self.pending.push(b'\n');
                    }
                    Ok(None) => {}
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
        }
        if self.pending.len() >= PENDING_BYTES {
            self.hand_on(out)?;
        }
        Ok(())
    }

    /// Hands the findings written so far to the output.
    fn hand_on(&mut self, out: &mut impl Write) -> io::Result<()> {
        let written = out.write_all(&self.pending);
        self.pending.clear();
        written
    }

    fn report(
        &mut self,
        findings: &[Finding],
        out: &mut impl Write,
        quiet: bool,
    ) -> io::Result<()> {
        // Read in place, not drained: a replay frees each event's findings
        // with its round, on the thread that made them.
        for finding in findings.iter() {
            count(&mut self.by_rule, &finding.rule_id);
            *self.by_severity.entry(finding.severity).or_default() += 1;
            count(
                &mut self.by_account,
                finding.account.as_deref().unwrap_or("-"),
            );
            count(
                &mut self.by_domain,
                finding.domain.map_or("-", crate::matrix::Domain::as_str),
            );
            if let Some(timeline) = &mut self.timeline {
                timeline.push(finding.clone());
            }
            if let Some(outbox) = &self.outbox {
                outbox.append(std::slice::from_ref(finding));
                self.unsynced += 1;
                if self.unsynced >= 500 {
                    outbox.sync().map_err(io::Error::other)?;
                    self.unsynced = 0;
                }
            }
            if !quiet {
                self.write(out, finding)?;
            }
        }
        Ok(())
    }

    /// End of a replay: a write error met on the way, or the findings the
    /// stream still holds, written and flushed.
    fn close(
        &mut self,
        write_error: Option<io::Error>,
        analyzer: &Analyzer,
        stream: &mut Stream,
        out: &mut impl Write,
        quiet: bool,
    ) -> anyhow::Result<()> {
        if let Some(e) = write_error {
            return Err(e).context("writing findings");
        }
        let mut findings = Vec::new();
        analyzer.finish(stream, &mut findings);
        self.report(&findings, out, quiet)
            .context("writing findings")?;
        self.hand_on(out).context("writing findings")?;
        out.flush().context("writing findings")
    }

    fn total(&self) -> u64 {
        self.by_rule.values().sum()
    }

    fn print(&self, analyzer: &Analyzer) {
        let c = analyzer.correlator().stats();
        eprintln!(
            "  correlation: {} observations, {} fired, {} late beyond the allowed lateness, {} without a group, {} groups evicted, {} still open",
            c.observations, c.fired, c.late, c.ungrouped, c.evicted, c.keys
        );
        if c.late > 0 {
            eprintln!(
                "  note: some events came more than the allowed lateness behind newer ones of the same file or stream (exports concatenated, or written out of order); correlations saw them late, as the live pipeline would. Sorting the input, or raising correlation.allowed_lateness, puts them in order."
            );
        }
        eprintln!("  by severity:");
        for (severity, n) in self.by_severity.iter().rev() {
            eprintln!("  {n:>8}  {severity}");
        }
        eprintln!("  by control domain:");
        for (domain, n) in by_count(&self.by_domain) {
            eprintln!("  {n:>8}  {domain}");
        }
        eprintln!("  by account (top 20):");
        for (account, n) in by_count(&self.by_account).into_iter().take(20) {
            eprintln!("  {n:>8}  {account}");
        }
        eprintln!("  by rule:");
        for (rule, n) in by_count(&self.by_rule) {
            eprintln!("  {n:>8}  {rule}");
        }
    }
}

/// `--timeline`: the findings in event-time order as an incident report,
/// Markdown, or a self-contained HTML page when the file ends in `.html`.
/// Every cell is escaped for its format: log values are attacker-controlled.
fn write_timeline(path: &std::path::Path, findings: &mut [Finding]) -> anyhow::Result<()> {
    findings.sort_by(|a, b| a.event_time.cmp(&b.event_time).then(a.id.cmp(&b.id)));
    const HEAD: [&str; 8] = [
        "time (UTC)",
        "severity",
        "finding",
        "principal",
        "account / region",
        "resources",
        "owner",
        "evidence",
    ];
    let rows: Vec<[String; 8]> = findings
        .iter()
        .map(|f| {
            let mut evidence: Vec<String> = f
                .evidence
                .iter()
                .take(3)
                .map(|e| format!("{} ({})", e.event_id, e.source))
                .collect();
            if f.evidence.len() > 3 {
                evidence.push(format!("and {} more", f.evidence.len() - 3));
            }
            [
                f.event_time
                    .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
                f.severity.to_string(),
                format!("{} ({})", f.title, f.rule_id),
                f.principal
                    .name
                    .as_deref()
                    .or(f.principal.id.as_deref())
                    .unwrap_or("-")
                    .to_owned(),
                format!(
                    "{} {}",
                    f.account.as_deref().unwrap_or("-"),
                    f.region.as_deref().unwrap_or("")
                ),
                f.resources.join(", "),
                f.owner_team.clone().unwrap_or_else(|| "-".into()),
                evidence.join("; "),
            ]
        })
        .collect();
    let span = match (
        findings.iter().find_map(|f| f.event_time),
        findings.iter().rev().find_map(|f| f.event_time),
    ) {
        (Some(first), Some(last)) => format!(
            "{} findings from {} to {} (event time, UTC).",
            findings.len(),
            first.to_rfc3339(),
            last.to_rfc3339()
        ),
        _ => format!("{} findings.", findings.len()),
    };
    let html = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
    let text = if html {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let mut out = String::from(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Incident timeline</title>\n<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:4px 6px;vertical-align:top;text-align:left}th{background:#f3f3f3}tr.critical td:nth-child(2){color:#b00;font-weight:bold}tr.high td:nth-child(2){color:#c60}</style></head><body>\n<h1>Incident timeline</h1>\n",
        );
        out.push_str(&format!("<p>{}</p>\n<table><tr>", esc(&span)));
        for h in HEAD {
            out.push_str(&format!("<th>{h}</th>"));
        }
        out.push_str("</tr>\n");
        for row in &rows {
            out.push_str(&format!("<tr class=\"{}\">", esc(&row[1])));
            for cell in row {
                out.push_str(&format!("<td>{}</td>", esc(cell)));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table></body></html>\n");
        out
    } else {
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('|', "\\|")
                .replace(['\n', '\r'], " ")
        };
        let mut out = format!(
            "# Incident timeline\n\n{span}\n\n| {} |\n",
            HEAD.join(" | ")
        );
        out.push_str(&format!("|{}\n", "---|".repeat(HEAD.len())));
        for row in &rows {
            let cells: Vec<String> = row.iter().map(|c| esc(c)).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        out
    };
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `--deliver`: opens the alert outbox and starts delivering.
fn start_outbox(
    args: &ReplayArgs,
    config: &Config,
    analyzer: &Analyzer,
    summary: &mut Summary,
) -> anyhow::Result<Option<crate::alert::deliver::Dispatcher>> {
    if !args.deliver {
        return Ok(None);
    }
    if config.alerts.sinks.is_empty() {
        anyhow::bail!("--deliver: no [[alerts.sinks]] in the configuration");
    }
    let store = Arc::new(
        Outbox::open(
            &config.alerts.outbox,
            &config.alerts,
            super::run::resolvable_rules(analyzer),
        )
        .map_err(|e| anyhow::anyhow!(e))?,
    );
    let dispatcher = super::outbox::start_delivery(&store, config)?;
    summary.outbox = Some(store);
    Ok(Some(dispatcher))
}

/// `--deliver`: syncs what is left and waits until everything is delivered.
fn finish_delivery(
    summary: &Summary,
    dispatcher: Option<crate::alert::deliver::Dispatcher>,
) -> anyhow::Result<()> {
    let (Some(store), Some(dispatcher)) = (&summary.outbox, dispatcher) else {
        return Ok(());
    };
    store.sync()?;
    eprintln!("delivering to the configured destinations (Ctrl-C leaves the rest in the outbox)…");
    super::outbox::drain(store, dispatcher, true)
}

/// Rows of a count table, most frequent first.
fn by_count(map: &BTreeMap<String, u64>) -> Vec<(&String, &u64)> {
    let mut rows: Vec<(&String, &u64)> = map.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    rows
}

/// Standard input: one payload, in the order it comes.
fn replay_stdin(
    args: &ReplayArgs,
    config: &Config,
    analyzer: &Analyzer,
    decoder: &Decoder,
    filter: &Filter,
) -> anyhow::Result<ExitCode> {
    let mut stream = Stream::new();
    let mut scratch = Scratch::default();
    let (name, bytes) = read_input(std::path::Path::new("-"))?;
    let mut out = output(args)?;
    let mut stats = DecodeStats::default();
    let mut summary = Summary::new(args);
    let delivery = start_outbox(args, config, analyzer, &mut summary)?;
    let mut findings = Vec::new();
    let mut write_error = None;
    decoder.decode(&bytes, &mut |decoded: Decoded<'_>| {
        stats.record(&decoded);
        let Ok(event) = decoded.result else { return };
        if !filter.keeps_event(&event) {
            return;
        }
        let source = SourceRef::File {
            path: &name,
            line: decoded.location.line,
            index: decoded.location.index,
        };
        analyzer.process(&event, source, &mut stream, &mut scratch, &mut findings);
        if let Err(e) = summary.report(&findings, &mut out, args.quiet)
            && write_error.is_none()
        {
            write_error = Some(e);
        }
        findings.clear();
    });
    summary.close(
        write_error.take(),
        analyzer,
        &mut stream,
        &mut out,
        args.quiet,
    )?;
    eprintln!(
        "replayed {} events from 1 input(s) ({} rejected): {} findings",
        stats.events,
        stats.total_errors(),
        summary.total()
    );
    summary.print(analyzer);
    if let (Some(path), Some(findings)) = (&args.timeline, &mut summary.timeline) {
        write_timeline(path, findings)?;
    }
    finish_delivery(&summary, delivery)?;
    Ok(ExitCode::SUCCESS)
}
