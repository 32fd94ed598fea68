//! The weekly digest: a week of the ledger, per environment, to Slack and SNS, on the digest's
//! own schedule (off unless the stack's `WeeklyDigest` is on).

use tracing::{info, warn};

use super::{Verifier, VerifyOutcome};
use crate::digest::Digest;
use crate::invocation::Retryable;
use crate::ports::{Alarms, Clock, Ecs, EventBus, HealthProbe, Ledger, LoadBalancers, Notifier};

impl<E: Ecs, L: Ledger, N: Notifier, B: EventBus, H: HealthProbe, C: Clock, LB: LoadBalancers, A: Alarms>
    Verifier<'_, E, L, N, B, H, C, LB, A>
{
    /// Reads every target's week (a read failure is retried: nothing was sent yet) and posts
    /// the digest. A failed post is logged, not retried: SNS may have taken it already. The week
    /// ends a day before the run, so its pushes have their verdicts (an alarm's window included)
    /// and each is counted in exactly one digest.
    pub async fn digest(&self) -> Result<VerifyOutcome, Retryable> {
        let until = self.clock.now() - chrono::Duration::days(1);
        let since = until - chrono::Duration::weeks(1);
        let mut records = Vec::new();
        for target in crate::plan::all_targets(self.config) {
            let week = crate::lookup::since(self.ledger, &target, since).await?;
            records.push((target, week));
        }
        let digest = Digest { since, until, rows: crate::metrics::rows(&records, since, until) };
        let environments = digest.rows.iter().filter(|r| r.service.is_none()).count();
        let error = match self.notifier.digest(&digest).await {
            Ok(()) => {
                info!(environments, "weekly digest sent");
                None
            }
            Err(e) => {
                warn!(error = %e, "weekly digest not sent");
                Some(e.0)
            }
        };
        Ok(VerifyOutcome::Digest { environments, error })
    }
}
