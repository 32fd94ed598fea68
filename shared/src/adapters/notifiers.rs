//! Every configured notifier at once: SNS and Slack, one failing never stopping the other.

use super::slack::SlackNotifier;
use super::sns::SnsNotifier;
use crate::digest::Digest;
use crate::notify::Notification;
use crate::ports::{Notifier, NotifyError};

/// Sends to every configured channel; one failing does not stop the others.
#[derive(Debug)]
pub struct Notifiers {
    pub sns: Option<SnsNotifier>,
    pub slack: Option<SlackNotifier>,
}

impl Notifiers {
    /// SNS to `topic_arn` and Slack through the webhooks in `slack_secret`, each if given.
    pub fn new(aws: &aws_config::SdkConfig, topic_arn: Option<&str>, slack_secret: Option<&str>) -> Notifiers {
        Notifiers {
            sns: topic_arn.map(|arn| SnsNotifier::new(aws_sdk_sns::Client::new(aws), arn)),
            slack: slack_secret.map(|id| SlackNotifier::new(aws_sdk_secretsmanager::Client::new(aws), id)),
        }
    }
}

impl Notifier for Notifiers {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let sns = async {
            match &self.sns {
                Some(sns) => sns.send(n).await,
                None => Ok(()),
            }
        };
        let slack = async {
            match &self.slack {
                Some(slack) => slack.send(n).await,
                None => Ok(()),
            }
        };
        both(tokio::join!(sns, slack))
    }

    async fn digest(&self, digest: &Digest) -> Result<(), NotifyError> {
        let sns = async {
            match &self.sns {
                Some(sns) => sns.digest(digest).await,
                None => Ok(()),
            }
        };
        let slack = async {
            match &self.slack {
                Some(slack) => slack.digest(digest).await,
                None => Ok(()),
            }
        };
        both(tokio::join!(sns, slack))
    }
}

/// Both channels' results as one: every failure, joined.
fn both((sns, slack): (Result<(), NotifyError>, Result<(), NotifyError>)) -> Result<(), NotifyError> {
    let errors: Vec<String> = [sns, slack].into_iter().filter_map(Result::err).map(|e| e.0).collect();
    if errors.is_empty() { Ok(()) } else { Err(NotifyError(errors.join("; "))) }
}
