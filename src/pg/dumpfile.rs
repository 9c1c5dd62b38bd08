//! Reader for the header and table of contents (TOC) of pg_dump's custom
//! archive format (`pg_dump -Fc`).
//!
//! lifeboat sees pg_dump's output as a stream. A custom-format archive written
//! to a pipe starts with the header and the complete TOC (pg_dump writes both
//! before any table data), so the first bytes of the stream tell us which
//! schemas, tables and large objects the dump contains. We read that
//! directly from the binary format instead of parsing `pg_restore -l`, whose
//! text output is ambiguous for names containing spaces or semicolons.
//!
//! # Format
//!
//! Transcribed from PostgreSQL's `src/bin/pg_dump/pg_backup_archiver.c`
//! (`WriteHead`/`ReadHead`, `WriteToc`/`ReadToc`, `ReadInt`, `ReadStr`,
//! `ReadOffset`) and `pg_backup_custom.c` (`_ReadExtraToc`):
//!
//! ```text
//! header:
//!   "PGDMP"                       5 bytes magic
//!   vmaj, vmin, vrev              1 byte each
//!   intSize                       1 byte (4 in practice)
//!   offSize                       1 byte (8 in practice)
//!   format                        1 byte (1 = custom, 3 = tar, 5 = directory)
//!   compression                   < 1.15: Int (zlib level, 0 = none)
//!                                 >= 1.15: 1 byte pg_compress_algorithm
//!                                          (0 none, 1 gzip, 2 lz4, 3 zstd)
//!   tm_sec, tm_min, tm_hour, tm_mday, tm_mon, tm_year, tm_isdst   7 Ints
//!   database name, server version, pg_dump version               3 Strs
//! toc:
//!   count                         Int
//!   count times:
//!     dumpId, hadDumper           Int, Int
//!     tableoid, oid               Str, Str (decimal text)
//!     tag, desc                   Str, Str
//!     section                     Int
//!     defn, dropStmt, copyStmt    Str x3
//!     namespace, tablespace       Str x2
//!     tableam                     Str      (>= 1.14)
//!     relkind                     Int      (>= 1.16)
//!     owner, withOids             Str x2   (withOids is always "false")
//!     dependencies                Str...   terminated by a NULL Str
//!     data offset (custom format) 1 flag byte (1 not set, 2 set, 3 no data)
//!                                 + offSize bytes, least significant first
//!
//! Int = 1 sign byte (0 positive, 1 negative) + intSize magnitude bytes,
//!       least significant first.
//! Str = Int length + that many bytes; length -1 means NULL.
//! ```
//!
//! # Versions
//!
//! Supported archive versions are 1.12 to 1.16:
//!
//! | archive | written by pg_dump                          | differences |
//! |---------|---------------------------------------------|-------------|
//! | 1.12    | 9.0 - 10 (before the 2018 search_path fix)  | base layout |
//! | 1.13    | 11 (and, as far as we know, the back-patched 2018 minor releases of older branches) | none in the layout (adds the SEARCHPATH entry) |
//! | 1.14    | 12 - 15                                     | + tableam per entry |
//! | 1.15    | 16                                          | compression Int -> algorithm byte |
//! | 1.16    | 17 (and 18, which kept the format)          | + relkind per entry; large objects as "BLOB METADATA" groups |
//!
//! Every field is gated exactly as in `ReadHead`/`ReadToc`; each entry's
//! `withOids` and dependency fields are also checked for plausibility, which
//! catches a TOC read with the wrong version layout.
//!
//! Only 1.14 has been verified against real pg_dump output (PostgreSQL 15,
//! see `tests/dumpfile.rs`); the other versions are implemented from the
//! PostgreSQL source and exercised with synthetic archives built in the tests
//! following `WriteHead`/`WriteToc`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Oldest archive version we read: 1.12 (pg_dump 9.0 onwards).
const MIN_VERSION: (u8, u8) = (1, 12);
/// Newest archive version we read: 1.16 (pg_dump 17). A newer minor version
/// may add fields to the layout, so we refuse it rather than misparse it.
const MAX_VERSION: (u8, u8) = (1, 16);

/// `ArchiveFormat` value of `archCustom` in pg_backup.h.
const FORMAT_CUSTOM: u8 = 1;

/// Default limit for [`TocSniffer`]: 64 MiB of TOC is tens of thousands of
/// tables with long definitions.
pub const DEFAULT_SNIFF_LIMIT: usize = 64 * 1024 * 1024;

/// The archive header, everything before the TOC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveHeader {
    /// Archive format version (major, minor, revision), e.g. (1, 14, 0).
    pub version: (u8, u8, u8),
    /// Size in bytes of an integer in the archive (4 in practice).
    pub int_size: u8,
    /// Size in bytes of a file offset in the archive (8 in practice).
    pub off_size: u8,
    /// Archive format: 1 = custom (the only one accepted by [`parse_toc`]).
    pub format: u8,
    /// Compression of the data blocks: "none", "gzip", "lz4" or "zstd".
    /// Archives before 1.15 only record a zlib level, so they are either
    /// "none" or "gzip".
    pub compression: String,
    /// Creation time as "YYYY-MM-DD HH:MM:SS", in the local time zone of the
    /// machine pg_dump ran on (the archive stores no zone).
    pub created: String,
    /// Name of the dumped database.
    pub database: String,
    /// Version string of the server that was dumped, e.g. "15.18 (Debian ...)".
    pub server_version: String,
    /// Version string of the pg_dump that wrote the archive, e.g. "15.18 (...)".
    pub pg_dump_version: String,
}

/// One TOC entry. Only the identifying fields are kept; definitions, drop
/// statements and dependencies are skipped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TocEntry {
    /// Dump ID, unique within the archive, > 0.
    pub dump_id: i32,
    /// Object type, e.g. "TABLE", "TABLE DATA", "SCHEMA", "SEQUENCE",
    /// "MATERIALIZED VIEW", "BLOB", "BLOBS", "BLOB METADATA", "ACL", ...
    pub desc: String,
    /// Schema the object lives in; "" if none (NULL in the archive).
    pub namespace: String,
    /// Object name (for TABLE: the bare table name, unquoted).
    pub tag: String,
    /// Owner role; "" if none.
    pub owner: String,
    /// Section: 1 none, 2 pre-data, 3 data, 4 post-data.
    pub section: i32,
    /// Whether the entry has a data part (TABLE DATA, BLOBS, SEQUENCE SET...).
    pub had_dumper: bool,
    /// Where this entry's data-offset field (flag byte, then `off_size`
    /// bytes) is in the archive, and its flag: 1 not set, 2 set, 3 no data.
    /// A dump written to a pipe has flag 1 everywhere; see [`BlockScanner`].
    pub data_offset_at: usize,
    pub data_offset_flag: u8,
}

/// Header and TOC of a custom-format archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toc {
    pub header: ArchiveHeader,
    pub entries: Vec<TocEntry>,
}

/// Why a prefix could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The prefix ends before the TOC does; read more bytes and try again.
    #[error("archive prefix ends before the end of the table of contents")]
    Incomplete,
    /// The bytes are not a (supported) custom-format archive.
    #[error("not a readable pg_dump custom-format archive: {0}")]
    Invalid(String),
}

/// What a dump contains, small enough to store in a backup record.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct DumpSummary {
    /// Archive format version, e.g. "1.14.0".
    pub archive_version: String,
    /// Name of the dumped database.
    pub database: String,
    /// Sorted schema names, see [`Toc::schemas`]. May include system
    /// schemas such as "pg_catalog" (filter with [`is_system_schema`]).
    pub schemas: Vec<String>,
    /// Sorted (schema, table), see [`Toc::tables`].
    pub tables: Vec<(String, String)>,
    /// Sorted (schema, materialized view).
    pub materialized_views: Vec<(String, String)>,
    /// Whether the dump contains large objects.
    pub large_objects: bool,
    /// Number of TOC entries.
    pub entries: usize,
    /// (dump id, offset in the archive) of every data block, in archive
    /// order, as [`BlockScanner`] found them. Lets a restore feed each
    /// parallel pg_restore only its tables' data. Empty if unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_blocks: Vec<(i32, u64)>,
}

/// Parse the header and TOC from the beginning of a custom-format archive.
///
/// Returns [`ParseError::Incomplete`] if `prefix` ends before the TOC does
/// (the caller reads more and retries); bytes after the TOC are ignored.
/// Never returns `Invalid` for a truncated prefix of a valid archive.
pub fn parse_toc(prefix: &[u8]) -> Result<Toc, ParseError> {
    parse_toc_with_len(prefix).map(|(toc, _)| toc)
}

/// Like [`parse_toc`], also returning the number of bytes the header and TOC
/// occupy (the offset where the data blocks begin).
pub fn parse_toc_with_len(prefix: &[u8]) -> Result<(Toc, usize), ParseError> {
    let mut r = Reader::new(prefix);
    let header = read_header(&mut r)?;
    let entries = read_entries(&mut r, header.version)?;
    Ok((Toc { header, entries }, r.pos))
}

fn invalid(msg: impl Into<String>) -> ParseError {
    ParseError::Invalid(msg.into())
}

fn text(bytes: Option<&[u8]>) -> String {
    // Names are in the database encoding, which is UTF-8 for nearly every
    // cluster; anything else is converted lossily.
    bytes
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

fn read_header(r: &mut Reader<'_>) -> Result<ArchiveHeader, ParseError> {
    // Check the magic byte by byte so that a short prefix of something that
    // is clearly not an archive is rejected at once.
    const MAGIC: &[u8] = b"PGDMP";
    let avail = &r.buf[..r.buf.len().min(MAGIC.len())];
    if avail != &MAGIC[..avail.len()] {
        return Err(if r.buf.starts_with(b"--") {
            invalid("this is a plain SQL dump (pg_dump -Fp), not a custom-format archive")
        } else {
            invalid("missing PGDMP magic at start of archive")
        });
    }
    r.bytes(MAGIC.len())?;

    let vmaj = r.byte()?;
    let vmin = r.byte()?;
    let vrev = r.byte()?;
    if (vmaj, vmin) < MIN_VERSION || (vmaj, vmin) > MAX_VERSION {
        return Err(invalid(format!(
            "unsupported archive version {vmaj}.{vmin}.{vrev} (supported: {}.{} to {}.{})",
            MIN_VERSION.0, MIN_VERSION.1, MAX_VERSION.0, MAX_VERSION.1
        )));
    }
    let version = (vmaj, vmin, vrev);

    let int_size = r.byte()?;
    // pg_restore refuses intSize > 32.
    if int_size == 0 || int_size > 32 {
        return Err(invalid(format!("implausible integer size {int_size}")));
    }
    r.int_size = usize::from(int_size);
    let off_size = r.byte()?;
    if off_size == 0 || off_size > 32 {
        return Err(invalid(format!("implausible offset size {off_size}")));
    }
    r.off_size = usize::from(off_size);

    let format = r.byte()?;
    if format != FORMAT_CUSTOM {
        let name = match format {
            3 => "tar",
            4 => "null",
            5 => "directory",
            _ => "unknown",
        };
        return Err(invalid(format!(
            "archive format {format} ({name}) is not the custom format"
        )));
    }

    let compression = if version >= (1, 15, 0) {
        match r.byte()? {
            0 => "none",
            1 => "gzip",
            2 => "lz4",
            3 => "zstd",
            n => return Err(invalid(format!("unknown compression algorithm {n}"))),
        }
    } else {
        // Before 1.15 the header holds the zlib level; -1 is zlib's default.
        match r.int()? {
            0 => "none",
            -1..=9 => "gzip",
            n => return Err(invalid(format!("invalid compression level {n}"))),
        }
    }
    .to_string();

    let mut tm = [0i32; 7];
    for v in &mut tm {
        *v = r.int()?;
    }
    let [sec, min, hour, mday, mon, year, _isdst] = tm;
    let created = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        i64::from(year) + 1900,
        i64::from(mon) + 1,
        mday,
        hour,
        min,
        sec
    );

    let database = text(r.str()?);
    let server_version = text(r.str()?);
    let pg_dump_version = text(r.str()?);

    Ok(ArchiveHeader {
        version,
        int_size,
        off_size,
        format,
        compression,
        created,
        database,
        server_version,
        pg_dump_version,
    })
}

fn read_entries(r: &mut Reader<'_>, version: (u8, u8, u8)) -> Result<Vec<TocEntry>, ParseError> {
    let count = r.int()?;
    let count =
        usize::try_from(count).map_err(|_| invalid(format!("negative TOC entry count {count}")))?;
    // Do not trust the count for the allocation: every entry takes well over
    // 16 bytes, so this bounds the capacity by the input size.
    let mut entries = Vec::with_capacity(count.min(r.remaining() / 16));

    for _ in 0..count {
        let dump_id = r.int()?;
        if dump_id <= 0 {
            return Err(invalid(format!(
                "TOC entry ID {dump_id} out of range (corrupt TOC?)"
            )));
        }
        let had_dumper = r.int()? != 0;
        // catalogId.tableoid and catalogId.oid, as decimal text.
        for what in ["table OID", "OID"] {
            let oid = r.str()?;
            if !oid.is_some_and(is_decimal) {
                return Err(invalid(format!(
                    "TOC entry {dump_id}: {what} is not a number"
                )));
            }
        }
        let tag = text(r.str()?);
        let desc = text(r.str()?);
        let section = r.int()?;
        r.str()?; // defn
        r.str()?; // dropStmt
        r.str()?; // copyStmt
        let namespace = text(r.str()?);
        r.str()?; // tablespace
        if version >= (1, 14, 0) {
            r.str()?; // tableam
        }
        if version >= (1, 16, 0) {
            r.int()?; // relkind
        }
        let owner = text(r.str()?);
        // withOids: always "false" since PG 12; "true" was possible before.
        // Checking it also catches a TOC read with the wrong version layout.
        match r.str()? {
            Some(b"false") | Some(b"true") => {}
            _ => {
                return Err(invalid(format!(
                    "TOC entry {dump_id}: malformed entry (withOids field)"
                )));
            }
        }
        // Dependencies: dump IDs as decimal strings, terminated by NULL.
        while let Some(dep) = r.str()? {
            if !is_decimal(dep) {
                return Err(invalid(format!(
                    "TOC entry {dump_id}: dependency is not a number"
                )));
            }
        }
        // Custom format extra TOC data (_ReadExtraToc): the data offset.
        let (data_offset_at, data_offset_flag) = r.offset()?;

        entries.push(TocEntry {
            dump_id,
            desc,
            namespace,
            tag,
            owner,
            section,
            had_dumper,
            data_offset_at,
            data_offset_flag,
        });
    }
    Ok(entries)
}

/// Cursor over the prefix. Every read that runs past the end yields
/// `Incomplete`; validity checks only ever look at fully read values, so a
/// truncated valid archive is never reported as `Invalid`.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    int_size: usize,
    off_size: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            int_size: 4,
            off_size: 8,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        if self.remaining() < n {
            return Err(ParseError::Incomplete);
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, ParseError> {
        Ok(self.bytes(1)?[0])
    }

    /// `ReadInt`: a sign byte, then `int_size` bytes of magnitude, least
    /// significant first.
    fn int(&mut self) -> Result<i32, ParseError> {
        let sign = self.byte()?;
        let raw = self.bytes(self.int_size)?;
        if sign > 1 {
            return Err(invalid(format!("invalid integer sign byte {sign}")));
        }
        let mut magnitude: u64 = 0;
        for (i, &b) in raw.iter().enumerate() {
            if i < 4 {
                magnitude |= u64::from(b) << (8 * i);
            } else if b != 0 {
                return Err(invalid("integer in archive does not fit in 32 bits"));
            }
        }
        let value = if sign == 1 {
            -(magnitude as i64)
        } else {
            magnitude as i64
        };
        i32::try_from(value).map_err(|_| invalid("integer in archive does not fit in 32 bits"))
    }

    /// `ReadStr`: an Int length, then that many bytes; length -1 is NULL.
    fn str(&mut self) -> Result<Option<&'a [u8]>, ParseError> {
        let len = self.int()?;
        if len == -1 {
            return Ok(None);
        }
        let len =
            usize::try_from(len).map_err(|_| invalid(format!("invalid string length {len}")))?;
        self.bytes(len).map(Some)
    }

    /// `ReadOffset` (archive >= 1.7): a flag byte, then `off_size` bytes.
    /// Returns where the field starts and its flag.
    fn offset(&mut self) -> Result<(usize, u8), ParseError> {
        let at = self.pos;
        let flag = self.byte()?;
        self.bytes(self.off_size)?;
        // K_OFFSET_POS_NOT_SET = 1, K_OFFSET_POS_SET = 2, K_OFFSET_NO_DATA = 3
        if !(1..=3).contains(&flag) {
            return Err(invalid(format!("unexpected data offset flag {flag}")));
        }
        Ok((at, flag))
    }
}

fn is_decimal(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// Whether `name` is a schema PostgreSQL itself creates and manages:
/// "information_schema" and anything starting with "pg_" ("pg_catalog",
/// "pg_toast", "pg_temp_N", ...; CREATE SCHEMA rejects that prefix for user
/// schemas). Such schemas must never be dropped when cleaning a target.
pub fn is_system_schema(name: &str) -> bool {
    name == "information_schema" || name.starts_with("pg_")
}

fn is_schema_name(s: &str) -> bool {
    !s.is_empty() && s != "-"
}

impl Toc {
    /// Every schema any entry lives in, plus the names of SCHEMA entries,
    /// excluding "" and "-". Includes e.g. "public" whenever something lives
    /// in it.
    ///
    /// Careful when using this to clean a target database: it can contain
    /// system schemas. A dump that carries changed privileges on system
    /// objects (`GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text) ...`)
    /// has an ACL entry in namespace "pg_catalog", and likewise for
    /// "information_schema". Use [`Toc::user_schemas`] for cleaning.
    pub fn schemas(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for e in &self.entries {
            if is_schema_name(&e.namespace) {
                out.insert(e.namespace.clone());
            }
            if e.desc == "SCHEMA" && is_schema_name(&e.tag) {
                out.insert(e.tag.clone());
            }
        }
        out
    }

    /// [`Toc::schemas`] without system schemas (see [`is_system_schema`]).
    pub fn user_schemas(&self) -> BTreeSet<String> {
        let mut all = self.schemas();
        all.retain(|s| !is_system_schema(s));
        all
    }

    fn relations(&self, desc: &str) -> Vec<(String, String)> {
        let set: BTreeSet<(String, String)> = self
            .entries
            .iter()
            .filter(|e| e.desc == desc)
            .map(|e| (e.namespace.clone(), e.tag.clone()))
            .collect();
        set.into_iter().collect()
    }

    /// (schema, name) of all TABLE entries (ordinary tables, partitioned
    /// tables and partitions alike), sorted. Foreign tables ("FOREIGN
    /// TABLE"), views and materialized views are not included.
    pub fn tables(&self) -> Vec<(String, String)> {
        self.relations("TABLE")
    }

    /// (schema, name) of all MATERIALIZED VIEW entries, sorted.
    pub fn materialized_views(&self) -> Vec<(String, String)> {
        self.relations("MATERIALIZED VIEW")
    }

    /// Whether the dump contains large objects: "BLOB" entries (one per
    /// large object, archive <= 1.15), "BLOB METADATA" (groups of large
    /// objects, 1.16), or "BLOBS" (their data).
    pub fn has_large_objects(&self) -> bool {
        self.entries.iter().any(|e| {
            matches!(
                e.desc.as_str(),
                "BLOB" | "BLOBS" | "BLOB METADATA" | "LARGE OBJECT"
            )
        })
    }

    /// Archive version as "major.minor.rev".
    pub fn archive_version(&self) -> String {
        let (a, b, c) = self.header.version;
        format!("{a}.{b}.{c}")
    }

    /// A summary for storing in backup records.
    pub fn summary(&self) -> DumpSummary {
        DumpSummary {
            archive_version: self.archive_version(),
            database: self.header.database.clone(),
            schemas: self.schemas().into_iter().collect(),
            tables: self.tables(),
            materialized_views: self.materialized_views(),
            large_objects: self.has_large_objects(),
            entries: self.entries.len(),
            data_blocks: Vec::new(),
        }
    }
}

/// Learns the TOC of a custom-format archive while it streams past.
///
/// Feed it every chunk of pg_dump's stdout. It buffers the beginning of the
/// stream until the TOC parses, parsing fails, or `limit` bytes are
/// buffered; after that it ignores further input, so memory stays bounded by
/// `limit`. Parsing is retried only when the buffer has at least doubled
/// since the last incomplete attempt (and once more at [`finish`]), so the
/// total parsing work is linear in the bytes buffered.
///
/// [`finish`]: TocSniffer::finish
#[derive(Debug)]
pub struct TocSniffer {
    buf: Vec<u8>,
    limit: usize,
    result: Option<Result<Toc, String>>,
    /// Buffer length at the last attempt that returned `Incomplete`.
    last_attempt: usize,
    /// Number of parse attempts so far.
    attempts: usize,
}

impl Default for TocSniffer {
    fn default() -> Self {
        Self::new(DEFAULT_SNIFF_LIMIT)
    }
}

impl TocSniffer {
    /// A sniffer that buffers at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        TocSniffer {
            buf: Vec::new(),
            limit,
            result: None,
            last_attempt: 0,
            attempts: 0,
        }
    }

    /// Offer the next chunk of the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.result.is_some() || bytes.is_empty() {
            return;
        }
        let take = bytes.len().min(self.limit - self.buf.len());
        self.buf.extend_from_slice(&bytes[..take]);
        let full = self.buf.len() >= self.limit;
        if full || self.buf.len() >= self.last_attempt.saturating_mul(2) {
            self.attempt(full);
        }
    }

    /// True once the outcome is known (parsed, invalid, or limit reached);
    /// further input is ignored from then on.
    pub fn is_done(&self) -> bool {
        self.result.is_some()
    }

    /// Bytes currently buffered (0 once the outcome is known).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many times parsing has been attempted so far (for diagnostics;
    /// grows logarithmically with the TOC size).
    pub fn parse_attempts(&self) -> usize {
        self.attempts
    }

    /// The parsed TOC, if it has been found already.
    pub fn toc(&self) -> Option<&Toc> {
        self.result.as_ref().and_then(|r| r.as_ref().ok())
    }

    /// End of stream: the TOC, or why it could not be read.
    pub fn finish(mut self) -> Result<Toc, String> {
        if self.result.is_none() {
            self.attempt(true);
        }
        self.result
            .unwrap_or_else(|| Err("internal error: no TOC parse result".to_string()))
    }

    /// Try to parse the buffer. `last` means no more bytes will be buffered,
    /// so `Incomplete` is final.
    fn attempt(&mut self, last: bool) {
        self.attempts += 1;
        match parse_toc(&self.buf) {
            Ok(toc) => self.result = Some(Ok(toc)),
            Err(ParseError::Invalid(msg)) => {
                self.result = Some(Err(format!("pg_dump archive: {msg}")));
            }
            Err(ParseError::Incomplete) if last => {
                let msg = if self.buf.len() >= self.limit {
                    format!(
                        "pg_dump archive: table of contents not complete within the first {} bytes",
                        self.limit
                    )
                } else {
                    format!(
                        "pg_dump archive: stream ended after {} bytes, before the end of the table of contents",
                        self.buf.len()
                    )
                };
                self.result = Some(Err(msg));
            }
            Err(ParseError::Incomplete) => {
                self.last_attempt = self.buf.len();
                return;
            }
        }
        self.buf = Vec::new();
    }
}

/// Block types in the data part of a custom archive (pg_backup_custom.c).
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    BlockType,
    DumpId,
    ChunkLen,
    BlobOid,
}

/// Learns, as a custom archive streams past, where each data block starts.
///
/// pg_dump writing to a pipe cannot go back to fill in the TOC's data offsets,
/// so `pg_restore --jobs` on such a file makes every worker scan for its data.
/// With the positions found here the offsets can be patched into a seekable
/// copy ([`patch_data_offsets`]), as pg_dump itself does when writing a file.
/// Memory stays small: only the TOC prefix and a block header are buffered.
pub struct BlockScanner {
    prefix: Vec<u8>,
    last_try: usize,
    toc: Option<Toc>,
    int_size: usize,
    pos: u64,
    want: Want,
    block_type: u8,
    block_start: u64,
    hdr: Vec<u8>,
    skip: u64,
    found: Vec<(i32, u64)>,
    error: Option<String>,
}

impl Default for BlockScanner {
    fn default() -> Self {
        BlockScanner {
            prefix: Vec::new(),
            last_try: 0,
            toc: None,
            int_size: 4,
            pos: 0,
            want: Want::BlockType,
            block_type: 0,
            block_start: 0,
            hdr: Vec::new(),
            skip: 0,
            found: Vec::new(),
            error: None,
        }
    }
}

impl BlockScanner {
    const PREFIX_LIMIT: usize = 64 * 1024 * 1024;

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if self.toc.is_some() {
            self.scan(bytes);
            return;
        }
        self.prefix.extend_from_slice(bytes);
        if self.prefix.len() >= (2 * self.last_try).max(64 * 1024) {
            self.try_toc(false);
        }
    }

    fn try_toc(&mut self, last: bool) {
        match parse_toc_with_len(&self.prefix) {
            Ok((toc, len)) => {
                self.int_size = usize::from(toc.header.int_size);
                self.toc = Some(toc);
                self.pos = len as u64;
                let rest = std::mem::take(&mut self.prefix);
                self.scan(&rest[len..]);
            }
            Err(ParseError::Incomplete) if !last && self.prefix.len() < Self::PREFIX_LIMIT => {
                self.last_try = self.prefix.len();
            }
            Err(e) => {
                self.error = Some(match e {
                    ParseError::Invalid(m) => m,
                    ParseError::Incomplete => "table of contents not found".into(),
                });
                self.prefix = Vec::new();
            }
        }
    }

    fn scan(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() && self.error.is_none() {
            if self.skip > 0 {
                let n = self.skip.min(buf.len() as u64) as usize;
                self.skip -= n as u64;
                self.pos += n as u64;
                buf = &buf[n..];
                continue;
            }
            let need = if self.want == Want::BlockType {
                1
            } else {
                1 + self.int_size
            };
            let take = (need - self.hdr.len()).min(buf.len());
            self.hdr.extend_from_slice(&buf[..take]);
            self.pos += take as u64;
            buf = &buf[take..];
            if self.hdr.len() == need {
                self.step();
                self.hdr.clear();
            }
        }
    }

    fn int(&self) -> Option<i64> {
        let (sign, mag) = self.hdr.split_first()?;
        let mut v: i64 = 0;
        for (i, &b) in mag.iter().enumerate().take(8) {
            v |= i64::from(b) << (8 * i);
        }
        Some(if *sign == 1 { -v } else { v })
    }

    fn step(&mut self) {
        match self.want {
            Want::BlockType => {
                let t = self.hdr[0];
                if t != BLK_DATA && t != BLK_BLOBS {
                    self.error = Some(format!(
                        "unknown data block type {t} at byte {}",
                        self.pos - 1
                    ));
                    return;
                }
                self.block_type = t;
                self.block_start = self.pos - 1;
                self.want = Want::DumpId;
            }
            Want::DumpId => {
                let id = self.int().unwrap_or(0);
                self.found.push((id as i32, self.block_start));
                self.want = if self.block_type == BLK_DATA {
                    Want::ChunkLen
                } else {
                    Want::BlobOid
                };
            }
            Want::ChunkLen => match self.int() {
                Some(0) => {
                    self.want = if self.block_type == BLK_DATA {
                        Want::BlockType
                    } else {
                        Want::BlobOid
                    };
                }
                Some(n) if n > 0 => self.skip = n as u64,
                _ => self.error = Some(format!("invalid data chunk length at byte {}", self.pos)),
            },
            Want::BlobOid => {
                self.want = if self.int() == Some(0) {
                    Want::BlockType
                } else {
                    Want::ChunkLen
                };
            }
        }
    }

    /// The TOC and (dump id, block start) of every data block, once the
    /// whole archive went past.
    pub fn finish(mut self) -> Result<(Toc, Vec<(i32, u64)>), String> {
        if self.toc.is_none() && self.error.is_none() {
            self.try_toc(true);
        }
        if let Some(e) = self.error {
            return Err(e);
        }
        if self.skip > 0 || !self.hdr.is_empty() || self.want != Want::BlockType {
            return Err("archive ends inside a data block".into());
        }
        Ok((self.toc.expect("toc parsed"), self.found))
    }
}

/// Write the data offsets `found` by [`BlockScanner`] into the TOC of a
/// seekable copy of the archive. Returns how many entries were patched.
pub fn patch_data_offsets<F: std::io::Write + std::io::Seek>(
    file: &mut F,
    toc: &Toc,
    found: &[(i32, u64)],
) -> std::io::Result<usize> {
    let off_size = usize::from(toc.header.off_size);
    let at: std::collections::HashMap<i32, u64> = found.iter().copied().collect();
    let mut patched = 0;
    for e in &toc.entries {
        let Some(&pos) = at.get(&e.dump_id) else {
            continue;
        };
        // K_OFFSET_POS_NOT_SET (1) becomes K_OFFSET_POS_SET (2).
        if e.data_offset_flag != 1 || off_size > 8 || (off_size < 8 && pos >> (8 * off_size) != 0) {
            continue;
        }
        let mut field = vec![2u8];
        field.extend_from_slice(&pos.to_le_bytes()[..off_size]);
        file.seek(std::io::SeekFrom::Start(e.data_offset_at as u64))?;
        file.write_all(&field)?;
        patched += 1;
    }
    file.seek(std::io::SeekFrom::End(0))?;
    Ok(patched)
}
