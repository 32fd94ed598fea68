//! From a push to the targets it deploys: tag → environment → services × targets.

use crate::config::{Config, Environment, Migration, TargetSpec};
use crate::model::{Push, Target};
use crate::render::ImageChange;

/// What a push means, before anything is touched.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "plan")]
pub enum Plan {
    /// No service is built from this repository.
    UnknownRepository,
    /// No environment's rules match the tag.
    UnmatchedTag,
    /// The tag matches `environment`, but none of the repository's services deploy there.
    NoServiceInEnvironment { environment: String },
    /// The tag matches `environment`, which does not take images from this registry account
    /// or repository (its `registry_accounts`, `repositories`).
    NotAllowed { environment: String, reason: String },
    Deploy {
        environment: String,
        #[serde(serialize_with = "target_names")]
        targets: Vec<TargetPlan>,
    },
}

fn target_names<S: serde::Serializer>(targets: &[TargetPlan], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(targets.iter().map(|t| t.target.to_string()))
}

/// One target's share of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPlan {
    pub target: Target,
    pub change: ImageChange,
    pub migration: Option<Migration>,
    /// Set when the migration runs at another target: once per environment, at its first
    /// target, whose migration this one waits for before it updates its service.
    pub migration_at: Option<Target>,
    /// The tag's version key when the environment orders pushes by version
    /// ([`crate::rules::version_key`]).
    pub version: Option<String>,
}

impl TargetPlan {
    /// The new (PENDING) record of `push` on this target.
    pub fn deployment(&self, push: &Push, now: chrono::DateTime<chrono::Utc>) -> crate::model::Deployment {
        let mut d = crate::model::Deployment::new(push, self.target.clone(), now);
        d.version = self.version.as_deref().map(|v| crate::rules::order_key(v, push.pushed_at));
        d
    }
}

pub fn plan(config: &Config, push: &Push) -> Plan {
    let services: Vec<_> = config.services.iter().filter(|s| s.repository == push.repository).collect();
    if services.is_empty() {
        return Plan::UnknownRepository;
    }
    let Some(environment) = config.environment_for_tag(&push.tag) else {
        return Plan::UnmatchedTag;
    };
    if let Some(reason) = environment.refuses(&push.registry_account, &push.repository, config.home_account.as_deref())
    {
        return Plan::NotAllowed { environment: environment.name.clone(), reason };
    }
    let targets: Vec<TargetPlan> = services
        .iter()
        .filter(|service| service.deploys_to(&environment.name))
        .flat_map(|service| {
            let name = service.service_name(&environment.name);
            let first = environment.targets.first().map(|spec| target(environment, spec, &name));
            environment.targets.iter().map(move |spec| {
                let here = target(environment, spec, &name);
                let once = service.migration.as_ref().is_some_and(|m| m.once_per_environment);
                TargetPlan {
                    migration_at: first.clone().filter(|first| once && *first != here),
                    target: here,
                    change: ImageChange { containers: service.containers.clone(), image: push.image() },
                    migration: service.migration.clone(),
                    version: environment.version_key(&push.tag),
                }
            })
        })
        .collect();
    if targets.is_empty() {
        return Plan::NoServiceInEnvironment { environment: environment.name.clone() };
    }
    Plan::Deploy { environment: environment.name.clone(), targets }
}

/// The configured target for an ECS service in `account`/`region`/`cluster` named `service`,
/// if Ferry deploys it (a target that names no account is in Ferry's own).
pub fn find_target(config: &Config, account: &str, region: &str, cluster: &str, service: &str) -> Option<Target> {
    if cluster.is_empty() {
        // An old-format service ARN (`service/NAME`) names no cluster: the one configured
        // target of that name in the account and region, if there is exactly one.
        let home = config.home_account.as_deref();
        let mut found = all_targets(config).into_iter().filter(|t| {
            t.region == region && t.service == service && t.account.as_deref().or(home).is_none_or(|a| a == account)
        });
        return match (found.next(), found.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        };
    }
    let home = config.home_account.as_deref();
    config.environments.iter().find_map(|env| {
        let spec =
            env.targets.iter().find(|t| t.region == region && t.cluster == cluster && t.in_account(account, home))?;
        config
            .services
            .iter()
            .find(|s| s.deploys_to(&env.name) && s.service_name(&env.name) == service)
            .map(|_| target(env, spec, service))
    })
}

/// Every target of `service` (its ECS name) in `environment`.
pub fn targets_of(config: &Config, environment: &str, service: &str) -> Vec<Target> {
    let Some(env) = config.environment(environment) else { return Vec::new() };
    if !config.services.iter().any(|s| s.deploys_to(environment) && s.service_name(environment) == service) {
        return Vec::new();
    }
    env.targets.iter().map(|spec| target(env, spec, service)).collect()
}

/// The configured target whose ledger key ([`Target::key`]) is `key`.
pub fn target_by_key(config: &Config, key: &str) -> Option<Target> {
    all_targets(config).into_iter().find(|t| t.key() == key)
}

/// Every target Ferry deploys to: each service at each of its environments' targets.
pub fn all_targets(config: &Config) -> Vec<Target> {
    let mut all = Vec::new();
    for env in &config.environments {
        for service in config.services.iter().filter(|s| s.deploys_to(&env.name)) {
            for spec in &env.targets {
                let t = target(env, spec, &service.service_name(&env.name));
                if !all.contains(&t) {
                    all.push(t);
                }
            }
        }
    }
    all
}

/// The environment a push of `repository` to `target` passes through before it (the one listed
/// before `target`'s that the service deploys to), and the service's targets there.
pub fn previous_environment(config: &Config, target: &Target, repository: &str) -> Option<(String, Vec<Target>)> {
    let service = config
        .services
        .iter()
        .find(|s| s.repository == repository && s.service_name(&target.environment) == target.service)?;
    let here = config.environments.iter().position(|e| e.name == target.environment)?;
    let env = config.environments[..here].iter().rev().find(|e| service.deploys_to(&e.name))?;
    let name = service.service_name(&env.name);
    Some((env.name.clone(), env.targets.iter().map(|spec| self::target(env, spec, &name)).collect()))
}

/// The ECS service `service` at one of `environment`'s targets.
fn target(environment: &Environment, spec: &TargetSpec, service: &str) -> Target {
    Target {
        environment: environment.name.clone(),
        account: spec.account.clone(),
        region: spec.region.clone(),
        cluster: spec.cluster.clone(),
        service: service.to_string(),
        role_arn: spec.role_arn.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const CONFIG: &str = r#"
[[environments]]
name = "staging"
rules = [{ glob = "staging-*" }, { semver = "prerelease", pre = "rc" }, { glob = "latest" }]
targets = [{ region = "ap-southeast-1", cluster = "shop-staging" }]

[[environments]]
name = "production"
rules = [{ glob = "prod-*" }, { semver = "final" }]
targets = [
  { region = "eu-west-1", cluster = "shop-prod", role_arn = "arn:aws:iam::210987654321:role/ferry" },
  { region = "us-east-1", cluster = "shop-prod", role_arn = "arn:aws:iam::210987654321:role/ferry" },
]

[[environments]]
name = "catch-all"
rules = [{ glob = "*" }]
targets = [{ region = "eu-west-1", cluster = "sandbox" }]

[[services]]
repository = "shop/api"
name = "shop-{env}-api"
containers = ["api"]
environments = ["staging", "production"]

[[services]]
repository = "shop/api"
name = "shop-{env}-worker"
containers = ["worker"]
environments = ["production"]
"#;

    fn push(repository: &str, tag: &str) -> Push {
        Push {
            event_id: "e".into(),
            registry_account: "123456789012".into(),
            registry_region: "eu-west-1".into(),
            repository: repository.into(),
            tag: tag.into(),
            digest: "sha256:aa".into(),
            pushed_at: chrono::Utc.timestamp_opt(0, 0).single().expect("time"),
        }
    }

    fn targets(plan: &Plan) -> Vec<String> {
        match plan {
            Plan::Deploy { targets, .. } => targets.iter().map(|t| t.target.to_string()).collect(),
            other => panic!("not a deploy: {other:?}"),
        }
    }

    #[test]
    fn tags_pick_the_first_matching_environment_and_fan_out() {
        let config = Config::parse("ferry.toml", CONFIG).expect("config");
        let staging = plan(&config, &push("shop/api", "staging-1a2b3c4d"));
        assert_eq!(targets(&staging), ["shop-staging-api (shop-staging, ap-southeast-1)"]);
        assert_eq!(targets(&plan(&config, &push("shop/api", "v0.1.0-rc.1"))), targets(&staging));
        let prod = plan(&config, &push("shop/api", "v0.1.0"));
        assert_eq!(
            targets(&prod),
            [
                "shop-production-api (shop-prod, eu-west-1) in 210987654321",
                "shop-production-api (shop-prod, us-east-1) in 210987654321",
                "shop-production-worker (shop-prod, eu-west-1) in 210987654321",
                "shop-production-worker (shop-prod, us-east-1) in 210987654321",
            ]
        );
        let Plan::Deploy { targets, .. } = prod else { unreachable!() };
        assert_eq!(targets[0].change.containers, ["api"]);
        assert_eq!(targets[2].change.containers, ["worker"]);
        assert_eq!(targets[0].change.image, "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/api@sha256:aa");
    }

    #[test]
    fn pushes_that_deploy_nothing_say_why() {
        let config = Config::parse("ferry.toml", CONFIG).expect("config");
        assert_eq!(plan(&config, &push("shop/web", "staging-1")), Plan::UnknownRepository);
        assert_eq!(
            plan(&config, &push("shop/api", "feature-x")),
            Plan::NoServiceInEnvironment { environment: "catch-all".into() }
        );
        let without_catch_all = CONFIG.replace("rules = [{ glob = \"*\" }]", "rules = [{ glob = \"nightly-*\" }]");
        let config = Config::parse("ferry.toml", &without_catch_all).expect("config");
        assert_eq!(plan(&config, &push("shop/api", "feature-x")), Plan::UnmatchedTag);
    }
}
