//! The weekly digest: the four delivery figures per environment and the services that failed
//! most, as a Slack Block Kit message and as plain text for SNS.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::metrics::{Metrics, Row};
use crate::notify::escape;

/// The Slack webhook route the digest goes to, if the secret has one (else `default`).
pub const ROUTE: &str = "digest";
/// Environments shown; Slack takes at most 50 blocks and each environment takes two.
const ENVIRONMENTS: usize = 20;
/// Services named under "Failed most".
const WORST: usize = 5;

/// What a week looked like: [`crate::metrics::rows`] over `[since, until)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Digest {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub rows: Vec<Row>,
}

impl Digest {
    fn period(&self) -> String {
        format!("{} – {} UTC", self.since.format("%b %-d %H:%M"), self.until.format("%b %-d %H:%M, %Y"))
    }

    fn environments(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.service.is_none()).take(ENVIRONMENTS)
    }

    /// The services with the most failed pushes (at least one), worst first.
    pub fn failed_most(&self) -> Vec<&Row> {
        let mut failing: Vec<&Row> = self.rows.iter().filter(|r| r.service.is_some() && r.metrics.failed > 0).collect();
        failing.sort_by(|a, b| {
            let rate = |r: &Row| r.metrics.change_failure_rate.unwrap_or(0.0);
            b.metrics.failed.cmp(&a.metrics.failed).then(rate(b).total_cmp(&rate(a)))
        });
        failing.truncate(WORST);
        failing
    }

    /// The SNS subject (ASCII, under 100 characters).
    pub fn subject(&self) -> String {
        format!("Ferry weekly delivery, {} to {}", self.since.format("%Y-%m-%d"), self.until.format("%Y-%m-%d"))
    }

    /// SNS's message: the figures as JSON (as every SNS message is), with the text a mail shows.
    pub fn facts(&self) -> Value {
        json!({
            "kind": "weekly_digest",
            "since": self.since,
            "until": self.until,
            "rows": self.rows,
            "failed_most": self.failed_most().iter().map(|r| json!({"environment": r.environment, "service": r.service, "failed": r.metrics.failed, "reached_ecs": r.metrics.reached_ecs})).collect::<Vec<_>>(),
            "text": self.text(),
        })
    }

    /// The digest as plain text.
    pub fn text(&self) -> String {
        let mut out = format!("Ferry weekly delivery, {}\n", self.period());
        for row in self.environments() {
            out.push_str(&format!("\n{}\n", row.environment));
            for (label, value) in figures(&row.metrics) {
                out.push_str(&format!("  {label}: {value}\n"));
            }
        }
        out.push_str(&format!("\n{}\n", failed_most(&self.failed_most(), false)));
        out.push_str(&format!("\n{NOT_COUNTED}\n"));
        out
    }

    /// A Slack Block Kit message.
    pub fn slack(&self) -> Value {
        let mrkdwn = |text: String| json!({"type": "mrkdwn", "text": text});
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": "📊 Ferry weekly delivery"}}),
            json!({"type": "context", "elements": [mrkdwn(self.period())]}),
        ];
        for row in self.environments() {
            blocks.push(json!({"type": "section", "text": mrkdwn(format!("*{}*", escape(&row.environment)))}));
            let fields: Vec<Value> =
                figures(&row.metrics).into_iter().map(|(label, value)| mrkdwn(format!("*{label}*\n{value}"))).collect();
            blocks.push(json!({"type": "section", "fields": fields}));
        }
        blocks.push(json!({"type": "divider"}));
        blocks.push(json!({"type": "section", "text": mrkdwn(failed_most(&self.failed_most(), true))}));
        blocks.push(json!({"type": "context", "elements": [mrkdwn(format!(
            "{NOT_COUNTED} `ferry report --html FILE` draws the page."
        ))]}));
        json!({"text": format!("Ferry weekly delivery, {}", self.period()), "blocks": blocks})
    }
}

const NOT_COUNTED: &str = "SKIPPED, SUPERSEDED, HELD and REJECTED pushes never reached ECS and are not counted.";

/// The four figures of one row, labelled (lead time from the commit too, where images say).
fn figures(m: &Metrics) -> Vec<(&'static str, String)> {
    let open = if m.unrestored > 0 { format!(" ({})", m.open()) } else { String::new() };
    let mut figures = vec![
        ("Deployments", format!("{} ({:.1}/week)", m.deployments, m.per_week)),
        ("Lead time p50 / p90", m.lead_time.show()),
        ("Change failure rate", m.failure_rate()),
        ("Time to restore p50 / p90", m.time_to_restore.show() + &open),
    ];
    if m.lead_time_from_commit.samples > 0 {
        figures.insert(2, ("From commit p50 / p90", m.lead_time_from_commit.show()));
    }
    figures
}

fn failed_most(rows: &[&Row], slack: bool) -> String {
    if rows.is_empty() {
        return "No deployment failed.".into();
    }
    // Slack's mrkdwn needs its escaping; SNS's text is plain.
    let text = |s: &str| if slack { escape(s) } else { s.to_string() };
    let name = |s: &str| if slack { format!("*{}*", text(s)) } else { text(s) };
    let lines: Vec<String> = rows
        .iter()
        .map(|r| {
            let service = r.service.as_deref().unwrap_or_default();
            let (failed, of) = (r.metrics.failed, r.metrics.reached_ecs);
            format!("• {} ({}): {failed} of {of} failed", name(service), text(&r.environment))
        })
        .collect();
    format!("{}\n{}", if slack { "*Failed most*" } else { "Failed most" }, lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Spread;
    use chrono::TimeZone;

    fn row(environment: &str, service: Option<&str>, deployments: usize, failed: usize) -> Row {
        let reached = deployments + failed;
        Row {
            environment: environment.into(),
            service: service.map(str::to_string),
            metrics: Metrics {
                deployments,
                per_week: deployments as f64,
                lead_time: Spread { samples: deployments, median_seconds: Some(600), p90_seconds: Some(4_000) },
                lead_time_from_commit: Spread::default(),
                reached_ecs: reached,
                failed,
                change_failure_rate: (reached > 0).then(|| failed as f64 / reached as f64),
                time_to_restore: Spread::default(),
                unrestored: failed,
            },
        }
    }

    fn digest() -> Digest {
        let until = Utc.with_ymd_and_hms(2026, 12, 7, 8, 0, 0).single().expect("time");
        Digest {
            since: until - chrono::Duration::weeks(1),
            until,
            rows: vec![
                row("staging", Some("shop-staging-api"), 9, 1),
                row("staging", Some("shop-staging-<worker>"), 3, 3),
                row("staging", None, 12, 4),
                row("production", Some("shop-production-api"), 4, 0),
                row("production", None, 4, 0),
            ],
        }
    }

    #[test]
    fn each_environment_gets_its_four_figures_and_the_worst_services_are_named() {
        let message = digest().slack();
        let blocks = message["blocks"].as_array().expect("blocks");
        assert_eq!(blocks[0]["text"]["text"], "📊 Ferry weekly delivery");
        assert_eq!(blocks[1]["elements"][0]["text"], "Nov 30 08:00 – Dec 7 08:00, 2026 UTC");
        assert_eq!(blocks[2]["text"]["text"], "*staging*");
        let fields: Vec<&str> =
            blocks[3]["fields"].as_array().expect("fields").iter().filter_map(|f| f["text"].as_str()).collect();
        assert_eq!(
            fields,
            [
                "*Deployments*\n12 (12.0/week)",
                "*Lead time p50 / p90*\n10m00s / 1h06m",
                "*Change failure rate*\n25% (4/16)",
                "*Time to restore p50 / p90*\n- (+4 open)"
            ]
        );
        assert_eq!(blocks[4]["text"]["text"], "*production*");
        let mut labelled = digest();
        labelled.rows[2].metrics.lead_time_from_commit =
            Spread { samples: 2, median_seconds: Some(7_200), p90_seconds: Some(9_000) };
        let fields = &labelled.slack()["blocks"][3]["fields"];
        assert_eq!(fields[2]["text"], "*From commit p50 / p90*\n2h00m / 2h30m", "where images carry their build time");
        let worst = blocks[7]["text"]["text"].as_str().expect("failed most");
        assert_eq!(
            worst,
            "*Failed most*\n• *shop-staging-&lt;worker&gt;* (staging): 3 of 6 failed\n• *shop-staging-api* (staging): 1 of 10 failed"
        );
        assert!(blocks.len() <= 50, "Slack's limit");
    }

    #[test]
    fn a_week_without_failures_says_so_and_sns_gets_the_same_in_plain_text() {
        let mut quiet = digest();
        quiet.rows.retain(|r| r.environment == "production");
        assert!(quiet.failed_most().is_empty());
        let text = quiet.text();
        assert!(text.contains("production\n  Deployments: 4 (4.0/week)\n"), "{text}");
        assert!(text.contains("No deployment failed.") && text.contains("never reached ECS"), "{text}");
        let subject = quiet.subject();
        assert!(subject.is_ascii() && subject.len() < 100, "{subject}");
        let facts = quiet.facts();
        assert_eq!(
            (facts["kind"].as_str(), facts["rows"][0]["metrics"]["deployments"].as_u64()),
            (Some("weekly_digest"), Some(4))
        );
        assert_eq!(facts["text"], text.as_str());
    }

    #[test]
    fn many_environments_stay_within_slacks_block_limit() {
        let mut many = digest();
        many.rows = (0..40).map(|i| row(&format!("env{i}"), None, 1, 0)).collect();
        assert_eq!(many.slack()["blocks"].as_array().expect("blocks").len(), 2 + 2 * 20 + 3);
    }
}
