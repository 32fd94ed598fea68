//! Release policy in the deploy handler, with in-memory ports: version order and freeze windows.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use ferry::config::Config;
use ferry::deploy::{DeployOutcome, Deployer, FreezeOverride, Invocation, TargetOutcome};
use ferry::fakes::{FakeClock, FakeEcs, MemoryLedger, MemoryRegistry, RecordingNotifier, sample_event};
use ferry::model::{State, Target};
use ferry::ports::{Clock, Image, Ledger};
use ferry::reconcile::Finding;
use serde_json::{Value, json};

/// Production orders by version and freezes over the holidays (t0 is 2026-12-24 10:00 UTC).
const CONFIG: &str = r#"
[[environments]]
name = "production"
order = "semver"
rules = [{ semver = ">=1, <2" }]
targets = [{ region = "eu-west-1", cluster = "shop-prod" }]
freeze = [{ from = "2026-12-24T09:00", to = "2026-12-24T12:00", timezone = "UTC", reason = "holidays" }]

[[services]]
repository = "shop/api"
name = "shop-{env}-api"
containers = ["api"]
"#;

const OLD_IMAGE: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/api@sha256:0000";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 24, 10, 0, 0).single().expect("time")
}

fn digest(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

fn push(tag: &str, n: u8, at: DateTime<Utc>) -> Value {
    let mut e = sample_event("ecr-push-staging.json");
    e["id"] = format!("evt-{tag}").into();
    e["time"] = at.to_rfc3339().into();
    e["region"] = "eu-west-1".into();
    e["detail"]["repository-name"] = "shop/api".into();
    e["detail"]["image-tag"] = tag.into();
    e["detail"]["image-digest"] = digest(n).into();
    e
}

fn production() -> Target {
    Target {
        environment: "production".into(),
        account: None,
        region: "eu-west-1".into(),
        cluster: "shop-prod".into(),
        service: "shop-production-api".into(),
        role_arn: None,
    }
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
    /// `at` is when the pushes happen; the clock starts there.
    fn new(at: DateTime<Utc>) -> World {
        let w = World {
            config: Config::parse("ferry.toml", CONFIG).expect("config"),
            ecs: FakeEcs::default(),
            ledger: MemoryLedger::default(),
            notifier: RecordingNotifier::default(),
            clock: FakeClock::at(at),
            registry: MemoryRegistry::default(),
        };
        w.ecs.add_service(&production(), "shop-production-api", &[("api", OLD_IMAGE)]);
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
            settings: Default::default(),
        }
    }

    async fn handle(&self, event: Value, freeze_override: Option<&FreezeOverride>) -> Vec<TargetOutcome> {
        let invocation = Invocation { attempt: "attempt".into(), deadline: None };
        match self.deployer().handle_overriding(event, &invocation, freeze_override).await {
            Ok(DeployOutcome::Deployed(targets)) => targets,
            other => panic!("expected deployments, got {other:?}"),
        }
    }

    async fn reconcile(&self) -> Vec<(String, Finding)> {
        let tick = json!({"version": "0", "id": "tick", "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": self.clock.now().to_rfc3339(), "region": "eu-west-1",
            "resources": [], "detail": {}});
        let invocation = Invocation { attempt: format!("tick-{}", self.clock.now()), deadline: None };
        match self.deployer().handle(tick, &invocation).await {
            Ok(DeployOutcome::Reconciled(found)) => found.into_iter().map(|r| (r.tag, r.finding)).collect(),
            other => panic!("expected a reconciliation, got {other:?}"),
        }
    }

    fn image(&self, tag: &str, n: u8, at: DateTime<Utc>) {
        let image = Image {
            digest: digest(n),
            tags: vec![tag.into()],
            pushed_at: at,
            registry_account: "123456789012".into(),
            registry_region: "eu-west-1".into(),
        };
        self.registry.add("shop/api", image);
    }

    fn live_digest(&self) -> String {
        let service = self.ecs.service_of(&production()).expect("service");
        self.ecs.definition(&service.task_definition)[0].1.rsplit('@').next().unwrap_or_default().to_string()
    }

    fn states(&self) -> Vec<(String, State)> {
        let mut records: Vec<_> = self.ledger.records().into_iter().map(|d| (d.tag, d.state)).collect();
        records.sort_by(|a, b| a.0.cmp(&b.0));
        records
    }
}

fn after_the_freeze() -> DateTime<Utc> {
    t0() + Duration::from_secs(3 * 3600)
}

#[tokio::test]
async fn by_version_a_hotfix_of_an_older_line_pushed_later_is_skipped_and_said() {
    let w = World::new(after_the_freeze());
    let at = after_the_freeze();
    assert!(matches!(w.handle(push("v1.3.0", 1, at), None).await.as_slice(), [TargetOutcome::Started { .. }]));
    let hotfix = w.handle(push("v1.2.4", 2, at + Duration::from_secs(60)), None).await;
    let [TargetOutcome::Skipped { reason, .. }] = hotfix.as_slice() else { panic!("{hotfix:?}") };
    assert!(reason.contains("older: version v1.3.0 was already accepted"), "{reason}");
    assert_eq!(w.live_digest(), digest(1), "v1.3.0 stays live");
    let sent = w.notifier.sent();
    let said = sent.last().expect("a message");
    assert_eq!((said.deployment.tag.as_str(), said.deployment.state), ("v1.2.4", State::Skipped), "the skip is said");
    assert!(said.deployment.reason.as_deref().is_some_and(|r| r.contains("v1.3.0")));

    // v2.0.0 is out of production's range: it deploys nowhere.
    let invocation = Invocation { attempt: "major".into(), deadline: None };
    let major = w.deployer().handle(push("v2.0.0", 3, at + Duration::from_secs(90)), &invocation).await;
    assert!(matches!(major, Ok(DeployOutcome::Unplanned(_))), "{major:?}");

    // v1.4.0 was pushed first and its event lost: reconciliation takes the highest version.
    w.image("v1.4.0", 4, at - Duration::from_secs(600));
    w.image("v1.3.0", 1, at);
    w.image("v1.2.4", 2, at + Duration::from_secs(60));
    w.clock.advance(Duration::from_secs(300));
    let found = w.reconcile().await;
    assert!(
        matches!(found.as_slice(), [(tag, Finding::Missed(Some(TargetOutcome::Started { .. })))] if tag == "v1.4.0"),
        "{found:?}"
    );
    assert_eq!(w.live_digest(), digest(4));
}

#[tokio::test]
async fn a_push_during_a_freeze_is_held_and_only_the_newest_deploys_when_the_freeze_ends() {
    let w = World::new(t0());
    let held = w.handle(push("v1.3.0", 1, t0()), None).await;
    let [TargetOutcome::Held { reason, until, .. }] = held.as_slice() else { panic!("{held:?}") };
    assert!(reason.starts_with("held: holidays"), "{reason}");
    assert_eq!(*until, t0() + Duration::from_secs(2 * 3600));
    assert!(
        w.ecs.calls().iter().all(|c| c == "DescribeServices") && w.ecs.count("UpdateService") == 0,
        "ECS untouched"
    );
    assert_eq!(w.notifier.sent().last().map(|n| n.deployment.state), Some(State::Held), "said");
    let sent = w.notifier.sent().len();

    // The same event again: nothing more, nothing said again.
    let again = w.handle(push("v1.3.0", 1, t0()), None).await;
    assert!(matches!(again.as_slice(), [TargetOutcome::Duplicate { state: State::Held, .. }]), "{again:?}");
    assert_eq!(w.notifier.sent().len(), sent);

    // A newer push during the freeze is held in its place.
    w.clock.advance(Duration::from_secs(60));
    let newer = w.handle(push("v1.3.1", 2, t0() + Duration::from_secs(60)), None).await;
    assert!(matches!(newer.as_slice(), [TargetOutcome::Held { .. }]), "{newer:?}");
    assert_eq!(w.states(), [("v1.3.0".into(), State::Superseded), ("v1.3.1".into(), State::Held)]);

    // Still frozen: reconciliation leaves it.
    w.image("v1.3.0", 1, t0());
    w.image("v1.3.1", 2, t0() + Duration::from_secs(60));
    let found = w.reconcile().await;
    assert!(matches!(found.as_slice(), [(_, Finding::Held(why))] if why.contains("holidays")), "{found:?}");
    assert_eq!(w.ecs.count("UpdateService"), 0);

    // The freeze is over: the newest held push deploys, once.
    w.clock.advance(Duration::from_secs(2 * 3600));
    let found = w.reconcile().await;
    assert!(
        matches!(found.as_slice(), [(tag, Finding::Released(Some(TargetOutcome::Started { .. })))] if tag == "v1.3.1"),
        "{found:?}"
    );
    assert_eq!(w.live_digest(), digest(2));
    assert_eq!(w.states(), [("v1.3.0".into(), State::Superseded), ("v1.3.1".into(), State::InProgress)]);
    assert!(w.reconcile().await.iter().all(|(_, f)| matches!(f, Finding::UpToDate(_))), "nothing more to do");
    assert_eq!(w.ecs.count("UpdateService"), 1);
    assert_eq!(w.ledger.head(&production()).await.expect("head").held, None);
}

#[tokio::test]
async fn an_operator_can_deploy_through_a_freeze_and_the_record_says_who_and_why() {
    let w = World::new(t0());
    let by = FreezeOverride { by: "alice (ferry CLI)".into(), reason: "fix for INC-231".into() };
    let outcome = w.handle(push("v1.3.0", 1, t0()), Some(&by)).await;
    assert!(matches!(outcome.as_slice(), [TargetOutcome::Started { .. }]), "{outcome:?}");
    assert_eq!(w.live_digest(), digest(1));
    let [record] = w.ledger.records().try_into().expect("one record");
    assert_eq!(record.state, State::InProgress);
    assert_eq!(record.freeze_override.as_deref(), Some("alice (ferry CLI): fix for INC-231"));
    let reason = record.reason.clone().unwrap_or_default();
    assert!(
        reason.starts_with("freeze (holidays") && reason.ends_with("overridden by alice (ferry CLI): fix for INC-231"),
        "said in the message: {reason}"
    );
}

/// `ferry deploy`'s replay of `tag`'s image: its own event id, made from the image.
fn replay(tag: &str, n: u8, at: DateTime<Utc>) -> Value {
    let mut e = push(tag, n, at);
    e["id"] = ferry::reconcile::replay_event_id(&digest(n), tag).into();
    e
}

#[tokio::test]
async fn an_override_deploys_the_push_the_freeze_holds_as_its_own_record() {
    // Held from its event, and held from `ferry deploy`'s replay (the replay's own record).
    for first in [push("v1.3.0", 1, t0()), replay("v1.3.0", 1, t0())] {
        let w = World::new(t0());
        assert!(matches!(w.handle(first.clone(), None).await.as_slice(), [TargetOutcome::Held { .. }]));
        let again = w.handle(replay("v1.3.0", 1, t0()), None).await;
        assert!(matches!(again.as_slice(), [TargetOutcome::Duplicate { state: State::Held, .. }]), "{again:?}");
        let by = FreezeOverride { by: "alice".into(), reason: "INC-231".into() };
        let outcome = w.handle(replay("v1.3.0", 1, t0()), Some(&by)).await;
        assert!(matches!(outcome.as_slice(), [TargetOutcome::Started { .. }]), "{outcome:?}");
        assert_eq!(w.live_digest(), digest(1));
        let [record] = w.ledger.records().try_into().expect("the held record, no other");
        assert_eq!(
            (record.event_id.as_str(), record.state),
            (first["id"].as_str().unwrap_or_default(), State::InProgress)
        );
        assert_eq!(record.freeze_override.as_deref(), Some("alice: INC-231"));
        assert_eq!(w.ledger.head(&production()).await.expect("head").held, None);
    }
}

#[tokio::test]
async fn an_override_given_while_approval_is_awaited_deploys_through_the_freeze_once_approved() {
    let mut w = World::new(t0());
    approving(&mut w);
    w.handle(push("v1.3.0", 1, t0()), None).await;
    let asked = w.notifier.sent().len();
    let by = FreezeOverride { by: "alice".into(), reason: "INC-231".into() };
    let outcome = w.handle(replay("v1.3.0", 1, t0()), Some(&by)).await;
    let [TargetOutcome::AwaitingApproval { reason, .. }] = outcome.as_slice() else { panic!("{outcome:?}") };
    assert!(reason.contains("already awaits approval"), "{reason}");
    assert_eq!(w.notifier.sent().len(), asked, "not asked twice");
    let [record] = w.ledger.records().try_into().expect("one record");
    assert_eq!((record.state, record.freeze_override.as_deref()), (State::AwaitingApproval, Some("alice: INC-231")));

    let mut approved = record.clone();
    approved.state = State::Pending;
    approved.approval = Some("approved by U0AAAAAAA, U0BBBBBBB".into());
    w.ledger.transition(&approved, &[State::AwaitingApproval], ferry::ports::HeadChange::None).await.expect("approve");
    let invocation = Invocation { attempt: "approved".into(), deadline: None };
    let decided = w.deployer().handle(decision("Deployment Approved", &record, "U0BBBBBBB"), &invocation).await;
    assert!(
        matches!(&decided, Ok(DeployOutcome::Deployed(t)) if matches!(t.as_slice(), [TargetOutcome::Started { .. }])),
        "deployed through the freeze, not held: {decided:?}"
    );
    assert_eq!(w.live_digest(), digest(1));
}

#[tokio::test]
async fn an_approved_push_whose_decision_never_arrived_deploys_on_ferry_deploy_without_asking_again() {
    let mut w = World::new(after_the_freeze());
    approving(&mut w);
    w.handle(push("v1.3.0", 1, after_the_freeze()), None).await;
    let [record] = w.ledger.records().try_into().expect("one record");
    let mut approved = record.clone();
    approved.state = State::Pending;
    approved.approval = Some("approved by U0AAAAAAA, U0BBBBBBB".into());
    w.ledger.transition(&approved, &[State::AwaitingApproval], ferry::ports::HeadChange::None).await.expect("approve");

    let outcome = w.handle(replay("v1.3.0", 1, after_the_freeze()), None).await;
    assert!(matches!(outcome.as_slice(), [TargetOutcome::Started { .. }]), "{outcome:?}");
    let [record] = w.ledger.records().try_into().expect("the approved record, no new one to approve");
    assert_eq!(
        (record.state, record.approval.as_deref()),
        (State::InProgress, Some("approved by U0AAAAAAA, U0BBBBBBB"))
    );
}

#[tokio::test]
async fn by_version_a_late_event_of_an_earlier_build_of_the_same_version_is_older() {
    let w = World::new(after_the_freeze());
    let at = after_the_freeze();
    assert!(matches!(
        w.handle(push("v1.3.0", 2, at + Duration::from_secs(60)), None).await.as_slice(),
        [TargetOutcome::Started { .. }]
    ));
    let mut late = push("v1.3.0", 1, at);
    late["id"] = "evt-late".into();
    let outcome = w.handle(late, None).await;
    let [TargetOutcome::Skipped { reason, .. }] = outcome.as_slice() else { panic!("{outcome:?}") };
    assert!(reason.contains("older: version v1.3.0"), "{reason}");
    assert_eq!(w.live_digest(), digest(2), "the later build stays");
    let mut rebuilt = push("v1.3.0", 3, at + Duration::from_secs(120));
    rebuilt["id"] = "evt-rebuilt".into();
    assert!(
        matches!(w.handle(rebuilt, None).await.as_slice(), [TargetOutcome::Started { .. }]),
        "a later build is newer"
    );
}

#[tokio::test]
async fn an_environment_switched_to_version_order_goes_by_push_time_until_it_takes_a_version() {
    let mut w = World::new(after_the_freeze());
    let at = after_the_freeze();
    w.config = Config::parse("ferry.toml", &CONFIG.replace("order = \"semver\"\n", "")).expect("config");
    w.handle(push("v1.3.0", 1, at), None).await;
    w.config = Config::parse("ferry.toml", CONFIG).expect("config");
    // v1.9.0 was pushed long before (and deployed by hand, or never): not a missed push.
    w.image("v1.9.0", 9, at - Duration::from_secs(86_400));
    w.image("v1.3.0", 1, at);
    w.clock.advance(Duration::from_secs(300));
    let found = w.reconcile().await;
    assert!(matches!(found.as_slice(), [(tag, Finding::UpToDate(_))] if tag == "v1.9.0"), "{found:?}");
    assert_eq!(w.live_digest(), digest(1));
    let old = w.handle(push("v1.9.0", 9, at - Duration::from_secs(86_400)), None).await;
    assert!(matches!(old.as_slice(), [TargetOutcome::Skipped { .. }]), "a late event is stale by push time: {old:?}");
    let next = w.handle(push("v1.3.1", 4, at + Duration::from_secs(600)), None).await;
    assert!(matches!(next.as_slice(), [TargetOutcome::Started { .. }]), "{next:?}");
    let lower = w.handle(push("v1.3.0", 5, at + Duration::from_secs(900)), None).await;
    assert!(
        matches!(lower.as_slice(), [TargetOutcome::Skipped { reason, .. }] if reason.contains("older")),
        "now by version: {lower:?}"
    );
}

#[tokio::test]
async fn a_held_push_overtaken_by_one_deployed_through_the_freeze_is_superseded() {
    let w = World::new(t0());
    w.handle(push("v1.3.0", 1, t0()), None).await;
    let by = FreezeOverride { by: "alice".into(), reason: "hotfix".into() };
    w.clock.advance(Duration::from_secs(60));
    w.handle(push("v1.3.1", 2, t0() + Duration::from_secs(60)), Some(&by)).await;
    assert_eq!(w.states(), [("v1.3.0".into(), State::Superseded), ("v1.3.1".into(), State::InProgress)]);
    assert_eq!(w.ledger.head(&production()).await.expect("head").held, None, "nothing left to release");
}

/// Production needs two of three approvers for the api; its freeze is over by `after_the_freeze`.
fn approving(w: &mut World) {
    let approval = "approval = { approvers = [\"U0AAAAAAA\", \"U0BBBBBBB\", \"U0CCCCCCC\"], required = 2, timeout_minutes = 60 }\n";
    let text = CONFIG.replacen("order = \"semver\"\n", &format!("order = \"semver\"\n{approval}"), 1);
    w.config = Config::parse("ferry.toml", &text).expect("config");
}

fn decision(kind: &str, d: &ferry::model::Deployment, by: &str) -> Value {
    json!({"version": "0", "id": format!("decision-{by}"), "detail-type": kind, "source": "ferry",
           "account": "123456789012", "time": t0().to_rfc3339(), "region": "eu-west-1", "resources": [],
           "detail": ferry::event::decision_detail(d, by)})
}

#[tokio::test]
async fn a_push_needing_approval_waits_with_ecs_untouched_and_asks_with_buttons() {
    let mut w = World::new(after_the_freeze());
    approving(&mut w);
    let asked = w.handle(push("v1.3.0", 1, after_the_freeze()), None).await;
    let [TargetOutcome::AwaitingApproval { reason, .. }] = asked.as_slice() else { panic!("{asked:?}") };
    assert!(reason.contains("2 of U0AAAAAAA, U0BBBBBBB, U0CCCCCCC"), "{reason}");
    assert_eq!(w.ecs.count("UpdateService") + w.ecs.count("RegisterTaskDefinition"), 0, "ECS untouched");
    let [record] = w.ledger.records().try_into().expect("one record");
    assert_eq!(record.state, State::AwaitingApproval);
    let sent = w.notifier.sent();
    let message = sent.last().expect("asked").slack().to_string();
    assert!(message.contains("ferry_approve") && message.contains("ferry_reject"), "{message}");
    assert!(message.contains(&ferry::approval::button_value(&production().key(), &record.id)), "{message}");

    // Approved (by whoever recorded it), the push deploys; the approval stays on the record.
    let mut approved = record.clone();
    approved.state = State::Pending;
    approved.approval = Some("approved by U0AAAAAAA, U0BBBBBBB".into());
    w.ledger.transition(&approved, &[State::AwaitingApproval], ferry::ports::HeadChange::None).await.expect("approve");
    let invocation = Invocation { attempt: "approved".into(), deadline: None };
    let outcome = w.deployer().handle(decision("Deployment Approved", &record, "U0BBBBBBB"), &invocation).await;
    assert!(
        matches!(&outcome, Ok(DeployOutcome::Deployed(t)) if matches!(t.as_slice(), [TargetOutcome::Started { .. }])),
        "{outcome:?}"
    );
    assert_eq!(w.live_digest(), digest(1));
    let [record] = w.ledger.records().try_into().expect("one record");
    assert_eq!(
        (record.state, record.approval.as_deref()),
        (State::InProgress, Some("approved by U0AAAAAAA, U0BBBBBBB"))
    );
    // The event again: nothing more.
    let again = w.deployer().handle(decision("Deployment Approved", &record, "U0BBBBBBB"), &invocation).await;
    assert!(
        matches!(&again, Ok(DeployOutcome::Deployed(t)) if matches!(t.as_slice(), [TargetOutcome::Duplicate { .. }])),
        "{again:?}"
    );
    assert_eq!(w.ecs.count("UpdateService"), 1);
}

#[tokio::test]
async fn an_approval_nobody_gives_expires_and_a_newer_push_takes_the_place_of_a_waiting_one() {
    let mut w = World::new(after_the_freeze());
    approving(&mut w);
    let at = after_the_freeze();
    w.handle(push("v1.3.0", 1, at), None).await;
    w.clock.advance(Duration::from_secs(60));
    w.handle(push("v1.3.1", 2, at + Duration::from_secs(60)), None).await;
    assert_eq!(w.states(), [("v1.3.0".into(), State::Superseded), ("v1.3.1".into(), State::AwaitingApproval)]);

    w.image("v1.3.0", 1, at);
    w.image("v1.3.1", 2, at + Duration::from_secs(60));
    let found = w.reconcile().await;
    assert!(matches!(found.as_slice(), [(_, Finding::Awaiting(_))]), "{found:?}");
    w.clock.advance(Duration::from_secs(3600));
    let found = w.reconcile().await;
    assert!(matches!(found.as_slice(), [(tag, Finding::Expired)] if tag == "v1.3.1"), "{found:?}");
    assert_eq!(w.states(), [("v1.3.0".into(), State::Superseded), ("v1.3.1".into(), State::Rejected)]);
    let said = w.notifier.sent();
    assert_eq!(
        said.last().map(|n| (n.deployment.state, n.deployment.reason.clone())),
        Some((State::Rejected, Some("expired: no approver decided in time".into())))
    );
    assert_eq!(w.ecs.count("UpdateService"), 0);
    // A rejected push is not asked about again.
    let found = w.reconcile().await;
    assert!(found.iter().all(|(_, f)| matches!(f, Finding::UpToDate(_))), "{found:?}");
}

#[tokio::test]
async fn an_approved_push_during_a_freeze_is_held_and_deploys_when_the_freeze_ends() {
    let mut w = World::new(t0());
    approving(&mut w);
    w.handle(push("v1.3.0", 1, t0()), None).await;
    let [record] = w.ledger.records().try_into().expect("one record");
    let mut approved = record.clone();
    approved.state = State::Pending;
    approved.approval = Some("approved by U0AAAAAAA, U0CCCCCCC".into());
    w.ledger.transition(&approved, &[State::AwaitingApproval], ferry::ports::HeadChange::None).await.expect("approve");
    let invocation = Invocation { attempt: "approved".into(), deadline: None };
    w.deployer().handle(decision("Deployment Approved", &record, "U0CCCCCCC"), &invocation).await.expect("decided");
    assert_eq!(w.states(), [("v1.3.0".into(), State::Held)], "approved, then held by the freeze");

    w.image("v1.3.0", 1, t0());
    w.clock.advance(Duration::from_secs(3 * 3600));
    let found = w.reconcile().await;
    assert!(matches!(found.as_slice(), [(_, Finding::Released(Some(TargetOutcome::Started { .. })))]), "{found:?}");
    assert_eq!(w.states(), [("v1.3.0".into(), State::InProgress)], "not asked again");
}

#[tokio::test]
async fn the_pushs_event_delivered_again_after_approval_deploys_without_asking_again() {
    let mut w = World::new(after_the_freeze());
    approving(&mut w);
    let event = push("v1.3.0", 1, after_the_freeze());
    w.handle(event.clone(), None).await;
    let [record] = w.ledger.records().try_into().expect("one record");
    let mut approved = record.clone();
    approved.state = State::Pending;
    approved.approval = Some("approved by U0AAAAAAA, U0BBBBBBB".into());
    w.ledger.transition(&approved, &[State::AwaitingApproval], ferry::ports::HeadChange::None).await.expect("approve");
    let asked = w.notifier.sent().len();

    let again = w.handle(event, None).await;
    assert!(matches!(again.as_slice(), [TargetOutcome::Started { .. }]), "{again:?}");
    assert_eq!(w.live_digest(), digest(1));
    let [record] = w.ledger.records().try_into().expect("one record");
    assert_eq!(record.approval.as_deref(), Some("approved by U0AAAAAAA, U0BBBBBBB"));
    assert!(
        w.notifier.sent()[asked..].iter().all(|n| n.deployment.state != State::AwaitingApproval),
        "not asked again"
    );
}

#[tokio::test]
async fn the_approvers_see_what_the_push_replaces_and_how_the_image_did_in_the_environment_before() {
    let mut w = World::new(after_the_freeze());
    approving(&mut w);
    let staging = "[[environments]]\nname = \"staging\"\nrules = [{ glob = \"staging-*\" }]\n\
                   targets = [{ region = \"eu-west-1\", cluster = \"shop-staging\" }]\n\n";
    let text = format!(
        "{staging}{}",
        CONFIG.replacen("order = \"semver\"\n", "order = \"semver\"\napproval = { approvers = [\"U0AAAAAAA\"] }\n", 1,)
    );
    w.config = Config::parse("ferry.toml", &text).expect("config");
    let staging = Target {
        environment: "staging".into(),
        cluster: "shop-staging".into(),
        service: "shop-staging-api".into(),
        ..production()
    };
    w.ecs.add_service(&staging, "shop-staging-api", &[("api", OLD_IMAGE)]);

    // The image, verified in staging first.
    w.handle(push("staging-1", 1, after_the_freeze()), None).await;
    let [mut tried] = w.ledger.records().try_into().expect("one record");
    tried.state = State::Succeeded;
    tried.task_definition = Some("arn:aws:ecs:eu-west-1:123456789012:task-definition/shop-staging-api:2".into());
    let verified = w.ledger.transition(&tried, &[State::InProgress], ferry::ports::HeadChange::LastKnownGood);
    assert!(verified.await.expect("verified"));

    w.handle(push("v1.3.0", 1, after_the_freeze() + Duration::from_secs(60)), None).await;
    let sent = w.notifier.sent();
    let asked = sent.last().expect("asked");
    assert_eq!(asked.deployment.state, State::AwaitingApproval);
    assert_eq!(
        asked.context,
        [
            ("Replaces".to_string(), "nothing Ferry deployed yet".to_string()),
            ("In staging".to_string(), "verified on every target (1)".to_string())
        ]
    );
    let message = asked.slack().to_string();
    assert!(message.contains("*In staging*\\nverified on every target (1)"), "{message}");

    // Another image, never in staging, after production took one.
    let mut live = asked.deployment.clone();
    live.state = State::InProgress;
    live.approval = Some("approved by U0AAAAAAA".into());
    w.ledger.transition(&live, &[State::AwaitingApproval], ferry::ports::HeadChange::Active).await.expect("live");
    w.handle(push("v1.3.1", 2, after_the_freeze() + Duration::from_secs(120)), None).await;
    let sent = w.notifier.sent();
    let context = &sent.last().expect("asked").context;
    assert_eq!(context[0].1, format!("`{}` (deployment {})", ferry::notify::short_digest(&digest(1)), live.id));
    assert_eq!(context[1].1, "not deployed there, or not its latest verified image");

    // An image that failed in staging and was rolled back there says so first.
    let mut bad = tried.clone();
    bad.digest = digest(3);
    bad.state = State::RolledBack;
    assert!(w.ledger.transition(&bad, &[State::Succeeded], ferry::ports::HeadChange::Quarantine).await.expect("q"));
    w.handle(push("v1.3.2", 3, after_the_freeze() + Duration::from_secs(180)), None).await;
    let sent = w.notifier.sent();
    let context = &sent.last().expect("asked").context;
    assert_eq!(context[1].1, "FAILED and rolled back on 1 of 1 targets (quarantined there)");
}

#[tokio::test]
async fn an_override_whose_attempt_stopped_after_releasing_the_held_push_goes_on_when_run_again() {
    let w = World::new(t0());
    w.handle(push("v1.3.0", 1, t0()), None).await;
    let [mut held] = w.ledger.records().try_into().expect("one record");
    // The override's first attempt moved it to PENDING, then died before taking the lock.
    held.state = State::Pending;
    held.freeze_override = Some("alice: INC-231".into());
    assert!(w.ledger.transition(&held, &[State::Held], ferry::ports::HeadChange::None).await.expect("released"));
    let by = FreezeOverride { by: "alice".into(), reason: "INC-231".into() };
    let again = w.handle(replay("v1.3.0", 1, t0()), Some(&by)).await;
    assert!(matches!(again.as_slice(), [TargetOutcome::Started { .. }]), "{again:?}");
    let [record] = w.ledger.records().try_into().expect("still one record");
    assert_eq!((record.id, record.state), (held.id, State::InProgress));
}

#[tokio::test]
async fn a_head_written_before_version_keys_carried_push_times_still_orders_reconciliation() {
    let w = World::new(after_the_freeze());
    let at = after_the_freeze();
    // What the previous release recorded: the bare version key of v1.3.0.
    let mut old = ferry::model::Deployment::new(
        &ferry::reconcile::replayed_push("shop/api", &image_of("v1.3.0", 1, at), "v1.3.0"),
        production(),
        at,
    );
    old.version = ferry::rules::version_key("v1.3.0");
    w.ledger.begin(&old, "old", at + Duration::from_secs(60), at).await.expect("begin");
    old.state = State::Skipped;
    w.ledger.finish(&old, "old").await.expect("finish");
    w.image("v1.3.0", 1, at);
    w.clock.advance(Duration::from_secs(300));
    let found = w.reconcile().await;
    assert!(matches!(found.as_slice(), [(_, Finding::UpToDate(_))]), "the same version is not missed: {found:?}");
    w.image("v1.3.1", 2, at + Duration::from_secs(30));
    let found = w.reconcile().await;
    assert!(matches!(found.as_slice(), [(tag, Finding::Missed(Some(_)))] if tag == "v1.3.1"), "{found:?}");
}

fn image_of(tag: &str, n: u8, at: DateTime<Utc>) -> Image {
    Image {
        digest: digest(n),
        tags: vec![tag.into()],
        pushed_at: at,
        registry_account: "123456789012".into(),
        registry_region: "eu-west-1".into(),
    }
}
