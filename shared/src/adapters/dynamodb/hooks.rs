//! Lifecycle hook answers on a deployment record: one map attribute per stage (`hook_<STAGE>`),
//! written only by [`DynamoLedger::write_hook`], so a whole-record write never replaces one.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};

use super::codec::s;
use super::contention::{contended, ledger_error};
use super::{DynamoLedger, Item};
use crate::hook::{HookRecord, HookStatus};
use crate::model::Deployment;
use crate::ports::LedgerError;

const PREFIX: &str = "hook_";

fn encode(h: &HookRecord) -> AttributeValue {
    AttributeValue::M(Item::from([
        ("stage".to_string(), s(&h.stage)),
        ("execution_id".to_string(), s(&h.execution_id)),
        ("status".to_string(), s(h.status.as_str())),
        ("attempts".to_string(), AttributeValue::N(h.attempts.to_string())),
        ("evidence".to_string(), s(&h.evidence)),
        ("at".to_string(), s(h.at.to_rfc3339())),
    ]))
}

fn decode(v: &AttributeValue) -> Option<HookRecord> {
    let m = v.as_m().ok()?;
    let text = |k: &str| m.get(k).and_then(|v| v.as_s().ok()).cloned();
    Some(HookRecord {
        stage: text("stage")?,
        execution_id: text("execution_id")?,
        status: HookStatus::parse(&text("status")?)?,
        attempts: m.get("attempts").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok()).unwrap_or(0),
        evidence: text("evidence").unwrap_or_default(),
        at: DateTime::parse_from_rfc3339(&text("at")?).ok()?.with_timezone(&Utc),
    })
}

/// The hook answers an item holds, by stage.
pub(super) fn hooks_from(item: &Item) -> Vec<HookRecord> {
    let mut hooks: Vec<HookRecord> =
        item.iter().filter(|(k, _)| k.starts_with(PREFIX)).filter_map(|(_, v)| decode(v)).collect();
    hooks.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.stage.cmp(&b.stage)));
    hooks
}

impl DynamoLedger {
    /// Writes `hook` on `d`'s record unless that stage's execution is decided already:
    /// `Some(decided)` then.
    pub(super) async fn write_hook(
        &self,
        d: &Deployment,
        hook: &HookRecord,
    ) -> Result<Option<HookRecord>, LedgerError> {
        let attribute = format!("{PREFIX}{}", hook.stage);
        let result = contended("noting a hook's answer", || {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::deployment_key(d)))
                .update_expression("SET #h = :h")
                .condition_expression(
                    "attribute_exists(pk) AND (attribute_not_exists(#h) OR #h.#x <> :x OR #h.#s = :open)",
                )
                .expression_attribute_names("#h", &attribute)
                .expression_attribute_names("#x", "execution_id")
                .expression_attribute_names("#s", "status")
                .expression_attribute_values(":h", encode(hook))
                .expression_attribute_values(":x", s(&hook.execution_id))
                .expression_attribute_values(":open", s(HookStatus::InProgress.as_str()))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
        })
        .await;
        match result {
            Ok(_) => Ok(None),
            Err(e) => match e.as_service_error() {
                Some(failed) if failed.is_conditional_check_failed_exception() => {
                    let old = match failed {
                        aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
                            c,
                        ) => c.item.as_ref(),
                        _ => None,
                    };
                    match old.and_then(|item| item.get(&attribute)).and_then(decode) {
                        Some(decided) => Ok(Some(decided)),
                        None => Err(LedgerError(format!("no deployment record {} to note a hook on", d.id))),
                    }
                }
                _ => Err(ledger_error("noting a hook's answer", e)),
            },
        }
    }
}
