//! Approvals with real SDK clients against the local AWS emulator: a push that needs approval
//! waits with ECS untouched; a click Slack signed, by a listed approver, is recorded in DynamoDB
//! and announced on EventBridge, and the deploy function then deploys it; an unsigned click or
//! an unlisted clicker changes nothing.

mod common;

use common::World;
use ferry::adapters::dynamodb::DynamoLedger;
use ferry::adapters::eventbridge::EventBridgeBus;
use ferry::approval::APPROVE_ACTION;
use ferry::approve::{Answer, Approver};
use ferry::deploy::{DeployOutcome, TargetOutcome};
use ferry::model::{Deployment, State};
use ferry::ports::{Ledger, SystemClock};
use ferry_tests::{clients, recorded, save_recorded, unique};
use serde_json::Value;

/// Slack's request for `user`'s click on Approve for `d`, signed with `secret` now.
fn click(d: &Deployment, user: &str, secret: &str) -> Value {
    ferry::fakes::slack_click(d, user, APPROVE_ACTION, secret.as_bytes(), chrono::Utc::now())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_approval_by_a_listed_approver_deploys_the_waiting_push_and_nothing_else_does() {
    let w = World::new().await;
    let config = w.config_with("approval = { approvers = [\"U0AAAAAAA\"] }");
    let before = w.describe().await.task_definition;
    let pushed = w.deploy(&config, w.push("staging-aaaa0001", "sha256:a1").await, "push").await;
    let DeployOutcome::Deployed(outcomes) = &pushed else { panic!("{pushed:?}") };
    assert!(matches!(outcomes.as_slice(), [TargetOutcome::AwaitingApproval { .. }]), "{pushed:?}");
    assert_eq!(w.describe().await.task_definition, before, "ECS untouched");
    let [waiting] = w.ledger().history(&w.target(), 5).await.expect("history").try_into().expect("one");
    assert_eq!(waiting.state, State::AwaitingApproval);

    let home_secrets = aws_sdk_secretsmanager::Client::new(&w.home);
    let secret_value = "9c1d8f2e4b7a6c3d5e8f1a2b3c4d5e6f";
    let arn = home_secrets
        .create_secret()
        .name(unique("ferry/slack-signing"))
        .secret_string(secret_value)
        .send()
        .await
        .expect("secret")
        .arn
        .expect("arn");

    // The approve function, as it runs: its secret read, its ledger and bus clients recorded.
    ferry_tests::acting_as("approve");
    let signing = ferry::adapters::slack::signing_secret(&clients::secrets(&w.home), &arn).await.expect("read");
    let ledger = DynamoLedger::new(clients::dynamodb(&w.home), &w.table);
    let bus = EventBridgeBus::new(clients::eventbridge(&w.home), "default");
    let approver = Approver {
        config: &config,
        ledger: &ledger,
        bus: &bus,
        clock: &SystemClock,
        signing_secret: signing.as_bytes(),
    };
    let answer = |a: &Answer| (a.status, serde_json::from_str::<Value>(&a.body).expect("json")["text"].to_string());

    let forged = approver.handle(click(&waiting, "U0AAAAAAA", "not-the-secret")).await;
    let stranger = approver.handle(click(&waiting, "U0ZZZZZZZ", secret_value)).await;
    assert_eq!((forged.status, stranger.status), (401, 403), "{:?} {:?}", answer(&forged), answer(&stranger));
    assert_eq!(
        w.ledger().deployment(&w.target(), &waiting.id).await.expect("read").expect("record").state,
        State::AwaitingApproval
    );
    assert!(w.delivered("Deployment Approved").await.is_empty(), "nothing announced");

    let approved = approver.handle(click(&waiting, "U0AAAAAAA", secret_value)).await;
    assert_eq!(approved.status, 200, "{:?}", answer(&approved));
    let record = w.ledger().deployment(&w.target(), &waiting.id).await.expect("read").expect("record");
    assert_eq!((record.state, record.approval.as_deref()), (State::Pending, Some("approved by U0AAAAAAA")));
    let again = approver.handle(click(&waiting, "U0AAAAAAA", secret_value)).await;
    assert!(answer(&again).1.contains("already decided"), "{:?}", answer(&again));
    save_recorded("approve", "click", &recorded("approve"));

    // EventBridge delivers the announcement to the deploy function: it deploys, once.
    let [event] = w.delivered("Deployment Approved").await.try_into().expect("one announcement");
    let deployed = w.deploy(&config, event, "approved").await;
    let DeployOutcome::Deployed(outcomes) = &deployed else { panic!("{deployed:?}") };
    assert!(matches!(outcomes.as_slice(), [TargetOutcome::Started { .. }]), "{deployed:?}");
    assert_ne!(w.describe().await.task_definition, before, "deployed");
    let record = w.ledger().deployment(&w.target(), &waiting.id).await.expect("read").expect("record");
    assert_eq!(record.state, State::InProgress);
    save_recorded("deploy", "approved", &recorded("deploy"));
}
