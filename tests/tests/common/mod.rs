//! The world the emulator tests share: one scenario's resources under names no other test
//! uses, and the function handlers wired to real SDK clients.
#![allow(dead_code, unreachable_pub)] // each test binary uses its own part of it

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType,
};
use aws_sdk_ecs::types::{
    AwsVpcConfiguration, Compatibility, ContainerCondition, ContainerDefinition, ContainerDependency, CpuArchitecture,
    HealthCheck, KeyValuePair, LaunchType, LogConfiguration, LogDriver, NetworkConfiguration, NetworkMode, OsFamily,
    PortMapping, RuntimePlatform, Secret, Tag, TaskDefinition, TaskDefinitionField, Volume,
};
use ferry::adapters::dynamodb::{DynamoLedger, ECS_DEPLOYMENT_INDEX};
use ferry::adapters::eventbridge::EventBridgeBus;
use ferry::adapters::http::HttpProbe;
use ferry::adapters::notifiers::Notifiers;
use ferry::adapters::slack::SlackNotifier;
use ferry::adapters::sns::SnsNotifier;
use ferry::config::Config;
use ferry::deploy::{DeployOutcome, DeploySettings, Deployer, Invocation, TargetOutcome};
use ferry::model::{State, Target};
use ferry::ports::{Ledger, SystemClock};
use ferry::rollback::{RollbackOutcome, RollbackSettings, Rollbacker};
use ferry::verify::{Verifier, VerifyOutcome, VerifySettings};
use ferry_tests::{Emulator, HttpSink, clients, unique};
use serde_json::{Value, json};

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "ap-southeast-1";
pub const PROXY: &str = "public.ecr.aws/envoy/envoy:v1.30.1";

/// Everything one scenario needs in the emulator, under names no other test uses.
pub struct World {
    pub emulator: Emulator,
    /// Ferry's own account: ledger, topic, secret, ECR.
    pub home: SdkConfig,
    /// The account the ECS service is in (the home account unless a role is used).
    pub aws: SdkConfig,
    pub role: Option<String>,
    pub table: String,
    pub topic: String,
    pub secret: String,
    pub sink: HttpSink,
    pub repository: String,
    pub cluster: String,
    pub service: String,
    pub family: String,
}

pub async fn create_table(aws: &SdkConfig, table: &str) {
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attr")
    };
    let key = |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build().expect("key");
    aws_sdk_dynamodb::Client::new(aws)
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .attribute_definitions(attr("ecs_deployment_id"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(ECS_DEPLOYMENT_INDEX)
                .key_schema(key("ecs_deployment_id", KeyType::Hash))
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .expect("gsi"),
        )
        .send()
        .await
        .expect("create table");
}

/// A task definition that uses most of what ECS offers, so the render's round trip is
/// tested on more than names and images.
pub fn rich_containers(app_image: &str) -> Vec<ContainerDefinition> {
    let app = ContainerDefinition::builder()
        .name("api")
        .image(app_image)
        .essential(true)
        .memory(512)
        .cpu(256)
        .port_mappings(PortMapping::builder().container_port(8080).host_port(8080).build())
        .environment(KeyValuePair::builder().name("RUST_LOG").value("info").build())
        .secrets(
            Secret::builder()
                .name("DB_URL")
                .value_from("arn:aws:ssm:ap-southeast-1:123456789012:parameter/db")
                .build()
                .expect("secret"),
        )
        .health_check(
            HealthCheck::builder()
                .command("CMD-SHELL")
                .command("curl -f localhost:8080/health")
                .interval(10)
                .build()
                .expect("hc"),
        )
        .depends_on(
            ContainerDependency::builder()
                .container_name("proxy")
                .condition(ContainerCondition::Start)
                .build()
                .expect("dep"),
        )
        .log_configuration(
            LogConfiguration::builder()
                .log_driver(LogDriver::Awslogs)
                .options("awslogs-group", "/ecs/shop")
                .options("awslogs-region", REGION)
                .build()
                .expect("log"),
        )
        .command("serve")
        .build();
    let proxy = ContainerDefinition::builder()
        .name("proxy")
        .image(PROXY)
        .essential(true)
        .memory(128)
        .environment(KeyValuePair::builder().name("ENVOY_UID").value("0").build())
        .build();
    vec![app, proxy]
}

/// An SDK config acting in `account` through an assumed role (moto keeps each account's
/// resources apart by the credentials' account).
pub async fn in_account(base: &SdkConfig, role: &str) -> SdkConfig {
    let provider =
        aws_config::sts::AssumeRoleProvider::builder(role).session_name("ferry-tests").configure(base).build().await;
    base.to_builder().credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(provider)).build()
}

/// A Fargate `service` in a new `cluster` (in `aws`'s account and region) running `image` with
/// the rich task definition of family `family`: every field Ferry must carry over.
async fn create_service(
    emulator: &Emulator,
    aws: &SdkConfig,
    account: &str,
    (cluster, service): (&str, &str),
    family: &str,
    image: &str,
    desired: i32,
) {
    let region = aws.region().map(|r| r.to_string()).unwrap_or_default();
    let ecs = aws_sdk_ecs::Client::new(aws);
    ecs.create_cluster().cluster_name(cluster).send().await.expect("cluster");
    let td = ecs
        .register_task_definition()
        .family(family)
        .set_container_definitions(Some(rich_containers(image)))
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("512")
        .memory("1024")
        .execution_role_arn("arn:aws:iam::123456789012:role/shop-execution")
        .task_role_arn("arn:aws:iam::123456789012:role/shop-task")
        .runtime_platform(
            RuntimePlatform::builder()
                .cpu_architecture(CpuArchitecture::Arm64)
                .operating_system_family(OsFamily::Linux)
                .build(),
        )
        .volumes(Volume::builder().name("scratch").build())
        .tags(Tag::builder().key("team").value("shop").build())
        .tags(Tag::builder().key("cost-centre").value("42").build())
        .send()
        .await
        .expect("task definition")
        .task_definition
        .and_then(|t| t.task_definition_arn)
        .expect("arn");
    let network =
        emulator.control(&format!("/_ferry/ec2/default-network?region={region}&account={account}"), Value::Null).await;
    let strings =
        |v: &Value| v.as_array().expect("list").iter().map(|s| s.as_str().expect("id").to_string()).collect::<Vec<_>>();
    let vpc = AwsVpcConfiguration::builder()
        .set_subnets(Some(strings(&network["subnets"])))
        .set_security_groups(Some(strings(&network["securityGroups"])))
        .build()
        .expect("vpc");
    ecs.create_service()
        .cluster(cluster)
        .service_name(service)
        .task_definition(&td)
        .desired_count(desired)
        .launch_type(LaunchType::Fargate)
        .network_configuration(NetworkConfiguration::builder().awsvpc_configuration(vpc).build())
        .send()
        .await
        .expect("service");
}

impl World {
    pub async fn new() -> World {
        Self::in_account(None).await
    }

    /// The world's ECS cluster and service in the account `role` is in (else the default).
    pub async fn in_account(role: Option<&str>) -> World {
        let emulator = Emulator::start();
        let home = emulator.sdk_config(REGION).await;
        let aws = match role {
            Some(role) => in_account(&home, role).await,
            None => home.clone(),
        };
        let (table, repository, cluster, family) =
            (unique("ledger"), unique("shop").to_lowercase() + "/api", unique("shop-staging"), unique("api"));
        create_table(&home, &table).await;

        let sink = HttpSink::start().await;
        let sns = aws_sdk_sns::Client::new(&home);
        let topic = sns.create_topic().name(unique("ferry")).send().await.expect("topic").topic_arn.expect("arn");
        let secret = aws_sdk_secretsmanager::Client::new(&home)
            .create_secret()
            .name(unique("ferry/slack"))
            .secret_string(json!({ "default": format!("{}/slack", sink.url) }).to_string())
            .send()
            .await
            .expect("secret")
            .arn
            .expect("arn");

        aws_sdk_ecr::Client::new(&home).create_repository().repository_name(&repository).send().await.expect("repo");
        let old_image = format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repository}:staging-00000000");
        let account = role.map_or(ACCOUNT, |r| r.split(':').nth(4).expect("account"));
        let service = "shop-staging-api".to_string();
        create_service(&emulator, &aws, account, (&cluster, &service), &family, &old_image, 2).await;
        World {
            emulator,
            home,
            aws,
            role: role.map(str::to_string),
            table,
            topic,
            secret,
            sink,
            repository,
            cluster,
            service,
            family,
        }
    }

    pub fn config(&self, migration: bool) -> Config {
        let migration =
            if migration { "migration = { command = [\"bin/migrate\", \"up\"], timeout_seconds = 60 }" } else { "" };
        self.config_with(migration)
    }

    /// The world's config, with `extra` lines in its service's table.
    pub fn config_with(&self, extra: &str) -> Config {
        Config::parse("ferry.toml", &self.config_text(extra)).expect("config")
    }

    /// The text of [`World::config_with`]'s config.
    pub fn config_text(&self, extra: &str) -> String {
        let migration = extra;
        format!(
            r#"
[[environments]]
name = "staging"
rules = [{{ glob = "staging-*" }}]
targets = [{{ region = "{REGION}", cluster = "{cluster}"{role} }}]

[[services]]
repository = "{repository}"
name = "shop-{{env}}-api"
containers = ["api"]
{migration}
"#,
            cluster = self.cluster,
            repository = self.repository,
            role = self.role.as_ref().map(|r| format!(", role_arn = \"{r}\"")).unwrap_or_default(),
        )
    }

    /// Pushes an image to ECR and returns the "ECR Image Action" event AWS would send. Its
    /// config blob is never uploaded: the image has no labels to read.
    pub async fn push(&self, tag: &str, layer: &str) -> Value {
        self.push_with_config(tag, layer, &format!("sha256:{}", "c".repeat(64))).await
    }

    /// [`World::push`] of an image whose config (uploaded as a registry client does) carries `labels`.
    pub async fn push_labelled(&self, tag: &str, layer: &str, labels: Value) -> Value {
        use sha2::Digest as _;
        let config = json!({"architecture": "amd64", "os": "linux", "config": {"Labels": labels}}).to_string();
        let digest = format!(
            "sha256:{}",
            sha2::Sha256::digest(config.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let ecr = aws_sdk_ecr::Client::new(&self.home);
        let upload = ecr.initiate_layer_upload().repository_name(&self.repository).send().await.expect("upload");
        let id = upload.upload_id.expect("upload id");
        ecr.upload_layer_part()
            .repository_name(&self.repository)
            .upload_id(&id)
            .part_first_byte(0)
            .part_last_byte(config.len() as i64 - 1)
            .layer_part_blob(aws_smithy_types::Blob::new(config.as_bytes()))
            .send()
            .await
            .expect("part");
        ecr.complete_layer_upload()
            .repository_name(&self.repository)
            .upload_id(&id)
            .layer_digests(&digest)
            .send()
            .await
            .expect("complete");
        self.push_with_config(tag, layer, &digest).await
    }

    async fn push_with_config(&self, tag: &str, layer: &str, config: &str) -> Value {
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023, "digest": config},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 32654, "digest": format!("sha256:{layer}")}]
        });
        let out = aws_sdk_ecr::Client::new(&self.home)
            .put_image()
            .repository_name(&self.repository)
            .image_manifest(manifest.to_string())
            .image_tag(tag)
            .send()
            .await
            .expect("put image");
        let digest = out.image.and_then(|i| i.image_id).and_then(|i| i.image_digest).expect("digest");
        json!({
            "version": "0",
            "id": unique("event"),
            "detail-type": "ECR Image Action",
            "source": "aws.ecr",
            "account": ACCOUNT,
            "time": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "region": REGION,
            "resources": [],
            "detail": {"result": "SUCCESS", "repository-name": self.repository, "image-digest": digest,
                       "action-type": "PUSH", "image-tag": tag}
        })
    }

    /// Records the push of `tag` (one push on every target) on `target` at `pushed` through
    /// the ledger's own begin, finish and transition: started a minute later, ending in `state`
    /// (SKIPPED never reached ECS) on revision `td`, its image labelled with a commit.
    pub async fn seeded(
        &self,
        target: &Target,
        tag: &str,
        pushed: chrono::DateTime<chrono::Utc>,
        state: State,
        td: &str,
    ) {
        let n = tag.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let push = ferry::model::Push {
            event_id: format!("event-{tag}"),
            registry_account: ACCOUNT.into(),
            registry_region: REGION.into(),
            repository: self.repository.clone(),
            tag: tag.into(),
            digest: format!("sha256:{n:016x}{}", "0".repeat(48)),
            pushed_at: pushed,
        };
        let ledger = self.ledger();
        let mut d = ferry::model::Deployment::new(&push, target.clone(), pushed + chrono::Duration::minutes(1));
        // Its image says it was built from commit `n` 35 minutes before the push.
        d.image_labels = ferry::model::ImageLabels {
            revision: Some(format!("{:016x}", n.rotate_left(29))),
            created: Some(pushed - chrono::Duration::minutes(35)),
        };
        let begun = ledger.begin(&d, "seed", d.created_at + chrono::Duration::minutes(10), d.created_at).await;
        assert!(matches!(begun, Ok(ferry::ports::Begin::Started)), "{tag}: {begun:?}");
        if state == State::Skipped {
            d.state = State::Skipped;
            ledger.finish(&d, "seed").await.expect("skipped");
            return;
        }
        (d.state, d.ecs_deployment_id, d.task_definition) =
            (State::InProgress, Some(unique("ecs-svc")), Some(td.to_string()));
        ledger.finish(&d, "seed").await.expect("in progress");
        d.state = state;
        d.updated_at = d.created_at + chrono::Duration::minutes(if state == State::Succeeded { 9 } else { 25 });
        d.live_at = (state == State::Succeeded).then_some(d.updated_at);
        let head = if state == State::Succeeded {
            ferry::ports::HeadChange::LastKnownGood
        } else {
            ferry::ports::HeadChange::Quarantine
        };
        assert!(ledger.transition(&d, &[State::InProgress], head).await.expect("verdict"), "{tag}");
    }

    pub fn target(&self) -> Target {
        let account = self.role.as_ref().map(|r| r.split(':').nth(4).expect("account").to_string());
        Target {
            environment: "staging".into(),
            account,
            region: REGION.into(),
            cluster: self.cluster.clone(),
            service: self.service.clone(),
            role_arn: self.role.clone(),
        }
    }

    /// The ledger as the test reads it (not recorded as the function's actions).
    pub fn ledger(&self) -> DynamoLedger {
        DynamoLedger::new(aws_sdk_dynamodb::Client::new(&self.home), &self.table)
    }

    /// The function's notifiers (recording their AWS actions).
    pub fn notifiers(&self) -> Notifiers {
        Notifiers {
            sns: Some(SnsNotifier::new(clients::sns(&self.home), &self.topic)),
            slack: Some(SlackNotifier::new(clients::secrets(&self.home), &self.secret)),
        }
    }

    pub async fn deploy(&self, config: &Config, event: Value, attempt: &str) -> DeployOutcome {
        // The function's clients record every AWS action they make.
        ferry_tests::acting_as("deploy");
        let ecs = clients::ecs_adapter(self.home.clone());
        let ledger = DynamoLedger::new(clients::dynamodb(&self.home), &self.table);
        let notifier = self.notifiers();
        let deployer = Deployer {
            config,
            ecs: &ecs,
            ledger: &ledger,
            notifier: &notifier,
            clock: &SystemClock,
            registry: &ferry::adapters::ecr::EcrRegistry::with_client(clients::ecr(&self.home)),
            settings: DeploySettings { poll: Duration::from_millis(20), ..DeploySettings::default() },
        };
        let invocation = Invocation { attempt: attempt.into(), deadline: None };
        deployer.handle(event, &invocation).await.expect("handled")
    }

    /// Deploys a fresh image of the world's repository; returns the ECS deployment id.
    pub async fn deployed(&self, config: &Config, tag: &str, layer: char) -> String {
        let event = self.push(tag, &layer.to_string().repeat(64)).await;
        match self.deploy(config, event, tag).await {
            DeployOutcome::Deployed(t) => match t.as_slice() {
                [TargetOutcome::Started { ecs_deployment_id, .. }] => ecs_deployment_id.clone(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    /// Runs the verify handler on `event` with the function's (recording) clients.
    pub async fn verify(&self, config: &Config, event: Value) -> VerifyOutcome {
        ferry_tests::acting_as("verify");
        let ecs = clients::ecs_adapter(self.home.clone());
        let ledger = DynamoLedger::new(clients::dynamodb(&self.home), &self.table);
        let bus = EventBridgeBus::new(clients::eventbridge(&self.home), "default");
        let balancers = ferry::adapters::elb::ElbAdapter::with_clients(ferry::adapters::aws::AwsClients::new(
            self.home.clone(),
            clients::elb,
        ));
        let alarms = ferry::adapters::cloudwatch::CloudWatchAdapter::with_clients(
            ferry::adapters::aws::AwsClients::new(self.home.clone(), clients::cloudwatch),
        );
        let verifier = Verifier {
            config,
            ecs: &ecs,
            balancers: &balancers,
            alarms: &alarms,
            ledger: &ledger,
            notifier: &self.notifiers(),
            bus: &bus,
            probe: &HttpProbe::default(),
            clock: &SystemClock,
            settings: VerifySettings::default(),
        };
        verifier.handle(event, &ferry::fakes::invocation("verify")).await.expect("handled")
    }

    /// Runs the rollback handler on `event` with the function's (recording) clients.
    pub async fn rollback(&self, config: &Config, event: Value) -> Vec<RollbackOutcome> {
        ferry_tests::acting_as("rollback");
        let ecs = clients::ecs_adapter(self.home.clone());
        let ledger = DynamoLedger::new(clients::dynamodb(&self.home), &self.table);
        Rollbacker {
            config,
            ecs: &ecs,
            ledger: &ledger,
            notifier: &self.notifiers(),
            clock: &SystemClock,
            settings: RollbackSettings::default(),
        }
        .handle(event, &ferry::fakes::invocation("rollback"))
        .await
        .expect("handled")
    }

    /// Completes the service's rollout in the emulator; returns ECS's COMPLETED event.
    pub async fn complete(&self) -> Value {
        self.emulator
            .control(
                "/_ferry/ecs/complete",
                json!({"region": REGION, "cluster": self.cluster, "service": self.service}),
            )
            .await
    }

    /// The events with `detail_type` that Ferry (source `ferry`) put on any bus, as
    /// EventBridge delivers them to a function, with the bus they went to under `bus`.
    pub async fn delivered(&self, detail_type: &str) -> Vec<Value> {
        let published = self.emulator.control("/_ferry/events/published?source=ferry", Value::Null).await;
        published["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["DetailType"] == detail_type)
            .map(|e| {
                let detail: Value = serde_json::from_str(e["Detail"].as_str().expect("detail")).expect("json");
                json!({"version": "0", "id": unique("event"), "detail-type": detail_type, "source": "ferry",
                       "account": ACCOUNT, "time": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                       "region": REGION, "resources": [], "detail": detail, "bus": e["EventBusName"]})
            })
            .collect()
    }

    /// The "Deployment Failed" events verify announced for this world's service.
    pub async fn failures_announced(&self) -> Vec<Value> {
        let mine = |e: &Value| e["detail"]["cluster"] == self.cluster.as_str();
        self.delivered("Deployment Failed").await.into_iter().filter(mine).collect()
    }

    /// Another service running the world's image: `service` in a new `cluster` of `region`.
    pub async fn another_service(&self, region: &str, cluster: &str, service: &str) {
        self.another_service_in(&self.home, ACCOUNT, region, cluster, service).await;
    }

    /// [`World::another_service`] in `account`, reached through `aws`.
    pub async fn another_service_in(&self, aws: &SdkConfig, account: &str, region: &str, cluster: &str, service: &str) {
        let aws = aws.to_builder().region(aws_config::Region::new(region.to_string())).build();
        let image = format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{}:staging-00000000", self.repository);
        create_service(&self.emulator, &aws, account, (cluster, service), &unique("api"), &image, 1).await;
    }

    pub async fn describe(&self) -> aws_sdk_ecs::types::Service {
        aws_sdk_ecs::Client::new(&self.aws)
            .describe_services()
            .cluster(&self.cluster)
            .services(&self.service)
            .send()
            .await
            .expect("describe")
            .services
            .and_then(|s| s.into_iter().next())
            .expect("service")
    }

    pub async fn task_definition(&self, arn: &str) -> (TaskDefinition, Vec<Tag>) {
        let out = aws_sdk_ecs::Client::new(&self.aws)
            .describe_task_definition()
            .task_definition(arn)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
            .expect("describe task definition");
        (out.task_definition.expect("td"), out.tags.unwrap_or_default())
    }

    /// Messages published to the topic, as the harness recorded them (with attributes).
    pub async fn sns_messages(&self) -> Vec<Value> {
        let published =
            self.emulator.control(&format!("/_ferry/sns/published?topic={}", self.topic), Value::Null).await;
        published["messages"].as_array().expect("messages").clone()
    }
}

/// The fields a new revision must keep: everything but identity, registration metadata
/// and the changed image.
pub fn comparable(mut td: TaskDefinition) -> TaskDefinition {
    td.task_definition_arn = None;
    td.revision = 0;
    td.registered_at = None;
    td.registered_by = None;
    if let Some(api) = td.container_definitions.as_mut().and_then(|c| c.iter_mut().find(|c| c.name() == Some("api"))) {
        api.image = None;
    }
    td
}
