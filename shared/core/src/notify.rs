//! Notifications: what a team is told about a deployment, rendered for Slack (Block Kit)
//! and SNS (the same facts as JSON, with attributes subscribers can filter on).

use serde_json::{Value, json};

use crate::config::{Config, SlackFilter};
use crate::model::{Deployment, Origin, State};

/// A message about one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub deployment: Deployment,
    /// Key of the Slack webhook it goes to (`None`: the default webhook).
    pub route: Option<String>,
    /// After a rollback: the task definition the service runs now.
    pub live_now: Option<String>,
    /// Whether it is posted to Slack (the environment's filter); SNS always gets it.
    pub slack: bool,
    /// Set when the message is an alarm about the deployment, not a change of its state.
    pub alert: Option<Alert>,
    /// What an approver weighs beside the push, as (label, text): what it replaces, how the
    /// image did in the environment before.
    pub context: Vec<(String, String)>,
}

/// An alarm on a live deployment that Ferry did not act on, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub alarm: String,
    pub note: String,
}

impl Notification {
    /// The message about `d`, routed as the config says: the service's webhook (or the
    /// default) and the environment's Slack filter.
    pub fn about(config: &Config, d: &Deployment, live_now: Option<String>) -> Notification {
        let route = config
            .services
            .iter()
            .filter(|s| s.service_name(&d.target.environment) == d.target.service)
            .find(|s| d.repository.is_empty() || s.repository == d.repository)
            .and_then(|s| s.notify.clone());
        let filter = config.environment(&d.target.environment).map(|e| e.slack).unwrap_or_default();
        let slack = filter == SlackFilter::All || needs_someone(d.state);
        Notification { deployment: d.clone(), route, live_now, slack, alert: None, context: Vec::new() }
    }

    /// An alarm on `d` that Ferry did not act on: posted wherever failures are.
    pub fn alert(config: &Config, d: &Deployment, alert: Alert) -> Notification {
        Notification { slack: true, alert: Some(alert), ..Notification::about(config, d, None) }
    }

    pub fn headline(&self) -> String {
        let d = &self.deployment;
        if let Some(alert) = &self.alert {
            return format!("{} alarm {} in {}: not rolled back", d.target.service, alert.alarm, d.target.environment);
        }
        let what = match d.state {
            State::InProgress => "deploying",
            State::Succeeded => "deployed",
            State::Failed => "deployment failed",
            State::Skipped => "push skipped",
            State::Held => "push held (freeze)",
            State::AwaitingApproval => "awaiting approval",
            State::Rejected => "push rejected",
            State::RollingBack => "rolling back",
            State::RolledBack => "rolled back",
            State::RollbackFailed => "ROLLBACK FAILED",
            _ => d.state.as_str(),
        };
        format!("{} {what}: {}:{} to {}", d.target.service, d.repository, d.tag, d.target.environment)
    }

    /// Severity for subscribers' filters.
    pub fn severity(&self) -> &'static str {
        if self.alert.is_some() {
            return "warning";
        }
        match self.deployment.state {
            State::RollbackFailed => "critical",
            State::Failed | State::RolledBack | State::RollingBack => "error",
            State::Skipped => "warning",
            _ => "info",
        }
    }

    /// The same facts as JSON, for SNS subscribers.
    pub fn facts(&self) -> Value {
        let d = &self.deployment;
        let mut facts = json!({
            "deployment": d.id,
            "status": d.state.as_str(),
            "severity": self.severity(),
            "environment": d.target.environment,
            "service": d.target.service,
            "cluster": d.target.cluster,
            "region": d.target.region,
            "account": d.target.account,
            "repository": d.repository,
            "tag": d.tag,
            "commit": d.image_labels.revision.as_deref().or(commit_of(&d.tag)),
            "digest": d.digest,
            "image": d.image,
            "triggered_by": triggered_by(d),
            "duration_seconds": duration(d).map(|s| s.num_seconds()),
            "task_definition": d.task_definition,
            "previous_task_definition": d.previous_task_definition,
            "ecs_deployment_id": d.ecs_deployment_id,
            "reason": d.reason,
            "live_now": self.live_now,
            "console": console_url(d),
        });
        if let Some(alert) = &self.alert {
            facts["alarm"] = json!(alert.alarm);
            facts["alarm_note"] = json!(alert.note);
        }
        if !self.context.is_empty() {
            facts["context"] = self.context.iter().map(|(label, text)| (label.clone(), json!(text))).collect();
        }
        facts
    }

    /// A Slack Block Kit message.
    pub fn slack(&self) -> Value {
        let d = &self.deployment;
        let mut fields = vec![
            format!("*Service*\n{}", escape(&d.target.service)),
            format!("*Environment*\n{}", escape(&d.target.environment)),
            format!("*Region*\n{}", escape(&d.target.region)),
            format!("*Tag*\n`{}`", escape(&d.tag)),
            format!("*Digest*\n`{}`", escape(short_digest(&d.digest))),
        ];
        let revision = d.image_labels.revision.as_deref().map(|r| r.chars().take(12).collect::<String>());
        if let Some(commit) = revision.as_deref().or(commit_of(&d.tag)) {
            fields.push(format!("*Commit*\n`{}`", escape(commit)));
        }
        fields.push(format!("*Triggered by*\n{}", escape(&triggered_by(d))));
        if let Some(took) = duration(d) {
            fields.push(format!("*Duration*\n{}", human(took)));
        }
        let icon = if self.alert.is_some() { "🔔" } else { emoji(d.state) };
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": clip(&format!("{icon} {}", self.headline()), HEADER - 1)}}),
            json!({"type": "section", "fields": fields.iter().map(|f| json!({"type": "mrkdwn", "text": f})).collect::<Vec<_>>()}),
        ];
        if let Some(alert) = &self.alert {
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Alarm*\n{}", clip(&escape(&alert.note), 2900))}}));
        } else if let Some(reason) = &d.reason {
            let label = if d.state == State::Succeeded { "Shown" } else { "Why" };
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*{label}*\n{}", clip(&escape(reason), 2900))}}));
        }
        if let Some(live) = &self.live_now {
            blocks
                .push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Live now*\n`{}`", escape(live))}}));
        }
        for (label, text) in &self.context {
            let text = format!("*{}*\n{}", escape(label), clip(&escape(text), 2900));
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}));
        }
        if d.state == State::AwaitingApproval {
            let value = crate::approval::button_value(&d.target.key(), &d.id);
            blocks.push(json!({"type": "actions", "block_id": "ferry_approval", "elements": [
                {"type": "button", "action_id": crate::approval::APPROVE_ACTION, "style": "primary", "value": value,
                 "text": {"type": "plain_text", "text": "Approve"}},
                {"type": "button", "action_id": crate::approval::REJECT_ACTION, "style": "danger", "value": value,
                 "text": {"type": "plain_text", "text": "Reject"}},
            ]}));
        }
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!(
            "<{}|{} in {}> · deployment `{}`", console_url(d), d.target.service, d.target.cluster, d.id
        )}]}));
        json!({"text": clip(&escape(&self.headline()), 2900), "blocks": blocks})
    }

    /// The SNS subject: ASCII without control characters, under 100 characters, as SNS requires.
    pub fn subject(&self) -> String {
        let headline = self.headline();
        let subject: String = headline.chars().map(|c| if c.is_ascii() && !c.is_control() { c } else { '?' }).collect();
        clip(&subject, SUBJECT - 4).replace('…', "...")
    }
}

/// Slack's limit on a header block's text.
const HEADER: usize = 150;
/// SNS's subject must be shorter than this.
const SUBJECT: usize = 100;

/// Text from outside (a health check's body, ECS's reason, a tag) as Slack's mrkdwn shows it
/// literally: `&`, `<` and `>` escaped (<https://api.slack.com/reference/surfaces/formatting#escaping>).
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// States a team must hear about even where routine messages are filtered out.
fn needs_someone(state: State) -> bool {
    matches!(
        state,
        State::Failed
            | State::RollingBack
            | State::RolledBack
            | State::RollbackFailed
            | State::Skipped
            | State::AwaitingApproval
            | State::Held
            | State::Rejected
    )
}

/// The commit a tag carries: its last `-`-separated part, if that is 7 to 40 hex digits
/// (`staging-1a2b3c4d`, `prod-1a2b3c4d`).
pub fn commit_of(tag: &str) -> Option<&str> {
    let last = tag.rsplit('-').next()?;
    ((7..=40).contains(&last.len()) && tag.contains('-') && last.chars().all(|c| c.is_ascii_hexdigit())).then_some(last)
}

/// `sha256:3f1e2d4c5b6a…` as its first 12 hex digits, as messages and the CLI show it.
pub fn short_digest(digest: &str) -> &str {
    digest.split_once(':').map_or(digest, |(_, hex)| &hex[..hex.len().min(12)])
}

fn triggered_by(d: &Deployment) -> String {
    match d.origin {
        Origin::Ferry => format!("ECR push of {}:{}", d.repository, d.tag),
        Origin::Rollback => "Ferry's rollback".into(),
        Origin::EcsRollback => "ECS's own rollback".into(),
        Origin::External => "a deployment outside Ferry".into(),
    }
}

/// How long the deployment took, once it has ended.
fn duration(d: &Deployment) -> Option<chrono::Duration> {
    (d.state != State::InProgress && d.updated_at > d.created_at).then(|| d.updated_at - d.created_at)
}

fn human(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    if s >= 60 { format!("{}m {}s", s / 60, s % 60) } else { format!("{s}s") }
}

fn emoji(state: State) -> &'static str {
    match state {
        State::InProgress => "🚀",
        State::Succeeded => "✅",
        State::Failed => "❌",
        State::RollingBack => "⏪",
        State::RolledBack => "↩️",
        State::RollbackFailed => "🚨",
        State::AwaitingApproval => "🙋",
        State::Held => "🧊",
        _ => "ℹ️",
    }
}

/// At most `max` characters and an ellipsis (Slack refuses a text block over 3,000).
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max { text.to_string() } else { text.chars().take(max).collect::<String>() + "…" }
}

fn console_url(d: &Deployment) -> String {
    format!(
        "https://{region}.console.aws.amazon.com/ecs/v2/clusters/{cluster}/services/{service}/deployments?region={region}",
        region = d.target.region,
        cluster = d.target.cluster,
        service = d.target.service
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Push, Target};
    use chrono::TimeZone;

    const CONFIG: &str = r#"
[[environments]]
name = "staging"
slack = "failures"
rules = [{ glob = "staging-*" }]
targets = [{ region = "ap-southeast-1", cluster = "shop-staging" }]

[[environments]]
name = "production"
rules = [{ semver = "final" }]
targets = [{ region = "eu-west-1", cluster = "shop-prod" }]

[[services]]
repository = "shop/api"
name = "shop-{env}-api"
containers = ["api"]
notify = "shop-team"
"#;

    fn deployment(env: &str, tag: &str, state: State, seconds: i64) -> Deployment {
        let t0 = chrono::Utc.with_ymd_and_hms(2026, 11, 16, 1, 54, 34).single().expect("time");
        let push = Push {
            event_id: "13cde686".into(),
            registry_account: "123456789012".into(),
            registry_region: "ap-southeast-1".into(),
            repository: "shop/api".into(),
            tag: tag.into(),
            digest: "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234".into(),
            pushed_at: t0,
        };
        let (region, cluster) =
            if env == "staging" { ("ap-southeast-1", "shop-staging") } else { ("eu-west-1", "shop-prod") };
        let target = Target {
            environment: env.into(),
            account: None,
            region: region.into(),
            cluster: cluster.into(),
            service: format!("shop-{env}-api"),
            role_arn: None,
        };
        let mut d = Deployment::new(&push, target, t0);
        d.state = state;
        d.updated_at = t0 + chrono::Duration::seconds(seconds);
        d.task_definition = Some("arn:aws:ecs:ap-southeast-1:123456789012:task-definition/shop-api:7".into());
        d
    }

    #[test]
    fn messages_stay_within_slack_and_sns_limits_and_show_outside_text_literally() {
        let config = Config::parse("ferry.toml", CONFIG).expect("config");
        let mut d = deployment("staging", &format!("staging-{}", "x".repeat(200)), State::Failed, 30);
        d.reason = Some(format!("smoke test failed: <script>alert(1)</script> & {}", "y".repeat(4000)));
        let n = Notification::about(&config, &d, Some("<b>".into()));
        let slack = n.slack();
        let header = slack["blocks"][0]["text"]["text"].as_str().expect("header");
        assert!(header.chars().count() <= 150, "{} characters", header.chars().count());
        let why = slack["blocks"][2]["text"]["text"].as_str().expect("why");
        assert!(why.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; "), "{why}");
        assert!(why.chars().count() <= 3000 && !why.contains('<'), "escaped, then clipped");
        assert!(slack.to_string().contains("&lt;b&gt;"), "what is live is escaped too");
        let subject = n.subject();
        assert!(subject.len() < 100 && subject.is_ascii(), "{subject:?}");
        assert!(
            subject.starts_with("shop-staging-api deployment failed: shop/api:staging-xxx") && subject.ends_with("...")
        );
    }

    #[test]
    fn a_failure_message_says_everything_a_team_needs() {
        let config = Config::parse("ferry.toml", CONFIG).expect("config");
        let mut d = deployment("staging", "staging-1a2b3c4d", State::Failed, 95);
        d.reason = Some(
            "smoke test of https://api.staging.shop.example/healthz failed: 1 attempts: #1 HTTP 500 after 12 ms".into(),
        );
        let n = Notification::about(&config, &d, None);
        assert_eq!((n.route.as_deref(), n.slack, n.severity()), (Some("shop-team"), true, "error"));
        assert_eq!(
            n.slack(),
            json!({
                "text": "shop-staging-api deployment failed: shop/api:staging-1a2b3c4d to staging",
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": "❌ shop-staging-api deployment failed: shop/api:staging-1a2b3c4d to staging"}},
                    {"type": "section", "fields": [
                        {"type": "mrkdwn", "text": "*Service*\nshop-staging-api"},
                        {"type": "mrkdwn", "text": "*Environment*\nstaging"},
                        {"type": "mrkdwn", "text": "*Region*\nap-southeast-1"},
                        {"type": "mrkdwn", "text": "*Tag*\n`staging-1a2b3c4d`"},
                        {"type": "mrkdwn", "text": "*Digest*\n`7f5b2640fe6f`"},
                        {"type": "mrkdwn", "text": "*Commit*\n`1a2b3c4d`"},
                        {"type": "mrkdwn", "text": "*Triggered by*\nECR push of shop/api:staging-1a2b3c4d"},
                        {"type": "mrkdwn", "text": "*Duration*\n1m 35s"}
                    ]},
                    {"type": "section", "text": {"type": "mrkdwn", "text": "*Why*\nsmoke test of https://api.staging.shop.example/healthz failed: 1 attempts: #1 HTTP 500 after 12 ms"}},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": "<https://ap-southeast-1.console.aws.amazon.com/ecs/v2/clusters/shop-staging/services/shop-staging-api/deployments?region=ap-southeast-1|shop-staging-api in shop-staging> · deployment `20261116T015434Z-13cde686`"}]}
                ]
            })
        );
    }

    #[test]
    fn a_rolled_back_message_says_what_is_live_now_and_sns_carries_the_same_facts() {
        let config = Config::parse("ferry.toml", CONFIG).expect("config");
        let mut d = deployment("production", "v1.2.3", State::RolledBack, 42);
        d.reason = Some("alarm shop-production-api-5xx: Threshold Crossed".into());
        let live = "arn:aws:ecs:eu-west-1:123456789012:task-definition/shop-api:6".to_string();
        let n = Notification::about(&config, &d, Some(live.clone()));
        let blocks = n.slack()["blocks"].clone();
        assert_eq!(blocks[0]["text"]["text"], "↩️ shop-production-api rolled back: shop/api:v1.2.3 to production");
        assert_eq!(blocks[2]["text"]["text"], "*Why*\nalarm shop-production-api-5xx: Threshold Crossed");
        assert_eq!(blocks[3]["text"]["text"], format!("*Live now*\n`{live}`"));
        assert!(!blocks[1].to_string().contains("Commit"), "v1.2.3 carries no commit");
        assert_eq!(
            n.facts(),
            json!({
                "deployment": "20261116T015434Z-13cde686",
                "status": "ROLLED_BACK",
                "severity": "error",
                "environment": "production",
                "service": "shop-production-api",
                "cluster": "shop-prod",
                "region": "eu-west-1",
                "account": null,
                "repository": "shop/api",
                "tag": "v1.2.3",
                "commit": null,
                "digest": "sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234",
                "image": "123456789012.dkr.ecr.ap-southeast-1.amazonaws.com/shop/api@sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234",
                "triggered_by": "ECR push of shop/api:v1.2.3",
                "duration_seconds": 42,
                "task_definition": "arn:aws:ecs:ap-southeast-1:123456789012:task-definition/shop-api:7",
                "previous_task_definition": null,
                "ecs_deployment_id": null,
                "reason": "alarm shop-production-api-5xx: Threshold Crossed",
                "live_now": live,
                "console": "https://eu-west-1.console.aws.amazon.com/ecs/v2/clusters/shop-prod/services/shop-production-api/deployments?region=eu-west-1"
            })
        );
    }

    #[test]
    fn routing_and_filters_follow_the_config() {
        let config = Config::parse("ferry.toml", CONFIG).expect("config");
        let cases = [
            ("staging", State::InProgress, false, "info", "🚀 shop-staging-api deploying"),
            ("staging", State::Succeeded, false, "info", "✅ shop-staging-api deployed"),
            ("staging", State::Skipped, true, "warning", "ℹ️ shop-staging-api push skipped"),
            ("staging", State::RollingBack, true, "error", "⏪ shop-staging-api rolling back"),
            ("staging", State::RollbackFailed, true, "critical", "🚨 shop-staging-api ROLLBACK FAILED"),
            ("staging", State::AwaitingApproval, true, "info", "🙋 shop-staging-api awaiting approval"),
            ("staging", State::Held, true, "info", "🧊 shop-staging-api push held (freeze)"),
            ("staging", State::Rejected, true, "info", "ℹ️ shop-staging-api push rejected"),
            ("production", State::InProgress, true, "info", "🚀 shop-production-api deploying"),
            ("production", State::Succeeded, true, "info", "✅ shop-production-api deployed"),
        ];
        for (env, state, slack, severity, header) in cases {
            let n = Notification::about(&config, &deployment(env, "staging-1a2b3c4d", state, 0), None);
            assert_eq!((n.slack, n.severity()), (slack, severity), "{env} {state}");
            assert!(
                n.slack()["blocks"][0]["text"]["text"].as_str().is_some_and(|h| h.starts_with(header)),
                "{env} {state}"
            );
            assert_eq!(n.route.as_deref(), Some("shop-team"));
        }
        let mut other = deployment("production", "v1", State::Failed, 0);
        other.target.service = "billing".into();
        assert_eq!(Notification::about(&config, &other, None).route, None, "no service config: the default webhook");
    }

    #[test]
    fn commits_are_read_from_tags_that_carry_one() {
        let cases = [
            ("staging-1a2b3c4d", Some("1a2b3c4d")),
            ("prod-0123456789abcdef0123456789abcdef01234567", Some("0123456789abcdef0123456789abcdef01234567")),
            ("v1.2.3", None),
            ("latest", None),
            ("deadbeef", None),
            ("staging-1a2b3c", None),
            ("staging-xyz12345", None),
        ];
        for (tag, commit) in cases {
            assert_eq!(commit_of(tag), commit, "{tag}");
        }
    }
}
