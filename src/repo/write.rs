//! A writing session: chunk streams, dedup against the index, compress and encrypt
//! on worker threads, assemble packs and store them durably, then index them.
//!
//! The pipeline is bounded at every stage (channels of a few chunks, at most
//! `MAX_WORKERS` workers), so memory stays at a few pack sizes whatever the input
//! size and however many CPUs the host has:
//!
//! ```text
//! caller: read + chunk + hash + dedup --> workers: compress + encrypt --> packer: pack + put
//! ```

use std::collections::HashSet;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{Index, RepoError, Repository, Result};
use crate::chunker::Chunker;
use crate::codec::{self, BlobEncoder, BlobType, Effort, Id, SessionKey};
use crate::format::{self, BackupStats, BlobEntry, GroupPos, PackEntry, PackTrailer, Stream};
use crate::storage::{ErrorKind, PutMode, Tier};

/// Worker threads: at least 2 so compression overlaps chunking, at most 8 because
/// each worker holds a chunk (up to 4 MiB), its compressed copy and a zstd
/// context: on a 64-core host an unclamped pool would hold hundreds of MiB for
/// little gain: packs are assembled by one thread and stored by another.
const MIN_WORKERS: usize = 2;
const MAX_WORKERS: usize = 8;
/// Chunks queued between stages. Fixed, not per worker, for the same reason.
const CHANNEL_DEPTH: usize = 2;
/// Room for a pack's footer (sealed trailer) in the pack buffer reserved up
/// front. A trailer entry is ~100 bytes after sealing, so this covers hundreds
/// of blobs; a pack of many tiny (highly compressible) blobs may still grow once.
const FOOTER_RESERVE: usize = 64 * 1024;

/// Called with the number of plaintext bytes read so far.
pub type StreamProgress<'a> = &'a (dyn Fn(u64) + Sync);

/// Blobs for a worker: one chunk of a stream, or a few blocks of a file
/// (handing blocks of 64 KiB over one by one costs more in thread wake-ups
/// than compressing them). Blocks are stored as one group: compressed
/// together, they take 15 to 20 % less room than compressed one by one.
struct Job {
    blobs: Vec<(Id, Vec<u8>)>,
    /// Store as one group, compressed with this effort.
    group: Option<Effort>,
}

/// What a worker hands the packer: one stored blob, or one stored group
/// (`group` is then its size) and its members.
struct Encrypted {
    members: Vec<(Id, u32)>,
    group: Option<u32>,
    stored: Vec<u8>,
}

/// One writer's session. Create with `Repository::start_session`, feed streams,
/// then `commit` with the backup record.
///
/// Several threads may store blobs at once (`store_blob` takes `&self`): a
/// physical backup reads files in parallel.
pub struct Session<'r> {
    repo: &'r Repository,
    index: Index,
    seen: Mutex<HashSet<Id>>,
    jobs: Option<SyncSender<Job>>,
    /// Chunk buffers the workers are done with, for the chunker to reuse.
    spare: Mutex<Receiver<Vec<u8>>>,
    workers: Vec<JoinHandle<()>>,
    packer: Option<JoinHandle<std::result::Result<Packed, RepoError>>>,
    /// Chunks handed to the workers. A worker that panics loses its chunk without
    /// telling anyone, so `finish` compares this with what the packer stored.
    sent: AtomicU64,
    stats: Mutex<BackupStats>,
}

/// What the packer thread returns: the stored packs and how many blobs it got.
struct Packed {
    packs: Vec<PackEntry>,
    blobs: u64,
}

impl Repository {
    pub fn start_session(&self) -> Result<Session<'_>> {
        let index = self.load_index()?;
        let key = SessionKey::random();
        let wrapped = key
            .wrap(&self.recipients)
            .map_err(|e| RepoError::Other(format!("wrapping session key: {e}")))?;
        let level = self.settings.compression_level;
        let threads = std::thread::available_parallelism()
            .map_or(MIN_WORKERS, |n| n.get())
            .clamp(MIN_WORKERS, MAX_WORKERS);
        let (job_tx, job_rx) = sync_channel::<Job>(CHANNEL_DEPTH);
        let (enc_tx, enc_rx) = sync_channel::<Vec<Encrypted>>(CHANNEL_DEPTH);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
        // Buffers of stored blobs go back from the packer to the workers.
        let (stored_tx, stored_rx) = sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
        let stored_rx = Arc::new(Mutex::new(stored_rx));
        let workers = (0..threads)
            .map(|_| {
                let buffers = WorkerBuffers {
                    spare: spare_tx.clone(),
                    stored: Arc::clone(&stored_rx),
                };
                let rx = Arc::clone(&job_rx);
                let tx = enc_tx.clone();
                let encoder = BlobEncoder::new(key.clone(), level);
                std::thread::spawn(move || worker(rx, tx, buffers, encoder))
            })
            .collect();
        drop(enc_tx);
        let packer = {
            let writer = PackWriter::new(Arc::clone(&self.storage));
            let meta = self.meta.clone();
            let pack_size = self.settings.pack_size;
            // A pack is flushed once it reaches `pack_size`, so it never exceeds
            // that plus one stored blob, plus the footer added at flush.
            let capacity =
                pack_size + self.settings.chunker.max + codec::BLOB_OVERHEAD + FOOTER_RESERVE;
            std::thread::spawn(move || {
                let mut p = Packer {
                    writer,
                    meta,
                    wrapped,
                    pack_size,
                    capacity,
                    buf: Vec::new(),
                    blobs: Vec::new(),
                    done: Vec::new(),
                    received: 0,
                    recycle: stored_tx,
                };
                for batch in enc_rx {
                    for e in batch {
                        p.add(e)?;
                    }
                }
                p.flush()?;
                p.writer.finish()?;
                Ok(Packed {
                    packs: p.done,
                    blobs: p.received,
                })
            })
        };
        Ok(Session {
            repo: self,
            index,
            seen: Mutex::new(HashSet::new()),
            jobs: Some(job_tx),
            spare: Mutex::new(spare_rx),
            workers,
            packer: Some(packer),
            sent: AtomicU64::new(0),
            stats: Mutex::new(BackupStats::default()),
        })
    }
}

/// Where a worker returns chunk buffers and finds buffers for stored blobs, so
/// a long backup reuses a fixed set of buffers instead of allocating per chunk.
struct WorkerBuffers {
    spare: SyncSender<Vec<u8>>,
    stored: Arc<Mutex<Receiver<Vec<u8>>>>,
}

/// Buffers above this size are freed, not reused: a buffer keeps the largest
/// size it ever held, and a pool of maximal chunks would hold 4 MiB each.
const RECYCLE_LIMIT: usize = 2 * 1024 * 1024;

/// Put a buffer back into a pool, unless it is large or the pool is full.
fn recycle(pool: &SyncSender<Vec<u8>>, buf: Vec<u8>) {
    if buf.capacity() <= RECYCLE_LIMIT {
        let _ = pool.try_send(buf);
    }
}

fn worker(
    rx: Arc<Mutex<Receiver<Job>>>,
    tx: SyncSender<Vec<Encrypted>>,
    buffers: WorkerBuffers,
    mut encoder: BlobEncoder,
) {
    loop {
        let job = match rx.lock().expect("job queue poisoned").recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        let mut batch = Vec::with_capacity(job.blobs.len());
        let mut used = Vec::with_capacity(job.blobs.len());
        let stored = || {
            buffers
                .stored
                .lock()
                .expect("buffer queue poisoned")
                .try_recv()
                .unwrap_or_default()
        };
        if let (Some(effort), true) = (job.group, job.blobs.len() > 1) {
            let mut out = stored();
            let parts: Vec<&[u8]> = job.blobs.iter().map(|(_, d)| d.as_slice()).collect();
            let size = encoder.encode_group(BlobType::Data, &parts, &mut out, effort);
            batch.push(Encrypted {
                members: job
                    .blobs
                    .iter()
                    .map(|(id, d)| (*id, d.len() as u32))
                    .collect(),
                group: Some(size as u32),
                stored: out,
            });
            used.extend(job.blobs.into_iter().map(|(_, d)| d));
        } else {
            for (id, data) in job.blobs {
                let mut out = stored();
                encoder.encode(BlobType::Data, &id, &data, &mut out);
                batch.push(Encrypted {
                    members: vec![(id, data.len() as u32)],
                    group: None,
                    stored: out,
                });
                used.push(data);
            }
        }
        if tx.send(batch).is_err() {
            return; // the packer failed; the session reports its error
        }
        // Hand the buffers back to the chunker; drop them if enough are waiting.
        for data in used {
            recycle(&buffers.spare, data);
        }
    }
}

struct Packer {
    writer: PackWriter,
    meta: crate::codec::MetadataKey,
    wrapped: Vec<u8>,
    pack_size: usize,
    /// Bytes reserved for each pack buffer (see `start_session`).
    capacity: usize,
    buf: Vec<u8>,
    blobs: Vec<BlobEntry>,
    done: Vec<PackEntry>,
    /// Blobs received from the workers, stored or about to be.
    received: u64,
    /// Stored blobs' buffers, back to the workers once copied into the pack.
    recycle: SyncSender<Vec<u8>>,
}

/// Stores finished packs on their own threads, so writing and fsyncing (or
/// uploading) one pack overlaps with filling the next. The hand-over blocks
/// until a storing thread is free, which bounds memory to the packs being
/// stored plus the one filling: one storing thread for a local disk, two for a
/// remote store (each of its packs is already uploaded in parallel parts).
struct PackWriter {
    tx: Option<SyncSender<(Id, Vec<u8>)>>,
    /// Stored packs' buffers come back here for the next pack, instead of a
    /// fresh one per pack (allocated on one thread and freed on another, which
    /// glibc's per-thread arenas do not give back).
    returned: Receiver<Vec<u8>>,
    threads: Vec<JoinHandle<Result<()>>>,
}

impl PackWriter {
    fn new(storage: Arc<dyn crate::storage::Storage>) -> PackWriter {
        let count = if storage.concurrency() > 1 { 2 } else { 1 };
        let (tx, rx) = sync_channel::<(Id, Vec<u8>)>(0);
        let rx = Arc::new(Mutex::new(rx));
        let (back_tx, returned) = sync_channel::<Vec<u8>>(count);
        let written = Arc::new(AtomicU64::new(0));
        // Once one thread fails, the others stop too, so the hand-over fails
        // and the session ends instead of writing packs that cannot be used.
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let (storage, rx, back_tx, written, failed) = (
                    Arc::clone(&storage),
                    Arc::clone(&rx),
                    back_tx.clone(),
                    Arc::clone(&written),
                    Arc::clone(&failed),
                );
                std::thread::spawn(move || {
                    loop {
                        let next = rx.lock().expect("pack queue lock").recv();
                        let Ok((id, mut pack)) = next else {
                            return Ok(());
                        };
                        if failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        match storage.put_tier(
                            &format::pack_path(&id),
                            &pack,
                            PutMode::Create,
                            Tier::Data,
                        ) {
                            Ok(()) => {}
                            Err(e) if e.kind == ErrorKind::AlreadyExists => {}
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e.into());
                            }
                        }
                        let n = written.fetch_add(1, Ordering::Relaxed) + 1;
                        crate::failpoint::hit(&format!("pack:{n}"));
                        pack.clear();
                        let _ = back_tx.try_send(pack);
                    }
                })
            })
            .collect();
        PackWriter {
            tx: Some(tx),
            returned,
            threads,
        }
    }

    /// An empty buffer for the next pack, reused if one came back.
    fn buffer(&self, capacity: usize) -> Vec<u8> {
        self.returned
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(capacity))
    }

    fn write(&mut self, id: Id, pack: Vec<u8>) -> Result<()> {
        let tx = self.tx.as_ref().expect("writer used after finish");
        if tx.send((id, pack)).is_err() {
            // The threads stopped on an error: report it.
            return self.finish();
        }
        Ok(())
    }

    /// Wait until every pack handed over is durable.
    fn finish(&mut self) -> Result<()> {
        self.tx = None;
        if self.threads.is_empty() {
            return Err(RepoError::Other("the pack writer already stopped".into()));
        }
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            let r = match t.join() {
                Ok(r) => r,
                Err(_) => Err(RepoError::Other("the pack writer panicked".into())),
            };
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

impl Packer {
    fn add(&mut self, e: Encrypted) -> Result<()> {
        self.received += e.members.len() as u64;
        if self.buf.is_empty() {
            // Reserve the whole pack now: growing by doubling copies the bytes
            // again at each step, and appending the footer to a full 16 MiB
            // buffer could double it to 32 MiB and copy everything once more.
            self.buf = self.writer.buffer(self.capacity);
            self.buf
                .extend_from_slice(&format::pack_header(&self.wrapped));
        }
        let offset = self.buf.len() as u64;
        let length = e.stored.len() as u32;
        let mut start = 0;
        for (id, raw_length) in e.members {
            self.blobs.push(BlobEntry {
                id,
                ty: BlobType::Data,
                offset,
                length,
                raw_length,
                group: e.group.map(|size| GroupPos { start, size }),
            });
            start += raw_length;
        }
        self.buf.extend_from_slice(&e.stored);
        recycle(&self.recycle, e.stored);
        if self.buf.len() >= self.pack_size {
            self.flush()?;
        }
        Ok(())
    }

    /// Finish the current pack and store it durably.
    fn flush(&mut self) -> Result<()> {
        if self.blobs.is_empty() {
            return Ok(());
        }
        let blobs = std::mem::take(&mut self.blobs);
        let trailer = self.meta.seal(
            "pack",
            &super::to_json(&PackTrailer {
                blobs: blobs.clone(),
            }),
        );
        let mut pack = std::mem::take(&mut self.buf);
        pack.extend_from_slice(&format::pack_footer(&trailer));
        let id = Id::of_stored(&pack);
        let size = pack.len() as u64;
        self.writer.write(id, pack)?;
        self.done.push(PackEntry {
            id,
            size,
            session_key: crate::codec::b64_encode(&self.wrapped),
            blobs,
        });
        Ok(())
    }
}

impl Session<'_> {
    /// Chunk `input` into the repository and return the stream's description.
    /// Every chunk is also passed to `observe` (to sniff a dump's table of contents).
    pub fn write_stream(
        &mut self,
        name: &str,
        format_name: &str,
        input: impl Read,
        observe: &mut dyn FnMut(&[u8]),
        progress: StreamProgress,
    ) -> Result<Stream> {
        let mut chunker = Chunker::new(
            input,
            self.repo.settings.chunker,
            self.repo.meta.chunker_seed(),
        );
        let mut chunks = Vec::new();
        let mut size = 0u64;
        let mut reuse: Option<Vec<u8>> = None;
        loop {
            let buf = reuse
                .take()
                .or_else(|| self.spare.lock().expect("buffer pool").try_recv().ok())
                .unwrap_or_default();
            let next = chunker
                .next_chunk_reusing(buf)
                .map_err(|e| RepoError::Other(format!("reading {name}: {e}")))?;
            let Some(data) = next else { break };
            observe(&data);
            size += data.len() as u64;
            match self.store(data) {
                Ok((id, back)) => {
                    chunks.push(id);
                    reuse = back;
                }
                Err(()) => return Err(self.fail()),
            }
            progress(size);
        }
        Ok(Stream {
            name: name.into(),
            format: format_name.into(),
            size,
            chunks,
        })
    }

    /// Decide which of `blobs` the repository lacks and hand those to the
    /// workers in one job: returns every blob's id, and the buffers of those
    /// not needed. `Err` if the pipeline stopped (the reason comes from
    /// `finish`).
    fn store_many(
        &self,
        blobs: Vec<Vec<u8>>,
        group: Option<Effort>,
    ) -> std::result::Result<(Vec<Id>, Vec<Vec<u8>>), ()> {
        // Hashed before the locks are taken: threads storing blocks of
        // different files hash in parallel.
        let ids: Vec<Id> = blobs.iter().map(|b| self.repo.meta.blob_id(b)).collect();
        let mut job = Vec::new();
        let mut unneeded = Vec::new();
        {
            let mut stats = self.stats.lock().expect("stats");
            let mut seen = self.seen.lock().expect("seen set");
            for (data, &id) in blobs.into_iter().zip(&ids) {
                let len = data.len() as u64;
                let new = !self.index.contains(&id) && seen.insert(id);
                stats.size += len;
                stats.chunks += 1;
                if new {
                    stats.new_chunks += 1;
                    stats.new_bytes += len;
                    job.push((id, data));
                } else {
                    unneeded.push(data);
                }
            }
        }
        if !job.is_empty() {
            let n = job.len() as u64;
            let jobs = self.jobs.as_ref().expect("session in use after commit");
            jobs.send(Job { blobs: job, group }).map_err(|_| ())?;
            self.sent.fetch_add(n, Ordering::SeqCst);
        }
        Ok((ids, unneeded))
    }

    /// Store one blob unless the repository has it: returns its id, and the
    /// buffer back if it was not needed.
    fn store(&self, data: Vec<u8>) -> std::result::Result<(Id, Option<Vec<u8>>), ()> {
        let (ids, mut unneeded) = self.store_many(vec![data], None)?;
        Ok((ids[0], unneeded.pop()))
    }

    /// Store one blob (a block of a file) from any thread; deduplicated like
    /// stream chunks. Blobs are at most `codec::MAX_BLOB_SIZE` bytes.
    pub fn store_blob(&self, data: Vec<u8>) -> Result<Id> {
        Ok(self.store_blobs(vec![data], Effort::Fast)?[0])
    }

    /// Store several blobs (blocks of a file) from any thread, as one job for
    /// the workers; their ids in order. Those the repository lacks are stored
    /// as one group, so together they must stay within
    /// `codec::MAX_BLOB_SIZE`; `effort` says how hard to compress them.
    pub fn store_blobs(&self, blobs: Vec<Vec<u8>>, effort: Effort) -> Result<Vec<Id>> {
        debug_assert!(blobs.iter().map(Vec::len).sum::<usize>() <= codec::MAX_BLOB_SIZE);
        self.store_many(blobs, Some(effort))
            .map(|(ids, _)| ids)
            .map_err(|()| {
                RepoError::Other("the pack writer stopped (the backup reports why)".into())
            })
    }

    /// How hard to compress blocks like `sample` (see `Effort`).
    pub fn choose_effort(&self, sample: &[u8]) -> Effort {
        Effort::choose(sample, self.repo.settings.compression_level)
    }

    /// The pipeline stopped taking chunks: collect the reason.
    pub fn fail(&mut self) -> RepoError {
        match self.stop_pipeline() {
            Err(e) => e,
            Ok(_) => RepoError::Other("the pack writer stopped unexpectedly".into()),
        }
    }

    /// Close the job queue and wait for every thread. The packer's own error
    /// (e.g. a full disk) is the most useful one, so it wins over a worker panic.
    fn stop_pipeline(&mut self) -> Result<Packed> {
        self.jobs = None;
        let mut worker_panicked = false;
        for w in self.workers.drain(..) {
            worker_panicked |= w.join().is_err();
        }
        let packed = match self.packer.take().map(|h| h.join()) {
            Some(Ok(r)) => r?,
            Some(Err(_)) => return Err(RepoError::Other("the pack writer panicked".into())),
            None => return Err(RepoError::Other("the pack writer already stopped".into())),
        };
        if worker_panicked {
            return Err(RepoError::Other(
                "a compression worker panicked; chunks may be missing, so the backup is abandoned"
                    .into(),
            ));
        }
        Ok(packed)
    }

    /// Flush all packs and index them. Returns the statistics of the session.
    /// After this the data is durable and indexed but not yet referenced.
    pub fn finish(mut self) -> Result<BackupStats> {
        let Packed { packs, blobs } = self.stop_pipeline()?;
        // Belt and braces: whatever went wrong on the way, a chunk that was sent
        // but never stored must stop the backup here, before the index and long
        // before a record could name the missing blob.
        let sent = self.sent.load(Ordering::SeqCst);
        if blobs != sent {
            return Err(RepoError::Other(format!(
                "{sent} chunks were sent to be stored but {blobs} arrived at the pack writer; the backup is abandoned"
            )));
        }
        let mut stats = *self.stats.lock().expect("stats");
        stats.stored_bytes = packs.iter().map(|p| p.size).sum();
        crate::failpoint::hit("backup:before-index");
        self.repo.write_index(packs)?;
        Ok(stats)
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(p) = self.packer.take() {
            let _ = p.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::{test_block as block, test_repo};
    use crate::storage::Storage;

    fn write(session: &mut Session<'_>, data: &[u8]) -> Stream {
        session
            .write_stream("s", "raw", data, &mut |_| {}, &|_| {})
            .expect("write_stream")
    }

    #[test]
    fn finish_indexes_every_chunk() {
        let (_storage, repo) = test_repo();
        let mut s = repo.start_session().unwrap();
        let stream = write(&mut s, &b"lifeboat ".repeat(100_000));
        s.finish().unwrap();
        let index = repo.load_index().unwrap();
        assert!(stream.chunks.iter().all(|id| index.contains(id)));
    }

    #[test]
    fn a_lost_chunk_fails_finish_before_the_index() {
        let (storage, repo) = test_repo();
        let mut s = repo.start_session().unwrap();
        write(&mut s, b"some data");
        // As if a worker had taken one more chunk off the queue and lost it.
        s.sent.fetch_add(1, Ordering::SeqCst);
        let err = s.finish().unwrap_err().to_string();
        assert!(err.contains("2 chunks were sent"), "{err}");
        assert!(storage.list(format::INDEX_DIR).unwrap().is_empty());
    }

    #[test]
    fn a_panicked_worker_fails_finish() {
        let (storage, repo) = test_repo();
        let mut s = repo.start_session().unwrap();
        write(&mut s, b"some data");
        s.workers
            .push(std::thread::spawn(|| panic!("injected worker panic")));
        let err = s.finish().unwrap_err().to_string();
        assert!(err.contains("compression worker panicked"), "{err}");
        assert!(storage.list(format::INDEX_DIR).unwrap().is_empty());
    }

    #[test]
    fn new_blocks_are_stored_as_one_group_and_read_back_one_by_one() {
        let (_storage, repo) = test_repo();
        let s = repo.start_session().unwrap();
        let known = s.store_blob(block(0)).unwrap();
        let blocks: Vec<Vec<u8>> = [1, 0, 2, 3, 1].into_iter().map(block).collect();
        let ids = s.store_blobs(blocks.clone(), Effort::Fast).unwrap();
        s.finish().unwrap();
        assert_eq!(ids[1], known);
        assert_eq!(ids[0], ids[4]);
        let index = repo.load_index().unwrap();
        let loc = |id: &Id| *index.get(id).unwrap();
        assert!(loc(&known).group.is_none(), "a single blob is not a group");
        let (first, second, third) = (loc(&ids[0]), loc(&ids[2]), loc(&ids[3]));
        // The three new blocks (the repeated one once) share one stored group.
        assert_eq!(
            (first.pack, first.offset, first.length),
            (second.pack, second.offset, second.length)
        );
        assert_eq!((first.offset, first.length), (third.offset, third.length));
        let size = 3 * format::FILE_BLOCK as u32;
        let starts: Vec<_> = [first, second, third]
            .iter()
            .map(|l| l.group.unwrap())
            .collect();
        assert_eq!(
            starts,
            [0, 1, 2].map(|i| GroupPos {
                start: i * format::FILE_BLOCK as u32,
                size
            })
        );
        // Read back together (one decode for the group) and one at a time.
        let got = Mutex::new(std::collections::HashMap::new());
        repo.read_blobs(&index, &ids, 2, &|id, data| {
            got.lock().unwrap().insert(*id, data);
            Ok(())
        })
        .unwrap();
        let got = got.into_inner().unwrap();
        for (id, data) in ids.iter().zip(&blocks) {
            assert_eq!(&got[id], data);
        }
        let stream = Stream {
            name: "s".into(),
            format: "raw".into(),
            size: (blocks.len() * format::FILE_BLOCK) as u64,
            chunks: ids.clone(),
        };
        let mut back = Vec::new();
        repo.read_stream(&index, &stream)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, blocks.concat());
        let report = repo
            .verify(crate::repo::ReadData::Plaintext, &|_| {})
            .unwrap();
        assert!(report.content_checked);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    }

    #[test]
    fn a_damaged_group_fails_every_member_it_holds() {
        let (storage, repo) = test_repo();
        let s = repo.start_session().unwrap();
        let ids = s
            .store_blobs((1..4).map(block).collect(), Effort::Thorough)
            .unwrap();
        s.finish().unwrap();
        let index = repo.load_index().unwrap();
        let loc = *index.get(&ids[1]).unwrap();
        let path = format::pack_path(&loc.pack);
        let mut pack = storage.get(&path).unwrap();
        pack[(loc.offset + 40) as usize] ^= 1;
        storage.put(&path, &pack, PutMode::Overwrite).unwrap();
        for id in &ids {
            let err = repo
                .read_blobs(&index, &[*id], 1, &|_, _| Ok(()))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&id.short()) && err.contains("authentication failed"),
                "{err}"
            );
        }
    }
}
