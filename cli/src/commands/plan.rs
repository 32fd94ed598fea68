//! `ferry plan REPO:TAG`: what a push would do at each target, changing nothing.

use chrono::{DateTime, Utc};
use ferry::model::{Deployment, Push};
use ferry::plan::{Plan, plan};
use ferry::ports::{Ecs, Ledger};
use ferry::render::Images;
use serde_json::{Value, json};

use crate::render::*;
use crate::{Ctx, Failure, Output, Term, fail};

impl Ctx<'_> {
    pub(crate) async fn plan(&self, image: &str, digest: Option<&str>, output: Output) -> Result<String, Failure> {
        let (repository, tag) =
            image.rsplit_once(':').ok_or_else(|| fail(format!("{image:?} is not REPOSITORY:TAG")))?;
        // Routing needs no digest: ECR is asked only for a push that deploys something.
        let mut push = Push {
            event_id: "ferry-plan".into(),
            registry_account: String::new(),
            registry_region: self.aws.region().map(|r| r.to_string()).unwrap_or_default(),
            repository: repository.into(),
            tag: tag.into(),
            digest: String::new(),
            pushed_at: Utc::now(),
        };
        if let Plan::Deploy { .. } | Plan::NotAllowed { .. } = plan(&self.config, &push) {
            let image = self.image_of(repository, tag, digest).await?;
            (push.registry_account, push.digest) = (image.account, image.digest);
        }
        let targets = match plan(&self.config, &push) {
            Plan::Deploy { targets, .. } => targets,
            Plan::UnknownRepository => return Ok(nothing(output, format!("no service is built from {repository}"))),
            Plan::UnmatchedTag => return Ok(nothing(output, format!("no environment's rules match the tag {tag:?}"))),
            Plan::NoServiceInEnvironment { environment } => {
                return Ok(nothing(
                    output,
                    format!("{tag:?} is for {environment}, where no service uses {repository}"),
                ));
            }
            Plan::NotAllowed { reason, .. } => return Ok(nothing(output, reason)),
        };
        let (ledger, ecs, now) = (self.ledger()?, self.ecs(), Utc::now());
        let mut rows = Vec::new();
        for tp in &targets {
            let t = &tp.target;
            let head = ledger.head(t).await.map_err(|e| fail(e.to_string()))?;
            let mut row = json!({"environment": t.environment, "service": t.service, "region": t.region,
                                 "cluster": t.cluster, "account": t.account, "image": tp.change.image});
            if let Err(refusal) = head.admit(&Deployment::new(&push, t.clone(), now), now) {
                let why = refusal.skip_reason().unwrap_or_else(|| format!("{refusal:?}"));
                row["action"] = json!("skip");
                row["reason"] = json!(why);
                rows.push(row);
                continue;
            }
            let service = ecs.service(t).await.map_err(|e| fail(format!("{t}: {e}")))?;
            row["current_task_definition"] = json!(service.task_definition);
            let containers =
                ecs.containers(t, &service.task_definition).await.map_err(|e| fail(format!("{t}: {e}")))?;
            let pairs: Vec<_> = containers.iter().map(|(n, i)| (n.as_deref(), i.as_deref())).collect();
            match tp.change.apply(&pairs) {
                Err(e) => {
                    row["action"] = json!("fail");
                    row["reason"] = json!(e.to_string());
                }
                Ok(Images::Unchanged) => {
                    row["action"] = json!("skip");
                    row["reason"] = json!("the service already runs this image");
                }
                Ok(Images::Changed(images)) => {
                    row["action"] = json!("deploy");
                    let diff: Vec<Value> = containers
                        .iter()
                        .zip(&images)
                        .filter(|((_, old), new)| old != *new)
                        .map(|((name, old), new)| json!({"container": name, "from": old, "to": new}))
                        .collect();
                    row["changes"] = json!(diff);
                    if let Some(m) = &tp.migration {
                        row["migration"] = json!(m.command);
                    }
                }
            }
            rows.push(row);
        }
        Ok(match output {
            Output::Json => pretty(&json!(rows)),
            Output::Table => rows.iter().map(|r| plan_text(self.term, r)).collect::<Vec<_>>().join("\n"),
        })
    }

    /// `repository:tag` (or `digest`) as ECR has it.
    pub(crate) async fn image_of(
        &self,
        repository: &str,
        tag: &str,
        digest: Option<&str>,
    ) -> Result<EcrImage, Failure> {
        let ecr = aws_sdk_ecr::Client::new(self.aws);
        let id = aws_sdk_ecr::types::ImageIdentifier::builder();
        let id = match digest {
            Some(d) => id.image_digest(d),
            None => id.image_tag(tag),
        };
        let found = ecr
            .describe_images()
            .repository_name(repository)
            .image_ids(id.build())
            .send()
            .await
            .map_err(|e| fail(format!("ECR has no image {repository}:{tag}: {}", aws_message(&e))))?;
        let image =
            found.image_details().first().ok_or_else(|| fail(format!("ECR has no image {repository}:{tag}")))?;
        Ok(EcrImage {
            account: image.registry_id().unwrap_or_default().to_string(),
            digest: image.image_digest().unwrap_or_default().to_string(),
            pushed_at: image.image_pushed_at().and_then(|t| DateTime::from_timestamp(t.secs(), 0)),
        })
    }
}

/// An image as ECR describes it.
pub(crate) struct EcrImage {
    pub(crate) account: String,
    pub(crate) digest: String,
    pub(crate) pushed_at: Option<DateTime<Utc>>,
}

pub(crate) fn plan_text(term: Term, r: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let account = r["account"].as_str().map_or(String::new(), |a| format!(", account {a}"));
    let mut out = format!(
        "{} {} ({}, {}{account})\n",
        term.bold(&s(&r["environment"])),
        s(&r["service"]),
        s(&r["cluster"]),
        s(&r["region"])
    );
    match r["action"].as_str() {
        Some("deploy") => {
            out.push_str(&format!("  deploy: a new revision of {}\n", s(&r["current_task_definition"])));
            for c in r["changes"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "    container {}\n      - image {}\n      + image {}\n",
                    s(&c["container"]),
                    s(&c["from"]),
                    s(&c["to"])
                ));
            }
            if let Some(m) = r["migration"].as_array() {
                let cmd: Vec<String> = m.iter().map(s).collect();
                out.push_str(&format!("  then the migration {} runs before the service update\n", cmd.join(" ")));
            }
        }
        Some(action) => out.push_str(&format!("  {action}: {}\n", s(&r["reason"]))),
        None => {}
    }
    out
}
