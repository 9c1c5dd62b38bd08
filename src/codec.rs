//! Pure transformations between plaintext and what is stored: blob ids, compression,
//! authenticated encryption, sealing of metadata and wrapping of keys.
//!
//! Nothing here does I/O. docs/FORMAT.md is the specification; the constants below
//! are quoted from it and must not change within a format version.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

const CHUNK_ID_CONTEXT: &str = "lifeboat 2026 chunk id v1";
const METADATA_CONTEXT: &str = "lifeboat 2026 metadata v1";
const CHUNKER_SEED_CONTEXT: &str = "lifeboat 2026 chunker seed v1";
const FINGERPRINT_CONTEXT: &str = "lifeboat 2026 repository fingerprint v1";
const BLOB_AAD: &[u8] = b"lifeboat blob v1";
const GROUP_AAD: &[u8] = b"lifeboat group v1";
const SEALED_AAD: &[u8] = b"lifeboat sealed v1";
const KEY_AAD: &[u8] = b"lifeboat key v1";
const UNLOCK_CACHE_CONTEXT: &str = "lifeboat 2026 unlock cache v1";
const UNLOCK_CACHE_AAD: &[u8] = b"lifeboat unlock cache v1";
pub const SEALED_MAGIC: &[u8; 8] = b"LBSEAL\x00\x01";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// FORMAT.md: "Blobs above 16 MiB do not exist". Readers enforce it, so a
/// damaged or forged length can never make us allocate more than this per blob.
pub const MAX_BLOB_SIZE: usize = 16 * 1024 * 1024;
/// Stored bytes a blob adds to its plaintext at most: nonce, encoding flag, tag
/// (zstd is used only when it makes the payload smaller).
pub const BLOB_OVERHEAD: usize = NONCE_LEN + 1 + TAG_LEN;
/// The largest Argon2 memory a key file may ask for (512 MiB). Key files are
/// read before anything is authenticated, so this bounds what a tampered one can
/// make `open` allocate; our own key files use 64 MiB.
pub(crate) const MAX_KDF_MEMORY_KIB: u32 = 512 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes were altered, truncated, or encrypted under another key.
    #[error("authentication failed")]
    Authentication,
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("no identity matches the repository's recipients")]
    NoMatchingIdentity,
    #[error("{0}")]
    Crypto(String),
}

pub type Result<T> = std::result::Result<T, CodecError>;

/// A 32-byte id: a blob id (keyed hash of plaintext) or an object id (hash of stored bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// The id of stored bytes: plain BLAKE3, checkable without any key.
    pub fn of_stored(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn short(&self) -> String {
        self.to_hex()[..8].to_string()
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl FromStr for Id {
    type Err = CodecError;
    /// 64 hex digits, either case. By table: indexes hold hundreds of
    /// thousands of ids, and `hex::decode_to_slice` was a tenth of a
    /// `verify --read-data`.
    fn from_str(s: &str) -> Result<Id> {
        const fn digits() -> [u8; 256] {
            let mut t = [0xffu8; 256];
            let mut i = 0;
            while i < 10 {
                t[b'0' as usize + i] = i as u8;
                i += 1;
            }
            let mut i = 0;
            while i < 6 {
                t[b'a' as usize + i] = 10 + i as u8;
                t[b'A' as usize + i] = 10 + i as u8;
                i += 1;
            }
            t
        }
        const DIGITS: [u8; 256] = digits();
        let bad = || CodecError::Malformed(format!("not a 64-digit hex id: {s:?}"));
        let hex = s.as_bytes();
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        let mut invalid = 0u8;
        for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let (hi, lo) = (DIGITS[pair[0] as usize], DIGITS[pair[1] as usize]);
            invalid |= hi | lo;
            *o = hi << 4 | lo;
        }
        if invalid & 0xf0 != 0 {
            return Err(bad());
        }
        Ok(Id(out))
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Id, D::Error> {
        // Parsed where the deserializer holds the string: indexes and
        // trailers hold many ids, and a `String` each cost an allocation.
        struct Hex;
        impl serde::de::Visitor<'_> for Hex {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a 64-digit hex id")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> std::result::Result<Id, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Hex)
    }
}

/// Blob types; the byte is part of the blob's AAD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    Data,
}

impl BlobType {
    fn byte(self) -> u8 {
        match self {
            BlobType::Data => 1,
        }
    }
}

/// 32 secret bytes that zeroise nothing but at least never print.
#[derive(Clone)]
pub struct SecretBytes(pub [u8; 32]);

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes(********)")
    }
}

impl SecretBytes {
    pub fn random() -> SecretBytes {
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        SecretBytes(b)
    }
    pub fn to_base64(&self) -> String {
        b64_encode(&self.0)
    }
    pub fn from_base64(s: &str) -> Result<SecretBytes> {
        let v = b64_decode(s.trim())?;
        let arr: [u8; 32] = v
            .try_into()
            .map_err(|_| CodecError::Malformed("key is not 32 bytes".into()))?;
        Ok(SecretBytes(arr))
    }
}

/// The metadata ("dedup") key and what FORMAT.md derives from it.
#[derive(Clone, Debug)]
pub struct MetadataKey {
    pub secret: SecretBytes,
    chunk_id_key: SecretBytes,
    seal_key: SecretBytes,
}

impl MetadataKey {
    pub fn new(secret: SecretBytes) -> MetadataKey {
        let chunk_id_key = SecretBytes(blake3::derive_key(CHUNK_ID_CONTEXT, &secret.0));
        let seal_key = SecretBytes(blake3::derive_key(METADATA_CONTEXT, &secret.0));
        MetadataKey {
            secret,
            chunk_id_key,
            seal_key,
        }
    }

    pub fn blob_id(&self, plaintext: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.chunk_id_key.0, plaintext).as_bytes())
    }

    /// What names this key in public: 128 bits of a one-way derivation,
    /// as eight groups of four hex digits. A restore host that pins it
    /// refuses a repository whose keys someone replaced with their own.
    pub fn fingerprint(&self) -> String {
        let d = blake3::derive_key(FINGERPRINT_CONTEXT, &self.secret.0);
        normalize_fingerprint(&hex::encode(&d[..16])).expect("32 hex digits")
    }

    pub fn chunker_seed(&self) -> u64 {
        let d = blake3::derive_key(CHUNKER_SEED_CONTEXT, &self.secret.0);
        u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
    }

    /// Seal metadata: zstd(JSON) encrypted under the metadata key, bound to `kind`.
    pub fn seal(&self, kind: &str, plaintext: &[u8]) -> Vec<u8> {
        let compressed = zstd::bulk::compress(plaintext, 3).expect("zstd compress of memory");
        let aad = [SEALED_AAD, kind.as_bytes()].concat();
        let mut out = SEALED_MAGIC.to_vec();
        out.extend(aead_encrypt(&self.seal_key, &compressed, &aad));
        out
    }

    pub fn unseal(&self, kind: &str, stored: &[u8]) -> Result<Vec<u8>> {
        let body = stored
            .strip_prefix(SEALED_MAGIC.as_slice())
            .ok_or_else(|| CodecError::Malformed("not a sealed lifeboat object".into()))?;
        let aad = [SEALED_AAD, kind.as_bytes()].concat();
        let compressed = aead_decrypt(&self.seal_key, body, &aad)?;
        zstd_decompress(&compressed)
    }
}

/// The per-session content key. Only the age identity can unwrap it later.
#[derive(Clone, Debug)]
pub struct SessionKey(SecretBytes);

impl SessionKey {
    pub fn random() -> SessionKey {
        SessionKey(SecretBytes::random())
    }

    /// Wrap this key to the repository's recipients (a binary age file).
    pub fn wrap(&self, recipients: &[age::x25519::Recipient]) -> Result<Vec<u8>> {
        age_encrypt(recipients, &self.0.0)
    }

    pub fn unwrap(
        wrapped: &[u8],
        identities: &[Box<dyn age::Identity + Send + Sync>],
    ) -> Result<SessionKey> {
        let bytes = age_decrypt(identities, wrapped)?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CodecError::Malformed("wrapped session key is not 32 bytes".into()))?;
        Ok(SessionKey(SecretBytes(arr)))
    }

    /// Compress (if it helps) and encrypt one blob.
    pub fn encrypt_blob(&self, ty: BlobType, id: &Id, plaintext: &[u8], level: i32) -> Vec<u8> {
        let mut out = Vec::new();
        BlobEncoder::new(self.clone(), level).encode(ty, id, plaintext, &mut out);
        out
    }

    /// Decrypt and decompress one blob. The caller checks the plaintext's id.
    pub fn decrypt_blob(
        &self,
        ty: BlobType,
        id: &Id,
        stored: &[u8],
        raw_len: usize,
    ) -> Result<Vec<u8>> {
        self.decrypt(&blob_aad(ty, id), stored, raw_len)
    }

    /// Decrypt and decompress a group of blobs stored as one (FORMAT.md,
    /// "Groups"): the members' plaintexts, one after another, `size` bytes in
    /// all. The caller cuts the members out and checks their ids.
    pub fn decrypt_group(&self, ty: BlobType, stored: &[u8], size: usize) -> Result<Vec<u8>> {
        let plain = self.decrypt(&group_aad(ty, size), stored, size)?;
        check_group_len(plain.len(), size)?;
        Ok(plain)
    }

    /// [`SessionKey::decrypt_blob`] without a copy of the ciphertext, appending
    /// the plaintext to `out`: `stored` is decrypted where it lies (and is
    /// garbage afterwards). For readers that own the object they read (a
    /// whole pack or WAL file).
    pub fn decrypt_blob_in_place(
        &self,
        ty: BlobType,
        id: &Id,
        stored: &mut [u8],
        raw_len: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        check_raw_len(raw_len)?;
        unpack(
            aead_decrypt_in_place(&self.0, stored, &blob_aad(ty, id))?,
            raw_len,
            out,
        )
    }

    /// [`SessionKey::decrypt_group`] in place, appending to `out`.
    pub fn decrypt_group_in_place(
        &self,
        ty: BlobType,
        stored: &mut [u8],
        size: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        check_raw_len(size)?;
        let start = out.len();
        unpack(
            aead_decrypt_in_place(&self.0, stored, &group_aad(ty, size))?,
            size,
            out,
        )?;
        check_group_len(out.len() - start, size)
    }

    /// Authenticate one stored blob without decrypting or decompressing it:
    /// its tag must verify under this key and the blob's id, and its payload
    /// must say it holds `raw_len` bytes (a raw payload's length, a zstd
    /// frame header's content size; only that header is deciphered). What
    /// `verify --read-data` does: it proves the stored bytes are the ones
    /// written, at about the speed of reading them.
    pub fn authenticate_blob(
        &self,
        ty: BlobType,
        id: &Id,
        stored: &[u8],
        raw_len: usize,
    ) -> Result<()> {
        check_raw_len(raw_len)?;
        let mut head = [0u8; PAYLOAD_HEAD];
        let (n, len) = aead_authenticate(&self.0, stored, &blob_aad(ty, id), &mut head)?;
        check_payload(&head[..n], len, raw_len)
    }

    /// [`SessionKey::authenticate_blob`] for a group of `size` bytes.
    pub fn authenticate_group(&self, ty: BlobType, stored: &[u8], size: usize) -> Result<()> {
        check_raw_len(size)?;
        let mut head = [0u8; PAYLOAD_HEAD];
        let (n, len) = aead_authenticate(&self.0, stored, &group_aad(ty, size), &mut head)?;
        check_payload(&head[..n], len, size)
    }

    fn decrypt(&self, aad: &[u8], stored: &[u8], raw_len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.decrypt_into(aad, stored, raw_len, &mut out)?;
        Ok(out)
    }

    fn decrypt_into(
        &self,
        aad: &[u8],
        stored: &[u8],
        raw_len: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        check_raw_len(raw_len)?;
        unpack(&aead_decrypt(&self.0, stored, aad)?, raw_len, out)
    }
}

/// `raw_len` comes from an index entry; zstd preallocates it, so check the
/// format's bound before a forged value can ask for gigabytes.
fn check_raw_len(raw_len: usize) -> Result<()> {
    if raw_len > MAX_BLOB_SIZE {
        return Err(CodecError::Malformed(format!(
            "blob length {raw_len} exceeds the {MAX_BLOB_SIZE}-byte bound"
        )));
    }
    Ok(())
}

fn check_group_len(len: usize, size: usize) -> Result<()> {
    if len != size {
        return Err(CodecError::Malformed(format!(
            "group of {len} bytes, {size} expected"
        )));
    }
    Ok(())
}

/// A decrypted payload (flag byte, then the raw or zstd-compressed
/// plaintext), appended to `out`.
fn unpack(payload: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<()> {
    match payload.split_first() {
        Some((0, raw)) => {
            out.extend_from_slice(raw);
            Ok(())
        }
        Some((1, z)) => decompress_into(z, raw_len, out),
        _ => Err(CodecError::Malformed("unknown blob encoding".into())),
    }
}

/// Bytes of a payload enough for its flag and a zstd frame header (at most
/// 18 bytes).
const PAYLOAD_HEAD: usize = 32;

/// What [`unpack`] would produce, checked without producing it from the
/// payload's first bytes `head` and its length `len`: the encoding flag, and
/// the plaintext length (a raw payload's own, a zstd frame's declared content
/// size).
fn check_payload(head: &[u8], len: usize, raw_len: usize) -> Result<()> {
    let declared = match head.split_first() {
        Some((0, _)) => len as u64 - 1,
        Some((1, z)) => zstd::zstd_safe::get_frame_content_size(z)
            .ok()
            .flatten()
            .ok_or_else(|| CodecError::Malformed("zstd: no frame with a content size".into()))?,
        _ => return Err(CodecError::Malformed("unknown blob encoding".into())),
    };
    if declared != raw_len as u64 {
        return Err(CodecError::Malformed(format!(
            "holds {declared} bytes, {raw_len} expected"
        )));
    }
    Ok(())
}

/// Compresses and encrypts blobs with one session key, reusing its zstd context
/// and scratch buffer: one per writing thread. (Fresh multi-MiB buffers for every
/// blob, allocated on one thread and freed on another, made glibc's per-thread
/// arenas grow during long backups.)
pub struct BlobEncoder {
    key: SessionKey,
    level: i32,
    compressor: zstd::bulk::Compressor<'static>,
    /// The same level with zstd's lazy match finder, made on first use.
    thorough: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
    /// A group's members, joined before compressing.
    joined: Vec<u8>,
}

impl BlobEncoder {
    pub fn new(key: SessionKey, level: i32) -> BlobEncoder {
        BlobEncoder {
            key,
            level,
            compressor: zstd::bulk::Compressor::new(level).expect("zstd context"),
            thorough: None,
            scratch: Vec::new(),
            joined: Vec::new(),
        }
    }

    /// Write the stored form of one blob into `out` (cleared first):
    /// nonce || XChaCha20-Poly1305(flag || payload) || tag, as FORMAT.md says.
    pub fn encode(&mut self, ty: BlobType, id: &Id, plaintext: &[u8], out: &mut Vec<u8>) {
        self.seal(&blob_aad(ty, id), plaintext, out, Effort::Fast);
    }

    /// Write the stored form of a group: `members` one after another,
    /// compressed together (FORMAT.md, "Groups"). Returns the group's size.
    pub fn encode_group(
        &mut self,
        ty: BlobType,
        members: &[&[u8]],
        out: &mut Vec<u8>,
        effort: Effort,
    ) -> usize {
        let mut joined = std::mem::take(&mut self.joined);
        joined.clear();
        for m in members {
            joined.extend_from_slice(m);
        }
        self.seal(&group_aad(ty, joined.len()), &joined, out, effort);
        let size = joined.len();
        self.joined = joined;
        size
    }

    fn seal(&mut self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>, effort: Effort) {
        // The failpoint changes what is stored after the id was taken (a bit
        // flip in memory, or a bug): only re-hashing the plaintext sees it.
        let flipped: Vec<u8>;
        let plaintext = if crate::failpoint::fails("encode:flip-plaintext") && !plaintext.is_empty()
        {
            flipped = [&[plaintext[0] ^ 1], &plaintext[1..]].concat();
            &flipped
        } else {
            plaintext
        };
        // zstd only counts when it makes the blob smaller, so give it no more
        // room than the plaintext: an error means "not smaller".
        self.scratch.clear();
        self.scratch.reserve(plaintext.len());
        let compressor = match effort {
            Effort::Fast => &mut self.compressor,
            Effort::Thorough => self
                .thorough
                .get_or_insert_with(|| thorough_compressor(self.level)),
        };
        let compressed = compressor
            .compress_to_buffer(plaintext, &mut self.scratch)
            .is_ok_and(|n| n < plaintext.len());
        let (flag, payload) = if compressed {
            (1u8, &self.scratch[..])
        } else {
            (0u8, plaintext)
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        out.clear();
        out.reserve(BLOB_OVERHEAD + payload.len());
        out.extend_from_slice(&nonce);
        out.push(flag);
        out.extend_from_slice(payload);
        let tag = XChaCha20Poly1305::new((&self.key.0.0).into())
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[NONCE_LEN..])
            .expect("XChaCha20-Poly1305 encryption of memory cannot fail");
        out.extend_from_slice(&tag);
    }
}

/// How hard zstd looks for matches. `Fast` is the repository's level as it
/// is; `Thorough` the same level with zstd's lazy strategy (its levels 6
/// and up use it already) on a hash chain with 4-byte matches, which costs
/// two to three times the CPU and on some data stores far less: a B-tree
/// index of integers about 30 % less, while a pgbench table gets slightly
/// bigger. `Effort::choose` decides per file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    Fast,
    Thorough,
}

impl Effort {
    /// `Thorough` if it stores `sample` at least 10 % smaller than `Fast`.
    pub fn choose(sample: &[u8], level: i32) -> Effort {
        type Probe = (
            i32,
            zstd::bulk::Compressor<'static>,
            zstd::bulk::Compressor<'static>,
        );
        thread_local! {
            static PROBE: std::cell::RefCell<Option<Probe>> = const { std::cell::RefCell::new(None) };
        }
        PROBE.with(|p| {
            let mut p = p.borrow_mut();
            if p.as_ref().is_none_or(|(l, _, _)| *l != level) {
                *p = Some((
                    level,
                    zstd::bulk::Compressor::new(level).expect("zstd context"),
                    thorough_compressor(level),
                ));
            }
            let (_, fast, thorough) = p.as_mut().expect("set above");
            let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(sample.len()));
            let a = fast
                .compress_to_buffer(sample, &mut out)
                .unwrap_or(sample.len());
            out.clear();
            let b = thorough
                .compress_to_buffer(sample, &mut out)
                .unwrap_or(sample.len());
            if b * 10 <= a * 9 {
                Effort::Thorough
            } else {
                Effort::Fast
            }
        })
    }
}

fn thorough_compressor(level: i32) -> zstd::bulk::Compressor<'static> {
    let mut c = zstd::bulk::Compressor::new(level).expect("zstd context");
    if level < 6 {
        use zstd::zstd_safe::{CParameter, ParamSwitch, Strategy};
        c.set_parameter(CParameter::Strategy(Strategy::ZSTD_lazy))
            .expect("zstd strategy");
        // The hash chain: on 1 MiB groups of an index it is as fast as the
        // row-based match finder zstd picks by default, and with 4-byte
        // matches (the default is 5 or 6 at these levels) both faster and
        // 7 % smaller: an index's keys are 4 or 8 bytes. Tuning only: a zstd
        // that refuses either (a system libzstd before 1.5 has no row match
        // finder) stores about as much, at another speed.
        let _ = c.set_parameter(CParameter::UseRowMatchFinder(ParamSwitch::Disable));
        let _ = c.set_parameter(CParameter::MinMatch(4));
    }
    c
}

/// A group's AAD binds its type and size; each member is bound to its id by
/// the keyed hash readers recompute.
fn group_aad(ty: BlobType, size: usize) -> Vec<u8> {
    let mut aad = GROUP_AAD.to_vec();
    aad.push(ty.byte());
    aad.extend_from_slice(&(size as u32).to_le_bytes());
    aad
}

fn blob_aad(ty: BlobType, id: &Id) -> Vec<u8> {
    let mut aad = BLOB_AAD.to_vec();
    aad.push(ty.byte());
    aad.extend_from_slice(&id.0);
    aad
}

fn aead_encrypt(key: &SecretBytes, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption of memory cannot fail");
    let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

fn aead_decrypt(key: &SecretBytes, stored: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    if stored.len() < NONCE_LEN + TAG_LEN {
        return Err(CodecError::Authentication);
    }
    let (nonce, ct) = stored.split_at(NONCE_LEN);
    XChaCha20Poly1305::new((&key.0).into())
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| CodecError::Authentication)
}

/// [`aead_decrypt`] where the ciphertext lies: the plaintext is the
/// returned part of `stored`.
fn aead_decrypt_in_place<'a>(
    key: &SecretBytes,
    stored: &'a mut [u8],
    aad: &[u8],
) -> Result<&'a [u8]> {
    if stored.len() < NONCE_LEN + TAG_LEN {
        return Err(CodecError::Authentication);
    }
    let (nonce, rest) = stored.split_at_mut(NONCE_LEN);
    let (ct, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
    XChaCha20Poly1305::new((&key.0).into())
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            aad,
            ct,
            chacha20poly1305::Tag::from_slice(tag),
        )
        .map_err(|_| CodecError::Authentication)?;
    Ok(ct)
}

/// `aead_decrypt_in_place`'s check without the decryption: the Poly1305 tag
/// over `aad` and the ciphertext, computed as XChaCha20-Poly1305 does (RFC
/// 8439 section 2.8 with XChaCha20's extended nonce), and compared in
/// constant time. Only the first `head.len()` bytes of the plaintext are
/// deciphered, into `head`. Returns how many, and the plaintext's length.
fn aead_authenticate(
    key: &SecretBytes,
    stored: &[u8],
    aad: &[u8],
    head: &mut [u8],
) -> Result<(usize, usize)> {
    use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
    use poly1305::universal_hash::{KeyInit as _, UniversalHash};
    use zeroize::Zeroize;
    if stored.len() < NONCE_LEN + TAG_LEN {
        return Err(CodecError::Authentication);
    }
    let (nonce, rest) = stored.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut cipher = chacha20::XChaCha20::new((&key.0).into(), nonce.into());
    // The one-time Poly1305 key is the first 32 bytes of the key stream; the
    // message is enciphered from block 1 on.
    let mut mac_key = [0u8; 32];
    cipher.apply_keystream(&mut mac_key);
    let mut mac = poly1305::Poly1305::new((&mac_key).into());
    mac_key.zeroize();
    mac.update_padded(aad);
    mac.update_padded(ct);
    let mut lengths = poly1305::Block::default();
    lengths[..8].copy_from_slice(&(aad.len() as u64).to_le_bytes());
    lengths[8..].copy_from_slice(&(ct.len() as u64).to_le_bytes());
    mac.update(&[lengths]);
    mac.verify(tag.into())
        .map_err(|_| CodecError::Authentication)?;
    let n = head.len().min(ct.len());
    cipher.seek(64u64);
    head[..n].copy_from_slice(&ct[..n]);
    cipher.apply_keystream(&mut head[..n]);
    Ok((n, ct.len()))
}

fn zstd_decompress(z: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(z)
        .and_then(|mut d| d.read_to_end(&mut out))
        .map_err(|e| CodecError::Malformed(format!("zstd: {e}")))?;
    Ok(out)
}

pub fn age_encrypt(recipients: &[age::x25519::Recipient], plaintext: &[u8]) -> Result<Vec<u8>> {
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| CodecError::Crypto(format!("age: {e}")))?;
    let mut out = Vec::new();
    let mut w = encryptor
        .wrap_output(&mut out)
        .map_err(|e| CodecError::Crypto(format!("age: {e}")))?;
    w.write_all(plaintext)
        .and_then(|_| w.finish().map(|_| ()))
        .map_err(|e| CodecError::Crypto(format!("age: {e}")))?;
    Ok(out)
}

pub fn age_decrypt(
    identities: &[Box<dyn age::Identity + Send + Sync>],
    stored: &[u8],
) -> Result<Vec<u8>> {
    let decryptor = age::Decryptor::new_buffered(stored).map_err(|_| CodecError::Authentication)?;
    let mut reader = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => CodecError::NoMatchingIdentity,
            _ => CodecError::Authentication,
        })?;
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map_err(|_| CodecError::Authentication)?;
    Ok(out)
}

/// Argon2id parameters as stored in a passphrase key file.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    pub algorithm: String,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub salt: String,
}

impl KdfParams {
    pub fn new_random() -> KdfParams {
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        KdfParams {
            algorithm: "argon2id".into(),
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
            salt: b64_encode(&salt),
        }
    }

    fn derive(&self, passphrase: &str) -> Result<SecretBytes> {
        if self.algorithm != "argon2id" {
            return Err(CodecError::Malformed(format!(
                "unknown kdf {}",
                self.algorithm
            )));
        }
        // Refuse absurd parameters from a tampered key file (memory exhaustion).
        if self.memory_kib > MAX_KDF_MEMORY_KIB || self.iterations > 100 || self.parallelism > 64 {
            return Err(CodecError::Malformed("kdf parameters out of range".into()));
        }
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
                .map_err(|e| CodecError::Malformed(format!("kdf parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = b64_decode(&self.salt)?;
        let mut out = [0u8; 32];
        argon
            .hash_password_into(passphrase.as_bytes(), &salt, &mut out)
            .map_err(|e| CodecError::Crypto(format!("argon2: {e}")))?;
        Ok(SecretBytes(out))
    }
}

/// Encrypt a key file body under a passphrase. Returns (nonce || ciphertext).
pub fn passphrase_encrypt(
    params: &KdfParams,
    passphrase: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let key = params.derive(passphrase)?;
    Ok(aead_encrypt(&key, plaintext, KEY_AAD))
}

/// Decrypt a key file body; `Authentication` means a wrong passphrase (or tampering).
pub fn passphrase_decrypt(params: &KdfParams, passphrase: &str, stored: &[u8]) -> Result<Vec<u8>> {
    let key = params.derive(passphrase)?;
    aead_decrypt(&key, stored, KEY_AAD)
}

/// The unlock cache's key: the passphrase and the key file it opened
/// (`binding`), hashed, not stretched (FORMAT.md "Unlock cache").
fn unlock_cache_key(passphrase: &str, binding: &[u8]) -> SecretBytes {
    let mut h = blake3::Hasher::new_derive_key(UNLOCK_CACHE_CONTEXT);
    h.update(&(passphrase.len() as u64).to_le_bytes());
    h.update(passphrase.as_bytes());
    h.update(binding);
    SecretBytes(*h.finalize().as_bytes())
}

/// Encrypt a key file's plaintext for the unlock cache.
pub fn unlock_cache_seal(passphrase: &str, binding: &[u8], plaintext: &[u8]) -> Vec<u8> {
    aead_encrypt(
        &unlock_cache_key(passphrase, binding),
        plaintext,
        UNLOCK_CACHE_AAD,
    )
}

/// Decrypt an unlock cache entry; `Authentication` for another passphrase,
/// another key file, or a damaged entry.
pub fn unlock_cache_open(passphrase: &str, binding: &[u8], stored: &[u8]) -> Result<Vec<u8>> {
    aead_decrypt(
        &unlock_cache_key(passphrase, binding),
        stored,
        UNLOCK_CACHE_AAD,
    )
}

pub fn b64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub fn b64_decode(s: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| CodecError::Malformed("invalid base64".into()))
}

/// zstd decompression with one context per thread: a restore decompresses
/// hundreds of thousands of small blocks, and a fresh context each time costs
/// more than decompressing one. At most `raw_len` bytes, appended to `out`.
fn decompress_into(z: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<()> {
    thread_local! {
        static CONTEXT: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(
                zstd::bulk::Decompressor::new()
                    .map_err(|e| CodecError::Malformed(format!("zstd: {e}")))?,
            );
        }
        let start = out.len();
        out.reserve_exact(raw_len);
        let mut end = std::io::Cursor::new(&mut *out);
        end.set_position(start as u64);
        let written = c
            .as_mut()
            .expect("set above")
            .decompress_to_buffer(z, &mut end)
            .map_err(|e| CodecError::Malformed(format!("zstd: {e}")))?;
        if written > raw_len {
            out.truncate(start);
            return Err(CodecError::Malformed(format!(
                "zstd: more than the {raw_len} bytes expected"
            )));
        }
        Ok(())
    })
}

/// A fingerprint as a user may write it (any case, with or without the
/// dashes or spaces), in the form `MetadataKey::fingerprint` prints; `None`
/// if it is not 32 hex digits.
pub fn normalize_fingerprint(s: &str) -> Option<String> {
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | ':'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(
        hex.as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).expect("hex"))
            .collect::<Vec<_>>()
            .join("-"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk() -> MetadataKey {
        MetadataKey::new(SecretBytes([7u8; 32]))
    }

    #[test]
    fn blob_round_trip_and_tamper() {
        let sk = SessionKey::random();
        let data = b"hello hello hello hello hello hello".repeat(100);
        let id = mk().blob_id(&data);
        let mut stored = sk.encrypt_blob(BlobType::Data, &id, &data, 3);
        assert!(stored.len() < data.len());
        assert_eq!(
            sk.decrypt_blob(BlobType::Data, &id, &stored, data.len())
                .unwrap(),
            data
        );
        let other = mk().blob_id(b"other");
        assert!(matches!(
            sk.decrypt_blob(BlobType::Data, &other, &stored, data.len()),
            Err(CodecError::Authentication)
        ));
        stored[30] ^= 1;
        assert!(matches!(
            sk.decrypt_blob(BlobType::Data, &id, &stored, data.len()),
            Err(CodecError::Authentication)
        ));
    }

    /// A group of `members`, stored: its bytes and its size.
    fn group(sk: &SessionKey, members: &[&[u8]], effort: Effort) -> (Vec<u8>, usize) {
        let mut stored = Vec::new();
        let size = BlobEncoder::new(sk.clone(), 1).encode_group(
            BlobType::Data,
            members,
            &mut stored,
            effort,
        );
        (stored, size)
    }

    #[test]
    fn group_round_trip_binds_its_size_and_is_not_a_blob() {
        let sk = SessionKey::random();
        let (a, b) = (b"first member ".repeat(50), b"second member ".repeat(70));
        let (mut stored, size) = group(&sk, &[&a, &b], Effort::Thorough);
        assert_eq!(size, a.len() + b.len());
        assert_eq!(
            sk.decrypt_group(BlobType::Data, &stored, size).unwrap(),
            [a.clone(), b].concat()
        );
        // Another size, or read as a single blob: refused.
        assert!(sk.decrypt_group(BlobType::Data, &stored, size - 1).is_err());
        let id = mk().blob_id(&a);
        assert!(
            sk.decrypt_blob(BlobType::Data, &id, &stored, a.len())
                .is_err()
        );
        stored[30] ^= 1;
        assert!(matches!(
            sk.decrypt_group(BlobType::Data, &stored, size),
            Err(CodecError::Authentication)
        ));
    }

    #[test]
    fn ids_parse_from_hex_of_either_case_and_nothing_else() {
        for seed in 0..200u32 {
            let id = mk().blob_id(&seed.to_le_bytes());
            let hex = id.to_hex();
            assert_eq!(hex.parse::<Id>().unwrap(), id);
            assert_eq!(hex.to_uppercase().parse::<Id>().unwrap(), id);
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(serde_json::from_str::<Id>(&json).unwrap(), id);
            for (at, c) in [(0, 'g'), (63, ' '), (seed as usize % 64, 'x')] {
                let mut bad = hex.clone().into_bytes();
                bad[at] = c as u8;
                assert!(String::from_utf8(bad).unwrap().parse::<Id>().is_err());
            }
            assert!(hex[..63].parse::<Id>().is_err());
            assert!(format!("{hex}0").parse::<Id>().is_err());
            // 64 bytes, but not 64 digits.
            assert!(format!("é{}", &hex[2..]).parse::<Id>().is_err());
        }
    }

    #[test]
    fn authentication_without_decompressing_checks_tag_id_and_length() {
        let sk = SessionKey::random();
        let packed = b"compresses well ".repeat(500);
        // Stored compressed, and stored raw (nothing to gain).
        let mut random = vec![0u8; 3000];
        blake3::Hasher::new().finalize_xof().fill(&mut random);
        for data in [packed, random, b"tiny".to_vec()] {
            let id = mk().blob_id(&data);
            let stored = sk.encrypt_blob(BlobType::Data, &id, &data, 3);
            let auth = |ty, id: &Id, stored: &[u8], len| sk.authenticate_blob(ty, id, stored, len);
            auth(BlobType::Data, &id, &stored, data.len()).unwrap();
            // A length the index does not agree with, another id, any byte.
            assert!(matches!(
                auth(BlobType::Data, &id, &stored, data.len() + 1),
                Err(CodecError::Malformed(m)) if m.contains("expected")
            ));
            let other = mk().blob_id(b"other");
            assert!(matches!(
                auth(BlobType::Data, &other, &stored, data.len()),
                Err(CodecError::Authentication)
            ));
            for at in [0, NONCE_LEN, stored.len() / 2, stored.len() - 1] {
                let mut flipped = stored.clone();
                flipped[at] ^= 1;
                assert!(matches!(
                    auth(BlobType::Data, &id, &flipped, data.len()),
                    Err(CodecError::Authentication)
                ));
            }
            assert!(auth(BlobType::Data, &id, &stored[..stored.len() - 1], data.len()).is_err());
        }
        // A group: its size, and only as a group.
        let (a, b) = (b"first ".repeat(300), b"second ".repeat(300));
        let (stored, size) = group(&sk, &[&a, &b], Effort::Fast);
        sk.authenticate_group(BlobType::Data, &stored, size)
            .unwrap();
        assert!(
            sk.authenticate_group(BlobType::Data, &stored, size - 1)
                .is_err()
        );
        let id = mk().blob_id(&a);
        assert!(
            sk.authenticate_blob(BlobType::Data, &id, &stored, a.len())
                .is_err()
        );
    }

    /// The tag-only check accepts exactly what XChaCha20-Poly1305's decryption
    /// accepts, and deciphers the same first bytes, for every length around
    /// Poly1305's 16-byte and ChaCha20's 64-byte blocks and any AAD length.
    #[test]
    fn tag_only_authentication_agrees_with_the_aead() {
        let key = SecretBytes::random();
        let mut rng_bytes = vec![0u8; 300];
        blake3::Hasher::new().finalize_xof().fill(&mut rng_bytes);
        for len in (0..=150).chain([255, 256, 257, 300]) {
            for aad_len in [0, 1, 15, 16, 17, 40] {
                let (msg, aad) = (&rng_bytes[..len], &rng_bytes[300 - aad_len..]);
                let stored = aead_encrypt(&key, msg, aad);
                let mut head = [0u8; PAYLOAD_HEAD];
                let (n, plain_len) = aead_authenticate(&key, &stored, aad, &mut head).unwrap();
                assert_eq!((n, plain_len), (len.min(PAYLOAD_HEAD), len));
                assert_eq!(&head[..n], &msg[..n]);
                let at = (len * 7 + aad_len) % stored.len();
                let mut flipped = stored.clone();
                flipped[at] ^= 0x80;
                assert!(aead_decrypt(&key, &flipped, aad).is_err());
                assert!(aead_authenticate(&key, &flipped, aad, &mut head).is_err());
                if aad_len > 0 {
                    let other = &rng_bytes[..aad_len];
                    assert_eq!(
                        aead_decrypt(&key, &stored, other).is_ok(),
                        aead_authenticate(&key, &stored, other, &mut head).is_ok()
                    );
                }
            }
        }
        let stored = aead_encrypt(&key, b"x", b"");
        assert!(aead_authenticate(&SecretBytes::random(), &stored, b"", &mut [0u8; 4]).is_err());
    }

    #[test]
    fn in_place_decryption_reads_what_the_copying_one_reads() {
        let sk = SessionKey::random();
        let data = b"in place, in place, in place ".repeat(200);
        let id = mk().blob_id(&data);
        let stored = sk.encrypt_blob(BlobType::Data, &id, &data, 3);
        let mut out = Vec::new();
        sk.decrypt_blob_in_place(
            BlobType::Data,
            &id,
            &mut stored.clone(),
            data.len(),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, data);
        // (appending to what `out` holds: decrypt_into_appends_... below)
        // Incompressible: stored raw.
        let noise: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        let nid = mk().blob_id(&noise);
        let raw = sk.encrypt_blob(BlobType::Data, &nid, &noise, 3);
        let mut out = Vec::new();
        sk.decrypt_blob_in_place(
            BlobType::Data,
            &nid,
            &mut raw.clone(),
            noise.len(),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, noise);
        // Tampered, the wrong id, too short, a forged length: refused.
        let mut tampered = stored.clone();
        tampered[40] ^= 1;
        for (mut bytes, id, len) in [
            (tampered, id, data.len()),
            (stored.clone(), nid, data.len()),
            (stored[..30].to_vec(), id, data.len()),
            (stored.clone(), id, MAX_BLOB_SIZE + 1),
        ] {
            let mut out = Vec::new();
            assert!(
                sk.decrypt_blob_in_place(BlobType::Data, &id, &mut bytes, len, &mut out)
                    .is_err()
            );
            assert!(out.is_empty());
        }
        // A group, in place.
        let (a, b) = (b"member one ".repeat(40), b"member two ".repeat(60));
        let mut group = Vec::new();
        let size = BlobEncoder::new(sk.clone(), 1).encode_group(
            BlobType::Data,
            &[&a, &b],
            &mut group,
            Effort::Fast,
        );
        let mut out = Vec::new();
        sk.decrypt_group_in_place(BlobType::Data, &mut group.clone(), size, &mut out)
            .unwrap();
        assert_eq!(out, [a, b].concat());
        let mut out = Vec::new();
        assert!(
            sk.decrypt_group_in_place(BlobType::Data, &mut group, size - 1, &mut out)
                .is_err()
        );
    }

    #[test]
    fn the_thorough_effort_is_chosen_only_where_it_pays() {
        // Leaf pages of a B-tree on an integer key, as PostgreSQL lays them
        // out: a header, line pointers counting down from the page's end,
        // 16-byte tuples (item pointer, size, key) counting up.
        let mut key = 0u32;
        let index: Vec<u8> = (0..128)
            .flat_map(|_| {
                let mut page = vec![0u8; 8192];
                let n = 400;
                page[12..14].copy_from_slice(&(24 + 4 * n as u16).to_le_bytes());
                for i in 0..n {
                    let off = 8192 - 16 * (i + 1);
                    let lp = (off as u32) | (1 << 15) | (16 << 17);
                    page[24 + 4 * i..28 + 4 * i].copy_from_slice(&lp.to_le_bytes());
                    let t = &mut page[off..off + 16];
                    t[2..4].copy_from_slice(&((key / 61) as u16).to_le_bytes());
                    t[4..6].copy_from_slice(&((key % 61) as u16 + 1).to_le_bytes());
                    t[6..8].copy_from_slice(&16u16.to_le_bytes());
                    t[8..12].copy_from_slice(&key.to_le_bytes());
                    key += 1;
                }
                page
            })
            .collect();
        assert_eq!(Effort::choose(&index, 1), Effort::Thorough);
        let mut random = vec![0u8; 1 << 20];
        rand::rngs::OsRng.fill_bytes(&mut random);
        assert_eq!(Effort::choose(&random, 1), Effort::Fast);
        // Levels that look hard already gain nothing more.
        assert_eq!(Effort::choose(&index, 9), Effort::Fast);
    }

    #[test]
    fn incompressible_blob_is_stored_raw() {
        let sk = SessionKey::random();
        let mut data = vec![0u8; 4096];
        rand::rngs::OsRng.fill_bytes(&mut data);
        let id = mk().blob_id(&data);
        let stored = sk.encrypt_blob(BlobType::Data, &id, &data, 3);
        assert_eq!(stored.len(), data.len() + 1 + NONCE_LEN + TAG_LEN);
        assert_eq!(
            sk.decrypt_blob(BlobType::Data, &id, &stored, data.len())
                .unwrap(),
            data
        );
    }

    #[test]
    fn decrypt_into_appends_and_holds_to_the_expected_length() {
        let sk = SessionKey::random();
        let data = b"hello hello hello hello hello hello".repeat(100);
        let id = mk().blob_id(&data);
        let stored = sk.encrypt_blob(BlobType::Data, &id, &data, 3);
        let mut out = b"before".to_vec();
        sk.decrypt_blob_in_place(
            BlobType::Data,
            &id,
            &mut stored.clone(),
            data.len(),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [b"before".as_slice(), &data].concat());
        // An entry claiming fewer bytes than the blob holds is refused, even
        // with room to spare in `out`, and leaves `out` as it was.
        let mut out = Vec::with_capacity(data.len() * 4);
        out.extend_from_slice(b"before");
        assert!(
            sk.decrypt_blob_in_place(
                BlobType::Data,
                &id,
                &mut stored.clone(),
                data.len() - 1,
                &mut out
            )
            .is_err()
        );
        assert_eq!(out, b"before");
    }

    #[test]
    fn seal_binds_kind() {
        let k = mk();
        let s = k.seal("index", b"{\"a\":1}");
        assert_eq!(k.unseal("index", &s).unwrap(), b"{\"a\":1}");
        assert!(k.unseal("backup", &s).is_err());
        let other = MetadataKey::new(SecretBytes([8u8; 32]));
        assert!(matches!(
            other.unseal("index", &s),
            Err(CodecError::Authentication)
        ));
    }

    #[test]
    fn unlock_cache_entry_opens_only_with_its_passphrase_and_key_file() {
        let sealed = unlock_cache_seal("pass", b"key file A", b"material");
        assert!(!sealed.windows(8).any(|w| w == b"material"));
        assert_eq!(
            unlock_cache_open("pass", b"key file A", &sealed).unwrap(),
            b"material"
        );
        for (pass, binding) in [("pas", &b"key file A"[..]), ("pass", b"key file B")] {
            assert!(matches!(
                unlock_cache_open(pass, binding, &sealed),
                Err(CodecError::Authentication)
            ));
        }
        // The length prefix keeps the passphrase and the key file apart.
        assert!(unlock_cache_open("passk", b"ey file A", &sealed).is_err());
    }

    #[test]
    fn session_key_wraps_to_identity_only() {
        let id = age::x25519::Identity::generate();
        let sk = SessionKey::random();
        let wrapped = sk.wrap(&[id.to_public()]).unwrap();
        let ids: Vec<Box<dyn age::Identity + Send + Sync>> = vec![Box::new(id)];
        let back = SessionKey::unwrap(&wrapped, &ids).unwrap();
        assert_eq!(back.0.0, sk.0.0);
        let wrong: Vec<Box<dyn age::Identity + Send + Sync>> =
            vec![Box::new(age::x25519::Identity::generate())];
        assert!(matches!(
            SessionKey::unwrap(&wrapped, &wrong),
            Err(CodecError::NoMatchingIdentity)
        ));
    }

    #[test]
    fn oversized_blob_length_is_refused_before_decrypting() {
        let sk = SessionKey::random();
        let data = b"small".to_vec();
        let id = mk().blob_id(&data);
        let stored = sk.encrypt_blob(BlobType::Data, &id, &data, 3);
        assert!(matches!(
            sk.decrypt_blob(BlobType::Data, &id, &stored, MAX_BLOB_SIZE + 1),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn kdf_memory_is_capped() {
        let mut p = KdfParams::new_random();
        p.memory_kib = MAX_KDF_MEMORY_KIB + 1;
        assert!(matches!(
            passphrase_encrypt(&p, "x", b"secret"),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn passphrase_round_trip() {
        let mut p = KdfParams::new_random();
        p.memory_kib = 1024; // keep the unit test fast
        let ct = passphrase_encrypt(&p, "correct horse", b"secret").unwrap();
        assert_eq!(
            passphrase_decrypt(&p, "correct horse", &ct).unwrap(),
            b"secret"
        );
        assert!(matches!(
            passphrase_decrypt(&p, "wrong", &ct),
            Err(CodecError::Authentication)
        ));
    }

    #[test]
    fn a_fingerprint_is_stable_per_key_and_read_back_however_it_is_written() {
        let key = MetadataKey::new(SecretBytes([7; 32]));
        let fp = key.fingerprint();
        assert_eq!(fp, MetadataKey::new(SecretBytes([7; 32])).fingerprint());
        assert_ne!(fp, MetadataKey::new(SecretBytes([8; 32])).fingerprint());
        assert_eq!(fp.len(), 39);
        assert_eq!(fp.matches('-').count(), 7);
        assert_eq!(normalize_fingerprint(&fp), Some(fp.clone()));
        let loose = fp.replace('-', " ").to_uppercase();
        assert_eq!(normalize_fingerprint(&loose), Some(fp.clone()));
        assert_eq!(normalize_fingerprint(&fp[..38]), None);
        assert_eq!(
            normalize_fingerprint(&fp.replace('-', "").replacen(|_| true, "g", 1)),
            None
        );
    }
}
