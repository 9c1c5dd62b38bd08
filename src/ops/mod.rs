//! One module per user-facing operation. Each takes a `Context` (configuration and
//! global flags) and returns what happened; the CLI only parses and prints.

pub mod backup;
pub mod basebackup;
pub mod copy;
pub mod export;
pub mod fetch;
pub mod init;
pub mod list;
pub mod pin;
pub mod pitr;
pub mod progress;
pub mod prune;
pub mod restore;
pub mod restore_files;
pub mod retrieve;
pub mod spool;
pub mod verify;
pub mod wal;

use std::sync::Arc;

use anyhow::{Context as _, Result};

use crate::config::{Config, RepositoryConfig, TargetConfig};
use crate::pg::conninfo::ConnInfo;
use crate::pg::process::Connection;
use crate::repo::{Credentials, Repository};

/// An error the user fixes by changing input or setup: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// What every operation gets.
pub struct Context {
    pub config: Config,
    /// No progress bars, fewer messages.
    pub quiet: bool,
}

impl Context {
    pub fn new(config: Config, quiet: bool) -> Context {
        let secret_env = config
            .repositories
            .values()
            .filter_map(|r| r.passphrase_env.clone())
            .collect();
        crate::pg::process::register_secret_env(secret_env);
        Context { config, quiet }
    }

    pub fn target(&self, name: &str) -> Result<&TargetConfig> {
        Ok(self.config.target(name)?)
    }

    /// The repository a target writes to first.
    pub fn target_repository(&self, target: &str) -> Result<(String, &RepositoryConfig)> {
        let t = self.target(target)?;
        let names = t.repository_names();
        let name = names
            .first()
            .ok_or_else(|| {
                usage(format!(
                    "target {target:?} has no repository; hint: add repository = \"NAME\""
                ))
            })?
            .to_string();
        let rc = self.config.repository(&name)?;
        Ok((name, rc))
    }

    /// The repositories a command works on: one target's, or all of them.
    pub fn repositories_of(&self, target: Option<&str>) -> Result<Vec<String>> {
        Ok(match target {
            Some(t) => self
                .target(t)?
                .repository_names()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            None => self.config.repositories.keys().cloned().collect(),
        })
    }

    pub fn open_repository(&self, name: &str) -> Result<Repository> {
        let rc = self.config.repository(name)?;
        let storage = self.storage_of(name)?;
        let creds = credentials(rc)?;
        Repository::open(storage, creds).with_context(|| format!("repository {name:?}"))
    }

    pub fn storage_of(&self, name: &str) -> Result<Arc<dyn crate::storage::Storage>> {
        let rc = self.config.repository(name)?;
        Ok(Arc::from(
            crate::storage::open(&rc.url, &rc.s3).map_err(|e| usage(format!("{e:#}")))?,
        ))
    }

    /// Open the repositories `names`, in order, each once: one that shares the
    /// keys of one opened before it (`keys_from`) is opened with those keys
    /// (no second passphrase, no second Argon2). Each result on its own: one
    /// repository that cannot be opened does not stop the others.
    pub fn open_repositories(&self, names: &[String]) -> Vec<(String, Result<Repository>)> {
        let mut out: Vec<(String, Result<Repository>)> = Vec::new();
        for name in names {
            let sibling = self
                .config
                .repositories
                .get(name)
                .and_then(|rc| rc.keys_from.as_ref())
                .and_then(|from| out.iter().find(|(n, r)| n == from && r.is_ok()))
                .and_then(|(_, r)| r.as_ref().ok());
            let opened = match sibling {
                Some(from) => self.storage_of(name).and_then(|storage| {
                    match from.open_sibling(storage) {
                        Ok(Some(repo)) => {
                            let pin = self.config.repositories[name].fingerprint.as_deref();
                            repo.check_pin(pin)
                                .with_context(|| format!("repository {name:?}"))?;
                            Ok(repo)
                        }
                        // Not (or no longer) the same keys: open it on its own.
                        Ok(None) => self.open_repository(name),
                        Err(e) => {
                            Err(anyhow::Error::from(e).context(format!("repository {name:?}")))
                        }
                    }
                }),
                None => self.open_repository(name),
            };
            out.push((name.clone(), opened));
        }
        out
    }

    /// The repository a restore of `target` reads from: `named`, or the first
    /// of the target's repositories that has the backup (`backup`, or any of
    /// the target's if `None`); a repository that cannot be opened or lacks the
    /// backup is passed over, saying why. The target's other repositories that
    /// share its keys (copies) are added as fallbacks for packs it cannot give.
    pub fn open_for_restore(
        &self,
        target: &str,
        backup: Option<&str>,
        named: Option<&str>,
    ) -> Result<(String, Repository)> {
        let names = self.repositories_of(Some(target))?;
        let candidates: Vec<String> = match named {
            Some(n) => {
                self.config.repository(n)?;
                vec![n.to_string()]
            }
            None => names.clone(),
        };
        let mut passed = Vec::new();
        let mut chosen = None;
        for name in &candidates {
            let repo = match self.open_repository(name) {
                Ok(r) => r,
                // A wrong secret or a bad configuration is the user's to fix
                // now, not a reason to read an older copy elsewhere.
                Err(e) if is_usage(&e) => return Err(e),
                Err(e) => {
                    passed.push(format!("{name}: {e:#}"));
                    continue;
                }
            };
            // One candidate: the restore's own choice of backup says what is
            // missing; no need to read the records twice.
            let has = candidates.len() == 1
                || match backup {
                    Some(p) => match repo.find_backup(p) {
                        Ok(_) => true,
                        Err(crate::repo::RepoError::NoSuchBackup(_)) => false,
                        Err(e) => return Err(e.into()),
                    },
                    None => repo.list_backups()?.iter().any(|(_, r)| r.target == target),
                };
            if has {
                chosen = Some((name.clone(), repo));
                break;
            }
            passed.push(format!("{name}: no such backup"));
        }
        let Some((name, mut repo)) = chosen else {
            let what = backup.map_or_else(
                || format!("target {target:?} has no backups"),
                |p| format!("no backup of target {target:?} matches {p:?}"),
            );
            return Err(usage(format!(
                "{what} in {}; hint: `lifeboat list {target}` shows the backups and where they are",
                passed.join("; ")
            )));
        };
        if !self.quiet {
            for why in &passed {
                eprintln!("note: passed over repository {why}");
            }
        }
        for other in names.iter().filter(|n| **n != name) {
            // A fallback that cannot be reached now is no fallback; the restore
            // goes on without it.
            if let Ok(storage) = self.storage_of(other)
                && let Ok(true) = repo.add_mirror(storage)
                && !self.quiet
            {
                eprintln!(
                    "note: repository {other} (same keys) is the fallback for damaged or missing packs"
                );
            }
        }
        Ok((name, repo))
    }

    pub fn connection(&self, target: &str) -> Result<Connection> {
        let t = self.target(target)?;
        connection_from(&t.database, &format!("target {target:?}: database"))
    }
}

/// An error the user fixes (bad input, wrong passphrase, newer format, ...).
fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<UsageError>()
            || c.downcast_ref::<crate::repo::RepoError>()
                .is_some_and(|r| r.is_usage())
    })
}

/// Parse a libpq connection string for client programs; `what` names it in errors.
pub fn connection_from(s: &str, what: &str) -> Result<Connection> {
    let info = ConnInfo::parse(s).map_err(|e| usage(format!("{what}: {e}")))?;
    Connection::new(&info).map_err(|e| usage(format!("{what}: {e}")))
}

/// Gather the secrets a repository section points at.
pub fn credentials(rc: &RepositoryConfig) -> Result<Credentials> {
    let identities = match &rc.identity_file {
        Some(path) => Some(read_identities(path)?),
        None => None,
    };
    let dedup_key = match rc.dedup_key()? {
        Some(s) => Some(crate::codec::SecretBytes::from_base64(&s).map_err(|_| {
            usage("the dedup key is not valid (expected 44 characters of base64); hint: use the file `lifeboat init` wrote")
        })?),
        None => None,
    };
    Ok(Credentials {
        passphrase: rc.passphrase()?,
        identities,
        dedup_key,
        recipients: rc.recipients.clone(),
        unlock_cache: unlock_cache(rc),
        fingerprint: rc.fingerprint.clone(),
    })
}

/// Where this user keeps unlocked keys of the repository, if anywhere: only
/// for a passphrase kept in a file, since whoever can read the cache can read
/// that file (FORMAT.md "Unlock cache").
pub fn unlock_cache(rc: &RepositoryConfig) -> Option<crate::repo::UnlockCache> {
    match rc.passphrase_file {
        Some(_) if rc.unlock_cache => crate::repo::UnlockCache::for_this_user(),
        _ => None,
    }
}

pub fn read_identities(path: &std::path::Path) -> Result<crate::repo::Identities> {
    let file = age::IdentityFile::from_file(path.display().to_string()).map_err(|e| {
        usage(format!(
            "cannot read identity file {}: {e}; hint: create one with `lifeboat key generate -o FILE`",
            path.display()
        ))
    })?;
    file.into_identities()
        .map_err(|e| usage(format!("identity file {}: {e}", path.display())))
}

/// Find a backup by id prefix in any repository of the configuration: the
/// repository's name, the open repository, the id and the record.
pub fn find_backup(
    ctx: &Context,
    prefix: &str,
) -> Result<(
    String,
    Repository,
    crate::codec::Id,
    crate::format::BackupRecord,
)> {
    for name in ctx.config.repositories.keys() {
        let repo = ctx.open_repository(name)?;
        match repo.find_backup(prefix) {
            Ok((id, rec)) => return Ok((name.clone(), repo, id, rec)),
            Err(crate::repo::RepoError::NoSuchBackup(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(usage(format!(
        "no backup matches {prefix:?}; hint: `lifeboat list` shows the ids"
    )))
}

/// Select a target's backup: the given id prefix, or the newest.
pub fn select_backup(
    repo: &Repository,
    target: &str,
    prefix: Option<&str>,
) -> Result<(crate::codec::Id, crate::format::BackupRecord)> {
    match prefix {
        Some(p) => {
            let (id, rec) = repo.find_backup(p)?;
            if rec.target != target {
                anyhow::bail!(usage(format!(
                    "backup {} belongs to target {:?}, not {target:?}",
                    id.short(),
                    rec.target
                )));
            }
            Ok((id, rec))
        }
        None => repo
            .list_backups()?
            .into_iter()
            .rfind(|(_, r)| r.target == target)
            .ok_or_else(|| {
                usage(format!(
                    "target {target:?} has no backups yet; hint: run `lifeboat backup {target}`"
                ))
            }),
    }
}

/// The repository's error behind an I/O error of a stream reader, if there is
/// one (it names the object), else the I/O error itself.
pub fn stream_error(reader: &mut crate::repo::StreamReader, e: std::io::Error) -> anyhow::Error {
    reader
        .take_error()
        .map(anyhow::Error::from)
        .unwrap_or_else(|| e.into())
}

/// Whether the process whose id `pid_file` holds is alive (background
/// helpers such as the WAL prefetcher and the spool uploader write one).
pub(crate) fn pid_file_alive(pid_file: &std::path::Path) -> bool {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .is_some_and(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok())
}

/// `lifeboat --config CONFIG --quiet ARGS...`: a background helper of this
/// binary, with the same configuration.
pub(crate) fn helper_command(
    ctx: &Context,
    args: &[&std::ffi::OsStr],
) -> Option<std::process::Command> {
    let exe = std::env::current_exe().ok()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--config")
        .arg(&ctx.config.path)
        .arg("--quiet")
        .args(args);
    Some(cmd)
}

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on, SIGINT/SIGTERM only set a flag that long operations check, so
/// they can undo what must not be left half-done (e.g. a blocked database).
pub fn watch_for_interrupts() {
    let _ = ctrlc::set_handler(|| {
        eprintln!("interrupted: stopping after cleanup");
        INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
    });
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
