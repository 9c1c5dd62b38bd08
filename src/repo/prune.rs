//! Removing what no backup needs. The only code that deletes backup data.
//!
//! `plan_cleanup` decides, `apply_cleanup` acts; a dry run is the plan alone.
//! Order (FORMAT.md, "Prune"): forgotten backup records first, then the
//! rewritten packs (partly needed ones, copied without what no backup needs),
//! then a new index for every kept pack, then the old index files, then the
//! packs. A crash at any point leaves every remaining backup restorable; what
//! is left over is removed by the next prune.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use super::lock::LockGuard;
use super::{Damage, Repository, Result};
use crate::codec::{Id, SessionKey};
use crate::format::{self, BackupRecord, PackEntry, PackTrailer};
use crate::storage::{ErrorKind, PutMode, Tier};

/// A kept pack that is rewritten with only the stored blobs (or groups) a
/// remaining backup needs.
#[derive(Debug)]
pub struct Repack {
    pub pack: PackEntry,
    /// Offsets of the stored blobs and groups to copy.
    pub keep: Vec<u64>,
    /// Bytes of the blobs and groups left out.
    pub unneeded: u64,
}

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
    /// Kept packs of which more than the allowed share is unneeded: rewritten
    /// with what is needed, the old pack deleted with the others.
    pub repack: Vec<Repack>,
    /// Partly needed packs in an archive storage class: kept whole, since
    /// rewriting them would need a retrieval.
    pub archived_partial: usize,
    /// Packs that qualified for a rewrite but were left for a later prune,
    /// since rewriting them too would copy more than `max_rewrite`.
    pub rewrite_limited: usize,
}

/// How far a prune goes.
#[derive(Debug, Clone, Copy)]
pub struct CleanupLimits {
    /// Packs no index lists are deleted only once this old.
    pub grace: Duration,
    /// A kept pack of which more than this percentage is unneeded is
    /// rewritten (100 never rewrites).
    pub max_unused: u8,
    /// At most this many bytes are copied by rewrites in one prune (the
    /// packs with the most to free go first); the rest waits for the next.
    pub max_rewrite: u64,
}

/// What applying a plan did beyond the plan itself.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Packs rewritten, and the bytes their rewritten copies hold.
    pub repacked: usize,
    pub copied: u64,
    /// Packs the plan meant to rewrite that could not be read intact: kept
    /// whole (verify reports them), and the bytes the plan meant to free there.
    pub not_repacked: Vec<Damage>,
    pub not_freed: u64,
}

impl CleanupPlan {
    /// What the plan frees; for rewritten packs, the bytes left out.
    pub fn bytes_freed(&self) -> u64 {
        self.delete
            .iter()
            .chain(&self.delete_unindexed)
            .map(|(_, size)| size)
            .chain(self.wal_delete.iter().map(|(_, size)| size))
            .chain(self.repack.iter().map(|r| &r.unneeded))
            .sum()
    }

    pub fn packs_deleted(&self) -> usize {
        self.delete.len() + self.delete_unindexed.len()
    }
}

impl Repository {
    /// Plan the removal of `forget` and of every pack the `remaining` backups
    /// do not need, and the rewriting of packs they need only partly.
    pub fn plan_cleanup(
        &self,
        remaining: &[(Id, &BackupRecord)],
        forget: Vec<Id>,
        limits: CleanupLimits,
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
            if old_enough(obj.modified, limits.grace) {
                plan.delete_unindexed.push((id, obj.size));
            } else {
                plan.young += 1;
            }
        }

        // Readable packs claim before archived ones, indexed before
        // unindexed (a stable sort keeps the index's order otherwise).
        candidates.sort_by_key(|(p, indexed)| {
            (stored.get(&p.id).is_some_and(|o| o.is_archived()), !indexed)
        });
        // A pack whose size is not the indexed one is damaged: it claims
        // nothing, so its copies elsewhere are kept, and it stays as it is.
        let mut no_claim: HashSet<Id> = HashSet::new();
        for (p, _) in &candidates {
            if stored.get(&p.id).is_some_and(|o| o.size != p.size) {
                no_claim.insert(p.id);
                plan.damaged.push(Damage {
                    object: format::pack_path(&p.id),
                    problem: format!("{} bytes stored, {} indexed", stored[&p.id].size, p.size),
                });
            }
        }
        // A pack deleted because other packs claim the needed blobs it holds
        // goes only once those packs were read and found intact; one that is
        // not loses its claims, and the claims are made again.
        let mut intact: HashSet<Id> = HashSet::new();
        let a = loop {
            let a = assign(&candidates, &needed, &stored, &no_claim, limits);
            let mut again = false;
            // Packs no index lists that will be listed again are proven
            // too, where the identity can (a forgery would otherwise get
            // a sealed index entry, and only a restore would find it).
            let mut to_prove: Vec<Id> = a.claimers_of_deleted.iter().copied().collect();
            if self.identities.is_some() {
                to_prove.extend(&a.reindexed_ids);
            }
            to_prove.sort();
            to_prove.dedup();
            for pack in &to_prove {
                if intact.contains(pack) {
                    continue;
                }
                let path = format::pack_path(pack);
                let entry = candidates
                    .iter()
                    .find(|(p, _)| p.id == *pack)
                    .map(|(p, _)| p)
                    .expect("claimers are candidates");
                match self.read_checked_pack(entry) {
                    Ok(_) => {
                        intact.insert(*pack);
                    }
                    Err(e) if e.is_damage() || matches!(e, super::RepoError::Archived { .. }) => {
                        if !matches!(e, super::RepoError::Archived { .. }) {
                            plan.damaged.push(Damage::from_error(&path, &e));
                        }
                        no_claim.insert(*pack);
                        again = true;
                    }
                    Err(e) => return Err(e),
                }
            }
            if !again {
                break a;
            }
        };
        plan.keep = a.keep;
        plan.repack = a.repack;
        plan.delete = a.delete;
        plan.delete_unindexed.extend(a.delete_unindexed);
        plan.young += a.young;
        plan.reindexed = a.reindexed;
        plan.archived_partial = a.archived_partial;
        plan.rewrite_limited = a.rewrite_limited;
        plan.rewrite_index |= a.rewrite_index;
        // Blobs that only packs which may not claim hold are damaged, not
        // missing (those packs are reported above).
        let mut claimed = a.claimed;
        for (p, _) in &candidates {
            if no_claim.contains(&p.id) {
                claimed.extend(p.blobs.iter().map(|b| (b.id, p.id)));
            }
        }
        plan.missing = needed
            .into_iter()
            .filter(|(blob, _)| !claimed.contains_key(blob))
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
    pub fn apply_cleanup(&self, plan: &CleanupPlan, lock: &LockGuard) -> Result<CleanupReport> {
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
        let mut report = CleanupReport::default();
        let mut keep = plan.keep.clone();
        let mut replaced = Vec::new();
        for r in &plan.repack {
            lock.check_held()?;
            match self.rewrite_pack(r) {
                Ok(entry) => {
                    report.repacked += 1;
                    report.copied += entry.size;
                    keep.push(entry);
                    replaced.push(r.pack.id);
                    crate::failpoint::hit(&format!("prune:repack:{}", report.repacked));
                }
                Err(e) => {
                    // Damaged, archived after all, or no room to write the
                    // copy: the pack stays as it is and the prune goes on
                    // (on a full disk, to the deletions that free room).
                    let path = format::pack_path(&r.pack.id);
                    report.not_repacked.push(Damage::from_error(&path, &e));
                    report.not_freed += r.unneeded;
                    keep.push(r.pack.clone());
                }
            }
        }
        if plan.rewrite_index {
            lock.check_held()?;
            let new = self.write_index(keep)?;
            crate::failpoint::hit("prune:after-index");
            let new_path = new.map(|id| format!("{}{id}", format::INDEX_DIR));
            for old in &plan.old_index_files {
                if Some(old) != new_path.as_ref() {
                    self.storage.delete(old)?;
                }
            }
            crate::failpoint::hit("prune:after-index-delete");
        }
        let old = plan.delete.iter().map(|(id, _)| id).chain(&replaced);
        for (n, id) in old.enumerate() {
            lock.check_held()?;
            self.storage.delete(&format::pack_path(id))?;
            crate::failpoint::hit(&format!("prune:pack-delete:{}", n + 1));
        }
        Ok(report)
    }

    /// Read a pack whole and check it: its bytes against its name, and its
    /// own trailer and header against `entry` (what the index says it holds).
    fn read_checked_pack(&self, entry: &PackEntry) -> Result<Vec<u8>> {
        let path = format::pack_path(&entry.id);
        let (bytes, own) = self.read_pack(&path)?;
        if own.blobs != entry.blobs || own.session_key != entry.session_key {
            return Err(self.corrupt(&path, "the pack does not hold what the index says"));
        }
        // The checks above pass for a pack rebuilt with an altered blob
        // under its new hash with the genuine trailer kept (its trailer is
        // not bound to its bytes). With the identity the blobs are checked
        // too, so that prune never lets a genuine copy go for such a pack,
        // nor copies one's blobs into a rewrite: in passphrase mode by their
        // tags (only the passphrase's holders can make a session key the
        // repository opens); in public-key mode, where anyone can make one
        // for the public recipient, by decrypting and re-hashing each blob
        // to its id (the dedup key's hash).
        if let Some(ids) = &self.identities {
            let env = format::parse_pack_envelope(&bytes)
                .map_err(|e| self.corrupt(&path, e.to_string()))?;
            let key = SessionKey::unwrap(env.wrapped_key, ids)
                .map_err(|e| self.corrupt(&path, format!("session key: {e}")))?;
            let blobs = super::verify::in_pack_order(&own.blobs);
            match self.own_identity {
                Some(_) => super::verify::authenticate_blobs(&key, &blobs, &bytes),
                None => self.decode_blobs(&key, &blobs, &mut bytes.clone(), &mut Vec::new()),
            }
            .map_err(|e| self.corrupt(&path, e))?;
        }
        Ok(bytes)
    }

    /// Write a copy of `r.pack` that holds only the stored blobs and groups at
    /// `r.keep`, and return its index entry. The copy keeps the pack's header
    /// (its wrapped session key), so the encrypted blobs are copied as they
    /// are: no content key is needed. The old pack is read whole and checked
    /// against its name first, so damage is never copied into a new name.
    fn rewrite_pack(&self, r: &Repack) -> Result<PackEntry> {
        let path = format::pack_path(&r.pack.id);
        let old = self.read_checked_pack(&r.pack)?;
        let env =
            format::parse_pack_envelope(&old).map_err(|e| self.corrupt(&path, e.to_string()))?;
        let blobs_end = old.len() - 12 - env.trailer.len();
        let mut pack = format::pack_header(env.wrapped_key);
        let mut blobs = Vec::new();
        for &offset in &r.keep {
            let members: Vec<_> = r.pack.blobs.iter().filter(|b| b.offset == offset).collect();
            let length = members.first().map_or(0, |b| b.length);
            let stored = usize::try_from(offset)
                .ok()
                .filter(|&start| {
                    offset >= env.blobs_start
                        && members.iter().all(|b| b.length == length)
                        && start + length as usize <= blobs_end
                })
                .map(|start| &old[start..start + length as usize])
                .ok_or_else(|| self.corrupt(&path, "an entry lies outside the pack's blobs"))?;
            let new_offset = pack.len() as u64;
            pack.extend_from_slice(stored);
            blobs.extend(members.into_iter().map(|b| format::BlobEntry {
                offset: new_offset,
                ..b.clone()
            }));
        }
        let trailer = self.meta.seal(
            "pack",
            &super::to_json(&PackTrailer {
                blobs: blobs.clone(),
            }),
        );
        pack.extend_from_slice(&format::pack_footer(&trailer));
        let id = Id::of_stored(&pack);
        let new_path = format::pack_path(&id);
        match self
            .storage
            .put_tier(&new_path, &pack, PutMode::Create, Tier::Data)
        {
            Ok(()) => {}
            // Left by an interrupted prune: the old pack goes only if that
            // copy is intact.
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                self.get_verified(&new_path)?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(PackEntry {
            id,
            size: pack.len() as u64,
            session_key: r.pack.session_key.clone(),
            blobs,
        })
    }
}

/// What becomes of each candidate pack (see `plan_cleanup`).
#[derive(Default)]
struct Assignment {
    keep: Vec<PackEntry>,
    repack: Vec<Repack>,
    delete: Vec<(Id, u64)>,
    delete_unindexed: Vec<(Id, u64)>,
    young: usize,
    reindexed: usize,
    archived_partial: usize,
    rewrite_limited: usize,
    rewrite_index: bool,
    /// Needed blob -> the pack that claims it.
    claimed: HashMap<Id, Id>,
    /// Packs whose claims let another pack holding a needed blob go.
    claimers_of_deleted: HashSet<Id>,
    /// Packs no index lists that will be listed in the new index.
    reindexed_ids: HashSet<Id>,
}

/// Each needed blob is claimed by the first pack in `candidates` that holds
/// it (and may claim: not in `no_claim`); a pack is kept if it claims a blob
/// or may not claim, rewritten if it is kept and more than `max_unused`
/// percent of it holds no claimed blob, and deleted otherwise. Copies of a
/// blob in later packs are not needed: two writers that stored the same
/// blob, or a rewrite interrupted before its new index, leave such copies.
fn assign(
    candidates: &[(PackEntry, bool)],
    needed: &HashMap<Id, Vec<Id>>,
    stored: &HashMap<Id, crate::storage::ObjectMeta>,
    no_claim: &HashSet<Id>,
    limits: CleanupLimits,
) -> Assignment {
    let mut a = Assignment::default();
    let mut seen: HashSet<Id> = HashSet::new();
    for (entry, indexed) in candidates {
        if !seen.insert(entry.id) {
            a.rewrite_index = true; // listed twice: merge
            continue;
        }
        let Some(obj) = stored.get(&entry.id) else {
            // Listed but gone: drop it from the index. Blobs a backup needs
            // show up as missing.
            a.rewrite_index = true;
            continue;
        };
        let may_claim = !no_claim.contains(&entry.id);
        if !may_claim && !indexed {
            // Not proven (it did not read back as what its trailer says):
            // left as it is, not listed in the new index, reported.
            continue;
        }
        let mine: HashSet<Id> = entry
            .blobs
            .iter()
            .map(|b| b.id)
            .filter(|b| may_claim && needed.contains_key(b) && !a.claimed.contains_key(b))
            .collect();
        if !mine.is_empty() || !may_claim {
            a.claimed.extend(mine.iter().map(|b| (*b, entry.id)));
            if !indexed {
                a.reindexed += 1;
                a.reindexed_ids.insert(entry.id);
                a.rewrite_index = true;
            }
            match repack_of(entry, &mine, obj.size, limits.max_unused) {
                Some(_) if !may_claim => a.keep.push(entry.clone()),
                Some(_) if obj.is_archived() => {
                    a.archived_partial += 1;
                    a.keep.push(entry.clone());
                }
                Some((keep, unneeded)) => {
                    // Needed blobs the copy may leave out are claimed by
                    // other packs: those must be intact.
                    for b in &entry.blobs {
                        if let Some(owner) = a.claimed.get(&b.id)
                            && needed.contains_key(&b.id)
                            && !mine.contains(&b.id)
                        {
                            a.claimers_of_deleted.insert(*owner);
                        }
                    }
                    a.repack.push(Repack {
                        pack: entry.clone(),
                        keep,
                        unneeded,
                    })
                }
                None => a.keep.push(entry.clone()),
            }
            continue;
        }
        let gone = if *indexed {
            a.rewrite_index = true;
            &mut a.delete
        } else if old_enough(obj.modified, limits.grace) {
            &mut a.delete_unindexed
        } else {
            a.young += 1;
            continue;
        };
        gone.push((entry.id, obj.size));
        for b in &entry.blobs {
            if let Some(owner) = needed
                .contains_key(&b.id)
                .then(|| a.claimed.get(&b.id))
                .flatten()
            {
                a.claimers_of_deleted.insert(*owner);
            }
        }
    }
    // Rewrites copy what they keep: the packs with the largest share to free
    // go first, up to `max_rewrite` copied bytes.
    a.repack
        .sort_by_key(|r| std::cmp::Reverse(r.unneeded * 1000 / r.pack.size.max(1)));
    let mut copied = 0u64;
    let (mut go, mut wait) = (Vec::new(), Vec::new());
    for r in std::mem::take(&mut a.repack) {
        let copy = r.pack.size - r.unneeded.min(r.pack.size);
        if copied + copy <= limits.max_rewrite {
            copied += copy;
            go.push(r);
        } else {
            wait.push(r);
        }
    }
    a.rewrite_limited = wait.len();
    a.keep.extend(wait.into_iter().map(|r| r.pack));
    a.rewrite_index |= !go.is_empty();
    a.repack = go;
    a.delete.sort();
    a.delete_unindexed.sort();
    a.keep.sort_by_key(|p| p.id);
    a
}

/// Whether a kept pack should be rewritten: the offsets of its stored blobs
/// and groups that hold a blob of `mine` (a group is kept whole), and the
/// bytes of the others, if those are more than `max_unused` percent of
/// `size`.
fn repack_of(
    pack: &PackEntry,
    mine: &HashSet<Id>,
    size: u64,
    max_unused: u8,
) -> Option<(Vec<u64>, u64)> {
    let mut spans: std::collections::BTreeMap<u64, (u64, bool)> = Default::default();
    for b in &pack.blobs {
        let span = spans.entry(b.offset).or_insert((b.length as u64, false));
        span.1 |= mine.contains(&b.id);
    }
    let unneeded: u64 = spans.values().filter(|s| !s.1).map(|s| s.0).sum();
    if unneeded == 0 || u128::from(unneeded) * 100 <= u128::from(size) * u128::from(max_unused) {
        return None;
    }
    let keep = spans.iter().filter(|s| s.1.1).map(|s| *s.0).collect();
    Some((keep, unneeded))
}

fn old_enough(modified: Option<SystemTime>, grace: Duration) -> bool {
    if grace.is_zero() {
        return true;
    }
    modified.is_some_and(|m| m.elapsed().is_ok_and(|age| age >= grace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Effort;
    use crate::repo::{read_all, test_block as block, test_repo};
    use crate::storage::{PutMode, Storage};

    /// One session's pack: a needed blob, an unneeded one, a group with one
    /// needed member and a group with none.
    fn one_pack(repo: &Repository) -> (PackEntry, Vec<Id>, Vec<Id>) {
        let s = repo.start_session().unwrap();
        let needed_single = s.store_blob(block(10)).unwrap();
        let unneeded_single = s.store_blob(block(11)).unwrap();
        let group = s
            .store_blobs((1..4).map(block).collect(), Effort::Fast)
            .unwrap();
        let other = s
            .store_blobs((4..6).map(block).collect(), Effort::Fast)
            .unwrap();
        s.finish().unwrap();
        let (files, _) = repo.load_index_files().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].1.packs.len(), 1);
        let pack = files[0].1.packs[0].clone();
        let mut kept = vec![needed_single];
        kept.extend(&group);
        let mut dropped = vec![unneeded_single];
        dropped.extend(&other);
        (pack, kept, dropped)
    }

    #[test]
    fn a_rewritten_pack_keeps_needed_blobs_and_whole_groups_and_reads_back() {
        let (storage, repo) = test_repo();
        let (pack, kept, dropped) = one_pack(&repo);
        // Needed: the single blob and one member of the first group.
        let mine: HashSet<Id> = [kept[0], kept[2]].into();
        assert!(
            repack_of(&pack, &mine, pack.size, 100).is_none(),
            "100 % never rewrites"
        );
        let (keep, unneeded) = repack_of(&pack, &mine, pack.size, 0).unwrap();
        assert_eq!(keep.len(), 2, "the single blob and the group, each once");
        let length = |id: &Id| pack.blobs.iter().find(|b| b.id == *id).unwrap().length as u64;
        assert_eq!(unneeded, length(&dropped[0]) + length(&dropped[1]));
        let share = (unneeded * 100 / pack.size) as u8;
        assert!(repack_of(&pack, &mine, pack.size, share).is_some());
        assert!(repack_of(&pack, &mine, pack.size, share + 1).is_none());

        let old_index = storage.list(format::INDEX_DIR).unwrap();
        let new = repo
            .rewrite_pack(&Repack {
                pack: pack.clone(),
                keep,
                unneeded,
            })
            .unwrap();
        let mut ids: Vec<Id> = new.blobs.iter().map(|b| b.id).collect();
        ids.sort();
        let mut want = kept.clone();
        want.sort();
        assert_eq!(ids, want, "the group is kept whole, with all its members");
        assert!(new.size < pack.size - unneeded);
        // As prune does it: the new index, then the old index and pack go.
        repo.write_index(vec![new.clone()]).unwrap();
        for o in old_index {
            storage.delete(&o.path).unwrap();
        }
        storage.delete(&format::pack_path(&pack.id)).unwrap();
        let index = repo.load_index().unwrap();
        for id in &dropped {
            assert!(!index.contains(id));
        }
        let got = read_all(&repo, &index, &kept);
        let mut expect: Vec<(Id, Vec<u8>)> = kept
            .iter()
            .zip([10, 1, 2, 3])
            .map(|(id, seed)| (*id, block(seed)))
            .collect();
        expect.sort();
        assert_eq!(got, expect);
        // The copy is a pack like any other: its trailer rebuilds its entry.
        assert_eq!(
            repo.read_pack_entry(&format::pack_path(&new.id))
                .unwrap()
                .blobs,
            new.blobs
        );
        let report = repo
            .verify(crate::repo::ReadData::Plaintext, &|_| {})
            .unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    fn record_needing(blobs: &[Id]) -> BackupRecord {
        serde_json::from_value(serde_json::json!({
            "version": 1, "kind": "logical", "target": "t", "host": "h", "lifeboat": "test",
            "started": "2026-12-01T00:00:00Z", "finished": "2026-12-01T00:00:01Z",
            "database": {"name": "d", "server_version": "15", "server_version_num": 150000,
                         "encoding": "UTF8", "collate": "C", "ctype": "C", "size_bytes": 0},
            "streams": [{"name": "s", "format": "raw", "size": 0, "chunks": blobs}],
            "stats": {"size": 0, "new_bytes": 0, "stored_bytes": 0, "chunks": 0, "new_chunks": 0}
        }))
        .unwrap()
    }

    const NO_REWRITE: CleanupLimits = CleanupLimits {
        grace: Duration::ZERO,
        max_unused: 100,
        max_rewrite: u64::MAX,
    };

    #[test]
    fn a_copy_goes_only_once_the_pack_that_claims_its_blobs_reads_intact() {
        let (storage, repo) = test_repo();
        let (pack, kept, _) = one_pack(&repo);
        // A second, indexed copy of the whole pack (as two writers that stored
        // the same blobs would leave).
        let all: Vec<u64> = pack
            .blobs
            .iter()
            .map(|b| b.offset)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let copy = repo
            .rewrite_pack(&Repack {
                pack: pack.clone(),
                keep: all,
                unneeded: 0,
            })
            .unwrap();
        repo.write_index(vec![copy.clone()]).unwrap();
        let rec = record_needing(&kept);
        let plan = |repo: &Repository| {
            repo.plan_cleanup(&[(Id::of_stored(b"r"), &rec)], vec![], NO_REWRITE)
                .unwrap()
        };
        let first = plan(&repo);
        assert_eq!(first.keep.len(), 1);
        assert_eq!(first.delete.len(), 1, "one copy is enough");
        assert!(first.missing.is_empty() && first.damaged.is_empty());
        let claimer = first.keep[0].id;
        let other = first.delete[0].0;

        // The claimer rots in place (same size): it loses its claims, both stay.
        let path = format::pack_path(&claimer);
        let good = storage.get(&path).unwrap();
        let mut bad = good.clone();
        bad[100] ^= 1;
        storage.put(&path, &bad, PutMode::Overwrite).unwrap();
        let second = plan(&repo);
        assert!(second.delete.is_empty(), "{:?}", second.delete);
        let mut kept_ids: Vec<Id> = second.keep.iter().map(|p| p.id).collect();
        kept_ids.sort();
        let mut both = vec![claimer, other];
        both.sort();
        assert_eq!(kept_ids, both);
        assert!(
            second.damaged.iter().any(|d| d.object == path),
            "{:?}",
            second.damaged
        );
        assert!(second.missing.is_empty());

        // Truncated: its size is not the indexed one, so it never claims.
        storage
            .put(&path, &good[..good.len() - 1], PutMode::Overwrite)
            .unwrap();
        let third = plan(&repo);
        assert!(third.delete.is_empty());
        assert_eq!(third.keep.len(), 2);
        assert!(
            third
                .damaged
                .iter()
                .any(|d| d.object == path && d.problem.contains("indexed"))
        );
    }

    /// Index `forged` (a pack stored under its own hash) ahead of
    /// `genuine`, plan a prune for a backup needing `needed`, and check that
    /// both packs stay, the genuine one claims, and the forgery is reported
    /// with `problem`.
    fn forged_ahead_of(
        storage: &dyn Storage,
        repo: &Repository,
        genuine: &PackEntry,
        forged: &[u8],
        needed: &[Id],
        problem: &str,
    ) {
        let forged_id = Id::of_stored(forged);
        let forged_path = format::pack_path(&forged_id);
        storage.put(&forged_path, forged, PutMode::Create).unwrap();
        let entry = repo.read_pack_entry(&forged_path).unwrap();
        assert_eq!(entry.blobs, genuine.blobs, "the trailer is the genuine one");
        for o in storage.list(format::INDEX_DIR).unwrap() {
            storage.delete(&o.path).unwrap();
        }
        repo.write_index(vec![entry, genuine.clone()]).unwrap();

        let rec = record_needing(needed);
        let plan = repo
            .plan_cleanup(&[(Id::of_stored(b"r"), &rec)], vec![], NO_REWRITE)
            .unwrap();
        assert!(plan.delete.is_empty(), "{:?}", plan.delete);
        let mut kept_ids: Vec<Id> = plan.keep.iter().map(|p| p.id).collect();
        kept_ids.sort();
        let mut both = vec![genuine.id, forged_id];
        both.sort();
        assert_eq!(kept_ids, both);
        assert!(plan.missing.is_empty(), "{:?}", plan.missing);
        assert!(
            plan.damaged
                .iter()
                .any(|d| d.object == forged_path && d.problem.contains(problem)),
            "{:?}",
            plan.damaged
        );
    }

    /// Store `forged` under its own hash, lose every index file, and plan a
    /// prune for a backup needing `needed`; the plan and the forgery's path.
    fn plan_unindexed_with(
        storage: &dyn Storage,
        repo: &Repository,
        forged: &[u8],
        needed: &[Id],
    ) -> (CleanupPlan, String) {
        let forged_path = format::pack_path(&Id::of_stored(forged));
        storage.put(&forged_path, forged, PutMode::Create).unwrap();
        for o in storage.list(format::INDEX_DIR).unwrap() {
            storage.delete(&o.path).unwrap();
        }
        let rec = record_needing(needed);
        let plan = repo
            .plan_cleanup(&[(Id::of_stored(b"r"), &rec)], vec![], NO_REWRITE)
            .unwrap();
        (plan, forged_path)
    }

    /// A forged copy of a pack, made without the keys (one blob altered,
    /// stored under its new hash, the genuine trailer kept) and indexed
    /// ahead of the genuine pack: it would claim every needed blob and let
    /// the genuine pack go. Its blobs give it away (in passphrase mode by
    /// their tags), so both stay and the forgery is reported.
    #[test]
    fn a_forged_copy_never_lets_the_genuine_pack_go() {
        for (storage, repo) in [test_repo(), crate::repo::test_repo_passphrase()] {
            let (genuine, kept, _) = one_pack(&repo);
            let mut bytes = storage.get(&format::pack_path(&genuine.id)).unwrap();
            bytes[(genuine.blobs[0].offset + 40) as usize] ^= 1;
            forged_ahead_of(
                storage.as_ref(),
                &repo,
                &genuine,
                &bytes,
                &kept,
                "authentication failed",
            );
        }
    }

    /// The same with both packs unindexed (their index lost) and the
    /// forgery first by id: the genuine pack claims and is listed again,
    /// the forgery is neither listed nor deleted, and is reported.
    #[test]
    fn an_unindexed_forgery_is_not_listed_again() {
        for (storage, repo) in [test_repo(), crate::repo::test_repo_passphrase()] {
            let (genuine, kept, _) = one_pack(&repo);
            let good = storage.get(&format::pack_path(&genuine.id)).unwrap();
            let at = (genuine.blobs[0].offset + 40) as usize;
            let forged = (0..=255u8)
                .map(|x| {
                    let mut bytes = good.clone();
                    bytes[at] ^= x | 1;
                    bytes
                })
                .find(|b| Id::of_stored(b) < genuine.id)
                .expect("a forgery that sorts first");
            let (plan, forged_path) = plan_unindexed_with(storage.as_ref(), &repo, &forged, &kept);
            let kept_ids: Vec<Id> = plan.keep.iter().map(|p| p.id).collect();
            assert_eq!(
                kept_ids,
                vec![genuine.id],
                "only the genuine pack is listed"
            );
            assert!(plan.delete.is_empty() && plan.delete_unindexed.is_empty());
            assert!(plan.missing.is_empty(), "{:?}", plan.missing);
            assert!(
                plan.damaged.iter().any(|d| d.object == forged_path),
                "{:?}",
                plan.damaged
            );
        }
    }

    /// The genuine pack gone and its index lost, a forgery in its place:
    /// it is not listed in the new index (the needed blobs are reported
    /// damaged, where only a restore would have found them otherwise).
    #[test]
    fn a_forgery_alone_is_not_listed_again() {
        for (storage, repo) in [test_repo(), crate::repo::test_repo_passphrase()] {
            let (genuine, kept, _) = one_pack(&repo);
            let path = format::pack_path(&genuine.id);
            let mut forged = storage.get(&path).unwrap();
            forged[(genuine.blobs[0].offset + 40) as usize] ^= 1;
            storage.delete(&path).unwrap();
            let (plan, forged_path) = plan_unindexed_with(storage.as_ref(), &repo, &forged, &kept);
            assert!(plan.keep.is_empty(), "{:?}", plan.keep);
            assert!(plan.delete_unindexed.is_empty());
            assert!(
                plan.damaged
                    .iter()
                    .any(|d| d.object == forged_path && d.problem.contains("authentication")),
                "{:?}",
                plan.damaged
            );
        }
    }

    /// In public-key mode the recipient is public: anyone who can write to
    /// the storage can make a session key for it, wrap it, and encrypt
    /// content of their own under the genuine blobs' ids and lengths. Every
    /// tag of such a pack checks out; re-hashing its blobs to their ids (the
    /// dedup key's hash) does not.
    #[test]
    fn a_copy_forged_under_a_new_session_key_never_lets_the_genuine_pack_go() {
        let (storage, repo) = test_repo();
        let s = repo.start_session().unwrap();
        let needed = vec![
            s.store_blob(block(20)).unwrap(),
            s.store_blob(block(21)).unwrap(),
        ];
        s.finish().unwrap();
        let genuine = repo.load_index_files().unwrap().0[0].1.packs[0].clone();
        assert!(genuine.blobs.iter().all(|b| b.group.is_none()));
        let mut bytes = storage.get(&format::pack_path(&genuine.id)).unwrap();

        // age headers carry a random-length stanza: wrap again until the
        // wrapped key is as long as the genuine one.
        let genuine_len = format::parse_pack_envelope(&bytes)
            .unwrap()
            .wrapped_key
            .len();
        let (key, wrapped) = (0..100_000)
            .map(|_| {
                let key = SessionKey::random();
                let wrapped = key.wrap(&repo.recipients).unwrap();
                (key, wrapped)
            })
            .find(|(_, w)| w.len() == genuine_len)
            .expect("a wrapped key of the genuine length");
        let header = format::pack_header(&wrapped);
        bytes[..header.len()].copy_from_slice(&header);
        for b in &genuine.blobs {
            // Content of the forger's own (random bytes, then zeros), as
            // much as makes the stored blob exactly as long as the genuine.
            let stored_with = |n: usize| {
                let mut plain = vec![0u8; b.raw_length as usize];
                for (i, byte) in plain.iter_mut().take(n).enumerate() {
                    *byte = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
                }
                key.encrypt_blob(b.ty, &b.id, &plain, 3)
            };
            let stored = (0..b.raw_length as usize)
                .map(stored_with)
                .find(|s| s.len() == b.length as usize)
                .expect("a forged blob of the genuine length");
            let at = b.offset as usize;
            bytes[at..at + stored.len()].copy_from_slice(&stored);
        }
        let blobs = crate::repo::verify::in_pack_order(&genuine.blobs);
        assert_eq!(
            crate::repo::verify::authenticate_blobs(&key, &blobs, &bytes),
            Ok(()),
            "every tag checks out"
        );
        forged_ahead_of(
            storage.as_ref(),
            &repo,
            &genuine,
            &bytes,
            &needed,
            "content does not match its id",
        );
    }

    #[test]
    fn rewrites_go_by_share_to_free_up_to_the_limit_and_never_for_archived_packs() {
        let id = |n: u8| Id::of_stored(&[n]);
        let entry = |n: u8, blobs: &[(u8, u32)]| PackEntry {
            id: id(n),
            size: 1000,
            session_key: String::new(),
            blobs: blobs
                .iter()
                .scan(0u64, |off, &(b, len)| {
                    let e = format::BlobEntry {
                        id: id(b),
                        ty: crate::codec::BlobType::Data,
                        offset: *off,
                        length: len,
                        raw_length: len,
                        group: None,
                    };
                    *off += len as u64;
                    Some(e)
                })
                .collect(),
        };
        let meta = |n: u8, class: Option<&str>| {
            (
                id(n),
                crate::storage::ObjectMeta {
                    path: format::pack_path(&id(n)),
                    size: 1000,
                    modified: None,
                    class: class.map(String::from),
                },
            )
        };
        // Pack 1: 30 % unneeded; pack 2: 60 %; pack 3 (archived): 60 %, and
        // it holds blob 20 that pack 4 (readable, indexed later) holds too.
        let candidates = vec![
            (entry(3, &[(20, 400), (21, 600)]), true),
            (entry(1, &[(10, 700), (11, 300)]), true),
            (entry(2, &[(12, 400), (13, 600)]), true),
            (entry(4, &[(20, 400)]), true),
        ];
        let stored: HashMap<_, _> = [
            meta(1, None),
            meta(2, None),
            meta(3, Some("GLACIER")),
            meta(4, None),
        ]
        .into();
        let needed: HashMap<Id, Vec<Id>> = [10, 12, 20, 21].map(|b| (id(b), vec![id(99)])).into();
        let sort = |c: &mut Vec<(PackEntry, bool)>| {
            c.sort_by_key(|(p, indexed)| (stored[&p.id].is_archived(), !indexed))
        };
        let mut c = candidates.clone();
        sort(&mut c);
        let limits = |max_rewrite| CleanupLimits {
            grace: Duration::ZERO,
            max_unused: 20,
            max_rewrite,
        };
        let a = assign(&c, &needed, &stored, &HashSet::new(), limits(u64::MAX));
        assert_eq!(a.claimed[&id(20)], id(4), "the readable copy claims");
        let order: Vec<Id> = a.repack.iter().map(|r| r.pack.id).collect();
        assert_eq!(order, [id(2), id(1)], "the largest share to free first");
        assert_eq!(a.archived_partial, 1, "the archived pack is kept whole");
        // Room for one rewrite only: pack 2 copies 400 bytes, pack 1 700.
        let a = assign(&c, &needed, &stored, &HashSet::new(), limits(1000));
        assert_eq!(a.repack.len(), 1);
        assert_eq!(a.repack[0].pack.id, id(2));
        assert_eq!(a.rewrite_limited, 1);
        assert!(a.keep.iter().any(|p| p.id == id(1)));

        // Pack 5 holds blob 10 (claimed by pack 1), blob 14 (needed) and
        // waste: its rewrite leaves blob 10 out, so pack 1 is to be checked.
        c.push((entry(5, &[(10, 300), (14, 100), (15, 600)]), true));
        let mut stored = stored;
        stored.extend([meta(5, None)]);
        let mut needed = needed;
        needed.insert(id(14), vec![id(99)]);
        let a = assign(&c, &needed, &stored, &HashSet::new(), limits(u64::MAX));
        assert!(a.repack.iter().any(|r| r.pack.id == id(5)));
        assert!(a.claimers_of_deleted.contains(&id(1)));
    }

    #[test]
    fn a_rewrite_that_cannot_be_written_keeps_the_pack_and_the_prune_goes_on() {
        let (storage, repo) = test_repo();
        let (pack, kept, _) = one_pack(&repo);
        let rec = record_needing(&kept);
        let limits = CleanupLimits {
            max_unused: 0,
            ..NO_REWRITE
        };
        let plan = repo
            .plan_cleanup(&[(Id::of_stored(b"r"), &rec)], vec![], limits)
            .unwrap();
        assert_eq!(plan.repack.len(), 1);
        let lock = repo.lock_exclusive("prune").unwrap();
        storage.fail_next_puts(1, ErrorKind::NoSpace);
        let report = repo.apply_cleanup(&plan, &lock).unwrap();
        assert_eq!(report.repacked, 0);
        assert_eq!(report.not_repacked.len(), 1);
        assert_eq!(report.not_freed, plan.repack[0].unneeded);
        assert!(storage.get(&format::pack_path(&pack.id)).is_ok());
        let index = repo.load_index().unwrap();
        assert_eq!(read_all(&repo, &index, &kept).len(), kept.len());
    }

    #[test]
    fn a_damaged_pack_is_not_rewritten() {
        let (storage, repo) = test_repo();
        let (pack, kept, _) = one_pack(&repo);
        let path = format::pack_path(&pack.id);
        let mut bytes = storage.get(&path).unwrap();
        let last = bytes.len() - 100;
        bytes[last] ^= 1;
        storage.put(&path, &bytes, PutMode::Overwrite).unwrap();
        let (keep, unneeded) = repack_of(&pack, &[kept[0]].into(), pack.size, 0).unwrap();
        let err = repo
            .rewrite_pack(&Repack {
                pack,
                keep,
                unneeded,
            })
            .unwrap_err();
        assert!(err.is_damage(), "{err}");
        assert_eq!(
            storage.list(format::DATA_DIR).unwrap().len(),
            1,
            "nothing written"
        );
    }
}
