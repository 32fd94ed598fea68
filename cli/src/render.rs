//! How the CLI shows records and outcomes: JSON shapes and short forms shared by commands.

use ferry::deploy::TargetOutcome;
use ferry::model::Deployment;
use serde_json::{Value, json};

use crate::Output;

pub(crate) fn target_outcome_json(o: &TargetOutcome) -> Value {
    match o {
        TargetOutcome::Started { target, ecs_deployment_id } => {
            json!({"target": target, "outcome": "started", "detail": format!("ECS deployment {ecs_deployment_id}")})
        }
        TargetOutcome::Skipped { target, reason } => json!({"target": target, "outcome": "skipped", "detail": reason}),
        TargetOutcome::Held { target, reason, .. } => json!({"target": target, "outcome": "held", "detail": reason}),
        TargetOutcome::AwaitingApproval { target, reason } => {
            json!({"target": target, "outcome": "awaiting approval", "detail": reason})
        }
        TargetOutcome::Rejected { target, reason } => {
            json!({"target": target, "outcome": "rejected", "detail": reason})
        }
        TargetOutcome::Failed { target, reason } => json!({"target": target, "outcome": "failed", "detail": reason}),
        TargetOutcome::Duplicate { target, state } => {
            json!({"target": target, "outcome": "already handled", "detail": state.as_str()})
        }
    }
}

pub(crate) fn nothing(output: Output, why: String) -> String {
    match output {
        Output::Json => pretty(&json!({"deploys": [], "reason": why})),
        Output::Table => format!("nothing to deploy: {why}\n"),
    }
}

pub(crate) fn deployment_json(d: &Deployment) -> Value {
    json!({
        "id": d.id, "environment": d.target.environment, "service": d.target.service, "region": d.target.region,
        "cluster": d.target.cluster, "account": d.target.account, "repository": d.repository, "tag": d.tag,
        "digest": d.digest, "state": d.state.as_str(), "origin": d.origin.as_str(), "reason": d.reason,
        "task_definition": d.task_definition, "previous_task_definition": d.previous_task_definition,
        "rolls_back": d.rolls_back, "created_at": d.created_at, "updated_at": d.updated_at,
        "duration_seconds": (d.updated_at - d.created_at).num_seconds(), "notify_error": d.notify_error,
    })
}

pub(crate) fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

pub(crate) fn took(d: &Deployment) -> String {
    let secs = (d.updated_at - d.created_at).num_seconds().max(0);
    if secs >= 60 { format!("{}m{:02}s", secs / 60, secs % 60) } else { format!("{secs}s") }
}

/// A digest as messages show it ([`ferry::notify::short_digest`]); `-` for none.
pub(crate) fn short_digest(digest: &str) -> String {
    if digest.is_empty() { "-".into() } else { ferry::notify::short_digest(digest).to_string() }
}

/// `arn:aws:ecs:…:task-definition/shop-api:42` as `shop-api:42`.
pub(crate) fn short_td(arn: &str) -> String {
    arn.rsplit_once('/').map_or(arn, |(_, name)| name).to_string()
}

pub(crate) fn list(items: Option<Vec<String>>) -> String {
    match items {
        Some(items) if !items.is_empty() => items.join(", "),
        _ => "-".into(),
    }
}

pub(crate) fn ellipsis(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= max { line.to_string() } else { line.chars().take(max - 1).collect::<String>() + "…" }
}

pub(crate) fn in_region(region: Option<&str>) -> String {
    region.map_or(String::new(), |r| format!(" ({r})"))
}

pub(crate) fn aws_message<E: aws_sdk_ecr::error::ProvideErrorMetadata, R>(
    e: &aws_sdk_ecr::error::SdkError<E, R>,
) -> String {
    match e.as_service_error() {
        Some(service) => service.message().or(service.code()).unwrap_or("rejected").to_string(),
        None => format!("{e}"),
    }
}
