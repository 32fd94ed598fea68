//! `ferry report --html FILE [--env E] [--service S] [--since 30d]`: one self-contained HTML page
//! with what is live where, a timeline of each service's deployments coloured by outcome, and the
//! four delivery figures per environment as small weekly charts.
//!
//! The page fetches nothing when opened: its styles are inline, its charts inline SVG, and its
//! Content-Security-Policy forbids every fetch. Reading costs what `ferry metrics` reads, plus one
//! DescribeServices per target and the history pages back to the record of what is live (a
//! revision Ferry never deployed reads the target's whole history).

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use ferry::metrics::{Metrics, Spread, human as duration, parse_window, rows, weekly};
use ferry::model::{Deployment, Origin, State, Target};
use ferry::ports::Ecs;

use crate::render::{short_digest, short_td};
use crate::{Ctx, Failure, fail};

/// What one target runs now: the revision ECS is set to, and the record that deployed it.
pub(crate) struct Live {
    pub target: Target,
    /// The task definition ECS is set to, or why it could not be read.
    pub task_definition: Result<String, String>,
    pub record: Option<Deployment>,
}

/// Everything the page shows, read before it is drawn.
pub(crate) struct Report {
    pub generated: DateTime<Utc>,
    pub since: DateTime<Utc>,
    pub live: Vec<Live>,
    /// Each target's records pushed in the window, in the config's order.
    pub records: Vec<(Target, Vec<Deployment>)>,
}

impl Ctx<'_> {
    pub(crate) async fn report(
        &self,
        file: &Path,
        env: Option<&str>,
        service: Option<&str>,
        since: &str,
    ) -> Result<String, Failure> {
        let window = parse_window(since).map_err(fail)?;
        let generated = Utc::now();
        let records = self.records_since(env, service, generated - window).await?;
        let (ledger, ecs) = (self.ledger()?, self.ecs());
        let mut live = Vec::new();
        for (target, _) in &records {
            let task_definition = ecs.service(target).await.map(|s| s.task_definition).map_err(|e| e.to_string());
            let record = match &task_definition {
                Ok(arn) => {
                    let deployed_it = |d: &Deployment| d.task_definition.as_deref() == Some(arn.as_str());
                    ferry::lookup::newest(&ledger, target, None, deployed_it).await.map_err(|e| fail(e.to_string()))?
                }
                Err(_) => None,
            };
            live.push(Live { target: target.clone(), task_definition, record });
        }
        let report = Report { generated, since: generated - window, live, records };
        let pushes: usize = report.records.iter().map(|(_, r)| r.len()).sum();
        std::fs::write(file, render(&report)).map_err(|e| fail(format!("cannot write {}: {e}", file.display())))?;
        Ok(format!("wrote {} ({} targets, {pushes} records since {})\n", file.display(), report.live.len(), since))
    }
}

/// How a state is coloured: `good`, `open` (still moving), `bad`, or `none` (never reached ECS).
fn outcome(state: State) -> &'static str {
    match state {
        State::Succeeded => "good",
        State::Pending | State::InProgress | State::Verifying | State::Held | State::AwaitingApproval => "open",
        State::Failed | State::RollingBack | State::RolledBack | State::RollbackFailed => "bad",
        State::Superseded | State::Skipped | State::Rejected => "none",
    }
}

/// Text made safe for HTML element content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px 32px;color:#1d2330;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}h3{font-size:15px;margin:16px 0 6px}
.sub{color:#5b6475;margin:0 0 12px}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0001}
th,td{border:1px solid #dde1e8;padding:6px 10px;text-align:left;vertical-align:top}
th{background:#f0f2f6;font-weight:600}
code{font:12px ui-monospace,Menlo,monospace}
.badge{display:inline-block;border-radius:9px;padding:0 7px;font-size:11px;font-weight:600;color:#fff}
.good{background:#1f9d55}.open{background:#d48806}.bad{background:#d1383d}.none{background:#8a93a3}
.cell small{color:#5b6475}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.chart{background:#fff;box-shadow:0 1px 2px #0001;padding:8px 10px;width:230px}
.chart .v{font-size:18px;font-weight:600}.chart .l{color:#5b6475;font-size:12px}
svg text{font:10px system-ui,sans-serif;fill:#5b6475}
.legend span{margin-right:12px}
.mark.good{fill:#1f9d55}.mark.open{fill:#d48806}.mark.bad{fill:#d1383d}.mark.none{fill:#8a93a3}
";

/// The whole page.
pub(crate) fn render(r: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>Ferry report</title><style>{STYLE}</style></head><body>\
         <h1>Ferry: what is live, and how delivery goes</h1>\
         <p class=\"sub\">Generated {}; deployments pushed since {}.</p>",
        r.generated.format("%Y-%m-%d %H:%M UTC"),
        r.since.format("%Y-%m-%d %H:%M UTC"),
    );
    live(&mut h, r);
    figures(&mut h, r);
    timelines(&mut h, r);
    h.push_str(
        "<p class=\"sub\">SKIPPED, SUPERSEDED, HELD and REJECTED pushes never reached ECS: they are drawn grey \
         and left out of the figures. Made by <code>ferry report</code>.</p></body></html>\n",
    );
    h
}

/// Environments × regions × services: what runs, since when, and its verdict.
fn live(h: &mut String, r: &Report) {
    h.push_str("<h2>Live now</h2>");
    for env in first_seen(r.live.iter().map(|l| l.target.environment.as_str())) {
        let here: Vec<&Live> = r.live.iter().filter(|l| l.target.environment == env).collect();
        let regions = first_seen(here.iter().map(|l| l.target.region.as_str()));
        let services = first_seen(here.iter().map(|l| l.target.service.as_str()));
        let _ = write!(h, "<h3>{}</h3><table><tr><th>service</th>", esc(env));
        for region in &regions {
            let _ = write!(h, "<th>{}</th>", esc(region));
        }
        h.push_str("</tr>");
        for service in services {
            let _ = write!(h, "<tr><td><b>{}</b></td>", esc(service));
            for region in &regions {
                h.push_str("<td class=\"cell\">");
                for l in here.iter().filter(|l| l.target.service == service && l.target.region == *region) {
                    live_cell(h, l, r.generated);
                }
                h.push_str("</td>");
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
    }
}

/// Each item once, in the order first met (the config's).
fn first_seen<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

fn live_cell(h: &mut String, l: &Live, now: DateTime<Utc>) {
    let account = l.target.account.as_deref().map(|a| format!(" <small>in {}</small>", esc(a))).unwrap_or_default();
    match (&l.task_definition, &l.record) {
        (Err(why), _) => {
            let _ = write!(h, "<span class=\"badge none\">unknown</span> <small>{}</small>{account}", esc(why));
        }
        (Ok(td), None) => {
            let _ = write!(
                h,
                "<code>{}</code> <span class=\"badge none\">not from Ferry</span>{account}",
                esc(&short_td(td))
            );
        }
        (Ok(td), Some(d)) => {
            let since = d.live_at.unwrap_or(d.updated_at);
            let what = match d.origin {
                Origin::Rollback => "rolled back to",
                Origin::EcsRollback => "rolled back by ECS to",
                Origin::External => "outside Ferry, tag",
                Origin::Ferry => "tag",
            };
            let commit = d
                .image_labels
                .revision
                .as_deref()
                .map(|r| {
                    format!(" <small>commit <code>{}</code></small>", esc(&r.chars().take(12).collect::<String>()))
                })
                .unwrap_or_default();
            let _ = write!(
                h,
                "{what} <b>{}</b> <code>{}</code>{commit}<br><code>{}</code> <span class=\"badge {}\">{}</span> \
                 <small>{} ago</small>{account}",
                esc(&d.tag),
                esc(&short_digest(&d.digest)),
                esc(&short_td(td)),
                outcome(d.state),
                d.state.as_str(),
                duration((now - since).num_seconds().max(0)),
            );
        }
    }
}

/// Per environment: the four figures over the window, each with its weekly bars.
fn figures(h: &mut String, r: &Report) {
    let _ = write!(h, "<h2>Delivery since {}</h2>", r.since.format("%Y-%m-%d"));
    for row in rows(&r.records, r.since, r.generated).into_iter().filter(|row| row.service.is_none()) {
        let records: Vec<Deployment> = r
            .records
            .iter()
            .filter(|(t, _)| t.environment == row.environment)
            .flat_map(|(_, records)| records.iter().cloned())
            .collect();
        let weeks = weekly(&records, r.since, r.generated);
        let m = &row.metrics;
        let _ = write!(h, "<h3>{}</h3><div class=\"charts\">", esc(&row.environment));
        // Per week, not counted: the window's first week may be a short one.
        let rate = |m: &Metrics| Some(m.per_week);
        chart(h, "Deployments", &format!("{} ({:.1}/week)", m.deployments, m.per_week), &weeks, rate, |v| {
            format!("{v:.1}/week")
        });
        let p50 = |s: &Spread| s.median_seconds.map(|v| v as f64);
        let from_commit = match m.lead_time_from_commit.samples {
            0 => String::new(),
            _ => format!("\nfrom commit {}", m.lead_time_from_commit.show()),
        };
        chart(
            h,
            "Lead time, push to live (p50 / p90)",
            &(m.lead_time.show() + &from_commit),
            &weeks,
            |m| p50(&m.lead_time),
            |v| duration(v as i64),
        );
        chart(
            h,
            "Change failure rate",
            &m.failure_rate(),
            &weeks,
            |m| m.change_failure_rate.map(|c| c * 100.0),
            |v| format!("{v:.0}%"),
        );
        chart(
            h,
            "Time to restore (p50 / p90)",
            &m.restore(),
            &weeks,
            |m| p50(&m.time_to_restore),
            |v| duration(v as i64),
        );
        h.push_str("</div>");
    }
}

/// One figure: its value over the window (a second line, after `\n`, in small print), and a bar
/// per week (`value` of that week's figures).
fn chart(
    h: &mut String,
    label: &str,
    headline: &str,
    weeks: &[(DateTime<Utc>, Metrics)],
    value: impl Fn(&Metrics) -> Option<f64>,
    show: impl Fn(f64) -> String,
) {
    let (width, height, base) = (210.0, 70.0, 58.0);
    let values: Vec<Option<f64>> = weeks.iter().map(|(_, m)| value(m)).collect();
    let max = values.iter().flatten().copied().fold(0.0_f64, f64::max);
    let slot = width / values.len().max(1) as f64;
    let (headline, note) = headline.split_once('\n').unwrap_or((headline, ""));
    let _ = write!(
        h,
        "<div class=\"chart\" data-figure=\"{}\"><div class=\"l\">{}</div><div class=\"v\">{}</div>\
         <div class=\"l\">{}</div>\
         <svg width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{} per week\">\
         <line x1=\"0\" y1=\"{base}\" x2=\"{width}\" y2=\"{base}\" stroke=\"#c9ced8\"/>",
        esc(label),
        esc(label),
        esc(headline),
        esc(note),
        esc(label),
    );
    for (i, ((start, _), v)) in weeks.iter().zip(&values).enumerate() {
        let x = i as f64 * slot + slot * 0.15;
        let tip = format!("week from {}: {}", start.format("%Y-%m-%d %H:%M UTC"), v.map_or("-".into(), &show));
        let bar = match v {
            Some(v) if max > 0.0 => (v / max * (base - 4.0)).max(1.0),
            Some(_) => 1.0,
            None => 0.0,
        };
        let _ = write!(
            h,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar:.1}\" fill=\"#3b6fd8\"><title>{}</title></rect>",
            base - bar,
            slot * 0.7,
            esc(&tip)
        );
    }
    if let (Some((first, _)), true) = (weeks.first(), weeks.len() > 1) {
        let _ = write!(h, "<text x=\"0\" y=\"{}\">{}</text>", height - 1.0, first.format("%b %d"));
        let _ = write!(h, "<text x=\"{width}\" y=\"{}\" text-anchor=\"end\">this week</text>", height - 1.0);
    }
    h.push_str("</svg></div>");
}

/// Per environment and service: every push in the window on one line, coloured by outcome.
fn timelines(h: &mut String, r: &Report) {
    h.push_str(
        "<h2>Deployments</h2><p class=\"legend\"><span class=\"badge good\">live and verified</span>\
         <span class=\"badge open\">in flight or waiting</span><span class=\"badge bad\">failed</span>\
         <span class=\"badge none\">never reached ECS</span> ◆ a rollback</p><table>",
    );
    let (width, span) = (760.0, (r.generated - r.since).num_seconds().max(1) as f64);
    let mut groups: Vec<((&str, &str), Vec<&Deployment>)> = Vec::new();
    for (t, records) in &r.records {
        let key = (t.environment.as_str(), t.service.as_str());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, all)) => all.extend(records),
            None => groups.push((key, records.iter().collect())),
        }
    }
    for ((env, service), mut records) in groups {
        // One push in several regions is drawn once per region at one x: the worst on top.
        let rank = |d: &Deployment| ["none", "good", "open", "bad"].iter().position(|o| *o == outcome(d.state));
        records.sort_by(|a, b| a.pushed_at.cmp(&b.pushed_at).then(rank(a).cmp(&rank(b))).then(a.id.cmp(&b.id)));
        let _ = write!(
            h,
            "<tr><td><b>{}</b><br><small>{}</small></td><td><svg width=\"{width}\" height=\"28\" role=\"img\" \
             aria-label=\"deployments of {} in {}\"><line x1=\"0\" y1=\"14\" x2=\"{width}\" y2=\"14\" stroke=\"#dde1e8\"/>",
            esc(service),
            esc(env),
            esc(service),
            esc(env)
        );
        for d in records.into_iter().filter(|d| d.pushed_at >= r.since) {
            let x = 6.0 + (d.pushed_at - r.since).num_seconds() as f64 / span * (width - 12.0);
            let tip = format!(
                "{} UTC {} {} in {}: {}{}",
                d.pushed_at.format("%Y-%m-%d %H:%M"),
                d.tag,
                short_digest(&d.digest),
                d.target.region,
                d.state.as_str(),
                d.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            );
            let class = outcome(d.state);
            let _ = match d.origin {
                Origin::Rollback => write!(
                    h,
                    "<path class=\"mark {class}\" d=\"M{x:.1} 7 l6 7 l-6 7 l-6 -7z\"><title>rollback: {}</title></path>",
                    esc(&tip)
                ),
                _ => write!(
                    h,
                    "<circle class=\"mark {class}\" cx=\"{x:.1}\" cy=\"14\" r=\"6\"><title>{}</title></circle>",
                    esc(&tip)
                ),
            };
        }
        h.push_str("</svg></td></tr>");
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use ferry::model::Push;

    fn target(environment: &str, region: &str) -> Target {
        Target {
            environment: environment.into(),
            account: None,
            region: region.into(),
            cluster: "shop".into(),
            service: format!("shop-{environment}-api"),
            role_arn: None,
        }
    }

    fn record(target: &Target, tag: &str, hours: i64, state: State) -> Deployment {
        let at = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).single().expect("time") + chrono::Duration::hours(hours);
        let push = Push {
            event_id: tag.into(),
            registry_account: "123456789012".into(),
            registry_region: "eu-west-1".into(),
            repository: "shop/api".into(),
            tag: tag.into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            pushed_at: at,
        };
        let mut d = Deployment::new(&push, target.clone(), at);
        (d.state, d.ecs_deployment_id) = (state, Some(format!("ecs-svc/{tag}")));
        d
    }

    #[test]
    fn the_page_escapes_what_the_ledger_holds_and_fetches_nothing() {
        let staging = target("staging", "eu-west-1");
        let mut bad = record(&staging, "staging-2", 30, State::RolledBack);
        bad.reason = Some("<img src=x onerror=alert(1)> & \"quotes\"".into());
        let good = record(&staging, "staging-1", 10, State::Succeeded);
        let report = Report {
            generated: good.pushed_at + chrono::Duration::days(3),
            since: good.pushed_at - chrono::Duration::days(10),
            live: vec![Live {
                target: staging.clone(),
                task_definition: Err("AccessDenied <ecs>".into()),
                record: None,
            }],
            records: vec![(staging, vec![bad, good])],
        };
        let page = render(&report);
        assert!(!page.contains("<img") && !page.contains("<ecs>"), "{page}");
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt; &amp; &quot;quotes&quot;"), "{page}");
        assert!(page.contains("<span class=\"badge none\">unknown</span> <small>AccessDenied &lt;ecs&gt;</small>"));
        assert_eq!(page.matches("class=\"mark bad\"").count(), 1);
        assert_eq!(page.matches("class=\"mark good\"").count(), 1);
        assert!(page.contains("50% (1/2)"), "one of the two pushes that reached ECS failed");
        for fetch in ["src=\"", "href=", "url(", "@import", "<script"] {
            assert!(!page.contains(fetch), "{fetch}");
        }
    }

    #[test]
    fn what_is_live_is_shown_by_environment_region_and_service() {
        let (one, two) = (target("production", "eu-west-1"), target("production", "us-east-1"));
        let mut back = record(&one, "prod-1", 1, State::Succeeded);
        back.origin = Origin::Rollback;
        back.live_at = Some(back.pushed_at + chrono::Duration::hours(1));
        let report = Report {
            generated: back.pushed_at + chrono::Duration::hours(27),
            since: back.pushed_at - chrono::Duration::days(1),
            live: vec![
                Live {
                    target: one.clone(),
                    task_definition: Ok("arn:aws:ecs:eu-west-1:1:task-definition/api:7".into()),
                    record: Some(back),
                },
                Live {
                    target: two.clone(),
                    task_definition: Ok("arn:aws:ecs:us-east-1:1:task-definition/api:3".into()),
                    record: None,
                },
            ],
            records: vec![(one, vec![]), (two, vec![])],
        };
        let page = render(&report);
        assert!(page.contains("<th>eu-west-1</th><th>us-east-1</th>"), "{page}");
        assert!(page.contains("rolled back to <b>prod-1</b>") && page.contains("1d02h ago"), "{page}");
        assert!(page.contains("<code>api:3</code> <span class=\"badge none\">not from Ferry</span>"), "{page}");
    }
}
