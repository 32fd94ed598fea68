//! EventBridge events Ferry receives, parsed strictly enough to trust and loosely
//! enough that the fields AWS adds over time do not break anything.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde_json::Value;

mod deploy;
mod rollback;
mod verify;

pub use deploy::{Decision, DeployEvent, parse_deploy_event};
pub use rollback::{RollbackTrigger, parse_rollback_trigger};
pub use verify::{EcsDeploymentEvent, EcsEventKind, VerifyEvent, parse_ecs_event, parse_verify_event, service_arn};

/// An event that cannot be what it claims to be. It is logged and acknowledged: a retry
/// would fail the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event: {0}")]
pub struct MalformedEvent(pub String);

/// What a function received: an event it acts on, one it has nothing to do with
/// (acknowledged and logged), or one its rules never send it (another source or kind:
/// rejected, and logged as a warning). Either way a retry would change nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received<T> {
    Act(T),
    Ignored(String),
    Rejected(String),
}

/// The source and detail-type of EventBridge's own scheduled events (a rule with a schedule).
pub const SCHEDULED_SOURCE: &str = "aws.events";
pub const SCHEDULED_EVENT: &str = "Scheduled Event";

fn envelope(event: Value) -> Result<EventBridgeEvent<Value>, MalformedEvent> {
    serde_json::from_value(event).map_err(|e| MalformedEvent(format!("not an EventBridge event: {e}")))
}

fn unexpected(envelope: &EventBridgeEvent<Value>) -> String {
    format!("unexpected event (source {:?}, detail-type {:?})", envelope.source, envelope.detail_type)
}

/// The `source` of every event Ferry puts on the bus.
pub const EVENT_SOURCE: &str = "ferry";
/// The detail-type of verify's announcement of a failed deployment (source `ferry`).
pub const DEPLOYMENT_FAILED: &str = "Deployment Failed";
/// The detail-type of an operator's rollback request (source `ferry`).
pub const ROLLBACK_REQUESTED: &str = "Rollback Requested";
/// The detail-types of an approver's decision on a push awaiting approval (source `ferry`).
pub const DEPLOYMENT_APPROVED: &str = "Deployment Approved";
pub const DEPLOYMENT_REJECTED: &str = "Deployment Rejected";
/// What the weekly digest's schedule sends the verify function (the rule's constant input).
pub const WEEKLY_DIGEST: &str = "Weekly Digest";

/// The detail of a decision event: the deployment, its target's key, who decided.
pub fn decision_detail(d: &crate::model::Deployment, by: &str) -> Value {
    serde_json::json!({"deployment": d.id, "target": d.target.key(), "environment": d.target.environment,
                       "service": d.target.service, "by": by})
}

/// The detail of a "Deployment Failed" event: the deployment's identity and why (read back
/// by [`parse_rollback_trigger`]).
pub fn failure_detail(d: &crate::model::Deployment) -> Value {
    serde_json::json!({
        "deployment": d.id,
        "environment": d.target.environment,
        "account": d.target.account,
        "region": d.target.region,
        "cluster": d.target.cluster,
        "service": d.target.service,
        "repository": d.repository,
        "tag": d.tag,
        "digest": d.digest,
        "ecs_deployment_id": d.ecs_deployment_id,
        "task_definition": d.task_definition,
        "previous_task_definition": d.previous_task_definition,
        "reason": d.reason,
    })
}

#[cfg(test)]
mod tests;
