//! `ferry-approve`: the Lambda behind a function URL that Slack's interactivity requests reach
//! (a click on Approve or Reject). Everything it decides lives in `ferry::approve`; this only
//! wires it up. It holds no ECS rights: the deploy function carries the decision out.

use ferry::adapters::eventbridge::EventBridgeBus;
use ferry::adapters::slack::SlackReplier;
use ferry::approve::Approver;
use ferry::ports::SystemClock;
use ferry_runtime::FunctionEnv;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let (env, aws) = FunctionEnv::start().await?;
    let secret = env.signing_secret(&aws).await.inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;
    let (ledger, bus) = (env.ledger(&aws), EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&aws), &env.event_bus));
    let approver = Approver {
        config: &env.config,
        ledger: &ledger,
        bus: &bus,
        clock: &SystemClock,
        signing_secret: secret.as_bytes(),
    };
    let (approver, replier) = (&approver, &SlackReplier::new(env.slack_response_origin()));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let answer = approver.handle(event.payload).await;
        if let Some(reply) = &answer.reply
            && let Err(e) = replier.reply(reply).await
        {
            tracing::warn!(error = %e, "could not reply to the clicker");
        }
        Ok::<_, std::convert::Infallible>(answer)
    }))
    .await
}
