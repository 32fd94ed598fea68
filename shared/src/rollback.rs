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
use crate::event::{Received, RollbackTrigger, parse_rollback_trigger};
use crate::invocation::{Invocation, Retryable, update_service};
use crate::lookup;
use crate::model::{Deployment, Origin, State, Target};
use crate::notify::{Alert, Notification};
use crate::plan::{find_target, targets_of};
use crate::ports::{Claim, Clock, Ecs, HeadChange, Ledger, Notifier, ServiceInfo};

/// What the handler did about one failing deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
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

#[derive(Debug)]
pub struct RollbackHandler<'a, E, L, N, C> {
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

impl<E: Ecs, L: Ledger, N: Notifier, C: Clock> RollbackHandler<'_, E, L, N, C> {
    /// Handles one EventBridge event; one outcome per target it concerns. `Err` only for
    /// what a retry can fix.
    pub async fn handle(&self, event: Value, invocation: &Invocation) -> Result<Vec<RollbackOutcome>, Retryable> {
        let trigger = match parse_rollback_trigger(event) {
            Ok(Received::Act(trigger)) => trigger,
            Ok(Received::Ignored(why)) => {
                info!(reason = %why, "event ignored");
                return Ok(vec![RollbackOutcome::Ignored(why)]);
            }
            Ok(Received::Rejected(why)) => return Ok(vec![rejected(why)]),
            Err(malformed) => {
                warn!(error = %malformed, "malformed event acknowledged without action");
                return Ok(vec![RollbackOutcome::Ignored(malformed.to_string())]);
            }
        };
        if let Some(why) = self.distrust(&trigger) {
            return Ok(vec![rejected(why)]);
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
                vec![Failing { by_ecs: true, ..failing(target, failed, format!("ECS: {}", ev.reason)) }]
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

    /// An alarm that is not the deployment's to answer for: logged, and the team told if it
    /// went off after the window (the service is in trouble, but not by this deployment).
    async fn not_this_deployments(&self, d: Deployment, alarm: &Alarm, why: String) -> RollbackOutcome {
        warn!(deployment = %d.id, alarm = %alarm.name, reason = %why, "alarm not acted on");
        if matches!(alarm_concerns(&d, alarm.at, alarm.window), AlarmVerdict::After { .. }) {
            let alert = Alert { alarm: alarm.name.clone(), note: why.clone() };
            crate::ports::notify(self.notifier, self.ledger, Notification::alert(self.config, &d, alert)).await;
        }
        RollbackOutcome::AlarmIgnored { deployment: d.id, alarm: alarm.name.clone(), why }
    }

    /// The Ferry deployment live or in flight on the target.
    async fn active(&self, target: &Target) -> Result<Option<Deployment>, Retryable> {
        let Some((active, _)) = self.ledger.head(target).await?.active else { return Ok(None) };
        Ok(self.ledger.deployment(target, &active).await?.filter(|d| d.origin == Origin::Ferry))
    }

    /// The record of `d`'s rollback by `origin` (Ferry's or ECS's), if one was made; it is
    /// newer than `d`.
    async fn rollback_of(&self, d: &Deployment, origin: Origin) -> Result<Option<Deployment>, Retryable> {
        let of_d = |r: &Deployment| r.origin == origin && r.rolls_back.as_deref() == Some(&d.id);
        Ok(lookup::newest(self.ledger, &d.target, Some(&d.id), of_d).await?)
    }

    /// The revision to go back to from `d`: `to` if named, else the newest verified one
    /// (see [`last_known_good`]) whose digest has not failed here since, however far back.
    async fn known_good(&self, d: &Deployment, to: Option<&str>) -> Result<Option<Deployment>, Retryable> {
        let quarantine = self.ledger.head(&d.target).await?.quarantine;
        let one = |r: &Deployment| {
            last_known_good(std::slice::from_ref(r), d, to).is_some() && !quarantine.contains(&r.digest)
        };
        Ok(match to {
            Some(to) => self.ledger.deployment(&d.target, to).await?.filter(one),
            None => lookup::newest(self.ledger, &d.target, None, one).await?,
        })
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

    /// Claims the rollback of `d` (FAILED → ROLLING_BACK, quarantining its digest) or takes
    /// it over from an invocation that died or failed part-way. While another invocation
    /// holds it and shows no progress (a rollback record past PENDING), waits for it to
    /// finish or its claim to lapse, then asks for a redelivery. `Err`: already handled.
    async fn claim(
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
                return Err(Retryable(format!("the rollback of {} is claimed by another invocation", d.id)));
            }
            info!(deployment = %d.id, "another invocation is rolling this deployment back; waiting");
            self.clock.sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(4));
        }
    }

    /// Takes the target's lock, as a push does, so that no push is between its UpdateService
    /// and its record while the rollback decides what to put back (one that is finishes
    /// first, and replaces `d`). Waits for a push holding it, then asks for a redelivery.
    async fn lock(&self, target: &Target, d: &Deployment, invocation: &Invocation) -> Result<(), Retryable> {
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
                return Err(Retryable(format!("{target} is locked by a deployment in flight")));
            }
            info!(target = %target, deployment = %d.id, "a deployment holds the target; waiting to roll back");
            self.clock.sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(4));
        }
    }

    /// ECS is rolling `d` back by itself (or has: `ecs_rollback` SUCCEEDED): Ferry
    /// does not roll back again; verify settles `d` when ECS's rollback completes.
    async fn leave_to_ecs(
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
    async fn no_known_good(
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
    async fn ecs_rollback(
        &self,
        d: &Deployment,
        failure: Failure<'_>,
    ) -> Result<Option<Option<Deployment>>, Retryable> {
        let recorded = self.rollback_of(d, Origin::EcsRollback).await?;
        let service = self.service(&d.target).await?;
        Ok(ecs_rollback(d, recorded.as_ref(), &service, failure).map(|r| r.cloned()))
    }

    async fn service(&self, target: &Target) -> Result<ServiceInfo, Retryable> {
        self.ecs.service(target).await.map_err(|e| Retryable(e.to_string()))
    }

    /// Points the service back at the last-known-good revision, `d` ROLLING_BACK under this
    /// invocation's claim. What an invocation that held the claim before and died did is read
    /// afresh: a rollback record still PENDING is finished (by UpdateService, or by recording
    /// the update it made), one past PENDING (or ECS's own rollback) leaves nothing to do.
    async fn put_back(
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

fn rejected(why: String) -> RollbackOutcome {
    warn!(reason = %why, "event rejected");
    RollbackOutcome::Rejected(why)
}
