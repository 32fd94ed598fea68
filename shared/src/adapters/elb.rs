//! The load-balancer port on the AWS SDK: the health of a target group's targets.

use aws_sdk_elasticloadbalancingv2::Client;

use super::aws::{AwsClients, ErrorKind, classify};
use crate::model::Target;
use crate::ports::{EcsError, LoadBalancers, TargetHealth};

#[derive(Debug)]
pub struct ElbAdapter {
    clients: AwsClients<Client>,
}

impl ElbAdapter {
    pub fn new(base: aws_config::SdkConfig) -> Self {
        Self::with_clients(AwsClients::new(base, Client::new))
    }

    pub fn with_clients(clients: AwsClients<Client>) -> Self {
        ElbAdapter { clients }
    }
}

impl LoadBalancers for ElbAdapter {
    /// DescribeTargetHealth of the whole group
    /// (<https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/API_DescribeTargetHealth.html>).
    async fn target_health(&self, target: &Target, target_group: &str) -> Result<Vec<TargetHealth>, EcsError> {
        let client = self.clients.get(&target.region, target.role_arn.as_deref()).await;
        let out =
            client.describe_target_health().target_group_arn(target_group).send().await.map_err(
                |e| match classify(&e) {
                    (ErrorKind::NotFound, m) => EcsError::NotFound(m),
                    (ErrorKind::Rejected, m) => EcsError::Rejected(m),
                    (ErrorKind::Transient | ErrorKind::Conflict, m) => EcsError::Transient(m),
                },
            )?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let id = d.target.as_ref()?.id.clone()?;
                let health = d.target_health.as_ref();
                Some(TargetHealth {
                    id,
                    state: health.and_then(|h| h.state.as_ref()).map(|s| s.as_str().to_string()).unwrap_or_default(),
                    reason: health.and_then(|h| h.reason.as_ref()).map(|r| r.as_str().to_string()),
                })
            })
            .collect())
    }
}
