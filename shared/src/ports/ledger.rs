//! The ledger: deployment records and each target's head, and what asking to change them can answer.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::model::{Deployment, Head, State, Target};

/// A ledger failure: always worth a retry (the ledger's own refusals are outcomes, not errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ledger: {0}")]
pub struct LedgerError(pub String);

/// The outcome of asking the ledger to start a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Recorded PENDING (or still PENDING from an attempt that died) and holding the lock.
    Started,
    /// The ledger already has this deployment past PENDING: the same event, delivered again.
    Done(State),
    /// The target's head refused it; [`Head::admit`] says why.
    Refused(Box<Head>),
}

/// A claim on a deployment (to verify it, or to roll it back): a token of the claiming
/// invocation's own, and when it lapses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub by: String,
    pub until: DateTime<Utc>,
}

/// The outcome of recording what a deploy attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Recorded,
    /// The record was no longer PENDING: it is in this state.
    AlreadyIn(State),
}

pub trait Ledger: Send + Sync {
    /// Records `deployment` as PENDING and takes its target's lock for `attempt` until
    /// `lease_until`, in one atomic step that refuses it (see [`Head::admit`]) while
    /// another attempt holds the lock, when the push is stale or the digest already live.
    fn begin(
        &self,
        deployment: &Deployment,
        attempt: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Begin, LedgerError>> + Send;

    /// Records a SKIPPED deployment, unless it is already recorded past PENDING.
    fn record_skipped(&self, deployment: &Deployment) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Moves a PENDING deployment to its new state (IN_PROGRESS, HELD, FAILED or SKIPPED) and
    /// releases the lock `attempt` holds; IN_PROGRESS also makes it the target's active
    /// deployment, HELD the target's held push (any other state: no push is held).
    /// Nothing is written when the record had already moved on (the verify function adopted
    /// the rollout first).
    fn finish(
        &self,
        deployment: &Deployment,
        attempt: &str,
    ) -> impl Future<Output = Result<Finish, LedgerError>> + Send;

    /// Takes the target's lock for `holder` (a rollback's record) and `attempt` until `until`,
    /// unless another attempt holds it at `now`: a rollback and a push never update one
    /// service at once. `false` while another holds it.
    fn lock(
        &self,
        target: &Target,
        holder: &str,
        attempt: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// Gives up the target's lock if `attempt` still holds it, leaving the deployment
    /// PENDING: an invocation that fails with a retryable error calls this before it
    /// returns, so the redelivered event can resume at once instead of waiting for the lease.
    fn unlock(&self, target: &Target, attempt: &str) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Records that a PENDING deployment's rollout is under way (`deployment` as IN_PROGRESS,
    /// with its ECS deployment id and revision) when the invocation that started it has not
    /// (yet): makes it the target's active deployment, and for one of Ferry's pushes releases
    /// the lock taken for it. `false` if the record is no longer PENDING, or (a push) another
    /// deployment holds the target.
    fn adopt(
        &self,
        deployment: &Deployment,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// Moves `deployment` to its (new) state if the record is still in one of `from`, and
    /// applies `head` to its target; `false` if the record had already moved on.
    fn transition(
        &self,
        deployment: &Deployment,
        from: &[State],
        head: HeadChange,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// Claims `deployment` for this invocation's work: moves it from `from` to its state
    /// (IN_PROGRESS → VERIFYING to verify it, FAILED → ROLLING_BACK to roll it back) and
    /// applies `head` to its target. A record already in that state can be claimed again once
    /// its claim has lapsed or been given back (the invocation holding it died or failed), and
    /// by the same holder (a retried request whose first answer was lost). `false` otherwise.
    fn claim(
        &self,
        deployment: &Deployment,
        from: State,
        head: HeadChange,
        now: DateTime<Utc>,
        claim: &Claim,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// Gives `claim` back if it still holds the record in state `held`, moving the record to
    /// `deployment`'s state (the same: VERIFYING and ROLLING_BACK stay): the invocation
    /// is done with it, or failed and the redelivered event is to take it again at once.
    fn release_claim(
        &self,
        deployment: &Deployment,
        held: State,
        claim: &Claim,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Records a deployment Ferry did not start; `false` if it is already recorded.
    fn record_external(
        &self,
        deployment: &Deployment,
        head: HeadChange,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// Notes the latest ECS event on an open record.
    fn note_ecs_event(
        &self,
        deployment: &Deployment,
        event: &str,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    fn by_ecs_deployment(
        &self,
        ecs_deployment_id: &str,
    ) -> impl Future<Output = Result<Option<Deployment>, LedgerError>> + Send;

    /// Replaces the reason on a record that is still in `state`; `false` if the record is in
    /// another state, or already has this reason (the same event handled twice).
    fn note_reason(
        &self,
        deployment: &Deployment,
        state: State,
    ) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// Records a lifecycle hook's answer on `deployment` (one per stage, the latest), unless
    /// that stage's execution was decided already (SUCCEEDED or FAILED): `Some(decided)`
    /// then, so a hook invoked again answers as it did.
    fn note_hook(
        &self,
        deployment: &Deployment,
        hook: &crate::hook::HookRecord,
    ) -> impl Future<Output = Result<Option<crate::hook::HookRecord>, LedgerError>> + Send;

    /// Notes `by`'s approval of `deployment` while it awaits approval (the same approver
    /// twice counts once); the approval that makes `required` moves the record to PENDING
    /// with [`Deployment::approval`] naming the approvers, so two approvers racing decide once.
    fn approve(
        &self,
        deployment: &Deployment,
        by: &str,
        required: usize,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Approved, LedgerError>> + Send;

    /// Lifts the quarantine of `digest` on `target` (an operator's decision).
    fn release(&self, target: &Target, digest: &str) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Notes on the record that a notification about it could not be delivered.
    fn note_notify_error(
        &self,
        deployment: &Deployment,
        error: &str,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;

    fn head(&self, target: &Target) -> impl Future<Output = Result<Head, LedgerError>> + Send;

    /// One deployment of the target, by its id.
    fn deployment(
        &self,
        target: &Target,
        id: &str,
    ) -> impl Future<Output = Result<Option<Deployment>, LedgerError>> + Send;

    /// The target's deployments, newest first.
    fn history(
        &self,
        target: &Target,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Deployment>, LedgerError>> + Send;

    /// Up to `limit` of the target's deployments older (by id) than `before`, newest first:
    /// the next page after a [`Ledger::history`] page that ended with `before`.
    fn history_before(
        &self,
        target: &Target,
        before: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Deployment>, LedgerError>> + Send;
}

/// What noting an approval did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approved {
    /// This approval was the last one needed: the record is PENDING, to be deployed.
    Approved,
    /// Noted: these approvers so far, more are needed.
    Counted(Vec<String>),
    /// The record no longer awaits approval: it is in this state.
    Decided(State),
}

/// What a ledger transition also changes on the target's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadChange {
    None,
    /// The deployment passed verification: its revision and digest are the last known good.
    LastKnownGood,
    /// The deployment is what the target runs now (a deployment Ferry did not start).
    Active,
    /// The deployment's digest failed here: quarantine it on the target.
    Quarantine,
}
