//! Freeze windows: times an environment takes no deployments. A push in one is held and
//! deployed when the freeze ends; rollbacks are never frozen.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

/// One window, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeze {
    pub when: When,
    /// The clock the window is written in (IANA name).
    pub timezone: Tz,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// Every week on `days` (every day when empty), from `from` to `to`; a `to` at or before
    /// `from` is the next day's (the window crosses midnight).
    Weekly { days: Vec<Weekday>, from: NaiveTime, to: NaiveTime },
    /// Once, from one date and time to another.
    Once { from: NaiveDateTime, to: NaiveDateTime },
}

/// Why and until when an environment is frozen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frozen {
    pub reason: String,
    /// When the freeze ends: windows that meet or overlap count as one.
    pub until: DateTime<Utc>,
}

/// The freeze covering `at`, if one does.
pub fn frozen(windows: &[Freeze], at: DateTime<Utc>) -> Option<Frozen> {
    let (window, (_, mut until)) = windows.iter().find_map(|w| w.covering(at).map(|span| (w, span)))?;
    // A week of back-to-back windows is as far as anyone freezes; stop there whatever the config says.
    for _ in 0..64 {
        match windows.iter().find_map(|w| w.covering(until)) {
            Some((_, end)) if end > until => until = end,
            _ => break,
        }
    }
    Some(Frozen { reason: window.describe(), until })
}

/// The next window to start after `at`: its start, end and description.
pub fn next(windows: &[Freeze], at: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>, String)> {
    windows
        .iter()
        .filter_map(|w| w.occurrences(at).into_iter().find(|(start, _)| *start > at).map(|(s, e)| (s, e, w.describe())))
        .min_by_key(|(start, _, _)| *start)
}

impl Freeze {
    /// The occurrence of this window that covers `at` (start inclusive, end exclusive).
    pub fn covering(&self, at: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.occurrences(at).into_iter().find(|(start, end)| *start <= at && at < *end)
    }

    /// The window's occurrences from the day before `at` to a week after it, in UTC.
    fn occurrences(&self, at: DateTime<Utc>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        match &self.when {
            When::Once { from, to } => vec![(self.instant(*from), self.instant(*to))],
            When::Weekly { days, from, to } => {
                let today = at.with_timezone(&self.timezone).date_naive();
                (-1..=8)
                    .filter_map(|offset| today.checked_add_signed(Duration::days(offset)))
                    .filter(|day| days.is_empty() || days.contains(&day.weekday()))
                    .map(|day: NaiveDate| {
                        let end_day = if to > from { day } else { day + Duration::days(1) };
                        (self.instant(day.and_time(*from)), self.instant(end_day.and_time(*to)))
                    })
                    .collect()
            }
        }
    }

    /// `local` on the window's clock, in UTC: in a repeated hour the first, in a skipped
    /// hour (daylight saving's spring gap) the moment the clock jumps to.
    fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let tz = self.timezone;
        if let Some(t) = tz.from_local_datetime(&local).earliest() {
            return t.with_timezone(&Utc);
        }
        // Skipped: the first second whose wall-clock time is at or past `local` (a gap is at most
        // a few hours, and the clock only moves forward within the six searched).
        let Some(before) = tz.from_local_datetime(&(local - Duration::hours(3))).earliest() else {
            return local.and_utc();
        };
        let wall = |secs: i64| Utc.timestamp_opt(secs, 0).single().map(|t| t.with_timezone(&tz).naive_local());
        let (mut lo, mut hi) = (before.timestamp(), before.timestamp() + 6 * 3600);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if wall(mid).is_none_or(|w| w >= local) { hi = mid } else { lo = mid + 1 }
        }
        Utc.timestamp_opt(lo, 0).single().unwrap_or_else(|| local.and_utc())
    }

    /// The window in words, its reason first: `holidays (2026-12-24 00:00 to 2026-12-27 00:00 UTC)`.
    pub fn describe(&self) -> String {
        let when = match &self.when {
            When::Weekly { days, from, to } => {
                let days = if days.is_empty() {
                    "every day".to_string()
                } else {
                    days.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
                };
                format!("{days} {} to {} {}", from.format("%H:%M"), to.format("%H:%M"), self.timezone)
            }
            When::Once { from, to } => {
                format!("{} to {} {}", from.format("%Y-%m-%d %H:%M"), to.format("%Y-%m-%d %H:%M"), self.timezone)
            }
        };
        match &self.reason {
            Some(reason) => format!("{reason} ({when})"),
            None => format!("freeze window {when}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect(s).with_timezone(&Utc)
    }

    fn weekly(days: &[Weekday], from: &str, to: &str, tz: &str) -> Freeze {
        let time = |s: &str| NaiveTime::parse_from_str(s, "%H:%M").expect(s);
        Freeze {
            when: When::Weekly { days: days.to_vec(), from: time(from), to: time(to) },
            timezone: tz.parse().expect(tz),
            reason: None,
        }
    }

    #[test]
    fn a_weekly_window_is_read_on_its_own_clock() {
        // Friday 17:00 to 23:59 in India (UTC+05:30) is Friday 11:30 to 18:29 UTC.
        let friday_evening = [weekly(&[Weekday::Fri], "17:00", "23:59", "Asia/Kolkata")];
        let cases = [
            ("2026-12-04T11:29:59Z", None),
            ("2026-12-04T11:30:00Z", Some("2026-12-04T18:29:00Z")),
            ("2026-12-04T18:28:59Z", Some("2026-12-04T18:29:00Z")),
            ("2026-12-04T18:29:00Z", None),
            ("2026-12-05T12:00:00Z", None), // Saturday
        ];
        for (at, until) in cases {
            assert_eq!(frozen(&friday_evening, utc(at)).map(|f| f.until), until.map(utc), "at {at}");
        }
        let why = frozen(&friday_evening, utc("2026-12-04T12:00:00Z")).expect("frozen").reason;
        assert_eq!(why, "freeze window Fri 17:00 to 23:59 Asia/Kolkata");
    }

    #[test]
    fn a_window_crossing_midnight_ends_the_next_day_and_covers_the_night_after_its_day() {
        // Friday 22:00 to Saturday 06:00, New York: the Saturday morning belongs to Friday's window.
        let nights = [weekly(&[Weekday::Fri], "22:00", "06:00", "America/New_York")];
        let cases = [
            ("2026-12-05T02:59:00Z", None),                         // Fri 21:59 EST
            ("2026-12-05T03:00:00Z", Some("2026-12-05T11:00:00Z")), // Fri 22:00 EST
            ("2026-12-05T10:59:00Z", Some("2026-12-05T11:00:00Z")), // Sat 05:59 EST
            ("2026-12-05T11:00:00Z", None),
            ("2026-12-06T04:00:00Z", None), // Sat 23:00: Saturday is not a day of the window
        ];
        for (at, until) in cases {
            assert_eq!(frozen(&nights, utc(at)).map(|f| f.until), until.map(utc), "at {at}");
        }
    }

    #[test]
    fn daylight_saving_moves_the_window_with_the_local_clock() {
        // Every day 09:00 to 10:00 in London: 09:00 UTC in winter, 08:00 UTC in summer.
        let mornings = [weekly(&[], "09:00", "10:00", "Europe/London")];
        assert!(frozen(&mornings, utc("2026-01-15T09:30:00Z")).is_some());
        assert!(frozen(&mornings, utc("2026-07-15T09:30:00Z")).is_none());
        assert!(frozen(&mornings, utc("2026-07-15T08:30:00Z")).is_some());
        // The spring gap (01:00 to 02:00 on 2026-03-29 does not exist): a window starting in it
        // starts when the clock jumps.
        let gap = [weekly(&[Weekday::Sun], "01:30", "03:00", "Europe/London")];
        let f = frozen(&gap, utc("2026-03-29T01:00:00Z")).expect("frozen from 02:00 BST");
        assert_eq!(f.until, utc("2026-03-29T02:00:00Z"));
        assert!(frozen(&gap, utc("2026-03-29T00:59:59Z")).is_none(), "not before the jump");
        // Any start in the gap, on the minute or not, starts at the jump itself.
        for start in ["01:00", "01:15", "01:59"] {
            let w = weekly(&[Weekday::Sun], start, "03:00", "Europe/London");
            assert_eq!(
                w.covering(utc("2026-03-29T01:00:00Z")).map(|(s, _)| s),
                Some(utc("2026-03-29T01:00:00Z")),
                "{start}"
            );
        }
    }

    #[test]
    fn dated_windows_and_back_to_back_windows_freeze_until_the_last_one_ends() {
        let dt = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").expect(s);
        let holidays = Freeze {
            when: When::Once { from: dt("2026-12-24T00:00"), to: dt("2026-12-27T00:00") },
            timezone: Tz::UTC,
            reason: Some("holidays".into()),
        };
        let sundays = weekly(&[Weekday::Sun], "00:00", "00:00", "UTC"); // all of Sunday
        let windows = [holidays.clone(), sundays];
        let f = frozen(&windows, utc("2026-12-25T12:00:00Z")).expect("frozen");
        assert_eq!(f.reason, "holidays (2026-12-24 00:00 to 2026-12-27 00:00 UTC)");
        assert_eq!(f.until, utc("2026-12-28T00:00:00Z"), "Sunday the 27th follows on");
        assert!(frozen(&windows, utc("2026-12-23T23:59:59Z")).is_none());
        assert_eq!(
            next(&windows, utc("2026-12-20T12:00:00Z")).map(|(s, e, _)| (s, e)),
            Some((utc("2026-12-24T00:00:00Z"), utc("2026-12-27T00:00:00Z")))
        );
        assert_eq!(next(&[holidays], utc("2026-12-24T00:00:00Z")), None, "under way is not next; none after");
    }
}
