//! `ferry-verify`: the Lambda that receives "ECS Deployment State Change" events and
//! records whether a deployment Ferry started is healthy. The decisions live in
//! `ferry::verify`; this only wires them up.

use ferry::adapters::cloudwatch::CloudWatchAdapter;
use ferry::adapters::elb::ElbAdapter;
use ferry::adapters::eventbridge::EventBridgeBus;
use ferry::adapters::http::HttpProbe;
use ferry::ports::SystemClock;
use ferry::verify::{Verifier, VerifySettings, response};
use ferry_runtime::{FunctionEnv, Retry, invocation};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let (env, aws) = FunctionEnv::start().await?;
    let (ecs, ledger, notifier) = (env.ecs(&aws), env.ledger(&aws), env.notifiers(&aws));
    let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&aws), &env.event_bus);
    let balancers = ElbAdapter::new(aws.clone());
    let alarms = CloudWatchAdapter::new(aws.clone());
    let verifier = Verifier {
        config: &env.config,
        ecs: &ecs,
        balancers: &balancers,
        alarms: &alarms,
        ledger: &ledger,
        notifier: &notifier,
        bus: &bus,
        probe: &HttpProbe::default(),
        clock: &SystemClock,
        settings: VerifySettings::default(),
    };
    let verifier = &verifier;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        verifier.handle(event.payload, &invocation(&event.context)).await.map(|o| response(&o)).map_err(Retry)
    }))
    .await
}
