//! ECS and its load balancers in memory: services, task definitions, tasks and target groups.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::lock;
use crate::config::Migration;
use crate::model::Target;
use crate::ports::{
    Container, Ecs, EcsDeployment, EcsError, EcsRollbacks, LoadBalancers, Revision, ServiceInfo, TargetHealth, TaskExit,
};
use crate::render::{ImageChange, Images};

/// A service in [`FakeEcs`].
#[derive(Debug, Clone)]
pub struct FakeService {
    pub task_definition: String,
    pub deployments: Vec<EcsDeployment>,
    /// Target groups its tasks are registered in.
    pub target_groups: Vec<String>,
    /// ECS deployment → the private IPs of its running tasks.
    pub addresses: HashMap<String, Vec<String>>,
    /// The circuit breaker's `(enable, rollback)`, if set.
    pub breaker: Option<(bool, bool)>,
    /// Deployment alarms ECS watches with rollback.
    pub alarm_rollback: Vec<String>,
    /// Deployments that replace `deployments` after this many more DescribeServices reads.
    pub later: Option<(u32, Vec<EcsDeployment>)>,
    /// `BLUE_GREEN`, `LINEAR` or `CANARY`; `None` for a rolling update.
    pub strategy: Option<String>,
}

#[derive(Debug, Default)]
struct EcsWorld {
    /// (region, cluster, service) → service
    services: HashMap<(String, String, String), FakeService>,
    /// task definition ARN → containers (name, image)
    task_definitions: BTreeMap<String, Vec<(String, String)>>,
    calls: Vec<String>,
    failures: HashMap<&'static str, EcsError>,
    /// UpdateService takes effect, but its answer is lost (a timeout).
    lose_updates: bool,
    migration_exit: Option<i32>,
    /// Migration tasks run on until this is cleared.
    migration_running: bool,
    tasks: u32,
    /// Tasks started: (task, started by).
    started: Vec<(String, String)>,
    stopped: Vec<String>,
    /// Revision → the deployment that registered it.
    registered_for: HashMap<String, String>,
    /// Service revision ARN → its task definition: one per UpdateService, as ECS makes them.
    service_revisions: Vec<(String, String)>,
}

/// ECS in memory: services, task definitions, tasks; every call is logged as
/// `"Operation service"`, and an operation can be made to fail.
#[derive(Debug, Default)]
pub struct FakeEcs(Mutex<EcsWorld>);

fn service_key(t: &Target) -> (String, String, String) {
    (t.region.clone(), t.cluster.clone(), t.service.clone())
}

impl FakeEcs {
    /// Adds a service on `family:1` with `containers` (name, image), fully deployed.
    pub fn add_service(&self, target: &Target, family: &str, containers: &[(&str, &str)]) -> String {
        let arn = format!("arn:aws:ecs:{}:123456789012:task-definition/{family}:1", target.region);
        let mut w = lock(&self.0);
        w.task_definitions
            .insert(arn.clone(), containers.iter().map(|(n, i)| (n.to_string(), i.to_string())).collect());
        w.services.insert(
            service_key(target),
            FakeService {
                task_definition: arn.clone(),
                deployments: vec![EcsDeployment {
                    id: "ecs-svc/0".into(),
                    task_definition: arn.clone(),
                    rollout_state: "COMPLETED".into(),
                    running: 2,
                    desired: 2,
                }],
                breaker: None,
                alarm_rollback: Vec::new(),
                target_groups: Vec::new(),
                addresses: HashMap::new(),
                later: None,
                strategy: None,
            },
        );
        arn
    }

    /// Makes the service deploy by `strategy` (`BLUE_GREEN`, `LINEAR`, `CANARY`).
    pub fn set_strategy(&self, target: &Target, strategy: &str) {
        if let Some(s) = lock(&self.0).services.get_mut(&service_key(target)) {
            s.strategy = Some(strategy.to_string());
        }
    }

    /// The service revision the latest UpdateService of `target` made, as a hook names it.
    pub fn latest_service_revision(&self, target: &Target) -> Option<String> {
        let prefix = format!(
            "arn:aws:ecs:{}:123456789012:service-revision/{}/{}/",
            target.region, target.cluster, target.service
        );
        lock(&self.0).service_revisions.iter().rev().map(|(arn, _)| arn).find(|arn| arn.starts_with(&prefix)).cloned()
    }

    /// Sets what ECS rolls back by itself: the circuit breaker's `(enable, rollback)` and the
    /// deployment alarms with rollback.
    pub fn set_rollbacks(&self, target: &Target, breaker: Option<(bool, bool)>, alarms: &[&str]) {
        if let Some(s) = lock(&self.0).services.get_mut(&service_key(target)) {
            s.breaker = breaker;
            s.alarm_rollback = alarms.iter().map(|a| a.to_string()).collect();
        }
    }

    /// Completes the PRIMARY (last) deployment as ECS would: rollout COMPLETED, all tasks running.
    pub fn complete(&self, target: &Target) {
        let mut w = lock(&self.0);
        if let Some(d) = w.services.get_mut(&service_key(target)).and_then(|s| s.deployments.last_mut()) {
            d.rollout_state = "COMPLETED".into();
            d.running = d.desired;
        }
    }

    /// Puts the service behind `target_group`, its deployment `deployment`'s tasks at `addresses`.
    pub fn set_load_balanced(&self, target: &Target, target_group: &str, deployment: &str, addresses: &[&str]) {
        if let Some(s) = lock(&self.0).services.get_mut(&service_key(target)) {
            if !s.target_groups.iter().any(|t| t == target_group) {
                s.target_groups.push(target_group.to_string());
            }
            s.addresses.insert(deployment.to_string(), addresses.iter().map(|a| a.to_string()).collect());
        }
    }

    /// ECS fails the PRIMARY rollout and, if the service's settings say so, rolls back to the
    /// last completed deployment's revision: the id of its rollback deployment.
    pub fn fail_primary(&self, target: &Target) -> Option<String> {
        let mut w = lock(&self.0);
        let s = w.services.get_mut(&service_key(target))?;
        let primary = s.deployments.last_mut()?;
        primary.rollout_state = "FAILED".into();
        let rolls_back = s.breaker == Some((true, true)) || !s.alarm_rollback.is_empty() || s.strategy.is_some();
        let to = s.deployments.iter().rev().find(|d| d.rollout_state == "COMPLETED")?.task_definition.clone();
        if !rolls_back {
            return None;
        }
        let id = format!("ecs-svc/rollback-{}", s.deployments.len());
        s.task_definition = to.clone();
        s.deployments.push(EcsDeployment {
            id: id.clone(),
            task_definition: to,
            rollout_state: "IN_PROGRESS".into(),
            running: 0,
            desired: 2,
        });
        Some(id)
    }

    /// Replaces a service's deployments (to stage what DescribeServices answers).
    pub fn set_deployments(&self, target: &Target, deployments: Vec<EcsDeployment>) {
        if let Some(s) = lock(&self.0).services.get_mut(&service_key(target)) {
            if let Some(last) = deployments.last() {
                s.task_definition = last.task_definition.clone();
            }
            s.deployments = deployments;
        }
    }

    /// The service's deployments become `deployments` once it has been read `reads` more
    /// times: a rollout that starts while a handler is at work (say, during a smoke test).
    pub fn after_reads(&self, target: &Target, reads: u32, deployments: Vec<EcsDeployment>) {
        if let Some(s) = lock(&self.0).services.get_mut(&service_key(target)) {
            s.later = Some((reads, deployments));
        }
    }

    pub fn service_of(&self, target: &Target) -> Option<FakeService> {
        lock(&self.0).services.get(&service_key(target)).cloned()
    }

    /// The containers (name, image) of a task definition.
    pub fn definition(&self, task_definition: &str) -> Vec<(String, String)> {
        lock(&self.0).task_definitions.get(task_definition).cloned().unwrap_or_default()
    }

    pub fn calls(&self) -> Vec<String> {
        lock(&self.0).calls.clone()
    }

    pub fn count(&self, operation: &str) -> usize {
        lock(&self.0).calls.iter().filter(|c| c.starts_with(operation)).count()
    }

    /// Makes every later call of `operation` fail with `error`.
    pub fn fail(&self, operation: &'static str, error: EcsError) {
        lock(&self.0).failures.insert(operation, error);
    }

    pub fn heal(&self, operation: &'static str) {
        lock(&self.0).failures.remove(operation);
    }

    /// Makes later UpdateService calls take effect and then fail as a timeout would, their
    /// answer lost (or behave again, with `false`).
    pub fn lose_update_answers(&self, lose: bool) {
        lock(&self.0).lose_updates = lose;
    }

    /// Migration tasks keep running (`true`) until set back to `false`.
    pub fn set_migration_running(&self, running: bool) {
        lock(&self.0).migration_running = running;
    }

    /// The tasks started, with who started them.
    pub fn started_tasks(&self) -> Vec<(String, String)> {
        lock(&self.0).started.clone()
    }

    pub fn set_migration_exit(&self, code: i32) {
        lock(&self.0).migration_exit = Some(code);
    }

    fn call(&self, operation: &'static str, target: &Target) -> Result<std::sync::MutexGuard<'_, EcsWorld>, EcsError> {
        let mut w = lock(&self.0);
        w.calls.push(format!("{operation} {}", target.service));
        match w.failures.get(operation) {
            Some(e) => Err(e.clone()),
            None => Ok(w),
        }
    }
}

impl Ecs for FakeEcs {
    async fn service(&self, target: &Target) -> Result<ServiceInfo, EcsError> {
        let mut w = self.call("DescribeServices", target)?;
        let s = w.services.get_mut(&service_key(target)).ok_or_else(|| EcsError::NotFound(target.service.clone()))?;
        let info = ServiceInfo {
            task_definition: s.task_definition.clone(),
            primary: s.deployments.last().cloned(),
            deployment_controller: Some("ECS".into()),
            failed: s.deployments.iter().filter(|d| d.rollout_state == "FAILED").map(|d| d.id.clone()).collect(),
            target_groups: s.target_groups.clone(),
            strategy: s.strategy.clone(),
            lifecycle_hooks: Vec::new(),
            rollbacks: EcsRollbacks {
                circuit_breaker: s.breaker == Some((true, true)),
                alarms: s.alarm_rollback.clone(),
                blue_green: s.strategy.is_some(),
            },
            settings: Default::default(),
        };
        if let Some((reads, deployments)) = s.later.take() {
            match reads.checked_sub(1).filter(|left| *left > 0) {
                Some(left) => s.later = Some((left, deployments)),
                None => {
                    s.task_definition =
                        deployments.last().map_or(s.task_definition.clone(), |d| d.task_definition.clone());
                    s.deployments = deployments;
                }
            }
        }
        Ok(info)
    }

    async fn register_revision(
        &self,
        target: &Target,
        from: &str,
        change: &ImageChange,
        deployment: &str,
    ) -> Result<Revision, EcsError> {
        let mut w = self.call("RegisterTaskDefinition", target)?;
        let family = from.rsplit_once(':').map_or(from, |(f, _)| f).to_string();
        let newest = w.task_definitions.keys().filter(|k| k.starts_with(&format!("{family}:"))).count();
        let newest = format!("{family}:{newest}");
        if newest != from && w.registered_for.get(&newest).is_some_and(|d| d == deployment) {
            return Ok(Revision::Registered(newest));
        }
        let containers = w.task_definitions.get(from).cloned().ok_or_else(|| EcsError::NotFound(from.into()))?;
        let view: Vec<(Option<&str>, Option<&str>)> =
            containers.iter().map(|(n, i)| (Some(n.as_str()), Some(i.as_str()))).collect();
        let Images::Changed(images) = change.apply(&view)? else {
            return Ok(Revision::Unchanged);
        };
        let family = from.rsplit_once(':').map_or(from, |(f, _)| f).to_string();
        let revision = w.task_definitions.keys().filter(|k| k.starts_with(&format!("{family}:"))).count() + 1;
        let arn = format!("{family}:{revision}");
        let rendered = containers.iter().zip(images).map(|((n, _), i)| (n.clone(), i.unwrap_or_default())).collect();
        w.task_definitions.insert(arn.clone(), rendered);
        w.registered_for.insert(arn.clone(), deployment.to_string());
        Ok(Revision::Registered(arn))
    }

    async fn run_task(
        &self,
        target: &Target,
        _: &ServiceInfo,
        _: &str,
        _: &Migration,
        token: &str,
    ) -> Result<String, EcsError> {
        let mut w = self.call("RunTask", target)?;
        // The same client token starts one task, as on ECS.
        if let Some((task, _)) = w.started.iter().find(|(_, by)| by == token) {
            return Ok(task.clone());
        }
        w.tasks += 1;
        let task = format!("task/{}", w.tasks);
        w.started.push((task.clone(), token.to_string()));
        Ok(task)
    }

    async fn find_task(&self, target: &Target, token: &str) -> Result<Option<String>, EcsError> {
        let w = self.call("ListTasks", target)?;
        Ok(w.started.iter().find(|(_, by)| by == token).map(|(task, _)| task.clone()))
    }

    async fn task_addresses(&self, target: &Target, deployment: &str) -> Result<Vec<String>, EcsError> {
        let w = self.call("ListTasks", target)?;
        let s = w.services.get(&service_key(target)).ok_or_else(|| EcsError::NotFound(target.service.clone()))?;
        Ok(s.addresses.get(deployment).cloned().unwrap_or_default())
    }

    async fn stop_task(&self, target: &Target, task: &str, _: &str) -> Result<(), EcsError> {
        let mut w = self.call("StopTask", target)?;
        w.stopped.push(task.to_string());
        Ok(())
    }

    async fn task_exit(&self, target: &Target, task: &str, _: &str) -> Result<Option<TaskExit>, EcsError> {
        let w = self.call("DescribeTasks", target)?;
        if w.stopped.iter().any(|t| t == task) {
            return Ok(Some(TaskExit { exit_code: None, reason: "Task stopped by user".into() }));
        }
        if w.migration_running {
            return Ok(None);
        }
        Ok(Some(TaskExit {
            exit_code: Some(w.migration_exit.unwrap_or(0)),
            reason: "Essential container in task exited".into(),
        }))
    }

    async fn service_revision(&self, target: &Target, revision_arn: &str) -> Result<String, EcsError> {
        let w = self.call("DescribeServiceRevisions", target)?;
        w.service_revisions
            .iter()
            .find(|(arn, _)| arn == revision_arn)
            .map(|(_, task_definition)| task_definition.clone())
            .ok_or_else(|| EcsError::NotFound(format!("service revision {revision_arn}")))
    }

    async fn stop_rollout(&self, target: &Target, task_definition: &str) -> Result<bool, EcsError> {
        {
            let w = self.call("StopServiceDeployment", target)?;
            let s = w.services.get(&service_key(target)).ok_or_else(|| EcsError::NotFound(target.service.clone()))?;
            let rolling_out = s
                .deployments
                .last()
                .is_some_and(|d| d.task_definition == task_definition && d.rollout_state == "IN_PROGRESS");
            if s.strategy.is_none() || !rolling_out {
                return Ok(false);
            }
        }
        // ECS fails green and moves back to blue, as it does on a hook's FAILED.
        Ok(self.fail_primary(target).is_some())
    }

    async fn containers(&self, target: &Target, task_definition: &str) -> Result<Vec<Container>, EcsError> {
        let w = self.call("DescribeTaskDefinition", target)?;
        let containers =
            w.task_definitions.get(task_definition).ok_or_else(|| EcsError::NotFound(task_definition.into()))?;
        Ok(containers.iter().map(|(n, i)| (Some(n.clone()), Some(i.clone()))).collect())
    }

    async fn update_service(
        &self,
        target: &Target,
        _: &ServiceInfo,
        task_definition: &str,
    ) -> Result<String, EcsError> {
        let mut w = self.call("UpdateService", target)?;
        let n = w.calls.iter().filter(|c| c.starts_with("UpdateService")).count();
        let service =
            w.services.get_mut(&service_key(target)).ok_or_else(|| EcsError::NotFound(target.service.clone()))?;
        let id = format!("ecs-svc/{n}");
        service.task_definition = task_definition.to_string();
        // As the adapter does: a rolling service's breaker on, with rollback unless the team
        // turned that off; a blue/green one's settings untouched.
        if service.strategy.is_none() {
            service.breaker = Some((true, service.breaker.is_none_or(|(enable, rollback)| !enable || rollback)));
        }
        let revision = format!(
            "arn:aws:ecs:{}:123456789012:service-revision/{}/{}/{}",
            target.region,
            target.cluster,
            target.service,
            w.service_revisions.len() + 1
        );
        w.service_revisions.push((revision, task_definition.to_string()));
        let service =
            w.services.get_mut(&service_key(target)).ok_or_else(|| EcsError::NotFound(target.service.clone()))?;
        service.deployments.push(EcsDeployment {
            id: id.clone(),
            task_definition: task_definition.to_string(),
            rollout_state: "IN_PROGRESS".into(),
            running: 0,
            desired: 2,
        });
        if w.lose_updates {
            return Err(EcsError::Transient("timeout: no answer from UpdateService".into()));
        }
        Ok(id)
    }
}

/// Load balancers in memory: each target group's targets, as the next reads will see them
/// (the last answer repeats).
#[derive(Debug, Default)]
pub struct FakeBalancers(Mutex<HashMap<String, std::collections::VecDeque<Vec<TargetHealth>>>>);

impl FakeBalancers {
    /// The answers the next reads of `target_group` give: `(id, state)` per target.
    pub fn answer(&self, target_group: &str, answers: &[&[(&str, &str)]]) {
        let answers = answers
            .iter()
            .map(|targets| {
                targets
                    .iter()
                    .map(|(id, state)| TargetHealth {
                        id: id.to_string(),
                        state: state.to_string(),
                        reason: (*state != "healthy").then(|| "Target.ResponseCodeMismatch".to_string()),
                    })
                    .collect()
            })
            .collect();
        lock(&self.0).insert(target_group.to_string(), answers);
    }
}

impl LoadBalancers for FakeBalancers {
    async fn target_health(&self, _: &Target, target_group: &str) -> Result<Vec<TargetHealth>, EcsError> {
        let mut groups = lock(&self.0);
        let answers = groups.get_mut(target_group).ok_or_else(|| EcsError::NotFound(target_group.to_string()))?;
        Ok(if answers.len() > 1 {
            answers.pop_front().unwrap_or_default()
        } else {
            answers.front().cloned().unwrap_or_default()
        })
    }
}
