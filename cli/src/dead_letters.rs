//! The dead-letter queues `ferry redrive` reads: the events each function gave up on (its SQS
//! on-failure destination); an event handled again is deleted from its queue, one that fails
//! again stays for the next try.

use aws_config::SdkConfig;
use serde_json::{Value, json};

/// The function a dead-letter queue belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Function {
    Deploy,
    Verify,
    Rollback,
}

impl Function {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Function::Deploy => "deploy",
            Function::Verify => "verify",
            Function::Rollback => "rollback",
        }
    }
}

/// One failed event waiting in a queue.
#[derive(Debug, Clone)]
pub(crate) struct DeadLetter {
    pub(crate) function: Function,
    /// SQS's id of the message (its receipt handle changes with every receive).
    pub(crate) id: String,
    pub(crate) receipt: String,
    /// The event as the function received it.
    pub(crate) event: Value,
    /// Why the function's last attempt failed, as Lambda recorded it.
    pub(crate) error: String,
}

/// The event and the error in a queued message: Lambda's on-failure record
/// (`requestPayload`, `responsePayload.errorMessage`), or the bare event an EventBridge
/// rule's own dead-letter queue keeps.
pub(crate) fn unwrap(body: &str) -> Option<(Value, String)> {
    let message: Value = serde_json::from_str(body).ok()?;
    match message.get("requestPayload") {
        Some(event) => {
            let error = message["responsePayload"]["errorMessage"]
                .as_str()
                .or_else(|| message["requestContext"]["condition"].as_str())
                .unwrap_or_default();
            Some((event.clone(), error.to_string()))
        }
        None if message.get("detail-type").is_some() => Some((message, String::new())),
        None => None,
    }
}

/// How long a message stays hidden from other readers while the command works on it (each
/// is deleted once handled, or made visible again): as long as a function may run.
pub(crate) const HIDDEN_SECONDS: i32 = 900;

/// Every message waiting in `queue`; unreadable ones are reported as errors, never deleted.
pub(crate) async fn receive(aws: &SdkConfig, function: Function, queue: &str) -> Result<Vec<DeadLetter>, String> {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let mut letters: Vec<DeadLetter> = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .visibility_timeout(HIDDEN_SECONDS)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(|e| format!("reading {queue}: {}", aws_smithy_types::error::display::DisplayErrorContext(e)))?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(letters);
        }
        for m in messages {
            let (id, receipt) =
                (m.message_id.clone().unwrap_or_default(), m.receipt_handle.clone().unwrap_or_default());
            if letters.iter().any(|l| l.id == id) {
                return Ok(letters);
            }
            let Some((event, error)) = m.body.as_deref().and_then(unwrap) else {
                return Err(format!("{queue}: message {id} is not a failed event"));
            };
            letters.push(DeadLetter { function, id, receipt, event, error });
        }
    }
}

pub(crate) async fn delete(aws: &SdkConfig, queue: &str, letter: &DeadLetter) -> Result<(), String> {
    aws_sdk_sqs::Client::new(aws)
        .delete_message()
        .queue_url(queue)
        .receipt_handle(&letter.receipt)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| format!("deleting from {queue}: {}", aws_smithy_types::error::display::DisplayErrorContext(e)))
}

/// Hides a message from other readers for `seconds` more (0: visible again at once, when it
/// was only listed, or failed again).
pub(crate) async fn hide(aws: &SdkConfig, queue: &str, letter: &DeadLetter, seconds: i32) -> Result<(), String> {
    aws_sdk_sqs::Client::new(aws)
        .change_message_visibility()
        .queue_url(queue)
        .receipt_handle(&letter.receipt)
        .visibility_timeout(seconds)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            format!("returning a message to {queue}: {}", aws_smithy_types::error::display::DisplayErrorContext(e))
        })
}

/// One row of the command's report.
pub(crate) fn row(letter: &DeadLetter, result: &str, detail: &str) -> Value {
    let e = &letter.event;
    json!({"function": letter.function.name(), "event": e["id"], "source": e["source"],
           "detail_type": e["detail-type"], "time": e["time"], "failed_with": letter.error,
           "result": result, "detail": detail})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_failure_records_and_bare_events_both_give_the_event_back() {
        let event = json!({"id": "e1", "source": "aws.ecr", "detail-type": "ECR Image Action", "detail": {}});
        let record = json!({"version": "1.0", "requestContext": {"condition": "RetriesExhausted", "approximateInvokeCount": 3},
                            "requestPayload": event, "responsePayload": {"errorType": "Ferry.Retryable", "errorMessage": "retryable: locked"}});
        assert_eq!(unwrap(&record.to_string()), Some((event.clone(), "retryable: locked".to_string())));
        let timed_out = json!({"requestContext": {"condition": "RetriesExhausted"}, "requestPayload": event});
        assert_eq!(unwrap(&timed_out.to_string()), Some((event.clone(), "RetriesExhausted".to_string())));
        assert_eq!(unwrap(&event.to_string()), Some((event, String::new())));
        assert_eq!(unwrap("not json"), None);
        assert_eq!(unwrap("{\"something\": 1}"), None);
    }
}
