//! Packs in an archive storage class (S3 Glacier Flexible Retrieval, Deep
//! Archive) cannot be read until a retrieval made them readable for a while.
//! A restore finds out which of the packs it needs are archived, asks for
//! exactly those, and waits (`ops::retrieve`).
//!
//! Only packs are ever archived: everything lifeboat reads to list, back up,
//! prune and fetch WAL is written in a class that can be read at once.

use std::collections::BTreeSet;

use super::{Index, Repository, Result};
use crate::codec::Id;
use crate::format::{self, BackupRecord};
use crate::storage::ArchiveState;

/// A pack a reader needs that cannot be read now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedPack {
    pub id: Id,
    pub size: u64,
    pub state: ArchiveState,
}

impl Repository {
    /// The packs holding the blobs of `records` (blobs no index lists are
    /// left out: the restore's own check names them).
    pub fn packs_of<'a>(
        &self,
        index: &Index,
        records: impl IntoIterator<Item = &'a BackupRecord>,
    ) -> BTreeSet<Id> {
        records
            .into_iter()
            .flat_map(|r| r.blobs())
            .filter_map(|id| index.get(id).map(|loc| loc.pack))
            .collect()
    }

    /// Which of `packs` cannot be read now, and whether a retrieval runs. One
    /// listing finds the archived ones; only those are asked about one by one.
    pub fn unreadable_packs(&self, packs: &BTreeSet<Id>) -> Result<Vec<ArchivedPack>> {
        let mut out = Vec::new();
        for obj in self.storage.list(format::DATA_DIR)? {
            if !obj.is_archived() {
                continue;
            }
            let Some(id) = obj
                .path
                .rsplit('/')
                .next()
                .and_then(|name| name.parse::<Id>().ok())
            else {
                continue;
            };
            if !packs.contains(&id) {
                continue;
            }
            let state = self.storage.archive_state(&obj.path)?;
            if state != ArchiveState::Readable {
                out.push(ArchivedPack {
                    id,
                    size: obj.size,
                    state,
                });
            }
        }
        Ok(out)
    }

    /// Ask the storage to make an archived pack readable for `days` days.
    pub fn retrieve_pack(&self, id: &Id, days: u32, tier: &str) -> Result<()> {
        Ok(self
            .storage
            .request_retrieval(&format::pack_path(id), days, tier)?)
    }

    /// Whether the pack can be read now.
    pub fn pack_state(&self, id: &Id) -> Result<ArchiveState> {
        Ok(self.storage.archive_state(&format::pack_path(id))?)
    }
}
