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
    /// The request is wrong, or forbidden: the same request will fail again.
    Rejected,
    /// Throttling, a 5xx, a timeout, a lost answer: the same request may succeed later.
    Transient,
    /// DynamoDB cancelled the write because a concurrent transaction holds one of its items;
    /// nothing was written, and the write may be tried again at once.
    Conflict,
}

/// Error codes that say "slow down and try again" (the SDK's own list, `aws-runtime`'s
/// `THROTTLING_ERRORS`, which its standard retry retries).
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];
/// Error codes of failures on AWS's side that AWS documents as worth a retry.
const TRANSIENT: &[&str] = &[
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalFailure",
    "InternalServerError",
    "InternalServerException",
    "InternalError",
    "ServerException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
];
/// DynamoDB's answers to a write that met a concurrent transaction on one of its items
/// (<https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html#transaction-conflict-handling>).
const CONFLICT: &[&str] = &["TransactionConflictException", "TransactionConflict"];

/// Classifies an SDK error by what it is (a timeout, a lost answer, AWS's error code and
/// HTTP status), never by its message. A service error with no code is transient only if
/// AWS answered with a 5xx, 429 or 408.
pub(crate) fn classify<E>(err: &SdkError<E>) -> (ErrorKind, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_dynamodb::error::SdkError as S;
    let kind = match err {
        S::TimeoutError(_) | S::ResponseError(_) => ErrorKind::Transient,
        S::DispatchFailure(failure) if failure.is_user() => ErrorKind::Rejected,
        S::DispatchFailure(_) => ErrorKind::Transient,
        S::ServiceError(service) => code_kind(service.err().code(), service.raw().status().as_u16()),
        _ => ErrorKind::Rejected,
    };
    (kind, DisplayErrorContext(err).to_string())
}

fn code_kind(code: Option<&str>, status: u16) -> ErrorKind {
    match code {
        Some(code) if CONFLICT.contains(&code) => ErrorKind::Conflict,
        Some(code) if THROTTLING.contains(&code) || TRANSIENT.contains(&code) => ErrorKind::Transient,
        // A 5xx, a rate limit (429) or a request timeout (408): worth the same request again.
        _ if status >= 500 || status == 429 || status == 408 => ErrorKind::Transient,
        Some(code) if code.ends_with("NotFoundException") || code == "ResourceNotFound" => ErrorKind::NotFound,
        _ => ErrorKind::Rejected,
    }
}

/// A random number, for jitter and request tokens, from the standard library's per-process
/// random hasher keys (no dependency of its own).
pub(crate) fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_classified_by_code_and_status_never_by_message() {
        let cases = [
            (Some("TransactionConflictException"), 400, ErrorKind::Conflict),
            (Some("ThrottlingException"), 400, ErrorKind::Transient),
            (Some("ProvisionedThroughputExceededException"), 400, ErrorKind::Transient),
            (Some("TransactionInProgressException"), 400, ErrorKind::Transient),
            (Some("ServerException"), 500, ErrorKind::Transient),
            (Some("InternalFailure"), 500, ErrorKind::Transient),
            (Some("ClientException"), 400, ErrorKind::Rejected),
            (Some("ServiceNotFoundException"), 400, ErrorKind::NotFound),
            (Some("ResourceNotFoundException"), 400, ErrorKind::NotFound),
            (Some("AccessDeniedException"), 400, ErrorKind::Rejected),
            (Some("ValidationException"), 400, ErrorKind::Rejected),
            // No code: a 5xx, 429 or 408 is worth a retry, any other 4xx is the request's fault.
            (None, 503, ErrorKind::Transient),
            (None, 429, ErrorKind::Transient),
            (None, 408, ErrorKind::Transient),
            (None, 400, ErrorKind::Rejected),
            (None, 403, ErrorKind::Rejected),
        ];
        for (code, status, kind) in cases {
            assert_eq!(code_kind(code, status), kind, "{code:?} (HTTP {status})");
        }
    }
}
