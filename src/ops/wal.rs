//! `lifeboat wal-push` (archive_command) and `lifeboat wal-fetch`
//! (restore_command).
//!
//! Both run with the server's data directory as working directory, which
//! tells them the cluster (its system identifier, from `global/pg_control`)
//! and, through the configuration's `data_directory`, the target.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::{Context, usage};
use crate::config::Method;
use crate::pg::wal::WalFile;

/// Where the archive and restore commands find their cluster.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WalOptions {
    /// The physical target (default: the one whose data_directory is PGDATA,
    /// or the only physical target)
    #[arg(long)]
    pub target: Option<String>,
    /// The server's data directory (default: the working directory, which is
    /// where PostgreSQL runs archive_command and restore_command)
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
}

/// The system identifier in `global/pg_control` (its first 8 bytes).
pub fn system_identifier(pgdata: &Path) -> Result<u64> {
    let path = pgdata.join("global/pg_control");
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "reading {} to learn which cluster this is; hint: run from the data directory or give --pgdata",
            path.display()
        )
    })?;
    let first: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{} is too short", path.display()))?;
    Ok(u64::from_le_bytes(first))
}

/// The physical target a data directory belongs to.
pub fn target_for(ctx: &Context, opts: &WalOptions, pgdata: &Path) -> Result<String> {
    if let Some(t) = &opts.target {
        ctx.target(t)?;
        return Ok(t.clone());
    }
    let here = std::fs::canonicalize(pgdata).unwrap_or_else(|_| pgdata.to_path_buf());
    let physical: Vec<(&String, &crate::config::TargetConfig)> = ctx
        .config
        .targets
        .iter()
        .filter(|(_, t)| t.method == Method::Physical)
        .collect();
    for (name, t) in &physical {
        if let Some(d) = &t.data_directory
            && std::fs::canonicalize(d).is_ok_and(|d| d == here)
        {
            return Ok(name.to_string());
        }
    }
    match physical.as_slice() {
        [(name, _)] => Ok(name.to_string()),
        [] => bail!(usage(
            "no physical target in the configuration; hint: add a target with method = \"physical\" and data_directory"
        )),
        _ => bail!(usage(format!(
            "several physical targets and none has data_directory {}; hint: give --target NAME",
            here.display()
        ))),
    }
}

fn pgdata(opts: &WalOptions) -> Result<PathBuf> {
    match &opts.pgdata {
        Some(p) => Ok(p.clone()),
        None => std::env::current_dir().context("the working directory"),
    }
}

/// Archive one file: into every repository of the target, or, with
/// `archive_async`, into the local spool that the uploader empties.
pub fn push(ctx: &Context, path: &Path, opts: &WalOptions) -> Result<()> {
    let pgdata = pgdata(opts)?;
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        pgdata.join(path)
    };
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind = WalFile::parse(&name).ok_or_else(|| {
        usage(format!(
            "{name:?} is not a WAL file name; hint: archive_command = 'lifeboat wal-push %p'"
        ))
    })?;
    let system_id = system_identifier(&pgdata)?;
    let target = target_for(ctx, opts, &pgdata)?;
    if ctx.target(&target)?.archive.asynchronous {
        check_cluster(&full, &name, &kind, system_id, &pgdata)?;
        super::spool::push(ctx, &target, &pgdata, &full)?;
        return Ok(());
    }
    let content = std::fs::read(&full).with_context(|| format!("reading {}", full.display()))?;
    check_cluster(&full, &name, &kind, system_id, &pgdata)?;
    // Into every repository of the target: a failure in any one fails the
    // push, so PostgreSQL keeps the segment and retries; the repositories that
    // have it already answer the retry from what they hold.
    let mut first = None;
    let mut failed = Vec::new();
    for (repo_name, repo) in ctx.open_repositories(&ctx.repositories_of(Some(&target))?) {
        let pushed = repo.and_then(|repo| Ok(repo.push_wal(system_id, &name, &content)?));
        match pushed {
            Ok(p) => {
                first.get_or_insert(p);
            }
            Err(e) => failed.push(format!("repository {repo_name:?}: {e:#}")),
        }
    }
    match (first, failed.is_empty()) {
        (Some(_), true) => Ok(()),
        _ => bail!("archiving {name} failed: {}", failed.join("; ")),
    }
}

/// A segment's first page names its cluster: refuse one of another cluster.
fn check_cluster(
    path: &Path,
    name: &str,
    kind: &WalFile,
    system_id: u64,
    pgdata: &Path,
) -> Result<()> {
    use std::io::Read;
    if !matches!(kind, WalFile::Segment { .. }) {
        return Ok(());
    }
    let mut head = [0u8; 32];
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    if f.read_exact(&mut head).is_ok() {
        let id = u64::from_le_bytes(head[24..32].try_into().expect("8 bytes"));
        if id != system_id {
            bail!(
                "{name} belongs to cluster {id}, not to the cluster of {} ({system_id})",
                pgdata.display()
            );
        }
    }
    Ok(())
}

/// Segments fetched ahead of recovery, and at most how many at once.
const PREFETCH_AHEAD: u64 = 8;
const PREFETCH_THREADS: usize = 2;
/// The prefetcher stops when recovery has not asked for a segment this long.
const PREFETCH_IDLE: Duration = Duration::from_secs(30);
/// In the spool: the segment recovery got last, and the segment size.
const LAST: &str = "last";
const SEGMENT_SIZE: &str = "segment-size";

/// Remove the segments fetched ahead (and half-written ones).
fn remove_prefetched(spool: &Path) {
    if let Ok(rd) = std::fs::read_dir(spool) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if WalFile::parse(n.trim_end_matches(".tmp")).is_some() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Move the prefetched `name` to `dest`. If a prefetcher runs and `name` is
/// one of the segments it is bringing (the next ones on the timeline of the
/// segment recovery got last), wait for it: cheaper than opening the
/// repository here and fetching the segment a second time. Otherwise, or if
/// the prefetcher stops (end of the archive), the caller fetches it itself.
fn take_prefetched(spool: &Path, name: &str, dest: &Path, seg_size: Option<u64>) -> bool {
    if std::fs::rename(spool.join(name), dest).is_ok() {
        return true;
    }
    let Some(seg_size) = seg_size else {
        return false;
    };
    let segment = |n: &str| WalFile::parse(n.trim()).and_then(|k| k.segment(seg_size));
    let last = std::fs::read_to_string(spool.join(LAST))
        .ok()
        .and_then(|n| segment(&n));
    let coming = match (last, segment(name)) {
        (Some(l), Some(s)) => {
            s.timeline == l.timeline && s.number > l.number && s.number <= l.number + PREFETCH_AHEAD
        }
        _ => false,
    };
    if !coming {
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::fs::rename(spool.join(name), dest).is_ok() {
            return true;
        }
        if !prefetcher_running(spool) || Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Where prefetched segments wait: in pg_wal, which backups never copy and
/// which holds WAL in the clear anyway.
fn spool_dir(pgdata: &Path) -> PathBuf {
    pgdata.join("pg_wal").join("lifeboat-prefetch")
}

/// Restore one file to `dest`. `Ok(false)` if it was never archived.
///
/// Recovery asks for one segment at a time and waits for each, so after a
/// segment is handed over, a background `lifeboat wal-prefetch` fetches
/// the next ones into a spool directory in parallel; the next call finds
/// its segment there and only renames it.
pub fn fetch(ctx: &Context, name: &str, dest: &Path, opts: &WalOptions) -> Result<bool> {
    let kind =
        WalFile::parse(name).ok_or_else(|| usage(format!("{name:?} is not a WAL file name")))?;
    let pgdata = pgdata(opts)?;
    let dest = if dest.is_absolute() {
        dest.to_path_buf()
    } else {
        pgdata.join(dest)
    };
    let spool = spool_dir(&pgdata);
    let segment = matches!(kind, WalFile::Segment { .. });
    if segment && take_prefetched(&spool, name, &dest, seg_size_of(&spool)) {
        handed_over(ctx, name, &dest, opts, &pgdata);
        return Ok(true);
    }
    let system_id = system_identifier(&pgdata)?;
    let target = target_for(ctx, opts, &pgdata)?;
    let Some(bytes) = fetch_from_any(ctx, &target, system_id, name)? else {
        return Ok(false);
    };
    let tmp = dest.with_extension("lifeboat-tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("writing {}", dest.display()))?;
    if segment {
        handed_over(ctx, name, &dest, opts, &pgdata);
    }
    Ok(true)
}

/// Recovery has segment `name` now: tell the prefetcher (it keeps the
/// segments after it coming), and start one if none runs.
fn handed_over(ctx: &Context, name: &str, dest: &Path, opts: &WalOptions, pgdata: &Path) {
    let spool = spool_dir(pgdata);
    let _ = std::fs::create_dir_all(&spool);
    let _ = std::fs::write(spool.join(LAST), name);
    start_prefetch(ctx, name, dest, opts, pgdata);
}

/// The segment size a running prefetcher works with (it writes it next to
/// its pid), if one runs.
fn seg_size_of(spool: &Path) -> Option<u64> {
    std::fs::read_to_string(spool.join(SEGMENT_SIZE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// A WAL file from the first of the target's repositories that has it whole.
/// `None` if none has it; an error only if one that has it could not give it
/// and no other could either.
fn fetch_from_any(
    ctx: &Context,
    target: &str,
    system_id: u64,
    name: &str,
) -> Result<Option<Vec<u8>>> {
    let mut errors = Vec::new();
    for repo_name in ctx.repositories_of(Some(target))? {
        let fetched = ctx
            .open_repository(&repo_name)
            .and_then(|repo| Ok(repo.fetch_wal(system_id, name)?));
        match fetched {
            Ok(Some(bytes)) => {
                if !errors.is_empty() {
                    eprintln!(
                        "warning: {}; fetched {name} from {repo_name:?}",
                        errors.join("; ")
                    );
                }
                return Ok(Some(bytes));
            }
            Ok(None) => {}
            Err(e) => errors.push(format!("repository {repo_name:?}: {e:#}")),
        }
    }
    if errors.is_empty() {
        Ok(None)
    } else {
        bail!("fetching {name}: {}", errors.join("; "))
    }
}

/// Start `lifeboat wal-prefetch` in the background, unless one is running.
/// Best effort: recovery works without it, only slower. `fetched` is the
/// segment just handed over: its size is the cluster's segment size.
fn start_prefetch(ctx: &Context, after: &str, fetched: &Path, opts: &WalOptions, pgdata: &Path) {
    let Ok(segment_size) = std::fs::metadata(fetched).map(|m| m.len()) else {
        return;
    };
    if !segment_size.is_power_of_two() {
        return;
    }
    let spool = spool_dir(pgdata);
    if !pgdata.join("pg_wal").is_dir() || std::fs::create_dir_all(&spool).is_err() {
        return;
    }
    // Segments before the one just handed over will not be asked for again.
    if let Ok(rd) = std::fs::read_dir(&spool) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.len() == 24 && n.as_str() <= after {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if prefetcher_running(&spool) {
        return;
    }
    let Some(mut cmd) = super::helper_command(
        ctx,
        &[
            "wal-prefetch".as_ref(),
            after.as_ref(),
            "--pgdata".as_ref(),
            pgdata.as_os_str(),
        ],
    ) else {
        return;
    };
    cmd.arg("--segment-size").arg(segment_size.to_string());
    if let Some(t) = &opts.target {
        cmd.arg("--target").arg(t);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _ = cmd.spawn();
}

fn prefetcher_running(spool: &Path) -> bool {
    super::pid_file_alive(&spool.join("pid"))
}

/// `lifeboat wal-prefetch AFTER`: keep the segments that follow the one
/// recovery asked for last (on `after`'s timeline) fetched into the spool
/// directory, up to `PREFETCH_AHEAD` of them, a few at a time, for as long as
/// recovery goes on. It stops at the first segment not archived (yet), when
/// recovery moves to another timeline, when it has not asked for anything for
/// a while, or when the server is gone. One process for the whole recovery:
/// the repository is opened (and its passphrase's Argon2 paid) once.
pub fn prefetch(ctx: &Context, after: &str, seg_size: u64, opts: &WalOptions) -> Result<()> {
    let pgdata = pgdata(opts)?;
    let spool = spool_dir(&pgdata);
    std::fs::create_dir_all(&spool)?;
    std::fs::write(spool.join(SEGMENT_SIZE), seg_size.to_string())?;
    std::fs::write(spool.join("pid"), std::process::id().to_string())?;
    let result = (|| -> Result<()> {
        let system_id = system_identifier(&pgdata)?;
        let target = target_for(ctx, opts, &pgdata)?;
        // The first repository only: what it lacks, wal-fetch itself looks
        // for in the others.
        let (repo_name, _) = ctx.target_repository(&target)?;
        let repo = ctx.open_repository(&repo_name)?;
        let first = WalFile::parse(after)
            .and_then(|k| k.segment(seg_size))
            .context("not a segment name")?;
        let segment_of = |name: &str| WalFile::parse(name).and_then(|k| k.segment(seg_size));
        let mut next = first.number + 1;
        let mut last_seen = first.number;
        let mut idle_since = Instant::now();
        // Run by hand on a copy of a data directory there is no server to
        // outlive; during recovery there is one, and its end ends us too.
        let server = pgdata.join("postmaster.pid");
        let had_server = server.exists();
        loop {
            let asked = std::fs::read_to_string(spool.join(LAST))
                .ok()
                .and_then(|n| segment_of(n.trim()));
            match asked {
                Some(s) if s.timeline != first.timeline => return Ok(()),
                Some(s) if s.number > last_seen => {
                    last_seen = s.number;
                    idle_since = Instant::now();
                }
                _ => {}
            }
            if idle_since.elapsed() > PREFETCH_IDLE || (had_server && !server.exists()) {
                // Recovery is over (it stopped at its target before the end
                // of the archive): what was fetched ahead is not needed.
                remove_prefetched(&spool);
                return Ok(());
            }
            next = next.max(last_seen + 1);
            let wanted: Vec<String> = (next..=last_seen + PREFETCH_AHEAD)
                .map(|number| {
                    crate::pg::wal::Segment {
                        timeline: first.timeline,
                        number,
                    }
                    .name(seg_size)
                })
                .filter(|n| !spool.join(n).exists())
                .collect();
            if wanted.is_empty() {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            // A segment not archived (yet) stops the workers: recovery ends
            // there, or the archiver has not got that far.
            super::for_each_parallel(&wanted, PREFETCH_THREADS, |_, name| {
                // The .tmp file says "being fetched": wal-fetch waits for it.
                let tmp = spool.join(format!("{name}.tmp"));
                let mut out = std::fs::File::create(&tmp)?;
                let fetched = repo
                    .fetch_wal(system_id, name)
                    .map_err(anyhow::Error::from)
                    .and_then(|b| b.with_context(|| format!("{name} is not archived")))
                    .and_then(|bytes| Ok(std::io::Write::write_all(&mut out, &bytes)?));
                match fetched {
                    Ok(()) => Ok(std::fs::rename(&tmp, spool.join(name))?),
                    Err(e) => {
                        let _ = std::fs::remove_file(&tmp);
                        Err(e)
                    }
                }
            })?;
            next = last_seen + PREFETCH_AHEAD + 1;
        }
    })();
    let _ = std::fs::remove_file(spool.join("pid"));
    result
}
