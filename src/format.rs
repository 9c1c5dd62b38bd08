//! The persisted types of the repository, exactly as docs/FORMAT.md describes them.
//!
//! Only data definitions and (de)serialisation live here; what to write when is
//! `repo`'s business. Every top-level object carries a `version`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::codec::{BlobType, CodecError, Id};
use crate::pg::dumpfile::DumpSummary;
use crate::pg::wal::Lsn;

/// The repository format this build writes and the newest it can read.
pub const FORMAT_VERSION: u32 = 1;
pub const FORMAT_NAME: &str = "lifeboat-repository";
pub const PACK_MAGIC: &[u8; 8] = b"LBPACK\x00\x01";

pub const CONFIG_PATH: &str = "config";
/// Physical backups cut files into blocks at fixed offsets of this size.
pub const FILE_BLOCK: usize = 64 * 1024;
/// The new blocks among this many consecutive ones are stored as one group
/// (1 MiB): compressed together they take 15 to 20 % less room than one by one.
pub const BLOCKS_PER_GROUP: usize = 16;
pub const KEYS_DIR: &str = "keys/";
pub const DATA_DIR: &str = "data/";
pub const INDEX_DIR: &str = "index/";
pub const BACKUPS_DIR: &str = "backups/";
pub const LOCKS_DIR: &str = "locks/";
pub const PINS_DIR: &str = "pins/";
pub const WAL_DIR: &str = "wal/";

pub fn pack_path(id: &Id) -> String {
    let h = id.to_hex();
    format!("{DATA_DIR}{}/{h}", &h[..2])
}

/// The plaintext `config` object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoConfigFile {
    pub format: String,
    pub version: u32,
    pub id: String,
    pub created: DateTime<Utc>,
    pub mode: KeyMode,
    /// base64 of sealed("config", RepoSettings)
    pub sealed: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeyMode {
    Passphrase,
    Recipients,
}

/// Settings that steer writing; sealed so storage access cannot alter them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepoSettings {
    pub recipients: Vec<String>,
    pub chunker: ChunkerParams,
    pub pack_size: usize,
    pub compression_level: i32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min: usize,
    pub avg: usize,
    pub max: usize,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min: 512 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
        }
    }
}

pub const DEFAULT_PACK_SIZE: usize = 16 * 1024 * 1024;
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 1;

/// `keys/<id>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum KeyFile {
    Passphrase {
        version: u32,
        kdf: crate::codec::KdfParams,
        /// base64 of nonce || ciphertext of `KeyMaterial`
        ciphertext: String,
    },
    Age {
        version: u32,
        /// base64 of a binary age file holding `KeyMaterial`
        ciphertext: String,
    },
}

/// What a key file protects.
#[derive(Serialize, Deserialize)]
pub struct KeyMaterial {
    pub metadata_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// `index/<id>`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct IndexFile {
    pub version: u32,
    pub packs: Vec<PackEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackEntry {
    pub id: Id,
    pub size: u64,
    /// base64 of the session key wrapped to the recipients (age binary).
    pub session_key: String,
    pub blobs: Vec<BlobEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlobEntry {
    pub id: Id,
    #[serde(rename = "type")]
    pub ty: BlobType,
    pub offset: u64,
    pub length: u32,
    pub raw_length: u32,
    /// Set when the blob is stored in a group (FORMAT.md, "Groups"): `offset`
    /// and `length` are then the group's, shared by all its members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupPos>,
}

/// Where a member's plaintext lies in its group's: bytes `start..start +
/// raw_length` of the group's `size`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupPos {
    pub start: u32,
    pub size: u32,
}

impl GroupPos {
    /// A member of `raw_length` bytes cut out of its decoded group; `None` if
    /// it does not lie within it.
    pub fn member(self, group: &[u8], raw_length: u32) -> Option<&[u8]> {
        let start = self.start as usize;
        group.get(start..start.checked_add(raw_length as usize)?)
    }
}

/// The sealed trailer of a pack.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PackTrailer {
    pub blobs: Vec<BlobEntry>,
}

/// `backups/<id>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupRecord {
    pub version: u32,
    pub kind: BackupKind,
    pub target: String,
    pub host: String,
    pub lifeboat: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub database: DatabaseInfo,
    #[serde(default)]
    pub tools: BTreeMap<String, String>,
    pub streams: Vec<Stream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump: Option<DumpSummary>,
    /// Physical backups: where the backup sits in the WAL, and the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical: Option<PhysicalInfo>,
    pub stats: BackupStats,
    /// A copy made by `lifeboat copy` into a repository with other keys: the
    /// backup it was copied from (copies between repositories with the same
    /// keys are the same record, and have no such field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<CopiedFrom>,
}

/// Where a re-encrypted copy came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CopiedFrom {
    /// The source repository's id (its `config`).
    pub repository: String,
    pub backup: Id,
}

/// What a base backup needs restored with it, and what it can reach.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhysicalInfo {
    /// `pg_control_system()`'s system identifier: which cluster's WAL applies.
    pub system_identifier: u64,
    pub timeline: u32,
    /// Replay starts at the checkpoint at `start_lsn`; the copy is consistent
    /// once WAL up to `stop_lsn` is replayed.
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    /// The server's clock when the backup stopped: the earliest time a
    /// point-in-time restore from this backup can reach.
    pub stop_time: DateTime<Utc>,
    /// The next transaction id after the backup stopped: transactions from
    /// this one on commit after the backup is consistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_xid: Option<u64>,
    pub wal_segment_size: u64,
    pub block_size: u32,
    pub data_checksums: bool,
    pub data_directory: String,
    /// The data directory's owner, for restores run as root.
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub tablespaces: Vec<TablespaceInfo>,
    /// Files, directories and links copied.
    pub files: u64,
    /// What was copied, sorted by path. In the record (sealed with the
    /// metadata key, like a logical dump's table names) rather than in a
    /// content stream, so that prune and verify on a backup host, which
    /// cannot decrypt content, know every block a backup needs.
    #[serde(default)]
    pub manifest: Vec<FileEntry>,
    /// Pages whose checksum did not match while they were read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub corrupt_pages: Vec<CorruptPage>,
    /// Configuration files from outside the data directory (Debian's
    /// `/etc/postgresql/...`), each in the stream `config:PATH`. `None` in
    /// records of versions that did not keep them (a restore then leaves
    /// paths outside the data directory as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_files: Option<Vec<ConfigFileInfo>>,
    /// Taken on a standby (the server was in recovery; its backup_label says
    /// `BACKUP FROM: standby`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_standby: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConfigFileInfo {
    /// The setting that named it on the server (`config_file`, `hba_file`,
    /// `ident_file`); absent for a file another one includes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
    /// Where it was, absolute.
    pub path: String,
}

impl ConfigFileInfo {
    /// The record's stream holding its content.
    pub fn stream_name(&self) -> String {
        format!("config:{}", self.path)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TablespaceInfo {
    pub oid: u32,
    pub name: String,
    pub location: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CorruptPage {
    pub path: String,
    pub block: u32,
    pub stored: u16,
    pub computed: u16,
}

/// One entry of a physical backup's manifest: a directory, a symbolic link
/// (tablespaces) or a file, whose content is the concatenation of `blocks`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub kind: FileKind,
    pub mode: u32,
    #[serde(default)]
    pub size: u64,
    /// Seconds since the epoch.
    #[serde(default)]
    pub mtime: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
    Link,
}

impl BackupRecord {
    pub fn stream(&self, name: &str) -> Option<&Stream> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// Every blob the backup needs: its streams' chunks and, for a physical
    /// backup, its files' blocks.
    pub fn blobs(&self) -> impl Iterator<Item = &Id> {
        let files = self.physical.iter().flat_map(|p| p.manifest.iter());
        self.streams
            .iter()
            .flat_map(|s| s.chunks.iter())
            .chain(files.flat_map(|f| f.blocks.iter()))
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    Logical,
    Physical,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct DatabaseInfo {
    pub name: String,
    pub server_version: String,
    pub server_version_num: u32,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stream {
    pub name: String,
    pub format: String,
    pub size: u64,
    pub chunks: Vec<Id>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default)]
pub struct BackupStats {
    /// Plaintext bytes of all streams.
    pub size: u64,
    /// Plaintext bytes that were not already in the repository.
    pub new_bytes: u64,
    /// Bytes this backup added to storage (compressed, encrypted, with pack overhead).
    pub stored_bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
}

/// `locks/<id>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockFile {
    pub version: u32,
    pub host: String,
    pub pid: u32,
    pub user: String,
    pub command: String,
    pub exclusive: bool,
    pub created: DateTime<Utc>,
    pub refreshed: DateTime<Utc>,
}

/// `pins/<backup-id>`: the backup is kept whatever the retention rules say.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinFile {
    pub version: u32,
    pub backup: Id,
    pub created: DateTime<Utc>,
    pub host: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `wal/<system-id>/<timeline>/<name>`: the WAL of each cluster (by its
/// system identifier, decimal) apart, and every archived file of a timeline
/// in one directory (segments, partial segments, backup history files, and
/// the timeline's own history file). `timeline` is the 8 hex digits
/// PostgreSQL's file names start with.
pub fn wal_path(system_id: u64, name: &str) -> String {
    format!("{WAL_DIR}{system_id}/{}/{name}", &name[..name.len().min(8)])
}

/// The sealed trailer of a WAL object (kind "wal"): the object's blobs, and
/// what they make up, so an archived file cannot be passed off under another
/// name and a second push of the same name can be compared without a key to
/// its content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WalTrailer {
    pub version: u32,
    /// The file name PostgreSQL archived it under.
    pub name: String,
    pub size: u64,
    /// Keyed BLAKE3 (the blob-id key) of the whole file.
    pub content: Id,
    pub blobs: Vec<BlobEntry>,
    pub pushed: DateTime<Utc>,
    pub host: String,
}

pub fn pin_path(backup: &Id) -> String {
    format!("{PINS_DIR}{backup}")
}

/// Split a stored pack into (wrapped session key, blob area start, trailer bytes).
pub fn parse_pack_envelope(pack: &[u8]) -> Result<PackEnvelope<'_>, CodecError> {
    let bad = |m: &str| CodecError::Malformed(format!("pack: {m}"));
    if pack.len() < 24 || &pack[..8] != PACK_MAGIC || &pack[pack.len() - 8..] != PACK_MAGIC {
        return Err(bad("bad magic"));
    }
    let header_len = u32::from_le_bytes(pack[8..12].try_into().expect("4 bytes")) as usize;
    let blobs_start = 12 + header_len;
    let tail = pack.len() - 12;
    let trailer_len =
        u32::from_le_bytes(pack[tail..tail + 4].try_into().expect("4 bytes")) as usize;
    if blobs_start > tail || trailer_len > tail - blobs_start {
        return Err(bad("lengths out of range"));
    }
    Ok(PackEnvelope {
        wrapped_key: &pack[12..blobs_start],
        blobs_start: blobs_start as u64,
        trailer: &pack[tail - trailer_len..tail],
    })
}

pub struct PackEnvelope<'a> {
    pub wrapped_key: &'a [u8],
    pub blobs_start: u64,
    pub trailer: &'a [u8],
}

/// The bytes before the first blob of a pack.
pub fn pack_header(wrapped_key: &[u8]) -> Vec<u8> {
    let mut h = PACK_MAGIC.to_vec();
    h.extend_from_slice(&(wrapped_key.len() as u32).to_le_bytes());
    h.extend_from_slice(wrapped_key);
    h
}

/// The bytes after the last blob of a pack.
pub fn pack_footer(sealed_trailer: &[u8]) -> Vec<u8> {
    let mut f = sealed_trailer.to_vec();
    f.extend_from_slice(&(sealed_trailer.len() as u32).to_le_bytes());
    f.extend_from_slice(PACK_MAGIC);
    f
}
