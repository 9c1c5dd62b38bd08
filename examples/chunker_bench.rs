//! The chunker's cut-point search against fastcdc's `cut_gear` (what it
//! replaced): the same cut points, and the speed of each, over random data with
//! the default parameters.
//!
//! `cargo run --release --example chunker_bench [MiB [rounds]]` (default 1024 MiB,
//! 7 rounds). The two alternate within each round so that a busy machine slows
//! both; MB/s count every byte of the data, the ones each chunk's minimum skips
//! included. Shared machines are noisy: compare medians of several runs.

use std::time::Instant;

use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};
use lifeboat::chunker::Cutter;
use lifeboat::format::ChunkerParams;

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let mib = args.next().unwrap_or(1024);
    let rounds = args.next().unwrap_or(7);

    let mut data = vec![0u8; mib << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for word in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
    }

    let p = ChunkerParams::default();
    let seed = 0x5eed_0f1f_eb0a_0001;
    let (mask_s, mask_l) = select_masks(p.avg, Normalization::Level1);
    let (gear, gear_ls) = get_gear_with_seed(seed);
    let cutter = Cutter::new(p, seed);

    let old = |data: &[u8]| {
        cut_gear(
            data,
            p.min,
            p.avg,
            p.max,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
            &gear,
            &gear_ls,
        )
        .1
    };
    let new = |data: &[u8]| cutter.cut(data);
    // The chunker offers at most two maximum chunks at a time.
    let run = |cut: &dyn Fn(&[u8]) -> usize| {
        let started = Instant::now();
        let mut cuts = Vec::new();
        let mut start = 0;
        while start < data.len() {
            start += cut(&data[start..data.len().min(start + 2 * p.max)]);
            cuts.push(start);
        }
        let mb_s = data.len() as f64 / 1e6 / started.elapsed().as_secs_f64();
        (mb_s, cuts)
    };

    let (mut olds, mut news, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (o, old_cuts) = run(&old);
        let (n, new_cuts) = run(&new);
        assert_eq!(old_cuts, new_cuts, "cut points differ");
        println!(
            "round {round}: cut_gear {o:6.0} MB/s   lifeboat {n:6.0} MB/s   x{:.2}   ({} chunks)",
            n / o,
            new_cuts.len()
        );
        olds.push(o);
        news.push(n);
        ratios.push(n / o);
    }
    println!(
        "median over {rounds} rounds of {mib} MiB: cut_gear {:.0} MB/s, lifeboat {:.0} MB/s, x{:.2} (median of the rounds' ratios)",
        median(olds),
        median(news),
        median(ratios)
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
