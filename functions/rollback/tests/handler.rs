//! The rollback handler with in-memory ports: one test per rule of the rollback function.
//! The deployments are made and verified by the real deploy and verify handlers.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use ferry::config::Config;
use ferry::deploy::{DeployOutcome, DeploySettings, Deployer, Invocation, Retryable, TargetOutcome};
use ferry::event::failure_detail;
use ferry::fakes::{
    FakeBalancers, FakeClock, FakeEcs, MemoryLedger, RecordingBus, RecordingNotifier, ScriptedProbe, invocation,
    sample_event,
};
use ferry::model::{Deployment, Origin, State, Target};
use ferry::ports::{Claim, Clock, Ecs, EcsDeployment, EcsError, HeadChange, Ledger, LedgerError, ProbeResponse};
use ferry::rollback::{RollbackOutcome, RollbackSettings, Rollbacker, last_known_good};
use ferry::verify::{Verifier, VerifyOutcome, VerifySettings};
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
health = { url = "https://api.{env}.shop.example/healthz", attempts = 1 }
alarms = ["shop-{env}-api-5xx"]
notify = "shop-team"
"#;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 16, 1, 54, 40).single().expect("time")
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

/// Ferry's "Deployment Failed" event about `d`.
fn failed_event(d: &Deployment) -> Value {
    json!({"version": "0", "id": format!("failed-{}", d.id), "detail-type": "Deployment Failed", "source": "ferry",
           "account": "123456789012", "time": "2026-11-16T03:00:00Z", "region": "ap-southeast-1",
           "resources": [], "detail": failure_detail(d)})
}

fn digest(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

fn ecs_event(name: &str, deployment_id: &str) -> Value {
    let mut e = sample_event(name);
    e["detail"]["deploymentId"] = deployment_id.into();
    e
}

struct World {
    config: Config,
    ecs: FakeEcs,
    balancers: FakeBalancers,
    ledger: MemoryLedger,
    notifier: RecordingNotifier,
    bus: RecordingBus,
    healthy: ScriptedProbe,
    unhealthy: ScriptedProbe,
    clock: FakeClock,
}

impl World {
    fn new() -> World {
        let w = World {
            config: Config::parse("ferry.toml", CONFIG).expect("config"),
            ecs: FakeEcs::default(),
            balancers: FakeBalancers::default(),
            ledger: MemoryLedger::default(),
            notifier: RecordingNotifier::default(),
            bus: RecordingBus::default(),
            healthy: ScriptedProbe::answering(vec![Ok(ProbeResponse { status: 200, body: "ok".into() })]),
            unhealthy: ScriptedProbe::answering(vec![Ok(ProbeResponse { status: 500, body: "boom".into() })]),
            clock: FakeClock::at(t0()),
        };
        w.ecs.add_service(&api(), "shop-staging-api", &[("api", "old"), ("proxy", "envoy")]);
        w
    }

    /// Pushes digest `n` and deploys it; returns the ECS deployment id.
    async fn deploy(&self, n: u8) -> String {
        self.clock.advance(Duration::from_secs(60));
        let mut e = sample_event("ecr-push-staging.json");
        e["id"] = format!("push-{n}-{}", self.clock.now().timestamp()).into();
        e["time"] = self.clock.now().to_rfc3339().into();
        e["detail"]["image-tag"] = format!("staging-{n:08}").into();
        e["detail"]["image-digest"] = digest(n).into();
        let deployer = Deployer {
            config: &self.config,
            ecs: &self.ecs,
            ledger: &self.ledger,
            notifier: &self.notifier,
            clock: &self.clock,
            registry: &ferry::fakes::MemoryRegistry::default(),
            settings: DeploySettings::default(),
        };
        let invocation = Invocation { attempt: format!("deploy-{n}"), deadline: None };
        match deployer.handle(e, &invocation).await {
            Ok(DeployOutcome::Deployed(t)) => match t.as_slice() {
                [TargetOutcome::Started { ecs_deployment_id, .. }] => ecs_deployment_id.clone(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    async fn verify(&self, event: Value, healthy: bool) -> VerifyOutcome {
        Verifier {
            config: &self.config,
            ecs: &self.ecs,
            balancers: &self.balancers,
            alarms: &ferry::fakes::FakeAlarms::default(),
            ledger: &self.ledger,
            notifier: &self.notifier,
            bus: &self.bus,
            probe: if healthy { &self.healthy } else { &self.unhealthy },
            clock: &self.clock,
            settings: VerifySettings::default(),
        }
        .handle(event, &invocation("verify"))
        .await
        .expect("verify")
    }

    /// Deploys digest `n` and lets ECS complete it; verify passes or fails the smoke test.
    async fn deploy_and_verify(&self, n: u8, healthy: bool) -> String {
        let id = self.deploy(n).await;
        self.ecs.complete(&api());
        self.verify(ecs_event("ecs-deployment-completed.json", &id), healthy).await;
        id
    }

    async fn rollback(&self, event: Value) -> Vec<RollbackOutcome> {
        self.try_rollback(event).await.expect("rollback")
    }

    /// The rollback handler on `event`, in an invocation of its own.
    async fn try_rollback(&self, event: Value) -> Result<Vec<RollbackOutcome>, Retryable> {
        Rollbacker {
            config: &self.config,
            ecs: &self.ecs,
            ledger: &self.ledger,
            notifier: &self.notifier,
            clock: &self.clock,
            settings: RollbackSettings::default(),
        }
        .handle(event, &invocation("rollback"))
        .await
    }

    fn record(&self, ecs_id: &str) -> Deployment {
        self.ledger.records().into_iter().find(|d| d.ecs_deployment_id.as_deref() == Some(ecs_id)).expect("record")
    }

    /// The "Deployment Failed" events verify announced, as the rollback function gets them.
    fn announced(&self) -> Vec<Value> {
        self.bus.sent().iter().map(failed_event).collect()
    }

    fn live(&self) -> String {
        self.ecs.service_of(&api()).expect("service").task_definition
    }
}

#[tokio::test]
async fn a_failed_smoke_test_rolls_back_to_the_last_known_good_and_quarantines_the_digest() {
    let w = World::new();
    let good = w.deploy_and_verify(1, true).await;
    let good_td = w.record(&good).task_definition.expect("td");
    let bad = w.deploy_and_verify(2, false).await;
    assert_eq!(w.record(&bad).state, State::Failed);

    let [failed] = w.announced().try_into().expect("one announcement");
    let outcome = w.rollback(failed.clone()).await;
    let [RollbackOutcome::RollingBack { to, ecs_deployment_id, .. }] = outcome.as_slice() else {
        panic!("{outcome:?}")
    };
    assert_eq!(*to, good_td);
    assert_eq!(w.live(), good_td, "the service is pointed back at the known-good revision");
    assert_eq!(w.record(&bad).state, State::RollingBack);
    let rollback = w.record(ecs_deployment_id);
    assert_eq!(
        (rollback.origin, rollback.state, rollback.rolls_back.as_deref()),
        (Origin::Rollback, State::InProgress, Some(w.record(&bad).id.as_str()))
    );
    assert_eq!(w.ledger.head(&api()).await.expect("head").quarantine, [digest(2)]);
    let last = w.notifier.sent().pop().expect("message");
    assert_eq!((last.deployment.state, last.live_now.as_deref()), (State::RollingBack, Some(good_td.as_str())));

    // ECS completes the rollback; verify records it ROLLED_BACK and says what is live.
    w.ecs.complete(&api());
    w.verify(ecs_event("ecs-deployment-completed.json", ecs_deployment_id), true).await;
    assert_eq!(w.record(&bad).state, State::RolledBack);
    assert_eq!(w.record(ecs_deployment_id).state, State::Succeeded);
    let last = w.notifier.sent().pop().expect("message");
    assert_eq!(
        (last.deployment.state, last.severity(), last.live_now.as_deref()),
        (State::RolledBack, "error", Some(good_td.as_str()))
    );
    let head = w.ledger.head(&api()).await.expect("head");
    assert_eq!(head.active.map(|(_, d)| d), Some(digest(1)), "the head knows the good digest is live");

    // The same trigger again changes nothing.
    assert!(matches!(
        w.rollback(failed).await.as_slice(),
        [RollbackOutcome::AlreadyHandled { state: State::RolledBack, .. }]
    ));
    assert_eq!(w.ecs.count("UpdateService"), 3, "two deployments and one rollback");
}

#[tokio::test]
async fn a_quarantined_digest_is_not_redeployed_until_another_digest_is_pushed() {
    let w = World::new();
    w.deploy_and_verify(1, true).await;
    let bad = w.deploy_and_verify(2, false).await;
    let [failed] = w.announced().try_into().expect("one");
    w.rollback(failed).await;
    let _ = bad;

    // The bad digest's tag is moved back: skipped, and the team is told.
    w.clock.advance(Duration::from_secs(60));
    let mut again = sample_event("ecr-push-staging.json");
    again["id"] = "tag-moved-back".into();
    again["time"] = w.clock.now().to_rfc3339().into();
    again["detail"]["image-digest"] = digest(2).into();
    let deployer = Deployer {
        config: &w.config,
        ecs: &w.ecs,
        ledger: &w.ledger,
        notifier: &w.notifier,
        clock: &w.clock,
        registry: &ferry::fakes::MemoryRegistry::default(),
        settings: DeploySettings::default(),
    };
    let outcome = deployer.handle(again, &Invocation { attempt: "x".into(), deadline: None }).await;
    assert!(
        matches!(&outcome, Ok(DeployOutcome::Deployed(t)) if matches!(t.as_slice(), [TargetOutcome::Skipped { reason, .. }] if reason.starts_with("quarantined"))),
        "{outcome:?}"
    );
    let told = w.notifier.sent().pop().expect("the team is told");
    assert_eq!((told.deployment.state, told.severity()), (State::Skipped, "warning"));
    assert!(told.deployment.reason.as_deref().is_some_and(|r| r.starts_with("quarantined")));
    // A new digest deploys, and lifts the quarantine.
    w.deploy(3).await;
    assert!(w.ledger.head(&api()).await.expect("head").quarantine.is_empty());
    // An operator can also release a digest by hand.
    w.ledger.release(&api(), &digest(3)).await.expect("release");
}

#[tokio::test]
async fn the_target_is_the_last_verified_revision_not_revision_minus_one() {
    let w = World::new();
    let good = w.deploy_and_verify(1, true).await; // revision 2
    // Someone registers a revision out of band (revision 3), then Ferry deploys revision 4.
    use ferry::ports::Ecs;
    let change = ferry::render::ImageChange { containers: vec!["proxy".into()], image: "envoy:debug".into() };
    w.ecs.register_revision(&api(), &w.live(), &change, "by-hand").await.expect("out of band");
    let bad = w.deploy_and_verify(2, false).await;
    let bad_td = w.record(&bad).task_definition.expect("td");
    assert!(bad_td.ends_with(":4"), "{bad_td}");
    let [failed] = w.announced().try_into().expect("one");
    let outcome = w.rollback(failed).await;
    let [RollbackOutcome::RollingBack { to, .. }] = outcome.as_slice() else { panic!("{outcome:?}") };
    assert_eq!(*to, w.record(&good).task_definition.expect("td"));
    assert!(to.ends_with(":2"), "not :3, the out-of-band revision: {to}");
}

#[test]
fn last_known_good_skips_the_failing_deployment_its_digest_and_anything_unverified() {
    let make = |id: &str, digest: &str, state: State, origin: Origin| {
        let mut d = Deployment::new(
            &ferry::model::Push {
                event_id: id.into(),
                registry_account: "1".into(),
                registry_region: "r".into(),
                repository: "shop/api".into(),
                tag: "t".into(),
                digest: digest.into(),
                pushed_at: t0(),
            },
            api(),
            t0(),
        );
        d.id = id.into();
        d.state = state;
        d.origin = origin;
        d.task_definition = Some(format!("td-{id}"));
        d
    };
    let failing = make("5", "sha256:bad", State::Failed, Origin::Ferry);
    // Newest first, as the ledger returns it.
    let history = vec![
        failing.clone(),
        make("4", "sha256:manual", State::Succeeded, Origin::External),
        make("3", "sha256:bad", State::Succeeded, Origin::Ferry),
        make("2", "sha256:x", State::RolledBack, Origin::Ferry),
        make("1", "sha256:good", State::Succeeded, Origin::Ferry),
        make("0", "sha256:older", State::Succeeded, Origin::Ferry),
    ];
    assert_eq!(last_known_good(&history, &failing, None).map(|d| d.id.as_str()), Some("1"));
    assert_eq!(last_known_good(&history, &failing, Some("0")).map(|d| d.id.as_str()), Some("0"));
    assert_eq!(last_known_good(&history, &failing, Some("2")), None, "a rolled-back deployment is no target");
    assert_eq!(last_known_good(&history[..4], &failing, None), None);
}

#[tokio::test]
async fn without_a_known_good_revision_nothing_is_done_and_the_team_is_told_why() {
    let w = World::new();
    let bad = w.deploy_and_verify(1, false).await;
    let [failed] = w.announced().try_into().expect("one");
    let outcome = w.rollback(failed).await;
    assert!(matches!(outcome.as_slice(), [RollbackOutcome::NoKnownGood { .. }]), "{outcome:?}");
    assert_eq!(w.ecs.count("UpdateService"), 1, "only the deployment itself");
    let record = w.record(&bad);
    assert_eq!(record.state, State::Failed);
    assert!(
        record
            .reason
            .as_deref()
            .is_some_and(|r| r.ends_with("no revision on record passed verification, so nothing was rolled back")),
        "{record:?}"
    );
    let last = w.notifier.sent().pop().expect("message");
    assert!(last.deployment.reason.as_deref().is_some_and(|r| r.contains("nothing was rolled back")));

    // The same failure delivered again: nothing noted or said twice.
    let sent = w.notifier.sent().len();
    let [failed] = w.announced().try_into().expect("one");
    let again = w.rollback(failed).await;
    assert!(matches!(again.as_slice(), [RollbackOutcome::AlreadyHandled { state: State::Failed, .. }]), "{again:?}");
    assert_eq!(w.notifier.sent().len(), sent);
    assert_eq!(w.record(&bad).reason, record.reason);
}

#[tokio::test]
async fn duplicate_and_concurrent_triggers_cause_one_rollback() {
    let w = World::new();
    w.deploy_and_verify(1, true).await;
    let bad = w.deploy_and_verify(2, false).await;
    let [failed] = w.announced().try_into().expect("one");
    let ecs_failed = ecs_event("ecs-deployment-failed.json", &bad);
    let (a, b) = tokio::join!(w.rollback(failed.clone()), w.rollback(failed.clone()));
    let c = w.rollback(ecs_failed).await;
    let rolled: usize = [a, b, c].iter().flatten().filter(|o| matches!(o, RollbackOutcome::RollingBack { .. })).count();
    assert_eq!(rolled, 1);
    assert_eq!(w.ecs.count("UpdateService"), 3, "two deployments and one rollback");
    assert_eq!(w.ledger.records().iter().filter(|d| d.origin == Origin::Rollback).count(), 1);
}

#[tokio::test]
async fn when_ecs_already_rolled_back_ferry_does_not_roll_back_again() {
    let w = World::new();
    let good = w.deploy_and_verify(1, true).await;
    let good_td = w.record(&good).task_definition.expect("td");
    let bad = w.deploy(2).await;
    // ECS's circuit breaker fails the deployment and starts its own rollback.
    let ecs_rollback = "ecs-svc/9876543210987654321";
    let mut deployments = w.ecs.service_of(&api()).expect("service").deployments;
    deployments.push(EcsDeployment {
        id: ecs_rollback.into(),
        task_definition: good_td.clone(),
        rollout_state: "IN_PROGRESS".into(),
        running: 0,
        desired: 2,
    });
    w.ecs.set_deployments(&api(), deployments);
    w.verify(ecs_event("ecs-deployment-failed.json", &bad), true).await;
    w.verify(ecs_event("ecs-deployment-circuit-breaker-rollback.json", ecs_rollback), true).await;

    for failed in w.announced() {
        let outcome = w.rollback(failed).await;
        assert!(
            matches!(
                outcome.as_slice(),
                [RollbackOutcome::EcsRollingBack { .. } | RollbackOutcome::AlreadyHandled { .. }]
            ),
            "{outcome:?}"
        );
    }
    assert_eq!(w.rollback(ecs_event("ecs-deployment-failed.json", &bad)).await.len(), 1);
    assert_eq!(w.ecs.count("UpdateService"), 2, "Ferry never updated the service for the rollback");
    assert_eq!(w.record(&bad).state, State::RollingBack);

    w.ecs.complete(&api());
    w.verify(ecs_event("ecs-deployment-completed.json", ecs_rollback), true).await;
    assert_eq!(w.record(&bad).state, State::RolledBack);
    assert_eq!(w.ledger.head(&api()).await.expect("head").quarantine, [digest(2)]);
}

#[tokio::test]
async fn ferry_never_races_a_rollback_the_services_settings_say_ecs_makes() {
    let w = World::new();
    w.deploy_and_verify(1, true).await;
    let bad = w.deploy(2).await;
    // ECS fails the rollout and rolls back (Ferry turned the breaker on, with rollback); its
    // FAILED event comes first, before DescribeServices shows the rollback.
    let deployments = w.ecs.service_of(&api()).expect("service").deployments;
    w.ecs.fail_primary(&api()).expect("ECS rolls back");
    let lagging = w.ecs.service_of(&api()).expect("service").deployments;
    w.ecs.set_deployments(&api(), deployments);
    let outcome = w.rollback(ecs_event("ecs-deployment-failed.json", &bad)).await;
    assert!(matches!(outcome.as_slice(), [RollbackOutcome::EcsRollingBack { .. }]), "{outcome:?}");
    assert_eq!(w.ecs.count("UpdateService"), 2, "no second rollback over ECS's");
    assert_eq!(w.record(&bad).state, State::RollingBack);
    w.ecs.set_deployments(&api(), lagging);
}

#[tokio::test]
async fn an_ecs_failure_ecs_does_not_roll_back_is_rolled_back_by_ferry() {
    let w = World::new();
    let good = w.deploy_and_verify(1, true).await;
    // The team runs the circuit breaker without rollback (Ferry keeps their choice).
    w.ecs.set_rollbacks(&api(), Some((true, false)), &[]);
    let bad = w.deploy(2).await;
    assert_eq!(w.ecs.fail_primary(&api()), None, "ECS leaves the failure live");
    let outcome = w.rollback(ecs_event("ecs-deployment-failed.json", &bad)).await;
    let [RollbackOutcome::RollingBack { to, .. }] = outcome.as_slice() else { panic!("{outcome:?}") };
    assert_eq!(Some(to.clone()), w.record(&good).task_definition);
    assert_eq!(w.live(), to.clone());
}

#[tokio::test]
async fn an_alarm_ecs_watches_with_rollback_is_left_to_ecs_while_the_rollout_runs() {
    let w = World::new();
    w.deploy_and_verify(1, true).await;
    let bad = w.deploy(2).await;
    // The service's deployment alarms include the one Ferry's config names, with rollback.
    w.ecs.set_rollbacks(&api(), Some((true, false)), &["shop-staging-api-5xx"]);
    let outcome = w.rollback(alarm_at(w.clock.now())).await;
    assert!(matches!(outcome.as_slice(), [RollbackOutcome::EcsRollingBack { .. }]), "{outcome:?}");
    assert_eq!(w.ecs.count("UpdateService"), 2, "ECS rolls it back, not Ferry too");
    assert_eq!(
        w.record(&bad).state,
        State::RollingBack,
        "waiting for ECS's rollback (the sweep pages if it never comes)"
    );

    // Once verified, ECS no longer watches the rollout: the alarm is Ferry's to act on.
    let w = World::new();
    w.deploy_and_verify(1, true).await;
    let verified = w.deploy_and_verify(2, true).await;
    w.ecs.set_rollbacks(&api(), Some((true, false)), &["shop-staging-api-5xx"]);
    let outcome = w.rollback(alarm_at(w.clock.now())).await;
    assert!(matches!(outcome.as_slice(), [RollbackOutcome::RollingBack { .. }]), "{outcome:?}");
    assert_eq!(w.record(&verified).state, State::RollingBack);
}

/// During a blue/green (linear, canary) rollout blue still runs: Ferry stops the rollout and
/// ECS moves traffic back, rather than starting a second deployment over the first.
#[tokio::test]
async fn a_blue_green_rollout_under_way_is_stopped_so_ecs_moves_traffic_back_to_blue() {
    let w = World::new();
    w.deploy_and_verify(1, true).await;
    w.ecs.set_strategy(&api(), "BLUE_GREEN");
    let bad = w.deploy(2).await;
    let outcome = w.rollback(alarm_at(w.clock.now())).await;
    assert!(matches!(outcome.as_slice(), [RollbackOutcome::EcsRollingBack { .. }]), "{outcome:?}");
    assert_eq!(w.ecs.count("StopServiceDeployment"), 1);
    assert_eq!(w.ecs.count("UpdateService"), 2, "no deployment of Ferry's over the stopped one");
    let record = w.record(&bad);
    assert_eq!(record.state, State::RollingBack, "until ECS reports its rollback done");
    assert!(w.ledger.head(&api()).await.expect("head").quarantine.contains(&record.digest));
    // The same alarm again changes nothing.
    let again = w.rollback(alarm_at(w.clock.now())).await;
    assert!(matches!(again.as_slice(), [RollbackOutcome::AlreadyHandled { .. }]), "{again:?}");
    assert_eq!(w.ecs.count("StopServiceDeployment"), 1);

    // Once verified, blue is gone: the last-known-good revision is put back the usual way.
    let w = World::new();
    w.deploy_and_verify(1, true).await;
    w.ecs.set_strategy(&api(), "BLUE_GREEN");
    let verified = w.deploy_and_verify(2, true).await;
    let outcome = w.rollback(alarm_at(w.clock.now())).await;
    assert!(matches!(outcome.as_slice(), [RollbackOutcome::RollingBack { .. }]), "{outcome:?}");
    assert_eq!((w.ecs.count("StopServiceDeployment"), w.record(&verified).state), (0, State::RollingBack));
}

#[tokio::test]
async fn a_rollout_by_hand_that_fails_its_smoke_test_is_rolled_back_only_where_the_config_says_so() {
    for roll_back in [true, false] {
        let mut w = World::new();
        if roll_back {
            let text =
                CONFIG.replace("containers = [\"api\"]", "containers = [\"api\"]\non_external_failure = \"roll_back\"");
            w.config = Config::parse("ferry.toml", &text).expect("config");
        }
        let good = w.deploy_and_verify(1, true).await;
        // An UpdateService by hand to a broken revision; its smoke test fails.
        let manual = "ecs-svc/4343434343434343434";
        let mut deployments = w.ecs.service_of(&api()).expect("service").deployments;
        deployments.push(EcsDeployment {
            id: manual.into(),
            task_definition: "shop-staging-api:9".into(),
            rollout_state: "COMPLETED".into(),
            running: 2,
            desired: 2,
        });
        w.ecs.set_deployments(&api(), deployments);
        w.verify(ecs_event("ecs-deployment-completed.json", manual), false).await;
        assert_eq!(w.record(manual).state, State::Failed);
        if !roll_back {
            assert!(w.announced().is_empty(), "only the team is told");
            let outcome = w.rollback(failed_event(&w.record(manual))).await;
            assert!(matches!(outcome.as_slice(), [RollbackOutcome::Ignored(_)]), "{outcome:?}");
            assert_eq!(w.live(), "shop-staging-api:9");
            continue;
        }
        let outcome = w.rollback(w.announced().pop().expect("announced")).await;
        let [RollbackOutcome::RollingBack { to, .. }] = outcome.as_slice() else { panic!("{outcome:?}") };
        assert_eq!(Some(to.clone()), w.record(&good).task_definition);
        assert!(w.ledger.head(&api()).await.expect("head").quarantine.is_empty(), "no digest to quarantine");
    }
}

#[tokio::test]
async fn a_failed_rollback_pages_and_stops() {
    let w = World::new();
    w.deploy_and_verify(1, true).await;
    let bad = w.deploy_and_verify(2, false).await;
    w.ecs.fail("UpdateService", EcsError::Rejected("InvalidParameterException: the cluster is draining".into()));
    let [failed] = w.announced().try_into().expect("one");
    let outcome = w.rollback(failed).await;
    assert!(
        matches!(outcome.as_slice(), [RollbackOutcome::RollbackFailed { reason, .. }] if reason.contains("draining")),
        "{outcome:?}"
    );
    assert_eq!(w.record(&bad).state, State::RollbackFailed);
    let last = w.notifier.sent().pop().expect("page");
    assert_eq!((last.deployment.state, last.severity()), (State::RollbackFailed, "critical"));
    assert_eq!(last.live_now, Some(w.live()), "the page names what ECS runs: the bad revision");
}

#[tokio::test]
async fn a_rollback_whose_deployment_fails_is_never_rolled_back() {
    let w = World::new();
    w.deploy_and_verify(1, true).await;
    let bad = w.deploy_and_verify(2, false).await;
    let [failed] = w.announced().try_into().expect("one");
    let outcome = w.rollback(failed).await;
    let [RollbackOutcome::RollingBack { ecs_deployment_id, .. }] = outcome.as_slice() else { panic!("{outcome:?}") };

    w.verify(ecs_event("ecs-deployment-failed.json", ecs_deployment_id), true).await;
    assert_eq!(w.record(&bad).state, State::RollbackFailed);
    assert_eq!(w.record(ecs_deployment_id).state, State::Failed);
    assert_eq!(w.bus.sent().len(), 1, "the rollback's failure is not announced for another rollback");
    let outcome = w.rollback(ecs_event("ecs-deployment-failed.json", ecs_deployment_id)).await;
    assert!(
        matches!(outcome.as_slice(), [RollbackOutcome::Ignored(_) | RollbackOutcome::AlreadyHandled { .. }]),
        "{outcome:?}"
    );
    assert_eq!(w.ecs.count("UpdateService"), 3);
    let last = w.notifier.sent().pop().expect("page");
    assert_eq!((last.deployment.state, last.severity()), (State::RollbackFailed, "critical"));
    assert_eq!(last.live_now, Some(w.live()), "the page names what ECS runs: the bad revision");
}

#[tokio::test]
async fn an_alarm_for_a_service_rolls_back_its_verified_deployment() {
    let w = World::new();
    let first = w.deploy_and_verify(1, true).await;
    let second = w.deploy_and_verify(2, true).await;
    assert_eq!(w.record(&second).state, State::Succeeded);
    let outcome = w.rollback(sample_event("cloudwatch-alarm-state-change.json")).await;
    let [RollbackOutcome::RollingBack { to, .. }] = outcome.as_slice() else { panic!("{outcome:?}") };
    assert_eq!(Some(to.clone()), w.record(&first).task_definition);
    let record = w.record(&second);
    assert_eq!(record.state, State::RollingBack);
    assert!(
        record.reason.as_deref().is_some_and(|r| r.starts_with("alarm shop-staging-api-5xx: Threshold Crossed")),
        "{record:?}"
    );

    let mut other = sample_event("cloudwatch-alarm-state-change.json");
    other["detail"]["alarmName"] = "billing-5xx".into();
    assert!(matches!(w.rollback(other).await.as_slice(), [RollbackOutcome::Ignored(_)]));
}

/// The sample alarm's state change into ALARM, made by CloudWatch at `at`.
fn alarm_at(at: DateTime<Utc>) -> Value {
    let mut e = sample_event("cloudwatch-alarm-state-change.json");
    e["detail"]["state"]["timestamp"] = at.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string().into();
    e
}

#[tokio::test]
async fn an_alarm_rolls_back_only_within_its_window_after_the_deployment_went_live() {
    let w = World::new();
    let first = w.deploy_and_verify(1, true).await;
    let second = w.deploy_and_verify(2, true).await;
    let live_at = w.record(&second).live_at.expect("stamped when verified");
    let told = w.notifier.sent().len();

    // A downstream outage long after: the team is told, nothing is rolled back or quarantined.
    w.clock.advance(Duration::from_secs(40 * 60));
    let outcome = w.rollback(alarm_at(live_at + chrono::Duration::minutes(31))).await;
    assert!(matches!(outcome.as_slice(), [RollbackOutcome::AlarmIgnored { .. }]), "{outcome:?}");
    assert_eq!(w.record(&second).state, State::Succeeded);
    assert_eq!(Some(w.live()), w.record(&second).task_definition);
    assert!(w.ledger.head(&api()).await.expect("head").quarantine.is_empty());
    let sent = w.notifier.sent();
    assert_eq!(sent.len(), told + 1, "one message about the alarm");
    let alert = sent.last().expect("alert");
    assert_eq!((alert.severity(), alert.slack), ("warning", true));
    assert!(alert.headline().contains("alarm shop-staging-api-5xx") && alert.headline().ends_with("not rolled back"));

    // Within the window (an event delivered late, stamped when the alarm went off), it acts.
    let outcome = w.rollback(alarm_at(live_at + chrono::Duration::minutes(29))).await;
    let [RollbackOutcome::RollingBack { to, .. }] = outcome.as_slice() else { panic!("{outcome:?}") };
    assert_eq!(Some(to.clone()), w.record(&first).task_definition);
}

#[tokio::test]
async fn an_alarm_that_went_off_before_the_deployment_started_does_not_count_against_it() {
    let w = World::new();
    w.deploy_and_verify(1, true).await;
    let before = w.clock.now();
    w.clock.advance(Duration::from_secs(5));
    let second = w.deploy(2).await;
    let told = w.notifier.sent().len();
    let outcome = w.rollback(alarm_at(before)).await;
    assert!(matches!(outcome.as_slice(), [RollbackOutcome::AlarmIgnored { .. }]), "{outcome:?}");
    assert_eq!(w.record(&second).state, State::InProgress);
    assert_eq!(w.notifier.sent().len(), told, "nothing to tell: the alarm was in ALARM before it started");
    // One that goes off while it rolls out acts.
    let outcome = w.rollback(alarm_at(w.clock.now())).await;
    assert!(matches!(outcome.as_slice(), [RollbackOutcome::RollingBack { .. }]), "{outcome:?}");
}

#[tokio::test]
async fn an_operator_can_ask_for_a_rollback_to_a_named_deployment() {
    let w = World::new();
    let first = w.deploy_and_verify(1, true).await;
    w.deploy_and_verify(2, true).await;
    let third = w.deploy_and_verify(3, true).await;
    let request = json!({"version": "0", "id": "req-1", "detail-type": "Rollback Requested", "source": "ferry",
        "account": "123456789012", "time": "2026-11-16T03:00:00Z", "region": "ap-southeast-1", "resources": [],
        "detail": {"environment": "staging", "service": "shop-staging-api", "to": w.record(&first).id, "requested_by": "alice"}});
    let outcome = w.rollback(request).await;
    let [RollbackOutcome::RollingBack { to, .. }] = outcome.as_slice() else { panic!("{outcome:?}") };
    assert_eq!(Some(to.clone()), w.record(&first).task_definition);
    assert_eq!(w.record(&third).reason.as_deref(), Some("rollback requested by alice"));
}

#[tokio::test]
async fn irrelevant_and_malformed_triggers_change_nothing() {
    let w = World::new();
    w.deploy_and_verify(1, true).await;
    let updates = w.ecs.count("UpdateService");
    let rejected = w.rollback(sample_event("ecr-push-staging.json")).await;
    assert!(matches!(rejected.as_slice(), [RollbackOutcome::Rejected(_)]), "{rejected:?}");
    for event in [
        sample_event("ecs-deployment-completed.json"),
        json!({"detail-type": "Deployment Failed"}),
        json!({"version": "0", "id": "x", "detail-type": "Deployment Failed", "source": "ferry", "detail": {"deployment": 1}}),
        json!({"version": "0", "id": "y", "detail-type": "Rollback Requested", "source": "ferry",
               "detail": {"environment": "staging", "service": "billing"}}),
    ] {
        let outcome = w.rollback(event.clone()).await;
        assert!(matches!(outcome.as_slice(), [RollbackOutcome::Ignored(_)]), "{event}: {outcome:?}");
    }
    assert_eq!(w.ecs.count("UpdateService"), updates);
}

#[tokio::test]
async fn triggers_from_accounts_that_may_not_send_them_are_rejected() {
    let mut w = World::new();
    w.config.home_account = Some("123456789012".into());
    w.deploy_and_verify(1, true).await;
    let second = w.deploy_and_verify(2, true).await;
    let updates = w.ecs.count("UpdateService");

    // Ferry's own events are Ferry's account's only; an AWS service's, Ferry's or a target's.
    let request = json!({"version": "0", "id": "r1", "detail-type": "Rollback Requested", "source": "ferry",
        "account": "999999999999", "time": "2026-11-16T03:00:00Z", "region": "ap-southeast-1", "resources": [],
        "detail": {"environment": "staging", "service": "shop-staging-api", "requested_by": "mallory"}});
    let mut alarm = sample_event("cloudwatch-alarm-state-change.json");
    alarm["account"] = "999999999999".into();
    for event in [request.clone(), alarm] {
        let outcome = w.rollback(event).await;
        assert!(
            matches!(outcome.as_slice(), [RollbackOutcome::Rejected(why)] if why.contains("999999999999")),
            "{outcome:?}"
        );
    }
    assert_eq!(w.ecs.count("UpdateService"), updates);
    assert_eq!(w.record(&second).state, State::Succeeded, "nothing rolled back");

    // The same request from Ferry's own account is acted on.
    let mut own = request;
    own["account"] = "123456789012".into();
    assert!(matches!(w.rollback(own).await.as_slice(), [RollbackOutcome::RollingBack { .. }]));
}

#[tokio::test]
async fn a_rollback_whose_update_answer_is_lost_is_recorded_as_the_rollback_it_is() {
    let w = World::new();
    let first = w.deploy_and_verify(1, true).await;
    let bad = w.deploy_and_verify(2, false).await;
    // UpdateService puts the good revision back, but its answer never comes.
    w.ecs.lose_update_answers(true);
    let outcome = w.rollback(w.announced().pop().expect("announced")).await;
    let [RollbackOutcome::RollingBack { to, .. }] = outcome.as_slice() else { panic!("{outcome:?}") };
    assert_eq!(Some(to.clone()), w.record(&first).task_definition);
    assert_eq!(w.live(), to.clone(), "the service is back on the good revision");
    assert_eq!(w.record(&bad).state, State::RollingBack, "not ROLLBACK_FAILED: the rollback happened");
}

#[tokio::test]
async fn a_rollback_overtaken_by_a_newer_push_still_ends_its_deployment_rolled_back() {
    let w = World::new();
    w.deploy_and_verify(1, true).await;
    let bad = w.deploy_and_verify(2, false).await;
    let outcome = w.rollback(w.announced().pop().expect("announced")).await;
    let [RollbackOutcome::RollingBack { ecs_deployment_id: rolling, .. }] = outcome.as_slice() else {
        panic!("{outcome:?}")
    };
    assert_eq!(w.record(&bad).state, State::RollingBack);
    // A fix is pushed and rolls out over the rollback before ECS completed it.
    let fix = w.deploy_and_verify(3, true).await;
    assert_eq!(w.record(&fix).state, State::Succeeded);
    assert_eq!(w.record(rolling).state, State::Superseded, "the rollback's rollout was replaced");
    let undone = w.record(&bad);
    assert_eq!(undone.state, State::RolledBack, "the failed image is gone all the same");
    assert!(
        undone.reason.as_deref().is_some_and(|r| r.ends_with("replaced it before its rollback completed")),
        "{undone:?}"
    );
    let in_flight = [State::Pending, State::InProgress, State::Verifying, State::RollingBack];
    assert!(w.ledger.records().iter().all(|r| !in_flight.contains(&r.state)), "nothing left in flight");
}

#[tokio::test]
async fn a_failure_a_newer_push_replaced_before_its_rollback_began_is_not_rolled_back_over_it() {
    let w = World::new();
    w.deploy_and_verify(1, true).await;
    let bad = w.deploy_and_verify(2, false).await;
    // A fix is pushed and rolls out before the rollback function gets the failure.
    let fix = w.deploy(3).await;
    let fix_td = w.record(&fix).task_definition.expect("td");
    let updates = w.ecs.count("UpdateService");

    let outcome = w.rollback(w.announced().pop().expect("announced")).await;
    let fix_id = w.record(&fix).id;
    assert_eq!(
        outcome,
        [RollbackOutcome::Overtaken { deployment: w.record(&bad).id, by: fix_id.clone() }],
        "{outcome:?}"
    );
    assert_eq!(w.live(), fix_td, "the newer push is left rolling out");
    assert_eq!(w.ecs.count("UpdateService"), updates, "nothing put back");
    let undone = w.record(&bad);
    assert_eq!(undone.state, State::RolledBack, "its image is gone all the same");
    assert!(undone.reason.as_deref().is_some_and(|r| r.contains(&fix_id)), "{undone:?}");
    assert_eq!(w.ledger.head(&api()).await.expect("head").quarantine, [digest(2)]);
    let last = w.notifier.sent().pop().expect("message");
    assert_eq!((last.deployment.state, last.live_now), (State::RolledBack, None));
    // The same trigger again changes nothing.
    let again = w.rollback(w.announced().pop().expect("announced")).await;
    assert!(matches!(again.as_slice(), [RollbackOutcome::AlreadyHandled { state: State::RolledBack, .. }]));
}

/// What an invocation that Lambda stopped part-way through a rollback of `bad` leaves: the
/// deployment ROLLING_BACK under its claim (lapsing at `until`), and, if it got that far,
/// its rollback record PENDING and the service updated.
async fn stopped_part_way(w: &World, bad: &str, until: DateTime<Utc>, recorded: bool, updated: bool) -> Deployment {
    let d = w.record(bad);
    let failed = Deployment { state: State::Failed, reason: Some("smoke test failed".into()), ..d.clone() };
    assert!(w.ledger.transition(&failed, &[d.state], HeadChange::None).await.expect("failed"));
    let rolling = Deployment { state: State::RollingBack, ..failed };
    let dead = Claim { by: "stopped".into(), until };
    assert!(
        w.ledger.claim(&rolling, State::Failed, HeadChange::Quarantine, w.clock.now(), &dead).await.expect("claim")
    );
    let good = w.ledger.records().into_iter().find(|r| r.state == State::Succeeded).expect("good");
    let record = Deployment {
        id: format!("stopped-rollback-{}", rolling.id),
        state: State::Pending,
        origin: Origin::Rollback,
        rolls_back: Some(rolling.id.clone()),
        ecs_deployment_id: None,
        ..good.clone()
    };
    if recorded {
        assert!(w.ledger.record_external(&record, HeadChange::None).await.expect("record"));
    }
    if updated {
        let service = w.ecs.service(&api()).await.expect("service");
        w.ecs.update_service(&api(), &service, good.task_definition.as_deref().expect("td")).await.expect("update");
    }
    rolling
}

#[tokio::test]
async fn a_rollback_stopped_part_way_is_taken_over_by_its_redelivered_trigger_once_its_claim_lapses() {
    // Stopped after ROLLING_BACK; after recording its rollback too; after updating the service too.
    for (recorded, updated) in [(false, false), (true, false), (true, true)] {
        let w = World::new();
        let first = w.deploy_and_verify(1, true).await;
        let bad = w.deploy(2).await;
        let updates = w.ecs.count("UpdateService");
        let d = stopped_part_way(&w, &bad, w.clock.now() + Duration::from_secs(65), recorded, updated).await;
        let trigger = failed_event(&d);

        // While the claim holds and the holder shows no progress, another trigger waits a
        // while for it, then asks for a redelivery.
        let early = w.try_rollback(trigger.clone()).await;
        assert!(early.is_err(), "{early:?}");
        assert_eq!(w.ecs.count("UpdateService"), updates + usize::from(updated));

        // Lambda redelivers the stopped invocation's trigger a minute or more later.
        w.clock.advance(Duration::from_secs(50));
        let outcome = w.rollback(trigger.clone()).await;
        let [RollbackOutcome::RollingBack { to, ecs_deployment_id, .. }] = outcome.as_slice() else {
            panic!("{recorded} {updated}: {outcome:?}")
        };
        assert_eq!(Some(to.clone()), w.record(&first).task_definition);
        assert_eq!(w.live(), to.clone(), "the good revision is back");
        assert_eq!(w.ecs.count("UpdateService"), updates + 1, "{recorded} {updated}: one update, never two");
        let rollbacks: Vec<Deployment> =
            w.ledger.records().into_iter().filter(|r| r.origin == Origin::Rollback).collect();
        let [rollback] = rollbacks.as_slice() else { panic!("{recorded} {updated}: {rollbacks:?}") };
        assert_eq!(rollback.state, State::InProgress);
        assert_eq!(rollback.ecs_deployment_id.as_ref(), Some(ecs_deployment_id));
        assert_eq!(w.ledger.head(&api()).await.expect("head").quarantine, [digest(2)]);

        // And a later redelivery finds it done.
        w.clock.advance(Duration::from_secs(400));
        let again = w.rollback(trigger).await;
        assert!(matches!(again.as_slice(), [RollbackOutcome::AlreadyHandled { .. }]), "{again:?}");
        assert_eq!(w.ecs.count("UpdateService"), updates + 1);
    }
}

#[tokio::test]
async fn a_rollback_that_fails_part_way_gives_its_claim_back_and_its_redelivery_finishes_at_once() {
    let w = World::new();
    w.deploy_and_verify(1, true).await;
    let bad = w.deploy_and_verify(2, false).await;
    let trigger = w.announced().pop().expect("announced");
    w.ledger.fail_only("record_external", Some(LedgerError("InternalServerError".into())));
    let failed = w.try_rollback(trigger.clone()).await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(w.record(&bad).state, State::RollingBack);

    w.ledger.fail_only("record_external", None);
    let outcome = w.rollback(trigger).await;
    assert!(matches!(outcome.as_slice(), [RollbackOutcome::RollingBack { .. }]), "{outcome:?}");
    assert_eq!(w.ledger.records().iter().filter(|r| r.origin == Origin::Rollback).count(), 1);
}

#[tokio::test]
async fn a_failure_announced_before_verify_recorded_it_is_rolled_back_whoever_records_it() {
    let w = World::new();
    let first = w.deploy_and_verify(1, true).await;
    let bad = w.deploy(2).await;
    w.ecs.complete(&api());
    // Verify claimed the deployment and announced its failure; it has not recorded it yet.
    let d = w.record(&bad);
    let verifying = Deployment { state: State::Verifying, ..d.clone() };
    let claim = Claim { by: "verify".into(), until: w.clock.now() + Duration::from_secs(300) };
    assert!(
        w.ledger.claim(&verifying, State::InProgress, HeadChange::None, w.clock.now(), &claim).await.expect("claim")
    );
    let failed = Deployment { state: State::Failed, reason: Some("smoke test failed: HTTP 503".into()), ..d };
    // Verify records FAILED just before the rollback's own VERIFYING -> FAILED write.
    w.ledger.race_next("transition", failed.clone());

    let outcome = w.rollback(failed_event(&failed)).await;
    let [RollbackOutcome::RollingBack { to, .. }] = outcome.as_slice() else { panic!("{outcome:?}") };
    assert_eq!(Some(to.clone()), w.record(&first).task_definition);
    assert_eq!(w.live(), to.clone(), "the broken deploy does not stay live");
    let rolling = w.record(&bad);
    assert_eq!(rolling.state, State::RollingBack);
    assert_eq!(rolling.reason.as_deref(), Some("smoke test failed: HTTP 503"), "verify's reason kept");
}

#[tokio::test]
async fn a_rollback_never_puts_the_known_good_back_over_a_push_not_yet_recorded() {
    let w = World::new();
    w.deploy_and_verify(1, true).await;
    let bad = w.deploy_and_verify(2, false).await;
    let bad_id = w.record(&bad).id;
    // A fix's invocation holds the target: it has updated the service, not yet recorded it.
    let mut head = w.ledger.head(&api()).await.expect("head");
    let until = w.clock.now() + Duration::from_secs(600);
    head.lock = Some(ferry::model::Lock { deployment: "push-3".into(), attempt: "deploy-3".into(), until });
    w.ledger.set_head(&api(), head.clone());
    let updates = w.ecs.count("UpdateService");

    let failed = w.announced().pop().expect("announced");
    let waited = w.try_rollback(failed.clone()).await;
    assert!(matches!(&waited, Err(Retryable::Busy(why)) if why.contains("locked")), "{waited:?}");
    assert_eq!(w.ecs.count("UpdateService"), updates, "nothing put back over the fix");

    // The fix's invocation records its rollout: the redelivered trigger finds the failure replaced.
    head.lock = None;
    head.active = Some(("push-3".into(), digest(3)));
    w.ledger.set_head(&api(), head);
    let outcome = w.rollback(failed).await;
    assert_eq!(outcome, [RollbackOutcome::Overtaken { deployment: bad_id, by: "push-3".into() }], "{outcome:?}");
    assert_eq!(w.ecs.count("UpdateService"), updates, "still nothing put back");
    assert_eq!(w.ledger.head(&api()).await.expect("head").lock, None, "the rollback gave the lock up");
}

#[tokio::test]
async fn the_known_good_revision_is_found_however_deep_in_the_history() {
    let w = World::new();
    let good = w.deploy_and_verify(1, true).await;
    let good_td = w.record(&good).task_definition.expect("td");
    // Five pages of skipped pushes (stale, or the digest already live) since.
    let template = w.record(&good);
    for i in 0..500 {
        let skipped = Deployment {
            id: format!("{}-skipped-{i:03}", (t0() + Duration::from_secs(90)).format("%Y%m%dT%H%M%SZ")),
            state: State::Skipped,
            ..template.clone()
        };
        w.ledger.record_skipped(&skipped).await.expect("skipped");
    }
    w.clock.advance(Duration::from_secs(60));
    let bad = w.deploy_and_verify(2, false).await;

    let outcome = w.rollback(w.announced().pop().expect("announced")).await;
    assert!(matches!(outcome.as_slice(), [RollbackOutcome::RollingBack { to, .. }] if *to == good_td), "{outcome:?}");
    assert_eq!(w.live(), good_td);
    assert_eq!(w.record(&bad).state, State::RollingBack);
}

#[tokio::test]
async fn a_rollout_ecs_runs_that_is_not_the_failed_deployments_is_never_undone() {
    let w = World::new();
    w.deploy_and_verify(1, true).await;
    let bad = w.deploy_and_verify(2, false).await;
    // A push updated the service and gave its lock up before it could record the rollout
    // (its outcome's write kept failing): the head still names the failed deployment.
    let theirs = EcsDeployment {
        id: "ecs-svc/push-3".into(),
        task_definition: "arn:aws:ecs:ap-southeast-1:123456789012:task-definition/shop-staging-api:9".into(),
        rollout_state: "IN_PROGRESS".into(),
        running: 0,
        desired: 1,
    };
    w.ecs.set_deployments(&api(), vec![theirs.clone()]);
    let updates = w.ecs.count("UpdateService");

    let outcome = w.rollback(w.announced().pop().expect("announced")).await;
    let by = format!("ECS deployment {}", theirs.id);
    assert_eq!(outcome, [RollbackOutcome::Overtaken { deployment: w.record(&bad).id, by }], "{outcome:?}");
    assert_eq!(w.ecs.count("UpdateService"), updates, "nothing put back over it");
    assert_eq!(w.live(), theirs.task_definition);
}
