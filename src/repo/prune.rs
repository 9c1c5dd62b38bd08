//! Removing what no backup needs. The only code that deletes backup data.
//!
//! `plan_cleanup` decides, `apply_cleanup` acts; a dry run is the plan alone.
//! Order of deletion (FORMAT.md, "Prune"): forgotten backup records first, then
//! a new index for every kept pack, then the old index files, then the packs.
//! A crash at any point leaves every remaining backup restorable; what is left
//! over is removed by the next prune.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use super::lock::LockGuard;
use super::{Damage, Repository, Result};
use crate::codec::Id;
use crate::format::{self, BackupRecord, PackEntry};

/// What a prune will do to the stored data, given which backups remain.
#[derive(Debug, Default)]
pub struct CleanupPlan {
    /// Backup records to delete, with the size of each record object.
    pub forget: Vec<Id>,
    /// Packs to keep, as the new index will list them.
    pub keep: Vec<PackEntry>,
    /// Packs to delete (id, size) that an index lists: deleted last, after
    /// the new index no longer lists them.
    pub delete: Vec<(Id, u64)>,
    /// Packs to delete that no index lists (leftovers of interrupted backups):
    /// deleted first, which frees space on a full disk before the new index
    /// has to be written.
    pub delete_unindexed: Vec<(Id, u64)>,
    /// Kept packs that no readable index listed (their index was lost or
    /// damaged): the new index lists them again.
    pub reindexed: usize,
    /// Unreferenced packs younger than the grace period: left alone.
    pub young: usize,
    /// Packs no readable index lists that are in an archive storage class:
    /// what they hold is unknown without a retrieval, so they are kept.
    pub archived_unindexed: usize,
    /// Index files the new index replaces.
    pub old_index_files: Vec<String>,
    /// Whether a new index is written (something changed, or the index is
    /// spread over several files).
    pub rewrite_index: bool,
    /// Blobs a remaining backup needs that are nowhere in the repository,
    /// with the backups that need them. Prune still frees what is unneeded;
    /// `verify` reports these as damage.
    pub missing: Vec<(Id, Vec<Id>)>,
    /// Objects that could not be read (index files, unindexed packs).
    pub damaged: Vec<Damage>,
    /// Archived WAL no remaining backup needs (path, stored size): what is
    /// older than the oldest remaining base backup of its cluster.
    pub wal_delete: Vec<(String, u64)>,
}

impl CleanupPlan {
    pub fn bytes_freed(&self) -> u64 {
        self.delete
            .iter()
            .chain(&self.delete_unindexed)
            .map(|(_, size)| size)
            .chain(self.wal_delete.iter().map(|(_, size)| size))
            .sum()
    }

    pub fn packs_deleted(&self) -> usize {
        self.delete.len() + self.delete_unindexed.len()
    }
}

impl Repository {
    /// Plan the removal of `forget` and of every pack the `remaining` backups
    /// do not need. Unindexed packs count only once older than `grace`.
    pub fn plan_cleanup(
        &self,
        remaining: &[(Id, &BackupRecord)],
        forget: Vec<Id>,
        grace: Duration,
    ) -> Result<CleanupPlan> {
        let mut needed: HashMap<Id, Vec<Id>> = HashMap::new();
        for (bid, rec) in remaining {
            for c in rec.blobs() {
                let users = needed.entry(*c).or_default();
                if users.last() != Some(bid) {
                    users.push(*bid);
                }
            }
        }
        let (files, damaged_index) = self.load_index_files()?;
        let stored = self.list_packs()?;

        let mut plan = CleanupPlan {
            forget,
            damaged: damaged_index.clone(),
            rewrite_index: files.len() > 1 || !damaged_index.is_empty(),
            old_index_files: files
                .iter()
                .map(|(p, _)| p.clone())
                .chain(damaged_index.iter().map(|d| d.object.clone()))
                .collect(),
            wal_delete: self.plan_wal_cleanup(remaining)?,
            ..CleanupPlan::default()
        };
        // Packs no readable index lists: leftovers of interrupted backups, or
        // packs whose index was lost. Their trailers say what they hold.
        let indexed: HashSet<Id> = files
            .iter()
            .flat_map(|(_, f)| f.packs.iter().map(|p| p.id))
            .collect();
        let mut candidates: Vec<(PackEntry, bool)> = files
            .into_iter()
            .flat_map(|(_, f)| f.packs)
            .map(|p| (p, true))
            .collect();
        let unindexed = self.read_unindexed(&stored, &indexed)?;
        plan.archived_unindexed = unindexed.archived.len();
        candidates.extend(unindexed.packs.into_iter().map(|p| (p, false)));
        for (id, damage) in unindexed.unreadable {
            plan.damaged.push(damage);
            let obj = &stored[&id];
            if old_enough(obj.modified, grace) {
                plan.delete_unindexed.push((id, obj.size));
            } else {
                plan.young += 1;
            }
        }

        let mut found: HashSet<Id> = HashSet::new();
        let mut seen: HashSet<Id> = HashSet::new();
        for (entry, indexed) in candidates {
            if !seen.insert(entry.id) {
                plan.rewrite_index = true; // listed twice: merge
                continue;
            }
            let Some(obj) = stored.get(&entry.id) else {
                // Listed but gone: drop it from the index. Blobs a backup needs
                // show up as missing below.
                plan.rewrite_index = true;
                continue;
            };
            if entry.blobs.iter().any(|b| needed.contains_key(&b.id)) {
                found.extend(entry.blobs.iter().map(|b| b.id));
                if !indexed {
                    plan.reindexed += 1;
                    plan.rewrite_index = true;
                }
                plan.keep.push(entry);
            } else if indexed {
                plan.delete.push((entry.id, obj.size));
                plan.rewrite_index = true;
            } else if old_enough(obj.modified, grace) {
                plan.delete_unindexed.push((entry.id, obj.size));
            } else {
                plan.young += 1;
            }
        }
        plan.missing = needed
            .into_iter()
            .filter(|(blob, _)| !found.contains(blob))
            .collect();
        plan.missing.sort_by_key(|m| m.0);
        plan.keep.sort_by_key(|p| p.id);
        plan.delete.sort();
        plan.delete_unindexed.sort();
        Ok(plan)
    }

    /// The archived WAL that no remaining backup needs: per cluster with a
    /// remaining physical backup, every segment (and partial segment and
    /// backup history file) before the start of the oldest one. Timeline
    /// history files are always kept (they are tiny, and recovery reads
    /// them to find its way). Clusters without a remaining backup keep all
    /// their WAL: a first backup may be about to use it.
    pub fn plan_wal_cleanup(
        &self,
        remaining: &[(Id, &BackupRecord)],
    ) -> Result<Vec<(String, u64)>> {
        let mut oldest: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
        for (_, rec) in remaining {
            if let Some(p) = &rec.physical {
                let start = p.start_lsn.0 / p.wal_segment_size;
                let e = oldest
                    .entry(p.system_identifier)
                    .or_insert((start, p.wal_segment_size));
                e.0 = e.0.min(start);
            }
        }
        let mut out = Vec::new();
        for (system_id, (first_needed, seg_size)) in oldest {
            for f in self.list_wal(system_id)?.files {
                // The segment a file belongs to, by the first 24 characters
                // of its name (segments, .partial, .backup).
                let seg = crate::pg::wal::WalFile::parse(f.name.get(..24).unwrap_or(""))
                    .and_then(|w| w.segment(seg_size));
                let history = matches!(f.kind, crate::pg::wal::WalFile::History { .. });
                if !history && seg.is_some_and(|s| s.number < first_needed) {
                    out.push((f.path, f.stored_size));
                }
            }
        }
        Ok(out)
    }

    /// Carry out a plan under the exclusive lock.
    pub fn apply_cleanup(&self, plan: &CleanupPlan, lock: &LockGuard) -> Result<()> {
        lock.check_held()?;
        for (id, _) in &plan.delete_unindexed {
            self.storage.delete(&format::pack_path(id))?;
        }
        for id in &plan.forget {
            self.storage
                .delete(&format!("{}{id}", format::BACKUPS_DIR))?;
            self.storage.delete(&format::pin_path(id))?;
        }
        crate::failpoint::hit("prune:after-forget");
        for (path, _) in &plan.wal_delete {
            self.storage.delete(path)?;
        }
        if plan.rewrite_index {
            lock.check_held()?;
            let new = self.write_index(plan.keep.clone())?;
            crate::failpoint::hit("prune:after-index");
            let new_path = new.map(|id| format!("{}{id}", format::INDEX_DIR));
            for old in &plan.old_index_files {
                if Some(old) != new_path.as_ref() {
                    self.storage.delete(old)?;
                }
            }
            crate::failpoint::hit("prune:after-index-delete");
        }
        for (n, (id, _)) in plan.delete.iter().enumerate() {
            lock.check_held()?;
            self.storage.delete(&format::pack_path(id))?;
            crate::failpoint::hit(&format!("prune:pack-delete:{}", n + 1));
        }
        Ok(())
    }
}

fn old_enough(modified: Option<SystemTime>, grace: Duration) -> bool {
    if grace.is_zero() {
        return true;
    }
    modified.is_some_and(|m| m.elapsed().is_ok_and(|age| age >= grace))
}
