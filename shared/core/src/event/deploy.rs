//! The deploy function's events: a push to ECR, and the reconciliation schedule.

use serde::Deserialize;
use serde_json::Value;

use super::{
    DEPLOYMENT_APPROVED, DEPLOYMENT_REJECTED, EVENT_SOURCE, MalformedEvent, Received, SCHEDULED_EVENT,
    SCHEDULED_SOURCE, envelope, unexpected,
};
use crate::approval::Verdict;
use crate::model::Push;

/// What the deploy function is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployEvent {
    /// A successful, tagged push to ECR.
    Push(Push),
    /// The reconciliation schedule fired (an EventBridge "Scheduled Event" in `account`):
    /// look in ECR for pushes whose events never came.
    Reconcile { account: String },
    /// An approver decided on a push awaiting approval (the approve function's event, or
    /// `ferry approve`/`ferry reject`).
    Decided(Decision),
}

/// A decision on a push awaiting approval, as its event carries it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Decision {
    pub deployment: String,
    /// The target's key.
    pub target: String,
    pub by: String,
    #[serde(skip, default = "approve")]
    pub verdict: Verdict,
    /// The account that sent the event (Ferry's own, or it is rejected).
    #[serde(skip)]
    pub account: String,
}

fn approve() -> Verdict {
    Verdict::Approve
}

#[derive(Deserialize)]
struct EcrDetail {
    #[serde(rename = "action-type")]
    action_type: Option<String>,
    result: Option<String>,
    #[serde(rename = "repository-name")]
    repository_name: Option<String>,
    #[serde(rename = "image-digest")]
    image_digest: Option<String>,
    #[serde(rename = "image-tag")]
    image_tag: Option<String>,
}

/// Parses an EventBridge event addressed to the deploy function.
pub fn parse_deploy_event(event: Value) -> Result<Received<DeployEvent>, MalformedEvent> {
    let envelope = envelope(event)?;
    match (envelope.source.as_str(), envelope.detail_type.as_str()) {
        ("aws.ecr", "ECR Image Action") => {}
        (SCHEDULED_SOURCE, SCHEDULED_EVENT) => {
            let account = envelope.account.filter(|a| !a.is_empty());
            let account = account.ok_or_else(|| MalformedEvent("missing account".into()))?;
            return Ok(Received::Act(DeployEvent::Reconcile { account }));
        }
        (EVENT_SOURCE, kind @ (DEPLOYMENT_APPROVED | DEPLOYMENT_REJECTED)) => {
            let verdict = if kind == DEPLOYMENT_APPROVED { Verdict::Approve } else { Verdict::Reject };
            let account = envelope.account.clone().filter(|a| !a.is_empty());
            let account = account.ok_or_else(|| MalformedEvent("missing account".into()))?;
            let decision: Decision =
                serde_json::from_value(envelope.detail).map_err(|e| MalformedEvent(format!("decision detail: {e}")))?;
            return Ok(Received::Act(DeployEvent::Decided(Decision { verdict, account, ..decision })));
        }
        _ => return Ok(Received::Rejected(unexpected(&envelope))),
    }
    let detail: EcrDetail =
        serde_json::from_value(envelope.detail).map_err(|e| MalformedEvent(format!("ECR detail: {e}")))?;
    let action = detail.action_type.unwrap_or_default();
    let result = detail.result.unwrap_or_default();
    if action != "PUSH" || result != "SUCCESS" {
        return Ok(Received::Ignored(format!("action {action:?} with result {result:?} is not a successful push")));
    }
    let Some(tag) = detail.image_tag.filter(|t| !t.is_empty()) else {
        return Ok(Received::Ignored("untagged push".into()));
    };
    let required = |field: Option<String>, name: &str| {
        field.filter(|v| !v.is_empty()).ok_or_else(|| MalformedEvent(format!("missing {name}")))
    };
    let digest = required(detail.image_digest, "detail.image-digest")?;
    if !is_digest(&digest) {
        return Err(MalformedEvent(format!("{digest:?} is not an image digest")));
    }
    Ok(Received::Act(DeployEvent::Push(Push {
        event_id: required(envelope.id, "id")?,
        registry_account: required(envelope.account, "account")?,
        registry_region: required(envelope.region, "region")?,
        repository: required(detail.repository_name, "detail.repository-name")?,
        tag,
        digest,
        pushed_at: envelope.time.ok_or_else(|| MalformedEvent("missing time".into()))?,
    })))
}

/// `sha256:<hex>` (and the other algorithms OCI allows).
fn is_digest(s: &str) -> bool {
    s.split_once(':').is_some_and(|(algorithm, hex)| {
        !algorithm.is_empty()
            && algorithm.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && (32..=128).contains(&hex.len())
            && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    })
}
