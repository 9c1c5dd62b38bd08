//! Object-store shaped storage: the only way the repository touches bytes at rest.
//!
//! The trait is deliberately small (put, get, get_range, head, list, delete) so
//! that a local directory, memory and S3 behave the same. Every backend runs the
//! same conformance suite (`conformance`).

pub mod conformance;
pub mod local;
pub mod memory;
pub mod s3;

use std::ops::Range;
use std::path::Path;

use anyhow::bail;

/// How `put` treats an object that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with `ErrorKind::AlreadyExists` if the object exists (atomic).
    Create,
    /// Replace the object atomically if it exists.
    Overwrite,
}

/// What a caller can do about a storage failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    /// Disk or quota full.
    NoSpace,
    PermissionDenied,
    /// The object is in an archive storage class (S3 Glacier): it must be
    /// retrieved (`request_retrieval`) before it can be read.
    Archived,
    /// Anything else (I/O error, broken connection, ...).
    Other,
}

#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {message}")]
pub struct StorageError {
    pub kind: ErrorKind,
    /// The operation that failed ("write", "read", "list", "delete").
    pub op: &'static str,
    /// The object path (or prefix) relative to the repository root.
    pub path: String,
    pub message: String,
}

impl StorageError {
    pub fn new(kind: ErrorKind, op: &'static str, path: &str, message: impl Into<String>) -> Self {
        StorageError {
            kind,
            op,
            path: path.to_string(),
            message: message.into(),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Path relative to the repository root, '/'-separated.
    pub path: String,
    pub size: u64,
    /// When the object was last written, if the backend knows (prune's grace
    /// period only deletes unreferenced objects it knows to be old).
    pub modified: Option<std::time::SystemTime>,
    /// The storage class, where the backend has them (S3: "STANDARD",
    /// "GLACIER", ...); `None` means readable at once.
    pub class: Option<String>,
}

impl ObjectMeta {
    /// In a class that must be retrieved before it can be read (S3 Glacier
    /// Flexible Retrieval and Deep Archive).
    pub fn is_archived(&self) -> bool {
        self.class
            .as_deref()
            .is_some_and(|c| s3::ARCHIVE_CLASSES.contains(&c))
    }
}

/// What an object is to the storage, so a backend can store it in the right
/// class: what must be readable at once, and bulk that may be archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Read to list, back up and prune (config, keys, index, records, locks).
    Hot,
    /// Backup content (packs).
    Data,
    /// Archived WAL.
    Wal,
}

/// Whether an object can be read now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveState {
    Readable,
    /// In an archive class; a retrieval has not been asked for.
    Archived {
        class: String,
    },
    /// A retrieval is running.
    Retrieving,
}

/// A flat namespace of immutable-by-convention objects under '/'-separated paths.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Where this storage is, for messages (`file:///var/backups/lifeboat`).
    fn url(&self) -> String;
    /// Store `data` at `path`; returns only once the object is durable.
    fn put(&self, path: &str, data: &[u8], mode: PutMode) -> Result<()>;
    /// `put`, telling the backend what the object is (for storage classes).
    fn put_tier(&self, path: &str, data: &[u8], mode: PutMode, tier: Tier) -> Result<()> {
        let _ = tier;
        self.put(path, data, mode)
    }
    fn get(&self, path: &str) -> Result<Vec<u8>>;
    /// `get` into `buf` (cleared first), reusing its allocation: for readers
    /// of many objects in a row (fresh multi-MiB buffers cost a page fault
    /// per 4 KiB).
    fn get_into(&self, path: &str, buf: &mut Vec<u8>) -> Result<()> {
        *buf = self.get(path)?;
        Ok(())
    }
    /// Bytes `range` of the object; a range past the end is an error.
    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>>;
    fn head(&self, path: &str) -> Result<ObjectMeta>;
    /// Every object whose path starts with `prefix`, in no particular order.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
    /// Remove an object; removing a missing object is not an error.
    fn delete(&self, path: &str) -> Result<()>;
    /// Remove what crashed writers left behind that `list` does not show
    /// (temporary files; unfinished multipart uploads), if it is at least
    /// `older_than` old. Returns how many were removed.
    fn cleanup(&self, older_than: std::time::Duration) -> Result<usize> {
        let _ = older_than;
        Ok(0)
    }
    /// Whether `path` can be read now (archive storage classes cannot).
    fn archive_state(&self, path: &str) -> Result<ArchiveState> {
        self.head(path).map(|_| ArchiveState::Readable)
    }
    /// Ask for an archived object to be made readable for `days` days, at the
    /// retrieval `tier` ("Standard", "Bulk", "Expedited"). Asking again while a
    /// retrieval runs is not an error.
    fn request_retrieval(&self, path: &str, days: u32, tier: &str) -> Result<()> {
        let _ = (days, tier);
        self.head(path).map(|_| ())
    }
    /// How many requests a writer should keep in flight: 1 for a local disk,
    /// more for a remote store where each request waits on the network.
    fn concurrency(&self) -> usize {
        1
    }
}

/// Open the repository storage named by `url`: `file:///absolute/path` or
/// `s3://bucket/prefix` (with `s3`'s settings). `memory://` is deliberately not
/// openable by URL because a memory repository vanishes with the process.
pub fn open(url: &str, s3: &s3::S3Settings) -> anyhow::Result<Box<dyn Storage>> {
    const HINT: &str = "hint: use file:///path or s3://bucket/prefix";
    if url.starts_with("s3://") {
        return Ok(Box::new(s3::S3Storage::new(url, s3)?));
    }
    match url.strip_prefix("file://") {
        Some(path) if path.starts_with('/') => {
            Ok(Box::new(local::LocalStorage::new(Path::new(path).into())))
        }
        Some(_) => bail!("repository url {url:?} must name an absolute path: {HINT}"),
        None => bail!("unsupported repository url {url:?}: {HINT}"),
    }
}

/// Reject object paths that are not plain relative '/'-separated keys, so no
/// backend can be steered outside its root or end up with ambiguous names.
pub(crate) fn validate_path(op: &'static str, path: &str) -> Result<()> {
    let problem = if path.is_empty() {
        Some("path is empty")
    } else if path.starts_with('/') {
        Some("path must be relative (no leading '/')")
    } else {
        path.split('/').find_map(component_problem)
    };
    match problem {
        Some(problem) => Err(StorageError::new(
            ErrorKind::Other,
            op,
            path,
            format!("invalid object path: {problem}"),
        )),
        None => Ok(()),
    }
}

/// A list prefix may end mid-name or with '/', but must not escape the root.
pub(crate) fn validate_prefix(op: &'static str, prefix: &str) -> Result<()> {
    match prefix.rsplit_once('/') {
        Some((dir, _)) => validate_path(op, dir).map_err(|e| StorageError {
            path: prefix.to_string(),
            ..e
        }),
        None => Ok(()),
    }
}

fn component_problem(component: &str) -> Option<&'static str> {
    if component.is_empty() {
        Some("empty path component ('//' or trailing '/')")
    } else if component == "." || component == ".." {
        Some("'.' and '..' components are not allowed")
    } else if component.starts_with(TEMP_PREFIX) {
        Some("names starting with '.tmp-' are reserved for temporary files")
    } else if component.contains(['\\', '\0']) {
        Some("'\\' and NUL are not allowed")
    } else {
        None
    }
}

/// Name prefix of in-flight temporary files; never a valid object name.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";
