//! The repository: opening and creating it, unlocking its keys, and reading and
//! writing its objects in the order docs/FORMAT.md prescribes.
//!
//! **Invariant:** a backup record is written only after every pack it needs is
//! durable and indexed (see `write::Session`). Only `prune` deletes data, under
//! the exclusive lock, and never a pack a remaining backup needs.

mod archive;
mod copy;
mod index;
mod lock;
mod pins;
mod prune;
mod read;
mod unlock_cache;
mod verify;
mod wal;
mod write;

use std::ops::ControlFlow;
use std::sync::Arc;

use chrono::Utc;
use rand::RngCore;

use crate::codec::{self, CodecError, Id, MetadataKey, SecretBytes};
use crate::format::{
    self, BackupRecord, ChunkerParams, KeyFile, KeyMaterial, KeyMode, RepoConfigFile, RepoSettings,
};
use crate::storage::{ErrorKind, PutMode, Storage, StorageError};

pub use archive::ArchivedPack;
pub use copy::{CopyProgress, CopyStats};
pub use index::{BlobLocation, Index};
pub use lock::{HeldLock, LockGuard, hostname};
pub use pins::Pins;
pub use prune::{CleanupLimits, CleanupPlan, CleanupReport};
pub use read::StreamReader;
pub use unlock_cache::UnlockCache;
pub use verify::{BackupHealth, Problem, ReadData, VerifyReport};
pub use wal::{
    ArchivedFile, Pushed, SegmentRange, WalArchive, WalWalk, latest_descendant, timeline_chain,
    walk_wal,
};
pub use write::{Session, StreamProgress};

/// Repository errors, by what the user can do about them.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("repository {url} is not initialised; hint: run `lifeboat init`")]
    NotInitialised { url: String },
    #[error("repository {url} already exists; hint: init never touches an existing repository")]
    AlreadyExists { url: String },
    #[error(
        "repository {url} has format version {found}, newer than this lifeboat supports ({supported}); hint: upgrade lifeboat"
    )]
    NewerFormat {
        url: String,
        found: u32,
        supported: u32,
    },
    #[error("wrong passphrase for repository {url}")]
    WrongPassphrase { url: String },
    #[error("the identity does not match any recipient of repository {url}")]
    WrongIdentity { url: String },
    #[error("the dedup key does not belong to repository {url}")]
    WrongDedupKey { url: String },
    #[error(
        "repository {url} is not the one the configuration pins: its fingerprint is {found}, the configuration says {expected}; someone with write access to the storage may have replaced its keys with their own, so lifeboat stopped before using it; hint: if the repository was re-created on purpose, put the fingerprint `lifeboat init` printed for it in `fingerprint`"
    )]
    WrongFingerprint {
        url: String,
        found: String,
        expected: String,
    },
    #[error("{0}")]
    MissingSecret(String),
    #[error("repository {url}: {what} is damaged: {detail}")]
    Corrupt {
        url: String,
        what: String,
        detail: String,
    },
    #[error("repository {url}: {what} is missing")]
    Missing { url: String, what: String },
    /// In an archive storage class: retrievable, but not readable now.
    #[error(
        "repository {url}: {what} is in an archive storage class (S3 Glacier); hint: `lifeboat restore` retrieves what a restore needs first"
    )]
    Archived { url: String, what: String },
    #[error("no backup matches {0:?}")]
    NoSuchBackup(String),
    #[error("backup id prefix {0:?} is ambiguous; hint: give more digits")]
    AmbiguousBackup(String),
    /// Another process holds a lock that conflicts with ours.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Other(String),
}

impl RepoError {
    /// A problem with the user's input or setup, rather than a failed operation.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            RepoError::NotInitialised { .. }
                | RepoError::AlreadyExists { .. }
                | RepoError::NewerFormat { .. }
                | RepoError::WrongPassphrase { .. }
                | RepoError::WrongIdentity { .. }
                | RepoError::WrongDedupKey { .. }
                | RepoError::WrongFingerprint { .. }
                | RepoError::MissingSecret(_)
                | RepoError::NoSuchBackup(_)
                | RepoError::AmbiguousBackup(_)
        )
    }
}

impl RepoError {
    /// The object itself is bad (missing, altered, unreadable), as opposed to
    /// the storage failing or a wrong secret: other objects may still be fine.
    pub fn is_damage(&self) -> bool {
        matches!(self, RepoError::Corrupt { .. } | RepoError::Missing { .. })
    }
}

pub type Result<T> = std::result::Result<T, RepoError>;

/// An object that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    pub object: String,
    pub problem: String,
}

impl Damage {
    pub fn from_error(object: &str, e: &RepoError) -> Damage {
        let problem = match e {
            RepoError::Corrupt { detail, .. } => detail.clone(),
            RepoError::Missing { .. } => "missing".into(),
            other => other.to_string(),
        };
        Damage {
            object: object.to_string(),
            problem,
        }
    }
}

/// What `scan_backups` found.
#[derive(Default)]
pub struct BackupScan {
    /// Oldest first.
    pub records: Vec<(Id, BackupRecord)>,
    pub damaged: Vec<Damage>,
}

pub type Identities = Vec<Box<dyn age::Identity + Send + Sync>>;

/// What the caller has to unlock a repository with. Any subset may be present.
#[derive(Default)]
pub struct Credentials {
    pub passphrase: Option<String>,
    pub identities: Option<Identities>,
    pub dedup_key: Option<SecretBytes>,
    /// Recipients from the local configuration (public-key mode).
    pub recipients: Vec<String>,
    /// Where a passphrase's unlocked keys may be kept for the next process
    /// (passphrase from a file only); `None`: Argon2id every time.
    pub unlock_cache: Option<UnlockCache>,
    /// The fingerprint the repository's keys must have (normalised), if the
    /// configuration pins one.
    pub fingerprint: Option<String>,
}

/// How a new repository's keys are set up.
pub enum InitKeys {
    Passphrase(String),
    Recipients(Vec<String>),
}

pub struct InitOutcome {
    pub repo: Repository,
    /// Public-key mode: the dedup key a backup host needs (base64).
    pub dedup_key: Option<SecretBytes>,
    /// Passphrase mode: the new key file's unlock-cache binding and
    /// plaintext, for `remember`.
    key_file: Option<(Vec<u8>, Vec<u8>)>,
}

impl InitOutcome {
    /// Keep the new key file's keys in `cache`, as `open` does after
    /// Argon2id, so that the next command of this user (the first backup,
    /// the archiver's first `wal-push`) does not pay Argon2id again.
    pub fn remember(&self, cache: &UnlockCache, passphrase: &str) {
        if let Some((binding, plaintext)) = &self.key_file {
            cache.put(passphrase, binding, plaintext);
        }
    }
}

/// An opened, unlocked repository.
pub struct Repository {
    storage: Arc<dyn Storage>,
    id: String,
    settings: RepoSettings,
    meta: MetadataKey,
    recipients: Vec<age::x25519::Recipient>,
    identities: Option<Arc<Identities>>,
    /// Passphrase mode: the repository's own identity, from its key file (for
    /// `init_sharing`).
    own_identity: Option<age::x25519::Identity>,
    /// Repositories with the same keys (copies made by `lifeboat copy`),
    /// read when a pack cannot be read here.
    mirrors: Vec<Arc<Mirror>>,
}

/// A repository with the same keys as another, read when a pack of that one
/// cannot be read. Its index is loaded the first time a blob is not where
/// the other repository's index says (a prune of either may have rewritten
/// the pack under a new id).
pub(crate) struct Mirror {
    repo: Repository,
    index: std::sync::OnceLock<Option<Index>>,
}

impl Mirror {
    pub(crate) fn storage(&self) -> &dyn Storage {
        self.repo.storage.as_ref()
    }

    /// Its index, or `None` if it cannot be read (the fallback then has only
    /// the pack ids of the main repository to go by).
    pub(crate) fn index(&self) -> Option<&Index> {
        self.index
            .get_or_init(|| self.repo.load_index().ok())
            .as_ref()
    }
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("url", &self.url())
            .field("id", &self.id)
            .finish()
    }
}

impl Repository {
    pub fn init(
        storage: Arc<dyn Storage>,
        keys: InitKeys,
        compression_level: i32,
    ) -> Result<InitOutcome> {
        let settings = RepoSettings {
            recipients: Vec::new(),
            chunker: ChunkerParams::default(),
            pack_size: format::DEFAULT_PACK_SIZE,
            compression_level,
        };
        let meta = MetadataKey::new(SecretBytes::random());
        let identity = match &keys {
            InitKeys::Passphrase(_) => Some(age::x25519::Identity::generate()),
            InitKeys::Recipients(_) => None,
        };
        Repository::create(storage, keys, meta, identity, settings)
    }

    /// A new repository with this one's keys and settings, so that objects
    /// copy between the two unchanged (`lifeboat copy`) and either can stand
    /// in for the other when a pack is damaged. `keys` says how the new one
    /// is unlocked: its own passphrase (needs this repository's identity, so
    /// not from a host that can only write), or the same recipients.
    pub fn init_sharing(&self, storage: Arc<dyn Storage>, keys: InitKeys) -> Result<InitOutcome> {
        let identity = match &keys {
            InitKeys::Passphrase(_) => Some(self.own_identity.clone().ok_or_else(|| {
                RepoError::MissingSecret(format!(
                    "repository {} is encrypted to age recipients: a copy of its keys must use the same recipients; hint: give the new repository the same `recipients`",
                    self.url()
                ))
            })?),
            InitKeys::Recipients(r) => {
                let mut mine = self.settings.recipients.clone();
                let mut theirs = r.clone();
                mine.sort();
                theirs.sort();
                if mine != theirs {
                    return Err(RepoError::Other(format!(
                        "a repository sharing the keys of {} must have its recipients ({}); hint: set the same recipients, or leave out keys_from",
                        self.url(),
                        self.settings.recipients.join(", ")
                    )));
                }
                None
            }
        };
        Repository::create(
            storage,
            keys,
            self.meta.clone(),
            identity,
            self.settings.clone(),
        )
    }

    fn create(
        storage: Arc<dyn Storage>,
        keys: InitKeys,
        meta: MetadataKey,
        identity: Option<age::x25519::Identity>,
        mut settings: RepoSettings,
    ) -> Result<InitOutcome> {
        let url = storage.url();
        if storage.head(format::CONFIG_PATH).is_ok() {
            return Err(RepoError::AlreadyExists { url });
        }
        // Key files without a config are what an interrupted (or lost concurrent)
        // init leaves: it writes `keys/<id>` first and `config` last. Allow init
        // over them, or the location is stuck; the old key files become orphans,
        // which `open` tolerates (it uses the key file that unseals `config`).
        // Anything else, including a `keys/` of files that are not our key files
        // (puts are atomic, so ours are whole), is someone's data: leave it alone.
        let leftover_key_file = |path: &str| {
            path.starts_with(format::KEYS_DIR)
                && storage
                    .get(path)
                    .is_ok_and(|raw| serde_json::from_slice::<KeyFile>(&raw).is_ok())
        };
        if !storage.list("")?.iter().all(|o| leftover_key_file(&o.path)) {
            return Err(RepoError::Other(format!(
                "{url} is not empty and holds no lifeboat repository; hint: choose an empty or new location"
            )));
        }
        let (mode, recipients, key_file, identities, dedup_key, cache_entry) = match keys {
            InitKeys::Passphrase(pass) => {
                let identity = identity.expect("passphrase mode has an identity");
                use age::secrecy::ExposeSecret;
                let material = KeyMaterial {
                    metadata_key: meta.secret.to_base64(),
                    identity: Some(identity.to_string().expose_secret().to_string()),
                };
                let kdf = codec::KdfParams::new_random();
                let plaintext = to_json(&material);
                let ct = codec::passphrase_encrypt(&kdf, &pass, &plaintext)
                    .map_err(|e| RepoError::Other(e.to_string()))?;
                let ciphertext = codec::b64_encode(&ct);
                let binding = UnlockCache::binding(&kdf, &ciphertext);
                let file = KeyFile::Passphrase {
                    version: 1,
                    kdf,
                    ciphertext,
                };
                let recipients = vec![identity.to_public()];
                (
                    KeyMode::Passphrase,
                    recipients,
                    file,
                    Some(identity),
                    None,
                    Some((binding, plaintext)),
                )
            }
            InitKeys::Recipients(strs) => {
                let recipients = parse_recipients(&strs)?;
                let material = KeyMaterial {
                    metadata_key: meta.secret.to_base64(),
                    identity: None,
                };
                let ct = codec::age_encrypt(&recipients, &to_json(&material))
                    .map_err(|e| RepoError::Other(e.to_string()))?;
                let file = KeyFile::Age {
                    version: 1,
                    ciphertext: codec::b64_encode(&ct),
                };
                (
                    KeyMode::Recipients,
                    recipients,
                    file,
                    None,
                    Some(meta.secret.clone()),
                    None,
                )
            }
        };
        settings.recipients = recipients.iter().map(|r| r.to_string()).collect();
        let mut idb = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut idb);
        let id = hex::encode(idb);
        let config = RepoConfigFile {
            format: format::FORMAT_NAME.into(),
            version: format::FORMAT_VERSION,
            id: id.clone(),
            created: Utc::now(),
            mode,
            sealed: codec::b64_encode(&meta.seal("config", &to_json(&settings))),
        };
        storage.put(
            &format!("{}{}", format::KEYS_DIR, random_hex()),
            &to_json(&key_file),
            PutMode::Create,
        )?;
        // config last: its presence is what makes the repository exist.
        storage
            .put(format::CONFIG_PATH, &to_json(&config), PutMode::Create)
            .map_err(|e| {
                if e.kind == ErrorKind::AlreadyExists {
                    RepoError::AlreadyExists { url: url.clone() }
                } else {
                    e.into()
                }
            })?;
        let identities = identities.map(|i| {
            let ids: Identities = vec![Box::new(i.clone())];
            (Arc::new(ids), i)
        });
        Ok(InitOutcome {
            repo: Repository {
                storage,
                id,
                settings,
                meta,
                recipients,
                own_identity: identities.as_ref().map(|(_, i)| i.clone()),
                identities: identities.map(|(ids, _)| ids),
                mirrors: Vec::new(),
            },
            dedup_key,
            key_file: cache_entry,
        })
    }

    pub fn open(storage: Arc<dyn Storage>, mut creds: Credentials) -> Result<Repository> {
        let url = storage.url();
        let raw = storage.get(format::CONFIG_PATH).map_err(|e| match e.kind {
            ErrorKind::NotFound => RepoError::NotInitialised { url: url.clone() },
            _ => e.into(),
        })?;
        let corrupt = |what: &str, detail: String| RepoError::Corrupt {
            url: url.clone(),
            what: what.into(),
            detail,
        };
        let config: RepoConfigFile =
            serde_json::from_slice(&raw).map_err(|e| corrupt("config", e.to_string()))?;
        if config.format != format::FORMAT_NAME {
            return Err(corrupt(
                "config",
                format!("not a lifeboat repository ({:?})", config.format),
            ));
        }
        if config.version > format::FORMAT_VERSION {
            return Err(RepoError::NewerFormat {
                url,
                found: config.version,
                supported: format::FORMAT_VERSION,
            });
        }
        let sealed =
            codec::b64_decode(&config.sealed).map_err(|e| corrupt("config", e.to_string()))?;
        // Several key files may unlock with our secret (orphans of an interrupted
        // init); the repository's own is the one whose key unseals `config`.
        let fits = |m: &MetadataKey| m.unseal("config", &sealed).is_ok();
        let (meta, identities, own_identity) =
            unlock_keys(storage.as_ref(), config.mode, &mut creds, &fits)?;
        let settings_json = meta.unseal("config", &sealed).map_err(|e| match e {
            CodecError::Authentication
                if config.mode == KeyMode::Recipients && identities.is_none() =>
            {
                RepoError::WrongDedupKey { url: url.clone() }
            }
            e => corrupt("config", e.to_string()),
        })?;
        let settings: RepoSettings =
            serde_json::from_slice(&settings_json).map_err(|e| corrupt("config", e.to_string()))?;
        check_pin(&url, &meta, creds.fingerprint.as_deref())?;
        let recipients = parse_recipients(&settings.recipients)?;
        if !creds.recipients.is_empty() {
            let mut mine = creds.recipients.clone();
            let mut theirs = settings.recipients.clone();
            mine.sort();
            theirs.sort();
            if mine != theirs {
                return Err(RepoError::Other(format!(
                    "the configured recipients differ from those repository {url} was created with; hint: the repository's recipients are {}",
                    settings.recipients.join(", ")
                )));
            }
        }
        Ok(Repository {
            storage,
            id: config.id,
            settings,
            meta,
            recipients,
            identities: identities.map(Arc::new),
            own_identity,
            mirrors: Vec::new(),
        })
    }

    /// Open the repository in `storage` with this one's keys, which it must
    /// share (`keys_from`): no passphrase, no Argon2, the same identities.
    /// `None` if it does not share them.
    pub fn open_sibling(&self, storage: Arc<dyn Storage>) -> Result<Option<Repository>> {
        let url = storage.url();
        let raw = storage.get(format::CONFIG_PATH).map_err(|e| match e.kind {
            ErrorKind::NotFound => RepoError::NotInitialised { url: url.clone() },
            _ => e.into(),
        })?;
        let corrupt = |detail: String| RepoError::Corrupt {
            url: url.clone(),
            what: format::CONFIG_PATH.into(),
            detail,
        };
        let config: RepoConfigFile =
            serde_json::from_slice(&raw).map_err(|e| corrupt(e.to_string()))?;
        if config.version > format::FORMAT_VERSION {
            return Err(RepoError::NewerFormat {
                url,
                found: config.version,
                supported: format::FORMAT_VERSION,
            });
        }
        let sealed = codec::b64_decode(&config.sealed).map_err(|e| corrupt(e.to_string()))?;
        let Ok(json) = self.meta.unseal("config", &sealed) else {
            return Ok(None);
        };
        let settings: RepoSettings =
            serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))?;
        let recipients = parse_recipients(&settings.recipients)?;
        Ok(Some(Repository {
            storage,
            id: config.id,
            settings,
            meta: self.meta.clone(),
            recipients,
            identities: self.identities.clone(),
            own_identity: self.own_identity.clone(),
            mirrors: Vec::new(),
        }))
    }

    /// Read packs from `storage` when they cannot be read here. Only a
    /// repository with the same keys qualifies; returns whether it did.
    pub fn add_mirror(&mut self, storage: Arc<dyn Storage>) -> Result<bool> {
        let Some(repo) = self.open_sibling(storage)? else {
            return Ok(false);
        };
        self.mirrors.push(Arc::new(Mirror {
            repo,
            index: std::sync::OnceLock::new(),
        }));
        Ok(true)
    }

    pub fn url(&self) -> String {
        self.storage.url()
    }
    /// The fingerprint of the repository's keys (FORMAT.md, "Keys and
    /// secrets"); repositories that share keys share it.
    pub fn fingerprint(&self) -> String {
        self.meta.fingerprint()
    }
    /// Refuse if `pin` (a configured fingerprint, normalised) is not ours.
    pub fn check_pin(&self, pin: Option<&str>) -> Result<()> {
        check_pin(&self.url(), &self.meta, pin)
    }
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }
    pub fn settings(&self) -> &RepoSettings {
        &self.settings
    }
    pub fn can_read_content(&self) -> bool {
        self.identities.is_some()
    }

    /// Fail early, before anything is changed, on a host that can only write.
    pub fn check_can_read(&self) -> Result<()> {
        self.identities().map(|_| ())
    }

    pub(crate) fn corrupt(&self, what: impl Into<String>, detail: impl Into<String>) -> RepoError {
        RepoError::Corrupt {
            url: self.url(),
            what: what.into(),
            detail: detail.into(),
        }
    }

    /// Read an object; a missing one is `RepoError::Missing`, naming it.
    fn get_object(&self, path: &str) -> Result<Vec<u8>> {
        self.storage.get(path).map_err(|e| match e.kind {
            ErrorKind::NotFound => RepoError::Missing {
                url: self.url(),
                what: path.to_string(),
            },
            ErrorKind::Archived => RepoError::Archived {
                url: self.url(),
                what: path.to_string(),
            },
            _ => e.into(),
        })
    }

    /// Read an object whose name is the hash of its content, checking that it is.
    fn get_verified(&self, path: &str) -> Result<Vec<u8>> {
        let bytes = self.get_object(path)?;
        let name = path.rsplit('/').next().unwrap_or(path);
        if Id::of_stored(&bytes).to_hex() != name {
            return Err(self.corrupt(
                path,
                "content does not match its name (altered or truncated)",
            ));
        }
        Ok(bytes)
    }

    /// Seal and store a metadata object under the hash of its stored bytes.
    fn put_sealed(&self, dir: &str, kind: &str, json: &[u8]) -> Result<Id> {
        let sealed = self.meta.seal(kind, json);
        let id = Id::of_stored(&sealed);
        match self
            .storage
            .put(&format!("{dir}{id}"), &sealed, PutMode::Create)
        {
            Ok(()) => Ok(id),
            Err(e) if e.kind == ErrorKind::AlreadyExists => Ok(id),
            Err(e) => Err(e.into()),
        }
    }

    fn unseal(&self, path: &str, kind: &str, bytes: &[u8]) -> Result<Vec<u8>> {
        self.meta
            .unseal(kind, bytes)
            .map_err(|e| self.corrupt(path, format!("cannot be decrypted ({e})")))
    }

    /// Every readable backup record, oldest first. Damaged records are skipped:
    /// one bad object must not hide the others (`scan_backups` names them).
    pub fn list_backups(&self) -> Result<Vec<(Id, BackupRecord)>> {
        Ok(self.scan_backups()?.records)
    }

    /// Every backup record, oldest first, and the record objects that cannot be
    /// read (missing while listed, altered, undecryptable).
    pub fn scan_backups(&self) -> Result<BackupScan> {
        let mut scan = BackupScan::default();
        let objs = self.storage.list(format::BACKUPS_DIR)?;
        let read = parallel_map(&objs, METADATA_READERS, |o| {
            self.read_backup_record(&o.path)
        });
        for (obj, record) in objs.into_iter().zip(read) {
            match record {
                Ok(r) => scan.records.push(r),
                Err(e) if e.is_damage() => scan.damaged.push(Damage::from_error(&obj.path, &e)),
                Err(e) => return Err(e),
            }
        }
        scan.records
            .sort_by(|a, b| a.1.started.cmp(&b.1.started).then(a.0.cmp(&b.0)));
        Ok(scan)
    }

    fn read_backup_record(&self, path: &str) -> Result<(Id, BackupRecord)> {
        let bytes = self.get_verified(path)?;
        let json = self.unseal(path, "backup", &bytes)?;
        let rec: BackupRecord =
            serde_json::from_slice(&json).map_err(|e| self.corrupt(path, e.to_string()))?;
        let id: Id = path[format::BACKUPS_DIR.len()..]
            .parse()
            .map_err(|e: CodecError| self.corrupt(path, e.to_string()))?;
        Ok((id, rec))
    }

    /// Find a backup by id prefix.
    pub fn find_backup(&self, prefix: &str) -> Result<(Id, BackupRecord)> {
        let p = prefix.to_ascii_lowercase();
        let mut hits: Vec<_> = self
            .list_backups()?
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(&p))
            .collect();
        match hits.len() {
            0 => Err(RepoError::NoSuchBackup(prefix.into())),
            1 => Ok(hits.remove(0)),
            _ => Err(RepoError::AmbiguousBackup(prefix.into())),
        }
    }

    pub(crate) fn write_backup_record(&self, rec: &BackupRecord) -> Result<Id> {
        self.put_sealed(format::BACKUPS_DIR, "backup", &to_json(rec))
    }

    fn identities(&self) -> Result<&Arc<Identities>> {
        self.identities.as_ref().ok_or_else(|| {
            RepoError::MissingSecret(format!(
                "this host can write to repository {} but not read backup content; hint: set identity_file for the repository (the age identity of its recipients)",
                self.url()
            ))
        })
    }
}

/// What a secret unlocks: the metadata key, the identities to read content
/// with, and (passphrase mode) the repository's own identity.
type Unlocked = (
    MetadataKey,
    Option<Identities>,
    Option<age::x25519::Identity>,
);

/// Find the metadata key (and, in passphrase mode, the identity) in `keys/`.
/// Key files are tried in turn; one that decrypts counts only if `fits` accepts
/// its metadata key, i.e. it belongs to this repository's `config` rather than
/// to an interrupted init.
fn unlock_keys(
    storage: &dyn Storage,
    mode: KeyMode,
    creds: &mut Credentials,
    fits: &dyn Fn(&MetadataKey) -> bool,
) -> Result<Unlocked> {
    let url = storage.url();
    // A secret that opens only key files of another config is the wrong secret
    // if some key file refused it (that one may be the real one); if none did,
    // the config itself does not match its keys.
    let config_mismatch = |url: String| RepoError::Corrupt {
        url,
        what: format::CONFIG_PATH.into(),
        detail: "its settings cannot be decrypted with any key file that the given secret opens"
            .into(),
    };
    let mut files = Vec::new();
    for obj in storage.list(format::KEYS_DIR)? {
        let raw = storage.get(&obj.path)?;
        let kf: KeyFile = serde_json::from_slice(&raw).map_err(|e| RepoError::Corrupt {
            url: url.clone(),
            what: obj.path.clone(),
            detail: e.to_string(),
        })?;
        files.push(kf);
    }
    if files.is_empty() {
        return Err(RepoError::Missing {
            url,
            what: "keys/ (no key file)".into(),
        });
    }
    let material = |json: &[u8]| -> Result<KeyMaterial> {
        serde_json::from_slice(json).map_err(|e| RepoError::Other(format!("key file: {e}")))
    };
    let (mut refused, mut foreign) = (0usize, 0usize);
    match mode {
        KeyMode::Passphrase => {
            let pass = creds.passphrase.as_deref().ok_or_else(|| {
                RepoError::MissingSecret(format!(
                    "repository {url} needs its passphrase; hint: set LIFEBOAT_PASSPHRASE or passphrase_file in the repository's section"
                ))
            })?;
            let unlocked = |json: &[u8]| -> Result<Unlocked> {
                let m = material(json)?;
                let meta = MetadataKey::new(
                    SecretBytes::from_base64(&m.metadata_key)
                        .map_err(|e| RepoError::Other(e.to_string()))?,
                );
                let own = match m.identity {
                    Some(s) => Some(s.parse::<age::x25519::Identity>().map_err(|_| {
                        RepoError::Other("key file holds an invalid identity".into())
                    })?),
                    None => None,
                };
                let ids = own
                    .clone()
                    .map(|id| vec![Box::new(id) as Box<dyn age::Identity + Send + Sync>]);
                Ok((meta, ids, own))
            };
            let passphrase_files = || {
                files.iter().filter_map(|kf| match kf {
                    KeyFile::Passphrase {
                        kdf, ciphertext, ..
                    } => Some((kdf, ciphertext)),
                    _ => None,
                })
            };
            // An entry opens only with this passphrase; anything unusable
            // in it falls through to Argon2id below.
            if let Some(cache) = &creds.unlock_cache {
                for (kdf, ciphertext) in passphrase_files() {
                    let binding = UnlockCache::binding(kdf, ciphertext);
                    if let Some(Ok(found)) = cache.get(pass, &binding).map(|j| unlocked(&j))
                        && fits(&found.0)
                    {
                        return Ok(found);
                    }
                }
            }
            for (kdf, ciphertext) in passphrase_files() {
                let ct =
                    codec::b64_decode(ciphertext).map_err(|e| RepoError::Other(e.to_string()))?;
                match codec::passphrase_decrypt(kdf, pass, &ct) {
                    Ok(json) => {
                        let found = unlocked(&json)?;
                        if fits(&found.0) {
                            if let Some(cache) = &creds.unlock_cache {
                                cache.put(pass, &UnlockCache::binding(kdf, ciphertext), &json);
                            }
                            return Ok(found);
                        }
                        foreign += 1;
                    }
                    Err(CodecError::Authentication) => refused += 1,
                    Err(e) => return Err(RepoError::Other(e.to_string())),
                }
            }
            if foreign > 0 && refused == 0 {
                return Err(config_mismatch(url));
            }
            Err(RepoError::WrongPassphrase { url })
        }
        KeyMode::Recipients => {
            if let Some(ids) = creds.identities.take() {
                let mut matched = false;
                for kf in &files {
                    let KeyFile::Age { ciphertext, .. } = kf else {
                        continue;
                    };
                    let ct = codec::b64_decode(ciphertext)
                        .map_err(|e| RepoError::Other(e.to_string()))?;
                    match codec::age_decrypt(&ids, &ct) {
                        Ok(json) => {
                            let m = material(&json)?;
                            let meta = MetadataKey::new(
                                SecretBytes::from_base64(&m.metadata_key)
                                    .map_err(|e| RepoError::Other(e.to_string()))?,
                            );
                            if fits(&meta) {
                                return Ok((meta, Some(ids), None));
                            }
                            foreign += 1;
                        }
                        Err(CodecError::NoMatchingIdentity) => refused += 1,
                        Err(_) => matched = true,
                    }
                }
                if !matched {
                    if foreign > 0 && refused == 0 {
                        return Err(config_mismatch(url));
                    }
                    return Err(RepoError::WrongIdentity { url });
                }
                return Err(RepoError::Corrupt {
                    url,
                    what: "keys/".into(),
                    detail: "key file cannot be decrypted".into(),
                });
            }
            match &creds.dedup_key {
                Some(k) => Ok((MetadataKey::new(k.clone()), None, None)),
                None => Err(RepoError::MissingSecret(format!(
                    "repository {url} uses public-key encryption; hint: set identity_file (to read and restore) or dedup_key_file / LIFEBOAT_DEDUP_KEY (to write backups)"
                ))),
            }
        }
    }
}

/// A repository on memory storage that can read and write, for unit tests. It
/// uses public-key mode because a passphrase costs seconds of Argon2 in a
/// debug build.
#[cfg(test)]
pub(crate) fn test_repo() -> (Arc<crate::storage::memory::MemoryStorage>, Repository) {
    let identity = age::x25519::Identity::generate();
    let storage = Arc::new(crate::storage::memory::MemoryStorage::new());
    Repository::init(
        storage.clone(),
        InitKeys::Recipients(vec![identity.to_public().to_string()]),
        3,
    )
    .expect("init");
    let ids: Identities = vec![Box::new(identity)];
    let creds = Credentials {
        identities: Some(ids),
        ..Credentials::default()
    };
    let repo = Repository::open(storage.clone(), creds).expect("open");
    (storage, repo)
}

/// [`test_repo`] in passphrase mode.
#[cfg(test)]
pub(crate) fn test_repo_passphrase() -> (Arc<crate::storage::memory::MemoryStorage>, Repository) {
    let storage = Arc::new(crate::storage::memory::MemoryStorage::new());
    let pass = "correct horse battery staple".to_string();
    Repository::init(storage.clone(), InitKeys::Passphrase(pass.clone()), 3).expect("init");
    let creds = Credentials {
        passphrase: Some(pass),
        ..Credentials::default()
    };
    let repo = Repository::open(storage.clone(), creds).expect("open");
    (storage, repo)
}

/// Every blob of `ids` read back through `read_blobs`, sorted by id.
#[cfg(test)]
pub(crate) fn read_all(repo: &Repository, index: &Index, ids: &[Id]) -> Vec<(Id, Vec<u8>)> {
    let got = std::sync::Mutex::new(Vec::new());
    repo.read_blobs(index, ids, 2, &|id, data| {
        got.lock().unwrap().push((*id, data));
        Ok(())
    })
    .unwrap();
    let mut got = got.into_inner().unwrap();
    got.sort();
    got
}

/// A 64 KiB block shaped like a heap page, for unit tests: compressible,
/// but not trivially, and different for every seed.
#[cfg(test)]
pub(crate) fn test_block(seed: u32) -> Vec<u8> {
    (0..format::FILE_BLOCK as u32)
        .map(|i| ((i % 97) as u8) ^ ((i / 8192 + seed) as u8).wrapping_mul(31))
        .collect()
}

fn check_pin(url: &str, meta: &MetadataKey, pin: Option<&str>) -> Result<()> {
    match pin {
        Some(expected) if expected != meta.fingerprint() => Err(RepoError::WrongFingerprint {
            url: url.to_string(),
            found: meta.fingerprint(),
            expected: expected.to_string(),
        }),
        _ => Ok(()),
    }
}

fn parse_recipients(strs: &[String]) -> Result<Vec<age::x25519::Recipient>> {
    strs.iter()
        .map(|s| {
            s.parse::<age::x25519::Recipient>().map_err(|_| {
                RepoError::Other(format!(
                    "invalid age recipient {s:?}; hint: recipients look like age1..."
                ))
            })
        })
        .collect()
}

/// Metadata objects (backup records, index files) read at once: each is
/// small, so read one after the other they cost one latency each (an S3
/// round trip, a disk read), and every command starts by reading them.
pub(crate) const METADATA_READERS: usize = 8;

/// `work` of every item, on up to `threads` threads, in the items' order.
pub(crate) fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    parallel_until(items, threads, |item| ControlFlow::Continue(work(item)))
}

/// Run `work` on every item on up to `threads` threads taking items in
/// order; the first error wins (no item is started after it). A worker's
/// panic is passed on.
pub(crate) fn parallel<T: Sync, E: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> std::result::Result<(), E> + Sync,
) -> std::result::Result<(), E> {
    let done = parallel_until(items, threads, |item| match work(item) {
        Ok(()) => ControlFlow::Continue(Ok(())),
        Err(e) => ControlFlow::Break(Err(e)),
    });
    done.into_iter().find(|r| r.is_err()).unwrap_or(Ok(()))
}

/// The worker pool behind `parallel_map` and `parallel`: items handed out one
/// at a time to up to `threads` threads, until `work` breaks; the results of
/// the items done, in the items' order. A worker's panic is passed on.
fn parallel_until<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> ControlFlow<R, R> + Sync,
) -> Vec<R> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let unwrap = |c: ControlFlow<R, R>| match c {
        ControlFlow::Continue(r) | ControlFlow::Break(r) => r,
    };
    if items.len() <= 1 {
        return items.iter().map(|item| unwrap(work(item))).collect();
    }
    let (next, stop) = (AtomicUsize::new(0), AtomicBool::new(false));
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, items.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        let result = work(item);
                        stop.fetch_or(result.is_break(), Ordering::Relaxed);
                        out.push((i, unwrap(result)));
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialising repository types cannot fail")
}

fn random_hex() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    const ORPHAN: &str = "keys/00000000000000000000000000000000";

    fn passphrase(p: &str) -> Credentials {
        Credentials {
            passphrase: Some(p.into()),
            ..Credentials::default()
        }
    }

    /// The key file an init on a fresh storage writes.
    fn key_file_of(keys: InitKeys) -> Vec<u8> {
        let storage = Arc::new(MemoryStorage::new());
        Repository::init(storage.clone(), keys, 3).expect("init");
        let objs = storage.list(format::KEYS_DIR).unwrap();
        storage.get(&objs[0].path).unwrap()
    }

    /// Give the (only) key file KDF parameters Argon2id refuses, so that
    /// only an unlock cache entry can open the repository.
    fn refuse_argon2(storage: &MemoryStorage) {
        let key = storage.list(format::KEYS_DIR).unwrap()[0].path.clone();
        let mut kf: serde_json::Value =
            serde_json::from_slice(&storage.get(&key).unwrap()).unwrap();
        kf["kdf"]["memory_kib"] = serde_json::json!(codec::MAX_KDF_MEMORY_KIB + 1);
        storage.delete(&key).unwrap();
        storage
            .put(&key, &serde_json::to_vec(&kf).unwrap(), PutMode::Create)
            .unwrap();
    }

    #[test]
    fn parallel_map_keeps_the_items_order() {
        let items: Vec<u64> = (0..100).collect();
        // Uneven work, so that threads finish out of order.
        let out = parallel_map(&items, 8, |&i| {
            std::thread::sleep(std::time::Duration::from_micros((i * 37) % 500));
            i * 2
        });
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(parallel_map(&[] as &[u64], 8, |&i| i), Vec::<u64>::new());
        assert_eq!(parallel_map(&[7u64], 8, |&i| i + 1), vec![8]);
    }

    #[test]
    fn parallel_stops_at_the_first_error_and_returns_it() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let items: Vec<u64> = (0..1000).collect();
        let started = AtomicUsize::new(0);
        let err = parallel(&items, 4, |&i| {
            started.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(std::time::Duration::from_millis(1));
            match i {
                5 => Err(RepoError::Other(format!("item {i}"))),
                _ => Ok(()),
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("item 5"), "{err}");
        // No item is started once it failed (the others, a millisecond
        // each, get through a few meanwhile).
        assert!(started.load(Ordering::Relaxed) < 500);
        assert!(parallel(&items, 4, |_| Ok::<(), RepoError>(())).is_ok());
    }

    #[test]
    #[should_panic(expected = "item 42")]
    fn parallel_map_passes_a_workers_panic_on() {
        let items: Vec<u64> = (0..100).collect();
        parallel_map(&items, 8, |&i| {
            assert!(i != 42, "item {i}");
            i
        });
    }

    #[test]
    fn unlock_cache_spares_argon2_for_the_right_passphrase_only() {
        let storage = Arc::new(MemoryStorage::new());
        let id = Repository::init(storage.clone(), InitKeys::Passphrase("pw".into()), 3)
            .expect("init")
            .repo
            .id;
        let tmp = tempfile::tempdir().unwrap();
        let cached = |p: &str| Credentials {
            unlock_cache: Some(UnlockCache::at(tmp.path().join("cache"))),
            ..passphrase(p)
        };
        let repo = Repository::open(storage.clone(), cached("pw")).expect("open");
        assert_eq!(repo.id, id);
        assert_eq!(
            std::fs::read_dir(tmp.path().join("cache")).unwrap().count(),
            1
        );
        // Key file parameters Argon2id refuses: only the cache can open it now.
        refuse_argon2(&storage);
        assert!(Repository::open(storage.clone(), passphrase("pw")).is_err());
        let repo = Repository::open(storage.clone(), cached("pw")).expect("open from the cache");
        assert_eq!(repo.id, id);
        assert!(
            Repository::open(storage.clone(), cached("other")).is_err(),
            "another passphrase does not open the cached entry"
        );
    }

    #[test]
    fn init_remembers_its_keys_for_the_next_open() {
        let storage = Arc::new(MemoryStorage::new());
        let tmp = tempfile::tempdir().unwrap();
        let cache = UnlockCache::at(tmp.path().join("cache"));
        let outcome =
            Repository::init(storage.clone(), InitKeys::Passphrase("pw".into()), 3).expect("init");
        outcome.remember(&cache, "pw");
        refuse_argon2(&storage);
        let cached = Credentials {
            unlock_cache: Some(UnlockCache::at(tmp.path().join("cache"))),
            ..passphrase("pw")
        };
        let repo = Repository::open(storage.clone(), cached).expect("open from init's entry");
        assert_eq!(repo.id, outcome.repo.id);
    }

    #[test]
    fn init_over_an_interrupted_init_then_open_skips_the_orphan() {
        let storage = Arc::new(MemoryStorage::new());
        // What an init that crashed before writing config leaves; it sorts
        // first, so open tries it first.
        let orphan = key_file_of(InitKeys::Passphrase("pw".into()));
        storage.put(ORPHAN, &orphan, PutMode::Create).unwrap();
        let id = Repository::init(storage.clone(), InitKeys::Passphrase("pw".into()), 3)
            .expect("init over an interrupted init")
            .repo
            .id;
        let repo = Repository::open(storage.clone(), passphrase("pw")).expect("open");
        assert_eq!(repo.id, id);
        assert!(matches!(
            Repository::open(storage.clone(), passphrase("other")),
            Err(RepoError::WrongPassphrase { .. })
        ));
        // Only the orphan left: it opens, but it is not this repository's key.
        for obj in storage.list(format::KEYS_DIR).unwrap() {
            if obj.path != ORPHAN {
                storage.delete(&obj.path).unwrap();
            }
        }
        assert!(matches!(
            Repository::open(storage, passphrase("pw")),
            Err(RepoError::Corrupt { what, .. }) if what == "config"
        ));
    }

    #[test]
    fn open_skips_an_orphaned_age_key_file() {
        let identity = age::x25519::Identity::generate();
        let recipients = vec![identity.to_public().to_string()];
        let storage = Arc::new(MemoryStorage::new());
        let orphan = key_file_of(InitKeys::Recipients(recipients.clone()));
        storage.put(ORPHAN, &orphan, PutMode::Create).unwrap();
        let id = Repository::init(storage.clone(), InitKeys::Recipients(recipients), 3)
            .expect("init over an interrupted init")
            .repo
            .id;
        let ids: Identities = vec![Box::new(identity)];
        let creds = Credentials {
            identities: Some(ids),
            ..Credentials::default()
        };
        let repo = Repository::open(storage, creds).expect("open");
        assert_eq!(repo.id, id);
        assert!(repo.can_read_content());
    }

    #[test]
    fn init_refuses_a_location_with_other_data() {
        for (path, data) in [
            ("data/x", b"pack".as_slice()),
            ("keys/id_rsa", b"not a lifeboat key file".as_slice()),
        ] {
            let storage = Arc::new(MemoryStorage::new());
            storage.put(path, data, PutMode::Create).unwrap();
            let r = Repository::init(storage, InitKeys::Recipients(vec![]), 3);
            assert!(matches!(r, Err(RepoError::Other(_))), "{path}");
        }
    }
}
