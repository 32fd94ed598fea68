//! The HTTP health probe: a smoke test's GET, its status and the start of its body.

use std::time::Duration;

use crate::ports::{HealthProbe, ProbeResponse};

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
