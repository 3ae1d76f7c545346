//! `seamwatch tail`: findings of a running `seamwatch run`, live, one line
//! each, for the on-call engineer. It reads the admin server's recent
//! findings, then follows its Server-Sent Events stream, reconnecting with
//! `Last-Event-ID` (so nothing published in between is missed while the
//! server keeps it) and saying so on stderr. Filters go to the server.
//! Colours only on a terminal, and never with `NO_COLOR`; a closed pipe
//! (`| head`) ends it quietly.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use owo_colors::OwoColorize;

use crate::admin::{FindingFilter, Published};
use crate::config::Config;
use crate::detect::Severity;

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The admin server of a running `seamwatch run` [default: from `[admin] listen`].
    #[arg(long, env = "SEAMWATCH_URL", value_name = "URL")]
    pub url: Option<String>,
    /// File holding the admin bearer token (or set SEAMWATCH_ADMIN_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Minimum severity (`high`, `>=high`).
    #[arg(long, value_name = "LEVEL")]
    pub severity: Option<String>,
    /// Only these clouds (aws, azure, gcp); repeatable or comma-separated.
    #[arg(long)]
    pub cloud: Vec<String>,
    /// Only these accounts, subscriptions or projects.
    #[arg(long)]
    pub account: Vec<String>,
    /// Only rule ids matching these globs (`aws.identity.*`).
    #[arg(long)]
    pub rule: Vec<String>,
    /// Only findings owned by these teams (per the responsibility matrix).
    #[arg(long)]
    pub team: Vec<String>,
    /// Only these control domains (identity, network, data, logging, guardrails, compute).
    #[arg(long)]
    pub domain: Vec<String>,
    /// One JSON object per line (the feed's `{seq, received, finding}`).
    #[arg(long)]
    pub json: bool,
    /// Recent findings to show before following.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub recent: usize,
    /// Print the recent findings and exit instead of following.
    #[arg(long)]
    pub no_follow: bool,
    /// Read this Kafka topic instead of an admin server: the topic of an
    /// `[[alerts.sinks]]` of type `kafka` with format `json` (alert notices).
    /// Brokers and security come from `[kafka]` (or `--brokers`).
    #[arg(long, value_name = "TOPIC")]
    pub kafka_topic: Option<String>,
    /// Brokers for `--kafka-topic` [default: `[kafka] brokers`, SEAMWATCH_KAFKA_BROKERS].
    #[arg(long, value_name = "HOST:PORT,…", requires = "kafka_topic")]
    pub brokers: Option<String>,
}

impl TailArgs {
    fn filter(&self) -> anyhow::Result<FindingFilter> {
        let mut filter = FindingFilter::default();
        if let Some(s) = &self.severity {
            filter.add("severity", s)?;
        }
        for (key, values) in [
            ("cloud", &self.cloud),
            ("account", &self.account),
            ("rule", &self.rule),
            ("team", &self.team),
            ("domain", &self.domain),
        ] {
            for v in values {
                filter.add(key, v)?;
            }
        }
        Ok(filter)
    }
}

fn token(args: &TailArgs) -> anyhow::Result<Option<String>> {
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        return Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()));
    }
    Ok(std::env::var("SEAMWATCH_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty()))
}

/// How a finding is printed.
struct Printer {
    json: bool,
    colour: bool,
}

impl Printer {
    fn line(&self, p: &Published) -> String {
        if self.json {
            return serde_json::to_string(p).unwrap_or_default();
        }
        let f = &p.finding;
        let time = f
            .event_time
            .unwrap_or(p.received)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        let severity = format!("{:<8}", f.severity.as_str().to_uppercase());
        let severity = if !self.colour {
            severity
        } else {
            match f.severity {
                Severity::Critical => severity.red().bold().to_string(),
                Severity::High => severity.red().to_string(),
                Severity::Medium => severity.yellow().to_string(),
                Severity::Low => severity.cyan().to_string(),
                Severity::Info => severity.dimmed().to_string(),
            }
        };
        let who = f
            .principal
            .name
            .as_deref()
            .or(f.principal.id.as_deref())
            .unwrap_or("-");
        let rule = fit(&f.rule_id, 44);
        let rule = if self.colour {
            rule.bold().to_string()
        } else {
            rule
        };
        format!(
            "{time}  {severity} {rule} {} {} {} {}",
            fit(who, 24),
            fit(f.resources.first().map_or("-", String::as_str), 40),
            fit(f.account.as_deref().unwrap_or("-"), 14),
            clean(f.owner_team.as_deref().unwrap_or("-")),
        )
    }
}

/// `text` in exactly `width` columns: padded, or cut with `…`. Control
/// characters (log fields are attacker-controlled: an escape sequence in a
/// resource name must not reach the terminal) become `?`.
fn fit(text: &str, width: usize) -> String {
    let clean = clean(text);
    let count = clean.chars().count();
    if count <= width {
        format!("{clean:<width$}")
    } else {
        let mut cut: String = clean.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// `text` with control characters as `?`.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// How long the stream may be silent (keep-alives come every 15 s).
const IDLE: Duration = Duration::from_secs(45);

/// Writes a line; a closed pipe is the reader saying it has seen enough.
fn emit(out: &mut impl Write, line: &str) -> std::io::Result<()> {
    writeln!(out, "{line}")?;
    out.flush()
}

pub fn run(args: TailArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let base = args
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.admin.listen))
        .trim_end_matches('/')
        .to_owned();
    let filter = args.filter()?;
    let token = token(&args)?;
    let printer = Printer {
        json: args.json,
        colour: !args.json
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    };
    if let Some(topic) = &args.kafka_topic {
        return follow_kafka(&args, config, topic, &filter, &printer);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(follow(&args, &base, &filter, token, &printer))
}

async fn follow(
    args: &TailArgs,
    base: &str,
    filter: &FindingFilter,
    token: Option<String>,
    printer: &Printer,
) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("building the HTTP client")?;
    let authed = |r: reqwest::RequestBuilder| match &token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    // At least one, to learn where the feed is even with --recent 0.
    let mut query = filter.to_pairs();
    query.push(("limit", args.recent.max(1).to_string()));
    let response = authed(client.get(format!("{base}/findings")).query(&query))
        .send()
        .await
        .with_context(|| {
            format!("connecting to {base} (is `seamwatch run` running with its admin server?)")
        })?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        anyhow::bail!("{base} requires a token: --token-file or SEAMWATCH_ADMIN_TOKEN");
    }
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        anyhow::bail!("{base}/findings answered {status}: {}", text.trim());
    }
    let recent: Vec<Published> = response.json().await.context("reading recent findings")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Where to resume the stream: after the last finding seen, or from the
    // start of the feed when it was empty (so nothing published between
    // this request and the stream's is missed).
    let mut last: String = recent
        .last()
        .map_or_else(|| "0".to_owned(), Published::position);
    let skip = recent.len().saturating_sub(args.recent);
    for p in &recent[skip..] {
        emit(&mut out, &printer.line(p))?;
    }
    if args.no_follow {
        return Ok(ExitCode::SUCCESS);
    }
    let stream_query = filter.to_pairs();
    let mut backoff = Duration::from_millis(500);
    loop {
        let request = authed(
            client
                .get(format!("{base}/findings/stream"))
                .query(&stream_query)
                .header("Last-Event-ID", &last),
        );
        let why = match request.send().await {
            Ok(r) if r.status().is_success() => {
                backoff = Duration::from_millis(500);
                let mut events = r.bytes_stream().eventsource();
                loop {
                    // The server sends a keep-alive every 15 s: silence for
                    // longer is a connection that died without closing.
                    let Ok(next) = tokio::time::timeout(IDLE, events.next()).await else {
                        break format!("nothing from the server for {} s", IDLE.as_secs());
                    };
                    match next {
                        Some(Ok(event)) if event.event == "finding" => {
                            let Ok(p) = serde_json::from_str::<Published>(&event.data) else {
                                tracing::warn!("an event that is not a finding");
                                continue;
                            };
                            last = p.position();
                            emit(&mut out, &printer.line(&p))?;
                        }
                        Some(Ok(event)) if event.event == "lagged" => {
                            eprintln!(
                                "tail: too slow for the feed: {} findings skipped",
                                event.data
                            );
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => break format!("stream error: {e}"),
                        None => break "the server closed the stream".to_owned(),
                    }
                }
            }
            Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => {
                anyhow::bail!("{base} requires a token: --token-file or SEAMWATCH_ADMIN_TOKEN")
            }
            Ok(r) => format!("{} answered {}", base, r.status()),
            Err(e) => format!("cannot connect: {e}"),
        };
        eprintln!(
            "tail: {why}; reconnecting in {:.1} s (resuming after {last})",
            backoff.as_secs_f64()
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// `--kafka-topic`: alert notices from the alerts topic. Creates and
/// updates print their finding; a close prints as `CLOSED`. Starts `--recent`
/// messages before the end of each partition, reads as an unnamed member
/// (no group offsets are committed).
fn follow_kafka(
    args: &TailArgs,
    config: &Config,
    topic: &str,
    filter: &FindingFilter,
    printer: &Printer,
) -> anyhow::Result<ExitCode> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};

    use crate::alert::{Action, Notice};

    let env = |k: &str| std::env::var(k).ok();
    let mut kafka = config.kafka.clone().with_env(env)?;
    if let Some(brokers) = &args.brokers {
        kafka.brokers = brokers.clone();
    }
    let mut client = kafka.client_config(env)?;
    client
        .set("group.id", format!("seamwatch-tail-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer: BaseConsumer = client.create().context("creating the Kafka consumer")?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the metadata of {topic} from {}", kafka.brokers))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        anyhow::bail!("topic {topic} has no partitions on {}", kafka.brokers);
    }
    let mut assignment = TopicPartitionList::new();
    // Where each partition ended when tail started (for --no-follow).
    let mut ends = std::collections::HashMap::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, timeout)
            .with_context(|| format!("reading the offsets of {topic}/{p}"))?;
        let start = (high - args.recent as i64).max(low);
        assignment.add_partition_offset(topic, p, Offset::Offset(start))?;
        if high > start {
            ends.insert(p, high);
        }
    }
    consumer.assign(&assignment)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut seq = 0u64;
    loop {
        if args.no_follow && ends.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        let message = match consumer.poll(Duration::from_millis(500)) {
            None => continue,
            Some(Err(e)) => {
                eprintln!("tail: {e}; going on");
                continue;
            }
            Some(Ok(m)) => m,
        };
        if ends
            .get(&message.partition())
            .is_some_and(|&end| message.offset() + 1 >= end)
        {
            ends.remove(&message.partition());
        }
        let Some(notice) = message
            .payload()
            .and_then(|p| serde_json::from_slice::<Notice>(p).ok())
        else {
            tracing::debug!(
                offset = message.offset(),
                "not an alert notice (is the sink's format json?)"
            );
            continue;
        };
        let Notice::Alert(alert) = notice else {
            continue;
        };
        if !filter.matches(&alert.finding) {
            continue;
        }
        seq += 1;
        let closed = alert.action == Action::Close;
        let published = Published {
            feed: 0,
            seq,
            received: chrono::Utc::now(),
            finding: alert.finding,
        };
        let line = printer.line(&published);
        let line = if closed && !printer.json {
            format!("CLOSED {} ({})", alert.alert_id, line)
        } else {
            line
        };
        emit(&mut out, &line)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_fit_their_columns_and_lose_control_characters() {
        assert_eq!(fit("abc", 5), "abc  ");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("x", 0), "…");
        assert_eq!(fit("evil\u{1b}[31mname", 20), "evil?[31mname       ");
        assert_eq!(clean("a\nb\u{9b}c"), "a?b?c");
    }
}
