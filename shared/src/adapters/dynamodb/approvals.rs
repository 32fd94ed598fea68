//! Approvals on a deployment record: the approvers so far as a string set (`approvers`),
//! added to only while the record awaits approval.

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};

use super::DynamoLedger;
use super::codec::{deployment_from, s};
use super::contention::{contended, ledger_error};
use crate::model::{Deployment, State};
use crate::ports::{Approved, HeadChange, Ledger, LedgerError};

impl DynamoLedger {
    pub(super) async fn add_approval(
        &self,
        d: &Deployment,
        by: &str,
        required: usize,
        now: DateTime<Utc>,
    ) -> Result<Approved, LedgerError> {
        let result = contended("noting an approval", || {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::deployment_key(d)))
                .update_expression("ADD #a :by")
                .condition_expression("#state = :awaiting")
                .expression_attribute_names("#a", "approvers")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":by", AttributeValue::Ss(vec![by.to_string()]))
                .expression_attribute_values(":awaiting", s(State::AwaitingApproval.as_str()))
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
        })
        .await;
        let item = match result {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(e) => {
                return match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => match c.item.as_ref() {
                        Some(old) => Ok(Approved::Decided(deployment_from(old)?.state)),
                        None => Err(LedgerError(format!("no deployment record {} to approve", d.id))),
                    },
                    _ => Err(ledger_error("noting an approval", e)),
                };
            }
        };
        let mut approvers = item.get("approvers").and_then(|v| v.as_ss().ok()).cloned().unwrap_or_default();
        approvers.sort();
        if approvers.len() < required {
            return Ok(Approved::Counted(approvers));
        }
        let mut approved = deployment_from(&item)?;
        approved.state = State::Pending;
        approved.approval = Some(format!("approved by {}", approvers.join(", ")));
        approved.updated_at = now;
        if self.transition(&approved, &[State::AwaitingApproval], HeadChange::None).await? {
            return Ok(Approved::Approved);
        }
        let now_in = self.deployment(&d.target, &d.id).await?.map_or(State::Pending, |r| r.state);
        Ok(Approved::Decided(now_in))
    }
}
