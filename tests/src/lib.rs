//! Support for Ferry's integration tests: the local AWS emulator (moto, extended by
//! `tests/harness/ferry_moto.py`), SDK clients pointed at it, a local HTTP sink that
//! plays Slack and SNS subscribers, and a recorder of the AWS actions the code makes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The repository's root: the checkout the tests run in (see [`ferry::fakes::repo_root`]).
pub fn repo() -> PathBuf {
    ferry::fakes::repo_root()
}

/// A name no other test uses, so tests can share one emulator.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{}-{nanos:x}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// The local AWS emulator: the one `FERRY_MOTO_ENDPOINT` names (as `.ci/run` starts it),
/// or a new one for this test process, stopped when dropped.
#[derive(Debug)]
pub struct Emulator {
    pub endpoint: String,
    child: Option<Child>,
}

impl Emulator {
    pub fn start() -> Emulator {
        if let Ok(endpoint) = std::env::var("FERRY_MOTO_ENDPOINT") {
            return Emulator { endpoint, child: None };
        }
        let python = std::env::var("FERRY_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(python)
            .arg(repo().join("tests/harness/ferry_moto.py"))
            .args(["--port", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the moto harness (pip install -r tests/requirements.txt)");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("READY line");
        let endpoint =
            line.trim().strip_prefix("READY ").unwrap_or_else(|| panic!("harness said {line:?}")).to_string();
        Emulator { endpoint, child: Some(child) }
    }

    /// SDK config for `region` pointed at the emulator, with test credentials.
    pub async fn sdk_config(&self, region: &str) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_ecs::config::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "ferry-tests",
            ))
            .load()
            .await
    }

    /// Calls a harness control endpoint (`/_ferry/...`).
    pub async fn control(&self, path: &str, body: Value) -> Value {
        let body = if body.is_null() { String::new() } else { body.to_string() };
        let response = reqwest_like_post(&format!("{}{path}", self.endpoint), &body).await;
        serde_json::from_str(&response).unwrap_or_else(|e| panic!("{path}: {e}: {response}"))
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A minimal HTTP/1.1 POST (or GET with an empty body) over a fresh connection.
async fn reqwest_like_post(url: &str, body: &str) -> String {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let method = if body.is_empty() { "GET" } else { "POST" };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    assert!(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"), "{url}: {head}");
    body.to_string()
}

/// A local HTTP endpoint that keeps every request (path, body) and answers with a
/// settable status: stands in for Slack's webhooks and for SNS's HTTP subscribers.
#[derive(Debug, Clone)]
pub struct HttpSink {
    pub url: String,
    received: Arc<Mutex<Vec<(String, String)>>>,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
}

impl HttpSink {
    pub async fn start() -> HttpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let sink = HttpSink {
            url,
            received: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            delay_ms: Arc::new(AtomicU64::new(0)),
        };
        let (received, status, delay) = (sink.received.clone(), sink.status.clone(), sink.delay_ms.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (received, status, delay) = (received.clone(), status.clone(), delay.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (path, body) = loop {
                        let Ok(n) = stream.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
                        let length = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0usize);
                        if body.len() >= length {
                            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                            break (path, body.to_string());
                        }
                    };
                    received.lock().unwrap_or_else(|p| p.into_inner()).push((path, body));
                    let delay = delay.load(Ordering::Relaxed);
                    if delay > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                    }
                    let code = status.load(Ordering::Relaxed);
                    let reply = format!("HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                    let _ = stream.write_all(reply.as_bytes()).await;
                });
            }
        });
        sink
    }

    /// Bodies received on `path`.
    pub fn bodies(&self, path: &str) -> Vec<String> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }

    pub fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    /// Makes every answer wait this long first (a slow endpoint).
    pub fn delay(&self, delay: std::time::Duration) {
        self.delay_ms.store(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Requests received on `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.bodies(path).len()
    }
}

/// The function whose handler is running; its AWS actions are recorded under its name.
static ACTING: Mutex<&str> = Mutex::new("");
static ACTIONS: Mutex<BTreeMap<&str, BTreeSet<String>>> = Mutex::new(BTreeMap::new());

/// From now on, record AWS actions as `function`'s (each test runs in a process of its own
/// and calls one handler at a time).
pub fn acting_as(function: &'static str) {
    *ACTING.lock().unwrap_or_else(|p| p.into_inner()) = function;
}

/// An SDK interceptor that records the IAM action behind every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ActionRecorder;

impl Intercept for ActionRecorder {
    fn name(&self) -> &'static str {
        "ActionRecorder"
    }

    // Not read_before_execution: a client's interceptors see that hook before the
    // operation's config (which carries its Metadata) is applied.
    fn read_before_serialization(
        &self,
        _: &BeforeSerializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            record(&iam_action(m.service(), m.name()));
        }
        Ok(())
    }
}

/// The IAM action for an SDK operation. A DynamoDB transaction is authorised per item:
/// Ferry's transactions contain only conditional updates.
pub fn iam_action(service: &str, operation: &str) -> String {
    let prefix = match service.to_ascii_lowercase().replace(' ', "").as_str() {
        "ecs" => "ecs",
        "dynamodb" => "dynamodb",
        "sns" => "sns",
        "secretsmanager" => "secretsmanager",
        "ecr" => "ecr",
        "eventbridge" => "events",
        "elasticloadbalancingv2" => "elasticloadbalancing",
        "sts" => "sts",
        other => return format!("{other}:{operation}"),
    };
    let operation = if operation == "TransactWriteItems" { "UpdateItem" } else { operation };
    format!("{prefix}:{operation}")
}

pub fn record(action: &str) {
    let function = *ACTING.lock().unwrap_or_else(|p| p.into_inner());
    ACTIONS.lock().unwrap_or_else(|p| p.into_inner()).entry(function).or_default().insert(action.to_string());
}

/// Actions recorded so far in this process as `function`'s.
pub fn recorded(function: &str) -> BTreeSet<String> {
    ACTIONS.lock().unwrap_or_else(|p| p.into_inner()).get(function).cloned().unwrap_or_default()
}

/// Writes what `function` was seen doing to `tests/.recorded-actions/<function>/<test>.json`,
/// where the infrastructure test compares it with the function's IAM role.
pub fn save_recorded(function: &str, test: &str, actions: &BTreeSet<String>) {
    let dir = repo().join("tests/.recorded-actions").join(function);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let json = serde_json::to_string_pretty(&actions.iter().collect::<Vec<_>>()).expect("json");
    std::fs::write(dir.join(format!("{test}.json")), json).expect("write");
}

/// Clients for the adapters, each with the [`ActionRecorder`].
pub mod clients {
    use super::ActionRecorder;
    use aws_config::SdkConfig;

    pub fn ecs_adapter(base: SdkConfig) -> ferry::adapters::ecs::EcsAdapter {
        ferry::adapters::ecs::EcsAdapter::with_clients(ferry::adapters::aws::AwsClients::new(base, ecs))
    }
    pub fn elb(c: &SdkConfig) -> aws_sdk_elasticloadbalancingv2::Client {
        aws_sdk_elasticloadbalancingv2::Client::from_conf(
            aws_sdk_elasticloadbalancingv2::config::Builder::from(c).interceptor(ActionRecorder).build(),
        )
    }
    pub fn cloudwatch(c: &SdkConfig) -> aws_sdk_cloudwatch::Client {
        aws_sdk_cloudwatch::Client::from_conf(
            aws_sdk_cloudwatch::config::Builder::from(c).interceptor(ActionRecorder).build(),
        )
    }
    pub fn ecs(c: &SdkConfig) -> aws_sdk_ecs::Client {
        aws_sdk_ecs::Client::from_conf(aws_sdk_ecs::config::Builder::from(c).interceptor(ActionRecorder).build())
    }
    pub fn dynamodb(c: &SdkConfig) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(c).interceptor(ActionRecorder).build(),
        )
    }
    pub fn sns(c: &SdkConfig) -> aws_sdk_sns::Client {
        aws_sdk_sns::Client::from_conf(aws_sdk_sns::config::Builder::from(c).interceptor(ActionRecorder).build())
    }
    pub fn eventbridge(c: &SdkConfig) -> aws_sdk_eventbridge::Client {
        aws_sdk_eventbridge::Client::from_conf(
            aws_sdk_eventbridge::config::Builder::from(c).interceptor(ActionRecorder).build(),
        )
    }
    pub fn ecr(c: &SdkConfig) -> aws_sdk_ecr::Client {
        aws_sdk_ecr::Client::from_conf(aws_sdk_ecr::config::Builder::from(c).interceptor(ActionRecorder).build())
    }
    pub fn secrets(c: &SdkConfig) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(c).interceptor(ActionRecorder).build(),
        )
    }
}
