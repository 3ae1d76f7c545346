//! Writes generated records into the clouds' native archive layouts, the
//! way the providers deliver them to storage:
//!
//! - CloudTrail: `AWSLogs/<account>/CloudTrail/<region>/<yyyy>/<mm>/<dd>/
//!   <account>_CloudTrail_<region>_<yyyymmddThhmmZ>_<id>.json.gz`, one gzipped
//!   `{"Records":[…]}` file per account, region and 5-minute delivery;
//! - Azure Activity Log export: `insights-activity-logs/resourceId=/SUBSCRIPTIONS/
//!   <id>/y=<yyyy>/m=<mm>/d=<dd>/h=<hh>/m=00/PT1H.json`, JSON Lines per hour;
//! - GCP Cloud Storage sink: `cloudaudit.googleapis.com/activity/<yyyy>/<mm>/<dd>/
//!   <hh>:00:00_<hh>:59:59_S0.json`, JSON Lines per hour.
//!
//! Records arrive in time order, so a file is written and closed as soon as
//! its window has passed: memory stays bounded by one window of traffic.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::DateTime;

use super::GenEvent;
use crate::event::Cloud;

const DELIVERY_MS: i64 = 5 * 60_000;
const HOUR_MS: i64 = 3_600_000;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum FileKey {
    /// (window end, account, region)
    Trail(i64, String, String),
    /// (hour, subscription)
    Azure(i64, String),
    /// hour
    Gcp(i64),
}

impl FileKey {
    fn closes_at(&self) -> i64 {
        match self {
            FileKey::Trail(end, ..) => *end,
            FileKey::Azure(hour, _) | FileKey::Gcp(hour) => hour + HOUR_MS,
        }
    }
}

/// Totals of an archive written.
#[derive(Clone, Copy, Debug, Default)]
pub struct ArchiveStats {
    pub files: u64,
    /// Bytes of JSON written (before compression).
    pub json_bytes: u64,
    /// Bytes on disk.
    pub disk_bytes: u64,
}

pub struct ArchiveWriter {
    root: PathBuf,
    open: BTreeMap<FileKey, Vec<u8>>,
    stats: ArchiveStats,
    written: u64,
}

fn utc(ms: i64) -> DateTime<chrono::Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The region of a CloudTrail record, read without a full parse.
fn region_of(json: &str) -> &str {
    json.split_once(r#""awsRegion":""#)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or("us-east-1", |(region, _)| region)
}

impl ArchiveWriter {
    pub fn new(root: &Path) -> ArchiveWriter {
        ArchiveWriter {
            root: root.to_owned(),
            open: BTreeMap::new(),
            stats: ArchiveStats::default(),
            written: 0,
        }
    }

    pub fn push(&mut self, event: &GenEvent) -> io::Result<()> {
        let key = match event.cloud {
            Cloud::Aws => FileKey::Trail(
                event.time_ms.div_euclid(DELIVERY_MS) * DELIVERY_MS + DELIVERY_MS,
                event.account.clone(),
                region_of(&event.json).to_owned(),
            ),
            Cloud::Azure => FileKey::Azure(
                event.time_ms.div_euclid(HOUR_MS) * HOUR_MS,
                event.account.to_uppercase(),
            ),
            Cloud::Gcp => FileKey::Gcp(event.time_ms.div_euclid(HOUR_MS) * HOUR_MS),
        };
        let buffer = self.open.entry(key.clone()).or_default();
        match key {
            FileKey::Trail(..) => {
                buffer.extend_from_slice(if buffer.is_empty() {
                    b"{\"Records\":["
                } else {
                    b","
                });
                buffer.extend_from_slice(event.json.as_bytes());
            }
            _ => {
                buffer.extend_from_slice(event.json.as_bytes());
                buffer.push(b'\n');
            }
        }
        self.stats.json_bytes += event.json.len() as u64;
        // Close every file whose window ended before this record.
        let now = event.time_ms;
        let done: Vec<FileKey> = self
            .open
            .keys()
            .filter(|k| k.closes_at() <= now)
            .cloned()
            .collect();
        for key in done {
            if let Some(body) = self.open.remove(&key) {
                self.write(&key, body)?;
            }
        }
        Ok(())
    }

    fn write(&mut self, key: &FileKey, mut body: Vec<u8>) -> io::Result<()> {
        self.written += 1;
        let path = match key {
            FileKey::Trail(end, account, region) => {
                body.extend_from_slice(b"]}");
                let at = utc(*end);
                self.root.join(format!(
                    "AWSLogs/{account}/CloudTrail/{region}/{}/{account}_CloudTrail_{region}_{}_{:08x}.json.gz",
                    at.format("%Y/%m/%d"),
                    at.format("%Y%m%dT%H%MZ"),
                    self.written
                ))
            }
            FileKey::Azure(hour, sub) => {
                let at = utc(*hour);
                self.root.join(format!(
                    "insights-activity-logs/resourceId=/SUBSCRIPTIONS/{sub}/y={}/m={}/d={}/h={}/m=00/PT1H.json",
                    at.format("%Y"),
                    at.format("%m"),
                    at.format("%d"),
                    at.format("%H")
                ))
            }
            FileKey::Gcp(hour) => {
                let at = utc(*hour);
                self.root.join(format!(
                    "cloudaudit.googleapis.com/activity/{}/{}:00:00_{}:59:59_S0.json",
                    at.format("%Y/%m/%d"),
                    at.format("%H"),
                    at.format("%H")
                ))
            }
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let bytes = match key {
            FileKey::Trail(..) => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(&body)?;
                let gz = gz.finish()?;
                std::fs::write(&path, &gz)?;
                self.stats.files += 1;
                gz.len()
            }
            _ => {
                // An hour may be written twice if records came out of order.
                let existed = path.exists();
                let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
                file.write_all(&body)?;
                if !existed {
                    self.stats.files += 1;
                }
                body.len()
            }
        };
        self.stats.disk_bytes += bytes as u64;
        Ok(())
    }

    /// Writes the files still open and returns the totals.
    pub fn finish(mut self) -> io::Result<ArchiveStats> {
        let open = std::mem::take(&mut self.open);
        for (key, body) in open {
            self.write(&key, body)?;
        }
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::{GenConfig, Generator};
    use crate::replay::{Layout, classify};

    #[test]
    fn files_land_in_the_native_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = ArchiveWriter::new(dir.path());
        let config = GenConfig {
            events_per_second: 2.0,
            ..GenConfig::default()
        };
        for event in Generator::new(config).take(20_000) {
            writer.push(&event).unwrap();
        }
        let stats = writer.finish().unwrap();
        let mut layouts = std::collections::BTreeMap::new();
        let mut files = 0;
        for entry in walkdir::WalkDir::new(dir.path()) {
            let entry = entry.unwrap();
            if entry.file_type().is_file() {
                files += 1;
                let relative = entry.path().strip_prefix(dir.path()).unwrap();
                let info = classify(relative).expect("an archive file");
                assert_ne!(info.layout, Layout::Plain, "{relative:?}");
                assert!(info.period.is_some(), "{relative:?}");
                *layouts.entry(format!("{:?}", info.layout)).or_insert(0) += 1;
            }
        }
        assert_eq!(files, stats.files);
        assert_eq!(layouts.len(), 3, "{layouts:?}");
    }
}
