//! `ferry.toml`: the one declarative file a team keeps next to its infrastructure.
//!
//! It is parsed and validated once, at cold start. Every problem is reported as
//! `file:line:column: reason`, pointing at the value that is wrong, so a bad config
//! is rejected before it can change anything.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::rules::{RuleError, TagRule};

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

#[derive(Debug, Clone)]
pub struct Environment {
    pub name: String,
    pub slack: SlackFilter,
    /// Tag rules in the order written: first match wins.
    pub rules: Vec<TagRule>,
    pub targets: Vec<TargetSpec>,
    /// The accounts whose ECR registries may deploy here; empty: Ferry's own account only.
    pub registry_accounts: Vec<String>,
    /// The repositories (globs: `shop/*`) that may deploy here; empty: any the services name.
    pub repositories: Vec<String>,
}

impl Environment {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    environments: Option<Spanned<Vec<Spanned<RawEnvironment>>>>,
    #[serde(default)]
    services: Vec<Spanned<RawService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    name: Spanned<String>,
    /// `"all"` (default) or `"failures"`.
    slack: Option<Spanned<String>>,
    rules: Spanned<Vec<Spanned<RawRule>>>,
    targets: Spanned<Vec<Spanned<RawTarget>>>,
    #[serde(default)]
    registry_accounts: Vec<Spanned<String>>,
    #[serde(default)]
    repositories: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    glob: Option<String>,
    regex: Option<String>,
    semver: Option<String>,
    /// With `semver = "prerelease"`: the pre-release label required, e.g. `rc`.
    pre: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    region: Spanned<String>,
    cluster: Spanned<String>,
    account: Option<Spanned<String>>,
    role_arn: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    repository: Spanned<String>,
    name: Spanned<String>,
    containers: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    environments: Vec<Spanned<String>>,
    health: Option<Spanned<RawHealth>>,
    migration: Option<Spanned<RawMigration>>,
    notify: Option<Spanned<String>>,
    #[serde(default)]
    alarms: Vec<Spanned<String>>,
    alarm_window_minutes: Option<Spanned<u32>>,
    /// `"notify"` (default) or `"roll_back"`: what a rollout by hand that fails its smoke test gets.
    on_external_failure: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    url: Spanned<String>,
    #[serde(default)]
    overrides: Vec<Spanned<RawHealthOverride>>,
    /// `200`, or a range such as `"200-299"`.
    expect_status: Option<Spanned<toml::Value>>,
    body_contains: Option<String>,
    attempts: Option<Spanned<u32>>,
    interval_seconds: Option<u64>,
    timeout_seconds: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthOverride {
    environment: Option<String>,
    region: Option<String>,
    cluster: Option<String>,
    account: Option<String>,
    url: Spanned<String>,
}

fn health_url(url: &Spanned<String>) -> Result<String, Invalid> {
    let u = url.get_ref();
    let mut rest = u.clone();
    for p in PLACEHOLDERS {
        rest = rest.replace(p, "");
    }
    if !(u.starts_with("http://") || u.starts_with("https://")) || rest.contains('{') || rest.contains('}') {
        return Err(invalid(
            url,
            format!("health url {u:?} must be http(s):// and may use only {}", PLACEHOLDERS.join(", ")),
        ));
    }
    Ok(u.clone())
}

impl RawHealth {
    /// Validated, each override matching at least one of the service's targets
    /// (`targets`: environment, region, cluster, account if set).
    fn validate(
        self,
        span: std::ops::Range<usize>,
        targets: &[(&str, &str, &str, Option<&str>)],
    ) -> Result<Health, Invalid> {
        let url = health_url(&self.url)?;
        let mut overrides = Vec::new();
        for o in self.overrides {
            let raw = o.get_ref();
            let parsed = HealthOverride {
                environment: raw.environment.clone(),
                region: raw.region.clone(),
                cluster: raw.cluster.clone(),
                account: raw.account.clone(),
                url: health_url(&raw.url)?,
            };
            // A target in Ferry's own account (no account set) may be the one an account names.
            let matches_one =
                targets.iter().any(|(e, r, c, a)| parsed.matches(e, r, c, a.or(parsed.account.as_deref())));
            if !matches_one {
                return Err(invalid(&o, "this health override matches none of the service's targets"));
            }
            overrides.push(parsed);
        }
        let expect_status = match &self.expect_status {
            None => (200, 299),
            Some(v) => {
                let parsed = match v.get_ref() {
                    toml::Value::Integer(code) => u16::try_from(*code).ok().map(|c| (c, c)),
                    toml::Value::String(range) => {
                        range.split_once('-').and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
                    }
                    _ => None,
                };
                match parsed {
                    Some((low, high)) if (100..=599).contains(&low) && low <= high && high <= 599 => (low, high),
                    _ => return Err(invalid(v, "expect_status must be a status code or a range such as \"200-299\"")),
                }
            }
        };
        let attempts = self.attempts.as_ref().map_or(5, |a| *a.get_ref());
        if attempts == 0 {
            return Err(invalid(self.attempts.as_ref().expect("set"), "attempts must be at least 1"));
        }
        let timeout_seconds = self.timeout_seconds.as_ref().map_or(3, |t| *t.get_ref());
        if timeout_seconds == 0 {
            return Err(invalid(self.timeout_seconds.as_ref().expect("set"), "timeout_seconds must be at least 1"));
        }
        let interval_seconds = self.interval_seconds.unwrap_or(5);
        let budget = u64::from(attempts) * (timeout_seconds + interval_seconds);
        if budget > MAX_SMOKE_SECONDS {
            return Err((
                span,
                format!(
                    "the smoke test could take {budget} s (attempts × (timeout + interval)); the limit is {MAX_SMOKE_SECONDS} s"
                ),
            ));
        }
        Ok(Health {
            url,
            overrides,
            expect_status,
            body_contains: self.body_contains,
            attempts,
            interval_seconds,
            timeout_seconds,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMigration {
    container: Option<Spanned<String>>,
    command: Spanned<Vec<String>>,
    timeout_seconds: Option<Spanned<u64>>,
    /// `"target"` (default) or `"environment"`.
    once: Option<Spanned<String>>,
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_region(s: &str) -> bool {
    // e.g. eu-west-1, ap-southeast-1, us-gov-west-1
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.chars().all(|c| c.is_ascii_digit())
}

/// `arn:aws:iam::123456789012:role/path/name` → the account.
fn role_account(arn: &str) -> Option<&str> {
    let rest = arn.strip_prefix("arn:")?;
    let mut parts = rest.splitn(5, ':');
    let _partition = parts.next().filter(|p| p.starts_with("aws"))?;
    let service = parts.next()?;
    let region = parts.next()?;
    let account = parts.next()?;
    let resource = parts.next()?;
    (service == "iam"
        && region.is_empty()
        && is_account(account)
        && resource.len() > 5
        && resource.starts_with("role/"))
    .then_some(account)
}

fn is_repository(s: &str) -> bool {
    // ECR: (?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*, 2..=256 chars
    (2..=256).contains(&s.len())
        && s.split('/').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
                && part.starts_with(|c: char| c.is_ascii_alphanumeric())
                && part.ends_with(|c: char| c.is_ascii_alphanumeric())
        })
}

fn only_env_placeholder(template: &str) -> bool {
    let without = template.replace("{env}", "");
    !without.contains('{') && !without.contains('}')
}

impl RawConfig {
    fn validate(self) -> Result<Config, Invalid> {
        let envs = match self.environments {
            Some(envs) if !envs.get_ref().is_empty() => envs.into_inner(),
            Some(envs) => return Err(invalid(&envs, "at least one [[environments]] entry is required")),
            None => return Err((0..0, "at least one [[environments]] entry is required".into())),
        };
        let mut environments = Vec::new();
        let mut names = HashSet::new();
        for env in envs {
            let env = env.into_inner();
            let name = env.name.get_ref();
            if !is_name(name) {
                return Err(invalid(
                    &env.name,
                    format!("environment name {name:?} must be lowercase letters, digits and '-'"),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(invalid(&env.name, format!("environment {name:?} is defined twice")));
            }
            environments.push(env.validate()?);
        }

        let mut services = Vec::new();
        let mut seen = HashSet::new();
        for service in self.services {
            let span = service.span();
            let service = service.into_inner().validate(&environments)?;
            if !seen.insert((service.repository.clone(), service.name.clone())) {
                return Err((
                    span,
                    format!("service {:?} for repository {:?} is defined twice", service.name, service.repository),
                ));
            }
            // A target orders its pushes by one clock, so one repository feeds each ECS service.
            for env in environments.iter().filter(|e| service.deploys_to(&e.name)) {
                let name = service.service_name(&env.name);
                if let Some(other) = services.iter().find(|o: &&Service| {
                    o.repository != service.repository && o.deploys_to(&env.name) && o.service_name(&env.name) == name
                }) {
                    return Err((
                        span,
                        format!(
                            "ECS service {name:?} in {:?} is already deployed from repository {:?}; \
                             one repository feeds each service (a push of either would be judged stale \
                             against the other's)",
                            env.name, other.repository
                        ),
                    ));
                }
            }
            services.push(service);
        }
        Ok(Config { environments, services, home_account: None })
    }
}

impl RawEnvironment {
    fn validate(self) -> Result<Environment, Invalid> {
        let slack = match &self.slack {
            None => SlackFilter::All,
            Some(f) if f.get_ref() == "all" => SlackFilter::All,
            Some(f) if f.get_ref() == "failures" => SlackFilter::Failures,
            Some(f) => return Err(invalid(f, format!("slack {:?} must be \"all\" or \"failures\"", f.get_ref()))),
        };
        let name = self.name.into_inner();
        if self.rules.get_ref().is_empty() {
            return Err(invalid(&self.rules, format!("environment {name:?} needs at least one tag rule")));
        }
        if self.targets.get_ref().is_empty() {
            return Err(invalid(&self.targets, format!("environment {name:?} needs at least one target")));
        }
        let rules = self
            .rules
            .into_inner()
            .into_iter()
            .map(|rule| {
                let span = rule.span();
                rule.into_inner().validate().map_err(|e| (span, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for account in &self.registry_accounts {
            if !is_account(account.get_ref()) {
                return Err(invalid(account, format!("{:?} is not a 12-digit AWS account id", account.get_ref())));
            }
        }
        for pattern in &self.repositories {
            if !is_repository(&pattern.get_ref().replace(['*', '?'], "x")) {
                return Err(invalid(
                    pattern,
                    format!("{:?} is not an ECR repository name or glob (shop/*)", pattern.get_ref()),
                ));
            }
        }
        let mut targets = Vec::new();
        for target in self.targets.into_inner() {
            let span = target.span();
            let target = target.into_inner().validate()?;
            if targets.contains(&target) {
                return Err((span, format!("target {}/{} is listed twice in {name:?}", target.region, target.cluster)));
            }
            targets.push(target);
        }
        Ok(Environment {
            name,
            slack,
            rules,
            targets,
            registry_accounts: self.registry_accounts.into_iter().map(Spanned::into_inner).collect(),
            repositories: self.repositories.into_iter().map(Spanned::into_inner).collect(),
        })
    }
}

impl RawRule {
    fn validate(self) -> Result<TagRule, RuleError> {
        match (self.glob, self.regex, self.semver, self.pre) {
            (Some(glob), None, None, None) => TagRule::glob(&glob),
            (None, Some(regex), None, None) => TagRule::regex(&regex),
            (None, None, Some(kind), pre) => TagRule::semver(&kind, pre.as_deref()),
            (None, None, None, Some(_)) => Err(RuleError("`pre` only goes with `semver = \"prerelease\"`".into())),
            (None, None, None, None) => Err(RuleError("a rule needs one of `glob`, `regex` or `semver`".into())),
            _ => Err(RuleError("a rule takes exactly one of `glob`, `regex` or `semver`".into())),
        }
    }
}

impl RawTarget {
    fn validate(self) -> Result<TargetSpec, Invalid> {
        if !is_region(self.region.get_ref()) {
            return Err(invalid(&self.region, format!("{:?} is not an AWS region", self.region.get_ref())));
        }
        if self.cluster.get_ref().trim().is_empty() {
            return Err(invalid(&self.cluster, "cluster must not be empty"));
        }
        if let Some(account) = self.account.as_ref().filter(|a| !is_account(a.get_ref())) {
            return Err(invalid(account, format!("{:?} is not a 12-digit AWS account id", account.get_ref())));
        }
        let mut account = self.account.as_ref().map(|a| a.get_ref().clone());
        if let Some(role) = &self.role_arn {
            let Some(role_account) = role_account(role.get_ref()) else {
                return Err(invalid(
                    role,
                    format!("{:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)", role.get_ref()),
                ));
            };
            match &account {
                Some(a) if a != role_account => {
                    return Err(invalid(
                        role,
                        format!("role {:?} is in account {role_account}, not {a}", role.get_ref()),
                    ));
                }
                _ => account = Some(role_account.to_string()),
            }
        }
        Ok(TargetSpec {
            region: self.region.into_inner(),
            cluster: self.cluster.into_inner(),
            account,
            role_arn: self.role_arn.map(Spanned::into_inner),
        })
    }
}

impl RawService {
    fn validate(self, environments: &[Environment]) -> Result<Service, Invalid> {
        if !is_repository(self.repository.get_ref()) {
            return Err(invalid(
                &self.repository,
                format!("{:?} is not an ECR repository name", self.repository.get_ref()),
            ));
        }
        let name = self.name.get_ref();
        if name.trim().is_empty() || !only_env_placeholder(name) {
            return Err(invalid(&self.name, format!("service name {name:?} may use only the {{env}} placeholder")));
        }
        if self.containers.get_ref().is_empty() {
            return Err(invalid(&self.containers, "name at least one container whose image changes"));
        }
        let mut containers: Vec<String> = Vec::new();
        for c in self.containers.get_ref() {
            if c.get_ref().trim().is_empty() || containers.contains(c.get_ref()) {
                return Err(invalid(c, format!("container {:?} is empty or listed twice", c.get_ref())));
            }
            containers.push(c.get_ref().clone());
        }
        for env in &self.environments {
            let Some(e) = environments.iter().find(|e| &e.name == env.get_ref()) else {
                return Err(invalid(env, format!("unknown environment {:?}", env.get_ref())));
            };
            if let Some(why) = e.refuses_repository(self.repository.get_ref()) {
                return Err(invalid(env, why));
            }
        }
        let health = match self.health {
            None => None,
            Some(h) => {
                let span = h.span();
                let targets: Vec<(&str, &str, &str, Option<&str>)> = environments
                    .iter()
                    .filter(|e| {
                        self.environments.is_empty() || self.environments.iter().any(|n| n.get_ref() == &e.name)
                    })
                    .flat_map(|e| {
                        e.targets
                            .iter()
                            .map(|t| (e.name.as_str(), t.region.as_str(), t.cluster.as_str(), t.account.as_deref()))
                    })
                    .collect();
                Some(h.into_inner().validate(span, &targets)?)
            }
        };
        let migration = match self.migration {
            None => None,
            Some(m) => {
                let span = m.span();
                let m = m.into_inner();
                if m.command.get_ref().is_empty() {
                    return Err(invalid(&m.command, "a migration needs a command"));
                }
                let timeout_seconds = match &m.timeout_seconds {
                    Some(t) if !(1..=MAX_MIGRATION_SECONDS).contains(t.get_ref()) => {
                        return Err(invalid(
                            t,
                            format!("timeout_seconds must be between 1 and {MAX_MIGRATION_SECONDS}"),
                        ));
                    }
                    Some(t) => *t.get_ref(),
                    None => 300,
                };
                let container = match m.container {
                    Some(c) if c.get_ref().trim().is_empty() => return Err(invalid(&c, "container must not be empty")),
                    Some(c) => c.into_inner(),
                    None => containers.first().cloned().ok_or((span, "no container".to_string()))?,
                };
                let once_per_environment = match &m.once {
                    None => false,
                    Some(o) if o.get_ref() == "target" => false,
                    Some(o) if o.get_ref() == "environment" => true,
                    Some(o) => {
                        return Err(invalid(
                            o,
                            format!("once {:?} must be \"target\" or \"environment\"", o.get_ref()),
                        ));
                    }
                };
                Some(Migration { container, command: m.command.into_inner(), timeout_seconds, once_per_environment })
            }
        };
        if let Some(n) =
            self.notify.as_ref().filter(|n| !n.get_ref().chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)))
        {
            return Err(invalid(
                n,
                format!("notify {:?} must be a webhook key (letters, digits, '-', '_')", n.get_ref()),
            ));
        }
        for alarm in &self.alarms {
            let a = alarm.get_ref();
            if a.trim().is_empty() || a.len() > 255 || !only_env_placeholder(a) {
                return Err(invalid(
                    alarm,
                    format!("alarm name {a:?} must be 1 to 255 characters and may use only {{env}}"),
                ));
            }
        }
        let alarm_window = match &self.alarm_window_minutes {
            Some(m) if !(1..=MAX_ALARM_WINDOW_MINUTES).contains(m.get_ref()) => {
                return Err(invalid(
                    m,
                    format!("alarm_window_minutes must be between 1 and {MAX_ALARM_WINDOW_MINUTES}"),
                ));
            }
            Some(m) => *m.get_ref(),
            None => DEFAULT_ALARM_WINDOW_MINUTES,
        };
        let roll_back_external = match &self.on_external_failure {
            None => false,
            Some(v) if v.get_ref() == "notify" => false,
            Some(v) if v.get_ref() == "roll_back" => true,
            Some(v) => {
                return Err(invalid(
                    v,
                    format!("on_external_failure {:?} must be \"notify\" or \"roll_back\"", v.get_ref()),
                ));
            }
        };
        Ok(Service {
            repository: self.repository.into_inner(),
            name: self.name.into_inner(),
            containers,
            environments: self.environments.into_iter().map(Spanned::into_inner).collect(),
            health,
            migration,
            notify: self.notify.map(Spanned::into_inner),
            alarms: self.alarms.into_iter().map(Spanned::into_inner).collect(),
            alarm_window: chrono::Duration::minutes(i64::from(alarm_window)),
            roll_back_external,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[environments]]
name = "staging"
slack = "failures"
rules = [{ glob = "staging-*" }, { semver = "prerelease", pre = "rc" }]
targets = [{ region = "ap-southeast-1", cluster = "shop-staging" }]

[[environments]]
name = "production"
rules = [{ regex = 'prod-[0-9a-f]{8}' }, { semver = "final" }]
targets = [
  { region = "eu-west-1", cluster = "shop-prod", role_arn = "arn:aws:iam::210987654321:role/ferry-target" },
  { region = "us-east-1", cluster = "shop-prod", account = "210987654321", role_arn = "arn:aws:iam::210987654321:role/ferry-target" },
]

[[services]]
repository = "shop/api"
name = "shop-{env}-api"
containers = ["api"]
health = { url = "https://api.{env}.shop.example/healthz", expect_status = 204, body_contains = "ok" }
migration = { command = ["bin/migrate", "up"] }
notify = "shop-team"
alarms = ["shop-{env}-api-5xx"]

[[services]]
repository = "shop/api"
name = "shop-{env}-worker"
containers = ["worker"]
environments = ["production"]
"#;

    #[test]
    fn a_valid_file_resolves_every_part() {
        let c = Config::parse("ferry.toml", GOOD).expect("valid");
        assert_eq!(c.environments.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["staging", "production"]);
        assert_eq!(c.environment("staging").map(|e| e.slack), Some(SlackFilter::Failures));
        let prod = c.environment("production").expect("production");
        assert_eq!(prod.slack, SlackFilter::All);
        assert_eq!(prod.targets[0].account.as_deref(), Some("210987654321"), "account derived from the role");
        assert_eq!(prod.targets.len(), 2);
        let api = &c.services[0];
        assert_eq!(api.service_name("staging"), "shop-staging-api");
        assert_eq!(
            api.migration,
            Some(Migration {
                container: "api".into(),
                command: vec!["bin/migrate".into(), "up".into()],
                timeout_seconds: 300,
                once_per_environment: false,
            })
        );
        assert!(api.deploys_to("staging") && api.deploys_to("production"));
        assert_eq!(
            api.health,
            Some(Health {
                url: "https://api.{env}.shop.example/healthz".into(),
                overrides: vec![],
                expect_status: (204, 204),
                body_contains: Some("ok".into()),
                attempts: 5,
                interval_seconds: 5,
                timeout_seconds: 3,
            })
        );
        let staging = crate::plan::targets_of(&c, "staging", "shop-staging-api");
        assert_eq!(
            api.health.as_ref().map(|h| h.url_for(&staging[0], None)).as_deref(),
            Some("https://api.staging.shop.example/healthz")
        );
        assert!(!c.services[1].deploys_to("staging"));
        assert_eq!(api.alarms, ["shop-{env}-api-5xx"]);
        assert_eq!(api.alarm_window, chrono::Duration::minutes(30), "the default window");
    }

    #[test]
    fn a_health_url_names_each_target_by_its_placeholders_or_its_override() {
        let text = GOOD.replace(
            r#"health = { url = "https://api.{env}.shop.example/healthz", expect_status = 204, body_contains = "ok" }"#,
            r#"health = { url = "https://{service}.{region}.{env}.example/{cluster}/{account}", overrides = [
  { environment = "production", region = "us-east-1", url = "https://us.api.example/healthz" },
] }"#,
        );
        let c = Config::parse("ferry.toml", &text).expect("valid");
        let health = c.services[0].health.clone().expect("health");
        let prod = crate::plan::targets_of(&c, "production", "shop-production-api");
        let staging = crate::plan::targets_of(&c, "staging", "shop-staging-api");
        assert_eq!(
            health.url_for(&prod[0], Some("123456789012")),
            "https://shop-production-api.eu-west-1.production.example/shop-prod/210987654321"
        );
        assert_eq!(health.url_for(&prod[1], None), "https://us.api.example/healthz", "the override wins");
        assert_eq!(
            health.url_for(&staging[0], Some("123456789012")),
            "https://shop-staging-api.ap-southeast-1.staging.example/shop-staging/123456789012",
            "Ferry's own account"
        );
        assert!(health.url_for(&staging[0], None).ends_with("/{account}"), "left as it is when unknown");
    }

    /// Each invalid file is rejected with the line of the value that is wrong.
    #[test]
    fn invalid_files_name_the_line_and_reason() {
        let env = "[[environments]]\nname = \"staging\"\nrules = [{ glob = \"staging-*\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\" }]\n";
        let cases: &[(&str, usize, &str)] = &[
            ("", 1, "at least one [[environments]]"),
            ("[[environments]]\nname = \"Staging\"\nrules = []\ntargets = []\n", 2, "lowercase"),
            (
                "[[environments]]\nname = \"s\"\nslack = \"some\"\nrules = [{ glob = \"a\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\" }]\n",
                3,
                "\"all\" or \"failures\"",
            ),
            (
                "[[environments]]\nname = \"s\"\nrules = []\ntargets = [{ region = \"eu-west-1\", cluster = \"c\" }]\n",
                3,
                "at least one tag rule",
            ),
            ("[[environments]]\nname = \"s\"\nrules = [{ glob = \"*\" }]\n", 1, "missing field `targets`"),
            ("[[environments]]\nname = \"s\"\nrules = [{ glob = \"*\" }]\ntargets = []\n", 4, "at least one target"),
            (
                "[[environments]]\nname = \"s\"\nrules = [{ regex = \"(\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\" }]\n",
                3,
                "regex",
            ),
            (
                "[[environments]]\nname = \"s\"\nrules = [{ glob = \"a\", regex = \"b\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\" }]\n",
                3,
                "exactly one",
            ),
            (
                "[[environments]]\nname = \"s\"\nrules = [{ semver = \"newest\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\" }]\n",
                3,
                "semver",
            ),
            (
                "[[environments]]\nname = \"s\"\nrules = [{ glob = \"a\" }]\ntargets = [\n  { region = \"europe\", cluster = \"c\" }]\n",
                5,
                "not an AWS region",
            ),
            (
                "[[environments]]\nname = \"s\"\nrules = [{ glob = \"a\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\", role_arn = \"arn:aws:iam::1:role/x\" }]\n",
                4,
                "not an IAM role ARN",
            ),
            (
                "[[environments]]\nname = \"s\"\nrules = [{ glob = \"a\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\", account = \"111111111111\", role_arn = \"arn:aws:iam::222222222222:role/x\" }]\n",
                4,
                "not 111111111111",
            ),
            (
                "[[environments]]\nname = \"s\"\nrules = [{ glob = \"a\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\" }, { region = \"eu-west-1\", cluster = \"c\" }]\n",
                4,
                "listed twice",
            ),
            (
                "[[environments]]\nname = \"s\"\nrules = [{ glob = \"a\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\", colour = \"red\" }]\n",
                4,
                "unknown field",
            ),
            (&format!("{env}{env}"), 6, "defined twice"),
            (
                &format!("{env}\n[[services]]\nrepository = \"Shop\"\nname = \"x\"\ncontainers = [\"a\"]\n"),
                7,
                "not an ECR repository",
            ),
            (
                &format!("{env}\n[[services]]\nrepository = \"shop\"\nname = \"x-{{region}}\"\ncontainers = [\"a\"]\n"),
                8,
                "only the {env} placeholder",
            ),
            (
                &format!("{env}\n[[services]]\nrepository = \"shop\"\nname = \"x\"\ncontainers = []\n"),
                9,
                "at least one container",
            ),
            (
                &format!("{env}\n[[services]]\nrepository = \"shop\"\nname = \"x\"\ncontainers = [\"a\", \"a\"]\n"),
                9,
                "listed twice",
            ),
            (
                &format!(
                    "{env}\n[[services]]\nrepository = \"shop\"\nname = \"x\"\ncontainers = [\"a\"]\nenvironments = [\"prod\"]\n"
                ),
                10,
                "unknown environment \"prod\"",
            ),
            (
                &format!(
                    "{env}\n[[services]]\nrepository = \"shop\"\nname = \"x\"\ncontainers = [\"a\"]\nhealth = {{ url = \"ftp://x\" }}\n"
                ),
                10,
                "http(s)",
            ),
            (
                &format!(
                    "{env}\n[[services]]\nrepository = \"shop\"\nname = \"x\"\ncontainers = [\"a\"]\nmigration = {{ command = [] }}\n"
                ),
                10,
                "needs a command",
            ),
            (
                &format!(
                    "{env}\n[[services]]\nrepository = \"shop\"\nname = \"x\"\ncontainers = [\"a\"]\nmigration = {{ command = [\"m\"], timeout_seconds = 5000 }}\n"
                ),
                10,
                "between 1 and 600",
            ),
            (
                &format!(
                    "{env}\n[[services]]\nrepository = \"shop\"\nname = \"x\"\ncontainers = [\"a\"]\nalarm_window_minutes = 0\n"
                ),
                10,
                "alarm_window_minutes must be between 1 and 1440",
            ),
            (
                &format!(
                    "{env}\n[[services]]\nrepository = \"shop\"\nname = \"x\"\ncontainers = [\"a\"]\nhealth = {{ url = \"https://{{zone}}.x/\" }}\n"
                ),
                10,
                "may use only {env}, {region}, {cluster}, {account}, {service}",
            ),
            (
                &format!(
                    "{env}\n[[services]]\nrepository = \"shop\"\nname = \"x\"\ncontainers = [\"a\"]\nhealth = {{ url = \"https://x/\", overrides = [{{ region = \"us-east-1\", url = \"https://y/\" }}] }}\n"
                ),
                10,
                "matches none of the service's targets",
            ),
            (
                &format!(
                    "{env}\n[[services]]\nrepository = \"shop\"\nname = \"x\"\ncontainers = [\"a\"]\n[[services]]\nrepository = \"shop\"\nname = \"x\"\ncontainers = [\"b\"]\n"
                ),
                10,
                "defined twice",
            ),
            (
                &format!(
                    "{env}\n[[services]]\nrepository = \"shop\"\nname = \"x-{{env}}\"\ncontainers = [\"a\"]\n[[services]]\nrepository = \"sidecar\"\nname = \"x-staging\"\ncontainers = [\"b\"]\n"
                ),
                10,
                "already deployed from repository \"shop\"",
            ),
            ("[[environments]]\nname = \"s\"\nrules = [{ glob = \"a\" }\n", 3, ""),
            (&format!("{env}registry_accounts = [\"12345\"]\n"), 5, "not a 12-digit AWS account id"),
            (&format!("{env}repositories = [\"shop/*\", \"Shop/api\"]\n"), 5, "not an ECR repository name or glob"),
            (
                &format!(
                    "{env}repositories = [\"shop/*\"]\n\n[[services]]\nrepository = \"billing/api\"\nname = \"x\"\ncontainers = [\"a\"]\nenvironments = [\"staging\"]\n"
                ),
                11,
                "only from the repositories shop/*, not from billing/api",
            ),
        ];
        for (text, line, reason) in cases {
            let err = Config::parse("ferry.toml", text).expect_err(text);
            assert_eq!(err.line, *line, "line for {text:?}: {err}");
            assert!(err.reason.contains(reason), "reason for {text:?}: {err}");
            assert!(err.to_string().starts_with(&format!("ferry.toml:{line}:")), "{err}");
        }
    }

    #[test]
    fn an_environment_can_take_images_only_from_named_registries_and_repositories() {
        let text = GOOD.replacen(
            "name = \"production\"\n",
            "name = \"production\"\nregistry_accounts = [\"111111111111\"]\nrepositories = [\"shop/*\", \"tools/migrate\"]\n",
            1,
        );
        let mut c = Config::parse("ferry.toml", &text).expect("valid");
        let prod = c.environment("production").expect("production").clone();
        assert_eq!(prod.registry_accounts, ["111111111111"]);
        assert_eq!(prod.refuses("111111111111", "shop/api", None), None);
        assert_eq!(prod.refuses("111111111111", "tools/migrate", None), None);
        assert!(prod.refuses("111111111111", "shopping/api", None).is_some_and(|r| r.contains("shop/*")));
        assert!(prod.refuses("123456789012", "shop/api", None).is_some_and(|r| r.contains("111111111111")));
        // Without a list, an environment takes Ferry's own registry: any, while Ferry does not know its account.
        let staging = c.environment("staging").expect("staging").clone();
        assert_eq!(staging.refuses("999999999999", "any/repo", None), None);
        c.home_account = Some("123456789012".into());
        assert_eq!(staging.refuses("123456789012", "any/repo", Some("123456789012")), None);
        assert!(staging.refuses("999999999999", "any/repo", Some("123456789012")).is_some());
        assert!(c.takes_pushes_from("111111111111") && c.takes_pushes_from("123456789012"));
        assert!(!c.takes_pushes_from("999999999999"));
        // Events from a target's account (named by its role) are known; others are not.
        assert!(c.knows_account("210987654321") && !c.knows_account("999999999999"));
    }

    #[test]
    fn a_missing_file_is_reported_with_its_path() {
        let err = Config::load(Path::new("/nonexistent/ferry.toml")).expect_err("missing");
        assert!(err.to_string().starts_with("/nonexistent/ferry.toml:0:0: cannot read"), "{err}");
    }

    #[test]
    fn role_arns_are_parsed_strictly() {
        assert_eq!(role_account("arn:aws:iam::123456789012:role/ferry"), Some("123456789012"));
        assert_eq!(role_account("arn:aws-cn:iam::123456789012:role/a/b"), Some("123456789012"));
        assert_eq!(role_account("arn:aws:iam::123456789012:user/ferry"), None);
        assert_eq!(role_account("arn:aws:sts::123456789012:role/ferry"), None);
        assert_eq!(role_account("arn:aws:iam::12345:role/ferry"), None);
    }
}
