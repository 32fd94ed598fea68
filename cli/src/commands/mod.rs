//! One module per command; each adds its command to [`crate::Ctx`].

pub(crate) mod approve;
pub(crate) mod check;
pub(crate) mod deploy;
pub(crate) mod doctor;
pub(crate) mod history;
pub(crate) mod init;
pub(crate) mod metrics;
pub(crate) mod plan;
pub(crate) mod promote;
pub(crate) mod reconcile;
pub(crate) mod redrive;
pub(crate) mod reject;
pub(crate) mod release;
pub(crate) mod report;
pub(crate) mod rollback;
pub(crate) mod status;

impl crate::Ctx<'_> {
    /// Who runs this command, as records and messages name them: the AWS principal of the
    /// credentials (GetCallerIdentity needs no permission), never a name the shell could claim,
    /// so one operator cannot count as two approvers.
    pub(crate) async fn operator(&self) -> Result<String, crate::Failure> {
        let me = self.caller().await?;
        let arn = me.arn().ok_or_else(|| crate::fail("STS named no caller"))?;
        Ok(format!("{arn} (ferry CLI)"))
    }

    /// Who these credentials are (their account, their ARN): STS GetCallerIdentity.
    pub(crate) async fn caller(
        &self,
    ) -> Result<aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityOutput, crate::Failure> {
        aws_sdk_sts::Client::new(self.aws).get_caller_identity().send().await.map_err(|e| {
            crate::fail(format!(
                "cannot tell who is running ferry (STS GetCallerIdentity): {}",
                crate::render::aws_message(&e)
            ))
        })
    }
}
