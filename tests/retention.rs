//! Property tests of `retention::decide`: over random backup histories and
//! random rules, every reason it gives is checked against an independent
//! computation of what each rule keeps.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, TimeZone, Utc};
use lifeboat::config::Retention;
use lifeboat::retention::{Candidate, Decision, Reason, decide};
use proptest::prelude::*;

/// The fixed clock: early January, so the history crosses year boundaries,
/// ISO week 2026-W53 and an ISO year that differs from the calendar year.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 2, 6, 30, 15).unwrap()
}

const DAY: i64 = 86_400;
/// About three years, in seconds.
const SPAN: i64 = 3 * 366 * DAY;

/// How long before `now` a backup started, in seconds.
fn offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        // Anywhere in the last three years.
        4 => 0..SPAN,
        // The last two weeks, where keep_days and keep_daily bite.
        2 => 0..14 * DAY,
        // Exactly N days ago: the edge of keep_days.
        1 => (0..=11i64).prop_map(|d| d * DAY),
    ]
}

/// Backup start offsets, many of them clustered: several on the same day,
/// some in the same second.
fn offsets() -> impl Strategy<Value = Vec<i64>> {
    (
        prop::collection::vec(offset(), 1..8),
        prop::collection::vec(
            (
                0..3u8,
                any::<prop::sample::Index>(),
                prop_oneof![Just(0i64), 0..60i64, 0..DAY],
                offset(),
            ),
            0..60,
        ),
    )
        .prop_map(|(bases, picks)| {
            picks
                .into_iter()
                .map(|(kind, base, jitter, fresh)| match kind {
                    // Near one of a few shared times (same second, minute, day).
                    0 | 1 => (bases[base.index(bases.len())] - jitter).max(0),
                    _ => fresh,
                })
                .collect()
        })
}

fn rule() -> impl Strategy<Value = Option<u32>> {
    prop::option::of(1..=10u32)
}

fn retention() -> impl Strategy<Value = Retention> {
    prop_oneof![
        1 => Just(Retention::default()),
        7 => (rule(), rule(), rule(), rule(), rule(), rule()).prop_map(
            |(keep_last, keep_days, keep_daily, keep_weekly, keep_monthly, keep_yearly)| {
                Retention {
                    keep_last,
                    keep_days,
                    keep_daily,
                    keep_weekly,
                    keep_monthly,
                    keep_yearly,
                }
            },
        ),
    ]
}

fn history() -> impl Strategy<Value = Vec<(i64, bool)>> {
    offsets().prop_flat_map(|offs| {
        let n = offs.len();
        (
            Just(offs),
            prop::collection::vec(prop::bool::weighted(0.2), n),
        )
            .prop_map(|(offs, pins)| offs.into_iter().zip(pins).collect())
    })
}

fn candidates(history: &[(i64, bool)]) -> Vec<Candidate<usize>> {
    history
        .iter()
        .enumerate()
        .map(|(i, &(off, pinned))| Candidate {
            key: i,
            time: now() - chrono::Duration::seconds(off),
            pinned,
        })
        .collect()
}

/// Indexes newest first: latest time, and among equal times the later in
/// the input.
fn newest_first(c: &[Candidate<usize>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.len()).collect();
    order.sort_by(|&a, &b| (c[b].time, b).cmp(&(c[a].time, a)));
    order
}

/// A calendar period: a sortable key (later periods sort higher) and its
/// name as printed in reasons.
type Period = fn(DateTime<Utc>) -> ((i32, u32), String);

fn utc_day(t: DateTime<Utc>) -> ((i32, u32), String) {
    (
        (t.year(), t.ordinal()),
        format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day()),
    )
}
fn iso_week(t: DateTime<Utc>) -> ((i32, u32), String) {
    let w = t.iso_week();
    (
        (w.year(), w.week()),
        format!("{:04}-W{:02}", w.year(), w.week()),
    )
}
fn calendar_month(t: DateTime<Utc>) -> ((i32, u32), String) {
    (
        (t.year(), t.month()),
        format!("{:04}-{:02}", t.year(), t.month()),
    )
}
fn calendar_year(t: DateTime<Utc>) -> ((i32, u32), String) {
    ((t.year(), 0), format!("{:04}", t.year()))
}

/// A GFS rule: its name, its setting, its period, and how to make and read
/// the reason it gives.
struct GfsRule {
    name: &'static str,
    n: Option<u32>,
    period: Period,
    make: fn(String) -> Reason,
    pick: fn(&Reason) -> Option<&String>,
}

fn gfs_rules(rules: &Retention) -> [GfsRule; 4] {
    [
        GfsRule {
            name: "keep_daily",
            n: rules.keep_daily,
            period: utc_day,
            make: |period| Reason::Daily { period },
            pick: |r| match r {
                Reason::Daily { period } => Some(period),
                _ => None,
            },
        },
        GfsRule {
            name: "keep_weekly",
            n: rules.keep_weekly,
            period: iso_week,
            make: |period| Reason::Weekly { period },
            pick: |r| match r {
                Reason::Weekly { period } => Some(period),
                _ => None,
            },
        },
        GfsRule {
            name: "keep_monthly",
            n: rules.keep_monthly,
            period: calendar_month,
            make: |period| Reason::Monthly { period },
            pick: |r| match r {
                Reason::Monthly { period } => Some(period),
                _ => None,
            },
        },
        GfsRule {
            name: "keep_yearly",
            n: rules.keep_yearly,
            period: calendar_year,
            make: |period| Reason::Yearly { period },
            pick: |r| match r {
                Reason::Yearly { period } => Some(period),
                _ => None,
            },
        },
    ]
}

/// What a GFS rule keeping `n` periods should keep: the newest backup of
/// each of the `n` latest periods that have a backup, with its period name.
fn expected_gfs(c: &[Candidate<usize>], n: u32, period: Period) -> BTreeMap<usize, String> {
    let order = newest_first(c);
    let mut groups: BTreeMap<(i32, u32), (String, Vec<usize>)> = BTreeMap::new();
    for &i in &order {
        let (key, name) = period(c[i].time);
        groups.entry(key).or_insert((name, Vec::new())).1.push(i);
    }
    groups
        .into_values()
        .rev()
        .take(n as usize)
        // Members were pushed newest first.
        .map(|(name, members)| (members[0], name))
        .collect()
}

/// Every reason each backup should carry, by input index.
fn expected_reasons(rules: &Retention, c: &[Candidate<usize>]) -> Vec<Vec<Reason>> {
    let mut want: Vec<Vec<Reason>> = vec![Vec::new(); c.len()];
    let order = newest_first(c);
    if let Some(&newest) = order.first() {
        want[newest].push(Reason::Newest);
    }
    for (i, cand) in c.iter().enumerate() {
        if cand.pinned {
            want[i].push(Reason::Pinned);
        }
    }
    let no_rule = [
        rules.keep_last,
        rules.keep_days,
        rules.keep_daily,
        rules.keep_weekly,
        rules.keep_monthly,
        rules.keep_yearly,
    ]
    .iter()
    .all(Option::is_none);
    if no_rule {
        for w in &mut want {
            w.push(Reason::NoRules);
        }
    }
    if let Some(n) = rules.keep_last {
        for (rank, &i) in order.iter().take(n as usize).enumerate() {
            want[i].push(Reason::Last {
                rank: rank as u32 + 1,
            });
        }
    }
    if let Some(days) = rules.keep_days {
        let since = now().timestamp() - i64::from(days) * DAY;
        for (i, cand) in c.iter().enumerate() {
            if cand.time.timestamp() > since {
                want[i].push(Reason::Days { days });
            }
        }
    }
    for rule in gfs_rules(rules) {
        let Some(n) = rule.n else { continue };
        for (i, name) in expected_gfs(c, n, rule.period) {
            want[i].push((rule.make)(name));
        }
    }
    want
}

/// The decisions by input index; fails if a key is missing, repeated or
/// unknown.
fn by_key(
    c: &[Candidate<usize>],
    out: &[Decision<usize>],
) -> Result<Vec<Vec<Reason>>, TestCaseError> {
    prop_assert_eq!(out.len(), c.len(), "one decision per candidate");
    let mut got: Vec<Option<Vec<Reason>>> = vec![None; c.len()];
    for d in out {
        prop_assert!(d.key < c.len(), "unknown key {}", d.key);
        prop_assert!(got[d.key].is_none(), "key {} decided twice", d.key);
        prop_assert_eq!(d.time, c[d.key].time, "time of key {}", d.key);
        got[d.key] = Some(d.reasons.clone());
    }
    Ok(got.into_iter().map(Option::unwrap).collect())
}

/// Backups (by input index) carrying a reason that matches `pred`.
fn carrying(reasons: &[Vec<Reason>], pred: impl Fn(&Reason) -> bool) -> BTreeSet<usize> {
    reasons
        .iter()
        .enumerate()
        .filter(|(_, r)| r.iter().any(&pred))
        .map(|(i, _)| i)
        .collect()
}

fn sorted(reasons: &[Reason]) -> Vec<String> {
    let mut s: Vec<String> = reasons.iter().map(|r| format!("{r:?}")).collect();
    s.sort();
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn decide_matches_an_independent_computation(
        rules in retention(),
        history in history(),
    ) {
        let c = candidates(&history);
        let out = decide(&rules, &c, now());
        // 6. Each input key exactly once, with its time.
        let got = by_key(&c, &out)?;
        let want = expected_reasons(&rules, &c);
        let order = newest_first(&c);

        // Decisions come newest first, as documented.
        let out_keys: Vec<usize> = out.iter().map(|d| d.key).collect();
        prop_assert_eq!(&out_keys, &order, "decisions not newest first");

        // 1. The newest is kept, for being the newest, and is the only one.
        let newest = carrying(&got, |r| *r == Reason::Newest);
        prop_assert_eq!(newest, order.first().copied().into_iter().collect::<BTreeSet<_>>());

        // 2. Pinned backups are kept for being pinned, and only they.
        let pinned: BTreeSet<usize> = (0..c.len()).filter(|&i| c[i].pinned).collect();
        prop_assert_eq!(&carrying(&got, |r| *r == Reason::Pinned), &pinned);

        // 3. With no rule set, everything is kept, and NoRules only then.
        let no_rules = carrying(&got, |r| *r == Reason::NoRules);
        if rules.keeps_everything() {
            prop_assert!(rules.rules().iter().all(|(_, n)| n.is_none()));
            prop_assert_eq!(no_rules.len(), c.len());
            prop_assert!(out.iter().all(Decision::keep));
        } else {
            prop_assert!(no_rules.is_empty());
        }

        // 4. keep_last: the n newest, ranked 1..=n in order.
        let last: Vec<(usize, u32)> = order
            .iter()
            .filter_map(|&i| {
                got[i].iter().find_map(|r| match r {
                    Reason::Last { rank } => Some((i, *rank)),
                    _ => None,
                })
            })
            .collect();
        let want_last: Vec<(usize, u32)> = match rules.keep_last {
            Some(n) => order.iter().copied().zip(1..).take(n as usize).collect(),
            None => Vec::new(),
        };
        prop_assert_eq!(last, want_last, "keep_last");

        // 4. keep_days: those younger than n days, and nothing else.
        let days = carrying(&got, |r| matches!(r, Reason::Days { .. }));
        let want_days: BTreeSet<usize> = match rules.keep_days {
            Some(n) => (0..c.len())
                .filter(|&i| c[i].time.timestamp() > now().timestamp() - i64::from(n) * DAY)
                .collect(),
            None => BTreeSet::new(),
        };
        prop_assert_eq!(days, want_days, "keep_days");

        // 4. GFS rules: the newest of each of the n latest periods, named.
        for GfsRule { name, n, period, pick, .. } in gfs_rules(&rules) {
            let mut seen: BTreeMap<usize, String> = BTreeMap::new();
            for (i, reasons) in got.iter().enumerate() {
                let periods: Vec<&String> = reasons.iter().filter_map(pick).collect();
                prop_assert!(periods.len() <= 1, "{} twice on key {}", name, i);
                if let Some(p) = periods.first() {
                    seen.insert(i, (*p).clone());
                }
            }
            let want_gfs = match n {
                Some(n) => expected_gfs(&c, n, period),
                None => BTreeMap::new(),
            };
            prop_assert_eq!(seen, want_gfs, "{}", name);
        }

        // Every reason, exactly (as a multiset, whatever its order).
        for i in 0..c.len() {
            prop_assert_eq!(sorted(&got[i]), sorted(&want[i]), "reasons of key {}", i);
        }

        // 5. Kept if and only if some reason, and the kept set is the union
        // of what each rule keeps, the newest and the pinned.
        for d in &out {
            prop_assert_eq!(d.keep(), !d.reasons.is_empty());
        }
        let kept: BTreeSet<usize> = out.iter().filter(|d| d.keep()).map(|d| d.key).collect();
        let want_kept: BTreeSet<usize> = (0..c.len()).filter(|&i| !want[i].is_empty()).collect();
        prop_assert_eq!(kept, want_kept);
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn unpinned(times: &[&str]) -> Vec<Candidate<usize>> {
    times
        .iter()
        .enumerate()
        .map(|(key, t)| Candidate {
            key,
            time: at(t),
            pinned: false,
        })
        .collect()
}

#[test]
fn empty_history_decides_nothing() {
    for rules in [
        Retention::default(),
        Retention {
            keep_last: Some(3),
            keep_days: Some(7),
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(12),
            keep_yearly: Some(5),
        },
    ] {
        assert!(decide::<usize>(&rules, &[], now()).is_empty());
    }
}

#[test]
fn one_day_with_keep_daily_1_keeps_only_the_newest() {
    let c = unpinned(&[
        "2026-11-24T01:00:00Z",
        "2026-11-24T23:59:59Z",
        "2026-11-24T00:00:00Z",
        "2026-11-24T12:00:00Z",
    ]);
    let rules = Retention {
        keep_daily: Some(1),
        ..Retention::default()
    };
    let out = decide(&rules, &c, at("2026-11-30T00:00:00Z"));
    let keys: Vec<usize> = out.iter().map(|d| d.key).collect();
    assert_eq!(keys, [1, 3, 0, 2]);
    assert_eq!(
        out[0].reasons,
        [
            Reason::Newest,
            Reason::Daily {
                period: "2026-11-24".to_string()
            }
        ]
    );
    assert!(out[1..].iter().all(|d| !d.keep()), "{out:?}");
}

#[test]
fn on_equal_times_the_later_in_the_input_is_newer() {
    let t = "2026-11-24T10:00:00Z";
    let c = unpinned(&[t, t, t, "2026-11-23T10:00:00Z"]);
    let rules = Retention {
        keep_last: Some(2),
        keep_weekly: Some(1),
        ..Retention::default()
    };
    let out = decide(&rules, &c, at("2026-11-25T00:00:00Z"));
    let keys: Vec<usize> = out.iter().map(|d| d.key).collect();
    assert_eq!(keys, [2, 1, 0, 3]);
    assert_eq!(
        out[0].reasons,
        [
            Reason::Newest,
            Reason::Last { rank: 1 },
            Reason::Weekly {
                period: "2026-W48".to_string()
            }
        ]
    );
    assert_eq!(out[1].reasons, [Reason::Last { rank: 2 }]);
    assert!(!out[2].keep() && !out[3].keep(), "{out:?}");
}
