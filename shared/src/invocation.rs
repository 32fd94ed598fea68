//! What every handler shares about the invocation it runs in: its identity and deadline (which
//! bound the locks and claims it takes), the retryable failure that makes Lambda redeliver its
//! event, and the one UpdateService step deploy and rollback both take.

use std::time::Duration;

use tracing::{info, warn};

use crate::event::{MalformedEvent, Received};
use crate::ports::{BusError, Claim, Clock, Ecs, EcsError, LedgerError, RegistryError, ServiceInfo};

/// How long a target's lock is held at most: longer than any Ferry function runs (the deploy
/// function's timeout is 15 minutes), so an invocation never loses its lock while it works.
pub const LEASE: Duration = Duration::from_secs(16 * 60);

/// How long after its invocation's deadline a lock or claim lapses: Lambda's own retries come
/// a minute or more after the deadline.
const LAPSE_MARGIN: Duration = Duration::from_secs(5);

/// Why an event is acknowledged without action: nothing in it for this function (ignored),
/// or not to be trusted (rejected). Each function's outcome has both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unacted {
    Ignored(String),
    Rejected(String),
}

impl Unacted {
    /// A rejected event, logged as a warning.
    pub fn rejected(why: String) -> Unacted {
        warn!(reason = %why, "event rejected");
        Unacted::Rejected(why)
    }
}

/// The event a handler acts on, or why it does not, logged the same way for every function
/// (a malformed event is acknowledged: a retry cannot mend it).
pub fn receive<T>(parsed: Result<Received<T>, MalformedEvent>) -> Result<T, Unacted> {
    match parsed {
        Ok(Received::Act(event)) => Ok(event),
        Ok(Received::Ignored(why)) => {
            info!(reason = %why, "event ignored");
            Err(Unacted::Ignored(why))
        }
        Ok(Received::Rejected(why)) => Err(Unacted::rejected(why)),
        Err(malformed) => {
            warn!(error = %malformed, "malformed event acknowledged without action");
            Err(Unacted::Ignored(malformed.to_string()))
        }
    }
}

/// A failure a retry can fix: returned as the function's error so Lambda redelivers the
/// event. Targets already handled are recognised as duplicates then.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Retryable {
    #[error("retryable: {0}")]
    Ledger(#[from] LedgerError),
    /// ECS failed, or a service could not be read, in a step a later attempt takes again.
    #[error("retryable: ECS: {0}")]
    Ecs(#[from] EcsError),
    #[error("retryable: ECR: {0}")]
    Registry(#[from] RegistryError),
    #[error("retryable: {0}")]
    Bus(#[from] BusError),
    /// Another invocation holds what this one needs (a target's lock, a deployment's claim)
    /// or has not recorded yet what it did.
    #[error("retryable: {0}")]
    Busy(String),
    /// ECS's API does not show yet what its event reported.
    #[error("retryable: {0}")]
    Lagging(String),
    /// One target of a push failed so.
    #[error("{target}: {source}")]
    Target { target: String, source: Box<Retryable> },
    /// Several targets of a push did.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Targets(Vec<Retryable>),
}

/// The invocation handling an event: its id owns the target locks and the claims it takes,
/// and its deadline bounds how long it holds them.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub attempt: String,
    pub deadline: Option<chrono::DateTime<chrono::Utc>>,
}

impl Invocation {
    /// When a lock or claim this invocation takes at `now` lapses: after `hold`, or shortly
    /// after the invocation's deadline if that is sooner. Lambda stops an invocation at its
    /// deadline and redelivers its event a minute or more later, so the redelivered event
    /// finds what the stopped invocation held lapsed, takes it over and finishes the work.
    pub fn lapse(&self, now: chrono::DateTime<chrono::Utc>, hold: Duration) -> chrono::DateTime<chrono::Utc> {
        let until = now + hold;
        self.deadline.map_or(until, |deadline| until.min(deadline + LAPSE_MARGIN))
    }

    /// A claim on a deployment (see [`crate::ports::Ledger::claim`]) taken at `now`.
    pub fn claim(&self, now: chrono::DateTime<chrono::Utc>, hold: Duration) -> Claim {
        Claim { by: self.attempt.clone(), until: self.lapse(now, hold) }
    }
}

/// Points the service at `revision` with the circuit breaker on; returns the ECS deployment
/// doing it. [`Ecs::update_service`] is tried once, so after a transient failure this looks
/// at the service before trying again (three tries in all): a timeout may have lost just the
/// answer. Only while the service's deployment is still the one `service` saw is the update
/// repeated; a new one is this update (done) or someone else's (stop: repeating would undo it).
pub(crate) async fn update_service<E: Ecs, C: Clock>(
    ecs: &E,
    clock: &C,
    target: &crate::model::Target,
    service: &ServiceInfo,
    revision: &str,
) -> Result<String, EcsError> {
    let before = service.primary.as_ref().map(|p| p.id.as_str());
    let mut tries = 1;
    loop {
        let failure = match ecs.update_service(target, service, revision).await {
            Err(EcsError::Transient(e)) => e,
            done => return done,
        };
        match ecs.service(target).await?.primary {
            Some(now) if Some(now.id.as_str()) == before && tries < 3 => {
                warn!(target = %target, error = %failure, "UpdateService failed and did not happen; trying again");
                clock.sleep(Duration::from_secs(tries)).await;
                tries += 1;
            }
            Some(now) if Some(now.id.as_str()) == before => return Err(EcsError::Transient(failure)),
            Some(now) if now.task_definition == revision => {
                info!(target = %target, ecs_deployment = %now.id, "UpdateService's answer was lost; it did happen");
                return Ok(now.id);
            }
            now => {
                return Err(EcsError::Rejected(format!(
                    "{failure}; meanwhile another deployment ({}) started",
                    now.map_or_else(|| "none".to_string(), |p| format!("{} of {}", p.id, p.task_definition))
                )));
            }
        }
    }
}
