//! The WAL archive: one object per archived file, `wal/<system-id>/<timeline>/<name>`
//! (docs/FORMAT.md "WAL archive").
//!
//! A WAL object is a pack of its own (same envelope: wrapped session key,
//! blobs, sealed trailer) whose trailer (kind "wal") names the file and the
//! keyed hash of its whole content. Pushing never overwrites: a second push
//! of the same name succeeds only if the content is the same, which a backup
//! host can tell from the trailer without the identity.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::SystemTime;

use chrono::Utc;

use super::{ReadData, RepoError, Repository, Result};
use crate::codec::{self, BlobEncoder, BlobType, Id, SessionKey};
use crate::format::{self, BlobEntry, WalTrailer};
use crate::pg::wal::{Lsn, Segment, TimelineSwitch, WalFile, parse_history};
use crate::storage::{ErrorKind, PutMode, Tier};

/// WAL files are stored in blobs of at most this size, encoded in parallel.
const PIECE: usize = 4 * 1024 * 1024;

use format::wal_path as wal_object;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    /// The same name with the same content was already archived.
    AlreadyArchived,
}

/// One archived file as a listing shows it.
#[derive(Debug, Clone)]
pub struct ArchivedFile {
    pub name: String,
    pub kind: WalFile,
    pub path: String,
    pub stored_size: u64,
    pub modified: Option<SystemTime>,
}

/// What the archive holds for one cluster.
#[derive(Debug, Default)]
pub struct WalArchive {
    pub files: Vec<ArchivedFile>,
}

/// A run of consecutive segments of one timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRange {
    pub first: Segment,
    pub last: Segment,
}

impl WalArchive {
    /// Archived segments, by timeline, in order.
    pub fn segments(&self, segment_size: u64) -> BTreeMap<u32, BTreeSet<u64>> {
        let mut out: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for f in &self.files {
            if let Some(s) = f.kind.segment(segment_size) {
                out.entry(s.timeline).or_default().insert(s.number);
            }
        }
        out
    }

    /// Per timeline, the runs of consecutive segments (more than one run means gaps).
    pub fn ranges(&self, segment_size: u64) -> BTreeMap<u32, Vec<SegmentRange>> {
        let mut out: BTreeMap<u32, Vec<SegmentRange>> = BTreeMap::new();
        for (tli, numbers) in self.segments(segment_size) {
            let runs = out.entry(tli).or_default();
            for n in numbers {
                let seg = Segment {
                    timeline: tli,
                    number: n,
                };
                match runs.last_mut() {
                    Some(r) if r.last.number + 1 == n => r.last = seg,
                    _ => runs.push(SegmentRange {
                        first: seg,
                        last: seg,
                    }),
                }
            }
        }
        out
    }

    pub fn has_history(&self, timeline: u32) -> bool {
        self.files
            .iter()
            .any(|f| f.kind == WalFile::History { timeline })
    }

    pub fn get(&self, name: &str) -> Option<&ArchivedFile> {
        self.files.iter().find(|f| f.name == name)
    }
}

impl Repository {
    /// Archive one WAL file (`wal-push`). Returns once it is durable.
    pub fn push_wal(&self, system_id: u64, name: &str, content: &[u8]) -> Result<Pushed> {
        if WalFile::parse(name).is_none() {
            return Err(RepoError::Other(format!(
                "{name:?} is not a WAL file name PostgreSQL archives"
            )));
        }
        let path = wal_object(system_id, name);
        let digest = self.meta.blob_id(content);
        if self.has_wal(system_id, name)? {
            return self.compare_archived(&path, name, digest, content.len() as u64);
        }
        let key = SessionKey::random();
        let wrapped = key
            .wrap(&self.recipients)
            .map_err(|e| RepoError::Other(format!("wrapping session key: {e}")))?;
        let level = self.settings.compression_level;
        let pieces: Vec<&[u8]> = content.chunks(PIECE).collect();
        let encoded: Vec<(Id, Vec<u8>)> = std::thread::scope(|s| {
            let handles: Vec<_> = pieces
                .iter()
                .map(|piece| {
                    let key = key.clone();
                    let meta = &self.meta;
                    s.spawn(move || {
                        let id = meta.blob_id(piece);
                        let mut out = Vec::new();
                        BlobEncoder::new(key, level).encode(BlobType::Data, &id, piece, &mut out);
                        (id, out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("WAL encoder panicked"))
                .collect()
        });
        let mut object = format::pack_header(&wrapped);
        let mut blobs = Vec::with_capacity(encoded.len());
        for ((id, stored), piece) in encoded.iter().zip(&pieces) {
            blobs.push(BlobEntry {
                id: *id,
                ty: BlobType::Data,
                offset: object.len() as u64,
                length: stored.len() as u32,
                raw_length: piece.len() as u32,
                group: None,
            });
            object.extend_from_slice(stored);
        }
        let trailer = WalTrailer {
            version: format::FORMAT_VERSION,
            name: name.to_string(),
            size: content.len() as u64,
            content: digest,
            blobs,
            pushed: Utc::now(),
            host: super::hostname(),
        };
        let sealed = self.meta.seal("wal", &super::to_json(&trailer));
        object.extend_from_slice(&format::pack_footer(&sealed));
        match self
            .storage
            .put_tier(&path, &object, PutMode::Create, Tier::Wal)
        {
            Ok(()) => Ok(Pushed::Stored),
            // Someone pushed it meanwhile (PostgreSQL retrying after a timeout).
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                self.compare_archived(&path, name, digest, content.len() as u64)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn compare_archived(&self, path: &str, name: &str, digest: Id, size: u64) -> Result<Pushed> {
        let (trailer, _) = self.read_wal_object(path, name)?;
        if trailer.content == digest && trailer.size == size {
            Ok(Pushed::AlreadyArchived)
        } else {
            Err(RepoError::Other(format!(
                "{name} is already archived in {} with different content ({} bytes pushed from {} at {}); archived WAL is never overwritten; hint: two clusters may be archiving into the same place, or this server's WAL diverged: check archive_command on every server of this repository",
                self.url(),
                trailer.size,
                trailer.host,
                trailer.pushed.format("%Y-%m-%d %H:%M:%S UTC")
            )))
        }
    }

    /// Read and authenticate a WAL object's trailer; the object's bytes too.
    fn read_wal_object(&self, path: &str, name: &str) -> Result<(WalTrailer, Vec<u8>)> {
        let bytes = self.get_object(path)?;
        let env =
            format::parse_pack_envelope(&bytes).map_err(|e| self.corrupt(path, e.to_string()))?;
        let json = self.unseal(path, "wal", env.trailer)?;
        let trailer: WalTrailer =
            serde_json::from_slice(&json).map_err(|e| self.corrupt(path, e.to_string()))?;
        if trailer.name != name {
            return Err(self.corrupt(path, format!("holds {} (moved or replaced)", trailer.name)));
        }
        Ok((trailer, bytes))
    }

    /// The stored bytes of an archived file, read once and checked as
    /// `check_wal` does with `ReadData::Plaintext` (without the identity:
    /// its envelope and sealed trailer only), for a copy to another
    /// repository: a damaged object must not spread.
    pub(crate) fn read_checked_wal_object(&self, path: &str, name: &str) -> Result<Vec<u8>> {
        let (trailer, bytes) = self.read_wal_object(path, name)?;
        if self.can_read_content() {
            // Decoding works in place: on a copy, the stored bytes go on.
            self.decode_wal(path, &trailer, bytes.clone())?;
        }
        Ok(bytes)
    }

    /// Fetch an archived file (`wal-fetch`): `None` if it was never archived.
    /// Everything is authenticated and re-hashed before it is returned.
    pub fn fetch_wal(&self, system_id: u64, name: &str) -> Result<Option<Vec<u8>>> {
        let path = wal_object(system_id, name);
        match self.read_wal_object(&path, name) {
            Ok((trailer, bytes)) => self.decode_wal(&path, &trailer, bytes).map(Some),
            Err(RepoError::Missing { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Decrypt and decompress a WAL object read by `read_wal_object`, and
    /// check the result against its trailer.
    fn decode_wal(&self, path: &str, trailer: &WalTrailer, mut bytes: Vec<u8>) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(trailer.size as usize);
        // Decrypted where it lies: the object is ours, no copy needed.
        self.each_wal_blob(path, trailer, &mut bytes, |key, b, stored| {
            key.decrypt_blob_in_place(b.ty, &b.id, stored, b.raw_length as usize, &mut out)
        })?;
        // One hash of the whole file, not one per piece as well: the sealed
        // trailer names both, and the whole file's covers every piece.
        if out.len() as u64 != trailer.size || self.meta.blob_id(&out) != trailer.content {
            return Err(self.corrupt(path, "content does not match the archived file"));
        }
        Ok(out)
    }

    /// Unwrap a WAL object's session key and hand each of its blobs, bounds
    /// checked, to `f`.
    fn each_wal_blob(
        &self,
        path: &str,
        trailer: &WalTrailer,
        bytes: &mut [u8],
        mut f: impl FnMut(&SessionKey, &BlobEntry, &mut [u8]) -> codec::Result<()>,
    ) -> Result<()> {
        let env =
            format::parse_pack_envelope(bytes).map_err(|e| self.corrupt(path, e.to_string()))?;
        let key = SessionKey::unwrap(env.wrapped_key, self.identities()?).map_err(|e| match e {
            codec::CodecError::NoMatchingIdentity => RepoError::WrongIdentity { url: self.url() },
            e => self.corrupt(path, format!("session key: {e}")),
        })?;
        let blobs_start = env.blobs_start;
        for b in &trailer.blobs {
            let end = b.offset.checked_add(u64::from(b.length));
            let stored = match end {
                Some(end) if b.offset >= blobs_start && end <= bytes.len() as u64 => {
                    &mut bytes[b.offset as usize..end as usize]
                }
                _ => return Err(self.corrupt(path, "blob outside the object")),
            };
            f(&key, b, stored).map_err(|e| match e {
                codec::CodecError::Authentication => {
                    self.corrupt(path, "authentication failed (altered or truncated)")
                }
                e => self.corrupt(path, e.to_string()),
            })?;
        }
        Ok(())
    }

    /// Read one archived file as deep as `depth` says: its trailer is always
    /// authenticated; with the identity, `Stored` authenticates every piece
    /// and `Plaintext` also decompresses and re-hashes the whole file.
    /// Returns the bytes read.
    pub fn check_wal(&self, system_id: u64, name: &str, depth: ReadData) -> Result<u64> {
        let path = wal_object(system_id, name);
        let (trailer, mut bytes) = self.read_wal_object(&path, name)?;
        let n = bytes.len() as u64;
        match depth {
            _ if !self.can_read_content() => {}
            ReadData::No => {}
            ReadData::Stored => {
                self.each_wal_blob(&path, &trailer, &mut bytes, |key, b, stored| {
                    key.authenticate_blob(b.ty, &b.id, stored, b.raw_length as usize)
                })?
            }
            ReadData::Plaintext => {
                self.decode_wal(&path, &trailer, bytes)?;
            }
        }
        Ok(n)
    }

    /// Whether a file is archived (without reading it).
    pub fn has_wal(&self, system_id: u64, name: &str) -> Result<bool> {
        match self.storage.head(&wal_object(system_id, name)) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every archived file of a cluster.
    pub fn list_wal(&self, system_id: u64) -> Result<WalArchive> {
        let prefix = format!("{}{system_id}/", format::WAL_DIR);
        let mut files = Vec::new();
        for obj in self.storage.list(&prefix)? {
            let name = obj.path.rsplit('/').next().unwrap_or("").to_string();
            if let Some(kind) = WalFile::parse(&name) {
                files.push(ArchivedFile {
                    name,
                    kind,
                    path: obj.path,
                    stored_size: obj.size,
                    modified: obj.modified,
                });
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(WalArchive { files })
    }

    /// The clusters (system identifiers) that have archived WAL here.
    pub fn wal_clusters(&self) -> Result<Vec<u64>> {
        let mut ids = BTreeSet::new();
        for obj in self.storage.list(format::WAL_DIR)? {
            let rest = &obj.path[format::WAL_DIR.len()..];
            if let Some(id) = rest.split('/').next().and_then(|s| s.parse().ok()) {
                ids.insert(id);
            }
        }
        Ok(ids.into_iter().collect())
    }
}

/// The highest timeline that a backup on `tli`, consistent at `from`, can
/// follow: one whose history forks off `tli` at or after `from` (or `tli`).
/// A timeline that forked off before the backup is not its descendant:
/// PostgreSQL refuses to follow it.
pub fn latest_descendant(
    tli: u32,
    from: Lsn,
    histories: &HashMap<u32, Vec<TimelineSwitch>>,
) -> u32 {
    histories
        .iter()
        .filter(|(t, h)| **t > tli && h.iter().any(|s| s.parent == tli && s.switch >= from))
        .map(|(t, _)| *t)
        .max()
        .unwrap_or(tli)
}

/// `(timeline, first LSN of it)` from the oldest ancestor to `tli`.
pub fn timeline_chain(tli: u32, histories: &HashMap<u32, Vec<TimelineSwitch>>) -> Vec<(u32, Lsn)> {
    let mut chain = Vec::new();
    let mut begin = Lsn(0);
    if let Some(h) = histories.get(&tli) {
        for s in h {
            chain.push((s.parent, begin));
            begin = s.switch;
        }
    }
    chain.push((tli, begin));
    chain
}

impl Repository {
    /// Every timeline history file of a cluster, parsed.
    pub fn read_histories(
        &self,
        system_id: u64,
        archive: &WalArchive,
    ) -> Result<HashMap<u32, Vec<TimelineSwitch>>> {
        let mut out = HashMap::new();
        for f in &archive.files {
            if let WalFile::History { timeline } = f.kind {
                let bytes =
                    self.fetch_wal(system_id, &f.name)?
                        .ok_or_else(|| RepoError::Missing {
                            url: self.url(),
                            what: f.path.clone(),
                        })?;
                let parsed = parse_history(&String::from_utf8_lossy(&bytes))
                    .map_err(|e| self.corrupt(&f.path, e))?;
                out.insert(timeline, parsed);
            }
        }
        Ok(out)
    }
}

/// Following the timeline chain from segment `from`: the last segment that
/// can be replayed without a gap, the first missing one after it (if any
/// newer segment exists), and when the last one was archived.
pub struct WalWalk {
    pub last: Option<Segment>,
    pub gap: Option<Segment>,
    pub last_modified: Option<std::time::SystemTime>,
}

pub fn walk_wal(archive: &WalArchive, chain: &[(u32, Lsn)], from: u64, seg_size: u64) -> WalWalk {
    let have = archive.segments(seg_size);
    let max = have
        .iter()
        .filter(|(t, _)| chain.iter().any(|(c, _)| c == *t))
        .filter_map(|(_, s)| s.last().copied())
        .max();
    let mut walk = WalWalk {
        last: None,
        gap: None,
        last_modified: None,
    };
    let Some(max) = max else { return walk };
    let mut n = from;
    while n <= max {
        // As PostgreSQL does: the newest timeline of the chain that had
        // begun by this segment and has it.
        let found = chain.iter().rev().find(|(tli, begin)| {
            begin.0 / seg_size <= n && have.get(tli).is_some_and(|s| s.contains(&n))
        });
        match found {
            Some((tli, _)) => {
                let seg = Segment {
                    timeline: *tli,
                    number: n,
                };
                walk.last_modified = archive.get(&seg.name(seg_size)).and_then(|f| f.modified);
                walk.last = Some(seg);
            }
            None => {
                let tli = chain
                    .iter()
                    .rev()
                    .find(|(_, b)| b.0 / seg_size <= n)
                    .map_or(chain[0].0, |c| c.0);
                walk.gap = Some(Segment {
                    timeline: tli,
                    number: n,
                });
                break;
            }
        }
        n += 1;
    }
    walk
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::test_repo;
    use crate::storage::Storage;

    const SYS: u64 = 7_000_000_000_000_000_001;

    fn segment(seed: u8) -> Vec<u8> {
        (0..16 * 1024 * 1024u32)
            .map(|i| (i / 8192) as u8 ^ seed)
            .collect()
    }

    #[test]
    fn push_fetch_round_trip_and_duplicates() {
        let (storage, repo) = test_repo();
        let name = "000000010000000000000003";
        let seg = segment(1);
        assert_eq!(repo.push_wal(SYS, name, &seg).unwrap(), Pushed::Stored);
        assert_eq!(
            repo.push_wal(SYS, name, &seg).unwrap(),
            Pushed::AlreadyArchived
        );
        let err = repo
            .push_wal(SYS, name, &segment(2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("different content"), "{err}");
        assert_eq!(repo.fetch_wal(SYS, name).unwrap().unwrap(), seg);
        assert_eq!(
            repo.fetch_wal(SYS, "000000010000000000000004").unwrap(),
            None
        );
        // Another cluster's namespace is separate.
        assert_eq!(repo.fetch_wal(SYS + 1, name).unwrap(), None);
        let listed = repo.list_wal(SYS).unwrap();
        assert_eq!(listed.files.len(), 1);
        assert_eq!(repo.wal_clusters().unwrap(), vec![SYS]);
        // Stored compressed and encrypted.
        let stored = storage.get(&wal_object(SYS, name)).unwrap();
        assert!(stored.len() < seg.len() / 4);
        assert!(!stored.windows(64).any(|w| seg[..64] == *w));
    }

    #[test]
    fn a_moved_or_altered_object_is_refused() {
        let (storage, repo) = test_repo();
        let a = "000000010000000000000003";
        let b = "000000010000000000000004";
        repo.push_wal(SYS, a, &segment(1)).unwrap();
        let bytes = storage.get(&wal_object(SYS, a)).unwrap();
        storage
            .put(&wal_object(SYS, b), &bytes, PutMode::Create)
            .unwrap();
        let err = repo.fetch_wal(SYS, b).unwrap_err().to_string();
        assert!(err.contains("moved or replaced"), "{err}");
        let mut altered = bytes.clone();
        altered[1000] ^= 1;
        storage
            .put(&wal_object(SYS, a), &altered, PutMode::Overwrite)
            .unwrap();
        let err = repo.fetch_wal(SYS, a).unwrap_err().to_string();
        assert!(err.contains("authentication failed"), "{err}");
    }

    /// What `copy` sends on: exactly the stored bytes, once they check out.
    #[test]
    fn a_copy_gets_the_stored_bytes_only_intact() {
        let (storage, repo) = test_repo();
        let a = "000000010000000000000003";
        repo.push_wal(SYS, a, &segment(1)).unwrap();
        let path = wal_object(SYS, a);
        let stored = storage.get(&path).unwrap();
        assert!(repo.read_checked_wal_object(&path, a).unwrap() == stored);
        let mut altered = stored;
        altered[1000] ^= 1;
        storage.put(&path, &altered, PutMode::Overwrite).unwrap();
        let err = repo
            .read_checked_wal_object(&path, a)
            .unwrap_err()
            .to_string();
        assert!(err.contains("authentication failed"), "{err}");
    }

    #[test]
    fn ranges_show_gaps() {
        let (_storage, repo) = test_repo();
        for n in [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000005",
            "00000002.history",
            "000000020000000000000005",
        ] {
            repo.push_wal(SYS, n, b"x").unwrap();
        }
        let archive = repo.list_wal(SYS).unwrap();
        let ranges = archive.ranges(16 * 1024 * 1024);
        assert_eq!(ranges[&1].len(), 2);
        assert_eq!(ranges[&1][0].last.number, 2);
        assert_eq!(ranges[&2].len(), 1);
        assert!(archive.has_history(2));
        assert!(repo.push_wal(SYS, "../config", b"x").is_err());
    }
}
