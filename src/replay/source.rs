//! Where replayed files come from besides the local file system: an S3
//! bucket (`s3://bucket/prefix`, listed folder by folder and pruned by the
//! dates, accounts and regions in the keys before anything is fetched), and
//! CloudTrail's event history (`cloudtrail://region[,region…]`, pulled with
//! LookupEvents at no more than two requests per second per region, which
//! is the API's limit, and backing off when throttled anyway).
//!
//! A [`Store`] reads any planned file by its path: `s3://…` paths with
//! GetObject, `cloudtrail://…` paths from the events already pulled (one
//! JSON Lines "file" per region, oldest first), anything else from disk.
//! The AWS clients take credentials and region from the usual chain
//! (environment, profile, instance role); a custom endpoint (`--endpoint-url`
//! or `AWS_ENDPOINT_URL`) switches S3 to path-style addressing, as
//! S3-compatible stores expect.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use chrono::{DateTime, Utc};
use tokio::runtime::Runtime;

use super::layout::{ArchiveFile, Layout, classify, classify_prefix};
use super::{Filter, Plan};
use crate::event::Cloud;

/// Why a remote source could not be listed or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "{0:?} is not a source: expected s3://bucket[/prefix] or cloudtrail://region[,region…][?Key=Value]"
    )]
    BadUrl(String),
    #[error("starting the AWS client runtime: {0}")]
    Runtime(std::io::Error),
    #[error("listing s3://{bucket}/{prefix}: {message}")]
    List {
        bucket: String,
        prefix: String,
        message: String,
    },
    #[error("CloudTrail LookupEvents in {region}: {message}")]
    Lookup { region: String, message: String },
    #[error(
        "unknown lookup attribute {0:?}: expected EventId, EventName, ReadOnly, Username, ResourceType, ResourceName, EventSource or AccessKeyId"
    )]
    Attribute(String),
}

/// How to reach AWS.
#[derive(Clone, Debug, Default)]
pub struct AwsOptions {
    /// A custom endpoint for S3 and CloudTrail (an S3-compatible store, a
    /// test server); `AWS_ENDPOINT_URL` works too.
    pub endpoint_url: Option<String>,
}

/// Reads planned files from disk, S3 or pulled event history.
#[derive(Default)]
pub struct Store {
    remote: Option<Remote>,
    /// `cloudtrail://region` → its events as JSON Lines, oldest first.
    memory: HashMap<PathBuf, Vec<u8>>,
}

struct Remote {
    runtime: Arc<Runtime>,
    config: aws_config::SdkConfig,
    options: AwsOptions,
    s3: Option<aws_sdk_s3::Client>,
}

/// Whether an input names a remote source rather than a path.
pub fn is_remote(input: &Path) -> bool {
    input
        .to_str()
        .is_some_and(|s| s.starts_with("s3://") || s.starts_with("cloudtrail://"))
}

fn error_text(e: &(impl std::error::Error + 'static)) -> String {
    aws_sdk_s3::error::DisplayErrorContext(e).to_string()
}

impl Store {
    fn remote(&mut self, options: &AwsOptions) -> Result<&mut Remote, SourceError> {
        if self.remote.is_none() {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("seamwatch-aws")
                .enable_all()
                .build()
                .map_err(SourceError::Runtime)?;
            let config = runtime.block_on(
                aws_config::defaults(BehaviorVersion::latest())
                    .region(RegionProviderChain::default_provider().or_else("us-east-1"))
                    .load(),
            );
            self.remote = Some(Remote {
                runtime: Arc::new(runtime),
                config,
                options: options.clone(),
                s3: None,
            });
        }
        Ok(self.remote.as_mut().expect("just set"))
    }

    /// Adds the files of a remote source (`s3://…` or `cloudtrail://…`)
    /// that `filter` may keep to `plan`.
    pub fn add(
        &mut self,
        url: &str,
        filter: &Filter,
        options: &AwsOptions,
        plan: &mut Plan,
    ) -> Result<(), SourceError> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(SourceError::BadUrl(url.to_owned()));
            }
            let remote = self.remote(options)?;
            let client = remote.s3_client().clone();
            let listed = remote
                .runtime
                .block_on(list_s3(&client, bucket, prefix, filter))?;
            for (path, size) in listed.files {
                match classify(&path) {
                    None => plan.digests_skipped += 1,
                    Some(f) if filter.keeps_file(&f) => {
                        plan.bytes += size;
                        plan.files.push(f);
                    }
                    Some(_) => plan.pruned += 1,
                }
            }
            plan.digests_skipped += listed.digest_folders;
            plan.pruned += listed.pruned_folders;
            return Ok(());
        }
        if let Some(rest) = url.strip_prefix("cloudtrail://") {
            let (regions, query) = rest.split_once('?').unwrap_or((rest, ""));
            let attribute = match query.split_once('=') {
                Some((key, value)) => Some(lookup_attribute(key, value)?),
                None if query.is_empty() => None,
                None => return Err(SourceError::BadUrl(url.to_owned())),
            };
            let mut regions: Vec<&str> = regions
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .collect();
            regions.sort_unstable();
            regions.dedup();
            if regions.is_empty() {
                return Err(SourceError::BadUrl(url.to_owned()));
            }
            let remote = self.remote(options)?;
            let runtime = remote.runtime.clone();
            let pulls: Vec<_> = regions
                .iter()
                .map(|region| {
                    let client = remote.cloudtrail_client(region);
                    let lookup = Lookup {
                        region: (*region).to_owned(),
                        since: filter.since,
                        until: filter.until,
                        attribute: attribute.clone(),
                    };
                    remote.runtime.spawn(lookup.pull(client))
                })
                .collect();
            for (region, pull) in regions.iter().zip(pulls) {
                let lines = runtime.block_on(pull).map_err(|e| SourceError::Lookup {
                    region: (*region).to_owned(),
                    message: e.to_string(),
                })??;
                // One "file" per region and query; the same pull named twice
                // is read once.
                let name = if query.is_empty() {
                    format!("cloudtrail://{region}")
                } else {
                    format!("cloudtrail://{region}?{query}")
                };
                let path = PathBuf::from(name);
                if self.memory.contains_key(&path) {
                    continue;
                }
                plan.bytes += lines.len() as u64;
                plan.files.push(ArchiveFile {
                    path: path.clone(),
                    layout: Layout::EventHistory,
                    cloud: Some(Cloud::Aws),
                    account: None,
                    region: Some((*region).to_owned()),
                    period: None,
                });
                self.memory.insert(path, lines);
            }
            return Ok(());
        }
        Err(SourceError::BadUrl(url.to_owned()))
    }

    /// The bytes of a planned file.
    pub fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        if let Some(bytes) = self.memory.get(path) {
            return Ok(bytes.clone());
        }
        let Some(rest) = path.to_str().and_then(|s| s.strip_prefix("s3://")) else {
            return std::fs::read(path);
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(remote) = &self.remote else {
            return Err(std::io::Error::other("no S3 client"));
        };
        let Some(client) = &remote.s3 else {
            return Err(std::io::Error::other("no S3 client"));
        };
        remote.runtime.block_on(async {
            let object = client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| std::io::Error::other(error_text(&e)))?;
            let body = object
                .body
                .collect()
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok(body.into_bytes().to_vec())
        })
    }
}

impl Remote {
    fn endpoint(&self) -> Option<String> {
        self.options.endpoint_url.clone().or_else(|| {
            std::env::var("AWS_ENDPOINT_URL_S3")
                .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                .ok()
        })
    }

    fn s3_client(&mut self) -> &aws_sdk_s3::Client {
        if self.s3.is_none() {
            let mut builder = aws_sdk_s3::config::Builder::from(&self.config);
            if let Some(url) = self.endpoint() {
                builder = builder.endpoint_url(url).force_path_style(true);
            }
            self.s3 = Some(aws_sdk_s3::Client::from_conf(builder.build()));
        }
        self.s3.as_ref().expect("just set")
    }

    fn cloudtrail_client(&self, region: &str) -> aws_sdk_cloudtrail::Client {
        // The SDK's own retries come within milliseconds and would break
        // the pacing: `Lookup::pull` paces and retries itself.
        let mut builder = aws_sdk_cloudtrail::config::Builder::from(&self.config)
            .region(aws_sdk_cloudtrail::config::Region::new(region.to_owned()))
            .retry_config(aws_sdk_cloudtrail::config::retry::RetryConfig::disabled());
        if let Some(url) = self.options.endpoint_url.clone().or_else(|| {
            std::env::var("AWS_ENDPOINT_URL_CLOUDTRAIL")
                .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
                .ok()
        }) {
            builder = builder.endpoint_url(url);
        }
        aws_sdk_cloudtrail::Client::from_conf(builder.build())
    }
}

/// What an S3 listing found.
#[derive(Default)]
struct Listed {
    /// `s3://bucket/key` and size.
    files: Vec<(PathBuf, u64)>,
    digest_folders: usize,
    pruned_folders: usize,
}

/// Folders listed at once.
const LIST_CONCURRENCY: usize = 16;

/// Lists `prefix` folder by folder (delimiter `/`), descending only into
/// folders that `filter` may keep.
async fn list_s3(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    filter: &Filter,
) -> Result<Listed, SourceError> {
    let mut listed = Listed::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut waiting = vec![prefix.to_owned()];
    while !waiting.is_empty() || !tasks.is_empty() {
        while tasks.len() < LIST_CONCURRENCY
            && let Some(prefix) = waiting.pop()
        {
            let (client, bucket) = (client.clone(), bucket.to_owned());
            tasks.spawn(async move { list_folder(&client, &bucket, prefix).await });
        }
        let Some(done) = tasks.join_next().await else {
            break;
        };
        let (folders, files) = done.map_err(|e| SourceError::List {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            message: e.to_string(),
        })??;
        for folder in folders {
            match classify_prefix(Path::new(&format!("s3://{bucket}/{folder}"))) {
                None => listed.digest_folders += 1,
                Some(f) if filter.keeps_file(&f) => waiting.push(folder),
                Some(_) => listed.pruned_folders += 1,
            }
        }
        listed.files.extend(
            files
                .into_iter()
                .filter(|(key, _)| is_log_key(key))
                .map(|(key, size)| (PathBuf::from(format!("s3://{bucket}/{key}")), size)),
        );
    }
    listed.files.sort();
    Ok(listed)
}

fn is_log_key(key: &str) -> bool {
    [".json", ".jsonl", ".gz", ".log"]
        .iter()
        .any(|ext| key.ends_with(ext))
}

/// One folder's subfolders and files (key, size), all pages.
async fn list_folder(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: String,
) -> Result<(Vec<String>, Vec<(String, u64)>), SourceError> {
    let (mut folders, mut files) = (Vec::new(), Vec::new());
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(&prefix)
            .delimiter("/")
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| SourceError::List {
                bucket: bucket.to_owned(),
                prefix: prefix.clone(),
                message: error_text(&e),
            })?;
        folders.extend(
            page.common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(str::to_owned)),
        );
        files.extend(page.contents().iter().filter_map(|o| {
            o.key()
                .map(|k| (k.to_owned(), o.size().unwrap_or(0).max(0) as u64))
        }));
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return Ok((folders, files));
        }
    }
}

fn lookup_attribute(
    key: &str,
    value: &str,
) -> Result<aws_sdk_cloudtrail::types::LookupAttribute, SourceError> {
    use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};
    let known = [
        "EventId",
        "EventName",
        "ReadOnly",
        "Username",
        "ResourceType",
        "ResourceName",
        "EventSource",
        "AccessKeyId",
    ];
    let Some(key) = known.iter().find(|k| k.eq_ignore_ascii_case(key)) else {
        return Err(SourceError::Attribute(key.to_owned()));
    };
    LookupAttribute::builder()
        .attribute_key(LookupAttributeKey::from(*key))
        .attribute_value(value)
        .build()
        .map_err(|e| SourceError::Attribute(e.to_string()))
}

/// At most this many LookupEvents requests per second per region.
const LOOKUP_RATE: f64 = 2.0;
/// Throttled requests are tried again this many times, backing off.
const LOOKUP_RETRIES: u32 = 8;

/// One region's event history pull.
struct Lookup {
    region: String,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    attribute: Option<aws_sdk_cloudtrail::types::LookupAttribute>,
}

impl Lookup {
    /// Every page, paced and retried; the events' CloudTrail records as
    /// JSON Lines, oldest first (the API returns newest first).
    async fn pull(self, client: aws_sdk_cloudtrail::Client) -> Result<Vec<u8>, SourceError> {
        let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / LOOKUP_RATE));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let time = |t: DateTime<Utc>| {
            aws_sdk_cloudtrail::primitives::DateTime::from_millis(t.timestamp_millis())
        };
        let mut records: Vec<String> = Vec::new();
        let (mut token, mut pages) = (None::<String>, 0u64);
        loop {
            let mut backoff = Duration::from_secs(1);
            let mut attempt = 0;
            let page = loop {
                pace.tick().await;
                let sent = client
                    .lookup_events()
                    .set_start_time(self.since.map(time))
                    .set_end_time(self.until.map(time))
                    .set_lookup_attributes(self.attribute.clone().map(|a| vec![a]))
                    .max_results(50)
                    .set_next_token(token.clone())
                    .send()
                    .await;
                match sent {
                    Ok(page) => break page,
                    Err(e) if is_transient(&e) && attempt < LOOKUP_RETRIES => {
                        attempt += 1;
                        tracing::warn!(region = %self.region, attempt, wait_ms = backoff.as_millis() as u64, error = %error_text(&e), "LookupEvents failed for now; backing off");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                    Err(e) => {
                        return Err(SourceError::Lookup {
                            region: self.region.clone(),
                            message: error_text(&e),
                        });
                    }
                }
            };
            pages += 1;
            records.extend(
                page.events()
                    .iter()
                    .filter_map(|e| e.cloud_trail_event().map(str::to_owned)),
            );
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        tracing::info!(region = %self.region, pages, events = records.len(), "CloudTrail event history pulled");
        let mut lines = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum());
        for record in records.iter().rev() {
            lines.extend_from_slice(record.as_bytes());
            lines.push(b'\n');
        }
        Ok(lines)
    }
}

/// Throttling, a server error, a timeout or a failed connection: worth
/// asking again after a while.
fn is_transient(
    e: &aws_sdk_cloudtrail::error::SdkError<
        aws_sdk_cloudtrail::operation::lookup_events::LookupEventsError,
        aws_sdk_cloudtrail::config::http::HttpResponse,
    >,
) -> bool {
    use aws_sdk_cloudtrail::error::{ProvideErrorMetadata, SdkError};
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => {
            s.raw().status().is_server_error()
                || matches!(
                    s.err().code(),
                    Some("ThrottlingException" | "Throttling" | "TooManyRequestsException")
                )
        }
        _ => false,
    }
}
