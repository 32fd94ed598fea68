//! Ferry's own events on EventBridge: the "Deployment Failed" the rollback function acts on.

use crate::event::{DEPLOYMENT_FAILED, EVENT_SOURCE, failure_detail};
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
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(EVENT_SOURCE)
            .detail_type(DEPLOYMENT_FAILED)
            .detail(failure_detail(d).to_string())
            .build();
        let out =
            self.client.put_events().entries(entry).send().await.map_err(|e| BusError(super::aws::classify(&e).1))?;
        match out.entries().first().and_then(|e| e.error_code()) {
            Some(code) => Err(BusError(format!("PutEvents refused the event: {code}"))),
            None => Ok(()),
        }
    }
}
