//! The sweep: rollouts (and rollbacks) whose ECS events never came, settled from what the
//! service shows, on the reconciliation schedule.

use std::time::Duration;

use tracing::{error, info, warn};

use super::{Verifier, VerifyOutcome};
use crate::event::{EcsDeploymentEvent, EcsEventKind};
use crate::invocation::{Invocation, Retryable};
use crate::model::{Deployment, Origin, State, Target};
use crate::ports::{Alarms, Clock, Ecs, EventBus, HeadChange, HealthProbe, Ledger, LoadBalancers, Notifier};

/// The time a sweep keeps for settling one more target (a verification with its smoke test).
pub(super) const SWEEP_RESERVE: Duration = Duration::from_secs(270);

impl<E: Ecs, L: Ledger, N: Notifier, B: EventBus, H: HealthProbe, C: Clock, LB: LoadBalancers, A: Alarms>
    Verifier<'_, E, L, N, B, H, C, LB, A>
{
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

    pub(super) async fn sweep_target(
        &self,
        target: &Target,
        invocation: &Invocation,
    ) -> Result<Option<VerifyOutcome>, Retryable> {
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
        let service = self.ecs.service(target).await.map_err(Retryable::from)?;
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
    pub(super) async fn sweep_rollback(&self, mut d: Deployment) -> Result<Option<VerifyOutcome>, Retryable> {
        let service = self.ecs.service(&d.target).await.map_err(Retryable::from)?;
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
}
