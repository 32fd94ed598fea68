//! Ferry's words: pushes, targets, deployments and the deployment state machine.

use chrono::{DateTime, Utc};
use std::fmt;

/// A successful image push, as ECR reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The EventBridge event id: the same push redelivered has the same id.
    pub event_id: String,
    /// Account and region of the registry the image was pushed to.
    pub registry_account: String,
    pub registry_region: String,
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub pushed_at: DateTime<Utc>,
}

impl Push {
    /// The image reference ECS runs: pinned by digest, never by the (moving) tag.
    pub fn image(&self) -> String {
        format!(
            "{}.dkr.ecr.{}.amazonaws.com/{}@{}",
            self.registry_account, self.registry_region, self.repository, self.digest
        )
    }
}

/// One ECS service in one cluster, region and account: the unit Ferry deploys to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub environment: String,
    /// `None` when the target is in Ferry's own account and the config does not name it.
    pub account: Option<String>,
    pub region: String,
    pub cluster: String,
    pub service: String,
    /// The role assumed to reach another account.
    pub role_arn: Option<String>,
}

impl Target {
    /// Stable identity of the target in the ledger.
    pub fn key(&self) -> String {
        format!("{}/{}/{}/{}", self.account.as_deref().unwrap_or("-"), self.region, self.cluster, self.service)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.service, self.cluster, self.region)?;
        if let Some(account) = &self.account {
            write!(f, " in {account}")?;
        }
        Ok(())
    }
}

/// A deployment's state; docs/design.md draws the transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    /// Recorded during a freeze window: nothing in ECS changed; deployed when the window ends.
    Held,
    /// Waiting for its approvers: nothing in ECS changed; deployed once approved.
    AwaitingApproval,
    /// An approver rejected it, or no decision came in time.
    Rejected,
    InProgress,
    Verifying,
    Succeeded,
    Failed,
    RollingBack,
    RolledBack,
    RollbackFailed,
    Superseded,
    Skipped,
}

impl State {
    pub const ALL: [State; 13] = [
        State::Pending,
        State::Held,
        State::AwaitingApproval,
        State::Rejected,
        State::InProgress,
        State::Verifying,
        State::Succeeded,
        State::Failed,
        State::RollingBack,
        State::RolledBack,
        State::RollbackFailed,
        State::Superseded,
        State::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Held => "HELD",
            State::AwaitingApproval => "AWAITING_APPROVAL",
            State::Rejected => "REJECTED",
            State::InProgress => "IN_PROGRESS",
            State::Verifying => "VERIFYING",
            State::Succeeded => "SUCCEEDED",
            State::Failed => "FAILED",
            State::RollingBack => "ROLLING_BACK",
            State::RolledBack => "ROLLED_BACK",
            State::RollbackFailed => "ROLLBACK_FAILED",
            State::Superseded => "SUPERSEDED",
            State::Skipped => "SKIPPED",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// The states this one may move to. Every ledger write checks this, so a duplicate
    /// or late event can never move a record backwards.
    pub fn next(self) -> &'static [State] {
        use State::*;
        match self {
            // FAILED from PENDING: the deployment stopped before the service was updated
            // (a failing migration, a service that does not exist).
            Pending => &[AwaitingApproval, InProgress, Held, Skipped, Failed],
            // Released when the freeze ends, or approved (back to PENDING, to be deployed), or
            // overtaken by a newer push.
            Held => &[Pending, Superseded],
            AwaitingApproval => &[Pending, Rejected, Superseded],
            InProgress => &[Verifying, Succeeded, Failed, Superseded],
            Verifying => &[Succeeded, Failed, Superseded],
            // A verified deployment can still fail: an alarm, or an operator's rollback request.
            Succeeded => &[Failed],
            Failed => &[RollingBack, RolledBack],
            RollingBack => &[RolledBack, RollbackFailed],
            RolledBack | RollbackFailed | Superseded | Skipped | Rejected => &[],
        }
    }

    pub fn can_become(self, next: State) -> bool {
        self.next().contains(&next)
    }
}

impl serde::Serialize for State {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl serde::Serialize for Origin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who started a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    /// Ferry, for a push.
    #[default]
    Ferry,
    /// Someone else (an UpdateService by hand, another tool): recorded, not verified.
    External,
    /// ECS itself (circuit breaker or deployment alarms), rolling back a failed deployment.
    EcsRollback,
    /// Ferry's rollback function, putting the last-known-good revision back.
    Rollback,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Ferry => "ferry",
            Origin::External => "external",
            Origin::EcsRollback => "ecs-rollback",
            Origin::Rollback => "rollback",
        }
    }

    pub fn parse(s: &str) -> Option<Origin> {
        [Origin::Ferry, Origin::External, Origin::EcsRollback, Origin::Rollback].into_iter().find(|o| o.as_str() == s)
    }
}

/// One push on one target, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// Sortable and derived from the push alone (push time, then event id), so the same
    /// event always maps to the same record on a target.
    pub id: String,
    pub target: Target,
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub image: String,
    pub event_id: String,
    pub pushed_at: DateTime<Utc>,
    pub state: State,
    pub reason: Option<String>,
    pub ecs_deployment_id: Option<String>,
    pub previous_task_definition: Option<String>,
    pub task_definition: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Why a notification about this deployment could not be delivered, if one could not.
    pub notify_error: Option<String>,
    pub origin: Origin,
    /// The last ECS deployment event applied to the record, and when ECS sent it.
    pub ecs_event: Option<String>,
    /// For a rollback (Ferry's or ECS's): the deployment it undoes.
    pub rolls_back: Option<String>,
    /// When it was proven live (SUCCEEDED): an alarm's window starts here.
    pub live_at: Option<DateTime<Utc>>,
    /// What ECS's lifecycle hooks were answered, one per stage (blue/green, linear, canary).
    pub hooks: Vec<crate::hook::HookRecord>,
    /// Who approved it (`approved by U0123ABCD, U0456EFGH`), when its target needs approval.
    pub approval: Option<String>,
    /// Who deployed it during a freeze, and why (`ferry deploy --override-freeze`).
    pub freeze_override: Option<String>,
    /// The push's order key ([`crate::rules::order_key`]: its version, then its push time) when
    /// the environment orders pushes by version: the push is newer than another when this is greater.
    pub version: Option<String>,
    /// What the image says of its source (its OCI labels), when it says it.
    pub image_labels: ImageLabels,
}

/// The OCI labels an image's config carries about its source
/// (<https://github.com/opencontainers/image-spec/blob/v1.1.1/annotations.md>).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageLabels {
    /// `org.opencontainers.image.revision`: the commit it was built from.
    pub revision: Option<String>,
    /// `org.opencontainers.image.created`: when it was built (lead time counts from here).
    pub created: Option<DateTime<Utc>>,
}

impl ImageLabels {
    pub const REVISION: &str = "org.opencontainers.image.revision";
    pub const CREATED: &str = "org.opencontainers.image.created";

    /// The two labels out of an image config's `Labels` (`config.Labels`: a map, `null` or absent).
    pub fn from_config(config: &serde_json::Value) -> ImageLabels {
        let label = |name: &str| {
            config.pointer("/config/Labels").and_then(|l| l.get(name)).and_then(|v| v.as_str()).map(str::trim)
        };
        ImageLabels {
            revision: label(Self::REVISION).filter(|r| !r.is_empty()).map(|r| r.chars().take(100).collect()),
            created: label(Self::CREATED)
                .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
                .map(|c| c.with_timezone(&Utc)),
        }
    }
}

impl Deployment {
    /// A new PENDING record for `push` on `target`.
    pub fn new(push: &Push, target: Target, now: DateTime<Utc>) -> Deployment {
        Deployment {
            id: deployment_id(push),
            target,
            repository: push.repository.clone(),
            tag: push.tag.clone(),
            digest: push.digest.clone(),
            image: push.image(),
            event_id: push.event_id.clone(),
            pushed_at: push.pushed_at,
            state: State::Pending,
            reason: None,
            ecs_deployment_id: None,
            previous_task_definition: None,
            task_definition: None,
            created_at: now,
            updated_at: now,
            notify_error: None,
            origin: Origin::Ferry,
            ecs_event: None,
            rolls_back: None,
            live_at: None,
            hooks: Vec::new(),
            approval: None,
            freeze_override: None,
            version: None,
            image_labels: ImageLabels::default(),
        }
    }

    /// Whether ECS deployment `id` is this deployment's rollout.
    pub fn is_rollout_id(&self, id: &str) -> bool {
        self.ecs_deployment_id.as_deref() == Some(id)
    }

    /// Who starts this deployment's migration task (ECS's `startedBy`, and its RunTask
    /// idempotency token): the same for every attempt at it, so a retry finds the task an
    /// earlier attempt started instead of starting a second one. Once per environment, the
    /// same for every target of the push there.
    pub fn migration_token(&self, once_per_environment: bool) -> String {
        let scope = if once_per_environment { self.target.environment.clone() } else { self.target.key() };
        // FNV-1a: stable across runs and builds (ECS allows 64 characters for a token).
        let hash = format!("{}|{scope}", self.id)
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        format!("ferry-migration-{hash:016x}")
    }

    /// Whether ECS failed its rollout: ECS's SERVICE_DEPLOYMENT_FAILED is the last event on record.
    pub fn failed_by_ecs(&self) -> bool {
        self.ecs_event.as_deref().is_some_and(|e| e.starts_with("SERVICE_DEPLOYMENT_FAILED"))
    }

    /// Whether the deployment can still change (not in a final state).
    pub fn is_open(&self) -> bool {
        !self.state.next().is_empty()
    }
}

/// `20261116T015434Z-<event id>`: sorts by push time, unique per push.
pub fn deployment_id(push: &Push) -> String {
    format!("{}-{}", push.pushed_at.format("%Y%m%dT%H%M%SZ"), push.event_id)
}

/// The ledger's view of one target: what is deployed there and who holds its lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// Who holds the target's lock, and until when.
    pub lock: Option<Lock>,
    /// The newest push time accepted for the target: an older push is stale.
    pub newest_pushed_at: Option<DateTime<Utc>>,
    /// The deployment of that newest push.
    pub newest: Option<String>,
    /// The newest version accepted for the target, in an environment ordered by version:
    /// its order key ([`crate::rules::order_key`]) and its tag. A push of a lower version is
    /// older, whenever it was pushed.
    pub newest_version: Option<(String, String)>,
    /// The deployment in flight or live, and its digest.
    pub active: Option<(String, String)>,
    /// The last deployment that passed verification: its task definition and digest.
    pub last_known_good: Option<(String, String)>,
    /// The push that waits (HELD for a freeze, or AWAITING_APPROVAL): the newest push,
    /// while it waits.
    pub held: Option<String>,
    /// Digests that failed and were rolled back here: not deployed again automatically
    /// until another digest is pushed or an operator releases them.
    pub quarantine: Vec<String>,
}

/// A target's lock: held by one invocation (an attempt) working on one deployment, as a
/// lease that ends shortly after that invocation's deadline, so a function that died
/// cannot block the target and its redelivered event can take over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub deployment: String,
    pub attempt: String,
    pub until: DateTime<Utc>,
}

/// Why a push is not deployed to a target now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another deployment holds the target; wait for it.
    Locked { by: String, until: DateTime<Utc> },
    /// A newer push was already accepted for the target.
    Stale { newest: DateTime<Utc> },
    /// A higher version (this tag) was already accepted for the target.
    Older { newest: String },
    /// This digest is already live or in flight on the target.
    SameDigest { deployment: String },
    /// This digest failed here and was rolled back.
    Quarantined,
}

impl Refusal {
    /// The reason recorded on a SKIPPED record; `None` while the push should wait.
    pub fn skip_reason(&self) -> Option<String> {
        match self {
            Refusal::Locked { .. } => None,
            Refusal::Stale { newest } => {
                Some(format!("stale: a newer push (from {}) was already accepted for this target", newest.to_rfc3339()))
            }
            Refusal::Older { newest } => {
                Some(format!("older: version {newest} was already accepted for this target (order = \"semver\")"))
            }
            Refusal::SameDigest { deployment } => {
                Some(format!("this digest is already live or in flight (deployment {deployment})"))
            }
            Refusal::Quarantined => Some(
                "quarantined: this digest failed and was rolled back on this target; push a new digest or release it"
                    .into(),
            ),
        }
    }
}

impl Head {
    /// Why the target has already taken a push newer than `d`, if it has: by version (then
    /// push time) when `d` and the head have one, else by push time (the same second is not
    /// older): a target switched to version order goes by push time until it takes a version.
    pub fn newer_than(&self, d: &Deployment) -> Option<Refusal> {
        match (&d.version, &self.newest_version) {
            (Some(version), Some((key, tag))) => (key > version).then(|| Refusal::Older { newest: tag.clone() }),
            _ => self.newest_pushed_at.filter(|newest| *newest > d.pushed_at).map(|newest| Refusal::Stale { newest }),
        }
    }

    /// Whether `deployment` may take the target's lock at `now`; the DynamoDB ledger
    /// enforces the same rules in one conditional write.
    pub fn admit(&self, deployment: &Deployment, now: DateTime<Utc>) -> Result<(), Refusal> {
        if let Some(lock) = self.lock.as_ref().filter(|lock| lock.until > now) {
            return Err(Refusal::Locked { by: lock.deployment.clone(), until: lock.until });
        }
        if let Some(refusal) = self.newer_than(deployment) {
            return Err(refusal);
        }
        if self.quarantine.contains(&deployment.digest) {
            return Err(Refusal::Quarantined);
        }
        match &self.active {
            Some((id, digest)) if *digest == deployment.digest => Err(Refusal::SameDigest { deployment: id.clone() }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_763_000_000 + secs, 0).single().expect("time")
    }

    fn deployment(pushed: i64, digest: &str) -> Deployment {
        let push = Push {
            event_id: format!("evt-{pushed}"),
            registry_account: "123456789012".into(),
            registry_region: "eu-west-1".into(),
            repository: "shop/api".into(),
            tag: "staging-1".into(),
            digest: digest.into(),
            pushed_at: at(pushed),
        };
        let target = Target {
            environment: "staging".into(),
            account: None,
            region: "eu-west-1".into(),
            cluster: "c".into(),
            service: "s".into(),
            role_arn: None,
        };
        Deployment::new(&push, target, at(pushed))
    }

    #[test]
    fn states_round_trip_and_only_move_forward() {
        for state in State::ALL {
            assert_eq!(State::parse(state.as_str()), Some(state));
            assert!(!state.can_become(state), "{state} never moves to itself");
            assert_eq!(
                state.can_become(State::Pending),
                matches!(state, State::Held | State::AwaitingApproval),
                "only a held or approved push goes back to PENDING"
            );
        }
        assert_eq!(State::parse("DONE"), None);
        let allowed: Vec<(State, State)> = State::ALL
            .into_iter()
            .flat_map(|from| State::ALL.into_iter().filter(move |to| from.can_become(*to)).map(move |to| (from, to)))
            .collect();
        use State::*;
        assert_eq!(
            allowed,
            vec![
                (Pending, Held),
                (Pending, AwaitingApproval),
                (Pending, InProgress),
                (Pending, Failed),
                (Pending, Skipped),
                (Held, Pending),
                (Held, Superseded),
                (AwaitingApproval, Pending),
                (AwaitingApproval, Rejected),
                (AwaitingApproval, Superseded),
                (InProgress, Verifying),
                (InProgress, Succeeded),
                (InProgress, Failed),
                (InProgress, Superseded),
                (Verifying, Succeeded),
                (Verifying, Failed),
                (Verifying, Superseded),
                (Succeeded, Failed),
                (Failed, RollingBack),
                (Failed, RolledBack),
                (RollingBack, RolledBack),
                (RollingBack, RollbackFailed),
            ]
        );
    }

    fn lock(deployment: &str, until: i64) -> Lock {
        Lock { deployment: deployment.into(), attempt: "attempt".into(), until: at(until) }
    }

    #[test]
    fn admission_follows_lock_age_and_digest() {
        let d = deployment(100, "sha256:new");
        let cases: Vec<(&str, Head, Result<(), Refusal>)> = vec![
            ("empty head", Head::default(), Ok(())),
            (
                "locked by another",
                Head { lock: Some(lock("other", 200)), ..Head::default() },
                Err(Refusal::Locked { by: "other".into(), until: at(200) }),
            ),
            (
                // A concurrent delivery of the same event holds it: wait, never interleave.
                "locked by another attempt at this deployment",
                Head { lock: Some(lock(&d.id, 200)), ..Head::default() },
                Err(Refusal::Locked { by: d.id.clone(), until: at(200) }),
            ),
            ("expired lock", Head { lock: Some(lock("other", 50)), ..Head::default() }, Ok(())),
            (
                "newer push accepted",
                Head { newest_pushed_at: Some(at(101)), ..Head::default() },
                Err(Refusal::Stale { newest: at(101) }),
            ),
            ("same second", Head { newest_pushed_at: Some(at(100)), ..Head::default() }, Ok(())),
            (
                "same digest live",
                Head { active: Some(("live".into(), "sha256:new".into())), ..Head::default() },
                Err(Refusal::SameDigest { deployment: "live".into() }),
            ),
            (
                "other digest live",
                Head { active: Some(("live".into(), "sha256:old".into())), ..Head::default() },
                Ok(()),
            ),
            (
                "quarantined",
                Head { quarantine: vec!["sha256:bad".into(), "sha256:new".into()], ..Head::default() },
                Err(Refusal::Quarantined),
            ),
            ("another digest quarantined", Head { quarantine: vec!["sha256:bad".into()], ..Head::default() }, Ok(())),
        ];
        for (name, head, expected) in cases {
            assert_eq!(head.admit(&d, at(100)), expected, "{name}");
        }
    }

    #[test]
    fn by_version_a_lower_version_is_older_whenever_it_was_pushed() {
        let key = |tag: &str, pushed: i64| {
            crate::rules::order_key(&crate::rules::version_key(tag).expect("version"), at(pushed))
        };
        let mut hotfix = deployment(100, "sha256:hotfix");
        hotfix.version = Some(key("v1.2.4", 100));
        let took = |tag: &str, pushed: i64| Head {
            newest_pushed_at: Some(at(pushed)),
            newest_version: Some((key(tag, pushed), tag.to_string())),
            ..Head::default()
        };
        assert_eq!(took("v1.3.0", 50).admit(&hotfix, at(100)), Err(Refusal::Older { newest: "v1.3.0".into() }));
        assert_eq!(took("v1.2.3", 500).admit(&hotfix, at(100)), Ok(()), "a lower version pushed later is older");
        assert_eq!(took("v1.2.4", 50).admit(&hotfix, at(100)), Ok(()), "the same version built again later");
        assert_eq!(
            took("v1.2.4", 500).admit(&hotfix, at(100)),
            Err(Refusal::Older { newest: "v1.2.4".into() }),
            "an earlier build of the version already taken (its event came late)"
        );
        assert_eq!(took("v1.2.4", 100).admit(&hotfix, at(100)), Ok(()), "the same push again");
        let by_time = |pushed: i64| Head { newest_pushed_at: Some(at(pushed)), ..Head::default() };
        assert_eq!(by_time(50).admit(&hotfix, at(100)), Ok(()), "switched to version order: a later push");
        assert_eq!(
            by_time(500).admit(&hotfix, at(100)),
            Err(Refusal::Stale { newest: at(500) }),
            "switched to version order, the target goes by push time until it takes a version"
        );
        assert!(
            Refusal::Older { newest: "v1.3.0".into() }.skip_reason().is_some_and(|r| r.contains("v1.3.0")),
            "the skip names the newer version"
        );
    }

    #[test]
    fn deployment_ids_sort_by_push_time_and_images_pin_the_digest() {
        let older = deployment(5, "sha256:a");
        let newer = deployment(60, "sha256:a");
        assert!(older.id < newer.id);
        assert_eq!(older.image, "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/api@sha256:a");
        assert_eq!(older.target.key(), "-/eu-west-1/c/s");
    }
}
