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
        both(self.sns.as_ref().map(|s| s.send(n)), self.slack.as_ref().map(|s| s.send(n))).await
    }

    async fn digest(&self, digest: &Digest) -> Result<(), NotifyError> {
        both(self.sns.as_ref().map(|s| s.digest(digest)), self.slack.as_ref().map(|s| s.digest(digest))).await
    }
}

/// Sends to both configured channels at once; every failure, joined.
async fn both(
    sns: Option<impl Future<Output = Result<(), NotifyError>>>,
    slack: Option<impl Future<Output = Result<(), NotifyError>>>,
) -> Result<(), NotifyError> {
    let (sns, slack) = tokio::join!(
        async {
            match sns {
                Some(sent) => sent.await,
                None => Ok(()),
            }
        },
        async {
            match slack {
                Some(sent) => sent.await,
                None => Ok(()),
            }
        }
    );
    let errors: Vec<String> = [sns, slack].into_iter().filter_map(Result::err).map(|e| e.0).collect();
    if errors.is_empty() { Ok(()) } else { Err(NotifyError(errors.join("; "))) }
}
