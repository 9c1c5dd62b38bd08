//! Repository locks: writers take shared locks, prune an exclusive one.
//! A lock is a sealed object under `locks/`, refreshed while held (FORMAT.md,
//! "Concurrency and prune").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::Utc;

use super::{RepoError, Repository, Result};
use crate::codec::MetadataKey;
use crate::format::{self, LockFile};
use crate::storage::{PutMode, Storage};

pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// Held while a command uses the repository; removes its lock object on drop.
pub struct LockGuard {
    storage: Arc<dyn Storage>,
    path: String,
    /// Dropped to stop the refresher at once (it waits on this channel).
    stop: Option<std::sync::mpsc::Sender<()>>,
    /// Set by the refresher when our lock was removed or could not be refreshed:
    /// either way another process may treat it as stale, so nothing we wrote
    /// after that may be published.
    lost: Arc<AtomicBool>,
    refresher: Mutex<Option<JoinHandle<()>>>,
}

/// A lock not refreshed for this long is stale (FORMAT.md).
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

/// Another process's lock, as found under `locks/`.
#[derive(Debug, Clone)]
pub struct HeldLock {
    pub path: String,
    /// None if the lock object could not be read (it still counts).
    pub lock: Option<LockFile>,
}

impl std::fmt::Display for HeldLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.lock {
            Some(l) => write!(
                f,
                "`{}` on host {} (pid {}, since {})",
                l.command,
                l.host,
                l.pid,
                l.created.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            None => write!(f, "an unreadable lock {}", self.path),
        }
    }
}

impl Repository {
    /// Take a shared lock (backups, WAL pushes). While a prune holds the
    /// exclusive lock, wait for it up to `wait`, calling `waiting` once.
    pub fn lock_shared(&self, command: &str) -> Result<LockGuard> {
        self.lock_shared_waiting(command, Duration::ZERO, &|_| {})
    }

    pub fn lock_shared_waiting(
        &self,
        command: &str,
        wait: Duration,
        waiting: &dyn Fn(&HeldLock),
    ) -> Result<LockGuard> {
        let started = std::time::Instant::now();
        let mut told = false;
        loop {
            let guard = self.take_lock(command, false)?;
            let exclusive = self
                .other_locks(&guard.path)?
                .into_iter()
                .find(|l| l.lock.as_ref().is_none_or(|l| l.exclusive));
            let Some(holder) = exclusive else {
                return Ok(guard);
            };
            drop(guard);
            if started.elapsed() >= wait {
                return Err(RepoError::Busy(format!(
                    "repository {} is locked exclusively by {holder}; hint: wait for it to finish, or remove {} if that process is gone",
                    self.url(),
                    holder.path
                )));
            }
            if !told {
                waiting(&holder);
                told = true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Take the exclusive lock (prune). Stale locks are removed first; any
    /// other lock makes this fail, naming its holder.
    pub fn lock_exclusive(&self, command: &str) -> Result<LockGuard> {
        let busy = |holder: &HeldLock| {
            let what = match &holder.lock {
                Some(l) if l.exclusive => "another prune is running",
                _ => "the repository is in use",
            };
            RepoError::Busy(format!(
                "{what}: {holder}; hint: run it again when that has finished (a lock of a crashed process on this host, or one not refreshed for 30 minutes, is removed automatically)"
            ))
        };
        if let Some(other) = self.other_locks("")?.first() {
            return Err(busy(other));
        }
        let guard = self.take_lock(command, true)?;
        // Someone may have locked between our look and our lock: look again.
        if let Some(other) = self.other_locks(&guard.path)?.first() {
            return Err(busy(other));
        }
        Ok(guard)
    }

    /// The live locks other than `ours`; stale ones are removed on the way.
    fn other_locks(&self, ours: &str) -> Result<Vec<HeldLock>> {
        let mut live = Vec::new();
        for obj in self.storage.list(format::LOCKS_DIR)? {
            if obj.path == ours {
                continue;
            }
            let lock = self
                .storage
                .get(&obj.path)
                .ok()
                .and_then(|b| self.meta.unseal("lock", &b).ok())
                .and_then(|json| serde_json::from_slice::<LockFile>(&json).ok());
            let old = |t: Option<chrono::DateTime<Utc>>| {
                t.is_some_and(|t| (Utc::now() - t).to_std().is_ok_and(|age| age > STALE_AFTER))
            };
            let stale = match &lock {
                Some(l) => {
                    old(Some(l.refreshed)) || (l.host == hostname() && !process_alive(l.pid))
                }
                None => old(obj.modified.map(chrono::DateTime::<Utc>::from)),
            };
            if stale {
                self.storage.delete(&obj.path)?;
            } else {
                live.push(HeldLock {
                    path: obj.path,
                    lock,
                });
            }
        }
        Ok(live)
    }

    fn take_lock(&self, command: &str, exclusive: bool) -> Result<LockGuard> {
        let now = Utc::now();
        let lock = LockFile {
            version: format::FORMAT_VERSION,
            host: hostname(),
            pid: std::process::id(),
            user: std::env::var("USER").unwrap_or_default(),
            command: command.into(),
            exclusive,
            created: now,
            refreshed: now,
        };
        let path = format!("{}{}", format::LOCKS_DIR, super::random_hex());
        self.storage.put(
            &path,
            &self.meta.seal("lock", &super::to_json(&lock)),
            PutMode::Create,
        )?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let lost = Arc::new(AtomicBool::new(false));
        let refresher = {
            let storage = Arc::clone(&self.storage);
            let meta = self.meta.clone();
            let lost = Arc::clone(&lost);
            let path = path.clone();
            std::thread::spawn(move || {
                let mut lock = lock;
                // Wake every REFRESH_EVERY to refresh; a drop of the sender
                // (the guard going away) ends the wait at once.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(REFRESH_EVERY)
                {
                    if !refresh(storage.as_ref(), &meta, &path, &mut lock, &lost) {
                        return;
                    }
                }
            })
        };
        Ok(LockGuard {
            storage: Arc::clone(&self.storage),
            path,
            stop: Some(stop),
            lost,
            refresher: Mutex::new(Some(refresher)),
        })
    }
}

/// Refresh our lock once. Returns false, with `lost` set, when the lock is gone
/// or could not be refreshed; the caller then stops refreshing for good.
fn refresh(
    storage: &dyn Storage,
    meta: &MetadataKey,
    path: &str,
    lock: &mut LockFile,
    lost: &AtomicBool,
) -> bool {
    // Never recreate a lock someone removed: a prune that found it stale may
    // already be deleting packs we wrote, and a recreated lock would hide that
    // from `check_held`. (A removal between this head and the put below still
    // slips through; the storage offers no put-if-exists. The window is one
    // round trip, against a 30-minute stale limit.)
    if storage.head(path).is_err() {
        // Gone, or we cannot tell: either way we cannot vouch for the lock.
        lost.store(true, Ordering::SeqCst);
        return false;
    }
    lock.refreshed = Utc::now();
    let sealed = meta.seal("lock", &super::to_json(lock));
    if storage.put(path, &sealed, PutMode::Overwrite).is_err() {
        // A lock we cannot refresh will look stale to a prune soon: treat it as
        // lost now rather than publish a backup whose packs may be deleted.
        lost.store(true, Ordering::SeqCst);
        return false;
    }
    true
}

impl LockGuard {
    /// Fail if our lock was removed (e.g. declared stale by a prune) or could not
    /// be kept fresh: data we wrote may be gone, so nothing may be published.
    pub fn check_held(&self) -> Result<()> {
        let lost = || {
            RepoError::Other(format!(
                "our lock {} was removed by another process or could not be refreshed; the backup is abandoned; hint: run it again",
                self.path
            ))
        };
        if self.lost.load(Ordering::SeqCst) {
            return Err(lost());
        }
        match self.storage.head(&self.path) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Err(lost()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(h) = self.refresher.lock().ok().and_then(|mut g| g.take()) {
            let _ = h.join();
        }
        let _ = self.storage.delete(&self.path);
    }
}

/// Whether a process of this host is still running (its lock is not stale).
fn process_alive(pid: u32) -> bool {
    pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists()
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::test_repo;
    use crate::storage::ErrorKind;

    fn lock_file() -> LockFile {
        LockFile {
            version: format::FORMAT_VERSION,
            host: "h".into(),
            pid: 1,
            user: "u".into(),
            command: "test".into(),
            exclusive: false,
            created: Utc::now(),
            refreshed: Utc::now(),
        }
    }

    #[test]
    fn check_held_fails_once_the_lock_is_removed() {
        let (storage, repo) = test_repo();
        let guard = repo.lock_shared("test").unwrap();
        guard.check_held().unwrap();
        storage.delete(&guard.path).unwrap();
        assert!(guard.check_held().is_err());
    }

    #[test]
    fn check_held_fails_when_marked_lost() {
        let (_storage, repo) = test_repo();
        let guard = repo.lock_shared("test").unwrap();
        guard.lost.store(true, Ordering::SeqCst);
        assert!(guard.check_held().is_err());
    }

    /// One refresh of the lock at `path`, as the refresher thread does it.
    fn refresh_at(storage: &dyn Storage, repo: &Repository, path: &str, lost: &AtomicBool) -> bool {
        refresh(storage, &repo.meta, path, &mut lock_file(), lost)
    }

    #[test]
    fn refresh_never_recreates_a_removed_lock() {
        let (storage, repo) = test_repo();
        let path = format!("{}removed", format::LOCKS_DIR);
        let lost = AtomicBool::new(false);
        assert!(!refresh_at(storage.as_ref(), &repo, &path, &lost));
        assert!(lost.load(Ordering::SeqCst));
        assert!(storage.head(&path).unwrap_err().is_not_found());
    }

    #[test]
    fn a_failed_refresh_marks_the_lock_lost() {
        let (storage, repo) = test_repo();
        let path = format!("{}mine", format::LOCKS_DIR);
        storage.put(&path, b"old", PutMode::Create).unwrap();
        let lost = AtomicBool::new(false);
        assert!(refresh_at(storage.as_ref(), &repo, &path, &lost));
        assert!(!lost.load(Ordering::SeqCst));
        storage.fail_next_puts(1, ErrorKind::Other);
        assert!(!refresh_at(storage.as_ref(), &repo, &path, &lost));
        assert!(lost.load(Ordering::SeqCst));
    }

    /// A lock of another host, last refreshed `minutes` ago.
    fn foreign_lock(
        storage: &dyn Storage,
        repo: &Repository,
        minutes: i64,
        exclusive: bool,
    ) -> String {
        let mut lock = lock_file();
        lock.host = "another-host".into();
        lock.exclusive = exclusive;
        lock.refreshed = Utc::now() - chrono::Duration::minutes(minutes);
        let path = format!("{}foreign-{minutes}", format::LOCKS_DIR);
        let sealed = repo.meta.seal("lock", &crate::repo::to_json(&lock));
        storage.put(&path, &sealed, PutMode::Create).unwrap();
        path
    }

    #[test]
    fn a_live_lock_of_another_host_blocks_prune_and_a_stale_one_is_removed() {
        let (storage, repo) = test_repo();
        let live = foreign_lock(storage.as_ref(), &repo, 10, false);
        let err = repo
            .lock_exclusive("prune")
            .err()
            .expect("a live lock blocks");
        assert!(err.to_string().contains("in use"), "{err}");
        assert!(err.to_string().contains("another-host"), "{err}");
        storage.delete(&live).unwrap();
        let stale = foreign_lock(storage.as_ref(), &repo, 31, false);
        let guard = repo
            .lock_exclusive("prune")
            .expect("a stale lock does not block");
        assert!(storage.head(&stale).unwrap_err().is_not_found());
        drop(guard);
        assert!(storage.list(format::LOCKS_DIR).unwrap().is_empty());
    }

    #[test]
    fn a_lock_of_a_dead_process_on_this_host_is_stale() {
        let (storage, repo) = test_repo();
        let mut lock = lock_file();
        lock.host = hostname();
        lock.pid = u32::MAX; // no such process
        let path = format!("{}dead", format::LOCKS_DIR);
        let sealed = repo.meta.seal("lock", &crate::repo::to_json(&lock));
        storage.put(&path, &sealed, PutMode::Create).unwrap();
        drop(
            repo.lock_exclusive("prune")
                .expect("the dead process's lock does not block"),
        );
        assert!(storage.head(&path).unwrap_err().is_not_found());
    }

    #[test]
    fn a_writer_gives_up_on_an_exclusive_lock_after_its_wait() {
        let (storage, repo) = test_repo();
        foreign_lock(storage.as_ref(), &repo, 1, true);
        let told = AtomicBool::new(false);
        let err = repo
            .lock_shared_waiting("backup", Duration::from_millis(600), &|_| {
                told.store(true, Ordering::SeqCst)
            })
            .err()
            .expect("an exclusive lock blocks writers");
        assert!(err.to_string().contains("locked exclusively"), "{err}");
        assert!(told.load(Ordering::SeqCst), "the caller is told it waits");
        // Only the prune's lock is left: the writer removed its own.
        assert_eq!(storage.list(format::LOCKS_DIR).unwrap().len(), 1);
    }
}
