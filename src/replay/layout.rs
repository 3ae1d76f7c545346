//! The archive layouts the three clouds write, recognized from a file's
//! path: which cloud, which account, region or subscription, and which
//! period of time the file covers, so that `--since`/`--until` and the
//! account, region and cloud filters prune files before any is opened.
//!
//! - CloudTrail to S3: `AWSLogs/<account>/CloudTrail/<region>/<yyyy>/<mm>/<dd>/
//!   <account>_CloudTrail_<region>_<yyyymmdd>T<hhmm>Z_<id>.json.gz`, and
//!   organization trails with `AWSLogs/<org-id>/<account>/…`. Digest files
//!   (`CloudTrail-Digest`) are skipped; Insights files are events.
//! - Azure Activity Log export to a storage account:
//!   `insights-activity-logs/resourceId=/SUBSCRIPTIONS/<id>/y=<yyyy>/m=<mm>/d=<dd>/h=<hh>/m=00/PT1H.json`.
//! - GCP audit logs sunk to Cloud Storage:
//!   `cloudaudit.googleapis.com/<activity|data_access|system_event|policy>/<yyyy>/<mm>/<dd>/<hh>:00:00_<hh>:59:59_S<n>.json`.
//!
//! Anything else is a plain file: no period, format found by content.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};

use crate::event::{Cloud, FormatHint};

/// Which layout a file was recognized in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    CloudTrailS3,
    AzureActivityExport,
    GcpStorageSink,
    /// CloudTrail's event history, pulled with LookupEvents.
    EventHistory,
    Plain,
}

/// A file to replay, with what its path says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveFile {
    pub path: PathBuf,
    pub layout: Layout,
    pub cloud: Option<Cloud>,
    /// The account, subscription (lower-cased) or, for GCP, nothing (the
    /// sink's bucket path does not name the project).
    pub account: Option<String>,
    pub region: Option<String>,
    /// The period of event time the file covers, as far as the path says
    /// (CloudTrail files may hold events up to ~15 minutes older than their
    /// delivery time; the period is widened accordingly).
    pub period: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl ArchiveFile {
    pub fn hint(&self) -> FormatHint {
        match self.cloud {
            Some(Cloud::Aws) => FormatHint::CloudTrail,
            Some(Cloud::Azure) => FormatHint::Azure,
            Some(Cloud::Gcp) => FormatHint::Gcp,
            None => FormatHint::Auto,
        }
    }
}

fn components(path: &Path) -> Vec<&str> {
    path.components()
        .filter_map(|c| c.as_os_str().to_str())
        .collect()
}

fn day(y: &str, m: &str, d: &str) -> Option<DateTime<Utc>> {
    let date = NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
    Some(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?))
}

/// What the path says about a file; `None` for a file to skip (a CloudTrail
/// digest).
pub fn classify(path: &Path) -> Option<ArchiveFile> {
    let parts = components(path);
    let plain = ArchiveFile {
        path: path.to_owned(),
        layout: Layout::Plain,
        cloud: None,
        account: None,
        region: None,
        period: None,
    };
    if let Some(i) = parts.iter().position(|p| *p == "AWSLogs") {
        let rest = &parts[i + 1..];
        let (account, kind_at) = match rest {
            [account, kind, ..] if kind.starts_with("CloudTrail") => (*account, 1),
            [_org, account, kind, ..] if kind.starts_with("CloudTrail") => (*account, 2),
            _ => return Some(plain),
        };
        let kind = rest[kind_at];
        if kind == "CloudTrail-Digest" {
            return None;
        }
        let after = &rest[kind_at + 1..];
        let region = after.first().map(|r| (*r).to_owned());
        let mut period = match after {
            [_, y, m, d, ..] => day(y, m, d).map(|s| (s, s + Duration::days(1))),
            _ => None,
        };
        // `…_20240801T1005Z_…`: delivered at 10:05; events up to 15 minutes
        // older than the delivery, and none after it.
        if let Some(stamp) = parts
            .last()
            .and_then(|name| name.split('_').find(|s| s.len() == 14 && s.ends_with('Z')))
            && let Ok(t) = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%MZ")
        {
            let at = Utc.from_utc_datetime(&t);
            period = Some((at - Duration::minutes(20), at + Duration::minutes(5)));
        }
        return Some(ArchiveFile {
            layout: Layout::CloudTrailS3,
            cloud: Some(Cloud::Aws),
            account: Some(account.to_owned()),
            region,
            period,
            ..plain
        });
    }
    if let Some(i) = parts
        .iter()
        .position(|p| p.eq_ignore_ascii_case("SUBSCRIPTIONS"))
        .filter(|_| parts.iter().any(|p| p.starts_with("resourceId=")))
    {
        let subscription = parts.get(i + 1).map(|s| s.to_ascii_lowercase());
        let field = |key: &str| -> Option<&str> {
            parts[i..]
                .iter()
                .find_map(|p| p.strip_prefix(key).filter(|_| p.len() > key.len()))
        };
        let period = match (field("y="), field("m="), field("d="), field("h=")) {
            (Some(y), Some(m), Some(d), Some(h)) => day(y, m, d).and_then(|s| {
                let h: i64 = h.parse().ok()?;
                let start = s + Duration::hours(h);
                Some((start, start + Duration::hours(1)))
            }),
            (Some(y), Some(m), Some(d), None) => day(y, m, d).map(|s| (s, s + Duration::days(1))),
            _ => None,
        };
        return Some(ArchiveFile {
            layout: Layout::AzureActivityExport,
            cloud: Some(Cloud::Azure),
            account: subscription,
            period,
            ..plain
        });
    }
    if let Some(i) = parts.iter().position(|p| *p == "cloudaudit.googleapis.com") {
        let rest = &parts[i + 1..];
        let period = match rest {
            [_stream, y, m, d, name, ..] => {
                day(y, m, d).map(
                    |s| match name.get(..2).and_then(|h| h.parse::<i64>().ok()) {
                        Some(h) if name.get(2..3) == Some(":") => {
                            let start = s + Duration::hours(h);
                            (start, start + Duration::hours(1))
                        }
                        _ => (s, s + Duration::days(1)),
                    },
                )
            }
            _ => None,
        };
        return Some(ArchiveFile {
            layout: Layout::GcpStorageSink,
            cloud: Some(Cloud::Gcp),
            period,
            ..plain
        });
    }
    Some(plain)
}

/// The period a partial date path covers: a year, a month, a day or an
/// hour, whichever components are given.
fn span(
    y: &str,
    m: Option<&str>,
    d: Option<&str>,
    h: Option<&str>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let year: i32 = y.parse().ok()?;
    let start_of = |year: i32, month: u32| {
        NaiveDate::from_ymd_opt(year, month, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| Utc.from_utc_datetime(&t))
    };
    let Some(m) = m else {
        return Some((start_of(year, 1)?, start_of(year + 1, 1)?));
    };
    let month: u32 = m.parse().ok()?;
    let Some(d) = d else {
        let next = if month == 12 {
            start_of(year + 1, 1)?
        } else {
            start_of(year, month + 1)?
        };
        return Some((start_of(year, month)?, next));
    };
    let start = day(y, m, d)?;
    match h
        .and_then(|h| h.get(..2))
        .and_then(|h| h.parse::<i64>().ok())
    {
        Some(h) => Some((start + Duration::hours(h), start + Duration::hours(h + 1))),
        None => Some((start, start + Duration::days(1))),
    }
}

/// What a folder of an archive says, for pruning a listing before
/// descending into it (an S3 prefix ending in `/`): the cloud, account and
/// region once they appear, and the period its date folders cover, widened
/// by an hour each side (CloudTrail files hold events older than their
/// delivery folder). `None` for a folder to skip (CloudTrail digests).
pub fn classify_prefix(prefix: &Path) -> Option<ArchiveFile> {
    let parts = components(prefix);
    let plain = ArchiveFile {
        path: prefix.to_owned(),
        layout: Layout::Plain,
        cloud: None,
        account: None,
        region: None,
        period: None,
    };
    let widen = |p: Option<(DateTime<Utc>, DateTime<Utc>)>| {
        p.map(|(s, e)| (s - Duration::hours(1), e + Duration::hours(1)))
    };
    if let Some(i) = parts.iter().position(|p| *p == "AWSLogs") {
        let rest = &parts[i + 1..];
        let Some(kind_at) = rest.iter().position(|p| p.starts_with("CloudTrail")) else {
            return Some(ArchiveFile {
                cloud: Some(Cloud::Aws),
                ..plain
            });
        };
        if rest[kind_at] == "CloudTrail-Digest" {
            return None;
        }
        let after = &rest[kind_at + 1..];
        let period = match after {
            [_, y, rest @ ..] => span(y, rest.first().copied(), rest.get(1).copied(), None),
            _ => None,
        };
        return Some(ArchiveFile {
            layout: Layout::CloudTrailS3,
            cloud: Some(Cloud::Aws),
            account: kind_at.checked_sub(1).map(|a| rest[a].to_owned()),
            region: after.first().map(|r| (*r).to_owned()),
            period: widen(period),
            ..plain
        });
    }
    if let Some(i) = parts
        .iter()
        .position(|p| p.eq_ignore_ascii_case("SUBSCRIPTIONS"))
    {
        let field = |key: &str| -> Option<&str> {
            parts[i..]
                .iter()
                .find_map(|p| p.strip_prefix(key).filter(|_| p.len() > key.len()))
        };
        // `m=` appears twice (month, then minute): the first is the month.
        let period = field("y=").and_then(|y| span(y, field("m="), field("d="), field("h=")));
        return Some(ArchiveFile {
            layout: Layout::AzureActivityExport,
            cloud: Some(Cloud::Azure),
            account: parts.get(i + 1).map(|s| s.to_ascii_lowercase()),
            period: widen(period),
            ..plain
        });
    }
    if let Some(i) = parts.iter().position(|p| *p == "cloudaudit.googleapis.com") {
        let period = match &parts[i + 1..] {
            [_stream, y, rest @ ..] => span(
                y,
                rest.first().copied(),
                rest.get(1).copied(),
                rest.get(2).copied(),
            ),
            _ => None,
        };
        return Some(ArchiveFile {
            layout: Layout::GcpStorageSink,
            cloud: Some(Cloud::Gcp),
            period: widen(period),
            ..plain
        });
    }
    Some(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn cloudtrail_single_account_and_organization_trails() {
        let f = classify(Path::new(
            "/a/AWSLogs/111122223333/CloudTrail/eu-west-1/2024/08/01/111122223333_CloudTrail_eu-west-1_20240801T1005Z_abc.json.gz",
        ))
        .unwrap();
        assert_eq!(f.layout, Layout::CloudTrailS3);
        assert_eq!(f.account.as_deref(), Some("111122223333"));
        assert_eq!(f.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            f.period,
            Some((t("2024-08-01T09:45:00Z"), t("2024-08-01T10:10:00Z")))
        );
        let f = classify(Path::new(
            "b/AWSLogs/o-abc123/444455556666/CloudTrail/us-east-1/2024/08/02/x.json.gz",
        ))
        .unwrap();
        assert_eq!(f.account.as_deref(), Some("444455556666"));
        assert_eq!(
            f.period,
            Some((t("2024-08-02T00:00:00Z"), t("2024-08-03T00:00:00Z")))
        );
        assert_eq!(
            classify(Path::new(
                "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2024/08/01/d.json.gz"
            )),
            None
        );
    }

    #[test]
    fn azure_and_gcp_exports() {
        let f = classify(Path::new(
            "c/insights-activity-logs/resourceId=/SUBSCRIPTIONS/ABCD-12/y=2024/m=08/d=01/h=10/m=00/PT1H.json",
        ))
        .unwrap();
        assert_eq!(f.layout, Layout::AzureActivityExport);
        assert_eq!(f.account.as_deref(), Some("abcd-12"));
        assert_eq!(
            f.period,
            Some((t("2024-08-01T10:00:00Z"), t("2024-08-01T11:00:00Z")))
        );
        let f = classify(Path::new(
            "d/cloudaudit.googleapis.com/activity/2024/08/01/10:00:00_10:59:59_S0.json",
        ))
        .unwrap();
        assert_eq!(f.layout, Layout::GcpStorageSink);
        assert_eq!(f.hint(), FormatHint::Gcp);
        assert_eq!(
            f.period,
            Some((t("2024-08-01T10:00:00Z"), t("2024-08-01T11:00:00Z")))
        );
        let f = classify(Path::new("e/events.jsonl")).unwrap();
        assert_eq!(f.layout, Layout::Plain);
        assert_eq!(f.period, None);
    }

    #[test]
    fn folders_say_what_their_date_components_cover() {
        let f = classify_prefix(Path::new(
            "s3://b/AWSLogs/111122223333/CloudTrail/eu-west-1/2024/08/",
        ))
        .unwrap();
        assert_eq!(f.account.as_deref(), Some("111122223333"));
        assert_eq!(f.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            f.period,
            Some((t("2024-07-31T23:00:00Z"), t("2024-09-01T01:00:00Z")))
        );
        let f = classify_prefix(Path::new(
            "AWSLogs/o-x/444455556666/CloudTrail/us-east-1/2024/12/31/",
        ))
        .unwrap();
        assert_eq!(f.account.as_deref(), Some("444455556666"));
        assert_eq!(
            f.period,
            Some((t("2024-12-30T23:00:00Z"), t("2025-01-01T01:00:00Z")))
        );
        let f = classify_prefix(Path::new("AWSLogs/o-x/")).unwrap();
        assert_eq!((f.account, f.period), (None, None));
        assert_eq!(
            classify_prefix(Path::new("AWSLogs/1/CloudTrail-Digest/")),
            None
        );
        let f = classify_prefix(Path::new(
            "insights-activity-logs/resourceId=/SUBSCRIPTIONS/AB/y=2024/m=08/d=01/h=10/",
        ))
        .unwrap();
        assert_eq!(f.account.as_deref(), Some("ab"));
        assert_eq!(
            f.period,
            Some((t("2024-08-01T09:00:00Z"), t("2024-08-01T12:00:00Z")))
        );
        let f = classify_prefix(Path::new("cloudaudit.googleapis.com/activity/2023/")).unwrap();
        assert_eq!(
            f.period,
            Some((t("2022-12-31T23:00:00Z"), t("2024-01-01T01:00:00Z")))
        );
    }
}
