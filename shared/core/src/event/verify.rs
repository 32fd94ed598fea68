//! The verify function's events: ECS deployment state changes, the sweep schedule and the weekly digest's.

use serde::Deserialize;
use serde_json::Value;

use super::{
    EVENT_SOURCE, MalformedEvent, Received, SCHEDULED_EVENT, SCHEDULED_SOURCE, WEEKLY_DIGEST, envelope, unexpected,
};

/// What an "ECS Deployment State Change" event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcsEventKind {
    InProgress,
    Completed,
    Failed,
}

/// An "ECS Deployment State Change" event, in Ferry's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsDeploymentEvent {
    pub event_id: String,
    pub kind: EcsEventKind,
    pub deployment_id: String,
    pub reason: String,
    pub account: String,
    pub region: String,
    /// Empty when the service's ARN is in the old format, which names no cluster.
    pub cluster: String,
    pub service: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EcsDetail {
    event_name: Option<String>,
    deployment_id: Option<String>,
    reason: Option<String>,
}

/// Parses an event addressed to the verify function: an ECS deployment state change.
pub fn parse_ecs_event(event: Value) -> Result<Received<EcsDeploymentEvent>, MalformedEvent> {
    let envelope = envelope(event)?;
    if envelope.source != "aws.ecs" || envelope.detail_type != "ECS Deployment State Change" {
        return Ok(Received::Rejected(unexpected(&envelope)));
    }
    let detail: EcsDetail =
        serde_json::from_value(envelope.detail).map_err(|e| MalformedEvent(format!("ECS detail: {e}")))?;
    let kind = match detail.event_name.as_deref() {
        Some("SERVICE_DEPLOYMENT_IN_PROGRESS") => EcsEventKind::InProgress,
        Some("SERVICE_DEPLOYMENT_COMPLETED") => EcsEventKind::Completed,
        Some("SERVICE_DEPLOYMENT_FAILED") => EcsEventKind::Failed,
        other => return Ok(Received::Ignored(format!("ECS deployment event {other:?} is not one Ferry acts on"))),
    };
    let arn = envelope
        .resources
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.contains(":service/"))
        .ok_or_else(|| MalformedEvent("no service ARN in resources".into()))?;
    let (region, account, cluster, service) = service_arn(&arn)?;
    let deployment_id = detail
        .deployment_id
        .filter(|d| !d.is_empty())
        .ok_or_else(|| MalformedEvent("missing detail.deploymentId".into()))?;
    Ok(Received::Act(EcsDeploymentEvent {
        event_id: envelope.id.unwrap_or_default(),
        kind,
        deployment_id,
        reason: detail.reason.unwrap_or_default(),
        account,
        region,
        cluster,
        service,
        at: envelope.time.ok_or_else(|| MalformedEvent("missing time".into()))?,
    }))
}

/// The region, account, cluster and service an ECS service ARN names
/// (`arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/SERVICE`); the cluster is empty for the old
/// format `service/SERVICE`
/// (<https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-account-settings.html>).
pub fn service_arn(arn: &str) -> Result<(String, String, String, String), MalformedEvent> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let (region, account, resource) = match parts.as_slice() {
        ["arn", _, "ecs", region, account, resource] => (*region, *account, *resource),
        _ => return Err(MalformedEvent(format!("{arn:?} is not an ECS service ARN"))),
    };
    let (cluster, service) = match resource.split('/').collect::<Vec<_>>().as_slice() {
        ["service", cluster, service] if !cluster.is_empty() && !service.is_empty() => (*cluster, *service),
        ["service", service] if !service.is_empty() => ("", *service),
        _ => return Err(MalformedEvent(format!("{arn:?} does not name a service"))),
    };
    Ok((region.to_string(), account.to_string(), cluster.to_string(), service.to_string()))
}

/// What the verify function is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyEvent {
    Ecs(EcsDeploymentEvent),
    /// The sweep schedule fired (an EventBridge "Scheduled Event" in `account`): settle
    /// rollouts still open long after their last change (their ECS events were lost).
    Sweep {
        account: String,
    },
    /// The weekly digest's schedule fired (its constant input, source `ferry`, in `account`).
    Digest {
        account: String,
    },
}

/// Parses an event addressed to the verify function: an ECS deployment state change, or
/// its sweep schedule.
pub fn parse_verify_event(event: Value) -> Result<Received<VerifyEvent>, MalformedEvent> {
    let (source, kind) =
        (event.get("source").and_then(Value::as_str), event.get("detail-type").and_then(Value::as_str));
    let scheduled = source == Some(SCHEDULED_SOURCE) && kind == Some(SCHEDULED_EVENT);
    let digest = source == Some(EVENT_SOURCE) && kind == Some(WEEKLY_DIGEST);
    if scheduled || digest {
        let account = event.get("account").and_then(Value::as_str).filter(|a| !a.is_empty());
        let account = account.ok_or_else(|| MalformedEvent("missing account".into()))?.to_string();
        return Ok(Received::Act(if digest {
            VerifyEvent::Digest { account }
        } else {
            VerifyEvent::Sweep { account }
        }));
    }
    Ok(match parse_ecs_event(event)? {
        Received::Act(ev) => Received::Act(VerifyEvent::Ecs(ev)),
        Received::Ignored(why) => Received::Ignored(why),
        Received::Rejected(why) => Received::Rejected(why),
    })
}
