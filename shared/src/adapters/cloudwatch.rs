//! The alarms port on the AWS SDK: the state of a service's CloudWatch alarms.

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::types::{AlarmType, StateValue};
use chrono::{DateTime, Utc};

use super::aws::{AwsClients, ErrorKind, classify};
use crate::hook::AlarmState;
use crate::model::Target;
use crate::ports::{Alarms, EcsError};

#[derive(Debug)]
pub struct CloudWatchAdapter {
    clients: AwsClients<Client>,
}

impl CloudWatchAdapter {
    pub fn new(base: aws_config::SdkConfig) -> Self {
        Self::with_clients(AwsClients::new(base, Client::new))
    }

    pub fn with_clients(clients: AwsClients<Client>) -> Self {
        CloudWatchAdapter { clients }
    }
}

fn state(
    name: Option<&str>,
    value: Option<&StateValue>,
    since: Option<&aws_sdk_cloudwatch::primitives::DateTime>,
    reason: Option<&str>,
) -> Option<AlarmState> {
    Some(AlarmState {
        name: name?.to_string(),
        in_alarm: value == Some(&StateValue::Alarm),
        since: since.and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos())),
        reason: reason.unwrap_or_default().to_string(),
    })
}

impl Alarms for CloudWatchAdapter {
    /// DescribeAlarms by name, metric and composite alarms
    /// (<https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_DescribeAlarms.html>;
    /// up to 100 names, one page).
    async fn states(&self, target: &Target, names: &[String]) -> Result<Vec<AlarmState>, EcsError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.clients.get(&target.region, target.role_arn.as_deref()).await;
        let out = client
            .describe_alarms()
            .set_alarm_names(Some(names.to_vec()))
            .alarm_types(AlarmType::MetricAlarm)
            .alarm_types(AlarmType::CompositeAlarm)
            .send()
            .await
            .map_err(|e| match classify(&e) {
                (ErrorKind::NotFound, m) => EcsError::NotFound(m),
                (ErrorKind::Rejected, m) => EcsError::Rejected(m),
                (ErrorKind::Transient | ErrorKind::Conflict, m) => EcsError::Transient(m),
            })?;
        let metric = out
            .metric_alarms()
            .iter()
            .filter_map(|a| state(a.alarm_name(), a.state_value(), a.state_updated_timestamp(), a.state_reason()));
        let composite = out
            .composite_alarms()
            .iter()
            .filter_map(|a| state(a.alarm_name(), a.state_value(), a.state_updated_timestamp(), a.state_reason()));
        Ok(metric.chain(composite).collect())
    }
}
