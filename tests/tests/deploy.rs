//! The deploy function's handler with real SDK clients against the local AWS emulator:
//! an ECR push ends with the service on a new revision, the ledger holding the record,
//! and the messages delivered to SNS and to a local Slack sink.

mod common;

use aws_sdk_ecs::types::{Tag, TaskDefinition};
use common::{ACCOUNT, PROXY, REGION, World, comparable};
use ferry::deploy::{DeployOutcome, TargetOutcome};
use ferry::model::State;
use ferry::ports::Ledger;
use ferry_tests::{recorded, save_recorded};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn an_ecr_push_deploys_the_digest_records_it_and_notifies_once() {
    let w = World::new().await;
    let config = w.config(false);
    let before = w.describe().await;
    let event = w.push("staging-1a2b3c4d", &"a".repeat(64)).await;
    let digest = event["detail"]["image-digest"].as_str().expect("digest").to_string();

    let outcome = w.deploy(&config, event.clone(), "attempt-1").await;
    let DeployOutcome::Deployed(targets) = &outcome else { panic!("{outcome:?}") };
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
    // The ledger holds the record, findable by the ECS deployment id.
    let ledger = w.ledger();
    let record = ledger.by_ecs_deployment(ecs_deployment_id).await.expect("lookup").expect("record");
    let mut expected = old_tags.clone();
    expected.push(Tag::builder().key("ferry:deployment").value(&record.id).build());
    assert_eq!(new_tags, expected, "tags survive the render; the revision names its deployment");
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
        matches!(&again, DeployOutcome::Deployed(t) if matches!(t.as_slice(), [TargetOutcome::Duplicate { .. }])),
        "{again:?}"
    );
    assert_eq!(w.describe().await.task_definition, Some(new_arn));
    assert_eq!(ledger.history(&target, 10).await.expect("history").len(), 1);
    assert_eq!(w.sink.bodies("/slack").len(), 1);
    assert_eq!(w.sns_messages().await.len(), 1);

    save_recorded("deploy", "push", &recorded("deploy"));
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

    let DeployOutcome::Deployed(targets) = &outcome else { panic!("{outcome:?}") };
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
        matches!(&outcome, DeployOutcome::Deployed(t) if matches!(t.as_slice(), [TargetOutcome::Started { .. }])),
        "{outcome:?}"
    );
    save_recorded("deploy", "migration", &recorded("deploy"));
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
        matches!(&outcome, DeployOutcome::Deployed(t) if matches!(t.as_slice(), [TargetOutcome::Started { .. }])),
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
    save_recorded("deploy", "cross-account", &recorded("deploy"));
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_down_is_recorded_without_the_webhook_and_never_fails_the_deployment() {
    let w = World::new().await;
    let config = w.config(false);
    w.sink.answer_with(503);
    let event = w.push("staging-5ac4d0a1", &"f".repeat(64)).await;
    let outcome = w.deploy(&config, event.clone(), "attempt-1").await;
    assert!(
        matches!(&outcome, DeployOutcome::Deployed(t) if matches!(t.as_slice(), [TargetOutcome::Started { .. }])),
        "{outcome:?}"
    );
    assert_eq!(w.sink.hits("/slack"), 2, "retried once, briefly");
    let [record] = w.ledger().history(&w.target(), 10).await.expect("history").try_into().expect("one record");
    assert_eq!(record.state, State::InProgress);
    assert_eq!(record.notify_error.as_deref(), Some("Slack (default): HTTP 503"));
    assert!(!format!("{record:?}").contains(&w.sink.url), "the webhook URL is a secret");
    assert_eq!(w.sns_messages().await.len(), 1, "SNS still got its message");

    // Redelivered: still one deployment, and no second attempt at the message.
    w.sink.answer_with(200);
    w.deploy(&config, event, "attempt-2").await;
    assert_eq!(w.sink.hits("/slack"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn reconciliation_finds_a_push_whose_event_never_came_and_deploys_it_once() {
    let w = World::new().await;
    let config = w.config(false);
    let first = w.push("staging-00000001", &"1".repeat(64)).await;
    w.deploy(&config, first, "attempt-1").await;
    // ECR keeps push times to the second: the lost push comes a second later.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let lost = w.push("staging-00000002", &"2".repeat(64)).await;
    let lost_digest = lost["detail"]["image-digest"].as_str().expect("digest").to_string();

    let tick = json!({"version": "0", "id": "tick-1", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": ACCOUNT, "time": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(), "region": REGION,
        "resources": [format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/ferry-reconcile")], "detail": {}});
    let outcome = w.deploy(&config, tick.clone(), "tick-1").await;
    let DeployOutcome::Reconciled(found) = &outcome else { panic!("{outcome:?}") };
    let [found] = found.as_slice() else { panic!("{found:?}") };
    assert_eq!((found.tag.as_str(), found.digest.as_str()), ("staging-00000002", lost_digest.as_str()));
    assert!(
        matches!(&found.finding, ferry::reconcile::Finding::Missed(Some(TargetOutcome::Started { .. }))),
        "{found:?}"
    );
    let live = w.describe().await.task_definition.expect("td");
    let (td, _) = w.task_definition(&live).await;
    let api = td.container_definitions().iter().find(|c| c.name() == Some("api")).and_then(|c| c.image.clone());
    assert!(api.is_some_and(|i| i.ends_with(&lost_digest)), "the lost push is live");

    // The next run finds nothing to do, and the event arriving late after all is skipped.
    let again = w.deploy(&config, tick, "tick-2").await;
    assert!(
        matches!(&again, DeployOutcome::Reconciled(f) if matches!(f.as_slice(), [r] if matches!(r.finding, ferry::reconcile::Finding::UpToDate(_)))),
        "{again:?}"
    );
    let late = w.deploy(&config, lost.clone(), "attempt-late").await;
    assert!(
        matches!(&late, DeployOutcome::Deployed(t) if matches!(t.as_slice(), [TargetOutcome::Skipped { .. }])),
        "{late:?}"
    );
    let records = w.ledger().history(&w.target(), 10).await.expect("history");
    let state_of = |event: &str| records.iter().find(|r| r.event_id.starts_with(event)).map(|r| r.state);
    assert_eq!(records.len(), 3, "{records:?}");
    assert_eq!(state_of("ferry-replay-"), Some(State::InProgress), "the one deployment of the lost push");
    assert_eq!(state_of(lost["id"].as_str().expect("id")), Some(State::Skipped), "its late event");
    save_recorded("deploy", "reconcile", &recorded("deploy"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_reuses_its_revision_and_finds_its_migration_by_its_token() {
    use ferry::ports::{Ecs, Revision};
    use ferry::render::ImageChange;
    let w = World::new().await;
    let config = w.config(true);
    let migration = config.services[0].migration.clone().expect("migration");
    ferry_tests::acting_as("deploy");
    let ecs = ferry_tests::clients::ecs_adapter(w.home.clone());
    let t = w.target();
    let service = ecs.service(&t).await.expect("service");
    let image = format!("{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{}@sha256:{}", w.repository, "e".repeat(64));
    let change = ImageChange { containers: vec!["api".into()], image };
    let register = |deployment: &'static str| {
        let (ecs, t, service, change) = (&ecs, &t, &service, &change);
        async move { ecs.register_revision(t, &service.task_definition, change, deployment).await.expect("register") }
    };
    let Revision::Registered(first) = register("deployment-1").await else { panic!("registered") };
    assert_eq!(register("deployment-1").await, Revision::Registered(first.clone()), "reused, not registered again");
    let Revision::Registered(other) = register("deployment-2").await else { panic!("registered") };
    assert_ne!(other, first, "another deployment registers its own");

    let token = "ferry-migration-0123456789abcdef";
    assert_eq!(ecs.find_task(&t, token).await.expect("list"), None);
    let task = ecs.run_task(&t, &service, &first, &migration, token).await.expect("run");
    assert_eq!(ecs.find_task(&t, token).await.expect("list"), Some(task.clone()), "a retry finds it running");
    ecs.stop_task(&t, &task, "ferry: the migration overran its 60 s").await.expect("stop");
    let exit = loop {
        if let Some(exit) = ecs.task_exit(&t, &task, &migration.container).await.expect("describe") {
            break exit;
        }
    };
    assert!(exit.reason.contains("overran"), "{exit:?}");
    assert_eq!(ecs.find_task(&t, token).await.expect("list"), Some(task), "and finds it stopped");
    save_recorded("deploy", "migration-retry", &recorded("deploy"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_images_labels_are_read_from_its_config_as_a_registry_client_reads_them() {
    let w = World::new().await;
    let config = w.config(false);
    let labels = json!({"org.opencontainers.image.revision": "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432",
                        "org.opencontainers.image.created": "2026-11-16T09:58:00Z", "maintainer": "shop"});
    let event = w.push_labelled("staging-9f8e7d6c", &"e".repeat(64), labels).await;
    let outcome = w.deploy(&config, event, "labelled").await;
    assert!(
        matches!(&outcome, DeployOutcome::Deployed(t) if matches!(t.as_slice(), [TargetOutcome::Started { .. }])),
        "{outcome:?}"
    );
    let [record] = w.ledger().history(&w.target(), 10).await.expect("history").try_into().expect("one record");
    assert_eq!(record.image_labels.revision.as_deref(), Some("9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"));
    assert_eq!(record.image_labels.created.map(|c| c.to_rfc3339()).as_deref(), Some("2026-11-16T09:58:00+00:00"));
    save_recorded("deploy", "labelled", &recorded("deploy"));

    // An image whose config was never uploaded deploys all the same, without labels.
    let plain = w.push("staging-0000a0a0", &"f".repeat(64)).await;
    let outcome = w.deploy(&config, plain, "plain").await;
    assert!(
        matches!(&outcome, DeployOutcome::Deployed(t) if matches!(t.as_slice(), [TargetOutcome::Started { .. }])),
        "{outcome:?}"
    );
    let newest = w.ledger().history(&w.target(), 1).await.expect("history").remove(0);
    assert_eq!((newest.tag.as_str(), newest.image_labels), ("staging-0000a0a0", ferry::model::ImageLabels::default()));
}
