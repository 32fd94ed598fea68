//! The ECS port on the AWS SDK: read services, render and register revisions, run
//! migration tasks, update services, stop a blue/green rollout.

use aws_sdk_ecs::Client;
use aws_sdk_ecs::config::retry::RetryConfig;
use aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionInputBuilder;
use aws_sdk_ecs::types::{
    CapacityProviderStrategyItem, ContainerOverride, DeploymentConfiguration, DesiredStatus, LaunchType,
    NetworkConfiguration, ServiceDeploymentStatus, StopServiceDeploymentStopType, Tag, TaskDefinitionField,
    TaskOverride,
};

mod request;

pub use request::render;
use request::with_breaker;

use super::aws::{AwsClients, ErrorKind, classify};
use crate::config::Migration;
use crate::model::Target;
use crate::ports::{
    Container, Ecs, EcsDeployment, EcsError, EcsRollbacks, LifecycleHook, Revision, ServiceInfo, ServiceSettings,
    TaskExit,
};
use crate::render::{ImageChange, Images};

/// What the adapter keeps from DescribeServices (in [`ServiceInfo::settings`]) to run a task
/// placed like the service and to update it without changing any other setting.
#[derive(Debug, Clone, Default)]
struct Settings {
    deployment_configuration: Option<DeploymentConfiguration>,
    network_configuration: Option<NetworkConfiguration>,
    launch_type: Option<LaunchType>,
    capacity_provider_strategy: Option<Vec<CapacityProviderStrategyItem>>,
    platform_version: Option<String>,
}

/// The settings this adapter read with the service; none (all defaults) if it did not.
fn settings(service: &ServiceInfo) -> Settings {
    service.settings.get::<Settings>().cloned().unwrap_or_default()
}

/// The tag naming the Ferry deployment that registered a revision.
pub const DEPLOYMENT_TAG: &str = "ferry:deployment";

#[derive(Debug)]
pub struct EcsAdapter {
    clients: AwsClients<Client>,
}

impl EcsAdapter {
    pub fn new(base: aws_config::SdkConfig) -> Self {
        Self::with_clients(AwsClients::new(base, Client::new))
    }

    pub fn with_clients(clients: AwsClients<Client>) -> Self {
        EcsAdapter { clients }
    }

    async fn client(&self, target: &Target) -> Client {
        self.clients.get(&target.region, target.role_arn.as_deref()).await
    }
}

fn ecs_error<E>(err: super::aws::SdkError<E>) -> EcsError
where
    E: aws_sdk_ecs::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    match classify(&err) {
        (ErrorKind::NotFound, m) => EcsError::NotFound(m),
        (ErrorKind::Rejected, m) => EcsError::Rejected(m),
        (ErrorKind::Transient | ErrorKind::Conflict, m) => EcsError::Transient(m),
    }
}

impl Ecs for EcsAdapter {
    async fn service(&self, target: &Target) -> Result<ServiceInfo, EcsError> {
        let out = self
            .client(target)
            .await
            .describe_services()
            .cluster(&target.cluster)
            .services(&target.service)
            .send()
            .await
            .map_err(ecs_error)?;
        let Some(service) =
            out.services.unwrap_or_default().into_iter().find(|s| s.status.as_deref() == Some("ACTIVE"))
        else {
            return Err(EcsError::NotFound(format!("service {} in cluster {}", target.service, target.cluster)));
        };
        let primary =
            service.deployments().iter().find(|d| d.status.as_deref() == Some("PRIMARY")).map(|d| EcsDeployment {
                id: d.id.clone().unwrap_or_default(),
                task_definition: d.task_definition.clone().unwrap_or_default(),
                rollout_state: d.rollout_state.as_ref().map(|s| s.as_str().to_string()).unwrap_or_default(),
                running: d.running_count,
                desired: d.desired_count,
            });
        let failed = service
            .deployments()
            .iter()
            .filter(|d| d.rollout_state.as_ref().is_some_and(|s| s.as_str() == "FAILED"))
            .filter_map(|d| d.id.clone())
            .collect();
        let target_groups = service.load_balancers().iter().filter_map(|lb| lb.target_group_arn.clone()).collect();
        let configuration = service.deployment_configuration.as_ref();
        let strategy = configuration.and_then(|c| c.strategy.as_ref()).map(|s| s.as_str().to_string());
        let rollbacks = EcsRollbacks {
            blue_green: strategy.as_deref().is_some_and(|s| s != "ROLLING"),
            circuit_breaker: configuration
                .and_then(|c| c.deployment_circuit_breaker.as_ref())
                .is_some_and(|b| b.enable && b.rollback),
            alarms: configuration
                .and_then(|c| c.alarms.as_ref())
                .filter(|a| a.enable && a.rollback)
                .map(|a| a.alarm_names.clone())
                .unwrap_or_default(),
        };
        Ok(ServiceInfo {
            task_definition: service.task_definition.clone().unwrap_or_default(),
            primary,
            deployment_controller: service.deployment_controller.as_ref().map(|c| c.r#type.as_str().to_string()),
            strategy,
            lifecycle_hooks: configuration
                .map(|c| c.lifecycle_hooks())
                .unwrap_or_default()
                .iter()
                .map(|h| LifecycleHook {
                    target: h.hook_target_arn.clone(),
                    stages: h.lifecycle_stages().iter().map(|s| s.as_str().to_string()).collect(),
                })
                .collect(),
            failed,
            target_groups,
            rollbacks,
            settings: ServiceSettings::new(Settings {
                deployment_configuration: service.deployment_configuration,
                network_configuration: service.network_configuration,
                launch_type: service.launch_type,
                capacity_provider_strategy: service.capacity_provider_strategy,
                platform_version: service.platform_version,
            }),
        })
    }

    async fn register_revision(
        &self,
        target: &Target,
        from: &str,
        change: &ImageChange,
        deployment: &str,
    ) -> Result<Revision, EcsError> {
        let client = self.client(target).await;
        // The family's newest revision, registered for this deployment by an earlier attempt.
        let family = from.rsplit_once('/').map_or(from, |(_, name)| name);
        let family = family.rsplit_once(':').map_or(family, |(family, _)| family);
        let newest = client
            .describe_task_definition()
            .task_definition(family)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
            .map_err(ecs_error)?;
        let ours = newest.tags().iter().any(|t| t.key() == Some(DEPLOYMENT_TAG) && t.value() == Some(deployment));
        if let Some(arn) =
            newest.task_definition.and_then(|td| td.task_definition_arn).filter(|arn| ours && arn != from)
        {
            return Ok(Revision::Registered(arn));
        }
        let out = client
            .describe_task_definition()
            .task_definition(from)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
            .map_err(ecs_error)?;
        let definition = out.task_definition.ok_or_else(|| EcsError::NotFound(from.to_string()))?;
        let containers: Vec<(Option<&str>, Option<&str>)> =
            definition.container_definitions().iter().map(|c| (c.name(), c.image())).collect();
        let images = match change.apply(&containers)? {
            Images::Unchanged => return Ok(Revision::Unchanged),
            Images::Changed(images) => images,
        };
        let mut tags: Vec<Tag> =
            out.tags.unwrap_or_default().into_iter().filter(|t| t.key() != Some(DEPLOYMENT_TAG)).collect();
        tags.push(Tag::builder().key(DEPLOYMENT_TAG).value(deployment).build());
        let request: RegisterTaskDefinitionInputBuilder = render(definition, tags, images);
        let registered = request.send_with(&client).await.map_err(ecs_error)?;
        registered
            .task_definition
            .and_then(|td| td.task_definition_arn)
            .map(Revision::Registered)
            .ok_or_else(|| EcsError::Transient("RegisterTaskDefinition returned no ARN".into()))
    }

    async fn run_task(
        &self,
        target: &Target,
        service: &ServiceInfo,
        task_definition: &str,
        migration: &Migration,
        token: &str,
    ) -> Result<String, EcsError> {
        let s = settings(service);
        let overrides = TaskOverride::builder()
            .container_overrides(
                ContainerOverride::builder()
                    .name(&migration.container)
                    .set_command(Some(migration.command.clone()))
                    .build(),
            )
            .build();
        let out = self
            .client(target)
            .await
            .run_task()
            .cluster(&target.cluster)
            .task_definition(task_definition)
            .count(1)
            .started_by(token)
            .client_token(token)
            .set_launch_type(if s.capacity_provider_strategy.is_some() { None } else { s.launch_type.clone() })
            .set_capacity_provider_strategy(s.capacity_provider_strategy.clone())
            .set_platform_version(s.platform_version.clone())
            .set_network_configuration(s.network_configuration.clone())
            .overrides(overrides)
            .send()
            .await
            .map_err(ecs_error)?;
        if let Some(failure) = out.failures().first() {
            return Err(EcsError::Rejected(format!(
                "migration task could not start: {} {}",
                failure.reason().unwrap_or_default(),
                failure.detail().unwrap_or_default()
            )));
        }
        out.tasks()
            .first()
            .and_then(|t| t.task_arn.clone())
            .ok_or_else(|| EcsError::Transient("RunTask started no task".into()))
    }

    async fn task_exit(&self, target: &Target, task: &str, container: &str) -> Result<Option<TaskExit>, EcsError> {
        let out = self
            .client(target)
            .await
            .describe_tasks()
            .cluster(&target.cluster)
            .tasks(task)
            .send()
            .await
            .map_err(ecs_error)?;
        let Some(task) = out.tasks().first() else {
            return Err(EcsError::NotFound(format!("task {task}")));
        };
        if task.last_status() != Some("STOPPED") {
            return Ok(None);
        }
        let exit_code = task.containers().iter().find(|c| c.name() == Some(container)).and_then(|c| c.exit_code);
        Ok(Some(TaskExit { exit_code, reason: task.stopped_reason().unwrap_or("stopped").to_string() }))
    }

    async fn find_task(&self, target: &Target, token: &str) -> Result<Option<String>, EcsError> {
        let client = self.client(target).await;
        // ListTasks answers RUNNING tasks unless asked for the STOPPED ones (kept about an hour).
        for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
            let out = client
                .list_tasks()
                .cluster(&target.cluster)
                .started_by(token)
                .desired_status(status)
                .send()
                .await
                .map_err(ecs_error)?;
            if let Some(task) = out.task_arns().first() {
                return Ok(Some(task.clone()));
            }
        }
        Ok(None)
    }

    async fn task_addresses(&self, target: &Target, deployment: &str) -> Result<Vec<String>, EcsError> {
        let client = self.client(target).await;
        // A service's tasks are started by its deployment's id
        // (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Task.html>, startedBy).
        let listed = client
            .list_tasks()
            .cluster(&target.cluster)
            .started_by(deployment)
            .desired_status(DesiredStatus::Running)
            .send()
            .await
            .map_err(ecs_error)?;
        let mut addresses = Vec::new();
        // DescribeTasks takes up to 100 tasks.
        for tasks in listed.task_arns().chunks(100) {
            let out = client
                .describe_tasks()
                .cluster(&target.cluster)
                .set_tasks(Some(tasks.to_vec()))
                .send()
                .await
                .map_err(ecs_error)?;
            let ip = |t: &aws_sdk_ecs::types::Task| {
                t.attachments().iter().flat_map(|a| a.details()).find_map(|d| {
                    (d.name() == Some("privateIPv4Address")).then(|| d.value().map(str::to_string)).flatten()
                })
            };
            addresses.extend(out.tasks().iter().filter_map(ip));
        }
        Ok(addresses)
    }

    async fn stop_task(&self, target: &Target, task: &str, reason: &str) -> Result<(), EcsError> {
        self.client(target)
            .await
            .stop_task()
            .cluster(&target.cluster)
            .task(task)
            .reason(reason.chars().take(255).collect::<String>())
            .send()
            .await
            .map(|_| ())
            .map_err(ecs_error)
    }

    async fn service_revision(&self, target: &Target, revision_arn: &str) -> Result<String, EcsError> {
        let out = self
            .client(target)
            .await
            .describe_service_revisions()
            .service_revision_arns(revision_arn)
            .send()
            .await
            .map_err(ecs_error)?;
        out.service_revisions()
            .iter()
            .find_map(|r| r.task_definition.clone())
            .ok_or_else(|| EcsError::NotFound(format!("service revision {revision_arn}")))
    }

    async fn stop_rollout(&self, target: &Target, task_definition: &str) -> Result<bool, EcsError> {
        // https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_StopServiceDeployment.html
        // A service has one rollout in progress at a time: the first page holds it.
        let client = self.client(target).await;
        let listed = client
            .list_service_deployments()
            .cluster(&target.cluster)
            .service(&target.service)
            .status(ServiceDeploymentStatus::InProgress)
            .status(ServiceDeploymentStatus::Pending)
            .send()
            .await
            .map_err(ecs_error)?;
        for deployment in listed.service_deployments() {
            let (Some(arn), Some(revision)) =
                (&deployment.service_deployment_arn, &deployment.target_service_revision_arn)
            else {
                continue;
            };
            if self.service_revision(target, revision).await? != task_definition {
                continue;
            }
            client
                .stop_service_deployment()
                .service_deployment_arn(arn)
                .stop_type(StopServiceDeploymentStopType::Rollback)
                .send()
                .await
                .map_err(ecs_error)?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn containers(&self, target: &Target, task_definition: &str) -> Result<Vec<Container>, EcsError> {
        let out = self
            .client(target)
            .await
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .map_err(ecs_error)?;
        let definition = out.task_definition.ok_or_else(|| EcsError::NotFound(task_definition.to_string()))?;
        Ok(definition.container_definitions().iter().map(|c| (c.name.clone(), c.image.clone())).collect())
    }

    async fn update_service(
        &self,
        target: &Target,
        service: &ServiceInfo,
        task_definition: &str,
    ) -> Result<String, EcsError> {
        let out = self
            .client(target)
            .await
            .update_service()
            .cluster(&target.cluster)
            .service(&target.service)
            .task_definition(task_definition)
            .set_deployment_configuration(with_breaker(settings(service).deployment_configuration))
            // One attempt: UpdateService is not idempotent. Repeated after a timeout whose
            // request went through, it would put this revision back over whatever replaced it
            // meanwhile (a rollback, say). The callers decide what a failure means.
            .customize()
            .config_override(aws_sdk_ecs::Config::builder().retry_config(RetryConfig::standard().with_max_attempts(1)))
            .send()
            .await
            .map_err(ecs_error)?;
        out.service()
            .and_then(|s| s.deployments().iter().find(|d| d.status() == Some("PRIMARY")))
            .and_then(|d| d.id.clone())
            .ok_or_else(|| EcsError::Transient("UpdateService returned no PRIMARY deployment".into()))
    }
}
