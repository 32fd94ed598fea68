//! The registry port on ECR: the tagged images of a repository, for reconciliation.

use aws_sdk_ecr::Client;
use aws_sdk_ecr::types::{DescribeImagesFilter, TagStatus};
use chrono::DateTime;

use super::aws::{ErrorKind, classify};
use crate::ports::{Image, Registry, RegistryError};

/// ECR in Ferry's own account and region: where the pushes that reach Ferry are made.
#[derive(Debug, Clone)]
pub struct EcrRegistry {
    client: Client,
}

impl EcrRegistry {
    pub fn new(aws: &aws_config::SdkConfig) -> Self {
        Self::with_client(Client::new(aws))
    }

    pub fn with_client(client: Client) -> Self {
        EcrRegistry { client }
    }
}

impl Registry for EcrRegistry {
    async fn images(&self, repository: &str) -> Result<Vec<Image>, RegistryError> {
        let region = self.client.config().region().map(|r| r.to_string()).unwrap_or_default();
        let mut pages = self
            .client
            .describe_images()
            .repository_name(repository)
            .filter(DescribeImagesFilter::builder().tag_status(TagStatus::Tagged).build())
            .into_paginator()
            .send();
        let mut images = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| match classify(&e) {
                (ErrorKind::Transient, m) => RegistryError::Transient(m),
                (_, m) => RegistryError::Missing(m),
            })?;
            for detail in page.image_details() {
                let (Some(digest), Some(pushed_at)) = (detail.image_digest(), detail.image_pushed_at()) else {
                    continue;
                };
                images.push(Image {
                    digest: digest.to_string(),
                    tags: detail.image_tags().to_vec(),
                    // ECR's push events carry their time to the second: so does this.
                    pushed_at: DateTime::from_timestamp(pushed_at.secs(), 0).unwrap_or_default(),
                    registry_account: detail.registry_id().unwrap_or_default().to_string(),
                    registry_region: region.clone(),
                });
            }
        }
        Ok(images)
    }
}
