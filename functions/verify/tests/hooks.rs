//! The verify function as a blue/green service's lifecycle hook, with in-memory ports: green's
//! test route gates production traffic, every answer is recorded, and nothing Ferry cannot
//! judge yet is answered with an error (ECS would take it for FAILED).

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use ferry::config::Config;
use ferry::deploy::{DeployOutcome, DeploySettings, Deployer, Invocation, TargetOutcome};
use ferry::fakes::{
    FakeAlarms, FakeBalancers, FakeClock, FakeEcs, MemoryLedger, RecordingBus, RecordingNotifier, ScriptedProbe,
    invocation, sample_event,
};
use ferry::hook::{HookAnswer, HookStatus};
use ferry::model::{Deployment, State, Target};
use ferry::ports::{Ecs, EcsError, HeadChange, Ledger, LedgerError, ProbeResponse};
use ferry::verify::{Verifier, VerifyOutcome, VerifySettings, response};
use serde_json::{Value, json};

const CONFIG: &str = r#"
[[environments]]
name = "staging"
rules = [{ glob = "staging-*" }]
targets = [{ region = "ap-southeast-1", cluster = "shop-staging" }]

[[services]]
repository = "shop/api"
name = "shop-{env}-api"
containers = ["api"]
alarms = ["shop-{env}-api-5xx"]
health = { url = "https://api.{env}.shop.example/healthz", test_url = "https://api.{env}.shop.example:8443/healthz", body_contains = "ok", attempts = 3, interval_seconds = 4, timeout_seconds = 2 }

[[services]]
repository = "shop/worker"
name = "shop-{env}-worker"
containers = ["worker"]
"#;

const TEST_URL: &str = "https://api.staging.shop.example:8443/healthz";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 4, 9, 0, 0).single().expect("time")
}

fn api() -> Target {
    Target {
        environment: "staging".into(),
        account: None,
        region: "ap-southeast-1".into(),
        cluster: "shop-staging".into(),
        service: "shop-staging-api".into(),
        role_arn: None,
    }
}

fn answer(code: u16, body: &str) -> Result<ProbeResponse, String> {
    Ok(ProbeResponse { status: code, body: body.into() })
}

fn failed() -> HookAnswer {
    HookAnswer { status: HookStatus::Failed, call_back_delay: None }
}

struct World {
    config: Config,
    ecs: FakeEcs,
    ledger: MemoryLedger,
    bus: RecordingBus,
    probe: ScriptedProbe,
    clock: FakeClock,
    alarms: FakeAlarms,
}

impl World {
    /// A blue/green `shop-staging-api` whose test route answers `answers` in turn.
    fn new(answers: Vec<Result<ProbeResponse, String>>) -> World {
        let mut config = Config::parse("ferry.toml", CONFIG).expect("config");
        config.home_account = Some("123456789012".into());
        let w = World {
            config,
            ecs: FakeEcs::default(),
            ledger: MemoryLedger::default(),
            bus: RecordingBus::default(),
            probe: ScriptedProbe::answering(answers),
            clock: FakeClock::at(t0()),
            alarms: FakeAlarms::default(),
        };
        w.ecs.add_service(&api(), "api", &[("api", "old")]);
        w.ecs.set_strategy(&api(), "BLUE_GREEN");
        w
    }

    /// Deploys a push with the real deploy handler: the record, and the service revision ECS
    /// made for it (what its hooks name).
    async fn deploy(&self, n: u8) -> (Deployment, String) {
        let mut e = sample_event("ecr-push-staging.json");
        e["id"] = format!("push-{n}").into();
        e["time"] = (t0() + Duration::from_secs(u64::from(n))).to_rfc3339().into();
        e["detail"]["image-digest"] = format!("sha256:{}", format!("{n:02x}").repeat(32)).into();
        let deployed = Deployer {
            config: &self.config,
            ecs: &self.ecs,
            ledger: &self.ledger,
            notifier: &RecordingNotifier::default(),
            clock: &self.clock,
            registry: &ferry::fakes::MemoryRegistry::default(),
            settings: DeploySettings::default(),
        }
        .handle(e, &Invocation { attempt: format!("deploy-{n}"), deadline: None })
        .await;
        let Ok(DeployOutcome::Deployed(started)) = deployed else { panic!("{deployed:?}") };
        let [TargetOutcome::Started { ecs_deployment_id, .. }] = started.as_slice() else { panic!("{started:?}") };
        let record = self.record(ecs_deployment_id);
        (record, self.ecs.latest_service_revision(&api()).expect("a service revision"))
    }

    fn record(&self, ecs_id: &str) -> Deployment {
        self.ledger.records().into_iter().find(|d| d.ecs_deployment_id.as_deref() == Some(ecs_id)).expect("record")
    }

    async fn verify(&self, payload: Value) -> VerifyOutcome {
        Verifier {
            config: &self.config,
            ecs: &self.ecs,
            balancers: &FakeBalancers::default(),
            alarms: &self.alarms,
            ledger: &self.ledger,
            notifier: &RecordingNotifier::default(),
            bus: &self.bus,
            probe: &self.probe,
            clock: &self.clock,
            settings: VerifySettings::default(),
        }
        .handle(payload, &invocation("verify"))
        .await
        .expect("a hook is always answered")
    }

    /// What ECS reads back from one invocation of the hook at `stage` for `revision`.
    async fn hook(&self, execution: &str, stage: &str, revision: &str) -> HookAnswer {
        let outcome = self.verify(call(execution, stage, revision)).await;
        let body = response(&outcome);
        let VerifyOutcome::Hook { answer, .. } = outcome else { panic!("{outcome:?}") };
        assert_eq!(body, serde_json::to_value(answer).expect("json"), "Lambda answers the hook's answer alone");
        answer
    }
}

/// ECS's "deployment failed" event for `d`'s rollout.
fn ecs_failed(d: &Deployment) -> Value {
    let mut event = sample_event("ecs-deployment-failed.json");
    event["resources"] = json!(["arn:aws:ecs:ap-southeast-1:123456789012:service/shop-staging/shop-staging-api"]);
    event["detail"]["deploymentId"] = d.ecs_deployment_id.clone().expect("rollout").into();
    event
}

/// A lifecycle hook invocation as ECS sends it.
fn call(execution: &str, stage: &str, revision: &str) -> Value {
    json!({
        "executionId": execution,
        "lifecycleStage": stage,
        "resourceArn": "arn:aws:ecs:ap-southeast-1:123456789012:service-deployment/shop-staging/shop-staging-api/x",
        "executionDetails": {
            "serviceArn": "arn:aws:ecs:ap-southeast-1:123456789012:service/shop-staging/shop-staging-api",
            "targetServiceRevisionArn": revision,
            "testTrafficWeights": { revision: 100 },
            "productionTrafficWeights": { revision: 0 },
        }
    })
}

#[tokio::test]
async fn a_healthy_test_route_lets_green_take_production_traffic_and_is_recorded() {
    let w = World::new(vec![answer(200, "ok")]);
    let (d, revision) = w.deploy(1).await;

    assert_eq!(w.hook("x1", "PRE_SCALE_UP", &revision).await, HookAnswer::succeeded(), "not a stage Ferry gates");
    assert!(w.probe.requests().is_empty());
    assert_eq!(w.hook("x2", "POST_TEST_TRAFFIC_SHIFT", &revision).await, HookAnswer::succeeded());
    assert_eq!(
        w.probe.requests(),
        [(TEST_URL.to_string(), Duration::from_secs(2))],
        "the test route, not production's"
    );

    let record = w.record(d.ecs_deployment_id.as_deref().expect("rollout"));
    let stages: Vec<(&str, HookStatus)> = record.hooks.iter().map(|h| (h.stage.as_str(), h.status)).collect();
    assert_eq!(stages, [("PRE_SCALE_UP", HookStatus::Succeeded), ("POST_TEST_TRAFFIC_SHIFT", HookStatus::Succeeded)]);
    assert!(record.hooks[1].evidence.contains(&format!("{TEST_URL}: HTTP 200")), "{:?}", record.hooks[1]);
    assert_eq!(record.state, State::InProgress, "proven only when ECS completes the rollout");

    // ECS invoking the decided hook again gets the same answer, without another probe.
    assert_eq!(w.hook("x2", "POST_TEST_TRAFFIC_SHIFT", &revision).await, HookAnswer::succeeded());
    assert_eq!(w.probe.requests().len(), 1);
}

#[tokio::test]
async fn a_failing_test_route_is_asked_again_until_its_attempts_are_spent_then_fails_once() {
    let w = World::new(vec![answer(503, "starting"), answer(200, "no"), answer(503, "down")]);
    let (d, revision) = w.deploy(1).await;

    assert_eq!(w.hook("x1", "POST_TEST_TRAFFIC_SHIFT", &revision).await, HookAnswer::again_in(4));
    assert_eq!(w.hook("x1", "POST_TEST_TRAFFIC_SHIFT", &revision).await, HookAnswer::again_in(4));
    assert_eq!(w.hook("x1", "POST_TEST_TRAFFIC_SHIFT", &revision).await, failed());
    assert_eq!(w.hook("x1", "POST_TEST_TRAFFIC_SHIFT", &revision).await, failed(), "decided once");
    assert_eq!(w.probe.requests().len(), 3, "one probe per invocation, none once decided");

    let record = w.record(d.ecs_deployment_id.as_deref().expect("rollout"));
    let [hook] = record.hooks.as_slice() else { panic!("{:?}", record.hooks) };
    assert_eq!((hook.status, hook.attempts), (HookStatus::Failed, 3));
    assert!(
        hook.evidence.contains("#1") && hook.evidence.contains("HTTP 503") && hook.evidence.contains("\"down\""),
        "{hook:?}"
    );
    assert!(hook.evidence.contains("without \"ok\""), "{hook:?}");
}

#[tokio::test]
async fn ecs_rolling_green_back_after_the_hook_failed_records_the_failure_with_the_hooks_evidence() {
    let w = World::new(vec![answer(503, "down")]);
    let (d, revision) = w.deploy(1).await;
    for _ in 0..3 {
        w.hook("x1", "POST_TEST_TRAFFIC_SHIFT", &revision).await;
    }
    // ECS fails the deployment on the hook's FAILED and rolls back to blue by itself.
    let rollback = w.ecs.fail_primary(&api());
    assert!(rollback.is_some(), "a blue/green service rolls back by itself");
    let outcome = w.verify(ecs_failed(&d)).await;
    let VerifyOutcome::Failed { reason, .. } = &outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("POST_TEST_TRAFFIC_SHIFT") && reason.contains("HTTP 503"), "{reason}");
    let [announced] = w.bus.sent().try_into().expect("one Deployment Failed");
    assert_eq!(announced.id, d.id);
}

#[tokio::test]
async fn rollouts_ferry_did_not_start_and_services_it_does_not_deploy_are_not_gated() {
    let w = World::new(vec![answer(503, "down")]);
    let (_, _) = w.deploy(1).await;
    // An UpdateService by hand (or ECS's rollback to blue): a revision no open record has.
    let service = w.ecs.service(&api()).await.expect("service");
    let blue = service.task_definition.replace(":2", ":1");
    w.ecs.update_service(&api(), &service, &blue).await.expect("update");
    let by_hand = w.ecs.latest_service_revision(&api()).expect("revision");
    assert_eq!(w.hook("x1", "POST_TEST_TRAFFIC_SHIFT", &by_hand).await, HookAnswer::succeeded());

    let mut stranger = call("x2", "POST_TEST_TRAFFIC_SHIFT", &by_hand);
    stranger["executionDetails"]["serviceArn"] =
        "arn:aws:ecs:ap-southeast-1:123456789012:service/shop-staging/billing".into();
    let outcome = w.verify(stranger).await;
    assert!(
        matches!(&outcome, VerifyOutcome::Hook { answer, why, .. } if *answer == HookAnswer::succeeded() && why.contains("not a service Ferry deploys")),
        "{outcome:?}"
    );
    assert!(w.probe.requests().is_empty(), "nothing probed for what Ferry does not gate");
}

#[tokio::test]
async fn what_ferry_cannot_judge_yet_is_asked_again_never_answered_with_an_error() {
    let w = World::new(vec![answer(200, "ok")]);
    let (_, revision) = w.deploy(1).await;

    w.ledger.fail(Some(LedgerError("ProvisionedThroughputExceededException".into())));
    assert_eq!(w.hook("x1", "POST_TEST_TRAFFIC_SHIFT", &revision).await, HookAnswer::again_in(15));
    w.ledger.fail(None);
    w.ecs.fail("DescribeServiceRevisions", EcsError::Transient("ThrottlingException".into()));
    assert_eq!(w.hook("x1", "POST_TEST_TRAFFIC_SHIFT", &revision).await, HookAnswer::again_in(15));
    w.ecs.heal("DescribeServiceRevisions");
    assert!(w.probe.requests().is_empty(), "nothing probed before the rollout is known");
    assert_eq!(w.hook("x1", "POST_TEST_TRAFFIC_SHIFT", &revision).await, HookAnswer::succeeded());

    // A deploy holding the target has updated the service but not recorded its rollout yet.
    let service = w.ecs.service(&api()).await.expect("service");
    w.ecs
        .update_service(&api(), &service, "arn:aws:ecs:ap-southeast-1:123456789012:task-definition/api:9")
        .await
        .expect("update");
    let unrecorded = w.ecs.latest_service_revision(&api()).expect("revision");
    assert!(w.ledger.lock(&api(), "push-2", "deploy-2", t0() + Duration::from_secs(600), t0()).await.expect("lock"));
    assert_eq!(w.hook("x2", "POST_TEST_TRAFFIC_SHIFT", &unrecorded).await, HookAnswer::again_in(15));
}

#[tokio::test]
async fn a_hook_call_that_cannot_be_read_or_comes_from_a_stranger_keeps_blue() {
    let w = World::new(vec![answer(200, "ok")]);
    let (_, revision) = w.deploy(1).await;
    let mut unreadable = call("x1", "POST_TEST_TRAFFIC_SHIFT", &revision);
    unreadable["executionDetails"]["serviceArn"] = "not-an-arn".into();
    assert_eq!(response(&w.verify(unreadable).await), json!({"hookStatus": "FAILED"}));
    let mut stranger = call("x1", "POST_TEST_TRAFFIC_SHIFT", &revision);
    stranger["executionDetails"]["serviceArn"] =
        "arn:aws:ecs:ap-southeast-1:999999999999:service/shop-staging/shop-staging-api".into();
    assert_eq!(response(&w.verify(stranger).await), json!({"hookStatus": "FAILED"}));
    assert!(w.probe.requests().is_empty());
    assert!(w.ledger.records().iter().all(|d| d.hooks.is_empty()), "nothing recorded");
}

#[tokio::test]
async fn a_rollout_ferry_has_failed_meanwhile_is_failed_at_every_later_stage_and_blue_is_let_back() {
    let w = World::new(vec![answer(200, "ok")]);
    let (d, green) = w.deploy(1).await;
    assert_eq!(w.hook("x1", "POST_TEST_TRAFFIC_SHIFT", &green).await, HookAnswer::succeeded());
    // An alarm in its window: Ferry's rollback fails the deployment while ECS bakes it.
    let now = w.record(d.ecs_deployment_id.as_deref().expect("rollout"));
    let failing = Deployment { state: State::Failed, reason: Some("alarm shop-staging-api-5xx: ALARM".into()), ..now };
    assert!(w.ledger.transition(&failing, &[State::InProgress], HeadChange::None).await.expect("transition"));

    let outcome = w.verify(call("x2", "POST_PRODUCTION_TRAFFIC_SHIFT", &green)).await;
    let VerifyOutcome::Hook { answer, why, deployment, .. } = &outcome else { panic!("{outcome:?}") };
    assert_eq!((*answer, deployment.as_deref()), (failed(), Some(d.id.as_str())));
    assert!(why.contains("alarm shop-staging-api-5xx"), "{why}");

    // ECS's rollback to blue calls the hooks again, for blue's revision: let through.
    let service = w.ecs.service(&api()).await.expect("service");
    w.ecs.update_service(&api(), &service, &service.task_definition.replace(":2", ":1")).await.expect("update");
    let blue = w.ecs.latest_service_revision(&api()).expect("revision");
    assert_eq!(w.hook("x3", "POST_TEST_TRAFFIC_SHIFT", &blue).await, HookAnswer::succeeded());
    assert_eq!(w.probe.requests().len(), 1, "nothing probed after the failure");
}

#[tokio::test]
async fn green_serving_production_is_failed_by_an_alarm_that_went_off_during_the_deployment_only() {
    let w = World::new(vec![answer(200, "ok")]);
    let (d, green) = w.deploy(1).await;
    let alarm = "shop-staging-api-5xx";
    // In ALARM since before the deployment started: not its doing.
    w.alarms.set(alarm, true, d.created_at - chrono::Duration::minutes(10));
    let outcome = w.verify(call("x1", "PRODUCTION_TRAFFIC_SHIFT", &green)).await;
    let VerifyOutcome::Hook { answer, why, .. } = &outcome else { panic!("{outcome:?}") };
    assert_eq!(*answer, HookAnswer::succeeded());
    assert!(why.contains("ALARM from before the deployment started"), "{why}");
    // CloudWatch failing: asked again, never answered with an error.
    w.alarms.fail_with(Some(EcsError::Transient("throttled".into())));
    assert_eq!(w.hook("x2", "POST_PRODUCTION_TRAFFIC_SHIFT", &green).await, HookAnswer::again_in(15));
    // Refused (a role without the grant): let through, said on the record, not asked for ever.
    w.alarms.fail_with(Some(EcsError::Rejected("AccessDenied".into())));
    assert_eq!(w.hook("x9", "PRODUCTION_TRAFFIC_SHIFT", &green).await, HookAnswer::succeeded());
    w.alarms.fail_with(None);
    // It went off again while green served production traffic.
    w.alarms.set(alarm, false, d.created_at + chrono::Duration::minutes(1));
    w.alarms.set(alarm, true, d.created_at + chrono::Duration::minutes(3));
    assert_eq!(w.hook("x2", "POST_PRODUCTION_TRAFFIC_SHIFT", &green).await, failed());
    w.alarms.set(alarm, false, d.created_at + chrono::Duration::minutes(4));
    assert_eq!(w.hook("x2", "POST_PRODUCTION_TRAFFIC_SHIFT", &green).await, failed(), "decided once");
    assert!(w.probe.requests().is_empty(), "alarms, not the test route, after production traffic moved");

    let record = w.record(d.ecs_deployment_id.as_deref().expect("rollout"));
    let stages: Vec<(&str, HookStatus)> = record.hooks.iter().map(|h| (h.stage.as_str(), h.status)).collect();
    assert_eq!(
        stages,
        [("PRODUCTION_TRAFFIC_SHIFT", HookStatus::Succeeded), ("POST_PRODUCTION_TRAFFIC_SHIFT", HookStatus::Failed)]
    );
    assert_eq!(record.hooks[0].evidence, "alarms not read: AccessDenied");

    // ECS rolls back on the FAILED; the failure names the alarm.
    assert!(w.ecs.fail_primary(&api()).is_some());
    let outcome = w.verify(ecs_failed(&d)).await;
    let VerifyOutcome::Failed { reason, .. } = &outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("POST_PRODUCTION_TRAFFIC_SHIFT") && reason.contains(alarm), "{reason}");
}
