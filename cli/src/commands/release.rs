//! `ferry release`: a quarantined digest released through the ledger's own release.

use ferry::plan::targets_of;
use ferry::ports::Ledger;

use crate::render::*;
use crate::{Ctx, Failure, fail};

impl Ctx<'_> {
    pub(crate) async fn release(&self, service: &str, env: &str, digest: &str) -> Result<String, Failure> {
        let targets = targets_of(&self.config, env, service);
        if targets.is_empty() {
            return Err(fail(format!("no service {service:?} deploys to {env:?}")));
        }
        let ledger = self.ledger()?;
        let mut released = Vec::new();
        for t in &targets {
            let head = ledger.head(t).await.map_err(|e| fail(e.to_string()))?;
            let matching: Vec<&String> = head.quarantine.iter().filter(|q| digest_matches(q, digest)).collect();
            if matching.len() > 1 {
                return Err(fail(format!(
                    "{digest} names {} quarantined digests on {t}: give more of it",
                    matching.len()
                )));
            }
            if let Some(q) = matching.first() {
                ledger.release(t, q).await.map_err(|e| fail(e.to_string()))?;
                released.push(format!("{} on {t}\n", short_digest(q)));
            }
        }
        if released.is_empty() {
            return Err(fail(format!("{digest} is not quarantined on {service} in {env}")));
        }
        Ok(released.into_iter().map(|r| format!("released {r}")).collect())
    }
}

pub(crate) fn digest_matches(quarantined: &str, given: &str) -> bool {
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap_or(d).to_string();
    !given.is_empty() && hex(quarantined).starts_with(&hex(given))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_shown_short_and_matched_by_prefix() {
        let d = format!("sha256:{}", "3f1e2d4c5b6a7980".repeat(4));
        assert_eq!(short_digest(&d), "3f1e2d4c5b6a");
        assert!(digest_matches(&d, "3f1e2d4c5b6a") && digest_matches(&d, &d) && digest_matches(&d, "sha256:3f1e"));
        assert!(!digest_matches(&d, "") && !digest_matches(&d, "3f1f"));
        assert_eq!(short_td("arn:aws:ecs:eu-west-1:1:task-definition/shop-api:42"), "shop-api:42");
    }
}
