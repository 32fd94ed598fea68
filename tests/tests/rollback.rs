//! The rollback function's handler with real SDK clients against the local AWS emulator:
//! a failed smoke test ends with the service on the last-known-good revision, the ledger
//! showing FAILED → ROLLED_BACK, and exactly one Slack and one SNS message saying so.

mod common;

use common::{ACCOUNT, REGION, World};
use ferry::model::{Origin, State};
use ferry::ports::Ledger;
use ferry::rollback::RollbackOutcome;
use ferry::verify::VerifyOutcome;
use ferry_tests::{recorded, save_recorded};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_smoke_test_puts_the_last_known_good_revision_back() {
    let w = World::new().await;
    let config = w.config_with(&format!(
        "health = {{ url = \"{}/health\", attempts = 1, timeout_seconds = 1 }}\nnotify = \"shop-team\"",
        w.sink.url
    ));
    let good = w.deployed(&config, "staging-aaaa0001", 'a').await;
    assert!(matches!(w.verify(&config, w.complete().await).await, VerifyOutcome::Succeeded { .. }));
    let ledger = w.ledger();
    let good_td = ledger.by_ecs_deployment(&good).await.expect("lookup").expect("good").task_definition.expect("td");

    w.sink.answer_with(500);
    let bad = w.deployed(&config, "staging-bbbb0002", 'b').await;
    assert!(matches!(w.verify(&config, w.complete().await).await, VerifyOutcome::Failed { .. }));
    assert_ne!(w.describe().await.task_definition.as_deref(), Some(good_td.as_str()));

    // EventBridge delivers verify's announcement (twice: at least once) to the rollback function.
    let [failed] = w.failures_announced().await.try_into().expect("one announcement");
    let outcome = w.rollback(&config, failed.clone()).await;
    let [RollbackOutcome::RollingBack { to, ecs_deployment_id, .. }] = outcome.as_slice() else {
        panic!("{outcome:?}")
    };
    assert_eq!(*to, good_td);
    let again = w.rollback(&config, failed).await;
    assert!(matches!(again.as_slice(), [RollbackOutcome::AlreadyHandled { .. }]), "{again:?}");

    // The service is on the known-good revision, in a new ECS deployment verify follows.
    let service = w.describe().await;
    assert_eq!(service.task_definition.as_deref(), Some(good_td.as_str()));
    let primary = service.deployments().iter().find(|d| d.status() == Some("PRIMARY")).expect("primary");
    assert_eq!(primary.id.as_deref(), Some(ecs_deployment_id.as_str()));
    let bad_record = ledger.by_ecs_deployment(&bad).await.expect("lookup").expect("bad");
    assert_eq!(bad_record.state, State::RollingBack);
    assert_eq!(ledger.head(&w.target()).await.expect("head").quarantine, vec![bad_record.digest.clone()]);

    w.sink.answer_with(200);
    let done = w.verify(&config, w.complete().await).await;
    assert!(
        matches!(done, VerifyOutcome::External { origin: Origin::Rollback, state: State::Succeeded, .. }),
        "{done:?}"
    );
    let bad_record = ledger.by_ecs_deployment(&bad).await.expect("lookup").expect("bad");
    assert_eq!(bad_record.state, State::RolledBack, "FAILED → ROLLING_BACK → ROLLED_BACK");

    // Exactly one Slack and one SNS message say it was rolled back, and what is live now.
    let slack: Vec<Value> = w.sink.bodies("/slack").iter().map(|b| serde_json::from_str(b).expect("json")).collect();
    let rolled_back: Vec<&Value> =
        slack.iter().filter(|m| m["text"].as_str().is_some_and(|t| t.contains(" rolled back: "))).collect();
    assert_eq!(rolled_back.len(), 1, "{slack:?}");
    assert!(rolled_back[0].to_string().contains(&good_td), "the message says what is live now");
    let sns = w.sns_messages().await;
    let sns_rolled_back: Vec<&Value> = sns.iter().filter(|m| m["attributes"]["status"] == "ROLLED_BACK").collect();
    assert_eq!(sns_rolled_back.len(), 1, "{sns:?}");
    let facts: Value = serde_json::from_str(sns_rolled_back[0]["message"].as_str().expect("message")).expect("facts");
    assert_eq!(facts["live_now"].as_str(), Some(good_td.as_str()));
    save_recorded("rollback", "smoke-test", &recorded("rollback"));
    save_recorded("verify", "rollback", &recorded("verify"));
}

/// A blue/green rollout an operator rolls back while it runs is stopped (StopServiceDeployment):
/// ECS moves traffic back to blue and reports its rollback, which verify records; the bad
/// rollout ends ROLLED_BACK and nothing of Ferry's is deployed over it.
#[tokio::test(flavor = "multi_thread")]
async fn a_blue_green_rollout_rolled_back_while_it_runs_is_stopped_and_ecs_moves_back_to_blue() {
    let w = World::new().await;
    let config = w.config(false);
    let good = w.deployed(&config, "staging-eeee0005", 'e').await;
    assert!(matches!(w.verify(&config, w.complete().await).await, VerifyOutcome::Succeeded { .. }));
    let blue = w.describe().await.task_definition;
    // The team's own change (not recorded as Ferry's).
    aws_sdk_ecs::Client::new(&w.aws)
        .update_service()
        .cluster(&w.cluster)
        .service(&w.service)
        .deployment_configuration(
            aws_sdk_ecs::types::DeploymentConfiguration::builder()
                .strategy(aws_sdk_ecs::types::DeploymentStrategy::BlueGreen)
                .build(),
        )
        .send()
        .await
        .expect("blue/green");
    let bad = w.deployed(&config, "staging-ffff0006", 'f').await;

    let request = json!({"version": "0", "id": ferry_tests::unique("request"), "detail-type": "Rollback Requested",
        "source": "ferry", "account": ACCOUNT, "time": "2026-11-16T03:00:00Z", "region": REGION, "resources": [],
        "detail": {"environment": "staging", "service": w.service, "region": REGION, "requested_by": "alice"}});
    let outcome = w.rollback(&config, request).await;
    assert!(matches!(outcome.as_slice(), [RollbackOutcome::EcsRollingBack { .. }]), "{outcome:?}");
    let events = w.emulator.control("/_ferry/ecs/events", Value::Null).await["events"].clone();
    let [failed, rolling_back] = events.as_array().expect("events").clone().try_into().expect("two events");
    assert_eq!(failed["detail"]["deploymentId"], bad.as_str());
    assert!(matches!(w.verify(&config, failed).await, VerifyOutcome::Unchanged { state: State::RollingBack, .. }));
    assert!(matches!(
        w.verify(&config, rolling_back).await,
        VerifyOutcome::External { origin: Origin::EcsRollback, .. }
    ));
    let done = w.verify(&config, w.complete().await).await;
    assert!(
        matches!(done, VerifyOutcome::External { origin: Origin::EcsRollback, state: State::Succeeded, .. }),
        "{done:?}"
    );

    let ledger = w.ledger();
    let bad_record = ledger.by_ecs_deployment(&bad).await.expect("lookup").expect("bad");
    assert_eq!(bad_record.state, State::RolledBack);
    assert_eq!(ledger.head(&w.target()).await.expect("head").quarantine, vec![bad_record.digest.clone()]);
    assert_eq!(w.describe().await.task_definition, blue, "blue serves again");
    assert!(ledger.by_ecs_deployment(&good).await.expect("lookup").is_some());
    save_recorded("rollback", "blue-green", &recorded("rollback"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_request_rolls_a_verified_deployment_back() {
    let w = World::new().await;
    let config = w.config(false);
    let first = w.deployed(&config, "staging-cccc0003", 'c').await;
    assert!(matches!(w.verify(&config, w.complete().await).await, VerifyOutcome::Succeeded { .. }));
    let second = w.deployed(&config, "staging-dddd0004", 'd').await;
    assert!(matches!(w.verify(&config, w.complete().await).await, VerifyOutcome::Succeeded { .. }));

    let request = json!({"version": "0", "id": ferry_tests::unique("request"), "detail-type": "Rollback Requested",
        "source": "ferry", "account": ACCOUNT, "time": "2026-11-16T03:00:00Z", "region": REGION, "resources": [],
        "detail": {"environment": "staging", "service": w.service, "region": REGION, "requested_by": "alice"}});
    let outcome = w.rollback(&config, request).await;
    let ledger = w.ledger();
    let first_td = ledger.by_ecs_deployment(&first).await.expect("lookup").expect("first").task_definition;
    assert!(
        matches!(outcome.as_slice(), [RollbackOutcome::RollingBack { to, .. }] if Some(to) == first_td.as_ref()),
        "{outcome:?}"
    );
    assert_eq!(w.describe().await.task_definition, first_td);
    let second = ledger.by_ecs_deployment(&second).await.expect("lookup").expect("second");
    assert_eq!((second.state, second.reason.as_deref()), (State::RollingBack, Some("rollback requested by alice")));
    save_recorded("rollback", "operator", &recorded("rollback"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ecs_deployment_alarm_rollback_is_left_to_ecs_and_settled_when_it_completes() {
    let w = World::new().await;
    let alarm = format!("{}-5xx", w.service);
    let config = w.config_with(&format!("alarms = [\"{alarm}\"]"));
    // The team's service rolls back on its own deployment alarm; Ferry keeps that setting.
    aws_sdk_ecs::Client::new(&w.home)
        .update_service()
        .cluster(&w.cluster)
        .service(&w.service)
        .deployment_configuration(
            aws_sdk_ecs::types::DeploymentConfiguration::builder()
                .alarms(
                    aws_sdk_ecs::types::DeploymentAlarms::builder()
                        .alarm_names(&alarm)
                        .enable(true)
                        .rollback(true)
                        .build()
                        .expect("alarms"),
                )
                .build(),
        )
        .send()
        .await
        .expect("settings");
    w.deployed(&config, "staging-cccc0001", 'c').await;
    assert!(matches!(w.verify(&config, w.complete().await).await, VerifyOutcome::Succeeded { .. }));
    let bad = w.deployed(&config, "staging-dddd0002", 'd').await;

    // The alarm fires during the rollout: ECS fails it and rolls back by itself. Ferry hears the
    // alarm (its config names it) and ECS's FAILED event before ECS's rollback is recorded.
    let alarm_event = w
        .emulator
        .control("/_ferry/cloudwatch/alarm", json!({"region": REGION, "name": alarm, "state": "ALARM"}))
        .await;
    let failure = w
        .emulator
        .control(
            "/_ferry/ecs/fail",
            json!({"region": REGION, "cluster": w.cluster, "service": w.service, "cause": "alarm", "alarms": [alarm]}),
        )
        .await;
    let events = failure["events"].as_array().expect("events").clone();
    let ecs_rollback = failure["rollbackDeploymentId"].as_str().expect("ECS rolls back").to_string();
    for outcome in [w.rollback(&config, alarm_event).await, w.rollback(&config, events[0].clone()).await] {
        assert!(
            matches!(
                outcome.as_slice(),
                [RollbackOutcome::EcsRollingBack { .. } | RollbackOutcome::AlreadyHandled { .. }]
            ),
            "{outcome:?}"
        );
    }
    let started = w.describe().await.deployments().len();
    assert!(started <= 3, "no rollback of Ferry's over ECS's: {started} deployments");

    // ECS's rollback is recorded as ECS's, and its completion settles the failed deployment.
    let recorded = w.verify(&config, events[1].clone()).await;
    assert!(matches!(recorded, VerifyOutcome::External { origin: Origin::EcsRollback, .. }), "{recorded:?}");
    let done = w.verify(&config, w.complete().await).await;
    assert!(matches!(done, VerifyOutcome::External { state: State::Succeeded, .. }), "{done:?}");
    let ledger = w.ledger();
    let bad_record = ledger.by_ecs_deployment(&bad).await.expect("lookup").expect("bad");
    assert_eq!(bad_record.state, State::RolledBack);
    let rollbacks = ledger.history(&w.target(), 10).await.expect("history");
    assert!(rollbacks.iter().all(|r| r.origin != Origin::Rollback), "Ferry put nothing back: {rollbacks:?}");
    assert_eq!(
        rollbacks.iter().find(|r| r.origin == Origin::EcsRollback).map(|r| r.ecs_deployment_id.clone()),
        Some(Some(ecs_rollback))
    );
}
