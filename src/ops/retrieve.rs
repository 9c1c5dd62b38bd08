//! Before a restore reads packs from an archive storage class (S3 Glacier),
//! ask for their retrieval and wait until they are readable: exactly the
//! packs the restore needs, nothing else (retrievals are billed per byte).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::{Context, human_bytes, progress::Progress};
use crate::codec::Id;
use crate::config::RepositoryConfig;
use crate::repo::Repository;
use crate::storage::ArchiveState;

const DEFAULT_DAYS: u32 = 7;
const DEFAULT_TIER: &str = "Standard";
const DEFAULT_POLL: Duration = Duration::from_secs(60);

/// How a restore treats archived packs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retrieval {
    /// Ask for them and wait until readable (the default).
    Wait,
    /// Ask for them and stop: the user runs the restore again later.
    NoWait,
    /// Only say what would be retrieved.
    DryRun,
}

/// Make sure every pack in `packs` can be read, retrieving archived ones.
pub fn ensure_readable(
    ctx: &Context,
    repo: &Repository,
    rc: &RepositoryConfig,
    packs: &BTreeSet<Id>,
    mode: Retrieval,
) -> Result<()> {
    if packs.is_empty() {
        return Ok(());
    }
    let unreadable = repo.unreadable_packs(packs)?;
    if unreadable.is_empty() {
        return Ok(());
    }
    let days = rc.s3.retrieval_days.unwrap_or(DEFAULT_DAYS);
    let tier = rc.s3.retrieval_tier.as_deref().unwrap_or(DEFAULT_TIER);
    let bytes: u64 = unreadable.iter().map(|p| p.size).sum();
    let to_ask: Vec<&Id> = unreadable
        .iter()
        .filter(|p| matches!(p.state, ArchiveState::Archived { .. }))
        .map(|p| &p.id)
        .collect();
    let class = unreadable
        .iter()
        .find_map(|p| match &p.state {
            ArchiveState::Archived { class } => Some(class.as_str()),
            _ => None,
        })
        .unwrap_or("an archive class");
    println!(
        "{} of the {} packs this restore needs ({}) are in {class}: {} retrieval{} to start, {} running (tier {tier}, readable for {days} days)",
        unreadable.len(),
        packs.len(),
        human_bytes(bytes),
        to_ask.len(),
        if to_ask.len() == 1 { "" } else { "s" },
        unreadable.len() - to_ask.len(),
    );
    if mode == Retrieval::DryRun {
        println!("dry run: no retrieval was started");
        return Ok(());
    }
    for id in &to_ask {
        repo.retrieve_pack(id, days, tier)?;
    }
    if mode == Retrieval::NoWait {
        bail!(
            "retrieval of {} packs ({}) is under way; nothing was restored yet; hint: run the same command again once they are readable (Standard retrievals take hours: 3-5 from GLACIER, up to 12 from DEEP_ARCHIVE), or leave out --no-wait to wait",
            unreadable.len(),
            human_bytes(bytes)
        );
    }
    let poll = rc.s3.retrieval_poll.unwrap_or(DEFAULT_POLL);
    let mut pending: Vec<Id> = unreadable.iter().map(|p| p.id).collect();
    let total = pending.len() as u64;
    let progress = Progress::count("waiting for retrieval (packs)", total, ctx.quiet);
    let started = Instant::now();
    super::watch_for_interrupts();
    loop {
        let mut still = Vec::new();
        for id in pending {
            match repo.pack_state(&id)? {
                ArchiveState::Readable => {}
                ArchiveState::Retrieving => still.push(id),
                // Expired or refused meanwhile: ask again.
                ArchiveState::Archived { .. } => {
                    repo.retrieve_pack(&id, days, tier)?;
                    still.push(id);
                }
            }
        }
        pending = still;
        progress.set(total - pending.len() as u64);
        if pending.is_empty() {
            progress.finish();
            if !ctx.quiet {
                println!(
                    "retrieved {total} packs in {}",
                    humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()))
                );
            }
            return Ok(());
        }
        let until = Instant::now() + poll;
        while Instant::now() < until {
            if super::interrupted() {
                bail!(
                    "interrupted while waiting for the retrieval of {} packs; hint: the retrieval goes on: run the restore again later",
                    pending.len()
                );
            }
            std::thread::sleep(poll.min(Duration::from_millis(250)));
        }
    }
}
