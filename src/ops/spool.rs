//! Asynchronous archiving (`archive_async = true`): `wal-push` makes the file
//! durable in a local spool and returns at once; `lifeboat wal-upload`, which
//! `wal-push` starts when none runs, sends spooled files to every repository
//! of the target and removes each once all of them hold it.
//!
//! PostgreSQL deletes a segment once archive_command succeeds, so the spool
//! copy is fsync'd (file and directory) first: the segment is acknowledged
//! when it is on the local disk, not yet off-site. The spool has a size limit;
//! what `wal-push` does at the limit is the user's choice (`spool_full`): fail
//! (PostgreSQL keeps the segment in pg_wal and retries, nothing is lost) or
//! drop (the archive gets a gap, said loudly).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::wal::WalOptions;
use super::{Context, human_bytes};
use crate::config::{SpoolFull, TargetConfig};
use crate::pg::wal::WalFile;

const PID_FILE: &str = "uploader.pid";
const LOG_FILE: &str = "uploader.log";
/// The log is cut back to its last half once this big.
const LOG_MAX: u64 = 1 << 20;
/// Files sent at once by the uploader.
const UPLOADS: usize = 4;
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What `wal-push` did with a file in asynchronous mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spooled {
    Spooled,
    /// The same file was spooled before (PostgreSQL retrying).
    AlreadySpooled,
    /// The spool was full and `spool_full = "drop"`.
    Dropped,
}

/// Where a target's spool is.
pub fn spool_dir(target: &TargetConfig, pgdata: &Path) -> PathBuf {
    target
        .archive
        .spool_directory
        .clone()
        .unwrap_or_else(|| pgdata.join("pg_wal").join("lifeboat-spool"))
}

/// Spool `source` (the file PostgreSQL asks to archive, named `name`).
pub fn push(ctx: &Context, target_name: &str, pgdata: &Path, source: &Path) -> Result<Spooled> {
    let target = ctx.target(target_name)?;
    let dir = spool_dir(target, pgdata);
    create_private_dir(&dir)?;
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dest = dir.join(&name);
    let size = fs::metadata(source)
        .with_context(|| format!("reading {}", source.display()))?
        .len();
    if dest.exists() {
        // Never replace a spooled file: same content is PostgreSQL retrying,
        // other content is the same mistake a repository would refuse.
        if fs::read(&dest)? == fs::read(source)? {
            start_uploader(ctx, target_name, pgdata, &dir);
            return Ok(Spooled::AlreadySpooled);
        }
        bail!(
            "{name} is in the spool {} with other content; hint: two clusters archiving into one spool? (spool_directory)",
            dir.display()
        );
    }
    let (held, files) = spool_usage(&dir)?;
    let limit = target.archive.spool_max_size;
    if held + size > limit {
        start_uploader(ctx, target_name, pgdata, &dir);
        let why = format!(
            "the WAL spool {} is full ({} in {files} files, spool_max_size {}): the repositories are not keeping up{}",
            dir.display(),
            human_bytes(held),
            human_bytes(limit),
            last_error(&dir).map_or(String::new(), |e| format!(" (last upload error: {e})"))
        );
        match target.archive.spool_full {
            SpoolFull::Fail => bail!(
                "{why}; hint: PostgreSQL keeps {name} and retries; fix the repository, or raise spool_max_size"
            ),
            SpoolFull::Drop => {
                eprintln!(
                    "WARNING: {why}; {name} was DROPPED (spool_full = \"drop\"): the WAL archive now has a gap, and point-in-time recovery cannot pass it until the next base backup"
                );
                log(&dir, &format!("dropped {name}: spool full"));
                return Ok(Spooled::Dropped);
            }
        }
    }
    let tmp = dir.join(format!("{name}.tmp"));
    fs::copy(source, &tmp).with_context(|| format!("copying {name} into the spool"))?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, &dest)?;
    File::open(&dir)?.sync_all()?;
    start_uploader(ctx, target_name, pgdata, &dir);
    Ok(Spooled::Spooled)
}

/// Bytes and files waiting in the spool.
fn spool_usage(dir: &Path) -> Result<(u64, usize)> {
    let mut bytes = 0;
    let mut files = 0;
    for name in spooled(dir)? {
        if let Ok(m) = fs::metadata(dir.join(&name)) {
            bytes += m.len();
            files += 1;
        }
    }
    Ok((bytes, files))
}

/// The WAL files in the spool, oldest name first.
fn spooled(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| WalFile::parse(n).is_some())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    names.sort();
    Ok(names)
}

fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| {
            format!(
                "creating the WAL spool {}; hint: archive_command runs as the cluster's OS user: it must be able to write there",
                dir.display()
            )
        })
}

/// Start `lifeboat wal-upload` for this spool unless one runs. Best effort:
/// the next `wal-push` tries again. The uploader gets its own process group,
/// so stopping PostgreSQL (which signals the archiver's group) does not stop
/// it half-way through the spool.
fn start_uploader(ctx: &Context, target: &str, pgdata: &Path, dir: &Path) {
    if uploader_running(dir) {
        return;
    }
    let Ok(log) = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join(LOG_FILE))
    else {
        return;
    };
    let Some(mut cmd) = super::helper_command(
        ctx,
        &[
            "wal-upload".as_ref(),
            "--pgdata".as_ref(),
            pgdata.as_os_str(),
            "--target".as_ref(),
            target.as_ref(),
        ],
    ) else {
        return;
    };
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0);
    let _ = cmd.spawn();
}

fn uploader_running(dir: &Path) -> bool {
    super::pid_file_alive(&dir.join(PID_FILE))
}

/// Become the spool's only uploader: create the pid file, replacing the one
/// of an uploader that is gone. `false` if another one runs.
fn claim(dir: &Path) -> Result<bool> {
    for _ in 0..2 {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(PID_FILE))
        {
            Ok(mut f) => {
                write!(f, "{}", std::process::id())?;
                return Ok(true);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if uploader_running(dir) {
                    return Ok(false);
                }
                let _ = fs::remove_file(dir.join(PID_FILE));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

/// `lifeboat wal-upload`: send the spool's files to every repository of the
/// target until the spool is empty. Failures are retried with backoff (up
/// to a minute apart) for as long as files wait.
pub fn upload(ctx: &Context, opts: &WalOptions) -> Result<()> {
    let pgdata = match &opts.pgdata {
        Some(p) => p.clone(),
        None => std::env::current_dir()?,
    };
    let target_name = super::wal::target_for(ctx, opts, &pgdata)?;
    let target = ctx.target(&target_name)?;
    let dir = spool_dir(target, &pgdata);
    if !dir.is_dir() || !claim(&dir)? {
        return Ok(());
    }
    let result = upload_loop(ctx, &target_name, &pgdata, &dir);
    let _ = fs::remove_file(dir.join(PID_FILE));
    if let Err(e) = &result {
        log(&dir, &format!("uploader stopped: {e:#}"));
    }
    result
}

fn upload_loop(ctx: &Context, target: &str, pgdata: &Path, dir: &Path) -> Result<()> {
    let system_id = super::wal::system_identifier(pgdata)?;
    let names = ctx.repositories_of(Some(target))?;
    let mut repos = Vec::new();
    let mut backoff = Duration::from_secs(1);
    loop {
        let waiting = spooled(dir)?;
        if waiting.is_empty() {
            // Give up the pid file before the last look: a file spooled after
            // that look finds no uploader and starts one.
            let _ = fs::remove_file(dir.join(PID_FILE));
            if spooled(dir)?.is_empty() || !claim(dir)? {
                return Ok(());
            }
            continue;
        }
        if repos.len() != names.len() {
            repos.clear();
            for (n, r) in ctx.open_repositories(&names) {
                match r {
                    Ok(r) => repos.push((n, r)),
                    Err(e) => {
                        log(dir, &format!("opening repository {n:?}: {e:#}"));
                        break;
                    }
                }
            }
            if repos.len() != names.len() {
                repos.clear();
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        }
        let batch: Vec<String> = waiting.into_iter().take(UPLOADS * 4).collect();
        let started = Instant::now();
        let failed = std::sync::Mutex::new(Vec::new());
        let _ = crate::repo::parallel(&batch, UPLOADS, |name: &String| -> Result<()> {
            let path = dir.join(name);
            let content = match fs::read(&path) {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            for (repo_name, repo) in &repos {
                if let Err(e) = repo.push_wal(system_id, name, &content) {
                    failed
                        .lock()
                        .expect("failure list")
                        .push(format!("{name} into {repo_name:?}: {e}"));
                    return Ok(());
                }
            }
            fs::remove_file(&path)?;
            Ok(())
        });
        File::open(dir)?.sync_all()?;
        let failed = failed.into_inner().expect("failure list");
        if failed.is_empty() {
            backoff = Duration::from_secs(1);
            continue;
        }
        for f in &failed {
            log(dir, f);
        }
        // A repository that fails may have lost its connection for good:
        // open it again on the next round.
        repos.clear();
        let wait = backoff.saturating_sub(started.elapsed());
        std::thread::sleep(wait);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Append a line to the spool's log (cut back when it grows large).
fn log(dir: &Path, line: &str) {
    let path = dir.join(LOG_FILE);
    if fs::metadata(&path).is_ok_and(|m| m.len() > LOG_MAX)
        && let Ok(text) = fs::read_to_string(&path)
    {
        let keep = &text[text.len() / 2..];
        let keep = keep.find('\n').map_or(keep, |i| &keep[i + 1..]);
        let _ = fs::write(&path, keep);
    }
    if let Ok(mut f) = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
    {
        let _ = writeln!(
            f,
            "{} {line}",
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
        );
    }
}

/// The last line the uploader logged, for messages.
fn last_error(dir: &Path) -> Option<String> {
    let text = fs::read_to_string(dir.join(LOG_FILE)).ok()?;
    text.lines().last().map(str::to_string)
}
