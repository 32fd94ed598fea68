//! Notifications: what a team is told about a deployment, rendered for Slack and SNS.

use serde_json::{Value, json};

use crate::model::{Deployment, State};
use crate::ports::{Ledger, Notifier};

/// A message about one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub deployment: Deployment,
    /// Key of the Slack webhook it goes to (`None`: the default webhook).
    pub route: Option<String>,
    /// After a rollback: the task definition the service runs now.
    pub live_now: Option<String>,
}

/// Sends a notification; a failure is logged and noted on the deployment, never raised.
pub async fn send<N: Notifier, L: Ledger>(notifier: &N, ledger: &L, notification: Notification) {
    let d = &notification.deployment;
    if let Err(e) = notifier.send(&notification).await {
        tracing::warn!(deployment = %d.id, error = %e, "notification failed");
        if let Err(e) = ledger.note_notify_error(d, &e.0).await {
            tracing::warn!(deployment = %d.id, error = %e, "could not record the notification failure");
        }
    }
}

impl Notification {
    pub fn headline(&self) -> String {
        let d = &self.deployment;
        let what = match d.state {
            State::InProgress => "deploying",
            State::Succeeded => "deployed",
            State::Failed => "deployment failed",
            State::Skipped => "skipped",
            State::RollingBack => "rolling back",
            State::RolledBack => "rolled back",
            State::RollbackFailed => "ROLLBACK FAILED",
            _ => d.state.as_str(),
        };
        format!("{} {what}: {}:{} to {}", d.target.service, d.repository, d.tag, d.target.environment)
    }

    /// Severity for subscribers' filters.
    pub fn severity(&self) -> &'static str {
        match self.deployment.state {
            State::RollbackFailed => "critical",
            State::Failed | State::RolledBack => "error",
            _ => "info",
        }
    }

    /// The same facts as JSON, for SNS subscribers.
    pub fn facts(&self) -> Value {
        let d = &self.deployment;
        json!({
            "deployment": d.id,
            "status": d.state.as_str(),
            "environment": d.target.environment,
            "service": d.target.service,
            "cluster": d.target.cluster,
            "region": d.target.region,
            "account": d.target.account,
            "repository": d.repository,
            "tag": d.tag,
            "digest": d.digest,
            "image": d.image,
            "task_definition": d.task_definition,
            "previous_task_definition": d.previous_task_definition,
            "ecs_deployment_id": d.ecs_deployment_id,
            "reason": d.reason,
            "live_now": self.live_now,
        })
    }

    /// A Slack Block Kit message.
    pub fn slack(&self) -> Value {
        let d = &self.deployment;
        let short = d.digest.split_once(':').map_or(d.digest.as_str(), |(_, hex)| &hex[..hex.len().min(12)]);
        let mut fields = vec![
            format!("*Environment*\n{}", d.target.environment),
            format!("*Region*\n{}", d.target.region),
            format!("*Tag*\n`{}`", d.tag),
            format!("*Digest*\n`{short}`"),
        ];
        if let Some(td) = &d.task_definition {
            fields.push(format!("*Revision*\n`{}`", td.rsplit('/').next().unwrap_or(td)));
        }
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": self.headline()}}),
            json!({"type": "section", "fields": fields.iter().map(|f| json!({"type": "mrkdwn", "text": f})).collect::<Vec<_>>()}),
        ];
        if let Some(live) = &self.live_now {
            blocks
                .push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Live now*\n`{live}`")}}));
        }
        if let Some(reason) = &d.reason {
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Reason*\n{reason}")}}));
        }
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!(
            "<{}|{} in {}> · deployment {}", console_url(d), d.target.service, d.target.cluster, d.id
        )}]}));
        json!({"text": self.headline(), "blocks": blocks})
    }
}

fn console_url(d: &Deployment) -> String {
    format!(
        "https://{region}.console.aws.amazon.com/ecs/v2/clusters/{cluster}/services/{service}/deployments?region={region}",
        region = d.target.region,
        cluster = d.target.cluster,
        service = d.target.service
    )
}
