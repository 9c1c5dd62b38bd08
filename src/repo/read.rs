//! Reading a stream back: fetch blobs in parallel, authenticate, decompress,
//! re-hash, and hand them out in order. Any missing or altered piece is an error
//! naming the pack and blob.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{BlobLocation, Index, RepoError, Repository, Result};
use crate::codec::{self, Id, SessionKey};
use crate::format::{self, Stream};
use crate::storage::ErrorKind;

/// How many blobs may be fetched ahead of the reader (each at most 4 MiB).
const WINDOW: usize = 8;

type Fetched = (usize, Result<Vec<u8>>);

/// A `Read` over a stream's plaintext. Errors surface as `io::Error` wrapping a
/// `RepoError` (see `StreamReader::take_error` for the typed one).
pub struct StreamReader {
    total: u64,
    delivered: u64,
    chunks: usize,
    next_job: usize,
    next_out: usize,
    jobs: Option<Sender<(usize, Id, BlobLocation)>>,
    locations: Vec<(Id, BlobLocation)>,
    results: Receiver<Fetched>,
    pending: BTreeMap<usize, Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    /// Bytes to drop before the first one delivered, and how many to deliver
    /// at most (`read_stream_range`).
    skip: u64,
    remaining: u64,
    workers: Vec<JoinHandle<()>>,
    error: Option<RepoError>,
}

struct Fetcher {
    repo_url: String,
    storage: Arc<dyn crate::storage::Storage>,
    /// Repositories with the same keys, tried in turn for a pack the main one
    /// cannot give (missing, damaged, unreachable).
    mirrors: Vec<Arc<super::Mirror>>,
    /// Packs already read from a mirror (warned about once).
    fell_back: Mutex<std::collections::HashSet<Id>>,
    meta: crate::codec::MetadataKey,
    identities: Arc<super::Identities>,
    wrapped: HashMap<Id, Vec<u8>>,
    keys: Mutex<HashMap<Id, SessionKey>>,
}

impl Fetcher {
    fn corrupt(&self, what: String, detail: &str) -> RepoError {
        RepoError::Corrupt {
            url: self.repo_url.clone(),
            what,
            detail: detail.into(),
        }
    }

    fn session_key(&self, pack: &Id) -> Result<SessionKey> {
        let wrapped = self
            .wrapped
            .get(pack)
            .expect("locations come from the index");
        self.unwrap_key(pack, wrapped)
    }

    /// `pack`'s session key from its wrapped form (cached by pack id).
    fn unwrap_key(&self, pack: &Id, wrapped: &[u8]) -> Result<SessionKey> {
        if let Some(k) = self.keys.lock().expect("key cache").get(pack) {
            return Ok(k.clone());
        }
        let k = SessionKey::unwrap(wrapped, &self.identities).map_err(|e| match e {
            crate::codec::CodecError::NoMatchingIdentity => RepoError::WrongIdentity {
                url: self.repo_url.clone(),
            },
            e => self.corrupt(format::pack_path(pack), &format!("session key: {e}")),
        })?;
        self.keys
            .lock()
            .expect("key cache")
            .insert(*pack, k.clone());
        Ok(k)
    }

    /// A blob from the main repository, else from the first mirror that has
    /// it whole. The main repository's error is the one reported.
    fn fetch(&self, id: &Id, loc: &BlobLocation) -> Result<Vec<u8>> {
        let err = match self.fetch_from(self.storage.as_ref(), id, loc) {
            Ok(plain) => return Ok(plain),
            Err(e @ RepoError::WrongIdentity { .. }) => return Err(e),
            Err(e) => e,
        };
        for mirror in &self.mirrors {
            if let Some(plain) = self.fetch_from_mirror(mirror, id, loc) {
                if self
                    .fell_back
                    .lock()
                    .expect("fallback set")
                    .insert(loc.pack)
                {
                    eprintln!(
                        "warning: {err}; read {} from {} instead",
                        format::pack_path(&loc.pack),
                        mirror.storage().url()
                    );
                }
                return Ok(plain);
            }
        }
        Err(err)
    }

    /// A blob from a mirror: from the same pack, else from wherever the
    /// mirror's own index puts it (a prune there may have rewritten the pack).
    fn fetch_from_mirror(&self, m: &super::Mirror, id: &Id, loc: &BlobLocation) -> Option<Vec<u8>> {
        if let Ok(plain) = self.fetch_from(m.storage(), id, loc) {
            return Some(plain);
        }
        let index = m.index()?;
        let there = index.get(id).filter(|l| l.pack != loc.pack)?;
        check_bounds(&self.repo_url, id, there).ok()?;
        let key = self
            .unwrap_key(&there.pack, index.wrapped_key(&there.pack)?)
            .ok()?;
        let what = || format::pack_path(&there.pack);
        let range = there.offset..there.offset + there.length as u64;
        let stored = self
            .get_range(m.storage(), &there.pack, range, &what)
            .ok()?;
        match self.decode_stored_with(id, there, &stored, key).ok()? {
            Decoded::Blob(plain) => Some(plain),
            Decoded::Group(plain) => self.member(id, there, &plain).ok(),
        }
    }

    fn fetch_from(
        &self,
        storage: &dyn crate::storage::Storage,
        id: &Id,
        loc: &BlobLocation,
    ) -> Result<Vec<u8>> {
        let what = || format!("{} (blob {})", format::pack_path(&loc.pack), id.short());
        let range = loc.offset..loc.offset + loc.length as u64;
        let stored = self.get_range(storage, &loc.pack, range, &what)?;
        self.decode(id, loc, &stored)
    }

    /// Bytes `range` of a pack; `what` names the blob(s) for messages.
    fn get_range(
        &self,
        storage: &dyn crate::storage::Storage,
        pack: &Id,
        range: std::ops::Range<u64>,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<u8>> {
        let path = format::pack_path(pack);
        storage.get_range(&path, range).map_err(|e| match e.kind {
            ErrorKind::NotFound => RepoError::Missing {
                url: self.repo_url.clone(),
                what: path.clone(),
            },
            ErrorKind::Other if e.message.contains("short read") => {
                self.corrupt(what(), "truncated")
            }
            ErrorKind::Archived => RepoError::Archived {
                url: self.repo_url.clone(),
                what: path.clone(),
            },
            _ => e.into(),
        })
    }

    /// Authenticate, decompress and re-hash one stored blob (`stored` is its
    /// group's stored bytes if it is in one).
    fn decode(&self, id: &Id, loc: &BlobLocation, stored: &[u8]) -> Result<Vec<u8>> {
        match self.decode_stored(id, loc, stored)? {
            Decoded::Blob(plain) => Ok(plain),
            Decoded::Group(plain) => self.member(id, loc, &plain),
        }
    }

    /// Authenticate and decompress what `loc` points at: the blob, or its
    /// whole group (members are then cut out with `member`).
    fn decode_stored(&self, id: &Id, loc: &BlobLocation, stored: &[u8]) -> Result<Decoded> {
        self.decode_stored_with(id, loc, stored, self.session_key(&loc.pack)?)
    }

    fn decode_stored_with(
        &self,
        id: &Id,
        loc: &BlobLocation,
        stored: &[u8],
        key: SessionKey,
    ) -> Result<Decoded> {
        let what = || format!("{} (blob {})", format::pack_path(&loc.pack), id.short());
        let failed = |_| self.corrupt(what(), "authentication failed (altered or truncated)");
        let Some(g) = loc.group else {
            let plain = key
                .decrypt_blob(loc.ty, id, stored, loc.raw_length as usize)
                .map_err(failed)?;
            if plain.len() != loc.raw_length as usize || self.meta.blob_id(&plain) != *id {
                return Err(self.corrupt(what(), "content does not match its id"));
            }
            return Ok(Decoded::Blob(plain));
        };
        let plain = key
            .decrypt_group(loc.ty, stored, g.size as usize)
            .map_err(failed)?;
        Ok(Decoded::Group(plain))
    }

    /// One member of a decoded group, re-hashed to its id.
    fn member(&self, id: &Id, loc: &BlobLocation, group: &[u8]) -> Result<Vec<u8>> {
        let g = loc.group.expect("a group member");
        match g.member(group, loc.raw_length) {
            Some(plain) if self.meta.blob_id(plain) == *id => Ok(plain.to_vec()),
            _ => Err(self.corrupt(
                format!("{} (blob {})", format::pack_path(&loc.pack), id.short()),
                "content does not match its id",
            )),
        }
    }
}

enum Decoded {
    Blob(Vec<u8>),
    Group(Vec<u8>),
}

impl Repository {
    /// Open a stream for reading. Fails at once if a blob is not in the index.
    pub fn read_stream(&self, index: &Index, stream: &Stream) -> Result<StreamReader> {
        let identities = Arc::clone(self.identities()?);
        let mut locations = Vec::with_capacity(stream.chunks.len());
        let mut wrapped = HashMap::new();
        for id in &stream.chunks {
            let loc = self.locate(index, stream, id)?;
            self.check_bounds(id, loc)?;
            wrapped.entry(loc.pack).or_insert_with(|| {
                index
                    .wrapped_key(&loc.pack)
                    .expect("indexed pack has a key")
                    .to_vec()
            });
            locations.push((*id, *loc));
        }
        let fetcher = Arc::new(self.fetcher(identities, wrapped));
        let (job_tx, job_rx) = channel::<(usize, Id, BlobLocation)>();
        let (res_tx, res_rx) = channel::<Fetched>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        // Remote stores need requests in flight to hide their latency, beyond
        // what the CPU count suggests; the window bounds memory either way.
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(self.storage.concurrency())
            .clamp(2, WINDOW);
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&job_rx);
                let tx = res_tx.clone();
                let f = Arc::clone(&fetcher);
                std::thread::spawn(move || {
                    loop {
                        let job = rx.lock().expect("job queue").recv();
                        let Ok((seq, id, loc)) = job else { return };
                        if tx.send((seq, f.fetch(&id, &loc))).is_err() {
                            return;
                        }
                    }
                })
            })
            .collect();
        let mut r = StreamReader {
            total: stream.size,
            delivered: 0,
            chunks: locations.len(),
            next_job: 0,
            next_out: 0,
            jobs: Some(job_tx),
            locations,
            results: res_rx,
            pending: BTreeMap::new(),
            current: Vec::new(),
            pos: 0,
            skip: 0,
            remaining: u64::MAX,
            workers,
            error: None,
        };
        for _ in 0..WINDOW {
            r.issue();
        }
        Ok(r)
    }
}

impl Repository {
    /// A fetcher for the packs whose wrapped session keys `wrapped` holds.
    fn fetcher(
        &self,
        identities: Arc<super::Identities>,
        wrapped: HashMap<Id, Vec<u8>>,
    ) -> Fetcher {
        Fetcher {
            repo_url: self.url(),
            storage: Arc::clone(&self.storage),
            mirrors: self.mirrors.clone(),
            fell_back: Mutex::new(Default::default()),
            meta: self.meta.clone(),
            identities,
            wrapped,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The index is authenticated, but whoever holds the metadata key (a
    /// backup host) can write one, and a bug can too. Lengths beyond the
    /// format's blob bound would make a fetcher allocate up to 4 GiB per
    /// blob, so refuse them before fetching anything.
    fn check_bounds(&self, id: &Id, loc: &BlobLocation) -> Result<()> {
        check_bounds(&self.url(), id, loc)
    }

    /// Read each of `ids` once, pack by pack: blobs that lie close together in
    /// a pack come in one ranged read (up to 8 MiB), so restoring a physical
    /// backup's hundreds of thousands of small blocks takes a few requests per
    /// pack, not one per block (on S3 that is the difference between seconds
    /// and minutes). Packs are read in the order `ids` first needs them (a
    /// physical restore passes its blocks in manifest order, so files fill
    /// from start to end). `sink` gets every blob's plaintext, on up to
    /// `threads` threads, in no particular order. A range the repository cannot give is
    /// read blob by blob, from its mirrors if need be.
    pub fn read_blobs(
        &self,
        index: &Index,
        ids: &[Id],
        threads: usize,
        sink: &(dyn Fn(&Id, Vec<u8>) -> std::io::Result<()> + Sync),
    ) -> Result<()> {
        const GAP: u64 = 256 << 10;
        const MAX: u64 = 8 << 20;
        let identities = Arc::clone(self.identities()?);
        // Packs in the order `ids` first needs them.
        let mut by_pack: Vec<(Id, Vec<(Id, BlobLocation)>)> = Vec::new();
        let mut pack_slot: HashMap<Id, usize> = HashMap::new();
        let mut wrapped = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for id in ids {
            if !seen.insert(*id) {
                continue;
            }
            let loc = *index
                .get(id)
                .ok_or_else(|| self.corrupt(format!("blob {}", id.short()), "no index lists it"))?;
            self.check_bounds(id, &loc)?;
            wrapped.entry(loc.pack).or_insert_with(|| {
                index
                    .wrapped_key(&loc.pack)
                    .expect("indexed pack has a key")
                    .to_vec()
            });
            let slot = *pack_slot.entry(loc.pack).or_insert_with(|| {
                by_pack.push((loc.pack, Vec::new()));
                by_pack.len() - 1
            });
            by_pack[slot].1.push((*id, loc));
        }
        // (pack, byte range, the blobs in it)
        type Span = (Id, std::ops::Range<u64>, Vec<(Id, BlobLocation)>);
        let mut ranges: Vec<Span> = Vec::new();
        for (pack, mut blobs) in by_pack {
            blobs.sort_by_key(|(_, l)| l.offset);
            for (id, loc) in blobs {
                let end = loc.offset + u64::from(loc.length);
                match ranges.last_mut() {
                    Some((p, r, members))
                        if *p == pack && loc.offset <= r.end + GAP && end - r.start <= MAX =>
                    {
                        r.end = r.end.max(end);
                        members.push((id, loc));
                    }
                    _ => ranges.push((pack, loc.offset..end, vec![(id, loc)])),
                }
            }
        }
        let fetcher = self.fetcher(identities, wrapped);
        super::parallel(&ranges, threads, |(pack, range, members)| {
            let what = || {
                format!(
                    "{} (bytes {}..{})",
                    format::pack_path(pack),
                    range.start,
                    range.end
                )
            };
            let bytes = fetcher
                .get_range(fetcher.storage.as_ref(), pack, range.clone(), &what)
                .ok();
            // Members of a group are next to each other (sorted by offset):
            // the group is decoded once for all of them.
            let mut group: Option<(u64, Vec<u8>)> = None;
            for (id, loc) in members {
                let at = (loc.offset - range.start) as usize;
                let stored = || bytes.as_ref().map(|b| &b[at..at + loc.length as usize]);
                let decoded = match (loc.group, stored()) {
                    (_, None) => None,
                    (None, Some(stored)) => fetcher.decode(id, loc, stored).ok(),
                    (Some(_), Some(stored)) => {
                        if group
                            .as_ref()
                            .is_none_or(|(offset, _)| *offset != loc.offset)
                        {
                            group = match fetcher.decode_stored(id, loc, stored) {
                                Ok(Decoded::Group(plain)) => Some((loc.offset, plain)),
                                _ => None,
                            };
                        }
                        group
                            .as_ref()
                            .and_then(|(_, plain)| fetcher.member(id, loc, plain).ok())
                    }
                };
                // The main repository's copy is bad or unreadable: blob by
                // blob, with the mirrors, and its own error if all fail.
                let plain = match decoded {
                    Some(p) => p,
                    None => fetcher.fetch(id, loc)?,
                };
                sink(id, plain)
                    .map_err(|e| RepoError::Other(format!("writing blob {}: {e}", id.short())))?;
            }
            Ok(())
        })
    }
}

impl Repository {
    /// Bytes `range` of a stream: only the chunks that overlap it are fetched.
    pub fn read_stream_range(
        &self,
        index: &Index,
        stream: &Stream,
        range: std::ops::Range<u64>,
    ) -> Result<StreamReader> {
        let mut start = 0u64;
        let mut part = Stream {
            name: stream.name.clone(),
            format: stream.format.clone(),
            size: 0,
            chunks: Vec::new(),
        };
        let mut skip = 0;
        for id in &stream.chunks {
            if start >= range.end {
                break;
            }
            let len = u64::from(self.locate(index, stream, id)?.raw_length);
            if start + len > range.start {
                if part.chunks.is_empty() {
                    skip = range.start - start;
                }
                part.chunks.push(*id);
                part.size += len;
            }
            start += len;
        }
        let mut reader = self.read_stream(index, &part)?;
        reader.skip = skip;
        reader.remaining = range.end - range.start;
        Ok(reader)
    }

    /// Where a stream's blob is, or an error naming it and what may explain it.
    fn locate<'i>(&self, index: &'i Index, stream: &Stream, id: &Id) -> Result<&'i BlobLocation> {
        index.get(id).ok_or_else(|| RepoError::Missing {
            url: self.url(),
            what: format!(
                "blob {} of stream {:?} (not in any index{}); hint: `lifeboat verify` tells more, and `lifeboat prune` re-indexes packs whose index was lost",
                id.short(),
                stream.name,
                match index.damaged.first() {
                    Some(d) => format!("; {} is damaged: {}", d.object, d.problem),
                    None => String::new(),
                }
            ),
        })
    }
}

impl StreamReader {
    fn issue(&mut self) {
        if self.next_job < self.chunks {
            let (id, loc) = self.locations[self.next_job];
            if let Some(tx) = &self.jobs {
                let _ = tx.send((self.next_job, id, loc));
            }
            self.next_job += 1;
        }
    }

    /// The typed error behind an `io::Error` this reader returned.
    pub fn take_error(&mut self) -> Option<RepoError> {
        self.error.take()
    }

    fn fail(&mut self, e: RepoError) -> io::Error {
        let msg = e.to_string();
        self.error = Some(e);
        self.jobs = None;
        io::Error::other(msg)
    }

    fn next_chunk(&mut self) -> io::Result<bool> {
        if self.next_out == self.chunks {
            if self.delivered != self.total {
                let e = RepoError::Other(format!(
                    "stream length mismatch: record says {} bytes, blobs hold {}",
                    self.total, self.delivered
                ));
                return Err(self.fail(e));
            }
            return Ok(false);
        }
        while !self.pending.contains_key(&self.next_out) {
            match self.results.recv() {
                Ok((seq, Ok(data))) => {
                    self.pending.insert(seq, data);
                }
                Ok((_, Err(e))) => return Err(self.fail(e)),
                Err(_) => return Err(self.fail(RepoError::Other("blob fetchers stopped".into()))),
            }
        }
        self.current = self.pending.remove(&self.next_out).expect("present");
        self.pos = 0;
        self.next_out += 1;
        self.delivered += self.current.len() as u64;
        self.issue();
        Ok(true)
    }
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = &self.error {
            return Err(io::Error::other(e.to_string()));
        }
        loop {
            if self.remaining == 0 {
                return Ok(0);
            }
            while self.pos == self.current.len() {
                if !self.next_chunk()? {
                    return Ok(0);
                }
            }
            if self.skip == 0 {
                break;
            }
            let k = self.skip.min((self.current.len() - self.pos) as u64);
            self.pos += k as usize;
            self.skip -= k;
        }
        let n = buf
            .len()
            .min(self.current.len() - self.pos)
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        self.remaining -= n as u64;
        Ok(n)
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        self.jobs = None;
        // Workers finish their current fetch and see the closed queue.
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Refuse an index entry whose lengths exceed the format's blob bound (see
/// `Repository::check_bounds`), before anything is fetched for it.
fn check_bounds(url: &str, id: &Id, loc: &BlobLocation) -> Result<()> {
    let in_bounds = loc.raw_length as usize <= codec::MAX_BLOB_SIZE
        && loc.length as usize <= codec::MAX_BLOB_SIZE + codec::BLOB_OVERHEAD
        && loc.offset.checked_add(u64::from(loc.length)).is_some()
        && loc.group.is_none_or(|g| {
            g.size as usize <= codec::MAX_BLOB_SIZE
                && u64::from(g.start) + u64::from(loc.raw_length) <= u64::from(g.size)
        });
    if in_bounds {
        return Ok(());
    }
    Err(RepoError::Corrupt {
        url: url.to_string(),
        what: format!("{} (blob {})", format::pack_path(&loc.pack), id.short()),
        detail: format!(
            "index entry out of bounds (offset {}, length {}, raw length {}; blobs are at most {} bytes)",
            loc.offset,
            loc.length,
            loc.raw_length,
            codec::MAX_BLOB_SIZE
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::BlobType;
    use crate::format::{BlobEntry, PackEntry};
    use crate::repo::test_repo;

    /// An index naming one blob of 10 bytes, stored as `length` bytes at the
    /// start of a 100-byte pack that does not exist.
    fn index_of_one(blob: Id, length: u32, group: Option<crate::format::GroupPos>) -> Index {
        let mut index = Index::default();
        index
            .add_pack(&PackEntry {
                id: Id([2; 32]),
                size: 100,
                session_key: codec::b64_encode(b"unused"),
                blobs: vec![BlobEntry {
                    id: blob,
                    ty: BlobType::Data,
                    offset: 0,
                    length,
                    raw_length: 10,
                    group,
                }],
            })
            .unwrap();
        index
    }

    #[test]
    fn an_oversized_index_entry_is_refused_before_fetching() {
        let (_storage, repo) = test_repo();
        let blob = Id([1; 32]);
        let index = index_of_one(blob, u32::MAX, None);
        let stream = Stream {
            name: "s".into(),
            format: "raw".into(),
            size: 10,
            chunks: vec![blob],
        };
        match repo.read_stream(&index, &stream) {
            Err(RepoError::Corrupt { what, .. }) => {
                assert!(what.contains("blob 01010101"), "{what}")
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("an oversized entry was accepted"),
        }
    }

    #[test]
    fn a_group_member_outside_its_group_is_refused_before_fetching() {
        let (_storage, repo) = test_repo();
        let blob = Id([3; 32]);
        let group = crate::format::GroupPos {
            start: 95,
            size: 100,
        };
        let index = index_of_one(blob, 50, Some(group));
        // The pack does not exist: a fetch would say "missing", the check
        // says "out of bounds" first.
        let err = repo
            .read_blobs(&index, &[blob], 1, &|_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("out of bounds"), "{err}");
    }

    #[test]
    fn a_mirror_serves_a_blob_from_wherever_its_own_index_puts_it() {
        use crate::repo::test_block as block;
        use crate::storage::{PutMode, Storage};
        let (storage, mut repo) = test_repo();
        let mirror_storage = Arc::new(crate::storage::memory::MemoryStorage::new());
        let recipients = repo.settings().recipients.clone();
        repo.init_sharing(
            mirror_storage.clone(),
            crate::repo::InitKeys::Recipients(recipients),
        )
        .unwrap();
        let blobs: Vec<Vec<u8>> = (1..4).map(block).collect();
        let store = |r: &Repository| {
            let s = r.start_session().unwrap();
            let ids = s
                .store_blobs(blobs.clone(), crate::codec::Effort::Fast)
                .unwrap();
            s.finish().unwrap();
            ids
        };
        let ids = store(&repo);
        // The mirror holds the same blobs in a pack of its own (as after a
        // prune there rewrote it).
        let mirror = Repository::open_sibling(&repo, mirror_storage.clone())
            .unwrap()
            .unwrap();
        assert_eq!(store(&mirror), ids);
        assert!(repo.add_mirror(mirror_storage).unwrap());
        let index = repo.load_index().unwrap();
        let pack = index.get(&ids[0]).unwrap().pack;
        let path = format::pack_path(&pack);
        let mut bytes = storage.get(&path).unwrap();
        let at = index.get(&ids[0]).unwrap().offset as usize + 30;
        bytes[at] ^= 1;
        storage.put(&path, &bytes, PutMode::Overwrite).unwrap();
        let got = crate::repo::read_all(&repo, &index, &ids);
        let mut want: Vec<(Id, Vec<u8>)> = ids.iter().copied().zip(blobs).collect();
        want.sort();
        assert_eq!(got, want);
    }
}
