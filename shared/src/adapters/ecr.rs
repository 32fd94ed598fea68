//! The registry port on ECR: the tagged images of a repository, for reconciliation; when one
//! image was pushed, to order the pushes of one second; and what an image's labels say of its
//! source, read from its config blob as a registry client reads it.

use aws_sdk_ecr::Client;
use aws_sdk_ecr::types::{DescribeImagesFilter, ImageIdentifier, TagStatus};
use chrono::{DateTime, Utc};

use serde_json::Value;

use super::aws::{ErrorKind, classify};
use crate::model::ImageLabels;
use crate::ports::{Image, Registry, RegistryError};

/// ECR in Ferry's own account and region: where the pushes that reach Ferry are made.
#[derive(Debug, Clone)]
pub struct EcrRegistry {
    client: Client,
    /// Fetches the config blob from the URL ECR hands out (S3, pre-signed).
    http: reqwest::Client,
}

/// Manifests asked for: an image's (OCI, Docker v2) or a multi-platform index of them
/// (<https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-manifest-formats.html>).
const MANIFESTS: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// An image config is a few KB; anything past this is not one.
const CONFIG_LIMIT: usize = 1 << 20;

impl EcrRegistry {
    pub fn new(aws: &aws_config::SdkConfig) -> Self {
        Self::with_client(Client::new(aws))
    }

    pub fn with_client(client: Client) -> Self {
        let timeout = std::time::Duration::from_secs(3);
        let http = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build().unwrap_or_default();
        EcrRegistry { client, http }
    }

    /// The manifest of `digest` (an image's, or an index's), as JSON.
    async fn manifest(&self, repository: &str, registry: &str, digest: &str) -> Result<Value, RegistryError> {
        let out = self
            .client
            .batch_get_image()
            .registry_id(registry)
            .repository_name(repository)
            .image_ids(ImageIdentifier::builder().image_digest(digest).build())
            .set_accepted_media_types(Some(MANIFESTS.iter().map(|m| m.to_string()).collect()))
            .send()
            .await
            .map_err(|e| error(&e))?;
        let manifest = out.images().first().and_then(|i| i.image_manifest());
        let manifest = manifest.ok_or_else(|| RegistryError::Missing(format!("no manifest for {digest}")))?;
        serde_json::from_str(manifest).map_err(|e| RegistryError::Missing(format!("manifest of {digest}: {e}")))
    }
}

/// An ECR failure: transient (retry the event) or not (the image or its parts are missing).
fn error<E: aws_sdk_ecr::error::ProvideErrorMetadata + std::error::Error + 'static>(
    e: &super::aws::SdkError<E>,
) -> RegistryError {
    match classify(e) {
        (ErrorKind::Transient, m) => RegistryError::Transient(m),
        (_, m) => RegistryError::Missing(m),
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
            let page = page.map_err(|e| error(&e))?;
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
            .map_err(|e| error(&e))?;
        Ok(out.image_details().first().and_then(|d| d.image_pushed_at()).map(time))
    }

    async fn labels(&self, repository: &str, registry: &str, digest: &str) -> Result<ImageLabels, RegistryError> {
        let mut manifest = self.manifest(repository, registry, digest).await?;
        // A multi-platform index: its first image (an attestation's platform is unknown/unknown).
        if let Some(images) = manifest.get("manifests").and_then(Value::as_array) {
            let image = images.iter().find(|m| m.pointer("/platform/os").and_then(Value::as_str) != Some("unknown"));
            let Some(image) = image.and_then(|m| m.get("digest")).and_then(Value::as_str) else {
                return Ok(ImageLabels::default());
            };
            manifest = self.manifest(repository, registry, image).await?;
        }
        let Some(config) = manifest.pointer("/config/digest").and_then(Value::as_str) else {
            return Ok(ImageLabels::default());
        };
        let size = manifest.pointer("/config/size").and_then(Value::as_u64).unwrap_or(0);
        if size > CONFIG_LIMIT as u64 {
            return Err(RegistryError::Missing(format!("the image config is {size} bytes: not read")));
        }
        let out = self
            .client
            .get_download_url_for_layer()
            .registry_id(registry)
            .repository_name(repository)
            .layer_digest(config)
            .send()
            .await
            .map_err(|e| error(&e))?;
        let url = out.download_url().ok_or_else(|| RegistryError::Missing("no download URL for the config".into()))?;
        // The URL is a credential for the blob: never put in an error.
        let fetched = self.http.get(url).send().await.and_then(reqwest::Response::error_for_status);
        let mut response = fetched.map_err(|e| {
            let status = e.status().map_or("no answer".into(), |s| s.to_string());
            RegistryError::Transient(format!("the image config's download failed ({status})"))
        })?;
        // Read no more than a config can be, whatever the manifest said.
        let broke_off = |_| RegistryError::Transient("the image config's download broke off".into());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(broke_off)? {
            body.extend_from_slice(&chunk);
            if body.len() > CONFIG_LIMIT {
                return Err(RegistryError::Missing("the image config is over 1 MiB: not read".into()));
            }
        }
        let config: Value = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::Missing(format!("the image config is not JSON: {e}")))?;
        Ok(ImageLabels::from_config(&config))
    }
}

/// To the millisecond, as the ledger compares push times (the SDK reads ECR's fractional
/// epoch seconds through an f64, a few nanoseconds off).
fn time(at: &aws_sdk_ecr::primitives::DateTime) -> DateTime<Utc> {
    let millis = i64::from((at.subsec_nanos() + 500_000) / 1_000_000);
    DateTime::from_timestamp_millis(at.secs() * 1000 + millis).unwrap_or_default()
}
