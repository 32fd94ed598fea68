//! Writes under contention: SDK errors as ledger errors, conflict retries, two-item transactions, one-item updates.

use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{CancellationReason, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update};

use super::{DynamoLedger, Item};
use crate::adapters::aws::{ErrorKind, SdkError, classify, random};
use crate::model::{Deployment, State};
use crate::ports::LedgerError;

pub(super) fn ledger_error<E>(context: &str, err: SdkError<E>) -> LedgerError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    LedgerError(format!("{context}: {}", classify(&err).1))
}

/// How many times in all a write that met a concurrent transaction on one of its items is
/// sent before the invocation gives up with a retryable error. DynamoDB cancels such a write
/// rather than queueing it, and nothing of it is applied
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html#transaction-conflict-handling>).
pub const CONFLICT_TRIES: u32 = 8;

/// The wait before retry `n` (1-based): a random point in the upper half of 20 ms × 2ⁿ,
/// at most 1 s, so writers that met once spread apart (about 3 s for all seven at most).
fn conflict_backoff(retry: u32) -> Duration {
    let ceiling = (20u64 << retry.min(6)).min(1_000);
    Duration::from_millis(ceiling / 2 + random() % (ceiling / 2 + 1))
}

/// Logged once per conflict absorbed (the storm test counts these lines).
fn conflict_met(context: &str, tries: u32) {
    tracing::info!(write = context, tries, "a concurrent transaction held an item; trying again");
}

/// A ClientRequestToken: one per transaction, repeated only to ask for the same one's answer.
fn request_token() -> String {
    format!("ferry-{:016x}{:016x}", random(), random())
}

/// Sends a single-item write, again while DynamoDB refuses it for a transaction in progress
/// on its item (`TransactionConflictException`), up to [`CONFLICT_TRIES`] times.
pub(super) async fn contended<T, E, F, Fut>(context: &str, mut send: F) -> Result<T, SdkError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E>>>,
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let mut tries = 1;
    loop {
        match send().await {
            Err(err) if tries < CONFLICT_TRIES && classify(&err).0 == ErrorKind::Conflict => {
                conflict_met(context, tries);
                tokio::time::sleep(conflict_backoff(tries)).await;
                tries += 1;
            }
            result => return result,
        }
    }
}

/// Whether `item` already holds what `update` writes: the state it sets, stamped with the
/// same `updated_at` (each write's own moment, to the nanosecond), by the same claimant if
/// it takes a claim; a FAILED write by its `failed_at` stamp, which outlives the state.
fn holds_write(item: &Item, update: &Update) -> bool {
    let values = update.expression_attribute_values();
    let wrote = |field: &str| values.and_then(|v| v.get(&format!(":{field}")));
    let holds = |field: &str| wrote(field).is_some_and(|v| item.get(field) == Some(v));
    if wrote("failed_at").is_some() {
        return holds("failed_at");
    }
    holds("state") && holds("updated_at") && (wrote("claim_by").is_none() || holds("claim_by"))
}

/// The item a cancelled transaction's condition check returned, if that check failed.
pub(super) fn failed_check(reason: Option<&CancellationReason>) -> Option<Item> {
    let reason = reason?;
    (reason.code() == Some("ConditionalCheckFailed")).then(|| reason.item.clone().unwrap_or_default())
}

impl DynamoLedger {
    /// Runs a two-item transaction; `Err(reasons)` when a condition failed. A transaction
    /// cancelled by a conflict is sent again as a new one (nothing of it was applied); one
    /// still in progress from an earlier attempt is asked again with its token for its answer.
    pub(super) async fn transact(
        &self,
        context: &str,
        items: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Vec<CancellationReason>>, LedgerError> {
        let mut token = request_token();
        let mut tries = 1;
        loop {
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .client_request_token(&token)
                .send()
                .await;
            let err = match sent {
                Ok(_) => return Ok(Ok(())),
                Err(err) => err,
            };
            let again = match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                    let reasons = c.cancellation_reasons();
                    if reasons.iter().any(|r| r.code() == Some("TransactionConflict")) {
                        token = request_token();
                        true
                    } else if reasons.iter().any(|r| r.code() == Some("ConditionalCheckFailed")) {
                        return Ok(Err(reasons.to_vec()));
                    } else {
                        false
                    }
                }
                Some(TransactWriteItemsError::TransactionInProgressException(_)) => true,
                _ => false,
            };
            if !again || tries >= CONFLICT_TRIES {
                return Err(ledger_error(context, err));
            }
            conflict_met(context, tries);
            tokio::time::sleep(conflict_backoff(tries)).await;
            tries += 1;
        }
    }

    /// Applies a record update and, atomically with it, a head update; `false` when the
    /// record's condition did not hold.
    pub(super) async fn apply(&self, context: &str, record: Update, head: Option<Update>) -> Result<bool, LedgerError> {
        if let Some(head) = head {
            let items = vec![
                TransactWriteItem::builder().update(record).build(),
                TransactWriteItem::builder().update(head).build(),
            ];
            return Ok(self.transact(context, items).await?.is_ok());
        }
        let result = contended(context, || {
            self.client
                .update_item()
                .table_name(record.table_name())
                .set_key(Some(record.key().clone()))
                .update_expression(record.update_expression())
                .set_condition_expression(record.condition_expression().map(str::to_string))
                .set_expression_attribute_names(record.expression_attribute_names().cloned())
                .set_expression_attribute_values(record.expression_attribute_values().cloned())
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
        })
        .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) => match err.as_service_error() {
                // The SDK repeats a request whose answer was lost (a timeout, a dropped
                // connection); if the first attempt took effect, the repeat fails its
                // condition against this very write, which is done all the same.
                Some(UpdateItemError::ConditionalCheckFailedException(e)) => {
                    Ok(e.item().is_some_and(|old| holds_write(old, &record)))
                }
                _ => Err(ledger_error(context, err)),
            },
        }
    }

    /// Writes a record as it is unless it is already recorded past PENDING.
    pub(super) async fn write_unless_done(&self, d: &Deployment) -> Result<(), LedgerError> {
        let record = self.record_update(d, "attribute_not_exists(pk) OR #state = :s0", &[State::Pending])?;
        self.apply("recording a deployment", record, None).await.map(|_| ())
    }
}
