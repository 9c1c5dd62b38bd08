//! Copying backups to another repository.
//!
//! Between repositories with the same keys (`keys_from`), objects are copied
//! as they are: no decryption, the same pack, index and record bytes, so a
//! copied backup has the same id in both and either repository can stand in
//! for the other. Between repositories with different keys, content is read
//! (authenticated) and written again under the destination's keys, as a new
//! backup whose record names the one it was copied from.
//!
//! Either way the destination's write ordering holds: packs, then the index,
//! then the WAL a physical backup needs, then the record, under a shared lock.

use std::collections::{HashMap, HashSet};

use super::{LockGuard, RepoError, Repository, Result};
use crate::codec::Id;
use crate::format::{self, BackupRecord, CopiedFrom, PackEntry};
use crate::storage::{ErrorKind, PutMode, Tier};

/// What a copy moved.
#[derive(Debug, Default, Clone)]
pub struct CopyStats {
    pub backups: usize,
    pub packs: usize,
    pub bytes: u64,
    pub wal_files: usize,
}

/// Called with bytes copied so far.
pub type CopyProgress<'a> = &'a (dyn Fn(u64) + Sync);

impl Repository {
    /// The records of `self` that `dst` does not have yet: by id between
    /// repositories with the same keys, else by the `copied_from` of `dst`'s
    /// records.
    pub fn missing_in(
        &self,
        dst: &Repository,
        records: Vec<(Id, BackupRecord)>,
        same_keys: bool,
    ) -> Result<Vec<(Id, BackupRecord)>> {
        let theirs = dst.list_backups()?;
        let have: HashSet<Id> = if same_keys {
            theirs.iter().map(|(id, _)| *id).collect()
        } else {
            theirs
                .iter()
                .filter_map(|(_, r)| r.copied_from.as_ref())
                .filter(|c| c.repository == self.id)
                .map(|c| c.backup)
                .collect()
        };
        Ok(records
            .into_iter()
            .filter(|(id, _)| !have.contains(id))
            .collect())
    }

    /// Copy `records` (of `self`) and the packs they need into `dst`, which
    /// has the same keys, object by object; `threads` objects move at once.
    /// The caller copies the WAL of physical backups first (`copy_wal_raw`):
    /// a physical backup is listed only once its WAL is archived.
    pub fn copy_raw(
        &self,
        dst: &Repository,
        lock: &LockGuard,
        records: &[(Id, BackupRecord)],
        threads: usize,
        progress: CopyProgress<'_>,
    ) -> Result<CopyStats> {
        let mut stats = CopyStats::default();
        let (files, _) = self.load_index_files()?;
        let mut entries: HashMap<Id, PackEntry> = HashMap::new();
        for (_, file) in files {
            for p in file.packs {
                entries.insert(p.id, p);
            }
        }
        let index = self.load_index()?;
        let needed = self.packs_of(&index, records.iter().map(|(_, r)| r));
        for (id, r) in records {
            if let Some(blob) = r.blobs().find(|b| !index.contains(b)) {
                return Err(self.corrupt(
                    format!("{}{id}", format::BACKUPS_DIR),
                    format!("needs blob {} which no index lists", blob.short()),
                ));
            }
        }
        // Packs: those `dst` lacks are copied; the index entries of all of them
        // go into one new index (a pack `dst` holds but does not index, left by
        // a crash, is indexed again: same bytes, same entry).
        let stored = dst.list_packs()?;
        let dst_index = dst.load_index()?;
        let to_copy: Vec<Id> = needed
            .iter()
            .filter(|p| !stored.contains_key(p))
            .copied()
            .collect();
        let copied = std::sync::atomic::AtomicU64::new(0);
        super::parallel(&to_copy, threads, |id| -> Result<()> {
            let path = format::pack_path(id);
            let bytes = self.get_verified(&path)?;
            match dst
                .storage
                .put_tier(&path, &bytes, PutMode::Create, Tier::Data)
            {
                Ok(()) => {}
                Err(e) if e.kind == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            let n = copied.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed)
                + bytes.len() as u64;
            progress(n);
            Ok(())
        })?;
        stats.packs = to_copy.len();
        stats.bytes = copied.into_inner();
        let new_entries: Vec<PackEntry> = needed
            .iter()
            .filter(|p| dst_index.pack_size(p).is_none())
            .filter_map(|p| entries.get(p).cloned())
            .collect();
        crate::failpoint::hit("copy:before-index");
        dst.write_index(new_entries)?;
        crate::failpoint::hit("copy:before-records");
        lock.check_held()?;
        for (id, _) in records {
            let path = format!("{}{id}", format::BACKUPS_DIR);
            let bytes = self.get_verified(&path)?;
            match dst.storage.put(&path, &bytes, PutMode::Create) {
                Ok(()) => {}
                Err(e) if e.kind == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
            stats.backups += 1;
        }
        Ok(stats)
    }

    /// Copy the archived WAL of one cluster that `dst` (same keys) lacks.
    /// Returns how many files were copied.
    pub fn copy_wal_raw(&self, dst: &Repository, system_id: u64, threads: usize) -> Result<usize> {
        let missing = self.wal_missing_in(dst, system_id)?;
        super::parallel(&missing, threads, |f| -> Result<()> {
            let bytes = self.read_checked_wal_object(&f.path, &f.name)?;
            match dst
                .storage
                .put_tier(&f.path, &bytes, PutMode::Create, Tier::Wal)
            {
                Ok(()) => Ok(()),
                // Pushed there meanwhile by the archiver: it checks content.
                Err(e) if e.kind == ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e.into()),
            }
        })?;
        Ok(missing.len())
    }

    /// Copy one backup into `dst` (other keys): its content is read here,
    /// authenticated, and stored again in a `dst` session; returns the new
    /// record, for the caller to commit under its lock.
    pub fn copy_reencrypted(
        &self,
        dst: &Repository,
        id: &Id,
        record: &BackupRecord,
        progress: CopyProgress<'_>,
    ) -> Result<BackupRecord> {
        let index = self.load_index()?;
        let mut session = dst.start_session()?;
        let mut copied = 0u64;
        let mut streams = Vec::with_capacity(record.streams.len());
        for s in &record.streams {
            let reader = self.read_stream(&index, s)?;
            let base = copied;
            let new = session.write_stream(&s.name, &s.format, reader, &mut |_| {}, &|n| {
                progress(base + n)
            })?;
            copied += s.size;
            streams.push(new);
        }
        let mut physical = record.physical.clone();
        if let Some(p) = physical.as_mut() {
            // Every block once, pack by pack (as a restore reads them), stored
            // again under the destination's keys: a block's new id replaces
            // the old one wherever the manifest has it.
            let blocks: Vec<Id> = p
                .manifest
                .iter()
                .flat_map(|f| f.blocks.iter().copied())
                .collect();
            let renamed = std::sync::Mutex::new(HashMap::with_capacity(blocks.len()));
            let done = std::sync::atomic::AtomicU64::new(copied);
            // Blocks are stored again in groups, as a backup stores them (in
            // the order they are read, which groups blocks of the same files).
            let pending = std::sync::Mutex::new(Vec::new());
            let store = |group: Vec<(Id, Vec<u8>)>| -> std::io::Result<()> {
                let (old, data): (Vec<Id>, Vec<Vec<u8>>) = group.into_iter().unzip();
                let effort = session.choose_effort(&data.concat());
                let new = session
                    .store_blobs(data, effort)
                    .map_err(std::io::Error::other)?;
                renamed
                    .lock()
                    .expect("block ids")
                    .extend(old.into_iter().zip(new));
                Ok(())
            };
            let threads = self.storage.concurrency().max(2);
            self.read_blobs(&index, &blocks, threads, &|old, data| {
                let n = data.len() as u64;
                let full = {
                    let mut pending = pending.lock().expect("pending blocks");
                    pending.push((*old, data));
                    (pending.len() == format::BLOCKS_PER_GROUP)
                        .then(|| std::mem::take(&mut *pending))
                };
                if let Some(group) = full {
                    store(group)?;
                }
                progress(done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n);
                Ok(())
            })?;
            store(pending.into_inner().expect("pending blocks"))
                .map_err(|e| RepoError::Other(format!("storing blocks: {e}")))?;
            let renamed = renamed.into_inner().expect("block ids");
            for file in &mut p.manifest {
                for block in &mut file.blocks {
                    *block = renamed[block];
                }
            }
        }
        let stats = session.finish()?;
        let mut out = record.clone();
        out.streams = streams;
        out.physical = physical;
        out.stats = stats;
        out.copied_from = Some(CopiedFrom {
            repository: self.id.clone(),
            backup: *id,
        });
        Ok(out)
    }

    /// Copy one cluster's archived WAL that `dst` (other keys) lacks, by
    /// reading and pushing each file again. Returns how many were copied.
    pub fn copy_wal_reencrypted(&self, dst: &Repository, system_id: u64) -> Result<usize> {
        let missing = self.wal_missing_in(dst, system_id)?;
        for f in &missing {
            let content =
                self.fetch_wal(system_id, &f.name)?
                    .ok_or_else(|| RepoError::Missing {
                        url: self.url(),
                        what: f.path.clone(),
                    })?;
            dst.push_wal(system_id, &f.name, &content)?;
        }
        Ok(missing.len())
    }

    /// The archived files of one cluster that `dst` lacks, oldest first.
    fn wal_missing_in(&self, dst: &Repository, system_id: u64) -> Result<Vec<super::ArchivedFile>> {
        let theirs: HashSet<String> = dst
            .list_wal(system_id)?
            .files
            .into_iter()
            .map(|f| f.name)
            .collect();
        Ok(self
            .list_wal(system_id)?
            .files
            .into_iter()
            .filter(|f| !theirs.contains(&f.name))
            .collect())
    }
}
