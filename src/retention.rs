//! Which backups of one target its retention rules keep. Pure: no I/O, the
//! clock is a parameter. `ops::prune` applies the decisions.
//!
//! A backup is kept if any rule keeps it. The newest backup of a target is
//! always kept, and so is every pinned one. With no rule set, everything is
//! kept. GFS rules (`keep_daily` and the like) keep the newest backup of each
//! of the last N periods *that have a backup* (as restic and Borg do), so a
//! week without backups does not use up the daily rule. Periods are UTC days,
//! ISO weeks, calendar months and years.

use chrono::{DateTime, Datelike, Duration, Utc};
use serde::Serialize;

use crate::config::Retention;

/// One backup as retention sees it.
#[derive(Debug, Clone)]
pub struct Candidate<K> {
    pub key: K,
    /// When the backup's data is from (its start).
    pub time: DateTime<Utc>,
    pub pinned: bool,
}

/// Why a backup is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Reason {
    /// The target's newest backup: never removed.
    Newest,
    Pinned,
    /// No retention rule is configured: everything is kept.
    NoRules,
    /// Among the `keep_last` newest (1 = newest).
    Last {
        rank: u32,
    },
    /// Younger than `keep_days`.
    Days {
        days: u32,
    },
    /// Physical targets: the newest backup older than `keep_days`, from
    /// which (with its WAL) the first moments of the window are restored.
    WindowStart {
        days: u32,
    },
    Daily {
        period: String,
    },
    Weekly {
        period: String,
    },
    Monthly {
        period: String,
    },
    Yearly {
        period: String,
    },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Newest => write!(f, "newest"),
            Reason::Pinned => write!(f, "pinned"),
            Reason::NoRules => write!(f, "no retention rules"),
            Reason::Last { rank } => write!(f, "keep_last #{rank}"),
            Reason::Days { days } => write!(f, "keep_days {days}"),
            Reason::WindowStart { days } => {
                write!(f, "keep_days {days}: restores the start of the window")
            }
            Reason::Daily { period } => write!(f, "keep_daily {period}"),
            Reason::Weekly { period } => write!(f, "keep_weekly {period}"),
            Reason::Monthly { period } => write!(f, "keep_monthly {period}"),
            Reason::Yearly { period } => write!(f, "keep_yearly {period}"),
        }
    }
}

/// The verdict on one backup: kept if and only if `reasons` is not empty.
#[derive(Debug, Clone)]
pub struct Decision<K> {
    pub key: K,
    pub time: DateTime<Utc>,
    pub reasons: Vec<Reason>,
}

impl<K> Decision<K> {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// The UTC day, ISO week, month and year of a time, as printed in reasons.
pub fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}
pub fn week(t: DateTime<Utc>) -> String {
    let w = t.iso_week();
    format!("{}-W{:02}", w.year(), w.week())
}
pub fn month(t: DateTime<Utc>) -> String {
    t.format("%Y-%m").to_string()
}
pub fn year(t: DateTime<Utc>) -> String {
    t.format("%Y").to_string()
}

/// Decide every candidate of one target, newest first.
pub fn decide<K: Clone>(
    rules: &Retention,
    candidates: &[Candidate<K>],
    now: DateTime<Utc>,
) -> Vec<Decision<K>> {
    let mut order: Vec<&Candidate<K>> = candidates.iter().collect();
    // Newest first; among equal times, the later in the input counts as newer.
    order.reverse();
    order.sort_by_key(|c| std::cmp::Reverse(c.time));
    let mut out: Vec<Decision<K>> = order
        .iter()
        .map(|c| Decision {
            key: c.key.clone(),
            time: c.time,
            reasons: Vec::new(),
        })
        .collect();
    if let Some(first) = out.first_mut() {
        first.reasons.push(Reason::Newest);
    }
    for (d, c) in out.iter_mut().zip(&order) {
        if c.pinned {
            d.reasons.push(Reason::Pinned);
        }
        if rules.keeps_everything() {
            d.reasons.push(Reason::NoRules);
        }
    }
    if let Some(n) = rules.keep_last {
        for (rank, d) in out.iter_mut().take(n as usize).enumerate() {
            d.reasons.push(Reason::Last {
                rank: rank as u32 + 1,
            });
        }
    }
    if let Some(days) = rules.keep_days {
        let since = now - Duration::days(i64::from(days));
        for d in out.iter_mut().filter(|d| d.time > since) {
            d.reasons.push(Reason::Days { days });
        }
    }
    type Rule = (
        Option<u32>,
        fn(DateTime<Utc>) -> String,
        fn(String) -> Reason,
    );
    let gfs: [Rule; 4] = [
        (rules.keep_daily, day, |period| Reason::Daily { period }),
        (rules.keep_weekly, week, |period| Reason::Weekly { period }),
        (rules.keep_monthly, month, |period| Reason::Monthly {
            period,
        }),
        (rules.keep_yearly, year, |period| Reason::Yearly { period }),
    ];
    for (n, period_of, reason) in gfs {
        let Some(n) = n else { continue };
        let mut last_period: Option<String> = None;
        let mut periods = 0;
        for d in out.iter_mut() {
            if periods == n {
                break;
            }
            let period = period_of(d.time);
            // Newest first, so the first backup seen in a period is its newest.
            if last_period.as_deref() != Some(period.as_str()) {
                periods += 1;
                last_period = Some(period.clone());
                d.reasons.push(reason(period));
            }
        }
    }
    out
}

/// For point-in-time recovery: every moment of the last `keep_days` must stay
/// restorable, which needs the newest backup taken before the window began
/// (and the WAL from it on). Adds `Reason::WindowStart` to it.
pub fn keep_window_start<K>(rules: &Retention, decisions: &mut [Decision<K>], now: DateTime<Utc>) {
    let Some(days) = rules.keep_days else { return };
    let since = now - Duration::days(i64::from(days));
    // `decisions` is newest first.
    if let Some(d) = decisions.iter_mut().find(|d| d.time <= since) {
        d.reasons.push(Reason::WindowStart { days });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Unpinned candidates keyed by their position in `times`.
    fn candidates(times: &[&str]) -> Vec<Candidate<usize>> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                key: i,
                time: at(t),
                pinned: false,
            })
            .collect()
    }

    fn kept(rules: Retention, times: &[&str], now: &str) -> Vec<usize> {
        let mut k: Vec<usize> = decide(&rules, &candidates(times), at(now))
            .into_iter()
            .filter(|d| d.keep())
            .map(|d| d.key)
            .collect();
        k.sort();
        k
    }

    #[test]
    fn daily_skips_days_without_backups_and_keeps_the_newest_of_each_day() {
        let times = [
            "2026-11-01T02:00:00Z",
            "2026-11-01T14:00:00Z",
            "2026-11-05T02:00:00Z",
            "2026-11-06T02:00:00Z",
            "2026-11-06T03:00:00Z",
        ];
        let rules = Retention {
            keep_daily: Some(3),
            ..Retention::default()
        };
        assert_eq!(kept(rules, &times, "2026-11-07T00:00:00Z"), [1, 2, 4]);
    }

    #[test]
    fn keep_days_counts_back_from_now() {
        let times = ["2026-11-01T00:00:00Z", "2026-11-20T00:00:00Z"];
        let rules = Retention {
            keep_days: Some(7),
            ..Retention::default()
        };
        assert_eq!(kept(rules, &times, "2026-11-25T00:00:00Z"), [1]);
        // The newest is kept even when every backup is older than the window.
        assert_eq!(kept(rules, &times, "2027-01-01T00:00:00Z"), [1]);
    }

    #[test]
    fn no_rules_keeps_everything() {
        let times = ["2020-01-01T00:00:00Z", "2026-11-20T00:00:00Z"];
        assert_eq!(
            kept(Retention::default(), &times, "2026-11-25T00:00:00Z"),
            [0, 1]
        );
    }

    #[test]
    fn iso_weeks_cross_years() {
        assert_eq!(week(at("2027-01-01T00:00:00Z")), "2026-W53");
        assert_eq!(week(at("2026-11-25T00:00:00Z")), "2026-W48");
    }

    #[test]
    fn the_window_start_is_the_newest_backup_before_the_window() {
        let times = [
            "2026-10-20T02:00:00Z",
            "2026-10-24T02:00:00Z",
            "2026-10-26T02:00:00Z",
            "2026-11-20T02:00:00Z",
        ];
        let c = candidates(&times);
        let rules = Retention {
            keep_days: Some(30),
            ..Retention::default()
        };
        let now = at("2026-11-24T12:00:00Z");
        let mut d = decide(&rules, &c, now);
        keep_window_start(&rules, &mut d, now);
        let mut k: Vec<usize> = d.iter().filter(|d| d.keep()).map(|d| d.key).collect();
        k.sort();
        // 10-26 and 11-20 are inside the window; 10-24 starts it; 10-20 goes.
        assert_eq!(k, vec![1, 2, 3]);
        assert!(
            d.iter()
                .any(|d| d.key == 1 && d.reasons == vec![Reason::WindowStart { days: 30 }])
        );
    }
}
