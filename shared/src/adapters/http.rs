//! Ferry's own events on EventBridge, and the HTTP health probe.

use std::time::Duration;

use crate::event::{DEPLOYMENT_FAILED, EVENT_SOURCE, failure_detail};
use crate::model::Deployment;
use crate::ports::{BusError, EventBus, HealthProbe, ProbeResponse};

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

/// GETs health URLs with reqwest.
#[derive(Debug, Clone, Default)]
pub struct HttpProbe {
    http: reqwest::Client,
}

/// The most of a body read for the evidence.
const BODY_LIMIT: usize = 2048;

impl HealthProbe for HttpProbe {
    async fn get(&self, url: &str, timeout: Duration) -> Result<ProbeResponse, String> {
        let response = self.http.get(url).timeout(timeout).send().await.map_err(|e| {
            if e.is_timeout() {
                format!("no answer within {} s", timeout.as_secs())
            } else if e.is_connect() {
                "connection failed".to_string()
            } else {
                format!("request failed: {e}")
            }
        })?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        let mut response = response;
        while body.len() < BODY_LIMIT {
            match tokio::time::timeout(timeout, response.chunk()).await {
                Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        body.truncate(BODY_LIMIT);
        Ok(ProbeResponse { status, body: String::from_utf8_lossy(&body).into_owned() })
    }
}
