//! Reconciliation: ECR sends its push events best-effort, so a push can go unannounced.
//! On a schedule (and on `ferry reconcile`), the deploy function looks in ECR for the newest
//! image each environment's rules take, and deploys it through the normal path to every
//! target where it is newer than the newest push Ferry took there — the push whose event
//! never came.
//!
//! What is never reconciled: a target Ferry has not deployed yet (its first push does
//! that), an image no newer than the newest push taken for the target (an older image, or
//! the same push: its event came), a digest already live or quarantined there, a target
//! locked by a deployment in progress (the next run looks again).
//!
//! It also deploys what a freeze held (the newest push on the target, once the freeze is over).

use tracing::{info, warn};

use crate::config::Config;
use crate::deploy::{Deployer, Release};
pub use crate::deploy::{Finding, Reconciled};
use crate::invocation::{Invocation, Retryable};
use crate::model::{Deployment, Head, Origin, Push, Refusal, State, Target};
use crate::plan::{Plan, TargetPlan, plan};
use crate::ports::{Clock, Ecs, HeadChange, Image, Ledger, Notifier, Registry, RegistryError};

/// The event id of a push replayed from ECR's record of it (by reconciliation or `ferry
/// deploy`): derived from the image and tag, so replaying the same push twice is one push.
pub fn replay_event_id(digest: &str, tag: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    format!("ferry-replay-{}-{tag}", &hex[..hex.len().min(16)])
}

/// The push that `tag` of `image` would have announced.
pub fn replayed_push(repository: &str, image: &Image, tag: &str) -> Push {
    Push {
        event_id: replay_event_id(&image.digest, tag),
        registry_account: image.registry_account.clone(),
        registry_region: image.registry_region.clone(),
        repository: repository.to_string(),
        tag: tag.to_string(),
        digest: image.digest.clone(),
        pushed_at: image.pushed_at,
    }
}

/// Per environment, the newest of `repository`'s images whose tag deploys there (the
/// highest version where the environment orders by version): the pushes reconciliation
/// compares with what each target took. Ties (one second, two images) go to the larger
/// digest, so every run picks the same one.
pub fn candidates(config: &Config, repository: &str, images: &[Image]) -> Vec<Push> {
    let mut newest: Vec<(String, (Option<String>, Push))> = Vec::new();
    for image in images {
        for tag in &image.tags {
            let push = replayed_push(repository, image, tag);
            let Plan::Deploy { environment, targets } = plan(config, &push) else { continue };
            let version = targets.first().and_then(|t| t.version.clone());
            let order = |(v, p): &(Option<String>, Push)| (v.clone(), p.pushed_at, p.digest.clone());
            let candidate = (version, push);
            match newest.iter_mut().find(|(env, _)| *env == environment) {
                Some((_, best)) if order(best) >= order(&candidate) => {}
                Some((_, best)) => *best = candidate,
                None => newest.push((environment, candidate)),
            }
        }
    }
    newest.into_iter().map(|(_, (_, push))| push).collect()
}

impl<E: Ecs, L: Ledger, N: Notifier, C: Clock, R: Registry> Deployer<'_, E, L, N, C, R> {
    /// Looks in ECR for pushes whose events never came and deploys them (or, with
    /// `dry_run`, only says so). A repository ECR does not have is reported and skipped.
    pub async fn reconcile(&self, invocation: &Invocation, dry_run: bool) -> Result<Vec<Reconciled>, Retryable> {
        let mut repositories: Vec<&str> = self.config.services.iter().map(|s| s.repository.as_str()).collect();
        repositories.sort_unstable();
        repositories.dedup();
        let mut found = Vec::new();
        for repository in repositories {
            let images = match self.registry.images(repository).await {
                Ok(images) => images,
                Err(RegistryError::Missing(why)) => {
                    warn!(repository = %repository, error = %why, "cannot reconcile a repository ECR does not show");
                    continue;
                }
                Err(transient @ RegistryError::Transient(_)) => return Err(transient.into()),
            };
            for push in candidates(self.config, repository, &images) {
                let Plan::Deploy { targets, .. } = plan(self.config, &push) else { continue };
                for tp in &targets {
                    let (finding, push) = self.reconcile_target(&push, tp, invocation, dry_run).await?;
                    if let Finding::Missed(outcome) = &finding {
                        info!(target = %tp.target, repository = %push.repository, tag = %push.tag, digest = %push.digest,
                              pushed_at = %push.pushed_at, outcome = ?outcome, dry_run, "a push whose event never came");
                    }
                    found.push(Reconciled {
                        target: tp.target.to_string(),
                        repository: push.repository.clone(),
                        tag: push.tag.clone(),
                        digest: push.digest.clone(),
                        pushed_at: push.pushed_at,
                        finding,
                    });
                }
            }
        }
        info!(
            targets = found.len(),
            missed = found.iter().filter(|r| matches!(r.finding, Finding::Missed(_))).count(),
            dry_run,
            "reconciled"
        );
        Ok(found)
    }

    async fn reconcile_target(
        &self,
        push: &Push,
        tp: &TargetPlan,
        invocation: &Invocation,
        dry_run: bool,
    ) -> Result<(Finding, Push), Retryable> {
        let head = self.ledger.head(&tp.target).await?;
        let Some(newest) = head.newest_pushed_at else { return Ok((Finding::NeverDeployed, push.clone())) };
        let now = self.clock.now();
        let candidate = tp.deployment(push, now);
        // As Head::newer_than: by version where both have one, else by push time. A head
        // written before keys carried the push time holds the bare version: compare that.
        let no_newer = match (&candidate.version, &head.newest_version) {
            (Some(version), Some((taken, _))) if !taken.contains(' ') => {
                version.split(' ').next().unwrap_or_default() <= taken.as_str()
            }
            (Some(version), Some((taken, _))) => version <= taken,
            _ => push.pushed_at <= newest,
        };
        let waiting = self.waiting(&tp.target, &head).await?;
        if let Some(asked) = waiting.as_ref().filter(|w| w.state == State::AwaitingApproval) {
            let push = push_of(asked);
            let expires = self.config.approval_for(&tp.target, &asked.repository).map(|a| asked.created_at + a.timeout);
            // No rule any more (the config changed): nobody can approve it; it expires now.
            if expires.is_none_or(|at| at <= now) {
                if !dry_run {
                    self.expire(asked).await?;
                }
                return Ok((Finding::Expired, push));
            }
            if no_newer {
                return Ok((Finding::Awaiting(asked.reason.clone().unwrap_or_default()), push));
            }
        }
        if no_newer && let Some(held) = waiting.filter(|w| w.state == State::Held) {
            let push = push_of(&held);
            let Some(plan) = self.replan(&push, &tp.target) else {
                return Ok((Finding::UpToDate(format!("push {} no longer deploys here", held.id)), push));
            };
            if let Some(frozen) = self.config.environment(&tp.target.environment).and_then(|e| e.frozen(now)) {
                return Ok((Finding::Held(format!("until {}: {}", frozen.until.to_rfc3339(), frozen.reason)), push));
            }
            info!(target = %tp.target, deployment = %held.id, dry_run, "the freeze is over: deploying the held push");
            if dry_run {
                return Ok((Finding::Released(None), push));
            }
            let mut released = held.clone();
            released.state = State::Pending;
            released.updated_at = now;
            if !self.ledger.transition(&released, &[State::Held], HeadChange::None).await? {
                return Ok((Finding::Busy(format!("push {} was released by another run", held.id)), push));
            }
            let outcome = self.deploy_target(&push, &plan, invocation, &Release::of(&held)).await?;
            return Ok((Finding::Released(Some(outcome)), push));
        }
        if no_newer && let Some(stranded) = self.stranded(&tp.target, &head).await? {
            let push = push_of(&stranded);
            let Some(plan) = self.replan(&push, &tp.target) else {
                return Ok((Finding::UpToDate(format!("push {} no longer deploys here", stranded.id)), push));
            };
            warn!(target = %tp.target, deployment = %stranded.id, dry_run, "a push left PENDING by every attempt");
            if dry_run {
                return Ok((Finding::Stranded(None), push));
            }
            let outcome = self.deploy_target(&push, &plan, invocation, &Release::of(&stranded)).await?;
            return Ok((Finding::Stranded(Some(outcome)), push));
        }
        if no_newer {
            let taken = match &head.newest_version {
                Some((_, tag)) if candidate.version.is_some() => format!("version {tag}"),
                _ => format!("from {}", newest.to_rfc3339()),
            };
            return Ok((
                Finding::UpToDate(format!("no newer than the newest push taken for the target ({taken})")),
                push.clone(),
            ));
        }
        let finding = match head.admit(&candidate, now) {
            Ok(()) if dry_run => Finding::Missed(None),
            Ok(()) => Finding::Missed(Some(self.deploy_target(push, tp, invocation, &Release::default()).await?)),
            Err(Refusal::Locked { by, .. }) => Finding::Busy(format!("deployment {by} holds the target")),
            Err(refusal) => Finding::UpToDate(refusal.skip_reason().unwrap_or_default()),
        };
        Ok((finding, push.clone()))
    }
}

impl<E: Ecs, L: Ledger, N: Notifier, C: Clock, R: Registry> Deployer<'_, E, L, N, C, R> {
    /// `push`'s plan for `target`, if it still deploys there.
    pub(crate) fn replan(&self, push: &Push, target: &Target) -> Option<TargetPlan> {
        let Plan::Deploy { targets, .. } = plan(self.config, push) else { return None };
        targets.into_iter().find(|t| t.target == *target)
    }

    /// The push that waits on the target (HELD by a freeze, or AWAITING_APPROVAL), if one does.
    async fn waiting(&self, target: &Target, head: &Head) -> Result<Option<Deployment>, Retryable> {
        let Some(id) = &head.held else { return Ok(None) };
        let waits = |d: &Deployment| matches!(d.state, State::Held | State::AwaitingApproval);
        Ok(self.ledger.deployment(target, id).await?.filter(waits))
    }

    /// Records a push nobody decided on in time REJECTED, and says so.
    async fn expire(&self, asked: &Deployment) -> Result<(), Retryable> {
        let mut expired = asked.clone();
        expired.state = State::Rejected;
        expired.reason = Some("expired: no approver decided in time".into());
        expired.updated_at = self.clock.now();
        if self.ledger.transition(&expired, &[State::AwaitingApproval], HeadChange::None).await? {
            warn!(target = %asked.target, deployment = %asked.id, "approval expired");
            self.notify(&expired).await;
        }
        Ok(())
    }

    /// The target's newest push, if it is still PENDING though no invocation can hold it
    /// any more (its last attempt began longer ago than the lease): every attempt failed.
    async fn stranded(&self, target: &Target, head: &Head) -> Result<Option<Deployment>, Retryable> {
        let Some(id) = &head.newest else { return Ok(None) };
        let lapsed = self.clock.now() - self.settings.lease;
        let stranded = |d: &Deployment| d.origin == Origin::Ferry && d.state == State::Pending && d.updated_at < lapsed;
        Ok(self.ledger.deployment(target, id).await?.filter(stranded))
    }
}

/// The push a deployment record was made from.
pub(crate) fn push_of(d: &Deployment) -> Push {
    // The image is `<account>.dkr.ecr.<region>.amazonaws.com/<repository>@<digest>`.
    let mut host = d.image.split('/').next().unwrap_or_default().split('.');
    let account = host.next().unwrap_or_default().to_string();
    let region = host.nth(2).unwrap_or_default().to_string();
    Push {
        event_id: d.event_id.clone(),
        registry_account: account,
        registry_region: region,
        repository: d.repository.clone(),
        tag: d.tag.clone(),
        digest: d.digest.clone(),
        pushed_at: d.pushed_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    const CONFIG: &str = r#"
[[environments]]
name = "staging"
rules = [{ glob = "staging-*" }, { glob = "latest" }]
targets = [{ region = "eu-west-1", cluster = "staging" }]

[[environments]]
name = "production"
rules = [{ semver = "final" }]
targets = [{ region = "eu-west-1", cluster = "production" }]

[[services]]
repository = "shop/api"
name = "api-{env}"
containers = ["api"]
"#;

    fn image(digest: &str, secs: i64, tags: &[&str]) -> Image {
        Image {
            digest: format!("sha256:{digest}"),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pushed_at: Utc.timestamp_opt(secs, 0).single().expect("time"),
            registry_account: "123456789012".into(),
            registry_region: "eu-west-1".into(),
        }
    }

    #[test]
    fn each_environment_gets_its_newest_matching_image() {
        let config = Config::parse("ferry.toml", CONFIG).expect("config");
        let images = [
            image("aa", 100, &["staging-00000001"]),
            image("bb", 300, &["staging-00000002", "latest"]),
            image("cc", 200, &["v1.0.0"]),
            image("dd", 400, &["feature-x"]),
            image("ee", 150, &["v0.9.0"]),
        ];
        let found: Vec<(String, String)> =
            candidates(&config, "shop/api", &images).into_iter().map(|p| (p.tag, p.digest)).collect();
        // bb's first tag that deploys to staging wins; feature-x deploys nowhere.
        assert_eq!(
            found,
            [("staging-00000002".to_string(), "sha256:bb".to_string()), ("v1.0.0".into(), "sha256:cc".into())]
        );
        assert!(candidates(&config, "shop/web", &images).is_empty(), "no service of another repository");
    }

    #[test]
    fn by_version_the_highest_version_is_the_candidate_not_the_latest_push() {
        let ordered = CONFIG.replace("name = \"production\"\n", "name = \"production\"\norder = \"semver\"\n");
        let config = Config::parse("ferry.toml", &ordered).expect("config");
        let images = [image("aa", 100, &["v1.3.0"]), image("bb", 200, &["v1.2.4"]), image("cc", 50, &["v1.10.0-rc.1"])];
        let found: Vec<String> = candidates(&config, "shop/api", &images).into_iter().map(|p| p.tag).collect();
        assert_eq!(found, ["v1.3.0"], "v1.2.4 was pushed later, v1.10.0-rc.1 is not final");
        let by_push = Config::parse("ferry.toml", CONFIG).expect("config");
        let found: Vec<String> = candidates(&by_push, "shop/api", &images).into_iter().map(|p| p.tag).collect();
        assert_eq!(found, ["v1.2.4"], "ordered by push, the latest push");
    }

    #[test]
    fn a_tie_goes_to_the_same_image_every_time() {
        let config = Config::parse("ferry.toml", CONFIG).expect("config");
        let a = [image("aa", 100, &["staging-1"]), image("bb", 100, &["staging-2"])];
        let b = [a[1].clone(), a[0].clone()];
        let pick = |images: &[Image]| candidates(&config, "shop/api", images)[0].digest.clone();
        assert_eq!(pick(&a), "sha256:bb");
        assert_eq!(pick(&b), "sha256:bb");
    }

    #[test]
    fn a_replayed_push_has_an_id_of_its_image_and_tag() {
        assert_eq!(replay_event_id("sha256:0123456789abcdef0123", "v1"), "ferry-replay-0123456789abcdef-v1");
        let img = image("0123456789abcdef0123", 5, &["v1"]);
        assert_eq!(replayed_push("shop/api", &img, "v1").event_id, replay_event_id(&img.digest, "v1"));
    }
}
