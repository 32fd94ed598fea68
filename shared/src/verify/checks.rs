//! What a completed rollout must show: the service's own view of it, its tasks' health in
//! their target groups, and the smoke test.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::Verifier;
use crate::config::Health;
use crate::invocation::Retryable;
use crate::model::{Deployment, Target};
use crate::ports::{
    Alarms, Clock, Ecs, EventBus, HealthProbe, Ledger, LoadBalancers, Notifier, ProbeResponse, ServiceInfo,
};

/// Why a service does not (yet) run a deployment ECS reported complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutProblem {
    /// Another deployment (a newer push, an UpdateService by hand) is PRIMARY: this one was
    /// overtaken, which is not its failure.
    Overtaken { by: String },
    /// The deployment is PRIMARY but not on its revision, or there is no PRIMARY.
    Incomplete(String),
    /// ECS's API does not show the completion its event announced yet (it can lag its own
    /// events): a reason to look again, never to fail.
    NotYet(String),
}

/// Whether the service really runs `d`: its PRIMARY deployment is `d`'s, COMPLETED, on `d`'s
/// revision. Task counts are not judged: under Service Auto Scaling desired rises before
/// running does, and a replaced or interrupted task lowers running for a while.
pub fn check_rollout(d: &Deployment, service: &ServiceInfo) -> Result<(), RolloutProblem> {
    let incomplete = |why: String| Err(RolloutProblem::Incomplete(why));
    let Some(primary) = &service.primary else {
        return incomplete("the service has no PRIMARY deployment".into());
    };
    if Some(primary.id.as_str()) != d.ecs_deployment_id.as_deref() {
        return Err(RolloutProblem::Overtaken { by: primary.id.clone() });
    }
    let revision = d.task_definition.as_deref().unwrap_or_default();
    if primary.task_definition != revision {
        return incomplete(format!("the service runs {}, not {revision}", primary.task_definition));
    }
    match primary.rollout_state.as_str() {
        "COMPLETED" => Ok(()),
        "IN_PROGRESS" => Err(RolloutProblem::NotYet("the rollout is still IN_PROGRESS".into())),
        other => incomplete(format!("the rollout is {other}, not COMPLETED")),
    }
}

/// Whether one health answer passes the smoke test.
pub fn judge(health: &Health, answer: &Result<ProbeResponse, String>) -> Result<(), String> {
    let response = answer.as_ref().map_err(Clone::clone)?;
    let (low, high) = health.expect_status;
    if !(low..=high).contains(&response.status) {
        return Err(format!(
            "HTTP {} (expected {})",
            response.status,
            if low == high { low.to_string() } else { format!("{low}-{high}") }
        ));
    }
    match &health.body_contains {
        Some(text) if !response.body.contains(text.as_str()) => {
            Err(format!("HTTP {} without {text:?} in the body", response.status))
        }
        _ => Ok(()),
    }
}

/// At most this much of a body goes into the evidence.
pub(super) const EXCERPT: usize = 120;

pub(super) fn excerpt(body: &str) -> String {
    let flat: String = body.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut cut: String = flat.chars().take(EXCERPT).collect();
    if flat.chars().count() > EXCERPT {
        cut.push('…');
    }
    cut
}

impl<E: Ecs, L: Ledger, N: Notifier, B: EventBus, H: HealthProbe, C: Clock, LB: LoadBalancers, A: Alarms>
    Verifier<'_, E, L, N, B, H, C, LB, A>
{
    /// Whether every task of `d`'s rollout is healthy in each of the service's target groups
    /// (a check that needs no network path to the service). Targets still settling (initial,
    /// not registered yet) are looked at again, as a lagging API is; `Ok(Err(why))` fails `d`.
    pub(super) async fn targets_healthy(
        &self,
        d: &Deployment,
        groups: &[String],
    ) -> Result<Result<String, String>, Retryable> {
        let transient = Retryable::from;
        let ecs_id = d.ecs_deployment_id.clone().unwrap_or_default();
        let addresses = self.ecs.task_addresses(&d.target, &ecs_id).await.map_err(transient)?;
        if addresses.is_empty() {
            return Ok(Ok(
                "target health not judged: the rollout's tasks have no address of their own (not awsvpc)".into()
            ));
        }
        let mut looks = 1;
        loop {
            let mut bad = Vec::new();
            let mut settling = false;
            for group in groups {
                let targets = self.balancers.target_health(&d.target, group).await.map_err(transient)?;
                for address in &addresses {
                    match targets.iter().find(|t| &t.id == address) {
                        Some(t) if t.state == "healthy" => {}
                        Some(t) => {
                            settling |= t.state == "initial";
                            let reason = t.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
                            bad.push(format!("{address} {}{reason} in {group}", t.state));
                        }
                        None => {
                            settling = true;
                            bad.push(format!("{address} not registered in {group}"));
                        }
                    }
                }
            }
            if bad.is_empty() {
                return Ok(Ok(format!("{} task(s) healthy in {} target group(s)", addresses.len(), groups.len())));
            }
            if !settling || looks >= self.settings.lag_looks {
                return Ok(Err(format!("load balancer health: {}", bad.join("; "))));
            }
            info!(deployment = %d.id, looks, "targets still settling; looking again");
            self.clock.sleep(self.settings.lag_wait).await;
            looks += 1;
        }
    }

    /// The service's smoke test, if it has one.
    pub(super) fn health_of(&self, target: &Target) -> Option<&Health> {
        self.config
            .services
            .iter()
            .filter(|s| s.deploys_to(&target.environment) && s.service_name(&target.environment) == target.service)
            .find_map(|s| s.health.as_ref())
    }

    /// The configured service deployed to `target`.
    pub(super) fn service_of(&self, target: &Target) -> Option<&crate::config::Service> {
        self.config
            .services
            .iter()
            .find(|s| s.deploys_to(&target.environment) && s.service_name(&target.environment) == target.service)
    }

    /// GETs the health URL until an answer passes or the attempts run out; `Err` carries
    /// every attempt's evidence.
    pub(super) async fn smoke_test(&self, health: &Health, url: &str) -> Result<(), String> {
        let timeout = Duration::from_secs(health.timeout_seconds);
        let mut evidence = Vec::new();
        for attempt in 1..=health.attempts {
            let started = Instant::now();
            let answer = self.probe.get(url, timeout).await;
            let took = started.elapsed().as_millis();
            match judge(health, &answer) {
                Ok(()) => {
                    info!(url = %url, attempt, took_ms = took, "smoke test passed");
                    return Ok(());
                }
                Err(why) => {
                    let body = answer.as_ref().map(|r| excerpt(&r.body)).unwrap_or_default();
                    let body = if body.is_empty() { String::new() } else { format!(": {body:?}") };
                    warn!(url = %url, attempt, took_ms = took, reason = %why, "smoke test attempt failed");
                    evidence.push(format!("#{attempt} {why} after {took} ms{body}"));
                }
            }
            if attempt < health.attempts {
                self.clock.sleep(Duration::from_secs(health.interval_seconds)).await;
            }
        }
        Err(format!("{} attempts: {}", health.attempts, evidence.join("; ")))
    }
}
