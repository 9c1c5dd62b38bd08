//! `lifeboat restore TARGET --data-dir DIR` for physical targets: point-in-time
//! recovery. Plan (pick the base backup, check the target is reachable, check
//! the destination), then apply (write the files in parallel, the recovery
//! settings, and optionally start the server and wait for it to promote).
//!
//! Everything that can refuse the restore is checked before the first byte
//! is written.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, NaiveDateTime, Utc};

use super::restore_files::{self, DirectIo, MAX_OPEN, Output, create_file, memory_available};
use super::{Context, human_bytes, usage};
use crate::codec::Id;
use crate::format::{BackupRecord, FileEntry, FileKind, PhysicalInfo};
use crate::pg::config_files;
use crate::pg::conninfo::ConnInfo;
use crate::pg::process::Connection;
use crate::pg::tools::PgTools;
use crate::pg::wal::{Lsn, Segment, TimelineSwitch};
use crate::repo::{Index, Repository, WalArchive, latest_descendant, timeline_chain, walk_wal};

/// Options of a physical restore (`lifeboat restore` of a physical target).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PitrOptions {
    /// Physical targets: restore into this new (or empty) data directory
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Recover up to this time (e.g. "2026-11-25 14:03:00+00"; no zone: UTC)
    #[arg(long, value_name = "TIME", group = "recovery_target")]
    pub to_time: Option<String>,
    /// Recover up to this WAL position (e.g. 0/5000060)
    #[arg(long, value_name = "LSN", group = "recovery_target")]
    pub to_lsn: Option<String>,
    /// Recover up to and including this transaction
    #[arg(long, value_name = "XID", group = "recovery_target")]
    pub to_xid: Option<u64>,
    /// Recover up to a restore point made with pg_create_restore_point()
    #[arg(long, value_name = "NAME", group = "recovery_target")]
    pub to_name: Option<String>,
    /// Recovery target timeline: a number, "current" or "latest" (default)
    #[arg(long, value_name = "TLI")]
    pub timeline: Option<String>,
    /// Start the restored server, wait until it reached the target and
    /// promoted, and print how to connect
    #[arg(long)]
    pub start: bool,
    /// Port of the started server (default: a free one)
    #[arg(long)]
    pub port: Option<u16>,
    /// Keep archive_command on: the restored server becomes the new primary
    /// and archives into the repository (default: archiving off)
    #[arg(long)]
    pub archive: bool,
    /// Put a tablespace elsewhere: OID=DIR or NAME=DIR (repeatable)
    #[arg(long, value_name = "TS=DIR")]
    pub tablespace_map: Vec<String>,
    /// Restore as a standby (standby.signal): it replays the archived WAL,
    /// then goes on following the archive (and the primary, with
    /// --primary-conninfo) and stays in recovery; no recovery target
    #[arg(long, conflicts_with = "recovery_target")]
    pub standby: bool,
    /// With --standby: the new standby's primary_conninfo, to stream from the
    /// primary once the archive is replayed
    #[arg(long, value_name = "CONNINFO", requires = "standby")]
    pub primary_conninfo: Option<String>,
    /// With --standby: the replication slot on the primary it streams from
    #[arg(long, value_name = "SLOT", requires = "primary_conninfo")]
    pub primary_slot_name: Option<String>,
    /// Write the data files with O_DIRECT, around the page cache: "auto"
    /// (default) when the restore is larger than half the memory available
    #[arg(long, value_name = "WHEN")]
    pub direct_io: Option<DirectIo>,
}

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq)]
pub enum RecoveryTarget {
    Latest,
    Time(DateTime<Utc>),
    Lsn(Lsn),
    Xid(u64),
    Name(String),
}

impl fmt::Display for RecoveryTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryTarget::Latest => write!(f, "the end of the archived WAL"),
            RecoveryTarget::Time(t) => write!(f, "time {}", t.format("%Y-%m-%d %H:%M:%S%.6f UTC")),
            RecoveryTarget::Lsn(l) => write!(f, "LSN {l}"),
            RecoveryTarget::Xid(x) => write!(f, "transaction {x}"),
            RecoveryTarget::Name(n) => write!(f, "restore point {n:?}"),
        }
    }
}

/// "2026-11-25 14:03:00", "2026-11-25T14:03:00.5Z", "2026-11-25 14:03:00+01".
pub fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc());
        }
    }
    bail!(usage(format!(
        "{s:?} is not a time; hint: like \"2026-11-25 14:03:00+00\" (no zone means UTC)"
    )))
}

impl PitrOptions {
    /// The options given that only a physical restore takes.
    pub fn given(&self) -> Vec<&'static str> {
        [
            ("--data-dir", self.data_dir.is_some()),
            ("--to-time", self.to_time.is_some()),
            ("--to-lsn", self.to_lsn.is_some()),
            ("--to-xid", self.to_xid.is_some()),
            ("--to-name", self.to_name.is_some()),
            ("--timeline", self.timeline.is_some()),
            ("--start", self.start),
            ("--port", self.port.is_some()),
            ("--archive", self.archive),
            ("--tablespace-map", !self.tablespace_map.is_empty()),
            ("--standby", self.standby),
            ("--primary-conninfo", self.primary_conninfo.is_some()),
            ("--primary-slot-name", self.primary_slot_name.is_some()),
            ("--direct-io", self.direct_io.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }

    pub fn recovery_target(&self) -> Result<RecoveryTarget> {
        Ok(if let Some(t) = &self.to_time {
            RecoveryTarget::Time(parse_time(t)?)
        } else if let Some(l) = &self.to_lsn {
            RecoveryTarget::Lsn(l.parse().map_err(usage)?)
        } else if let Some(x) = self.to_xid {
            RecoveryTarget::Xid(x)
        } else if let Some(n) = &self.to_name {
            RecoveryTarget::Name(n.clone())
        } else {
            RecoveryTarget::Latest
        })
    }
}

/// Everything decided before the first write.
pub struct Plan {
    pub backup_id: Id,
    pub record: BackupRecord,
    pub target: RecoveryTarget,
    pub timeline: String,
    /// recovery_target_timeline as written.
    pub recovery_timeline: String,
    pub data_dir: PathBuf,
    /// Tablespace oid -> where its files go.
    pub tablespaces: BTreeMap<u32, PathBuf>,
    pub files: Vec<FileEntry>,
    pub bytes: u64,
    /// Last segment the restore will replay up to, if known, and what it
    /// could reach at most.
    pub reachable: String,
    pub warnings: Vec<String>,
}

pub struct PitrOutcome {
    pub backup_id: Id,
    pub data_dir: PathBuf,
    pub seconds: f64,
    /// With --start: how to connect to the started server.
    pub started: Option<String>,
}

pub fn run(
    ctx: &Context,
    target_name: &str,
    restore: &super::restore::RestoreOptions,
    jobs: u32,
) -> Result<Option<PitrOutcome>> {
    let (opts, backup, dry_run) = (
        &restore.physical,
        restore.backup.as_deref(),
        restore.dry_run,
    );
    let target = ctx.target(target_name)?;
    let (repo_name, repo) =
        ctx.open_for_restore(target_name, backup, restore.repository.as_deref())?;
    repo.check_can_read()?;
    let index = repo.load_index()?;
    let clock = Instant::now();
    let plan = plan(&repo, &index, target_name, opts, backup)?;
    let p = plan
        .record
        .physical
        .as_ref()
        .expect("planned from a physical backup");
    println!(
        "restore backup {} of {} (taken {}, consistent at {} / {}) into {}",
        plan.backup_id.short(),
        target_name,
        plan.record.started.format("%Y-%m-%d %H:%M:%S UTC"),
        p.stop_lsn,
        p.stop_time.format("%Y-%m-%d %H:%M:%S UTC"),
        plan.data_dir.display()
    );
    let direct = opts
        .direct_io
        .unwrap_or_default()
        .decide(plan.bytes, memory_available());
    let files = plan.files.iter().filter(|f| f.kind == FileKind::File);
    let (aligned, aligned_bytes) = files
        .clone()
        .filter(|f| restore_files::takes_direct(f.size))
        .fold((0, 0), |(n, b), f| (n + 1, b + f.size));
    println!(
        "  1. write {} files ({}){}",
        files.count(),
        human_bytes(plan.bytes),
        direct
            .as_ref()
            .map(|why| format!(
                ", {aligned} of them ({}) with O_DIRECT ({why})",
                human_bytes(aligned_bytes)
            ))
            .unwrap_or_default()
    );
    for (oid, dir) in &plan.tablespaces {
        println!("     tablespace {oid} into {}", dir.display());
    }
    if let Some(kept) = p.config_files.as_ref().filter(|k| !k.is_empty()) {
        let names: Vec<&str> = kept.iter().map(|c| c.path.as_str()).collect();
        println!(
            "     and the configuration from outside the data directory ({}), pointed at the copy",
            names.join(", ")
        );
    }
    if opts.standby {
        println!(
            "  2. set up a standby on timeline {}: it replays the archived WAL ({}), then follows the archive{}; archiving {}",
            plan.timeline,
            plan.reachable,
            if opts.primary_conninfo.is_some() {
                " and streams from the primary"
            } else {
                ""
            },
            if opts.archive {
                "as the backup had it (--archive), for when it is promoted"
            } else {
                "off (--archive keeps it on for when it is promoted)"
            }
        );
    } else {
        println!(
            "  2. recover to {} on timeline {} ({})",
            plan.target, plan.timeline, plan.reachable
        );
    }
    if opts.start {
        println!(
            "  3. start the server, wait until it {}",
            if opts.standby {
                "is consistent and accepts read-only connections"
            } else {
                "promoted"
            }
        );
    }
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    let packs = repo.packs_of(&index, [&plan.record]);
    let rc = ctx.config.repository(&repo_name)?;
    super::retrieve::ensure_readable(ctx, &repo, rc, &packs, restore.retrieval())?;
    if dry_run {
        println!("dry run: nothing was changed");
        return Ok(None);
    }
    let tools = PgTools::locate(target.pg_bindir.as_deref()).map_err(|e| usage(e.to_string()))?;
    super::watch_for_interrupts();
    // The destination was empty or absent (plan checked): a restore that
    // fails half-way takes back what it wrote, so no half-restored data
    // directory is left for someone to start.
    let dirs: Vec<PathBuf> = std::iter::once(plan.data_dir.clone())
        .chain(plan.tablespaces.values().cloned())
        .collect();
    let existed: Vec<bool> = dirs.iter().map(|d| d.exists()).collect();
    let written = write_files(ctx, &repo, &index, &plan, jobs, direct.is_some())
        .and_then(|()| place_config_files(ctx, &repo, &index, &plan))
        .and_then(|()| write_recovery(ctx, &repo, &index, target_name, &plan, opts));
    if let Err(e) = written {
        for (dir, existed) in dirs.iter().zip(existed) {
            let _ = std::fs::remove_dir_all(dir);
            if existed {
                let _ = std::fs::create_dir(dir);
            }
        }
        return Err(e.context(format!(
            "restoring into {} (what was written is removed again)",
            plan.data_dir.display()
        )));
    }
    let owner = chown_if_root(&plan)?;
    sync_restored(&plan)?;
    let started = if opts.start {
        Some(start_and_wait(
            ctx,
            target_name,
            &plan,
            opts,
            &tools,
            owner.as_ref(),
        )?)
    } else {
        None
    };
    Ok(Some(PitrOutcome {
        backup_id: plan.backup_id,
        data_dir: plan.data_dir,
        seconds: clock.elapsed().as_secs_f64(),
        started,
    }))
}

/// Pick the backup and check that the target is reachable from it, that the
/// destination is free, and that every block is indexed.
pub fn plan(
    repo: &Repository,
    index: &Index,
    target_name: &str,
    opts: &PitrOptions,
    backup: Option<&str>,
) -> Result<Plan> {
    let data_dir = opts.data_dir.clone().ok_or_else(|| {
        usage("a physical restore needs --data-dir DIR (a new or empty directory)")
    })?;
    let target = opts.recovery_target()?;
    let mut warnings = Vec::new();
    if let Some(c) = &opts.primary_conninfo {
        let info = ConnInfo::parse(c).map_err(|e| usage(format!("--primary-conninfo: {e}")))?;
        if info.password().is_some() {
            warnings.push(
                "the password in --primary-conninfo is visible to every user of this host in the process list while lifeboat runs, and is written to postgresql.auto.conf; hint: put it in the ~/.pgpass of the server's operating-system user instead".to_string(),
            );
        }
    }
    let backups: Vec<(Id, BackupRecord)> = repo
        .list_backups()?
        .into_iter()
        .filter(|(_, r)| r.target == target_name && r.physical.is_some())
        .collect();
    if backups.is_empty() {
        bail!(usage(format!(
            "target {target_name:?} has no physical backup in repository {}",
            repo.url()
        )));
    }
    let newest = &backups.last().expect("not empty").1;
    let system_id = phys(newest).system_identifier;
    let archive = repo.list_wal(system_id)?;
    let seg_size = phys(newest).wal_segment_size;
    let histories = repo.read_histories(system_id, &archive)?;

    let chosen = match backup {
        Some(prefix) => {
            let (id, rec) = repo.find_backup(prefix)?;
            if rec.target != target_name || rec.physical.is_none() {
                bail!(usage(format!(
                    "backup {} is not a physical backup of {target_name:?}",
                    id.short()
                )));
            }
            (id, rec)
        }
        None => choose_backup(&backups, &target, &archive, seg_size, &histories)?,
    };
    let p = phys(&chosen.1).clone();
    if p.system_identifier != system_id {
        warnings.push(format!(
            "backup {} is of another cluster (system identifier {}) than the newest backup",
            chosen.0.short(),
            p.system_identifier
        ));
    }

    // The timeline recovery follows, and the chain of timelines to it.
    let timeline = opts.timeline.clone().unwrap_or_else(|| "latest".into());
    let recovery_tli = match timeline.as_str() {
        "latest" => latest_descendant(p.timeline, p.stop_lsn, &histories),
        "current" => p.timeline,
        n => n.parse().map_err(|_| {
            usage(format!(
                "--timeline {n:?}; hint: a number, \"current\" or \"latest\""
            ))
        })?,
    };
    let chain = timeline_chain(recovery_tli, &histories);
    let Some(at) = chain.iter().position(|(t, _)| *t == p.timeline) else {
        bail!(usage(format!(
            "timeline {recovery_tli} does not descend from the backup's timeline {}; hint: choose another --timeline or --backup",
            p.timeline
        )));
    };
    if let Some((child, fork)) = chain.get(at + 1)
        && *fork < p.stop_lsn
    {
        bail!(usage(format!(
            "timeline {child} forked off timeline {} at {fork}, before backup {} was consistent ({}); hint: choose an older backup with --backup, or another --timeline",
            p.timeline,
            chosen.0.short(),
            p.stop_lsn
        )));
    }

    // What the archive lets this backup reach.
    let start = Segment::of(p.timeline, p.start_lsn, seg_size);
    let walk = walk_wal(&archive, &chain, start.number, seg_size);
    let Some(last) = walk.last else {
        bail!(
            "the WAL this backup starts from ({}) is not archived; the backup cannot be restored; hint: `lifeboat verify` lists the WAL that is missing",
            start.name(seg_size)
        );
    };
    let stop_seg = Segment::of(p.timeline, Lsn(p.stop_lsn.0.saturating_sub(1)), seg_size);
    if last.number < stop_seg.number {
        bail!(
            "WAL segment {} is missing: backup {} cannot become consistent",
            walk.gap
                .map_or_else(|| stop_seg.name(seg_size), |g| g.name(seg_size)),
            chosen.0.short()
        );
    }
    let end_lsn = Lsn((last.number + 1) * seg_size);
    let reachable = format!(
        "archived WAL from {} reaches {}{}",
        p.stop_lsn,
        end_lsn,
        walk.gap
            .map(|g| format!(", then a gap at {}", g.name(seg_size)))
            .unwrap_or_default()
    );
    match &target {
        RecoveryTarget::Lsn(l) if *l >= end_lsn => bail!(usage(format!(
            "LSN {l} is beyond the archived WAL, which reaches {end_lsn} from backup {}{}",
            chosen.0.short(),
            walk.gap
                .map(|g| format!(" (segment {} is missing)", g.name(seg_size)))
                .unwrap_or_default()
        ))),
        RecoveryTarget::Time(t) => {
            let newest_push = walk.last_modified.map(DateTime::<Utc>::from);
            // Storage times are whole seconds on S3 (Last-Modified): the
            // segment was pushed up to a second after what it says.
            if newest_push.is_none_or(|n| *t > n + chrono::Duration::seconds(1)) {
                bail!(usage(format!(
                    "time {} is after the newest archived WAL ({}); the restorable window from backup {} is {} to {}",
                    t.format("%Y-%m-%d %H:%M:%S UTC"),
                    newest_push.map_or("none".into(), |n| n
                        .format("%Y-%m-%d %H:%M:%S UTC")
                        .to_string()),
                    chosen.0.short(),
                    p.stop_time.format("%Y-%m-%d %H:%M:%S UTC"),
                    newest_push.map_or("?".into(), |n| n
                        .format("%Y-%m-%d %H:%M:%S UTC")
                        .to_string()),
                )));
            }
        }
        _ => {}
    }
    if let Some(g) = walk.gap {
        warnings.push(format!(
            "the archive has a gap at {}: recovery cannot go past it",
            g.name(seg_size)
        ));
    }

    // The destination: new or empty, and so is every tablespace location.
    check_empty(&data_dir)?;
    let remap = parse_tablespace_map(&opts.tablespace_map, &p)?;
    let mut tablespaces = BTreeMap::new();
    for ts in &p.tablespaces {
        let dir = remap
            .get(&ts.oid)
            .cloned()
            .unwrap_or_else(|| PathBuf::from(&ts.location));
        check_empty(&dir).map_err(|e| {
            anyhow::anyhow!(
                "{e:#}; hint: tablespace {} ({}) would be restored there; give --tablespace-map {}=DIR",
                ts.name,
                ts.oid,
                ts.name
            )
        })?;
        tablespaces.insert(ts.oid, dir);
    }

    let files = p.manifest.clone();
    check_manifest(&files, &tablespaces)?;
    for f in &files {
        for b in &f.blocks {
            if !index.contains(b) {
                bail!(
                    "block {} of {} is not in the repository's index; hint: `lifeboat verify` tells more",
                    b.short(),
                    f.path
                );
            }
        }
    }
    let bytes = files.iter().map(|f| f.size).sum();
    let newer_elsewhere = histories.keys().any(|t| *t > recovery_tli);
    if opts.standby && timeline == "latest" && newer_elsewhere {
        warnings.push(format!(
            "the archive has a timeline newer than {recovery_tli} that does not descend from this backup: the standby follows timeline {recovery_tli} only (recovery_target_timeline = '{recovery_tli}'), not later promotions"
        ));
    }
    Ok(Plan {
        backup_id: chosen.0,
        record: chosen.1,
        target,
        timeline: match timeline.as_str() {
            "latest" | "current" => format!("{timeline} ({recovery_tli})"),
            _ => timeline.clone(),
        },
        // "latest" as PostgreSQL means it would also take a timeline that
        // forked off before this backup, and then refuse to start. A
        // standby follows later promotions with "latest" when no newer
        // timeline is archived yet.
        recovery_timeline: match timeline.as_str() {
            "current" => timeline,
            "latest" if opts.standby && !newer_elsewhere => timeline,
            _ => recovery_tli.to_string(),
        },
        data_dir,
        tablespaces,
        files,
        bytes,
        reachable,
        warnings,
    })
}

fn phys(r: &BackupRecord) -> &PhysicalInfo {
    r.physical.as_ref().expect("physical backups only")
}

/// The newest backup that can reach the target.
fn choose_backup(
    backups: &[(Id, BackupRecord)],
    target: &RecoveryTarget,
    archive: &WalArchive,
    seg_size: u64,
    histories: &HashMap<u32, Vec<TimelineSwitch>>,
) -> Result<(Id, BackupRecord)> {
    let oldest = &backups[0].1;
    let pick = |ok: &dyn Fn(&PhysicalInfo) -> bool| {
        backups.iter().rev().find(|(_, r)| ok(phys(r))).cloned()
    };
    let found = match target {
        RecoveryTarget::Latest => backups.last().cloned(),
        RecoveryTarget::Time(t) => pick(&|p| p.stop_time <= *t),
        RecoveryTarget::Lsn(l) => pick(&|p| p.stop_lsn <= *l),
        RecoveryTarget::Xid(x) => pick(&|p| p.next_xid.is_some_and(|n| n <= *x)),
        // Where a restore point is is known only by replaying: start from
        // the oldest backup whose WAL runs unbroken to the end.
        RecoveryTarget::Name(_) => backups
            .iter()
            .find(|(_, r)| {
                let p = phys(r);
                let chain = timeline_chain(
                    latest_descendant(p.timeline, p.stop_lsn, histories),
                    histories,
                );
                let start = Segment::of(p.timeline, p.start_lsn, seg_size).number;
                walk_wal(archive, &chain, start, seg_size).gap.is_none()
            })
            .or(backups.last())
            .cloned(),
    };
    found.ok_or_else(|| {
        let p = phys(oldest);
        usage(format!(
            "{target} is before the oldest backup can reach: the oldest ({}) is consistent at {} (LSN {}{})",
            backups[0].0.short(),
            p.stop_time.format("%Y-%m-%d %H:%M:%S UTC"),
            p.stop_lsn,
            p.next_xid.map(|x| format!(", next transaction {x}")).unwrap_or_default()
        ))
    })
}

fn check_empty(dir: &Path) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                bail!(usage(format!(
                    "{} is not empty; hint: restore into a new or empty directory (a physical restore never overwrites)",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| dir.display().to_string()),
    }
}

fn parse_tablespace_map(args: &[String], p: &PhysicalInfo) -> Result<HashMap<u32, PathBuf>> {
    let mut out = HashMap::new();
    for a in args {
        let (ts, dir) = a
            .split_once('=')
            .ok_or_else(|| usage(format!("--tablespace-map {a:?}; hint: OID=DIR or NAME=DIR")))?;
        let found = p
            .tablespaces
            .iter()
            .find(|t| t.name == ts || t.oid.to_string() == ts)
            .ok_or_else(|| {
                usage(format!(
                    "the backup has no tablespace {ts:?}; it has: {}",
                    p.tablespaces
                        .iter()
                        .map(|t| format!("{} ({})", t.name, t.oid))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let dir = PathBuf::from(dir);
        if !dir.is_absolute() {
            bail!(usage(format!(
                "--tablespace-map {a:?}: DIR must be absolute"
            )));
        }
        out.insert(found.oid, dir);
    }
    Ok(out)
}

fn stream_text(
    repo: &Repository,
    index: &Index,
    rec: &BackupRecord,
    name: &str,
) -> Result<Option<String>> {
    stream_bytes(repo, index, rec, name)?
        .map(|b| String::from_utf8(b).with_context(|| format!("{name} is not UTF-8 text")))
        .transpose()
}

/// A stream of the record, read whole; `None` if it has none of that name.
fn stream_bytes(
    repo: &Repository,
    index: &Index,
    rec: &BackupRecord,
    name: &str,
) -> Result<Option<Vec<u8>>> {
    let Some(stream) = rec.stream(name) else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut repo.read_stream(index, stream)?, &mut bytes)
        .with_context(|| format!("reading {name}"))?;
    Ok(Some(bytes))
}

/// Refuse a manifest that would write outside the restore's directories
/// (a damaged or forged record: in public-key mode a backup host writes the
/// records a restore host, maybe as root, then follows). Every path is
/// relative and made of plain names; links are only at `pg_tblspc/<oid>` of a
/// tablespace of the backup (backups write no others: a linked `pg_wal` is
/// kept as a directory); and nothing lies under a link but a tablespace's own
/// files, which go to its directory rather than through the link.
fn check_manifest(files: &[FileEntry], tablespaces: &BTreeMap<u32, PathBuf>) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for f in files {
        if !seen.insert(f.path.as_str()) {
            bail!(
                "the backup's manifest lists {:?} twice: the record is damaged or forged; nothing was written",
                f.path
            );
        }
        let parts: Vec<_> = Path::new(&f.path).components().collect();
        let plain = !parts.is_empty()
            && parts
                .iter()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        let in_tablespace = match parts.as_slice() {
            [first, oid, ..] if first.as_os_str() == "pg_tblspc" => Some(
                oid.as_os_str()
                    .to_str()
                    .and_then(|o| o.parse::<u32>().ok())
                    .is_some_and(|o| tablespaces.contains_key(&o)),
            ),
            _ => None,
        };
        let fine = plain
            && match (f.kind, in_tablespace) {
                (FileKind::Link, Some(known)) => known && parts.len() == 2,
                (FileKind::Link, None) => false,
                (_, Some(known)) => known && parts.len() > 2,
                (_, None) => true,
            };
        let block = crate::format::FILE_BLOCK as u64;
        if f.kind == FileKind::File && f.blocks.len() as u64 != f.size.div_ceil(block) {
            bail!(
                "the backup's manifest gives {:?} {} blocks for {} bytes: the record is damaged or forged; nothing was written",
                f.path,
                f.blocks.len(),
                f.size
            );
        }
        if !fine {
            bail!(
                "the backup's manifest has {} {:?}, which a restore must not write (outside the data directory, or through a link): the record is damaged or forged; nothing was written",
                format!("{:?}", f.kind).to_lowercase(),
                f.path
            );
        }
    }
    Ok(())
}

/// Where a manifest path goes on this host.
fn destination(plan: &Plan, path: &str) -> PathBuf {
    if let Some(rest) = path.strip_prefix("pg_tblspc/") {
        let (oid, inner) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some(dir) = oid.parse().ok().and_then(|o: u32| plan.tablespaces.get(&o))
            && !inner.is_empty()
        {
            return dir.join(inner);
        }
    }
    plan.data_dir.join(path)
}

fn write_files(
    ctx: &Context,
    repo: &Repository,
    index: &Index,
    plan: &Plan,
    jobs: u32,
    direct: bool,
) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&plan.data_dir)
        .with_context(|| format!("creating {}", plan.data_dir.display()))?;
    for dir in plan.tablespaces.values() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    // Directories and links first, in path order (parents before children).
    for f in &plan.files {
        let dest = destination(plan, &f.path);
        match f.kind {
            FileKind::Dir => {
                std::fs::create_dir_all(&dest)
                    .with_context(|| format!("creating {}", dest.display()))?;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(f.mode))?;
            }
            FileKind::Link => {
                let oid: Option<u32> = f
                    .path
                    .strip_prefix("pg_tblspc/")
                    .and_then(|o| o.parse().ok());
                let to = oid
                    .and_then(|o| plan.tablespaces.get(&o).cloned())
                    .or_else(|| f.link.clone().map(PathBuf::from))
                    .context("a link without a target")?;
                std::os::unix::fs::symlink(&to, &dest)
                    .with_context(|| format!("linking {} to {}", dest.display(), to.display()))?;
            }
            FileKind::File => {}
        }
    }
    // Each block goes where the manifest puts it (a block several files
    // share is read once), pack by pack so that neighbouring blocks come in
    // one read, the packs in the order the manifest first needs them (the
    // order the backup wrote them), so that files fill from start to end.
    // A file's writer creates it with its first block (creating a thousand
    // files up front held back the first block by up to 0.8 s), and once it
    // is complete gives it its mode and time and hands it to the syncer.
    let files: Vec<&FileEntry> = plan
        .files
        .iter()
        .filter(|f| f.kind == FileKind::File)
        .collect();
    let mut targets: HashMap<Id, Vec<(usize, u64)>> = HashMap::new();
    let mut blocks: Vec<Id> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        for (n, block) in f.blocks.iter().enumerate() {
            let at = targets.entry(*block).or_default();
            if at.is_empty() {
                blocks.push(*block);
            }
            at.push((i, (n * crate::format::FILE_BLOCK) as u64));
        }
    }
    let owner = assign_writers(&blocks, &targets, &files);
    let progress = super::progress::Progress::bytes("restore", Some(plan.bytes), ctx.quiet);
    let direct_ok = std::sync::atomic::AtomicBool::new(direct);
    let writing = Writing {
        direct_ok: &direct_ok,
        plan,
        files: &files,
        targets: &targets,
        owner: &owner,
        progress: &progress,
        done: std::sync::atomic::AtomicU64::new(0),
    };
    let threads = (jobs.max(1) as usize).max(repo.storage().concurrency());
    std::thread::scope(|scope| -> Result<()> {
        // Written data goes to disk while the rest is still being decoded
        // (`restore_files`: with O_DIRECT as it is written, or through the
        // page cache and synced every SYNC_EVERY bytes): each
        // file is synced once complete (then with its metadata), on a thread
        // of its own, not all at once at the end. Each queued file holds a
        // descriptor: with MAX_OPEN that stays well under the usual limit of
        // 1024.
        const SYNC_QUEUE: usize = 256;
        let (to_sync, syncs) =
            std::sync::mpsc::sync_channel::<(std::sync::Arc<std::fs::File>, bool)>(SYNC_QUEUE);
        let syncer = scope.spawn(move || -> std::io::Result<()> {
            for (file, complete) in syncs {
                if complete {
                    file.sync_all()?;
                } else {
                    file.sync_data()?;
                }
            }
            Ok(())
        });
        // Decoding runs on `threads` threads, writing on WRITERS others,
        // each owning whole files: two threads writing into one file (the
        // blocks of a big table are in every pack) wait on its inode lock,
        // and the kernel spins for it.
        let mut to_write = Vec::new();
        let mut writers = Vec::new();
        let writing = &writing;
        for w in 0..WRITERS {
            let (tx, writes) = std::sync::mpsc::sync_channel::<(Id, Vec<u8>)>(32);
            to_write.push(tx);
            let to_sync = to_sync.clone();
            writers.push(scope.spawn(move || writing.write(w, writes, &to_sync)));
        }
        // Files without blocks (empty ones) are created here meanwhile.
        let empty = files
            .iter()
            .filter(|f| f.blocks.is_empty())
            .try_for_each(|f| {
                let dest = destination(plan, &f.path);
                let out = create_file(&dest, true, false)?;
                finish_file(&out, f).with_context(|| format!("writing {}", dest.display()))?;
                let _ = to_sync.send((std::sync::Arc::new(out), true));
                Ok::<(), anyhow::Error>(())
            });
        drop(to_sync);
        let read = empty.and_then(|()| {
            repo.read_blobs(index, &blocks, threads, &|id, data| {
                if super::interrupted() {
                    return Err(std::io::Error::other("interrupted"));
                }
                // To each writer that owns a file the block goes into (a
                // block in files of two writers is copied).
                let mut to: Vec<usize> = targets[id].iter().map(|(f, _)| owner[*f]).collect();
                to.sort_unstable();
                to.dedup();
                let last = to.pop().expect("every block has a file");
                for w in to {
                    to_write[w]
                        .send((*id, data.clone()))
                        .map_err(|_| std::io::Error::other("the writer stopped"))?;
                }
                to_write[last]
                    .send((*id, data))
                    .map_err(|_| std::io::Error::other("the writer stopped"))
            })
            .map_err(anyhow::Error::from)
        });
        drop(to_write);
        // A writer's own error (a full disk) explains a stopped read best.
        let mut left = Vec::new();
        for writer in writers {
            left.extend(
                writer
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the restore's writer panicked")))?,
            );
        }
        read?;
        if let Some(&(f, n)) = left.first() {
            bail!("{}: {n} of its bytes were not restored", files[f].path);
        }
        syncer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the syncing thread panicked")))
            .context("writing the restored files")
    })?;
    progress.finish();
    if direct && !direct_ok.load(std::sync::atomic::Ordering::Relaxed) && !ctx.quiet {
        eprintln!(
            "note: a file system of the restore (of {} or a tablespace) refused O_DIRECT: the files written after that went through the page cache",
            plan.data_dir.display()
        );
    }
    Ok(())
}

/// Threads writing restored files: each file is written by one of them
/// (`assign_writers`), so that no two threads write into one file.
const WRITERS: usize = 2;

/// Each file to the writer with the fewest bytes so far, in the order the
/// blocks (in the order they are read) first reach the files. Files without
/// blocks get none (`usize::MAX`).
fn assign_writers(
    blocks: &[Id],
    targets: &HashMap<Id, Vec<(usize, u64)>>,
    files: &[&FileEntry],
) -> Vec<usize> {
    let mut owner = vec![usize::MAX; files.len()];
    let mut assigned = [0u64; WRITERS];
    for block in blocks {
        for &(file, _) in &targets[block] {
            if owner[file] == usize::MAX {
                let w = (0..WRITERS).min_by_key(|&w| assigned[w]).expect("writers");
                owner[file] = w;
                assigned[w] += files[file].size;
            }
        }
    }
    owner
}

/// What the writer threads of `write_files` share.
struct Writing<'a> {
    plan: &'a Plan,
    files: &'a [&'a FileEntry],
    targets: &'a HashMap<Id, Vec<(usize, u64)>>,
    owner: &'a [usize],
    progress: &'a super::progress::Progress,
    done: std::sync::atomic::AtomicU64,
    /// Cleared once the file system refused `O_DIRECT` (`restore_files`).
    direct_ok: &'a std::sync::atomic::AtomicBool,
}

type SyncQueue = std::sync::mpsc::SyncSender<(std::sync::Arc<std::fs::File>, bool)>;

impl Writing<'_> {
    /// Writer `w`: put each block of `writes` where the manifest puts it in
    /// the files this writer owns. A complete file gets its mode and time
    /// and goes to the syncer. Returns the owned files with bytes left.
    fn write(
        &self,
        w: usize,
        writes: std::sync::mpsc::Receiver<(Id, Vec<u8>)>,
        to_sync: &SyncQueue,
    ) -> Result<Vec<(usize, u64)>> {
        let files = self.files;
        let sizes: Vec<u64> = files.iter().map(|f| f.size).collect();
        let mut out = Output::new(
            files
                .iter()
                .map(|f| destination(self.plan, &f.path))
                .collect(),
            &sizes,
            MAX_OPEN / WRITERS,
            self.direct_ok,
        );
        let mut left = sizes.clone();
        let written = writes.iter().try_for_each(|(id, data)| -> Result<()> {
            for &(file, offset) in &self.targets[&id] {
                if self.owner[file] != w {
                    continue;
                }
                let f = files[file];
                let want = (f.size - offset).min(crate::format::FILE_BLOCK as u64);
                if data.len() as u64 != want {
                    bail!(
                        "{}: block at {offset} is {} bytes, the manifest says {want}",
                        f.path,
                        data.len()
                    );
                }
                let sync = out
                    .write(file, offset, &data)
                    .with_context(|| format!("writing {}", f.path))?;
                left[file] -= want;
                if left[file] == 0 {
                    let done = out
                        .complete(file)
                        .and_then(|done| finish_file(&done, f).map(|()| done))
                        .with_context(|| format!("writing {}", f.path))?;
                    let _ = to_sync.send((done, true));
                } else if sync {
                    let _ = to_sync.send((out.handle(file)?, false));
                }
                let total = self
                    .done
                    .fetch_add(want, std::sync::atomic::Ordering::Relaxed);
                self.progress.set(total + want);
            }
            Ok(())
        });
        written?;
        out.flush_all().context("writing the restored files")?;
        Ok((0..files.len())
            .filter(|&f| self.owner[f] == w && left[f] > 0)
            .map(|f| (f, left[f]))
            .collect())
    }
}

/// A restored file's mode and modification time as the backup recorded them.
fn finish_file(out: &std::fs::File, f: &FileEntry) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    out.set_permissions(std::fs::Permissions::from_mode(f.mode))?;
    let mtime = std::time::UNIX_EPOCH + Duration::from_secs(f.mtime.max(0) as u64);
    let _ = out.set_modified(mtime);
    Ok(())
}

/// Write the configuration files the backup kept from outside the data
/// directory into the restored one: the server's postgresql.conf as
/// `postgresql.conf` (where `pg_ctl -D` looks), the others under
/// `lifeboat-config/` at their original paths. Then rewrite every
/// configuration file the copy reads (from postgresql.conf and
/// postgresql.auto.conf, through their includes) so that it does not read or
/// write the original cluster's files (`config_files::rewrite`).
fn place_config_files(ctx: &Context, repo: &Repository, index: &Index, plan: &Plan) -> Result<()> {
    let p = phys(&plan.record);
    let dir = &plan.data_dir;
    let old_dir = config_files::normalize(Path::new(&p.data_directory));
    let kept_files = p.config_files.as_deref().unwrap_or_default();
    let mut main_conf = old_dir.join("postgresql.conf");
    for c in kept_files {
        let original = PathBuf::from(&c.path);
        let dest = match c.setting.as_deref() {
            Some("config_file") => {
                main_conf = original.clone();
                let dest = dir.join("postgresql.conf");
                if dest.exists() {
                    // The server did not read that one: keep it aside.
                    let aside = dir.join("postgresql.conf.lifeboat-unused");
                    std::fs::rename(&dest, &aside)?;
                    eprintln!(
                        "warning: the data directory had a postgresql.conf the server did not use (its config_file was {}): moved to {}",
                        c.path,
                        aside.display()
                    );
                }
                dest
            }
            _ => config_files::restored_path(dir, &original),
        };
        let bytes = stream_bytes(repo, index, &plan.record, &c.stream_name())?
            .with_context(|| format!("the backup has no stream for {}", c.path))?;
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&dest, bytes).with_context(|| format!("writing {}", dest.display()))?;
    }
    let kept: Vec<PathBuf> = kept_files.iter().map(|c| PathBuf::from(&c.path)).collect();
    let relocation = config_files::Relocation {
        old_data_dir: &old_dir,
        new_data_dir: dir,
        kept: p.config_files.as_ref().map(|_| kept.as_slice()),
    };
    // (original path, restored path, depth)
    let mut queue = vec![
        (
            old_dir.join("postgresql.auto.conf"),
            dir.join("postgresql.auto.conf"),
            0,
        ),
        (main_conf, dir.join("postgresql.conf"), 0),
    ];
    let mut seen = std::collections::HashSet::new();
    while let Some((original, restored, depth)) = queue.pop() {
        if depth > config_files::MAX_DEPTH || !seen.insert(restored.clone()) {
            continue;
        }
        let Ok(bytes) = std::fs::read(&restored) else {
            continue;
        };
        let out = config_files::rewrite(&bytes, &original, &restored, &relocation);
        for d in &out.empty_dirs {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        for w in &out.warnings {
            eprintln!("warning: {}: {w}", restored.display());
        }
        if !out.changes.is_empty() {
            std::fs::write(&restored, &out.text)
                .with_context(|| format!("writing {}", restored.display()))?;
            if !ctx.quiet {
                for c in &out.changes {
                    eprintln!("{}: {c}", restored.display());
                }
            }
        }
        for inc in out.includes {
            if let Some(orig) = relocation.original_of(&inc) {
                queue.push((orig, inc, depth + 1));
            }
        }
    }
    Ok(())
}

fn write_recovery(
    ctx: &Context,
    repo: &Repository,
    index: &Index,
    target_name: &str,
    plan: &Plan,
    opts: &PitrOptions,
) -> Result<()> {
    let label = stream_text(repo, index, &plan.record, "backup_label")?
        .context("the backup has no backup_label")?;
    std::fs::write(plan.data_dir.join("backup_label"), label)?;
    if let Some(map) = stream_text(repo, index, &plan.record, "tablespace_map")? {
        // One line per tablespace: "<oid> <location>"; point them where they went.
        let mut out = String::new();
        for line in map.lines().filter(|l| !l.is_empty()) {
            let oid = line.split(' ').next().unwrap_or("");
            match oid.parse().ok().and_then(|o: u32| plan.tablespaces.get(&o)) {
                Some(dir) => out.push_str(&format!("{oid} {}\n", dir.display())),
                None => out.push_str(&format!("{line}\n")),
            }
        }
        std::fs::write(plan.data_dir.join("tablespace_map"), out)?;
    }
    let exe = std::env::current_exe().context("locating the lifeboat binary")?;
    let config =
        std::fs::canonicalize(&ctx.config.path).unwrap_or_else(|_| ctx.config.path.clone());
    let fetch = format!(
        "{} --config {} --quiet wal-fetch --target {target_name} %f %p",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&config.to_string_lossy())
    );
    let mut conf = format!(
        "\n# Added by lifeboat restore of backup {} at {}\nrestore_command = {}\n",
        plan.backup_id.short(),
        Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
        config_files::quote(&fetch)
    );
    let tli = &plan.recovery_timeline;
    conf.push_str(&format!(
        "recovery_target_timeline = {}\n",
        config_files::quote(tli)
    ));
    if opts.standby {
        // Else --start could not connect to it, and nobody could read it.
        conf.push_str("hot_standby = on\n");
    }
    if let Some(c) = &opts.primary_conninfo {
        conf.push_str(&format!("primary_conninfo = {}\n", config_files::quote(c)));
    }
    if let Some(slot) = &opts.primary_slot_name {
        conf.push_str(&format!(
            "primary_slot_name = {}\n",
            config_files::quote(slot)
        ));
    }
    match &plan.target {
        RecoveryTarget::Latest => {}
        RecoveryTarget::Time(t) => conf.push_str(&format!(
            "recovery_target_time = {}\n",
            config_files::quote(&t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())
        )),
        RecoveryTarget::Lsn(l) => conf.push_str(&format!(
            "recovery_target_lsn = {}\n",
            config_files::quote(&l.to_string())
        )),
        RecoveryTarget::Xid(x) => conf.push_str(&format!(
            "recovery_target_xid = {}\n",
            config_files::quote(&x.to_string())
        )),
        RecoveryTarget::Name(n) => conf.push_str(&format!(
            "recovery_target_name = {}\n",
            config_files::quote(n)
        )),
    }
    if plan.target != RecoveryTarget::Latest {
        conf.push_str("recovery_target_action = 'promote'\n");
    }
    if !opts.archive {
        conf.push_str(
            "# A restored copy does not archive into the production repository\n# (restore --archive makes it the new primary that does).\narchive_mode = 'off'\n",
        );
    }
    let auto = plan.data_dir.join("postgresql.auto.conf");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&auto)
        .with_context(|| format!("writing {}", auto.display()))?;
    f.write_all(conf.as_bytes())?;
    let signal = if opts.standby {
        "standby.signal"
    } else {
        "recovery.signal"
    };
    std::fs::write(plan.data_dir.join(signal), "")?;
    Ok(())
}

fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Make what the restore wrote since the data files durable before it
/// reports success: backup_label (without it a crash would leave data
/// files that PostgreSQL starts from the wrong checkpoint), the recovery
/// settings, the kept configuration, new directory entries, and the owner
/// `chown_if_root` gave every file. One `syncfs` per restored file system:
/// the data files were synced as they completed, so little is left to write
/// unless other programs have dirty data on the same file system.
fn sync_restored(plan: &Plan) -> Result<()> {
    for root in std::iter::once(&plan.data_dir).chain(plan.tablespaces.values()) {
        let dir =
            std::fs::File::open(root).with_context(|| format!("opening {}", root.display()))?;
        nix::unistd::syncfs(&dir).with_context(|| format!("syncing {}", root.display()))?;
    }
    Ok(())
}

/// As root, give the restored files to the data directory's original owner
/// (PostgreSQL refuses to run as root). Returns that owner.
fn chown_if_root(plan: &Plan) -> Result<Option<nix::unistd::User>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let name = phys(&plan.record)
        .owner
        .clone()
        .unwrap_or_else(|| "postgres".into());
    let Some(user) = nix::unistd::User::from_name(&name).ok().flatten() else {
        eprintln!(
            "warning: user {name} (the data directory's owner) does not exist here; the files stay owned by root"
        );
        return Ok(None);
    };
    let mut roots = vec![plan.data_dir.clone()];
    roots.extend(plan.tablespaces.values().cloned());
    for root in roots {
        chown_tree(&root, &user)?;
    }
    Ok(Some(user))
}

fn chown_tree(path: &Path, user: &nix::unistd::User) -> Result<()> {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(user.uid),
        Some(user.gid),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("chown {}", path.display()))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), user)?;
        }
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// `pg_ctl start`, then wait until recovery reached its target and the
/// server promoted (or failed: its log says why).
fn start_and_wait(
    ctx: &Context,
    target_name: &str,
    plan: &Plan,
    opts: &PitrOptions,
    tools: &PgTools,
    owner: Option<&nix::unistd::User>,
) -> Result<String> {
    use std::os::unix::process::CommandExt;
    let port = match opts.port {
        Some(p) => p,
        None => free_port()?,
    };
    let log = plan.data_dir.join("lifeboat-restore.log");
    let mut cmd = tools.command("pg_ctl")?;
    cmd.arg("-D")
        .arg(&plan.data_dir)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "3600", "-o"])
        .arg(format!("-p {port}"))
        .arg("start")
        .current_dir(&plan.data_dir);
    if let Some(u) = owner {
        cmd.uid(u.uid.as_raw())
            .gid(u.gid.as_raw())
            .env("HOME", &u.dir)
            .env("USER", &u.name);
    }
    if !ctx.quiet {
        eprintln!(
            "starting the restored server on port {port} (log: {})",
            log.display()
        );
    }
    let out = cmd.output().context("running pg_ctl")?;
    if !out.status.success() {
        bail!(
            "the restored server did not start: {}; its log ends with:\n{}",
            crate::pg::process::tidy(&String::from_utf8_lossy(&out.stderr)),
            log_tail(&log)
        );
    }
    let mut info =
        ConnInfo::parse(&ctx.target(target_name)?.database).map_err(|e| anyhow::anyhow!("{e}"))?;
    info.set("port", port.to_string());
    let conn = Connection::new(&info).map_err(|e| anyhow::anyhow!(e))?;
    let deadline = Instant::now() + Duration::from_secs(24 * 3600);
    // A standby accepts connections once consistent, and stays in recovery.
    let done = if opts.standby { "t" } else { "f" };
    loop {
        let answer = tools.query(&conn, "SELECT pg_is_in_recovery()");
        match answer.as_ref().ok().and_then(|rows| rows.first()?.first()) {
            Some(v) if v == done => break,
            Some(_) if opts.standby => bail!(
                "the restored standby promoted itself (a promote_trigger_file or recovery target in its configuration?); it is running on port {port}, log: {}",
                log.display()
            ),
            _ => {}
        }
        let pid_file = plan.data_dir.join("postmaster.pid");
        if !pid_file.exists() || Instant::now() > deadline {
            bail!(
                "recovery did not finish: the server stopped; its log ends with:\n{}",
                log_tail(&log)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(format!("{}", info))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: FileKind) -> FileEntry {
        FileEntry {
            path: path.into(),
            kind,
            mode: 0o700,
            size: 0,
            mtime: 0,
            blocks: vec![],
            link: (kind == FileKind::Link).then(|| "/srv/ts".into()),
        }
    }

    #[test]
    fn a_manifest_cannot_write_outside_the_restore() {
        let tablespaces = BTreeMap::from([(16400, PathBuf::from("/srv/restored-ts"))]);
        let good = [
            entry("PG_VERSION", FileKind::File),
            entry("base", FileKind::Dir),
            entry("base/5/16384", FileKind::File),
            entry("pg_tblspc", FileKind::Dir),
            entry("pg_tblspc/16400", FileKind::Link),
            entry("pg_tblspc/16400/PG_15_202209061", FileKind::Dir),
            entry("pg_tblspc/16400/PG_15_202209061/5/16500", FileKind::File),
        ];
        check_manifest(&good, &tablespaces).unwrap();
        for (path, kind) in [
            ("../outside", FileKind::File),
            ("base/../../outside", FileKind::File),
            ("/etc/cron.d/x", FileKind::File),
            ("./PG_VERSION", FileKind::File),
            ("", FileKind::Dir),
            // Links other than a tablespace's, and what lies under them.
            ("lifeboat-config", FileKind::Link),
            ("base", FileKind::Link),
            ("pg_tblspc/16401", FileKind::Link),
            ("pg_tblspc/16401/x", FileKind::File),
            ("pg_tblspc/16400/PG_15_202209061", FileKind::Link),
            ("pg_tblspc/16400", FileKind::File),
            // The same path twice.
            ("base/5/16384", FileKind::File),
            ("base", FileKind::Dir),
        ] {
            let mut files = good.to_vec();
            files.push(entry(path, kind));
            let e = check_manifest(&files, &tablespaces).unwrap_err();
            assert!(e.to_string().contains("nothing was written"), "{path}: {e}");
        }
    }

    #[test]
    fn each_file_goes_to_the_writer_with_fewer_bytes_so_far() {
        let block = crate::format::FILE_BLOCK as u64;
        let file = |path: &str, blocks: &[u8]| FileEntry {
            size: block * blocks.len() as u64,
            blocks: blocks.iter().map(|&b| Id([b; 32])).collect(),
            ..entry(path, FileKind::File)
        };
        // A big table, an index, a copy of the index's first block (one
        // block in two files), two small files and an empty one.
        let manifest = [
            file("table", &[1, 2, 3, 4]),
            file("index", &[5, 6]),
            file("copy", &[5]),
            file("small1", &[7]),
            file("small2", &[8]),
            file("empty", &[]),
        ];
        let files: Vec<&FileEntry> = manifest.iter().collect();
        let mut targets: HashMap<Id, Vec<(usize, u64)>> = HashMap::new();
        let mut blocks = Vec::new();
        for (i, f) in files.iter().enumerate() {
            for (n, b) in f.blocks.iter().enumerate() {
                let at = targets.entry(*b).or_default();
                if at.is_empty() {
                    blocks.push(*b);
                }
                at.push((i, n as u64 * block));
            }
        }
        let owner = assign_writers(&blocks, &targets, &files);
        // table -> 0 (4 blocks); index -> 1; copy -> 1 (2 < 4); small1 ->
        // 1 (3 < 4); small2 -> 0 (4 = 4, the first); empty: none.
        assert_eq!(owner, [0, 1, 1, 1, 0, usize::MAX]);
    }

    #[test]
    fn a_manifest_file_needs_one_block_per_64_kib() {
        let tablespaces = BTreeMap::new();
        let block = crate::format::FILE_BLOCK as u64;
        let file = |size: u64, blocks: usize| FileEntry {
            size,
            blocks: vec![Id([7; 32]); blocks],
            ..entry("base/5/16384", FileKind::File)
        };
        for (size, blocks) in [(0, 0), (1, 1), (block, 1), (block + 1, 2), (3 * block, 3)] {
            check_manifest(&[file(size, blocks)], &tablespaces).unwrap();
        }
        for (size, blocks) in [(1, 0), (block, 2), (block + 1, 1), (0, 1)] {
            let e = check_manifest(&[file(size, blocks)], &tablespaces).unwrap_err();
            assert!(
                e.to_string().contains("blocks for")
                    && e.to_string().contains("nothing was written"),
                "{size} bytes in {blocks} blocks: {e}"
            );
        }
    }
}
