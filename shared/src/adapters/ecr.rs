//! The registry port on ECR: the tagged images of a repository, for reconciliation, and
//! when one image was pushed, to order the pushes of one second.

use aws_sdk_ecr::Client;
use aws_sdk_ecr::types::{DescribeImagesFilter, ImageIdentifier, TagStatus};
use chrono::{DateTime, Utc};

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
                    pushed_at: time(pushed_at),
                    registry_account: detail.registry_id().unwrap_or_default().to_string(),
                    registry_region: region.clone(),
                });
            }
        }
        Ok(images)
    }

    async fn pushed_at(
        &self,
        repository: &str,
        registry: &str,
        digest: &str,
    ) -> Result<Option<DateTime<Utc>>, RegistryError> {
        let out = self
            .client
            .describe_images()
            .registry_id(registry)
            .repository_name(repository)
            .image_ids(ImageIdentifier::builder().image_digest(digest).build())
            .send()
            .await
            .map_err(|e| match classify(&e) {
                (ErrorKind::Transient, m) => RegistryError::Transient(m),
                (_, m) => RegistryError::Missing(m),
            })?;
        Ok(out.image_details().first().and_then(|d| d.image_pushed_at()).map(time))
    }
}

/// To the millisecond, as the ledger compares push times (the SDK reads ECR's fractional
/// epoch seconds through an f64, a few nanoseconds off).
fn time(at: &aws_sdk_ecr::primitives::DateTime) -> DateTime<Utc> {
    let millis = i64::from((at.subsec_nanos() + 500_000) / 1_000_000);
    DateTime::from_timestamp_millis(at.secs() * 1000 + millis).unwrap_or_default()
}
