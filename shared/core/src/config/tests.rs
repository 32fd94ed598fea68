//! The config's tests: parsing, validation and the errors' locations.

use super::environments::role_account;
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
health = { url = "https://api.{env}.shop.example/healthz", test_url = "https://test.api.{env}.shop.example:8443/healthz", expect_status = 204, body_contains = "ok" }
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
            test_url: Some("https://test.api.{env}.shop.example:8443/healthz".into()),
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
    assert_eq!(
        api.health.as_ref().and_then(|h| h.test_url_for(&staging[0], None)).as_deref(),
        Some("https://test.api.staging.shop.example:8443/healthz")
    );
    assert!(!c.services[1].deploys_to("staging"));
    assert_eq!(api.alarms, ["shop-{env}-api-5xx"]);
    assert_eq!(api.alarm_window, chrono::Duration::minutes(30), "the default window");
}

#[test]
fn a_health_url_names_each_target_by_its_placeholders_or_its_override() {
    let text = GOOD.replace(
        r#"health = { url = "https://api.{env}.shop.example/healthz", test_url = "https://test.api.{env}.shop.example:8443/healthz", expect_status = 204, body_contains = "ok" }"#,
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
            "[[environments]]\nname = \"s\"\nrules = [{ glob = \"a\" }]\nfreeze = [{ days = [\"Fri\"], from = \"17:00\", to = \"23:59\", timezone = \"India\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\" }]\n",
            4,
            "IANA time zone",
        ),
        (
            "[[environments]]\nname = \"s\"\nrules = [{ glob = \"a\" }]\nfreeze = [{ days = [\"Friday!\"], from = \"17:00\", to = \"23:59\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\" }]\n",
            4,
            "not a day",
        ),
        (
            "[[environments]]\nname = \"s\"\nrules = [{ glob = \"a\" }]\nfreeze = [{ from = \"17:00\", to = \"2026-12-27T00:00\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\" }]\n",
            4,
            "must both be times",
        ),
        (
            "[[environments]]\nname = \"s\"\nrules = [{ glob = \"a\" }]\nfreeze = [{ from = \"2026-12-27T00:00\", to = \"2026-12-24T00:00\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\" }]\n",
            4,
            "ends (2026-12-24 00:00:00) before it starts",
        ),
        (
            "[[environments]]\nname = \"s\"\nrules = [{ glob = \"a\" }]\nfreeze = [{ days = [\"Fri\"], from = \"2026-12-24T00:00\", to = \"2026-12-27T00:00\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\" }]\n",
            4,
            "takes no `days`",
        ),
        (
            "[[environments]]\nname = \"s\"\norder = \"newest\"\nrules = [{ semver = \"any\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\" }]\n",
            3,
            "\"pushed\" or \"semver\"",
        ),
        (
            "[[environments]]\nname = \"s\"\norder = \"semver\"\nrules = [{ semver = \">=1.4, <2\" }, { glob = \"v*\" }]\ntargets = [{ region = \"eu-west-1\", cluster = \"c\" }]\n",
            4,
            "every rule must be a semver rule; glob \"v*\" is not",
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
                "{env}\n[[services]]\nrepository = \"shop\"\nname = \"x\"\ncontainers = [\"a\"]\nhealth = {{ url = \"https://x/\", test_url = \"ftp://{{env}}.x/\" }}\n"
            ),
            10,
            "must be http(s)://",
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

#[test]
fn an_environment_ordered_by_version_keys_its_tags_and_others_do_not() {
    let config = Config::parse(
        "ferry.toml",
        r#"
[[environments]]
name = "staging"
rules = [{ semver = "any" }]
targets = [{ region = "eu-west-1", cluster = "c" }]

[[environments]]
name = "production"
order = "semver"
rules = [{ semver = ">=1.4, <2" }]
targets = [{ region = "eu-west-1", cluster = "p" }]
"#,
    )
    .expect("config");
    let production = config.environment("production").expect("production");
    assert_eq!(production.order, Order::Semver);
    assert_eq!(production.version_key("v1.4.2"), crate::rules::version_key("1.4.2"));
    assert_eq!(config.environment("staging").expect("staging").version_key("v1.4.2"), None);
    assert_eq!(config.environment_for_tag("v2.0.0").map(|e| e.name.as_str()), Some("staging"));
}

#[test]
fn freeze_windows_are_read_on_their_own_clock() {
    let config = Config::parse(
        "ferry.toml",
        r#"
[[environments]]
name = "production"
rules = [{ semver = "final" }]
targets = [{ region = "eu-west-1", cluster = "p" }]
freeze = [
  { days = ["Fri"], from = "17:00", to = "23:59", timezone = "Asia/Kolkata" },
  { from = "2026-12-24T00:00", to = "2026-12-27T00:00", timezone = "UTC", reason = "holidays" },
]
"#,
    )
    .expect("config");
    let production = config.environment("production").expect("production");
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).expect(s).with_timezone(&chrono::Utc);
    assert_eq!(production.freeze.len(), 2);
    let friday = production.frozen(at("2026-12-04T12:00:00Z")).expect("Friday evening in India");
    assert_eq!(friday.until, at("2026-12-04T18:29:00Z"));
    let holidays = production.frozen(at("2026-12-26T23:00:00Z")).expect("holidays");
    assert!(holidays.reason.starts_with("holidays"), "{}", holidays.reason);
    assert!(production.frozen(at("2026-12-05T12:00:00Z")).is_none(), "Saturday");
}
