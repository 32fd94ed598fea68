//! ECS's lifecycle hooks: how ECS asks Ferry whether a blue/green, linear or canary rollout may
//! go on, and what Ferry answers
//! (<https://docs.aws.amazon.com/AmazonECS/latest/developerguide/lambda-lifecycle-hooks.html>,
//! <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-lifecycle-hooks.html>).
//!
//! ECS invokes the verify function at each stage the service's `lifecycleHooks` name and waits
//! for `hookStatus`: SUCCEEDED goes on, FAILED (or an error, or no valid answer) rolls back to
//! blue, which is still serving, and IN_PROGRESS asks to be invoked again after `callBackDelay`
//! seconds. Ferry gates the stage after test traffic moved to green: green's test route must
//! pass the service's smoke test before any production traffic reaches it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::event::{MalformedEvent, service_arn};

/// The stage Ferry gates: green serves the test listener, blue all production traffic.
pub const POST_TEST_TRAFFIC_SHIFT: &str = "POST_TEST_TRAFFIC_SHIFT";

/// The stages at which green serves production traffic (after each linear or canary step,
/// and after the last): Ferry checks the service's alarms there.
pub const PRODUCTION_STAGES: [&str; 2] = ["PRODUCTION_TRAFFIC_SHIFT", "POST_PRODUCTION_TRAFFIC_SHIFT"];

/// How long ECS is asked to wait before invoking a hook again when Ferry cannot answer yet
/// (the ledger or ECS failed, or the deploy function has not recorded the rollout yet).
pub const RETRY_DELAY_SECONDS: u32 = 15;

/// One invocation of a lifecycle hook.
#[derive(Debug, Clone, PartialEq)]
pub struct HookCall {
    /// The hook's execution: the same across the IN_PROGRESS call-backs of one stage.
    pub execution_id: String,
    pub stage: String,
    pub account: String,
    pub region: String,
    /// Empty when the service's ARN is in the old format, which names no cluster.
    pub cluster: String,
    pub service: String,
    /// The service revision being deployed (green).
    pub target_revision: String,
    /// Service revision ARN → percent of production traffic, as ECS reports it.
    pub production_weights: Vec<(String, f64)>,
}

impl HookCall {
    /// The percent of production traffic the revision being deployed takes now.
    pub fn production_weight(&self) -> f64 {
        self.production_weights.iter().find(|(r, _)| *r == self.target_revision).map_or(0.0, |(_, w)| *w)
    }
}

/// Whether `payload` is a lifecycle hook invocation rather than an EventBridge event.
pub fn is_hook_call(payload: &Value) -> bool {
    payload.get("lifecycleStage").is_some() && payload.get("detail-type").is_none()
}

/// Parses a lifecycle hook invocation. The service and revisions are read from
/// `executionDetails`, or from the top level where an example payload puts them.
pub fn parse_hook_call(payload: &Value) -> Result<HookCall, MalformedEvent> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    let details = payload.get("executionDetails").filter(|d| d.is_object()).unwrap_or(payload);
    let stage =
        text(payload, "lifecycleStage").ok_or_else(|| MalformedEvent("a hook call with no lifecycleStage".into()))?;
    let arn = text(details, "serviceArn").ok_or_else(|| MalformedEvent("a hook call with no serviceArn".into()))?;
    let (region, account, cluster, service) = service_arn(&arn)?;
    let target_revision = text(details, "targetServiceRevisionArn")
        .ok_or_else(|| MalformedEvent("a hook call with no targetServiceRevisionArn".into()))?;
    let weights = details
        .get("productionTrafficWeights")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(r, w)| Some((r.clone(), w.as_f64()?))).collect())
        .unwrap_or_default();
    Ok(HookCall {
        execution_id: text(payload, "executionId").unwrap_or_default(),
        stage,
        account,
        region,
        cluster,
        service,
        target_revision,
        production_weights: weights,
    })
}

/// What a hook answers ECS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HookStatus {
    Succeeded,
    Failed,
    InProgress,
}

impl HookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HookStatus::Succeeded => "SUCCEEDED",
            HookStatus::Failed => "FAILED",
            HookStatus::InProgress => "IN_PROGRESS",
        }
    }

    pub fn parse(s: &str) -> Option<HookStatus> {
        [HookStatus::Succeeded, HookStatus::Failed, HookStatus::InProgress].into_iter().find(|h| h.as_str() == s)
    }

    /// Whether ECS acts on it (goes on, or rolls back): a decided hook is never decided again.
    pub fn is_final(self) -> bool {
        self != HookStatus::InProgress
    }
}

/// The answer, exactly as ECS reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HookAnswer {
    #[serde(rename = "hookStatus")]
    pub status: HookStatus,
    #[serde(rename = "callBackDelay", skip_serializing_if = "Option::is_none")]
    pub call_back_delay: Option<u32>,
}

impl HookAnswer {
    pub fn succeeded() -> HookAnswer {
        HookAnswer { status: HookStatus::Succeeded, call_back_delay: None }
    }

    pub fn failed() -> HookAnswer {
        HookAnswer { status: HookStatus::Failed, call_back_delay: None }
    }

    /// Asked again after `seconds`.
    pub fn again_in(seconds: u32) -> HookAnswer {
        HookAnswer { status: HookStatus::InProgress, call_back_delay: Some(seconds.max(1)) }
    }
}

/// A hook's answer as the deployment's record keeps it: one per stage, the latest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookRecord {
    pub stage: String,
    pub execution_id: String,
    pub status: HookStatus,
    /// Probes made so far in this execution.
    pub attempts: u32,
    /// What the probes showed.
    pub evidence: String,
    pub at: DateTime<Utc>,
}

impl HookRecord {
    /// The answer this record gives ECS: a final one as it is, IN_PROGRESS after `interval`.
    pub fn answer(&self, interval_seconds: u64) -> HookAnswer {
        match self.status {
            HookStatus::InProgress => HookAnswer::again_in(u32::try_from(interval_seconds).unwrap_or(u32::MAX)),
            status => HookAnswer { status, call_back_delay: None },
        }
    }
}

/// An alarm as CloudWatch shows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmState {
    pub name: String,
    pub in_alarm: bool,
    /// When it last changed state.
    pub since: Option<DateTime<Utc>>,
    pub reason: String,
}

/// Whether a rollout's alarms let it go on: `Err` names an alarm that went into ALARM after
/// the deployment started (one in ALARM from before is not its doing, as on the alarm path of
/// the rollback function); `Ok` says what was seen, including configured alarms CloudWatch
/// does not have.
pub fn alarms_verdict(configured: &[String], seen: &[AlarmState], started: DateTime<Utc>) -> Result<String, String> {
    let mut notes = Vec::new();
    for name in configured {
        match seen.iter().find(|a| a.name == *name) {
            None => notes.push(format!("{name}: not found")),
            Some(a) if a.in_alarm && a.since.is_none_or(|at| at >= started) => {
                let since = a.since.map(|at| format!(" since {}", at.to_rfc3339())).unwrap_or_default();
                return Err(format!("alarm {name} in ALARM{since}: {}", a.reason));
            }
            Some(a) if a.in_alarm => notes.push(format!("{name}: ALARM from before the deployment started")),
            Some(_) => notes.push(format!("{name}: not in ALARM")),
        }
    }
    Ok(notes.join("; "))
}

/// Why ECS failed a rollout: a lifecycle hook's FAILED, with what it saw, when one is on
/// record (ECS's own reason says only that a hook failed), else ECS's reason.
pub fn failure_reason(hooks: &[HookRecord], ecs_reason: &str) -> String {
    match hooks.iter().find(|h| h.status == HookStatus::Failed) {
        Some(h) => format!("lifecycle hook {} failed: {} (ECS: {ecs_reason})", h.stage, h.evidence),
        None => format!("ECS: {ecs_reason}"),
    }
}

/// The next record of a gated stage after one probe of the test route: passed → SUCCEEDED;
/// failed with attempts left → IN_PROGRESS; failed `max_attempts` times → FAILED. Counting
/// goes on from `previous` only if it is this execution's.
pub fn after_probe(
    previous: Option<&HookRecord>,
    call: &HookCall,
    probed: Result<String, String>,
    max_attempts: u32,
    now: DateTime<Utc>,
) -> HookRecord {
    let earlier = previous.filter(|p| p.execution_id == call.execution_id && p.stage == call.stage);
    let attempts = earlier.map_or(0, |p| p.attempts) + 1;
    let mut evidence: Vec<String> = earlier.map(|p| p.evidence.clone()).filter(|e| !e.is_empty()).into_iter().collect();
    let status = match probed {
        Ok(what) => {
            evidence.push(format!("#{attempts} {what}"));
            HookStatus::Succeeded
        }
        Err(why) => {
            evidence.push(format!("#{attempts} {why}"));
            if attempts >= max_attempts { HookStatus::Failed } else { HookStatus::InProgress }
        }
    };
    HookRecord {
        stage: call.stage.clone(),
        execution_id: call.execution_id.clone(),
        status,
        attempts,
        evidence: evidence.join("; "),
        at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call() -> HookCall {
        parse_hook_call(&json!({
            "executionId": "exec-1",
            "lifecycleStage": "POST_TEST_TRAFFIC_SHIFT",
            "resourceArn": "arn:aws:ecs:eu-west-1:111122223333:service-deployment/shop/api/abc",
            "executionDetails": {
                "serviceArn": "arn:aws:ecs:eu-west-1:111122223333:service/shop/api",
                "targetServiceRevisionArn": "arn:aws:ecs:eu-west-1:111122223333:service-revision/shop/api/2",
                "testTrafficWeights": {"arn:aws:ecs:eu-west-1:111122223333:service-revision/shop/api/2": 100},
                "productionTrafficWeights": {
                    "arn:aws:ecs:eu-west-1:111122223333:service-revision/shop/api/1": 100,
                    "arn:aws:ecs:eu-west-1:111122223333:service-revision/shop/api/2": 0
                }
            }
        }))
        .expect("a hook call")
    }

    #[test]
    fn a_hook_call_is_read_from_its_execution_details_or_its_top_level() {
        let c = call();
        assert_eq!(
            (c.account.as_str(), c.region.as_str(), c.cluster.as_str(), c.service.as_str()),
            ("111122223333", "eu-west-1", "shop", "api")
        );
        assert_eq!(c.stage, POST_TEST_TRAFFIC_SHIFT);
        assert_eq!(c.production_weight(), 0.0);
        let flat = json!({
            "executionId": "exec-1", "lifecycleStage": "PRE_SCALE_UP",
            "serviceArn": "arn:aws:ecs:eu-west-1:111122223333:service/shop/api",
            "targetServiceRevisionArn": "arn:aws:ecs:eu-west-1:111122223333:service-revision/shop/api/2",
        });
        assert!(is_hook_call(&flat));
        assert_eq!(parse_hook_call(&flat).expect("flat").service, "api");
        let no_service = json!({"executionId": "x", "lifecycleStage": "PRE_SCALE_UP"});
        assert!(parse_hook_call(&no_service).is_err());
        assert!(!is_hook_call(&json!({"detail-type": "ECS Deployment State Change", "lifecycleStage": "x"})));
    }

    #[test]
    fn only_an_alarm_that_went_off_after_the_deployment_started_fails_it() {
        let started = Utc::now();
        let alarm = |name: &str, in_alarm: bool, minutes: i64| AlarmState {
            name: name.into(),
            in_alarm,
            since: Some(started + chrono::Duration::minutes(minutes)),
            reason: "Threshold Crossed".into(),
        };
        let names = ["5xx".to_string(), "latency".to_string(), "gone".to_string()];
        let calm = [alarm("5xx", false, 2), alarm("latency", true, -3)];
        let seen = alarms_verdict(&names, &calm, started).expect("nothing went off during it");
        assert!(seen.contains("latency: ALARM from before") && seen.contains("gone: not found"), "{seen}");
        let off = [alarm("5xx", true, 2), alarm("latency", true, -3)];
        let why = alarms_verdict(&names, &off, started).expect_err("5xx went off during it");
        assert!(why.starts_with("alarm 5xx in ALARM since") && why.ends_with("Threshold Crossed"), "{why}");
        assert!(alarms_verdict(&[], &off, started).is_ok(), "no alarm configured, none checked");
    }

    #[test]
    fn answers_are_what_ecs_reads() {
        assert_eq!(serde_json::to_value(HookAnswer::succeeded()).expect("json"), json!({"hookStatus": "SUCCEEDED"}));
        assert_eq!(
            serde_json::to_value(HookAnswer::again_in(0)).expect("json"),
            json!({"hookStatus": "IN_PROGRESS", "callBackDelay": 1})
        );
    }

    #[test]
    fn a_test_route_fails_only_after_its_attempts_and_counts_per_execution() {
        let now = Utc::now();
        let first = after_probe(None, &call(), Err("HTTP 503".into()), 3, now);
        assert_eq!((first.status, first.attempts), (HookStatus::InProgress, 1));
        assert_eq!(first.answer(5), HookAnswer::again_in(5));
        let second = after_probe(Some(&first), &call(), Err("HTTP 503".into()), 3, now);
        let third = after_probe(Some(&second), &call(), Err("HTTP 500".into()), 3, now);
        assert_eq!((third.status, third.attempts), (HookStatus::Failed, 3));
        assert_eq!(third.evidence, "#1 HTTP 503; #2 HTTP 503; #3 HTTP 500");
        assert_eq!(third.answer(5), HookAnswer { status: HookStatus::Failed, call_back_delay: None });
        let passed = after_probe(Some(&first), &call(), Ok("HTTP 200".into()), 3, now);
        assert_eq!((passed.status, passed.attempts), (HookStatus::Succeeded, 2));
        let other = HookCall { execution_id: "exec-2".into(), ..call() };
        assert_eq!(
            after_probe(Some(&second), &other, Err("HTTP 503".into()), 3, now).attempts,
            1,
            "a new execution counts afresh"
        );
    }
}
