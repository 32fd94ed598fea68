//! `ferry plan REPO:TAG`: what a push would do at each target, changing nothing.

use chrono::{DateTime, Utc};
use ferry::hook::POST_TEST_TRAFFIC_SHIFT;
use ferry::model::{Deployment, Push};
use ferry::plan::{Plan, plan};
use ferry::ports::{Ecs, Ledger, LifecycleHook};
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
            row["strategy"] = json!(service.strategy.as_deref().unwrap_or("ROLLING"));
            let test_url = self
                .config
                .services
                .iter()
                .find(|s| s.deploys_to(&t.environment) && s.service_name(&t.environment) == t.service)
                .and_then(|s| s.health.as_ref())
                .and_then(|h| h.test_url_for(t, self.config.home_account.as_deref()));
            let warnings = blue_green_warnings(
                service.strategy.as_deref(),
                &service.lifecycle_hooks,
                test_url.as_deref(),
                self.cli.hook_arn.as_deref(),
            );
            if !warnings.is_empty() {
                row["warnings"] = json!(warnings);
            }
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

/// What keeps a blue/green, linear or canary service's test route from gating its rollouts:
/// no lifecycle hook calls Ferry (`ferry_hook`, if known: else any Lambda hook) after test
/// traffic shifted, or the service has no `health.test_url`. None for a rolling service.
pub(crate) fn blue_green_warnings(
    strategy: Option<&str>,
    hooks: &[LifecycleHook],
    test_url: Option<&str>,
    ferry_hook: Option<&str>,
) -> Vec<String> {
    let Some(strategy) = strategy.filter(|s| *s != "ROLLING") else { return Vec::new() };
    let mut warnings = Vec::new();
    let gated = hooks.iter().any(|h| {
        h.stages.iter().any(|s| s == POST_TEST_TRAFFIC_SHIFT)
            && h.target.as_deref().is_some_and(|t| ferry_hook.is_none_or(|f| f == t))
    });
    if !gated {
        let whose = ferry_hook.map_or("a Lambda hook".to_string(), |f| format!("Ferry's hook ({f})"));
        warnings.push(format!(
            "{strategy}: no {whose} at {POST_TEST_TRAFFIC_SHIFT}: green takes production traffic untested"
        ));
    }
    if test_url.is_none() {
        warnings.push(format!("{strategy}: no health.test_url: Ferry's hook lets green through untested"));
    }
    warnings
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
    if let Some(strategy) = r["strategy"].as_str().filter(|s| *s != "ROLLING") {
        out.push_str(&format!("  strategy {strategy}: ECS shifts traffic; Ferry gates the test route\n"));
    }
    for w in r["warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!("  {} {}\n", term.bold("warning:"), s(w)));
    }
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

#[cfg(test)]
mod tests {
    use ferry::ports::LifecycleHook;

    use super::blue_green_warnings;

    const FERRY: &str = "arn:aws:lambda:eu-west-1:123456789012:function:ferry-verify";

    fn hook(target: &str, stages: &[&str]) -> LifecycleHook {
        LifecycleHook { target: Some(target.into()), stages: stages.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn a_blue_green_service_is_warned_about_until_ferrys_hook_gates_its_test_route() {
        assert!(blue_green_warnings(None, &[], None, Some(FERRY)).is_empty(), "rolling: nothing to gate");
        assert!(blue_green_warnings(Some("ROLLING"), &[], None, None).is_empty());
        let ours = [hook(FERRY, &["PRE_SCALE_UP", "POST_TEST_TRAFFIC_SHIFT"])];
        assert!(blue_green_warnings(Some("BLUE_GREEN"), &ours, Some("https://test/"), Some(FERRY)).is_empty());
        assert!(blue_green_warnings(Some("CANARY"), &ours, Some("https://test/"), None).is_empty());

        let elsewhere = [hook("arn:aws:lambda:eu-west-1:123456789012:function:other", &["POST_TEST_TRAFFIC_SHIFT"])];
        let [w] = blue_green_warnings(Some("BLUE_GREEN"), &elsewhere, Some("https://test/"), Some(FERRY))
            .try_into()
            .expect("one warning");
        assert!(w.contains("no Ferry's hook") && w.contains(FERRY), "{w}");
        let late = [hook(FERRY, &["POST_PRODUCTION_TRAFFIC_SHIFT"])];
        assert_eq!(blue_green_warnings(Some("LINEAR"), &late, Some("https://test/"), Some(FERRY)).len(), 1);
        let [w] = blue_green_warnings(Some("BLUE_GREEN"), &ours, None, Some(FERRY)).try_into().expect("one warning");
        assert!(w.contains("no health.test_url"), "{w}");
    }
}
