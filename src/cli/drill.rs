//! `seamwatch drill SCENARIO`: a tabletop exercise against the configured
//! rules and responsibility matrix (see [`crate::drill`]). Prints each step,
//! the findings it raised, who is paged, which side owns the control, and
//! the expected detections that did not fire. Exits 1 when there are gaps,
//! so a drill can guard a rule or matrix change in CI.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use super::replay::{DetectionArgs, parse_cloud};
use crate::analyze::Analyzer;
use crate::config::Config;
use crate::detect::Finding;
use crate::drill::{self, DrillReport};
use crate::event::Cloud;
use crate::loadgen::scenario::{self, ScenarioKind, Setting};
use crate::matrix::Side;

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// compromised-key, public-bucket, network-breach, or all.
    #[arg(value_name = "SCENARIO", default_value = "all")]
    pub scenario: String,
    /// The cloud to run it in: aws, azure, gcp, or all.
    #[arg(long, default_value = "all")]
    pub cloud: String,
    /// The account (subscription, project) it happens in [default: the
    /// production payments estate of the bundled matrix, per cloud].
    #[arg(long)]
    pub account: Option<String>,
    /// One JSON document per drill instead of the step-by-step text.
    #[arg(long)]
    pub json: bool,
    /// List the scenarios and what each step expects, then exit.
    #[arg(long)]
    pub list: bool,
    #[command(flatten)]
    pub detection: DetectionArgs,
}

const START_MS: i64 = 1_740_823_200_000; // 2025-03-01T10:00:00Z

fn selection(args: &DrillArgs) -> anyhow::Result<Vec<(ScenarioKind, Cloud)>> {
    let kinds = if args.scenario == "all" {
        ScenarioKind::ALL.to_vec()
    } else {
        vec![ScenarioKind::parse(&args.scenario).with_context(|| {
            format!(
                "unknown scenario {:?}: expected compromised-key, public-bucket, network-breach or all",
                args.scenario
            )
        })?]
    };
    let clouds = if args.cloud == "all" {
        vec![Cloud::Aws, Cloud::Azure, Cloud::Gcp]
    } else {
        vec![parse_cloud(&args.cloud).map_err(|e| anyhow::anyhow!("--cloud {e}"))?]
    };
    Ok(kinds
        .into_iter()
        .flat_map(|k| clouds.iter().map(move |c| (k, *c)))
        .collect())
}

pub fn run(args: DrillArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let chosen = selection(&args)?;
    let scenarios: Vec<_> = chosen
        .iter()
        .map(|&(kind, cloud)| {
            let mut setting = Setting::default_for(cloud, START_MS);
            if let Some(account) = &args.account {
                setting.account = account.clone();
            }
            scenario::build(kind, cloud, &setting)
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if args.list {
        for s in &scenarios {
            writeln!(out, "{} ({})", s.kind.name(), s.cloud.as_str())?;
            for step in &s.steps {
                writeln!(
                    out,
                    "  {}  {}  [{}]",
                    offset(step.time_ms - s.steps[0].time_ms),
                    step.action,
                    step.expect.join(", ")
                )?;
            }
            for (id, _) in &s.expect_after {
                writeln!(out, "  later   {id}")?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut gaps = 0;
    for scenario in &scenarios {
        // A fresh analyzer per drill: no state carries from one to the next.
        let analyzer = args.detection.analyzer(None, config)?;
        let report = drill::run(&analyzer, scenario);
        gaps += report.gaps().len();
        if args.json {
            serde_json::to_writer(&mut out, &to_json(&report))?;
            writeln!(out)?;
        } else {
            print_report(&mut out, &analyzer, &report)?;
        }
    }
    if !args.json && scenarios.len() > 1 {
        writeln!(
            out,
            "{} drills, {gaps} gap{}",
            scenarios.len(),
            if gaps == 1 { "" } else { "s" }
        )?;
    }
    Ok(if gaps == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn offset(ms: i64) -> String {
    let s = ms / 1000;
    format!("T+{:02}:{:02}", s / 60, s % 60)
}

fn side_text(side: Option<Side>) -> &'static str {
    match side {
        Some(Side::Customer) => "customer's to detect, contain and remediate",
        Some(Side::Provider) => "provider's control; the customer detects and escalates",
        Some(Side::Shared) => {
            "shared: the customer detects and remediates its configuration, the provider its platform"
        }
        None => "not in the matrix: nobody owns it",
    }
}

fn title_of(analyzer: &Analyzer, id: &str) -> Option<String> {
    analyzer
        .detector()
        .rules()
        .rules()
        .iter()
        .map(|r| &r.meta)
        .chain(analyzer.correlator().correlations().iter().map(|c| &c.meta))
        .find(|m| m.id == id)
        .map(|m| m.title.clone())
}

fn finding_line(
    out: &mut impl Write,
    finding: &Finding,
    expected: bool,
    detail: &str,
) -> std::io::Result<()> {
    writeln!(
        out,
        "          {} {:<8} {}  {}",
        if expected { "✓" } else { "+" },
        finding.severity.as_str(),
        finding.rule_id,
        finding.title
    )?;
    writeln!(
        out,
        "              paged: {} · {} is the {}{detail}",
        finding
            .owner_team
            .as_deref()
            .unwrap_or("nobody (no owner in the matrix)"),
        finding.domain.map_or("its control", |d| d.as_str()),
        side_text(finding.responsibility),
    )
}

fn gap_line(out: &mut impl Write, analyzer: &Analyzer, id: &str) -> std::io::Result<()> {
    let why = match title_of(analyzer, id) {
        Some(title) => format!("{title} (loaded, did not fire)"),
        None => "not in the loaded rules".to_owned(),
    };
    writeln!(out, "          ✗ GAP      {id}  {why}")
}

fn print_report(
    out: &mut impl Write,
    analyzer: &Analyzer,
    report: &DrillReport<'_>,
) -> std::io::Result<()> {
    let s = report.scenario;
    let start = s.steps.first().map_or(0, |st| st.time_ms);
    let account = s.steps.first().map_or("", |st| st.account.as_str());
    writeln!(
        out,
        "Drill {} ({}): {}, account {account}",
        s.kind.name(),
        s.cloud.as_str(),
        s.kind.title()
    )?;
    for line in &report.undecodable {
        writeln!(out, "  ! record not decoded: {line}")?;
    }
    for result in &report.steps {
        writeln!(
            out,
            "  {}  {}",
            offset(result.step.time_ms - start),
            result.step.action
        )?;
        let micros = result.processing.as_secs_f64() * 1e6;
        for finding in &result.findings {
            let expected = result.step.expect.contains(&finding.rule_id.as_str());
            finding_line(out, finding, expected, &format!(" · {micros:.0} µs"))?;
        }
        for id in &result.missing {
            gap_line(out, analyzer, id)?;
        }
    }
    if !report.after.is_empty() || !report.missing_after.is_empty() {
        let due = s.end_ms() - start;
        writeln!(out, "  {}  (time passes)", offset(due))?;
        for finding in &report.after {
            let expected = s.expect_after.iter().any(|(id, _)| *id == finding.rule_id);
            finding_line(out, finding, expected, "")?;
        }
        for id in &report.missing_after {
            gap_line(out, analyzer, id)?;
        }
    }
    let expected = s.expected().count();
    let gaps = report.gaps();
    let mut teams: Vec<&str> = report
        .findings()
        .filter_map(|f| f.owner_team.as_deref())
        .collect();
    teams.sort_unstable();
    teams.dedup();
    writeln!(
        out,
        "  {} of {expected} expected detections fired; first detection {}; paged: {}",
        expected - gaps.len(),
        report
            .time_to_first_detection()
            .map_or("never".to_owned(), offset),
        if teams.is_empty() {
            "nobody".to_owned()
        } else {
            teams.join(", ")
        }
    )?;
    if gaps.is_empty() {
        writeln!(out, "  gaps: none")?;
    } else {
        writeln!(out, "  gaps: {}", gaps.join(", "))?;
    }
    writeln!(out)
}

fn to_json(report: &DrillReport<'_>) -> serde_json::Value {
    let s = report.scenario;
    let start = s.steps.first().map_or(0, |st| st.time_ms);
    let finding = |f: &Finding| {
        json!({
            "rule_id": f.rule_id,
            "title": f.title,
            "severity": f.severity.as_str(),
            "owner_team": f.owner_team,
            "domain": f.domain.map(|d| d.as_str()),
            "responsibility": f.responsibility,
            "id": f.id,
        })
    };
    json!({
        "scenario": s.kind.name(),
        "cloud": s.cloud.as_str(),
        "account": s.steps.first().map(|st| st.account.clone()),
        "steps": report.steps.iter().map(|r| json!({
            "offset_s": (r.step.time_ms - start) / 1000,
            "action": r.step.action,
            "expected": r.step.expect,
            "findings": r.findings.iter().map(finding).collect::<Vec<_>>(),
            "missing": r.missing,
            "processing_us": r.processing.as_secs_f64() * 1e6,
        })).collect::<Vec<_>>(),
        "after": report.after.iter().map(finding).collect::<Vec<_>>(),
        "missing_after": report.missing_after,
        "gaps": report.gaps(),
        "time_to_first_detection_s": report.time_to_first_detection().map(|ms| ms / 1000),
    })
}
