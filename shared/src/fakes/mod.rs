//! In-memory ports for handler tests. They keep the same rules as the real adapters
//! (the ledger admits with [`Head::admit`] and only moves records forward), and record
//! every call so tests can assert what happened and what did not.
//!
//! [`Head::admit`]: crate::model::Head::admit

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::Deployment;
use crate::notify::Notification;
use crate::ports::{
    BusError, Clock, EventBus, HealthProbe, Image, Notifier, NotifyError, ProbeResponse, Registry, RegistryError,
};

mod ecs;
mod ledger;

pub use ecs::{FakeBalancers, FakeEcs, FakeService};
pub use ferry_core::testing::{repo_root, sample_event};
pub use ledger::MemoryLedger;

/// An invocation of `function`, each one's own (as Lambda's request ids are), with no
/// deadline: a test's calls are never stopped.
pub fn invocation(function: &str) -> crate::invocation::Invocation {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::invocation::Invocation { attempt: format!("{function}-{n}"), deadline: None }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A clock that only moves when slept on.
#[derive(Debug)]
pub struct FakeClock(Mutex<DateTime<Utc>>);

impl FakeClock {
    pub fn at(now: DateTime<Utc>) -> Self {
        FakeClock(Mutex::new(now))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = lock(&self.0);
        *now += by;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.0)
    }

    async fn sleep(&self, duration: Duration) {
        self.advance(duration);
        tokio::task::yield_now().await;
    }
}

/// Keeps every notification; can be made to fail.
#[derive(Debug, Default)]
pub struct RecordingNotifier {
    sent: Mutex<Vec<Notification>>,
    digests: Mutex<Vec<crate::digest::Digest>>,
    failing: Mutex<Option<String>>,
}

impl RecordingNotifier {
    pub fn sent(&self) -> Vec<Notification> {
        lock(&self.sent).clone()
    }

    pub fn digests(&self) -> Vec<crate::digest::Digest> {
        lock(&self.digests).clone()
    }

    pub fn fail_with(&self, error: Option<&str>) {
        *lock(&self.failing) = error.map(str::to_string);
    }
}

impl Notifier for RecordingNotifier {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        if let Some(e) = lock(&self.failing).clone() {
            return Err(NotifyError(e));
        }
        lock(&self.sent).push(n.clone());
        Ok(())
    }

    async fn digest(&self, digest: &crate::digest::Digest) -> Result<(), NotifyError> {
        if let Some(e) = lock(&self.failing).clone() {
            return Err(NotifyError(e));
        }
        lock(&self.digests).push(digest.clone());
        Ok(())
    }
}

/// Keeps every "Deployment Failed" event; can be made to fail.
#[derive(Debug, Default)]
pub struct RecordingBus {
    sent: Mutex<Vec<Deployment>>,
    decisions: Mutex<Vec<(String, crate::approval::Verdict, String)>>,
    failing: Mutex<bool>,
}

impl RecordingBus {
    pub fn sent(&self) -> Vec<Deployment> {
        lock(&self.sent).clone()
    }

    /// Every decision announced: the deployment's id, the verdict, who decided.
    pub fn decisions(&self) -> Vec<(String, crate::approval::Verdict, String)> {
        lock(&self.decisions).clone()
    }

    pub fn fail(&self, failing: bool) {
        *lock(&self.failing) = failing;
    }
}

impl EventBus for RecordingBus {
    async fn deployment_failed(&self, d: &Deployment) -> Result<(), BusError> {
        if *lock(&self.failing) {
            return Err(BusError("ThrottlingException".into()));
        }
        lock(&self.sent).push(d.clone());
        Ok(())
    }

    async fn decided(&self, d: &Deployment, verdict: crate::approval::Verdict, by: &str) -> Result<(), BusError> {
        if *lock(&self.failing) {
            return Err(BusError("ThrottlingException".into()));
        }
        lock(&self.decisions).push((d.id.clone(), verdict, by.to_string()));
        Ok(())
    }
}

/// ECR in memory: repository → its tagged images; every read is counted.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    images: Mutex<BTreeMap<String, Vec<Image>>>,
    labels: Mutex<BTreeMap<String, crate::model::ImageLabels>>,
    /// What reading any image's labels fails with, if it fails.
    labels_fail: Mutex<Option<RegistryError>>,
    reads: Mutex<usize>,
}

impl MemoryRegistry {
    pub fn add(&self, repository: &str, image: Image) {
        lock(&self.images).entry(repository.to_string()).or_default().push(image);
    }

    /// Gives image `digest` (of any repository) `labels`.
    pub fn label(&self, digest: &str, labels: crate::model::ImageLabels) {
        lock(&self.labels).insert(digest.to_string(), labels);
    }

    /// Makes reading labels fail with `error` (ECR throttling, say).
    pub fn fail_labels(&self, error: Option<RegistryError>) {
        *lock(&self.labels_fail) = error;
    }

    pub fn reads(&self) -> usize {
        *lock(&self.reads)
    }
}

impl Registry for MemoryRegistry {
    async fn images(&self, repository: &str) -> Result<Vec<Image>, RegistryError> {
        *lock(&self.reads) += 1;
        lock(&self.images)
            .get(repository)
            .cloned()
            .ok_or_else(|| RegistryError::Missing(format!("RepositoryNotFoundException: {repository}")))
    }

    async fn pushed_at(&self, repository: &str, _: &str, digest: &str) -> Result<Option<DateTime<Utc>>, RegistryError> {
        let images = self.images(repository).await?;
        Ok(images.into_iter().find(|i| i.digest == digest).map(|i| i.pushed_at))
    }

    async fn labels(&self, _: &str, _: &str, digest: &str) -> Result<crate::model::ImageLabels, RegistryError> {
        if let Some(e) = lock(&self.labels_fail).clone() {
            return Err(e);
        }
        Ok(lock(&self.labels).get(digest).cloned().unwrap_or_default())
    }
}

/// Answers health checks from a script: each GET takes the next answer (the last repeats).
#[derive(Debug, Default)]
pub struct ScriptedProbe {
    answers: Mutex<Vec<Result<ProbeResponse, String>>>,
    requests: Mutex<Vec<(String, Duration)>>,
}

impl ScriptedProbe {
    pub fn answering(answers: Vec<Result<ProbeResponse, String>>) -> Self {
        ScriptedProbe { answers: Mutex::new(answers), requests: Mutex::default() }
    }

    /// Every request made: URL and timeout.
    pub fn requests(&self) -> Vec<(String, Duration)> {
        lock(&self.requests).clone()
    }
}

impl HealthProbe for ScriptedProbe {
    async fn get(&self, url: &str, timeout: Duration) -> Result<ProbeResponse, String> {
        lock(&self.requests).push((url.to_string(), timeout));
        let mut answers = lock(&self.answers);
        match answers.len() {
            0 => Err("no answer scripted".into()),
            1 => answers[0].clone(),
            _ => answers.remove(0),
        }
    }
}

/// CloudWatch alarms in memory: each alarm's state as the next reads see it, or a failure.
#[derive(Debug, Default)]
pub struct FakeAlarms(Mutex<(BTreeMap<String, crate::hook::AlarmState>, Option<crate::ports::EcsError>)>);

impl FakeAlarms {
    /// `name` is in ALARM (or not) since `since`.
    pub fn set(&self, name: &str, in_alarm: bool, since: DateTime<Utc>) {
        let reason = if in_alarm { "Threshold Crossed: 1 datapoint was greater than the threshold" } else { "OK" };
        let state = crate::hook::AlarmState { name: name.into(), in_alarm, since: Some(since), reason: reason.into() };
        lock(&self.0).0.insert(name.into(), state);
    }

    /// Reads fail so until `None`.
    pub fn fail_with(&self, error: Option<crate::ports::EcsError>) {
        lock(&self.0).1 = error;
    }
}

impl crate::ports::Alarms for FakeAlarms {
    async fn states(
        &self,
        _: &crate::model::Target,
        names: &[String],
    ) -> Result<Vec<crate::hook::AlarmState>, crate::ports::EcsError> {
        let alarms = lock(&self.0);
        if let Some(e) = &alarms.1 {
            return Err(e.clone());
        }
        Ok(names.iter().filter_map(|n| alarms.0.get(n).cloned()).collect())
    }
}

/// Slack's interactivity request for `user`'s click on `action` (Ferry's button's `action_id`)
/// for `d`, signed with `secret` at `at`, as the approve function's URL receives it (payload
/// format 2.0: lower-case headers, the form-encoded body as sent).
pub fn slack_click(d: &Deployment, user: &str, action: &str, secret: &[u8], at: DateTime<Utc>) -> serde_json::Value {
    let payload = serde_json::json!({"type": "block_actions", "user": {"id": user},
        "actions": [{"type": "button", "action_id": action,
                     "value": crate::approval::button_value(&d.target.key(), &d.id)}],
        "response_url": "https://hooks.slack.com/actions/T0/1/x"});
    let body: String = format!("payload={payload}")
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'=' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let timestamp = at.timestamp().to_string();
    let signature = crate::approval::slack_signature(secret, &timestamp, body.as_bytes());
    serde_json::json!({"version": "2.0", "rawPath": "/", "isBase64Encoded": false, "body": body,
        "requestContext": {"http": {"method": "POST"}},
        "headers": {"content-type": "application/x-www-form-urlencoded", "x-slack-request-timestamp": timestamp,
                    "x-slack-signature": signature}})
}
