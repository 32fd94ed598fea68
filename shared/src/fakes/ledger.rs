//! The ledger in memory, with the DynamoDB ledger's conditions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::lock;
use crate::hook::HookRecord;
use crate::model::{Deployment, Head, Lock, Origin, State, Target};
use crate::ports::{Approved, Begin, Claim, Finish, HeadChange, Ledger, LedgerError};

#[derive(Debug, Default)]
struct LedgerWorld {
    heads: HashMap<String, Head>,
    records: BTreeMap<(String, String), Deployment>,
    /// Claims (to verify, to roll back): record key → the claim.
    claims: HashMap<(String, String), Claim>,
    /// When each record was written FAILED; kept by every later write, as the DynamoDB ledger keeps it.
    failed_at: HashMap<(String, String), DateTime<Utc>>,
    fail: Option<LedgerError>,
    /// Operations (the port's method names) made to fail on their own.
    failing: HashMap<&'static str, LedgerError>,
    /// Writes another writer makes just before the next call of an operation.
    races: Vec<(&'static str, Deployment)>,
    /// Each record's approvers so far.
    approvers: HashMap<(String, String), std::collections::BTreeSet<String>>,
}

impl LedgerWorld {
    fn change_head(&mut self, d: &Deployment, change: HeadChange) {
        let head = self.heads.entry(d.target.key()).or_default();
        match change {
            HeadChange::None => {}
            HeadChange::LastKnownGood => {
                head.last_known_good = Some((d.task_definition.clone().unwrap_or_default(), d.digest.clone()));
            }
            HeadChange::Active => head.active = Some((d.id.clone(), d.digest.clone())),
            HeadChange::Quarantine => {
                if !head.quarantine.contains(&d.digest) {
                    head.quarantine.push(d.digest.clone());
                }
            }
        }
    }

    /// Replaces a record, keeping when it was first written and its hooks' answers (which
    /// only `note_hook` writes).
    fn put(&mut self, d: &Deployment) {
        let key = record_key(d);
        let mut record = d.clone();
        if let Some(existing) = self.records.get(&key) {
            record.created_at = existing.created_at;
            record.hooks = existing.hooks.clone();
        }
        if d.state == State::Failed {
            self.failed_at.insert(key.clone(), d.updated_at);
        }
        self.records.insert(key, record);
    }

    /// Whether the record already holds `d`'s write (the SDK repeating a request whose
    /// answer was lost): the same state at the same moment, or the same FAILED write.
    fn holds_write(&self, d: &Deployment) -> bool {
        let key = record_key(d);
        if d.state == State::Failed {
            return self.failed_at.get(&key) == Some(&d.updated_at);
        }
        self.records.get(&key).is_some_and(|r| r.state == d.state && r.updated_at == d.updated_at)
    }
}

/// The ledger in memory, with the DynamoDB ledger's conditions.
#[derive(Debug, Default)]
pub struct MemoryLedger(Mutex<LedgerWorld>);

impl MemoryLedger {
    /// Every record, in key order (target, then deployment id).
    pub fn records(&self) -> Vec<Deployment> {
        lock(&self.0).records.values().cloned().collect()
    }

    pub fn set_head(&self, target: &Target, head: Head) {
        lock(&self.0).heads.insert(target.key(), head);
    }

    /// Makes every later call fail (as DynamoDB being unreachable would).
    pub fn fail(&self, error: Option<LedgerError>) {
        lock(&self.0).fail = error;
    }

    /// Makes every later call of one operation (`"finish"`) fail, or succeed again (`None`).
    pub fn fail_only(&self, operation: &'static str, error: Option<LedgerError>) {
        let mut w = lock(&self.0);
        match error {
            Some(e) => w.failing.insert(operation, e),
            None => w.failing.remove(operation),
        };
    }

    /// Another writer records `d` (as it is) just before the next call of `operation`: a race
    /// lost at exactly that point.
    pub fn race_next(&self, operation: &'static str, d: Deployment) {
        lock(&self.0).races.push((operation, d));
    }

    fn world(&self, operation: &'static str) -> Result<std::sync::MutexGuard<'_, LedgerWorld>, LedgerError> {
        let mut w = lock(&self.0);
        if let Some(i) = w.races.iter().position(|(op, _)| *op == operation) {
            let (_, d) = w.races.remove(i);
            w.put(&d);
        }
        match w.fail.as_ref().or(w.failing.get(operation)) {
            Some(e) => Err(e.clone()),
            None => Ok(w),
        }
    }
}

/// What DynamoDB's SET leaves of `existing` when a write of `record` does not name it: what
/// the push was given (an approval, an override) and its version.
fn keep_unwritten(record: &mut Deployment, existing: Deployment) {
    record.approval = record.approval.take().or(existing.approval);
    record.freeze_override = record.freeze_override.take().or(existing.freeze_override);
    record.version = record.version.take().or(existing.version);
    record.image_labels.revision = record.image_labels.revision.take().or(existing.image_labels.revision);
    record.image_labels.created = record.image_labels.created.take().or(existing.image_labels.created);
}

fn record_key(d: &Deployment) -> (String, String) {
    (d.target.key(), d.id.clone())
}

impl Ledger for MemoryLedger {
    async fn begin(
        &self,
        d: &Deployment,
        attempt: &str,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Begin, LedgerError> {
        let mut w = self.world("begin")?;
        let existing = w.records.get(&record_key(d)).cloned();
        if let Some(existing) = existing.as_ref().filter(|e| e.state != State::Pending) {
            return Ok(Begin::Done(existing.state));
        }
        let head = w.heads.entry(d.target.key()).or_default();
        if head.admit(d, now).is_err() {
            return Ok(Begin::Refused(Box::new(head.clone())));
        }
        head.lock = Some(Lock { deployment: d.id.clone(), attempt: attempt.into(), until: lease_until });
        head.newest_pushed_at = Some(d.pushed_at);
        head.newest = Some(d.id.clone());
        // A push without a version (the environment no longer orders by version) clears it.
        head.newest_version = d.version.clone().map(|version| (version, d.tag.clone()));
        head.quarantine.clear(); // a new digest lifts the quarantine of the ones before it
        let mut record = d.clone();
        if let Some(existing) = existing {
            record.created_at = existing.created_at;
            record.hooks = existing.hooks.clone();
            keep_unwritten(&mut record, existing);
        }
        w.records.insert(record_key(d), record);
        Ok(Begin::Started)
    }

    async fn record_skipped(&self, d: &Deployment) -> Result<(), LedgerError> {
        let mut w = self.world("record_skipped")?;
        match w.records.get(&record_key(d)) {
            Some(existing) if existing.state != State::Pending => {}
            _ => {
                w.records.insert(record_key(d), d.clone());
            }
        }
        Ok(())
    }

    async fn finish(&self, d: &Deployment, attempt: &str) -> Result<Finish, LedgerError> {
        let mut w = self.world("finish")?;
        match w.records.get(&record_key(d)) {
            Some(existing) if existing.state != State::Pending => return Ok(Finish::AlreadyIn(existing.state)),
            _ => {}
        }
        let head = w.heads.entry(d.target.key()).or_default();
        if head.lock.as_ref().is_some_and(|l| l.attempt == attempt) {
            head.lock = None;
            if d.state == State::InProgress {
                head.active = Some((d.id.clone(), d.digest.clone()));
            }
            head.held = matches!(d.state, State::Held | State::AwaitingApproval).then(|| d.id.clone());
        }
        let existing = w.records.get(&record_key(d)).cloned();
        let mut record = d.clone();
        if let Some(existing) = existing {
            (record.created_at, record.hooks) = (existing.created_at, existing.hooks.clone());
            keep_unwritten(&mut record, existing);
        }
        w.records.insert(record_key(d), record);
        Ok(Finish::Recorded)
    }

    async fn adopt(&self, d: &Deployment, now: DateTime<Utc>) -> Result<bool, LedgerError> {
        let mut w = self.world("adopt")?;
        if w.records.get(&record_key(d)).is_none_or(|r| r.state != State::Pending) {
            return Ok(false);
        }
        let head = w.heads.entry(d.target.key()).or_default();
        if d.origin == Origin::Ferry {
            if head.lock.as_ref().is_some_and(|l| l.deployment != d.id && l.until > now) {
                return Ok(false);
            }
            head.lock = None;
        }
        head.active = Some((d.id.clone(), d.digest.clone()));
        w.put(d);
        Ok(true)
    }

    async fn approve(
        &self,
        d: &Deployment,
        by: &str,
        required: usize,
        now: DateTime<Utc>,
    ) -> Result<Approved, LedgerError> {
        let mut w = self.world("approve")?;
        let key = record_key(d);
        let Some(mut record) = w.records.get(&key).cloned() else {
            return Err(LedgerError(format!("no deployment record {} to approve", d.id)));
        };
        if record.state != State::AwaitingApproval {
            return Ok(Approved::Decided(record.state));
        }
        let approvers = w.approvers.entry(key).or_default();
        approvers.insert(by.to_string());
        let approvers: Vec<String> = approvers.iter().cloned().collect();
        if approvers.len() < required {
            return Ok(Approved::Counted(approvers));
        }
        record.state = State::Pending;
        record.approval = Some(format!("approved by {}", approvers.join(", ")));
        record.updated_at = now;
        w.put(&record);
        Ok(Approved::Approved)
    }

    async fn transition(&self, d: &Deployment, from: &[State], head: HeadChange) -> Result<bool, LedgerError> {
        let mut w = self.world("transition")?;
        match w.records.get(&record_key(d)) {
            Some(existing) if from.contains(&existing.state) => {
                w.put(d);
                w.change_head(d, head);
                Ok(true)
            }
            // A transaction (a head change) is repeated by its idempotency token instead.
            Some(_) => Ok(head == HeadChange::None && w.holds_write(d)),
            None => Ok(false),
        }
    }

    async fn claim(
        &self,
        d: &Deployment,
        from: State,
        head: HeadChange,
        now: DateTime<Utc>,
        claim: &Claim,
    ) -> Result<bool, LedgerError> {
        let mut w = self.world("claim")?;
        let key = record_key(d);
        let claimable = match w.records.get(&key).map(|r| r.state) {
            Some(state) if state == from => true,
            Some(state) if state == d.state => {
                w.claims.get(&key).is_none_or(|held| held.until < now || held.by == claim.by)
            }
            _ => false,
        };
        if claimable {
            w.claims.insert(key.clone(), claim.clone());
            if let Some(record) = w.records.get_mut(&key) {
                record.state = d.state;
                record.updated_at = now;
            }
            w.change_head(d, head);
        }
        Ok(claimable)
    }

    async fn release_claim(&self, d: &Deployment, held: State, claim: &Claim) -> Result<(), LedgerError> {
        let mut w = self.world("release_claim")?;
        let key = record_key(d);
        if w.claims.get(&key).is_some_and(|c| c.by == claim.by)
            && let Some(record) = w.records.get_mut(&key).filter(|r| r.state == held)
        {
            record.state = d.state;
            w.claims.remove(&key);
        }
        Ok(())
    }

    async fn record_external(&self, d: &Deployment, head: HeadChange) -> Result<bool, LedgerError> {
        let mut w = self.world("record_external")?;
        if w.records.contains_key(&record_key(d)) {
            return Ok(false);
        }
        w.put(d);
        w.change_head(d, head);
        Ok(true)
    }

    async fn note_reason(&self, d: &Deployment, state: State) -> Result<bool, LedgerError> {
        let mut w = self.world("note_reason")?;
        match w.records.get_mut(&record_key(d)).filter(|r| r.state == state && r.reason != d.reason) {
            Some(record) => {
                record.reason = d.reason.clone();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn note_hook(&self, d: &Deployment, hook: &HookRecord) -> Result<Option<HookRecord>, LedgerError> {
        let mut w = self.world("note_hook")?;
        let Some(record) = w.records.get_mut(&record_key(d)) else {
            return Err(LedgerError(format!("no deployment record {} to note a hook on", d.id)));
        };
        let same = |h: &&mut HookRecord| h.stage == hook.stage;
        match record.hooks.iter_mut().find(same) {
            Some(decided) if decided.execution_id == hook.execution_id && decided.status.is_final() => {
                Ok(Some(decided.clone()))
            }
            Some(earlier) => {
                *earlier = hook.clone();
                Ok(None)
            }
            None => {
                record.hooks.push(hook.clone());
                Ok(None)
            }
        }
    }

    async fn lock(
        &self,
        target: &Target,
        holder: &str,
        attempt: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let mut w = self.world("lock")?;
        let head = w.heads.entry(target.key()).or_default();
        if head.lock.as_ref().is_some_and(|l| l.until > now && l.attempt != attempt) {
            return Ok(false);
        }
        head.lock = Some(Lock { deployment: holder.into(), attempt: attempt.into(), until });
        Ok(true)
    }

    async fn unlock(&self, target: &Target, attempt: &str) -> Result<(), LedgerError> {
        let mut w = self.world("unlock")?;
        if let Some(head) = w.heads.get_mut(&target.key())
            && head.lock.as_ref().is_some_and(|l| l.attempt == attempt)
        {
            head.lock = None;
        }
        Ok(())
    }

    async fn release(&self, target: &Target, digest: &str) -> Result<(), LedgerError> {
        let mut w = self.world("release")?;
        if let Some(head) = w.heads.get_mut(&target.key()) {
            head.quarantine.retain(|q| q != digest);
        }
        Ok(())
    }

    async fn note_ecs_event(&self, d: &Deployment, event: &str) -> Result<(), LedgerError> {
        let mut w = self.world("note_ecs_event")?;
        if let Some(record) = w.records.get_mut(&record_key(d)) {
            record.ecs_event = Some(event.to_string());
        }
        Ok(())
    }

    async fn by_ecs_deployment(&self, ecs_deployment_id: &str) -> Result<Option<Deployment>, LedgerError> {
        let w = self.world("by_ecs_deployment")?;
        Ok(w.records.values().find(|d| d.ecs_deployment_id.as_deref() == Some(ecs_deployment_id)).cloned())
    }

    async fn note_notify_error(&self, d: &Deployment, error: &str) -> Result<(), LedgerError> {
        let mut w = self.world("note_notify_error")?;
        if let Some(record) = w.records.get_mut(&record_key(d)) {
            record.notify_error = Some(error.to_string());
        }
        Ok(())
    }

    async fn head(&self, target: &Target) -> Result<Head, LedgerError> {
        Ok(self.world("head")?.heads.get(&target.key()).cloned().unwrap_or_default())
    }

    async fn deployment(&self, target: &Target, id: &str) -> Result<Option<Deployment>, LedgerError> {
        Ok(self.world("deployment")?.records.get(&(target.key(), id.to_string())).cloned())
    }

    async fn history_before(
        &self,
        target: &Target,
        before: &str,
        limit: usize,
    ) -> Result<Vec<Deployment>, LedgerError> {
        let w = self.world("history")?;
        let key = target.key();
        Ok(w.records
            .iter()
            .rev()
            .filter(|((k, id), _)| *k == key && id.as_str() < before)
            .take(limit)
            .map(|(_, d)| d.clone())
            .collect())
    }

    async fn history(&self, target: &Target, limit: usize) -> Result<Vec<Deployment>, LedgerError> {
        let w = self.world("history")?;
        let key = target.key();
        Ok(w.records.iter().rev().filter(|((k, _), _)| *k == key).take(limit).map(|(_, d)| d.clone()).collect())
    }
}
