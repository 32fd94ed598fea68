//! The verify function's handler: a deployment is SUCCEEDED only when ECS completed it,
//! the service really runs the new revision on every task, and its smoke test passes.
//!
//! Every ECS deployment event is matched to Ferry's record by the ECS deployment id. A
//! deployment Ferry did not start (an UpdateService by hand, ECS's own
//! rollback) gets a record of its own on the target's history. Every change is a
//! conditional ledger write, so duplicate and out-of-order events never move a record
//! backwards.

use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::{error, info, warn};

use crate::config::{Config, Health};
use crate::event::{EcsDeploymentEvent, EcsEventKind, Received, VerifyEvent, parse_verify_event};
use crate::invocation::{Invocation, Retryable};
use crate::model::{Deployment, Origin, State, Target};
use crate::notify::Notification;
use crate::ports::{
    Clock, Ecs, EcsError, EventBus, HeadChange, HealthProbe, Ledger, LoadBalancers, Notifier, ProbeResponse,
    ServiceInfo,
};

#[derive(Debug, Clone)]
pub struct VerifySettings {
    /// How long a verification claim lasts at most: longer than the function may run, so a
    /// verification is never done twice at once (the invocation's deadline ends it sooner,
    /// so one that died is taken over by its redelivered event).
    pub claim: Duration,
    /// How long a rollout may stay IN_PROGRESS or VERIFYING without a change before the
    /// sweep reads its service to settle it (its ECS events were lost).
    pub stale: Duration,
    /// How often, and how far apart, the service is read while ECS's API still shows a
    /// rollout its COMPLETED event announced as in progress.
    pub lag_looks: u32,
    pub lag_wait: Duration,
}

impl Default for VerifySettings {
    fn default() -> Self {
        VerifySettings {
            claim: Duration::from_secs(6 * 60),
            stale: Duration::from_secs(15 * 60),
            lag_looks: 5,
            lag_wait: Duration::from_secs(3),
        }
    }
}

/// What the handler did with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// Not an ECS deployment event for a service Ferry deploys, or malformed.
    Ignored(String),
    /// An event the verify function's rules never send it (another source), or one from an
    /// account that is neither Ferry's nor a target's: logged as a warning, nothing done.
    Rejected(String),
    /// The event changes nothing: the record is already past it (a duplicate or late event),
    /// or another invocation is verifying it.
    Unchanged {
        deployment: String,
        state: State,
    },
    /// ECS reports the rollout under way.
    Progress {
        deployment: String,
    },
    Succeeded {
        deployment: String,
    },
    Failed {
        deployment: String,
        reason: String,
    },
    /// A newer deployment took the target over.
    Superseded {
        deployment: String,
        by: String,
    },
    /// A deployment Ferry did not start, recorded on the target's history.
    External {
        deployment: String,
        origin: Origin,
        state: State,
    },
    /// A deployment waiting for its rollback was settled by what the service runs.
    Settled {
        deployment: String,
        state: State,
    },
    /// The sweep schedule fired: what became of each stale rollout it found.
    Swept(Vec<VerifyOutcome>),
}

#[derive(Debug)]
pub struct Verifier<'a, E, L, N, B, H, C, LB> {
    pub config: &'a Config,
    pub ecs: &'a E,
    pub balancers: &'a LB,
    pub ledger: &'a L,
    pub notifier: &'a N,
    pub bus: &'a B,
    pub probe: &'a H,
    pub clock: &'a C,
    pub settings: VerifySettings,
}

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

/// The time a sweep keeps for settling one more target (a verification with its smoke test).
const SWEEP_RESERVE: Duration = Duration::from_secs(270);

/// At most this much of a body goes into the evidence.
const EXCERPT: usize = 120;

/// How far back a target's history is searched for the record of an ECS deployment the
/// GSI does not know (yet).
const UNKNOWN_HISTORY: usize = 100;

fn excerpt(body: &str) -> String {
    let flat: String = body.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut cut: String = flat.chars().take(EXCERPT).collect();
    if flat.chars().count() > EXCERPT {
        cut.push('…');
    }
    cut
}

impl<E: Ecs, L: Ledger, N: Notifier, B: EventBus, H: HealthProbe, C: Clock, LB: LoadBalancers>
    Verifier<'_, E, L, N, B, H, C, LB>
{
    /// Handles one EventBridge event. `Err` only for what a retry can fix.
    pub async fn handle(&self, event: Value, invocation: &Invocation) -> Result<VerifyOutcome, Retryable> {
        let ev = match parse_verify_event(event) {
            Ok(Received::Act(VerifyEvent::Ecs(ev))) => ev,
            Ok(Received::Act(VerifyEvent::Sweep { account })) if self.config.is_home(&account) => {
                return self.sweep(invocation).await.map(VerifyOutcome::Swept);
            }
            Ok(Received::Act(VerifyEvent::Sweep { account })) => {
                return Ok(rejected(format!("a sweep schedule of account {account}, not Ferry's")));
            }
            Ok(Received::Ignored(why)) => {
                info!(reason = %why, "event ignored");
                return Ok(VerifyOutcome::Ignored(why));
            }
            Ok(Received::Rejected(why)) => return Ok(rejected(why)),
            Err(malformed) => {
                warn!(error = %malformed, "malformed event acknowledged without action");
                return Ok(VerifyOutcome::Ignored(malformed.to_string()));
            }
        };
        if !self.config.knows_account(&ev.account) {
            return Ok(rejected(format!(
                "an ECS event from account {}, which is neither Ferry's nor a target's",
                ev.account
            )));
        }
        info!(ecs_deployment = %ev.deployment_id, event = ?ev.kind, service = %ev.service, "ECS deployment event");
        match self.ledger.by_ecs_deployment(&ev.deployment_id).await? {
            Some(d) => self.dispatch(d, &ev, invocation).await,
            None => self.unknown(&ev, invocation).await,
        }
    }

    /// Settles every target's active rollout still IN_PROGRESS or VERIFYING long after its
    /// last change, as the ECS event it is missing would have: COMPLETED (verify it), FAILED
    /// (fail it), or replaced by another deployment (supersede it). A rollout ECS is still
    /// running is left alone.
    pub async fn sweep(&self, invocation: &Invocation) -> Result<Vec<VerifyOutcome>, Retryable> {
        let mut outcomes = Vec::new();
        for target in crate::plan::all_targets(self.config) {
            // A verification can take minutes: the rest waits for the next run.
            let left = invocation.deadline.map(|deadline| (deadline - self.clock.now()).to_std().unwrap_or_default());
            if left.is_some_and(|left| left < SWEEP_RESERVE) {
                info!(target = %target, "sweep: out of time; the next run goes on");
                break;
            }
            match self.sweep_target(&target, invocation).await {
                Ok(Some(outcome)) => outcomes.push(outcome),
                Ok(None) => {}
                Err(e) => warn!(target = %target, error = %e, "sweep: this target waits for the next run"),
            }
        }
        info!(settled = outcomes.len(), "swept");
        Ok(outcomes)
    }

    async fn sweep_target(&self, target: &Target, invocation: &Invocation) -> Result<Option<VerifyOutcome>, Retryable> {
        let Some((active, _)) = self.ledger.head(target).await?.active else { return Ok(None) };
        let Some(d) = self.ledger.deployment(target, &active).await? else { return Ok(None) };
        let idle = (self.clock.now() - d.updated_at).to_std().unwrap_or_default();
        if idle < self.settings.stale {
            return Ok(None);
        }
        if d.state == State::RollingBack {
            return self.sweep_rollback(d).await;
        }
        if !matches!(d.state, State::InProgress | State::Verifying) {
            return Ok(None);
        }
        let Some(ecs_id) = d.ecs_deployment_id.clone() else { return Ok(None) };
        let service = self.ecs.service(target).await.map_err(|e| Retryable(e.to_string()))?;
        let Some(primary) = service.primary else { return Ok(None) };
        let kind = match primary.rollout_state.as_str() {
            _ if primary.id != ecs_id => {
                let rollback = d.origin == Origin::Rollback;
                let superseded = self.supersede(d.clone(), &format!("ECS deployment {}", primary.id)).await?;
                if rollback && matches!(superseded, VerifyOutcome::Superseded { .. }) {
                    self.settle_rollback(&Deployment { state: State::Superseded, ..d }).await?;
                }
                return Ok(Some(superseded));
            }
            "COMPLETED" => EcsEventKind::Completed,
            "FAILED" => EcsEventKind::Failed,
            _ => return Ok(None),
        };
        warn!(deployment = %d.id, target = %target, rollout = %primary.rollout_state, "sweep: a rollout whose ECS events never came");
        let ev = EcsDeploymentEvent {
            event_id: format!("sweep-{}", d.id),
            kind,
            deployment_id: ecs_id,
            reason: format!("the rollout is {} (found by the sweep)", primary.rollout_state),
            account: target.account.clone().or_else(|| self.config.home_account.clone()).unwrap_or_default(),
            region: target.region.clone(),
            cluster: target.cluster.clone(),
            service: target.service.clone(),
            at: self.clock.now(),
        };
        self.dispatch(d, &ev, invocation).await.map(Some)
    }

    /// `d` has waited long to be rolled back, and no rollback of it is on record: ECS's own,
    /// which Ferry left to ECS, never appeared (or its events were lost), or Ferry's died
    /// before recording it. Settled from what the service runs: back off `d`'s revision and
    /// completed, ROLLED_BACK; still on it (or failed), ROLLBACK_FAILED, which pages.
    async fn sweep_rollback(&self, mut d: Deployment) -> Result<Option<VerifyOutcome>, Retryable> {
        let service = self.ecs.service(&d.target).await.map_err(|e| Retryable(e.to_string()))?;
        let Some(primary) = service.primary else { return Ok(None) };
        let on_ours =
            d.is_rollout_id(&primary.id) || d.task_definition.as_deref() == Some(primary.task_definition.as_str());
        let reason = d.reason.clone().unwrap_or_else(|| "failed".into());
        let minutes = self.settings.stale.as_secs() / 60;
        d.state = match (on_ours, primary.rollout_state.as_str()) {
            // A rollback ECS is still running.
            (false, "IN_PROGRESS") => return Ok(None),
            (false, "COMPLETED") => {
                d.reason =
                    Some(format!("{reason}; the service runs {} now (found by the sweep)", primary.task_definition));
                State::RolledBack
            }
            _ => {
                d.reason = Some(format!(
                    "{reason}; no rollback appeared within {minutes} min: the service runs {}",
                    primary.task_definition
                ));
                State::RollbackFailed
            }
        };
        d.updated_at = self.clock.now();
        if !self.ledger.transition(&d, &[State::RollingBack], HeadChange::None).await? {
            return self.unchanged(d).await.map(Some);
        }
        match d.state {
            State::RolledBack => warn!(deployment = %d.id, "sweep: rolled back, its rollback's events never came"),
            _ => error!(deployment = %d.id, "ROLLBACK FAILED: no rollback appeared; paging"),
        }
        self.notify_with(&d, Some(primary.task_definition)).await;
        Ok(Some(VerifyOutcome::Settled { deployment: d.id, state: d.state }))
    }

    /// An event about a deployment on record: one of Ferry's, or one it did not start.
    async fn dispatch(
        &self,
        d: Deployment,
        ev: &EcsDeploymentEvent,
        invocation: &Invocation,
    ) -> Result<VerifyOutcome, Retryable> {
        match d.origin {
            Origin::Ferry => self.ferrys(d, ev, invocation).await,
            // Boxed: the futures of a verification are large, and tests run on small stacks.
            _ => Box::pin(self.externals(d, ev, invocation)).await,
        }
    }

    /// An event about a deployment Ferry started.
    async fn ferrys(
        &self,
        d: Deployment,
        ev: &EcsDeploymentEvent,
        invocation: &Invocation,
    ) -> Result<VerifyOutcome, Retryable> {
        if !matches!(d.state, State::InProgress | State::Verifying) {
            info!(deployment = %d.id, state = %d.state, "event for a settled deployment");
            if d.state != State::Superseded {
                // Succeeded or failed, perhaps by an earlier attempt at this event whose answer
                // was lost before it closed what this rollout overtook: closing is done once.
                self.supersede_older(&d).await?;
            }
            return Ok(VerifyOutcome::Unchanged { deployment: d.id, state: d.state });
        }
        let head = self.ledger.head(&d.target).await?;
        if let Some((active, _)) = head.active.filter(|(active, _)| *active != d.id) {
            return self.supersede(d, &active).await;
        }
        match ev.kind {
            EcsEventKind::InProgress => {
                self.ledger.note_ecs_event(&d, &describe(ev)).await?;
                Ok(VerifyOutcome::Progress { deployment: d.id })
            }
            EcsEventKind::Failed => {
                let d = Deployment { ecs_event: Some(describe(ev)), ..d };
                self.fail(d, format!("ECS: {}", ev.reason)).await
            }
            EcsEventKind::Completed => self.verify(d, ev, invocation).await,
        }
    }

    async fn verify(
        &self,
        d: Deployment,
        ev: &EcsDeploymentEvent,
        invocation: &Invocation,
    ) -> Result<VerifyOutcome, Retryable> {
        let now = self.clock.now();
        let claim = invocation.claim(now, self.settings.claim);
        let verifying = Deployment { state: State::Verifying, ..d.clone() };
        let outcome = match self.ledger.claim(&verifying, State::InProgress, HeadChange::None, now, &claim).await {
            Ok(true) => Box::pin(self.verify_claimed(d, ev)).await,
            Ok(false) => {
                info!(deployment = %d.id, "another invocation is verifying this deployment");
                return Ok(VerifyOutcome::Unchanged { deployment: d.id, state: State::Verifying });
            }
            // The claim may have been taken with its answer lost.
            Err(e) => Err(e.into()),
        };
        if outcome.is_err() {
            // Give the claim back, so the redelivered event verifies again at once (if this
            // fails too, the claim lapses with the invocation's deadline). The record stays
            // VERIFYING: records only move forward.
            if let Err(e) = self.ledger.release_claim(&verifying, State::Verifying, &claim).await {
                warn!(deployment = %verifying.id, error = %e, "could not give the verification claim back");
            }
        }
        outcome
    }

    async fn verify_claimed(&self, mut d: Deployment, ev: &EcsDeploymentEvent) -> Result<VerifyOutcome, Retryable> {
        d.state = State::Verifying;
        d.ecs_event = Some(describe(ev));
        let mut looks = 1;
        let checked = loop {
            let service = match self.ecs.service(&d.target).await {
                Ok(service) => service,
                // The claim lapses and the redelivered event verifies again.
                Err(EcsError::Transient(e)) => return Err(Retryable(e)),
                Err(e) => return self.fail(d, format!("cannot read the service: {e}")).await,
            };
            match check_rollout(&d, &service).map(|()| service) {
                Err(RolloutProblem::NotYet(why)) if looks < self.settings.lag_looks => {
                    info!(deployment = %d.id, looks, reason = %why, "ECS's API lags its COMPLETED event; looking again");
                    self.clock.sleep(self.settings.lag_wait).await;
                    looks += 1;
                }
                // The redelivered event (or the sweep) looks again later.
                Err(RolloutProblem::NotYet(why)) => {
                    return Err(Retryable(format!("ECS reported the deployment complete, but {why} ({looks} looks)")));
                }
                checked => break checked,
            }
        };
        let service = match checked {
            Ok(service) => service,
            // Taken over after ECS completed it: nothing of ours is live to prove, and
            // "failing" it would roll the service back over the newer deployment.
            Err(RolloutProblem::Overtaken { by }) => return self.supersede(d, &format!("ECS deployment {by}")).await,
            Err(RolloutProblem::Incomplete(why) | RolloutProblem::NotYet(why)) => {
                return self.fail(d, format!("ECS reported the deployment complete, but {why}")).await;
            }
        };
        // What was shown, for the record.
        let mut shown = vec![format!("ECS completed the rollout on {}", d.task_definition.as_deref().unwrap_or("?"))];
        if !service.target_groups.is_empty() {
            match self.targets_healthy(&d, &service.target_groups).await? {
                Ok(healthy) => shown.push(healthy),
                Err(why) => return self.fail(d, why).await,
            }
        }
        match self.health_of(&d.target) {
            Some(health) => {
                let url = health.url_for(&d.target, self.config.home_account.as_deref());
                if let Err(evidence) = self.smoke_test(health, &url).await {
                    return self.fail(d, format!("smoke test of {url} failed: {evidence}")).await;
                }
                shown.push(format!("smoke test of {url} passed"));
            }
            None if service.target_groups.is_empty() => {
                shown.push("no health URL or load balancer: proven by the rollout alone".into());
            }
            None => {}
        }
        d.reason = Some(shown.join("; "));
        self.succeed(d).await
    }

    /// Whether every task of `d`'s rollout is healthy in each of the service's target groups
    /// (a check that needs no network path to the service). Targets still settling (initial,
    /// not registered yet) are looked at again, as a lagging API is; `Ok(Err(why))` fails `d`.
    async fn targets_healthy(&self, d: &Deployment, groups: &[String]) -> Result<Result<String, String>, Retryable> {
        let transient = |e: EcsError| Retryable(e.to_string());
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
    fn health_of(&self, target: &Target) -> Option<&Health> {
        self.config
            .services
            .iter()
            .filter(|s| s.deploys_to(&target.environment) && s.service_name(&target.environment) == target.service)
            .find_map(|s| s.health.as_ref())
    }

    /// The configured service deployed to `target`.
    fn service_of(&self, target: &Target) -> Option<&crate::config::Service> {
        self.config
            .services
            .iter()
            .find(|s| s.deploys_to(&target.environment) && s.service_name(&target.environment) == target.service)
    }

    /// GETs the health URL until an answer passes or the attempts run out; `Err` carries
    /// every attempt's evidence.
    async fn smoke_test(&self, health: &Health, url: &str) -> Result<(), String> {
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

    async fn succeed(&self, mut d: Deployment) -> Result<VerifyOutcome, Retryable> {
        d.state = State::Succeeded;
        d.updated_at = self.clock.now();
        d.live_at = Some(d.updated_at);
        if !self.ledger.transition(&d, &[State::Verifying], HeadChange::LastKnownGood).await? {
            return self.unchanged(d).await;
        }
        info!(deployment = %d.id, target = %d.target, "deployment verified: SUCCEEDED");
        self.notify(&d).await;
        self.supersede_older(&d).await?;
        Ok(VerifyOutcome::Succeeded { deployment: d.id })
    }

    /// Older deployments of `d`'s target still open were overtaken by it, whatever its
    /// outcome: ECS sends no event for a rollout replaced before it completed. Ferry's are
    /// older by push, the others (a rollback's, one Ferry did not start) by when they were
    /// recorded; a rollback overtaken so leaves the deployment it undid ROLLED_BACK all the
    /// same. (A burst of pushes leaves many SKIPPED records in between: look far enough back.)
    async fn supersede_older(&self, d: &Deployment) -> Result<(), Retryable> {
        for older in self.ledger.history(&d.target, 100).await? {
            let before = if older.origin == Origin::Ferry { older.id < d.id } else { older.created_at < d.created_at };
            if older.id == d.id || !before || !matches!(older.state, State::InProgress | State::Verifying) {
                continue;
            }
            let rollback = older.origin == Origin::Rollback;
            if let VerifyOutcome::Superseded { .. } = self.supersede(older.clone(), &d.id).await?
                && rollback
            {
                self.settle_rollback(&Deployment { state: State::Superseded, ..older }).await?;
            }
        }
        Ok(())
    }

    /// Records FAILED, after announcing it on the event bus so the rollback function
    /// acts on it (announcing first: a lost announcement would leave a failure live).
    async fn fail(&self, mut d: Deployment, reason: String) -> Result<VerifyOutcome, Retryable> {
        d.state = State::Failed;
        d.reason = Some(reason.clone());
        d.updated_at = self.clock.now();
        self.bus.deployment_failed(&d).await.map_err(|e| Retryable(e.to_string()))?;
        if !self.ledger.transition(&d, &[State::InProgress, State::Verifying], HeadChange::None).await? {
            return self.unchanged(d).await;
        }
        error!(deployment = %d.id, target = %d.target, reason = %reason, "deployment FAILED");
        self.notify(&d).await;
        self.supersede_older(&d).await?;
        Ok(VerifyOutcome::Failed { deployment: d.id, reason })
    }

    async fn supersede(&self, mut d: Deployment, by: &str) -> Result<VerifyOutcome, Retryable> {
        d.state = State::Superseded;
        d.reason = Some(format!("superseded by deployment {by}"));
        d.updated_at = self.clock.now();
        if !self.ledger.transition(&d, &[State::InProgress, State::Verifying], HeadChange::None).await? {
            return self.unchanged(d).await;
        }
        info!(deployment = %d.id, by = %by, "deployment SUPERSEDED");
        Ok(VerifyOutcome::Superseded { deployment: d.id, by: by.to_string() })
    }

    /// The record moved on while this event was handled: report where it is now.
    async fn unchanged(&self, d: Deployment) -> Result<VerifyOutcome, Retryable> {
        let now = self.ledger.deployment(&d.target, &d.id).await?;
        let state = now.map_or(d.state, |r| r.state);
        Ok(VerifyOutcome::Unchanged { deployment: d.id, state })
    }

    /// An event about a deployment Ferry has no record of: someone else's, or ECS's own
    /// rollback of Ferry's deployment.
    async fn unknown(&self, ev: &EcsDeploymentEvent, invocation: &Invocation) -> Result<VerifyOutcome, Retryable> {
        let Some(target) = target_of(self.config, ev) else {
            info!(service = %ev.service, cluster = %ev.cluster, region = %ev.region, "not a service Ferry deploys");
            return Ok(VerifyOutcome::Ignored(format!(
                "{} in {} ({}, {}) is not a service Ferry deploys",
                ev.service, ev.cluster, ev.region, ev.account
            )));
        };
        // The GSI is eventually consistent: a record written a moment ago may not be in it
        // yet, but the target's history (a consistent read) has it. A push left PENDING by an
        // attempt that gave its lock up can be older than a burst of newer pushes' records.
        let history = self.ledger.history(&target, UNKNOWN_HISTORY).await?;
        if let Some(d) = history.iter().find(|d| d.is_rollout_id(&ev.deployment_id)) {
            return self.dispatch(d.clone(), ev, invocation).await;
        }
        let service = self.ecs.service(&target).await.ok();
        let undone = match &service {
            Some(service) => self.ecs_rolls_back(&target, ev, service).await?,
            None => None,
        };
        if undone.is_none() {
            let pending = self.pending(&target, &history).await?;
            if let Some(outcome) = self.adopt(&pending, ev, invocation).await? {
                return Ok(outcome);
            }
            // Not adoptable: perhaps because its invocation recorded it meanwhile (and
            // another push may hold the target already).
            if let Some(d) = self.ledger.by_ecs_deployment(&ev.deployment_id).await? {
                return self.dispatch(d, ev, invocation).await;
            }
        }
        let origin = if undone.is_some() { Origin::EcsRollback } else { Origin::External };
        let mut record = external_record(&target, ev, origin, self.clock.now());
        record.task_definition =
            service.and_then(|s| s.primary).filter(|p| p.id == ev.deployment_id).map(|p| p.task_definition);
        if let Some(d) = undone {
            record.reason = Some(format!("ECS rolling back Ferry deployment {}", d.id));
            record.rolls_back = Some(d.id.clone());
            if matches!(d.state, State::InProgress | State::Verifying) {
                self.fail(d, format!("ECS rolled it back: {}", ev.reason)).await?;
            }
        }
        let recorded = self.ledger.record_external(&record, HeadChange::None).await?;
        info!(deployment = %record.id, origin = origin.as_str(), state = %record.state, recorded, "deployment Ferry did not start");
        if ev.kind == EcsEventKind::Completed {
            // Recorded in progress first: SUCCEEDED is earned as any record's is.
            let now = self.ledger.deployment(&target, &record.id).await?.unwrap_or(record);
            return Box::pin(self.externals(now, ev, invocation)).await;
        }
        Ok(VerifyOutcome::External { deployment: record.id, origin, state: record.state })
    }

    /// The Ferry deployment ECS's new deployment `ev` rolls back, if it is ECS's own rollback:
    /// the service's settings have ECS roll back failures, Ferry's deployment is the target's
    /// active one and still open (or failed, or waiting for this rollback), and `ev` runs the
    /// revision that deployment replaced, or ECS failed that deployment (then its next one is
    /// the rollback, even before the API shows which revision it runs). Decided from settings and
    /// deployments, never from the wording of the event.
    async fn ecs_rolls_back(
        &self,
        target: &Target,
        ev: &EcsDeploymentEvent,
        service: &ServiceInfo,
    ) -> Result<Option<Deployment>, Retryable> {
        if !service.rollbacks.any() {
            return Ok(None);
        }
        let Some((active, _)) = self.ledger.head(target).await?.active else { return Ok(None) };
        let Some(d) = self.ledger.deployment(target, &active).await? else { return Ok(None) };
        let open = matches!(d.state, State::InProgress | State::Verifying | State::Failed | State::RollingBack);
        if d.origin != Origin::Ferry || !open || d.is_rollout_id(&ev.deployment_id) {
            return Ok(None);
        }
        let failed = d.failed_by_ecs() || d.ecs_deployment_id.as_ref().is_some_and(|id| service.failed.contains(id));
        let runs = service.primary.as_ref().filter(|p| p.id == ev.deployment_id).map(|p| p.task_definition.as_str());
        let rolls_back = match runs {
            Some(td) => {
                d.task_definition.as_deref() != Some(td)
                    && (failed || d.previous_task_definition.as_deref() == Some(td))
            }
            None => failed,
        };
        Ok(rolls_back.then_some(d))
    }

    /// The target's deployments still PENDING: the push whose deploy invocation holds (or
    /// held) the target's lock (its record may be older than the recent history shows, after
    /// a burst of pushes), and those in `history` (a rollback's, say).
    async fn pending(&self, target: &Target, history: &[Deployment]) -> Result<Vec<Deployment>, Retryable> {
        let held = match self.ledger.head(target).await?.lock {
            Some(lock) if !history.iter().any(|d| d.id == lock.deployment) => {
                self.ledger.deployment(target, &lock.deployment).await?
            }
            _ => None,
        };
        Ok(held.into_iter().chain(history.iter().cloned()).filter(|d| d.state == State::Pending).collect())
    }

    /// An ECS deployment of a target with deployments still PENDING: the deploy (or
    /// rollback) invocation updated the service but has not recorded the ECS deployment, because
    /// ECS was quicker or because the invocation died (a Lambda timeout, a lost answer). If
    /// the ECS deployment runs one's image, it is that one's rollout: it is recorded
    /// IN_PROGRESS (a lock taken for it released, so a redelivered deploy event finds it done)
    /// and handled as any record of its origin. `None` when it is none's; `Err` when ECS no
    /// longer shows which image it ran while one of them is still in flight.
    async fn adopt(
        &self,
        pending: &[Deployment],
        ev: &EcsDeploymentEvent,
        invocation: &Invocation,
    ) -> Result<Option<VerifyOutcome>, Retryable> {
        let Some(target) = pending.first().map(|d| d.target.clone()) else { return Ok(None) };
        let transient = |e: EcsError| match e {
            EcsError::Transient(m) => Err(Retryable(m)),
            _ => Ok(None),
        };
        let service = match self.ecs.service(&target).await {
            Ok(service) => service,
            Err(e) => return transient(e),
        };
        let Some(rollout) = service.primary.filter(|p| p.id == ev.deployment_id) else {
            // Overtaken already (by a rollback, an UpdateService by hand): which image it ran
            // is no longer to be seen. A deployment still in flight may have started it, and
            // its invocation records it any moment: look again then, rather than record the
            // rollout a second time as someone else's.
            let now = self.clock.now();
            return match pending.iter().find(|d| in_flight(d, now)) {
                Some(d) => Err(Retryable(format!(
                    "ECS deployment {} may be the rollout of {}, whose invocation has not recorded it yet",
                    ev.deployment_id, d.id
                ))),
                None => Ok(None),
            };
        };
        let containers = match self.ecs.containers(&target, &rollout.task_definition).await {
            Ok(containers) => containers,
            Err(e) => return transient(e),
        };
        let runs = |d: &&Deployment| containers.iter().any(|(_, image)| image.as_deref() == Some(d.image.as_str()));
        let Some(mut d) = pending.iter().find(runs).cloned() else { return Ok(None) };
        d.state = State::InProgress;
        d.ecs_deployment_id = Some(ev.deployment_id.clone());
        d.task_definition = Some(rollout.task_definition);
        d.updated_at = self.clock.now();
        if !self.ledger.adopt(&d, self.clock.now()).await? {
            return match self.ledger.deployment(&target, &d.id).await? {
                // Its invocation recorded it just now.
                Some(now) if now.is_rollout_id(&ev.deployment_id) => self.dispatch(now, ev, invocation).await.map(Some),
                // Still PENDING: another deployment holds the target; once it lets go, the
                // redelivered event adopts the rollout.
                Some(now) if now.state == State::Pending => {
                    Err(Retryable(format!("the rollout of {} cannot be recorded while another holds the target", d.id)))
                }
                _ => Ok(None),
            };
        }
        info!(deployment = %d.id, origin = d.origin.as_str(), ecs_deployment = %ev.deployment_id, "a rollout ECS reported before it was recorded: adopted");
        self.dispatch(d, ev, invocation).await.map(Some)
    }

    /// A later event about a deployment Ferry did not start.
    async fn externals(
        &self,
        d: Deployment,
        ev: &EcsDeploymentEvent,
        invocation: &Invocation,
    ) -> Result<VerifyOutcome, Retryable> {
        let state = match ev.kind {
            EcsEventKind::InProgress => {
                self.ledger.note_ecs_event(&d, &describe(ev)).await?;
                return Ok(VerifyOutcome::External { deployment: d.id, origin: d.origin, state: d.state });
            }
            EcsEventKind::Completed => State::Succeeded,
            EcsEventKind::Failed => State::Failed,
        };
        let open = d.state == State::InProgress || (d.state == State::Verifying && state == State::Succeeded);
        if !open {
            if d.state == state {
                // This event's end is on record, perhaps by an earlier attempt at it whose
                // answer was lost before it settled the rollback: settling is done once.
                self.settle_rollback(&d).await?;
            }
            return Ok(VerifyOutcome::Unchanged { deployment: d.id, state: d.state });
        }
        match (state, self.health_of(&d.target)) {
            (State::Succeeded, Some(health)) => Box::pin(self.prove_external(d, ev, health, invocation)).await,
            (State::Succeeded, None) => {
                let shown = "ECS completed it; the service has no smoke test".to_string();
                self.end_external(d, ev, State::Succeeded, shown).await
            }
            _ => self.end_external(d, ev, State::Failed, format!("ECS: {}", ev.reason)).await,
        }
    }

    /// A completed rollout Ferry did not start (by hand, ECS's rollback, Ferry's rollback) is
    /// smoke-tested like Ferry's own: SUCCEEDED only if the test passes, under a claim so
    /// one invocation tests it.
    async fn prove_external(
        &self,
        d: Deployment,
        ev: &EcsDeploymentEvent,
        health: &Health,
        invocation: &Invocation,
    ) -> Result<VerifyOutcome, Retryable> {
        let now = self.clock.now();
        let claim = invocation.claim(now, self.settings.claim);
        let verifying = Deployment { state: State::Verifying, ..d.clone() };
        if !self.ledger.claim(&verifying, State::InProgress, HeadChange::None, now, &claim).await? {
            info!(deployment = %d.id, "another invocation is verifying this deployment");
            return Ok(VerifyOutcome::Unchanged { deployment: d.id, state: State::Verifying });
        }
        let outcome = async {
            let service = self.ecs.service(&d.target).await.map_err(|e| Retryable(e.to_string()))?;
            if let Some(p) = service.primary.filter(|p| !d.is_rollout_id(&p.id)) {
                let superseded = self.supersede(verifying.clone(), &format!("ECS deployment {}", p.id)).await?;
                if d.origin == Origin::Rollback && matches!(superseded, VerifyOutcome::Superseded { .. }) {
                    self.settle_rollback(&Deployment { state: State::Superseded, ..verifying.clone() }).await?;
                }
                return Ok(superseded);
            }
            let url = health.url_for(&d.target, self.config.home_account.as_deref());
            match self.smoke_test(health, &url).await {
                Ok(()) => {
                    let shown = format!("smoke test of {url} passed");
                    self.end_external(verifying.clone(), ev, State::Succeeded, shown).await
                }
                Err(evidence) => {
                    let shown = format!("smoke test of {url} failed: {evidence}");
                    self.end_external(verifying.clone(), ev, State::Failed, shown).await
                }
            }
        }
        .await;
        if outcome.is_err()
            && let Err(e) = self.ledger.release_claim(&verifying, State::Verifying, &claim).await
        {
            warn!(deployment = %verifying.id, error = %e, "could not give the verification claim back");
        }
        outcome
    }

    /// Records the end of a rollout Ferry did not start, with what was shown, and settles the
    /// deployment it rolls back, if it is a rollback. A rollout by hand that failed is told to
    /// the team, and announced for the rollback function if the service's config says so.
    async fn end_external(
        &self,
        mut d: Deployment,
        ev: &EcsDeploymentEvent,
        state: State,
        shown: String,
    ) -> Result<VerifyOutcome, Retryable> {
        let head = if state == State::Succeeded { self.follows(&d).await? } else { HeadChange::None };
        let from = d.state;
        d.state = state;
        d.ecs_event = Some(describe(ev));
        d.updated_at = self.clock.now();
        d.live_at = (state == State::Succeeded).then_some(d.updated_at);
        d.reason = Some(shown);
        let by_hand = d.origin == Origin::External;
        if state == State::Failed && by_hand && self.service_of(&d.target).is_some_and(|s| s.roll_back_external) {
            self.bus.deployment_failed(&d).await.map_err(|e| Retryable(e.to_string()))?;
        }
        if self.ledger.transition(&d, &[from], head).await? {
            self.settle_rollback(&d).await?;
            if state == State::Failed && by_hand {
                warn!(deployment = %d.id, reason = ?d.reason, "a rollout Ferry did not start FAILED");
                self.notify(&d).await;
            }
        }
        Ok(VerifyOutcome::External { deployment: d.id, origin: d.origin, state })
    }

    /// A completed rollout Ferry did not start becomes what the head calls live, unless it
    /// runs the revision of Ferry's deployment live there (a `--force-new-deployment`): that
    /// deployment stays live on record, with its alarm window and its digest.
    async fn follows(&self, d: &Deployment) -> Result<HeadChange, Retryable> {
        let Some((active, _)) = self.ledger.head(&d.target).await?.active else { return Ok(HeadChange::Active) };
        let same = self.ledger.deployment(&d.target, &active).await?.is_some_and(|live| {
            live.origin == Origin::Ferry && live.task_definition.is_some() && live.task_definition == d.task_definition
        });
        Ok(if same { HeadChange::None } else { HeadChange::Active })
    }

    /// A rollback (Ferry's or ECS's) finished: the deployment it undoes is ROLLED_BACK, or
    /// ROLLBACK_FAILED, which pages and stops: a rollback is never itself rolled back.
    async fn settle_rollback(&self, rollback: &Deployment) -> Result<(), Retryable> {
        let Some(undone) = &rollback.rolls_back else { return Ok(()) };
        let Some(mut d) = self.ledger.deployment(&rollback.target, undone).await? else {
            warn!(rollback = %rollback.id, undone = %undone, "the rolled-back deployment is not on record");
            return Ok(());
        };
        let reason = d.reason.clone().unwrap_or_else(|| "failed".into());
        let mut live_now = rollback.task_definition.clone();
        let from: &[State] = match rollback.state {
            State::Succeeded => {
                d.state = State::RolledBack;
                &[State::Failed, State::RollingBack]
            }
            State::Superseded => {
                d.state = State::RolledBack;
                d.reason = Some(format!("{reason}; a newer deployment replaced it before its rollback completed"));
                live_now = None;
                &[State::RollingBack]
            }
            _ => {
                d.state = State::RollbackFailed;
                let why = rollback.reason.as_deref().unwrap_or("ECS failed the rollback");
                d.reason = Some(format!("{reason}; the rollback failed too: {why}"));
                &[State::RollingBack]
            }
        };
        d.updated_at = self.clock.now();
        if self.ledger.transition(&d, from, HeadChange::None).await? {
            match d.state {
                State::RolledBack => info!(deployment = %d.id, "rolled back"),
                _ => error!(deployment = %d.id, "ROLLBACK FAILED: paging"),
            }
            self.notify_with(&d, live_now).await;
        }
        Ok(())
    }

    async fn notify(&self, d: &Deployment) {
        self.notify_with(d, None).await;
    }

    async fn notify_with(&self, d: &Deployment, live_now: Option<String>) {
        crate::ports::notify(self.notifier, self.ledger, Notification::about(self.config, d, live_now)).await;
    }
}

fn rejected(why: String) -> VerifyOutcome {
    warn!(reason = %why, "event rejected");
    VerifyOutcome::Rejected(why)
}

fn describe(ev: &EcsDeploymentEvent) -> String {
    let name = match ev.kind {
        EcsEventKind::InProgress => "SERVICE_DEPLOYMENT_IN_PROGRESS",
        EcsEventKind::Completed => "SERVICE_DEPLOYMENT_COMPLETED",
        EcsEventKind::Failed => "SERVICE_DEPLOYMENT_FAILED",
    };
    format!("{name} at {}: {}", ev.at.to_rfc3339(), ev.reason)
}

/// The configured target an ECS event is about, if Ferry deploys that service.
pub fn target_of(config: &Config, ev: &EcsDeploymentEvent) -> Option<Target> {
    crate::plan::find_target(config, &ev.account, &ev.region, &ev.cluster, &ev.service)
}

/// Whether the invocation that wrote PENDING record `d` may still be at work on it: it was
/// written less than a lock's lease ago, and no Ferry function runs that long.
fn in_flight(d: &Deployment, now: chrono::DateTime<chrono::Utc>) -> bool {
    chrono::Duration::from_std(crate::invocation::LEASE).is_ok_and(|lease| now - d.updated_at < lease)
}

/// The record of a deployment Ferry did not start, from its first event.
fn external_record(
    target: &Target,
    ev: &EcsDeploymentEvent,
    origin: Origin,
    now: chrono::DateTime<chrono::Utc>,
) -> Deployment {
    // A completed one is recorded in progress, then proven.
    let state = if ev.kind == EcsEventKind::Failed { State::Failed } else { State::InProgress };
    Deployment {
        id: format!("{}-{}", ev.at.format("%Y%m%dT%H%M%SZ"), ev.deployment_id.replace('/', "-")),
        target: target.clone(),
        repository: String::new(),
        tag: String::new(),
        digest: String::new(),
        image: String::new(),
        event_id: ev.event_id.clone(),
        pushed_at: ev.at,
        state,
        reason: (state == State::Failed).then(|| format!("ECS: {}", ev.reason)),
        ecs_deployment_id: Some(ev.deployment_id.clone()),
        previous_task_definition: None,
        task_definition: None,
        created_at: now,
        updated_at: now,
        notify_error: None,
        origin,
        ecs_event: Some(describe(ev)),
        rolls_back: None,
        live_at: None,
    }
}
