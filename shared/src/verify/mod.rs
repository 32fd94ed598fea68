//! The verify function's handler: a deployment is SUCCEEDED only when ECS completed it,
//! the service really runs the new revision on every task, and its smoke test passes.
//!
//! Every ECS deployment event is matched to Ferry's record by the ECS deployment id. A
//! deployment Ferry did not start (an UpdateService by hand, ECS's own
//! rollback) gets a record of its own on the target's history. Every change is a
//! conditional ledger write, so duplicate and out-of-order events never move a record
//! backwards.

use std::time::Duration;

use serde_json::Value;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::event::{EcsDeploymentEvent, EcsEventKind, VerifyEvent, parse_verify_event};
use crate::invocation::{Invocation, Retryable, Unacted, receive};
use crate::model::{Deployment, Origin, State, Target};
use crate::notify::Notification;
use crate::ports::{Alarms, Clock, Ecs, EcsError, EventBus, HeadChange, HealthProbe, Ledger, LoadBalancers, Notifier};

mod checks;
mod digest;
mod external;
mod hook;
mod sweep;
mod unknown;

pub use checks::{RolloutProblem, check_rollout, judge};

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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", content = "detail")]
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
    /// The weekly digest's schedule fired: the environments it covered, and why it was not
    /// sent, if it was not.
    Digest {
        environments: usize,
        error: Option<String>,
    },
    /// ECS invoked the function as a lifecycle hook: what it answered, and why.
    Hook {
        stage: String,
        deployment: Option<String>,
        answer: crate::hook::HookAnswer,
        why: String,
    },
}

/// What the function answers Lambda: a hook's answer exactly as ECS reads it, else the outcome.
pub fn response(outcome: &VerifyOutcome) -> Value {
    match outcome {
        VerifyOutcome::Hook { answer, .. } => serde_json::to_value(answer),
        other => serde_json::to_value(other),
    }
    .unwrap_or_else(|e| serde_json::json!({ "outcome": "Unserializable", "detail": e.to_string() }))
}

#[derive(Debug)]
pub struct Verifier<'a, E, L, N, B, H, C, LB, A> {
    pub config: &'a Config,
    pub ecs: &'a E,
    pub balancers: &'a LB,
    /// Read by the lifecycle hook once production traffic has moved.
    pub alarms: &'a A,
    pub ledger: &'a L,
    pub notifier: &'a N,
    pub bus: &'a B,
    pub probe: &'a H,
    pub clock: &'a C,
    pub settings: VerifySettings,
}

impl<E: Ecs, L: Ledger, N: Notifier, B: EventBus, H: HealthProbe, C: Clock, LB: LoadBalancers, A: Alarms>
    Verifier<'_, E, L, N, B, H, C, LB, A>
{
    /// Handles one EventBridge event, or one lifecycle hook invocation (never an error:
    /// ECS would take it for FAILED). `Err` only for what a retry can fix.
    pub async fn handle(&self, event: Value, invocation: &Invocation) -> Result<VerifyOutcome, Retryable> {
        if crate::hook::is_hook_call(&event) {
            return Ok(self.hook(&event).await);
        }
        let ev = match receive(parse_verify_event(event)) {
            Ok(VerifyEvent::Ecs(ev)) => ev,
            Ok(VerifyEvent::Sweep { account }) if self.config.is_home(&account) => {
                return self.sweep(invocation).await.map(VerifyOutcome::Swept);
            }
            Ok(VerifyEvent::Sweep { account }) => {
                return Ok(Unacted::rejected(format!("a sweep schedule of account {account}, not Ferry's")).into());
            }
            Ok(VerifyEvent::Digest { account }) if self.config.is_home(&account) => {
                return Box::pin(self.digest()).await;
            }
            Ok(VerifyEvent::Digest { account }) => {
                return Ok(Unacted::rejected(format!("a digest schedule of account {account}, not Ferry's")).into());
            }
            Err(unacted) => return Ok(unacted.into()),
        };
        if !self.config.knows_account(&ev.account) {
            return Ok(Unacted::rejected(format!(
                "an ECS event from account {}, which is neither Ferry's nor a target's",
                ev.account
            ))
            .into());
        }
        info!(ecs_deployment = %ev.deployment_id, event = ?ev.kind, service = %ev.service, "ECS deployment event");
        match self.ledger.by_ecs_deployment(&ev.deployment_id).await? {
            Some(d) => self.dispatch(d, &ev, invocation).await,
            None => self.unknown(&ev, invocation).await,
        }
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
                // The hook's answer, read afresh: the GSI that found `d` may not show it yet.
                let hooks = self.ledger.deployment(&d.target, &d.id).await?.map_or(d.hooks.clone(), |r| r.hooks);
                let reason = crate::hook::failure_reason(&hooks, &ev.reason);
                let d = Deployment { ecs_event: Some(describe(ev)), ..d };
                self.fail(d, reason).await
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
                Err(e @ EcsError::Transient(_)) => return Err(e.into()),
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
                    return Err(Retryable::Lagging(format!(
                        "ECS reported the deployment complete, but {why} ({looks} looks)"
                    )));
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
        for older in self.ledger.history(&d.target, crate::lookup::PAGE).await? {
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
        self.bus.deployment_failed(&d).await.map_err(Retryable::from)?;
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

impl From<Unacted> for VerifyOutcome {
    fn from(unacted: Unacted) -> Self {
        match unacted {
            Unacted::Ignored(why) => VerifyOutcome::Ignored(why),
            Unacted::Rejected(why) => VerifyOutcome::Rejected(why),
        }
    }
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
