//! `ferry approve DEPLOYMENT`: an operator's approval of a push awaiting approval, recorded as
//! the approve function records a Slack click (the operator's AWS permissions stand in for the
//! approvers list) and announced for the deploy function to carry out.

use ferry::adapters::eventbridge::EventBridgeBus;
use ferry::approval::Verdict;
use ferry::approve::{Approver, Decided};
use ferry::plan::all_targets;
use ferry::ports::{Ledger, SystemClock};

use crate::{Ctx, Failure, fail};

impl Ctx<'_> {
    pub(crate) async fn approve(&self, deployment: &str) -> Result<String, Failure> {
        self.decide(deployment, Verdict::Approve, None).await
    }

    /// Records `verdict` on `deployment`, found on whichever target holds it.
    pub(crate) async fn decide(&self, id: &str, verdict: Verdict, reason: Option<&str>) -> Result<String, Failure> {
        let ledger = self.ledger()?;
        let mut found = None;
        for target in all_targets(&self.config) {
            if ledger.deployment(&target, id).await.map_err(|e| fail(e.to_string()))?.is_some() {
                found = Some(target);
                break;
            }
        }
        let target = found.ok_or_else(|| fail(format!("no deployment {id} on any target of the config")))?;
        let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(self.aws), &self.cli.event_bus);
        let approver =
            Approver { config: &self.config, ledger: &ledger, bus: &bus, clock: &SystemClock, signing_secret: &[] };
        let by = self.operator().await?;
        let decided =
            approver.decide(&target.key(), id, &by, verdict, false, reason).await.map_err(|e| fail(e.to_string()))?;
        Ok(match decided {
            Decided::Approved => format!("approved {id} on {target}: the deploy function deploys it now\n"),
            Decided::Counted { approvers, required } => {
                format!(
                    "approval noted ({} of {required}: {}); {id} waits for more\n",
                    approvers.len(),
                    approvers.join(", ")
                )
            }
            Decided::Rejected => format!("rejected {id} on {target}\n"),
            Decided::Already(state) => return Err(fail(format!("{id} is not awaiting approval: it is {state}"))),
        })
    }
}
