//! The unlock cache: a passphrase costs Argon2id (about 150 ms of CPU and
//! 64 MiB of memory) once per boot and user, not once per process, and
//! `archive_command` starts a `lifeboat wal-push` for every WAL segment.
//!
//! After a passphrase read from `passphrase_file` opens a key file, the key
//! file's plaintext is kept in `/dev/shm/lifeboat-UID/` (a tmpfs: no file
//! system on disk, gone at reboot), encrypted under a key hashed, not stretched, from
//! the passphrase and that key file. A wrong passphrase cannot open an entry
//! and falls through to Argon2id, which then reports it as wrong. Every
//! failure here (no `/dev/shm`, a directory someone else owns or can read, a
//! damaged entry) only means the slow path. FORMAT.md "Unlock cache" says
//! what a reader of an entry learns.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::codec::{self, KdfParams};

/// Entries are key files' plaintexts: a few hundred bytes.
const MAX_ENTRY: u64 = 64 * 1024;
const ENTRY_CONTEXT: &str = "lifeboat 2026 unlock cache entry name v1";

#[derive(Clone, Debug)]
pub struct UnlockCache {
    dir: PathBuf,
}

impl UnlockCache {
    /// `/dev/shm/lifeboat-UID`, or `None` where `/dev/shm` is not a tmpfs
    /// (unlocked keys are kept out of file systems on disk) or lacks the
    /// sticky bit (another user could then swap our directory for theirs
    /// between the check and the use).
    pub fn for_this_user() -> Option<UnlockCache> {
        use nix::sys::statfs::{TMPFS_MAGIC, statfs};
        let shm = Path::new("/dev/shm");
        let memory = statfs(shm).is_ok_and(|fs| fs.filesystem_type() == TMPFS_MAGIC);
        let sticky = fs::metadata(shm).is_ok_and(|m| m.mode() & 0o1000 != 0);
        (memory && sticky)
            .then(|| UnlockCache::at(shm.join(format!("lifeboat-{}", nix::unistd::geteuid()))))
    }

    pub fn at(dir: PathBuf) -> UnlockCache {
        UnlockCache { dir }
    }

    /// What an entry is bound to: one key file (its salt and ciphertext).
    pub fn binding(kdf: &KdfParams, ciphertext: &str) -> Vec<u8> {
        [kdf.salt.as_bytes(), b"\0", ciphertext.as_bytes()].concat()
    }

    /// The key file's plaintext, if cached for this passphrase.
    pub fn get(&self, passphrase: &str, binding: &[u8]) -> Option<Vec<u8>> {
        let dir = self.private_dir(false)?;
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
            .open(dir.join(entry_name(binding)))
            .ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || !private(&meta) || meta.len() > MAX_ENTRY {
            return None;
        }
        let mut stored = Vec::new();
        file.read_to_end(&mut stored).ok()?;
        codec::unlock_cache_open(passphrase, binding, &stored).ok()
    }

    /// Keep a key file's plaintext for the next process (best effort).
    pub fn put(&self, passphrase: &str, binding: &[u8], plaintext: &[u8]) {
        let Some(dir) = self.private_dir(true) else {
            return;
        };
        let name = entry_name(binding);
        // Unique: threads of one process, or processes of the same user in
        // other pid namespaces, may write the same entry at once.
        let tmp = dir.join(format!(".{name}.{:016x}", rand::random::<u64>()));
        let sealed = codec::unlock_cache_seal(passphrase, binding, plaintext);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&sealed))
            .and_then(|()| fs::rename(&tmp, dir.join(&name)));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// The directory, if it is this user's alone: a directory (not a
    /// symbolic link) owned by this user that nobody else may enter.
    fn private_dir(&self, create: bool) -> Option<&Path> {
        if create {
            let _ = fs::DirBuilder::new().mode(0o700).create(&self.dir);
        }
        let meta = fs::symlink_metadata(&self.dir).ok()?;
        (meta.is_dir() && private(&meta)).then_some(self.dir.as_path())
    }
}

/// Owned by this user, no access for group or others.
fn private(meta: &fs::Metadata) -> bool {
    meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o077 == 0
}

/// An entry's file name says which key file, not which passphrase.
fn entry_name(binding: &[u8]) -> String {
    let mut h = blake3::Hasher::new_derive_key(ENTRY_CONTEXT);
    h.update(binding);
    hex::encode(&h.finalize().as_bytes()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_cache_for_this_user_is_in_memory() {
        let cache = UnlockCache::for_this_user().expect("/dev/shm is a tmpfs here");
        let uid = nix::unistd::geteuid();
        assert_eq!(cache.dir, Path::new(&format!("/dev/shm/lifeboat-{uid}")));
    }

    #[test]
    fn entry_round_trip_is_private_and_refuses_other_passphrases() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = UnlockCache::at(tmp.path().join("cache"));
        assert_eq!(cache.get("pass", b"kf"), None);
        cache.put("pass", b"kf", b"{\"metadata_key\":\"x\"}");
        let dir = fs::metadata(tmp.path().join("cache")).unwrap();
        assert_eq!(dir.mode() & 0o777, 0o700);
        let entries: Vec<_> = fs::read_dir(tmp.path().join("cache"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 1, "one entry, no temporary file left");
        assert_eq!(fs::metadata(&entries[0]).unwrap().mode() & 0o777, 0o600);
        let raw = fs::read(&entries[0]).unwrap();
        assert!(!raw.windows(12).any(|w| w == b"metadata_key"), "encrypted");
        assert_eq!(
            cache.get("pass", b"kf").as_deref(),
            Some(&b"{\"metadata_key\":\"x\"}"[..])
        );
        assert_eq!(cache.get("wrong", b"kf"), None);
        assert_eq!(cache.get("pass", b"another key file"), None);
        // A damaged entry is a miss, and the next put replaces it.
        fs::write(&entries[0], b"garbage").unwrap();
        assert_eq!(cache.get("pass", b"kf"), None);
        cache.put("pass", b"kf", b"m");
        assert_eq!(cache.get("pass", b"kf").as_deref(), Some(&b"m"[..]));
    }

    #[test]
    fn a_directory_others_can_enter_or_a_link_is_not_used() {
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        let cache = UnlockCache::at(open.clone());
        cache.put("pass", b"kf", b"m");
        assert_eq!(fs::read_dir(&open).unwrap().count(), 0, "nothing written");
        assert_eq!(cache.get("pass", b"kf"), None);

        // A directory that cannot be made (its parent is a file): nothing
        // cached, nothing fails.
        let file = tmp.path().join("a file");
        fs::write(&file, b"").unwrap();
        let nowhere = UnlockCache::at(file.join("cache"));
        nowhere.put("pass", b"kf", b"m");
        assert_eq!(nowhere.get("pass", b"kf"), None);

        // An entry made readable by others is not trusted either.
        let mine = UnlockCache::at(tmp.path().join("mine"));
        mine.put("pass", b"kf", b"m");
        let entry = tmp.path().join("mine").join(entry_name(b"kf"));
        fs::set_permissions(&entry, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(mine.get("pass", b"kf"), None);

        // Neither a linked directory nor a linked entry is followed.
        let linked_dir = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path().join("mine"), &linked_dir).unwrap();
        fs::set_permissions(&entry, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(mine.get("pass", b"kf").is_some());
        let through = UnlockCache::at(linked_dir);
        assert_eq!(through.get("pass", b"kf"), None);
        through.put("pass", b"other kf", b"m");
        assert!(
            !tmp.path()
                .join("mine")
                .join(entry_name(b"other kf"))
                .exists()
        );
        fs::rename(&entry, tmp.path().join("mine").join("moved")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("mine").join("moved"), &entry).unwrap();
        assert_eq!(mine.get("pass", b"kf"), None, "a linked entry");
    }

    #[test]
    fn concurrent_writers_leave_one_whole_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = UnlockCache::at(tmp.path().join("cache"));
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..20 {
                        cache.put("pass", b"kf", &[7u8; 300]);
                    }
                });
            }
        });
        assert_eq!(cache.get("pass", b"kf").as_deref(), Some(&[7u8; 300][..]));
        let names: Vec<_> = fs::read_dir(tmp.path().join("cache"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(entry_name(b"kf"))]);
    }
}
