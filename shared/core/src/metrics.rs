//! Delivery metrics (the four DORA figures) from the ledger's own records of a group of
//! targets (one service in one environment, in every region it runs in).
//!
//! - **Deployments**: pushes that SUCCEEDED (on any of the group's targets), and per week.
//! - **Lead time**: from the push to the last of the group's targets proven live; and from the
//!   commit, by the image's `org.opencontainers.image.created` label (Ferry's CI examples stamp
//!   the commit's time there; builders stamp the build's), when it has a plausible one.
//! - **Change failure rate**: pushes that FAILED (ROLLING_BACK, ROLLED_BACK, ROLLBACK_FAILED)
//!   after reaching ECS, over pushes that reached ECS and were judged (those and SUCCEEDED).
//!   Left out: what never reached ECS (SKIPPED, HELD, AWAITING_APPROVAL, REJECTED, a push that
//!   FAILED before the service was updated), rollouts still open, and SUPERSEDED ones (a newer
//!   push took over before a verdict).
//! - **Time to restore**: per target, from a failed push's start to the next deployment there
//!   that SUCCEEDED (a rollback, or a fix); a failure not yet restored is counted apart. The
//!   record keeps no time of failure, so a push that failed late (an alarm hours after it went
//!   live) counts its healthy hours too.
//!
//! A push belongs to the window it was pushed in.
//!
//! Changes are Ferry's pushes and deployments made outside Ferry (`external`); rollbacks
//! restore, they are not changes.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::model::{Deployment, Origin, State, Target};

/// The figures for one group of targets over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub deployments: usize,
    pub per_week: f64,
    pub lead_time: Spread,
    /// From the image's build (its `created` label) to live, for images that carry the label.
    pub lead_time_from_commit: Spread,
    /// Pushes that reached ECS, and how many of them failed.
    pub reached_ecs: usize,
    pub failed: usize,
    /// `failed / reached_ecs`; `None` when nothing reached ECS.
    pub change_failure_rate: Option<f64>,
    pub time_to_restore: Spread,
    /// Failures with no deployment that SUCCEEDED after them yet.
    pub unrestored: usize,
}

/// A median and a 90th percentile (nearest rank), in seconds; `None` without samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Spread {
    pub samples: usize,
    pub median_seconds: Option<i64>,
    pub p90_seconds: Option<i64>,
}

impl Spread {
    pub fn of(mut samples: Vec<Duration>) -> Spread {
        samples.sort();
        let rank = |p: usize| {
            let n = samples.len();
            // Nearest rank: the smallest sample with at least p% of the samples at or below it.
            (n > 0).then(|| samples[(n * p).div_ceil(100).max(1) - 1].num_seconds())
        };
        Spread { samples: samples.len(), median_seconds: rank(50), p90_seconds: rank(90) }
    }

    /// `2h10m / 1d01h` (median / p90), or `-` without samples.
    pub fn show(&self) -> String {
        match (self.median_seconds, self.p90_seconds) {
            (Some(m), Some(p)) => format!("{} / {}", human(m), human(p)),
            _ => "-".into(),
        }
    }
}

impl Metrics {
    /// `25% (4/16)`: failed over what reached ECS; `-` when nothing did.
    pub fn failure_rate(&self) -> String {
        self.change_failure_rate
            .map_or("-".into(), |r| format!("{:.0}% ({}/{})", r * 100.0, self.failed, self.reached_ecs))
    }

    /// How many failures are not restored yet, as `+2 open` (empty when none).
    pub fn open(&self) -> String {
        if self.unrestored > 0 { format!("+{} open", self.unrestored) } else { String::new() }
    }

    /// Time to restore and what is still open: `1h00m / 2h00m +2 open`.
    pub fn restore(&self) -> String {
        format!("{} {}", self.time_to_restore.show(), self.open()).trim_end().to_string()
    }
}

/// `2h10m`, `1d01h`, `1m35s`: a duration at a glance.
pub fn human(secs: i64) -> String {
    match secs {
        s if s >= 86_400 => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}m{:02}s", s / 60, s % 60),
    }
}

fn is_change(d: &Deployment) -> bool {
    matches!(d.origin, Origin::Ferry | Origin::External)
}

/// Failed after reaching ECS (a push that failed before the service was updated has no ECS deployment).
fn failed(d: &Deployment) -> bool {
    matches!(d.state, State::Failed | State::RollingBack | State::RolledBack | State::RollbackFailed)
        && d.ecs_deployment_id.is_some()
}

/// When a deployment was proven live: its `live_at`, else when it was last recorded.
fn live(d: &Deployment) -> DateTime<Utc> {
    d.live_at.unwrap_or(d.updated_at)
}

/// The metrics of `records` (every target of the group, any order) pushed in `[since, until)`.
/// Restorations after `until` still count for failures inside it.
pub fn metrics(records: &[Deployment], since: DateTime<Utc>, until: DateTime<Utc>) -> Metrics {
    let inside = |d: &&Deployment| d.pushed_at >= since && d.pushed_at < until;
    // One push on several targets is one change: by its id (made from the push alone).
    let mut pushes: BTreeMap<&str, Vec<&Deployment>> = BTreeMap::new();
    for d in records.iter().filter(inside).filter(|d| is_change(d)) {
        pushes.entry(d.id.as_str()).or_default().push(d);
    }
    let (mut deployments, mut reached, mut failures) = (0, 0, 0);
    let (mut leads, mut from_commit) = (Vec::new(), Vec::new());
    for targets in pushes.values() {
        let any_failed = targets.iter().any(|d| failed(d));
        let succeeded: Vec<&&Deployment> = targets.iter().filter(|d| d.state == State::Succeeded).collect();
        if any_failed || !succeeded.is_empty() {
            reached += 1;
        }
        if any_failed {
            failures += 1;
        } else if !succeeded.is_empty() {
            deployments += 1;
            // The push is out once every target that took it is live; external changes have no push time.
            if succeeded.len() == targets.len() && targets[0].origin == Origin::Ferry {
                let last = succeeded.iter().map(|d| live(d)).max().unwrap_or(targets[0].pushed_at);
                leads.push(last - targets[0].pushed_at);
                // A build time over 30 days before the push is not one (reproducible builds stamp 1970).
                let pushed = targets[0].pushed_at;
                if let Some(built) = targets[0].image_labels.created.filter(|b| *b >= pushed - Duration::days(30)) {
                    from_commit.push((last - built).max(Duration::zero()));
                }
            }
        }
    }
    let (restores, unrestored) = restores(records, since, until);
    // At least an hour: a shorter window says nothing per week.
    let weeks = ((until - since).num_seconds() as f64 / (7.0 * 86_400.0)).max(1.0 / 168.0);
    Metrics {
        deployments,
        per_week: deployments as f64 / weeks,
        lead_time: Spread::of(leads),
        lead_time_from_commit: Spread::of(from_commit),
        reached_ecs: reached,
        failed: failures,
        change_failure_rate: (reached > 0).then(|| failures as f64 / reached as f64),
        time_to_restore: Spread::of(restores),
        unrestored,
    }
}

/// Per target, each failed change inside the window and the first deployment after it that
/// SUCCEEDED there: how long it took, and how many have none yet.
fn restores(records: &[Deployment], since: DateTime<Utc>, until: DateTime<Utc>) -> (Vec<Duration>, usize) {
    let mut by_target: BTreeMap<String, Vec<&Deployment>> = BTreeMap::new();
    for d in records {
        by_target.entry(d.target.key()).or_default().push(d);
    }
    let (mut took, mut unrestored) = (Vec::new(), 0);
    for list in by_target.values_mut() {
        list.sort_by_key(|d| d.created_at);
        let mut seen = BTreeSet::new();
        for (i, d) in list.iter().enumerate() {
            if !is_change(d) || !failed(d) || d.pushed_at < since || d.pushed_at >= until || !seen.insert(&d.id) {
                continue;
            }
            match list[i + 1..].iter().find(|later| later.state == State::Succeeded) {
                Some(fixed) => took.push(live(fixed) - d.created_at),
                None => unrestored += 1,
            }
        }
    }
    (took, unrestored)
}

/// The figures of one service in one environment, or of the whole environment (`service: None`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub environment: String,
    pub service: Option<String>,
    pub metrics: Metrics,
}

/// One row per environment and service, then one for the whole environment, in the order the
/// targets come (the config's); `targets` pairs each target with its records.
pub fn rows(targets: &[(Target, Vec<Deployment>)], since: DateTime<Utc>, until: DateTime<Utc>) -> Vec<Row> {
    // Each environment with its services' records, in the order first met.
    type Services<'a> = Vec<(&'a str, Vec<Deployment>)>;
    let mut environments: Vec<(&str, Services)> = Vec::new();
    for (t, records) in targets {
        let env = match environments.iter().position(|(e, _)| *e == t.environment) {
            Some(i) => &mut environments[i].1,
            None => {
                environments.push((&t.environment, Vec::new()));
                &mut environments.last_mut().expect("just pushed").1
            }
        };
        match env.iter_mut().find(|(s, _)| *s == t.service) {
            Some((_, all)) => all.extend(records.iter().cloned()),
            None => env.push((&t.service, records.clone())),
        }
    }
    let mut rows = Vec::new();
    for (environment, services) in environments {
        let row = |service: Option<&str>, records: &[Deployment]| Row {
            environment: environment.to_string(),
            service: service.map(str::to_string),
            metrics: metrics(records, since, until),
        };
        let whole: Vec<Deployment> = services.iter().flat_map(|(_, r)| r.iter().cloned()).collect();
        rows.extend(services.iter().map(|(service, records)| row(Some(service), records)));
        rows.push(row(None, &whole));
    }
    rows
}

/// The figures of each week of `[since, until)`, oldest first: the last week ends at `until`,
/// the first may be shorter.
pub fn weekly(records: &[Deployment], since: DateTime<Utc>, until: DateTime<Utc>) -> Vec<(DateTime<Utc>, Metrics)> {
    let mut weeks = Vec::new();
    let mut end = until;
    while end > since {
        let start = (end - Duration::weeks(1)).max(since);
        weeks.push((start, metrics(records, start, end)));
        end = start;
    }
    weeks.reverse();
    weeks
}

/// `30d`, `12w`, `48h`: a window's length.
pub fn parse_window(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: i64 = number.parse().map_err(|_| format!("{text:?} is not a window such as 30d, 12w or 48h"))?;
    let length = match unit {
        "d" => Duration::days(n),
        "w" => Duration::weeks(n),
        "h" => Duration::hours(n),
        _ => return Err(format!("{text:?} is not a window such as 30d, 12w or 48h")),
    };
    if n == 0 || n > 3_650 {
        return Err(format!("{text:?}: the window must be 1 to 3650 units long"));
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Push;
    use chrono::TimeZone;

    fn at(hours: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).single().expect("time") + Duration::hours(hours)
    }

    fn target(region: &str) -> Target {
        Target {
            environment: "production".into(),
            account: None,
            region: region.into(),
            cluster: "shop-prod".into(),
            service: "shop-production-api".into(),
            role_arn: None,
        }
    }

    /// A push at `pushed` hours, started one hour later in `region`, in `state`, live `took`
    /// hours after it started.
    fn change(event: &str, region: &str, pushed: i64, state: State, took: i64) -> Deployment {
        let push = Push {
            event_id: event.into(),
            registry_account: "123456789012".into(),
            registry_region: "eu-west-1".into(),
            repository: "shop/api".into(),
            tag: format!("prod-{event}"),
            digest: format!("sha256:{event}"),
            pushed_at: at(pushed),
        };
        let mut d = Deployment::new(&push, target(region), at(pushed + 1));
        d.state = state;
        // Everything but what never reached ECS has its ECS deployment.
        if !matches!(state, State::Skipped | State::Superseded | State::Rejected | State::Held) {
            d.ecs_deployment_id = Some(format!("ecs-svc/{event}"));
        }
        d.updated_at = at(pushed + 1 + took);
        d.live_at = (state == State::Succeeded).then(|| at(pushed + 1 + took));
        d
    }

    fn rollback(of: &Deployment, started: i64, took: i64, state: State) -> Deployment {
        let mut r = change(&format!("rollback-{}", of.event_id), &of.target.region, started - 1, state, took);
        r.origin = Origin::Rollback;
        r.rolls_back = Some(of.id.clone());
        r
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let spread = Spread::of((1..=10).map(Duration::seconds).collect());
        assert_eq!((spread.median_seconds, spread.p90_seconds), (Some(5), Some(9)));
        assert_eq!(Spread::of(vec![Duration::seconds(7)]).p90_seconds, Some(7));
        assert_eq!(Spread::of(Vec::new()), Spread::default());
    }

    #[test]
    fn an_environment_with_no_failures() {
        let records = [
            change("a", "eu-west-1", 0, State::Succeeded, 1),
            change("b", "eu-west-1", 24, State::Succeeded, 3),
            change("c", "eu-west-1", 48, State::Skipped, 0),
            change("d", "eu-west-1", 72, State::Superseded, 0),
            change("e", "eu-west-1", 96, State::Rejected, 0),
        ];
        let m = metrics(&records, at(0), at(7 * 24));
        assert_eq!((m.deployments, m.reached_ecs, m.failed), (2, 2, 0));
        assert_eq!(m.per_week, 2.0);
        assert_eq!(m.change_failure_rate, Some(0.0));
        // Lead time: pushed, started an hour later, live 1 h and 3 h after that.
        assert_eq!((m.lead_time.median_seconds, m.lead_time.p90_seconds), (Some(2 * 3600), Some(4 * 3600)));
        assert_eq!(m.lead_time_from_commit, Spread::default(), "no image says when it was built");
        assert_eq!((m.time_to_restore, m.unrestored), (Spread::default(), 0));
    }

    #[test]
    fn lead_time_from_commit_runs_from_the_images_build_to_the_last_target_live() {
        let mut built =
            [change("a", "eu-west-1", 10, State::Succeeded, 1), change("a", "us-east-1", 10, State::Succeeded, 3)];
        for d in &mut built {
            d.image_labels.created = Some(at(6)); // built four hours before the push
        }
        let unlabelled = change("b", "eu-west-1", 20, State::Succeeded, 1);
        let mut reproducible = change("c", "eu-west-1", 30, State::Succeeded, 1);
        reproducible.image_labels.created = DateTime::from_timestamp(0, 0);
        let m = metrics(&[built[0].clone(), built[1].clone(), unlabelled, reproducible], at(0), at(48));
        // Pushed at 10 h, started at 11 h, live in us-east-1 at 14 h: 8 h from the build.
        assert_eq!(
            m.lead_time_from_commit,
            Spread { samples: 1, median_seconds: Some(8 * 3600), p90_seconds: Some(8 * 3600) }
        );
        assert_eq!(m.lead_time.samples, 3, "every push has a push time; c's build time of 1970 is not one");
    }

    #[test]
    fn one_push_to_three_regions_is_one_change_out_when_the_last_region_is_live() {
        let records = [
            change("a", "eu-west-1", 0, State::Succeeded, 1),
            change("a", "us-east-1", 0, State::Succeeded, 5),
            change("a", "ap-southeast-1", 0, State::Succeeded, 2),
        ];
        let m = metrics(&records, at(0), at(24));
        assert_eq!((m.deployments, m.reached_ecs), (1, 1));
        assert_eq!(m.lead_time.median_seconds, Some(6 * 3600));
    }

    #[test]
    fn failures_and_their_restores_including_a_rollback_to_a_rollbacks_target() {
        let good = change("a", "eu-west-1", 0, State::Succeeded, 1);
        let bad = change("b", "eu-west-1", 10, State::RolledBack, 0);
        // Its rollback puts a's revision back, live two hours after b started.
        let back = rollback(&bad, 12, 1, State::Succeeded);
        // c fails too, and its rollback puts a's revision back again, live as it starts.
        let worse = change("c", "eu-west-1", 20, State::RolledBack, 0);
        let again = rollback(&worse, 22, 0, State::Succeeded);
        // d fails and nothing has restored it yet; e failed before ECS was touched (a migration).
        let last = change("d", "eu-west-1", 30, State::Failed, 0);
        let mut stopped = change("e", "eu-west-1", 40, State::Failed, 0);
        stopped.ecs_deployment_id = None;
        let external = {
            let mut e = change("ext", "eu-west-1", 5, State::Succeeded, 0);
            e.origin = Origin::External;
            e
        };
        let records = [good, bad, back, worse, again, last, stopped, external];
        let m = metrics(&records, at(0), at(7 * 24));
        assert_eq!((m.deployments, m.reached_ecs, m.failed), (2, 5, 3), "a and the external change; b, c, d failed");
        assert_eq!(m.change_failure_rate, Some(0.6));
        assert_eq!(m.lead_time.samples, 1, "an external change has no push time to measure from");
        // b started at 11 h, restored at 13 h (its rollback started at 12 h, live an hour later): 2 h;
        // c started at 21 h, restored at 22 h: 1 h.
        assert_eq!(m.time_to_restore, Spread { samples: 2, median_seconds: Some(3600), p90_seconds: Some(7200) });
        assert_eq!(m.unrestored, 1);
    }

    #[test]
    fn only_what_started_in_the_window_counts() {
        let records =
            [change("a", "eu-west-1", 0, State::Succeeded, 1), change("b", "eu-west-1", 200, State::Succeeded, 1)];
        assert_eq!(metrics(&records, at(100), at(300)).deployments, 1);
        assert_eq!(metrics(&records, at(300), at(400)).change_failure_rate, None, "nothing reached ECS");
    }

    #[test]
    fn rows_per_service_then_the_whole_environment_in_config_order() {
        let mut worker = change("w", "eu-west-1", 0, State::RolledBack, 0);
        worker.target.service = "shop-production-worker".into();
        let mut staging = change("s", "eu-west-1", 0, State::Succeeded, 1);
        staging.target.environment = "staging".into();
        staging.target.service = "shop-staging-api".into();
        let targets = vec![
            (staging.target.clone(), vec![staging]),
            (target("eu-west-1"), vec![change("a", "eu-west-1", 0, State::Succeeded, 1)]),
            (target("us-east-1"), vec![change("a", "us-east-1", 0, State::Succeeded, 2)]),
            (worker.target.clone(), vec![worker]),
        ];
        let rows = rows(&targets, at(0), at(24));
        let seen: Vec<(&str, Option<&str>, usize, usize)> = rows
            .iter()
            .map(|r| (r.environment.as_str(), r.service.as_deref(), r.metrics.deployments, r.metrics.failed))
            .collect();
        assert_eq!(
            seen,
            [
                ("staging", Some("shop-staging-api"), 1, 0),
                ("staging", None, 1, 0),
                ("production", Some("shop-production-api"), 1, 0),
                ("production", Some("shop-production-worker"), 0, 1),
                ("production", None, 1, 1),
            ],
            "one push in two regions is one deployment of the service"
        );
    }

    #[test]
    fn weeks_end_at_the_reports_end_and_the_first_may_be_short() {
        let records = [
            change("a", "eu-west-1", 0, State::Succeeded, 1),
            change("b", "eu-west-1", 200, State::RolledBack, 0),
            change("c", "eu-west-1", 201, State::Succeeded, 1),
        ];
        let weeks = weekly(&records, at(0), at(240));
        let starts: Vec<DateTime<Utc>> = weeks.iter().map(|(start, _)| *start).collect();
        assert_eq!(starts, [at(0), at(72)], "240 h: a 72 h week, then a whole one");
        let counts: Vec<(usize, usize)> = weeks.iter().map(|(_, m)| (m.deployments, m.failed)).collect();
        assert_eq!(counts, [(1, 0), (1, 1)]);
        assert_eq!(weeks[1].1.time_to_restore.samples, 1, "b is restored by c");
    }

    #[test]
    fn durations_read_at_a_glance() {
        let s = Spread { samples: 3, median_seconds: Some(7_800), p90_seconds: Some(90_000) };
        assert_eq!(s.show(), "2h10m / 1d01h");
        assert_eq!(Spread { samples: 1, median_seconds: Some(95), p90_seconds: Some(95) }.show(), "1m35s / 1m35s");
        assert_eq!(Spread::default().show(), "-");
    }

    #[test]
    fn windows_read_as_days_weeks_or_hours() {
        assert_eq!(parse_window("30d"), Ok(Duration::days(30)));
        assert_eq!(parse_window("12w"), Ok(Duration::weeks(12)));
        assert_eq!(parse_window("48h"), Ok(Duration::hours(48)));
        for bad in ["", "30", "d", "0d", "30m", "-1d", "99999d"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }
}
