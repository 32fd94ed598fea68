//! `ferry check`: what the config resolves to, per environment, target and service.

use ferry::config::Config;

use crate::Term;

pub(crate) fn check(config: &Config, term: Term) -> String {
    let mut out = format!("{}\n", term.bold("environments (a tag goes to the first whose rules match)"));
    for e in &config.environments {
        let rules: Vec<String> = e.rules.iter().map(|r| r.to_string()).collect();
        out.push_str(&format!("  {}  rules: {}\n", term.bold(&e.name), rules.join(", ")));
        for t in &e.targets {
            let account = t.account.as_deref().map_or(String::new(), |a| format!(" in account {a}"));
            let role = t.role_arn.as_deref().map_or(String::new(), |r| format!(" as {r}"));
            out.push_str(&format!("    target {}/{}{account}{role}\n", t.region, t.cluster));
        }
    }
    out.push_str(&format!("{}\n", term.bold("services")));
    for s in &config.services {
        let envs: Vec<&str> =
            config.environments.iter().filter(|e| s.deploys_to(&e.name)).map(|e| e.name.as_str()).collect();
        out.push_str(&format!(
            "  {} -> {} (containers: {}) in {}\n",
            s.repository,
            s.name,
            s.containers.join(", "),
            envs.join(", ")
        ));
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
