//! ECS, and the load balancers in front of its services: what the handlers read and change there.

use std::future::Future;

use crate::config::Migration;
use crate::hook::AlarmState;
use crate::model::Target;
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

/// A lifecycle hook of a service's deployments: the Lambda function it invokes (none for a
/// PAUSE hook), at which stages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LifecycleHook {
    pub target: Option<String>,
    pub stages: Vec<String>,
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
    /// The ECS controller's strategy: `ROLLING` (also when unset), `BLUE_GREEN`, `LINEAR` or `CANARY`.
    pub strategy: Option<String>,
    /// The lifecycle hooks its deployments call.
    pub lifecycle_hooks: Vec<LifecycleHook>,
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
    /// The service deploys blue/green, linear or canary: ECS rolls a failed rollout back to
    /// blue, which still runs (a lifecycle hook's FAILED, or a failure of green).
    pub blue_green: bool,
}

impl EcsRollbacks {
    /// Whether ECS rolls back a rollout it failed: a failure is the circuit breaker's or an
    /// alarm's, and either one on means ECS puts the last completed deployment back.
    pub fn any(&self) -> bool {
        self.circuit_breaker || !self.alarms.is_empty() || self.blue_green
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

    /// The task definition of a service revision (what a lifecycle hook names as the
    /// revision being deployed).
    fn service_revision(
        &self,
        target: &Target,
        revision_arn: &str,
    ) -> impl Future<Output = Result<String, EcsError>> + Send;

    /// Stops the service's blue/green, linear or canary rollout of `task_definition` while it
    /// is in progress, rolling back to blue (StopServiceDeployment, stop type ROLLBACK): ECS
    /// moves traffic back and reports its rollback. `false` if no such rollout is in progress.
    fn stop_rollout(
        &self,
        target: &Target,
        task_definition: &str,
    ) -> impl Future<Output = Result<bool, EcsError>> + Send;

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

/// CloudWatch alarms, as the lifecycle hook reads them. Failures are classified as ECS's are.
pub trait Alarms: Send + Sync {
    /// The alarms named `names` (metric or composite) in `target`'s account and region; a name
    /// CloudWatch does not have is left out.
    fn states(
        &self,
        target: &Target,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<AlarmState>, EcsError>> + Send;
}
