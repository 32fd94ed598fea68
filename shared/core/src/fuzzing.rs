//! What the fuzz targets (`fuzz/`, run by `bench/fuzz`) check on arbitrary input: the event
//! parsers, the config parser and the tag rules never panic, and keep their promises. The
//! bodies live here so that the seeds and every input a fuzzer ever crashed are replayed by
//! the ordinary tests (`cargo nextest run -p ferry-core`), without a fuzzer.

use crate::config::Config;
use crate::event::{DeployEvent, Received, parse_deploy_event, parse_ecs_event, parse_rollback_trigger};
use crate::model::Deployment;
use crate::plan::{Plan, plan};
use crate::rules::TagRule;

/// A config the event target plans pushes with: one glob, one regex, semver rules.
const CONFIG: &str = r#"
[[environments]]
name = "staging"
rules = [{ glob = "staging-*" }, { semver = "prerelease", pre = "rc" }, { glob = "latest" }]
targets = [{ region = "ap-southeast-1", cluster = "shop-staging" }]

[[environments]]
name = "production"
registry_accounts = ["123456789012"]
rules = [{ regex = 'prod-[0-9a-f]{8}' }, { semver = "final" }]
targets = [{ region = "eu-west-1", cluster = "shop-prod", role_arn = "arn:aws:iam::210987654321:role/ferry-target" }]

[[services]]
repository = "shop/api"
name = "shop-{env}-api"
containers = ["api"]
"#;

/// Sample events (`tests/fixtures/events/`) and the fields of each that the parsers read.
const SAMPLES: [(&str, &[&str]); 3] = [
    (
        include_str!("../../../tests/fixtures/events/ecr-push-staging.json"),
        &["/detail/image-digest", "/detail/image-tag", "/detail/repository-name", "/account", "/time", "/id"],
    ),
    (
        include_str!("../../../tests/fixtures/events/ecs-deployment-circuit-breaker-rollback.json"),
        &["/resources/0", "/detail/deploymentId", "/detail/reason", "/detail/eventName", "/time"],
    ),
    (
        include_str!("../../../tests/fixtures/events/cloudwatch-alarm-state-change.json"),
        &["/detail/alarmName", "/detail/state/value", "/source", "/account"],
    ),
];

/// Any bytes as an EventBridge event to each function: parsed or refused, never a panic; a
/// push is a well-formed one, and planning it is as total as parsing it. Bytes that are
/// not JSON go into one field of a sample event instead (the first byte picks which), so the
/// parsers' reading of each field is fuzzed too.
pub fn events(data: &[u8]) {
    let event = match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(event) => event,
        Err(_) => {
            let Some((&pick, rest)) = data.split_first() else { return };
            let (sample, fields) = SAMPLES[usize::from(pick) % SAMPLES.len()];
            let mut event: serde_json::Value = serde_json::from_str(sample).expect("a sample event");
            let field = fields[usize::from(pick / 3) % fields.len()];
            if let Some(slot) = event.pointer_mut(field) {
                *slot = String::from_utf8_lossy(rest).into_owned().into();
            }
            event
        }
    };
    if let Ok(Received::Act(DeployEvent::Push(push))) = parse_deploy_event(event.clone()) {
        assert!(!push.tag.is_empty() && !push.repository.is_empty() && !push.event_id.is_empty(), "{push:?}");
        let (algorithm, hex) = push.digest.split_once(':').expect("a digest has an algorithm");
        assert!(!algorithm.is_empty() && hex.len() >= 32, "{push:?}");
        assert!(push.image().ends_with(&format!("/{}@{}", push.repository, push.digest)));
        let config = Config::parse("fuzz.toml", CONFIG).expect("the fuzz config");
        if let Plan::Deploy { targets, .. } = plan(&config, &push) {
            for t in targets {
                let d = Deployment::new(&push, t.target, push.pushed_at);
                assert!(d.id.ends_with(&push.event_id), "{d:?}");
            }
        }
    }
    if let Ok(Received::Act(ev)) = parse_ecs_event(event.clone()) {
        assert!(!ev.deployment_id.is_empty(), "{ev:?}");
        // The service is the one a resource of the event names, read back whole.
        let arn = match ev.cluster.as_str() {
            "" => format!(":ecs:{}:{}:service/{}", ev.region, ev.account, ev.service),
            cluster => format!(":ecs:{}:{}:service/{cluster}/{}", ev.region, ev.account, ev.service),
        };
        let resources = event.get("resources").and_then(|r| r.as_array()).cloned().unwrap_or_default();
        assert!(resources.iter().any(|r| r.as_str().is_some_and(|r| r.ends_with(&arn))), "{arn} in {resources:?}");
    }
    let _ = parse_rollback_trigger(event);
}

/// Any text as `ferry.toml`: a config, or an error that points into the text.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse("fuzz.toml", text) {
        Ok(config) => {
            assert!(!config.environments.is_empty());
            for e in &config.environments {
                assert!(!e.rules.is_empty() && !e.targets.is_empty(), "{e:?}");
            }
            for s in &config.services {
                assert!(!s.containers.is_empty(), "{s:?}");
                assert!(s.environments.iter().all(|e| config.environment(e).is_some()), "{s:?}");
            }
        }
        Err(e) => {
            assert!(e.to_string().starts_with("fuzz.toml:"), "{e}");
            assert!(e.line <= text.lines().count() + 1, "line {} of {} in {e}", e.line, text.lines().count());
        }
    }
}

/// Any pattern and tag: a rule is built or refused, never a panic, and matching agrees with
/// an independent reading of the rule. Input: a kind byte, then the pattern and the tag
/// separated by a NUL.
pub fn rules(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else { return };
    let Ok(rest) = std::str::from_utf8(rest) else { return };
    let (pattern, tag) = rest.split_once('\0').unwrap_or((rest, ""));
    match kind % 3 {
        0 => {
            let Ok(rule) = TagRule::glob(pattern) else { return };
            assert_eq!(rule.matches(tag), glob_by_regex(pattern, tag), "glob {pattern:?} on {tag:?}");
        }
        1 => {
            let Ok(rule) = TagRule::regex(pattern) else { return };
            // The whole tag, never a part of it: as a regex anchored another way says.
            let whole = regex::RegexBuilder::new(&format!(r"\A(?:{pattern})\z")).size_limit(1 << 22).build();
            if let (Ok(whole), true) = (whole, (1..=128).contains(&tag.len())) {
                assert_eq!(rule.matches(tag), whole.is_match(tag), "regex {pattern:?} on {tag:?}");
            }
        }
        _ => {
            let pre = (!pattern.is_empty()).then_some(pattern);
            let (Ok(final_), Ok(any)) = (TagRule::semver("final", None), TagRule::semver("any", None)) else {
                unreachable!("the plain semver rules build")
            };
            if let Ok(prerelease) = TagRule::semver("prerelease", pre) {
                // A pre-release is never final; both are semantic versions.
                assert!(!(final_.matches(tag) && prerelease.matches(tag)), "{tag:?}");
                assert!(!prerelease.matches(tag) || any.matches(tag), "{tag:?}");
            }
            assert!(!final_.matches(tag) || any.matches(tag), "{tag:?}");
        }
    }
}

/// A glob as a regex: `*` any run, `?` one character, everything else itself.
fn glob_by_regex(pattern: &str, tag: &str) -> bool {
    if tag.is_empty() || tag.len() > 128 {
        return false;
    }
    let body: String = pattern
        .chars()
        .map(|c| match c {
            '*' => "(?s:.*)".to_string(),
            '?' => "(?s:.)".to_string(),
            c => regex::escape(&c.to_string()),
        })
        .collect();
    regex::bytes::Regex::new(&format!(r"\A{body}\z")).expect("an escaped glob compiles").is_match(tag.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::repo_root;

    /// The fuzzers' seeds, and every input they were ever found to crash on (fuzz/regressions/):
    /// each is a test of its own here.
    fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
        let root = repo_root();
        let seeds = match target {
            "events" => vec![root.join("tests/fixtures/events")],
            "config" => vec![root.join("examples/github-actions"), root.join("infra/config")],
            _ => vec![],
        };
        let mut found = Vec::new();
        for dir in seeds.into_iter().chain([root.join("fuzz/regressions").join(target)]) {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "json" || e == "toml" || e == "bin") {
                    found.push((path.display().to_string(), std::fs::read(&path).expect("read")));
                }
            }
        }
        found
    }

    #[test]
    fn the_event_seeds_and_regressions_pass() {
        let inputs = inputs("events");
        assert!(inputs.len() >= 9, "the sample events are seeds");
        for (name, data) in inputs {
            eprintln!("{name}");
            events(&data);
        }
    }

    #[test]
    fn the_config_seeds_and_regressions_pass() {
        let inputs = inputs("config");
        assert!(inputs.len() >= 5, "the example configs are seeds");
        for (name, data) in inputs {
            eprintln!("{name}");
            config(&data);
        }
    }

    #[test]
    fn bytes_that_are_not_json_fill_a_field_of_a_sample_event() {
        // The first byte picks the push sample's digest: a bad digest is refused, not a panic.
        events(b"\x00not a digest");
        events(b"\x01arn:aws:ecs:eu-west-1:1:service/c");
        events(&[0x02, 0xff, 0xfe]);
    }

    #[test]
    fn the_rule_regressions_pass() {
        for (name, data) in inputs("rules") {
            eprintln!("{name}");
            rules(&data);
        }
        rules(b"\x00staging-*\x00staging-1a2b3c4d");
        rules(b"\x01prod-[0-9a-f]{8}\x00prod-1a2b3c4d");
        rules(b"\x02rc\x00v1.2.3-rc.1");
    }

    #[test]
    fn the_reference_glob_agrees_on_the_documented_cases() {
        assert!(glob_by_regex("staging-*", "staging-1a2b"));
        assert!(!glob_by_regex("staging-*", "xstaging-1"));
        assert!(glob_by_regex("v?.*", "v1.2") && !glob_by_regex("v?.*", "v10.2"));
        assert!(glob_by_regex("a.b", "a.b") && !glob_by_regex("a.b", "axb"), "a dot is a dot");
    }
}
