//! Finding a target's records at any depth: by key where the id is known, otherwise by
//! reading its history a page at a time, newest first, never a fixed window of it.

use crate::model::{Deployment, Origin, Target};
use crate::ports::{Ledger, LedgerError};

/// Records read per page.
pub const PAGE: usize = 100;

/// The newest record of `target` that `wanted` accepts, reading pages until one does or
/// the history reaches records from before the second of `floor` (records made after a
/// deployment, its rollback's or ECS's, have ids stamped no earlier than its own).
pub async fn newest<L: Ledger>(
    ledger: &L,
    target: &Target,
    floor: Option<&str>,
    wanted: impl Fn(&Deployment) -> bool,
) -> Result<Option<Deployment>, LedgerError> {
    let mut page = ledger.history(target, PAGE).await?;
    loop {
        let below_floor = |d: &Deployment| floor.is_some_and(|f| stamp(&d.id) < stamp(f));
        if let Some(found) = page.iter().take_while(|d| !below_floor(d)).find(|d| wanted(d)) {
            return Ok(Some(found.clone()));
        }
        let Some(last) = page.last() else { return Ok(None) };
        if page.len() < PAGE || below_floor(last) {
            return Ok(None);
        }
        page = ledger.history_before(target, &last.id.clone(), PAGE).await?;
    }
}

/// `target`'s records pushed since `from` (and the rest of the page that passes it), newest first.
pub async fn since<L: Ledger>(
    ledger: &L,
    target: &Target,
    from: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<Deployment>, LedgerError> {
    let mut all = ledger.history(target, PAGE).await?;
    let mut last_page = all.len();
    // Ids sort by push time: once a page reaches a push before `from`, older pages are outside it.
    while last_page == PAGE
        && let Some(last) = all.last().filter(|d| d.pushed_at >= from)
    {
        let page = ledger.history_before(target, &last.id.clone(), PAGE).await?;
        last_page = page.len();
        all.extend(page);
    }
    Ok(all)
}

/// The newest record of `origin` (a rollback's, Ferry's or ECS's) that rolls `d` back.
pub async fn rollback_of<L: Ledger>(
    ledger: &L,
    d: &Deployment,
    origin: Origin,
) -> Result<Option<Deployment>, LedgerError> {
    let of_d = |r: &Deployment| r.origin == origin && r.rolls_back.as_deref() == Some(d.id.as_str());
    newest(ledger, &d.target, Some(&d.id), of_d).await
}

/// The time an id starts with (`%Y%m%dT%H%M%SZ`, 16 characters).
fn stamp(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}
