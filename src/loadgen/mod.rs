//! The load generator behind `seamwatch gen`, the drills and the benchmarks:
//! realistic synthetic audit traffic for the three clouds, reproducible from
//! a seed.
//!
//! Background traffic is the everyday mix of an estate (reads, deployments,
//! role assumptions, instance starts), spread over accounts, principals,
//! source addresses and regions; a share of it is security-relevant changes
//! (the operations the built-in rules look at); and attack scenarios
//! ([`scenario`]) are woven in at a configurable rate. Every record is a
//! complete native record of its cloud, events come out in event-time order,
//! and the same seed gives the same bytes.

pub mod archive;
pub mod scenario;
pub mod shape;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::event::Cloud;
use scenario::{ScenarioKind, Setting};
use shape::{Actor, ActorKind, AwsCall, AzureOp, GcpCall};

/// Settings of a [`Generator`].
#[derive(Clone, Debug)]
pub struct GenConfig {
    pub seed: u64,
    /// Clouds to generate, in turn (weights by repetition).
    pub clouds: Vec<Cloud>,
    /// Accounts (subscriptions, projects) per cloud.
    pub accounts: u32,
    /// Principals per account.
    pub principals: u32,
    /// First event time, ms since the epoch.
    pub start_ms: i64,
    /// Events per second of event time (the archive's density).
    pub events_per_second: f64,
    /// Share of background events that are security-relevant changes.
    pub security_share: f64,
    /// Chance, per background event, that an attack scenario starts.
    pub attack_share: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 7,
            clouds: vec![Cloud::Aws, Cloud::Azure, Cloud::Gcp],
            accounts: 6,
            principals: 40,
            start_ms: 1_740_823_200_000, // 2025-03-01T10:00:00Z
            events_per_second: 50.0,
            security_share: 0.02,
            attack_share: 0.0005,
        }
    }
}

/// One generated record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GenEvent {
    pub time_ms: i64,
    pub cloud: Cloud,
    /// Account, subscription or project: the recommended Kafka key.
    pub account: String,
    pub json: String,
}

/// Counts of what a generator produced so far.
#[derive(Clone, Copy, Debug, Default)]
pub struct GenStats {
    pub events: u64,
    pub security: u64,
    pub scenarios: u64,
    pub bytes: u64,
}

pub struct Generator {
    config: GenConfig,
    rng: fastrand::Rng,
    now_ms: f64,
    seq: u64,
    turn: usize,
    pending: BinaryHeap<Reverse<(i64, u64, bool, GenEvent)>>,
    background_queued: bool,
    stats: GenStats,
}

const AWS_REGIONS: [&str; 4] = ["us-east-1", "eu-west-1", "us-west-2", "ap-southeast-1"];

const AZURE_USER_AGENTS: [&str; 4] = [
    "Azure-CLI/2.58.0 (AZURECLI) azsdk-python-azure-mgmt-compute/30.5.0 Python/3.11.8",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/122.0 Safari/537.36 AzurePortal",
    "HashiCorp Terraform/1.7.5 (+https://www.terraform.io) terraform-provider-azurerm/3.95.0",
    "azsdk-go-armresources/v1.2.0 (go1.22.1; linux)",
];

const GCP_USER_AGENTS: [&str; 4] = [
    "google-cloud-sdk gcloud/470.0.0 command/gcloud.compute.instances.start",
    "Terraform/1.7.5 (+https://www.terraform.io) Terraform-Plugin-SDK/2.10.1 terraform-provider-google/5.21.0",
    "google-api-go-client/0.5 (gzip),gzip(gfe)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/122.0 Safari/537.36,gzip(gfe)",
];

const USER_AGENTS: [&str; 5] = [
    "aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0 exe/x86_64.ubuntu.22",
    "Boto3/1.34.62 md/Botocore#1.34.62 ua/2.0 os/linux#6.1 lang/python#3.12.2",
    "aws-sdk-go-v2/1.26.0 os/linux lang/go#1.22.1 md/GOOS#linux api/ec2#1.150.0",
    "Terraform/1.7.5 (+https://www.terraform.io) terraform-provider-aws/5.41.0",
    "console.amazonaws.com",
];

impl Generator {
    pub fn new(config: GenConfig) -> Generator {
        Generator {
            rng: fastrand::Rng::with_seed(config.seed),
            now_ms: config.start_ms as f64,
            seq: config.seed << 40,
            turn: 0,
            pending: BinaryHeap::new(),
            background_queued: false,
            stats: GenStats::default(),
            config,
        }
    }

    pub fn stats(&self) -> GenStats {
        self.stats
    }

    /// The id of account `i` of `cloud`.
    pub fn account(cloud: Cloud, i: u32) -> String {
        match cloud {
            Cloud::Aws => format!("{:012}", 210_000_000_000u64 + u64::from(i) * 1_013),
            Cloud::Azure => format!("5e0c{i:04x}-7d4e-4b8a-9c21-6e0d5b7a1f34"),
            Cloud::Gcp => format!("acme-app-{i}"),
        }
    }

    fn pick_actor(&mut self, cloud: Cloud, account: &str) -> Actor {
        let p = self.rng.u32(0..self.config.principals.max(1));
        let service = p % 4 == 3;
        let ip = if service {
            format!("10.{}.{}.{}", p % 16, (p / 16) % 250, 10 + p % 200)
        } else {
            format!("198.51.100.{}", 1 + p % 250)
        };
        let (name, kind) = match (cloud, service) {
            (Cloud::Aws, false) => (format!("user{p}"), ActorKind::User),
            (Cloud::Aws, true) => (format!("app-role-{}", p % 8), ActorKind::Service),
            (Cloud::Azure, false) => (format!("user{p}@contoso.com"), ActorKind::User),
            (Cloud::Azure, true) => (format!("app-sp-{}", p % 8), ActorKind::Service),
            (Cloud::Gcp, false) => (format!("user{p}@example.com"), ActorKind::User),
            (Cloud::Gcp, true) => (
                format!("app-{}@{account}.iam.gserviceaccount.com", p % 8),
                ActorKind::Service,
            ),
        };
        let key = match kind {
            ActorKind::User => format!("AKIA{:016}", p),
            _ => format!("ASIA{:016}", u64::from(p) * 7 + 3),
        };
        Actor {
            account: account.to_owned(),
            name,
            key,
            ip,
            user_agent: match cloud {
                Cloud::Aws => USER_AGENTS[(p as usize) % USER_AGENTS.len()],
                Cloud::Azure => AZURE_USER_AGENTS[(p as usize) % AZURE_USER_AGENTS.len()],
                Cloud::Gcp => GCP_USER_AGENTS[(p as usize) % GCP_USER_AGENTS.len()],
            }
            .to_owned(),
            kind,
        }
    }

    /// The next background record (and maybe the start of an attack).
    fn background(&mut self) -> GenEvent {
        let gap = 1000.0 / self.config.events_per_second.max(1e-6);
        self.now_ms += self.rng.f64() * 2.0 * gap;
        let time_ms = self.now_ms as i64;
        let clouds = &self.config.clouds;
        let cloud = clouds[self.turn % clouds.len().max(1)];
        self.turn += 1;
        let account = Self::account(cloud, self.rng.u32(0..self.config.accounts.max(1)));
        let actor = self.pick_actor(cloud, &account);
        let security = self.rng.f64() < self.config.security_share;
        self.seq += 1;
        let seq = self.seq;
        let pick = self.rng.usize(..);
        let json = match cloud {
            Cloud::Aws => aws_background(&actor, time_ms, seq, pick, security),
            Cloud::Azure => azure_background(&actor, time_ms, seq, pick, security),
            Cloud::Gcp => gcp_background(&actor, time_ms, seq, pick, security),
        };
        if security {
            self.stats.security += 1;
        }
        if self.rng.f64() < self.config.attack_share {
            let kind = ScenarioKind::ALL[self.rng.usize(0..ScenarioKind::ALL.len())];
            let setting = Setting {
                account: account.clone(),
                start_ms: time_ms + 1,
                seed: seq,
            };
            let built = scenario::build(kind, cloud, &setting);
            self.stats.scenarios += 1;
            for step in built.steps {
                self.seq += 1;
                self.pending.push(Reverse((
                    step.time_ms,
                    self.seq,
                    false,
                    GenEvent {
                        time_ms: step.time_ms,
                        cloud: step.cloud,
                        account: step.account,
                        json: step.json,
                    },
                )));
            }
        }
        GenEvent {
            time_ms,
            cloud,
            account,
            json,
        }
    }

    pub fn next_event(&mut self) -> GenEvent {
        // The heap holds the scheduled scenario steps and exactly one
        // background event: every later background event is later than it,
        // so the heap's minimum is the next event in time order.
        if !self.background_queued {
            let event = self.background();
            self.seq += 1;
            self.pending
                .push(Reverse((event.time_ms, self.seq, true, event)));
            self.background_queued = true;
        }
        let event = match self.pending.pop() {
            Some(Reverse((_, _, background, event))) => {
                self.background_queued &= !background;
                event
            }
            None => self.background(),
        };
        self.stats.events += 1;
        self.stats.bytes += event.json.len() as u64;
        event
    }
}

impl Iterator for Generator {
    type Item = GenEvent;
    fn next(&mut self) -> Option<GenEvent> {
        Some(self.next_event())
    }
}

fn aws_background(actor: &Actor, time_ms: i64, seq: u64, pick: usize, security: bool) -> String {
    let region = AWS_REGIONS[pick % AWS_REGIONS.len()];
    let n = pick / 7;
    let call = if security {
        const SECURITY: [(&str, &str, &str); 8] = [
            (
                "ec2.amazonaws.com",
                "AuthorizeSecurityGroupIngress",
                r#"{"groupId":"sg-0a1b2c3d4e5f","ipPermissions":{"items":[{"ipProtocol":"tcp","fromPort":443,"toPort":443,"ipRanges":{"items":[{"cidrIp":"0.0.0.0/0"}]}}]}}"#,
            ),
            (
                "iam.amazonaws.com",
                "CreateAccessKey",
                r#"{"userName":"svc-reporting"}"#,
            ),
            (
                "iam.amazonaws.com",
                "AttachRolePolicy",
                r#"{"roleName":"ops-admin","policyArn":"arn:aws:iam::aws:policy/AdministratorAccess"}"#,
            ),
            (
                "s3.amazonaws.com",
                "PutBucketAcl",
                r#"{"bucketName":"marketing-site","x-amz-acl":"public-read"}"#,
            ),
            (
                "kms.amazonaws.com",
                "ScheduleKeyDeletion",
                r#"{"keyId":"arn:aws:kms:us-east-1:account:key/1f2e3d4c","pendingWindowInDays":7}"#,
            ),
            (
                "ec2.amazonaws.com",
                "DeleteFlowLogs",
                r#"{"DeleteFlowLogsRequest":{"FlowLogId":{"tag":1,"content":"fl-0a1b2c"}}}"#,
            ),
            (
                "ssm.amazonaws.com",
                "StartSession",
                r#"{"target":"i-0a1b2c3d4e5f60718"}"#,
            ),
            (
                "ec2.amazonaws.com",
                "ModifySnapshotAttribute",
                r#"{"snapshotId":"snap-0a1b2c3d","createVolumePermission":{"add":{"items":[{"group":"all"}]}},"attributeType":"CREATE_VOLUME_PERMISSION"}"#,
            ),
        ];
        let (source, name, params) = SECURITY[n % SECURITY.len()];
        AwsCall {
            source,
            name,
            region,
            params,
            response: "null",
            error: None,
            read_only: false,
        }
    } else {
        const EVERYDAY: [(&str, &str, &str, bool); 10] = [
            (
                "ec2.amazonaws.com",
                "DescribeInstances",
                r#"{"instancesSet":{},"filterSet":{"items":[{"name":"tag:env","valueSet":{"items":[{"value":"prod"}]}}]}}"#,
                true,
            ),
            (
                "sts.amazonaws.com",
                "AssumeRole",
                r#"{"roleArn":"arn:aws:iam::210000000000:role/app-reader","roleSessionName":"app","durationSeconds":3600}"#,
                false,
            ),
            (
                "dynamodb.amazonaws.com",
                "DescribeTable",
                r#"{"tableName":"orders"}"#,
                true,
            ),
            (
                "lambda.amazonaws.com",
                "GetFunction",
                r#"{"functionName":"resize-images"}"#,
                true,
            ),
            (
                "s3.amazonaws.com",
                "ListBuckets",
                r#"{"Host":"s3.amazonaws.com"}"#,
                true,
            ),
            (
                "ec2.amazonaws.com",
                "CreateTags",
                r#"{"resourcesSet":{"items":[{"resourceId":"i-0a1b2c3d4e5f60718"}]},"tagSet":{"items":[{"key":"owner","value":"team-a"}]}}"#,
                false,
            ),
            (
                "kms.amazonaws.com",
                "Decrypt",
                r#"{"encryptionAlgorithm":"SYMMETRIC_DEFAULT","encryptionContext":{"aws:lambda:FunctionArn":"arn:aws:lambda:us-east-1:210000000000:function:resize-images"}}"#,
                true,
            ),
            (
                "logs.amazonaws.com",
                "CreateLogStream",
                r#"{"logGroupName":"/aws/lambda/resize-images","logStreamName":"2025/03/01/[$LATEST]0a1b2c"}"#,
                false,
            ),
            (
                "ec2.amazonaws.com",
                "DescribeSecurityGroups",
                r#"{"securityGroupSet":{},"securityGroupIdSet":{},"filterSet":{}}"#,
                true,
            ),
            (
                "rds.amazonaws.com",
                "DescribeDBInstances",
                r#"{"maxRecords":100}"#,
                true,
            ),
        ];
        let (source, name, params, read_only) = EVERYDAY[n % EVERYDAY.len()];
        AwsCall {
            source,
            name,
            region,
            params,
            response: "null",
            error: n
                .is_multiple_of(53)
                .then_some(("AccessDenied", "not authorized to perform this action")),
            read_only,
        }
    };
    shape::aws(actor, time_ms, seq, &call)
}

fn azure_background(actor: &Actor, time_ms: i64, seq: u64, pick: usize, security: bool) -> String {
    let n = pick / 7;
    let op = if security {
        const SECURITY: [(&str, &str, Option<&str>); 5] = [
            (
                "resourceGroups/rg-app/providers/Microsoft.Network/networkSecurityGroups/nsg-app/securityRules/allow-https",
                "Microsoft.Network/networkSecurityGroups/securityRules/write",
                Some(
                    r#"{"properties":{"protocol":"Tcp","sourcePortRange":"*","destinationPortRange":"443","sourceAddressPrefix":"Internet","destinationAddressPrefix":"*","access":"Allow","priority":200,"direction":"Inbound"}}"#,
                ),
            ),
            (
                "resourceGroups/rg-app/providers/Microsoft.Storage/storageAccounts/appdata01",
                "Microsoft.Storage/storageAccounts/listKeys/action",
                None,
            ),
            (
                "providers/Microsoft.Authorization/policyAssignments/require-tags",
                "Microsoft.Authorization/policyAssignments/delete",
                None,
            ),
            (
                "resourceGroups/rg-app/providers/Microsoft.KeyVault/vaults/kv-app",
                "Microsoft.KeyVault/vaults/accessPolicies/write",
                Some(
                    r#"{"properties":{"accessPolicies":[{"tenantId":"9b2e6d41-0c7a-4f3e-8d15-2a6b4c8e0f97","objectId":"1a2b","permissions":{"secrets":["get","list"]}}]}}"#,
                ),
            ),
            (
                "resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-app-01",
                "Microsoft.Compute/virtualMachines/runCommand/action",
                None,
            ),
        ];
        let (resource, operation, body) = SECURITY[n % SECURITY.len()];
        AzureOp {
            resource,
            operation,
            result: if body.is_some() { "Start" } else { "Success" },
            body,
            role: "Contributor",
        }
    } else {
        const EVERYDAY: [(&str, &str); 6] = [
            (
                "resourceGroups/rg-app/providers/Microsoft.Web/sites/app-frontend",
                "Microsoft.Web/sites/restart/action",
            ),
            (
                "resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-app-01",
                "Microsoft.Compute/virtualMachines/start/action",
            ),
            (
                "resourceGroups/rg-app/providers/Microsoft.Resources/deployments/app-release",
                "Microsoft.Resources/deployments/write",
            ),
            (
                "resourceGroups/rg-app/providers/Microsoft.Network/networkInterfaces/nic-app-01",
                "Microsoft.Network/networkInterfaces/write",
            ),
            (
                "resourceGroups/rg-app/providers/Microsoft.ContainerService/managedClusters/aks-app",
                "Microsoft.ContainerService/managedClusters/listClusterUserCredential/action",
            ),
            (
                "resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm-app-02",
                "Microsoft.Compute/virtualMachines/deallocate/action",
            ),
        ];
        let (resource, operation) = EVERYDAY[n % EVERYDAY.len()];
        AzureOp {
            resource,
            operation,
            result: "Success",
            body: None,
            role: "Contributor",
        }
    };
    shape::azure(actor, time_ms, seq, &op)
}

fn gcp_background(actor: &Actor, time_ms: i64, seq: u64, pick: usize, security: bool) -> String {
    let n = pick / 7;
    let project = &actor.account;
    let (service, method, resource, rtype, request) = if security {
        const SECURITY: [(&str, &str, &str, &str, &str); 4] = [
            (
                "iam.googleapis.com",
                "google.iam.admin.v1.CreateServiceAccountKey",
                "projects/-/serviceAccounts/reporting@PROJECT.iam.gserviceaccount.com",
                "service_account",
                r#"{"@type":"type.googleapis.com/google.iam.admin.v1.CreateServiceAccountKeyRequest"}"#,
            ),
            (
                "compute.googleapis.com",
                "v1.compute.firewalls.insert",
                "projects/PROJECT/global/firewalls/allow-https",
                "gce_firewall_rule",
                r#"{"@type":"type.googleapis.com/compute.firewalls.insert","name":"allow-https","direction":"INGRESS","sourceRanges":["0.0.0.0/0"],"allowed":[{"IPProtocol":"tcp","ports":["443"]}]}"#,
            ),
            (
                "logging.googleapis.com",
                "google.logging.v2.ConfigServiceV2.CreateExclusion",
                "projects/PROJECT/exclusions/drop-debug",
                "logging_exclusion",
                r#"{"@type":"type.googleapis.com/google.logging.v2.CreateExclusionRequest","exclusion":{"name":"drop-debug","filter":"severity<INFO"}}"#,
            ),
            (
                "compute.googleapis.com",
                "v1.compute.snapshots.delete",
                "projects/PROJECT/global/snapshots/nightly-01",
                "gce_snapshot",
                "",
            ),
        ];
        SECURITY[n % SECURITY.len()]
    } else {
        const EVERYDAY: [(&str, &str, &str, &str, &str); 5] = [
            (
                "compute.googleapis.com",
                "v1.compute.instances.start",
                "projects/PROJECT/zones/europe-west1-b/instances/app-01",
                "gce_instance",
                r#"{"@type":"type.googleapis.com/compute.instances.start"}"#,
            ),
            (
                "container.googleapis.com",
                "google.container.v1.ClusterManager.UpdateCluster",
                "projects/PROJECT/locations/europe-west1/clusters/app",
                "gke_cluster",
                r#"{"@type":"type.googleapis.com/google.container.v1.UpdateClusterRequest","update":{"desiredNodeVersion":"1.29.1-gke.1589000"}}"#,
            ),
            (
                "storage.googleapis.com",
                "storage.buckets.create",
                "projects/_/buckets/app-artifacts-2025",
                "gcs_bucket",
                r#"{"@type":"type.googleapis.com/storage.buckets.create","iamConfiguration":{"publicAccessPrevention":"enforced"}}"#,
            ),
            (
                "compute.googleapis.com",
                "v1.compute.disks.createSnapshot",
                "projects/PROJECT/zones/europe-west1-b/disks/app-01",
                "gce_disk",
                r#"{"@type":"type.googleapis.com/compute.disks.createSnapshot","name":"nightly"}"#,
            ),
            (
                "run.googleapis.com",
                "google.cloud.run.v1.Services.ReplaceService",
                "namespaces/PROJECT/services/api",
                "cloud_run_revision",
                r#"{"@type":"type.googleapis.com/google.cloud.run.v1.ReplaceServiceRequest"}"#,
            ),
        ];
        EVERYDAY[n % EVERYDAY.len()]
    };
    let resource = resource.replace("PROJECT", project);
    let request = request.replace("PROJECT", project);
    shape::gcp(
        actor,
        time_ms,
        seq,
        &GcpCall {
            service,
            method,
            resource_name: &resource,
            resource_type: rtype,
            request: &request,
            extra: "",
            error: (!security && n.is_multiple_of(61)).then_some((7, "Permission denied")),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Decoder;

    #[test]
    fn events_decode_in_time_order_and_repeat_with_the_seed() {
        let config = GenConfig {
            attack_share: 0.01,
            security_share: 0.1,
            ..GenConfig::default()
        };
        let a: Vec<GenEvent> = Generator::new(config.clone()).take(3000).collect();
        let b: Vec<GenEvent> = Generator::new(config).take(3000).collect();
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
        let decoder = Decoder::default();
        let mut per_cloud = [0usize; 3];
        for event in &a {
            let decoded = decoder.decode_owned(event.json.as_bytes());
            match decoded.as_slice() {
                [Ok(e)] => {
                    assert_eq!(e.cloud, event.cloud, "{}", event.json);
                    assert_eq!(
                        e.account.as_deref(),
                        Some(event.account.as_str()),
                        "{}",
                        event.json
                    );
                    assert_eq!(
                        e.time.map(|t| t.timestamp_millis() / 1000),
                        Some(event.time_ms / 1000),
                        "{}",
                        event.json
                    );
                    per_cloud[event.cloud as usize] += 1;
                }
                other => panic!("{other:?}: {}", event.json),
            }
        }
        assert!(per_cloud.iter().all(|&n| n > 900), "{per_cloud:?}");
        let different: Vec<GenEvent> = Generator::new(GenConfig {
            seed: 8,
            ..GenConfig::default()
        })
        .take(10)
        .collect();
        assert_ne!(different, a[..10]);
    }

    #[test]
    fn sizes_are_realistic() {
        let events: Vec<GenEvent> = Generator::new(GenConfig::default()).take(3000).collect();
        for cloud in [Cloud::Aws, Cloud::Azure, Cloud::Gcp] {
            let sizes: Vec<usize> = events
                .iter()
                .filter(|e| e.cloud == cloud)
                .map(|e| e.json.len())
                .collect();
            let mean = sizes.iter().sum::<usize>() / sizes.len();
            assert!((700..=2500).contains(&mean), "{cloud:?}: mean {mean} bytes");
        }
    }
}
