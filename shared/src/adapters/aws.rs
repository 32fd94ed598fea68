//! SDK configuration in one place: one base config loaded at cold start, and per
//! (region, role) derived configs cached for the life of the process.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_config::sts::AssumeRoleProvider;
use aws_config::{Region, SdkConfig};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_smithy_types::error::display::DisplayErrorContext;

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
