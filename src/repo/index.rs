//! The in-memory union of all index files: where every durable blob lives.

use std::collections::{HashMap, HashSet};

use super::{Damage, Repository, Result};
use crate::codec::{BlobType, Id};
use crate::format::{self, IndexFile, PackEntry, PackTrailer};
use crate::storage::ObjectMeta;

#[derive(Debug, Clone, Copy)]
pub struct BlobLocation {
    pub pack: Id,
    pub ty: BlobType,
    pub offset: u64,
    pub length: u32,
    pub raw_length: u32,
    pub group: Option<crate::format::GroupPos>,
}

/// Blob id -> location, plus each pack's wrapped session key.
#[derive(Default)]
pub struct Index {
    blobs: HashMap<Id, BlobLocation>,
    pack_keys: HashMap<Id, Vec<u8>>,
    pack_sizes: HashMap<Id, u64>,
    /// Index files that could not be read. Their blobs are unknown: a reader
    /// that needs one fails naming it; prune re-indexes their packs.
    pub damaged: Vec<Damage>,
}

impl Index {
    pub fn get(&self, id: &Id) -> Option<&BlobLocation> {
        self.blobs.get(id)
    }
    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }
    pub fn wrapped_key(&self, pack: &Id) -> Option<&[u8]> {
        self.pack_keys.get(pack).map(|v| v.as_slice())
    }
    pub fn pack_size(&self, pack: &Id) -> Option<u64> {
        self.pack_sizes.get(pack).copied()
    }
    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }
    pub fn pack_count(&self) -> usize {
        self.pack_sizes.len()
    }

    pub(crate) fn add_pack(&mut self, p: &PackEntry) -> std::result::Result<(), String> {
        let key = crate::codec::b64_decode(&p.session_key).map_err(|e| e.to_string())?;
        self.pack_keys.insert(p.id, key);
        self.pack_sizes.insert(p.id, p.size);
        for b in &p.blobs {
            self.blobs.insert(
                b.id,
                BlobLocation {
                    pack: p.id,
                    ty: b.ty,
                    offset: b.offset,
                    length: b.length,
                    raw_length: b.raw_length,
                    group: b.group,
                },
            );
        }
        Ok(())
    }
}

/// What packs that no readable index lists hold (see `read_unindexed`).
pub(crate) struct Unindexed {
    pub packs: Vec<PackEntry>,
    pub unreadable: Vec<(Id, Damage)>,
    /// In an archive storage class: what they hold is unknown until retrieved.
    pub archived: Vec<Id>,
}

/// Readable index files with their paths, and the damaged ones.
pub(crate) type IndexFiles = (Vec<(String, IndexFile)>, Vec<Damage>);

impl Repository {
    /// Load and authenticate every index file; damaged ones are set aside in
    /// `Index::damaged` so that one bad file does not stop unaffected restores.
    pub fn load_index(&self) -> Result<Index> {
        let (files, damaged) = self.load_index_files()?;
        let mut index = Index {
            damaged,
            ..Index::default()
        };
        for (_, file) in &files {
            for p in &file.packs {
                index.add_pack(p).map_err(|e| self.corrupt("index", e))?;
            }
        }
        Ok(index)
    }

    /// Every readable index file with its path, and the damaged ones.
    pub(crate) fn load_index_files(&self) -> Result<IndexFiles> {
        let mut files = Vec::new();
        let mut damaged = Vec::new();
        let objs = self.storage.list(format::INDEX_DIR)?;
        let read = super::parallel_map(&objs, super::METADATA_READERS, |o| {
            self.read_index_file(&o.path)
        });
        for (obj, file) in objs.into_iter().zip(read) {
            match file {
                Ok(f) => files.push((obj.path, f)),
                Err(e) if e.is_damage() => damaged.push(Damage::from_error(&obj.path, &e)),
                Err(e) => return Err(e),
            }
        }
        Ok((files, damaged))
    }

    fn read_index_file(&self, path: &str) -> Result<IndexFile> {
        let bytes = self.get_verified(path)?;
        let json = self.unseal(path, "index", &bytes)?;
        let file: IndexFile =
            serde_json::from_slice(&json).map_err(|e| self.corrupt(path, e.to_string()))?;
        for p in &file.packs {
            crate::codec::b64_decode(&p.session_key)
                .map_err(|e| self.corrupt(path, format!("pack {}: {e}", p.id)))?;
        }
        Ok(file)
    }

    /// The packs in storage, by id (files under `data/` not named by an id
    /// are not lifeboat's and are left out).
    pub(crate) fn list_packs(&self) -> Result<HashMap<Id, ObjectMeta>> {
        Ok(self
            .storage
            .list(format::DATA_DIR)?
            .into_iter()
            .filter_map(|o| Some((o.path.rsplit('/').next()?.parse().ok()?, o)))
            .collect())
    }

    /// The packs of `stored` that no readable index lists, rebuilt from the
    /// packs themselves (oldest id first), and those that cannot be read.
    pub(crate) fn read_unindexed(
        &self,
        stored: &HashMap<Id, ObjectMeta>,
        indexed: &HashSet<Id>,
    ) -> Result<Unindexed> {
        let mut ids: Vec<&Id> = stored.keys().filter(|id| !indexed.contains(id)).collect();
        ids.sort();
        let mut entries = Vec::new();
        let mut damaged = Vec::new();
        let mut archived = Vec::new();
        for id in ids {
            let path = format::pack_path(id);
            match self.read_pack_entry(&path) {
                Ok(e) => entries.push(e),
                Err(e) if e.is_damage() => damaged.push((*id, Damage::from_error(&path, &e))),
                Err(super::RepoError::Archived { .. }) => archived.push(*id),
                Err(e) => return Err(e),
            }
        }
        Ok(Unindexed {
            packs: entries,
            unreadable: damaged,
            archived,
        })
    }

    /// Rebuild a pack's index entry from the pack itself (its header and its
    /// sealed trailer), checking that the pack's content matches its name.
    pub(crate) fn read_pack_entry(&self, path: &str) -> Result<PackEntry> {
        self.read_pack(path).map(|(_, entry)| entry)
    }

    /// A pack's bytes, checked against its name, and the entry its own header
    /// and trailer make for it.
    pub(crate) fn read_pack(&self, path: &str) -> Result<(Vec<u8>, PackEntry)> {
        let bytes = self.get_verified(path)?;
        let env =
            format::parse_pack_envelope(&bytes).map_err(|e| self.corrupt(path, e.to_string()))?;
        let json = self.unseal(path, "pack", env.trailer)?;
        let trailer: PackTrailer =
            serde_json::from_slice(&json).map_err(|e| self.corrupt(path, e.to_string()))?;
        let entry = PackEntry {
            id: Id::of_stored(&bytes),
            size: bytes.len() as u64,
            session_key: crate::codec::b64_encode(env.wrapped_key),
            blobs: trailer.blobs,
        };
        Ok((bytes, entry))
    }

    /// Write one index file naming `packs`, which must already be durable.
    pub(crate) fn write_index(&self, packs: Vec<PackEntry>) -> Result<Option<Id>> {
        if packs.is_empty() {
            return Ok(None);
        }
        let file = IndexFile {
            version: format::FORMAT_VERSION,
            packs,
        };
        self.put_sealed(format::INDEX_DIR, "index", &super::to_json(&file))
            .map(Some)
    }
}
