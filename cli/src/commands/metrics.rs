//! `ferry metrics [--env E] [--service S] [--since 30d]`: the four DORA figures per environment
//! and service, from the ledger (see [`ferry::metrics`] for what counts).
//!
//! Cost: one Query per target per page of [`PAGE`] records, newest first, until the window is
//! passed. A deployment record is about 1.5 KB, so a 90-day report of 200 services deploying
//! five times a week reads about 13,000 records, ~19 MB: some 4,800 read units (strongly
//! consistent, 4 KB each) in about 200 Queries. No index is needed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ferry::metrics::{Metrics, Spread, metrics, parse_window};
use ferry::model::{Deployment, Target};
use ferry::ports::Ledger;
use serde_json::{Value, json};

use crate::render::pretty;
use crate::{Ctx, Failure, Output, fail, table};

/// Records per Query page.
const PAGE: usize = 100;

impl Ctx<'_> {
    pub(crate) async fn metrics(
        &self,
        env: Option<&str>,
        service: Option<&str>,
        since: &str,
        output: Output,
    ) -> Result<String, Failure> {
        let window = parse_window(since).map_err(fail)?;
        let until = Utc::now();
        let from = until - window;
        let ledger = self.ledger()?;
        let mut groups: BTreeMap<(String, String), Vec<Deployment>> = BTreeMap::new();
        let mut environments: BTreeMap<String, Vec<Deployment>> = BTreeMap::new();
        for t in self.targets(env, service)? {
            let records = history_since(&ledger, &t, from).await?;
            environments.entry(t.environment.clone()).or_default().extend(records.iter().cloned());
            groups.entry((t.environment.clone(), t.service.clone())).or_default().extend(records);
        }
        let mut rows: Vec<(String, String, Metrics)> = groups
            .into_iter()
            .map(|((env, service), records)| (env, service, metrics(&records, from, until)))
            .collect();
        for (env, records) in environments {
            rows.push((env, "(all)".into(), metrics(&records, from, until)));
        }
        rows.sort_by(|a, b| {
            (a.0.as_str(), a.1 == "(all)", a.1.as_str()).cmp(&(b.0.as_str(), b.1 == "(all)", b.1.as_str()))
        });
        Ok(match output {
            Output::Json => pretty(&Value::Array(
                rows.iter()
                    .map(|(env, service, m)| json!({"environment": env, "service": service, "since": from, "metrics": m}))
                    .collect(),
            )),
            Output::Table => {
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|(env, service, m)| {
                        vec![
                            env.clone(),
                            service.clone(),
                            m.deployments.to_string(),
                            format!("{:.1}", m.per_week),
                            spread(&m.lead_time),
                            m.change_failure_rate
                                .map_or("-".into(), |r| format!("{:.0}% ({}/{})", r * 100.0, m.failed, m.reached_ecs)),
                            spread(&m.time_to_restore)
                                + &if m.unrestored > 0 { format!(" +{} open", m.unrestored) } else { String::new() },
                        ]
                    })
                    .collect();
                let headers =
                    ["ENVIRONMENT", "SERVICE", "DEPLOYS", "PER WEEK", "LEAD TIME p50/p90", "FAILURE RATE", "RESTORE p50/p90"];
                format!(
                    "{}since {}; SKIPPED, SUPERSEDED, HELD and REJECTED pushes never reached ECS and are not counted\n",
                    table::render(self.term, &headers, &cells),
                    from.format("%Y-%m-%d %H:%M UTC")
                )
            }
        })
    }
}

/// `target`'s records pushed since `from` (and the page that passes it), newest first.
async fn history_since(ledger: &impl Ledger, target: &Target, from: DateTime<Utc>) -> Result<Vec<Deployment>, Failure> {
    let mut all = ledger.history(target, PAGE).await.map_err(|e| fail(e.to_string()))?;
    // Ids sort by push time: once a page reaches a push before the window, older pages are outside it.
    while all.len() % PAGE == 0 && !all.is_empty() && all.last().is_some_and(|d| d.pushed_at >= from) {
        let before = all.last().map(|d| d.id.clone()).unwrap_or_default();
        let page = ledger.history_before(target, &before, PAGE).await.map_err(|e| fail(e.to_string()))?;
        if page.is_empty() {
            break;
        }
        all.extend(page);
    }
    Ok(all)
}

/// `2h10m / 5h00m`, or `-` without samples.
fn spread(s: &Spread) -> String {
    let human = |secs: i64| match secs {
        s if s >= 86_400 => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}m{:02}s", s / 60, s % 60),
    };
    match (s.median_seconds, s.p90_seconds) {
        (Some(m), Some(p)) => format!("{} / {}", human(m), human(p)),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        let s = Spread { samples: 3, median_seconds: Some(7_800), p90_seconds: Some(90_000) };
        assert_eq!(spread(&s), "2h10m / 1d01h");
        assert_eq!(spread(&Spread { samples: 1, median_seconds: Some(95), p90_seconds: Some(95) }), "1m35s / 1m35s");
        assert_eq!(spread(&Spread::default()), "-");
    }
}
