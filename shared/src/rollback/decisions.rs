//! Whether an alarm is the deployment's, the revision to go back to, and whether ECS rolls back by itself.

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::{Alarm, RollbackOutcome, Rollbacker, quarantine};
use crate::invocation::Retryable;
use crate::lookup;
use crate::model::{Deployment, Origin, State, Target};
use crate::notify::{Alert, Notification};
use crate::ports::{Clock, Ecs, Ledger, Notifier, ServiceInfo};

/// Whether an alarm that went off at `at` is `d`'s to answer for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmVerdict {
    /// While it rolled out, or within `window` after it went live: roll it back.
    Acts,
    /// Before `d` started: the alarm was in ALARM already.
    Before,
    /// More than `window` after `d` went live: not its doing, as far as anyone can tell.
    After { live_since: DateTime<Utc> },
}

/// An alarm acts on a deployment from the moment it started until `window` after it went
/// live (as ECS's deployment alarms do during a rollout and its bake time).
pub fn alarm_concerns(d: &Deployment, at: DateTime<Utc>, window: chrono::Duration) -> AlarmVerdict {
    if at < d.created_at {
        return AlarmVerdict::Before;
    }
    match d.state {
        State::Succeeded => {
            let live_since = d.live_at.unwrap_or(d.updated_at);
            if at > live_since + window { AlarmVerdict::After { live_since } } else { AlarmVerdict::Acts }
        }
        _ => AlarmVerdict::Acts,
    }
}

/// The revision to roll `failing` back to: the newest deployment of the target that passed
/// verification and is not the failing one (nor its digest) — never "revision − 1", which is
/// wrong whenever revisions were registered out of band. `to` names one explicitly.
pub fn last_known_good<'h>(
    history: &'h [Deployment],
    failing: &Deployment,
    to: Option<&str>,
) -> Option<&'h Deployment> {
    history.iter().find(|d| {
        d.origin == Origin::Ferry
            && d.state == State::Succeeded
            && d.task_definition.is_some()
            && d.id != failing.id
            && d.digest != failing.digest
            && to.is_none_or(|to| d.id == to)
    })
}

/// What is known of how `failing` failed, for deciding whether ECS rolls it back itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Failure<'a> {
    /// ECS failed its rollout (its SERVICE_DEPLOYMENT_FAILED is the trigger, or on record).
    pub by_ecs: bool,
    /// The alarm that fired, if an alarm is the trigger.
    pub alarm: Option<&'a str>,
    /// It was still rolling out (not yet verified) when the trigger came.
    pub rolling_out: bool,
}

/// Whether ECS is rolling `failing` back by itself (or has): `Some` with its rollback's record
/// if the verify function has made one yet. Decided from the service's settings and its
/// deployments, never from the wording of an event: ECS rolls back a rollout it failed when
/// its circuit breaker or its deployment alarms have rollback on, and a rollout during which
/// an alarm it watches fired; and a service already back on the revision `failing` replaced
/// was rolled back.
pub fn ecs_rollback<'r>(
    failing: &Deployment,
    recorded: Option<&'r Deployment>,
    service: &ServiceInfo,
    failure: Failure<'_>,
) -> Option<Option<&'r Deployment>> {
    if recorded.is_some() {
        return Some(recorded);
    }
    let rollbacks = &service.rollbacks;
    let ours = |id: &str| failing.ecs_deployment_id.as_deref() == Some(id);
    let failed_by_ecs = failure.by_ecs || service.failed.iter().any(|id| ours(id));
    let watched = failure.rolling_out && failure.alarm.is_some_and(|alarm| rollbacks.alarms.iter().any(|a| a == alarm));
    let moved_back = service.primary.as_ref().is_some_and(|p| {
        !ours(&p.id) && failing.previous_task_definition.as_deref() == Some(p.task_definition.as_str())
    });
    (rollbacks.any() && (failed_by_ecs || watched || moved_back)).then_some(None)
}

impl<E: Ecs, L: Ledger, N: Notifier, C: Clock> Rollbacker<'_, E, L, N, C> {
    /// An alarm that is not the deployment's to answer for: logged, and the team told if it
    /// went off after the window (the service is in trouble, but not by this deployment).
    pub(super) async fn not_this_deployments(&self, d: Deployment, alarm: &Alarm, why: String) -> RollbackOutcome {
        warn!(deployment = %d.id, alarm = %alarm.name, reason = %why, "alarm not acted on");
        if matches!(alarm_concerns(&d, alarm.at, alarm.window), AlarmVerdict::After { .. }) {
            let alert = Alert { alarm: alarm.name.clone(), note: why.clone() };
            crate::ports::notify(self.notifier, self.ledger, Notification::alert(self.config, &d, alert)).await;
        }
        RollbackOutcome::AlarmIgnored { deployment: d.id, alarm: alarm.name.clone(), why }
    }

    /// The revision to go back to from `d`: `to` if named, else the newest verified one
    /// (see [`last_known_good`]) whose digest has not failed here since, however far back.
    pub(super) async fn known_good(&self, d: &Deployment, to: Option<&str>) -> Result<Option<Deployment>, Retryable> {
        let quarantine = self.ledger.head(&d.target).await?.quarantine;
        let one = |r: &Deployment| {
            last_known_good(std::slice::from_ref(r), d, to).is_some() && !quarantine.contains(&r.digest)
        };
        Ok(match to {
            Some(to) => self.ledger.deployment(&d.target, to).await?.filter(one),
            None => lookup::newest(self.ledger, &d.target, None, one).await?,
        })
    }

    /// ECS is rolling `d` back by itself (or has: `ecs_rollback` SUCCEEDED): Ferry
    /// does not roll back again; verify settles `d` when ECS's rollback completes.
    pub(super) async fn leave_to_ecs(
        &self,
        target: &Target,
        mut d: Deployment,
        ecs_rollback: Option<Deployment>,
    ) -> Result<RollbackOutcome, Retryable> {
        let done = ecs_rollback.filter(|r| r.state == State::Succeeded);
        d.state = if done.is_some() { State::RolledBack } else { State::RollingBack };
        d.updated_at = self.clock.now();
        if !self.ledger.transition(&d, &[State::Failed], quarantine(&d)).await? {
            return self.already_handled(target, d).await;
        }
        Ok(match done {
            Some(r) => {
                self.notify(&d, r.task_definition.clone()).await;
                RollbackOutcome::RolledBack { deployment: d.id }
            }
            None => {
                info!(deployment = %d.id, "ECS is rolling back by itself; not rolling back again");
                RollbackOutcome::EcsRollingBack { deployment: d.id }
            }
        })
    }

    /// No revision on record passed verification: nothing is rolled back, and the team is
    /// told once (the same trigger delivered again finds the reason noted).
    pub(super) async fn no_known_good(
        &self,
        target: &Target,
        d: Deployment,
        to: Option<&str>,
    ) -> Result<RollbackOutcome, Retryable> {
        warn!(deployment = %d.id, "no known-good revision to roll back to");
        let why = format!(
            "; no revision on record passed verification{}, so nothing was rolled back",
            to.map(|t| format!(" as {t}")).unwrap_or_default()
        );
        let reason = d.reason.as_deref().unwrap_or("failed");
        let mut told = d.clone();
        told.reason = Some(format!("{reason}{why}"));
        if reason.ends_with(&why) || !self.ledger.note_reason(&told, State::Failed).await? {
            return self.already_handled(target, d).await;
        }
        self.notify(&told, None).await;
        Ok(RollbackOutcome::NoKnownGood { deployment: d.id })
    }

    /// Whether ECS is rolling `d` back by itself (or has): `Some` with its rollback's record
    /// if the verify function has made one yet (see [`ecs_rollback`]).
    pub(super) async fn ecs_rollback(
        &self,
        d: &Deployment,
        failure: Failure<'_>,
    ) -> Result<Option<Option<Deployment>>, Retryable> {
        let recorded = self.rollback_of(d, Origin::EcsRollback).await?;
        let service = self.service(&d.target).await?;
        Ok(ecs_rollback(d, recorded.as_ref(), &service, failure).map(|r| r.cloned()))
    }

    /// Stops `d`'s rollout if the service deploys blue/green, linear or canary and it is
    /// still under way; whether it did.
    pub(super) async fn stop_rollout(&self, d: &Deployment) -> Result<bool, Retryable> {
        let Some(revision) = d.task_definition.as_deref() else { return Ok(false) };
        if !self.service(&d.target).await?.rollbacks.blue_green {
            return Ok(false);
        }
        Ok(self.ecs.stop_rollout(&d.target, revision).await?)
    }

    pub(super) async fn service(&self, target: &Target) -> Result<ServiceInfo, Retryable> {
        self.ecs.service(target).await.map_err(Retryable::from)
    }
}
