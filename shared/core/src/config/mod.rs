//! `ferry.toml`: the one declarative file a team keeps next to its infrastructure.
//!
//! It is parsed and validated once, at cold start. Every problem is reported as
//! `file:line:column: reason`, pointing at the value that is wrong, so a bad config
//! is rejected before it can change anything.

use std::fmt;
use std::path::Path;

use toml::Spanned;

use crate::rules::TagRule;

mod environments;
mod services;
#[cfg(test)]
mod tests;

use environments::RawConfig;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Environments in the order written; the first whose rules match a tag wins.
    pub environments: Vec<Environment>,
    pub services: Vec<Service>,
    /// Ferry's own AWS account (the functions' `FERRY_ACCOUNT`), when known: targets that
    /// name no account are in it, and Ferry's own events and ECR pushes come from it. Events
    /// from any other account than it and the targets' are rejected.
    pub home_account: Option<String>,
}

/// Which of an environment's deployments are posted to Slack (SNS always gets every one,
/// with attributes its subscribers can filter on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlackFilter {
    #[default]
    All,
    /// Only what needs someone: failures, rollbacks, quarantined pushes.
    Failures,
}

/// What makes one push to an environment newer than another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// The later push (ECR's push time).
    #[default]
    Pushed,
    /// The higher semantic version: a hotfix of an older line pushed later is older.
    Semver,
}

#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    pub slack: SlackFilter,
    pub order: Order,
    /// When the environment takes no deployments.
    pub freeze: Vec<crate::freeze::Freeze>,
    /// Who must approve a push before it deploys here (a service may set its own).
    pub approval: Option<crate::approval::Approval>,
    /// Tag rules in the order written: first match wins.
    pub rules: Vec<TagRule>,
    pub targets: Vec<TargetSpec>,
    /// The accounts whose ECR registries may deploy here; empty: Ferry's own account only.
    pub registry_accounts: Vec<String>,
    /// The repositories (globs: `shop/*`) that may deploy here; empty: any the services name.
    pub repositories: Vec<String>,
}

impl Environment {
    /// The freeze the environment is in at `at`, if any.
    pub fn frozen(&self, at: chrono::DateTime<chrono::Utc>) -> Option<crate::freeze::Frozen> {
        crate::freeze::frozen(&self.freeze, at)
    }

    /// The key that orders `tag` among this environment's pushes, when it orders them by
    /// version ([`crate::rules::version_key`]); `None` when pushes go by push time.
    pub fn version_key(&self, tag: &str) -> Option<String> {
        match self.order {
            Order::Pushed => None,
            Order::Semver => crate::rules::version_key(tag),
        }
    }

    /// Why a push from `repository` in `account`'s registry may not deploy here, if it may not.
    pub fn refuses(&self, account: &str, repository: &str, home: Option<&str>) -> Option<String> {
        let allowed = |a: &str| match self.registry_accounts.as_slice() {
            [] => home.is_none_or(|home| home == a),
            listed => listed.iter().any(|l| l == a),
        };
        if !allowed(account) {
            let listed = if self.registry_accounts.is_empty() {
                "Ferry's own account".to_string()
            } else {
                self.registry_accounts.join(", ")
            };
            return Some(format!(
                "{:?} takes images only from the registries of {listed}, not of account {account}",
                self.name
            ));
        }
        self.refuses_repository(repository)
    }

    /// Why images of `repository` may not deploy here, if they may not.
    pub fn refuses_repository(&self, repository: &str) -> Option<String> {
        if self.repositories.is_empty()
            || self.repositories.iter().any(|p| crate::rules::glob_match(p.as_bytes(), repository.as_bytes()))
        {
            return None;
        }
        Some(format!(
            "{:?} takes images only from the repositories {}, not from {repository}",
            self.name,
            self.repositories.join(", ")
        ))
    }
}

/// Where an environment's services run: one ECS cluster in one region, optionally in
/// another account reached through an assumed role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub region: String,
    pub cluster: String,
    /// The account the cluster lives in, when it is known (always when `role_arn` is set).
    pub account: Option<String>,
    pub role_arn: Option<String>,
}

impl TargetSpec {
    /// Whether the target is in `account` (a target that names none is in Ferry's own).
    pub fn in_account(&self, account: &str, home: Option<&str>) -> bool {
        self.account.as_deref().or(home).is_none_or(|a| a == account)
    }
}

#[derive(Debug, Clone)]
pub struct Service {
    /// ECR repository name, e.g. `shop/api`.
    pub repository: String,
    /// ECS service name; `{env}` is replaced by the environment's name.
    pub name: String,
    /// The containers whose image changes; every other container is left alone.
    pub containers: Vec<String>,
    /// Environments this service is deployed to; empty means all.
    pub environments: Vec<String>,
    pub health: Option<Health>,
    pub migration: Option<Migration>,
    /// Key of the Slack webhook (in the webhook secret) that this service's messages go to.
    pub notify: Option<String>,
    /// CloudWatch alarms (names; `{env}` is replaced) whose ALARM rolls the service back.
    pub alarms: Vec<String>,
    /// How long after a deployment went live an alarm still rolls it back; later, Ferry
    /// only tells the team.
    pub alarm_window: chrono::Duration,
    /// Whether a rollout Ferry did not start that fails its smoke test is rolled back (else
    /// the team is told).
    pub roll_back_external: bool,
    /// Replaces its environments' approval rule.
    pub approval: Option<crate::approval::Approval>,
}

/// The alarm window unless a service sets `alarm_window_minutes`.
pub const DEFAULT_ALARM_WINDOW_MINUTES: u32 = 30;
/// The longest alarm window: a day.
pub const MAX_ALARM_WINDOW_MINUTES: u32 = 1440;

/// The smoke test run once ECS reports a deployment complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Health URL, with placeholders (see [`PLACEHOLDERS`]) filled per target.
    pub url: String,
    /// The URL of the new revision behind a blue/green service's test listener, placeholders
    /// as `url`: probed when ECS calls Ferry's lifecycle hook after test traffic shifted.
    pub test_url: Option<String>,
    /// URLs for some targets instead of `url`: the first that matches a target wins.
    pub overrides: Vec<HealthOverride>,
    /// Status codes that pass, inclusive (default: any 2xx).
    pub expect_status: (u16, u16),
    /// Text the body must contain, if any.
    pub body_contains: Option<String>,
    /// How many requests at most; the first that passes ends the test.
    pub attempts: u32,
    pub interval_seconds: u64,
    /// Each request's own limit.
    pub timeout_seconds: u64,
}

/// A health URL for the targets that match every field set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthOverride {
    pub environment: Option<String>,
    pub region: Option<String>,
    pub cluster: Option<String>,
    pub account: Option<String>,
    pub url: String,
}

impl HealthOverride {
    fn matches(&self, environment: &str, region: &str, cluster: &str, account: Option<&str>) -> bool {
        let is = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| Some(w) == have);
        is(&self.environment, Some(environment))
            && is(&self.region, Some(region))
            && is(&self.cluster, Some(cluster))
            && is(&self.account, account)
    }
}

/// What a health URL may name: each is replaced by the target's own.
pub const PLACEHOLDERS: [&str; 5] = ["{env}", "{region}", "{cluster}", "{account}", "{service}"];

/// The longest a smoke test may take in all (attempts × (timeout + interval)): well inside
/// the verify function's 5-minute limit.
pub const MAX_SMOKE_SECONDS: u64 = 240;

impl Health {
    /// The URL to probe for `target`: its override if one matches, placeholders filled
    /// (`{account}`: the target's, else `home`; left as it is if neither is known).
    pub fn url_for(&self, target: &crate::model::Target, home: Option<&str>) -> String {
        let account = target.account.as_deref().or(home);
        let t = target;
        let url = self
            .overrides
            .iter()
            .find(|o| o.matches(&t.environment, &t.region, &t.cluster, account))
            .map_or(&self.url, |o| &o.url);
        fill(url, target, account)
    }

    /// The test route's URL for `target` (see [`Health::url_for`]), if the service has one.
    pub fn test_url_for(&self, target: &crate::model::Target, home: Option<&str>) -> Option<String> {
        let account = target.account.as_deref().or(home);
        self.test_url.as_deref().map(|url| fill(url, target, account))
    }
}

/// `url` with the placeholders filled for `t` (`{account}` left as it is if unknown).
fn fill(url: &str, t: &crate::model::Target, account: Option<&str>) -> String {
    let url = url
        .replace("{env}", &t.environment)
        .replace("{region}", &t.region)
        .replace("{cluster}", &t.cluster)
        .replace("{service}", &t.service);
    match account {
        Some(account) => url.replace("{account}", account),
        None => url,
    }
}

/// A one-off task run with the new image before the service is updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The container (of the service's new task definition) whose command is overridden.
    pub container: String,
    pub command: Vec<String>,
    pub timeout_seconds: u64,
    /// Whether it runs at every target, or once per environment (its first target) while
    /// the others wait for it: targets sharing one database migrate it once.
    pub once_per_environment: bool,
}

/// The longest a migration may run: it must finish well inside the deploy function's
/// 15-minute limit, with time left to register and update the service.
pub const MAX_MIGRATION_SECONDS: u64 = 600;

impl Service {
    /// The ECS service name in `environment`.
    pub fn service_name(&self, environment: &str) -> String {
        self.name.replace("{env}", environment)
    }

    pub fn deploys_to(&self, environment: &str) -> bool {
        self.environments.is_empty() || self.environments.iter().any(|e| e == environment)
    }
}

/// A config problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            reason: format!("cannot read the config: {e}"),
        })?;
        Config::parse(&file, &text)
    }

    /// Parses and validates `text`; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let at = |span: Option<std::ops::Range<usize>>, reason: String| {
            let (line, column) = span.map_or((0, 0), |s| line_column(text, s.start));
            ConfigError { file: file.to_string(), line, column, reason }
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| at(e.span(), e.message().to_string()))?;
        raw.validate().map_err(|(span, reason)| at(Some(span), reason))
    }

    pub fn environment(&self, name: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.name == name)
    }

    /// The approval a push of `repository` to `target` needs, if any: its service's own
    /// rule, else its environment's.
    pub fn approval_for(&self, target: &crate::model::Target, repository: &str) -> Option<&crate::approval::Approval> {
        let env = self.environment(&target.environment)?;
        let service = self.services.iter().find(|s| {
            s.repository == repository && s.deploys_to(&env.name) && s.service_name(&env.name) == target.service
        });
        service.and_then(|s| s.approval.as_ref()).or(env.approval.as_ref())
    }

    /// The environment a tag deploys to: the first whose rules match it.
    pub fn environment_for_tag(&self, tag: &str) -> Option<&Environment> {
        self.environments.iter().find(|e| e.rules.iter().any(|r| r.matches(tag)))
    }

    /// Whether `account` is Ferry's own (always, when Ferry does not know its own).
    pub fn is_home(&self, account: &str) -> bool {
        self.home_account.as_deref().is_none_or(|home| home == account)
    }

    /// Whether an ECR push from `account`'s registry may deploy anywhere: Ferry's own
    /// account, or one an environment lists in `registry_accounts`.
    pub fn takes_pushes_from(&self, account: &str) -> bool {
        self.is_home(account) || self.environments.iter().any(|e| e.registry_accounts.iter().any(|a| a == account))
    }

    /// Whether an AWS service's event from `account` can concern Ferry: it comes from Ferry's
    /// own account or from one a target is in.
    pub fn knows_account(&self, account: &str) -> bool {
        self.is_home(account)
            || self.environments.iter().flat_map(|e| &e.targets).any(|t| t.account.as_deref() == Some(account))
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

type Invalid = (std::ops::Range<usize>, String);

fn invalid<T>(spanned: &Spanned<T>, reason: impl fmt::Display) -> Invalid {
    (spanned.span(), reason.to_string())
}
