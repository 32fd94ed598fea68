//! `ferry redrive`: each dead-lettered event handed to its own function's handler again.

use std::io::Write;

use chrono::Utc;
use ferry::adapters::notifiers::Notifiers;
use ferry::deploy::Invocation;
use ferry::ports::SystemClock;
use ferry::rollback::{RollbackSettings, Rollbacker};
use serde_json::{Value, json};

use crate::render::*;
use crate::{Ctx, Failure, Output, fail, io, table};

impl Ctx<'_> {
    pub(crate) async fn redrive(&self, out: &mut dyn Write, dry_run: bool, output: Output) -> Result<String, Failure> {
        use crate::dead_letters::Function;
        let queues = [
            (Function::Deploy, &self.cli.deploy_dlq),
            (Function::Verify, &self.cli.verify_dlq),
            (Function::Rollback, &self.cli.rollback_dlq),
        ];
        let queues: Vec<(Function, &str)> = queues.iter().filter_map(|(f, q)| Some((*f, q.as_deref()?))).collect();
        if queues.is_empty() {
            return Err(fail(
                "no dead-letter queue: pass --deploy-dlq, --verify-dlq or --rollback-dlq (the stack's \
                 *DeadLetterQueueUrl outputs)",
            ));
        }
        let (mut rows, mut failed) = (Vec::new(), 0);
        for (function, queue) in queues {
            for letter in crate::dead_letters::receive(self.aws, function, queue).await.map_err(fail)? {
                if dry_run {
                    let shown = crate::dead_letters::hide(self.aws, queue, &letter, 0).await;
                    rows.push(crate::dead_letters::row(
                        &letter,
                        "waiting",
                        shown.err().as_deref().unwrap_or("would be handled again"),
                    ));
                    continue;
                }
                // Hidden for as long as its replay may take, from now.
                if let Err(why) =
                    crate::dead_letters::hide(self.aws, queue, &letter, crate::dead_letters::HIDDEN_SECONDS).await
                {
                    failed += 1;
                    rows.push(crate::dead_letters::row(&letter, "not replayed", &why));
                    continue;
                }
                match self.replay(&letter).await {
                    Ok(outcome) => {
                        let deleted = crate::dead_letters::delete(self.aws, queue, &letter).await;
                        let detail = match deleted {
                            Ok(()) => outcome,
                            Err(why) => format!("{outcome}; but it stays in its queue: {why}"),
                        };
                        rows.push(crate::dead_letters::row(&letter, "handled", &detail));
                    }
                    Err(why) => {
                        failed += 1;
                        let shown = crate::dead_letters::hide(self.aws, queue, &letter, 0).await;
                        let why = match shown {
                            Ok(()) => why,
                            Err(e) => format!("{why}; {e}"),
                        };
                        rows.push(crate::dead_letters::row(&letter, "failed again", &why));
                    }
                }
            }
        }
        let text = match output {
            Output::Json => pretty(&json!(rows)),
            Output::Table if rows.is_empty() => "no failed events waiting\n".to_string(),
            Output::Table => {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        let what = format!("{} {}", s(&r["detail_type"]), s(&r["event"]));
                        vec![
                            s(&r["function"]),
                            what,
                            s(&r["failed_with"]),
                            s(&r["result"]),
                            ellipsis(&s(&r["detail"]), 120),
                        ]
                    })
                    .collect();
                table::render(self.term, &["FUNCTION", "EVENT", "FAILED WITH", "RESULT", "DETAIL"], &cells)
            }
        };
        if failed > 0 {
            out.write_all(text.as_bytes()).map_err(io)?;
            return Err(fail(format!("{failed} event(s) failed again and stay in their queues")));
        }
        Ok(text)
    }

    /// One failed event, handled by its function's own handler, as Lambda would.
    pub(crate) async fn replay(&self, letter: &crate::dead_letters::DeadLetter) -> Result<String, String> {
        let event = letter.event.clone();
        let outcome = match letter.function {
            crate::dead_letters::Function::Deploy => {
                let deployed = self.deployer(async |deployer, invocation| deployer.handle(event, &invocation).await);
                deployed.await.map(|o| serde_json::json!(o).to_string()).map_err(|f| f.message)?
            }
            crate::dead_letters::Function::Verify => {
                let verified = self.verifier(async |verifier, invocation| verifier.handle(event, &invocation).await);
                verified.await.map(|o| serde_json::json!(o).to_string()).map_err(|f| f.message)?
            }
            crate::dead_letters::Function::Rollback => {
                let attempt = format!("ferry-redrive-{}-{}", std::process::id(), Utc::now().timestamp_millis());
                let invocation = Invocation { attempt, deadline: None };
                let (ecs, ledger) = (self.ecs(), self.ledger().map_err(|f| f.message)?);
                let notifier =
                    Notifiers::new(self.aws, self.cli.topic_arn.as_deref(), self.cli.slack_secret.as_deref());
                let handler = Rollbacker {
                    config: &self.config,
                    ecs: &ecs,
                    ledger: &ledger,
                    notifier: &notifier,
                    clock: &SystemClock,
                    settings: RollbackSettings::default(),
                };
                handler
                    .handle(event, &invocation)
                    .await
                    .map(|o| serde_json::json!(o).to_string())
                    .map_err(|e| e.to_string())?
            }
        };
        Ok(outcome)
    }
}
