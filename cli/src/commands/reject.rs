//! `ferry reject DEPLOYMENT --reason R`: an operator's rejection of a push awaiting approval
//! (recorded REJECTED with who and why; see [`super::approve`]).

use ferry::approval::Verdict;

use crate::{Ctx, Failure};

impl Ctx<'_> {
    pub(crate) async fn reject(&self, deployment: &str, reason: &str) -> Result<String, Failure> {
        self.decide(deployment, Verdict::Reject, Some(reason)).await
    }
}
