//! SDK configuration in one place: one base config loaded at cold start (with a limit on
//! every request), and per (region, role) derived configs cached for the life of the process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_config::sts::AssumeRoleProvider;
use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_smithy_types::error::display::DisplayErrorContext;

/// How long one AWS request may take before the SDK gives up on it and tries again (its
/// standard retry: three attempts in all). Ferry's calls take well under a second; without a
/// limit, a request whose answer never comes would hold an invocation, and the target's lock,
/// until Lambda's timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The SDK config every function and the CLI start from: the environment's region and
/// credentials, and [`REQUEST_TIMEOUT`] on every attempt (`FERRY_AWS_TIMEOUT_SECONDS`
/// overrides it: the sandbox's fault tests use a short one).
pub async fn sdk_config() -> SdkConfig {
    let attempt = std::env::var("FERRY_AWS_TIMEOUT_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(REQUEST_TIMEOUT, Duration::from_secs_f64);
    let timeouts = aws_config::timeout::TimeoutConfig::builder().operation_attempt_timeout(attempt).build();
    aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts).load().await
}

/// Builds and caches clients for the regions and accounts Ferry deploys to.
#[derive(Debug)]
pub struct AwsClients<C> {
    base: SdkConfig,
    make: fn(&SdkConfig) -> C,
    cache: Mutex<HashMap<(String, Option<String>), C>>,
}

impl<C: Clone> AwsClients<C> {
    pub fn new(base: SdkConfig, make: fn(&SdkConfig) -> C) -> Self {
        AwsClients { base, make, cache: Mutex::new(HashMap::new()) }
    }

    /// A client for `region`, acting through `role` when one is given (cross-account).
    pub async fn get(&self, region: &str, role: Option<&str>) -> C {
        let key = (region.to_string(), role.map(str::to_string));
        if let Some(client) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return client.clone();
        }
        let mut config = self.base.to_builder().region(Region::new(region.to_string()));
        if let Some(role) = role {
            let provider = AssumeRoleProvider::builder(role)
                .session_name("ferry")
                .region(Region::new(region.to_string()))
                .configure(&self.base)
                .build()
                .await;
            config = config.credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(provider));
        }
        let client = (self.make)(&config.build());
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, client.clone());
        client
    }
}

/// An SDK call's error (every SDK crate shares the type).
pub(crate) type SdkError<E> = aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>;

/// How an SDK error should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    NotFound,
    Rejected,
    Transient,
}

/// Classifies an SDK error by its HTTP status and service error code; anything that is not
/// a client error (a timeout, a dropped connection, any 5xx, throttling) is transient.
pub(crate) fn classify<E>(err: &SdkError<E>) -> (ErrorKind, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = DisplayErrorContext(err).to_string();
    if err.raw_response().is_some_and(|r| r.status().is_server_error()) {
        // InternalFailure, ServiceUnavailable, ...: whatever the code, AWS says "try again".
        return (ErrorKind::Transient, message);
    }
    let kind = match err.as_service_error().and_then(|e| e.code()) {
        Some(code) if code.ends_with("NotFoundException") || code == "ResourceNotFoundException" => ErrorKind::NotFound,
        Some(code)
            if code.contains("Throttl")
                || code.contains("LimitExceeded")
                || code == "ServerException"
                || code.contains("InternalServer")
                || code.contains("ServiceUnavailable")
                || code == "RequestLimitExceeded" =>
        {
            ErrorKind::Transient
        }
        Some(_) => ErrorKind::Rejected,
        None => ErrorKind::Transient,
    };
    (kind, message)
}
