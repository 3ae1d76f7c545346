//! Synthetic CloudTrail traffic for tests, benchmarks and the demo: a
//! seeded, reproducible mix of everyday reads and writes with the security
//! operations the built-in rules and correlations look at (trails stopped and
//! started, security groups opened, denied calls, admin grants, snapshot
//! deletions, console sign-ins, instance launches across regions).
//!
//! Every event is a complete native CloudTrail record (JSON text) with a
//! unique `eventID`; times advance by a configurable mean gap.

use chrono::DateTime;

/// Settings of a [`Generator`].
#[derive(Clone, Copy, Debug)]
pub struct SynthConfig {
    pub seed: u64,
    /// Distinct principals (IAM users), spread over `accounts` accounts.
    pub principals: u32,
    pub accounts: u32,
    /// First event time, ms since the epoch.
    pub start_ms: i64,
    /// Mean gap between events, ms.
    pub mean_gap_ms: i64,
    /// Share of events that are security-relevant operations (0..=1).
    pub security_share: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 7,
            principals: 50,
            accounts: 5,
            start_ms: 1_740_823_200_000, // 2025-03-01T10:00:00Z
            mean_gap_ms: 2_000,
            security_share: 0.2,
        }
    }
}

/// One generated event.
#[derive(Clone, Debug)]
pub struct SynthEvent {
    pub time_ms: i64,
    /// The account it belongs to (a Kafka key, a partition choice).
    pub account: String,
    pub json: String,
}

pub struct Generator {
    config: SynthConfig,
    rng: fastrand::Rng,
    now: i64,
    seq: u64,
}

const REGIONS: [&str; 6] = [
    "us-east-1",
    "eu-west-1",
    "ap-southeast-1",
    "sa-east-1",
    "us-west-2",
    "eu-central-1",
];

impl Generator {
    pub fn new(config: SynthConfig) -> Generator {
        Generator {
            rng: fastrand::Rng::with_seed(config.seed),
            now: config.start_ms,
            seq: 0,
            config,
        }
    }

    /// The account of principal `p`.
    pub fn account_of(&self, p: u32) -> String {
        format!(
            "{:012}",
            100_000_000_000u64 + u64::from(p % self.config.accounts.max(1))
        )
    }

    pub fn next_event(&mut self) -> SynthEvent {
        let gap = self.config.mean_gap_ms.max(1);
        self.now += self.rng.i64(0..=2 * gap);
        self.seq += 1;
        let p = self.rng.u32(0..self.config.principals.max(1));
        let account = self.account_of(p);
        let region = REGIONS[self.rng.usize(0..2)];
        let security = self.rng.f64() < self.config.security_share;
        let (source, name, params, error, region) = if security {
            match self.rng.u32(0..10) {
                0 => (
                    "cloudtrail.amazonaws.com",
                    "StopLogging",
                    r#"{"name":"org-trail"}"#,
                    None,
                    region,
                ),
                1 => (
                    "cloudtrail.amazonaws.com",
                    "StartLogging",
                    r#"{"name":"org-trail"}"#,
                    None,
                    region,
                ),
                2 => (
                    "ec2.amazonaws.com",
                    "AuthorizeSecurityGroupIngress",
                    r#"{"groupId":"sg-0a1b2c3d","ipPermissions":{"items":[{"ipProtocol":"tcp","fromPort":22,"toPort":22,"ipRanges":{"items":[{"cidrIp":"0.0.0.0/0"}]}}]}}"#,
                    None,
                    region,
                ),
                3 | 4 => (
                    "iam.amazonaws.com",
                    "AttachUserPolicy",
                    r#"{"userName":"helper","policyArn":"arn:aws:iam::aws:policy/AdministratorAccess"}"#,
                    Some("AccessDenied"),
                    region,
                ),
                5 => (
                    "iam.amazonaws.com",
                    "AttachUserPolicy",
                    r#"{"userName":"helper","policyArn":"arn:aws:iam::aws:policy/AdministratorAccess"}"#,
                    None,
                    region,
                ),
                6 | 7 => (
                    "ec2.amazonaws.com",
                    "DeleteSnapshot",
                    r#"{"snapshotId":"snap-0123456789abcdef0"}"#,
                    None,
                    region,
                ),
                8 => (
                    "ec2.amazonaws.com",
                    "RunInstances",
                    r#"{"instanceType":"p3.16xlarge","minCount":1,"maxCount":1}"#,
                    None,
                    REGIONS[self.rng.usize(0..REGIONS.len())],
                ),
                _ => (
                    "sts.amazonaws.com",
                    "GetCallerIdentity",
                    "null",
                    None,
                    region,
                ),
            }
        } else {
            match self.rng.u32(0..4) {
                0 => (
                    "s3.amazonaws.com",
                    "GetObject",
                    r#"{"bucketName":"app-assets","key":"index.html"}"#,
                    None,
                    region,
                ),
                1 => (
                    "ec2.amazonaws.com",
                    "DescribeInstances",
                    r#"{"maxResults":100}"#,
                    None,
                    region,
                ),
                2 => (
                    "dynamodb.amazonaws.com",
                    "PutItem",
                    r#"{"tableName":"orders"}"#,
                    None,
                    region,
                ),
                _ => (
                    "lambda.amazonaws.com",
                    "Invoke",
                    r#"{"functionName":"resize"}"#,
                    None,
                    region,
                ),
            }
        };
        let time = DateTime::from_timestamp_millis(self.now)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ");
        let error = error
            .map(|code| format!(r#","errorCode":"{code}","errorMessage":"not authorized""#))
            .unwrap_or_default();
        let json = format!(
            r#"{{"eventVersion":"1.09","userIdentity":{{"type":"IAMUser","principalId":"AIDA{p:016}","arn":"arn:aws:iam::{account}:user/user{p}","accountId":"{account}","accessKeyId":"AKIA{p:016}","userName":"user{p}"}},"eventTime":"{time}","eventSource":"{source}","eventName":"{name}","awsRegion":"{region}","sourceIPAddress":"198.51.100.{ip}","userAgent":"aws-cli/2.15.30 Python/3.11.8 Linux/6.5","requestParameters":{params},"responseElements":null,"requestID":"{seq:08x}-0000-4000-8000-000000000000","eventID":"{seq:08x}-5eed-4000-8000-{seed:012x}","readOnly":false,"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"{account}","eventCategory":"Management"{error}}}"#,
            ip = p % 250,
            seq = self.seq,
            seed = self.config.seed & 0xffff_ffff_ffff,
        );
        SynthEvent {
            time_ms: self.now - self.now.rem_euclid(1000),
            account,
            json,
        }
    }
}

impl Iterator for Generator {
    type Item = SynthEvent;
    fn next(&mut self) -> Option<SynthEvent> {
        Some(self.next_event())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Decoder;

    #[test]
    fn events_decode_and_repeat_with_the_seed() {
        let a: Vec<SynthEvent> = Generator::new(SynthConfig::default()).take(500).collect();
        let b: Vec<SynthEvent> = Generator::new(SynthConfig::default()).take(500).collect();
        assert!(a.iter().zip(&b).all(|(x, y)| x.json == y.json));
        let decoder = Decoder::default();
        for event in &a {
            let decoded = decoder.decode_owned(event.json.as_bytes());
            assert!(
                matches!(decoded.as_slice(), [Ok(e)] if e.time.map(|t| t.timestamp_millis() / 1000) == Some(event.time_ms / 1000)),
                "{}",
                event.json
            );
        }
        assert!(a.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
    }
}
