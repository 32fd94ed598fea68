//! What the core needs from the world, in Ferry's words. Adapters implement these with
//! the AWS SDK and HTTP; `fakes` implements them in memory for handler tests.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Migration;
use crate::model::{Deployment, Head, State, Target};
use crate::notify::Notification;
use crate::render::{ImageChange, RenderError};

/// An ECS failure, classified by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EcsError {
    /// The service, cluster or task definition does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// ECS refused the request as invalid, or the task definition cannot be rendered:
    /// retrying will not help.
    #[error("{0}")]
    Rejected(String),
    /// Throttling, a 5xx, a timeout: a retry may succeed.
    #[error("transient: {0}")]
    Transient(String),
}

impl From<RenderError> for EcsError {
    fn from(e: RenderError) -> Self {
        EcsError::Rejected(e.to_string())
    }
}

/// An ECS deployment of a service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EcsDeployment {
    pub id: String,
    pub task_definition: String,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED`.
    pub rollout_state: String,
    pub running: i32,
    pub desired: i32,
}

/// An ECS service as the deploy function needs to see it.
#[derive(Debug, Clone, Default)]
pub struct ServiceInfo {
    /// ARN of the task definition the service is set to.
    pub task_definition: String,
    /// The PRIMARY deployment.
    pub primary: Option<EcsDeployment>,
    /// `ECS` for rolling updates; Ferry cannot drive CODE_DEPLOY or EXTERNAL services.
    pub deployment_controller: Option<String>,
    /// The ids of its deployments whose rollout ECS failed (and has not cleared away yet).
    pub failed: Vec<String>,
    /// The load balancer target groups its tasks are registered in.
    pub target_groups: Vec<String>,
    /// What ECS rolls back by itself.
    pub rollbacks: EcsRollbacks,
    /// What the adapter needs to run a task like the service's and to update the service
    /// without changing any of its other settings: handed back to the adapter that read it.
    pub settings: ServiceSettings,
}

/// The service's own settings as an ECS adapter read them, opaque to everything but that
/// adapter (so no port depends on an SDK's types). Empty when a fake made the answer.
#[derive(Clone, Default)]
pub struct ServiceSettings(Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>);

impl ServiceSettings {
    pub fn new<T: std::any::Any + Send + Sync>(settings: T) -> Self {
        ServiceSettings(Some(std::sync::Arc::new(settings)))
    }

    /// The settings, if an adapter keeping them as a `T` made them.
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        self.0.as_deref().and_then(|s| s.downcast_ref())
    }
}

impl std::fmt::Debug for ServiceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "ServiceSettings(..)" } else { "ServiceSettings(none)" })
    }
}

/// What ECS rolls back by itself when a rollout fails, as the service's
/// `deploymentConfiguration` says
/// (<https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-circuit-breaker.html>,
/// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-alarm-failure.html>).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EcsRollbacks {
    /// The deployment circuit breaker is on, with rollback.
    pub circuit_breaker: bool,
    /// The deployment alarms ECS watches with rollback on (empty if off).
    pub alarms: Vec<String>,
}

impl EcsRollbacks {
    /// Whether ECS rolls back a rollout it failed: a failure is the circuit breaker's or an
    /// alarm's, and either one on means ECS puts the last completed deployment back.
    pub fn any(&self) -> bool {
        self.circuit_breaker || !self.alarms.is_empty()
    }
}

/// A container of a task definition: its name and image, as ECS has them.
pub type Container = (Option<String>, Option<String>);

/// The outcome of rendering and registering a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revision {
    /// A new revision, registered.
    Registered(String),
    /// The task definition already runs the image: nothing registered.
    Unchanged,
}

/// How a one-off task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskExit {
    pub exit_code: Option<i32>,
    pub reason: String,
}

pub trait Ecs: Send + Sync {
    fn service(&self, target: &Target) -> impl Future<Output = Result<ServiceInfo, EcsError>> + Send;

    /// Renders `from` with `change` (tags included, and `ferry:deployment` = `deployment`)
    /// and registers it, unless the family's newest revision is already `deployment`'s (an
    /// earlier attempt registered it): that one is reused. Never deregisters anything.
    fn register_revision(
        &self,
        target: &Target,
        from: &str,
        change: &ImageChange,
        deployment: &str,
    ) -> impl Future<Output = Result<Revision, EcsError>> + Send;

    /// Starts `migration` as a one-off task of `task_definition`, placed like the service,
    /// started by `token` (also its idempotency token: the same token starts one task).
    fn run_task(
        &self,
        target: &Target,
        service: &ServiceInfo,
        task_definition: &str,
        migration: &Migration,
        token: &str,
    ) -> impl Future<Output = Result<String, EcsError>> + Send;

    /// The task started by `token` in the target's cluster, running or recently stopped.
    fn find_task(&self, target: &Target, token: &str) -> impl Future<Output = Result<Option<String>, EcsError>> + Send;

    /// The private IP addresses of the running tasks ECS deployment `deployment` started
    /// (awsvpc tasks only: others have no address of their own).
    fn task_addresses(
        &self,
        target: &Target,
        deployment: &str,
    ) -> impl Future<Output = Result<Vec<String>, EcsError>> + Send;

    /// Stops a task (a migration that overran its time).
    fn stop_task(&self, target: &Target, task: &str, reason: &str)
    -> impl Future<Output = Result<(), EcsError>> + Send;

    /// `None` while the task has not stopped.
    fn task_exit(
        &self,
        target: &Target,
        task: &str,
        container: &str,
    ) -> impl Future<Output = Result<Option<TaskExit>, EcsError>> + Send;

    /// The containers of a task definition, as `(name, image)`.
    fn containers(
        &self,
        target: &Target,
        task_definition: &str,
    ) -> impl Future<Output = Result<Vec<Container>, EcsError>> + Send;

    /// Points the service at `task_definition` with the deployment circuit breaker on;
    /// returns the new ECS deployment id. Tried once: after a transient failure the update
    /// may or may not have happened, and the caller looks before trying again.
    fn update_service(
        &self,
        target: &Target,
        service: &ServiceInfo,
        task_definition: &str,
    ) -> impl Future<Output = Result<String, EcsError>> + Send;
}

/// A target registered in a load balancer's target group, and its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    /// An IP address (awsvpc tasks) or an instance id.
    pub id: String,
    /// `initial`, `healthy`, `unhealthy`, `unused`, `draining` or `unavailable`.
    pub state: String,
    /// Elastic Load Balancing's reason code, if not healthy (`Target.ResponseCodeMismatch`).
    pub reason: Option<String>,
}

/// Elastic Load Balancing, as verify reads it. Failures are classified as ECS's are.
pub trait LoadBalancers: Send + Sync {
    /// The targets registered in `target_group` (in `target`'s account and region).
    fn target_health(
        &self,
        target: &Target,
        target_group: &str,
    ) -> impl Future<Output = Result<Vec<TargetHealth>, EcsError>> + Send;
}

/// An image in ECR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub digest: String,
    pub tags: Vec<String>,
    /// When the image was pushed, to the precision ECR keeps.
    pub pushed_at: DateTime<Utc>,
    /// The registry: its account and region.
    pub registry_account: String,
    pub registry_region: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The repository does not exist (or Ferry may not read it): a retry will not help.
    #[error("{0}")]
    Missing(String),
    #[error("transient: {0}")]
    Transient(String),
}

/// ECR, as the deploy function reads it.
pub trait Registry: Send + Sync {
    /// The tagged images of `repository`.
    fn images(&self, repository: &str) -> impl Future<Output = Result<Vec<Image>, RegistryError>> + Send;

    /// When `digest` was pushed to `repository` in `registry` (an account), to the precision
    /// ECR keeps (its push event says the second only); `None` if ECR has no such image.
    fn pushed_at(
        &self,
        repository: &str,
        registry: &str,
        digest: &str,
    ) -> impl Future<Output = Result<Option<DateTime<Utc>>, RegistryError>> + Send;
}

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

    /// Moves a PENDING deployment to its new state (IN_PROGRESS, FAILED or SKIPPED) and
    /// releases the lock `attempt` holds; IN_PROGRESS also makes it the target's active
    /// deployment.
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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("notification: {0}")]
pub struct NotifyError(pub String);

pub trait Notifier: Send + Sync {
    fn send(&self, notification: &Notification) -> impl Future<Output = Result<(), NotifyError>> + Send;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event bus: {0}")]
pub struct BusError(pub String);

/// Ferry's own events on EventBridge, for the rollback function and anyone else.
pub trait EventBus: Send + Sync {
    /// Announces a failed deployment ("Deployment Failed").
    fn deployment_failed(&self, deployment: &Deployment) -> impl Future<Output = Result<(), BusError>> + Send;
}

/// One HTTP answer from a health URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResponse {
    pub status: u16,
    /// The start of the body (a few hundred bytes at most).
    pub body: String,
}

pub trait HealthProbe: Send + Sync {
    /// One GET of `url`, bounded by `timeout`; `Err` describes a timeout or connection failure.
    fn get(&self, url: &str, timeout: Duration) -> impl Future<Output = Result<ProbeResponse, String>> + Send;
}

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// Sends a notification; a failure is logged and noted on the deployment, never raised.
pub async fn notify<N: Notifier, L: Ledger>(notifier: &N, ledger: &L, notification: Notification) {
    let d = &notification.deployment;
    if let Err(e) = notifier.send(&notification).await {
        tracing::warn!(deployment = %d.id, error = %e, "notification failed");
        if let Err(e) = ledger.note_notify_error(d, &e.0).await {
            tracing::warn!(deployment = %d.id, error = %e, "could not record the notification failure");
        }
    }
}
