//! Content-defined chunking of a stream (FastCDC 2020, seeded gear table).
//!
//! fastcdc's own `StreamCDC` moves the rest of its buffer after every chunk and
//! tops it up in small reads, which made it the slowest stage of a backup
//! (about 400 MB/s here, against 2.5 GB/s for the cut-point search itself).
//! This keeps a buffer of twice the maximum chunk size and compacts it only when
//! less than one maximum chunk is left, so each byte is copied about once.
//! Cut points are the same as `StreamCDC`'s for the same parameters and seed.
//!
//! # The cut-point search
//!
//! [`Cutter::cut`] finds the same cut points as fastcdc's `v2020::cut_gear`,
//! which rolls the gear hash `h` two bytes per step from 0 at `min` (rounded down
//! to even): at each even position `a` it computes `h = (h << 2) + gear_ls[src[a]]`
//! and cuts before `a` if `h & (mask << 1) == 0`, then `h += gear[src[a + 1]]` and
//! cuts before `a + 1` if `h & mask == 0`. The strict mask applies before `avg`
//! (or before the end of the data when that comes first), the loose one from
//! there to `max` (or the end), both ends rounded down to even; with no hit the
//! chunk is `max` bytes (or the rest of the data). That is one long chain of
//! dependent additions (about three cycles per two bytes), so the CPU mostly waits.
//!
//! The search here does the same arithmetic in a different order. Each step
//! doubles what every earlier byte has added to `h` (mod 2^64), once per byte, so
//! a byte's contribution is gone 64 bytes later: the hash before an even position
//! `q` equals the same steps rolled from 0 over the 64 bytes before `q` (or from
//! `min`, where `cut_gear` itself starts from 0, when that is closer). So a stretch
//! starting at an even position can be hashed and tested on its own with exactly
//! the values `cut_gear` has there. The search splits its region into blocks of
//! four lanes of 8 KiB; each lane starts from its 64-byte warm-up (the first from
//! the previous block's hash), and the four step together, pair by pair, with
//! `cut_gear`'s step and tests: four independent chains that the CPU overlaps.
//! When some lane hits in its pair at offset `j`, no lane hit before `j`, so the
//! first cut point is the first hit from `j` on in lane 0, else in lane 1, and so
//! on: those stretches are rescanned one at a time. With no hit, the last lane's
//! hash carries on into the next block; what is left after the last whole block is
//! scanned as one stretch. Tests compare the cut points with `cut_gear`'s for random
//! and repetitive data, several seeds, parameters and masks; `examples/chunker_bench.rs`
//! measures both (about 1.4 times as fast on this project's 2-core VM, noisily).

use std::io::{self, Read};

use fastcdc::v2020::{Normalization, get_gear_with_seed, select_masks};

use crate::format::ChunkerParams;

pub struct Chunker<R> {
    src: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    max: usize,
    cutter: Cutter,
}

impl<R: Read> Chunker<R> {
    pub fn new(src: R, params: ChunkerParams, seed: u64) -> Chunker<R> {
        Chunker {
            src,
            buf: vec![0u8; 2 * params.max],
            start: 0,
            end: 0,
            eof: false,
            max: params.max,
            cutter: Cutter::new(params, seed),
        }
    }

    /// Read until at least one maximum-size chunk is buffered, or the end.
    fn fill(&mut self) -> io::Result<()> {
        if self.end - self.start >= self.max || self.eof {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < self.buf.len() {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk, or `None` at the end of the stream.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.next_chunk_reusing(Vec::new())
    }

    /// Like `next_chunk`, writing into `out` (cleared first) so its allocation
    /// is reused: fresh multi-megabyte buffers cost a page fault per 4 KiB.
    pub fn next_chunk_reusing(&mut self, mut out: Vec<u8>) -> io::Result<Option<Vec<u8>>> {
        self.fill()?;
        if self.start == self.end {
            return Ok(None);
        }
        let len = self.cutter.cut(&self.buf[self.start..self.end]);
        out.clear();
        out.extend_from_slice(&self.buf[self.start..self.start + len]);
        self.start += len;
        Ok(Some(out))
    }
}

/// The cut-point search for one set of parameters and seed (see the module
/// documentation).
pub struct Cutter {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
    gear: Gear,
}

impl Cutter {
    pub fn new(params: ChunkerParams, seed: u64) -> Cutter {
        let (mask_s, mask_l) = select_masks(params.avg, Normalization::Level1);
        Cutter {
            params,
            mask_s,
            mask_l,
            gear: Gear::with_seed(seed),
        }
    }

    /// The length of the chunk at the start of `data`, which holds at least
    /// `max` bytes unless it is the end of the stream: what fastcdc's `cut_gear`
    /// returns for the same parameters and seed.
    pub fn cut(&self, data: &[u8]) -> usize {
        let p = &self.params;
        cut_point(
            data,
            p.min,
            p.avg,
            p.max,
            self.mask_s,
            self.mask_l,
            &self.gear,
        )
    }
}

/// fastcdc's seeded gear table and its left-shifted twin.
struct Gear {
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
}

impl Gear {
    fn with_seed(seed: u64) -> Gear {
        let (gear, gear_ls) = get_gear_with_seed(seed);
        let table = |t: &[u64]| -> Box<[u64; 256]> {
            Box::new(t.try_into().expect("a gear table has 256 entries"))
        };
        Gear {
            gear: table(&gear),
            gear_ls: table(&gear_ls),
        }
    }
}

/// Bytes of history in the gear hash: older bytes are shifted out.
const WINDOW: usize = 64;
/// Lanes scanned together, and the bytes of each per block (even, and at least
/// `WINDOW`, whose bytes before a lane are its warm-up).
const LANES: usize = 4;
const LANE: usize = 8 * 1024;
const BLOCK: usize = LANES * LANE;

/// `cut_gear`'s two-byte step at an even position, without the tests.
#[inline(always)]
fn roll2(h: u64, a: u8, b: u8, g: &Gear) -> u64 {
    (h << 2)
        .wrapping_add(g.gear_ls[a as usize])
        .wrapping_add(g.gear[b as usize])
}

/// The length `cut_gear` returns for these arguments, with the masks' shifted
/// twins `mask << 1` as lifeboat has always passed them.
fn cut_point(
    data: &[u8],
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
    gear: &Gear,
) -> usize {
    let mut remaining = data.len();
    if remaining <= min {
        return remaining;
    }
    let mut center = avg;
    if remaining > max {
        remaining = max;
    } else if remaining < center {
        center = remaining;
    }
    // cut_gear steps over pairs from `min / 2` to `center / 2` with the strict
    // mask, then on to `remaining / 2` with the loose one.
    let first = min & !1;
    let strict_end = center & !1;
    let end = remaining & !1;
    let strict = Search {
        data: &data[..end],
        first,
        mask: mask_s,
        gear,
    };
    if strict_end > first
        && let Some(cut) = strict.first_hit(first, strict_end)
    {
        return cut;
    }
    let from = first.max(strict_end);
    let loose = Search {
        mask: mask_l,
        ..strict
    };
    if end > from
        && let Some(cut) = loose.first_hit(from, end)
    {
        return cut;
    }
    remaining
}

/// One mask's region of one `cut_gear` call: `data` ends at the last pair it
/// steps over, and its hash starts from 0 at `first`.
struct Search<'a> {
    data: &'a [u8],
    first: usize,
    mask: u64,
    gear: &'a Gear,
}

impl Search<'_> {
    /// The first cut point in `from..to` (both even).
    fn first_hit(&self, from: usize, to: usize) -> Option<usize> {
        let mut h = self.hash_before(from);
        let mut p = from;
        while to - p >= BLOCK {
            match self.block(p, h) {
                Ok(j) => return Some(self.resolve(p, j)),
                Err(end) => h = end,
            }
            p += BLOCK;
        }
        self.scan(p, to, h).ok()
    }

    /// `cut_gear`'s hash just before the even position `q`.
    fn hash_before(&self, q: usize) -> u64 {
        let from = self.first.max(q.saturating_sub(WINDOW));
        self.data[from..q]
            .chunks_exact(2)
            .fold(0, |h, pair| roll2(h, pair[0], pair[1], self.gear))
    }

    /// The first cut point in `from..to` (both even), stepping on from the hash
    /// `h` before `from`; or the hash at `to`.
    fn scan(&self, from: usize, to: usize, mut h: u64) -> Result<usize, u64> {
        let (g, mask, mask_ls) = (self.gear, self.mask, self.mask << 1);
        for (i, pair) in self.data[from..to].chunks_exact(2).enumerate() {
            h = (h << 2).wrapping_add(g.gear_ls[pair[0] as usize]);
            if h & mask_ls == 0 {
                return Ok(from + 2 * i);
            }
            h = h.wrapping_add(g.gear[pair[1] as usize]);
            if h & mask == 0 {
                return Ok(from + 2 * i + 1);
            }
        }
        Err(h)
    }

    /// Step the lanes of the block at `p` together, lane 0 on from the hash `h0`
    /// before `p`: `Ok(j)` if a lane hits at its pair starting at offset `j`
    /// (and none before), else the hash at the end of the block.
    fn block(&self, p: usize, h0: u64) -> Result<usize, u64> {
        let (g, mask, mask_ls) = (self.gear, self.mask, self.mask << 1);
        let block = &self.data[p..p + BLOCK];
        let mut h = [0u64; LANES];
        h[0] = h0;
        for i in (0..WINDOW).step_by(2) {
            for (k, h) in h.iter_mut().enumerate().skip(1) {
                let a = k * LANE - WINDOW + i;
                *h = roll2(*h, block[a], block[a + 1], g);
            }
        }
        for j in (0..LANE).step_by(2) {
            for (k, h) in h.iter_mut().enumerate() {
                *h = (*h << 2).wrapping_add(g.gear_ls[block[k * LANE + j] as usize]);
                if *h & mask_ls == 0 {
                    return Ok(j);
                }
            }
            for (k, h) in h.iter_mut().enumerate() {
                *h = h.wrapping_add(g.gear[block[k * LANE + j + 1] as usize]);
                if *h & mask == 0 {
                    return Ok(j);
                }
            }
        }
        Err(h[LANES - 1])
    }

    /// The first cut point of the block at `p`, where a lane hit at offset `j`.
    #[cold]
    fn resolve(&self, p: usize, j: usize) -> usize {
        for k in 0..LANES {
            let q = p + k * LANE + j;
            if let Ok(cut) = self.scan(q, p + (k + 1) * LANE, self.hash_before(q)) {
                return cut;
            }
        }
        unreachable!("a lane of the block hit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastcdc::v2020::cut_gear;

    /// xorshift64*: reproducible test data.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn bytes(&mut self, len: usize) -> Vec<u8> {
            let mut v = Vec::with_capacity(len + 8);
            while v.len() < len {
                v.extend_from_slice(&self.next().to_le_bytes());
            }
            v.truncate(len);
            v
        }
        /// A mask of `bits` random bits below `top`.
        fn mask(&mut self, bits: u32, top: u32) -> u64 {
            let mut m = 0u64;
            while m.count_ones() < bits {
                m |= 1 << (self.next() % top as u64);
            }
            m
        }
    }

    /// Chunk all of `data` both ways, at each step from where the previous
    /// chunk ended, as the chunker does; also with the data cut short at each
    /// length the chunker can offer (`max` to `2 * max`, or the end).
    fn assert_same_cuts(
        data: &[u8],
        min: usize,
        avg: usize,
        max: usize,
        masks: (u64, u64),
        seed: u64,
    ) {
        let gear = Gear::with_seed(seed);
        let (mask_s, mask_l) = masks;
        let mut start = 0;
        let mut n = 0;
        while start < data.len() {
            let view = &data[start..data.len().min(start + 2 * max - n % (max + 1))];
            let (_, theirs) = cut_gear(
                view,
                min,
                avg,
                max,
                mask_s,
                mask_l,
                mask_s << 1,
                mask_l << 1,
                &gear.gear[..],
                &gear.gear_ls[..],
            );
            let ours = cut_point(view, min, avg, max, mask_s, mask_l, &gear);
            assert_eq!(
                ours,
                theirs,
                "cut of {} bytes at {start} (params {min}/{avg}/{max}, masks {mask_s:#x}/{mask_l:#x}, seed {seed:#x})",
                view.len()
            );
            // A zero mask, or a minimum of 0, can cut before the first byte.
            start += theirs.max(1);
            n += 1;
        }
    }

    fn level1(avg: usize) -> (u64, u64) {
        select_masks(avg, Normalization::Level1)
    }

    /// Data where hits are rare or everywhere: constant bytes, short and long
    /// periods, and runs of one byte inside random data.
    fn low_entropy(rng: &mut Rng, len: usize) -> Vec<Vec<u8>> {
        let periodic = |period: &[u8]| {
            period
                .iter()
                .copied()
                .cycle()
                .take(len)
                .collect::<Vec<u8>>()
        };
        let mut runs = rng.bytes(len);
        for run in runs.chunks_mut(3000).step_by(2) {
            run.fill(0);
        }
        vec![
            vec![0; len],
            vec![0xff; len],
            periodic(b"ab"),
            periodic(b"xyz"),
            periodic(&rng.bytes(63)),
            periodic(&rng.bytes(64)),
            periodic(&rng.bytes(65)),
            periodic(&rng.bytes(5000)),
            periodic(b"INSERT INTO t VALUES (1, 'lifeboat');\n"),
            runs,
        ]
    }

    #[test]
    fn same_cut_points_as_cut_gear_default_params() {
        let p = ChunkerParams::default();
        let (min, avg, max) = (p.min, p.avg, p.max);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let masks = level1(avg);
        // One long stream, then many lengths around the boundaries, of the
        // stream and of other data (where the hits fall elsewhere).
        let long = rng.bytes(16 << 20);
        assert_same_cuts(&long, min, avg, max, masks, 0x1234_5678);
        let lens = [
            0,
            1,
            2,
            63,
            64,
            65,
            4096,
            min - 1,
            min,
            min + 1,
            min + 2,
            min + 3,
            min + 64,
            min + BLOCK,
            min + BLOCK + 1,
            avg - 2,
            avg - 1,
            avg,
            avg + 1,
            avg + 2,
            avg + BLOCK - 1,
            max - 1,
            max,
            max + 1,
            max + 2,
            2 * max + 3,
        ];
        let seeds = [0, 1, 0x1234_5678, rng.next()];
        for (i, len) in lens.into_iter().enumerate() {
            let seed = seeds[i % seeds.len()];
            assert_same_cuts(&long[..len], min, avg, max, masks, seed);
            let other = rng.bytes(len.min(avg + 4 * BLOCK));
            assert_same_cuts(&other, min, avg, max, masks, seeds[(i + 1) % seeds.len()]);
        }
        for data in low_entropy(&mut rng, max + 999) {
            assert_same_cuts(&data, min, avg, max, masks, 7);
        }
    }

    #[test]
    fn same_cut_points_as_cut_gear_small_params() {
        let mut rng = Rng(42);
        // Regions smaller than a block (only the plain scan), regions of a few
        // blocks, a strict region shorter than the hash's history.
        let params: [(usize, usize, usize); 5] = [
            (2 << 10, 8 << 10, 32 << 10),
            (4 << 10, 64 << 10, 256 << 10),
            (64 << 10, 256 << 10, 1 << 20),
            (64 << 10, (64 << 10) + 40, 512 << 10),
            (64, 256, 1024),
        ];
        for (min, avg, max) in params {
            let masks = level1(avg);
            for seed in [0, 3, rng.next()] {
                assert_same_cuts(&rng.bytes(4 * max + 77), min, avg, max, masks, seed);
            }
            for data in low_entropy(&mut rng, 2 * max + 1) {
                assert_same_cuts(&data, min, avg, max, masks, 11);
            }
        }
    }

    /// Masks of few bits hit in every lane and at every offset of a block, and
    /// masks of many bits rarely; also the top and bottom bits, and sizes that
    /// put the strict and loose regions in odd places.
    #[test]
    fn same_cut_points_as_cut_gear_any_masks() {
        let mut rng = Rng(7);
        let data = rng.bytes(3 << 20);
        let sizes: [(usize, usize, usize); 5] = [
            (0, 64 << 10, 256 << 10),
            (4 << 10, 64 << 10, 256 << 10),
            (2 << 10, 250 << 10, 256 << 10),
            (200 << 10, 100 << 10, 256 << 10),
            (0, 0, 160 << 10),
        ];
        for (min, avg, max) in sizes {
            for bits in [4, 9, 12, 13, 14, 15, 16, 18, 22] {
                let masks = (rng.mask(bits + 1, 64), rng.mask(bits, 64));
                let from = (rng.next() % (1 << 20)) as usize;
                assert_same_cuts(
                    &data[from..from + (1 << 20)],
                    min,
                    avg,
                    max,
                    masks,
                    rng.next(),
                );
            }
        }
        let edges = [
            (1 << 63) | (1 << 20),
            1 | (1 << 12) | (1 << 40),
            u64::MAX,
            0,
        ];
        for (mask_s, mask_l) in edges.iter().zip(edges.iter().rev()) {
            assert_same_cuts(
                &data[..1 << 20],
                4 << 10,
                64 << 10,
                256 << 10,
                (*mask_s, *mask_l),
                5,
            );
        }
    }

    /// cut_gear wants even sizes (it asserts so in debug builds) but copes with
    /// odd ones, and so must this.
    #[test]
    fn same_cut_points_as_cut_gear_odd_sizes() {
        if cfg!(debug_assertions) {
            return;
        }
        let mut rng = Rng(99);
        let data = rng.bytes(2 << 20);
        for (min, avg, max) in [
            (4097, 65_537, 262_145),
            (4097, 65_536, 262_143),
            (1, 3, 262_145),
        ] {
            for bits in [12, 14, 16] {
                let masks = (rng.mask(bits + 1, 48), rng.mask(bits, 48));
                assert_same_cuts(&data, min, avg, max, masks, 1);
            }
        }
    }

    /// Reads in small uneven pieces, like a pipe.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.1 = self.1 % 7 + 1;
            let n = out.len().min(self.0.len()).min(self.1 * 9000);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn same_cut_points_as_fastcdc_streamcdc() {
        let mut data = Vec::new();
        let mut x: u64 = 42;
        while data.len() < 20 << 20 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            data.extend_from_slice(&x.to_le_bytes()[..(x % 7) as usize + 1]);
        }
        let p = ChunkerParams::default();
        let seed = 0x1234_5678;
        let ours: Vec<Vec<u8>> = {
            let mut c = Chunker::new(Trickle(&data, 0), p, seed);
            std::iter::from_fn(|| c.next_chunk().unwrap()).collect()
        };
        let theirs: Vec<Vec<u8>> = fastcdc::v2020::StreamCDC::with_level_and_seed(
            &data[..],
            p.min,
            p.avg,
            p.max,
            Normalization::Level1,
            seed,
        )
        .map(|c| c.unwrap().data)
        .collect();
        assert!(ours.len() > 5);
        assert_eq!(ours, theirs);
        assert_eq!(ours.concat(), data);
    }

    #[test]
    fn empty_and_tiny_streams() {
        let p = ChunkerParams::default();
        let mut c = Chunker::new(&b""[..], p, 1);
        assert!(c.next_chunk().unwrap().is_none());
        let mut c = Chunker::new(&b"abc"[..], p, 1);
        assert_eq!(c.next_chunk().unwrap().unwrap(), b"abc");
        assert!(c.next_chunk().unwrap().is_none());
    }
}
