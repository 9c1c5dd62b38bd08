//! `lifeboat backup TARGET` for physical targets: a base backup through the
//! non-exclusive backup API, reading the data directory (and tablespaces)
//! directly, in parallel, into the deduplicated repository.
//!
//! Files are stored in fixed blocks, so a block that did not change since
//! any earlier backup is not stored again: every backup is incremental in
//! what it stores and full in what it restores. The backup is listed only
//! once the WAL from its start to its stop is in the repository.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use chrono::Utc;

use super::backup::{BackupOutcome, commit, connect_error, lock_for_backup};
use super::progress::Progress;
use super::{Context, usage};
use crate::codec::Id;
use crate::format::{
    self, BackupKind, BackupRecord, ConfigFileInfo, CorruptPage, DatabaseInfo, FileEntry, FileKind,
    PhysicalInfo, TablespaceInfo,
};
use crate::pg::backup_api::{self, BackupApi, ServerFacts};
use crate::pg::checksum::{self, PageCheck};
use crate::pg::config_files;
use crate::pg::datadir::{self, Entry, Kind};
use crate::pg::tools::PgTools;
use crate::pg::wal::{Lsn, Segment};
use crate::repo::{Repository, Session};

/// Files are stored in blocks of this size (a multiple of PostgreSQL's 8 KiB
/// pages, so a changed page costs one block).
pub const FILE_BLOCK: usize = crate::format::FILE_BLOCK;
/// Blocks of a file handed to the compressing workers at once: the new ones
/// among them are stored as one group.
const BLOCKS_PER_JOB: usize = crate::format::BLOCKS_PER_GROUP;
/// How long a backup waits for its WAL to reach the repository.
const WAL_WAIT: Duration = Duration::from_secs(10 * 60);
/// Corrupt pages listed in a record (all are counted).
const MAX_LISTED_CORRUPT: usize = 1000;

pub fn run(ctx: &Context, target_name: &str) -> Result<BackupOutcome> {
    let target = ctx.target(target_name)?;
    let data_dir = target
        .data_directory
        .clone()
        .expect("config validation requires data_directory for physical targets");
    let (repo_name, _) = ctx.target_repository(target_name)?;
    let conn = ctx.connection(target_name)?;
    let tools = PgTools::locate(target.pg_bindir.as_deref()).map_err(|e| usage(e.to_string()))?;
    let (repo, api) = std::thread::scope(|s| {
        let opened = s.spawn(|| ctx.open_repository(&repo_name));
        let api = BackupApi::connect(&tools, &conn)
            .map_err(|e| connect_error(&conn, e))
            .and_then(|mut api| Ok((api.facts().map_err(|e| anyhow::anyhow!("{e}"))?, api)));
        (opened.join(), api)
    });
    let repo = repo.map_err(|_| anyhow::anyhow!("opening the repository panicked"))??;
    let (facts, mut api) = api?;
    // A primary that cannot be asked only costs the wait for its archiver.
    let primary = match (&target.primary_database, facts.in_recovery) {
        (Some(p), true) => match primary_facts(&tools, p) {
            Ok(f) => Some((p.as_str(), f)),
            Err(e) => {
                eprintln!(
                    "warning: primary_database: {e:#}; the backup goes on and waits for the primary's archiver"
                );
                None
            }
        },
        _ => None,
    };
    check_server(&facts, &data_dir, primary.as_ref().map(|p| &p.1))?;
    if facts.in_recovery && target.primary_database.is_none() && !ctx.quiet {
        eprintln!(
            "backing up from a standby: the backup ends once the primary has archived the WAL segment holding its stop point (primary_database in the target lets lifeboat end that segment at once)"
        );
    }
    // Debian keeps postgresql.conf and pg_hba.conf outside the data
    // directory: a restored copy could not start without them.
    let (config_files, unreadable) = config_files::outside_files(
        &facts.config,
        &[Path::new(&facts.data_directory), &data_dir],
    );
    for w in unreadable {
        eprintln!("warning: {w}");
    }

    let lock = lock_for_backup(ctx, &repo, target_name)?;
    let started = Utc::now();
    let clock = Instant::now();
    let session = repo.start_session()?;
    let label = format!(
        "lifeboat {target_name} {}",
        started.format("%Y-%m-%dT%H:%M:%SZ")
    );
    if !ctx.quiet && !target.fast_checkpoint {
        eprintln!(
            "waiting for a spread checkpoint to start the backup (checkpoint = \"fast\" in the target starts at once)"
        );
    }
    let start_lsn = api
        .start(&label, target.fast_checkpoint)
        .map_err(|e| anyhow::anyhow!("starting the backup: {e}"))?;

    let entries = datadir::walk(&data_dir)
        .with_context(|| format!("reading the data directory {}", data_dir.display()))?;
    let total: u64 = entries.iter().map(|e| e.size).sum();
    let progress = Progress::bytes(&format!("backup {target_name}"), Some(total), ctx.quiet);
    let copied = copy_files(
        &session,
        &entries,
        facts.data_checksums,
        start_lsn,
        &progress,
    );
    progress.finish();
    let (manifest, corrupt, corrupt_count) = match copied {
        Ok(c) => c,
        Err(e) => {
            drop(api);
            return Err(session_error(session, e));
        }
    };
    crate::failpoint::hit("basebackup:before-stop");
    let stop = match api.stop(facts.in_recovery) {
        Ok(stop) => stop,
        Err(e) => {
            // What was copied stays indexed: the next backup does not store
            // it again.
            // (PostgreSQL's "the standby was promoted during online backup")
            let promoted = facts.in_recovery && e.to_string().contains("promoted");
            let hint = if promoted {
                "; the backup is not listed; hint: back up the new primary, or another standby"
            } else {
                ""
            };
            let e = anyhow::anyhow!("stopping the backup: {e}{hint}");
            return Err(session_error(session, e));
        }
    };
    api.close();
    let timeline = backup_api::label_timeline(&stop.backup_label)
        .context("the server's backup_label has no START TIMELINE")?;
    if let Some(t) = stop.stop_timeline.filter(|t| *t != timeline) {
        let e = anyhow::anyhow!(
            "the standby moved from timeline {timeline} to {t} during the backup (its upstream server was promoted): the backup is not listed; hint: run it again"
        );
        return Err(session_error(session, e));
    }

    let mut streams = Vec::new();
    streams.push(write_small(
        &session,
        "backup_label",
        "text",
        stop.backup_label.as_bytes(),
    )?);
    if !stop.tablespace_map.is_empty() {
        streams.push(write_small(
            &session,
            "tablespace_map",
            "text",
            stop.tablespace_map.as_bytes(),
        )?);
    }
    let mut config_infos = Vec::new();
    for f in &config_files {
        let info = ConfigFileInfo {
            setting: f.setting.clone(),
            path: f.path.to_string_lossy().into_owned(),
        };
        streams.push(write_small(
            &session,
            &info.stream_name(),
            "text",
            &f.content,
        )?);
        config_infos.push(info);
    }

    let seg_size = facts.wal_segment_size;
    let first = Segment::of(timeline, start_lsn, seg_size);
    let last = Segment::of(timeline, Lsn(stop.lsn.0.saturating_sub(1)), seg_size);
    // A standby cannot end the segment: ask its primary, when named.
    if let Some((p, _)) = primary
        && !repo.has_wal(facts.system_identifier, &last.name(seg_size))?
    {
        end_primary_segment(ctx, &tools, p, Lsn(last.next().number * seg_size));
    }
    // The index does not depend on the WAL: write it while the archiver
    // pushes the backup's last segment. If that segment never comes, the
    // indexed blocks are left for prune, as after a crash.
    let finish_failed = AtomicBool::new(false);
    let (waited, finished) = std::thread::scope(|s| {
        let finishing = s.spawn(|| {
            let r = session.finish();
            finish_failed.store(r.is_err(), Ordering::Relaxed);
            r
        });
        let needed = NeededWal {
            system_id: facts.system_identifier,
            first,
            last,
            seg_size,
            from_standby: facts.in_recovery,
        };
        let waited = wait_for_wal(ctx, &repo, &needed, &|| {
            finish_failed.load(Ordering::Relaxed)
        });
        (waited, finishing.join())
    });
    let stats = finished
        .map_err(|_| anyhow::anyhow!("storing the backup panicked"))?
        .context("storing the backup")?;
    waited?;
    if corrupt_count > 0 {
        eprintln!(
            "warning: {corrupt_count} page(s) failed their checksum (first: {} block {}); the backup completed and lists them: `lifeboat show` names them",
            corrupt[0].path, corrupt[0].block
        );
    }
    let mut tools_used = std::collections::BTreeMap::new();
    tools_used.insert("psql".to_string(), tools.version.clone());
    let files = manifest.len() as u64;
    let record = BackupRecord {
        copied_from: None,
        version: format::FORMAT_VERSION,
        kind: BackupKind::Physical,
        target: target_name.into(),
        host: crate::repo::hostname(),
        lifeboat: env!("CARGO_PKG_VERSION").into(),
        started,
        finished: Utc::now(),
        database: DatabaseInfo {
            name: String::new(),
            server_version: facts.version.clone(),
            server_version_num: facts.version_num,
            size_bytes: total,
            ..DatabaseInfo::default()
        },
        tools: tools_used,
        streams,
        dump: None,
        physical: Some(PhysicalInfo {
            system_identifier: facts.system_identifier,
            timeline,
            start_lsn,
            stop_lsn: stop.lsn,
            stop_time: stop.time,
            next_xid: stop.next_xid,
            wal_segment_size: seg_size,
            block_size: facts.block_size,
            data_checksums: facts.data_checksums,
            data_directory: facts.data_directory.clone(),
            owner: owner_name(&data_dir),
            tablespaces: facts
                .tablespaces
                .iter()
                .map(|(oid, name, location)| TablespaceInfo {
                    oid: *oid,
                    name: name.clone(),
                    location: location.clone(),
                })
                .collect(),
            files,
            manifest,
            corrupt_pages: corrupt,
            config_files: Some(config_infos),
            from_standby: facts.in_recovery,
        }),
        stats,
    };
    commit(&repo, lock, record, clock)
}

/// Refuse what cannot give a restorable backup, before anything starts.
/// `primary`: what the target's `primary_database` says, when the server
/// is a standby.
fn check_server(facts: &ServerFacts, data_dir: &Path, primary: Option<&ServerFacts>) -> Result<()> {
    if facts.version_num < 100000 {
        bail!(usage(format!(
            "PostgreSQL {} is too old for lifeboat's physical backups (10 or later)",
            facts.version
        )));
    }
    if facts.in_recovery {
        // A standby archives nothing unless archive_mode = always: the WAL
        // comes from the primary's archiver, checked when lifeboat can see it.
        if let Some(p) = primary {
            check_primary(facts, p)?;
        }
    } else if facts.archive_mode == "off" || facts.archiver.trim().is_empty() {
        bail!(usage(
            "WAL archiving is off, so a base backup could not be restored; hint: set archive_mode = on and archive_command = 'lifeboat wal-push %p' (with --config if the configuration is not in a default place), then restart the server"
        ));
    }
    let configured = std::fs::canonicalize(data_dir)
        .with_context(|| format!("data_directory {}", data_dir.display()))?;
    let actual = std::fs::canonicalize(&facts.data_directory)
        .unwrap_or_else(|_| facts.data_directory.clone().into());
    if configured != actual {
        bail!(usage(format!(
            "data_directory is {} but the server runs from {}; hint: set data_directory to the server's (SHOW data_directory)",
            data_dir.display(),
            facts.data_directory
        )));
    }
    Ok(())
}

/// The primary named by `primary_database` must be this standby's primary,
/// and archive its WAL.
fn check_primary(standby: &ServerFacts, primary: &ServerFacts) -> Result<()> {
    if primary.in_recovery {
        bail!(usage(
            "primary_database names a server in recovery (a standby): it must name the primary, where pg_switch_wal runs"
        ));
    }
    if primary.system_identifier != standby.system_identifier {
        bail!(usage(format!(
            "primary_database names another cluster (system identifier {}; the standby's is {}): it must name the standby's primary",
            primary.system_identifier, standby.system_identifier
        )));
    }
    if primary.archive_mode == "off" || primary.archiver.trim().is_empty() {
        bail!(usage(
            "the primary does not archive WAL, so a base backup could not be restored; hint: on the primary set archive_mode = on and archive_command = 'lifeboat wal-push %p', then restart it"
        ));
    }
    Ok(())
}

fn connect_primary(tools: &PgTools, conninfo: &str) -> Result<BackupApi> {
    let conn = super::connection_from(conninfo, "primary_database")?;
    BackupApi::connect(tools, &conn).map_err(|e| connect_error(&conn, e))
}

/// What the server `primary_database` names says about itself.
fn primary_facts(tools: &PgTools, conninfo: &str) -> Result<ServerFacts> {
    let mut api = connect_primary(tools, conninfo)?;
    let facts = api
        .facts()
        .map_err(|e| anyhow::anyhow!("asking the primary: {e}"))?;
    api.close();
    Ok(facts)
}

/// Ask the primary to end its current WAL segment when it still holds WAL
/// before `before`. A failure is only a warning: the primary's archiver
/// gets there by itself (archive_timeout, or more writes).
fn end_primary_segment(ctx: &Context, tools: &PgTools, conninfo: &str, before: Lsn) {
    let switched = connect_primary(tools, conninfo).and_then(|mut api| {
        let r = api
            .switch_wal_if_before(before)
            .map_err(|e| anyhow::anyhow!("pg_switch_wal on the primary: {e}"));
        api.close();
        r
    });
    if let Err(e) = switched
        && !ctx.quiet
    {
        let hint = if format!("{e:#}").contains("permission denied") {
            " (hint: GRANT EXECUTE ON FUNCTION pg_switch_wal() TO the backup role, on the primary)"
        } else {
            ""
        };
        eprintln!("warning: {e:#}; waiting for the primary's archiver instead{hint}");
    }
}

type Copied = (Vec<FileEntry>, Vec<CorruptPage>, u64);

/// Read every file on a few threads, storing their blocks; the manifest in
/// path order. Files that vanish meanwhile are left out (WAL replay drops
/// them too).
fn copy_files(
    session: &Session<'_>,
    entries: &[Entry],
    checksums: bool,
    start_lsn: Lsn,
    progress: &Progress,
) -> Result<Copied> {
    let slots: Vec<Mutex<Option<FileEntry>>> = entries.iter().map(|_| Mutex::new(None)).collect();
    let done = AtomicU64::new(0);
    let corrupt = Mutex::new((Vec::new(), 0u64));
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 4);
    let copy_one = |i: usize| -> Result<()> {
        let e = &entries[i];
        let entry = match &e.kind {
            Kind::Dir => Some(meta_entry(e, FileKind::Dir, None)),
            Kind::Link(t) => Some(meta_entry(e, FileKind::Link, Some(t.clone()))),
            Kind::File => {
                let check = checksums
                    .then(|| checksum::relation_segment(&e.path))
                    .flatten();
                copy_file(session, e, check, start_lsn, &corrupt, &|n| {
                    progress.set(done.fetch_add(n, Ordering::Relaxed) + n)
                })?
            }
        };
        *slots[i].lock().expect("slot") = entry;
        Ok(())
    };
    let (rest, last) = copy_order(entries);
    crate::repo::parallel(&rest, threads, |&i| copy_one(i))?;
    for i in last {
        copy_one(i)?;
    }
    let manifest = slots
        .into_iter()
        .filter_map(|m| m.into_inner().expect("slot"))
        .collect();
    let (pages, count) = corrupt.into_inner().expect("corrupt pages");
    Ok((manifest, pages, count))
}

/// Copied after every other file, as pg_basebackup does: recovery of a
/// backup taken on a standby ends its backup at the copied control file's
/// minimum recovery point, which must cover every page copied before it.
const CONTROL_FILE: &str = "global/pg_control";

/// The entries' indexes: those copied in parallel, then the control file.
fn copy_order(entries: &[Entry]) -> (Vec<usize>, Vec<usize>) {
    (0..entries.len()).partition(|&i| entries[i].path != CONTROL_FILE)
}

fn meta_entry(e: &Entry, kind: FileKind, link: Option<String>) -> FileEntry {
    FileEntry {
        path: e.path.clone(),
        kind,
        mode: e.mode,
        size: 0,
        mtime: e.mtime,
        blocks: Vec::new(),
        link,
    }
}

/// Store one file's blocks. `segment`: the relation segment number when its
/// pages' checksums are to be checked.
fn copy_file(
    session: &Session<'_>,
    e: &Entry,
    segment: Option<u32>,
    start_lsn: Lsn,
    corrupt: &Mutex<(Vec<CorruptPage>, u64)>,
    progress: &dyn Fn(u64),
) -> Result<Option<FileEntry>> {
    let mut file = match std::fs::File::open(&e.source) {
        Ok(f) => f,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("reading {}", e.source.display())),
    };
    let mut blocks = Vec::new();
    let mut size = 0u64;
    let mut end = false;
    // Decided on the file's first group (see `Effort`); small files are not
    // worth the trial.
    let mut effort = None;
    while !end {
        // A few blocks at a time: one hand-over to the workers for all of them.
        let mut batch = Vec::with_capacity(BLOCKS_PER_JOB);
        let mut batch_bytes = 0;
        while batch.len() < BLOCKS_PER_JOB {
            let mut buf = Vec::with_capacity(FILE_BLOCK);
            let n = (&mut file)
                .take(FILE_BLOCK as u64)
                .read_to_end(&mut buf)
                .with_context(|| format!("reading {}", e.source.display()))?;
            if n == 0 {
                end = true;
                break;
            }
            if let Some(seg) = segment {
                check_pages(&file, e, seg, size, &mut buf, start_lsn, corrupt);
            }
            size += n as u64;
            batch_bytes += n as u64;
            batch.push(buf);
            if n < FILE_BLOCK {
                end = true;
                break;
            }
        }
        if !batch.is_empty() {
            let effort = *effort.get_or_insert_with(|| {
                if batch.len() == BLOCKS_PER_JOB {
                    session.choose_effort(&batch.concat())
                } else {
                    crate::codec::Effort::Fast
                }
            });
            blocks.extend(session.store_blobs(batch, effort)?);
            progress(batch_bytes);
        }
    }
    Ok(Some(FileEntry {
        path: e.path.clone(),
        kind: FileKind::File,
        mode: e.mode,
        size,
        mtime: e.mtime,
        blocks,
        link: None,
    }))
}

/// Check the checksum of every whole page in `buf` (read at `offset`). A
/// page that fails is read once more: the server may have been writing it
/// (a torn read), and what the second read gives is what is stored.
fn check_pages(
    file: &std::fs::File,
    e: &Entry,
    segment: u32,
    offset: u64,
    buf: &mut [u8],
    start_lsn: Lsn,
    corrupt: &Mutex<(Vec<CorruptPage>, u64)>,
) {
    let page_size = checksum::PAGE_SIZE;
    for (i, page) in buf.chunks_mut(page_size).enumerate() {
        if page.len() < page_size {
            break;
        }
        let page_no = (offset / page_size as u64) as u32 + i as u32;
        let blkno = segment
            .wrapping_mul(checksum::PAGES_PER_SEGMENT)
            .wrapping_add(page_no);
        if let PageCheck::Bad { .. } = checksum::check_page(page, blkno, start_lsn.0) {
            let _ = file.read_exact_at(page, u64::from(page_no) * page_size as u64);
            if let PageCheck::Bad { stored, computed } =
                checksum::check_page(page, blkno, start_lsn.0)
            {
                let mut c = corrupt.lock().expect("corrupt pages");
                c.1 += 1;
                if c.0.len() < MAX_LISTED_CORRUPT {
                    c.0.push(CorruptPage {
                        path: e.path.clone(),
                        block: page_no,
                        stored,
                        computed,
                    });
                }
            }
        }
    }
}

fn write_small(
    session: &Session<'_>,
    name: &str,
    format_name: &str,
    bytes: &[u8],
) -> Result<format::Stream> {
    let chunks = bytes
        .chunks(crate::codec::MAX_BLOB_SIZE / 4)
        .map(|c| session.store_blob(c.to_vec()))
        .collect::<std::result::Result<Vec<Id>, _>>()?;
    Ok(format::Stream {
        name: name.into(),
        format: format_name.into(),
        size: bytes.len() as u64,
        chunks,
    })
}

/// The pipeline's own error explains a failed store better than "stopped".
fn session_error(session: Session<'_>, e: anyhow::Error) -> anyhow::Error {
    match session.finish() {
        Err(real) => anyhow::Error::new(real).context("storing the backup"),
        Ok(_) => e,
    }
}

/// The WAL segments a base backup needs, from its start to its stop.
#[derive(Clone, Copy)]
struct NeededWal {
    system_id: u64,
    first: Segment,
    last: Segment,
    seg_size: u64,
    /// Taken on a standby: the primary's archiver brings the WAL.
    from_standby: bool,
}

/// The backup is restorable only with the WAL from its start to its stop:
/// wait until the server's archiver has pushed it into this repository, or
/// until `abandoned` says the backup failed meanwhile.
fn wait_for_wal(
    ctx: &Context,
    repo: &Repository,
    needed: &NeededWal,
    abandoned: &dyn Fn() -> bool,
) -> Result<()> {
    let NeededWal {
        system_id,
        first,
        last,
        seg_size,
        from_standby,
    } = *needed;
    let started = Instant::now();
    let deadline = started + WAL_WAIT;
    let mut said = false;
    // Segments arrive in order: look for each once it is the next missing one.
    let mut next = first;
    loop {
        let name = next.name(seg_size);
        if repo.has_wal(system_id, &name)? {
            if next.number == last.number {
                return Ok(());
            }
            next = next.next();
            continue;
        }
        if abandoned() {
            bail!("the backup failed while waiting for WAL segment {name}");
        }
        if Instant::now() > deadline {
            bail!(
                "WAL segment {name}, which this backup needs, did not reach repository {} within {} minutes; the backup is not listed; hint: {}archive_command must run `lifeboat wal-push %p` with this configuration: check the server log for archive failures",
                repo.url(),
                WAL_WAIT.as_secs() / 60,
                if from_standby {
                    "the backup is from a standby, so the primary's "
                } else {
                    ""
                }
            );
        }
        if !said && !ctx.quiet {
            let server = if from_standby { "primary" } else { "server" };
            eprintln!("waiting for the {server} to archive WAL up to {name}");
            said = true;
        }
        std::thread::sleep(wal_poll_interval(started.elapsed()));
    }
}

/// How long to wait before looking for the next WAL segment again: a fifth of
/// the time waited so far, between 10 and 200 ms. The end segment usually
/// arrives within a `wal-push` (a few hundred ms), so a fixed 200 ms poll
/// added 100 ms on average to every backup; a long wait (an archiver
/// retrying) still asks the storage at most five times a second.
fn wal_poll_interval(waited: Duration) -> Duration {
    (waited / 5).clamp(Duration::from_millis(10), Duration::from_millis(200))
}

fn owner_name(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(path).ok()?.uid();
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index is written while the backup waits for its WAL: when that
    /// write fails, the wait ends at once instead of after `WAL_WAIT`.
    #[test]
    fn a_failed_index_write_ends_the_wait_for_wal() {
        let (_, repo) = crate::repo::test_repo();
        let config = crate::config::Config::parse("", Path::new("lifeboat.toml")).expect("config");
        let ctx = Context::new(config, true);
        let seg_size = 16 << 20;
        let segment = Segment::of(1, Lsn(0), seg_size);
        let needed = NeededWal {
            system_id: 1,
            first: segment,
            last: segment,
            seg_size,
            from_standby: false,
        };
        let err = wait_for_wal(&ctx, &repo, &needed, &|| true).expect_err("no WAL was archived");
        assert!(
            err.to_string().contains(
                "the backup failed while waiting for WAL segment 000000010000000000000000"
            ),
            "{err}"
        );
    }

    #[test]
    fn the_control_file_is_copied_last() {
        let entry = |path: &str| Entry {
            path: path.into(),
            kind: Kind::File,
            mode: 0o600,
            size: 8192,
            mtime: 0,
            source: path.into(),
        };
        let entries: Vec<Entry> = [
            "base/1/1259",
            "global/1262",
            "global/pg_control",
            "pg_xact/0000",
        ]
        .into_iter()
        .map(entry)
        .collect();
        assert_eq!(copy_order(&entries), (vec![0, 1, 3], vec![2]));
    }

    fn facts(system_identifier: u64, in_recovery: bool, archive_mode: &str) -> ServerFacts {
        ServerFacts {
            version_num: 150000,
            version: "15.0".into(),
            system_identifier,
            in_recovery,
            data_directory: "/srv/pg".into(),
            data_checksums: false,
            block_size: 8192,
            wal_segment_size: 16 << 20,
            archive_mode: archive_mode.into(),
            archiver: "lifeboat wal-push %p".into(),
            tablespaces: Vec::new(),
            config: Default::default(),
        }
    }

    #[test]
    fn primary_database_must_be_the_standbys_archiving_primary() {
        let standby = facts(7, true, "on");
        check_primary(&standby, &facts(7, false, "on")).expect("its primary");
        for (primary, says) in [
            (facts(7, true, "on"), "names a server in recovery"),
            (
                facts(8, false, "on"),
                "names another cluster (system identifier 8; the standby's is 7)",
            ),
            (facts(7, false, "off"), "the primary does not archive WAL"),
        ] {
            let err = check_primary(&standby, &primary)
                .expect_err(says)
                .to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn wal_poll_starts_fast_and_backs_off_to_200_ms() {
        let ms = Duration::from_millis;
        assert_eq!(wal_poll_interval(ms(0)), ms(10));
        assert_eq!(wal_poll_interval(ms(250)), ms(50));
        assert_eq!(wal_poll_interval(ms(5000)), ms(200));
    }
}
