//! `ferry deploy REPO:TAG`: a push handed to the deploy function's handler, as if its event came.

use chrono::Utc;
use ferry::deploy::DeployOutcome;
use serde_json::{Value, json};

use crate::render::*;
use crate::{Ctx, Failure, Output, fail, table};

impl Ctx<'_> {
    pub(crate) async fn deploy(
        &self,
        image: &str,
        freeze_override: Option<ferry::deploy::FreezeOverride>,
        output: Output,
    ) -> Result<String, Failure> {
        let (repository, tag) =
            image.rsplit_once(':').ok_or_else(|| fail(format!("{image:?} is not REPOSITORY:TAG")))?;
        let found = self.image_of(repository, tag, None).await?;
        let region = self.aws.region().map(|r| r.to_string()).unwrap_or_default();
        // The push event ECR sends, at the image's own push time (so that the stale check
        // orders it among other pushes); its id is the image's, so replaying it twice is one push.
        let event = json!({
            "version": "0", "id": ferry::reconcile::replay_event_id(&found.digest, tag),
            "detail-type": "ECR Image Action", "source": "aws.ecr", "account": found.account,
            "time": found.pushed_at.unwrap_or_else(Utc::now).format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "region": region, "resources": [],
            "detail": {"result": "SUCCESS", "repository-name": repository, "image-digest": found.digest,
                       "action-type": "PUSH", "image-tag": tag},
        });
        let rows: Vec<Value> = match self.handle(event, freeze_override.as_ref()).await? {
            DeployOutcome::Deployed(targets) => targets.iter().map(target_outcome_json).collect(),
            DeployOutcome::Unplanned(plan) => return Ok(nothing(output, format!("{plan:?}"))),
            DeployOutcome::Ignored(why) | DeployOutcome::Rejected(why) => return Ok(nothing(output, why)),
            DeployOutcome::Reconciled(_) => return Err(fail("the deploy handler reconciled instead of deploying")),
        };
        Ok(match output {
            Output::Json => pretty(&json!(rows)),
            Output::Table => {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                let cells: Vec<Vec<String>> =
                    rows.iter().map(|r| vec![s(&r["target"]), s(&r["outcome"]), s(&r["detail"])]).collect();
                table::render(self.term, &["TARGET", "OUTCOME", "DETAIL"], &cells)
            }
        })
    }
}
