//! The deploy function's handler: an ECR push becomes one deployment per target (and its
//! schedule reconciles the pushes whose events never came: see [`crate::reconcile`]).
//!
//! Per target, in order: record PENDING and take the target's lock in one conditional
//! write (which also refuses a stale push or a digest already live), read the service,
//! render and register the new revision, run the migration if there is one, update the
//! service with the circuit breaker on, record IN_PROGRESS (or FAILED) and release the
//! lock, then notify. Targets are deployed concurrently.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;
use tracing::{error, info, warn};

use crate::approval::Verdict;
use crate::config::Config;
use crate::event::{Decision, DeployEvent, parse_deploy_event};
use crate::freeze::Frozen;
use crate::model::{Deployment, ImageLabels, Push, Refusal, State};
use crate::notify::Notification;
use crate::plan::{Plan, TargetPlan, plan};
use crate::ports::{
    Begin, Clock, Ecs, EcsError, Finish, HeadChange, Ledger, Notifier, Registry, RegistryError, Revision,
};

pub use crate::invocation::{Invocation, LEASE, Retryable};

mod migration;
pub mod reconcile;
use crate::invocation::{Unacted, receive, update_service};

/// Timings of the deploy handler.
#[derive(Debug, Clone)]
pub struct DeploySettings {
    /// How long a target's lock is held at most ([`LEASE`]).
    pub lease: Duration,
    /// How long to wait for another deployment to release a target before asking
    /// EventBridge to deliver the event again.
    pub lock_wait: Duration,
    /// How often a migration task is polled.
    pub poll: Duration,
}

impl Default for DeploySettings {
    fn default() -> Self {
        DeploySettings { lease: LEASE, lock_wait: Duration::from_secs(60), poll: Duration::from_secs(5) }
    }
}

/// What the handler did with one event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", content = "detail")]
pub enum DeployOutcome {
    /// Not a push Ferry acts on (a failed push, a delete, malformed).
    Ignored(String),
    /// An event the deploy function's rules never send it (another source), or a push from
    /// a registry account Ferry does not take images from: logged as a warning, nothing done.
    Rejected(String),
    /// A push that deploys nothing: the repository, the tag or the environment matches no service.
    Unplanned(Plan),
    Deployed(Vec<TargetOutcome>),
    /// The reconciliation schedule fired: what it found per target (see [`crate::reconcile`]).
    Reconciled(Vec<Reconciled>),
}

/// What happened on one target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome")]
pub enum TargetOutcome {
    /// The service is rolling out the new revision (IN_PROGRESS).
    Started {
        target: String,
        ecs_deployment_id: String,
    },
    Skipped {
        target: String,
        reason: String,
    },
    /// The target needs approval: recorded AWAITING_APPROVAL, nothing in ECS changed; the
    /// approvers are asked in Slack.
    AwaitingApproval {
        target: String,
        reason: String,
    },
    /// An approver rejected it (recorded REJECTED by whoever decided; said here).
    Rejected {
        target: String,
        reason: String,
    },
    /// The environment is frozen: recorded HELD, nothing in ECS changed; deployed when the
    /// freeze ends.
    Held {
        target: String,
        reason: String,
        until: chrono::DateTime<chrono::Utc>,
    },
    Failed {
        target: String,
        reason: String,
    },
    /// This event was already handled on this target: nothing done again.
    Duplicate {
        target: String,
        state: State,
    },
}

/// The deploy handler and the ports it works through.
#[derive(Debug)]
pub struct Deployer<'a, E, L, N, C, R> {
    pub config: &'a Config,
    pub ecs: &'a E,
    pub ledger: &'a L,
    pub notifier: &'a N,
    pub clock: &'a C,
    /// ECR, read by reconciliation only.
    pub registry: &'a R,
    pub settings: DeploySettings,
}

/// What reconciliation found on one target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Reconciled {
    pub target: String,
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub pushed_at: chrono::DateTime<chrono::Utc>,
    pub finding: Finding,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "finding", content = "detail")]
pub enum Finding {
    /// The target has what it should: why this image is not deployed.
    UpToDate(String),
    /// Ferry has not deployed this target yet; its first push will.
    NeverDeployed,
    /// A deployment holds the target; the next run looks again.
    Busy(String),
    /// A push newer than any Ferry took for the target: its event never came. Deployed
    /// through the normal path (`None` in a dry run).
    Missed(Option<TargetOutcome>),
    /// The push a freeze held, its freeze over: deployed now (`None` in a dry run).
    Released(Option<TargetOutcome>),
    /// The target's newest push waits for its approvers.
    Awaiting(String),
    /// The push awaiting approval was not decided on in time: REJECTED (not in a dry run).
    Expired,
    /// The target's newest push waits for its freeze to end.
    Held(String),
    /// The newest push Ferry took for the target is still PENDING past the lease: every
    /// attempt at its event failed. Deployed again from its record (`None` in a dry run);
    /// the finding names that push, not ECR's newest image.
    Stranded(Option<TargetOutcome>),
}

/// An operator's decision to deploy during a freeze: who, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeOverride {
    pub by: String,
    pub reason: String,
}

impl FreezeOverride {
    /// As the record keeps it ([`Deployment::freeze_override`]).
    pub fn noted(&self) -> String {
        format!("{}: {}", self.by, self.reason)
    }
}

/// What a push brings past the release policy, as its record keeps it: an operator's freeze
/// override (who: why), the approval it was given.
#[derive(Debug, Clone, Default)]
pub(crate) struct Release {
    pub freeze_override: Option<String>,
    pub approval: Option<String>,
    pub image_labels: ImageLabels,
    /// The push is an existing record resumed by its own id (a decision, a release, a retry).
    pub resumes: bool,
}

impl Release {
    /// What `d`'s record was given already.
    pub(crate) fn of(d: &Deployment) -> Release {
        Release {
            freeze_override: d.freeze_override.clone(),
            approval: d.approval.clone(),
            image_labels: d.image_labels.clone(),
            resumes: true,
        }
    }
}

/// How long a push waits for its image's labels at most.
const LABELS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// What the push already waiting on a target (the same image and tag under another event id)
/// makes of a push again.
enum AlreadyWaiting {
    /// It goes on as that record (its push, and what the record was given).
    As(Push, Release),
    /// That record still waits: this is its outcome.
    Waits(TargetOutcome),
}

/// Why a rollout stopped before the service was updated.
enum Stop {
    Failed(String),
    Skipped(String),
    Retry(Retryable),
}

impl From<EcsError> for Stop {
    fn from(e: EcsError) -> Self {
        match e {
            transient @ EcsError::Transient(_) => Stop::Retry(transient.into()),
            other => Stop::Failed(other.to_string()),
        }
    }
}

impl<E: Ecs, L: Ledger, N: Notifier, C: Clock, R: Registry> Deployer<'_, E, L, N, C, R> {
    /// Handles one EventBridge event. `Err` only for what a retry can fix.
    pub async fn handle(&self, event: Value, invocation: &Invocation) -> Result<DeployOutcome, Retryable> {
        self.handle_overriding(event, invocation, None).await
    }

    /// [`Self::handle`], deploying a push now even if its environment is frozen (`ferry deploy
    /// --override-freeze`): the record says who decided so and why.
    pub async fn handle_overriding(
        &self,
        event: Value,
        invocation: &Invocation,
        freeze_override: Option<&FreezeOverride>,
    ) -> Result<DeployOutcome, Retryable> {
        let push = match receive(parse_deploy_event(event)) {
            Ok(DeployEvent::Push(push)) => push,
            Ok(DeployEvent::Reconcile { account }) if self.config.is_home(&account) => {
                return self.reconcile(invocation, false).await.map(DeployOutcome::Reconciled);
            }
            Ok(DeployEvent::Reconcile { account }) => {
                return Ok(
                    Unacted::rejected(format!("a reconciliation schedule of account {account}, not Ferry's")).into()
                );
            }
            Ok(DeployEvent::Decided(decision)) if self.config.is_home(&decision.account) => {
                return self.decided(decision, invocation).await;
            }
            Ok(DeployEvent::Decided(decision)) => {
                return Ok(
                    Unacted::rejected(format!("a decision from account {}, not Ferry's", decision.account)).into()
                );
            }
            Err(unacted) => return Ok(unacted.into()),
        };
        info!(event = %push.event_id, repository = %push.repository, tag = %push.tag, digest = %push.digest, "push received");
        if !self.config.takes_pushes_from(&push.registry_account) {
            return Ok(Unacted::rejected(format!(
                "a push to the registry of account {}, which no environment takes images from",
                push.registry_account
            ))
            .into());
        }
        self.deploy_push(push, invocation, freeze_override).await
    }

    /// An approver's decision, recorded already: an approved push is deployed now, a rejected
    /// one is said.
    async fn decided(&self, decision: Decision, invocation: &Invocation) -> Result<DeployOutcome, Retryable> {
        let Some(target) = crate::plan::target_by_key(self.config, &decision.target) else {
            return Ok(Unacted::rejected(format!(
                "a decision on target {}, which Ferry does not deploy",
                decision.target
            ))
            .into());
        };
        let Some(d) = self.ledger.deployment(&target, &decision.deployment).await? else {
            return Ok(Unacted::Ignored(format!("no deployment {} on {target}", decision.deployment)).into());
        };
        info!(deployment = %d.id, target = %target, by = %decision.by, verdict = ?decision.verdict, state = %d.state, "decision");
        let name = target.to_string();
        let outcome = match (decision.verdict, d.state) {
            (Verdict::Approve, State::Pending) if d.approval.is_some() => {
                let push = crate::reconcile::push_of(&d);
                let Some(tp) = self.replan(&push, &target) else {
                    return Ok(Unacted::Ignored(format!("push {} no longer deploys to {target}", d.id)).into());
                };
                self.deploy_target(&push, &tp, invocation, &Release::of(&d)).await?
            }
            (Verdict::Reject, State::Rejected) => {
                self.notify(&d).await;
                TargetOutcome::Rejected { target: name, reason: d.reason.clone().unwrap_or_default() }
            }
            (_, state) => TargetOutcome::Duplicate { target: name, state },
        };
        Ok(DeployOutcome::Deployed(vec![outcome]))
    }

    /// `push` at the time ECR keeps for it, when that falls in the second its event says:
    /// two pushes of one second are ordered so. The deployment's id, made from the second,
    /// is the same either way.
    async fn ordered(&self, mut push: Push) -> Result<Push, Retryable> {
        match self.registry.pushed_at(&push.repository, &push.registry_account, &push.digest).await {
            Ok(Some(at)) if at.timestamp() == push.pushed_at.timestamp() => push.pushed_at = at,
            Ok(_) => {}
            Err(RegistryError::Missing(why)) => {
                info!(repository = %push.repository, reason = %why, "ECR's push time unknown: the event's second orders it");
            }
            Err(transient @ RegistryError::Transient(_)) => return Err(transient.into()),
        }
        Ok(push)
    }

    /// What the pushed image's labels say of its source; none when it has none, is in another
    /// account's registry, or cannot be read in [`LABELS_TIMEOUT`] (logged: labels only measure
    /// lead time, and never hold a deployment up).
    async fn image_labels(&self, push: &Push) -> ImageLabels {
        if !self.config.is_home(&push.registry_account) {
            return ImageLabels::default(); // the deploy role reads only Ferry's own repositories
        }
        let read = self.registry.labels(&push.repository, &push.registry_account, &push.digest);
        match tokio::time::timeout(LABELS_TIMEOUT, read).await {
            Ok(Ok(labels)) => labels,
            Ok(Err(e)) => {
                info!(repository = %push.repository, digest = %push.digest, reason = %e, "image labels not read");
                ImageLabels::default()
            }
            Err(_) => {
                info!(repository = %push.repository, digest = %push.digest, "image labels not read in time");
                ImageLabels::default()
            }
        }
    }

    /// Deploys `push` to every target it plans to, concurrently.
    async fn deploy_push(
        &self,
        push: Push,
        invocation: &Invocation,
        freeze_override: Option<&FreezeOverride>,
    ) -> Result<DeployOutcome, Retryable> {
        let targets = match plan(self.config, &push) {
            Plan::Deploy { environment, targets } => {
                info!(environment = %environment, targets = targets.len(), "push matched");
                targets
            }
            Plan::NotAllowed { environment, reason } => {
                warn!(environment = %environment, repository = %push.repository, account = %push.registry_account, reason = %reason, "push refused");
                return Ok(DeployOutcome::Unplanned(Plan::NotAllowed { environment, reason }));
            }
            unplanned => {
                info!(repository = %push.repository, tag = %push.tag, outcome = ?unplanned, "push deploys nothing");
                return Ok(DeployOutcome::Unplanned(unplanned));
            }
        };
        // Asked only of a push that deploys somewhere: ECR's own push time orders it.
        let push = &self.ordered(push).await?;
        let release = Release {
            freeze_override: freeze_override.map(FreezeOverride::noted),
            approval: None,
            image_labels: self.image_labels(push).await,
            resumes: false,
        };
        let results = join_all(targets.iter().map(|t| self.deploy_target(push, t, invocation, &release))).await;
        let mut outcomes = Vec::with_capacity(results.len());
        let mut retry = Vec::new();
        for result in results {
            match result {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => retry.push(e),
            }
        }
        if !retry.is_empty() {
            // Completed targets are duplicates on redelivery, so retrying the whole event is safe.
            error!(errors = ?retry, "some targets need a retry");
            return Err(if retry.len() == 1 { retry.remove(0) } else { Retryable::Targets(retry) });
        }
        Ok(DeployOutcome::Deployed(outcomes))
    }

    pub(crate) async fn deploy_target(
        &self,
        push: &Push,
        plan: &TargetPlan,
        invocation: &Invocation,
        release: &Release,
    ) -> Result<TargetOutcome, Retryable> {
        let target = plan.target.to_string();
        let again;
        let (push, release) = match self.already_waiting(push, plan, release).await? {
            Some(AlreadyWaiting::Waits(outcome)) => return Ok(outcome),
            Some(AlreadyWaiting::As(push, release)) => {
                again = (push, release);
                (&again.0, &again.1)
            }
            None => (push, release),
        };
        let mut deployment = plan.deployment(push, self.clock.now());
        deployment.approval = release.approval.clone();
        deployment.freeze_override = release.freeze_override.clone();
        deployment.image_labels = release.image_labels.clone();
        let acquired = match self.acquire(&deployment, invocation).await {
            Ok(acquired) => acquired,
            // The write that takes the lock may have gone through with its answer lost.
            Err(e) => return Err(self.give_up(plan, invocation, e).await),
        };
        match acquired {
            Acquired::Yes => {}
            Acquired::Skip(refusal) => {
                let reason = refusal.skip_reason().unwrap_or_default();
                deployment.state = State::Skipped;
                deployment.reason = Some(reason.clone());
                self.ledger.record_skipped(&deployment).await?;
                info!(target = %target, reason = %reason, "skipped");
                // A routine skip says nothing; a quarantined digest coming back, or a release
                // that will not deploy because a higher version is out, is news.
                if matches!(refusal, Refusal::Quarantined | Refusal::Older { .. }) {
                    self.notify(&deployment).await;
                }
                return Ok(TargetOutcome::Skipped { target, reason });
            }
            Acquired::Duplicate(state) => {
                info!(target = %target, state = %state, "duplicate event: already handled");
                return Ok(TargetOutcome::Duplicate { target, state });
            }
        };
        if let Err(e) = self.supersede_held(&deployment).await {
            return Err(self.give_up(plan, invocation, e.into()).await);
        }
        if let Err(e) = self.approved_already(&mut deployment).await {
            return Err(self.give_up(plan, invocation, e.into()).await);
        }
        let mut context = Vec::new();
        let outcome = if let Some(reason) = self.awaiting_approval(&deployment) {
            deployment.state = State::AwaitingApproval;
            deployment.reason = Some(reason.clone());
            context = self.for_approvers(&deployment).await;
            TargetOutcome::AwaitingApproval { target: target.clone(), reason }
        } else if let Some(frozen) = self.held_by_freeze(&mut deployment) {
            let reason =
                format!("held: {}; deploys when the freeze ends ({})", frozen.reason, frozen.until.to_rfc3339());
            deployment.state = State::Held;
            deployment.reason = Some(reason.clone());
            TargetOutcome::Held { target: target.clone(), reason, until: frozen.until }
        } else {
            self.rolled_out(&mut deployment, plan, invocation).await?
        };
        deployment.updated_at = self.clock.now();
        match self.ledger.finish(&deployment, &invocation.attempt).await {
            Ok(Finish::Recorded) => {}
            // The verify function adopted the rollout when ECS reported it first: its record
            // (and its messages) tell the rest.
            Ok(Finish::AlreadyIn(state)) => {
                info!(target = %target, state = %state, "already recorded by the verify function");
                return Ok(TargetOutcome::Duplicate { target, state });
            }
            // The redelivered event finds the service updated and adopts the rollout.
            Err(e) => return Err(self.give_up(plan, invocation, e.into()).await),
        }
        match &outcome {
            TargetOutcome::Failed { reason, .. } => error!(target = %target, reason = %reason, "deployment failed"),
            _ => info!(target = %target, outcome = ?outcome, "deployment recorded"),
        }
        if deployment.state != State::Skipped {
            let message = Notification { context, ..Notification::about(self.config, &deployment, None) };
            crate::ports::notify(self.notifier, self.ledger, message).await;
        }
        Ok(outcome)
    }

    /// The deployment rolled out (or stopped before the service was updated), as an outcome.
    async fn rolled_out(
        &self,
        d: &mut Deployment,
        plan: &TargetPlan,
        invocation: &Invocation,
    ) -> Result<TargetOutcome, Retryable> {
        Ok(match self.roll_out(d, plan).await {
            Ok(ecs_id) => {
                d.state = State::InProgress;
                d.ecs_deployment_id = Some(ecs_id.clone());
                TargetOutcome::Started { target: d.target.to_string(), ecs_deployment_id: ecs_id }
            }
            Err(Stop::Failed(reason)) => {
                d.state = State::Failed;
                d.reason = Some(reason.clone());
                TargetOutcome::Failed { target: d.target.to_string(), reason }
            }
            Err(Stop::Skipped(reason)) => {
                d.state = State::Skipped;
                d.reason = Some(reason.clone());
                TargetOutcome::Skipped { target: d.target.to_string(), reason }
            }
            Err(Stop::Retry(reason)) => {
                return Err(self.give_up(plan, invocation, reason).await);
            }
        })
    }

    /// Takes what the record was given already (the push's event delivered again after it was
    /// approved, or overridden): asked only where a release policy applies and the push brought neither.
    async fn approved_already(&self, d: &mut Deployment) -> Result<(), crate::ports::LedgerError> {
        if self.has_release_policy(&d.target, &d.repository)
            && (d.approval.is_none() || d.freeze_override.is_none())
            && let Some(record) = self.ledger.deployment(&d.target, &d.id).await?
        {
            d.approval = d.approval.take().or(record.approval);
            d.freeze_override = d.freeze_override.take().or(record.freeze_override);
        }
        Ok(())
    }

    /// Whether a push of `repository` to `target` may wait (approval, or freeze windows): only
    /// then can its record have been given anything, or a push wait there.
    fn has_release_policy(&self, target: &crate::model::Target, repository: &str) -> bool {
        self.config.approval_for(target, repository).is_some()
            || self.config.environment(&target.environment).is_some_and(|e| !e.freeze.is_empty())
    }

    /// What an approver weighs beside `d`: the image it replaces here, and how it did in the
    /// environment before this one. A read that fails leaves its line out, never the message.
    async fn for_approvers(&self, d: &Deployment) -> Vec<(String, String)> {
        let short = crate::notify::short_digest;
        let mut context = Vec::new();
        match self.ledger.head(&d.target).await {
            Ok(head) => context.push((
                "Replaces".to_string(),
                match head.active {
                    Some((id, digest)) => format!("`{}` (deployment {id})", short(&digest)),
                    None => "nothing Ferry deployed yet".to_string(),
                },
            )),
            Err(e) => warn!(target = %d.target, error = %e, "what is live is left out of the approval message"),
        }
        let Some((env, targets)) = crate::plan::previous_environment(self.config, &d.target, &d.repository) else {
            return context;
        };
        let (mut verified, mut live, mut failed) = (0, 0, 0);
        for t in &targets {
            match self.ledger.head(t).await {
                Ok(head) => {
                    verified += usize::from(head.last_known_good.is_some_and(|(_, digest)| digest == d.digest));
                    live += usize::from(head.active.is_some_and(|(_, digest)| digest == d.digest));
                    failed += usize::from(head.quarantine.contains(&d.digest));
                }
                Err(e) => {
                    warn!(target = %t, error = %e, "the previous environment is left out of the approval message");
                    return context;
                }
            }
        }
        let n = targets.len();
        let said = match (verified, live) {
            _ if failed > 0 => format!("FAILED and rolled back on {failed} of {n} targets (quarantined there)"),
            (v, _) if v == n => format!("verified on every target ({n})"),
            (0, 0) => "not deployed there, or not its latest verified image".to_string(),
            (0, l) => format!("deployed on {l} of {n} targets, not verified yet"),
            (v, _) => format!("verified on {v} of {n} targets"),
        };
        context.push((format!("In {env}"), said));
        context
    }

    /// Why `d` waits for approval, if its target needs one it has not been given.
    fn awaiting_approval(&self, d: &Deployment) -> Option<String> {
        let rule = self.config.approval_for(&d.target, &d.repository).filter(|_| d.approval.is_none())?;
        Some(format!(
            "awaiting approval: {} of {} (expires {})",
            rule.required,
            rule.approvers.join(", "),
            (d.created_at + rule.timeout).to_rfc3339()
        ))
    }

    /// The freeze that holds `d`, if its environment is frozen and no operator overrode it
    /// (the override, on the record, is said in its reason).
    fn held_by_freeze(&self, d: &mut Deployment) -> Option<Frozen> {
        let frozen = self.config.environment(&d.target.environment)?.frozen(self.clock.now())?;
        let Some(by) = &d.freeze_override else { return Some(frozen) };
        warn!(target = %d.target, by = %by, freeze = %frozen.reason, "deploying during a freeze");
        d.reason = Some(format!("freeze ({}) overridden by {by}", frozen.reason));
        None
    }

    /// The record of this image and tag already waiting on the target under another event id
    /// (`ferry deploy` replays a push under its own; ECR may announce a push again), if one is:
    /// a held push goes on as that record only with a freeze override (noted on it), an
    /// approved one (still PENDING) always; a push awaiting approval keeps waiting, with the
    /// override noted for when it is approved.
    async fn already_waiting(
        &self,
        push: &Push,
        plan: &TargetPlan,
        release: &Release,
    ) -> Result<Option<AlreadyWaiting>, Retryable> {
        let t = &plan.target;
        // A record resumed by its own id is that push already; only a target with a release
        // policy ever has a push waiting: no read for the others.
        if release.resumes {
            return Ok(None);
        }
        if !self.has_release_policy(t, &push.repository) {
            return Ok(None);
        }
        // The same record is this push's own event again, which `begin` knows, unless overridden.
        let other = |id: &String| *id != crate::model::deployment_id(push) || release.freeze_override.is_some();
        let Some(id) = self.ledger.head(t).await?.held.filter(other) else { return Ok(None) };
        let same = |d: &Deployment| d.digest == push.digest && d.tag == push.tag;
        let Some(mut waiting) = self.ledger.deployment(t, &id).await?.filter(same) else { return Ok(None) };
        let was = waiting.state;
        let name = t.to_string();
        let goes_on = match was {
            // Approved, or released by an earlier override whose attempt stopped: it resumes.
            State::Pending => true,
            State::Held => release.freeze_override.is_some(),
            State::AwaitingApproval => false,
            _ => return Ok(None),
        };
        let noted = |by: &&String| waiting.freeze_override.as_ref() != Some(*by) || was == State::Held;
        if let Some(by) = release.freeze_override.as_ref().filter(noted) {
            waiting.freeze_override = Some(by.clone());
            waiting.state = if was == State::Held { State::Pending } else { was };
            waiting.updated_at = self.clock.now();
            if !self.ledger.transition(&waiting, &[was], HeadChange::None).await? {
                return Ok(None); // decided meanwhile: this push goes its own way
            }
            info!(target = %t, deployment = %id, by = %by, state = %waiting.state, "freeze override noted on the waiting push");
        }
        Ok(Some(match was {
            _ if goes_on => AlreadyWaiting::As(crate::reconcile::push_of(&waiting), Release::of(&waiting)),
            State::AwaitingApproval => AlreadyWaiting::Waits(TargetOutcome::AwaitingApproval {
                target: name,
                reason: format!("deployment {id} of this image already awaits approval"),
            }),
            state => AlreadyWaiting::Waits(TargetOutcome::Duplicate { target: name, state }),
        }))
    }

    /// Marks the target's waiting push (held, or awaiting approval) SUPERSEDED once a newer one
    /// (`d`) is taken there: a push older than the newest can never deploy.
    async fn supersede_held(&self, d: &Deployment) -> Result<(), crate::ports::LedgerError> {
        let Some(held) = self.ledger.head(&d.target).await?.held.filter(|h| *h != d.id) else { return Ok(()) };
        let waiting = |o: &Deployment| matches!(o.state, State::Held | State::AwaitingApproval);
        let Some(mut old) = self.ledger.deployment(&d.target, &held).await?.filter(waiting) else {
            return Ok(());
        };
        let was = old.state;
        old.state = State::Superseded;
        old.reason = Some(format!("superseded by a newer push ({}) while {}", d.tag, was.as_str()));
        old.updated_at = self.clock.now();
        if self.ledger.transition(&old, &[was], HeadChange::None).await? {
            info!(target = %d.target, deployment = %old.id, by = %d.id, "held push superseded");
        }
        Ok(())
    }

    /// Gives up the target's lock for a retry: the record stays PENDING, and the redelivered
    /// event resumes the deployment at once (if this fails too, the lease lapses).
    async fn give_up(&self, plan: &TargetPlan, invocation: &Invocation, reason: Retryable) -> Retryable {
        if let Err(e) = self.ledger.unlock(&plan.target, &invocation.attempt).await {
            warn!(target = %plan.target, error = %e, "could not give up the lock; it lapses with the lease");
        }
        Retryable::Target { target: plan.target.to_string(), source: Box::new(reason) }
    }

    /// Records the deployment and takes the target's lock, waiting a while for another
    /// invocation to release it.
    async fn acquire(&self, deployment: &Deployment, invocation: &Invocation) -> Result<Acquired, Retryable> {
        let started = self.clock.now();
        let mut backoff = Duration::from_millis(500);
        loop {
            let now = self.clock.now();
            let lease_until = invocation.lapse(now, self.settings.lease);
            let head = match self.ledger.begin(deployment, &invocation.attempt, lease_until, now).await? {
                Begin::Started => return Ok(Acquired::Yes),
                Begin::Done(state) => return Ok(Acquired::Duplicate(state)),
                Begin::Refused(head) => head,
            };
            match head.admit(deployment, now) {
                Ok(()) => continue, // the head changed under us: try again at once
                Err(Refusal::Locked { by, .. }) => {
                    let waited = (now - started).to_std().unwrap_or_default();
                    if waited >= self.settings.lock_wait {
                        return Err(Retryable::Busy(format!("{} is locked by deployment {by}", deployment.target)));
                    }
                    info!(target = %deployment.target, holder = %by, "target locked; waiting");
                    self.clock.sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(8));
                }
                Err(refusal) => return Ok(Acquired::Skip(refusal)),
            }
        }
    }

    /// Everything between taking the lock and recording the outcome; returns the ECS
    /// deployment id.
    async fn roll_out(&self, d: &mut Deployment, plan: &TargetPlan) -> Result<String, Stop> {
        let target = &plan.target;
        let service = self.ecs.service(target).await?;
        if let Some(controller) = service.deployment_controller.as_deref().filter(|c| *c != "ECS") {
            return Err(Stop::Failed(format!(
                "the service uses the {controller} deployment controller; Ferry drives ECS rolling deployments"
            )));
        }
        let task_definition = match self
            .ecs
            .register_revision(target, &service.task_definition, &plan.change, &d.id)
            .await?
        {
            Revision::Registered(arn) => {
                d.previous_task_definition = Some(service.task_definition.clone());
                arn
            }
            // The service is already set to this image: an earlier attempt at this event
            // updated it and died before recording, or someone else deployed it. A rollout
            // still in progress is adopted and verified as ours; otherwise nothing to do.
            Revision::Unchanged => {
                return match &service.primary {
                    Some(p) if p.task_definition == service.task_definition && p.rollout_state == "IN_PROGRESS" => {
                        d.task_definition = Some(service.task_definition.clone());
                        info!(target = %target, ecs_deployment = %p.id, "adopting the rollout already running this image");
                        Ok(p.id.clone())
                    }
                    _ => {
                        Err(Stop::Skipped(format!("the service already runs this image ({})", service.task_definition)))
                    }
                };
            }
        };
        info!(target = %target, task_definition = %task_definition, "revision ready");
        d.task_definition = Some(task_definition.clone());
        if let Some(migration) = &plan.migration {
            let token = d.migration_token(migration.once_per_environment);
            match &plan.migration_at {
                None => self.migrate(target, &service, &task_definition, migration, &token).await?,
                Some(at) => self.await_migration(at, migration, &token).await?,
            }
        }
        let ecs_id = update_service(self.ecs, self.clock, target, &service, &task_definition).await?;
        info!(target = %target, ecs_deployment = %ecs_id, "service updated");
        Ok(ecs_id)
    }

    /// Sends the deployment's message; a failure is recorded and logged, never raised.
    pub(crate) async fn notify(&self, deployment: &Deployment) {
        crate::ports::notify(self.notifier, self.ledger, Notification::about(self.config, deployment, None)).await;
    }
}

impl From<Unacted> for DeployOutcome {
    fn from(unacted: Unacted) -> Self {
        match unacted {
            Unacted::Ignored(why) => DeployOutcome::Ignored(why),
            Unacted::Rejected(why) => DeployOutcome::Rejected(why),
        }
    }
}

enum Acquired {
    Yes,
    Skip(Refusal),
    Duplicate(State),
}
