//! The command-line interface: flags (clap derive), logging set-up, and the
//! mapping from errors to exit codes. Each subcommand lives in its own module
//! and returns `anyhow::Result`; library modules below it use typed errors.

mod bench;
mod drill;
mod generate;
mod input;
mod matrix;
mod outbox;
mod parse;
mod replay;
mod rules;
mod run;
mod tail;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// seamwatch: a streaming analyzer for cloud audit logs (AWS CloudTrail, Azure
/// Activity Log, GCP Cloud Audit Logs) that watches the customer side of the
/// shared responsibility model.
#[derive(Debug, Parser)]
#[command(name = "seamwatch", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr (levels via RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,

    /// Configuration file (see config/seamwatch.toml); flags override it.
    #[arg(long, global = true, env = "SEAMWATCH_CONFIG", value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable on a terminal, JSON otherwise.
    Auto,
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse audit records and print one normalized event per line as JSON.
    Parse(parse::ParseArgs),
    /// Run archived audit logs through the detector and print findings.
    Replay(Box<replay::ReplayArgs>),
    /// Run the live pipeline on Kafka (settings in `[kafka]` of the config file).
    Run(run::RunArgs),
    /// The whole pipeline on an in-process Kafka cluster with bundled traffic.
    Demo(run::DemoArgs),
    /// Write synthetic audit traffic for the three clouds (archives, JSON Lines or Kafka).
    Gen(Box<generate::GenArgs>),
    /// End-to-end benchmark against a Kafka broker: throughput, latency, and Sigma rules vs rsigma.
    Bench(Box<bench::BenchArgs>),
    /// Run a tabletop attack scenario through the rules and matrix; report the gaps.
    Drill(drill::DrillArgs),
    /// Follow the findings of a running `seamwatch run`, one line each.
    Tail(tail::TailArgs),
    /// Inspect, re-drive or purge the alert outbox; deliver what waits.
    Outbox(outbox::OutboxArgs),
    /// Test and check detection rules.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Validate the responsibility matrix.
    #[command(subcommand)]
    Matrix(matrix::MatrixCommand),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(err) => {
                eprintln!("seamwatch: error: {err}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    let result = match cli.command {
        Command::Parse(args) => parse::run(args, &config),
        Command::Replay(args) => replay::run(*args, &config),
        Command::Run(args) => run::run(args, &config),
        Command::Demo(args) => run::demo(args, &config),
        Command::Outbox(args) => outbox::run(args, &config),
        Command::Tail(args) => tail::run(args, &config),
        Command::Gen(args) => generate::run(*args, &config),
        Command::Drill(args) => drill::run(args, &config),
        Command::Bench(args) => bench::run(*args, &config),
        Command::Rules(command) => rules::run(command),
        Command::Matrix(command) => matrix::run(command),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("seamwatch: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// A closed stdout (`seamwatch parse … | head`) ends the command quietly.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
