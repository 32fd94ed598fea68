//! The verify function's handler with real SDK clients against the local AWS emulator and
//! a local health endpoint that answers 200, 500, slowly, or not at all.

mod common;

use std::time::Duration;

use common::{REGION, World};
use ferry::model::{Origin, State};
use ferry::ports::Ledger;
use ferry::verify::VerifyOutcome;
use ferry_tests::{recorded, save_recorded};
use serde_json::{Value, json};

fn health(sink: &str) -> String {
    format!(
        "health = {{ url = \"{sink}/health\", body_contains = \"ok\", attempts = 2, interval_seconds = 0, timeout_seconds = 1 }}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_deployment_is_verified_and_becomes_last_known_good() {
    let w = World::new().await;
    let config = w.config_with(&health(&w.sink.url));
    let id = w.deployed(&config, "staging-11111111", '1').await;

    // ECS reports progress, then completion (the harness completes the rollout).
    let mut in_progress = w.complete().await;
    in_progress["detail"]["eventName"] = "SERVICE_DEPLOYMENT_IN_PROGRESS".into();
    // (re-sent as IN_PROGRESS after completion: out of order, must not move anything back)
    let completed = w.complete().await;
    assert_eq!(completed["detail"]["deploymentId"], id.as_str());
    let outcome = w.verify(&config, completed.clone()).await;
    assert!(matches!(outcome, VerifyOutcome::Succeeded { .. }), "{outcome:?}");
    assert_eq!(w.sink.hits("/health"), 1);

    let ledger = w.ledger();
    let [record] = ledger.history(&w.target(), 10).await.expect("history").try_into().expect("one");
    assert_eq!(record.state, State::Succeeded);
    let head = ledger.head(&w.target()).await.expect("head");
    assert_eq!(head.last_known_good, Some((record.task_definition.clone().expect("td"), record.digest.clone())));
    let statuses: Vec<Value> = w.sns_messages().await.iter().map(|m| m["attributes"]["status"].clone()).collect();
    assert_eq!(statuses, [json!("IN_PROGRESS"), json!("SUCCEEDED")]);
    assert!(w.failures_announced().await.is_empty());

    // Duplicates and late events change nothing.
    for late in [completed, in_progress] {
        let again = w.verify(&config, late).await;
        assert!(matches!(again, VerifyOutcome::Unchanged { state: State::Succeeded, .. }), "{again:?}");
    }
    assert_eq!(w.sink.hits("/health"), 1, "verified once");
    assert_eq!(w.sns_messages().await.len(), 2);
    save_recorded("verify", "healthy", &recorded("verify"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unhealthy_service_fails_with_evidence_and_the_failure_is_announced() {
    let w = World::new().await;
    let config = w.config_with(&health(&w.sink.url));
    enum Unhealthy {
        Errors,
        Slow,
        NotListening,
    }
    let cases = [
        ("staging-22222222", '2', Unhealthy::Errors, "HTTP 500 (expected 200-299)"),
        ("staging-33333333", '3', Unhealthy::Slow, "no answer within 1 s"),
        ("staging-44444444", '4', Unhealthy::NotListening, "connection failed"),
    ];
    for (tag, layer, unhealthy, evidence) in cases {
        w.sink.answer_with(200);
        w.sink.delay(Duration::ZERO);
        let config = match unhealthy {
            Unhealthy::Errors => {
                w.sink.answer_with(500);
                config.clone()
            }
            Unhealthy::Slow => {
                w.sink.delay(Duration::from_millis(2500));
                config.clone()
            }
            // Nothing listens on the discard port.
            Unhealthy::NotListening => w.config_with(&health("http://127.0.0.1:9")),
        };
        let id = w.deployed(&config, tag, layer).await;
        let outcome = w.verify(&config, w.complete().await).await;
        let VerifyOutcome::Failed { reason, .. } = &outcome else { panic!("{tag}: {outcome:?}") };
        assert!(reason.contains("2 attempts") && reason.contains(evidence), "{tag}: {reason}");
        let record = w.ledger().by_ecs_deployment(&id).await.expect("lookup").expect("record");
        assert_eq!((record.state, record.reason.as_deref()), (State::Failed, Some(reason.as_str())));
        let announced = w.failures_announced().await;
        let last = announced.last().expect("announced");
        assert_eq!(
            (last["detail"]["deployment"].as_str(), last["detail"]["reason"].as_str()),
            (Some(record.id.as_str()), Some(reason.as_str()))
        );
    }
    assert_eq!(w.failures_announced().await.len(), 3);
    assert_eq!(w.ledger().head(&w.target()).await.expect("head").last_known_good, None);
    save_recorded("verify", "unhealthy", &recorded("verify"));
}

/// ECS invoking the verify function as the service's lifecycle hook, with the payload the
/// harness makes as ECS does: the service revision it names is read back with
/// DescribeServiceRevisions, and green's test route (not production's) gates the stage.
#[tokio::test(flavor = "multi_thread")]
async fn green_is_let_through_its_test_route_only_when_it_passes() {
    let w = World::new().await;
    let health = format!(
        "health = {{ url = \"{0}/health\", test_url = \"{0}/test\", attempts = 2, interval_seconds = 3, timeout_seconds = 1 }}",
        w.sink.url
    );
    // An alarm of this test's own: the emulator's alarms outlive a test.
    let alarm = "shop-staging-api-hook-5xx";
    let config = w.config_with(&format!("{health}\nalarms = [\"shop-{{env}}-api-hook-5xx\"]"));
    let hook_at = async |execution: &str, stage: &str| {
        let body = json!({"region": REGION, "cluster": w.cluster, "service": w.service, "execution": execution, "stage": stage});
        let call = w.emulator.control("/_ferry/ecs/hook-call", body).await;
        let outcome = w.verify(&config, call).await;
        ferry::verify::response(&outcome)
    };
    let hook = async |execution: &str| hook_at(execution, "POST_TEST_TRAFFIC_SHIFT").await;

    let id = w.deployed(&config, "staging-11111111", '1').await;
    assert_eq!(hook("x1").await, json!({"hookStatus": "SUCCEEDED"}));
    assert_eq!((w.sink.hits("/test"), w.sink.hits("/health")), (1, 0));
    let record = w.ledger().by_ecs_deployment(&id).await.expect("lookup").expect("record");
    assert_eq!(record.hooks.iter().map(|h| h.status.as_str()).collect::<Vec<_>>(), ["SUCCEEDED"]);

    w.sink.answer_with(503);
    let id = w.deployed(&config, "staging-22222222", '2').await;
    assert_eq!(hook("x2").await, json!({"hookStatus": "IN_PROGRESS", "callBackDelay": 3}));
    assert_eq!(hook("x2").await, json!({"hookStatus": "FAILED"}));
    assert_eq!(hook("x2").await, json!({"hookStatus": "FAILED"}), "decided once");
    assert_eq!(w.sink.hits("/test"), 3);
    let record = w.ledger().by_ecs_deployment(&id).await.expect("lookup").expect("record");
    let [noted] = record.hooks.as_slice() else { panic!("{:?}", record.hooks) };
    assert!(noted.evidence.contains("HTTP 503"), "{noted:?}");

    // Once production traffic moved, the service's alarms as CloudWatch shows them decide.
    aws_sdk_cloudwatch::Client::new(&w.home)
        .put_metric_alarm()
        .alarm_name(alarm)
        .namespace("AWS/ApplicationELB")
        .metric_name("HTTPCode_Target_5XX_Count")
        .statistic(aws_sdk_cloudwatch::types::Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(0.0)
        .comparison_operator(aws_sdk_cloudwatch::types::ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .expect("alarm");
    w.sink.answer_with(200);
    let id = w.deployed(&config, "staging-33333333", '3').await;
    assert_eq!(hook("x3").await, json!({"hookStatus": "SUCCEEDED"}));
    assert_eq!(hook_at("x4", "PRODUCTION_TRAFFIC_SHIFT").await, json!({"hookStatus": "SUCCEEDED"}));
    w.emulator.control("/_ferry/cloudwatch/alarm", json!({"region": REGION, "name": alarm, "state": "ALARM"})).await;
    assert_eq!(hook_at("x5", "POST_PRODUCTION_TRAFFIC_SHIFT").await, json!({"hookStatus": "FAILED"}));
    let record = w.ledger().by_ecs_deployment(&id).await.expect("lookup").expect("record");
    let failed = record.hooks.iter().find(|h| h.stage == "POST_PRODUCTION_TRAFFIC_SHIFT").expect("recorded");
    assert!(failed.evidence.contains(&format!("alarm {alarm} in ALARM")), "{failed:?}");
    save_recorded("verify", "hook", &recorded("verify"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_circuit_breaker_rollback_fails_the_deployment_once() {
    let w = World::new().await;
    let config = w.config(false);
    let good = w.deployed(&config, "staging-55555555", '5').await;
    assert!(matches!(w.verify(&config, w.complete().await).await, VerifyOutcome::Succeeded { .. }));
    let bad = w.deployed(&config, "staging-66666666", '6').await;

    let failure = w
        .emulator
        .control(
            "/_ferry/ecs/fail",
            json!({"region": REGION, "cluster": w.cluster, "service": w.service, "rollback": true}),
        )
        .await;
    let events = failure["events"].as_array().expect("events").clone();
    assert_eq!(events.len(), 2, "{failure}");
    let mut outcomes = Vec::new();
    for event in events.iter().chain(events.iter()) {
        outcomes.push(w.verify(&config, event.clone()).await);
    }
    let ledger = w.ledger();
    let bad_record = ledger.by_ecs_deployment(&bad).await.expect("lookup").expect("record");
    assert_eq!(bad_record.state, State::Failed, "{outcomes:?}");
    let rollback_id = failure["rollbackDeploymentId"].as_str().expect("rollback id");
    let rollback = ledger
        .history(&w.target(), 10)
        .await
        .expect("history")
        .into_iter()
        .find(|d| d.ecs_deployment_id.as_deref() == Some(rollback_id));
    assert_eq!(rollback.map(|r| (r.origin, r.state)), Some((Origin::EcsRollback, State::InProgress)));
    assert_eq!(w.failures_announced().await.len(), 1, "one failure, announced once: {outcomes:?}");
    assert_ne!(good, bad);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_whose_deploy_died_before_recording_it_is_adopted_and_verified() {
    use ferry::model::{Deployment, Push};
    use ferry::ports::{Begin, Ecs, Revision};
    use ferry::render::ImageChange;
    let w = World::new().await;
    let config = w.config(false);
    let event = w.push("staging-deadbeef", &"9".repeat(64)).await;
    let digest = event["detail"]["image-digest"].as_str().expect("digest").to_string();
    // What the deploy function did before it was killed: the PENDING record and the lock,
    // a new revision, UpdateService; never its outcome.
    let push = Push {
        event_id: event["id"].as_str().expect("id").into(),
        registry_account: common::ACCOUNT.into(),
        registry_region: REGION.into(),
        repository: w.repository.clone(),
        tag: "staging-deadbeef".into(),
        digest: digest.clone(),
        pushed_at: chrono::Utc::now(),
    };
    let t = w.target();
    let d = Deployment::new(&push, t.clone(), chrono::Utc::now());
    let ledger = w.ledger();
    let until = chrono::Utc::now() + chrono::Duration::minutes(15);
    assert_eq!(ledger.begin(&d, "killed", until, chrono::Utc::now()).await.expect("begin"), Begin::Started);
    let ecs = ferry::adapters::ecs::EcsAdapter::new(w.home.clone());
    let service = ecs.service(&t).await.expect("service");
    let change = ImageChange { containers: vec!["api".into()], image: push.image() };
    let Revision::Registered(revision) =
        ecs.register_revision(&t, &service.task_definition, &change, "test-deployment").await.expect("register")
    else {
        panic!("not registered")
    };
    let ecs_id = ecs.update_service(&t, &service, &revision).await.expect("update");

    // ECS completes the rollout; its event meets the PENDING record.
    let completed = w.complete().await;
    let outcome = w.verify(&config, completed).await;
    assert_eq!(outcome, VerifyOutcome::Succeeded { deployment: d.id.clone() });
    let [record] = ledger.history(&t, 10).await.expect("history").try_into().expect("one record");
    assert_eq!((record.origin, record.state), (Origin::Ferry, State::Succeeded));
    assert_eq!(record.ecs_deployment_id.as_deref(), Some(ecs_id.as_str()));
    assert_eq!(record.task_definition.as_deref(), Some(revision.as_str()));
    let head = ledger.head(&t).await.expect("head");
    assert_eq!(head.lock, None, "the killed invocation's lock is released");
    assert_eq!(head.last_known_good, Some((revision, digest)));
    save_recorded("verify", "adopt", &recorded("verify"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_new_tasks_are_found_by_their_deployment_and_judged_in_their_target_group() {
    use ferry::ports::{Ecs, LoadBalancers};
    let w = World::new().await;
    // ECS starts a service's tasks with its deployment's id as startedBy, and registers their
    // addresses in the service's target group (the test plays ECS here).
    let service = w.describe().await;
    let ecs = aws_sdk_ecs::Client::new(&w.home);
    let started = ecs
        .run_task()
        .cluster(&w.cluster)
        .task_definition(service.task_definition().expect("td"))
        .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
        .set_network_configuration(service.network_configuration.clone())
        .started_by("ecs-svc/7777777777777777777")
        .send()
        .await
        .expect("task");
    assert_eq!(started.tasks().len(), 1);
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&w.home);
    let vpc = aws_sdk_ec2_default_vpc(&w).await;
    let group = elb
        .create_target_group()
        .name(format!("tg-{}", &w.cluster[w.cluster.len().saturating_sub(20)..]))
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(8080)
        .vpc_id(vpc)
        .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Ip)
        .send()
        .await
        .expect("target group");
    let group = group.target_groups()[0].target_group_arn().expect("arn").to_string();

    ferry_tests::acting_as("verify");
    let adapter = ferry_tests::clients::ecs_adapter(w.home.clone());
    let t = w.target();
    let addresses = adapter.task_addresses(&t, "ecs-svc/7777777777777777777").await.expect("addresses");
    assert_eq!(addresses.len(), 1, "{addresses:?}");
    assert_eq!(adapter.task_addresses(&t, "ecs-svc/1").await.expect("addresses"), Vec::<String>::new());
    let balancers = ferry::adapters::elb::ElbAdapter::with_clients(ferry::adapters::aws::AwsClients::new(
        w.home.clone(),
        ferry_tests::clients::elb,
    ));
    assert_eq!(balancers.target_health(&t, &group).await.expect("health"), vec![]);
    elb.register_targets()
        .target_group_arn(&group)
        .targets(
            aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder().id(&addresses[0]).port(8080).build(),
        )
        .send()
        .await
        .expect("register");
    let health = balancers.target_health(&t, &group).await.expect("health");
    assert_eq!(
        health.iter().map(|h| (h.id.as_str(), h.state.as_str())).collect::<Vec<_>>(),
        [(addresses[0].as_str(), "healthy")]
    );
    save_recorded("verify", "target-health", &recorded("verify"));
}

/// The default VPC's id, from the subnets the harness names.
async fn aws_sdk_ec2_default_vpc(w: &World) -> String {
    let network = w
        .emulator
        .control(&format!("/_ferry/ec2/default-network?region={REGION}&account={}", common::ACCOUNT), Value::Null)
        .await;
    network["vpc"].as_str().expect("the harness names the default VPC").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn autoscaling_churn_a_lagging_api_and_an_old_format_arn_never_fail_a_healthy_rollout() {
    let w = World::new().await;
    let config = w.config_with(&health(&w.sink.url));
    let id = w.deployed(&config, "staging-77777777", '7').await;
    let service = json!({"region": REGION, "cluster": w.cluster, "service": w.service});
    // ECS completes; DescribeServices still shows the rollout IN_PROGRESS for two reads, the
    // event names the service by its old-format ARN, and autoscaling then raises desired above
    // running while one task is being replaced.
    let mut completed = service.clone();
    completed["lag"] = 2.into();
    completed["old_arn"] = true.into();
    let event = w.emulator.control("/_ferry/ecs/complete", completed).await;
    assert!(!event["resources"][0].as_str().expect("arn").contains(&w.cluster), "{event}");
    let mut churn = service.clone();
    churn["desired"] = 6.into();
    churn["replace"] = 1.into();
    let counts = w.emulator.control("/_ferry/ecs/scale", churn).await;
    assert!(counts["runningCount"].as_i64() < counts["desiredCount"].as_i64(), "{counts}");

    let outcome = w.verify(&config, event).await;
    assert!(matches!(outcome, VerifyOutcome::Succeeded { .. }), "{outcome:?}");
    let record = w.ledger().by_ecs_deployment(&id).await.expect("lookup").expect("record");
    assert_eq!(record.state, State::Succeeded);
    assert!(w.failures_announced().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_weekly_digest_reads_the_ledger_and_reaches_slack_and_sns() {
    let w = World::new().await;
    let config = w.config(false);
    // Two days ago a push went live: the week's one deployment (the week ends a day back).
    let live = w.describe().await.task_definition.expect("revision");
    let two_days_ago = chrono::Utc::now() - chrono::Duration::days(2);
    w.seeded(&w.target(), "staging-0000d1e5", two_days_ago, State::Succeeded, &live).await;
    // One pushed now falls in next week's digest.
    w.deployed(&config, "staging-0000f00d", 'f').await;

    let schedule = json!({"source": "ferry", "detail-type": "Weekly Digest", "account": common::ACCOUNT});
    let outcome = w.verify(&config, schedule).await;
    assert_eq!(outcome, VerifyOutcome::Digest { environments: 1, error: None });
    let slack = w.sink.bodies("/slack");
    let digest: Value = serde_json::from_str(slack.last().expect("posted")).expect("slack json");
    assert_eq!(digest["blocks"][0]["text"]["text"], "📊 Ferry weekly delivery");
    assert_eq!(digest["blocks"][3]["fields"][0]["text"], "*Deployments*\n1 (1.0/week)");
    let sns = w.sns_messages().await;
    let last = sns.last().expect("published");
    let facts: Value =
        serde_json::from_str(last["message"].as_str().expect("message")).expect("JSON, as every SNS message");
    assert_eq!(facts["kind"], "weekly_digest");
    assert_eq!(facts["rows"][0]["metrics"]["deployments"], 1);
    assert!(facts["text"].as_str().expect("text").contains("staging\n  Deployments: 1 (1.0/week)"), "{facts}");
    assert_eq!(last["attributes"], json!({"status": "DIGEST", "severity": "info"}));
    save_recorded("verify", "digest", &recorded("verify"));
}
