//! The ledger on DynamoDB: one table.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | a target's head (lock, newest push, active and last-known-good) | `T#<target key>` | `HEAD` |
//! | a deployment on that target | `T#<target key>` | `D#<deployment id>` |
//!
//! A target's history is a query on its pk, newest first (deployment ids sort by push
//! time). The sparse GSI `by-ecs-deployment` (pk `ecs_deployment_id`) finds a deployment
//! from an ECS event. Event de-duplication needs no item of its own: a deployment's id is
//! derived from the event, so a redelivered event meets its own record. Every state
//! change is a conditional write.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};
use chrono::{DateTime, Utc};

use crate::model::{Deployment, Head, Origin, State, Target};
use crate::ports::{Approved, Begin, Claim, Finish, HeadChange, Ledger, LedgerError};

mod approvals;
mod codec;
mod contention;
mod expression;
mod hooks;

use codec::{deployment_fields, deployment_from, head_from, millis, s};
use contention::{contended, failed_check, ledger_error};
use expression::Expression;

pub use contention::CONFLICT_TRIES;

/// Name of the GSI that finds a deployment by its ECS deployment id.
pub const ECS_DEPLOYMENT_INDEX: &str = "by-ecs-deployment";
/// How long deployment records are kept (the table's TTL attribute is `expires_at`).
pub const HISTORY_DAYS: i64 = 400;

type Item = HashMap<String, AttributeValue>;

#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
}

fn pk(target: &Target) -> String {
    format!("T#{}", target.key())
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoLedger { client, table: table.into() }
    }

    fn key(pk: String, sk: String) -> Item {
        HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
    }

    fn deployment_key(d: &Deployment) -> Item {
        Self::key(pk(&d.target), format!("D#{}", d.id))
    }

    fn head_key(target: &Target) -> Item {
        Self::key(pk(target), "HEAD".into())
    }
}

impl Ledger for DynamoLedger {
    async fn begin(
        &self,
        d: &Deployment,
        attempt: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Begin, LedgerError> {
        let mut record = Expression::new();
        deployment_fields(d, &mut record);
        let pending = record.value("pending", s(State::Pending.as_str()));
        let state = record.name("state");
        let record = record.update(
            Self::deployment_key(d),
            &self.table,
            &codec::cleared(d),
            &format!("attribute_not_exists(pk) OR {state} = {pending}"),
        )?;

        let mut head = Expression::new();
        head.set("lock_deployment", s(&d.id));
        head.set("lock_attempt", s(attempt));
        head.set("lock_until", millis(lease_until));
        head.set("newest_pushed_at", millis(d.pushed_at));
        head.set("newest_deployment", s(&d.id));
        // Newer by version where the environment orders so and the head has one (strings
        // compare byte by byte), else by push time: Head::newer_than.
        let pushed = head.name("newest_pushed_at");
        let by_time = format!("(attribute_not_exists({pushed}) OR {pushed} <= :newest_pushed_at)");
        let newer = match &d.version {
            Some(version) => {
                head.set("newest_version", s(version));
                head.set("newest_version_tag", s(&d.tag));
                let newest = head.name("newest_version");
                format!(
                    "((attribute_exists({newest}) AND {newest} <= :newest_version) \
                     OR (attribute_not_exists({newest}) AND {by_time}))"
                )
            }
            None => by_time,
        };
        let until = head.name("lock_until");
        let active = head.name("active_digest");
        let now = head.value("now", millis(now));
        let digest = head.value("digest", s(&d.digest));
        let condition = format!(
            "(attribute_not_exists({until}) OR {until} <= {now}) \
             AND {newer} \
             AND (attribute_not_exists({active}) OR {active} <> {digest}) \
             AND NOT contains(#quarantine, {digest})"
        );
        head.name("quarantine");
        // A new digest lifts the quarantine of the ones that failed before it; a push without a
        // version (the environment no longer orders by version) clears the version taken.
        let mut removed = vec!["quarantine"];
        if d.version.is_none() {
            removed.extend(["newest_version", "newest_version_tag"]);
        }
        let head = head.update(Self::head_key(&d.target), &self.table, &removed, &condition)?;

        let items = vec![
            TransactWriteItem::builder().update(record).build(),
            TransactWriteItem::builder().update(head).build(),
        ];
        match self.transact("starting a deployment", items).await? {
            Ok(()) => Ok(Begin::Started),
            Err(reasons) => {
                if let Some(existing) = failed_check(reasons.first()) {
                    return Ok(Begin::Done(deployment_from(&existing)?.state));
                }
                Ok(Begin::Refused(Box::new(head_from(&failed_check(reasons.get(1)).unwrap_or_default()))))
            }
        }
    }

    async fn record_skipped(&self, d: &Deployment) -> Result<(), LedgerError> {
        self.write_unless_done(d).await
    }

    async fn finish(&self, d: &Deployment, attempt: &str) -> Result<Finish, LedgerError> {
        let record = self.record_update(d, "#state = :s0", &[State::Pending])?;

        let mut head = Expression::new();
        if d.state == State::InProgress {
            head.set("active_deployment", s(&d.id));
            head.set("active_digest", s(&d.digest));
        }
        // The newest push is the one held, or none is: an older held push can no longer deploy.
        let mut release = vec!["lock_deployment", "lock_attempt", "lock_until"];
        if matches!(d.state, State::Held | State::AwaitingApproval) {
            head.set("held_deployment", s(&d.id));
        } else {
            release.push("held_deployment");
        }
        head.set("updated_at", s(d.updated_at.to_rfc3339()));
        let owner = head.name("lock_attempt");
        let me = head.value("attempt", s(attempt));
        let head = head.update(Self::head_key(&d.target), &self.table, &release, &format!("{owner} = {me}"))?;
        let items = vec![
            TransactWriteItem::builder().update(record).build(),
            TransactWriteItem::builder().update(head).build(),
        ];
        match self.transact("recording a deployment's outcome", items).await? {
            Ok(()) => Ok(Finish::Recorded),
            Err(reasons) if let Some(existing) = failed_check(reasons.first()) => {
                tracing::warn!(deployment = %d.id, "outcome already recorded");
                Ok(Finish::AlreadyIn(deployment_from(&existing)?.state))
            }
            Err(_) => {
                // The lock lapsed and another invocation took the target: what this one did
                // must still be on record.
                tracing::error!(deployment = %d.id, "lock lost before the outcome was recorded; recording it anyway");
                self.write_unless_done(d).await.map(|()| Finish::Recorded)
            }
        }
    }

    async fn adopt(&self, d: &Deployment, now: DateTime<Utc>) -> Result<bool, LedgerError> {
        let record = self.record_update(d, "#state = :s0", &[State::Pending])?;

        let mut head = Expression::new();
        head.set("active_deployment", s(&d.id));
        head.set("active_digest", s(&d.digest));
        head.set("updated_at", s(d.updated_at.to_rfc3339()));
        let head = if d.origin == Origin::Ferry {
            // The lock the deploy invocation took for it, unless another deployment has the target now.
            let (holder, until) = (head.name("lock_deployment"), head.name("lock_until"));
            let (me, now) = (head.value("deployment", s(&d.id)), head.value("now", millis(now)));
            let release = ["lock_deployment", "lock_attempt", "lock_until"];
            let condition = format!("attribute_not_exists({until}) OR {holder} = {me} OR {until} <= {now}");
            head.update(Self::head_key(&d.target), &self.table, &release, &condition)?
        } else {
            head.update(Self::head_key(&d.target), &self.table, &[], "")?
        };
        let items = vec![
            TransactWriteItem::builder().update(record).build(),
            TransactWriteItem::builder().update(head).build(),
        ];
        Ok(self.transact("adopting a rollout", items).await?.is_ok())
    }

    async fn transition(&self, d: &Deployment, from: &[State], head: HeadChange) -> Result<bool, LedgerError> {
        let placeholders: Vec<String> = (0..from.len()).map(|i| format!(":s{i}")).collect();
        let record = self.record_update(d, &format!("#state IN ({})", placeholders.join(", ")), from)?;
        self.apply("recording a state change", record, self.head_update(d, head)?).await
    }

    async fn claim(
        &self,
        d: &Deployment,
        from: State,
        head: HeadChange,
        now: DateTime<Utc>,
        claim: &Claim,
    ) -> Result<bool, LedgerError> {
        let mut e = Expression::new();
        e.set("state", s(d.state.as_str()));
        e.set("claim_until", millis(claim.until));
        e.set("claim_by", s(&claim.by));
        e.set("updated_at", s(now.to_rfc3339()));
        e.value("from", s(from.as_str()));
        e.value("now", millis(now));
        let record = e.update(
            Self::deployment_key(d),
            &self.table,
            &[],
            "#state = :from OR (#state = :state AND \
             (attribute_not_exists(#claim_until) OR #claim_until < :now OR #claim_by = :claim_by))",
        )?;
        self.apply("claiming a deployment", record, self.head_update(d, head)?).await
    }

    async fn release_claim(&self, d: &Deployment, held: State, claim: &Claim) -> Result<(), LedgerError> {
        let mut e = Expression::new();
        e.set("state", s(d.state.as_str()));
        e.value("held", s(held.as_str()));
        e.value("by", s(&claim.by));
        e.name("claim_by");
        let update = e.update(
            Self::deployment_key(d),
            &self.table,
            &["claim_until", "claim_by"],
            "#state = :held AND #claim_by = :by",
        )?;
        self.apply("giving a claim back", update, None).await.map(|_| ())
    }

    async fn record_external(&self, d: &Deployment, head: HeadChange) -> Result<bool, LedgerError> {
        let record = self.record_update(d, "attribute_not_exists(pk)", &[])?;
        self.apply("recording an external deployment", record, self.head_update(d, head)?).await
    }

    async fn note_reason(&self, d: &Deployment, state: State) -> Result<bool, LedgerError> {
        contended("noting a reason", || {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::deployment_key(d)))
                .update_expression("SET reason = :r")
                .condition_expression("#state = :s AND (attribute_not_exists(reason) OR reason <> :r)")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":r", s(d.reason.clone().unwrap_or_default()))
                .expression_attribute_values(":s", s(state.as_str()))
                .send()
        })
        .await
        .map(|_| true)
        .or_else(|e| match e.as_service_error() {
            Some(e) if e.is_conditional_check_failed_exception() => Ok(false),
            _ => Err(ledger_error("noting a reason", e)),
        })
    }

    async fn lock(
        &self,
        target: &Target,
        holder: &str,
        attempt: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let result = contended("taking a target's lock", || {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::head_key(target)))
                .update_expression("SET lock_deployment = :holder, lock_attempt = :attempt, lock_until = :until")
                .condition_expression(
                    "attribute_not_exists(lock_until) OR lock_until <= :now OR lock_attempt = :attempt",
                )
                .expression_attribute_values(":holder", s(holder))
                .expression_attribute_values(":attempt", s(attempt))
                .expression_attribute_values(":until", millis(until))
                .expression_attribute_values(":now", millis(now))
                .send()
        })
        .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(ledger_error("taking a target's lock", e)),
        }
    }

    async fn unlock(&self, target: &Target, attempt: &str) -> Result<(), LedgerError> {
        let result = contended("releasing a target's lock", || {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::head_key(target)))
                .update_expression("REMOVE lock_deployment, lock_attempt, lock_until")
                .condition_expression("lock_attempt = :attempt")
                .expression_attribute_values(":attempt", s(attempt))
                .send()
        })
        .await;
        match result {
            Ok(_) => Ok(()),
            // Not (or no longer) ours: nothing to give up.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(ledger_error("releasing a target's lock", e)),
        }
    }

    async fn approve(
        &self,
        d: &Deployment,
        by: &str,
        required: usize,
        now: DateTime<Utc>,
    ) -> Result<Approved, LedgerError> {
        self.add_approval(d, by, required, now).await
    }

    async fn release(&self, target: &Target, digest: &str) -> Result<(), LedgerError> {
        contended("releasing a quarantined digest", || {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::head_key(target)))
                .update_expression("DELETE quarantine :d")
                .expression_attribute_values(":d", AttributeValue::Ss(vec![digest.to_string()]))
                .send()
        })
        .await
        .map(|_| ())
        .map_err(|e| ledger_error("releasing a quarantined digest", e))
    }

    async fn note_ecs_event(&self, d: &Deployment, event: &str) -> Result<(), LedgerError> {
        contended("noting an ECS event", || {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::deployment_key(d)))
                .update_expression("SET ecs_event = :e")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(":e", s(event))
                .send()
        })
        .await
        .map(|_| ())
        .map_err(|e| ledger_error("noting an ECS event", e))
    }

    async fn by_ecs_deployment(&self, ecs_deployment_id: &str) -> Result<Option<Deployment>, LedgerError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(ECS_DEPLOYMENT_INDEX)
            .key_condition_expression("ecs_deployment_id = :id")
            .expression_attribute_values(":id", s(ecs_deployment_id))
            .send()
            .await
            .map_err(|e| ledger_error("finding a deployment", e))?;
        out.items().first().map(deployment_from).transpose()
    }

    async fn note_notify_error(&self, d: &Deployment, error: &str) -> Result<(), LedgerError> {
        contended("noting a notification failure", || {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::deployment_key(d)))
                .update_expression("SET notify_error = :e")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(":e", s(error))
                .send()
        })
        .await
        .map(|_| ())
        .map_err(|e| ledger_error("noting a notification failure", e))
    }

    async fn head(&self, target: &Target) -> Result<Head, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::head_key(target)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| ledger_error("reading a target's head", e))?;
        Ok(out.item.as_ref().map(head_from).unwrap_or_default())
    }

    async fn note_hook(
        &self,
        d: &Deployment,
        hook: &crate::hook::HookRecord,
    ) -> Result<Option<crate::hook::HookRecord>, LedgerError> {
        self.write_hook(d, hook).await
    }

    async fn deployment(&self, target: &Target, id: &str) -> Result<Option<Deployment>, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(pk(target), format!("D#{id}"))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| ledger_error("reading a deployment", e))?;
        out.item.as_ref().map(deployment_from).transpose()
    }

    async fn history_before(
        &self,
        target: &Target,
        before: &str,
        limit: usize,
    ) -> Result<Vec<Deployment>, LedgerError> {
        // "D#" < every deployment key < "HEAD": below `D#<before>` are older deployments only.
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :d AND :before")
            .expression_attribute_values(":pk", s(pk(target)))
            .expression_attribute_values(":d", s("D#"))
            .expression_attribute_values(":before", s(format!("D#{before}")))
            .scan_index_forward(false)
            .limit(i32::try_from(limit.saturating_add(1)).unwrap_or(i32::MAX))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| ledger_error("reading a target's history", e))?;
        let older = out.items().iter().map(deployment_from).filter(|d| !matches!(d, Ok(d) if d.id.as_str() >= before));
        older.take(limit).collect()
    }

    async fn history(&self, target: &Target, limit: usize) -> Result<Vec<Deployment>, LedgerError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :d)")
            .expression_attribute_values(":pk", s(pk(target)))
            .expression_attribute_values(":d", s("D#"))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| ledger_error("reading a target's history", e))?;
        out.items().iter().map(deployment_from).collect()
    }
}
