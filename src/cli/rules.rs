//! `seamwatch rules test [PATH]` runs the embedded rule tests and prints a
//! pass/fail table; `seamwatch rules check PATH` prints each rule loaded or
//! rejected with the reason (seamwatch and Sigma rules alike).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use std::sync::Arc;

use crate::analyze::Analyzer;
use crate::correlate::CorrelationConfig;
use crate::correlate::testing::run_correlation_tests;
use crate::detect::loader::{LoadReport, load_builtin_report, load_path};
use crate::detect::rule::Expect;
use crate::detect::testing::run_rule_tests;
use crate::matrix::Matrix;

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Run the rules' embedded tests (the built-in pack when no path is given).
    Test(TestArgs),
    /// Load rules and print each one loaded or rejected, with the reason.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// A rule file or folder; default: the built-in pack.
    pub path: Option<PathBuf>,
    /// Print only failures and the summary.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A rule file or folder (seamwatch YAML rules or Sigma rules).
    pub path: PathBuf,
    /// Print only rejected rules and the summary.
    #[arg(long, short)]
    pub quiet: bool,
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<LoadReport> {
    match path {
        Some(path) => {
            load_path(path).with_context(|| format!("loading rules from {}", path.display()))
        }
        None => load_builtin_report().context("loading the built-in rule pack"),
    }
}

pub fn run(command: RulesCommand) -> anyhow::Result<ExitCode> {
    match command {
        RulesCommand::Test(args) => test(args),
        RulesCommand::Check(args) => check(args),
    }
}

fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let mut report = load(args.path.as_ref())?;
    // Tests run against the built-in matrix, so their verdicts do not depend
    // on local edits of the matrix file.
    let matrix = Arc::new(Matrix::builtin());
    let loaded_rejected = std::mem::take(&mut report.rejected);
    let (analyzer, mut rejected) =
        Analyzer::build(report, matrix.clone(), CorrelationConfig::default());
    rejected.splice(0..0, loaded_rejected);
    for rejected in &rejected {
        println!(
            "REJECTED {} {}: {}",
            rejected.file,
            rejected.rule.as_deref().unwrap_or(""),
            rejected.reason
        );
    }
    let set = analyzer.detector().rules();
    let results = run_rule_tests(set);
    let correlations = analyzer.correlator().correlations();
    let correlation_results = run_correlation_tests(analyzer.detector(), correlations, &matrix);
    let mut untested: Vec<&str> = set
        .rules()
        .iter()
        .filter(|r| {
            r.origin == crate::detect::rule::RuleOrigin::Native
                // Hidden rules of correlation steps are tested with their correlation.
                && !r.meta.id.contains('#')
                && !(r.tests.iter().any(|t| t.expect == Expect::Match)
                    && r.tests.iter().any(|t| t.expect == Expect::NoMatch))
        })
        .map(|r| r.meta.id.as_str())
        .collect();
    untested.extend(
        correlations
            .iter()
            .filter(|c| {
                !(c.tests.iter().any(|t| t.findings > 0) && c.tests.iter().any(|t| t.findings == 0))
            })
            .map(|c| c.meta.id.as_str()),
    );
    let width = results
        .iter()
        .map(|r| r.rule_id.len())
        .chain(correlation_results.iter().map(|r| r.correlation.len()))
        .max()
        .unwrap_or(10);
    for result in &results {
        if args.quiet && result.passed {
            continue;
        }
        let verdict = if result.passed { "pass" } else { "FAIL" };
        let expect = match result.expect {
            Expect::Match => "match",
            Expect::NoMatch => "no_match",
        };
        print!(
            "{verdict}  {:<width$}  {expect:<8}  {}",
            result.rule_id, result.test
        );
        match &result.detail {
            Some(detail) => println!("  -- {detail}"),
            None => println!(),
        }
    }
    for result in &correlation_results {
        if args.quiet && result.passed {
            continue;
        }
        let verdict = if result.passed { "pass" } else { "FAIL" };
        print!(
            "{verdict}  {:<width$}  {:<8}  {}",
            result.correlation, "events", result.test
        );
        match &result.detail {
            Some(detail) => println!("  -- {detail}"),
            None => println!(),
        }
    }
    for id in &untested {
        println!("FAIL  {id:<width$}  needs a test that matches (or finds) and one that does not");
    }
    let failed = results.iter().filter(|r| !r.passed).count()
        + correlation_results.iter().filter(|r| !r.passed).count();
    let tests = results.len() + correlation_results.len();
    println!(
        "{} rules and {} correlations, {} tests: {} passed, {} failed; {} without both kinds of test; {} rejected",
        set.rules()
            .iter()
            .filter(|r| !r.meta.id.contains('#'))
            .count(),
        correlations.len(),
        tests,
        tests - failed,
        failed,
        untested.len(),
        rejected.len()
    );
    Ok(
        if failed == 0 && untested.is_empty() && rejected.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let report = load(Some(&args.path))?;
    if !args.quiet {
        for rule in &report.rules {
            println!(
                "loaded    {}  [{} {}]  {}",
                rule.meta.id,
                rule.cloud,
                if rule.operations.is_empty()
                    && rule.services.is_empty()
                    && rule.principal_types.is_empty()
                {
                    "fallback"
                } else {
                    "indexed"
                },
                rule.meta.title
            );
        }
    }
    for rejected in &report.rejected {
        println!(
            "rejected  {}  {}: {}",
            rejected.rule.as_deref().unwrap_or("(file)"),
            rejected.file,
            rejected.reason
        );
    }
    if !args.quiet {
        for correlation in &report.correlations {
            println!(
                "loaded    {}  [correlation {}]  {}",
                correlation.meta.id,
                correlation.kind.as_str(),
                correlation.meta.title
            );
        }
    }
    let total = report.rules.len() + report.correlations.len() + report.rejected.len();
    let percent = if total == 0 {
        0.0
    } else {
        100.0 * (total - report.rejected.len()) as f64 / total as f64
    };
    println!(
        "{} files: {} rules and {} correlations loaded, {} rejected ({percent:.1}% loaded)",
        report.files,
        report.rules.len(),
        report.correlations.len(),
        report.rejected.len()
    );
    Ok(if report.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
