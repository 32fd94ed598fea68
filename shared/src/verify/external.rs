//! Later events about deployments Ferry did not start, proven like Ferry's own before they are
//! SUCCEEDED.

use tracing::{info, warn};

use super::{Verifier, VerifyOutcome, describe};
use crate::config::Health;
use crate::event::{EcsDeploymentEvent, EcsEventKind};
use crate::invocation::{Invocation, Retryable};
use crate::model::{Deployment, Origin, State};
use crate::ports::{Alarms, Clock, Ecs, EventBus, HeadChange, HealthProbe, Ledger, LoadBalancers, Notifier};

impl<E: Ecs, L: Ledger, N: Notifier, B: EventBus, H: HealthProbe, C: Clock, LB: LoadBalancers, A: Alarms>
    Verifier<'_, E, L, N, B, H, C, LB, A>
{
    /// A later event about a deployment Ferry did not start.
    pub(super) async fn externals(
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
    pub(super) async fn prove_external(
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
            let service = self.ecs.service(&d.target).await.map_err(Retryable::from)?;
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
    pub(super) async fn end_external(
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
            self.bus.deployment_failed(&d).await.map_err(Retryable::from)?;
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
    /// deployment stays live on record, with its alarm window and its digest. Nor does it
    /// take over from a deployment recorded after it (a push that waited for a rollback's
    /// lock and started while the rollback was being verified).
    pub(super) async fn follows(&self, d: &Deployment) -> Result<HeadChange, Retryable> {
        let Some((active, _)) = self.ledger.head(&d.target).await?.active else { return Ok(HeadChange::Active) };
        let stays = self.ledger.deployment(&d.target, &active).await?.is_some_and(|live| {
            let same = live.origin == Origin::Ferry
                && live.task_definition.is_some()
                && live.task_definition == d.task_definition;
            same || (live.id != d.id && live.created_at > d.created_at)
        });
        Ok(if stays { HeadChange::None } else { HeadChange::Active })
    }
}
