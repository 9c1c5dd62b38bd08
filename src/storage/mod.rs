//! Object-store shaped storage: the only way the repository touches bytes at rest.
//!
//! The trait is deliberately small (put, get, get_range, head, list, delete) so
//! that a local directory, memory and S3 behave the same. Every backend runs the
//! same conformance suite (`conformance`).

use std::ops::Range;

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

pub type Result<T> = std::result::Result<T, StorageError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Path relative to the repository root, '/'-separated.
    pub path: String,
    pub size: u64,
}

/// A flat namespace of immutable-by-convention objects under '/'-separated paths.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Where this storage is, for messages (`file:///var/backups/lifeboat`).
    fn url(&self) -> String;
    /// Store `data` at `path`; returns only once the object is durable.
    fn put(&self, path: &str, data: &[u8], mode: PutMode) -> Result<()>;
    fn get(&self, path: &str) -> Result<Vec<u8>>;
    /// Bytes `range` of the object; a range past the end is an error.
    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>>;
    fn head(&self, path: &str) -> Result<ObjectMeta>;
    /// Every object whose path starts with `prefix`, in no particular order.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
    /// Remove an object; removing a missing object is not an error.
    fn delete(&self, path: &str) -> Result<()>;
}
