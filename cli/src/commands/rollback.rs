//! `ferry rollback`: an operator's rollback request, handled by the rollback function's handler.

use std::io::Write;

use chrono::Utc;
use ferry::model::{Deployment, Origin, State, Target};
use ferry::plan::targets_of;
use ferry::ports::Ledger;
use serde_json::json;

use crate::render::*;
use crate::{Ctx, Failure, fail, io};

impl Ctx<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn rollback(
        &self,
        out: &mut dyn Write,
        service: &str,
        env: &str,
        to: Option<&str>,
        region: Option<&str>,
        wait: bool,
        timeout: u64,
    ) -> Result<String, Failure> {
        let targets: Vec<Target> = targets_of(&self.config, env, service)
            .into_iter()
            .filter(|t| region.is_none_or(|r| r == t.region))
            .collect();
        if targets.is_empty() {
            return Err(fail(format!("no service {service:?} deploys to {env:?}{}", in_region(region))));
        }
        let ledger = self.ledger()?;
        if let Some(to) = to {
            let mut verified = false;
            for t in &targets {
                let d = ledger.deployment(t, to).await.map_err(|e| fail(e.to_string()))?;
                verified |= d.is_some_and(|d| d.task_definition.is_some() && d.state == State::Succeeded);
            }
            if !verified {
                return Err(fail(format!("{to} is not a verified deployment of {service} in {env}")));
            }
        }
        let requested_at = Utc::now();
        let by = self.operator().await?;
        let detail = json!({"environment": env, "service": service, "region": region, "to": to, "requested_by": by});
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .source(ferry::event::EVENT_SOURCE)
            .detail_type(ferry::event::ROLLBACK_REQUESTED)
            .detail(detail.to_string())
            .event_bus_name(&self.cli.event_bus)
            .build();
        let put = aws_sdk_eventbridge::Client::new(self.aws)
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| fail(format!("cannot request the rollback: {}", aws_message(&e))))?;
        if put.failed_entry_count() > 0 {
            let why = put.entries().first().and_then(|e| e.error_message()).unwrap_or("rejected").to_string();
            return Err(fail(format!("cannot request the rollback: {why}")));
        }
        let asked = format!("rollback of {service} in {env}{} requested\n", in_region(region));
        if !wait {
            return Ok(asked);
        }
        out.write_all(asked.as_bytes()).map_err(io)?;
        let done = |d: &Deployment| {
            d.origin == Origin::Rollback && d.created_at >= requested_at - chrono::Duration::seconds(5)
        };
        self.follow(out, &ledger, &targets, done, timeout).await
    }
}
