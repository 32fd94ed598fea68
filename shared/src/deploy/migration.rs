//! Migrations: the one-off task run before the service is updated, started once per
//! deployment (found again by its token on a retry), stopped when it overruns, and waited on
//! by the other targets when it runs once per environment.

use std::time::Duration;

use tracing::{info, warn};

use super::{Deployer, Stop};
use crate::config::Migration;
use crate::model::Target;
use crate::ports::{Clock, Ecs, Ledger, Notifier, Registry, ServiceInfo};

impl<E: Ecs, L: Ledger, N: Notifier, C: Clock, R: Registry> Deployer<'_, E, L, N, C, R> {
    /// Runs the migration task to its end; anything but exit code 0 stops the deployment.
    /// The task an earlier attempt started (same token) is waited on, never started twice;
    /// one that overruns its time is stopped.
    pub(super) async fn migrate(
        &self,
        target: &Target,
        service: &ServiceInfo,
        task_definition: &str,
        migration: &Migration,
        token: &str,
    ) -> Result<(), Stop> {
        let task = match self.ecs.find_task(target, token).await? {
            Some(task) => {
                info!(target = %target, task = %task, "migration started by an earlier attempt: waiting on it");
                task
            }
            None => self.ecs.run_task(target, service, task_definition, migration, token).await?,
        };
        info!(target = %target, task = %task, "migration started");
        let deadline = self.clock.now() + Duration::from_secs(migration.timeout_seconds);
        let overran = self.wait_for(target, &task, migration, deadline).await?;
        if overran {
            let reason = format!("ferry: the migration overran its {} s", migration.timeout_seconds);
            if let Err(e) = self.ecs.stop_task(target, &task, &reason).await {
                warn!(target = %target, task = %task, error = %e, "could not stop the overrunning migration");
            }
            return Err(Stop::Failed(format!(
                "migration task {task} did not finish within {} s and was stopped; the service was not updated",
                migration.timeout_seconds
            )));
        }
        Ok(())
    }

    /// Waits for the environment's migration, run at its first target `at` by that target's
    /// deployment of the same push (migrations once per environment).
    pub(super) async fn await_migration(&self, at: &Target, migration: &Migration, token: &str) -> Result<(), Stop> {
        // Its own deployment registers a revision first and may wait for the target's lock.
        let deadline = self.clock.now() + Duration::from_secs(migration.timeout_seconds) + self.settings.lock_wait;
        let overran = loop {
            if let Some(task) = self.ecs.find_task(at, token).await? {
                info!(at = %at, task = %task, "waiting for the environment's migration");
                break self.wait_for(at, &task, migration, deadline).await?;
            }
            if self.clock.now() >= deadline {
                break true;
            }
            self.clock.sleep(self.settings.poll).await;
        };
        if overran {
            return Err(Stop::Failed(format!(
                "the environment's migration at {at} did not finish in time; the service was not updated"
            )));
        }
        Ok(())
    }

    /// Polls `task` until it stops (`Ok(false)` if it exited 0) or `deadline` (`Ok(true)`).
    async fn wait_for(
        &self,
        target: &Target,
        task: &str,
        migration: &Migration,
        deadline: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, Stop> {
        loop {
            if let Some(exit) = self.ecs.task_exit(target, task, &migration.container).await? {
                return match exit.exit_code {
                    Some(0) => {
                        info!(target = %target, task = %task, "migration succeeded");
                        Ok(false)
                    }
                    code => Err(Stop::Failed(format!(
                        "migration task {task} exited with {}: {}; the service was not updated",
                        code.map_or("no exit code".to_string(), |c| format!("code {c}")),
                        exit.reason
                    ))),
                };
            }
            if self.clock.now() >= deadline {
                return Ok(true);
            }
            self.clock.sleep(self.settings.poll).await;
        }
    }
}
