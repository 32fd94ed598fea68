//! Deployments and heads as DynamoDB items: attribute values, records and head changes as updates, items read back.

use aws_sdk_dynamodb::types::{AttributeValue, Update};
use chrono::{DateTime, Utc};

use super::expression::Expression;
use super::{DynamoLedger, HISTORY_DAYS, Item};
use crate::model::{Deployment, Head, ImageLabels, Lock, Origin, State, Target};
use crate::ports::{HeadChange, LedgerError};

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn millis(t: DateTime<Utc>) -> AttributeValue {
    n(t.timestamp_millis())
}

/// Every attribute of a deployment record; `created_at` is kept from the first write.
pub(super) fn deployment_fields(d: &Deployment, e: &mut Expression) {
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
    if let Some(created) = d.image_labels.created {
        e.set("image_created", s(created.to_rfc3339()));
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
        ("version", &d.version),
        ("approval", &d.approval),
        ("freeze_override", &d.freeze_override),
        ("image_revision", &d.image_labels.revision),
    ];
    for (field, value) in optional {
        if let Some(value) = value {
            e.set(field, s(value));
        }
    }
}

/// What a write of `d` removes: a reason it no longer has (a released push's "held: …").
pub(super) fn cleared(d: &Deployment) -> Vec<&'static str> {
    if d.reason.is_none() { vec!["reason"] } else { Vec::new() }
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

pub(super) fn deployment_from(item: &Item) -> Result<Deployment, LedgerError> {
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
        hooks: super::hooks::hooks_from(item),
        version: text(item, "version"),
        approval: text(item, "approval"),
        freeze_override: text(item, "freeze_override"),
        image_labels: ImageLabels { revision: text(item, "image_revision"), created: time(item, "image_created") },
    })
}

pub(super) fn head_from(item: &Item) -> Head {
    let pair = |a: &str, b: &str| Some((text(item, a)?, text(item, b)?));
    Head {
        lock: match (text(item, "lock_deployment"), text(item, "lock_attempt"), time(item, "lock_until")) {
            (Some(deployment), Some(attempt), Some(until)) => Some(Lock { deployment, attempt, until }),
            _ => None,
        },
        newest_pushed_at: time(item, "newest_pushed_at"),
        newest: text(item, "newest_deployment"),
        newest_version: pair("newest_version", "newest_version_tag"),
        held: text(item, "held_deployment"),
        active: pair("active_deployment", "active_digest"),
        last_known_good: pair("lkg_task_definition", "lkg_digest"),
        quarantine: item.get("quarantine").and_then(|v| v.as_ss().ok()).cloned().unwrap_or_default(),
    }
}

impl DynamoLedger {
    /// The update that writes `d` whole, if the record satisfies `condition` (written with
    /// `#state` for its state); `states` become `:s0`, `:s1`, ….
    pub(super) fn record_update(
        &self,
        d: &Deployment,
        condition: &str,
        states: &[State],
    ) -> Result<Update, LedgerError> {
        let mut e = Expression::new();
        deployment_fields(d, &mut e);
        for (i, state) in states.iter().enumerate() {
            e.value(&format!("s{i}"), s(state.as_str()));
        }
        e.update(Self::deployment_key(d), &self.table, &cleared(d), condition)
    }

    /// The head change a transition carries, if any.
    pub(super) fn head_update(&self, d: &Deployment, change: HeadChange) -> Result<Option<Update>, LedgerError> {
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
}
