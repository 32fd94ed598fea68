//! The verify function as a blue/green, linear or canary service's lifecycle hook: green's
//! test route must pass the smoke test before ECS shifts production traffic to it, and once
//! production traffic moved (each step, and after the last) none of the service's alarms may
//! have gone off since the deployment started.
//!
//! ECS takes an error, or no valid answer, for FAILED and rolls back
//! (<https://docs.aws.amazon.com/AmazonECS/latest/developerguide/lambda-lifecycle-hooks.html>),
//! so this path never returns one: what Ferry cannot judge yet (the ledger or ECS failing,
//! the deploy function not having recorded the rollout yet) is answered IN_PROGRESS, and ECS
//! asks again.

use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::{error, info, warn};

use super::checks::{excerpt, judge};
use super::{Verifier, VerifyOutcome};
use crate::hook::{
    HookAnswer, HookCall, HookRecord, HookStatus, POST_TEST_TRAFFIC_SHIFT, PRODUCTION_STAGES, RETRY_DELAY_SECONDS,
    alarms_verdict,
};
use crate::lookup;
use crate::model::{Deployment, Origin, State, Target};
use crate::plan::find_target;
use crate::ports::{Alarms, Clock, Ecs, EcsError, EventBus, HealthProbe, Ledger, LoadBalancers, Notifier};

/// Ferry's record of the rollout a hook is called for.
enum Rollout {
    /// Ferry's, still rolling out: gated.
    Open(Deployment),
    /// Ferry's, and Ferry has already judged it failed.
    Failed(Deployment),
    /// Not a rollout Ferry started, or one already settled.
    None,
}

/// What one hook invocation decided, before it is answered.
struct Decision {
    deployment: Option<String>,
    answer: HookAnswer,
    why: String,
}

impl Decision {
    fn new(answer: HookAnswer, why: impl Into<String>) -> Decision {
        Decision { deployment: None, answer, why: why.into() }
    }

    fn again(why: impl Into<String>) -> Decision {
        Decision::new(HookAnswer::again_in(RETRY_DELAY_SECONDS), why)
    }
}

impl<E: Ecs, L: Ledger, N: Notifier, B: EventBus, H: HealthProbe, C: Clock, LB: LoadBalancers, A: Alarms>
    Verifier<'_, E, L, N, B, H, C, LB, A>
{
    /// Answers one lifecycle hook invocation.
    pub(super) async fn hook(&self, payload: &Value) -> VerifyOutcome {
        let stage = payload.get("lifecycleStage").and_then(Value::as_str).unwrap_or_default().to_string();
        let decision = match crate::hook::parse_hook_call(payload) {
            Ok(call) => self.decide(&call).await,
            // Blue keeps serving: a rollback of a blue/green rollout costs nothing.
            Err(malformed) => Decision::new(
                HookAnswer::failed(),
                format!("a hook call Ferry cannot read ({malformed}): green gets no traffic"),
            ),
        };
        let Decision { deployment, answer, why } = decision;
        match answer.status {
            HookStatus::Failed => {
                error!(stage = %stage, deployment = ?deployment, reason = %why, "lifecycle hook FAILED")
            }
            status => {
                info!(stage = %stage, deployment = ?deployment, status = status.as_str(), reason = %why, "lifecycle hook answered")
            }
        }
        VerifyOutcome::Hook { stage, deployment, answer, why }
    }

    async fn decide(&self, call: &HookCall) -> Decision {
        if !self.config.knows_account(&call.account) {
            warn!(account = %call.account, "a hook call for an account that is neither Ferry's nor a target's");
            return Decision::new(
                HookAnswer::failed(),
                format!("account {} is neither Ferry's nor a target's", call.account),
            );
        }
        let Some(target) = find_target(self.config, &call.account, &call.region, &call.cluster, &call.service) else {
            return Decision::new(HookAnswer::succeeded(), "not a service Ferry deploys: not gated");
        };
        let rollout = match self.rollout(&target, call).await {
            Ok(Rollout::Open(d)) => d,
            Ok(Rollout::Failed(d)) => {
                let why =
                    format!("Ferry failed this deployment: {}", d.reason.as_deref().unwrap_or("no reason recorded"));
                return Decision { deployment: Some(d.id), ..Decision::new(HookAnswer::failed(), why) };
            }
            Ok(Rollout::None) => {
                return Decision::new(HookAnswer::succeeded(), "not a rollout Ferry started: not gated");
            }
            Err(why) => return Decision::again(why),
        };
        let id = Some(rollout.id.clone());
        if PRODUCTION_STAGES.contains(&call.stage.as_str()) {
            return Decision { deployment: id, ..self.production(&rollout, call, &target).await };
        }
        let test_url = self
            .health_of(&target)
            .and_then(|h| Some((h, h.test_url_for(&target, self.config.home_account.as_deref())?)));
        let decision = match test_url {
            Some((health, url)) if call.stage == POST_TEST_TRAFFIC_SHIFT => {
                self.test_route(&rollout, call, health, &url).await
            }
            Some(_) => self.pass(&rollout, call, "not a stage Ferry gates").await,
            None if call.stage == POST_TEST_TRAFFIC_SHIFT => {
                self.pass(&rollout, call, "no health.test_url: the test route is not probed").await
            }
            None => self.pass(&rollout, call, "not a stage Ferry gates").await,
        };
        Decision { deployment: id, ..decision }
    }

    /// Ferry's record of the rollout the hook is called for: the newest of the target's whose
    /// revision is the service revision's task definition. `Err` when that cannot be told yet.
    async fn rollout(&self, target: &Target, call: &HookCall) -> Result<Rollout, String> {
        let revision = match self.ecs.service_revision(target, &call.target_revision).await {
            Ok(revision) => revision,
            Err(EcsError::Transient(why)) => return Err(format!("ECS: {why}")),
            Err(e) => {
                warn!(revision = %call.target_revision, error = %e, "the hook's service revision cannot be read");
                return Ok(Rollout::None);
            }
        };
        // An open rollout is among the target's newest records (newest first).
        let recent = self.ledger.history(target, lookup::PAGE).await.map_err(|e| e.to_string())?;
        let newest = recent.into_iter().enumerate().find(|(_, d)| {
            matches!(d.origin, Origin::Ferry | Origin::Rollback)
                && d.task_definition.as_deref() == Some(revision.as_str())
        });
        match newest {
            Some((_, d)) if d.origin == Origin::Ferry && matches!(d.state, State::InProgress | State::Verifying) => {
                return Ok(Rollout::Open(d));
            }
            // The target's latest deployment, failed by Ferry (an alarm, an operator's rollback)
            // while ECS still rolls it out: its rollback may be stopping it, and ECS must not go on.
            Some((0, d)) if d.origin == Origin::Ferry && matches!(d.state, State::Failed | State::RollingBack) => {
                return Ok(Rollout::Failed(d));
            }
            Some(_) => return Ok(Rollout::None),
            None => {}
        }
        // The deploy function holds the target until it has recorded its rollout.
        let head = self.ledger.head(target).await.map_err(|e| e.to_string())?;
        match head.lock.filter(|l| l.until > self.clock.now()) {
            Some(lock) => Err(format!("deployment {} has not recorded its rollout yet", lock.deployment)),
            None => Ok(Rollout::None),
        }
    }

    /// A stage Ferry does not gate: SUCCEEDED, and said so on the record.
    async fn pass(&self, d: &Deployment, call: &HookCall, why: &str) -> Decision {
        let record = HookRecord {
            stage: call.stage.clone(),
            execution_id: call.execution_id.clone(),
            status: HookStatus::Succeeded,
            attempts: 0,
            evidence: why.to_string(),
            at: self.clock.now(),
        };
        if let Err(e) = self.ledger.note_hook(d, &record).await {
            warn!(deployment = %d.id, stage = %call.stage, error = %e, "could not note the hook's answer");
        }
        Decision::new(HookAnswer::succeeded(), why)
    }

    /// Green serves production traffic: FAILED if one of the service's alarms went off since
    /// the deployment started, read from CloudWatch (an alarm's event may come late, or never).
    async fn production(&self, d: &Deployment, call: &HookCall, target: &Target) -> Decision {
        let previous = d.hooks.iter().find(|h| h.stage == call.stage);
        if let Some(decided) = previous.filter(|h| h.execution_id == call.execution_id && h.status.is_final()) {
            return Decision::new(decided.answer(0), format!("decided already: {}", decided.evidence));
        }
        let names: Vec<String> = self
            .service_of(target)
            .map(|s| s.alarms.iter().map(|a| a.replace("{env}", &target.environment)).collect())
            .unwrap_or_default();
        if names.is_empty() {
            return self.pass(d, call, "no alarms configured").await;
        }
        let seen = match self.alarms.states(target, &names).await {
            Ok(seen) => seen,
            Err(e @ EcsError::Transient(_)) => return Decision::again(format!("CloudWatch: {e}")),
            // Refused (a target role without the grant): asking again would hold the rollout for
            // ever; the alarms' events still reach the rollback function.
            Err(e) => {
                warn!(deployment = %d.id, error = %e, "the service's alarms cannot be read");
                return self.pass(d, call, &format!("alarms not read: {e}")).await;
            }
        };
        let (status, evidence) = match alarms_verdict(&names, &seen, d.created_at) {
            Ok(seen) => (HookStatus::Succeeded, format!("alarms: {seen}")),
            Err(why) => (HookStatus::Failed, why),
        };
        let record = HookRecord {
            stage: call.stage.clone(),
            execution_id: call.execution_id.clone(),
            status,
            attempts: 1,
            evidence,
            at: self.clock.now(),
        };
        match self.ledger.note_hook(d, &record).await {
            Ok(None) => Decision::new(record.answer(0), record.evidence),
            Ok(Some(decided)) => Decision::new(decided.answer(0), format!("decided already: {}", decided.evidence)),
            Err(e) => Decision::again(format!("the answer could not be recorded: {e}")),
        }
    }

    /// One probe of green's test route; FAILED once the smoke test's attempts are spent.
    async fn test_route(&self, d: &Deployment, call: &HookCall, health: &crate::config::Health, url: &str) -> Decision {
        let previous = d.hooks.iter().find(|h| h.stage == call.stage);
        if let Some(decided) = previous.filter(|h| h.execution_id == call.execution_id && h.status.is_final()) {
            return Decision::new(
                decided.answer(health.interval_seconds),
                format!("decided already: {}", decided.evidence),
            );
        }
        let started = Instant::now();
        let answer = self.probe.get(url, Duration::from_secs(health.timeout_seconds)).await;
        let took = started.elapsed().as_millis();
        let probed = match (judge(health, &answer), &answer) {
            (Ok(()), Ok(response)) => Ok(format!("{url}: HTTP {} after {took} ms", response.status)),
            (Ok(()), Err(_)) => Ok(format!("{url}: passed after {took} ms")),
            (Err(why), answer) => {
                let body = answer.as_ref().map(|r| excerpt(&r.body)).unwrap_or_default();
                let body = if body.is_empty() { String::new() } else { format!(": {body:?}") };
                Err(format!("{url}: {why} after {took} ms{body}"))
            }
        };
        let record = crate::hook::after_probe(previous, call, probed, health.attempts, self.clock.now());
        match self.ledger.note_hook(d, &record).await {
            Ok(None) => Decision::new(record.answer(health.interval_seconds), record.evidence),
            Ok(Some(decided)) => {
                Decision::new(decided.answer(health.interval_seconds), format!("decided already: {}", decided.evidence))
            }
            // Unrecorded, the probe counts for nothing: ECS asks again.
            Err(e) => Decision::again(format!("the answer could not be recorded: {e}")),
        }
    }
}
