//! A repository in a local directory (or a mounted NAS).
//!
//! Objects are plain files under the root. Every write goes through
//! [`write_durably`]: temp file, fsync, atomic link/rename, fsync of every
//! directory touched, so a crash leaves either the old object or the new one,
//! never a torn file. Crash leftovers are `.tmp-*` files, which `list` ignores
//! and [`LocalStorage::cleanup_temp_files`] removes.

use std::fs::{self, DirEntry, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use super::{
    ErrorKind, ObjectMeta, PutMode, Result, Storage, StorageError, TEMP_PREFIX, validate_path,
    validate_prefix,
};

#[derive(Debug)]
pub struct LocalStorage {
    root: PathBuf,
    /// Serializes directory creation so a thread never sees a directory that
    /// another thread created but has not fsynced yet.
    dir_lock: Mutex<()>,
}

impl LocalStorage {
    /// A storage rooted at `root`; nothing is created until the first `put`.
    pub fn new(root: PathBuf) -> LocalStorage {
        LocalStorage {
            root,
            dir_lock: Mutex::new(()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Remove `.tmp-*` files left by a crashed writer whose last modification
    /// is at least `older_than` ago; returns how many were removed. Pass a
    /// generous age: a younger temp file may belong to a `put` in progress.
    pub fn cleanup_temp_files(&self, older_than: Duration) -> Result<usize> {
        let mut removed = 0;
        walk(&self.root, "", &|_| true, &mut |entry, _| {
            if !is_temp_name(entry) {
                return Ok(());
            }
            let age = entry
                .metadata()?
                .modified()?
                .elapsed()
                .unwrap_or(Duration::ZERO);
            if age >= older_than {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .map_err(|e| io_error("delete", &format!("{TEMP_PREFIX}*"), &e))?;
        Ok(removed)
    }

    fn object_path(&self, op: &'static str, path: &str) -> Result<PathBuf> {
        validate_path(op, path)?;
        Ok(self.root.join(path))
    }

    /// Open an object for reading; directories are not objects.
    fn open_object(&self, op: &'static str, path: &str) -> Result<(File, u64)> {
        let full = self.object_path(op, path)?;
        let file = File::open(&full).map_err(|e| io_error(op, path, &e))?;
        let meta = file.metadata().map_err(|e| io_error(op, path, &e))?;
        if !meta.is_file() {
            return Err(StorageError::new(
                ErrorKind::NotFound,
                op,
                path,
                "not an object (a directory)",
            ));
        }
        Ok((file, meta.len()))
    }
}

/// Bytes per read(2) of a whole object.
const READ_PIECE: usize = 128 << 10;

/// Fill `buf` from `file` in reads of [`READ_PIECE`] bytes; returns how many
/// bytes it got (fewer at the end of the file). From a cold page cache one
/// read(2) of a multi-MiB pack is much slower than the same bytes read in
/// pieces, which keep the kernel's read-ahead streaming while the earlier
/// pieces are copied: `verify --read-data` of a 296 MB repository took
/// 0.32-0.39 s with whole-object reads and 0.24-0.28 s with 128 KiB ones
/// (docs/BENCHMARKS.md, "Side runs", fourteenth stop).
fn read_pieces(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        let end = buf.len().min(at + READ_PIECE);
        match file.read(&mut buf[at..end]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

/// Read the whole of `file`, `len` bytes as it said when opened, into `buf`
/// (its old content replaced; only bytes beyond its old length are zeroed
/// first).
fn read_whole(file: &mut File, len: u64, buf: &mut Vec<u8>) -> io::Result<()> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    buf.truncate(len);
    buf.reserve_exact(len - buf.len());
    buf.resize(len, 0);
    let got = read_pieces(file, buf)?;
    // Shorter than it was: what it holds now (the callers' checks of size
    // and hash see the difference). Longer: the rest too.
    buf.truncate(got);
    if got == len {
        file.read_to_end(buf)?;
    }
    Ok(())
}

impl Storage for LocalStorage {
    fn url(&self) -> String {
        let root = std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone());
        format!("file://{}", root.display())
    }

    fn put(&self, path: &str, data: &[u8], mode: PutMode) -> Result<()> {
        let full = self.object_path("write", path)?;
        write_durably(&full, data, mode, &self.dir_lock).map_err(|e| io_error("write", path, &e))
    }

    fn get(&self, path: &str) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.get_into(path, &mut data)?;
        Ok(data)
    }

    fn get_into(&self, path: &str, buf: &mut Vec<u8>) -> Result<()> {
        let (mut file, len) = self.open_object("read", path)?;
        read_whole(&mut file, len, buf).map_err(|e| io_error("read", path, &e))
    }

    fn get_range(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        if range.start > range.end {
            return Err(StorageError::new(
                ErrorKind::Other,
                "read",
                path,
                format!("invalid range {}..{}", range.start, range.end),
            ));
        }
        let (mut file, len) = self.open_object("read", path)?;
        let short_read = || {
            StorageError::new(
                ErrorKind::Other,
                "read",
                path,
                format!(
                    "short read: range {}..{} of a {len}-byte object",
                    range.start, range.end
                ),
            )
        };
        if range.end > len {
            return Err(short_read());
        }
        let mut data = vec![0; (range.end - range.start) as usize];
        file.seek(SeekFrom::Start(range.start))
            .map_err(|e| io_error("read", path, &e))?;
        let got = read_pieces(&mut file, &mut data).map_err(|e| io_error("read", path, &e))?;
        if got < data.len() {
            return Err(short_read());
        }
        Ok(data)
    }

    fn head(&self, path: &str) -> Result<ObjectMeta> {
        let (file, size) = self.open_object("stat", path)?;
        Ok(ObjectMeta {
            path: path.to_string(),
            size,
            modified: file.metadata().and_then(|m| m.modified()).ok(),
            class: None,
        })
    }

    fn cleanup(&self, older_than: Duration) -> Result<usize> {
        self.cleanup_temp_files(older_than)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        validate_prefix("list", prefix)?;
        // Start at the deepest directory the prefix names completely, and only
        // descend into directories that can hold matching paths.
        let (start_rel, start) = match prefix.rsplit_once('/') {
            Some((dir, _)) => (dir, self.root.join(dir)),
            None => ("", self.root.clone()),
        };
        let may_contain_matches = |dir: &str| {
            prefix.starts_with(&format!("{dir}/")) || format!("{dir}/").starts_with(prefix)
        };
        let mut objects = Vec::new();
        walk(
            &start,
            start_rel,
            &may_contain_matches,
            &mut |entry, rel| {
                if is_temp_name(entry) || !rel.starts_with(prefix) {
                    return Ok(());
                }
                match entry.metadata() {
                    Ok(meta) => objects.push(ObjectMeta {
                        path: rel,
                        size: meta.len(),
                        modified: meta.modified().ok(),
                        class: None,
                    }),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {} // deleted meanwhile
                    Err(e) => return Err(e),
                }
                Ok(())
            },
        )
        .map_err(|e| io_error("list", prefix, &e))?;
        Ok(objects)
    }

    fn delete(&self, path: &str) -> Result<()> {
        let full = self.object_path("delete", path)?;
        match fs::remove_file(&full) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error("delete", path, &e)),
        }
        sync_dir(parent(&full)).map_err(|e| io_error("delete", path, &e))
    }
}

/// The one place that writes an object: create missing parent directories
/// (durably), write a temp file in the target directory, fsync it, link or
/// rename it into place, fsync the directory. The temp file never outlives a
/// failure.
fn write_durably(
    target: &Path,
    data: &[u8],
    mode: PutMode,
    dir_lock: &Mutex<()>,
) -> io::Result<()> {
    let dir = parent(target);
    create_dirs_durably(dir, dir_lock)?;

    let tmp = dir.join(format!(
        "{TEMP_PREFIX}{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let mut file = File::options().write(true).create_new(true).open(&tmp)?;
    let placed = (|| {
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        match mode {
            // hard_link fails with AlreadyExists atomically; the temp name is
            // removed below either way.
            PutMode::Create => fs::hard_link(&tmp, target),
            PutMode::Overwrite => fs::rename(&tmp, target),
        }
    })();
    if placed.is_err() || mode == PutMode::Create {
        let _ = fs::remove_file(&tmp);
    }
    placed?;
    sync_dir(dir)
}

/// `create_dir_all`, then fsync every directory created and the existing
/// ancestor that gained the first new entry.
fn create_dirs_durably(dir: &Path, dir_lock: &Mutex<()>) -> io::Result<()> {
    let _guard = dir_lock
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut missing = Vec::new();
    let mut ancestor = dir;
    while !ancestor.is_dir() {
        missing.push(ancestor);
        match ancestor.parent() {
            Some(up) if !up.as_os_str().is_empty() => ancestor = up,
            _ => {
                ancestor = Path::new(".");
                break;
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    for created in missing {
        sync_dir(created)?;
    }
    sync_dir(ancestor)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn is_temp_name(entry: &DirEntry) -> bool {
    entry
        .file_name()
        .as_encoded_bytes()
        .starts_with(TEMP_PREFIX.as_bytes())
}

/// Visit every regular file under `dir` (whose '/'-separated path relative to
/// the storage root is `rel`), descending only into directories for which
/// `descend(rel_path)` holds. Directories that do not exist (or vanish during
/// the walk) are empty. Names that are not UTF-8 cannot be objects and are
/// skipped.
fn walk(
    dir: &Path,
    rel: &str,
    descend: &dyn Fn(&str) -> bool,
    visit: &mut dyn FnMut(&DirEntry, String) -> io::Result<()>,
) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let entry_rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            if descend(&entry_rel) {
                walk(&entry.path(), &entry_rel, descend, visit)?;
            }
        } else if file_type.is_file() {
            visit(&entry, entry_rel)?;
        }
    }
    Ok(())
}

fn io_error(op: &'static str, path: &str, e: &io::Error) -> StorageError {
    StorageError::new(error_kind(e), op, path, os_message(e))
}

fn error_kind(e: &io::Error) -> ErrorKind {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122; // Linux
    match e.kind() {
        io::ErrorKind::NotFound => ErrorKind::NotFound,
        io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
        io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => ErrorKind::NoSpace,
        _ if matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT)) => ErrorKind::NoSpace,
        _ => ErrorKind::Other,
    }
}

/// "No space left on device (os error 28)" -> "no space left on device".
fn os_message(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match e.raw_os_error() {
        Some(code) => text
            .trim_end_matches(&format!(" (os error {code})"))
            .to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}
