//! `ferry metrics [--env E] [--service S] [--since 30d]`: the four DORA figures per environment
//! and service, from the ledger (see [`ferry::metrics`] for what counts).
//!
//! Cost: one Query per target per page of [`ferry::lookup::PAGE`] records, newest first, until the window is
//! passed. A deployment record is about 1.5 KB, so a 90-day report of 200 services deploying
//! five times a week reads about 13,000 records, ~19 MB: some 4,800 read units (strongly
//! consistent, 4 KB each) in about 200 Queries. No index is needed.

use chrono::{DateTime, Utc};
use ferry::metrics::{Metrics, parse_window, rows};
use ferry::model::{Deployment, Target};
use serde_json::{Value, json};

use crate::render::pretty;
use crate::{Ctx, Failure, Output, fail, table};

impl Ctx<'_> {
    /// Each target's records pushed since `from`, in the config's order.
    pub(crate) async fn records_since(
        &self,
        env: Option<&str>,
        service: Option<&str>,
        from: DateTime<Utc>,
    ) -> Result<Vec<(Target, Vec<Deployment>)>, Failure> {
        let ledger = self.ledger()?;
        let mut all = Vec::new();
        for t in self.targets(env, service)? {
            let records = ferry::lookup::since(&ledger, &t, from).await.map_err(|e| fail(e.to_string()))?;
            all.push((t, records));
        }
        Ok(all)
    }

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
        let records = self.records_since(env, service, from).await?;
        let rows: Vec<(String, String, Metrics)> = rows(&records, from, until)
            .into_iter()
            .map(|r| (r.environment, r.service.unwrap_or_else(|| "(all)".into()), r.metrics))
            .collect();
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
                            m.lead_time.show(),
                            m.lead_time_from_commit.show(),
                            m.failure_rate(),
                            m.restore(),
                        ]
                    })
                    .collect();
                let headers = [
                    "ENVIRONMENT",
                    "SERVICE",
                    "DEPLOYS",
                    "PER WEEK",
                    "LEAD TIME p50/p90",
                    "FROM COMMIT",
                    "FAILURE RATE",
                    "RESTORE p50/p90",
                ];
                format!(
                    "{}since {}; SKIPPED, SUPERSEDED, HELD and REJECTED pushes never reached ECS and are not counted\n",
                    table::render(self.term, &headers, &cells),
                    from.format("%Y-%m-%d %H:%M UTC")
                )
            }
        })
    }
}
