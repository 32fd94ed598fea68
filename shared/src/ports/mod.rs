//! What the core needs from the world, in Ferry's words. Adapters implement these with
//! the AWS SDK and HTTP; `fakes` implements them in memory for handler tests.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::Deployment;
use crate::notify::Notification;

mod ecs;
mod ledger;

pub use ecs::{
    Alarms, Container, Ecs, EcsDeployment, EcsError, EcsRollbacks, LifecycleHook, LoadBalancers, Revision, ServiceInfo,
    ServiceSettings, TargetHealth, TaskExit,
};
pub use ledger::{Approved, Begin, Claim, Finish, HeadChange, Ledger, LedgerError};

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

    /// What image `digest` of `repository` in `registry` says of its source (its config's labels).
    fn labels(
        &self,
        repository: &str,
        registry: &str,
        digest: &str,
    ) -> impl Future<Output = Result<crate::model::ImageLabels, RegistryError>> + Send;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("notification: {0}")]
pub struct NotifyError(pub String);

pub trait Notifier: Send + Sync {
    fn send(&self, notification: &Notification) -> impl Future<Output = Result<(), NotifyError>> + Send;

    /// Posts the weekly digest (Slack: the `digest` route, else `default`).
    fn digest(&self, digest: &crate::digest::Digest) -> impl Future<Output = Result<(), NotifyError>> + Send;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event bus: {0}")]
pub struct BusError(pub String);

/// Ferry's own events on EventBridge, for the rollback function and anyone else.
pub trait EventBus: Send + Sync {
    /// Announces a failed deployment ("Deployment Failed").
    fn deployment_failed(&self, deployment: &Deployment) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Announces an approver's decision ("Deployment Approved" or "Deployment Rejected"), for
    /// the deploy function to carry out.
    fn decided(
        &self,
        deployment: &Deployment,
        verdict: crate::approval::Verdict,
        by: &str,
    ) -> impl Future<Output = Result<(), BusError>> + Send;
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
