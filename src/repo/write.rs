//! A writing session: chunk streams, dedup against the index, compress and encrypt
//! on worker threads, assemble packs and store them durably, then index them.
//!
//! The pipeline is bounded at every stage (channels of a few chunks), so memory
//! stays at a few pack sizes whatever the input size:
//!
//! ```text
//! caller: read + chunk + hash + dedup --> workers: compress + encrypt --> packer: pack + put
//! ```

use std::collections::HashSet;
use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{Index, RepoError, Repository, Result};
use crate::codec::{BlobType, Id, SessionKey};
use crate::format::{self, BackupStats, BlobEntry, PackEntry, PackTrailer, Stream};
use crate::storage::{ErrorKind, PutMode};

/// Called with the number of plaintext bytes read so far.
pub type StreamProgress<'a> = &'a (dyn Fn(u64) + Sync);

struct Job {
    id: Id,
    data: Vec<u8>,
}

struct Encrypted {
    id: Id,
    raw_length: u32,
    stored: Vec<u8>,
}

/// One writer's session. Create with `Repository::start_session`, feed streams,
/// then `commit` with the backup record.
pub struct Session<'r> {
    repo: &'r Repository,
    index: Index,
    seen: HashSet<Id>,
    jobs: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    packer: Option<JoinHandle<std::result::Result<Vec<PackEntry>, RepoError>>>,
    stats: BackupStats,
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
            .map_or(2, |n| n.get())
            .max(2);
        let (job_tx, job_rx) = sync_channel::<Job>(threads * 2);
        let (enc_tx, enc_rx) = sync_channel::<Encrypted>(threads * 2);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&job_rx);
                let tx = enc_tx.clone();
                let key = key.clone();
                std::thread::spawn(move || worker(rx, tx, key, level))
            })
            .collect();
        drop(enc_tx);
        let packer = {
            let storage = Arc::clone(&self.storage);
            let meta = self.meta.clone();
            let pack_size = self.settings.pack_size;
            std::thread::spawn(move || {
                let mut p = Packer {
                    storage,
                    meta,
                    wrapped,
                    pack_size,
                    buf: Vec::new(),
                    blobs: Vec::new(),
                    done: Vec::new(),
                };
                for e in enc_rx {
                    p.add(e)?;
                }
                p.flush()?;
                Ok(p.done)
            })
        };
        Ok(Session {
            repo: self,
            index,
            seen: HashSet::new(),
            jobs: Some(job_tx),
            workers,
            packer: Some(packer),
            stats: BackupStats::default(),
        })
    }
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>, tx: SyncSender<Encrypted>, key: SessionKey, level: i32) {
    loop {
        let job = match rx.lock().expect("job queue poisoned").recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        let stored = key.encrypt_blob(BlobType::Data, &job.id, &job.data, level);
        let e = Encrypted {
            id: job.id,
            raw_length: job.data.len() as u32,
            stored,
        };
        if tx.send(e).is_err() {
            return; // the packer failed; the session reports its error
        }
    }
}

struct Packer {
    storage: Arc<dyn crate::storage::Storage>,
    meta: crate::codec::MetadataKey,
    wrapped: Vec<u8>,
    pack_size: usize,
    buf: Vec<u8>,
    blobs: Vec<BlobEntry>,
    done: Vec<PackEntry>,
}

impl Packer {
    fn add(&mut self, e: Encrypted) -> Result<()> {
        if self.buf.is_empty() {
            self.buf = format::pack_header(&self.wrapped);
        }
        self.blobs.push(BlobEntry {
            id: e.id,
            ty: BlobType::Data,
            offset: self.buf.len() as u64,
            length: e.stored.len() as u32,
            raw_length: e.raw_length,
        });
        self.buf.extend_from_slice(&e.stored);
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
        match self
            .storage
            .put(&format::pack_path(&id), &pack, PutMode::Create)
        {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        self.done.push(PackEntry {
            id,
            size: pack.len() as u64,
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
        let params = self.repo.settings.chunker;
        let chunker = fastcdc::v2020::StreamCDC::with_level_and_seed(
            input,
            params.min,
            params.avg,
            params.max,
            fastcdc::v2020::Normalization::Level1,
            self.repo.meta.chunker_seed(),
        );
        let mut chunks = Vec::new();
        let mut size = 0u64;
        for c in chunker {
            let c = c.map_err(|e| match e {
                fastcdc::v2020::Error::IoError(io) => {
                    RepoError::Other(format!("reading {name}: {io}"))
                }
                other => RepoError::Other(format!("reading {name}: {other}")),
            })?;
            observe(&c.data);
            let id = self.repo.meta.blob_id(&c.data);
            size += c.data.len() as u64;
            self.stats.chunks += 1;
            chunks.push(id);
            if !self.index.contains(&id) && self.seen.insert(id) {
                self.stats.new_chunks += 1;
                self.stats.new_bytes += c.data.len() as u64;
                let jobs = self.jobs.as_ref().expect("session in use after commit");
                if jobs.send(Job { id, data: c.data }).is_err() {
                    return Err(self.fail());
                }
            }
            progress(size);
        }
        self.stats.size += size;
        Ok(Stream {
            name: name.into(),
            format: format_name.into(),
            size,
            chunks,
        })
    }

    /// The packer stopped: collect its error.
    fn fail(&mut self) -> RepoError {
        self.jobs = None;
        match self.packer.take().map(|h| h.join()) {
            Some(Ok(Err(e))) => e,
            _ => RepoError::Other("the pack writer stopped unexpectedly".into()),
        }
    }

    /// Flush all packs and index them. Returns the statistics of the session.
    /// After this the data is durable and indexed but not yet referenced.
    pub fn finish(mut self) -> Result<BackupStats> {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let packs = match self.packer.take().expect("finish once").join() {
            Ok(r) => r?,
            Err(_) => return Err(RepoError::Other("the pack writer panicked".into())),
        };
        self.stats.stored_bytes = packs.iter().map(|p| p.size).sum();
        self.repo.write_index(packs)?;
        Ok(self.stats)
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
