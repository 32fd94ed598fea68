//! The rollback function's triggers: Ferry's own events, ECS's failed deployments, alarms.

use serde::Deserialize;
use serde_json::Value;

use super::{
    DEPLOYMENT_FAILED, EVENT_SOURCE, EcsDeploymentEvent, EcsEventKind, MalformedEvent, ROLLBACK_REQUESTED, Received,
    envelope, parse_ecs_event, unexpected,
};

/// Why the rollback function was invoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackTrigger {
    /// Ferry's verify function announced a failed deployment; `from` is the account that
    /// sent the event (Ferry's own, or it is rejected).
    DeploymentFailed {
        deployment: String,
        account: Option<String>,
        region: String,
        cluster: String,
        service: String,
        from: String,
    },
    /// ECS failed a deployment.
    EcsFailed(EcsDeploymentEvent),
    /// A CloudWatch alarm went into ALARM, at `at` (when CloudWatch changed its state).
    Alarm { name: String, account: String, region: String, reason: String, at: chrono::DateTime<chrono::Utc> },
    /// An operator asked (the CLI's `ferry rollback`), from account `from`.
    Requested {
        environment: String,
        service: String,
        region: Option<String>,
        to: Option<String>,
        by: String,
        from: String,
    },
}

#[derive(Deserialize)]
struct FailedDetail {
    deployment: String,
    account: Option<String>,
    region: String,
    cluster: String,
    service: String,
}

#[derive(Deserialize)]
struct AlarmDetail {
    #[serde(rename = "alarmName")]
    alarm_name: String,
    state: AlarmState,
    #[serde(rename = "previousState")]
    previous_state: Option<AlarmState>,
}

#[derive(Deserialize)]
struct AlarmState {
    value: String,
    #[serde(default)]
    reason: String,
    /// As CloudWatch writes it: `2026-11-16T02:10:00.000+0000`.
    timestamp: Option<String>,
}

/// CloudWatch's state timestamp (`2026-11-16T02:10:00.000+0000`, or RFC 3339).
fn alarm_time(timestamp: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_str(timestamp, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(timestamp))
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

#[derive(Deserialize)]
struct RequestDetail {
    environment: String,
    service: String,
    region: Option<String>,
    to: Option<String>,
    requested_by: Option<String>,
}

/// Parses an event addressed to the rollback function.
pub fn parse_rollback_trigger(event: Value) -> Result<Received<RollbackTrigger>, MalformedEvent> {
    let envelope = envelope(event.clone())?;
    let detail = |what: &str| MalformedEvent(format!("{what} detail"));
    let from = envelope.account.clone().unwrap_or_default();
    match (envelope.source.as_str(), envelope.detail_type.as_str()) {
        (EVENT_SOURCE, DEPLOYMENT_FAILED) => {
            let d: FailedDetail =
                serde_json::from_value(envelope.detail).map_err(|e| detail(&format!("Deployment Failed: {e};")))?;
            Ok(Received::Act(RollbackTrigger::DeploymentFailed {
                deployment: d.deployment,
                account: d.account,
                region: d.region,
                cluster: d.cluster,
                service: d.service,
                from,
            }))
        }
        (EVENT_SOURCE, ROLLBACK_REQUESTED) => {
            let d: RequestDetail =
                serde_json::from_value(envelope.detail).map_err(|e| detail(&format!("Rollback Requested: {e};")))?;
            Ok(Received::Act(RollbackTrigger::Requested {
                environment: d.environment,
                service: d.service,
                region: d.region,
                to: d.to,
                by: d.requested_by.unwrap_or_else(|| "an operator".into()),
                from,
            }))
        }
        ("aws.cloudwatch", "CloudWatch Alarm State Change") => {
            let d: AlarmDetail =
                serde_json::from_value(envelope.detail).map_err(|e| detail(&format!("alarm: {e};")))?;
            if d.state.value != "ALARM" {
                return Ok(Received::Ignored(format!("alarm {} went to {}, not ALARM", d.alarm_name, d.state.value)));
            }
            if d.previous_state.as_ref().is_some_and(|p| p.value == "ALARM") {
                return Ok(Received::Ignored(format!("alarm {} was in ALARM already", d.alarm_name)));
            }
            let at = d.state.timestamp.as_deref().and_then(alarm_time).or(envelope.time);
            let at = at.ok_or_else(|| MalformedEvent("an alarm state change without a time".into()))?;
            Ok(Received::Act(RollbackTrigger::Alarm {
                name: d.alarm_name,
                account: from,
                region: envelope.region.unwrap_or_default(),
                reason: d.state.reason,
                at,
            }))
        }
        ("aws.ecs", _) => Ok(match parse_ecs_event(event)? {
            Received::Act(ev) if ev.kind == EcsEventKind::Failed => Received::Act(RollbackTrigger::EcsFailed(ev)),
            Received::Act(ev) => Received::Ignored(format!("ECS deployment {} did not fail", ev.deployment_id)),
            Received::Ignored(why) => Received::Ignored(why),
            Received::Rejected(why) => Received::Rejected(why),
        }),
        _ => Ok(Received::Rejected(unexpected(&envelope))),
    }
}
