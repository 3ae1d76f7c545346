//! `seamwatch outbox`: look into the alert outbox and act on it while the
//! pipeline is stopped (the outbox file is locked by the process using it).
//!
//! - `list [--sink S] [--dead] [--json]`: notices waiting (or given up on);
//! - `retry [--sink S] [--seq N]`: move dead letters back to the queue;
//! - `purge [--sink S] (--dead | --queued) --yes`: delete notices;
//! - `deliver [--until-empty]`: deliver what is waiting, without Kafka.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::run::{start_dispatcher, stop_delivery};
use crate::alert::Notice;
use crate::alert::store::Outbox;
use crate::config::Config;

#[derive(Debug, Args)]
pub struct OutboxArgs {
    /// The outbox file [default: `[alerts] outbox`].
    #[arg(long, value_name = "FILE", global = true)]
    pub outbox: Option<PathBuf>,
    #[command(subcommand)]
    pub command: OutboxCommand,
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List notices waiting for delivery (or, with --dead, given up on).
    List {
        #[arg(long)]
        sink: Option<String>,
        #[arg(long)]
        dead: bool,
        /// One JSON object per notice.
        #[arg(long)]
        json: bool,
    },
    /// Move dead letters back to the delivery queue, attempts reset.
    Retry {
        #[arg(long)]
        sink: Option<String>,
        /// Only this sequence number.
        #[arg(long)]
        seq: Option<u64>,
    },
    /// Delete notices for good.
    Purge {
        #[arg(long)]
        sink: Option<String>,
        /// Delete dead letters.
        #[arg(long, conflicts_with = "queued", required_unless_present = "queued")]
        dead: bool,
        /// Delete notices still waiting for delivery.
        #[arg(long)]
        queued: bool,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
    /// Deliver what is waiting to the configured sinks, without consuming
    /// Kafka, until SIGINT/SIGTERM (or until nothing is left).
    Deliver {
        /// Exit once every destination's queue is empty.
        #[arg(long)]
        until_empty: bool,
    },
}

pub fn run(args: OutboxArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let path = args
        .outbox
        .clone()
        .unwrap_or_else(|| config.alerts.outbox.clone());
    if !path.exists() {
        anyhow::bail!("no outbox at {}", path.display());
    }
    let store = Arc::new(
        Outbox::open(&path, &config.alerts, Default::default())
            .map_err(|e| anyhow::anyhow!("{e} (is seamwatch running on this outbox?)"))?,
    );
    match args.command {
        OutboxCommand::List { sink, dead, json } => list(&store, sink.as_deref(), dead, json),
        OutboxCommand::Retry { sink, seq } => {
            let n = store.retry_dead(sink.as_deref(), seq)?;
            eprintln!("{n} dead letters queued again");
            Ok(ExitCode::SUCCESS)
        }
        OutboxCommand::Purge {
            sink,
            dead,
            queued: _,
            yes,
        } => {
            if !yes {
                anyhow::bail!("purge deletes notices for good; add --yes to confirm");
            }
            let n = store.purge(sink.as_deref(), dead)?;
            eprintln!(
                "{n} {} deleted",
                if dead {
                    "dead letters"
                } else {
                    "queued notices"
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        OutboxCommand::Deliver { until_empty } => deliver(&store, config, until_empty),
    }
}

fn list(store: &Outbox, sink: Option<&str>, dead: bool, json: bool) -> anyhow::Result<ExitCode> {
    let entries = store.list(sink, dead)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (name, seq, d) in &entries {
        if json {
            let line = serde_json::json!({
                "sink": name, "seq": seq, "attempts": d.attempts,
                "last_error": d.last_error, "notice": d.notice,
            });
            writeln!(out, "{line}")?;
            continue;
        }
        let (what, rule, id) = match &d.notice {
            Notice::Alert(a) => (a.action.as_str(), a.finding.rule_id.as_str(), &a.alert_id),
            Notice::Digest(g) => ("digest", "-", &g.id),
        };
        writeln!(
            out,
            "{name:<16} {seq:>8} {what:<7} {:<8} {rule:<48} {id} attempts={}{}",
            d.notice.severity(),
            d.attempts,
            d.last_error
                .as_deref()
                .map(|e| format!(" last_error={e:?}"))
                .unwrap_or_default()
        )?;
    }
    out.flush()?;
    eprintln!(
        "{} {}",
        entries.len(),
        if dead {
            "dead letters"
        } else {
            "notices waiting"
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn deliver(store: &Arc<Outbox>, config: &Config, until_empty: bool) -> anyhow::Result<ExitCode> {
    let dispatcher = start_delivery(store, config)?;
    drain(store, dispatcher, until_empty)?;
    Ok(ExitCode::SUCCESS)
}

/// Starts delivering the outbox to the configured sinks (Kafka sinks use
/// `[kafka]`'s brokers and security).
pub(crate) fn start_delivery(
    store: &Arc<Outbox>,
    config: &Config,
) -> anyhow::Result<crate::alert::deliver::Dispatcher> {
    let kafka = if config.alerts.sinks.iter().any(|s| s.topic.is_some()) {
        Some(config.kafka.client_config(|k| std::env::var(k).ok())?)
    } else {
        None
    };
    start_dispatcher(store, &config.alerts, kafka.as_ref())
}

/// Delivers until SIGINT/SIGTERM or, with `until_empty`, until nothing
/// waits (digests held by budgets included); then stops and reports.
pub(crate) fn drain(
    store: &Arc<Outbox>,
    dispatcher: crate::alert::deliver::Dispatcher,
    until_empty: bool,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let signal = super::run::wait_for_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => break,
                _ = tick.tick() => {}
            }
            if until_empty {
                match store.depth() {
                    Ok(depth) if depth.values().all(|(queued, _)| *queued == 0) => {
                        // Nothing waits; digests of budget windows still open
                        // would otherwise wait for the next run.
                        match store.flush_budgets() {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) => tracing::error!(error = %e, "cannot queue digests"),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "cannot read the outbox"),
                }
            }
        }
    });
    stop_delivery(dispatcher, Duration::from_secs(10), store)
}
