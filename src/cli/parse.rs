//! `seamwatch parse [FILES|-]`: decode files, directories (recursively), `.gz`
//! files or stdin, print one normalized event per line as JSON on stdout, write
//! rejected records to an optional dead-letter file, and print a summary of
//! counts and errors per reason on stderr.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::input::{expand_inputs, read_input};
use crate::config::Config;
use crate::event::{AuditEvent, DecodeStats, Decoded, Decoder, FormatHint, Limits};

#[derive(Debug, Args)]
pub struct ParseArgs {
    /// Files or directories to read (recursively); `-` or nothing reads stdin.
    pub inputs: Vec<PathBuf>,

    /// Which log the input holds: auto, cloudtrail, azure or gcp [default: auto,
    /// or `input.format` from the config file].
    #[arg(long)]
    pub format: Option<FormatHint>,

    /// Largest record accepted, in bytes [default: 1048576, or the config's].
    #[arg(long)]
    pub max_record_bytes: Option<usize>,

    /// Deepest JSON nesting accepted [default: 64, or the config's].
    #[arg(long)]
    pub max_depth: Option<usize>,

    /// Write rejected records (reason, location, raw text) here as JSON Lines.
    #[arg(long, value_name = "FILE")]
    pub dead_letter: Option<PathBuf>,

    /// Exit with status 1 when any record was rejected.
    #[arg(long)]
    pub strict: bool,

    /// Print the summary only, not the events.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Serialize)]
struct Located<'e, 'a> {
    source: Source<'e>,
    #[serde(flatten)]
    event: &'e AuditEvent<'a>,
}

#[derive(Serialize)]
struct Source<'e> {
    file: &'e str,
    line: u64,
    index: u32,
}

#[derive(Serialize)]
struct DeadLetter<'e> {
    reason: &'static str,
    detail: &'e str,
    source: Source<'e>,
    raw: std::borrow::Cow<'e, str>,
}

pub fn run(args: ParseArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let limits = Limits {
        max_record_bytes: args
            .max_record_bytes
            .unwrap_or(config.limits.max_record_bytes),
        max_depth: args.max_depth.unwrap_or(config.limits.max_depth),
        ..config.limits
    };
    let decoder = Decoder::new(args.format.unwrap_or(config.input.format), limits);
    let files = expand_inputs(&args.inputs)?;

    let stdout = io::stdout().lock();
    let mut out = BufWriter::with_capacity(1 << 16, stdout);
    let mut dead_letter = match &args.dead_letter {
        Some(path) => Some(BufWriter::new(std::fs::File::create(path).with_context(
            || format!("creating dead-letter file {}", path.display()),
        )?)),
        None => None,
    };
    let mut stats = DecodeStats::default();
    let mut per_cloud: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut write_error: Option<io::Error> = None;

    for file in &files {
        let (name, bytes) = read_input(file)?;
        decoder.decode(&bytes, &mut |decoded: Decoded<'_>| {
            stats.record(&decoded);
            if write_error.is_some() {
                return;
            }
            let source = Source {
                file: &name,
                line: decoded.location.line,
                index: decoded.location.index,
            };
            let result = match &decoded.result {
                Ok(event) => {
                    *per_cloud.entry(event.cloud.as_str()).or_default() += 1;
                    if args.quiet {
                        Ok(())
                    } else {
                        write_json_line(&mut out, &Located { source, event })
                    }
                }
                Err(error) => {
                    tracing::debug!(file = %name, line = source.line, reason = %error.reason, detail = %error.detail, "record rejected");
                    match dead_letter.as_mut() {
                        Some(dlq) => write_json_line(
                            dlq,
                            &DeadLetter {
                                reason: error.reason.as_str(),
                                detail: &error.detail,
                                source,
                                raw: String::from_utf8_lossy(error.raw),
                            },
                        ),
                        None => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                write_error = Some(e);
            }
        });
        if let Some(e) = write_error.take() {
            return Err(e).context("writing output");
        }
    }
    out.flush().context("writing output")?;
    if let Some(dlq) = dead_letter.as_mut() {
        dlq.flush().context("writing dead-letter file")?;
    }

    print_summary(&stats, &per_cloud, files.len());
    if args.strict && stats.total_errors() > 0 {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `value` as one line of JSON. Serialized by sonic-rs (SIMD string
/// escaping: findings are mostly strings) into a per-thread buffer, then
/// written at once: a replay writes tens of thousands of findings a second.
pub(crate) fn write_json_line<W: Write, T: Serialize>(out: &mut W, value: &T) -> io::Result<()> {
    thread_local! {
        static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    LINE.with_borrow_mut(|line| {
        line.clear();
        sonic_rs::to_writer(&mut *line, value).map_err(io::Error::other)?;
        line.push(b'\n');
        out.write_all(line)
    })
}

fn print_summary(stats: &DecodeStats, per_cloud: &BTreeMap<&'static str, u64>, inputs: usize) {
    let clouds: Vec<String> = per_cloud.iter().map(|(c, n)| format!("{c}={n}")).collect();
    eprintln!(
        "parsed {} events ({}) from {} input(s); {} rejected",
        stats.events,
        if clouds.is_empty() {
            "none".to_owned()
        } else {
            clouds.join(" ")
        },
        inputs,
        stats.total_errors()
    );
    for (reason, count) in stats.error_counts() {
        eprintln!("  {:<16} {count}", reason.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::write_json_line;

    /// The sonic-rs writer gives the bytes serde_json would: escapes,
    /// control characters, non-ASCII, nesting, numbers, nulls.
    #[test]
    fn json_lines_are_the_bytes_serde_json_writes() {
        let values = [
            serde_json::json!({"a": "quote \" backslash \\ slash / tab \t nl \n cr \r"}),
            serde_json::json!({"ctl": "\u{0}\u{1}\u{1f}\u{7f}", "uni": "é ü 東京 \u{2028} 🚀"}),
            serde_json::json!([1, -2, 3.5, 1e300, null, true, false, {"x": []}, {}]),
            serde_json::json!("just a string"),
        ];
        for value in &values {
            let mut ours = Vec::new();
            write_json_line(&mut ours, value).unwrap();
            let mut theirs = serde_json::to_vec(value).unwrap();
            theirs.push(b'\n');
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(theirs).unwrap()
            );
        }
        // A finding, as replay writes it.
        let finding: crate::detect::Finding = serde_json::from_value(serde_json::json!({
            "id": "f1", "kind": "rule", "rule_id": "r", "title": "T \"q\"",
            "severity": "high", "rule_severity": "high", "cloud": "aws",
            "service": "s3.amazonaws.com", "operation": "PutBucketPolicy",
            "principal": {"kind": "user", "name": "al\u{e9}\\x"},
            "event_time": "2025-03-01T10:00:00.123Z", "evidence": []
        }))
        .unwrap();
        let mut ours = Vec::new();
        write_json_line(&mut ours, &finding).unwrap();
        assert_eq!(
            ours,
            [serde_json::to_vec(&finding).unwrap(), b"\n".to_vec()].concat()
        );
    }
}
