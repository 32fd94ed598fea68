//! `ferry status`: what is live where, and the last-known-good and quarantine of each target.

use chrono::Utc;
use ferry::model::{Deployment, Origin, State};
use ferry::ports::{Ecs, Ledger};
use serde_json::{Value, json};

use crate::render::*;
use crate::{Ctx, Failure, Output, fail, table};

impl Ctx<'_> {
    pub(crate) async fn status(
        &self,
        env: Option<&str>,
        service: Option<&str>,
        output: Output,
    ) -> Result<String, Failure> {
        let (ledger, ecs) = (self.ledger()?, self.ecs());
        let mut rows = Vec::new();
        for t in self.targets(env, service)? {
            let head = ledger.head(&t).await.map_err(|e| fail(e.to_string()))?;
            let live = ecs.service(&t).await.map(|s| s.task_definition).unwrap_or_else(|e| format!("unknown ({e})"));
            let active = match &head.active {
                Some((id, _)) => ledger.deployment(&t, id).await.map_err(|e| fail(e.to_string()))?,
                None => None,
            };
            let in_flight = active.filter(|d| d.is_open() && !matches!(d.state, State::Succeeded | State::Failed));
            // The newest verified revision whose digest has not failed here since.
            let good = |d: &Deployment| {
                d.origin == Origin::Ferry
                    && d.state == State::Succeeded
                    && d.task_definition.is_some()
                    && !head.quarantine.contains(&d.digest)
            };
            let last_known_good =
                ferry::lookup::newest(&ledger, &t, None, good).await.map_err(|e| fail(e.to_string()))?;
            rows.push(json!({
                "environment": t.environment, "service": t.service, "region": t.region, "cluster": t.cluster,
                "account": t.account, "live_task_definition": live,
                "last_known_good": last_known_good.map(|d| json!({"task_definition": d.task_definition, "digest": d.digest})),
                "in_flight": in_flight.map(|d| json!({"deployment": d.id, "tag": d.tag, "digest": d.digest, "state": d.state.as_str()})),
                "quarantined": head.quarantine,
                "locked_by": head.lock.as_ref().filter(|l| l.until > Utc::now()).map(|l| l.deployment.clone()),
            }));
        }
        Ok(match output {
            Output::Json => pretty(&json!(rows)),
            Output::Table => {
                let cells = rows
                    .iter()
                    .map(|r| {
                        let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
                        let lkg = &r["last_known_good"];
                        let flight = &r["in_flight"];
                        vec![
                            s(&r["environment"]),
                            s(&r["service"]),
                            s(&r["region"]),
                            short_td(&s(&r["live_task_definition"])),
                            if lkg.is_null() {
                                "-".into()
                            } else {
                                format!(
                                    "{} {}",
                                    short_td(&s(&lkg["task_definition"])),
                                    short_digest(&s(&lkg["digest"]))
                                )
                            },
                            if flight.is_null() {
                                "-".into()
                            } else {
                                let state = State::parse(&s(&flight["state"])).unwrap_or(State::Pending);
                                format!("{} {}", s(&flight["tag"]), self.term.state(state))
                            },
                            list(r["quarantined"].as_array().map(|q| q.iter().map(|d| short_digest(&s(d))).collect())),
                        ]
                    })
                    .collect::<Vec<_>>();
                table::render(
                    self.term,
                    &["ENVIRONMENT", "SERVICE", "REGION", "LIVE", "LAST KNOWN GOOD", "IN FLIGHT", "QUARANTINED"],
                    &cells,
                )
            }
        })
    }
}
