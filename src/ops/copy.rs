//! `lifeboat copy --from A --to B [TARGET]`: copy what B lacks of A's backups
//! (and the archived WAL of their clusters), incrementally. Also run after
//! every backup of a target with several repositories.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result, bail};

use super::progress::Progress;
use super::{Context, human_bytes, usage};
use crate::codec::Id;
use crate::format::BackupRecord;
use crate::repo::{CopyStats, Repository};

/// How objects reach the other repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyMode {
    /// Same keys: the stored bytes are copied; nothing is decrypted.
    Raw,
    /// Other keys: content is decrypted here and encrypted for the other.
    Reencrypt,
}

impl std::fmt::Display for CopyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CopyMode::Raw => "same keys: objects copied as they are, nothing decrypted",
            CopyMode::Reencrypt => {
                "different keys: content decrypted here and encrypted again for the destination"
            }
        })
    }
}

pub struct CopyOptions {
    pub from: String,
    pub to: String,
    pub target: Option<String>,
    pub dry_run: bool,
}

#[derive(Debug)]
pub struct CopyOutcome {
    pub mode: CopyMode,
    /// Source ids of the backups copied (or to copy, in a dry run).
    pub backups: Vec<Id>,
    pub stats: CopyStats,
}

pub fn run(ctx: &Context, opts: &CopyOptions) -> Result<CopyOutcome> {
    if opts.from == opts.to {
        bail!(usage("--from and --to name the same repository"));
    }
    if let Some(t) = &opts.target {
        ctx.target(t)?;
    }
    let src = ctx.open_repository(&opts.from)?;
    let dst = ctx.open_repository(&opts.to)?;
    let records: Vec<(Id, BackupRecord)> = src
        .list_backups()?
        .into_iter()
        .filter(|(_, r)| opts.target.as_ref().is_none_or(|t| &r.target == t))
        .collect();
    copy_records(ctx, &src, &opts.from, &dst, &opts.to, records, opts.dry_run)
}

/// After a backup into the target's first repository: copy it into the
/// others (nothing to do for a target with one repository). Every repository
/// is tried; the error names those that failed. Returns the lines to print.
pub fn after_backup(
    ctx: &Context,
    target: &str,
    id: &Id,
    record: &BackupRecord,
) -> Result<Vec<String>> {
    let names = ctx.repositories_of(Some(target))?;
    if names.len() < 2 {
        return Ok(Vec::new());
    }
    let mut opened = ctx.open_repositories(&names).into_iter();
    let (first_name, first) = opened.next().expect("two repositories or more");
    let first = first?;
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    for (name, dst) in opened {
        let outcome = dst.and_then(|dst| {
            copy_records(
                ctx,
                &first,
                &first_name,
                &dst,
                &name,
                vec![(*id, record.clone())],
                false,
            )
        });
        match outcome {
            Ok(o) => lines.push(format!(
                "copied to repository {name:?}: {} pack{} ({}), {} WAL file{} ({})",
                o.stats.packs,
                if o.stats.packs == 1 { "" } else { "s" },
                human_bytes(o.stats.bytes),
                o.stats.wal_files,
                if o.stats.wal_files == 1 { "" } else { "s" },
                match o.mode {
                    CopyMode::Raw => "same keys",
                    CopyMode::Reencrypt => "re-encrypted",
                }
            )),
            Err(e) => failed.push(format!("{name}: {e:#}")),
        }
    }
    if !failed.is_empty() {
        bail!(
            "backup {} is stored in repository {first_name:?}, but copying it failed: {}; hint: `lifeboat copy --from {first_name} --to REPOSITORY {target}` copies what is missing",
            id.short(),
            failed.join("; "),
        );
    }
    Ok(lines)
}

fn copy_records(
    ctx: &Context,
    src: &Repository,
    src_name: &str,
    dst: &Repository,
    dst_name: &str,
    records: Vec<(Id, BackupRecord)>,
    dry_run: bool,
) -> Result<CopyOutcome> {
    // By the keys both repositories were opened with (and checked against
    // their pins), not by what the storage says now.
    let mode = if src.fingerprint() == dst.fingerprint() {
        CopyMode::Raw
    } else {
        CopyMode::Reencrypt
    };
    if mode == CopyMode::Reencrypt && !src.can_read_content() {
        bail!(usage(format!(
            "repositories {src_name:?} and {dst_name:?} have different keys, so copying decrypts and encrypts again, which needs {src_name:?}'s identity or passphrase; hint: create {dst_name:?} with keys_from = \"{src_name}\" to copy without decrypting"
        )));
    }
    // Every cluster of the copied target's physical backups: its WAL goes too.
    let clusters: BTreeSet<u64> = records
        .iter()
        .filter_map(|(_, r)| r.physical.as_ref().map(|p| p.system_identifier))
        .collect();
    let missing = src.missing_in(dst, records, mode == CopyMode::Raw)?;
    let backups: Vec<Id> = missing.iter().map(|(id, _)| *id).collect();
    if dry_run {
        return Ok(CopyOutcome {
            mode,
            backups,
            stats: CopyStats::default(),
        });
    }
    let lock = dst
        .lock_shared_waiting(
            &format!("copy from {src_name}"),
            super::backup::LOCK_WAIT,
            &|holder| {
                if !ctx.quiet {
                    eprintln!("waiting for {holder} to finish (up to 10 minutes)");
                }
            },
        )
        .with_context(|| format!("repository {dst_name:?}"))?;
    let total: u64 = missing.iter().map(|(_, r)| r.stats.size).sum();
    let label = format!("copy {src_name} -> {dst_name}");
    let stats = match mode {
        CopyMode::Raw => {
            let progress = Progress::bytes(&label, None, ctx.quiet);
            let threads = dst.storage().concurrency().max(2);
            let mut stats = CopyStats::default();
            for system_id in &clusters {
                stats.wal_files += src.copy_wal_raw(dst, *system_id, threads)?;
            }
            let copied = src.copy_raw(dst, &lock, &missing, threads, &|n| progress.set(n))?;
            CopyStats {
                wal_files: stats.wal_files,
                ..copied
            }
        }
        CopyMode::Reencrypt => {
            let progress = Progress::bytes(&label, Some(total), ctx.quiet);
            let mut stats = CopyStats::default();
            for system_id in &clusters {
                stats.wal_files += src.copy_wal_reencrypted(dst, *system_id)?;
            }
            let mut done = 0;
            for (id, record) in &missing {
                let copy = src.copy_reencrypted(dst, id, record, &|n| progress.set(done + n))?;
                done += record.stats.size;
                stats.bytes += copy.stats.stored_bytes;
                lock.check_held()?;
                dst.write_backup_record(&copy)?;
                stats.backups += 1;
            }
            stats
        }
    };
    drop(lock);
    Ok(CopyOutcome {
        mode,
        backups,
        stats,
    })
}

/// The lines `lifeboat copy` prints.
pub fn describe(opts: &CopyOptions, o: &CopyOutcome) -> Vec<String> {
    let mut lines = vec![format!("copy {} -> {} ({})", opts.from, opts.to, o.mode)];
    if opts.dry_run {
        lines.push(format!(
            "dry run: {} backup{} to copy{}",
            o.backups.len(),
            if o.backups.len() == 1 { "" } else { "s" },
            if o.backups.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    o.backups
                        .iter()
                        .map(|id| id.short())
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        ));
        return lines;
    }
    lines.push(format!(
        "copied {} backup{}, {} pack{} ({}), {} WAL file{}",
        o.stats.backups,
        if o.stats.backups == 1 { "" } else { "s" },
        o.stats.packs,
        if o.stats.packs == 1 { "" } else { "s" },
        human_bytes(o.stats.bytes),
        o.stats.wal_files,
        if o.stats.wal_files == 1 { "" } else { "s" },
    ));
    lines
}
