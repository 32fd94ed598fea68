//! SNS: each notification's facts as JSON, with attributes subscribers can filter on.

use aws_sdk_sns::types::MessageAttributeValue;

use crate::notify::Notification;
use crate::ports::{Notifier, NotifyError};

#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsNotifier {
    pub fn new(client: aws_sdk_sns::Client, topic_arn: impl Into<String>) -> Self {
        SnsNotifier { client, topic_arn: topic_arn.into() }
    }
}

fn attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder().data_type("String").string_value(value).build().expect("data_type is set")
}

impl Notifier for SnsNotifier {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let d = &n.deployment;
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(n.subject())
            .message(n.facts().to_string())
            .message_attributes("environment", attribute(&d.target.environment))
            .message_attributes("service", attribute(&d.target.service))
            .message_attributes("status", attribute(d.state.as_str()))
            .message_attributes("severity", attribute(n.severity()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| NotifyError(format!("SNS: {}", super::aws::classify(&e).1)))
    }

    async fn digest(&self, digest: &crate::digest::Digest) -> Result<(), NotifyError> {
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(digest.subject())
            .message(digest.facts().to_string())
            .message_attributes("status", attribute("DIGEST"))
            .message_attributes("severity", attribute("info"))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| NotifyError(format!("SNS: {}", super::aws::classify(&e).1)))
    }
}
