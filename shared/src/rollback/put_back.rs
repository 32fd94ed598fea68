//! Putting the last-known-good revision back, unless a newer deployment replaced the failed one.

use tracing::{error, info, warn};

use super::{Failure, RollbackOutcome, Rollbacker};
use crate::invocation::{Retryable, update_service};
use crate::model::{Deployment, Origin, State, Target};
use crate::ports::{Clock, Ecs, HeadChange, Ledger, Notifier};

impl<E: Ecs, L: Ledger, N: Notifier, C: Clock> Rollbacker<'_, E, L, N, C> {
    /// Points the service back at the last-known-good revision, `d` ROLLING_BACK under this
    /// invocation's claim. What an invocation that held the claim before and died did is read
    /// afresh: a rollback record still PENDING is finished (by UpdateService, or by recording
    /// the update it made), one past PENDING (or ECS's own rollback) leaves nothing to do.
    pub(super) async fn put_back(
        &self,
        target: &Target,
        d: &mut Deployment,
        to: Option<&str>,
        failure: Failure<'_>,
    ) -> Result<RollbackOutcome, Retryable> {
        // Ferry's own rollback under way (by an invocation that died) is not ECS's.
        let ours = self.rollback_of(d, Origin::Rollback).await?;
        if ours.is_none() && self.ecs_rollback(d, failure).await?.is_some() {
            return Ok(RollbackOutcome::AlreadyHandled { deployment: d.id.clone(), state: d.state });
        }
        let service = self.service(target).await?;
        let mut rollback = match ours {
            Some(r) if r.state != State::Pending => {
                return Ok(RollbackOutcome::AlreadyHandled { deployment: d.id.clone(), state: d.state });
            }
            Some(r) => {
                info!(deployment = %d.id, rollback = %r.id, "taking over a rollback whose invocation stopped part-way");
                r.clone()
            }
            None => {
                // A newer deployment replaced `d` since it failed: nothing of `d` is live to
                // undo, and putting the last-known-good back would undo the newer one.
                // (A rollout by hand never became the head's active one: the service tells.)
                let head = self.ledger.head(target).await?;
                if let Some((active, _)) = head.active.filter(|(a, _)| *a != d.id && d.origin == Origin::Ferry) {
                    return self.overtaken(target, d, active).await;
                }
                // Nor is a rollout ECS runs that is not `d`'s (a push that gave its lock up before
                // recording it, an UpdateService by hand, ECS's own rollback) undone.
                let not_ds = |p: &&crate::ports::EcsDeployment| {
                    d.ecs_deployment_id.as_deref() != Some(p.id.as_str())
                        && d.task_definition.as_deref() != Some(p.task_definition.as_str())
                };
                if let Some(p) = service.primary.as_ref().filter(not_ds) {
                    return self.overtaken(target, d, format!("ECS deployment {}", p.id)).await;
                }
                let Some(good) = self.known_good(d, to).await? else {
                    warn!(deployment = %d.id, "ROLLING_BACK with no known-good revision on record");
                    return Ok(RollbackOutcome::AlreadyHandled { deployment: d.id.clone(), state: d.state });
                };
                // The rollback's own record, PENDING until ECS names its deployment: verify
                // follows that deployment and settles `d`, and adopts the record if ECS
                // reports the rollout before this function could record it.
                let now = self.clock.now();
                let rollback = Deployment {
                    id: format!("{}-rollback-{}", now.format("%Y%m%dT%H%M%SZ"), d.id),
                    state: State::Pending,
                    origin: Origin::Rollback,
                    rolls_back: Some(d.id.clone()),
                    reason: Some(format!("rolling back {} to {}", d.id, good.id)),
                    ecs_deployment_id: None,
                    previous_task_definition: d.task_definition.clone(),
                    task_definition: good.task_definition.clone(),
                    pushed_at: now,
                    created_at: now,
                    updated_at: now,
                    notify_error: None,
                    ecs_event: None,
                    live_at: None,
                    hooks: Vec::new(),
                    version: None,
                    approval: None,
                    freeze_override: None,
                    ..good.clone()
                };
                self.ledger.record_external(&rollback, HeadChange::None).await?;
                rollback
            }
        };
        let to_revision = rollback.task_definition.clone().unwrap_or_default();
        let updated = match &service.primary {
            // An invocation that died had updated the service already.
            Some(p) if p.task_definition == to_revision && d.ecs_deployment_id.as_ref() != Some(&p.id) => {
                Ok(p.id.clone())
            }
            _ => update_service(self.ecs, self.clock, target, &service, &to_revision).await,
        };
        let ecs_id = match updated {
            Ok(id) => id,
            Err(e) => {
                let why = format!("UpdateService to {to_revision} failed: {e}");
                rollback.state = State::Failed;
                rollback.reason = Some(why.clone());
                rollback.updated_at = self.clock.now();
                self.ledger.transition(&rollback, &[State::Pending], HeadChange::None).await?;
                d.state = State::RollbackFailed;
                d.reason = Some(format!("{}; the rollback failed: {why}", d.reason.as_deref().unwrap_or("failed")));
                d.updated_at = self.clock.now();
                self.ledger.transition(d, &[State::RollingBack], HeadChange::None).await?;
                error!(deployment = %d.id, error = %why, "ROLLBACK FAILED: paging");
                // The page says what ECS runs now, read afresh (not what was hoped for).
                let live = match self.ecs.service(target).await {
                    Ok(now) => now.primary.map(|p| p.task_definition),
                    Err(_) => service.primary.map(|p| p.task_definition),
                };
                self.notify(d, live).await;
                return Ok(RollbackOutcome::RollbackFailed { deployment: d.id.clone(), reason: why });
            }
        };
        rollback.state = State::InProgress;
        rollback.ecs_deployment_id = Some(ecs_id.clone());
        rollback.updated_at = self.clock.now();
        if !self.ledger.transition(&rollback, &[State::Pending], HeadChange::Active).await? {
            info!(rollback = %rollback.id, "the verify function recorded the rollout first");
        }
        warn!(deployment = %d.id, to = %to_revision, ecs_deployment = %ecs_id, "rolling back");
        self.notify(d, Some(to_revision.clone())).await;
        Ok(RollbackOutcome::RollingBack { deployment: d.id.clone(), to: to_revision, ecs_deployment_id: ecs_id })
    }

    /// `d`, ROLLING_BACK under this invocation's claim, was replaced by deployment `by`
    /// before anything was put back: it is ROLLED_BACK (its image is gone) and the service
    /// is left as it is.
    async fn overtaken(&self, target: &Target, d: &mut Deployment, by: String) -> Result<RollbackOutcome, Retryable> {
        d.state = State::RolledBack;
        let reason = d.reason.as_deref().unwrap_or("failed");
        d.reason =
            Some(format!("{reason}; deployment {by} replaced it before it was rolled back, so nothing was put back"));
        d.updated_at = self.clock.now();
        if !self.ledger.transition(d, &[State::RollingBack], HeadChange::None).await? {
            return self.already_handled(target, d.clone()).await;
        }
        info!(deployment = %d.id, by = %by, "replaced by a newer deployment before it was rolled back");
        self.notify(d, None).await;
        Ok(RollbackOutcome::Overtaken { deployment: d.id.clone(), by })
    }
}
