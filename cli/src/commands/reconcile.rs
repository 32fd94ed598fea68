//! `ferry reconcile`: the deploy function's reconciliation and the verify function's sweep, run now.

use ferry::reconcile::{Finding, Reconciled};
use serde_json::{Value, json};

use crate::render::*;
use crate::{Ctx, Failure, Output, table};

impl Ctx<'_> {
    pub(crate) async fn reconcile(&self, dry_run: bool, output: Output) -> Result<String, Failure> {
        let found = self.deployer(async |deployer, invocation| deployer.reconcile(&invocation, dry_run).await).await?;
        let mut rows: Vec<Value> = found.iter().map(|r| reconciled_json(r, dry_run)).collect();
        if !dry_run {
            // As the verify function's schedule does: rollouts whose ECS events never came.
            for outcome in self.sweep().await? {
                rows.push(json!({"target": "", "repository": "", "tag": "", "digest": "", "pushed_at": "",
                                 "finding": "settled", "detail": format!("{outcome:?}")}));
            }
        }
        Ok(match output {
            Output::Json => pretty(&json!(rows)),
            Output::Table => {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        let image = match s(&r["repository"]) {
                            repository if repository.is_empty() => String::new(),
                            repository => format!("{repository}:{} ({})", s(&r["tag"]), short_digest(&s(&r["digest"]))),
                        };
                        vec![s(&r["target"]), image, s(&r["pushed_at"]), s(&r["finding"]), s(&r["detail"])]
                    })
                    .collect();
                table::render(self.term, &["TARGET", "NEWEST IMAGE", "PUSHED", "FINDING", "DETAIL"], &cells)
            }
        })
    }

    pub(crate) async fn sweep(&self) -> Result<Vec<ferry::verify::VerifyOutcome>, Failure> {
        self.verifier(async |verifier, invocation| verifier.sweep(&invocation).await).await
    }
}

pub(crate) fn reconciled_json(r: &Reconciled, dry_run: bool) -> Value {
    let (finding, detail) = match &r.finding {
        Finding::UpToDate(why) => ("up to date", why.clone()),
        Finding::NeverDeployed => ("not yet deployed by Ferry", "its first push will deploy it".to_string()),
        Finding::Busy(why) => ("busy", why.clone()),
        Finding::Held(why) => ("held by a freeze", why.clone()),
        Finding::Awaiting(why) => ("awaiting approval", why.clone()),
        Finding::Expired => ("approval expired", if dry_run { "would reject it" } else { "rejected" }.to_string()),
        Finding::Released(None) => ("freeze over", if dry_run { "would deploy the held push" } else { "" }.to_string()),
        Finding::Missed(None) => ("missed", if dry_run { "would deploy it" } else { "" }.to_string()),
        Finding::Stranded(None) => ("stranded", if dry_run { "would deploy it again" } else { "" }.to_string()),
        Finding::Missed(Some(outcome)) | Finding::Stranded(Some(outcome)) | Finding::Released(Some(outcome)) => {
            let o = target_outcome_json(outcome);
            (
                match r.finding {
                    Finding::Missed(_) => "missed",
                    Finding::Stranded(_) => "stranded",
                    _ => "freeze over",
                },
                format!("{}: {}", o["outcome"].as_str().unwrap_or_default(), o["detail"].as_str().unwrap_or_default()),
            )
        }
    };
    json!({"target": r.target, "repository": r.repository, "tag": r.tag, "digest": r.digest,
           "pushed_at": r.pushed_at.to_rfc3339(), "finding": finding, "detail": detail})
}
