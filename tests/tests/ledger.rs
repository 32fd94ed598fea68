//! The ledger contract: every case runs against the DynamoDB ledger on the emulator and
//! against the in-memory ledger the handler tests use, so the two cannot drift. Conditional
//! writes refuse exactly what `Head::admit` refuses, and records only ever move forward.

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use ferry::adapters::dynamodb::DynamoLedger;
use ferry::hook::{HookRecord, HookStatus};
use ferry::model::{Deployment, Push, Refusal, State, Target};
use ferry::ports::{Approved, Begin, Claim, Finish, HeadChange, Ledger};
use ferry_tests::{Emulator, unique};

fn at(secs: u64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 16, 2, 0, 0).single().expect("time") + Duration::from_secs(secs)
}

fn target(service: &str) -> Target {
    Target {
        environment: "staging".into(),
        account: Some("123456789012".into()),
        region: "eu-west-1".into(),
        cluster: "shop".into(),
        service: service.into(),
        role_arn: None,
    }
}

fn deployment(target: &Target, event: &str, digest: &str, pushed: u64) -> Deployment {
    let push = Push {
        event_id: event.into(),
        registry_account: "123456789012".into(),
        registry_region: "eu-west-1".into(),
        repository: "shop/api".into(),
        tag: format!("staging-{event}"),
        digest: digest.into(),
        pushed_at: at(pushed),
    };
    Deployment::new(&push, target.clone(), at(pushed))
}

async fn ledger(emulator: &Emulator) -> DynamoLedger {
    let aws = emulator.sdk_config("eu-west-1").await;
    let table = unique("ledger");
    common::create_table(&aws, &table).await;
    DynamoLedger::new(aws_sdk_dynamodb::Client::new(&aws), table)
}

/// What `begin` answered, in the words `Head::admit` uses.
async fn begin(ledger: &impl Ledger, d: &Deployment, attempt: &str, now: u64) -> Result<(), String> {
    match ledger.begin(d, attempt, at(now + 60), at(now)).await.expect("begin") {
        Begin::Started => Ok(()),
        Begin::Done(state) => Err(format!("done {state}")),
        Begin::Refused(head) => match head.admit(d, at(now)) {
            Err(Refusal::Locked { by, .. }) => Err(format!("locked by {by}")),
            Err(Refusal::Stale { .. }) => Err("stale".into()),
            Err(Refusal::Older { newest }) => Err(format!("older than {newest}")),
            Err(Refusal::SameDigest { deployment }) => Err(format!("same digest as {deployment}")),
            Err(Refusal::Quarantined) => Err("quarantined".into()),
            Ok(()) => Err("refused by DynamoDB but admitted by Head::admit".into()),
        },
    }
}

/// A push to `t` that its deploy attempt recorded in `state` (IN_PROGRESS: as rolling out
/// ECS deployment `ecs-svc/1`).
async fn recorded(ledger: &impl Ledger, t: &Target, digest: &str, state: State) -> Deployment {
    let mut d = deployment(t, "e1", digest, 100);
    assert_eq!(begin(ledger, &d, "a1", 100).await, Ok(()));
    d.state = state;
    if state == State::InProgress {
        d.ecs_deployment_id = Some("ecs-svc/1".into());
    }
    assert_eq!(ledger.finish(&d, "a1").await, Ok(Finish::Recorded));
    d
}

async fn conditional_writes_refuse_what_admit_refuses_and_never_move_backwards(ledger: &impl Ledger) {
    let t = target("api");
    let first = deployment(&t, "e1", "sha256:aaaa", 100);
    let second = deployment(&t, "e2", "sha256:bbbb", 200);
    let older = deployment(&t, "e0", "sha256:0000", 50);
    let same = deployment(&t, "e3", "sha256:aaaa", 300);

    assert_eq!(begin(ledger, &first, "a1", 100).await, Ok(()));
    assert_eq!(begin(ledger, &second, "a2", 101).await, Err(format!("locked by {}", first.id)));
    assert_eq!(
        begin(ledger, &first, "a1-concurrent-duplicate", 101).await,
        Err(format!("locked by {}", first.id)),
        "a concurrent delivery of the same event waits too"
    );
    // The first attempt died: once its lease lapses, its redelivery resumes the PENDING record.
    assert_eq!(begin(ledger, &first, "a1-redelivered", 161).await, Ok(()));

    let mut live = first.clone();
    live.state = State::InProgress;
    live.ecs_deployment_id = Some("ecs-svc/1".into());
    assert_eq!(ledger.finish(&live, "a1-redelivered").await, Ok(Finish::Recorded));
    assert_eq!(ledger.history(&t, 10).await.expect("history")[0].state, State::InProgress);
    assert_eq!(
        ledger.finish(&live, "a1-redelivered").await,
        Ok(Finish::AlreadyIn(State::InProgress)),
        "a second finish is a no-op"
    );

    assert_eq!(begin(ledger, &first, "a1-late", 400).await, Err("done IN_PROGRESS".into()), "duplicate event");
    assert_eq!(begin(ledger, &older, "a0", 400).await, Err("stale".into()));
    assert_eq!(begin(ledger, &same, "a3", 400).await, Err(format!("same digest as {}", first.id)));
    assert_eq!(begin(ledger, &second, "a2", 400).await, Ok(()));

    // A record past PENDING is never overwritten, whatever a late writer says.
    let mut skipped = first.clone();
    skipped.state = State::Skipped;
    ledger.record_skipped(&skipped).await.expect("skip");
    let by_id = ledger.by_ecs_deployment("ecs-svc/1").await.expect("lookup").expect("found");
    assert_eq!((by_id.id.as_str(), by_id.state), (first.id.as_str(), State::InProgress));

    // History is newest first.
    let ids: Vec<String> = ledger.history(&t, 10).await.expect("history").into_iter().map(|d| d.id).collect();
    assert_eq!(ids, [second.id.clone(), first.id.clone()]);
    let head = ledger.head(&t).await.expect("head");
    assert_eq!(head.lock.map(|l| (l.deployment, l.attempt)), Some((second.id.clone(), "a2".into())));
    assert_eq!(head.active, Some((first.id.clone(), "sha256:aaaa".into())));
    assert_eq!(head.newest_pushed_at, Some(at(200)));
}

/// `tag` on `t`, in an environment ordered by version.
fn release(t: &Target, tag: &str, digest: &str, pushed: u64) -> Deployment {
    let mut d = deployment(t, &format!("e-{tag}"), digest, pushed);
    d.tag = tag.into();
    d.version = ferry::rules::version_key(tag).map(|v| ferry::rules::order_key(&v, d.pushed_at));
    d
}

async fn by_version_a_lower_version_is_refused_whenever_it_was_pushed(ledger: &impl Ledger) {
    let t = target("versions");
    let finish = |d: &Deployment, attempt: &'static str| {
        let mut d = d.clone();
        d.state = State::InProgress;
        d.ecs_deployment_id = Some(format!("ecs-{}", d.tag));
        async move { ledger.finish(&d, attempt).await.expect("finish") }
    };
    let minor = release(&t, "v1.3.0", "sha256:1300", 100);
    let hotfix = release(&t, "v1.2.4", "sha256:1240", 200);
    let patch = release(&t, "v1.3.1", "sha256:1310", 150);
    assert_eq!(begin(ledger, &minor, "a1", 100).await, Ok(()));
    finish(&minor, "a1").await;
    assert_eq!(begin(ledger, &hotfix, "a2", 200).await, Err("older than v1.3.0".into()), "pushed later, lower version");
    assert_eq!(begin(ledger, &patch, "a3", 300).await, Ok(()), "pushed before the hotfix, higher version");
    finish(&patch, "a3").await;
    let head = ledger.head(&t).await.expect("head");
    assert_eq!(head.newest_version, Some((patch.version.clone().expect("key"), "v1.3.1".into())));
    let [stored, _] = ledger.history(&t, 10).await.expect("history").try_into().expect("two");
    assert_eq!(stored.version, patch.version, "the record keeps its version key");

    // One version built twice: the later build is newer, a late event of the earlier one older.
    let rebuilt = release(&t, "v1.3.1", "sha256:1311", 400);
    let earlier = release(&t, "v1.3.1", "sha256:1319", 120);
    assert_eq!(begin(ledger, &rebuilt, "a4", 400).await, Ok(()), "the same version, pushed later");
    finish(&rebuilt, "a4").await;
    assert_eq!(begin(ledger, &earlier, "a5", 500).await, Err("older than v1.3.1".into()), "an earlier build");
}

async fn a_target_switched_to_version_order_goes_by_push_time_until_it_takes_a_version(ledger: &impl Ledger) {
    let t = target("switched");
    let by_time = deployment(&t, "e-by-time", "sha256:0001", 300);
    assert_eq!(begin(ledger, &by_time, "a1", 300).await, Ok(()));
    let mut done = by_time.clone();
    done.state = State::Skipped;
    ledger.finish(&done, "a1").await.expect("finish");
    let earlier = release(&t, "v9.0.0", "sha256:9000", 200);
    assert_eq!(begin(ledger, &earlier, "a2", 400).await, Err("stale".into()), "a higher version pushed earlier");
    let later = release(&t, "v1.0.0", "sha256:1000", 350);
    assert_eq!(begin(ledger, &later, "a3", 400).await, Ok(()), "a lower version pushed later: the first by version");
    assert_eq!(ledger.head(&t).await.expect("head").newest_version.map(|(_, tag)| tag), Some("v1.0.0".into()));
}

async fn a_held_push_is_the_heads_until_the_next_one_is_recorded_and_resumes_from_held(ledger: &impl Ledger) {
    let t = target("held");
    let mut held = deployment(&t, "e1", "sha256:1111", 100);
    assert_eq!(begin(ledger, &held, "a1", 100).await, Ok(()));
    held.state = State::Held;
    held.reason = Some("held: holidays".into());
    held.freeze_override = Some("alice: INC-231".into());
    assert_eq!(ledger.finish(&held, "a1").await, Ok(Finish::Recorded));
    let head = ledger.head(&t).await.expect("head");
    assert_eq!((head.held.as_deref(), head.lock, head.active), (Some(held.id.as_str()), None, None));
    assert_eq!(begin(ledger, &held, "a1-again", 110).await, Err("done HELD".into()), "its event again");

    // The freeze ends: back to PENDING, then deployed as any push is.
    let mut released = held.clone();
    released.state = State::Pending;
    assert!(ledger.transition(&released, &[State::Held], HeadChange::None).await.expect("release"));
    assert_eq!(begin(ledger, &released, "a2", 200).await, Ok(()));
    // Another run releasing it too repeats a write that took effect; its attempt then waits on the lock.
    assert!(ledger.transition(&released, &[State::Held], HeadChange::None).await.expect("again"));
    assert_eq!(begin(ledger, &released, "a3", 201).await, Err(format!("locked by {}", held.id)));
    released.state = State::InProgress;
    released.ecs_deployment_id = Some("ecs-held/1".into());
    (released.reason, released.freeze_override) = (None, None);
    assert_eq!(ledger.finish(&released, "a2").await, Ok(Finish::Recorded));
    let head = ledger.head(&t).await.expect("head");
    assert_eq!((head.held, head.active), (None, Some((held.id.clone(), "sha256:1111".into()))));
    let stored = ledger.deployment(&t, &held.id).await.expect("read").expect("record");
    assert_eq!(
        (stored.reason, stored.freeze_override.as_deref()),
        (None, Some("alice: INC-231")),
        "a reason it no longer has is gone; what it was given stays"
    );
}

async fn approvals_count_each_approver_once_and_the_last_needed_one_decides(ledger: &impl Ledger) {
    let t = target("approvals");
    let mut d = deployment(&t, "e1", "sha256:1111", 100);
    assert_eq!(begin(ledger, &d, "a1", 100).await, Ok(()));
    d.state = State::AwaitingApproval;
    assert_eq!(ledger.finish(&d, "a1").await, Ok(Finish::Recorded));
    assert_eq!(ledger.head(&t).await.expect("head").held, Some(d.id.clone()), "the waiting push");

    let approve = |by: &'static str| ledger.approve(&d, by, 2, at(200));
    assert_eq!(approve("U0BBBBBBB").await, Ok(Approved::Counted(vec!["U0BBBBBBB".into()])));
    assert_eq!(approve("U0BBBBBBB").await, Ok(Approved::Counted(vec!["U0BBBBBBB".into()])), "once per approver");
    assert_eq!(approve("U0AAAAAAA").await, Ok(Approved::Approved));
    assert_eq!(approve("U0CCCCCCC").await, Ok(Approved::Decided(State::Pending)), "decided once");
    let stored = ledger.deployment(&t, &d.id).await.expect("read").expect("record");
    assert_eq!((stored.state, stored.approval.as_deref()), (State::Pending, Some("approved by U0AAAAAAA, U0BBBBBBB")));
}

async fn a_record_keeps_every_field_through_the_ledger(ledger: &impl Ledger) {
    let t = Target { role_arn: Some("arn:aws:iam::210987654321:role/ferry".into()), ..target("worker") };
    let mut d = deployment(&t, "e9", "sha256:9999", 900);
    assert_eq!(begin(ledger, &d, "a9", 900).await, Ok(()));
    d.state = State::Failed;
    d.reason = Some("migration task exited with code 2".into());
    d.previous_task_definition = Some("arn:aws:ecs:eu-west-1:123456789012:task-definition/worker:4".into());
    d.task_definition = Some("arn:aws:ecs:eu-west-1:123456789012:task-definition/worker:5".into());
    d.approval = Some("approved by U0AAAAAAA".into());
    d.freeze_override = Some("freeze (holidays) overridden by alice: INC-231".into());
    d.image_labels = ferry::model::ImageLabels { revision: Some("9f8e7d6c5b4a".into()), created: Some(at(850)) };
    d.updated_at = at(960);
    ledger.finish(&d, "a9").await.expect("finish");
    ledger.note_notify_error(&d, "Slack (default): HTTP 503").await.expect("note");
    d.notify_error = Some("Slack (default): HTTP 503".into());
    let [stored] = ledger.history(&t, 10).await.expect("history").try_into().expect("one");
    assert_eq!(stored, d);
    assert_eq!(ledger.head(&t).await.expect("head").lock, None);
}

async fn a_quarantined_digest_is_refused_until_released_or_overtaken(ledger: &impl Ledger) {
    let t = target("quarantine");
    let mut bad = deployment(&t, "q1", "sha256:bad", 100);
    assert_eq!(begin(ledger, &bad, "a1", 100).await, Ok(()));
    bad.state = State::Failed;
    ledger.finish(&bad, "a1").await.expect("finish");
    bad.state = State::RollingBack;
    assert!(ledger.transition(&bad, &[State::Failed], HeadChange::Quarantine).await.expect("quarantine"));
    assert_eq!(ledger.head(&t).await.expect("head").quarantine, ["sha256:bad"]);
    assert!(!ledger.transition(&bad, &[State::Failed], HeadChange::Quarantine).await.expect("again"), "claimed once");

    let again = deployment(&t, "q2", "sha256:bad", 200);
    assert_eq!(begin(ledger, &again, "a2", 200).await, Err("quarantined".into()));
    ledger.release(&t, "sha256:bad").await.expect("release");
    assert!(ledger.head(&t).await.expect("head").quarantine.is_empty());

    // Quarantined again, then overtaken by a new digest: the quarantine is lifted.
    let mut bad2 = deployment(&t, "q3", "sha256:bad2", 300);
    bad2.state = State::Failed;
    assert_eq!(begin(ledger, &bad2, "a3", 300).await, Ok(()));
    ledger.finish(&bad2, "a3").await.expect("finish");
    bad2.state = State::RollingBack;
    assert!(ledger.transition(&bad2, &[State::Failed], HeadChange::Quarantine).await.expect("quarantine"));
    let fresh = deployment(&t, "q4", "sha256:fresh", 400);
    assert_eq!(begin(ledger, &fresh, "a4", 400).await, Ok(()));
    assert!(ledger.head(&t).await.expect("head").quarantine.is_empty());

    // A reason noted on a FAILED record stays only while it is FAILED.
    let mut noted = bad.clone();
    noted.reason = Some("no revision on record passed verification".into());
    assert_eq!(ledger.note_reason(&noted, State::Failed).await, Ok(false));
    let stored = ledger.history(&t, 10).await.expect("history").into_iter().find(|d| d.id == bad.id).expect("bad");
    assert_eq!((stored.state, stored.reason), (State::RollingBack, None), "not FAILED any more: untouched");
}

async fn only_the_attempt_holding_the_lock_gives_it_up_and_the_record_stays_pending(ledger: &impl Ledger) {
    let t = target("api");
    let d = deployment(&t, "e1", "sha256:aaaa", 100);
    assert_eq!(begin(ledger, &d, "a1", 100).await, Ok(()));

    ledger.unlock(&t, "someone-else").await.expect("unlock by another attempt is a no-op");
    let head = ledger.head(&t).await.expect("head");
    assert_eq!(head.lock.map(|l| l.attempt), Some("a1".into()));

    ledger.unlock(&t, "a1").await.expect("unlock");
    assert_eq!(ledger.head(&t).await.expect("head").lock, None);
    assert_eq!(ledger.history(&t, 10).await.expect("history")[0].state, State::Pending);
    // The redelivered event resumes at once, long before the first attempt's lease would end.
    assert_eq!(begin(ledger, &d, "a1-redelivered", 101).await, Ok(()));
    ledger.unlock(&t, "a1").await.expect("unlocking a lock no longer held is a no-op");
    assert_eq!(ledger.head(&t).await.expect("head").lock.map(|l| l.attempt), Some("a1-redelivered".into()));
}

async fn a_verification_claim_is_taken_once_retaken_by_its_own_retry_and_given_back_only_by_its_holder(
    ledger: &impl Ledger,
) {
    let t = target("api");
    let d = recorded(ledger, &t, "sha256:aaaa", State::InProgress).await;

    let now = at(200);
    let (mine, theirs) = (Claim { by: "mine".into(), until: at(560) }, Claim { by: "theirs".into(), until: at(560) });
    let verifying = Deployment { state: State::Verifying, ..d.clone() };
    let claim = |c, now| ledger.claim(&verifying, State::InProgress, HeadChange::None, now, c);
    assert_eq!(claim(&mine, now).await, Ok(true));
    // The same request again (the SDK's retry after its answer was lost): still ours.
    assert_eq!(claim(&mine, now).await, Ok(true));
    // Another invocation, while the claim holds (even one claiming at the same instant): refused.
    assert_eq!(claim(&theirs, now).await, Ok(false));
    // Only the holder gives it back.
    ledger.release_claim(&d, State::Verifying, &theirs).await.expect("not the holder: a no-op");
    assert_eq!(ledger.history(&t, 10).await.expect("history")[0].state, State::Verifying);
    ledger.release_claim(&d, State::Verifying, &mine).await.expect("release");
    assert_eq!(ledger.history(&t, 10).await.expect("history")[0].state, State::InProgress);
    assert_eq!(claim(&theirs, at(202)).await, Ok(true), "claimable again at once");
    // Once it lapses (its holder died), another invocation takes it over.
    assert_eq!(claim(&mine, at(300)).await, Ok(false));
    assert_eq!(claim(&mine, at(561)).await, Ok(true), "taken over after the claim lapsed");
}

async fn a_rollback_claim_quarantines_once_and_is_taken_over_only_once_it_lapses_or_is_given_back(
    ledger: &impl Ledger,
) {
    let t = target("api");
    let d = recorded(ledger, &t, "sha256:bad", State::Failed).await;

    let rolling = Deployment { state: State::RollingBack, ..d.clone() };
    let (first, second) = (Claim { by: "first".into(), until: at(265) }, Claim { by: "second".into(), until: at(400) });
    let claim = |c, now| ledger.claim(&rolling, State::Failed, HeadChange::Quarantine, now, c);
    assert_eq!(claim(&first, at(200)).await, Ok(true));
    assert_eq!(ledger.head(&t).await.expect("head").quarantine, ["sha256:bad"], "quarantined with the claim");
    assert_eq!(claim(&second, at(201)).await, Ok(false), "held");
    // Given back (its invocation failed): taken over at once, and the record stays ROLLING_BACK.
    ledger.release_claim(&rolling, State::RollingBack, &first).await.expect("release");
    assert_eq!(ledger.history(&t, 10).await.expect("history")[0].state, State::RollingBack);
    assert_eq!(claim(&second, at(202)).await, Ok(true));
    // Not given back (its invocation died): taken over once it lapses, not before.
    let third = Claim { by: "third".into(), until: at(600) };
    assert_eq!(claim(&third, at(399)).await, Ok(false));
    assert_eq!(claim(&third, at(401)).await, Ok(true));
    assert_eq!(ledger.head(&t).await.expect("head").quarantine, ["sha256:bad"], "quarantined once");
    // A settled record is claimed by no one.
    let settled = Deployment { state: State::RolledBack, ..rolling.clone() };
    assert!(ledger.transition(&settled, &[State::RollingBack], HeadChange::None).await.expect("settle"));
    assert_eq!(claim(&Claim { by: "late".into(), until: at(2000) }, at(1000)).await, Ok(false));
}

async fn a_write_repeated_after_it_took_effect_is_done_and_no_other_write_passes_for_it(ledger: &impl Ledger) {
    let t = target("api");
    let d = recorded(ledger, &t, "sha256:aaaa", State::InProgress).await;

    let failed = Deployment { state: State::Failed, updated_at: at(200), ..d.clone() };
    let from = [State::InProgress, State::Verifying];
    assert_eq!(ledger.transition(&failed, &from, HeadChange::None).await, Ok(true));
    // The SDK sends the same request again (its first answer was lost): done, not refused.
    assert_eq!(ledger.transition(&failed, &from, HeadChange::None).await, Ok(true));
    // Another writer's FAILED (stamped at another moment), or a write of another state: refused.
    let theirs = Deployment { updated_at: at(201), ..failed.clone() };
    assert_eq!(ledger.transition(&theirs, &from, HeadChange::None).await, Ok(false));
    let superseded = Deployment { state: State::Superseded, ..failed.clone() };
    assert_eq!(ledger.transition(&superseded, &from, HeadChange::None).await, Ok(false));
    assert_eq!(ledger.history(&t, 10).await.expect("history")[0], failed);
}

async fn a_failed_write_repeated_after_the_rollback_moved_the_record_on_is_done(ledger: &impl Ledger) {
    let t = target("api");
    let d = recorded(ledger, &t, "sha256:aaaa", State::InProgress).await;

    let failed = Deployment { state: State::Failed, updated_at: at(200), ..d.clone() };
    let from = [State::InProgress, State::Verifying];
    assert_eq!(ledger.transition(&failed, &from, HeadChange::None).await, Ok(true));
    // The rollback function claims it before the SDK repeats the FAILED write.
    let rolling_back = Deployment { state: State::RollingBack, ..failed.clone() };
    let claim = Claim { by: "rollback-1".into(), until: at(500) };
    assert_eq!(ledger.claim(&rolling_back, State::Failed, HeadChange::Quarantine, at(201), &claim).await, Ok(true));
    // The repeat is the write that took effect: done (so verify still says "failed").
    assert_eq!(ledger.transition(&failed, &from, HeadChange::None).await, Ok(true));
    // Another writer's FAILED of the same record is not.
    let theirs = Deployment { updated_at: at(202), ..failed.clone() };
    assert_eq!(ledger.transition(&theirs, &from, HeadChange::None).await, Ok(false));
    assert_eq!(ledger.history(&t, 10).await.expect("history")[0].state, State::RollingBack);
}

async fn history_pages_follow_each_other_newest_first_without_gaps(ledger: &impl Ledger) {
    let t = target("api");
    let mut ids = Vec::new();
    for i in 0..5u64 {
        let d = Deployment { state: State::Skipped, ..deployment(&t, &format!("e{i}"), "sha256:aaaa", 100 + i) };
        ledger.record_skipped(&d).await.expect("skipped");
        ids.push(d.id);
    }
    ids.reverse();
    let first: Vec<String> = ledger.history(&t, 2).await.expect("history").into_iter().map(|d| d.id).collect();
    assert_eq!(first, ids[..2]);
    let next: Vec<String> =
        ledger.history_before(&t, &first[1], 2).await.expect("page").into_iter().map(|d| d.id).collect();
    assert_eq!(next, ids[2..4]);
    let last: Vec<String> =
        ledger.history_before(&t, &next[1], 2).await.expect("page").into_iter().map(|d| d.id).collect();
    assert_eq!(last, ids[4..]);
    assert!(ledger.history_before(&t, &ids[4], 2).await.expect("page").is_empty(), "nothing older than the oldest");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_with_an_unknown_origin_is_an_error_not_taken_for_ferrys() {
    let emulator = Emulator::start();
    let aws = emulator.sdk_config("eu-west-1").await;
    let table = unique("ledger");
    common::create_table(&aws, &table).await;
    let ledger = DynamoLedger::new(aws_sdk_dynamodb::Client::new(&aws), table.clone());
    let t = target("api");
    let d = recorded(&ledger, &t, "sha256:aaaa", State::InProgress).await;
    aws_sdk_dynamodb::Client::new(&aws)
        .update_item()
        .table_name(&table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("T#{}", t.key())))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(format!("D#{}", d.id)))
        .update_expression("SET origin = :o")
        .expression_attribute_values(":o", aws_sdk_dynamodb::types::AttributeValue::S("martian".into()))
        .send()
        .await
        .expect("update");
    let read = ledger.deployment(&t, &d.id).await;
    assert!(matches!(&read, Err(e) if e.to_string().contains("unknown origin \"martian\"")), "{read:?}");
}

async fn a_hooks_answer_is_kept_through_every_write_and_decided_once_per_execution(ledger: &impl Ledger) {
    let t = target("api");
    let d = recorded(ledger, &t, "sha256:aaaa", State::InProgress).await;
    let hook = |execution: &str, status: HookStatus, attempts: u32| HookRecord {
        stage: "POST_TEST_TRAFFIC_SHIFT".into(),
        execution_id: execution.into(),
        status,
        attempts,
        evidence: format!("#{attempts} HTTP 503"),
        at: at(200 + u64::from(attempts)),
    };
    assert_eq!(ledger.note_hook(&d, &hook("x1", HookStatus::InProgress, 1)).await, Ok(None));
    assert_eq!(ledger.note_hook(&d, &hook("x1", HookStatus::Failed, 2)).await, Ok(None), "IN_PROGRESS is replaced");
    let decided = ledger.note_hook(&d, &hook("x1", HookStatus::Succeeded, 3)).await;
    assert_eq!(decided, Ok(Some(hook("x1", HookStatus::Failed, 2))), "a decided execution answers as it did");
    // A whole-record write (the verification's claim) keeps the hook's answer.
    let verifying = Deployment { state: State::Verifying, updated_at: at(300), ..d.clone() };
    let claim = Claim { by: "v1".into(), until: at(600) };
    assert!(ledger.claim(&verifying, State::InProgress, HeadChange::None, at(300), &claim).await.expect("claim"));
    let read = ledger.deployment(&t, &d.id).await.expect("read").expect("record");
    assert_eq!(read.hooks, [hook("x1", HookStatus::Failed, 2)]);
    // Another execution of the stage (a new rollout of the revision) is answered afresh.
    assert_eq!(ledger.note_hook(&d, &hook("x2", HookStatus::Succeeded, 1)).await, Ok(None));
    let read = ledger.deployment(&t, &d.id).await.expect("read").expect("record");
    assert_eq!(read.hooks, [hook("x2", HookStatus::Succeeded, 1)]);
    let unknown = deployment(&t, "e9", "sha256:9999", 900);
    assert!(ledger.note_hook(&unknown, &hook("x1", HookStatus::Succeeded, 1)).await.is_err(), "no record, no answer");
}

/// Each case once against DynamoDB (on the emulator) and once in memory.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $case() {
                    let emulator = ferry_tests::Emulator::start();
                    super::$case(&super::ledger(&emulator).await).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&ferry::fakes::MemoryLedger::default()).await;
                }
            )*
        }
    };
}

contract!(
    conditional_writes_refuse_what_admit_refuses_and_never_move_backwards,
    a_record_keeps_every_field_through_the_ledger,
    by_version_a_lower_version_is_refused_whenever_it_was_pushed,
    a_target_switched_to_version_order_goes_by_push_time_until_it_takes_a_version,
    a_held_push_is_the_heads_until_the_next_one_is_recorded_and_resumes_from_held,
    approvals_count_each_approver_once_and_the_last_needed_one_decides,
    a_quarantined_digest_is_refused_until_released_or_overtaken,
    only_the_attempt_holding_the_lock_gives_it_up_and_the_record_stays_pending,
    a_verification_claim_is_taken_once_retaken_by_its_own_retry_and_given_back_only_by_its_holder,
    a_rollback_claim_quarantines_once_and_is_taken_over_only_once_it_lapses_or_is_given_back,
    a_write_repeated_after_it_took_effect_is_done_and_no_other_write_passes_for_it,
    a_failed_write_repeated_after_the_rollback_moved_the_record_on_is_done,
    history_pages_follow_each_other_newest_first_without_gaps,
    a_hooks_answer_is_kept_through_every_write_and_decided_once_per_execution,
);
