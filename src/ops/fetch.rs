//! `lifeboat wal-fetch` (restore_command) and its background prefetcher.
//!
//! Recovery runs restore_command once per file and waits for each, so the
//! first `wal-fetch` of a recovery starts one `lifeboat wal-prefetch` that
//! lives as long as the recovery: it opens the repository once (one
//! Argon2id unlock), keeps the segments after the one recovery got last
//! fetched into a spool directory, and answers the other files `wal-fetch`
//! asks it for (timeline history files, the segment after the end of the
//! archive). A `wal-fetch` then only renames a file, or learns that it is not
//! archived, without opening the repository itself.
//!
//! The spool (`pg_wal/lifeboat-prefetch/`, which backups never copy and which
//! holds WAL in the clear anyway):
//!
//! - `pid`: the prefetcher that owns the spool. Written by the `wal-fetch`
//!   that starts it; a prefetcher that finds another pid there stops.
//! - `last`, `segment-size`: the segment recovery got last, and its size.
//! - `NAME`: a fetched file, ready to be taken (renamed to `%p`).
//! - `NAME.want`: a request, holding the pid of the `wal-fetch` that asks.
//! - `NAME.missing`, `NAME.failed`: the answer to that request (the asking
//!   pid first): not in any repository of the target, or could not be
//!   fetched (then `wal-fetch` tries itself, and reports its own error).
//! - `NAME.tmp`: being written.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::wal::{WalOptions, pgdata, system_identifier, target_for};
use super::{Context, usage};
use crate::pg::wal::{Segment, WalFile};
use crate::repo::Repository;

/// Segments fetched ahead of recovery, and at most how many at once.
const PREFETCH_AHEAD: u64 = 8;
const PREFETCH_THREADS: usize = 2;
/// The prefetcher stops when nothing was asked of it this long (a standby
/// that streams does not ask). Longer than any sensible
/// `wal_retrieve_retry_interval` (5 s by default), so a standby waiting at
/// the end of the archive keeps one prefetcher, however slowly it asks.
const PREFETCH_IDLE: Duration = Duration::from_secs(300);
/// Once recovery is over (no signal file), the prefetcher stops when nothing
/// was asked of it this long.
const RECOVERY_OVER_IDLE: Duration = Duration::from_secs(2);
/// A prefetcher this old stops once recovery waits at the end of the archive
/// (a standby following it): the next `wal-fetch` starts one that reads the
/// configuration and runs the binary as they are now, after an upgrade or a
/// change of repository.
const PREFETCH_MAX_AGE: Duration = Duration::from_secs(3600);
/// Recovery is waiting at the end of the archive when it got no new segment
/// for this long.
const WAITING_FOR: Duration = Duration::from_secs(60);
/// A segment found not archived (the end of the archive) is looked for
/// again after this long, in case the archiver has got that far since; a
/// tenth of the time it has been missing, up to [`RETRY_MISSING_MAX`], for a
/// standby that follows the archive for days (recovery asks for it every
/// `wal_retrieve_retry_interval` anyway).
const RETRY_MISSING: Duration = Duration::from_secs(1);
const RETRY_MISSING_MAX: Duration = Duration::from_secs(10);
/// How long `wal-fetch` waits for the prefetcher's answer before it fetches
/// the file itself.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the prefetcher looks for requests, and `wal-fetch` for answers.
const POLL: Duration = Duration::from_millis(2);
/// How often the prefetcher looks at most once nothing happened for a
/// while: a standby's prefetcher lives as long as the standby, and most of
/// that time recovery waits for the next segment to be archived.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// The spool file where a prefetcher that failed says why: its pid, then
/// the error.
const STOPPED: &str = "stopped";

/// Restore one WAL file to `dest`. `Ok(false)` if it was never archived.
pub fn fetch(ctx: &Context, name: &str, dest: &Path, opts: &WalOptions) -> Result<bool> {
    let kind =
        WalFile::parse(name).ok_or_else(|| usage(format!("{name:?} is not a WAL file name")))?;
    let pgdata = pgdata(opts)?;
    let dest = if dest.is_absolute() {
        dest.to_path_buf()
    } else {
        pgdata.join(dest)
    };
    let spool = Spool::new(&pgdata);
    let answer = match spool.take(name, &dest) {
        true => Some(true),
        false => ask(ctx, &spool, name, &dest, opts, &pgdata),
    };
    let found = match answer {
        Some(found) => found,
        None => {
            // No prefetcher could answer: fetch it here.
            let system_id = system_identifier(&pgdata)?;
            let target = target_for(ctx, opts, &pgdata)?;
            let Some(bytes) = Repositories::of(ctx, &target)?.fetch(system_id, name)? else {
                return Ok(false);
            };
            write_file(&dest, &bytes)?;
            true
        }
    };
    if found && matches!(kind, WalFile::Segment { .. }) {
        spool.handed_over(name, &dest);
    }
    Ok(found)
}

/// Write `bytes` to `dest`: through a temporary file renamed into place, so
/// recovery never sees half a file; in place if `dest` is not a regular file
/// (`/dev/null` when run by hand).
fn write_file(dest: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::metadata(dest).is_ok_and(|m| !m.is_file()) {
        return std::fs::write(dest, bytes).with_context(|| format!("writing {}", dest.display()));
    }
    let tmp = dest.with_extension("lifeboat-tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dest).with_context(|| format!("writing {}", dest.display()))
}

/// Ask the prefetcher (starting one if none runs) for `name`, and wait for
/// its answer: `Some(true)` it is at `dest` now, `Some(false)` it is not
/// archived. `None`: no answer (no prefetcher could start, it stopped, it
/// failed to fetch the file, or it took too long): the caller fetches the
/// file itself.
fn ask(
    ctx: &Context,
    spool: &Spool,
    name: &str,
    dest: &Path,
    opts: &WalOptions,
    pgdata: &Path,
) -> Option<bool> {
    let mut child = match spool.running() {
        true => None,
        false => Some(spool.start_prefetcher(ctx, opts, pgdata)?),
    };
    let prefetcher = child.as_ref().map(Child::id).or(spool.owner());
    let me = std::process::id().to_string();
    spool.write_atomic(&format!("{name}.want"), &me).ok()?;
    let answered_to_me = |file: &str| {
        std::fs::read_to_string(spool.path(file))
            .is_ok_and(|t| t.lines().next() == Some(me.as_str()))
    };
    let (missing, failed) = (format!("{name}.missing"), format!("{name}.failed"));
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut round = 0u32;
    let answer = loop {
        if spool.take(name, dest) {
            break Some(true);
        }
        if answered_to_me(&missing) {
            break Some(false);
        }
        if answered_to_me(&failed) || Instant::now() > deadline {
            break None;
        }
        round += 1;
        if round.is_multiple_of(25) {
            // Our own child is a zombie once it stopped: ask it, not kill(0).
            let stopped = match &mut child {
                Some(c) => !matches!(c.try_wait(), Ok(None)),
                None => !spool.running(),
            };
            // (it may have answered just before it stopped)
            if stopped && !spool.path(name).exists() && !answered_to_me(&missing) {
                if let Some(why) = prefetcher.and_then(|pid| spool.stopped_by(pid)) {
                    eprintln!("warning: the WAL prefetcher stopped: {why}; fetching {name} here");
                }
                break None;
            }
        }
        std::thread::sleep(POLL);
    };
    for file in [format!("{name}.want"), missing, failed] {
        if file.ends_with(".want") || answered_to_me(&file) {
            let _ = std::fs::remove_file(spool.path(&file));
        }
    }
    answer
}

/// The first of the target's repositories that has a WAL file whole. Each
/// repository is opened (its keys unlocked) when first needed, once.
struct Repositories<'a> {
    ctx: &'a Context,
    names: Vec<String>,
    opened: Vec<OnceLock<std::result::Result<Repository, String>>>,
}

impl<'a> Repositories<'a> {
    fn of(ctx: &'a Context, target: &str) -> Result<Self> {
        let names = ctx.repositories_of(Some(target))?;
        let opened = names.iter().map(|_| OnceLock::new()).collect();
        Ok(Repositories { ctx, names, opened })
    }

    fn open(&self, i: usize) -> std::result::Result<&Repository, &String> {
        self.opened[i]
            .get_or_init(|| {
                self.ctx
                    .open_repository(&self.names[i])
                    .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
    }

    /// `None` if no repository has the file; an error only if one that has
    /// it could not give it and no other could either.
    fn fetch(&self, system_id: u64, name: &str) -> Result<Option<Vec<u8>>> {
        let mut errors = Vec::new();
        for (i, repo_name) in self.names.iter().enumerate() {
            let fetched = match self.open(i) {
                Ok(repo) => repo.fetch_wal(system_id, name).map_err(|e| e.to_string()),
                Err(e) => Err(e.clone()),
            };
            match fetched {
                Ok(Some(bytes)) => {
                    if !errors.is_empty() && !self.ctx.quiet {
                        eprintln!(
                            "warning: {}; fetched {name} from {repo_name:?}",
                            errors.join("; ")
                        );
                    }
                    return Ok(Some(bytes));
                }
                Ok(None) => {}
                Err(e) => errors.push(format!("repository {repo_name:?}: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(None)
        } else {
            bail!("fetching {name}: {}", errors.join("; "))
        }
    }
}

/// The spool directory the prefetcher and `wal-fetch` share.
struct Spool {
    dir: PathBuf,
}

impl Spool {
    fn new(pgdata: &Path) -> Self {
        Spool {
            dir: pgdata.join("pg_wal").join("lifeboat-prefetch"),
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn read(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.path(file))
            .ok()
            .map(|t| t.trim().to_string())
    }

    fn write_atomic(&self, file: &str, text: &str) -> std::io::Result<()> {
        let tmp = self.path(&format!("{file}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.path(file))
    }

    /// The pid of the prefetcher that owns the spool.
    fn owner(&self) -> Option<u32> {
        self.read("pid").and_then(|p| p.parse().ok())
    }

    /// Whether the owner runs: a live process that is a `wal-prefetch` (not
    /// another process that got the pid of one that is gone, after a reboot).
    fn running(&self) -> bool {
        let Some(pid) = self.owner() else {
            return false;
        };
        match std::fs::read(format!("/proc/{pid}/cmdline")) {
            Ok(cmdline) => cmdline.split(|&b| b == 0).any(|arg| arg == b"wal-prefetch"),
            Err(_) => super::pid_file_alive(&self.path("pid")),
        }
    }

    /// Why the prefetcher `pid` stopped, if it stopped on an error.
    fn stopped_by(&self, pid: u32) -> Option<String> {
        let text = self.read(STOPPED)?;
        let (who, why) = text.split_once('\n')?;
        (who == pid.to_string()).then(|| why.to_string())
    }

    /// Move the fetched `name` to `dest`, if it is there. Copied instead
    /// where a rename cannot go (another file system, a device).
    fn take(&self, name: &str, dest: &Path) -> bool {
        let from = self.path(name);
        let renamed = match std::fs::metadata(dest) {
            Ok(m) if !m.is_file() => Err(std::io::ErrorKind::Unsupported.into()),
            _ => std::fs::rename(&from, dest),
        };
        match renamed {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(_) => {
                let copied = std::fs::read(&from)
                    .map_err(anyhow::Error::from)
                    .and_then(|bytes| write_file(dest, &bytes));
                let _ = std::fs::remove_file(&from);
                copied.is_ok()
            }
        }
    }

    /// Recovery has segment `name` now: the prefetcher brings the ones after
    /// it, and the ones before it will not be asked for again.
    fn handed_over(&self, name: &str, dest: &Path) {
        if std::fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        if let Ok(m) = std::fs::metadata(dest)
            && m.is_file()
            && m.len().is_power_of_two()
        {
            let _ = self.write_atomic("segment-size", &m.len().to_string());
        }
        let _ = self.write_atomic("last", name);
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.len() == 24 && n.as_str() <= name {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }

    /// Start `lifeboat wal-prefetch` in the background and make it the
    /// spool's owner. `None` if it cannot start (recovery then works without
    /// it, only slower).
    fn start_prefetcher(&self, ctx: &Context, opts: &WalOptions, pgdata: &Path) -> Option<Child> {
        if !pgdata.join("pg_wal").is_dir() {
            return None;
        }
        std::fs::create_dir_all(&self.dir).ok()?;
        let mut cmd = super::helper_command(
            ctx,
            &[
                "wal-prefetch".as_ref(),
                "--pgdata".as_ref(),
                pgdata.as_os_str(),
            ],
        )?;
        if let Some(t) = &opts.target {
            cmd.arg("--target").arg(t);
        }
        let _ = std::fs::remove_file(self.path(STOPPED));
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        self.write_atomic("pid", &child.id().to_string()).ok()?;
        Some(child)
    }

    /// The requests no answer is waiting for yet, oldest asker first;
    /// requests of `wal-fetch` processes that are gone are removed.
    fn requests(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for e in rd.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(".want") else {
                continue;
            };
            let Some(asker) = self.read(&file) else {
                continue;
            };
            if !asker.parse::<i32>().is_ok_and(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            }) {
                let _ = std::fs::remove_file(e.path());
                continue;
            }
            let answered = |suffix: &str| {
                self.read(&format!("{name}{suffix}"))
                    .is_some_and(|t| t.lines().next() == Some(asker.as_str()))
            };
            if WalFile::parse(name).is_some()
                && !self.path(name).exists()
                && !answered(".missing")
                && !answered(".failed")
            {
                out.push((name.to_string(), asker));
            }
        }
        out
    }

    /// Remove what was fetched and asked for, and where recovery was: it is
    /// over, or (a standby that streams) does not need the archive for now;
    /// a later prefetcher starts from where recovery asks next.
    fn clear(&self) {
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let base = n.split('.').next().unwrap_or_default();
                if WalFile::parse(base).is_some() || n == "last" {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// One file for the prefetcher's workers to fetch.
enum Job {
    /// Asked for by a `wal-fetch` (the asker's pid): it gets an answer.
    Asked(String, String),
    /// Fetched ahead of recovery.
    Ahead(String),
}

/// `lifeboat wal-prefetch`: serve the spool until recovery is over (the
/// server removed its recovery.signal or standby.signal and asks nothing
/// more, or it stopped, or nothing was asked for [`PREFETCH_IDLE`]), or
/// another prefetcher owns the spool.
pub fn prefetch(ctx: &Context, opts: &WalOptions) -> Result<()> {
    let pgdata = pgdata(opts)?;
    let spool = Spool::new(&pgdata);
    let me = std::process::id();
    // The wal-fetch that started us writes our pid right after the start.
    let since = Instant::now();
    while spool.owner() != Some(me) {
        if since.elapsed() > Duration::from_secs(2) {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
    let result = serve(ctx, opts, &pgdata, &spool, me);
    if spool.owner() == Some(me) {
        spool.clear();
        // Its stderr goes nowhere: the `wal-fetch` waiting for it reports
        // this in the server's log.
        if let Err(e) = &result {
            let _ = spool.write_atomic(STOPPED, &format!("{me}\n{e:#}"));
        }
        let _ = std::fs::remove_file(spool.path("pid"));
    }
    result
}

fn serve(ctx: &Context, opts: &WalOptions, pgdata: &Path, spool: &Spool, me: u32) -> Result<()> {
    // PostgreSQL fsyncs every segment it restored before replaying it
    // (durable_rename in KeepFileRestoredFromArchive), in the startup
    // process: 16 MiB written to disk in recovery's critical path, where a
    // replay from pg_wal writes nothing. Fetched files are written to disk
    // here, in the background, while earlier segments replay, so that fsync
    // finds little or nothing left to write.
    let (writeback, files) = std::sync::mpsc::channel::<std::fs::File>();
    std::thread::spawn(move || {
        for file in files {
            let _ = file.sync_data();
        }
    });
    let system_id = system_identifier(pgdata)?;
    let target = target_for(ctx, opts, pgdata)?;
    let repos = Repositories::of(ctx, &target)?;
    // Unlock the first repository now: every answer needs it.
    if let Err(e) = repos.open(0) {
        bail!("{e}");
    }
    // Run by hand on a copy of a data directory there is no server to
    // outlive; during recovery there is one, and its end ends us too.
    let server = pgdata.join("postmaster.pid");
    let had_server = server.exists();
    // PostgreSQL removes the signal file when recovery ends (a promotion),
    // then asks for the timeline history files of the new timeline: once
    // those are answered, nothing is asked again, and what was fetched
    // beyond the recovery target goes.
    let signals = ["recovery.signal", "standby.signal"].map(|f| pgdata.join(f));
    let recovering = || signals.iter().any(|f| f.exists());
    let for_server = had_server || recovering();
    let mut active = Instant::now();
    let born = active;
    // When recovery last took a new segment.
    let mut progressed = active;
    let mut last_seen = None;
    // The first segment ahead found not archived.
    let mut end: Option<EndOfArchive> = None;
    // What was fetched ahead, for as long as recovery has not got past it: a
    // segment `wal-fetch` took from the spool is not fetched again (it would
    // be a wasted 16 MiB, and left in the spool when it lands after the
    // `wal-fetch` that took it cleared what recovery is past).
    let mut fetched_ahead = std::collections::BTreeSet::<String>::new();
    loop {
        if spool.owner() != Some(me) {
            return Ok(());
        }
        let last = spool.read("last");
        if last != last_seen {
            active = Instant::now();
            progressed = active;
            last_seen = last;
            if let Some(last) = &last_seen {
                fetched_ahead.retain(|n| n > last);
                // Recovery got there (the archiver caught up): look ahead again.
                let seg_size = spool.read("segment-size").and_then(|s| s.parse().ok());
                if let (Some(e), Some(size)) = (end, seg_size)
                    && last.as_str() >= e.segment.name(size).as_str()
                {
                    end = None;
                }
            }
        }
        let asked = spool.requests();
        if !asked.is_empty() {
            active = Instant::now();
        }
        let done = time_to_stop(
            born.elapsed(),
            active.elapsed(),
            progressed.elapsed(),
            !asked.is_empty(),
        );
        let recovery_over = for_server && active.elapsed() > RECOVERY_OVER_IDLE && !recovering();
        if done || recovery_over || (had_server && !server.exists()) {
            return Ok(());
        }
        let room = PREFETCH_THREADS.saturating_sub(asked.len());
        let coming: Vec<String> = ahead(spool, last_seen.as_deref(), end)
            .into_iter()
            .filter(|n| !asked.iter().any(|(a, _)| a == n) && !fetched_ahead.contains(n))
            .take(room)
            .collect();
        let mut jobs: Vec<Job> = asked.into_iter().map(|(n, a)| Job::Asked(n, a)).collect();
        jobs.extend(coming.into_iter().map(Job::Ahead));
        if jobs.is_empty() {
            std::thread::sleep(poll_interval(active.elapsed()));
            continue;
        }
        let not_archived = Mutex::new(None::<Segment>);
        let got_ahead = Mutex::new(Vec::new());
        crate::repo::parallel(&jobs, PREFETCH_THREADS, |job| -> Result<()> {
            let name = match job {
                Job::Asked(name, _) | Job::Ahead(name) => name,
            };
            let fetched = repos.fetch(system_id, name).and_then(|bytes| match bytes {
                Some(bytes) => {
                    let tmp = spool.path(&format!("{name}.tmp"));
                    let mut file = std::fs::File::create(&tmp)?;
                    file.write_all(&bytes)?;
                    std::fs::rename(&tmp, spool.path(name))?;
                    let _ = writeback.send(file);
                    Ok(true)
                }
                None => Ok(false),
            });
            match (job, fetched) {
                (Job::Ahead(name), Ok(true)) => {
                    // Recovery may have got past it meanwhile (another
                    // `wal-fetch` fetched it): not left behind in the spool.
                    if spool
                        .read("last")
                        .is_some_and(|last| name.as_str() <= last.as_str())
                    {
                        let _ = std::fs::remove_file(spool.path(name));
                    }
                    got_ahead.lock().expect("got ahead").push(name.clone());
                }
                (Job::Asked(..), Ok(true)) => {}
                (Job::Asked(name, asker), Ok(false)) => {
                    let _ = spool.write_atomic(&format!("{name}.missing"), asker);
                }
                (Job::Asked(name, asker), Err(e)) => {
                    let _ = std::fs::remove_file(spool.path(&format!("{name}.tmp")));
                    let _ =
                        spool.write_atomic(&format!("{name}.failed"), &format!("{asker}\n{e:#}"));
                }
                // Not archived (yet), or not fetched: not again for a while.
                (Job::Ahead(name), _) => {
                    let _ = std::fs::remove_file(spool.path(&format!("{name}.tmp")));
                    let seg_size = spool.read("segment-size").and_then(|s| s.parse().ok());
                    if let Some(s) = WalFile::parse(name).and_then(|k| k.segment(seg_size?)) {
                        let mut first = not_archived.lock().expect("not archived");
                        if first.is_none_or(|f| s.number < f.number) {
                            *first = Some(s);
                        }
                    }
                }
            }
            Ok(())
        })?;
        if let Some(s) = not_archived.into_inner().expect("not archived") {
            let now = Instant::now();
            let since = end.filter(|e| e.segment == s).map_or(now, |e| e.since);
            end = Some(EndOfArchive {
                segment: s,
                checked: now,
                since,
            });
        }
        fetched_ahead.extend(got_ahead.into_inner().expect("got ahead"));
    }
}

/// The first segment ahead that was not archived when last looked for.
#[derive(Clone, Copy)]
struct EndOfArchive {
    segment: Segment,
    /// Last looked for.
    checked: Instant,
    /// First found missing.
    since: Instant,
}

impl EndOfArchive {
    /// Not to be looked for again yet.
    fn fresh(&self) -> bool {
        self.checked.elapsed() < retry_missing_after(self.checked.duration_since(self.since))
    }
}

/// Whether the prefetcher stops, `age` after it started, `idle` since the
/// last request or progress, `waiting` since recovery last took a new
/// segment, with requests pending or not: nothing asked for a while, or old
/// and waiting at the end of the archive with nobody to answer.
fn time_to_stop(age: Duration, idle: Duration, waiting: Duration, asked: bool) -> bool {
    idle > PREFETCH_IDLE || (age > PREFETCH_MAX_AGE && waiting > WAITING_FOR && !asked)
}

/// How long after looking for a missing segment to look again, when it has
/// been missing for `missing_for`.
fn retry_missing_after(missing_for: Duration) -> Duration {
    (missing_for / 10).clamp(RETRY_MISSING, RETRY_MISSING_MAX)
}

/// How long the prefetcher sleeps when there is nothing to do, after
/// `idle_for` without a request or progress of recovery: a twentieth of
/// that, between [`POLL`] and [`IDLE_POLL`], so an answer comes at most 5 %
/// later than recovery's own pace.
fn poll_interval(idle_for: Duration) -> Duration {
    (idle_for / 20).clamp(POLL, IDLE_POLL)
}

/// The segments to fetch ahead: the next [`PREFETCH_AHEAD`] after the one
/// recovery got last, on its timeline, that are not in the spool, stopping
/// at the end of the archive unless it is time to look for it again.
fn ahead(spool: &Spool, last: Option<&str>, end: Option<EndOfArchive>) -> Vec<String> {
    let seg_size: Option<u64> = spool.read("segment-size").and_then(|s| s.parse().ok());
    let last = seg_size.and_then(|size| {
        let s = WalFile::parse(last?)?.segment(size)?;
        Some((s, size))
    });
    match last {
        Some((last, size)) => (last.number + 1..=last.number + PREFETCH_AHEAD)
            .map(|number| Segment {
                timeline: last.timeline,
                number,
            })
            .take_while(|s| {
                !end.is_some_and(|e| {
                    e.segment.timeline == s.timeline && s.number >= e.segment.number && e.fresh()
                })
            })
            .map(|s| s.name(size))
            .filter(|n| !spool.path(n).exists())
            .collect(),
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_the_archive_is_looked_for_less_often_the_longer_it_lasts() {
        let s = Duration::from_secs;
        assert_eq!(retry_missing_after(s(0)), s(1));
        assert_eq!(retry_missing_after(s(5)), s(1));
        assert_eq!(retry_missing_after(s(30)), s(3));
        assert_eq!(retry_missing_after(s(3600)), s(10));
    }

    #[test]
    fn an_old_prefetcher_stops_while_recovery_waits_for_the_archive() {
        let s = Duration::from_secs;
        // A standby asking every 5 s, a new segment a minute ago.
        assert!(!time_to_stop(s(600), s(5), s(61), false));
        assert!(time_to_stop(s(3601), s(5), s(61), false));
        // Not while a request is pending, nor while recovery moves on.
        assert!(!time_to_stop(s(3601), s(0), s(61), true));
        assert!(!time_to_stop(s(3601), s(1), s(10), false));
        // Nothing asked for five minutes: whatever the age.
        assert!(!time_to_stop(s(1), s(299), s(299), false));
        assert!(time_to_stop(s(1), s(301), s(301), false));
    }

    #[test]
    fn an_idle_prefetcher_polls_slowly() {
        let ms = Duration::from_millis;
        assert_eq!(poll_interval(Duration::ZERO), POLL);
        assert_eq!(poll_interval(ms(20)), POLL);
        assert_eq!(poll_interval(ms(200)), ms(10));
        assert_eq!(poll_interval(ms(2000)), IDLE_POLL);
    }
}
