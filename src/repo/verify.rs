//! Checking a repository: every backup's objects exist with the right size;
//! with [`ReadData::Stored`] every stored byte is read and authenticated, with
//! [`ReadData::Plaintext`] every blob is also decompressed and re-hashed to its
//! id. Every problem is reported (not only the first), with the backups it
//! affects.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use serde::Serialize;

use super::{Damage, Repository, Result};
use crate::codec::{CodecError, Id, SessionKey};
use crate::format::{self, BackupRecord, BlobEntry, PackEntry};

/// How much of the stored data `verify` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadData {
    /// Presence and sizes only.
    #[default]
    No,
    /// Every stored byte (`--read-data`): each pack's hash against its name
    /// and its trailer against the index; with the identity, every blob
    /// authenticated (AEAD) and its declared length checked. Proves the
    /// stored bytes are the ones written, at the speed of reading them.
    Stored,
    /// `Stored`, and every blob decompressed and re-hashed to its id
    /// (`--read-data --decompress`): also proves that what was written is
    /// the content the backups name. CPU-bound: every byte of plaintext.
    Plaintext,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The object (or blob) that is wrong.
    pub object: String,
    pub problem: String,
    /// Backups that cannot be restored because of it.
    pub backups: Vec<Id>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupHealth {
    pub id: Id,
    pub target: String,
    pub started: chrono::DateTime<chrono::Utc>,
    pub finished: chrono::DateTime<chrono::Utc>,
    pub ok: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Oldest first.
    pub backups: Vec<BackupHealth>,
    pub problems: Vec<Problem>,
    pub index_files: usize,
    pub packs: usize,
    pub pack_bytes: u64,
    /// Packs no index lists and no backup needs: what interrupted backups
    /// left; prune removes them.
    pub leftover_packs: usize,
    /// Whether packs were read in full.
    pub read_data: bool,
    /// Whether every blob was authenticated (needs the identity).
    pub blobs_authenticated: bool,
    /// Whether every blob was also decompressed and re-hashed to its id.
    pub content_checked: bool,
    pub bytes_read: u64,
    /// Packs in an archive storage class (S3 Glacier) that `read_data` could
    /// not read; their presence and size were checked.
    pub archived_packs: usize,
}

impl Repository {
    pub fn verify(&self, depth: ReadData, progress: &(dyn Fn(u64) + Sync)) -> Result<VerifyReport> {
        // What the blobs get: without the identity, nothing beyond the packs.
        let blobs = if self.can_read_content() {
            depth
        } else {
            ReadData::No
        };
        let read_data = depth != ReadData::No;
        let mut report = VerifyReport {
            read_data,
            blobs_authenticated: blobs != ReadData::No,
            content_checked: blobs == ReadData::Plaintext,
            ..VerifyReport::default()
        };
        let mut problems: Vec<Problem> = Vec::new();
        let damage = |d: Damage, backups: Vec<Id>| Problem {
            object: d.object,
            problem: d.problem,
            backups,
        };

        let scan = self.scan_backups()?;
        for d in scan.damaged {
            let id = d.object[format::BACKUPS_DIR.len()..].parse().ok();
            problems.push(damage(d, id.into_iter().collect()));
        }
        let pins = self.list_pins()?;
        problems.extend(pins.damaged.into_iter().map(|d| damage(d, Vec::new())));
        let (files, damaged_index) = self.load_index_files()?;
        report.index_files = files.len() + damaged_index.len();
        problems.extend(damaged_index.into_iter().map(|d| damage(d, Vec::new())));

        let stored = self.list_packs()?;
        report.packs = stored.len();
        report.pack_bytes = stored.values().map(|o| o.size).sum();

        // Which pack holds each blob, per the index; then packs no index lists.
        let mut packs: HashMap<Id, PackEntry> = HashMap::new();
        for (_, f) in files {
            for p in f.packs {
                packs.entry(p.id).or_insert(p);
            }
        }
        let indexed: HashSet<Id> = packs.keys().copied().collect();
        let unindexed = self.read_unindexed(&stored, &indexed)?;
        report.archived_packs += unindexed.archived.len();
        problems.extend(
            unindexed
                .unreadable
                .into_iter()
                .map(|(_, d)| damage(d, Vec::new())),
        );
        let unindexed: HashMap<Id, PackEntry> =
            unindexed.packs.into_iter().map(|p| (p.id, p)).collect();
        let locate = |packs: &HashMap<Id, PackEntry>| -> HashMap<Id, Id> {
            packs
                .values()
                .flat_map(|p| p.blobs.iter().map(move |b| (b.id, p.id)))
                .collect()
        };
        let in_index = locate(&packs);
        let in_unindexed = locate(&unindexed);

        // Per backup: which packs it needs, and blobs no index lists.
        let mut users: HashMap<Id, BTreeSet<Id>> = HashMap::new();
        let mut needed_unindexed: HashSet<Id> = HashSet::new();
        for (bid, rec) in &scan.records {
            let (mut lost, mut orphaned) = (0usize, BTreeSet::new());
            for c in chunks(rec) {
                match in_index.get(c) {
                    Some(pack) => {
                        users.entry(*pack).or_default().insert(*bid);
                    }
                    None => match in_unindexed.get(c) {
                        Some(pack) => {
                            orphaned.insert(*pack);
                            needed_unindexed.insert(*pack);
                        }
                        None => lost += 1,
                    },
                }
            }
            if lost > 0 {
                problems.push(Problem {
                    object: format!("backup {}", bid.short()),
                    problem: format!(
                        "{lost} of its blobs are in no index and no pack: the data is lost"
                    ),
                    backups: vec![*bid],
                });
            }
            for pack in orphaned {
                problems.push(Problem {
                    object: format::pack_path(&pack),
                    problem: "holds blobs of this backup but no index lists it (a lost or damaged index); `lifeboat prune` re-indexes it".into(),
                    backups: vec![*bid],
                });
            }
        }
        report.leftover_packs = unindexed.len() - needed_unindexed.len();

        // Every indexed pack: present, the right size, and with read_data, intact.
        let affected = |pack: &Id| -> Vec<Id> {
            users
                .get(pack)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default()
        };
        let mut to_read: Vec<&PackEntry> = Vec::new();
        let mut ids: Vec<&Id> = packs.keys().collect();
        ids.sort();
        for id in ids {
            let entry = &packs[id];
            let path = format::pack_path(id);
            match stored.get(id).map(|o| o.size) {
                None => problems.push(Problem {
                    object: path,
                    problem: "missing".into(),
                    backups: affected(id),
                }),
                Some(size) if size != entry.size => problems.push(Problem {
                    object: path,
                    problem: format!(
                        "{size} bytes, the index says {} (truncated or altered)",
                        entry.size
                    ),
                    backups: affected(id),
                }),
                Some(_) if read_data && stored[id].is_archived() => {
                    match self.storage.archive_state(&path)? {
                        crate::storage::ArchiveState::Readable => to_read.push(entry),
                        _ => report.archived_packs += 1,
                    }
                }
                Some(_) => to_read.push(entry),
            }
        }
        if read_data {
            // Largest first: the threads then run out of work at about the
            // same time, not one of them alone on a big pack at the end.
            to_read.sort_by_key(|p| std::cmp::Reverse(p.size));
            let (bytes, bad) = self.read_packs(&to_read, blobs, progress);
            report.bytes_read = bytes;
            for (pack, problem) in bad {
                problems.push(Problem {
                    object: format::pack_path(&pack),
                    problem,
                    backups: affected(&pack),
                });
            }
        }

        let (wal_problems, wal_bytes) = self.verify_wal(&scan.records, depth)?;
        problems.extend(wal_problems);
        report.bytes_read += wal_bytes;

        let bad: HashSet<Id> = problems
            .iter()
            .flat_map(|p| p.backups.iter().copied())
            .collect();
        report.backups = scan
            .records
            .iter()
            .map(|(id, r)| BackupHealth {
                id: *id,
                target: r.target.clone(),
                started: r.started,
                finished: r.finished,
                ok: !bad.contains(id),
            })
            .collect();
        report.problems = problems;
        Ok(report)
    }

    /// Physical backups: the WAL from each backup's start must be archived
    /// without a gap up to its stop (or it cannot be restored at all) and on
    /// to the newest archived segment (or the window has a hole). With
    /// `depth` other than `No`, every archived file is read too.
    fn verify_wal(
        &self,
        records: &[(Id, BackupRecord)],
        depth: ReadData,
    ) -> Result<(Vec<Problem>, u64)> {
        use crate::pg::wal::{Lsn, Segment};
        let mut problems = Vec::new();
        let mut bytes = 0;
        // Each cluster's archive and timeline histories, read once.
        let mut clusters: BTreeMap<u64, (super::WalArchive, _)> = BTreeMap::new();
        let mut gaps: BTreeSet<String> = BTreeSet::new();
        for (id, rec) in records {
            let Some(p) = &rec.physical else { continue };
            if let std::collections::btree_map::Entry::Vacant(slot) =
                clusters.entry(p.system_identifier)
            {
                let archive = self.list_wal(p.system_identifier)?;
                let histories = match self.read_histories(p.system_identifier, &archive) {
                    Ok(h) => h,
                    Err(e) if e.is_damage() => {
                        problems.push(Problem {
                            object: format!("{}{}/", format::WAL_DIR, p.system_identifier),
                            problem: format!("a timeline history file cannot be read: {e}"),
                            backups: Vec::new(),
                        });
                        HashMap::new()
                    }
                    Err(e) => return Err(e),
                };
                slot.insert((archive, histories));
            }
            let (archive, histories) = &clusters[&p.system_identifier];
            let seg = p.wal_segment_size;
            let chain = super::timeline_chain(
                super::latest_descendant(p.timeline, p.stop_lsn, histories),
                histories,
            );
            let start = Segment::of(p.timeline, p.start_lsn, seg);
            let stop = Segment::of(p.timeline, Lsn(p.stop_lsn.0.saturating_sub(1)), seg);
            let walk = super::walk_wal(archive, &chain, start.number, seg);
            if walk.last.is_none_or(|l| l.number < stop.number) {
                let missing = walk.gap.unwrap_or(start);
                problems.push(Problem {
                    object: format::wal_path(p.system_identifier, &missing.name(seg)),
                    problem: "missing: the backup needs this WAL to become consistent".into(),
                    backups: vec![*id],
                });
            } else if let Some(g) = walk.gap
                && gaps.insert(g.name(seg))
            {
                problems.push(Problem {
                    object: format::wal_path(p.system_identifier, &g.name(seg)),
                    problem: "missing: a gap in the archived WAL; point-in-time restores cannot go past it".into(),
                    backups: Vec::new(),
                });
            }
        }
        if depth != ReadData::No {
            for (system_id, (archive, _)) in &clusters {
                for f in &archive.files {
                    match self.check_wal(*system_id, &f.name, depth) {
                        Ok(n) => bytes += n,
                        Err(e) if e.is_damage() => problems.push(Problem {
                            object: f.path.clone(),
                            problem: Damage::from_error(&f.path, &e).problem,
                            backups: Vec::new(),
                        }),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok((problems, bytes))
    }

    /// Read packs in full on a few threads: hash, envelope, trailer against the
    /// index and, as `blobs` says, every blob authenticated or also re-hashed.
    fn read_packs(
        &self,
        packs: &[&PackEntry],
        blobs: ReadData,
        progress: &(dyn Fn(u64) + Sync),
    ) -> (u64, Vec<(Id, String)>) {
        let queue = Mutex::new(packs.iter());
        let bad = Mutex::new(Vec::new());
        let bytes = std::sync::atomic::AtomicU64::new(0);
        // One more thread than cores: while one waits for the disk (or S3),
        // the others decode.
        let threads = std::thread::available_parallelism()
            .map_or(3, |n| n.get() + 1)
            .clamp(3, 8);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let mut keys: HashMap<Vec<u8>, SessionKey> = HashMap::new();
                    // Reused from pack to pack: fresh multi-MiB buffers cost a
                    // page fault per 4 KiB.
                    let (mut plain, mut stored) = (Vec::new(), Vec::new());
                    loop {
                        let Some(entry) = queue.lock().expect("queue").next() else {
                            return;
                        };
                        let (n, result) =
                            self.check_pack(entry, blobs, &mut keys, &mut stored, &mut plain);
                        let total = bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
                        progress(total);
                        if let Err(problem) = result {
                            bad.lock().expect("problems").push((entry.id, problem));
                        }
                    }
                });
            }
        });
        let mut bad = bad.into_inner().expect("problems");
        bad.sort();
        (bytes.into_inner(), bad)
    }

    fn check_pack(
        &self,
        entry: &PackEntry,
        blobs: ReadData,
        keys: &mut HashMap<Vec<u8>, SessionKey>,
        bytes: &mut Vec<u8>,
        plain: &mut Vec<u8>,
    ) -> (u64, std::result::Result<(), String>) {
        let path = format::pack_path(&entry.id);
        match self.storage.get_into(&path, bytes) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return (0, Err("missing".into())),
            Err(e) => return (0, Err(format!("cannot be read: {e}"))),
        }
        let n = bytes.len() as u64;
        if Id::of_stored(bytes) != entry.id {
            return (
                n,
                Err("content does not match its name (altered or truncated)".into()),
            );
        }
        let result = (|| {
            let env = format::parse_pack_envelope(bytes).map_err(|e| e.to_string())?;
            // Restores unwrap the session key the index holds, not the
            // pack's own: they must be the same.
            if crate::codec::b64_encode(env.wrapped_key) != entry.session_key {
                return Err("its header and the index disagree about its session key".into());
            }
            let json = self
                .meta
                .unseal("pack", env.trailer)
                .map_err(|e| format!("trailer cannot be decrypted ({e})"))?;
            let trailer: format::PackTrailer =
                serde_json::from_slice(&json).map_err(|e| format!("trailer: {e}"))?;
            let listed = in_pack_order(&entry.blobs);
            let held = in_pack_order(&trailer.blobs);
            if listed != held {
                return Err("its trailer and the index disagree about its blobs".to_string());
            }
            if blobs == ReadData::No {
                return Ok(());
            }
            let key = match keys.get(env.wrapped_key) {
                Some(k) => k.clone(),
                None => {
                    let ids = self.identities().map_err(|e| e.to_string())?;
                    let k = SessionKey::unwrap(env.wrapped_key, ids)
                        .map_err(|e| format!("session key: {e}"))?;
                    keys.insert(env.wrapped_key.to_vec(), k.clone());
                    k
                }
            };
            if blobs == ReadData::Stored {
                return authenticate_blobs(&key, &held, bytes);
            }
            self.decode_blobs(&key, &held, bytes, plain)
        })();
        (n, result)
    }

    /// Decrypt every blob of a pack's stored `bytes` where it lies (a group
    /// once) and re-hash it to its id: proves the content is what the
    /// backups name, whoever made the session key. `blobs` in pack order.
    pub(super) fn decode_blobs(
        &self,
        key: &SessionKey,
        blobs: &[&BlobEntry],
        bytes: &mut [u8],
        plain: &mut Vec<u8>,
    ) -> std::result::Result<(), String> {
        let mut group_at: Option<u64> = None;
        for b in blobs {
            let range = blob_range(b, bytes.len())?;
            let stored = &mut bytes[range];
            let matches = |plain: &[u8]| {
                plain.len() == b.raw_length as usize && self.meta.blob_id(plain) == b.id
            };
            let ok = match b.group {
                None => {
                    plain.clear();
                    group_at = None;
                    key.decrypt_blob_in_place(b.ty, &b.id, stored, b.raw_length as usize, plain)
                        .map_err(|e| blob_failed(b, e))?;
                    matches(plain)
                }
                Some(g) => {
                    // The group's members share its stored bytes: decoded
                    // at its first member, which is where they lie.
                    if group_at != Some(b.offset) {
                        plain.clear();
                        key.decrypt_group_in_place(b.ty, stored, g.size as usize, plain)
                            .map_err(|e| blob_failed(b, e))?;
                        group_at = Some(b.offset);
                    }
                    in_group(b)?;
                    matches(g.member(plain, b.raw_length).unwrap_or_default())
                }
            };
            if !ok {
                return Err(format!(
                    "blob {}: content does not match its id",
                    b.id.short()
                ));
            }
        }
        Ok(())
    }
}

/// A pack's blobs in the order they lie in it (a group's members by their
/// place in the group).
pub(super) fn in_pack_order(blobs: &[BlobEntry]) -> Vec<&BlobEntry> {
    let mut sorted: Vec<&BlobEntry> = blobs.iter().collect();
    sorted.sort_by_key(|b| (b.offset, b.group.map(|g| g.start)));
    sorted
}

/// Authenticate every blob of a pack's stored `bytes` (a group once) without
/// deciphering it: the same accept or reject as decrypting it. `blobs` in
/// pack order ([`in_pack_order`]).
pub(super) fn authenticate_blobs(
    key: &SessionKey,
    blobs: &[&BlobEntry],
    bytes: &[u8],
) -> std::result::Result<(), String> {
    let mut group_at: Option<u64> = None;
    for b in blobs {
        let stored = &bytes[blob_range(b, bytes.len())?];
        match b.group {
            None => {
                group_at = None;
                key.authenticate_blob(b.ty, &b.id, stored, b.raw_length as usize)
                    .map_err(|e| blob_failed(b, e))?;
            }
            Some(g) => {
                if group_at != Some(b.offset) {
                    key.authenticate_group(b.ty, stored, g.size as usize)
                        .map_err(|e| blob_failed(b, e))?;
                    group_at = Some(b.offset);
                }
                in_group(b)?;
            }
        }
    }
    Ok(())
}

/// Where blob `b` lies in a pack of `len` bytes.
fn blob_range(b: &BlobEntry, len: usize) -> std::result::Result<std::ops::Range<usize>, String> {
    let end = b.offset.checked_add(u64::from(b.length));
    match end {
        Some(end) if end <= len as u64 => Ok(b.offset as usize..end as usize),
        _ => Err(format!("blob {}: lies outside the pack", b.id.short())),
    }
}

/// A group member must lie inside its group.
fn in_group(b: &BlobEntry) -> std::result::Result<(), String> {
    match b.group {
        Some(g) if u64::from(g.start) + u64::from(b.raw_length) > u64::from(g.size) => {
            Err(format!("blob {}: lies outside its group", b.id.short()))
        }
        _ => Ok(()),
    }
}

fn blob_failed(b: &BlobEntry, e: CodecError) -> String {
    match e {
        CodecError::Authentication => format!("blob {}: authentication failed", b.id.short()),
        e => format!("blob {}: {e}", b.id.short()),
    }
}

fn chunks(rec: &BackupRecord) -> impl Iterator<Item = &Id> {
    rec.blobs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Effort;
    use crate::repo::{test_block as block, test_repo};
    use crate::storage::{PutMode, Storage};

    fn store(repo: &Repository, seeds: std::ops::Range<u32>) -> Vec<Id> {
        let s = repo.start_session().unwrap();
        let ids = s
            .store_blobs(seeds.map(block).collect(), Effort::Fast)
            .unwrap();
        s.finish().unwrap();
        ids
    }

    fn problems(repo: &Repository, depth: ReadData) -> Vec<String> {
        let r = repo.verify(depth, &|_| {}).unwrap();
        r.problems
            .iter()
            .map(|p| format!("{}: {}", p.object, p.problem))
            .collect()
    }

    fn only_index(storage: &dyn Storage, repo: &Repository, packs: Vec<PackEntry>) {
        for o in storage.list(format::INDEX_DIR).unwrap() {
            storage.delete(&o.path).unwrap();
        }
        repo.write_index(packs).unwrap();
    }

    /// A pack made from a genuine one by someone without the keys: one blob
    /// altered, the sealed trailer kept, stored under its new hash, the
    /// original and its index gone. `prune` re-indexes packs no index lists
    /// from their own trailers, so the hash then matches an indexed name:
    /// only the blob's tag shows the alteration.
    #[test]
    fn read_data_finds_an_altered_blob_in_a_pack_under_a_new_name() {
        let (storage, repo) = test_repo();
        store(&repo, 0..3);
        assert_eq!(problems(&repo, ReadData::Stored), Vec::<String>::new());
        let index = repo.load_index_files().unwrap().0;
        let entry = index[0].1.packs[0].clone();
        let old = format::pack_path(&entry.id);
        let mut bytes = storage.get(&old).unwrap();
        bytes[(entry.blobs[1].offset + 40) as usize] ^= 1;
        let forged = Id::of_stored(&bytes);
        storage
            .put(&format::pack_path(&forged), &bytes, PutMode::Create)
            .unwrap();
        storage.delete(&old).unwrap();
        let reindexed = repo.read_pack_entry(&format::pack_path(&forged)).unwrap();
        only_index(storage.as_ref(), &repo, vec![reindexed]);

        let found = problems(&repo, ReadData::Stored);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains(&forged.to_hex()) && found[0].contains("authentication failed"),
            "{found:?}"
        );
    }

    /// The identity must open every pack's session key, and the index's copy
    /// of it (what restores use) must be the pack's own.
    #[test]
    fn read_data_finds_session_keys_the_identity_cannot_open_or_the_index_misstates() {
        let (storage, mut repo) = test_repo();
        store(&repo, 0..3);
        // Packs written for a recipient whose identity this host lacks (a
        // key rotation gone wrong): every byte is intact, the key is not.
        repo.recipients = vec![age::x25519::Identity::generate().to_public()];
        store(&repo, 10..12);
        let found = problems(&repo, ReadData::Stored);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("session key"), "{found:?}");
        assert_eq!(problems(&repo, ReadData::No), Vec::<String>::new());

        // An index whose copy of a pack's session key is another pack's.
        let mut packs: Vec<PackEntry> = repo
            .load_index_files()
            .unwrap()
            .0
            .into_iter()
            .flat_map(|(_, f)| f.packs)
            .collect();
        packs.sort_by_key(|p| p.id);
        let other = packs[1].session_key.clone();
        packs[0].session_key = other;
        let misstated = packs[0].id;
        only_index(storage.as_ref(), &repo, packs);
        let found = problems(&repo, ReadData::Stored);
        assert!(
            found
                .iter()
                .any(|p| p.contains(&misstated.to_hex())
                    && p.contains("disagree about its session key")),
            "{found:?}"
        );
    }
}
