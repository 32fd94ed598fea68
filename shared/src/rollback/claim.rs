//! Taking a rollback on: its claim (one invocation at a time, taken over when one dies) and the target's lock.

use std::time::Duration;

use tracing::{info, warn};

use super::{RollbackOutcome, Rollbacker, quarantine};
use crate::invocation::{Invocation, Retryable};
use crate::model::{Deployment, Origin, State, Target};
use crate::ports::{Claim, Clock, Ecs, Ledger, Notifier};

impl<E: Ecs, L: Ledger, N: Notifier, C: Clock> Rollbacker<'_, E, L, N, C> {
    /// Claims the rollback of `d` (FAILED → ROLLING_BACK, quarantining its digest) or takes
    /// it over from an invocation that died or failed part-way. While another invocation
    /// holds it and shows no progress (a rollback record past PENDING), waits for it to
    /// finish or its claim to lapse, then asks for a redelivery. `Err`: already handled.
    pub(super) async fn claim(
        &self,
        target: &Target,
        d: &mut Deployment,
        invocation: &Invocation,
    ) -> Result<Result<Claim, RollbackOutcome>, Retryable> {
        let started = self.clock.now();
        let mut backoff = Duration::from_millis(250);
        loop {
            let now = self.clock.now();
            let claim = invocation.claim(now, self.settings.claim);
            d.updated_at = now;
            if self.ledger.claim(d, State::Failed, quarantine(d), now, &claim).await? {
                return Ok(Ok(claim));
            }
            let state = self.ledger.deployment(target, &d.id).await?.map_or(d.state, |r| r.state);
            let handled = self.rollback_of(d, Origin::EcsRollback).await?.is_some()
                || self.rollback_of(d, Origin::Rollback).await?.is_some_and(|r| r.state != State::Pending);
            if state != State::RollingBack || handled {
                return Ok(Err(RollbackOutcome::AlreadyHandled { deployment: d.id.clone(), state }));
            }
            if (now - started).to_std().unwrap_or_default() >= self.settings.wait {
                return Err(Retryable::Busy(format!("the rollback of {} is claimed by another invocation", d.id)));
            }
            info!(deployment = %d.id, "another invocation is rolling this deployment back; waiting");
            self.clock.sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(4));
        }
    }

    /// Takes the target's lock, as a push does, so that no push is between its UpdateService
    /// and its record while the rollback decides what to put back (one that is finishes
    /// first, and replaces `d`). Waits for a push holding it, then asks for a redelivery.
    pub(super) async fn lock(&self, target: &Target, d: &Deployment, invocation: &Invocation) -> Result<(), Retryable> {
        let started = self.clock.now();
        let mut backoff = Duration::from_millis(250);
        loop {
            let now = self.clock.now();
            let until = invocation.lapse(now, self.settings.claim);
            match self.ledger.lock(target, &d.id, &invocation.attempt, until, now).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                // The lock may have been taken with its answer lost: give it up, if it is ours.
                Err(e) => {
                    if let Err(unlock) = self.ledger.unlock(target, &invocation.attempt).await {
                        warn!(target = %target, error = %unlock, "could not give the target's lock up; it lapses");
                    }
                    return Err(e.into());
                }
            }
            if (now - started).to_std().unwrap_or_default() >= self.settings.lock_wait {
                return Err(Retryable::Busy(format!("{target} is locked by a deployment in flight")));
            }
            info!(target = %target, deployment = %d.id, "a deployment holds the target; waiting to roll back");
            self.clock.sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(4));
        }
    }
}
