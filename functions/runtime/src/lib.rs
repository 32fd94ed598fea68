//! What every function does at cold start: read its environment and config once, and
//! build its adapters from one SDK config.
//!
//! | variable | meaning |
//! |---|---|
//! | `FERRY_CONFIG` | path of `ferry.toml` (in Lambda, `/opt/ferry.toml` from the config layer) |
//! | `FERRY_TABLE` | the ledger's DynamoDB table |
//! | `FERRY_TOPIC_ARN` | SNS topic for notifications (optional) |
//! | `FERRY_SLACK_SECRET` | Secrets Manager secret with the Slack webhooks (optional) |
//! | `FERRY_EVENT_BUS` | EventBridge bus for Ferry's own events (default `default`) |
//! | `FERRY_AWS_TIMEOUT_SECONDS` | each AWS request's limit before the SDK tries again (default 10) |
//! | `FERRY_ACCOUNT` | Ferry's own AWS account (optional; the template sets it): events from accounts that are neither it nor a target's are rejected |
//! | `FERRY_SLACK_SIGNING_SECRET` | Secrets Manager secret with Slack's signing secret (the approve function's) |

use std::path::PathBuf;

use aws_config::SdkConfig;

use ferry::adapters::dynamodb::DynamoLedger;
use ferry::adapters::ecr::EcrRegistry;
use ferry::adapters::ecs::EcsAdapter;
use ferry::adapters::notifiers::Notifiers;
use ferry::config::Config;
use ferry::invocation::{Invocation, Retryable};

/// A function's settings, from its environment.
#[derive(Debug)]
pub struct FunctionEnv {
    pub config: Config,
    pub table: String,
    pub topic_arn: Option<String>,
    pub slack_secret: Option<String>,
    pub event_bus: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("invalid config: {0}")]
    Config(#[from] ferry::config::ConfigError),
    #[error("{0}")]
    Secret(String),
}

fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl FunctionEnv {
    /// A function's cold start: JSON-ready logging, then its settings and the SDK config.
    /// An invalid config stops the function here, with the file, line and reason in the
    /// log: no event is acted on with it, and failed events wait in the dead-letter queue.
    pub async fn start() -> Result<(FunctionEnv, SdkConfig), StartError> {
        lambda_runtime::tracing::init_default_subscriber();
        let env = FunctionEnv::from_env().inspect_err(|e| tracing::error!(error = %e, "cannot start"))?;
        Ok((env, ferry::adapters::aws::sdk_config().await))
    }

    pub fn from_env() -> Result<FunctionEnv, StartError> {
        let path = PathBuf::from(var("FERRY_CONFIG").ok_or(StartError::Missing("FERRY_CONFIG"))?);
        let mut config = Config::load(&path)?;
        config.home_account = var("FERRY_ACCOUNT");
        Ok(FunctionEnv {
            config,
            table: var("FERRY_TABLE").ok_or(StartError::Missing("FERRY_TABLE"))?,
            topic_arn: var("FERRY_TOPIC_ARN"),
            slack_secret: var("FERRY_SLACK_SECRET"),
            event_bus: var("FERRY_EVENT_BUS").unwrap_or_else(|| "default".into()),
        })
    }

    pub fn ledger(&self, aws: &SdkConfig) -> DynamoLedger {
        DynamoLedger::new(aws_sdk_dynamodb::Client::new(aws), &self.table)
    }

    pub fn ecs(&self, aws: &SdkConfig) -> EcsAdapter {
        EcsAdapter::new(aws.clone())
    }

    pub fn registry(&self, aws: &SdkConfig) -> EcrRegistry {
        EcrRegistry::new(aws)
    }

    /// Where the approve function may post its replies to clicks: Slack's hooks, unless
    /// `FERRY_SLACK_RESPONSE_ORIGIN` says otherwise (the sandbox's stand-in for Slack).
    pub fn slack_response_origin(&self) -> String {
        var("FERRY_SLACK_RESPONSE_ORIGIN").unwrap_or_else(|| ferry::approval::SLACK_RESPONSE_ORIGIN.into())
    }

    /// Slack's signing secret, read once at cold start (the approve function's).
    pub async fn signing_secret(&self, aws: &SdkConfig) -> Result<String, StartError> {
        let id = var("FERRY_SLACK_SIGNING_SECRET").ok_or(StartError::Missing("FERRY_SLACK_SIGNING_SECRET"))?;
        ferry::adapters::slack::signing_secret(&aws_sdk_secretsmanager::Client::new(aws), &id)
            .await
            .map_err(StartError::Secret)
    }

    pub fn notifiers(&self, aws: &SdkConfig) -> Notifiers {
        Notifiers::new(aws, self.topic_arn.as_deref(), self.slack_secret.as_deref())
    }
}

/// A handler's error as the Lambda runtime reports it: only what a retry can fix is an
/// error at all, so EventBridge delivers the event again.
#[derive(Debug)]
pub struct Retry(pub Retryable);

impl From<Retry> for lambda_runtime::Diagnostic {
    fn from(e: Retry) -> lambda_runtime::Diagnostic {
        lambda_runtime::Diagnostic { error_type: "Ferry.Retryable".into(), error_message: e.0.to_string() }
    }
}

/// The invocation Lambda is running: its request id and its deadline.
pub fn invocation(context: &lambda_runtime::Context) -> Invocation {
    Invocation {
        attempt: context.request_id.clone(),
        deadline: chrono::DateTime::from_timestamp_millis(i64::try_from(context.deadline).unwrap_or(i64::MAX)),
    }
}
