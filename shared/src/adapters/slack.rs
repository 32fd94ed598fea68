//! Slack incoming webhooks, whose URLs live in a Secrets Manager secret and never in logs.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::approval::Reply;
use crate::digest::Digest;
use crate::notify::Notification;
use crate::ports::{Notifier, NotifyError};

/// Where the Slack webhook URLs come from: a secret holding a JSON object that maps a
/// route key (`default`, or a service's `notify`) to its webhook URL.
#[derive(Debug)]
pub struct SlackNotifier {
    secrets: aws_sdk_secretsmanager::Client,
    secret_id: String,
    http: reqwest::Client,
    /// Loaded on first use and kept for the life of the process.
    webhooks: OnceCell<HashMap<String, String>>,
}

/// Each Slack request is bounded: a notification never holds a deployment up.
const SLACK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one message may take in all, waits Slack asks for (HTTP 429) included.
const SLACK_BUDGET: Duration = Duration::from_secs(12);

/// How long to wait before trying a rate-limited message again: Slack's `Retry-After`
/// seconds (<https://api.slack.com/apis/rate-limits>), if they fit in what is left of the budget.
fn retry_after(header: Option<&str>, left: Duration) -> Option<Duration> {
    let after = Duration::from_secs(header.map_or(Ok(1), |h| h.trim().parse::<u64>()).ok()?);
    (after + SLACK_TIMEOUT <= left).then_some(after)
}

/// Replies to the clicks the approve function answers, through each click's `response_url`.
#[derive(Debug)]
pub struct SlackReplier {
    http: reqwest::Client,
    /// Where a response URL must point: Slack's hooks
    /// ([`crate::approval::SLACK_RESPONSE_ORIGIN`]), or the sandbox's stand-in.
    origin: String,
}

impl SlackReplier {
    pub fn new(origin: impl Into<String>) -> Self {
        // Short: the reply is posted before the function answers Slack, which waits 3 s.
        let timeout = Duration::from_millis(1500);
        // Never redirected away from the origin checked below.
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        let mut origin: String = origin.into();
        if !origin.ends_with('/') {
            origin.push('/'); // `https://hooks.slack.com` must not admit `https://hooks.slack.com.evil.example`
        }
        SlackReplier { http, origin }
    }

    /// Posts `reply`, unless its URL is not under the origin (never follows a URL elsewhere).
    pub async fn reply(&self, reply: &Reply) -> Result<(), String> {
        if !reply.url.starts_with(&self.origin) {
            return Err(format!("the click's response URL is not under {}", self.origin));
        }
        let sent = self.http.post(&reply.url).header("content-type", "application/json").body(reply.body.clone());
        // Errors are described without the URL: it lets anyone post to the clicker for 30 minutes.
        match sent.send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("Slack answered the reply with HTTP {}", r.status().as_u16())),
            Err(e) if e.is_timeout() => Err("the reply to Slack timed out".into()),
            Err(_) => Err("the reply to Slack failed to connect".into()),
        }
    }
}

/// Slack's signing secret, stored as the secret's whole string value.
pub async fn signing_secret(secrets: &aws_sdk_secretsmanager::Client, secret_id: &str) -> Result<String, String> {
    let out = secrets
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| format!("Slack signing secret: {}", super::aws::classify(&e).1))?;
    // The secret's value is never put in an error or a log line.
    match out.secret_string().map(str::trim) {
        Some(secret) if !secret.is_empty() => Ok(secret.to_string()),
        _ => Err("Slack signing secret is empty".into()),
    }
}

impl SlackNotifier {
    pub fn new(secrets: aws_sdk_secretsmanager::Client, secret_id: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(SLACK_TIMEOUT)
            .connect_timeout(SLACK_TIMEOUT)
            .build()
            .unwrap_or_default();
        SlackNotifier { secrets, secret_id: secret_id.into(), http, webhooks: OnceCell::new() }
    }

    async fn webhooks(&self) -> Result<&HashMap<String, String>, NotifyError> {
        self.webhooks
            .get_or_try_init(|| async {
                let out = self
                    .secrets
                    .get_secret_value()
                    .secret_id(&self.secret_id)
                    .send()
                    .await
                    .map_err(|e| NotifyError(format!("Slack webhook secret: {}", super::aws::classify(&e).1)))?;
                // The secret's value is never put in an error or a log line.
                serde_json::from_str(out.secret_string().unwrap_or_default())
                    .map_err(|_| NotifyError("Slack webhook secret is not a JSON object of route → URL".into()))
            })
            .await
    }
}

impl Notifier for SlackNotifier {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        if !n.slack {
            return Ok(()); // the environment's filter keeps routine messages off Slack
        }
        self.post(n.route.as_deref().unwrap_or("default"), n.slack().to_string()).await
    }

    async fn digest(&self, digest: &Digest) -> Result<(), NotifyError> {
        self.post(crate::digest::ROUTE, digest.slack().to_string()).await
    }
}

impl SlackNotifier {
    /// Posts `body` to `route`'s webhook (or `default`'s), within [`SLACK_BUDGET`].
    async fn post(&self, route: &str, body: String) -> Result<(), NotifyError> {
        let webhooks = self.webhooks().await?;
        let Some(url) = webhooks.get(route).or_else(|| webhooks.get("default")) else {
            return Err(NotifyError(format!("no Slack webhook for route {route:?} and no default")));
        };
        let started = std::time::Instant::now();
        let mut last = String::new();
        let (mut wait, mut failures) = (Duration::ZERO, 0);
        // A failure (5xx, timeout) is retried once; a rate limit as long as the budget allows.
        for attempt in 0..3 {
            if failures == 2 {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(wait.max(Duration::from_millis(300))).await;
            }
            let sent = self.http.post(url).header("content-type", "application/json").body(body.clone()).send().await;
            let limited = sent.as_ref().is_ok_and(|r| r.status().as_u16() == 429);
            // Errors are described without the URL: it is a credential.
            last = match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) if r.status().as_u16() == 429 => {
                    let asked = r.headers().get("retry-after").and_then(|v| v.to_str().ok());
                    match retry_after(asked, SLACK_BUDGET.saturating_sub(started.elapsed())) {
                        Some(after) => wait = after,
                        None => {
                            return Err(NotifyError(format!(
                                "Slack ({route}) is rate limiting beyond the time budget"
                            )));
                        }
                    }
                    "HTTP 429".to_string()
                }
                Ok(r) if r.status().is_client_error() => {
                    return Err(NotifyError(format!(
                        "Slack ({route}) refused the message: HTTP {}",
                        r.status().as_u16()
                    )));
                }
                Ok(r) => format!("HTTP {}", r.status().as_u16()),
                Err(e) if e.is_timeout() => "timed out".to_string(),
                Err(_) => "connection failed".to_string(),
            };
            if !limited {
                (wait, failures) = (Duration::ZERO, failures + 1);
            }
        }
        Err(NotifyError(format!("Slack ({route}): {last}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reply_goes_only_to_a_response_url_under_slacks_origin() {
        let replier = SlackReplier::new(crate::approval::SLACK_RESPONSE_ORIGIN);
        for url in ["http://169.254.169.254/latest/meta-data", "https://hooks.slack.com.evil.example/x"] {
            let reply = Reply { url: url.into(), body: "{}".into() };
            let refused = replier.reply(&reply).await.expect_err(url);
            assert!(refused.contains("not under https://hooks.slack.com/") && !refused.contains(url), "{refused}");
        }
    }

    #[test]
    fn a_rate_limited_message_waits_as_slack_asks_within_the_budget_only() {
        let left = Duration::from_secs(10);
        assert_eq!(retry_after(Some("2"), left), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(None, left), Some(Duration::from_secs(1)), "no header: a second");
        assert_eq!(retry_after(Some("30"), left), None, "past the budget: give up");
        assert_eq!(retry_after(Some("soon"), left), None);
        assert_eq!(retry_after(Some("2"), Duration::from_secs(4)), None, "no time left for the request itself");
    }
}
