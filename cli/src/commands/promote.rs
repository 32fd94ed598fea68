//! `ferry promote`: the image of one environment tagged for the next; the deploy function does the rest.

use std::io::Write;

use aws_config::SdkConfig;
use ferry::config::Config;
use ferry::model::{Deployment, Origin, State};
use ferry::ports::Ledger;
use ferry::rules::TagRule;

use crate::render::*;
use crate::{Ctx, Failure, fail, io};

impl Ctx<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn promote(
        &self,
        out: &mut dyn Write,
        repository: &str,
        from: &str,
        to: &str,
        tag: Option<&str>,
        wait: bool,
        timeout: u64,
    ) -> Result<String, Failure> {
        for env in [from, to] {
            if self.config.environment(env).is_none() {
                return Err(fail(format!("no environment {env:?} in {}", self.cli.config.display())));
            }
        }
        let ledger = self.ledger()?;
        let mut verified: Option<Deployment> = None;
        for t in self.targets(Some(from), Some(repository))? {
            let proven = |d: &Deployment| d.origin == Origin::Ferry && d.state == State::Succeeded;
            let newest = ferry::lookup::newest(&ledger, &t, None, proven).await.map_err(|e| fail(e.to_string()))?;
            if let Some(d) = newest.filter(|d| verified.as_ref().is_none_or(|v| d.pushed_at > v.pushed_at)) {
                verified = Some(d);
            }
        }
        let Some(proven) = verified else {
            return Err(fail(format!("{from} has no verified deployment of {repository}: nothing to promote")));
        };
        let new_tag = match tag {
            Some(tag) => tag.to_string(),
            None => promoted_tag(&self.config, &proven.tag, from, to).map_err(fail)?,
        };
        match self.config.environment_for_tag(&new_tag) {
            Some(e) if e.name == to => {}
            Some(e) => return Err(fail(format!("the tag {new_tag:?} deploys to {}, not {to}", e.name))),
            None => return Err(fail(format!("no environment's rules match the tag {new_tag:?}"))),
        }
        let targets = self.targets(Some(to), Some(repository))?;
        for t in &targets {
            if ledger.head(t).await.map_err(|e| fail(e.to_string()))?.quarantine.contains(&proven.digest) {
                return Err(fail(format!(
                    "{} is quarantined on {t}: release it first (ferry release)",
                    short_digest(&proven.digest)
                )));
            }
        }
        tag_image(self.aws, repository, &proven.digest, &new_tag).await?;
        let said = format!(
            "{repository}@{} (verified in {from} as {}) tagged {new_tag}: Ferry deploys it to {to}\n",
            short_digest(&proven.digest),
            proven.tag
        );
        if !wait {
            return Ok(said);
        }
        out.write_all(said.as_bytes()).map_err(io)?;
        let digest = proven.digest.clone();
        let done = move |d: &Deployment| d.origin == Origin::Ferry && d.digest == digest && d.tag == new_tag;
        self.follow(out, &ledger, &targets, done, timeout).await
    }
}

/// ECR PutImage of the image's own manifest under a new tag: ECR emits the push event that
/// the deploy function handles, exactly as for an image CI pushed.
pub(crate) async fn tag_image(aws: &SdkConfig, repository: &str, digest: &str, tag: &str) -> Result<(), Failure> {
    let ecr = aws_sdk_ecr::Client::new(aws);
    let got = ecr
        .batch_get_image()
        .repository_name(repository)
        .image_ids(aws_sdk_ecr::types::ImageIdentifier::builder().image_digest(digest).build())
        .send()
        .await
        .map_err(|e| fail(format!("cannot read {repository}@{digest}: {}", aws_message(&e))))?;
    let image = got.images().first().ok_or_else(|| fail(format!("ECR has no image {repository}@{digest}")))?;
    let manifest = image.image_manifest().ok_or_else(|| fail(format!("ECR gave no manifest for {digest}")))?;
    let put = ecr
        .put_image()
        .repository_name(repository)
        .image_manifest(manifest)
        .set_image_manifest_media_type(image.image_manifest_media_type().map(str::to_string))
        .image_tag(tag)
        .image_digest(digest)
        .send()
        .await;
    match put {
        Ok(_) => Ok(()),
        // The tag is on this digest already: promoted before.
        Err(e) if e.as_service_error().is_some_and(|e| e.is_image_already_exists_exception()) => Ok(()),
        Err(e) => Err(fail(format!("cannot tag {repository}@{digest} as {tag}: {}", aws_message(&e)))),
    }
}

/// The tag that moves an image from one environment to the next: what the `*` of the glob
/// rule that matched `tag` in `from` stood for (the whole tag when another kind of rule
/// matched it), put in the `*` of a glob rule of `to`, as long as the result is deployed to
/// `to` (first match wins across environments): `staging-1a2b3c4d` → `prod-1a2b3c4d`
/// (`staging-*`, `prod-*`), `v42` → `prod-v42` (regex `v[0-9]+`, `prod-*`).
pub fn promoted_tag(config: &Config, tag: &str, from: &str, to: &str) -> Result<String, String> {
    fn star(rule: &TagRule) -> Option<(&str, &str)> {
        match rule {
            TagRule::Glob(p) if p.matches('*').count() == 1 && !p.contains('?') => p.split_once('*'),
            _ => None,
        }
    }
    let (Some(source), Some(dest)) = (config.environment(from), config.environment(to)) else {
        return Err(format!("no environment {from:?} or {to:?}"));
    };
    let Some(rule) = source.rules.iter().find(|r| r.matches(tag)) else {
        return Err(format!("{tag:?} is not a tag of {from}: pass --tag"));
    };
    let stem = star(rule).and_then(|(pre, post)| tag.strip_prefix(pre)?.strip_suffix(post)).unwrap_or(tag);
    dest.rules
        .iter()
        .filter_map(|r| star(r).map(|(pre, post)| format!("{pre}{stem}{post}")))
        .find(|t| config.environment_for_tag(t).is_some_and(|e| e.name == to))
        .ok_or_else(|| format!("no glob rule of {to} turns {tag:?} into a tag {to} deploys: pass --tag"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[[environments]]
name = "staging"
rules = [{ glob = "staging-*" }, { glob = "v*" }]
targets = [{ region = "eu-west-1", cluster = "shop-staging" }]

[[environments]]
name = "production"
rules = [{ glob = "prod-*" }, { glob = "release-v*" }, { semver = "final" }]
targets = [{ region = "eu-west-1", cluster = "shop-production" }]

[[services]]
repository = "shop/api"
name = "shop-{env}-api"
containers = ["api"]
"#;

    #[test]
    fn a_promotion_keeps_what_the_star_stood_for() {
        let config = Config::parse("ferry.toml", CONFIG).expect("config");
        let cases = [
            ("staging-1a2b3c4d", Ok("prod-1a2b3c4d".to_string())),
            // `prod-42` would not be a production tag... it is (prod-*): the first glob of
            // production that routes to production wins.
            ("v42", Ok("prod-42".to_string())),
        ];
        for (tag, expected) in cases {
            assert_eq!(promoted_tag(&config, tag, "staging", "production"), expected, "{tag}");
        }
        assert!(promoted_tag(&config, "prod-1", "production", "staging").is_ok_and(|t| t == "staging-1"));
        assert!(promoted_tag(&config, "nope", "staging", "production").is_err());
    }

    #[test]
    fn another_rule_kind_passes_the_whole_tag_on() {
        let config = Config::parse(
            "ferry.toml",
            &CONFIG.replace(r#"[{ glob = "staging-*" }, { glob = "v*" }]"#, r#"[{ regex = 'v[0-9]+' }]"#),
        )
        .expect("config");
        assert_eq!(promoted_tag(&config, "v42", "staging", "production"), Ok("prod-v42".to_string()));
    }

    /// The configs of `examples/` load, and the build-numbers model's promotion lands where
    /// its README says.
    #[test]
    fn the_example_configs_load_and_promote_as_documented() {
        let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo");
        let examples = std::path::Path::new(&crate_dir).join("../examples/github-actions");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&examples).expect("examples") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
                loaded += 1;
            }
        }
        assert_eq!(loaded, 4, "one config per deployment model");
        let config = Config::load(&examples.join("ferry-build-numbers.toml")).expect("config");
        assert_eq!(promoted_tag(&config, "v42", "staging", "production"), Ok("prod-v42".to_string()));
    }

    #[test]
    fn a_promoted_tag_must_land_in_the_target_environment() {
        // Production's only glob would produce a tag staging's `v*` takes first.
        let config = Config::parse(
            "ferry.toml",
            &CONFIG.replace(
                r#"[{ glob = "prod-*" }, { glob = "release-v*" }, { semver = "final" }]"#,
                r#"[{ glob = "v*-prod" }]"#,
            ),
        )
        .expect("config");
        let err = promoted_tag(&config, "staging-1a2b", "staging", "production").expect_err("refused");
        assert!(err.contains("pass --tag"), "{err}");
    }
}
