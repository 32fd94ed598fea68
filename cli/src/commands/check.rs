//! `ferry check`: what the config resolves to, per environment, target and service.

use chrono::{DateTime, Utc};
use ferry::config::{Config, Order};

use crate::Term;

pub(crate) fn check(config: &Config, term: Term, now: DateTime<Utc>) -> String {
    let mut out = format!("{}\n", term.bold("environments (a tag goes to the first whose rules match)"));
    for e in &config.environments {
        let rules: Vec<String> = e.rules.iter().map(|r| r.to_string()).collect();
        let order = if e.order == Order::Semver { " (newer: a higher version)" } else { "" };
        out.push_str(&format!("  {}  rules: {}{order}\n", term.bold(&e.name), rules.join(", ")));
        for f in &e.freeze {
            out.push_str(&format!("    freeze {}\n", f.describe()));
        }
        if let Some(frozen) = e.frozen(now) {
            out.push_str(&format!("    FROZEN now until {}: {}\n", frozen.until.to_rfc3339(), frozen.reason));
        } else if let Some((start, end, what)) = ferry::freeze::next(&e.freeze, now) {
            out.push_str(&format!("    next freeze {} to {}: {what}\n", start.to_rfc3339(), end.to_rfc3339()));
        }
        for t in &e.targets {
            let account = t.account.as_deref().map_or(String::new(), |a| format!(" in account {a}"));
            let role = t.role_arn.as_deref().map_or(String::new(), |r| format!(" as {r}"));
            out.push_str(&format!("    target {}/{}{account}{role}\n", t.region, t.cluster));
        }
    }
    out.push_str(&format!("{}\n", term.bold("services")));
    for s in &config.services {
        out.push_str(&format!("  {} (containers: {})\n", s.repository, s.containers.join(", ")));
        for e in config.environments.iter().filter(|e| s.deploys_to(&e.name)) {
            out.push_str(&format!("    {}: service {}\n", e.name, s.service_name(&e.name)));
        }
        if let Some(h) = &s.health {
            for env in config.environments.iter().filter(|e| s.deploys_to(&e.name)) {
                for t in ferry::plan::targets_of(config, &env.name, &s.service_name(&env.name)) {
                    let url = h.url_for(&t, config.home_account.as_deref());
                    out.push_str(&format!("    health {url} ({} attempts) for {t}\n", h.attempts));
                    if let Some(test) = h.test_url_for(&t, config.home_account.as_deref()) {
                        out.push_str(&format!("    test route {test} (blue/green: gates green) for {t}\n"));
                    }
                }
            }
        }
        if let Some(m) = &s.migration {
            out.push_str(&format!("    migration {:?} in {}\n", m.command, m.container));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_windows_are_shown_with_the_freeze_now_or_the_next_one() {
        let config = Config::parse(
            "ferry.toml",
            r#"
[[environments]]
name = "production"
order = "semver"
rules = [{ semver = ">=1.4, <2" }]
targets = [{ region = "eu-west-1", cluster = "p" }]
freeze = [{ from = "2026-12-24T00:00", to = "2026-12-27T00:00", reason = "holidays" }]
"#,
        )
        .expect("config");
        let term = Term::detect(false, true);
        let at = |s: &str| DateTime::parse_from_rfc3339(s).expect(s).with_timezone(&Utc);
        let before = check(&config, term, at("2026-12-20T00:00:00Z"));
        assert!(before.contains("semver \">=1.4, <2\" (newer: a higher version)"), "{before}");
        assert!(before.contains("freeze holidays (2026-12-24 00:00 to 2026-12-27 00:00 UTC)"), "{before}");
        assert!(before.contains("next freeze 2026-12-24T00:00:00+00:00 to 2026-12-27T00:00:00+00:00"), "{before}");
        let during = check(&config, term, at("2026-12-25T00:00:00Z"));
        assert!(during.contains("FROZEN now until 2026-12-27T00:00:00+00:00: holidays"), "{during}");
        assert!(!check(&config, term, at("2026-12-28T00:00:00Z")).contains("next freeze"), "none after the last");
    }
}
