//! An in-process storage for tests: same semantics as the real backends (it
//! passes the conformance suite), plus fault injection so tests can simulate
//! a full disk or a permission problem without root.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard};

use super::{
    ErrorKind, ObjectMeta, PutMode, Result, Storage, StorageError, validate_path, validate_prefix,
};

#[derive(Debug, Default)]
pub struct MemoryStorage {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Vec<u8>>,
    /// The next `failing_puts` valid puts fail with `fail_kind`.
    failing_puts: usize,
    fail_kind: Option<ErrorKind>,
}

impl MemoryStorage {
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    /// Make the next `n` puts (with valid paths) fail with `kind` and store
    /// nothing, e.g. `ErrorKind::NoSpace` to simulate a full disk.
    pub fn fail_next_puts(&self, n: usize, kind: ErrorKind) {
        let mut state = self.lock();
        state.failing_puts = n;
        state.fail_kind = Some(kind);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the objects from the others.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn with_object<T>(
        &self,
        op: &'static str,
        path: &str,
        f: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        validate_path(op, path)?;
        match self.lock().objects.get(path) {
            Some(data) => f(data),
            None => Err(StorageError::new(
                ErrorKind::NotFound,
                op,
                path,
                "no such object",
            )),
        }
    }
}

impl Storage for MemoryStorage {
    fn url(&self) -> String {
        "memory://".to_string()
    }

    fn put(&self, path: &str, data: &[u8], mode: PutMode) -> Result<()> {
        validate_path("write", path)?;
        let mut state = self.lock();
        if state.failing_puts > 0 {
            state.failing_puts -= 1;
            let kind = state.fail_kind.unwrap_or(ErrorKind::Other);
            return Err(StorageError::new(
                kind,
                "write",
                path,
                format!("injected fault ({kind:?})"),
            ));
        }
        if mode == PutMode::Create && state.objects.contains_key(path) {
            return Err(StorageError::new(
                ErrorKind::AlreadyExists,
                "write",
                path,
                "object already exists",
            ));
        }
        state.objects.insert(path.to_string(), data.to_vec());
        Ok(())
    }

    fn get(&self, path: &str) -> Result<Vec<u8>> {
        self.with_object("read", path, |data| Ok(data.to_vec()))
    }

    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        self.with_object("read", path, |data| {
            let len = data.len() as u64;
            if range.start > range.end || range.end > len {
                let problem = if range.start > range.end {
                    "invalid range"
                } else {
                    "short read: range"
                };
                return Err(StorageError::new(
                    ErrorKind::Other,
                    "read",
                    path,
                    format!(
                        "{problem} {}..{} of a {len}-byte object",
                        range.start, range.end
                    ),
                ));
            }
            Ok(data[range.start as usize..range.end as usize].to_vec())
        })
    }

    fn head(&self, path: &str) -> Result<ObjectMeta> {
        self.with_object("stat", path, |data| {
            Ok(ObjectMeta {
                path: path.to_string(),
                size: data.len() as u64,
                modified: None,
                class: None,
            })
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        validate_prefix("list", prefix)?;
        let state = self.lock();
        let matching = state
            .objects
            .range(prefix.to_string()..)
            .take_while(|(path, _)| path.starts_with(prefix));
        Ok(matching
            .map(|(path, data)| ObjectMeta {
                path: path.clone(),
                size: data.len() as u64,
                modified: None,
                class: None,
            })
            .collect())
    }

    fn delete(&self, path: &str) -> Result<()> {
        validate_path("delete", path)?;
        self.lock().objects.remove(path);
        Ok(())
    }
}
