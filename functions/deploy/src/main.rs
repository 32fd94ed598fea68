//! `ferry-deploy`: the Lambda that turns an "ECR Image Action" push event into ECS
//! deployments, and on its schedule reconciles the pushes whose events never came. Everything it decides lives in `ferry::deploy`; this only wires it up.

use ferry::deploy::{DeploySettings, Deployer};
use ferry::ports::SystemClock;
use ferry_runtime::{FunctionEnv, Retry, invocation};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let (env, aws) = FunctionEnv::start().await?;
    let (ecs, ledger, notifier, registry) = (env.ecs(&aws), env.ledger(&aws), env.notifiers(&aws), env.registry(&aws));
    let deployer = Deployer {
        config: &env.config,
        ecs: &ecs,
        ledger: &ledger,
        notifier: &notifier,
        clock: &SystemClock,
        registry: &registry,
        settings: DeploySettings::default(),
    };
    let deployer = &deployer;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        deployer.handle(event.payload, &invocation(&event.context)).await.map_err(Retry)
    }))
    .await
}
