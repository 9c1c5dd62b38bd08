//! `lifeboat prune [TARGET] [--dry-run]`: apply the retention rules, then
//! remove every stored object no remaining backup needs and rewrite packs that
//! are mostly unneeded. The dry run is the same plan, printed and not applied.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Result, bail};

use super::{Context, human_bytes};
use crate::codec::Id;
use crate::config::Retention;
use crate::format::BackupRecord;
use crate::repo::CleanupLimits;
use crate::retention::{self, Candidate};

pub struct PruneOptions {
    pub target: Option<String>,
    pub dry_run: bool,
    /// The grace period for unindexed packs and what rewrites may do.
    pub limits: CleanupLimits,
}

/// What one repository's prune did (or, dry, would do).
#[derive(Debug, Default)]
pub struct PruneOutcome {
    pub forgotten: usize,
    pub kept: usize,
    pub packs_deleted: usize,
    pub bytes_freed: u64,
}

pub fn run(ctx: &Context, opts: &PruneOptions, out: &mut dyn Write) -> Result<Vec<PruneOutcome>> {
    let names = ctx.repositories_of(opts.target.as_deref())?;
    let mut outcomes = Vec::new();
    for name in names {
        outcomes.push(prune_repository(ctx, &name, opts, out)?);
    }
    Ok(outcomes)
}

fn prune_repository(
    ctx: &Context,
    name: &str,
    opts: &PruneOptions,
    out: &mut dyn Write,
) -> Result<PruneOutcome> {
    let repo = ctx.open_repository(name)?;
    // A dry run changes nothing, so it takes no lock and never waits.
    let lock = if opts.dry_run {
        None
    } else {
        Some(repo.lock_exclusive("prune")?)
    };
    crate::failpoint::hit("prune:locked");
    let scan = repo.scan_backups()?;
    if !scan.damaged.is_empty() {
        let list: Vec<String> = scan
            .damaged
            .iter()
            .map(|d| format!("{} ({})", d.object, d.problem))
            .collect();
        bail!(
            "repository {name:?}: cannot read {}; prune would not know which data those backups need, so it changes nothing; hint: run `lifeboat verify`, and move a backup record that is damaged for good out of backups/",
            list.join(", ")
        );
    }
    let pins = repo.list_pins()?;
    let now = chrono::Utc::now();
    writeln!(out, "repository {name} ({})", repo.url())?;

    let mut by_target: BTreeMap<&str, Vec<&(Id, BackupRecord)>> = BTreeMap::new();
    for r in &scan.records {
        by_target.entry(&r.1.target).or_default().push(r);
    }
    let mut forget = Vec::new();
    for (target, records) in &by_target {
        // Other targets than the one asked for keep every backup.
        if opts.target.as_deref().is_some_and(|t| t != *target) {
            continue;
        }
        // A target no longer configured keeps everything.
        let configured = ctx.config.targets.get(*target).map(|t| t.retention);
        let rules = configured.unwrap_or_default();
        let candidates: Vec<Candidate<Id>> = records
            .iter()
            .map(|(id, rec)| Candidate {
                key: *id,
                time: rec.started,
                pinned: pins.is_pinned(id),
            })
            .collect();
        let mut decisions = retention::decide(&rules, &candidates, now);
        let physical = records.iter().any(|(_, r)| r.physical.is_some());
        if physical {
            retention::keep_window_start(&rules, &mut decisions, now);
        }
        writeln!(
            out,
            "  target {target}: {}",
            if configured.is_some() {
                describe(&rules)
            } else {
                "not in the configuration: every backup is kept".into()
            }
        )?;
        for d in &decisions {
            let why: Vec<String> = d.reasons.iter().map(|r| r.to_string()).collect();
            writeln!(
                out,
                "    {:<6}  {}  {}  {}",
                if d.keep() { "keep" } else { "delete" },
                d.key.short(),
                d.time.format("%Y-%m-%d %H:%M:%S"),
                why.join(", ")
            )?;
            if !d.keep() {
                forget.push(d.key);
            }
        }
    }

    let forgotten: std::collections::HashSet<&Id> = forget.iter().collect();
    let remaining: Vec<(Id, &BackupRecord)> = scan
        .records
        .iter()
        .filter(|(id, _)| !forgotten.contains(id))
        .map(|(id, r)| (*id, r))
        .collect();
    let plan = repo.plan_cleanup(&remaining, forget.clone(), opts.limits)?;
    let deleted: u64 = plan
        .delete
        .iter()
        .chain(&plan.delete_unindexed)
        .map(|p| p.1)
        .sum();
    writeln!(
        out,
        "  data: {} packs to delete ({}), {} to rewrite without what no backup needs (frees {}), {} kept",
        plan.packs_deleted(),
        human_bytes(deleted),
        plan.repack.len(),
        human_bytes(plan.repack.iter().map(|r| r.unneeded).sum()),
        plan.keep.len()
    )?;
    if !plan.wal_delete.is_empty() {
        writeln!(
            out,
            "  WAL: {} archived files older than the oldest remaining base backup to delete ({})",
            plan.wal_delete.len(),
            human_bytes(plan.wal_delete.iter().map(|w| w.1).sum())
        )?;
    }
    if plan.reindexed > 0 {
        writeln!(
            out,
            "  {} packs that no index listed hold data of remaining backups: the new index lists them again",
            plan.reindexed
        )?;
    }
    if plan.young > 0 {
        writeln!(
            out,
            "  {} unreferenced packs are younger than the grace period ({}): left for a later prune",
            plan.young,
            humantime::format_duration(opts.limits.grace)
        )?;
    }
    if plan.rewrite_limited > 0 {
        writeln!(
            out,
            "  {} more packs to rewrite are left for the next prune (--max-rewrite {})",
            plan.rewrite_limited,
            human_bytes(opts.limits.max_rewrite)
        )?;
    }
    if plan.archived_partial > 0 {
        writeln!(
            out,
            "  {} partly needed packs are in an archive storage class: kept whole, since rewriting them would need a retrieval",
            plan.archived_partial
        )?;
    }
    if plan.archived_unindexed > 0 {
        writeln!(
            out,
            "  {} packs that no index lists are in an archive storage class: kept, since what they hold cannot be read without a retrieval",
            plan.archived_unindexed
        )?;
    }
    for d in &plan.damaged {
        writeln!(
            out,
            "  warning: {} cannot be read ({})",
            d.object, d.problem
        )?;
    }
    if !plan.missing.is_empty() {
        let mut affected: Vec<Id> = plan.missing.iter().flat_map(|(_, b)| b.clone()).collect();
        affected.sort();
        affected.dedup();
        let ids: Vec<String> = affected.iter().map(|i| i.short()).collect();
        writeln!(
            out,
            "  warning: {} blobs that backups {} need are not in the repository; run `lifeboat verify`",
            plan.missing.len(),
            ids.join(", ")
        )?;
    }
    let outcome = PruneOutcome {
        forgotten: forget.len(),
        kept: remaining.len(),
        packs_deleted: plan.packs_deleted(),
        bytes_freed: plan.bytes_freed(),
    };
    match lock {
        None => writeln!(
            out,
            "  dry run: would delete {} backups and free {}; nothing was changed",
            outcome.forgotten,
            human_bytes(outcome.bytes_freed)
        )?,
        Some(lock) => {
            // Temporary files of interrupted writes first: on a full disk that
            // frees the room the new index needs.
            let temp = repo.storage().cleanup(opts.limits.grace)?;
            let report = repo.apply_cleanup(&plan, &lock)?;
            for d in &report.not_repacked {
                writeln!(
                    out,
                    "  warning: {} was kept whole: it could not be rewritten ({}); run `lifeboat verify --read-data`",
                    d.object, d.problem
                )?;
            }
            writeln!(
                out,
                "  deleted {} backups and {} packs, rewrote {} packs ({} copied, the old ones deleted), freed {}{}",
                outcome.forgotten,
                outcome.packs_deleted,
                report.repacked,
                human_bytes(report.copied),
                human_bytes(outcome.bytes_freed - report.not_freed),
                if temp > 0 {
                    format!("; removed {temp} temporary files of interrupted writes")
                } else {
                    String::new()
                }
            )?;
        }
    }
    Ok(outcome)
}

fn describe(r: &Retention) -> String {
    if r.keeps_everything() {
        return "no retention rules: every backup is kept".into();
    }
    r.rules()
        .iter()
        .filter_map(|(n, v)| v.map(|v| format!("{n} = {v}")))
        .collect::<Vec<_>>()
        .join(", ")
}
