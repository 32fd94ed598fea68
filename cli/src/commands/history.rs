//! `ferry history`: a target's deployments, newest first.

use ferry::ports::Ledger;
use serde_json::Value;

use crate::render::*;
use crate::{Ctx, Failure, Output, fail, table};

impl Ctx<'_> {
    pub(crate) async fn history(
        &self,
        env: Option<&str>,
        service: Option<&str>,
        limit: usize,
        output: Output,
    ) -> Result<String, Failure> {
        let ledger = self.ledger()?;
        let mut all = Vec::new();
        for t in self.targets(env, service)? {
            all.extend(ledger.history(&t, limit).await.map_err(|e| fail(e.to_string()))?);
        }
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        all.truncate(limit);
        Ok(match output {
            Output::Json => pretty(&Value::Array(all.iter().map(deployment_json).collect())),
            Output::Table => {
                let rows = all
                    .iter()
                    .map(|d| {
                        vec![
                            d.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                            d.target.environment.clone(),
                            d.target.service.clone(),
                            d.target.region.clone(),
                            if d.tag.is_empty() { "-".into() } else { d.tag.clone() },
                            short_digest(&d.digest),
                            self.term.state(d.state),
                            d.origin.as_str().to_string(),
                            took(d),
                            d.reason.as_deref().map_or(String::new(), |r| ellipsis(r, 72)),
                        ]
                    })
                    .collect::<Vec<_>>();
                table::render(
                    self.term,
                    &[
                        "STARTED (UTC)",
                        "ENVIRONMENT",
                        "SERVICE",
                        "REGION",
                        "TAG",
                        "DIGEST",
                        "STATE",
                        "BY",
                        "TOOK",
                        "REASON",
                    ],
                    &rows,
                )
            }
        })
    }
}
