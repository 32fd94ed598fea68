//! Ferry's own events on EventBridge: the "Deployment Failed" the rollback function acts on,
//! and approvers' decisions the deploy function carries out.

use crate::approval::Verdict;
use crate::event::{
    DEPLOYMENT_APPROVED, DEPLOYMENT_FAILED, DEPLOYMENT_REJECTED, EVENT_SOURCE, decision_detail, failure_detail,
};
use crate::model::Deployment;
use crate::ports::{BusError, EventBus};

#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgeBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        EventBridgeBus { client, bus: bus.into() }
    }
}

impl EventBus for EventBridgeBus {
    async fn deployment_failed(&self, d: &Deployment) -> Result<(), BusError> {
        self.put(DEPLOYMENT_FAILED, failure_detail(d)).await
    }

    async fn decided(&self, d: &Deployment, verdict: Verdict, by: &str) -> Result<(), BusError> {
        let kind = if verdict == Verdict::Approve { DEPLOYMENT_APPROVED } else { DEPLOYMENT_REJECTED };
        self.put(kind, decision_detail(d, by)).await
    }
}

impl EventBridgeBus {
    async fn put(&self, detail_type: &str, detail: serde_json::Value) -> Result<(), BusError> {
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(EVENT_SOURCE)
            .detail_type(detail_type)
            .detail(detail.to_string())
            .build();
        let out =
            self.client.put_events().entries(entry).send().await.map_err(|e| BusError(super::aws::classify(&e).1))?;
        match out.entries().first().and_then(|e| e.error_code()) {
            Some(code) => Err(BusError(format!("PutEvents refused the event: {code}"))),
            None => Ok(()),
        }
    }
}
