//! The verify handler with in-memory ports: one test per rule of the verify function.
//! Each deployment under test is first made by the real deploy handler, so the records
//! are the ones the deploy function writes.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use ferry::config::Config;
use ferry::deploy::{DeployOutcome, DeploySettings, Deployer, Invocation, Retryable, TargetOutcome};
use ferry::fakes::{
    FakeBalancers, FakeClock, FakeEcs, MemoryLedger, RecordingBus, RecordingNotifier, ScriptedProbe, invocation,
    sample_event,
};
use ferry::model::{Deployment, Origin, State, Target};
use ferry::ports::{Clock, Ecs, EcsDeployment, EcsError, HeadChange, Ledger, ProbeResponse};
use ferry::verify::{RolloutProblem, Verifier, VerifyOutcome, VerifySettings, check_rollout, judge};
use serde_json::Value;

const CONFIG: &str = r#"
[[environments]]
name = "staging"
rules = [{ glob = "staging-*" }]
targets = [{ region = "ap-southeast-1", cluster = "shop-staging" }]

[[services]]
repository = "shop/api"
name = "shop-{env}-api"
containers = ["api"]
health = { url = "https://api.{env}.shop.example/healthz", body_contains = "ok", attempts = 3, interval_seconds = 4, timeout_seconds = 2 }

[[services]]
repository = "shop/worker"
name = "shop-{env}-worker"
containers = ["worker"]
"#;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 16, 1, 54, 40).single().expect("time")
}

fn target(service: &str) -> Target {
    Target {
        environment: "staging".into(),
        account: None,
        region: "ap-southeast-1".into(),
        cluster: "shop-staging".into(),
        service: service.into(),
        role_arn: None,
    }
}

fn digest(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

fn ok(body: &str) -> Result<ProbeResponse, String> {
    Ok(ProbeResponse { status: 200, body: body.into() })
}

fn status(code: u16, body: &str) -> Result<ProbeResponse, String> {
    Ok(ProbeResponse { status: code, body: body.into() })
}

struct World {
    config: Config,
    ecs: FakeEcs,
    balancers: FakeBalancers,
    ledger: MemoryLedger,
    notifier: RecordingNotifier,
    bus: RecordingBus,
    probe: ScriptedProbe,
    clock: FakeClock,
}

impl World {
    fn new(answers: Vec<Result<ProbeResponse, String>>) -> World {
        let w = World {
            config: Config::parse("ferry.toml", CONFIG).expect("config"),
            ecs: FakeEcs::default(),
            balancers: FakeBalancers::default(),
            ledger: MemoryLedger::default(),
            notifier: RecordingNotifier::default(),
            bus: RecordingBus::default(),
            probe: ScriptedProbe::answering(answers),
            clock: FakeClock::at(t0()),
        };
        w.ecs.add_service(&target("shop-staging-api"), "api", &[("api", "old"), ("proxy", "envoy")]);
        w.ecs.add_service(&target("shop-staging-worker"), "worker", &[("worker", "old")]);
        w
    }

    /// Deploys `repository:tag` with the real deploy handler; returns the ECS deployment id.
    async fn deploy(&self, repository: &str, tag: &str, n: u8) -> String {
        let mut e = sample_event("ecr-push-staging.json");
        e["id"] = format!("push-{n}").into();
        e["time"] = (t0() + Duration::from_secs(u64::from(n))).to_rfc3339().into();
        e["detail"]["repository-name"] = repository.into();
        e["detail"]["image-tag"] = tag.into();
        e["detail"]["image-digest"] = digest(n).into();
        let invocation = Invocation { attempt: format!("deploy-{n}"), deadline: None };
        match self.deploy_event(e, &invocation).await {
            Ok(DeployOutcome::Deployed(t)) => match t.as_slice() {
                [TargetOutcome::Started { ecs_deployment_id, .. }] => ecs_deployment_id.clone(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    /// The deploy handler (its messages not kept) on a push event.
    async fn deploy_event(&self, event: Value, invocation: &Invocation) -> Result<DeployOutcome, Retryable> {
        Deployer {
            config: &self.config,
            ecs: &self.ecs,
            ledger: &self.ledger,
            notifier: &RecordingNotifier::default(),
            clock: &self.clock,
            registry: &ferry::fakes::MemoryRegistry::default(),
            settings: DeploySettings::default(),
        }
        .handle(event, invocation)
        .await
    }

    async fn verify(&self, event: Value) -> Result<VerifyOutcome, Retryable> {
        Verifier {
            config: &self.config,
            ecs: &self.ecs,
            balancers: &self.balancers,
            alarms: &ferry::fakes::FakeAlarms::default(),
            ledger: &self.ledger,
            notifier: &self.notifier,
            bus: &self.bus,
            probe: &self.probe,
            clock: &self.clock,
            settings: VerifySettings::default(),
        }
        .handle(event, &invocation("verify"))
        .await
    }

    fn record(&self, ecs_id: &str) -> Deployment {
        self.ledger.records().into_iter().find(|d| d.ecs_deployment_id.as_deref() == Some(ecs_id)).expect("record")
    }
}

/// An ECS deployment event for `service` about `deployment_id`.
fn ecs_event(name: &str, service: &str, deployment_id: &str) -> Value {
    let mut e = sample_event(name);
    e["resources"] =
        serde_json::json!([format!("arn:aws:ecs:ap-southeast-1:123456789012:service/shop-staging/{service}")]);
    e["detail"]["deploymentId"] = deployment_id.into();
    e
}

fn completed(service: &str, id: &str) -> Value {
    ecs_event("ecs-deployment-completed.json", service, id)
}

#[tokio::test]
async fn a_completed_healthy_deployment_succeeds_and_becomes_last_known_good() {
    let w = World::new(vec![ok("{\"status\":\"ok\"}")]);
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.ecs.complete(&target("shop-staging-api"));

    let outcome = w.verify(completed("shop-staging-api", &id)).await;
    let record = w.record(&id);
    assert_eq!(outcome, Ok(VerifyOutcome::Succeeded { deployment: record.id.clone() }));
    assert_eq!(record.state, State::Succeeded);
    let head = w.ledger.head(&target("shop-staging-api")).await.expect("head");
    assert_eq!(head.last_known_good, Some((record.task_definition.clone().expect("td"), digest(1))));
    assert_eq!(w.probe.requests(), [("https://api.staging.shop.example/healthz".to_string(), Duration::from_secs(2))]);
    let sent = w.notifier.sent();
    assert_eq!(sent.iter().map(|n| n.deployment.state).collect::<Vec<_>>(), [State::Succeeded]);
    assert!(w.bus.sent().is_empty());
}

#[tokio::test]
async fn a_service_without_a_health_url_succeeds_on_the_rollout_check_alone() {
    let w = World::new(vec![]);
    let id = w.deploy("shop/worker", "staging-bbbbbbbb", 2).await;
    w.ecs.complete(&target("shop-staging-worker"));
    assert!(matches!(w.verify(completed("shop-staging-worker", &id)).await, Ok(VerifyOutcome::Succeeded { .. })));
    assert!(w.probe.requests().is_empty());
    let shown = w.record(&id).reason.expect("what was shown");
    assert!(shown.ends_with("no health URL or load balancer: proven by the rollout alone"), "{shown}");
}

#[tokio::test]
async fn a_private_service_is_proven_by_its_new_tasks_health_in_its_target_group() {
    let w = World::new(vec![]);
    let worker = target("shop-staging-worker");
    let id = w.deploy("shop/worker", "staging-bbbbbbbb", 2).await;
    w.ecs.set_load_balanced(&worker, "tg-worker", &id, &["10.0.1.5", "10.0.1.6"]);
    // One new task still in its first health checks; an old one draining is not judged.
    w.balancers.answer(
        "tg-worker",
        &[
            &[("10.0.1.5", "initial"), ("10.0.1.6", "healthy"), ("10.0.0.9", "draining")],
            &[("10.0.1.5", "healthy"), ("10.0.1.6", "healthy"), ("10.0.0.9", "draining")],
        ],
    );
    w.ecs.complete(&worker);
    let outcome = w.verify(completed("shop-staging-worker", &id)).await;
    assert!(matches!(outcome, Ok(VerifyOutcome::Succeeded { .. })), "{outcome:?}");
    let shown = w.record(&id).reason.expect("what was shown");
    assert!(shown.contains("2 task(s) healthy in 1 target group(s)"), "{shown}");
    assert!(w.probe.requests().is_empty(), "no network path needed");

    // A new task the load balancer finds unhealthy fails the deployment, with the evidence.
    let id = w.deploy("shop/worker", "staging-cccccccc", 3).await;
    w.ecs.set_load_balanced(&worker, "tg-worker", &id, &["10.0.1.7"]);
    w.balancers.answer("tg-worker", &[&[("10.0.1.7", "unhealthy")]]);
    w.ecs.complete(&worker);
    let outcome = w.verify(completed("shop-staging-worker", &id)).await;
    let Ok(VerifyOutcome::Failed { reason, .. }) = outcome else { panic!("{outcome:?}") };
    assert!(reason.contains("10.0.1.7 unhealthy (Target.ResponseCodeMismatch) in tg-worker"), "{reason}");
}

#[tokio::test]
async fn a_failing_smoke_test_is_retried_then_fails_with_its_evidence() {
    let w = World::new(vec![status(500, "upstream connect error"), Err("no answer within 2 s".into())]);
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.ecs.complete(&target("shop-staging-api"));
    let before = w.clock.now();

    let outcome = w.verify(completed("shop-staging-api", &id)).await;
    let Ok(VerifyOutcome::Failed { reason, .. }) = outcome else { panic!("{outcome:?}") };
    assert_eq!(w.probe.requests().len(), 3, "the configured attempts");
    assert_eq!(w.clock.now() - before, chrono::Duration::seconds(8), "two intervals between three attempts");
    assert!(
        reason.starts_with("smoke test of https://api.staging.shop.example/healthz failed: 3 attempts: "),
        "{reason}"
    );
    assert!(reason.contains("#1 HTTP 500 (expected 200-299)"), "{reason}");
    assert!(reason.contains("\"upstream connect error\""), "body excerpt: {reason}");
    assert!(reason.contains("#2 no answer within 2 s") && reason.contains("#3 no answer within 2 s"), "{reason}");
    assert_eq!(w.record(&id).state, State::Failed);
    assert_eq!(w.record(&id).reason.as_deref(), Some(reason.as_str()));
    let [announced] = w.bus.sent().try_into().expect("one Deployment Failed event");
    assert_eq!((announced.id, announced.reason), (w.record(&id).id, Some(reason)));
    assert_eq!(w.notifier.sent().iter().map(|n| n.deployment.state).collect::<Vec<_>>(), [State::Failed]);
    assert_eq!(w.ledger.head(&target("shop-staging-api")).await.expect("head").last_known_good, None);
}

#[tokio::test]
async fn a_flaky_start_passes_on_a_later_attempt() {
    let w = World::new(vec![status(503, "starting"), ok("ok")]);
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.ecs.complete(&target("shop-staging-api"));
    assert!(matches!(w.verify(completed("shop-staging-api", &id)).await, Ok(VerifyOutcome::Succeeded { .. })));
    assert_eq!(w.probe.requests().len(), 2);
}

#[tokio::test]
async fn the_body_must_match_when_configured() {
    let w = World::new(vec![ok("{\"status\":\"degraded\"}")]);
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.ecs.complete(&target("shop-staging-api"));
    let outcome = w.verify(completed("shop-staging-api", &id)).await;
    assert!(
        matches!(&outcome, Ok(VerifyOutcome::Failed { reason, .. }) if reason.contains("without \"ok\" in the body")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_completed_rollout_with_tasks_still_scaling_or_being_replaced_is_verified_not_failed() {
    let w = World::new(vec![ok("ok")]);
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    // ECS says COMPLETED; autoscaling has just raised desired, only 1 of 2 tasks runs yet.
    let service = w.ecs.service_of(&target("shop-staging-api")).expect("service");
    let mut deployments = service.deployments.clone();
    let last = deployments.last_mut().expect("primary");
    last.rollout_state = "COMPLETED".into();
    last.running = 1;
    w.ecs.set_deployments(&target("shop-staging-api"), deployments);

    let outcome = w.verify(completed("shop-staging-api", &id)).await;
    assert!(matches!(&outcome, Ok(VerifyOutcome::Succeeded { .. })), "{outcome:?}");
    assert_eq!(w.probe.requests().len(), 1, "proven by its smoke test");
}

#[tokio::test]
async fn a_completed_event_ahead_of_ecss_api_is_looked_at_again_never_failed() {
    let w = World::new(vec![ok("ok")]);
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    // The event says COMPLETED; DescribeServices still shows the rollout IN_PROGRESS.
    let outcome = w.verify(completed("shop-staging-api", &id)).await;
    assert!(matches!(&outcome, Err(Retryable::Lagging(why)) if why.contains("still IN_PROGRESS")), "{outcome:?}");
    assert_eq!(w.record(&id).state, State::Verifying, "not failed; the claim is given back for the redelivery");
    assert!(w.bus.sent().is_empty(), "nothing announced");
    assert!(w.probe.requests().is_empty());
    // ECS's API catches up: the redelivered event verifies it.
    w.ecs.complete(&target("shop-staging-api"));
    let outcome = w.verify(completed("shop-staging-api", &id)).await;
    assert!(matches!(&outcome, Ok(VerifyOutcome::Succeeded { .. })), "{outcome:?}");
}

#[test]
fn rollout_checks_and_probe_verdicts() {
    let deployment = |td: &str| {
        let mut d = Deployment::new(
            &ferry::model::Push {
                event_id: "e".into(),
                registry_account: "1".into(),
                registry_region: "r".into(),
                repository: "shop/api".into(),
                tag: "t".into(),
                digest: "sha256:aa".into(),
                pushed_at: t0(),
            },
            target("s"),
            t0(),
        );
        d.ecs_deployment_id = Some("ecs-svc/2".into());
        d.task_definition = Some(td.into());
        d
    };
    let primary = |id: &str, td: &str, rollout: &str, running: i32| ferry::ports::ServiceInfo {
        task_definition: td.into(),
        primary: Some(EcsDeployment {
            id: id.into(),
            task_definition: td.into(),
            rollout_state: rollout.into(),
            running,
            desired: 3,
        }),
        ..Default::default()
    };
    let d = deployment("td:2");
    let incomplete = |why: &str| Err(RolloutProblem::Incomplete(why.into()));
    let cases = [
        (primary("ecs-svc/2", "td:2", "COMPLETED", 3), Ok(())),
        (primary("ecs-svc/3", "td:3", "COMPLETED", 3), Err(RolloutProblem::Overtaken { by: "ecs-svc/3".into() })),
        (
            primary("ecs-svc/2", "td:2", "IN_PROGRESS", 3),
            Err(RolloutProblem::NotYet("the rollout is still IN_PROGRESS".into())),
        ),
        (primary("ecs-svc/2", "td:2", "FAILED", 3), incomplete("the rollout is FAILED, not COMPLETED")),
        (primary("ecs-svc/2", "td:1", "COMPLETED", 3), incomplete("the service runs td:1, not td:2")),
        // Autoscaling raised desired before running caught up, or a task is being replaced.
        (primary("ecs-svc/2", "td:2", "COMPLETED", 2), Ok(())),
        (primary("ecs-svc/2", "td:2", "COMPLETED", 5), Ok(())),
        (ferry::ports::ServiceInfo::default(), incomplete("the service has no PRIMARY deployment")),
    ];
    for (service, expected) in cases {
        assert_eq!(check_rollout(&d, &service), expected, "{service:?}");
    }

    let config = Config::parse("ferry.toml", CONFIG).expect("config");
    let health = config.services[0].health.clone().expect("health");
    let exact = ferry::config::Health { expect_status: (204, 204), body_contains: None, ..health.clone() };
    let verdicts = [
        (&health, ok("all ok"), Ok(())),
        (&health, status(299, "ok"), Ok(())),
        (&health, status(301, "ok"), Err("HTTP 301 (expected 200-299)".to_string())),
        (&health, ok("degraded"), Err("HTTP 200 without \"ok\" in the body".into())),
        (&health, Err("connection failed".into()), Err("connection failed".into())),
        (&exact, status(204, ""), Ok(())),
        (&exact, status(200, "ok"), Err("HTTP 200 (expected 204)".into())),
    ];
    for (health, answer, expected) in verdicts {
        assert_eq!(judge(health, &answer), expected, "{answer:?}");
    }
}

#[tokio::test]
async fn in_progress_is_recorded_without_reaching_verifying() {
    let w = World::new(vec![ok("ok")]);
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    let outcome = w.verify(ecs_event("ecs-deployment-in-progress.json", "shop-staging-api", &id)).await;
    assert_eq!(outcome, Ok(VerifyOutcome::Progress { deployment: w.record(&id).id }));
    let record = w.record(&id);
    assert_eq!(record.state, State::InProgress);
    assert!(
        record.ecs_event.as_deref().is_some_and(|e| e.starts_with("SERVICE_DEPLOYMENT_IN_PROGRESS at")),
        "{record:?}"
    );
    assert!(w.notifier.sent().is_empty() && w.bus.sent().is_empty());
}

#[tokio::test]
async fn ecs_failure_fails_the_deployment_with_ecs_reason() {
    let w = World::new(vec![ok("ok")]);
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    let outcome = w.verify(ecs_event("ecs-deployment-failed.json", "shop-staging-api", &id)).await;
    let reason = "ECS: ECS deployment circuit breaker: task failed to start.".to_string();
    assert_eq!(outcome, Ok(VerifyOutcome::Failed { deployment: w.record(&id).id, reason: reason.clone() }));
    assert_eq!(w.record(&id).reason, Some(reason));
    assert_eq!(w.bus.sent().len(), 1);
    // Delivered again: nothing new.
    let again = w.verify(ecs_event("ecs-deployment-failed.json", "shop-staging-api", &id)).await;
    assert!(matches!(again, Ok(VerifyOutcome::Unchanged { state: State::Failed, .. })), "{again:?}");
    assert_eq!((w.bus.sent().len(), w.notifier.sent().len()), (1, 1));
}

#[tokio::test]
async fn a_circuit_breaker_rollback_fails_ferrys_deployment_and_is_recorded() {
    let w = World::new(vec![ok("ok")]);
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    // ECS fails the rollout and announces its rollback under a deployment id of its own
    // (its FAILED event lost or late).
    let ecs_rollback = w.ecs.fail_primary(&target("shop-staging-api")).expect("the breaker rolls back");
    let outcome =
        w.verify(ecs_event("ecs-deployment-circuit-breaker-rollback.json", "shop-staging-api", &ecs_rollback)).await;
    let Ok(VerifyOutcome::External { origin: Origin::EcsRollback, state: State::InProgress, deployment }) = outcome
    else {
        panic!("{outcome:?}")
    };
    let ferrys = w.record(&id);
    assert_eq!(ferrys.state, State::Failed);
    assert!(ferrys.reason.as_deref().is_some_and(|r| r.contains("circuit breaker: rolling back")), "{ferrys:?}");
    assert_eq!(w.bus.sent().len(), 1, "the failure is announced for the rollback function");
    let rollback = w.record(&ecs_rollback);
    assert_eq!((rollback.id, rollback.origin), (deployment, Origin::EcsRollback));
    assert!(rollback.reason.as_deref().is_some_and(|r| r.contains(&ferrys.id)));

    // The rollback completes: recorded, and the head knows what is live.
    w.ecs.complete(&target("shop-staging-api"));
    let done = w.verify(completed("shop-staging-api", &ecs_rollback)).await;
    assert!(matches!(done, Ok(VerifyOutcome::External { state: State::Succeeded, .. })), "{done:?}");
    let head = w.ledger.head(&target("shop-staging-api")).await.expect("head");
    assert_eq!(head.active.map(|(id, _)| id), Some(w.record(&ecs_rollback).id));
}

#[tokio::test]
async fn ecs_rollbacks_are_told_from_the_services_settings_not_from_the_events_wording() {
    // Deployment alarms with rollback, the circuit breaker off: ECS rolls back all the same,
    // and its event's reason says nothing of a circuit breaker.
    let w = World::new(vec![ok("ok")]);
    let api = target("shop-staging-api");
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.ecs.set_rollbacks(&api, Some((false, false)), &["shop-staging-api-5xx"]);
    let ecs_rollback = w.ecs.fail_primary(&api).expect("the alarm rolls back");
    let mut ev = ecs_event("ecs-deployment-in-progress.json", "shop-staging-api", &ecs_rollback);
    ev["detail"]["reason"] = "ECS deployment detected triggered alarm(s): rolling back.".into();
    let outcome = w.verify(ev).await;
    assert!(matches!(outcome, Ok(VerifyOutcome::External { origin: Origin::EcsRollback, .. })), "{outcome:?}");
    assert_eq!(w.record(&id).state, State::Failed);
    assert_eq!(w.record(&ecs_rollback).rolls_back, Some(w.record(&id).id));

    // A rollout by hand to another revision, with no rollback settings, is someone else's, whatever its event says.
    let w = World::new(vec![ok("ok")]);
    let api = target("shop-staging-api");
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.ecs.set_rollbacks(&api, Some((false, false)), &[]);
    let mut deployments = w.ecs.service_of(&api).expect("service").deployments;
    deployments.push(EcsDeployment {
        id: "ecs-svc/77".into(),
        task_definition: "api:9".into(),
        rollout_state: "IN_PROGRESS".into(),
        running: 0,
        desired: 2,
    });
    w.ecs.set_deployments(&api, deployments);
    let outcome =
        w.verify(ecs_event("ecs-deployment-circuit-breaker-rollback.json", "shop-staging-api", "ecs-svc/77")).await;
    assert!(matches!(outcome, Ok(VerifyOutcome::External { origin: Origin::External, .. })), "{outcome:?}");
    assert_eq!(w.record(&id).state, State::InProgress, "not failed");
}

/// A deployment of shop/api that ECS's circuit breaker is rolling back, as the rollback
/// function saw first (it recorded ROLLING_BACK) and verify then recorded (ECS's rollback,
/// IN_PROGRESS). Returns the deployment's ECS deployment id and ECS's rollback's.
async fn ecs_rolling_back(w: &World) -> (String, String) {
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    let mut d = w.record(&id);
    d.state = State::RollingBack;
    assert!(w.ledger.transition(&d, &[State::InProgress], HeadChange::Quarantine).await.expect("transition"));
    let ecs_rollback = w.ecs.fail_primary(&target("shop-staging-api")).expect("the breaker rolls back");
    let outcome =
        w.verify(ecs_event("ecs-deployment-circuit-breaker-rollback.json", "shop-staging-api", &ecs_rollback)).await;
    assert!(
        matches!(outcome, Ok(VerifyOutcome::External { origin: Origin::EcsRollback, state: State::InProgress, .. })),
        "{outcome:?}"
    );
    (id, ecs_rollback)
}

#[tokio::test]
async fn a_circuit_breaker_rollback_the_rollback_function_saw_first_ends_rolled_back() {
    let w = World::new(vec![ok("ok")]);
    let (id, ecs_rollback) = ecs_rolling_back(&w).await;
    assert_eq!(w.record(&ecs_rollback).rolls_back, Some(w.record(&id).id));
    assert_eq!(w.record(&id).state, State::RollingBack, "not failed a second time");
    assert!(w.bus.sent().is_empty(), "the failure was announced already");

    let done = w.verify(completed("shop-staging-api", &ecs_rollback)).await;
    assert!(matches!(done, Ok(VerifyOutcome::External { state: State::Succeeded, .. })), "{done:?}");
    assert_eq!(w.record(&id).state, State::RolledBack);
    let told: Vec<State> = w.notifier.sent().iter().map(|n| n.deployment.state).collect();
    assert_eq!(told.last(), Some(&State::RolledBack), "{told:?}");
}

#[tokio::test]
async fn a_transient_error_while_verifying_gives_the_claim_back_for_the_redelivery() {
    let w = World::new(vec![ok("ok")]);
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.ecs.complete(&target("shop-staging-api"));
    w.ecs.fail("DescribeServices", EcsError::Transient("ThrottlingException".into()));
    let first = w.verify(completed("shop-staging-api", &id)).await;
    assert!(first.is_err(), "{first:?}");
    assert_eq!(w.record(&id).state, State::Verifying, "still VERIFYING, never back to IN_PROGRESS");

    w.ecs.heal("DescribeServices");
    let again = w.verify(completed("shop-staging-api", &id)).await;
    assert!(matches!(again, Ok(VerifyOutcome::Succeeded { .. })), "{again:?}");
    assert_eq!(w.notifier.sent().len(), 1);
}

#[tokio::test]
async fn completed_after_another_deployment_took_the_service_over_is_superseded_not_failed() {
    let w = World::new(vec![ok("ok")]);
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    // ECS completed Ferry's deployment, then (before verify ran) another UpdateService
    // started a newer deployment that the ledger does not know as active yet.
    let service = w.ecs.service_of(&target("shop-staging-api")).expect("service");
    let mut deployments = service.deployments.clone();
    deployments.last_mut().expect("primary").rollout_state = "COMPLETED".into();
    let newer =
        EcsDeployment { id: "ecs-svc/newer".into(), rollout_state: "IN_PROGRESS".into(), ..deployments[0].clone() };
    deployments.push(newer);
    w.ecs.set_deployments(&target("shop-staging-api"), deployments);

    let outcome = w.verify(completed("shop-staging-api", &id)).await;
    assert_eq!(
        outcome,
        Ok(VerifyOutcome::Superseded { deployment: w.record(&id).id, by: "ECS deployment ecs-svc/newer".into() })
    );
    assert_eq!(w.record(&id).state, State::Superseded);
    assert!(w.bus.sent().is_empty(), "no failure announced: a rollback would undo the newer deployment");
    assert!(w.probe.requests().is_empty());
}

#[tokio::test]
async fn events_out_of_order_never_move_a_record_backwards() {
    let w = World::new(vec![ok("ok")]);
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.ecs.complete(&target("shop-staging-api"));
    assert!(matches!(w.verify(completed("shop-staging-api", &id)).await, Ok(VerifyOutcome::Succeeded { .. })));
    for late in ["ecs-deployment-in-progress.json", "ecs-deployment-completed.json", "ecs-deployment-failed.json"] {
        let outcome = w.verify(ecs_event(late, "shop-staging-api", &id)).await;
        assert!(matches!(outcome, Ok(VerifyOutcome::Unchanged { state: State::Succeeded, .. })), "{late}: {outcome:?}");
    }
    assert_eq!(w.record(&id).state, State::Succeeded);
    assert_eq!(w.notifier.sent().len(), 1);
    assert!(w.bus.sent().is_empty());
    assert_eq!(w.probe.requests().len(), 1, "verified once");
}

#[tokio::test]
async fn an_old_deployments_events_after_a_newer_push_mark_it_superseded() {
    let w = World::new(vec![ok("ok")]);
    let old = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    let new = w.deploy("shop/api", "staging-bbbbbbbb", 2).await;
    let outcome = w.verify(completed("shop-staging-api", &old)).await;
    assert_eq!(outcome, Ok(VerifyOutcome::Superseded { deployment: w.record(&old).id, by: w.record(&new).id }));
    assert_eq!(w.record(&old).state, State::Superseded);
    assert!(w.bus.sent().is_empty(), "a superseded deployment is not a failure");
}

#[tokio::test]
async fn a_newer_deployment_succeeding_supersedes_older_open_ones() {
    let w = World::new(vec![ok("ok")]);
    let old = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    let new = w.deploy("shop/api", "staging-bbbbbbbb", 2).await;
    w.ecs.complete(&target("shop-staging-api"));
    assert!(matches!(w.verify(completed("shop-staging-api", &new)).await, Ok(VerifyOutcome::Succeeded { .. })));
    assert_eq!(w.record(&old).state, State::Superseded);
}

#[tokio::test]
async fn a_deployment_ferry_did_not_start_is_recorded_and_the_head_follows_it() {
    let w = World::new(vec![ok("ok")]);
    w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    let manual = "ecs-svc/4242424242424242424";
    by_hand(&w, manual, "api:7");
    let first = w.verify(ecs_event("ecs-deployment-in-progress.json", "shop-staging-api", manual)).await;
    assert!(
        matches!(first, Ok(VerifyOutcome::External { origin: Origin::External, state: State::InProgress, .. })),
        "{first:?}"
    );
    w.ecs.complete(&target("shop-staging-api"));
    let done = w.verify(completed("shop-staging-api", manual)).await;
    assert!(matches!(done, Ok(VerifyOutcome::External { state: State::Succeeded, .. })), "{done:?}");
    let record = w.record(manual);
    assert_eq!((record.origin, record.state), (Origin::External, State::Succeeded));
    assert_eq!(record.reason.as_deref(), Some("smoke test of https://api.staging.shop.example/healthz passed"));
    let head = w.ledger.head(&target("shop-staging-api")).await.expect("head");
    assert_eq!(head.active.map(|(id, _)| id), Some(record.id), "the head points at what is live");
    assert_eq!(w.ledger.history(&target("shop-staging-api"), 10).await.expect("history").len(), 2);
    assert!(w.bus.sent().is_empty());
    assert_eq!(w.probe.requests().len(), 1, "proven like Ferry's own");
}

/// An UpdateService by hand to `td`: ECS deployment `id` rolling out.
fn by_hand(w: &World, id: &str, td: &str) {
    let api = target("shop-staging-api");
    let mut deployments = w.ecs.service_of(&api).expect("service").deployments;
    deployments.push(EcsDeployment {
        id: id.into(),
        task_definition: td.into(),
        rollout_state: "IN_PROGRESS".into(),
        running: 0,
        desired: 2,
    });
    w.ecs.set_deployments(&api, deployments);
}

#[tokio::test]
async fn a_rollout_by_hand_that_fails_its_smoke_test_is_reported_never_succeeded() {
    let w = World::new(vec![status(503, "down")]);
    let manual = "ecs-svc/4343434343434343434";
    by_hand(&w, manual, "api:7");
    w.ecs.complete(&target("shop-staging-api"));
    // Its COMPLETED event is the first Ferry hears of it.
    let done = w.verify(completed("shop-staging-api", manual)).await;
    assert!(matches!(done, Ok(VerifyOutcome::External { state: State::Failed, .. })), "{done:?}");
    let record = w.record(manual);
    assert!(record.reason.as_deref().is_some_and(|r| r.contains("HTTP 503")), "the evidence: {record:?}");
    let told = w.notifier.sent();
    assert_eq!(told.last().map(|n| (n.deployment.state, n.severity())), Some((State::Failed, "error")));
    assert!(w.bus.sent().is_empty(), "not rolled back: the config does not say so");

    // Where the config says so, it is announced for the rollback function.
    let mut w = World::new(vec![status(503, "down")]);
    w.config = Config::parse(
        "ferry.toml",
        &CONFIG.replace("containers = [\"api\"]", "containers = [\"api\"]\non_external_failure = \"roll_back\""),
    )
    .expect("config");
    by_hand(&w, manual, "api:7");
    w.ecs.complete(&target("shop-staging-api"));
    w.verify(completed("shop-staging-api", manual)).await.expect("verify");
    assert_eq!(w.bus.sent().iter().map(|d| d.id.clone()).collect::<Vec<_>>(), [w.record(manual).id]);
}

#[tokio::test]
async fn a_forced_new_deployment_of_the_same_revision_leaves_ferrys_deployment_live_on_record() {
    let w = World::new(vec![ok("ok")]);
    let api = target("shop-staging-api");
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.ecs.complete(&api);
    w.verify(completed("shop-staging-api", &id)).await.expect("verified");
    let ours = w.record(&id);
    // `aws ecs update-service --force-new-deployment`: a new ECS deployment, same revision.
    let mut deployments = w.ecs.service_of(&api).expect("service").deployments;
    let forced = "ecs-svc/5151515151515151515";
    let td = ours.task_definition.clone().expect("td");
    deployments.push(EcsDeployment {
        id: forced.into(),
        task_definition: td,
        rollout_state: "IN_PROGRESS".into(),
        running: 0,
        desired: 2,
    });
    w.ecs.set_deployments(&api, deployments);
    w.verify(ecs_event("ecs-deployment-in-progress.json", "shop-staging-api", forced)).await.expect("in progress");
    w.ecs.complete(&api);
    let done = w.verify(completed("shop-staging-api", forced)).await;
    assert!(matches!(done, Ok(VerifyOutcome::External { state: State::Succeeded, .. })), "{done:?}");
    assert_eq!(w.record(forced).origin, Origin::External, "on the history all the same");
    let head = w.ledger.head(&api).await.expect("head");
    assert_eq!(head.active, Some((ours.id.clone(), digest(1))), "Ferry's deployment, its alarms and digest, stay live");
    // Pushed again, the same digest is known to be live.
    let mut e = sample_event("ecr-push-staging.json");
    e["time"] = (t0() + Duration::from_secs(90)).to_rfc3339().into();
    e["detail"]["image-tag"] = "staging-aaaaaaaa".into();
    e["detail"]["image-digest"] = digest(1).into();
    let again = w.deploy_event(e, &invocation("deploy-again")).await;
    assert!(format!("{again:?}").contains("Skipped"), "{again:?}");
}

#[tokio::test]
async fn events_for_other_services_and_malformed_events_change_nothing() {
    let w = World::new(vec![ok("ok")]);
    let ignored = |o: &Result<VerifyOutcome, Retryable>| matches!(o, Ok(VerifyOutcome::Ignored(_)));
    let rejected = |o: &Result<VerifyOutcome, Retryable>| matches!(o, Ok(VerifyOutcome::Rejected(_)));
    assert!(ignored(&w.verify(completed("billing-api", "ecs-svc/1")).await));
    // Events the ECS deployment rule never sends.
    assert!(rejected(&w.verify(sample_event("ecr-push-staging.json")).await));
    assert!(rejected(&w.verify(sample_event("ecs-service-action-placement-failure.json")).await));
    assert!(ignored(&w.verify(serde_json::json!({"source": "aws.ecs"})).await));
    let mut no_service = completed("shop-staging-api", "ecs-svc/1");
    no_service["resources"] = serde_json::json!([]);
    assert!(ignored(&w.verify(no_service).await));
    assert!(w.ledger.records().is_empty());
    assert!(w.notifier.sent().is_empty() && w.bus.sent().is_empty());
}

#[tokio::test]
async fn a_failure_that_cannot_be_announced_is_retried_and_recorded_once() {
    let w = World::new(vec![ok("ok")]);
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.bus.fail(true);
    let first = w.verify(ecs_event("ecs-deployment-failed.json", "shop-staging-api", &id)).await;
    assert!(first.is_err(), "{first:?}");
    assert_eq!(w.record(&id).state, State::InProgress, "not recorded until announced");
    w.bus.fail(false);
    assert!(matches!(
        w.verify(ecs_event("ecs-deployment-failed.json", "shop-staging-api", &id)).await,
        Ok(VerifyOutcome::Failed { .. })
    ));
    assert_eq!((w.bus.sent().len(), w.notifier.sent().len()), (1, 1));
}

#[tokio::test]
async fn a_verification_in_progress_elsewhere_is_not_repeated_until_its_claim_lapses_after_its_deadline() {
    let w = World::new(vec![ok("ok")]);
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.ecs.complete(&target("shop-staging-api"));
    let record = w.record(&id);
    // Another invocation, with 300 s to run (the template's timeout), claims it and dies.
    let now = w.clock.now();
    let another = Invocation { attempt: "another".into(), deadline: Some(now + Duration::from_secs(300)) };
    let claim = another.claim(now, VerifySettings::default().claim);
    let verifying = Deployment { state: State::Verifying, ..record };
    assert!(w.ledger.claim(&verifying, State::InProgress, HeadChange::None, now, &claim).await.expect("claim"));

    let busy = w.verify(completed("shop-staging-api", &id)).await;
    assert!(matches!(busy, Ok(VerifyOutcome::Unchanged { state: State::Verifying, .. })), "{busy:?}");
    w.clock.advance(Duration::from_secs(300));
    let busy = w.verify(completed("shop-staging-api", &id)).await;
    assert!(matches!(busy, Ok(VerifyOutcome::Unchanged { state: State::Verifying, .. })), "{busy:?}");
    assert!(w.probe.requests().is_empty());

    // Lambda redelivers its event a minute or more after its deadline: the claim has lapsed
    // (5 s after the deadline, not after the claim's longest hold).
    w.clock.advance(Duration::from_secs(6));
    assert!(matches!(w.verify(completed("shop-staging-api", &id)).await, Ok(VerifyOutcome::Succeeded { .. })));
}

#[tokio::test]
async fn a_notification_failure_is_recorded_and_does_not_fail_verification() {
    let w = World::new(vec![ok("ok")]);
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.ecs.complete(&target("shop-staging-api"));
    w.notifier.fail_with(Some("SNS: throttled"));
    assert!(matches!(w.verify(completed("shop-staging-api", &id)).await, Ok(VerifyOutcome::Succeeded { .. })));
    let record = w.record(&id);
    assert_eq!((record.state, record.notify_error.as_deref()), (State::Succeeded, Some("SNS: throttled")));
}

#[tokio::test]
async fn an_ecs_event_from_an_account_neither_ferrys_nor_a_targets_is_rejected() {
    let mut w = World::new(vec![ok("ok")]);
    w.config.home_account = Some("123456789012".into());
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.ecs.complete(&target("shop-staging-api"));
    // The same cluster and service names, in another account (forwarded to Ferry's bus).
    let mut foreign = completed("shop-staging-api", &id);
    foreign["account"] = "999999999999".into();
    foreign["resources"] =
        serde_json::json!(["arn:aws:ecs:ap-southeast-1:999999999999:service/shop-staging/shop-staging-api"]);
    let outcome = w.verify(foreign).await;
    assert!(matches!(&outcome, Ok(VerifyOutcome::Rejected(why)) if why.contains("999999999999")), "{outcome:?}");
    assert_eq!(w.record(&id).state, State::InProgress, "nothing changed");
    assert!(w.probe.requests().is_empty());
    // From Ferry's own account, the same event verifies.
    assert_eq!(
        w.verify(completed("shop-staging-api", &id)).await,
        Ok(VerifyOutcome::Succeeded { deployment: w.record(&id).id })
    );
}

/// Push `n` of shop/api (tag `staging-<n>`, digest `n`), pushed at `at`.
fn push(n: u8, at: DateTime<Utc>) -> ferry::model::Push {
    ferry::model::Push {
        event_id: format!("push-{n}"),
        registry_account: "123456789012".into(),
        registry_region: "ap-southeast-1".into(),
        repository: "shop/api".into(),
        tag: format!("staging-{n:08}"),
        digest: digest(n),
        pushed_at: at,
    }
}

/// The deploy function updated the service and died (or is slow) before recording it: ECS's
/// events find the deployment PENDING.
async fn updated_but_not_recorded(w: &World, n: u8) -> (Deployment, String) {
    use ferry::ports::{Begin, Ecs};
    use ferry::render::ImageChange;
    let t = target("shop-staging-api");
    let push = push(n, t0());
    let d = Deployment::new(&push, t.clone(), w.clock.now());
    let until = w.clock.now() + Duration::from_secs(900);
    assert_eq!(w.ledger.begin(&d, "dying-attempt", until, w.clock.now()).await, Ok(Begin::Started));
    let service = w.ecs.service(&t).await.expect("service");
    let change = ImageChange { containers: vec!["api".into()], image: push.image() };
    let ferry::ports::Revision::Registered(revision) =
        w.ecs.register_revision(&t, &service.task_definition, &change, "by-hand").await.expect("register")
    else {
        panic!("not registered")
    };
    let ecs_id = w.ecs.update_service(&t, &service, &revision).await.expect("update");
    (d, ecs_id)
}

#[tokio::test]
async fn a_rollout_reported_before_the_deploy_function_recorded_it_is_adopted_and_verified() {
    let w = World::new(vec![ok("ok")]);
    let (d, ecs_id) = updated_but_not_recorded(&w, 1).await;

    let progress = w.verify(ecs_event("ecs-deployment-in-progress.json", "shop-staging-api", &ecs_id)).await;
    assert_eq!(progress, Ok(VerifyOutcome::Progress { deployment: d.id.clone() }));
    let record = w.record(&ecs_id);
    assert_eq!((record.id.as_str(), record.origin, record.state), (d.id.as_str(), Origin::Ferry, State::InProgress));
    assert!(record.task_definition.is_some());
    let head = w.ledger.head(&target("shop-staging-api")).await.expect("head");
    assert_eq!(head.lock, None, "the dead attempt's lock is released");
    assert_eq!(head.active, Some((d.id.clone(), digest(1))));
    assert_eq!(w.ledger.records().len(), 1, "no record of an 'external' deployment");

    w.ecs.complete(&target("shop-staging-api"));
    assert_eq!(
        w.verify(completed("shop-staging-api", &ecs_id)).await,
        Ok(VerifyOutcome::Succeeded { deployment: d.id.clone() })
    );
    assert_eq!(w.probe.requests().len(), 1, "the smoke test ran");

    // The deploy event, redelivered: already done, nothing deployed again.
    let mut e = sample_event("ecr-push-staging.json");
    (e["id"], e["time"]) = (d.event_id.clone().into(), t0().to_rfc3339().into());
    (e["detail"]["image-tag"], e["detail"]["image-digest"]) = (d.tag.clone().into(), digest(1).into());
    let updates = w.ecs.count("UpdateService");
    let again = w.deploy_event(e, &Invocation { attempt: "redelivered".into(), deadline: None }).await;
    assert!(
        matches!(&again, Ok(DeployOutcome::Deployed(t)) if matches!(t.as_slice(), [TargetOutcome::Duplicate { state: State::Succeeded, .. }])),
        "{again:?}"
    );
    assert_eq!(w.ecs.count("UpdateService"), updates);
}

#[tokio::test]
async fn another_image_rolling_out_while_a_push_is_pending_is_not_adopted() {
    let w = World::new(vec![ok("ok")]);
    let (d, _) = updated_but_not_recorded(&w, 1).await;
    // Someone else's UpdateService, to another image, on top.
    use ferry::ports::Ecs;
    let t = target("shop-staging-api");
    let service = w.ecs.service(&t).await.expect("service");
    let manual = w
        .ecs
        .update_service(&t, &service, "arn:aws:ecs:ap-southeast-1:123456789012:task-definition/api:1")
        .await
        .expect("update");
    let outcome = w.verify(ecs_event("ecs-deployment-in-progress.json", "shop-staging-api", &manual)).await;
    assert!(matches!(outcome, Ok(VerifyOutcome::External { origin: Origin::External, .. })), "{outcome:?}");
    let pending = w.ledger.records().into_iter().find(|r| r.id == d.id).expect("record");
    assert_eq!(pending.state, State::Pending, "the push's record is left to its deploy invocation");
}

#[tokio::test]
async fn a_pending_push_is_adopted_even_when_many_newer_records_hide_it_from_the_recent_history() {
    let w = World::new(vec![ok("ok")]);
    let (d, ecs_id) = updated_but_not_recorded(&w, 1).await;
    // A burst: many newer pushes, refused while this one holds the target.
    for n in 2..40u8 {
        let mut later = d.clone();
        later.id = format!("{}-later-{n:02}", (t0() + Duration::from_secs(u64::from(n))).format("%Y%m%dT%H%M%SZ"));
        later.state = State::Skipped;
        w.ledger.record_skipped(&later).await.expect("skipped");
    }
    let progress = w.verify(ecs_event("ecs-deployment-in-progress.json", "shop-staging-api", &ecs_id)).await;
    assert_eq!(progress, Ok(VerifyOutcome::Progress { deployment: d.id.clone() }));
    assert_eq!(w.ledger.records().iter().filter(|r| r.origin == Origin::External).count(), 0);
}

#[tokio::test]
async fn a_pending_push_behind_a_burst_of_newer_records_is_still_adopted_not_recorded_twice() {
    let w = World::new(vec![ok("ok")]);
    let t = target("shop-staging-api");
    let (d, ecs_id) = updated_but_not_recorded(&w, 1).await;
    // Its attempt failed and gave the lock up; 30 newer pushes were recorded since, and the
    // newest holds the target now.
    w.ledger.unlock(&t, "dying-attempt").await.expect("unlock");
    for n in 2..32u8 {
        w.clock.advance(Duration::from_secs(1));
        let newer = Deployment::new(&push(n, w.clock.now()), t.clone(), w.clock.now());
        let until = w.clock.now() + Duration::from_secs(900);
        w.ledger.begin(&newer, &format!("attempt-{n}"), until, w.clock.now()).await.expect("begin");
        if n < 31 {
            let skipped = Deployment { state: State::Skipped, ..newer };
            w.ledger.finish(&skipped, &format!("attempt-{n}")).await.expect("finish");
        }
    }

    // Found (not recorded as someone else's rollout), but not adoptable while the newest
    // push holds the target: EventBridge is asked to deliver the event again.
    let event = ecs_event("ecs-deployment-in-progress.json", "shop-staging-api", &ecs_id);
    let held = w.verify(event.clone()).await;
    assert!(held.is_err(), "{held:?}");
    assert!(w.ledger.records().iter().all(|r| r.origin == Origin::Ferry), "no external record");
    let newest = w.ledger.records().into_iter().find(|r| r.event_id == "push-31").expect("newest");
    w.ledger.finish(&Deployment { state: State::Skipped, ..newest }, "attempt-31").await.expect("finish");

    let progress = w.verify(event).await;
    assert_eq!(progress, Ok(VerifyOutcome::Progress { deployment: d.id.clone() }));
    let on_record: Vec<Deployment> =
        w.ledger.records().into_iter().filter(|r| r.ecs_deployment_id.as_deref() == Some(ecs_id.as_str())).collect();
    assert_eq!(on_record.len(), 1, "one record of the rollout: {on_record:?}");
    assert_eq!((on_record[0].id.as_str(), on_record[0].state), (d.id.as_str(), State::InProgress));
}

/// The push's invocation updated the service; a rollback (or anyone) updated it again before
/// that invocation recorded its rollout, so ECS no longer shows which image the first ran.
async fn updated_then_overtaken(w: &World) -> (Deployment, String) {
    use ferry::ports::Ecs;
    let (d, ecs_id) = updated_but_not_recorded(w, 1).await;
    let t = target("shop-staging-api");
    let service = w.ecs.service(&t).await.expect("service");
    let over = "arn:aws:ecs:ap-southeast-1:123456789012:task-definition/api:1";
    w.ecs.update_service(&t, &service, over).await.expect("update");
    (d, ecs_id)
}

#[tokio::test]
async fn a_rollout_overtaken_before_its_invocation_recorded_it_is_not_recorded_twice() {
    let w = World::new(vec![ok("ok")]);
    let t = target("shop-staging-api");
    let (d, ecs_id) = updated_then_overtaken(&w).await;

    // Its invocation is still at work: looked at again later, not recorded as someone else's.
    let event = ecs_event("ecs-deployment-in-progress.json", "shop-staging-api", &ecs_id);
    let early = w.verify(event.clone()).await;
    assert!(early.is_err(), "{early:?}");
    assert_eq!(w.ledger.records().len(), 1, "nothing recorded: {:?}", w.ledger.records());

    // The invocation records its rollout; the redelivered event finds that record.
    let started = Deployment { state: State::InProgress, ecs_deployment_id: Some(ecs_id.clone()), ..d.clone() };
    assert_eq!(w.ledger.finish(&started, "dying-attempt").await, Ok(ferry::ports::Finish::Recorded));
    assert_eq!(w.verify(event).await, Ok(VerifyOutcome::Progress { deployment: d.id.clone() }));
    let on_record = w.ledger.records().into_iter().filter(|r| r.ecs_deployment_id.as_deref() == Some(&ecs_id)).count();
    assert_eq!(on_record, 1, "one record of the rollout");
    assert_eq!(w.ledger.head(&t).await.expect("head").lock, None);
}

#[tokio::test]
async fn a_pending_record_older_than_any_invocation_runs_holds_no_event_back() {
    let w = World::new(vec![ok("ok")]);
    let (d, ecs_id) = updated_then_overtaken(&w).await;
    // Its invocation died long ago: nothing will record the rollout but this event.
    w.clock.advance(ferry::deploy::LEASE);
    let outcome = w.verify(ecs_event("ecs-deployment-in-progress.json", "shop-staging-api", &ecs_id)).await;
    assert!(
        matches!(&outcome, Ok(VerifyOutcome::External { origin: Origin::External, state: State::InProgress, .. })),
        "{outcome:?}"
    );
    let pending = w.ledger.records().into_iter().find(|r| r.id == d.id).expect("record");
    assert_eq!(pending.state, State::Pending, "the push's record is left to its redelivered event");
}

/// The next ledger transition is written, but its answer is lost (a timeout after DynamoDB
/// applied it): the invocation fails and EventBridge delivers the event again.
fn lose_next_transition_answer(w: &World, written: Deployment) {
    w.ledger.race_next("transition", written);
    w.ledger.fail_only("transition", Some(ferry::ports::LedgerError("request has timed out".into())));
}

#[tokio::test]
async fn a_rollback_whose_completion_was_recorded_with_its_answer_lost_is_settled_on_redelivery() {
    let w = World::new(vec![ok("ok")]);
    let (id, ecs_rollback) = ecs_rolling_back(&w).await;
    let rollback = w.record(&ecs_rollback);
    lose_next_transition_answer(&w, Deployment { state: State::Succeeded, ..rollback.clone() });
    assert!(w.verify(completed("shop-staging-api", &ecs_rollback)).await.is_err());
    w.ledger.fail_only("transition", None);
    assert_eq!(w.record(&id).state, State::RollingBack);

    let again = w.verify(completed("shop-staging-api", &ecs_rollback)).await;
    assert_eq!(again, Ok(VerifyOutcome::Unchanged { deployment: rollback.id.clone(), state: State::Succeeded }));
    assert_eq!(w.record(&id).state, State::RolledBack, "not left ROLLING_BACK for good");
    let told: Vec<State> = w.notifier.sent().iter().map(|n| n.deployment.state).collect();
    assert_eq!(told, [State::RolledBack], "told once");
    // A third delivery, a minute later, changes nothing and says nothing.
    w.clock.advance(Duration::from_secs(60));
    assert!(matches!(
        w.verify(completed("shop-staging-api", &ecs_rollback)).await,
        Ok(VerifyOutcome::Unchanged { .. })
    ));
    assert_eq!(w.notifier.sent().len(), 1);
}

#[tokio::test]
async fn a_success_recorded_with_its_answer_lost_closes_what_it_overtook_on_redelivery() {
    let w = World::new(vec![ok("ok"), ok("ok")]);
    let old = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    let new = w.deploy("shop/api", "staging-bbbbbbbb", 2).await;
    w.ecs.complete(&target("shop-staging-api"));
    let verified = Deployment { state: State::Succeeded, ..w.record(&new) };
    lose_next_transition_answer(&w, verified);
    assert!(w.verify(completed("shop-staging-api", &new)).await.is_err());
    w.ledger.fail_only("transition", None);
    assert_eq!(w.record(&old).state, State::InProgress);

    let again = w.verify(completed("shop-staging-api", &new)).await;
    assert!(matches!(again, Ok(VerifyOutcome::Unchanged { state: State::Succeeded, .. })), "{again:?}");
    assert_eq!(w.record(&old).state, State::Superseded, "not left IN_PROGRESS for good");
}

fn sweep_schedule() -> Value {
    serde_json::json!({"version": "0", "id": "tick", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": t0().to_rfc3339(), "region": "ap-southeast-1",
        "resources": ["arn:aws:events:ap-southeast-1:123456789012:rule/ferry-sweep"], "detail": {}})
}

#[tokio::test]
async fn the_sweep_settles_rollouts_whose_ecs_events_never_came() {
    let w = World::new(vec![ok("ok")]);
    let api = w.deploy("shop/api", "staging-00000001", 1).await;
    let worker = w.deploy("shop/worker", "staging-00000002", 2).await;
    // ECS completes the API's rollout and fails the worker's; both events are lost.
    w.ecs.complete(&target("shop-staging-api"));
    let failed = EcsDeployment {
        rollout_state: "FAILED".into(),
        ..w.ecs.service(&target("shop-staging-worker")).await.expect("service").primary.expect("primary")
    };
    w.ecs.set_deployments(&target("shop-staging-worker"), vec![failed]);

    // Within the bound the events may still come: nothing is touched.
    assert_eq!(w.verify(sweep_schedule()).await, Ok(VerifyOutcome::Swept(vec![])));
    assert_eq!(w.record(&api).state, State::InProgress);

    w.clock.advance(Duration::from_secs(16 * 60));
    let Ok(VerifyOutcome::Swept(outcomes)) = w.verify(sweep_schedule()).await else { panic!("a sweep") };
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(w.record(&api).state, State::Succeeded, "verified as its COMPLETED event would have: smoke test passed");
    assert_eq!(w.record(&worker).state, State::Failed);
    assert_eq!(w.bus.sent().len(), 1, "the failure is announced for the rollback function");

    // Settled: the next run finds nothing to do.
    assert_eq!(w.verify(sweep_schedule()).await, Ok(VerifyOutcome::Swept(vec![])));
}

#[tokio::test]
async fn the_sweep_pages_when_a_rollback_left_to_ecs_never_appears() {
    let w = World::new(vec![ok("ok")]);
    let api = w.deploy("shop/api", "staging-00000001", 1).await;
    let worker = w.deploy("shop/worker", "staging-00000002", 2).await;
    // The rollback function left both to ECS's own rollback (ROLLING_BACK). ECS rolled the
    // worker back (its events lost) but never started one for the API.
    for id in [&api, &worker] {
        let d = w.record(id);
        let waiting = Deployment { state: State::RollingBack, reason: Some("ECS: tasks failed".into()), ..d.clone() };
        assert!(w.ledger.transition(&waiting, &[State::InProgress], HeadChange::Quarantine).await.expect("write"));
    }
    w.ecs.set_rollbacks(&target("shop-staging-api"), Some((true, false)), &[]);
    assert_eq!(w.ecs.fail_primary(&target("shop-staging-api")), None);
    w.ecs.fail_primary(&target("shop-staging-worker")).expect("ECS rolls the worker back");
    w.ecs.complete(&target("shop-staging-worker"));
    assert_eq!(w.verify(sweep_schedule()).await, Ok(VerifyOutcome::Swept(vec![])), "not yet: ECS may be slow");

    w.clock.advance(Duration::from_secs(16 * 60));
    let Ok(VerifyOutcome::Swept(outcomes)) = w.verify(sweep_schedule()).await else { panic!("a sweep") };
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    let page = w.notifier.sent().into_iter().find(|n| n.deployment.id == w.record(&api).id).expect("paged");
    assert_eq!((page.deployment.state, page.severity()), (State::RollbackFailed, "critical"));
    assert_eq!(page.live_now, w.record(&api).task_definition, "it names what still runs: the failed revision");
    assert!(page.deployment.reason.as_deref().is_some_and(|r| r.contains("no rollback appeared")), "{page:?}");
    assert_eq!(w.record(&worker).state, State::RolledBack);
    assert_eq!(w.verify(sweep_schedule()).await, Ok(VerifyOutcome::Swept(vec![])), "paged once");
}

#[tokio::test]
async fn the_sweep_leaves_a_rollout_ecs_is_still_running_and_supersedes_a_replaced_one() {
    let w = World::new(vec![ok("ok")]);
    let api = w.deploy("shop/api", "staging-00000001", 1).await;
    let worker = w.deploy("shop/worker", "staging-00000002", 2).await;
    // Someone replaced the worker's rollout by hand; its events and ours were lost.
    let mine = w.ecs.service(&target("shop-staging-worker")).await.expect("service").primary.expect("primary");
    let theirs = EcsDeployment { id: "ecs-svc/by-hand".into(), ..mine };
    w.ecs.set_deployments(&target("shop-staging-worker"), vec![theirs]);
    w.clock.advance(Duration::from_secs(16 * 60));

    let Ok(VerifyOutcome::Swept(outcomes)) = w.verify(sweep_schedule()).await else { panic!("a sweep") };
    assert!(matches!(outcomes.as_slice(), [VerifyOutcome::Superseded { .. }]), "{outcomes:?}");
    assert_eq!(w.record(&api).state, State::InProgress, "ECS is still rolling it out");
    assert_eq!(w.record(&worker).state, State::Superseded);
}

#[tokio::test]
async fn a_sweep_schedule_from_another_account_is_rejected() {
    let mut w = World::new(vec![ok("ok")]);
    w.config.home_account = Some("999999999999".into());
    assert!(matches!(w.verify(sweep_schedule()).await, Ok(VerifyOutcome::Rejected(_))));
}

#[tokio::test]
async fn an_event_naming_the_service_by_an_old_format_arn_is_matched_to_its_target() {
    let w = World::new(vec![ok("ok")]);
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.ecs.complete(&target("shop-staging-api"));
    // A service created before the long ARN format: `service/NAME`, no cluster.
    let mut event = completed("shop-staging-api", &id);
    event["resources"] = serde_json::json!(["arn:aws:ecs:ap-southeast-1:123456789012:service/shop-staging-api"]);
    let outcome = w.verify(event).await;
    assert!(matches!(&outcome, Ok(VerifyOutcome::Succeeded { .. })), "{outcome:?}");
    // A name no configured target has, in that form: not Ferry's.
    let mut other = completed("shop-staging-api", "ecs-svc/999");
    other["resources"] = serde_json::json!(["arn:aws:ecs:ap-southeast-1:123456789012:service/billing-api"]);
    assert!(matches!(w.verify(other).await, Ok(VerifyOutcome::Ignored(_))));
}

/// A verified push, then a push that failed Ferry's smoke test on a service whose ECS would
/// roll back failures of its own; the rollback function has claimed the failed push, written
/// its PENDING record and updated the service. The failed push's ECS id, the rollback's record,
/// and the rollback's ECS deployment.
async fn rollback_under_way(w: &World) -> (String, Deployment, String) {
    let api = target("shop-staging-api");
    let good = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.ecs.complete(&api);
    assert!(matches!(w.verify(completed("shop-staging-api", &good)).await, Ok(VerifyOutcome::Succeeded { .. })));
    let bad = w.deploy("shop/api", "staging-bbbbbbbb", 2).await;
    w.ecs.set_rollbacks(&api, Some((true, true)), &[]);
    let d = Deployment { state: State::RollingBack, ..w.record(&bad) };
    assert!(w.ledger.transition(&d, &[State::InProgress], HeadChange::Quarantine).await.expect("claim"));
    let good_revision = w.record(&good).task_definition.expect("revision");
    let rollback = Deployment {
        id: format!("20261116T020100Z-rollback-{}", d.id),
        state: State::Pending,
        origin: Origin::Rollback,
        rolls_back: Some(d.id.clone()),
        ecs_deployment_id: None,
        previous_task_definition: d.task_definition.clone(),
        task_definition: Some(good_revision.clone()),
        ..w.record(&good)
    };
    assert!(w.ledger.record_external(&rollback, HeadChange::None).await.expect("rollback record"));
    let service = w.ecs.service(&api).await.expect("service");
    let ecs_id = w.ecs.update_service(&api, &service, &good_revision).await.expect("update");
    (bad, rollback, ecs_id)
}

#[tokio::test]
async fn ferrys_own_rollback_reported_before_it_was_recorded_is_adopted_not_taken_for_ecss() {
    let w = World::new(vec![ok("ok"), ok("ok")]);
    // The rollback function claimed it, wrote its own record, updated the service, and died.
    let (bad, rollback, ecs_id) = rollback_under_way(&w).await;

    let progress = w.verify(ecs_event("ecs-deployment-in-progress.json", "shop-staging-api", &ecs_id)).await;
    assert_eq!(
        progress,
        Ok(VerifyOutcome::External {
            deployment: rollback.id.clone(),
            origin: Origin::Rollback,
            state: State::InProgress
        })
    );
    assert!(w.ledger.records().iter().all(|r| r.origin != Origin::EcsRollback), "not recorded as ECS's rollback");
    w.ecs.complete(&target("shop-staging-api"));
    w.verify(completed("shop-staging-api", &ecs_id)).await.expect("completed");
    assert_eq!(w.record(&ecs_id).state, State::Succeeded);
    assert_eq!(w.record(&bad).state, State::RolledBack);
}

#[tokio::test]
async fn ferrys_own_rollback_recorded_while_its_event_is_looked_at_is_not_taken_for_ecss() {
    let w = World::new(vec![ok("ok"), ok("ok")]);
    // The rollback function claimed the failed push, wrote its PENDING record, updated the service...
    let (bad, rollback, ecs_id) = rollback_under_way(&w).await;
    // ...and records its rollout just as verify, having read the history and the head, reads the
    // failed push: the PENDING record it saw is gone, and ECS's event looks like ECS's own rollback.
    let recorded = Deployment { state: State::InProgress, ecs_deployment_id: Some(ecs_id.clone()), ..rollback.clone() };
    w.ledger.race_next("deployment", recorded);

    let progress = w.verify(ecs_event("ecs-deployment-in-progress.json", "shop-staging-api", &ecs_id)).await;
    assert!(progress.is_ok(), "{progress:?}");
    assert!(w.ledger.records().iter().all(|r| r.origin != Origin::EcsRollback), "not recorded as ECS's rollback");
    let on_record = w.ledger.records().iter().filter(|r| r.is_rollout_id(&ecs_id)).count();
    assert_eq!(on_record, 1, "the rollout is on record once: the rollback's");
    assert_eq!(w.record(&bad).state, State::RollingBack, "still the rollback function's to settle");
}

#[tokio::test]
async fn an_unknown_rollout_is_not_judged_while_the_service_cannot_be_read() {
    let w = World::new(vec![ok("ok")]);
    let api = target("shop-staging-api");
    let id = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.ecs.set_rollbacks(&api, Some((true, true)), &[]);
    let ecs_rollback = w.ecs.fail_primary(&api).expect("the breaker rolls back");
    let ev = ecs_event("ecs-deployment-circuit-breaker-rollback.json", "shop-staging-api", &ecs_rollback);
    w.ecs.fail("DescribeServices", EcsError::Transient("ThrottlingException".into()));
    assert!(w.verify(ev.clone()).await.is_err(), "retried, not guessed");
    assert_eq!(w.ledger.records().len(), 1, "nothing recorded of ECS's rollback yet");
    assert_eq!(w.record(&id).state, State::InProgress);

    w.ecs.heal("DescribeServices");
    let outcome = w.verify(ev).await;
    assert!(matches!(outcome, Ok(VerifyOutcome::External { origin: Origin::EcsRollback, .. })), "{outcome:?}");
    assert_eq!(w.record(&id).state, State::Failed);
}

#[tokio::test]
async fn a_push_that_starts_while_a_rollback_is_verified_is_not_superseded_by_it() {
    let w = World::new(vec![ok("ok")]);
    let api = target("shop-staging-api");
    let good = w.deploy("shop/api", "staging-aaaaaaaa", 1).await;
    w.ecs.complete(&api);
    w.verify(completed("shop-staging-api", &good)).await.expect("good verified");
    let bad = w.deploy("shop/api", "staging-bbbbbbbb", 2).await;
    // A minute later Ferry rolls the bad push back (pushes are named by their push time,
    // rollbacks by when they were made); ECS completes the rollback's rollout.
    w.clock.advance(Duration::from_secs(60));
    let d = Deployment { state: State::RollingBack, ..w.record(&bad) };
    assert!(w.ledger.transition(&d, &[State::InProgress], HeadChange::Quarantine).await.expect("claim"));
    let good_revision = w.record(&good).task_definition.expect("revision");
    let rollback = Deployment {
        id: format!("{}-rollback-{}", w.clock.now().format("%Y%m%dT%H%M%SZ"), d.id),
        state: State::Pending,
        origin: Origin::Rollback,
        rolls_back: Some(d.id.clone()),
        ecs_deployment_id: None,
        task_definition: Some(good_revision.clone()),
        created_at: w.clock.now(),
        updated_at: w.clock.now(),
        ..w.record(&good)
    };
    assert!(w.ledger.record_external(&rollback, HeadChange::None).await.expect("rollback record"));
    let service = w.ecs.service(&api).await.expect("service");
    let ecs_rollback = w.ecs.update_service(&api, &service, &good_revision).await.expect("update");
    w.verify(ecs_event("ecs-deployment-in-progress.json", "shop-staging-api", &ecs_rollback)).await.expect("adopted");
    w.ecs.complete(&api);
    let rolled_back = w.ecs.service_of(&api).expect("service").deployments;
    // A push that waited for the rollback's lock starts its rollout while the rollback's
    // smoke test runs: its record is newer than the rollback's, its push time older.
    w.clock.advance(Duration::from_secs(1));
    let newer = w.deploy("shop/api", "staging-cccccccc", 3).await;
    let pushed = w.ecs.service_of(&api).expect("service").deployments;
    w.ecs.set_deployments(&api, rolled_back);
    w.ecs.after_reads(&api, 1, pushed);

    w.verify(completed("shop-staging-api", &ecs_rollback)).await.expect("rollback verified");
    assert_eq!(w.record(&ecs_rollback).state, State::Succeeded);
    assert_eq!(w.record(&bad).state, State::RolledBack);
    assert_eq!(w.record(&newer).state, State::InProgress, "the newer push's rollout runs on");
    w.ecs.complete(&api);
    let done = w.verify(completed("shop-staging-api", &newer)).await;
    assert!(matches!(done, Ok(VerifyOutcome::Succeeded { .. })), "{done:?}");
}

/// What the weekly digest's schedule sends (infra/template.yaml's constant input).
fn digest_schedule(account: &str) -> Value {
    serde_json::json!({"source": "ferry", "detail-type": "Weekly Digest", "account": account})
}

#[tokio::test]
async fn the_weekly_digest_posts_the_weeks_figures_once_and_a_failed_post_is_not_retried() {
    let mut w = World::new(vec![ok("ok")]);
    w.config.home_account = Some("123456789012".into());
    let api = w.deploy("shop/api", "staging-00000001", 1).await;
    let worker = w.deploy("shop/worker", "staging-00000002", 2).await;
    w.ecs.complete(&target("shop-staging-api"));
    assert!(matches!(w.verify(completed("shop-staging-api", &api)).await, Ok(VerifyOutcome::Succeeded { .. })));
    let failed = w.verify(ecs_event("ecs-deployment-failed.json", "shop-staging-worker", &worker)).await;
    assert!(matches!(failed, Ok(VerifyOutcome::Failed { .. })), "{failed:?}");
    // A day later: the week the digest covers ends a day before it runs.
    w.clock.advance(Duration::from_secs(25 * 3600));

    let outcome = w.verify(digest_schedule("123456789012")).await;
    assert_eq!(outcome, Ok(VerifyOutcome::Digest { environments: 1, error: None }));
    let [digest] = w.notifier.digests().try_into().expect("one digest");
    assert_eq!(digest.until - digest.since, chrono::Duration::weeks(1));
    assert_eq!(digest.until, w.clock.now() - chrono::Duration::days(1));
    let figures: Vec<(Option<&str>, usize, usize)> =
        digest.rows.iter().map(|r| (r.service.as_deref(), r.metrics.deployments, r.metrics.failed)).collect();
    assert_eq!(figures, [(Some("shop-staging-api"), 1, 0), (Some("shop-staging-worker"), 0, 1), (None, 1, 1)]);
    assert_eq!(digest.failed_most().len(), 1, "the worker");

    let foreign = w.verify(digest_schedule("999999999999")).await;
    assert!(matches!(foreign, Ok(VerifyOutcome::Rejected(_))), "{foreign:?}");
    w.notifier.fail_with(Some("Slack (digest): HTTP 500"));
    let unsent = w.verify(digest_schedule("123456789012")).await;
    assert_eq!(
        unsent,
        Ok(VerifyOutcome::Digest { environments: 1, error: Some("Slack (digest): HTTP 500".into()) }),
        "logged, not retried: SNS may have taken it"
    );
    assert_eq!(w.notifier.digests().len(), 1, "nothing else was posted");
}
