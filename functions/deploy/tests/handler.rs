//! The deploy handler with in-memory ports: one test per rule of the deploy function.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use ferry::config::Config;
use ferry::deploy::{DeployOutcome, DeploySettings, Deployer, Invocation, Retryable, TargetOutcome};
use ferry::fakes::{FakeClock, FakeEcs, MemoryLedger, MemoryRegistry, RecordingNotifier, sample_event};
use ferry::model::{Head, Lock, State, Target};
use ferry::plan::Plan;
use ferry::ports::{Clock, EcsError, Image, Ledger, LedgerError};
use ferry::reconcile::Finding;
use serde_json::{Value, json};

const CONFIG: &str = r#"
[[environments]]
name = "staging"
rules = [{ glob = "staging-*" }]
targets = [{ region = "ap-southeast-1", cluster = "shop-staging" }]

[[environments]]
name = "production"
rules = [{ semver = "final" }]
targets = [
  { region = "eu-west-1", cluster = "shop-prod" },
  { region = "us-east-1", cluster = "shop-prod" },
]

[[services]]
repository = "shop/api"
name = "shop-{env}-api"
containers = ["api"]
notify = "shop-team"

[[services]]
repository = "shop/api"
name = "shop-{env}-worker"
containers = ["worker"]
environments = ["production"]

[[services]]
repository = "shop/db"
name = "shop-{env}-db"
containers = ["app"]
migration = { command = ["bin/migrate"], timeout_seconds = 60 }
"#;

const DIGEST: &str = "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234";
const OLD_IMAGE: &str = "123456789012.dkr.ecr.ap-southeast-1.amazonaws.com/shop/api@sha256:0000000000000000000000000000000000000000000000000000000000000000";
const PROXY: &str = "public.ecr.aws/envoy/envoy:v1.30";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 16, 1, 54, 40).single().expect("time")
}

/// The sample staging push, with the given id, tag, digest and push time.
fn push(id: &str, repository: &str, tag: &str, digest: &str, time: DateTime<Utc>) -> Value {
    let mut e = sample_event("ecr-push-staging.json");
    e["id"] = id.into();
    e["time"] = time.to_rfc3339().into();
    e["detail"]["repository-name"] = repository.into();
    e["detail"]["image-tag"] = tag.into();
    e["detail"]["image-digest"] = digest.into();
    e
}

fn digest(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

fn target(env: &str, region: &str, cluster: &str, service: &str) -> Target {
    Target {
        environment: env.into(),
        account: None,
        region: region.into(),
        cluster: cluster.into(),
        service: service.into(),
        role_arn: None,
    }
}

fn staging_api() -> Target {
    target("staging", "ap-southeast-1", "shop-staging", "shop-staging-api")
}

struct World {
    config: Config,
    ecs: FakeEcs,
    ledger: MemoryLedger,
    notifier: RecordingNotifier,
    clock: FakeClock,
    registry: MemoryRegistry,
}

impl World {
    fn new() -> World {
        let w = World {
            config: Config::parse("ferry.toml", CONFIG).expect("config"),
            ecs: FakeEcs::default(),
            ledger: MemoryLedger::default(),
            notifier: RecordingNotifier::default(),
            clock: FakeClock::at(t0()),
            registry: MemoryRegistry::default(),
        };
        w.ecs.add_service(&staging_api(), "shop-staging-api", &[("api", OLD_IMAGE), ("proxy", PROXY)]);
        w
    }

    fn deployer(&self) -> Deployer<'_, FakeEcs, MemoryLedger, RecordingNotifier, FakeClock, MemoryRegistry> {
        Deployer {
            config: &self.config,
            ecs: &self.ecs,
            ledger: &self.ledger,
            notifier: &self.notifier,
            clock: &self.clock,
            registry: &self.registry,
            settings: DeploySettings {
                lease: Duration::from_secs(900),
                lock_wait: Duration::from_secs(30),
                poll: Duration::from_secs(5),
            },
        }
    }

    async fn handle_as(&self, event: Value, attempt: &str) -> Result<DeployOutcome, Retryable> {
        let invocation =
            Invocation { attempt: attempt.into(), deadline: Some(self.clock.now() + Duration::from_secs(60)) };
        self.deployer().handle(event, &invocation).await
    }

    async fn handle(&self, event: Value) -> Result<DeployOutcome, Retryable> {
        self.handle_as(event, "attempt-1").await
    }

    fn states(&self) -> Vec<(String, State)> {
        self.ledger.records().iter().map(|d| (d.target.service.clone(), d.state)).collect()
    }
}

fn outcomes(outcome: Result<DeployOutcome, Retryable>) -> Vec<TargetOutcome> {
    match outcome {
        Ok(DeployOutcome::Deployed(targets)) => targets,
        other => panic!("expected deployments, got {other:?}"),
    }
}

#[tokio::test]
async fn a_push_deploys_only_the_configured_container_pinned_by_digest() {
    let w = World::new();
    let result = outcomes(w.handle(sample_event("ecr-push-staging.json")).await);
    assert_eq!(
        result,
        [TargetOutcome::Started {
            target: "shop-staging-api (shop-staging, ap-southeast-1)".into(),
            ecs_deployment_id: "ecs-svc/1".into()
        }]
    );

    let service = w.ecs.service_of(&staging_api()).expect("service");
    let image = format!("123456789012.dkr.ecr.ap-southeast-1.amazonaws.com/shop/api@{DIGEST}");
    assert_eq!(
        w.ecs.definition(&service.task_definition),
        [("api".into(), image.clone()), ("proxy".into(), PROXY.into())]
    );
    assert_eq!(
        w.ecs.calls(),
        [
            "DescribeServices shop-staging-api",
            "RegisterTaskDefinition shop-staging-api",
            "UpdateService shop-staging-api"
        ]
    );

    let [record] = w.ledger.records().try_into().expect("one record");
    assert_eq!(record.state, State::InProgress);
    assert_eq!(record.ecs_deployment_id.as_deref(), Some("ecs-svc/1"));
    assert_eq!(record.tag, "staging-1a2b3c4d");
    assert_eq!(record.digest, DIGEST);
    assert_eq!(record.image, image);
    assert_eq!(record.event_id, "13cde686-328b-6117-af20-0e5566167482");
    assert_eq!(record.target.environment, "staging");
    assert_eq!(
        record.previous_task_definition.as_deref(),
        Some("arn:aws:ecs:ap-southeast-1:123456789012:task-definition/shop-staging-api:1")
    );
    assert_eq!(record.task_definition.as_deref(), Some(service.task_definition.as_str()));

    let head = w.ledger.head(&staging_api()).await.expect("head");
    assert_eq!(head.lock, None, "the lock is released");
    assert_eq!(head.active, Some((record.id.clone(), DIGEST.into())));

    let [sent] = w.notifier.sent().try_into().expect("one message");
    assert_eq!(sent.deployment.state, State::InProgress);
    assert_eq!(sent.route.as_deref(), Some("shop-team"));
}

#[tokio::test]
async fn the_images_labels_name_its_commit_and_build_time_on_the_record_and_in_the_message() {
    let w = World::new();
    let created = chrono::DateTime::parse_from_rfc3339("2026-11-16T09:58:00Z").expect("time").to_utc();
    let revision = "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432";
    w.registry.label(DIGEST, ferry::model::ImageLabels { revision: Some(revision.into()), created: Some(created) });
    outcomes(w.handle(sample_event("ecr-push-staging.json")).await);
    let [record] = w.ledger.records().try_into().expect("one record");
    assert_eq!((record.image_labels.revision.as_deref(), record.image_labels.created), (Some(revision), Some(created)));
    let [sent] = w.notifier.sent().try_into().expect("one message");
    let fields = sent.slack()["blocks"][1]["fields"].to_string();
    assert!(fields.contains("*Commit*\\n`9f8e7d6c5b4a`"), "the label's commit, not the tag's 1a2b3c4d: {fields}");
}

#[tokio::test]
async fn labels_ecr_cannot_give_never_hold_a_push_up() {
    let w = World::new();
    w.registry.label(DIGEST, ferry::model::ImageLabels { revision: Some("9f8e7d6c".into()), created: None });
    w.registry.fail_labels(Some(ferry::ports::RegistryError::Transient("ThrottlingException".into())));
    let result = outcomes(w.handle(sample_event("ecr-push-staging.json")).await);
    assert!(matches!(result.as_slice(), [TargetOutcome::Started { .. }]), "{result:?}");
    let [record] = w.ledger.records().try_into().expect("one record");
    assert_eq!(record.image_labels, ferry::model::ImageLabels::default(), "deployed without them");
}

/// What the function answers Lambda (and `ferry redrive` prints): the outcome as JSON, by name.
#[tokio::test]
async fn the_outcome_is_answered_as_json_naming_each_targets_outcome() {
    let w = World::new();
    let outcome = w.handle(sample_event("ecr-push-staging.json")).await.expect("deployed");
    assert_eq!(
        serde_json::to_value(&outcome).expect("serializable"),
        json!({"outcome": "Deployed", "detail": [{
            "outcome": "Started",
            "target": "shop-staging-api (shop-staging, ap-southeast-1)",
            "ecs_deployment_id": "ecs-svc/1",
        }]})
    );
    let unplanned = w.handle(push("e2", "shop/api", "feature-x", DIGEST, t0())).await.expect("handled");
    assert_eq!(
        serde_json::to_value(&unplanned).expect("serializable"),
        json!({"outcome": "Unplanned", "detail": {"plan": "UnmatchedTag"}})
    );
}

#[tokio::test]
async fn a_push_fans_out_to_every_service_and_region_of_its_environment() {
    let w = World::new();
    let prod = [
        target("production", "eu-west-1", "shop-prod", "shop-production-api"),
        target("production", "us-east-1", "shop-prod", "shop-production-api"),
        target("production", "eu-west-1", "shop-prod", "shop-production-worker"),
        target("production", "us-east-1", "shop-prod", "shop-production-worker"),
    ];
    for t in &prod {
        w.ecs.add_service(t, &t.service, &[("api", OLD_IMAGE), ("worker", OLD_IMAGE), ("proxy", PROXY)]);
    }
    let result = outcomes(w.handle(push("e1", "shop/api", "v1.2.3", DIGEST, t0())).await);
    assert_eq!(result.len(), 4);
    assert!(result.iter().all(|o| matches!(o, TargetOutcome::Started { .. })), "{result:?}");
    for t in &prod {
        let service = w.ecs.service_of(t).expect("service");
        let containers = w.ecs.definition(&service.task_definition);
        let changed: Vec<&str> =
            containers.iter().filter(|(_, image)| image.ends_with(DIGEST)).map(|(name, _)| name.as_str()).collect();
        let expected = if t.service.ends_with("api") { ["api"] } else { ["worker"] };
        assert_eq!(changed, expected, "{t}");
    }
    assert_eq!(w.states().iter().filter(|(_, s)| *s == State::InProgress).count(), 4);
    assert_eq!(w.notifier.sent().len(), 4);
    assert_eq!(w.ecs.service_of(&staging_api()).expect("staging").deployments.len(), 1, "staging untouched");
}

#[tokio::test]
async fn the_same_event_delivered_again_changes_nothing_and_sends_nothing() {
    let w = World::new();
    w.handle(sample_event("ecr-push-staging.json")).await.expect("first");
    let calls = w.ecs.calls().len();
    for attempt in ["attempt-2", "attempt-3"] {
        let again = outcomes(w.handle_as(sample_event("ecr-push-staging.json"), attempt).await);
        assert_eq!(
            again,
            [TargetOutcome::Duplicate {
                target: "shop-staging-api (shop-staging, ap-southeast-1)".into(),
                state: State::InProgress
            }]
        );
    }
    assert_eq!(w.ecs.calls().len(), calls, "no ECS call on a duplicate");
    assert_eq!(w.ledger.records().len(), 1);
    assert_eq!(w.notifier.sent().len(), 1);
}

#[tokio::test]
async fn events_that_are_not_successful_pushes_are_acknowledged_without_action() {
    let w = World::new();
    for name in ["ecr-push-failed.json", "ecr-delete.json"] {
        assert!(matches!(w.handle(sample_event(name)).await, Ok(DeployOutcome::Ignored(_))), "{name}");
    }
    // Events the push rule never sends: rejected, by their source.
    for (name, source) in
        [("ecs-deployment-completed.json", "aws.ecs"), ("cloudwatch-alarm-state-change.json", "aws.cloudwatch")]
    {
        let outcome = w.handle(sample_event(name)).await;
        assert!(matches!(&outcome, Ok(DeployOutcome::Rejected(why)) if why.contains(source)), "{name}: {outcome:?}");
    }
    for malformed in [serde_json::json!("hello"), serde_json::json!({"detail-type": "ECR Image Action"}), {
        let mut e = sample_event("ecr-push-staging.json");
        e["detail"]["image-digest"] = "not-a-digest".into();
        e
    }] {
        let outcome = w.handle(malformed).await;
        assert!(matches!(&outcome, Ok(DeployOutcome::Ignored(why)) if why.starts_with("malformed")), "{outcome:?}");
    }
    assert!(w.ecs.calls().is_empty());
    assert!(w.ledger.records().is_empty());
    assert!(w.notifier.sent().is_empty());
}

#[tokio::test]
async fn an_unknown_repository_or_an_unmatched_tag_deploys_nothing() {
    let w = World::new();
    assert_eq!(
        w.handle(push("e1", "shop/web", "staging-1a2b3c4d", DIGEST, t0())).await,
        Ok(DeployOutcome::Unplanned(Plan::UnknownRepository))
    );
    assert_eq!(
        w.handle(push("e2", "shop/api", "feature-x", DIGEST, t0())).await,
        Ok(DeployOutcome::Unplanned(Plan::UnmatchedTag))
    );
    assert_eq!(
        w.handle(push("e3", "shop/api", "v1.0.0-rc.1", DIGEST, t0())).await,
        Ok(DeployOutcome::Unplanned(Plan::UnmatchedTag)),
        "a pre-release is not a final release"
    );
    assert!(w.ecs.calls().is_empty());
    assert!(w.ledger.records().is_empty());
    assert!(w.notifier.sent().is_empty());
}

#[tokio::test]
async fn a_digest_already_live_is_skipped_with_its_reason() {
    let w = World::new();
    w.handle(push("e1", "shop/api", "staging-1a2b3c4d", DIGEST, t0())).await.expect("first");
    // The same image pushed again under another tag.
    let again =
        outcomes(w.handle(push("e2", "shop/api", "staging-retag", DIGEST, t0() + Duration::from_secs(60))).await);
    let [TargetOutcome::Skipped { reason, .. }] = again.as_slice() else { panic!("{again:?}") };
    assert!(reason.contains("already live or in flight"), "{reason}");
    assert_eq!(w.ecs.count("UpdateService"), 1);
    assert_eq!(
        w.states(),
        [("shop-staging-api".into(), State::InProgress), ("shop-staging-api".into(), State::Skipped)]
    );
    assert_eq!(w.notifier.sent().len(), 1, "a routine skip sends nothing");
}

#[tokio::test]
async fn an_older_push_never_replaces_a_newer_one() {
    let w = World::new();
    let newer = push("newer", "shop/api", "staging-bbbbbbbb", &digest(2), t0() + Duration::from_secs(30));
    let older = push("older", "shop/api", "staging-aaaaaaaa", &digest(1), t0());
    w.handle(newer).await.expect("newer");
    let result = outcomes(w.handle(older).await);
    let [TargetOutcome::Skipped { reason, .. }] = result.as_slice() else { panic!("{result:?}") };
    assert!(reason.starts_with("stale"), "{reason}");
    let service = w.ecs.service_of(&staging_api()).expect("service");
    assert!(w.ecs.definition(&service.task_definition)[0].1.ends_with(&digest(2)), "the newer image stays live");
    assert_eq!(w.ecs.count("RegisterTaskDefinition"), 1);
}

#[tokio::test]
async fn a_locked_target_is_waited_for_then_retried_without_any_change() {
    let w = World::new();
    let holder =
        Lock { deployment: "other".into(), attempt: "other-attempt".into(), until: t0() + Duration::from_secs(600) };
    w.ledger.set_head(&staging_api(), Head { lock: Some(holder), ..Head::default() });
    let result = w.handle(sample_event("ecr-push-staging.json")).await;
    let Err(Retryable::Target { source, .. }) = result else { panic!("{result:?}") };
    assert!(matches!(&*source, Retryable::Busy(why) if why.contains("locked by deployment other")), "{source:?}");
    assert!(w.clock.now() >= t0() + Duration::from_secs(30), "it waited for the lock first");
    assert!(w.ecs.calls().is_empty(), "nothing touched while another deployment holds the target");
    assert!(w.ledger.records().is_empty());
}

#[tokio::test]
async fn a_lock_whose_holder_died_lapses_with_its_lease() {
    let w = World::new();
    let holder = Lock { deployment: "other".into(), attempt: "dead".into(), until: t0() + Duration::from_secs(10) };
    w.ledger.set_head(&staging_api(), Head { lock: Some(holder), ..Head::default() });
    let result = outcomes(w.handle(sample_event("ecr-push-staging.json")).await);
    assert!(matches!(result.as_slice(), [TargetOutcome::Started { .. }]), "{result:?}");
    assert!(w.clock.now() > t0() + Duration::from_secs(10));
}

#[tokio::test]
async fn two_pushes_for_one_target_never_interleave() {
    let w = World::new();
    let first = push("first", "shop/api", "staging-aaaaaaaa", &digest(1), t0());
    let second = push("second", "shop/api", "staging-bbbbbbbb", &digest(2), t0() + Duration::from_secs(1));
    let (a, b) = tokio::join!(w.handle_as(first, "a"), w.handle_as(second, "b"));
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    let calls = w.ecs.calls();
    let pairs: Vec<&[String]> = calls.chunks(3).collect();
    assert!(
        pairs.iter().all(|c| c[0].starts_with("DescribeServices")
            && c[1].starts_with("RegisterTaskDefinition")
            && c[2].starts_with("UpdateService")),
        "register/update steps interleaved: {calls:?}"
    );
    let service = w.ecs.service_of(&staging_api()).expect("service");
    assert!(w.ecs.definition(&service.task_definition)[0].1.ends_with(&digest(2)), "the newest push ends live");
}

#[tokio::test]
async fn a_retried_push_waits_on_the_migration_it_started_and_reuses_the_revision_it_registered() {
    let w = World::new();
    let db = target("staging", "ap-southeast-1", "shop-staging", "shop-staging-db");
    w.ecs.add_service(&db, "shop-staging-db", &[("app", OLD_IMAGE)]);
    let event = push("mig", "shop/db", "staging-aaaaaaaa", &digest(1), t0());
    // The first attempt starts the migration and loses ECS while it runs.
    w.ecs.fail("DescribeTasks", EcsError::Transient("ThrottlingException".into()));
    assert!(w.handle_as(event.clone(), "attempt-1").await.is_err());
    w.ecs.heal("DescribeTasks");
    let [(task, token)] = w.ecs.started_tasks().try_into().expect("one task");

    let result = outcomes(w.handle_as(event, "attempt-2").await);
    assert!(matches!(result.as_slice(), [TargetOutcome::Started { .. }]), "{result:?}");
    assert_eq!(w.ecs.started_tasks(), [(task, token.clone())], "one migration, waited on twice, never run twice");
    assert!(token.starts_with("ferry-migration-") && token.len() <= 64, "{token}");
    let live = w.ecs.service_of(&db).expect("db").task_definition;
    assert_eq!(live, "arn:aws:ecs:ap-southeast-1:123456789012:task-definition/shop-staging-db:2", "no second revision");
}

#[tokio::test]
async fn a_migration_that_overruns_is_stopped_and_nothing_is_updated() {
    let w = World::new();
    let db = target("staging", "ap-southeast-1", "shop-staging", "shop-staging-db");
    w.ecs.add_service(&db, "shop-staging-db", &[("app", OLD_IMAGE)]);
    w.ecs.set_migration_running(true);
    let result = outcomes(w.handle(push("slow", "shop/db", "staging-aaaaaaaa", &digest(1), t0())).await);
    let [TargetOutcome::Failed { reason, .. }] = result.as_slice() else { panic!("{result:?}") };
    assert!(reason.contains("did not finish within 60 s and was stopped"), "{reason}");
    assert_eq!((w.ecs.count("StopTask"), w.ecs.count("UpdateService")), (1, 0));
}

#[tokio::test]
async fn a_migration_once_per_environment_runs_at_its_first_target_and_the_others_wait_for_it() {
    let mut w = World::new();
    let text = CONFIG.replace("timeout_seconds = 60 }", "timeout_seconds = 60, once = \"environment\" }");
    w.config = Config::parse("ferry.toml", &text).expect("config");
    let eu = target("production", "eu-west-1", "shop-prod", "shop-production-db");
    let us = target("production", "us-east-1", "shop-prod", "shop-production-db");
    w.ecs.add_service(&eu, "shop-production-db", &[("app", OLD_IMAGE)]);
    w.ecs.add_service(&us, "shop-production-db", &[("app", OLD_IMAGE)]);
    let result = outcomes(w.handle(push("v1", "shop/db", "v1.2.3", &digest(1), t0())).await);
    assert!(result.iter().all(|t| matches!(t, TargetOutcome::Started { .. })), "{result:?}");
    assert_eq!(w.ecs.count("RunTask"), 1, "one migration for the environment: {:?}", w.ecs.calls());
    assert_eq!(w.ecs.started_tasks().len(), 1);
    assert_eq!(w.ecs.count("UpdateService"), 2);

    // A failing migration stops every target of the environment.
    w.ecs.set_migration_exit(2);
    let result = outcomes(w.handle(push("v2", "shop/db", "v1.2.4", &digest(2), t0() + Duration::from_secs(60))).await);
    assert!(result.iter().all(|t| matches!(t, TargetOutcome::Failed { .. })), "{result:?}");
    assert_eq!(w.ecs.count("UpdateService"), 2, "nothing updated");
}

#[tokio::test]
async fn a_migration_runs_first_and_a_failing_one_stops_the_deployment() {
    let w = World::new();
    let db = target("staging", "ap-southeast-1", "shop-staging", "shop-staging-db");
    w.ecs.add_service(&db, "shop-staging-db", &[("app", OLD_IMAGE)]);

    outcomes(w.handle(push("ok", "shop/db", "staging-aaaaaaaa", &digest(1), t0())).await);
    assert_eq!(
        w.ecs.calls(),
        [
            "DescribeServices shop-staging-db",
            "RegisterTaskDefinition shop-staging-db",
            "ListTasks shop-staging-db",
            "RunTask shop-staging-db",
            "DescribeTasks shop-staging-db",
            "UpdateService shop-staging-db"
        ]
    );

    w.ecs.set_migration_exit(3);
    let before = w.ecs.service_of(&db).expect("db");
    let result = outcomes(
        w.handle(push("bad", "shop/db", "staging-bbbbbbbb", &digest(2), t0() + Duration::from_secs(60))).await,
    );
    let [TargetOutcome::Failed { reason, .. }] = result.as_slice() else { panic!("{result:?}") };
    assert!(reason.contains("exited with code 3") && reason.contains("not updated"), "{reason}");
    assert_eq!(w.ecs.count("UpdateService"), 1, "the service was not updated");
    assert_eq!(w.ecs.service_of(&db).expect("db").task_definition, before.task_definition);
    let head = w.ledger.head(&db).await.expect("head");
    assert_eq!(head.lock, None, "the lock is released");
    assert_eq!(head.active.map(|(_, d)| d), Some(digest(1)), "the live deployment is still the last one");
    let last = w.notifier.sent().pop().expect("a message");
    assert_eq!((last.deployment.state, last.severity()), (State::Failed, "error"));
}

#[tokio::test]
async fn a_transient_failure_is_retried_and_the_redelivery_finishes_once() {
    let w = World::new();
    w.ecs.fail("UpdateService", EcsError::Transient("ThrottlingException".into()));
    let first = w.handle_as(sample_event("ecr-push-staging.json"), "attempt-1").await;
    assert!(
        matches!(&first, Err(Retryable::Target { source, .. })
        if matches!(&**source, Retryable::Ecs(EcsError::Transient(why)) if why.contains("ThrottlingException"))),
        "{first:?}"
    );
    assert_eq!(w.states(), [("shop-staging-api".into(), State::Pending)]);
    assert!(w.notifier.sent().is_empty());

    let head = w.ledger.head(&staging_api()).await.expect("head");
    assert_eq!(head.lock, None, "the failed attempt gave the lock up");

    w.ecs.heal("UpdateService");
    // Lambda redelivers the failed event; it need not wait for the first attempt's lease.
    let again = outcomes(w.handle_as(sample_event("ecr-push-staging.json"), "attempt-2").await);
    assert!(matches!(again.as_slice(), [TargetOutcome::Started { .. }]), "{again:?}");
    assert_eq!(w.states(), [("shop-staging-api".into(), State::InProgress)]);
    assert_eq!(w.ecs.service_of(&staging_api()).expect("service").deployments.len(), 2, "one rollout");
    assert_eq!(w.notifier.sent().len(), 1);
}

#[tokio::test]
async fn a_redelivery_after_the_service_was_updated_adopts_the_rollout() {
    // The first attempt's UpdateService went through, but its answer was lost.
    let w = World::new();
    w.ecs.fail("UpdateService", EcsError::Transient("timeout".into()));
    assert!(w.handle_as(sample_event("ecr-push-staging.json"), "attempt-1").await.is_err());
    w.ecs.heal("UpdateService");
    // Simulate the update having gone through although its answer was lost.
    let service = w.ecs.service_of(&staging_api()).expect("service");
    let revision = format!("{}:2", service.task_definition.rsplit_once(':').expect("revision").0);
    let registered = w.ecs.definition(&revision);
    assert_eq!(registered[0].1, format!("123456789012.dkr.ecr.ap-southeast-1.amazonaws.com/shop/api@{DIGEST}"));
    use ferry::ports::Ecs;
    let info = w.ecs.service(&staging_api()).await.expect("service");
    let rollout = w.ecs.update_service(&staging_api(), &info, &revision).await.expect("update");
    let calls_before = w.ecs.count("UpdateService");

    w.clock.advance(Duration::from_secs(120)); // the first attempt's lease has lapsed
    let again = outcomes(w.handle_as(sample_event("ecr-push-staging.json"), "attempt-2").await);
    assert!(
        matches!(again.as_slice(), [TargetOutcome::Started { ecs_deployment_id, .. }] if *ecs_deployment_id == rollout),
        "{again:?}"
    );
    assert_eq!(w.ecs.count("UpdateService"), calls_before, "no second update");
    assert_eq!(w.ecs.count("RegisterTaskDefinition"), 2, "no third revision");
}

#[tokio::test]
async fn a_missing_service_fails_the_target_clearly() {
    let w = World::new();
    let result = outcomes(w.handle(push("e1", "shop/api", "v1.2.3", DIGEST, t0())).await);
    assert_eq!(result.len(), 4);
    for outcome in &result {
        let TargetOutcome::Failed { reason, .. } = outcome else { panic!("{outcome:?}") };
        assert!(reason.starts_with("not found"), "{reason}");
    }
    assert!(w.states().iter().all(|(_, s)| *s == State::Failed));
    assert_eq!(w.notifier.sent().len(), 4);
}

#[tokio::test]
async fn a_notification_failure_is_recorded_and_never_fails_the_deployment() {
    let w = World::new();
    w.notifier.fail_with(Some("Slack (shop-team): HTTP 503"));
    let result = outcomes(w.handle(sample_event("ecr-push-staging.json")).await);
    assert!(matches!(result.as_slice(), [TargetOutcome::Started { .. }]));
    let [record] = w.ledger.records().try_into().expect("one record");
    assert_eq!(record.state, State::InProgress);
    assert_eq!(record.notify_error.as_deref(), Some("Slack (shop-team): HTTP 503"));
    // ...and it is not retried: a redelivery is a duplicate.
    w.notifier.fail_with(None);
    w.handle_as(sample_event("ecr-push-staging.json"), "attempt-2").await.expect("again");
    assert!(w.notifier.sent().is_empty());
}

#[tokio::test]
async fn an_unreachable_ledger_is_retried_before_anything_changes() {
    let w = World::new();
    w.ledger.fail(Some(LedgerError("ProvisionedThroughputExceededException".into())));
    let result = w.handle(sample_event("ecr-push-staging.json")).await;
    assert!(
        matches!(&result, Err(Retryable::Target { source, .. })
        if matches!(&**source, Retryable::Ledger(LedgerError(why)) if why.contains("ProvisionedThroughput"))),
        "{result:?}"
    );
    assert!(w.ecs.calls().is_empty());
}

#[tokio::test]
async fn a_service_already_running_the_image_out_of_band_is_skipped() {
    let w = World::new();
    let image = format!("123456789012.dkr.ecr.ap-southeast-1.amazonaws.com/shop/api@{DIGEST}");
    let w2 = World { ecs: FakeEcs::default(), ..w };
    w2.ecs.add_service(&staging_api(), "shop-staging-api", &[("api", image.as_str()), ("proxy", PROXY)]);
    let result = outcomes(w2.handle(sample_event("ecr-push-staging.json")).await);
    let [TargetOutcome::Skipped { reason, .. }] = result.as_slice() else { panic!("{result:?}") };
    assert!(reason.contains("already runs this image"), "{reason}");
    assert_eq!(w2.ecs.count("UpdateService"), 0);
    assert_eq!(w2.ledger.head(&staging_api()).await.expect("head").lock, None);
}

#[tokio::test]
async fn a_push_whose_outcome_cannot_be_recorded_gives_the_lock_up_and_the_redelivery_records_it() {
    let w = World::new();
    w.ledger.fail_only("finish", Some(LedgerError("InternalServerError".into())));
    let first = w.handle_as(sample_event("ecr-push-staging.json"), "attempt-1").await;
    assert!(
        matches!(&first, Err(Retryable::Target { source, .. })
        if matches!(&**source, Retryable::Ledger(LedgerError(why)) if why.contains("InternalServerError"))),
        "{first:?}"
    );
    assert_eq!(w.ecs.count("UpdateService"), 1, "the service was updated");
    assert_eq!(w.ledger.head(&staging_api()).await.expect("head").lock, None, "the lock was given up");

    w.ledger.fail_only("finish", None);
    // At once, not after the 900 s lease: the redelivery adopts the rollout it started.
    let again = outcomes(w.handle_as(sample_event("ecr-push-staging.json"), "attempt-2").await);
    assert!(
        matches!(again.as_slice(), [TargetOutcome::Started { ecs_deployment_id, .. }] if ecs_deployment_id == "ecs-svc/1"),
        "{again:?}"
    );
    assert_eq!(w.ecs.count("UpdateService"), 1, "no second update");
    assert_eq!(w.states(), [("shop-staging-api".into(), State::InProgress)]);
}

#[tokio::test]
async fn a_push_from_a_registry_ferry_does_not_take_images_from_is_rejected() {
    let mut w = World::new();
    w.config.home_account = Some("123456789012".into());
    let mut foreign = sample_event("ecr-push-staging.json");
    foreign["account"] = "999999999999".into();
    let outcome = w.handle(foreign).await;
    assert!(matches!(&outcome, Ok(DeployOutcome::Rejected(why)) if why.contains("999999999999")), "{outcome:?}");
    assert!(w.ecs.calls().is_empty() && w.ledger.records().is_empty());
    // Ferry's own registry is taken.
    assert!(matches!(
        outcomes(w.handle(sample_event("ecr-push-staging.json")).await).as_slice(),
        [TargetOutcome::Started { .. }]
    ));
}

#[tokio::test]
async fn an_environment_takes_images_only_from_its_registry_accounts_and_repositories() {
    let restricted = CONFIG.replacen(
        "name = \"production\"\n",
        "name = \"production\"\nregistry_accounts = [\"111111111111\"]\nrepositories = [\"shop/a*\"]\n",
        1,
    );
    let mut w = World::new();
    w.config = Config::parse("ferry.toml", &restricted).expect("config");
    w.config.home_account = Some("123456789012".into());
    let prod = target("production", "eu-west-1", "shop-prod", "shop-production-api");
    w.ecs.add_service(&prod, "api", &[("api", OLD_IMAGE), ("proxy", PROXY)]);

    // From Ferry's own registry: not one production takes.
    let outcome = w.handle(push("e1", "shop/api", "v1.2.3", DIGEST, t0())).await;
    assert!(
        matches!(&outcome, Ok(DeployOutcome::Unplanned(Plan::NotAllowed { environment, reason }))
            if environment == "production" && reason.contains("111111111111") && reason.contains("123456789012")),
        "{outcome:?}"
    );
    // From the release registry, but a repository production does not take.
    let mut db = push("e2", "shop/db", "v1.2.3", DIGEST, t0());
    db["account"] = "111111111111".into();
    let outcome = w.handle(db).await;
    assert!(
        matches!(&outcome, Ok(DeployOutcome::Unplanned(Plan::NotAllowed { reason, .. })) if reason.contains("shop/a*")),
        "{outcome:?}"
    );
    assert!(w.ecs.calls().is_empty() && w.ledger.records().is_empty(), "nothing touched");
    // Staging still takes Ferry's own registry; production its release registry.
    assert!(matches!(
        outcomes(w.handle(sample_event("ecr-push-staging.json")).await).as_slice(),
        [TargetOutcome::Started { .. }]
    ));
    let mut release = push("e3", "shop/api", "v1.2.3", DIGEST, t0());
    release["account"] = "111111111111".into();
    let result = outcomes(w.handle(release).await);
    assert!(
        result.iter().any(|o| matches!(o, TargetOutcome::Started { target, .. } if target.contains("production-api"))),
        "{result:?}"
    );
}

fn image(n: u8, tag: &str, pushed_at: DateTime<Utc>) -> Image {
    Image {
        digest: digest(n),
        tags: vec![tag.into()],
        pushed_at,
        registry_account: "123456789012".into(),
        registry_region: "ap-southeast-1".into(),
    }
}

fn scheduled(account: &str) -> Value {
    serde_json::json!({"version": "0", "id": "tick", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": account, "time": t0().to_rfc3339(), "region": "ap-southeast-1",
        "resources": ["arn:aws:events:ap-southeast-1:123456789012:rule/ferry-reconcile"], "detail": {}})
}

fn findings(outcome: Result<DeployOutcome, Retryable>) -> Vec<(String, Finding)> {
    match outcome {
        Ok(DeployOutcome::Reconciled(found)) => found.into_iter().map(|r| (r.tag, r.finding)).collect(),
        other => panic!("expected a reconciliation, got {other:?}"),
    }
}

#[tokio::test]
async fn reconciliation_deploys_a_push_whose_event_never_came_once() {
    let w = World::new();
    outcomes(w.handle(push("e1", "shop/api", "staging-00000001", &digest(1), t0())).await);
    w.registry.add("shop/api", image(1, "staging-00000001", t0()));
    // The next push's event is lost.
    w.registry.add("shop/api", image(2, "staging-00000002", t0() + Duration::from_secs(60)));
    w.registry.add("shop/api", image(3, "feature-x", t0() + Duration::from_secs(120)));

    let found = findings(w.handle(scheduled("123456789012")).await);
    let [(tag, Finding::Missed(Some(TargetOutcome::Started { .. })))] = found.as_slice() else { panic!("{found:?}") };
    assert_eq!(tag, "staging-00000002");
    let service = w.ecs.service_of(&staging_api()).expect("service");
    assert!(w.ecs.definition(&service.task_definition)[0].1.ends_with(&digest(2)), "the missed push is live");
    let replayed = w.ledger.records().into_iter().find(|d| d.digest == digest(2)).expect("on record");
    assert_eq!(replayed.event_id, ferry::reconcile::replay_event_id(&digest(2), "staging-00000002"));
    assert_eq!(replayed.pushed_at, t0() + Duration::from_secs(60), "at the image's own push time");

    // The next run, and the missed event arriving late after all: nothing more.
    let calls = w.ecs.calls().len();
    let again = findings(w.handle(scheduled("123456789012")).await);
    assert!(matches!(again.as_slice(), [(_, Finding::UpToDate(_))]), "{again:?}");
    let late = outcomes(
        w.handle(push("e2", "shop/api", "staging-00000002", &digest(2), t0() + Duration::from_secs(60))).await,
    );
    assert!(
        matches!(late.as_slice(), [TargetOutcome::Skipped { reason, .. }] if reason.contains("already live")),
        "{late:?}"
    );
    assert_eq!(w.ecs.calls().len(), calls, "no ECS call after the one deployment");
    assert_eq!(w.ecs.count("UpdateService"), 2);
}

#[tokio::test]
async fn reconciliation_leaves_alone_what_ferry_never_deployed_or_already_took() {
    let w = World::new();
    // A target Ferry never deployed: its first push will.
    w.registry.add("shop/api", image(1, "staging-00000001", t0()));
    let found = findings(w.handle(scheduled("123456789012")).await);
    assert_eq!(found, [("staging-00000001".to_string(), Finding::NeverDeployed)]);
    assert!(w.ecs.calls().is_empty() && w.ledger.records().is_empty());

    // The push's event came (at its push time or a second later): nothing to do.
    outcomes(w.handle(push("e1", "shop/api", "staging-00000001", &digest(1), t0() + Duration::from_secs(1))).await);
    let calls = w.ecs.calls().len();
    let found = findings(w.handle(scheduled("123456789012")).await);
    assert!(matches!(found.as_slice(), [(_, Finding::UpToDate(why))] if why.contains("no newer")), "{found:?}");
    assert_eq!(w.ecs.calls().len(), calls);

    // Another account's schedule, or a repository ECR does not show: nothing done.
    let mut w = w;
    w.config.home_account = Some("123456789012".into());
    assert!(matches!(w.handle(scheduled("999999999999")).await, Ok(DeployOutcome::Rejected(_))));
    let empty = World::new();
    assert!(findings(empty.handle(scheduled("123456789012")).await).is_empty(), "no repository in ECR: nothing");
}

#[tokio::test]
async fn a_reconciliation_dry_run_only_says_what_it_would_deploy() {
    let w = World::new();
    outcomes(w.handle(push("e1", "shop/api", "staging-00000001", &digest(1), t0())).await);
    w.registry.add("shop/api", image(2, "staging-00000002", t0() + Duration::from_secs(60)));
    let records = w.ledger.records();
    let calls = w.ecs.calls().len();
    let found = w.deployer().reconcile(&Invocation { attempt: "dry".into(), deadline: None }, true).await.expect("ran");
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].tag.as_str(), &found[0].finding), ("staging-00000002", &Finding::Missed(None)));
    assert_eq!(found[0].target, "shop-staging-api (shop-staging, ap-southeast-1)");
    assert_eq!(w.ledger.records(), records, "nothing recorded");
    assert_eq!(w.ecs.calls().len(), calls, "nothing deployed");
}

#[tokio::test]
async fn a_lock_taken_by_a_write_whose_answer_was_lost_is_given_up_for_the_redelivery() {
    let w = World::new();
    // The write that records PENDING and takes the lock goes through, but its answer is lost.
    let d = {
        use ferry::model::{Deployment, Push};
        let push = Push {
            event_id: "13cde686-328b-6117-af20-0e5566167482".into(),
            registry_account: "123456789012".into(),
            registry_region: "ap-southeast-1".into(),
            repository: "shop/api".into(),
            tag: "staging-1a2b3c4d".into(),
            digest: DIGEST.into(),
            pushed_at: chrono::DateTime::parse_from_rfc3339("2026-11-16T01:54:34Z").expect("time").into(),
        };
        Deployment::new(&push, staging_api(), w.clock.now())
    };
    let until = w.clock.now() + Duration::from_secs(900);
    w.ledger.begin(&d, "attempt-1", until, w.clock.now()).await.expect("applied");
    w.ledger.fail_only("begin", Some(LedgerError("timeout".into())));
    assert!(w.handle_as(sample_event("ecr-push-staging.json"), "attempt-1").await.is_err());
    assert_eq!(w.ledger.head(&staging_api()).await.expect("head").lock, None, "given up");

    w.ledger.fail_only("begin", None);
    let again = outcomes(w.handle_as(sample_event("ecr-push-staging.json"), "attempt-2").await);
    assert!(matches!(again.as_slice(), [TargetOutcome::Started { .. }]), "{again:?}");
    assert_eq!(w.ecs.count("UpdateService"), 1);
}

#[tokio::test]
async fn an_update_whose_answer_is_lost_is_not_repeated() {
    // UpdateService goes through but its answer never comes: the deploy looks at the service
    // and finds its own rollout there, instead of updating again.
    let w = World::new();
    w.ecs.lose_update_answers(true);
    let result = outcomes(w.handle(sample_event("ecr-push-staging.json")).await);
    let [TargetOutcome::Started { ecs_deployment_id, .. }] = result.as_slice() else { panic!("{result:?}") };
    assert_eq!(w.ecs.count("UpdateService"), 1, "not repeated");
    let service = w.ecs.service_of(&staging_api()).expect("service");
    assert_eq!(service.deployments.last().map(|d| &d.id), Some(ecs_deployment_id));
    assert_eq!(w.states(), [("shop-staging-api".into(), State::InProgress)]);
}

#[tokio::test]
async fn an_update_that_failed_without_taking_effect_is_tried_again() {
    let w = World::new();
    w.ecs.fail("UpdateService", EcsError::Transient("ThrottlingException".into()));
    let first = w.handle_as(sample_event("ecr-push-staging.json"), "attempt-1").await;
    assert!(first.is_err());
    assert_eq!(w.ecs.count("UpdateService"), 3, "three tries, each after seeing the service unchanged");
    assert_eq!(w.ecs.count("DescribeServices"), 1 + 3);
}

#[tokio::test]
async fn reconciliation_deploys_again_a_push_every_attempt_at_which_failed() {
    let w = World::new();
    w.registry.add("shop/api", image(1, "staging-00000001", t0()));
    // ECS is unreachable for the event's three deliveries: the push stays PENDING.
    w.ecs.fail("DescribeServices", EcsError::Transient("ServiceUnavailable".into()));
    for attempt in ["attempt-1", "attempt-2", "attempt-3"] {
        let result = w.handle_as(push("e1", "shop/api", "staging-00000001", &digest(1), t0()), attempt).await;
        assert!(result.is_err(), "{result:?}");
    }
    assert_eq!(w.states(), [("shop-staging-api".to_string(), State::Pending)]);
    w.ecs.heal("DescribeServices");

    // Within the lease an invocation may still hold it: left alone.
    let found = findings(w.handle(scheduled("123456789012")).await);
    assert!(matches!(found.as_slice(), [(_, Finding::UpToDate(_))]), "{found:?}");
    assert_eq!(w.ecs.count("UpdateService"), 0);

    // Past the lease, the schedule deploys it from its record, once.
    w.clock.advance(Duration::from_secs(901));
    let found = findings(w.handle(scheduled("123456789012")).await);
    let [(tag, Finding::Stranded(Some(TargetOutcome::Started { .. })))] = found.as_slice() else { panic!("{found:?}") };
    assert_eq!(tag, "staging-00000001");
    let [record] = w.ledger.records().try_into().expect("one record");
    assert_eq!((record.state, record.event_id.as_str()), (State::InProgress, "e1"), "the push's own record");
    let again = findings(w.handle(scheduled("123456789012")).await);
    assert!(matches!(again.as_slice(), [(_, Finding::UpToDate(_))]), "{again:?}");
    assert_eq!(w.ecs.count("UpdateService"), 1);
}

#[tokio::test]
async fn two_images_pushed_in_one_second_are_ordered_by_ecrs_push_time_not_by_arrival() {
    let w = World::new();
    let second = t0() + Duration::from_secs(60);
    // ECR keeps the push times to the millisecond; the events say the second only.
    w.registry.add("shop/api", image(1, "staging-00000001", second + Duration::from_millis(200)));
    w.registry.add("shop/api", image(2, "staging-00000002", second + Duration::from_millis(800)));
    // The later push's event arrives first.
    let later = outcomes(w.handle(push("e2", "shop/api", "staging-00000002", &digest(2), second)).await);
    assert!(matches!(later.as_slice(), [TargetOutcome::Started { .. }]), "{later:?}");
    let earlier = outcomes(w.handle(push("e1", "shop/api", "staging-00000001", &digest(1), second)).await);
    assert!(
        matches!(earlier.as_slice(), [TargetOutcome::Skipped { reason, .. }] if reason.starts_with("stale")),
        "{earlier:?}"
    );
    let service = w.ecs.service_of(&staging_api()).expect("service");
    assert!(w.ecs.definition(&service.task_definition)[0].1.ends_with(&digest(2)), "the image pushed last is live");
    assert_eq!(w.ecs.count("UpdateService"), 1);
}
