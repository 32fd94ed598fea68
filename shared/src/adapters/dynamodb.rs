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
use std::future::Future;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};

use super::aws::{ErrorKind, SdkError, classify, random};
use crate::model::{Deployment, Head, Lock, Origin, State, Target};
use crate::ports::{Begin, Claim, Finish, HeadChange, Ledger, LedgerError};

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

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn millis(t: DateTime<Utc>) -> AttributeValue {
    n(t.timestamp_millis())
}

fn ledger_error<E>(context: &str, err: SdkError<E>) -> LedgerError
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
async fn contended<T, E, F, Fut>(context: &str, mut send: F) -> Result<T, SdkError<E>>
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

/// A SET expression over `fields`, with placeholders for every name (many are reserved words).
struct Expression {
    parts: Vec<String>,
    names: HashMap<String, String>,
    values: Item,
}

impl Expression {
    fn new() -> Self {
        Expression { parts: Vec::new(), names: HashMap::new(), values: HashMap::new() }
    }

    fn name(&mut self, field: &str) -> String {
        let key = format!("#{field}");
        self.names.insert(key.clone(), field.to_string());
        key
    }

    fn value(&mut self, field: &str, value: AttributeValue) -> String {
        let key = format!(":{field}");
        self.values.insert(key.clone(), value);
        key
    }

    fn set(&mut self, field: &str, value: AttributeValue) {
        let (name, value) = (self.name(field), self.value(field, value));
        self.parts.push(format!("{name} = {value}"));
    }

    fn set_if_absent(&mut self, field: &str, value: AttributeValue) {
        let (name, value) = (self.name(field), self.value(field, value));
        self.parts.push(format!("{name} = if_not_exists({name}, {value})"));
    }

    fn update(self, key: Item, table: &str, remove: &[&str], condition: &str) -> Result<Update, LedgerError> {
        let mut names = self.names;
        let mut expression = format!("SET {}", self.parts.join(", "));
        if !remove.is_empty() {
            let removed: Vec<String> = remove
                .iter()
                .map(|f| {
                    names.insert(format!("#{f}"), (*f).to_string());
                    format!("#{f}")
                })
                .collect();
            expression.push_str(&format!(" REMOVE {}", removed.join(", ")));
        }
        Update::builder()
            .table_name(table)
            .set_key(Some(key))
            .update_expression(expression)
            .set_condition_expression((!condition.is_empty()).then(|| condition.to_string()))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values((!self.values.is_empty()).then_some(self.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| LedgerError(format!("building an update: {e}")))
    }
}

/// Every attribute of a deployment record; `created_at` is kept from the first write.
fn deployment_fields(d: &Deployment, e: &mut Expression) {
    let t = &d.target;
    e.set("kind", s("deployment"));
    e.set("id", s(&d.id));
    e.set("environment", s(&t.environment));
    e.set("region", s(&t.region));
    e.set("cluster", s(&t.cluster));
    e.set("service", s(&t.service));
    e.set("repository", s(&d.repository));
    e.set("tag", s(&d.tag));
    e.set("digest", s(&d.digest));
    e.set("image", s(&d.image));
    e.set("event_id", s(&d.event_id));
    e.set("pushed_at", s(d.pushed_at.to_rfc3339()));
    e.set("state", s(d.state.as_str()));
    e.set("origin", s(d.origin.as_str()));
    e.set("updated_at", s(d.updated_at.to_rfc3339()));
    e.set("expires_at", n(d.created_at.timestamp() + HISTORY_DAYS * 86_400));
    e.set_if_absent("created_at", s(d.created_at.to_rfc3339()));
    if d.state == State::Failed {
        // Kept by every later write: a repeated FAILED write is known as done after the record moved on.
        e.set("failed_at", s(d.updated_at.to_rfc3339()));
    }
    if let Some(live_at) = d.live_at {
        e.set("live_at", s(live_at.to_rfc3339()));
    }
    let optional = [
        ("account", &t.account),
        ("role_arn", &t.role_arn),
        ("reason", &d.reason),
        ("ecs_deployment_id", &d.ecs_deployment_id),
        ("previous_task_definition", &d.previous_task_definition),
        ("task_definition", &d.task_definition),
        ("notify_error", &d.notify_error),
        ("ecs_event", &d.ecs_event),
        ("rolls_back", &d.rolls_back),
    ];
    for (field, value) in optional {
        if let Some(value) = value {
            e.set(field, s(value));
        }
    }
}

fn text(item: &Item, field: &str) -> Option<String> {
    item.get(field).and_then(|v| v.as_s().ok()).cloned()
}

fn time(item: &Item, field: &str) -> Option<DateTime<Utc>> {
    let v = item.get(field)?;
    match v {
        AttributeValue::S(s) => DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc)),
        AttributeValue::N(n) => n.parse().ok().and_then(DateTime::from_timestamp_millis),
        _ => None,
    }
}

fn deployment_from(item: &Item) -> Result<Deployment, LedgerError> {
    let need = |field: &str| text(item, field).ok_or_else(|| LedgerError(format!("deployment record without {field}")));
    let need_time =
        |field: &str| time(item, field).ok_or_else(|| LedgerError(format!("deployment record without {field}")));
    let state = need("state")?;
    Ok(Deployment {
        id: need("id")?,
        target: Target {
            environment: need("environment")?,
            account: text(item, "account"),
            region: need("region")?,
            cluster: need("cluster")?,
            service: need("service")?,
            role_arn: text(item, "role_arn"),
        },
        repository: need("repository")?,
        tag: need("tag")?,
        digest: need("digest")?,
        image: need("image")?,
        event_id: need("event_id")?,
        pushed_at: need_time("pushed_at")?,
        state: State::parse(&state).ok_or_else(|| LedgerError(format!("unknown state {state:?}")))?,
        reason: text(item, "reason"),
        ecs_deployment_id: text(item, "ecs_deployment_id"),
        previous_task_definition: text(item, "previous_task_definition"),
        task_definition: text(item, "task_definition"),
        created_at: need_time("created_at")?,
        updated_at: need_time("updated_at")?,
        notify_error: text(item, "notify_error"),
        origin: match text(item, "origin") {
            None => Origin::default(),
            Some(o) => Origin::parse(&o).ok_or_else(|| LedgerError(format!("unknown origin {o:?}")))?,
        },
        ecs_event: text(item, "ecs_event"),
        rolls_back: text(item, "rolls_back"),
        live_at: time(item, "live_at"),
    })
}

fn head_from(item: &Item) -> Head {
    let pair = |a: &str, b: &str| Some((text(item, a)?, text(item, b)?));
    Head {
        lock: match (text(item, "lock_deployment"), text(item, "lock_attempt"), time(item, "lock_until")) {
            (Some(deployment), Some(attempt), Some(until)) => Some(Lock { deployment, attempt, until }),
            _ => None,
        },
        newest_pushed_at: time(item, "newest_pushed_at"),
        newest: text(item, "newest_deployment"),
        active: pair("active_deployment", "active_digest"),
        last_known_good: pair("lkg_task_definition", "lkg_digest"),
        quarantine: item.get("quarantine").and_then(|v| v.as_ss().ok()).cloned().unwrap_or_default(),
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
fn failed_check(reason: Option<&CancellationReason>) -> Option<Item> {
    let reason = reason?;
    (reason.code() == Some("ConditionalCheckFailed")).then(|| reason.item.clone().unwrap_or_default())
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

    /// Runs a two-item transaction; `Err(reasons)` when a condition failed. A transaction
    /// cancelled by a conflict is sent again as a new one (nothing of it was applied); one
    /// still in progress from an earlier attempt is asked again with its token for its answer.
    async fn transact(
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

    /// The update that writes `d` whole, if the record satisfies `condition` (written with
    /// `#state` for its state); `states` become `:s0`, `:s1`, ….
    fn record_update(&self, d: &Deployment, condition: &str, states: &[State]) -> Result<Update, LedgerError> {
        let mut e = Expression::new();
        deployment_fields(d, &mut e);
        for (i, state) in states.iter().enumerate() {
            e.value(&format!("s{i}"), s(state.as_str()));
        }
        e.update(Self::deployment_key(d), &self.table, &[], condition)
    }

    /// The head change a transition carries, if any.
    fn head_update(&self, d: &Deployment, change: HeadChange) -> Result<Option<Update>, LedgerError> {
        let mut e = Expression::new();
        match change {
            HeadChange::None => return Ok(None),
            HeadChange::LastKnownGood => {
                e.set("lkg_deployment", s(&d.id));
                e.set("lkg_task_definition", s(d.task_definition.clone().unwrap_or_default()));
                e.set("lkg_digest", s(&d.digest));
            }
            HeadChange::Active => {
                e.set("active_deployment", s(&d.id));
                e.set("active_digest", s(&d.digest));
            }
            HeadChange::Quarantine => {
                e.set("updated_at", s(d.updated_at.to_rfc3339()));
                let mut update = e.update(Self::head_key(&d.target), &self.table, &[], "")?;
                update.update_expression.push_str(" ADD #quarantine :quarantined");
                let names = update.expression_attribute_names.get_or_insert_default();
                names.insert("#quarantine".into(), "quarantine".into());
                let values = update.expression_attribute_values.get_or_insert_default();
                values.insert(":quarantined".into(), AttributeValue::Ss(vec![d.digest.clone()]));
                return Ok(Some(update));
            }
        }
        e.set("updated_at", s(d.updated_at.to_rfc3339()));
        e.update(Self::head_key(&d.target), &self.table, &[], "").map(Some)
    }

    /// Applies a record update and, atomically with it, a head update; `false` when the
    /// record's condition did not hold.
    async fn apply(&self, context: &str, record: Update, head: Option<Update>) -> Result<bool, LedgerError> {
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
    async fn write_unless_done(&self, d: &Deployment) -> Result<(), LedgerError> {
        let record = self.record_update(d, "attribute_not_exists(pk) OR #state = :s0", &[State::Pending])?;
        self.apply("recording a deployment", record, None).await.map(|_| ())
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
            &[],
            &format!("attribute_not_exists(pk) OR {state} = {pending}"),
        )?;

        let mut head = Expression::new();
        head.set("lock_deployment", s(&d.id));
        head.set("lock_attempt", s(attempt));
        head.set("lock_until", millis(lease_until));
        head.set("newest_pushed_at", millis(d.pushed_at));
        head.set("newest_deployment", s(&d.id));
        let until = head.name("lock_until");
        let newest = head.name("newest_pushed_at");
        let active = head.name("active_digest");
        let now = head.value("now", millis(now));
        let digest = head.value("digest", s(&d.digest));
        let condition = format!(
            "(attribute_not_exists({until}) OR {until} <= {now}) \
             AND (attribute_not_exists({newest}) OR {newest} <= :newest_pushed_at) \
             AND (attribute_not_exists({active}) OR {active} <> {digest}) \
             AND NOT contains(#quarantine, {digest})"
        );
        head.name("quarantine");
        // A new digest lifts the quarantine of the ones that failed before it.
        let head = head.update(Self::head_key(&d.target), &self.table, &["quarantine"], &condition)?;

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
        head.set("updated_at", s(d.updated_at.to_rfc3339()));
        let owner = head.name("lock_attempt");
        let me = head.value("attempt", s(attempt));
        let release = ["lock_deployment", "lock_attempt", "lock_until"];
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
