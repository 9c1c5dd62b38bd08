//! Repository locks: writers take shared locks, prune an exclusive one.
//! A lock is a sealed object under `locks/`, refreshed while held (FORMAT.md,
//! "Concurrency and prune").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::Utc;

use super::{RepoError, Repository, Result};
use crate::format::{self, LockFile};
use crate::storage::{PutMode, Storage};

pub const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

/// Held while a command uses the repository; removes its lock object on drop.
pub struct LockGuard {
    storage: Arc<dyn Storage>,
    path: String,
    stop: Arc<AtomicBool>,
    refresher: Mutex<Option<JoinHandle<()>>>,
}

impl Repository {
    /// Take a shared lock (backups, WAL pushes).
    pub fn lock_shared(&self, command: &str) -> Result<LockGuard> {
        self.take_lock(command, false)
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
        let stop = Arc::new(AtomicBool::new(false));
        let refresher = {
            let storage = Arc::clone(&self.storage);
            let meta = self.meta.clone();
            let stop = Arc::clone(&stop);
            let path = path.clone();
            std::thread::spawn(move || {
                let mut lock = lock;
                let tick = Duration::from_millis(200);
                let mut waited = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    waited += tick;
                    if waited >= REFRESH_EVERY {
                        waited = Duration::ZERO;
                        lock.refreshed = Utc::now();
                        let _ = storage.put(
                            &path,
                            &meta.seal("lock", &super::to_json(&lock)),
                            PutMode::Overwrite,
                        );
                    }
                }
            })
        };
        Ok(LockGuard {
            storage: Arc::clone(&self.storage),
            path,
            stop,
            refresher: Mutex::new(Some(refresher)),
        })
    }
}

impl LockGuard {
    /// Fail if our lock was removed (e.g. declared stale by a prune): data we
    /// wrote may be gone, so nothing may be published.
    pub fn check_held(&self) -> Result<()> {
        match self.storage.head(&self.path) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Err(RepoError::Other(format!(
                "our lock {} was removed by another process; the backup is abandoned; hint: run it again",
                self.path
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.refresher.lock().ok().and_then(|mut g| g.take()) {
            let _ = h.join();
        }
        let _ = self.storage.delete(&self.path);
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
