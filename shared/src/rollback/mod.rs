//! The rollback function's handler: when a deployment fails, put the last revision that
//! passed verification back, quarantine the failed digest, and say what is live now.
//!
//! Triggers: Ferry's own "Deployment Failed" (from verify), ECS's SERVICE_DEPLOYMENT_FAILED,
//! a configured CloudWatch alarm going to ALARM, and an operator's "Rollback Requested".
//! The FAILED → ROLLING_BACK transition is a conditional write that claims the rollback for
//! one invocation, so duplicate and concurrent triggers for one failure cause one rollback;
//! the claim lapses with that invocation's deadline, so if Lambda stops it part-way, its
//! redelivered trigger takes the rollback over and finishes it. While it puts a revision back
//! it holds the target's lock, as a push does, so it never undoes a push that has updated
//! the service but not yet recorded it. When the service's settings say ECS rolls the failure
//! back by itself (circuit breaker or deployment alarms with rollback), Ferry does not roll
//! back again: it waits for ECS's rollback, which the verify function settles as ROLLED_BACK
//! (and its sweep pages if it never appears). A rollback's own deployment is never rolled back:
//! if it fails, the deployment is ROLLBACK_FAILED, a critical page goes out, and Ferry stops.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::event::{RollbackTrigger, parse_rollback_trigger};
use crate::invocation::{Invocation, Retryable, Unacted, receive};
use crate::lookup;
use crate::model::{Deployment, Origin, State, Target};
use crate::notify::Notification;
use crate::plan::{find_target, targets_of};
use crate::ports::{Clock, Ecs, HeadChange, Ledger, Notifier};

mod claim;
mod decisions;
mod put_back;

pub use decisions::{AlarmVerdict, Failure, alarm_concerns, ecs_rollback, last_known_good};

/// What the handler did about one failing deployment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", content = "detail")]
pub enum RollbackOutcome {
    /// Nothing to roll back (irrelevant or malformed event, unknown service, no Ferry deployment live).
    Ignored(String),
    /// An event the rollback function's rules never send it (another source), Ferry's own
    /// event from another account than Ferry's, or an AWS event from an account that is
    /// neither Ferry's nor a target's: logged as a warning, nothing done.
    Rejected(String),
    /// Another trigger already handled this failure.
    AlreadyHandled { deployment: String, state: State },
    /// Ferry pointed the service back at `to` (a task definition).
    RollingBack { deployment: String, to: String, ecs_deployment_id: String },
    /// ECS is rolling the service back by itself; verify records the end of it (or, if it
    /// never comes, the sweep pages).
    EcsRollingBack { deployment: String },
    /// ECS had already rolled the service back.
    RolledBack { deployment: String },
    /// No revision on record passed verification: nothing done, the team told.
    NoKnownGood { deployment: String },
    /// A newer deployment (`by`) replaced the failed one before it was rolled back: nothing
    /// put back, the deployment ROLLED_BACK, the team told.
    Overtaken { deployment: String, by: String },
    /// The rollback itself failed: paged, and stopped.
    RollbackFailed { deployment: String, reason: String },
    /// An alarm that went off before the deployment started, or after its window: nothing
    /// rolled back (the team is told of the latter).
    AlarmIgnored { deployment: String, alarm: String, why: String },
}

/// A deployment a trigger concerns, on one target.
struct Failing {
    target: Target,
    deployment: Option<Deployment>,
    reason: String,
    /// A revision the operator named.
    to: Option<String>,
    /// The alarm that fired, if an alarm is the trigger.
    alarm: Option<Alarm>,
    /// ECS's own SERVICE_DEPLOYMENT_FAILED is the trigger.
    by_ecs: bool,
}

struct Alarm {
    name: String,
    at: DateTime<Utc>,
    window: chrono::Duration,
}

#[derive(Debug)]
pub struct Rollbacker<'a, E, L, N, C> {
    pub config: &'a Config,
    pub ecs: &'a E,
    pub ledger: &'a L,
    pub notifier: &'a N,
    pub clock: &'a C,
    pub settings: RollbackSettings,
}

#[derive(Debug, Clone)]
pub struct RollbackSettings {
    /// How long a claim on a rollback lasts at most: longer than the function may run, so a
    /// rollback is never done twice at once (the invocation's deadline ends it sooner, so one
    /// that died part-way is taken over by its redelivered event).
    pub claim: Duration,
    /// How long to wait for another invocation rolling the same deployment back (one that
    /// died holds its claim until shortly after its deadline) before asking for a redelivery.
    pub wait: Duration,
    /// How long to wait for a push holding the target (a migration can hold it for minutes)
    /// before asking for a redelivery: with Lambda's two retries, longer than a push's lease.
    pub lock_wait: Duration,
}

impl Default for RollbackSettings {
    fn default() -> Self {
        RollbackSettings {
            claim: Duration::from_secs(14 * 60),
            wait: Duration::from_secs(20),
            lock_wait: Duration::from_secs(5 * 60),
        }
    }
}

impl<E: Ecs, L: Ledger, N: Notifier, C: Clock> Rollbacker<'_, E, L, N, C> {
    /// Handles one EventBridge event; one outcome per target it concerns. `Err` only for
    /// what a retry can fix.
    pub async fn handle(&self, event: Value, invocation: &Invocation) -> Result<Vec<RollbackOutcome>, Retryable> {
        let trigger = match receive(parse_rollback_trigger(event)) {
            Ok(trigger) => trigger,
            Err(unacted) => return Ok(vec![unacted.into()]),
        };
        if let Some(why) = self.distrust(&trigger) {
            return Ok(vec![Unacted::rejected(why).into()]);
        }
        info!(trigger = ?trigger, "rollback trigger");
        let mut outcomes = Vec::new();
        for Failing { target, deployment, reason, to, alarm, by_ecs } in self.resolve(trigger).await? {
            let verdict = |d: &Deployment| alarm.as_ref().map(|a| (a, alarm_concerns(d, a.at, a.window)));
            let outcome = match deployment {
                None => RollbackOutcome::Ignored(format!("no Ferry deployment is live on {target}")),
                Some(d) => match verdict(&d) {
                    Some((alarm, AlarmVerdict::Before)) => {
                        let why = format!("it went off at {}, before deployment {} started", alarm.at, d.id);
                        self.not_this_deployments(d, alarm, why).await
                    }
                    Some((alarm, AlarmVerdict::After { live_since })) => {
                        let why = format!(
                            "it went off at {}, more than {} min after deployment {} went live ({live_since}): not rolled back",
                            alarm.at,
                            alarm.window.num_minutes(),
                            d.id
                        );
                        self.not_this_deployments(d, alarm, why).await
                    }
                    _ => {
                        let failure = Failure {
                            by_ecs: by_ecs || d.failed_by_ecs(),
                            alarm: alarm.as_ref().map(|a| a.name.as_str()),
                            rolling_out: matches!(d.state, State::InProgress | State::Verifying),
                        };
                        self.roll_back(&target, d, reason, to.as_deref(), failure, invocation).await?
                    }
                },
            };
            info!(target = %target, outcome = ?outcome, "rollback decision");
            outcomes.push(outcome);
        }
        if outcomes.is_empty() {
            outcomes.push(RollbackOutcome::Ignored("the trigger concerns no service Ferry deploys".into()));
        }
        Ok(outcomes)
    }

    /// Why a trigger cannot be trusted, if it cannot: Ferry's own events come from Ferry's
    /// account only, an AWS service's from Ferry's or a target's.
    fn distrust(&self, trigger: &RollbackTrigger) -> Option<String> {
        let (account, whose) = match trigger {
            RollbackTrigger::DeploymentFailed { from, .. } | RollbackTrigger::Requested { from, .. } => {
                return (!self.config.is_home(from))
                    .then(|| format!("Ferry's own event sent from account {from}, not Ferry's"));
            }
            RollbackTrigger::EcsFailed(ev) => (&ev.account, "an ECS event"),
            RollbackTrigger::Alarm { account, .. } => (account, "an alarm"),
        };
        (!self.config.knows_account(account))
            .then(|| format!("{whose} from account {account}, which is neither Ferry's nor a target's"))
    }

    /// The targets a trigger concerns, each with the deployment that failed there (if any).
    async fn resolve(&self, trigger: RollbackTrigger) -> Result<Vec<Failing>, Retryable> {
        let failing =
            |target, deployment, reason| Failing { target, deployment, reason, to: None, alarm: None, by_ecs: false };
        Ok(match trigger {
            RollbackTrigger::DeploymentFailed { deployment, account, region, cluster, service, .. } => {
                // The target's account, as verify announced it (none: Ferry's own).
                let account = account.or_else(|| self.config.home_account.clone()).unwrap_or_default();
                let Some(target) = find_target(self.config, &account, &region, &cluster, &service) else {
                    return Ok(Vec::new());
                };
                let failed = self.ledger.deployment(&target, &deployment).await?;
                let reason =
                    failed.as_ref().and_then(|d| d.reason.clone()).unwrap_or_else(|| "deployment failed".into());
                vec![failing(target, failed, reason)]
            }
            RollbackTrigger::EcsFailed(ev) => {
                let Some(target) = find_target(self.config, &ev.account, &ev.region, &ev.cluster, &ev.service) else {
                    return Ok(Vec::new());
                };
                let id = ev.deployment_id.clone();
                let failed = match self.ledger.by_ecs_deployment(&id).await? {
                    Some(d) => Some(d),
                    // The GSI is eventually consistent: a record written a moment ago is in the
                    // table's recent history.
                    None => {
                        let recent = self.ledger.history(&target, lookup::PAGE).await?;
                        recent.into_iter().find(|d| d.ecs_deployment_id.as_deref() == Some(id.as_str()))
                    }
                };
                // Read afresh: a lifecycle hook's FAILED, noted just before, may not be in the GSI yet.
                let failed = match failed {
                    Some(d) => self.ledger.deployment(&target, &d.id).await?.or(Some(d)),
                    None => None,
                };
                let reason = crate::hook::failure_reason(failed.as_ref().map_or(&[], |d| &d.hooks), &ev.reason);
                vec![Failing { by_ecs: true, ..failing(target, failed, reason) }]
            }
            RollbackTrigger::Alarm { name, account, region, reason, at } => {
                let mut found = Vec::new();
                for env in &self.config.environments {
                    for service in self.config.services.iter().filter(|s| s.deploys_to(&env.name)) {
                        if !service.alarms.iter().any(|a| a.replace("{env}", &env.name) == name) {
                            continue;
                        }
                        for target in targets_of(self.config, &env.name, &service.service_name(&env.name)) {
                            let home = self.config.home_account.as_deref();
                            if target.region == region
                                && target.account.as_deref().or(home).is_none_or(|a| a == account)
                            {
                                let active = self.active(&target).await?;
                                let alarm = Some(Alarm { name: name.clone(), at, window: service.alarm_window });
                                let reason = format!("alarm {name}: {reason}");
                                found.push(Failing { alarm, ..failing(target, active, reason) });
                            }
                        }
                    }
                }
                found
            }
            RollbackTrigger::Requested { environment, service, region, to, by, .. } => {
                let mut found = Vec::new();
                for target in targets_of(self.config, &environment, &service) {
                    if region.as_deref().is_none_or(|r| r == target.region) {
                        let active = self.active(&target).await?;
                        let reason = format!("rollback requested by {by}");
                        found.push(Failing { to: to.clone(), ..failing(target, active, reason) });
                    }
                }
                found
            }
        })
    }

    /// The Ferry deployment live or in flight on the target.
    async fn active(&self, target: &Target) -> Result<Option<Deployment>, Retryable> {
        let Some((active, _)) = self.ledger.head(target).await?.active else { return Ok(None) };
        Ok(self.ledger.deployment(target, &active).await?.filter(|d| d.origin == Origin::Ferry))
    }

    /// The record of `d`'s rollback by `origin` (Ferry's or ECS's), if one was made; it is
    /// newer than `d`.
    async fn rollback_of(&self, d: &Deployment, origin: Origin) -> Result<Option<Deployment>, Retryable> {
        Ok(lookup::rollback_of(self.ledger, d, origin).await?)
    }

    async fn roll_back(
        &self,
        target: &Target,
        mut d: Deployment,
        reason: String,
        to: Option<&str>,
        failure: Failure<'_>,
        invocation: &Invocation,
    ) -> Result<RollbackOutcome, Retryable> {
        let by_hand_rolled_back = d.origin == Origin::External
            && self.config.services.iter().any(|s| {
                s.roll_back_external
                    && s.deploys_to(&target.environment)
                    && s.service_name(&target.environment) == target.service
            });
        if d.origin != Origin::Ferry && !by_hand_rolled_back {
            // Ferry's rollbacks and ECS's are never rolled back (a failed rollback has already
            // paged and stopped), nor rollouts by hand unless the service's config says so.
            return Ok(RollbackOutcome::Ignored(format!(
                "{} is a {} deployment, not one Ferry rolls back",
                d.id,
                d.origin.as_str()
            )));
        }
        // 1. The deployment is FAILED first (an alarm or an operator can fail a verified one).
        match d.state {
            State::InProgress | State::Verifying | State::Succeeded => {
                let from = d.state;
                d.state = State::Failed;
                d.reason = Some(reason.clone());
                d.updated_at = self.clock.now();
                if self.ledger.transition(&d, &[from], HeadChange::None).await? {
                    error!(deployment = %d.id, reason = %reason, "deployment FAILED");
                } else {
                    // Verify announces a failure before it records it: this trigger can find
                    // the deployment still VERIFYING and lose the race to verify's FAILED.
                    // Failed all the same, it is rolled back (or taken over) below.
                    match self.ledger.deployment(target, &d.id).await? {
                        Some(now) if matches!(now.state, State::Failed | State::RollingBack) => d = now,
                        _ => return self.already_handled(target, d).await,
                    }
                }
            }
            // ROLLING_BACK: taken over below if the invocation rolling it back died or failed.
            State::Failed | State::RollingBack => {}
            state => return Ok(RollbackOutcome::AlreadyHandled { deployment: d.id, state }),
        }
        if d.state == State::Failed {
            // 2. ECS may be rolling the service back by itself.
            if let Some(ecs_rollback) = self.ecs_rollback(&d, failure).await? {
                return self.leave_to_ecs(target, d, ecs_rollback).await;
            }
            // A blue/green, linear or canary rollout still under way is stopped instead: ECS
            // moves traffic back to blue, which still runs, and reports its own rollback.
            if failure.rolling_out && self.stop_rollout(&d).await? {
                warn!(deployment = %d.id, "stopped the rollout: ECS rolls back to blue");
                return self.leave_to_ecs(target, d, None).await;
            }
            if self.known_good(&d, to).await?.is_none() {
                return self.no_known_good(target, d, to).await;
            }
        }

        // 3. Ferry puts the last-known-good revision back, under a claim: one invocation at a
        // time, and the redelivered event of one that died or failed part-way takes it over.
        d.state = State::RollingBack;
        let claim = match self.claim(target, &mut d, invocation).await? {
            Ok(claim) => claim,
            Err(handled) => return Ok(handled),
        };
        let outcome = match self.lock(target, &d, invocation).await {
            Ok(()) => {
                let outcome = self.put_back(target, &mut d, to, failure).await;
                if let Err(e) = self.ledger.unlock(target, &invocation.attempt).await {
                    warn!(target = %target, error = %e, "could not give the target's lock up; it lapses");
                }
                outcome
            }
            Err(e) => Err(e),
        };
        // Failed: give the claim back, so the redelivered trigger takes the rollback over at once.
        if outcome.is_err()
            && let Err(e) = self.ledger.release_claim(&d, State::RollingBack, &claim).await
        {
            warn!(deployment = %d.id, error = %e, "could not give the rollback claim back; it lapses");
        }
        outcome
    }

    async fn already_handled(&self, target: &Target, d: Deployment) -> Result<RollbackOutcome, Retryable> {
        let state = self.ledger.deployment(target, &d.id).await?.map_or(d.state, |r| r.state);
        Ok(RollbackOutcome::AlreadyHandled { deployment: d.id, state })
    }

    async fn notify(&self, d: &Deployment, live_now: Option<String>) {
        crate::ports::notify(self.notifier, self.ledger, Notification::about(self.config, d, live_now)).await;
    }
}

/// A failed digest is quarantined on its target; a rollout by hand names none.
fn quarantine(d: &Deployment) -> HeadChange {
    if d.digest.is_empty() { HeadChange::None } else { HeadChange::Quarantine }
}

impl From<Unacted> for RollbackOutcome {
    fn from(unacted: Unacted) -> Self {
        match unacted {
            Unacted::Ignored(why) => RollbackOutcome::Ignored(why),
            Unacted::Rejected(why) => RollbackOutcome::Rejected(why),
        }
    }
}
