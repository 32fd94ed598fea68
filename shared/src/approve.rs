//! The approve function's handler: a click on Approve or Reject in Slack reaches it through a
//! Lambda function URL. It proves the request is Slack's, that the clicker may decide, records
//! the decision in the ledger and announces it on the bus; the deploy function carries it out.
//! `ferry approve` and `ferry reject` record decisions through [`Approver::decide`] too.
//!
//! It never errors: every request gets an HTTP answer, and anything not proven changes nothing.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::approval::{Reply, Verdict, parse_click, verify_slack_signature};
use crate::config::Config;
use crate::model::{Deployment, State};
use crate::ports::{Approved, Clock, EventBus, Ledger};

/// The approve handler and the ports it works through.
#[derive(Debug)]
pub struct Approver<'a, L, B, C> {
    pub config: &'a Config,
    pub ledger: &'a L,
    pub bus: &'a B,
    pub clock: &'a C,
    /// Slack's signing secret (from Secrets Manager).
    pub signing_secret: &'a [u8],
}

/// The function URL's answer (its response format: a status, headers and a body).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Answer {
    #[serde(rename = "statusCode")]
    pub status: u16,
    pub headers: Value,
    pub body: String,
    /// What to post to the click's `response_url` (Slack shows a click's answer body to nobody).
    #[serde(skip)]
    pub reply: Option<Reply>,
}

impl Answer {
    fn new(status: u16, text: &str) -> Answer {
        // Shown to the clicker only (Slack's ephemeral response), never posted to the channel.
        Answer { status, headers: json!({"content-type": "application/json"}), body: ephemeral(text), reply: None }
    }

    /// The answer to a click, also posted to its `response_url` when it has one.
    fn to_click(status: u16, text: &str, response_url: Option<String>) -> Answer {
        let reply = response_url.map(|url| Reply { url, body: ephemeral(text) });
        Answer { reply, ..Answer::new(status, text) }
    }
}

fn ephemeral(text: &str) -> String {
    json!({"response_type": "ephemeral", "replace_original": false, "text": text}).to_string()
}

/// What a decision came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// Enough approvals: the push deploys now.
    Approved,
    /// Noted; more approvals are needed (these so far, of `required`).
    Counted {
        approvers: Vec<String>,
        required: usize,
    },
    Rejected,
    /// The push no longer awaits a decision: it is in this state.
    Already(State),
}

/// Why a decision was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no such deployment: {0}")]
    NotFound(String),
    #[error("{0} does not need approval")]
    NoApproval(String),
    #[error("{by} is not an approver of {deployment}")]
    NotAnApprover { by: String, deployment: String },
    #[error("{0} was not decided on in time: its approval expired")]
    Expired(String),
    #[error("the ledger or the bus failed: {0}")]
    Unavailable(String),
}

/// How long after an approval a click on Approve announces it again, if it is still not deployed.
const REANNOUNCE: chrono::Duration = chrono::Duration::minutes(1);

#[derive(Deserialize)]
struct UrlRequest {
    #[serde(default)]
    headers: std::collections::HashMap<String, String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default, rename = "isBase64Encoded")]
    is_base64_encoded: bool,
}

impl<L: Ledger, B: EventBus, C: Clock> Approver<'_, L, B, C> {
    /// Answers one function URL request (Slack's interactivity request).
    pub async fn handle(&self, request: Value) -> Answer {
        let Ok(request) = serde_json::from_value::<UrlRequest>(request) else {
            warn!("not a function URL request");
            return Answer::new(400, "not a function URL request");
        };
        let raw = request.body.unwrap_or_default();
        let body = if request.is_base64_encoded {
            match aws_smithy_types::base64::decode(&raw) {
                Ok(bytes) => bytes,
                Err(_) => return Answer::new(400, "the body is not base64"),
            }
        } else {
            raw.into_bytes()
        };
        // Function URLs pass header names in lower case.
        let header = |name: &str| request.headers.get(name).map(String::as_str);
        let signed = verify_slack_signature(
            self.signing_secret,
            header("x-slack-request-timestamp"),
            header("x-slack-signature"),
            &body,
            self.clock.now(),
        );
        if let Err(why) = signed {
            warn!(reason = %why, "request refused: not signed by Slack");
            return Answer::new(401, "not signed by Slack");
        }
        let click = match std::str::from_utf8(&body).map_err(|e| e.to_string()).and_then(parse_click) {
            Ok(click) => click,
            Err(why) => {
                warn!(reason = %why, "signed request that is not a click on Ferry's buttons");
                return Answer::new(400, "not a click on Ferry's buttons");
            }
        };
        match self.decide(&click.target, &click.deployment, &click.user, click.verdict, true, None).await {
            Ok(decided) => Answer::to_click(200, &said(&decided, &click.deployment), click.response_url),
            Err(refused) => {
                warn!(by = %click.user, deployment = %click.deployment, reason = %refused, "decision refused");
                let status = match refused {
                    Refused::NotAnApprover { .. } => 403,
                    Refused::NotFound(_) => 404,
                    Refused::NoApproval(_) => 409,
                    Refused::Expired(_) => 410,
                    Refused::Unavailable(_) => 503,
                };
                Answer::to_click(status, &refused.to_string(), click.response_url)
            }
        }
    }

    /// Records `by`'s verdict on deployment `id` of the target keyed `target`, and announces
    /// it once it decides the push. `listed_only`: `by` must be one of the approvers (a Slack
    /// click); an operator at the CLI is trusted by their AWS permissions instead.
    pub async fn decide(
        &self,
        target: &str,
        id: &str,
        by: &str,
        verdict: Verdict,
        listed_only: bool,
        reason: Option<&str>,
    ) -> Result<Decided, Refused> {
        let unavailable = |e: &dyn std::fmt::Display| Refused::Unavailable(e.to_string());
        let Some(target) = crate::plan::target_by_key(self.config, target) else {
            return Err(Refused::NotFound(id.to_string()));
        };
        let Some(d) = self.ledger.deployment(&target, id).await.map_err(|e| unavailable(&e))? else {
            return Err(Refused::NotFound(id.to_string()));
        };
        let Some(rule) = self.config.approval_for(&d.target, &d.repository) else {
            return Err(Refused::NoApproval(id.to_string()));
        };
        if listed_only && !rule.approvers.iter().any(|a| a == by) {
            return Err(Refused::NotAnApprover { by: by.to_string(), deployment: id.to_string() });
        }
        let now = self.clock.now();
        // Recorded REJECTED by reconciliation; refused here at once.
        if d.state == State::AwaitingApproval && d.created_at + rule.timeout <= now {
            return Err(Refused::Expired(id.to_string()));
        }
        // Approved a while ago and still not deployed, nor being deployed: its announcement may
        // be lost, so it is made again (a click racing the approval is told it is decided).
        let reannounce = matches!(verdict, Verdict::Approve)
            && d.state == State::Pending
            && d.approval.is_some()
            && d.updated_at + REANNOUNCE <= now
            && !self.deploying(&d, now).await.map_err(|e| unavailable(&e))?;
        let decided = match verdict {
            Verdict::Approve if reannounce => Decided::Approved,
            Verdict::Approve => {
                match self.ledger.approve(&d, by, rule.required, now).await.map_err(|e| unavailable(&e))? {
                    Approved::Approved => Decided::Approved,
                    Approved::Counted(approvers) => Decided::Counted { approvers, required: rule.required },
                    Approved::Decided(state) => Decided::Already(state),
                }
            }
            Verdict::Reject => self.reject(&d, by, reason, now).await.map_err(|e| unavailable(&e))?,
        };
        info!(deployment = %d.id, target = %d.target, by = %by, verdict = ?verdict, decided = ?decided, "decision");
        if matches!(decided, Decided::Approved | Decided::Rejected) {
            // Lost, an approved push is still deployed: reconciliation finds it PENDING past the lease.
            self.bus.decided(&d, verdict, by).await.map_err(|e| unavailable(&e))?;
        }
        Ok(decided)
    }

    /// Whether a deploy attempt holds `d`'s target for it now.
    async fn deploying(&self, d: &Deployment, now: DateTime<Utc>) -> Result<bool, crate::ports::LedgerError> {
        let head = self.ledger.head(&d.target).await?;
        Ok(head.lock.is_some_and(|l| l.deployment == d.id && l.until > now))
    }

    async fn reject(
        &self,
        d: &Deployment,
        by: &str,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Decided, crate::ports::LedgerError> {
        if d.state != State::AwaitingApproval {
            return Ok(Decided::Already(d.state));
        }
        let mut rejected = d.clone();
        rejected.state = State::Rejected;
        rejected.reason = Some(match reason {
            Some(why) => format!("rejected by {by}: {why}"),
            None => format!("rejected by {by}"),
        });
        rejected.updated_at = now;
        if self.ledger.transition(&rejected, &[State::AwaitingApproval], crate::ports::HeadChange::None).await? {
            return Ok(Decided::Rejected);
        }
        let state = self.ledger.deployment(&d.target, &d.id).await?.map_or(d.state, |r| r.state);
        Ok(Decided::Already(state))
    }
}

/// What the clicker is told.
fn said(decided: &Decided, id: &str) -> String {
    match decided {
        Decided::Approved => format!("Approved: deployment {id} goes ahead."),
        Decided::Counted { approvers, required } => {
            format!("Approval noted ({} of {required}): deployment {id} waits for more.", approvers.len())
        }
        Decided::Rejected => format!("Rejected: deployment {id} will not deploy."),
        Decided::Already(state) => format!("Deployment {id} is already decided ({state})."),
    }
}
