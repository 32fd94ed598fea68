//! `ferry-rollback`: the Lambda that puts the last-known-good revision back when a
//! deployment fails (Ferry's "Deployment Failed", ECS's failure, a configured alarm, an
//! operator's request). The decisions live in `ferry::rollback`; this only wires them up.

use ferry::ports::SystemClock;
use ferry::rollback::{RollbackSettings, Rollbacker};
use ferry_runtime::{FunctionEnv, Retry, invocation};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let (env, aws) = FunctionEnv::start().await?;
    let (ecs, ledger, notifier) = (env.ecs(&aws), env.ledger(&aws), env.notifiers(&aws));
    let handler = Rollbacker {
        config: &env.config,
        ecs: &ecs,
        ledger: &ledger,
        notifier: &notifier,
        clock: &SystemClock,
        settings: RollbackSettings::default(),
    };
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handler
            .handle(event.payload, &invocation(&event.context))
            .await
            .map(|outcomes| json!({ "outcomes": outcomes }))
            .map_err(Retry)
    }))
    .await
}
