//! Writing the files of a physical restore. A writer thread owns whole files
//! (`pitr::assign_writers`) and gives each block to its `Output`, which puts
//! it where the manifest says.
//!
//! Through the page cache by default, or with `O_DIRECT` when the restore is
//! larger than half the memory available (`DirectIo`). With `O_DIRECT`,
//! files whose size is a multiple of `ALIGN` (every relation segment, the
//! bulk of a data directory) are written in runs of up to `RUN` consecutive
//! bytes from page-aligned buffers; the others (small ones, configuration)
//! still go through the page cache.
//!
//! Why not always: the page cache costs a kernel copy of every byte into
//! pages it must first find, then the writeback at `fsync` (on the 2-core VMs
//! of bench/physical.sh, 1.5 GB cost 3.7-5.1 CPU-seconds that way, 0.2 with
//! `O_DIRECT`, and a restore of the files alone took 1.4-1.9 s instead of
//! 2.9-6 s). But the recovery that follows reads and rewrites much of what
//! was restored: there it found the pages in the cache, and without them it
//! pays the same cost again (measured: redo 3.8-5.0 s instead of 2.1-2.3 s,
//! the end-of-recovery checkpoint 1.9-2.5 s instead of 0.6-0.8 s, the whole
//! `restore --start` 8.1-9.6 s instead of 5.5-6.3 s). When the restore does
//! not fit in the cache, the cache cannot help the recovery, and writing
//! around it spares the copy and the other servers' cached data.
//!
//! A file system that refuses `O_DIRECT` (`EINVAL`, at open or at a write)
//! gets the page cache for the rest of the restore. Every file is still
//! synced once complete (`fsync` also flushes the device's cache and the
//! file's metadata).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// When a physical restore writes with `O_DIRECT` (`restore --direct-io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DirectIo {
    /// When the restore is larger than half the memory available
    #[default]
    Auto,
    Always,
    Never,
}

impl DirectIo {
    /// Whether a restore of `bytes` writes with `O_DIRECT`, and why (for
    /// the plan it prints), given the memory available (`MemAvailable`).
    pub fn decide(self, bytes: u64, available: Option<u64>) -> Option<String> {
        match self {
            DirectIo::Always => Some("--direct-io always".into()),
            DirectIo::Never => None,
            DirectIo::Auto => available.filter(|&a| bytes > a / 2).map(|a| {
                format!(
                    "larger than half the memory available, {}",
                    super::human_bytes(a)
                )
            }),
        }
    }
}

/// The memory this process could fill with page cache: `MemAvailable` of
/// /proc/meminfo, or less in a container whose cgroup (v2) has a memory
/// limit (`memory.max` less `memory.current`: the page cache is charged to
/// the cgroup too).
pub fn memory_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    let host = kib * 1024;
    Some(cgroup_room().map_or(host, |room| room.min(host)))
}

/// `memory.max - memory.current` of this process's cgroup (v2), when it has
/// a limit.
fn cgroup_room() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    cgroup_room_of(&read("memory.max")?, &read("memory.current")?)
}

/// `max` ("max" when there is no limit) less `current`, as the cgroup files
/// hold them.
fn cgroup_room_of(max: &str, current: &str) -> Option<u64> {
    let max: u64 = max.trim().parse().ok()?;
    let current: u64 = current.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// Alignment of `O_DIRECT` writes (memory, file offset and length): 4096
/// suits devices with 512-byte and with 4096-byte logical blocks.
pub const ALIGN: usize = 4096;

/// Bytes of one `O_DIRECT` write at most. Each write waits for the device:
/// 64 KiB writes were latency-bound (1.5 GB in 2.6-2.9 s), 1 MiB ones not
/// (0.7-1.0 s; 8 MiB: 1.0-1.1 s).
pub const RUN: usize = 1 << 20;

/// Runs gathered at once by one writer: blocks of one file come from several
/// decoding threads, each working through its own part of the file.
const RUNS: usize = 8;

/// A buffered file is synced every this many bytes written to it, so that
/// the writeback starts before the file is complete.
pub const SYNC_EVERY: u64 = 64 << 20;

/// Whether a file of `size` bytes is written with `O_DIRECT` when the
/// restore is: only whole pages can be.
pub fn takes_direct(size: u64) -> bool {
    size > 0 && size.is_multiple_of(ALIGN as u64)
}

/// A buffer whose bytes start at an `ALIGN`-aligned address, as `O_DIRECT`
/// wants them.
struct AlignedBuf {
    buf: Vec<u8>,
    start: usize,
    len: usize,
    capacity: usize,
}

impl AlignedBuf {
    fn new(capacity: usize) -> AlignedBuf {
        let buf = vec![0u8; capacity + ALIGN];
        let start = (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN;
        AlignedBuf {
            buf,
            start,
            len: 0,
            capacity,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    fn room(&self) -> usize {
        self.capacity - self.len
    }

    fn push(&mut self, data: &[u8]) {
        let at = self.start + self.len;
        self.buf[at..at + data.len()].copy_from_slice(data);
        self.len += data.len();
    }
}

/// Consecutive bytes of one file, not written yet.
struct Run {
    file: usize,
    offset: u64,
    buf: AlignedBuf,
}

impl Run {
    fn end(&self) -> u64 {
        self.offset + self.buf.len as u64
    }
}

/// One writer's files: opened on demand, written directly or through the
/// page cache.
pub struct Output<'a> {
    open: OpenFiles<'a>,
    /// Per file: written with `O_DIRECT`.
    direct: Vec<bool>,
    /// Shared by the writers: cleared once the file system refused `O_DIRECT`.
    direct_ok: &'a AtomicBool,
    runs: Vec<Run>,
    spare: Vec<AlignedBuf>,
    unsynced: Vec<u64>,
}

impl<'a> Output<'a> {
    /// `paths` and `sizes` of every file of the restore (a writer uses the
    /// ones it owns); at most `max_open` descriptors at once.
    pub fn new(
        paths: Vec<PathBuf>,
        sizes: &[u64],
        max_open: usize,
        direct_ok: &'a AtomicBool,
    ) -> Output<'a> {
        Output {
            direct: sizes.iter().map(|&s| takes_direct(s)).collect(),
            unsynced: vec![0; paths.len()],
            open: OpenFiles::new(paths, max_open, direct_ok),
            direct_ok,
            runs: Vec::new(),
            spare: Vec::new(),
        }
    }

    fn is_direct(&self, file: usize) -> bool {
        self.direct[file] && self.direct_ok.load(Ordering::Relaxed)
    }

    /// Put `data` at `offset` of `file`. Returns true when a buffered file
    /// has `SYNC_EVERY` bytes not synced yet: the caller hands it to the
    /// syncer (`handle`).
    pub fn write(&mut self, file: usize, offset: u64, data: &[u8]) -> std::io::Result<bool> {
        if !self.is_direct(file) {
            let out = self.open.get(file, false)?;
            out.write_all_at(data, offset)?;
            self.unsynced[file] += data.len() as u64;
            if self.unsynced[file] >= SYNC_EVERY {
                self.unsynced[file] = 0;
                return Ok(true);
            }
            return Ok(false);
        }
        let mut data = data;
        let mut offset = offset;
        while !data.is_empty() {
            let i = match self
                .runs
                .iter()
                .position(|r| r.file == file && r.end() == offset && r.buf.room() > 0)
            {
                Some(i) => i,
                None => {
                    if self.runs.len() == RUNS {
                        self.flush(0)?;
                    }
                    let buf = self.spare.pop().unwrap_or_else(|| AlignedBuf::new(RUN));
                    self.runs.push(Run { file, offset, buf });
                    self.runs.len() - 1
                }
            };
            let n = self.runs[i].buf.room().min(data.len());
            self.runs[i].buf.push(&data[..n]);
            data = &data[n..];
            offset += n as u64;
            if self.runs[i].buf.room() == 0 {
                self.flush(i)?;
            }
        }
        Ok(false)
    }

    /// The open descriptor of `file` (for the syncer).
    pub fn handle(&mut self, file: usize) -> std::io::Result<Arc<File>> {
        let direct = self.is_direct(file);
        self.open.get(file, direct)
    }

    /// `file` is complete: write what is left of it, and return its
    /// descriptor (to give it its mode and time and sync it). The writer
    /// keeps it open no longer.
    pub fn complete(&mut self, file: usize) -> std::io::Result<Arc<File>> {
        while let Some(i) = self.runs.iter().position(|r| r.file == file) {
            self.flush(i)?;
        }
        let out = self.handle(file)?;
        self.open.close(file);
        Ok(out)
    }

    /// Write every run (before giving up on a restore).
    pub fn flush_all(&mut self) -> std::io::Result<()> {
        while !self.runs.is_empty() {
            self.flush(0)?;
        }
        Ok(())
    }

    fn flush(&mut self, i: usize) -> std::io::Result<()> {
        let mut run = self.runs.remove(i);
        let result = self.write_run(&run);
        run.buf.len = 0;
        self.spare.push(run.buf);
        result
    }

    fn write_run(&mut self, run: &Run) -> std::io::Result<()> {
        let direct = self.is_direct(run.file);
        let out = self.open.get(run.file, direct)?;
        let written = if direct && crate::failpoint::fails("restore:o-direct-write") {
            Err(std::io::Error::from_raw_os_error(nix::libc::EINVAL))
        } else {
            out.write_all_at(run.buf.bytes(), run.offset)
        };
        match written {
            Err(e) if direct && e.raw_os_error() == Some(nix::libc::EINVAL) => {
                // The file system takes no O_DIRECT writes (or not of this
                // alignment): through the page cache from now on.
                self.direct_ok.store(false, Ordering::Relaxed);
                self.open.close(run.file);
                self.open
                    .get(run.file, false)?
                    .write_all_at(run.buf.bytes(), run.offset)
            }
            result => result,
        }
    }
}

/// Create a file being restored (`new`: it must not exist yet, so a path
/// the manifest lists twice fails), or open it again once `OpenFiles` let it
/// go (it must still exist). Only its owner can read it until the restore
/// gives it its mode. `direct`: with `O_DIRECT`; `EINVAL` (the file system
/// has none) comes back as is, and Linux has created the file by then (it
/// checks `O_DIRECT` after the file is made).
pub fn create_file(path: &Path, new: bool, direct: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(new).mode(0o600);
    if direct {
        if crate::failpoint::fails("restore:o-direct-open") {
            // As the kernel does it: the file is there, the open failed.
            options.open(path)?;
            return Err(std::io::Error::from_raw_os_error(nix::libc::EINVAL));
        }
        options.custom_flags(nix::fcntl::OFlag::O_DIRECT.bits());
    }
    options.open(path).map_err(|e| {
        if e.raw_os_error() == Some(nix::libc::EINVAL) {
            return e;
        }
        std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    })
}

/// Files being restored, opened on demand and kept open for the blocks that
/// follow (blocks come pack by pack, and a pack holds the blocks of a few
/// files at a time); at most `max` at once, well under the usual limit of
/// 1024 descriptors.
struct OpenFiles<'a> {
    paths: Vec<PathBuf>,
    created: Vec<bool>,
    /// A file and whether its descriptor has `O_DIRECT`.
    open: HashMap<usize, (Arc<File>, bool)>,
    max: usize,
    /// Cleared when opening with `O_DIRECT` failed with `EINVAL`.
    direct_ok: &'a AtomicBool,
}

/// Descriptors open at once for writing restored files, over all writers.
pub const MAX_OPEN: usize = 128;

impl<'a> OpenFiles<'a> {
    fn new(paths: Vec<PathBuf>, max: usize, direct_ok: &'a AtomicBool) -> OpenFiles<'a> {
        OpenFiles {
            created: vec![false; paths.len()],
            paths,
            open: HashMap::new(),
            max,
            direct_ok,
        }
    }

    fn close(&mut self, file: usize) {
        self.open.remove(&file);
    }

    /// Shared with the syncing thread, hence the `Arc`.
    fn get(&mut self, file: usize, direct: bool) -> std::io::Result<Arc<File>> {
        let direct = direct && self.direct_ok.load(Ordering::Relaxed);
        if let Some((f, d)) = self.open.get(&file)
            && *d == direct
        {
            return Ok(Arc::clone(f));
        }
        if self.open.len() >= self.max {
            self.open.clear();
        }
        let path = &self.paths[file];
        let new = !self.created[file];
        let (f, direct) = match create_file(path, new, direct) {
            Err(e) if direct && e.raw_os_error() == Some(nix::libc::EINVAL) => {
                self.direct_ok.store(false, Ordering::Relaxed);
                // A new file was created by the failed open (else it would
                // have failed with EEXIST), or not, depending on the kernel.
                (create_file(path, new && !path.exists(), false)?, false)
            }
            result => (result?, direct),
        };
        let f = Arc::new(f);
        self.created[file] = true;
        self.open.insert(file, (Arc::clone(&f), direct));
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: usize = 64 * 1024;
    /// a: 56 blocks (3.5 runs), b: 3 blocks and a last one of 12 KiB,
    /// c: not a multiple of ALIGN (buffered whatever the setting).
    const SIZES: [u64; 3] = [56 * BLOCK as u64, 3 * BLOCK as u64 + 12288, 5000];

    fn content(file: usize, offset: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| ((offset as usize + i) * 31 + file * 7) as u8)
            .collect()
    }

    /// The blocks of `SIZES` in an order with a run that fills up (a's
    /// first 20 blocks in order), gaps and interleaving (the rest of a, odd
    /// blocks down, then even ones up, with b in between), and runs cut
    /// short.
    fn order() -> Vec<(usize, u64)> {
        let at = |n: u64| n * BLOCK as u64;
        let mut order: Vec<(usize, u64)> = (0..20).map(|n| (0, at(n))).collect();
        order.extend((21..56).rev().step_by(2).map(|n| (0, at(n))));
        order.extend((0..4).map(|n| (1, at(n))));
        order.extend((20..56).step_by(2).map(|n| (0, at(n))));
        order.push((2, 0));
        order
    }

    /// Writes `order()` into DIR/f0..f2, calling `between(step)` before each
    /// block, and checks the files' bytes.
    fn restore_into(dir: &Path, direct_ok: &AtomicBool, between: &dyn Fn(usize)) {
        std::fs::create_dir(dir).unwrap();
        let paths: Vec<PathBuf> = (0..3).map(|f| dir.join(format!("f{f}"))).collect();
        let mut out = Output::new(paths.clone(), &SIZES, 2, direct_ok);
        let mut left = SIZES;
        for (step, (file, offset)) in order().into_iter().enumerate() {
            between(step);
            let len = (SIZES[file] - offset).min(BLOCK as u64) as usize;
            out.write(file, offset, &content(file, offset, len))
                .unwrap();
            left[file] -= len as u64;
            if left[file] == 0 {
                out.complete(file).unwrap().sync_all().unwrap();
            }
        }
        assert_eq!(left, [0, 0, 0]);
        assert!(out.runs.is_empty(), "complete files leave no runs");
        for (f, path) in paths.iter().enumerate() {
            let got = std::fs::read(path).unwrap();
            assert_eq!(got.len() as u64, SIZES[f], "{}", path.display());
            assert!(
                got == content(f, 0, SIZES[f] as usize),
                "{} differs",
                path.display()
            );
        }
    }

    /// Whether the file system of `dir` takes O_DIRECT writes.
    fn fs_takes_direct(dir: &Path) -> bool {
        let probe = dir.join("probe");
        let buf = AlignedBuf::new(ALIGN);
        let ok = create_file(&probe, true, true)
            .and_then(|f| f.write_all_at(&buf.buf[buf.start..buf.start + ALIGN], 0))
            .is_ok();
        std::fs::remove_file(&probe).unwrap();
        ok
    }

    #[test]
    fn blocks_in_any_order_make_the_same_files_directly_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let direct_ok = AtomicBool::new(true);
        restore_into(&dir.path().join("direct"), &direct_ok, &|_| {});
        // Else the test would have checked the buffered path twice.
        assert_eq!(
            direct_ok.load(Ordering::Relaxed),
            fs_takes_direct(dir.path()),
            "O_DIRECT given up on a file system that takes it, or kept on one that does not"
        );
        restore_into(
            &dir.path().join("buffered"),
            &AtomicBool::new(false),
            &|_| {},
        );
    }

    /// Another writer found that the file system refuses O_DIRECT while this
    /// one had runs of several files pending: they go through the page
    /// cache, nothing lost or doubled.
    #[test]
    fn giving_up_o_direct_with_runs_pending_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for at in [5, 25, 40, 50] {
            let direct_ok = AtomicBool::new(true);
            restore_into(&dir.path().join(format!("at{at}")), &direct_ok, &|step| {
                if step == at {
                    direct_ok.store(false, Ordering::Relaxed);
                }
            });
        }
    }

    #[test]
    fn a_cgroup_limit_bounds_the_memory_available() {
        assert_eq!(cgroup_room_of("max\n", "123\n"), None);
        assert_eq!(
            cgroup_room_of("4294967296\n", "1073741824\n"),
            Some(3 << 30)
        );
        assert_eq!(cgroup_room_of("100\n", "200\n"), Some(0));
    }

    #[test]
    fn auto_writes_directly_only_what_does_not_fit_in_half_the_memory() {
        let gib = 1u64 << 30;
        assert_eq!(DirectIo::Auto.decide(gib, Some(24 * gib)), None);
        assert_eq!(DirectIo::Auto.decide(12 * gib, Some(24 * gib)), None);
        let why = DirectIo::Auto.decide(13 * gib, Some(24 * gib)).unwrap();
        assert!(why.contains("half the memory available, 24.0 GiB"), "{why}");
        assert_eq!(DirectIo::Auto.decide(gib, None), None);
        assert!(DirectIo::Always.decide(1, Some(24 * gib)).is_some());
        assert_eq!(DirectIo::Never.decide(100 * gib, Some(gib)), None);
        assert!(memory_available().is_some_and(|m| m > 0));
    }

    #[test]
    fn aligned_buffers_start_on_a_page() {
        for _ in 0..8 {
            let b = AlignedBuf::new(RUN);
            assert_eq!(b.bytes().as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.room(), RUN);
        }
    }
}
