//! In-memory ports for handler tests. They keep the same rules as the real adapters
//! (the ledger admits with [`Head::admit`] and only moves records forward), and record
//! every call so tests can assert what happened and what did not.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Migration;
use crate::model::{Deployment, Head, Lock, Origin, State, Target};
use crate::notify::Notification;
use crate::ports::{
    Begin, BusError, Claim, Clock, Container, Ecs, EcsDeployment, EcsError, EcsRollbacks, EventBus, Finish, HeadChange,
    HealthProbe, Image, Ledger, LedgerError, LoadBalancers, Notifier, NotifyError, ProbeResponse, Registry,
    RegistryError, Revision, ServiceInfo, TargetHealth, TaskExit,
};
use crate::render::{ImageChange, Images};

pub use ferry_core::testing::{repo_root, sample_event};

/// An invocation of `function`, each one's own (as Lambda's request ids are), with no
/// deadline: a test's calls are never stopped.
pub fn invocation(function: &str) -> crate::invocation::Invocation {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::invocation::Invocation { attempt: format!("{function}-{n}"), deadline: None }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A clock that only moves when slept on.
#[derive(Debug)]
pub struct FakeClock(Mutex<DateTime<Utc>>);

impl FakeClock {
    pub fn at(now: DateTime<Utc>) -> Self {
        FakeClock(Mutex::new(now))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = lock(&self.0);
        *now += by;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.0)
    }

    async fn sleep(&self, duration: Duration) {
        self.advance(duration);
        tokio::task::yield_now().await;
    }
}

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
            },
        );
        arn
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
        let rolls_back = s.breaker == Some((true, true)) || !s.alarm_rollback.is_empty();
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
        let w = self.call("DescribeServices", target)?;
        let s = w.services.get(&service_key(target)).ok_or_else(|| EcsError::NotFound(target.service.clone()))?;
        Ok(ServiceInfo {
            task_definition: s.task_definition.clone(),
            primary: s.deployments.last().cloned(),
            deployment_controller: Some("ECS".into()),
            failed: s.deployments.iter().filter(|d| d.rollout_state == "FAILED").map(|d| d.id.clone()).collect(),
            target_groups: s.target_groups.clone(),
            rollbacks: EcsRollbacks {
                circuit_breaker: s.breaker == Some((true, true)),
                alarms: s.alarm_rollback.clone(),
            },
            settings: Default::default(),
        })
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
        // As the adapter does: the breaker on, with rollback unless the team turned it off.
        service.breaker = Some((true, service.breaker.is_none_or(|(enable, rollback)| !enable || rollback)));
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

#[derive(Debug, Default)]
struct LedgerWorld {
    heads: HashMap<String, Head>,
    records: BTreeMap<(String, String), Deployment>,
    /// Claims (to verify, to roll back): record key → the claim.
    claims: HashMap<(String, String), Claim>,
    /// When each record was written FAILED; kept by every later write, as the DynamoDB ledger keeps it.
    failed_at: HashMap<(String, String), DateTime<Utc>>,
    fail: Option<LedgerError>,
    /// Operations (the port's method names) made to fail on their own.
    failing: HashMap<&'static str, LedgerError>,
    /// Writes another writer makes just before the next call of an operation.
    races: Vec<(&'static str, Deployment)>,
}

impl LedgerWorld {
    fn change_head(&mut self, d: &Deployment, change: HeadChange) {
        let head = self.heads.entry(d.target.key()).or_default();
        match change {
            HeadChange::None => {}
            HeadChange::LastKnownGood => {
                head.last_known_good = Some((d.task_definition.clone().unwrap_or_default(), d.digest.clone()));
            }
            HeadChange::Active => head.active = Some((d.id.clone(), d.digest.clone())),
            HeadChange::Quarantine => {
                if !head.quarantine.contains(&d.digest) {
                    head.quarantine.push(d.digest.clone());
                }
            }
        }
    }

    /// Replaces a record, keeping when it was first written.
    fn put(&mut self, d: &Deployment) {
        let key = record_key(d);
        let mut record = d.clone();
        if let Some(existing) = self.records.get(&key) {
            record.created_at = existing.created_at;
        }
        if d.state == State::Failed {
            self.failed_at.insert(key.clone(), d.updated_at);
        }
        self.records.insert(key, record);
    }

    /// Whether the record already holds `d`'s write (the SDK repeating a request whose
    /// answer was lost): the same state at the same moment, or the same FAILED write.
    fn holds_write(&self, d: &Deployment) -> bool {
        let key = record_key(d);
        if d.state == State::Failed {
            return self.failed_at.get(&key) == Some(&d.updated_at);
        }
        self.records.get(&key).is_some_and(|r| r.state == d.state && r.updated_at == d.updated_at)
    }
}

/// The ledger in memory, with the DynamoDB ledger's conditions.
#[derive(Debug, Default)]
pub struct MemoryLedger(Mutex<LedgerWorld>);

impl MemoryLedger {
    /// Every record, in key order (target, then deployment id).
    pub fn records(&self) -> Vec<Deployment> {
        lock(&self.0).records.values().cloned().collect()
    }

    pub fn set_head(&self, target: &Target, head: Head) {
        lock(&self.0).heads.insert(target.key(), head);
    }

    /// Makes every later call fail (as DynamoDB being unreachable would).
    pub fn fail(&self, error: Option<LedgerError>) {
        lock(&self.0).fail = error;
    }

    /// Makes every later call of one operation (`"finish"`) fail, or succeed again (`None`).
    pub fn fail_only(&self, operation: &'static str, error: Option<LedgerError>) {
        let mut w = lock(&self.0);
        match error {
            Some(e) => w.failing.insert(operation, e),
            None => w.failing.remove(operation),
        };
    }

    /// Another writer records `d` (as it is) just before the next call of `operation`: a race
    /// lost at exactly that point.
    pub fn race_next(&self, operation: &'static str, d: Deployment) {
        lock(&self.0).races.push((operation, d));
    }

    fn world(&self, operation: &'static str) -> Result<std::sync::MutexGuard<'_, LedgerWorld>, LedgerError> {
        let mut w = lock(&self.0);
        if let Some(i) = w.races.iter().position(|(op, _)| *op == operation) {
            let (_, d) = w.races.remove(i);
            w.put(&d);
        }
        match w.fail.as_ref().or(w.failing.get(operation)) {
            Some(e) => Err(e.clone()),
            None => Ok(w),
        }
    }
}

fn record_key(d: &Deployment) -> (String, String) {
    (d.target.key(), d.id.clone())
}

impl Ledger for MemoryLedger {
    async fn begin(
        &self,
        d: &Deployment,
        attempt: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Begin, LedgerError> {
        let mut w = self.world("begin")?;
        let existing = w.records.get(&record_key(d)).cloned();
        if let Some(existing) = existing.as_ref().filter(|e| e.state != State::Pending) {
            return Ok(Begin::Done(existing.state));
        }
        let head = w.heads.entry(d.target.key()).or_default();
        if head.admit(d, now).is_err() {
            return Ok(Begin::Refused(Box::new(head.clone())));
        }
        head.lock = Some(Lock { deployment: d.id.clone(), attempt: attempt.into(), until: lease_until });
        head.newest_pushed_at = Some(d.pushed_at);
        head.newest = Some(d.id.clone());
        head.quarantine.clear(); // a new digest lifts the quarantine of the ones before it
        let mut record = d.clone();
        if let Some(existing) = existing {
            record.created_at = existing.created_at;
        }
        w.records.insert(record_key(d), record);
        Ok(Begin::Started)
    }

    async fn record_skipped(&self, d: &Deployment) -> Result<(), LedgerError> {
        let mut w = self.world("record_skipped")?;
        match w.records.get(&record_key(d)) {
            Some(existing) if existing.state != State::Pending => {}
            _ => {
                w.records.insert(record_key(d), d.clone());
            }
        }
        Ok(())
    }

    async fn finish(&self, d: &Deployment, attempt: &str) -> Result<Finish, LedgerError> {
        let mut w = self.world("finish")?;
        match w.records.get(&record_key(d)) {
            Some(existing) if existing.state != State::Pending => return Ok(Finish::AlreadyIn(existing.state)),
            _ => {}
        }
        let head = w.heads.entry(d.target.key()).or_default();
        if head.lock.as_ref().is_some_and(|l| l.attempt == attempt) {
            head.lock = None;
            if d.state == State::InProgress {
                head.active = Some((d.id.clone(), d.digest.clone()));
            }
        }
        let created_at = w.records.get(&record_key(d)).map(|r| r.created_at);
        let mut record = d.clone();
        record.created_at = created_at.unwrap_or(d.created_at);
        w.records.insert(record_key(d), record);
        Ok(Finish::Recorded)
    }

    async fn adopt(&self, d: &Deployment, now: DateTime<Utc>) -> Result<bool, LedgerError> {
        let mut w = self.world("adopt")?;
        if w.records.get(&record_key(d)).is_none_or(|r| r.state != State::Pending) {
            return Ok(false);
        }
        let head = w.heads.entry(d.target.key()).or_default();
        if d.origin == Origin::Ferry {
            if head.lock.as_ref().is_some_and(|l| l.deployment != d.id && l.until > now) {
                return Ok(false);
            }
            head.lock = None;
        }
        head.active = Some((d.id.clone(), d.digest.clone()));
        w.put(d);
        Ok(true)
    }

    async fn transition(&self, d: &Deployment, from: &[State], head: HeadChange) -> Result<bool, LedgerError> {
        let mut w = self.world("transition")?;
        match w.records.get(&record_key(d)) {
            Some(existing) if from.contains(&existing.state) => {
                w.put(d);
                w.change_head(d, head);
                Ok(true)
            }
            // A transaction (a head change) is repeated by its idempotency token instead.
            Some(_) => Ok(head == HeadChange::None && w.holds_write(d)),
            None => Ok(false),
        }
    }

    async fn claim(
        &self,
        d: &Deployment,
        from: State,
        head: HeadChange,
        now: DateTime<Utc>,
        claim: &Claim,
    ) -> Result<bool, LedgerError> {
        let mut w = self.world("claim")?;
        let key = record_key(d);
        let claimable = match w.records.get(&key).map(|r| r.state) {
            Some(state) if state == from => true,
            Some(state) if state == d.state => {
                w.claims.get(&key).is_none_or(|held| held.until < now || held.by == claim.by)
            }
            _ => false,
        };
        if claimable {
            w.claims.insert(key.clone(), claim.clone());
            if let Some(record) = w.records.get_mut(&key) {
                record.state = d.state;
                record.updated_at = now;
            }
            w.change_head(d, head);
        }
        Ok(claimable)
    }

    async fn release_claim(&self, d: &Deployment, held: State, claim: &Claim) -> Result<(), LedgerError> {
        let mut w = self.world("release_claim")?;
        let key = record_key(d);
        if w.claims.get(&key).is_some_and(|c| c.by == claim.by)
            && let Some(record) = w.records.get_mut(&key).filter(|r| r.state == held)
        {
            record.state = d.state;
            w.claims.remove(&key);
        }
        Ok(())
    }

    async fn record_external(&self, d: &Deployment, head: HeadChange) -> Result<bool, LedgerError> {
        let mut w = self.world("record_external")?;
        if w.records.contains_key(&record_key(d)) {
            return Ok(false);
        }
        w.put(d);
        w.change_head(d, head);
        Ok(true)
    }

    async fn note_reason(&self, d: &Deployment, state: State) -> Result<bool, LedgerError> {
        let mut w = self.world("note_reason")?;
        match w.records.get_mut(&record_key(d)).filter(|r| r.state == state && r.reason != d.reason) {
            Some(record) => {
                record.reason = d.reason.clone();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn lock(
        &self,
        target: &Target,
        holder: &str,
        attempt: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let mut w = self.world("lock")?;
        let head = w.heads.entry(target.key()).or_default();
        if head.lock.as_ref().is_some_and(|l| l.until > now && l.attempt != attempt) {
            return Ok(false);
        }
        head.lock = Some(Lock { deployment: holder.into(), attempt: attempt.into(), until });
        Ok(true)
    }

    async fn unlock(&self, target: &Target, attempt: &str) -> Result<(), LedgerError> {
        let mut w = self.world("unlock")?;
        if let Some(head) = w.heads.get_mut(&target.key())
            && head.lock.as_ref().is_some_and(|l| l.attempt == attempt)
        {
            head.lock = None;
        }
        Ok(())
    }

    async fn release(&self, target: &Target, digest: &str) -> Result<(), LedgerError> {
        let mut w = self.world("release")?;
        if let Some(head) = w.heads.get_mut(&target.key()) {
            head.quarantine.retain(|q| q != digest);
        }
        Ok(())
    }

    async fn note_ecs_event(&self, d: &Deployment, event: &str) -> Result<(), LedgerError> {
        let mut w = self.world("note_ecs_event")?;
        if let Some(record) = w.records.get_mut(&record_key(d)) {
            record.ecs_event = Some(event.to_string());
        }
        Ok(())
    }

    async fn by_ecs_deployment(&self, ecs_deployment_id: &str) -> Result<Option<Deployment>, LedgerError> {
        let w = self.world("by_ecs_deployment")?;
        Ok(w.records.values().find(|d| d.ecs_deployment_id.as_deref() == Some(ecs_deployment_id)).cloned())
    }

    async fn note_notify_error(&self, d: &Deployment, error: &str) -> Result<(), LedgerError> {
        let mut w = self.world("note_notify_error")?;
        if let Some(record) = w.records.get_mut(&record_key(d)) {
            record.notify_error = Some(error.to_string());
        }
        Ok(())
    }

    async fn head(&self, target: &Target) -> Result<Head, LedgerError> {
        Ok(self.world("head")?.heads.get(&target.key()).cloned().unwrap_or_default())
    }

    async fn deployment(&self, target: &Target, id: &str) -> Result<Option<Deployment>, LedgerError> {
        Ok(self.world("deployment")?.records.get(&(target.key(), id.to_string())).cloned())
    }

    async fn history_before(
        &self,
        target: &Target,
        before: &str,
        limit: usize,
    ) -> Result<Vec<Deployment>, LedgerError> {
        let w = self.world("history")?;
        let key = target.key();
        Ok(w.records
            .iter()
            .rev()
            .filter(|((k, id), _)| *k == key && id.as_str() < before)
            .take(limit)
            .map(|(_, d)| d.clone())
            .collect())
    }

    async fn history(&self, target: &Target, limit: usize) -> Result<Vec<Deployment>, LedgerError> {
        let w = self.world("history")?;
        let key = target.key();
        Ok(w.records.iter().rev().filter(|((k, _), _)| *k == key).take(limit).map(|(_, d)| d.clone()).collect())
    }
}

/// Keeps every notification; can be made to fail.
#[derive(Debug, Default)]
pub struct RecordingNotifier {
    sent: Mutex<Vec<Notification>>,
    failing: Mutex<Option<String>>,
}

impl RecordingNotifier {
    pub fn sent(&self) -> Vec<Notification> {
        lock(&self.sent).clone()
    }

    pub fn fail_with(&self, error: Option<&str>) {
        *lock(&self.failing) = error.map(str::to_string);
    }
}

impl Notifier for RecordingNotifier {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        if let Some(e) = lock(&self.failing).clone() {
            return Err(NotifyError(e));
        }
        lock(&self.sent).push(n.clone());
        Ok(())
    }
}

/// Keeps every "Deployment Failed" event; can be made to fail.
#[derive(Debug, Default)]
pub struct RecordingBus {
    sent: Mutex<Vec<Deployment>>,
    failing: Mutex<bool>,
}

impl RecordingBus {
    pub fn sent(&self) -> Vec<Deployment> {
        lock(&self.sent).clone()
    }

    pub fn fail(&self, failing: bool) {
        *lock(&self.failing) = failing;
    }
}

impl EventBus for RecordingBus {
    async fn deployment_failed(&self, d: &Deployment) -> Result<(), BusError> {
        if *lock(&self.failing) {
            return Err(BusError("ThrottlingException".into()));
        }
        lock(&self.sent).push(d.clone());
        Ok(())
    }
}

/// ECR in memory: repository → its tagged images; every read is counted.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    images: Mutex<BTreeMap<String, Vec<Image>>>,
    reads: Mutex<usize>,
}

impl MemoryRegistry {
    pub fn add(&self, repository: &str, image: Image) {
        lock(&self.images).entry(repository.to_string()).or_default().push(image);
    }

    pub fn reads(&self) -> usize {
        *lock(&self.reads)
    }
}

impl Registry for MemoryRegistry {
    async fn images(&self, repository: &str) -> Result<Vec<Image>, RegistryError> {
        *lock(&self.reads) += 1;
        lock(&self.images)
            .get(repository)
            .cloned()
            .ok_or_else(|| RegistryError::Missing(format!("RepositoryNotFoundException: {repository}")))
    }

    async fn pushed_at(&self, repository: &str, _: &str, digest: &str) -> Result<Option<DateTime<Utc>>, RegistryError> {
        let images = self.images(repository).await?;
        Ok(images.into_iter().find(|i| i.digest == digest).map(|i| i.pushed_at))
    }
}

/// Answers health checks from a script: each GET takes the next answer (the last repeats).
#[derive(Debug, Default)]
pub struct ScriptedProbe {
    answers: Mutex<Vec<Result<ProbeResponse, String>>>,
    requests: Mutex<Vec<(String, Duration)>>,
}

impl ScriptedProbe {
    pub fn answering(answers: Vec<Result<ProbeResponse, String>>) -> Self {
        ScriptedProbe { answers: Mutex::new(answers), requests: Mutex::default() }
    }

    /// Every request made: URL and timeout.
    pub fn requests(&self) -> Vec<(String, Duration)> {
        lock(&self.requests).clone()
    }
}

impl HealthProbe for ScriptedProbe {
    async fn get(&self, url: &str, timeout: Duration) -> Result<ProbeResponse, String> {
        lock(&self.requests).push((url.to_string(), timeout));
        let mut answers = lock(&self.answers);
        match answers.len() {
            0 => Err("no answer scripted".into()),
            1 => answers[0].clone(),
            _ => answers.remove(0),
        }
    }
}
