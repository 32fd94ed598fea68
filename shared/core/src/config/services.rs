//! The raw services, their smoke tests and migrations as serde reads them, and their validation.

use serde::Deserialize;
use toml::Spanned;

use super::environments::is_repository;
use super::{
    DEFAULT_ALARM_WINDOW_MINUTES, Environment, Health, HealthOverride, Invalid, MAX_ALARM_WINDOW_MINUTES,
    MAX_MIGRATION_SECONDS, MAX_SMOKE_SECONDS, Migration, PLACEHOLDERS, Service, invalid,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
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
    /// Replaces the environment's approval rule for this service.
    approval: Option<Spanned<super::environments::RawApproval>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    url: Spanned<String>,
    /// The test route of a blue/green service: the new revision behind the test listener.
    test_url: Option<Spanned<String>>,
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
        let test_url = self.test_url.as_ref().map(health_url).transpose()?;
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
            test_url,
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

fn only_env_placeholder(template: &str) -> bool {
    let without = template.replace("{env}", "");
    !without.contains('{') && !without.contains('}')
}

impl RawService {
    pub(super) fn validate(self, environments: &[Environment]) -> Result<Service, Invalid> {
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
        let approval = match self.approval {
            None => None,
            Some(a) => {
                let span = a.span();
                Some(a.into_inner().validate().map_err(|e| (span, e))?)
            }
        };
        Ok(Service {
            approval,
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
