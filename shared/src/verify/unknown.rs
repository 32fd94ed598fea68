//! ECS events about deployments Ferry has no record of: a rollout a deploy (or rollback)
//! invocation started but has not recorded yet (adopted), ECS's own rollback of Ferry's
//! deployment (told from the service's settings), or someone else's (recorded).

use tracing::info;

use super::{Verifier, VerifyOutcome, describe, target_of};
use crate::event::{EcsDeploymentEvent, EcsEventKind};
use crate::invocation::{Invocation, Retryable};
use crate::model::{Deployment, Origin, State, Target};
use crate::ports::{
    Alarms, Clock, Ecs, EcsError, EventBus, HeadChange, HealthProbe, Ledger, LoadBalancers, Notifier, ServiceInfo,
};

/// Whether the invocation that wrote PENDING record `d` may still be at work on it: it was
/// written less than a lock's lease ago, and no Ferry function runs that long.
pub(super) fn in_flight(d: &Deployment, now: chrono::DateTime<chrono::Utc>) -> bool {
    chrono::Duration::from_std(crate::invocation::LEASE).is_ok_and(|lease| now - d.updated_at < lease)
}

/// The record of a deployment Ferry did not start, from its first event.
pub(super) fn external_record(
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
        hooks: Vec::new(),
        version: None,
        approval: None,
        freeze_override: None,
        image_labels: Default::default(),
    }
}

impl<E: Ecs, L: Ledger, N: Notifier, B: EventBus, H: HealthProbe, C: Clock, LB: LoadBalancers, A: Alarms>
    Verifier<'_, E, L, N, B, H, C, LB, A>
{
    /// An event about a deployment Ferry has no record of: someone else's, or ECS's own
    /// rollback of Ferry's deployment.
    pub(super) async fn unknown(
        &self,
        ev: &EcsDeploymentEvent,
        invocation: &Invocation,
    ) -> Result<VerifyOutcome, Retryable> {
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
        let history = self.ledger.history(&target, crate::lookup::PAGE).await?;
        if let Some(d) = history.iter().find(|d| d.is_rollout_id(&ev.deployment_id)) {
            return self.dispatch(d.clone(), ev, invocation).await;
        }
        let service = match self.ecs.service(&target).await {
            Ok(service) => Some(service),
            // Whether ECS is rolling back cannot be told without it: the redelivery looks again.
            Err(e @ EcsError::Transient(_)) => return Err(e.into()),
            Err(_) => None,
        };
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
        // The rollout's own invocation may have recorded it while this looked: it was a moment
        // behind ECS's event (a rollback between its UpdateService and its record, say).
        let history = self.ledger.history(&target, crate::lookup::PAGE).await?;
        if let Some(d) = history.iter().find(|d| d.is_rollout_id(&ev.deployment_id)) {
            return self.dispatch(d.clone(), ev, invocation).await;
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
    /// deployments, never from the wording of the event. Never while Ferry's own rollback of
    /// that deployment waits for its rollout.
    pub(super) async fn ecs_rolls_back(
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
        // Ferry's rollback waiting for its rollout, or whose rollout this is (recorded meanwhile).
        if crate::lookup::rollback_of(self.ledger, &d, Origin::Rollback)
            .await?
            .is_some_and(|r| r.state == State::Pending || r.is_rollout_id(&ev.deployment_id))
        {
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
    pub(super) async fn pending(&self, target: &Target, history: &[Deployment]) -> Result<Vec<Deployment>, Retryable> {
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
    pub(super) async fn adopt(
        &self,
        pending: &[Deployment],
        ev: &EcsDeploymentEvent,
        invocation: &Invocation,
    ) -> Result<Option<VerifyOutcome>, Retryable> {
        let Some(target) = pending.first().map(|d| d.target.clone()) else { return Ok(None) };
        let transient = |e: EcsError| match e {
            e @ EcsError::Transient(_) => Err(e.into()),
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
                Some(d) => Err(Retryable::Busy(format!(
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
                Some(now) if now.state == State::Pending => Err(Retryable::Busy(format!(
                    "the rollout of {} cannot be recorded while another holds the target",
                    d.id
                ))),
                _ => Ok(None),
            };
        }
        info!(deployment = %d.id, origin = d.origin.as_str(), ecs_deployment = %ev.deployment_id, "a rollout ECS reported before it was recorded: adopted");
        self.dispatch(d, ev, invocation).await.map(Some)
    }
}
