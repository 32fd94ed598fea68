//! The approve handler with in-memory ports: only a click Slack signed, by a listed approver,
//! changes anything, and every decision is taken once.

use chrono::{DateTime, TimeZone, Utc};
use ferry::approval::{APPROVE_ACTION, REJECT_ACTION, Verdict};
use ferry::approve::{Answer, Approver};
use ferry::config::Config;
use ferry::fakes::{FakeClock, MemoryLedger, RecordingBus};
use ferry::model::{Deployment, Push, State, Target};
use ferry::ports::{Clock, Ledger};
use serde_json::{Value, json};

const CONFIG: &str = r#"
[[environments]]
name = "production"
rules = [{ semver = "final" }]
targets = [{ region = "eu-west-1", cluster = "shop-prod" }]
approval = { approvers = ["U0AAAAAAA", "U0BBBBBBB", "U0CCCCCCC"], required = 2 }

[[services]]
repository = "shop/api"
name = "shop-{env}-api"
containers = ["api"]

[[services]]
repository = "shop/web"
name = "shop-{env}-web"
containers = ["web"]
approval = { approvers = ["U0DDDDDDD"] }
"#;

const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 24, 10, 0, 0).single().expect("time")
}

fn target(service: &str) -> Target {
    Target {
        environment: "production".into(),
        account: None,
        region: "eu-west-1".into(),
        cluster: "shop-prod".into(),
        service: service.into(),
        role_arn: None,
    }
}

struct World {
    config: Config,
    ledger: MemoryLedger,
    bus: RecordingBus,
    clock: FakeClock,
}

impl World {
    async fn new() -> (World, Deployment) {
        let w = World {
            config: Config::parse("ferry.toml", CONFIG).expect("config"),
            ledger: MemoryLedger::default(),
            bus: RecordingBus::default(),
            clock: FakeClock::at(t0()),
        };
        let d = w.waiting("shop/api", "shop-production-api").await;
        (w, d)
    }

    /// A push recorded AWAITING_APPROVAL, as the deploy function leaves it.
    async fn waiting(&self, repository: &str, service: &str) -> Deployment {
        let push = Push {
            event_id: format!("evt-{service}"),
            registry_account: "123456789012".into(),
            registry_region: "eu-west-1".into(),
            repository: repository.into(),
            tag: "v1.3.0".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            pushed_at: t0(),
        };
        let mut d = Deployment::new(&push, target(service), t0());
        self.ledger.begin(&d, "deploy", t0() + chrono::Duration::minutes(15), t0()).await.expect("begin");
        d.state = State::AwaitingApproval;
        self.ledger.finish(&d, "deploy").await.expect("finish");
        d
    }

    fn approver(&self) -> Approver<'_, MemoryLedger, RecordingBus, FakeClock> {
        Approver {
            config: &self.config,
            ledger: &self.ledger,
            bus: &self.bus,
            clock: &self.clock,
            signing_secret: SECRET,
        }
    }

    async fn state(&self, d: &Deployment) -> State {
        self.ledger.deployment(&d.target, &d.id).await.expect("read").expect("record").state
    }
}

fn click(d: &Deployment, user: &str, action: &str, secret: &[u8], at: DateTime<Utc>) -> Value {
    ferry::fakes::slack_click(d, user, action, secret, at)
}

fn text(answer: &Answer) -> String {
    serde_json::from_str::<Value>(&answer.body).expect("JSON")["text"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn two_listed_approvers_approve_once_and_the_decision_is_announced_once() {
    let (w, d) = World::new().await;
    let first = w.approver().handle(click(&d, "U0AAAAAAA", APPROVE_ACTION, SECRET, t0())).await;
    assert_eq!(first.status, 200);
    assert!(text(&first).contains("1 of 2"), "{}", text(&first));
    let again = w.approver().handle(click(&d, "U0AAAAAAA", APPROVE_ACTION, SECRET, t0())).await;
    assert!(text(&again).contains("1 of 2"), "the same approver twice counts once: {}", text(&again));
    assert_eq!(w.state(&d).await, State::AwaitingApproval);
    assert!(w.bus.decisions().is_empty());

    let second = w.approver().handle(click(&d, "U0CCCCCCC", APPROVE_ACTION, SECRET, t0())).await;
    assert_eq!((second.status, text(&second).starts_with("Approved")), (200, true), "{}", text(&second));
    let record = w.ledger.deployment(&d.target, &d.id).await.expect("read").expect("record");
    assert_eq!((record.state, record.approval.as_deref()), (State::Pending, Some("approved by U0AAAAAAA, U0CCCCCCC")));
    assert_eq!(w.bus.decisions(), [(d.id.clone(), Verdict::Approve, "U0CCCCCCC".to_string())]);

    let late = w.approver().handle(click(&d, "U0BBBBBBB", REJECT_ACTION, SECRET, t0())).await;
    assert!(text(&late).contains("already decided (PENDING)"), "{}", text(&late));
    assert_eq!(w.bus.decisions().len(), 1, "decided once");
}

#[tokio::test]
async fn the_clicker_is_answered_through_the_clicks_response_url() {
    let (w, d) = World::new().await;
    let answer = w.approver().handle(click(&d, "U0AAAAAAA", APPROVE_ACTION, SECRET, t0())).await;
    let reply = answer.reply.clone().expect("a reply");
    assert_eq!(reply.url, "https://hooks.slack.com/actions/T0/1/x");
    assert_eq!(reply.body, answer.body, "what the answer says, where Slack shows it");
    let refused = w.approver().handle(click(&d, "U0DDDDDDD", APPROVE_ACTION, SECRET, t0())).await;
    assert!(refused.reply.is_some_and(|r| r.body.contains("not an approver")), "a refusal is said too");
    let forged = w.approver().handle(click(&d, "U0AAAAAAA", APPROVE_ACTION, b"guess", t0())).await;
    assert_eq!((forged.status, forged.reply), (401, None), "an unsigned request's URL is never followed");
}

#[tokio::test]
async fn an_approval_whose_announcement_failed_is_announced_again_by_the_next_click() {
    let (w, d) = World::new().await;
    w.approver().handle(click(&d, "U0AAAAAAA", APPROVE_ACTION, SECRET, t0())).await;
    w.bus.fail(true);
    let failed = w.approver().handle(click(&d, "U0BBBBBBB", APPROVE_ACTION, SECRET, t0())).await;
    assert_eq!(failed.status, 503, "{}", failed.body);
    assert_eq!(w.state(&d).await, State::Pending, "approved in the ledger");
    assert!(w.bus.decisions().is_empty(), "but not announced");
    w.bus.fail(false);
    let racing = w.approver().handle(click(&d, "U0AAAAAAA", APPROVE_ACTION, SECRET, t0())).await;
    assert!(text(&racing).contains("already decided"), "a click racing the approval: {}", racing.body);
    w.clock.advance(std::time::Duration::from_secs(120));
    // While a deploy attempt holds the target for it, it is being deployed: not announced again.
    let now = w.clock.now();
    w.ledger.lock(&d.target, &d.id, "deploying", now + chrono::Duration::minutes(15), now).await.expect("lock");
    let deploying = w.approver().handle(click(&d, "U0AAAAAAA", APPROVE_ACTION, SECRET, now)).await;
    assert!(text(&deploying).contains("already decided"), "{}", deploying.body);
    w.ledger.unlock(&d.target, "deploying").await.expect("unlock");
    let again = w.approver().handle(click(&d, "U0AAAAAAA", APPROVE_ACTION, SECRET, w.clock.now())).await;
    assert_eq!((again.status, text(&again).starts_with("Approved")), (200, true), "{}", again.body);
    assert_eq!(w.bus.decisions(), [(d.id.clone(), Verdict::Approve, "U0AAAAAAA".to_string())]);
}

#[tokio::test]
async fn a_click_after_the_approval_expired_changes_nothing() {
    let (w, d) = World::new().await;
    w.clock.advance(std::time::Duration::from_secs(24 * 3600));
    let answer = w.approver().handle(click(&d, "U0AAAAAAA", APPROVE_ACTION, SECRET, w.clock.now())).await;
    assert_eq!(answer.status, 410, "{}", answer.body);
    assert!(text(&answer).contains("expired"), "{}", answer.body);
    assert_eq!(w.state(&d).await, State::AwaitingApproval, "recorded REJECTED by reconciliation, not here");
    assert!(w.bus.decisions().is_empty());
}

#[tokio::test]
async fn racing_approvers_decide_once() {
    let (w, d) = World::new().await;
    let web = w.waiting("shop/web", "shop-production-web").await;
    // shop-production-web needs one approval; U0DDDDDDD clicks twice at once, and api's two approvers race.
    let approver = w.approver();
    let clicks = [
        click(&web, "U0DDDDDDD", APPROVE_ACTION, SECRET, t0()),
        click(&web, "U0DDDDDDD", APPROVE_ACTION, SECRET, t0()),
        click(&d, "U0AAAAAAA", APPROVE_ACTION, SECRET, t0()),
        click(&d, "U0BBBBBBB", APPROVE_ACTION, SECRET, t0()),
        click(&d, "U0CCCCCCC", APPROVE_ACTION, SECRET, t0()),
    ];
    let answers = futures_util::future::join_all(clicks.into_iter().map(|c| approver.handle(c))).await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    let mut decided: Vec<String> = w.bus.decisions().into_iter().map(|(id, _, _)| id).collect();
    decided.sort();
    let mut expected = vec![d.id.clone(), web.id.clone()];
    expected.sort();
    assert_eq!(decided, expected, "one announcement per deployment");
}

#[tokio::test]
async fn a_listed_approver_rejects_and_nothing_deploys() {
    let (w, d) = World::new().await;
    let answer = w.approver().handle(click(&d, "U0BBBBBBB", REJECT_ACTION, SECRET, t0())).await;
    assert_eq!((answer.status, text(&answer).starts_with("Rejected")), (200, true));
    let record = w.ledger.deployment(&d.target, &d.id).await.expect("read").expect("record");
    assert_eq!((record.state, record.reason.as_deref()), (State::Rejected, Some("rejected by U0BBBBBBB")));
    assert_eq!(w.bus.decisions(), [(d.id.clone(), Verdict::Reject, "U0BBBBBBB".to_string())]);
    let approve = w.approver().handle(click(&d, "U0AAAAAAA", APPROVE_ACTION, SECRET, t0())).await;
    assert!(text(&approve).contains("already decided (REJECTED)"));
}

#[tokio::test]
async fn unsigned_forged_old_or_unlisted_clicks_change_nothing() {
    let (w, d) = World::new().await;
    let mut unsigned = click(&d, "U0AAAAAAA", APPROVE_ACTION, SECRET, t0());
    unsigned["headers"].as_object_mut().expect("headers").remove("x-slack-signature");
    let mut tampered = click(&d, "U0AAAAAAA", APPROVE_ACTION, SECRET, t0());
    tampered["body"] = tampered["body"].as_str().expect("body").replace("U0AAAAAAA", "U0BBBBBBB").into();
    let cases = [
        ("unsigned", unsigned, 401),
        ("signed with another secret", click(&d, "U0AAAAAAA", APPROVE_ACTION, b"guess", t0()), 401),
        ("body changed after signing", tampered, 401),
        (
            "replayed six minutes later",
            click(&d, "U0AAAAAAA", APPROVE_ACTION, SECRET, t0() - chrono::Duration::minutes(6)),
            401,
        ),
        ("not an approver", click(&d, "U0DDDDDDD", APPROVE_ACTION, SECRET, t0()), 403),
        ("not Ferry's button", click(&d, "U0AAAAAAA", "ferry_deploy_everything", SECRET, t0()), 400),
        ("not a request", json!({"hello": 1}), 401),
    ];
    for (name, request, status) in cases {
        let answer = w.approver().handle(request).await;
        assert_eq!(answer.status, status, "{name}: {}", answer.body);
        assert_eq!(w.state(&d).await, State::AwaitingApproval, "{name}");
    }
    assert!(w.bus.decisions().is_empty());
    // An unknown deployment, signed by a listed approver: found nowhere, nothing changes.
    let mut ghost = d.clone();
    ghost.id = "20261224T100000Z-ghost".into();
    assert_eq!(w.approver().handle(click(&ghost, "U0AAAAAAA", APPROVE_ACTION, SECRET, t0())).await.status, 404);
}

#[tokio::test]
async fn a_base64_body_is_read_as_slack_sent_it() {
    let (w, d) = World::new().await;
    let mut request = click(&d, "U0AAAAAAA", APPROVE_ACTION, SECRET, w.clock.now());
    let body = request["body"].as_str().expect("body").to_string();
    request["body"] = base64(&body).into();
    request["isBase64Encoded"] = true.into();
    let answer = w.approver().handle(request).await;
    assert!(text(&answer).contains("1 of 2"), "{}", answer.body);
}

fn base64(s: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
