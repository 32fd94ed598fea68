//! Approvals: who may let a push deploy, how a Slack button click proves who clicked it, and
//! what the click asks for.

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// An environment's (or a service's) approval rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// Slack user ids (`U0123ABCD`) whose Approve or Reject counts.
    pub approvers: Vec<String>,
    /// How many different approvers must approve.
    pub required: usize,
    /// After this long without a decision the push is REJECTED as expired.
    pub timeout: chrono::Duration,
}

/// The `action_id`s of the message's buttons.
pub const APPROVE_ACTION: &str = "ferry_approve";
pub const REJECT_ACTION: &str = "ferry_reject";

/// Slack's signature may be this old at most (Slack's own advice: five minutes).
pub const MAX_SIGNATURE_AGE_SECONDS: i64 = 300;

/// Why a request is not taken as Slack's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsigned {
    #[error("no X-Slack-Signature or X-Slack-Request-Timestamp header")]
    Missing,
    #[error("the request's timestamp {0:?} is not within five minutes of now")]
    Stale(String),
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks Slack's request signature exactly as Slack documents it
/// (api.slack.com/authentication/verifying-requests-from-slack): `v0=` and the hex
/// HMAC-SHA256, keyed with the signing secret, of `v0:{timestamp}:{raw body}`, compared in
/// constant time; a timestamp more than five minutes from `now` is refused (a replay).
pub fn verify_slack_signature(
    signing_secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(), Unsigned> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else { return Err(Unsigned::Missing) };
    let fresh = timestamp.parse::<i64>().is_ok_and(|t| (now.timestamp() - t).abs() <= MAX_SIGNATURE_AGE_SECONDS);
    if !fresh {
        return Err(Unsigned::Stale(timestamp.to_string()));
    }
    let expected = signature.strip_prefix("v0=").and_then(hex).ok_or(Unsigned::Mismatch)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(signing_secret).map_err(|_| Unsigned::Mismatch)?;
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| Unsigned::Mismatch)
}

/// The `X-Slack-Signature` Slack sends with `body` at `timestamp` (what the sandbox and the
/// tests sign requests with).
pub fn slack_signature(signing_secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(signing_secret) else { return String::new() };
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("v0={}", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// What an approver asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approve,
    Reject,
}

/// A button click: who clicked which button for which deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    /// The Slack user id.
    pub user: String,
    pub verdict: Verdict,
    /// The deployment's target key and id, as the button carries them.
    pub target: String,
    pub deployment: String,
    /// Where to reply to the clicker (Slack ignores the body of the answer to a click).
    pub response_url: Option<String>,
}

/// A reply to whoever clicked: `body` (JSON) to POST to `url`, the click's `response_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub url: String,
    pub body: String,
}

/// Where Slack's response URLs are (<https://api.slack.com/interactivity/handling#message_responses>).
pub const SLACK_RESPONSE_ORIGIN: &str = "https://hooks.slack.com/";

/// The value a button carries: the target's key and the deployment's id (Slack allows 2,000 characters).
pub fn button_value(target_key: &str, deployment: &str) -> String {
    format!("{deployment} {target_key}")
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: User,
    actions: Vec<Action>,
    #[serde(default)]
    response_url: Option<String>,
}

#[derive(Deserialize)]
struct User {
    id: String,
}

#[derive(Deserialize)]
struct Action {
    action_id: String,
    value: Option<String>,
}

/// Reads a Slack interactivity request's (form-encoded) body: `payload=<JSON>` of a
/// `block_actions` click on one of Ferry's buttons.
pub fn parse_click(body: &str) -> Result<Click, String> {
    let payload = form_field(body, "payload").ok_or("no payload field in the form body")?;
    let payload: Payload = serde_json::from_str(&payload).map_err(|e| format!("payload: {e}"))?;
    if payload.kind != "block_actions" {
        return Err(format!("a {:?} interaction, not a button click", payload.kind));
    }
    let [action] = payload.actions.as_slice() else { return Err("not exactly one action".into()) };
    let verdict = match action.action_id.as_str() {
        APPROVE_ACTION => Verdict::Approve,
        REJECT_ACTION => Verdict::Reject,
        other => return Err(format!("action {other:?} is not one of Ferry's buttons")),
    };
    let value = action.value.as_deref().unwrap_or_default();
    let (deployment, target) = value.split_once(' ').ok_or("the button carries no deployment")?;
    if payload.user.id.is_empty() || deployment.is_empty() || target.is_empty() {
        return Err("the click names no user or deployment".into());
    }
    Ok(Click {
        user: payload.user.id,
        verdict,
        target: target.into(),
        deployment: deployment.into(),
        response_url: payload.response_url,
    })
}

/// One field of an `application/x-www-form-urlencoded` body, decoded.
fn form_field(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (percent_decode(key)? == name).then(|| percent_decode(value)).flatten()
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's documented example: its signing secret, timestamp, body and signature.
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("time")
    }

    fn check(timestamp: Option<&str>, signature: Option<&str>, body: &str, now: i64) -> Result<(), Unsigned> {
        verify_slack_signature(SECRET.as_bytes(), timestamp, signature, body.as_bytes(), at(now))
    }

    #[test]
    fn slacks_documented_example_verifies() {
        assert_eq!(check(Some(TIMESTAMP), Some(SIGNATURE), BODY, 1_531_420_618 + 60), Ok(()));
        assert_eq!(slack_signature(SECRET.as_bytes(), TIMESTAMP, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn tampered_old_or_unsigned_requests_are_refused() {
        let now = 1_531_420_618;
        let tampered = BODY.replace("U2CERLKJA", "U2CERLKJB");
        assert_eq!(check(Some(TIMESTAMP), Some(SIGNATURE), &tampered, now), Err(Unsigned::Mismatch));
        assert_eq!(check(Some("1531420619"), Some(SIGNATURE), BODY, now), Err(Unsigned::Mismatch), "timestamp signed");
        let flipped = SIGNATURE.replace("a2114d", "a2114e");
        assert_eq!(check(Some(TIMESTAMP), Some(&flipped), BODY, now), Err(Unsigned::Mismatch));
        assert_eq!(check(Some(TIMESTAMP), Some(&SIGNATURE[3..]), BODY, now), Err(Unsigned::Mismatch), "no v0=");
        assert_eq!(check(Some(TIMESTAMP), Some("v0=zz"), BODY, now), Err(Unsigned::Mismatch));
        assert_eq!(check(Some(TIMESTAMP), Some(SIGNATURE), BODY, now + 301), Err(Unsigned::Stale(TIMESTAMP.into())));
        assert_eq!(check(Some(TIMESTAMP), Some(SIGNATURE), BODY, now - 301), Err(Unsigned::Stale(TIMESTAMP.into())));
        assert_eq!(check(Some(TIMESTAMP), Some(SIGNATURE), BODY, now + 300), Ok(()));
        assert_eq!(check(None, Some(SIGNATURE), BODY, now), Err(Unsigned::Missing));
        assert_eq!(check(Some(TIMESTAMP), None, BODY, now), Err(Unsigned::Missing));
        let other_secret =
            verify_slack_signature(b"another", Some(TIMESTAMP), Some(SIGNATURE), BODY.as_bytes(), at(now));
        assert_eq!(other_secret, Err(Unsigned::Mismatch));
    }

    fn form(payload: &serde_json::Value) -> String {
        let json = payload.to_string();
        let encoded: String = json
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("payload={encoded}")
    }

    #[test]
    fn a_click_names_its_user_verdict_and_deployment() {
        let value = button_value("-/eu-west-1/shop-prod/shop-production-api", "20261224T100000Z-evt-1");
        let click = |action: &str, value: &str| {
            form(&serde_json::json!({"type": "block_actions", "user": {"id": "U0123ABCD", "name": "ana"},
                "actions": [{"action_id": action, "value": value, "type": "button"}], "response_url": "https://hooks.slack.com/actions/T0/1/x"}))
        };
        assert_eq!(
            parse_click(&click(APPROVE_ACTION, &value)),
            Ok(Click {
                user: "U0123ABCD".into(),
                verdict: Verdict::Approve,
                target: "-/eu-west-1/shop-prod/shop-production-api".into(),
                deployment: "20261224T100000Z-evt-1".into(),
                response_url: Some("https://hooks.slack.com/actions/T0/1/x".into()),
            })
        );
        assert_eq!(parse_click(&click(REJECT_ACTION, "d t")).map(|c| c.verdict), Ok(Verdict::Reject));
        assert!(parse_click(&click("delete_everything", "d t")).is_err());
        assert!(parse_click(&click(APPROVE_ACTION, "no-target")).is_err());
        assert!(parse_click("payload=%7Bnot json").is_err());
        assert!(parse_click("token=x").is_err());
        let modal = form(&serde_json::json!({"type": "view_submission", "user": {"id": "U1"}, "actions": []}));
        assert!(parse_click(&modal).expect_err("not a click").contains("view_submission"));
    }
}
