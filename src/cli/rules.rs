//! `seamwatch rules test [PATH]` runs the embedded rule tests and prints a
//! pass/fail table; `seamwatch rules check PATH` prints each rule loaded or
//! rejected with the reason (seamwatch and Sigma rules alike).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::detect::RuleSet;
use crate::detect::loader::{LoadReport, load_builtin, load_path};
use crate::detect::rule::Expect;
use crate::detect::testing::run_rule_tests;

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
        None => Ok(LoadReport {
            rules: load_builtin().context("loading the built-in rule pack")?,
            ..LoadReport::default()
        }),
    }
}

pub fn run(command: RulesCommand) -> anyhow::Result<ExitCode> {
    match command {
        RulesCommand::Test(args) => test(args),
        RulesCommand::Check(args) => check(args),
    }
}

fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let report = load(args.path.as_ref())?;
    for rejected in &report.rejected {
        println!(
            "REJECTED {} {}: {}",
            rejected.file,
            rejected.rule.as_deref().unwrap_or(""),
            rejected.reason
        );
    }
    let set = RuleSet::new(report.rules);
    let results = run_rule_tests(&set);
    let untested: Vec<&str> = set
        .rules()
        .iter()
        .filter(|r| {
            r.origin == crate::detect::rule::RuleOrigin::Native
                && !(r.tests.iter().any(|t| t.expect == Expect::Match)
                    && r.tests.iter().any(|t| t.expect == Expect::NoMatch))
        })
        .map(|r| r.meta.id.as_str())
        .collect();
    let width = results.iter().map(|r| r.rule_id.len()).max().unwrap_or(10);
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
    for id in &untested {
        println!("FAIL  {id:<width$}  needs at least one `match` and one `no_match` test");
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    println!(
        "{} rules, {} tests: {} passed, {} failed; {} rules without both kinds of test; {} rejected",
        set.len(),
        results.len(),
        results.len() - failed,
        failed,
        untested.len(),
        report.rejected.len()
    );
    Ok(
        if failed == 0 && untested.is_empty() && report.rejected.is_empty() {
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
                if rule.operations.is_empty() && rule.services.is_empty() {
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
    let total = report.rules.len() + report.rejected.len();
    let percent = if total == 0 {
        0.0
    } else {
        100.0 * report.rules.len() as f64 / total as f64
    };
    println!(
        "{} files: {} rules loaded, {} rejected ({percent:.1}% loaded)",
        report.files,
        report.rules.len(),
        report.rejected.len()
    );
    Ok(if report.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
