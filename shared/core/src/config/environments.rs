//! The raw file, its environments, tag rules and targets as serde reads them, and their validation.

use std::collections::HashSet;

use chrono::{NaiveDateTime, NaiveTime, Weekday};
use serde::Deserialize;
use toml::Spanned;

use super::services::RawService;
use super::{Config, Environment, Invalid, Order, Service, SlackFilter, TargetSpec, invalid};
use crate::approval::Approval;
use crate::freeze::{Freeze, When};
use crate::rules::{RuleError, TagRule};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
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
    /// `"pushed"` (default) or `"semver"`: what makes one push newer than another.
    order: Option<Spanned<String>>,
    rules: Spanned<Vec<Spanned<RawRule>>>,
    targets: Spanned<Vec<Spanned<RawTarget>>>,
    #[serde(default)]
    registry_accounts: Vec<Spanned<String>>,
    #[serde(default)]
    repositories: Vec<Spanned<String>>,
    #[serde(default)]
    freeze: Vec<Spanned<RawFreeze>>,
    approval: Option<Spanned<RawApproval>>,
}

/// `{ approvers = ["U0123ABCD"], required = 1, timeout_minutes = 1440 }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApproval {
    approvers: Vec<String>,
    required: Option<usize>,
    timeout_minutes: Option<u32>,
}

/// The longest an approval may wait: a week.
pub(super) const MAX_APPROVAL_MINUTES: u32 = 10_080;

impl RawApproval {
    pub(super) fn validate(self) -> Result<Approval, String> {
        // Slack user ids: U or W, then capitals and digits.
        let is_user = |u: &str| {
            u.len() >= 3 && u.starts_with(['U', 'W']) && u.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        };
        if let Some(bad) = self.approvers.iter().find(|u| !is_user(u)) {
            return Err(format!("approver {bad:?} is not a Slack user id such as \"U0123ABCD\""));
        }
        let mut unique = self.approvers.clone();
        unique.sort();
        unique.dedup();
        if unique.is_empty() || unique.len() != self.approvers.len() {
            return Err("approvers must list one or more Slack user ids, each once".into());
        }
        let required = self.required.unwrap_or(1);
        if required == 0 || required > self.approvers.len() {
            return Err(format!(
                "required = {required} must be 1 to the number of approvers ({})",
                self.approvers.len()
            ));
        }
        let minutes = self.timeout_minutes.unwrap_or(1440);
        if minutes == 0 || minutes > MAX_APPROVAL_MINUTES {
            return Err(format!("timeout_minutes = {minutes} must be 1 to {MAX_APPROVAL_MINUTES}"));
        }
        Ok(Approval { approvers: self.approvers, required, timeout: chrono::Duration::minutes(i64::from(minutes)) })
    }
}

/// `{ days = ["Fri"], from = "17:00", to = "23:59", timezone = "Asia/Kolkata" }`, or dated:
/// `{ from = "2026-12-24T00:00", to = "2026-12-27T00:00", reason = "holidays" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFreeze {
    days: Option<Vec<String>>,
    from: String,
    to: String,
    timezone: Option<String>,
    reason: Option<String>,
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
pub(super) fn role_account(arn: &str) -> Option<&str> {
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

pub(super) fn is_repository(s: &str) -> bool {
    // ECR: (?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*, 2..=256 chars
    (2..=256).contains(&s.len())
        && s.split('/').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
                && part.starts_with(|c: char| c.is_ascii_alphanumeric())
                && part.ends_with(|c: char| c.is_ascii_alphanumeric())
        })
}

impl RawConfig {
    pub(super) fn validate(self) -> Result<Config, Invalid> {
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
        let order = match &self.order {
            None => Order::Pushed,
            Some(o) if o.get_ref() == "pushed" => Order::Pushed,
            Some(o) if o.get_ref() == "semver" => Order::Semver,
            Some(o) => return Err(invalid(o, format!("order {:?} must be \"pushed\" or \"semver\"", o.get_ref()))),
        };
        let name = self.name.into_inner();
        if self.rules.get_ref().is_empty() {
            return Err(invalid(&self.rules, format!("environment {name:?} needs at least one tag rule")));
        }
        if self.targets.get_ref().is_empty() {
            return Err(invalid(&self.targets, format!("environment {name:?} needs at least one target")));
        }
        let rules_span = self.rules.span();
        let rules = self
            .rules
            .into_inner()
            .into_iter()
            .map(|rule| {
                let span = rule.span();
                rule.into_inner().validate().map_err(|e| (span, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let (Order::Semver, Some(rule)) = (order, rules.iter().find(|r| !r.is_semver())) {
            return Err((
                rules_span,
                format!(
                    "environment {name:?} orders pushes by version (order = \"semver\"), so every rule must be a \
                     semver rule; {rule} is not"
                ),
            ));
        }
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
        let freeze = self
            .freeze
            .into_iter()
            .map(|f| {
                let span = f.span();
                f.into_inner().validate().map_err(|e| (span, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let approval = match self.approval {
            None => None,
            Some(a) => {
                let span = a.span();
                Some(a.into_inner().validate().map_err(|e| (span, e))?)
            }
        };
        Ok(Environment {
            name,
            slack,
            order,
            freeze,
            approval,
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

impl RawFreeze {
    fn validate(self) -> Result<Freeze, String> {
        let timezone = match self.timezone.as_deref() {
            None => chrono_tz::Tz::UTC,
            Some(name) => name
                .parse()
                .map_err(|_| format!("timezone {name:?} is not an IANA time zone such as \"Europe/Berlin\""))?,
        };
        // Seconds are optional: "17:00" or "17:00:30".
        let time =
            |s: &str| NaiveTime::parse_from_str(s, "%H:%M").or_else(|_| NaiveTime::parse_from_str(s, "%H:%M:%S")).ok();
        let date_time = |s: &str| {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
                .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S"))
                .ok()
        };
        let when = match (time(&self.from), time(&self.to), date_time(&self.from), date_time(&self.to)) {
            (Some(from), Some(to), _, _) => {
                let days = self
                    .days
                    .unwrap_or_default()
                    .iter()
                    .map(|d| d.parse::<Weekday>().map_err(|_| format!("{d:?} is not a day such as \"Fri\"")))
                    .collect::<Result<Vec<_>, _>>()?;
                When::Weekly { days, from, to }
            }
            (_, _, Some(from), Some(to)) if self.days.is_some() => {
                return Err(format!("a dated window ({from} to {to}) takes no `days`"));
            }
            (_, _, Some(from), Some(to)) if to <= from => {
                return Err(format!("the window ends ({to}) before it starts ({from})"));
            }
            (_, _, Some(from), Some(to)) => When::Once { from, to },
            _ => {
                return Err(format!(
                    "from {:?} and to {:?} must both be times (\"17:00\") or both dates and times \
                     (\"2026-12-24T00:00\")",
                    self.from, self.to
                ));
            }
        };
        if let Some(reason) = self.reason.as_deref().filter(|r| r.trim().is_empty() || r.len() > 200) {
            return Err(format!("reason {reason:?} must be 1 to 200 characters"));
        }
        Ok(Freeze { when, timezone, reason: self.reason })
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
