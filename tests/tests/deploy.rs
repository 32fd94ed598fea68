//! The deploy function's handler with real SDK clients against the local AWS emulator:
//! an ECR push ends with the service on a new revision, the ledger holding the record,
//! and the messages delivered to SNS and to a local Slack sink.

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
use ferry::adapters::notifiers::{Notifiers, SlackNotifier, SnsNotifier};
use ferry::config::Config;
use ferry::deploy::{DeploySettings, Deployer, Invocation, Outcome, TargetOutcome};
use ferry::model::{State, Target};
use ferry::ports::{Ledger, SystemClock};
use ferry_tests::{Emulator, HttpSink, clients, recorded, save_recorded, unique};
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "ap-southeast-1";
const PROXY: &str = "public.ecr.aws/envoy/envoy:v1.30.1";

/// Everything one scenario needs in the emulator, under names no other test uses.
struct World {
    emulator: Emulator,
    /// Ferry's own account: ledger, topic, secret, ECR.
    home: SdkConfig,
    /// The account the ECS service is in (the home account unless a role is used).
    aws: SdkConfig,
    role: Option<String>,
    table: String,
    topic: String,
    secret: String,
    sink: HttpSink,
    repository: String,
    cluster: String,
    service: String,
    family: String,
}

async fn create_table(aws: &SdkConfig, table: &str) {
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
fn rich_containers(app_image: &str) -> Vec<ContainerDefinition> {
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
async fn in_account(base: &SdkConfig, role: &str) -> SdkConfig {
    let provider =
        aws_config::sts::AssumeRoleProvider::builder(role).session_name("ferry-tests").configure(base).build().await;
    base.to_builder().credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(provider)).build()
}

impl World {
    async fn new() -> World {
        Self::in_account(None).await
    }

    /// The world's ECS cluster and service in the account `role` is in (else the default).
    async fn in_account(role: Option<&str>) -> World {
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
        let ecs = aws_sdk_ecs::Client::new(&aws);
        ecs.create_cluster().cluster_name(&cluster).send().await.expect("cluster");
        let old_image = format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repository}:staging-00000000");
        let td = ecs
            .register_task_definition()
            .family(&family)
            .set_container_definitions(Some(rich_containers(&old_image)))
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
        let account = role.map_or(ACCOUNT, |r| r.split(':').nth(4).expect("account"));
        let network = emulator
            .control(&format!("/_ferry/ec2/default-network?region={REGION}&account={account}"), Value::Null)
            .await;
        let strings = |v: &Value| {
            v.as_array().expect("list").iter().map(|s| s.as_str().expect("id").to_string()).collect::<Vec<_>>()
        };
        let service = "shop-staging-api".to_string();
        ecs.create_service()
            .cluster(&cluster)
            .service_name(&service)
            .task_definition(&td)
            .desired_count(2)
            .launch_type(LaunchType::Fargate)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(
                        AwsVpcConfiguration::builder()
                            .set_subnets(Some(strings(&network["subnets"])))
                            .set_security_groups(Some(strings(&network["securityGroups"])))
                            .build()
                            .expect("vpc"),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("service");
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

    fn config(&self, migration: bool) -> Config {
        let migration =
            if migration { "migration = { command = [\"bin/migrate\", \"up\"], timeout_seconds = 60 }" } else { "" };
        Config::parse(
            "ferry.toml",
            &format!(
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
            ),
        )
        .expect("config")
    }

    /// Pushes an image to ECR and returns the "ECR Image Action" event AWS would send.
    async fn push(&self, tag: &str, layer: &str) -> Value {
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023, "digest": format!("sha256:{}", "c".repeat(64))},
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

    fn target(&self) -> Target {
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
    fn ledger(&self) -> DynamoLedger {
        DynamoLedger::new(aws_sdk_dynamodb::Client::new(&self.home), &self.table)
    }

    async fn deploy(&self, config: &Config, event: Value, attempt: &str) -> Outcome {
        // The function's clients record every AWS action they make.
        let ecs = clients::ecs_adapter(self.home.clone());
        let ledger = DynamoLedger::new(clients::dynamodb(&self.home), &self.table);
        let notifier = Notifiers {
            sns: Some(SnsNotifier::new(clients::sns(&self.home), &self.topic)),
            slack: Some(SlackNotifier::new(clients::secrets(&self.home), &self.secret)),
        };
        let deployer = Deployer {
            config,
            ecs: &ecs,
            ledger: &ledger,
            notifier: &notifier,
            clock: &SystemClock,
            settings: DeploySettings { poll: Duration::from_millis(20), ..DeploySettings::default() },
        };
        let invocation = Invocation { attempt: attempt.into(), deadline: None };
        deployer.handle(event, &invocation).await.expect("handled")
    }

    async fn describe(&self) -> aws_sdk_ecs::types::Service {
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

    async fn task_definition(&self, arn: &str) -> (TaskDefinition, Vec<Tag>) {
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
    async fn sns_messages(&self) -> Vec<Value> {
        let published =
            self.emulator.control(&format!("/_ferry/sns/published?topic={}", self.topic), Value::Null).await;
        published["messages"].as_array().expect("messages").clone()
    }
}

/// The fields a new revision must keep: everything but identity, registration metadata
/// and the changed image.
fn comparable(mut td: TaskDefinition) -> TaskDefinition {
    td.task_definition_arn = None;
    td.revision = 0;
    td.registered_at = None;
    td.registered_by = None;
    if let Some(api) = td.container_definitions.as_mut().and_then(|c| c.iter_mut().find(|c| c.name() == Some("api"))) {
        api.image = None;
    }
    td
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ecr_push_deploys_the_digest_records_it_and_notifies_once() {
    let w = World::new().await;
    let config = w.config(false);
    let before = w.describe().await;
    let event = w.push("staging-1a2b3c4d", &"a".repeat(64)).await;
    let digest = event["detail"]["image-digest"].as_str().expect("digest").to_string();

    let outcome = w.deploy(&config, event.clone(), "attempt-1").await;
    let Outcome::Deployed(targets) = &outcome else { panic!("{outcome:?}") };
    let [TargetOutcome::Started { ecs_deployment_id, .. }] = targets.as_slice() else { panic!("{outcome:?}") };

    // The service runs a new revision whose only change is the api image, pinned by digest.
    let after = w.describe().await;
    let new_arn = after.task_definition.clone().expect("td");
    assert_ne!(Some(new_arn.clone()), before.task_definition);
    let primary = after.deployments().iter().find(|d| d.status() == Some("PRIMARY")).expect("primary");
    assert_eq!(primary.id.as_deref(), Some(ecs_deployment_id.as_str()));
    assert_eq!(primary.task_definition.as_deref(), Some(new_arn.as_str()));
    let breaker =
        after.deployment_configuration.as_ref().and_then(|c| c.deployment_circuit_breaker.as_ref()).expect("breaker");
    assert!(breaker.enable && breaker.rollback, "circuit breaker on, with rollback");

    let (old, old_tags) = w.task_definition(before.task_definition.as_deref().expect("old")).await;
    let (new, new_tags) = w.task_definition(&new_arn).await;
    let image = |td: &TaskDefinition, name: &str| {
        td.container_definitions().iter().find(|c| c.name() == Some(name)).and_then(|c| c.image.clone()).expect("image")
    };
    assert_eq!(image(&new, "api"), format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{}@{digest}", w.repository));
    assert_eq!(image(&new, "proxy"), PROXY, "the sidecar is unchanged");
    assert_eq!(new.family(), Some(w.family.as_str()));
    assert_eq!(comparable(new), comparable(old), "every other field survives the render");
    assert_eq!(new_tags, old_tags, "tags survive the render");

    // The ledger holds the record, findable by the ECS deployment id.
    let ledger = w.ledger();
    let target = w.target();
    let [record] = ledger.history(&target, 10).await.expect("history").try_into().expect("one record");
    assert_eq!(record.state, State::InProgress);
    assert_eq!(record.digest, digest);
    assert_eq!(record.tag, "staging-1a2b3c4d");
    assert_eq!(record.task_definition.as_deref(), Some(new_arn.as_str()));
    assert_eq!(record.previous_task_definition, before.task_definition);
    assert_eq!(
        ledger.by_ecs_deployment(ecs_deployment_id).await.expect("lookup").map(|d| d.id),
        Some(record.id.clone())
    );
    let head = ledger.head(&target).await.expect("head");
    assert_eq!(head.lock, None);
    assert_eq!(head.active, Some((record.id.clone(), digest.clone())));

    // One message each on Slack and SNS.
    let slack = w.sink.bodies("/slack");
    assert_eq!(slack.len(), 1, "{slack:?}");
    let slack: Value = serde_json::from_str(&slack[0]).expect("slack json");
    assert_eq!(slack["text"], format!("shop-staging-api deploying: {}:staging-1a2b3c4d to staging", w.repository));
    assert_eq!(slack["blocks"][0]["type"], "header");
    let sns = w.sns_messages().await;
    assert_eq!(sns.len(), 1, "{sns:?}");
    let facts: Value = serde_json::from_str(sns[0]["message"].as_str().expect("message")).expect("facts");
    assert_eq!((facts["status"].as_str(), facts["digest"].as_str()), (Some("IN_PROGRESS"), Some(digest.as_str())));
    assert_eq!(
        sns[0]["attributes"],
        json!({"environment": "staging", "service": "shop-staging-api", "status": "IN_PROGRESS", "severity": "info"})
    );

    // The same event again: nothing changes, nothing is sent.
    let again = w.deploy(&config, event, "attempt-2").await;
    assert!(
        matches!(&again, Outcome::Deployed(t) if matches!(t.as_slice(), [TargetOutcome::Duplicate { .. }])),
        "{again:?}"
    );
    assert_eq!(w.describe().await.task_definition, Some(new_arn));
    assert_eq!(ledger.history(&target, 10).await.expect("history").len(), 1);
    assert_eq!(w.sink.bodies("/slack").len(), 1);
    assert_eq!(w.sns_messages().await.len(), 1);

    save_recorded("deploy", "push", &recorded());
    drop(w.emulator);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_migration_leaves_the_service_untouched() {
    let w = World::new().await;
    let config = w.config(true);
    let before = w.describe().await;
    w.emulator.control("/_ferry/ecs/exit-codes", json!({"region": REGION, "exitCode": 1})).await;
    let event = w.push("staging-deadbeef", &"b".repeat(64)).await;
    let outcome = w.deploy(&config, event.clone(), "attempt-1").await;
    w.emulator.control("/_ferry/ecs/exit-codes", json!({"region": REGION, "exitCode": 0})).await;

    let Outcome::Deployed(targets) = &outcome else { panic!("{outcome:?}") };
    let [TargetOutcome::Failed { reason, .. }] = targets.as_slice() else { panic!("{outcome:?}") };
    assert!(reason.contains("exited with code 1"), "{reason}");
    let after = w.describe().await;
    assert_eq!(after.task_definition, before.task_definition, "the service was not updated");
    assert_eq!(after.deployments().len(), 1);

    let target = w.target();
    let ledger = w.ledger();
    let [record] = ledger.history(&target, 10).await.expect("history").try_into().expect("one record");
    assert_eq!(record.state, State::Failed);
    assert_eq!(ledger.head(&target).await.expect("head").lock, None, "lock released");
    let sns = w.sns_messages().await;
    assert_eq!(sns.len(), 1);
    assert_eq!(sns[0]["attributes"]["status"], "FAILED");
    assert_eq!(sns[0]["attributes"]["severity"], "error");

    // With a migration that succeeds, the next push deploys.
    let event = w.push("staging-cafef00d", &"d".repeat(64)).await;
    let outcome = w.deploy(&config, event, "attempt-2").await;
    assert!(
        matches!(&outcome, Outcome::Deployed(t) if matches!(t.as_slice(), [TargetOutcome::Started { .. }])),
        "{outcome:?}"
    );
    save_recorded("deploy", "migration", &recorded());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_in_another_account_is_deployed_through_the_assumed_role() {
    let role = "arn:aws:iam::210987654321:role/ferry-target";
    let w = World::in_account(Some(role)).await;
    let config = w.config(false);
    let before = w.describe().await;
    let event = w.push("staging-0badf00d", &"e".repeat(64)).await;
    let outcome = w.deploy(&config, event, "attempt-1").await;
    assert!(
        matches!(&outcome, Outcome::Deployed(t) if matches!(t.as_slice(), [TargetOutcome::Started { .. }])),
        "{outcome:?}"
    );

    let after = w.describe().await;
    assert_ne!(after.task_definition, before.task_definition, "the service in the other account moved");
    assert!(after.task_definition.as_deref().is_some_and(|td| td.contains(":210987654321:")), "{after:?}");
    // The home account has no such cluster: the deploy really acted through the role.
    let home =
        aws_sdk_ecs::Client::new(&w.home).describe_services().cluster(&w.cluster).services(&w.service).send().await;
    assert!(home.map_or(true, |o| o.services().is_empty()), "nothing in the home account");
    let [record] = w.ledger().history(&w.target(), 10).await.expect("history").try_into().expect("one record");
    assert_eq!(record.target.account.as_deref(), Some("210987654321"));
    assert_eq!(record.state, State::InProgress);
    // The role is assumed through STS inside the credentials provider, which the recorder
    // cannot see; the infra check learns of sts:AssumeRole from the code instead.
    save_recorded("deploy", "cross-account", &recorded());
}
