//! EventBridge events Ferry receives, parsed strictly enough to trust and loosely
//! enough that the fields AWS adds over time do not break anything.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::Deserialize;
use serde_json::Value;

use crate::model::Push;

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

/// What the deploy function is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployEvent {
    /// A successful, tagged push to ECR.
    Push(Push),
    /// The reconciliation schedule fired (an EventBridge "Scheduled Event" in `account`):
    /// look in ECR for pushes whose events never came.
    Reconcile { account: String },
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

/// The source and detail-type of EventBridge's own scheduled events (a rule with a schedule).
pub const SCHEDULED_SOURCE: &str = "aws.events";
pub const SCHEDULED_EVENT: &str = "Scheduled Event";

fn envelope(event: Value) -> Result<EventBridgeEvent<Value>, MalformedEvent> {
    serde_json::from_value(event).map_err(|e| MalformedEvent(format!("not an EventBridge event: {e}")))
}

fn unexpected(envelope: &EventBridgeEvent<Value>) -> String {
    format!("unexpected event (source {:?}, detail-type {:?})", envelope.source, envelope.detail_type)
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
    // arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/SERVICE
    let arn = envelope
        .resources
        .unwrap_or_default()
        .into_iter()
        .find(|r| r.contains(":service/"))
        .ok_or_else(|| MalformedEvent("no service ARN in resources".into()))?;
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let (region, account, resource) = match parts.as_slice() {
        ["arn", _, "ecs", region, account, resource] => (*region, *account, *resource),
        _ => return Err(MalformedEvent(format!("{arn:?} is not an ECS service ARN"))),
    };
    // `service/CLUSTER/SERVICE`, or the old format `service/SERVICE`, which names no cluster
    // (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-account-settings.html).
    let (cluster, service) = match resource.split('/').collect::<Vec<_>>().as_slice() {
        ["service", cluster, service] if !cluster.is_empty() && !service.is_empty() => (*cluster, *service),
        ["service", service] if !service.is_empty() => ("", *service),
        _ => return Err(MalformedEvent(format!("{arn:?} does not name a service"))),
    };
    let deployment_id = detail
        .deployment_id
        .filter(|d| !d.is_empty())
        .ok_or_else(|| MalformedEvent("missing detail.deploymentId".into()))?;
    Ok(Received::Act(EcsDeploymentEvent {
        event_id: envelope.id.unwrap_or_default(),
        kind,
        deployment_id,
        reason: detail.reason.unwrap_or_default(),
        account: account.to_string(),
        region: region.to_string(),
        cluster: cluster.to_string(),
        service: service.to_string(),
        at: envelope.time.ok_or_else(|| MalformedEvent("missing time".into()))?,
    }))
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
}

/// Parses an event addressed to the verify function: an ECS deployment state change, or
/// its sweep schedule.
pub fn parse_verify_event(event: Value) -> Result<Received<VerifyEvent>, MalformedEvent> {
    let scheduled = event.get("source").and_then(Value::as_str) == Some(SCHEDULED_SOURCE)
        && event.get("detail-type").and_then(Value::as_str) == Some(SCHEDULED_EVENT);
    if scheduled {
        let account = envelope(event)?.account.filter(|a| !a.is_empty());
        let account = account.ok_or_else(|| MalformedEvent("missing account".into()))?;
        return Ok(Received::Act(VerifyEvent::Sweep { account }));
    }
    Ok(match parse_ecs_event(event)? {
        Received::Act(ev) => Received::Act(VerifyEvent::Ecs(ev)),
        Received::Ignored(why) => Received::Ignored(why),
        Received::Rejected(why) => Received::Rejected(why),
    })
}

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

/// The `source` of every event Ferry puts on the bus.
pub const EVENT_SOURCE: &str = "ferry";
/// The detail-type of verify's announcement of a failed deployment (source `ferry`).
pub const DEPLOYMENT_FAILED: &str = "Deployment Failed";
/// The detail-type of an operator's rollback request (source `ferry`).
pub const ROLLBACK_REQUESTED: &str = "Rollback Requested";

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

/// `sha256:<hex>` (and the other algorithms OCI allows).
fn is_digest(s: &str) -> bool {
    s.split_once(':').is_some_and(|(algorithm, hex)| {
        !algorithm.is_empty()
            && algorithm.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && (32..=128).contains(&hex.len())
            && hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Value {
        crate::testing::sample_event(name)
    }

    #[test]
    fn a_successful_push_is_parsed() {
        let Received::Act(DeployEvent::Push(push)) =
            parse_deploy_event(sample("ecr-push-staging.json")).expect("parse")
        else {
            panic!("not a push");
        };
        assert_eq!(push.event_id, "13cde686-328b-6117-af20-0e5566167482");
        assert_eq!(push.repository, "shop/api");
        assert_eq!(push.tag, "staging-1a2b3c4d");
        assert_eq!(push.pushed_at.to_rfc3339(), "2026-11-16T01:54:34+00:00");
        assert_eq!(
            push.image(),
            "123456789012.dkr.ecr.ap-southeast-1.amazonaws.com/shop/api@sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234"
        );
    }

    #[test]
    fn everything_but_a_tagged_successful_push_is_ignored_rejected_or_malformed() {
        let ignored = |v| matches!(parse_deploy_event(v), Ok(Received::Ignored(_)));
        assert!(ignored(sample("ecr-push-failed.json")));
        assert!(ignored(sample("ecr-delete.json")));
        let mut untagged = sample("ecr-push-staging.json");
        untagged["detail"].as_object_mut().expect("detail").remove("image-tag");
        assert!(ignored(untagged));
        // The push rule never sends another source: such an event is rejected, by name.
        let rejected = parse_deploy_event(sample("ecs-deployment-completed.json")).expect("parse");
        assert!(
            matches!(&rejected, Received::Rejected(why) if why.contains("aws.ecs") && why.contains("ECS Deployment State Change")),
            "{rejected:?}"
        );
        let mut spoofed = sample("ecr-push-staging.json");
        spoofed["source"] = "my.app".into();
        assert!(matches!(parse_deploy_event(spoofed), Ok(Received::Rejected(_))));

        let malformed = |v: Value| parse_deploy_event(v).expect_err("malformed").0;
        assert!(malformed(serde_json::json!({"hello": "world"})).contains("not an EventBridge event"));
        assert!(malformed(serde_json::json!([1, 2])).contains("not an EventBridge event"));
        let mut no_digest = sample("ecr-push-staging.json");
        no_digest["detail"].as_object_mut().expect("detail").remove("image-digest");
        assert!(malformed(no_digest).contains("image-digest"));
        let mut bad_digest = sample("ecr-push-staging.json");
        bad_digest["detail"]["image-digest"] = "latest".into();
        assert!(malformed(bad_digest).contains("not an image digest"));
        let mut no_id = sample("ecr-push-staging.json");
        no_id.as_object_mut().expect("event").remove("id");
        assert!(malformed(no_id).contains("missing id"));
    }

    #[test]
    fn the_reconciliation_schedule_is_parsed() {
        let scheduled = serde_json::json!({"version": "0", "id": "s1", "detail-type": "Scheduled Event",
            "source": "aws.events", "account": "123456789012", "time": "2026-11-16T02:00:00Z",
            "region": "eu-west-1", "resources": ["arn:aws:events:eu-west-1:123456789012:rule/ferry-reconcile"],
            "detail": {}});
        assert_eq!(
            parse_deploy_event(scheduled.clone()),
            Ok(Received::Act(DeployEvent::Reconcile { account: "123456789012".into() }))
        );
        let mut anonymous = scheduled;
        anonymous.as_object_mut().expect("event").remove("account");
        assert!(parse_deploy_event(anonymous).is_err());
    }

    #[test]
    fn ecs_deployment_events_are_parsed() {
        let parse = |name| match parse_ecs_event(sample(name)).expect("parse") {
            Received::Act(ev) => ev,
            other => panic!("not an ECS event: {other:?}"),
        };
        let completed = parse("ecs-deployment-completed.json");
        assert_eq!(completed.kind, EcsEventKind::Completed);
        assert_eq!(completed.deployment_id, "ecs-svc/1234567890123456789");
        assert_eq!(
            (
                completed.account.as_str(),
                completed.region.as_str(),
                completed.cluster.as_str(),
                completed.service.as_str()
            ),
            ("123456789012", "ap-southeast-1", "shop-staging", "shop-staging-api")
        );
        assert_eq!(parse("ecs-deployment-in-progress.json").kind, EcsEventKind::InProgress);
        let failed = parse("ecs-deployment-failed.json");
        assert_eq!(
            (failed.kind, failed.reason.as_str()),
            (EcsEventKind::Failed, "ECS deployment circuit breaker: task failed to start.")
        );
        let rollback = parse("ecs-deployment-circuit-breaker-rollback.json");
        assert_eq!(
            (rollback.kind, rollback.deployment_id.as_str()),
            (EcsEventKind::InProgress, "ecs-svc/9876543210987654321")
        );

        assert!(matches!(
            parse_ecs_event(sample("ecs-service-action-placement-failure.json")),
            Ok(Received::Rejected(_))
        ));
        assert!(matches!(parse_ecs_event(sample("ecr-push-staging.json")), Ok(Received::Rejected(_))));
        let mut unknown_kind = sample("ecs-deployment-completed.json");
        unknown_kind["detail"]["eventName"] = "SERVICE_DEPLOYMENT_PAUSED".into();
        assert!(matches!(parse_ecs_event(unknown_kind), Ok(Received::Ignored(_))));
        let mut no_arn = sample("ecs-deployment-completed.json");
        no_arn["resources"] = serde_json::json!([]);
        assert!(parse_ecs_event(no_arn).is_err());
        let mut bad_arn = sample("ecs-deployment-completed.json");
        bad_arn["resources"] = serde_json::json!(["arn:aws:ecs:eu-west-1:1:service/a/b/c"]);
        assert!(parse_ecs_event(bad_arn).is_err());
        // The old format names the service alone.
        let mut old_arn = sample("ecs-deployment-completed.json");
        old_arn["resources"] = serde_json::json!(["arn:aws:ecs:eu-west-1:111122223333:service/only-a-name"]);
        let Ok(Received::Act(ev)) = parse_ecs_event(old_arn) else { panic!("an old-format ARN") };
        assert_eq!((ev.cluster.as_str(), ev.service.as_str(), ev.region.as_str()), ("", "only-a-name", "eu-west-1"));
    }

    #[test]
    fn rollback_triggers_are_parsed() {
        let alarm = parse_rollback_trigger(sample("cloudwatch-alarm-state-change.json")).expect("parse");
        assert!(
            matches!(&alarm, Received::Act(RollbackTrigger::Alarm { name, region, .. }) if name == "shop-staging-api-5xx" && region == "ap-southeast-1"),
            "{alarm:?}"
        );
        // When CloudWatch changed the state, to the millisecond, not when the event was sent.
        let mut late = sample("cloudwatch-alarm-state-change.json");
        late["time"] = "2026-11-16T03:00:00Z".into();
        late["detail"]["state"]["timestamp"] = "2026-11-16T02:09:30.250+0000".into();
        let Ok(Received::Act(RollbackTrigger::Alarm { at, .. })) = parse_rollback_trigger(late) else { panic!() };
        assert_eq!(at.to_rfc3339(), "2026-11-16T02:09:30.250+00:00");
        let mut again = sample("cloudwatch-alarm-state-change.json");
        again["detail"]["previousState"]["value"] = "ALARM".into();
        assert!(matches!(parse_rollback_trigger(again), Ok(Received::Ignored(_))), "not a change into ALARM");
        let mut ok = sample("cloudwatch-alarm-state-change.json");
        ok["detail"]["state"]["value"] = "OK".into();
        assert!(matches!(parse_rollback_trigger(ok), Ok(Received::Ignored(_))), "only ALARM rolls back");
        assert!(matches!(
            parse_rollback_trigger(sample("ecs-deployment-failed.json")),
            Ok(Received::Act(RollbackTrigger::EcsFailed(_)))
        ));
        assert!(matches!(parse_rollback_trigger(sample("ecs-deployment-completed.json")), Ok(Received::Ignored(_))));
        assert!(matches!(parse_rollback_trigger(sample("ecr-push-staging.json")), Ok(Received::Rejected(_))));
        let request = serde_json::json!({"version": "0", "id": "r1", "detail-type": "Rollback Requested", "source": "ferry",
            "account": "123456789012", "time": "2026-11-16T02:00:00Z", "region": "eu-west-1", "resources": [],
            "detail": {"environment": "staging", "service": "shop-staging-api", "requested_by": "alice"}});
        assert_eq!(
            parse_rollback_trigger(request.clone()),
            Ok(Received::Act(RollbackTrigger::Requested {
                environment: "staging".into(),
                service: "shop-staging-api".into(),
                region: None,
                to: None,
                by: "alice".into(),
                from: "123456789012".into(),
            }))
        );
        let mut bad = request;
        bad["detail"] = serde_json::json!({"service": 3});
        assert!(parse_rollback_trigger(bad).is_err());
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let mut event = sample("ecr-push-staging.json");
        event["detail"]["artifact-media-type"] = "application/vnd.oci.image.manifest.v1+json".into();
        event["new-top-level"] = serde_json::json!({"x": 1});
        assert!(matches!(parse_deploy_event(event), Ok(Received::Act(DeployEvent::Push(_)))));
    }
}
