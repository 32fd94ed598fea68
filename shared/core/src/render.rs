//! Which container images change in a new task-definition revision.
//!
//! Only the configured containers change, and only their image; the ECS adapter copies
//! every other field of the task definition unchanged.

/// The image change one deployment makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageChange {
    /// Containers (by name) whose image becomes `image`.
    pub containers: Vec<String>,
    /// The new image, pinned by digest.
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the task definition has no container named {name:?} (it has: {present})")]
    MissingContainer { name: String, present: String },
}

/// The result of applying an [`ImageChange`] to a task definition's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Images {
    /// Every configured container already runs the image.
    Unchanged,
    /// The image each container should have, in the task definition's order.
    Changed(Vec<Option<String>>),
}

impl ImageChange {
    /// Given the task definition's containers as `(name, image)`, the images after the change.
    pub fn apply(&self, containers: &[(Option<&str>, Option<&str>)]) -> Result<Images, RenderError> {
        for wanted in &self.containers {
            if !containers.iter().any(|(name, _)| *name == Some(wanted.as_str())) {
                let present = containers.iter().filter_map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
                return Err(RenderError::MissingContainer { name: wanted.clone(), present });
            }
        }
        let targeted = |name: Option<&str>| name.is_some_and(|n| self.containers.iter().any(|c| c == n));
        if containers.iter().all(|(name, image)| !targeted(*name) || *image == Some(self.image.as_str())) {
            return Ok(Images::Unchanged);
        }
        Ok(Images::Changed(
            containers
                .iter()
                .map(|(name, image)| if targeted(*name) { Some(self.image.clone()) } else { image.map(str::to_string) })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/api@sha256:bb";

    fn change(containers: &[&str]) -> ImageChange {
        ImageChange { containers: containers.iter().map(|c| c.to_string()).collect(), image: NEW.into() }
    }

    #[test]
    fn only_the_named_containers_change() {
        let containers = [(Some("api"), Some("repo/api:old")), (Some("proxy"), Some("envoy:1.30")), (None, None)];
        let cases: Vec<(&[&str], Result<Images, RenderError>)> = vec![
            (&["api"], Ok(Images::Changed(vec![Some(NEW.into()), Some("envoy:1.30".into()), None]))),
            (&["api", "proxy"], Ok(Images::Changed(vec![Some(NEW.into()), Some(NEW.into()), None]))),
            (&["worker"], Err(RenderError::MissingContainer { name: "worker".into(), present: "api, proxy".into() })),
        ];
        for (names, expected) in cases {
            assert_eq!(change(names).apply(&containers), expected, "{names:?}");
        }
    }

    #[test]
    fn a_revision_already_on_the_image_is_unchanged() {
        let containers = [(Some("api"), Some(NEW)), (Some("proxy"), Some("envoy:1.30"))];
        assert_eq!(change(&["api"]).apply(&containers), Ok(Images::Unchanged));
    }
}
