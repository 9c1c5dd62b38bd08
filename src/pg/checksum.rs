//! PostgreSQL's data page checksum, for verifying relation pages read
//! during a physical backup of a cluster initialised with
//! `initdb --data-checksums`.
//!
//! The algorithm is the one of `src/include/storage/checksum_impl.h`
//! (`pg_checksum_block` / `pg_checksum_page`): the 8 KiB page is read as
//! 64 rows of 32 native-endian (here: little-endian) 32-bit words, 32
//! FNV-1a-like sums run in parallel, one per column, each seeded with its
//! own base offset; two extra rounds of zeros mix the sums, which are then
//! XOR-folded. The `pd_checksum` field itself counts as zero, the block
//! number is XOR-ed in (so a page written to the wrong place fails) and the
//! result is folded to 16 bits that are never 0.

/// PostgreSQL's block size this module checks (BLCKSZ).
pub const PAGE_SIZE: usize = 8192;

/// Pages per 1 GiB relation segment file (RELSEG_SIZE).
pub const PAGES_PER_SEGMENT: u32 = 131072;

/// Number of sums computed in parallel (`N_SUMS`).
const N_SUMS: usize = 32;

/// Bytes per row of the page seen as a `[[u32; N_SUMS]; PAGE_SIZE / 128]`.
const ROW_BYTES: usize = N_SUMS * 4;

/// The 32-bit FNV prime.
const FNV_PRIME: u32 = 16_777_619;

/// Byte offset of `pd_checksum` (u16) in the page header.
const PD_CHECKSUM_OFFSET: usize = 8;

/// Byte offset of `pd_upper` (u16) in the page header.
const PD_UPPER_OFFSET: usize = 14;

/// Initial value of each parallel sum (`checksumBaseOffsets`).
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

/// One round of a sum (`CHECKSUM_COMP`).
#[inline]
fn mix(sum: u32, value: u32) -> u32 {
    let t = sum ^ value;
    t.wrapping_mul(FNV_PRIME) ^ (t >> 17)
}

/// The 32-bit block checksum of `page` with `pd_checksum` read as zero.
fn block_sum(page: &[u8; PAGE_SIZE]) -> u32 {
    let mut sums = BASE_OFFSETS;
    for (row_index, row) in page.chunks_exact(ROW_BYTES).enumerate() {
        for (column, (sum, word)) in sums.iter_mut().zip(row.chunks_exact(4)).enumerate() {
            let mut value = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            if row_index == 0 && column * 4 == PD_CHECKSUM_OFFSET {
                // pd_checksum is the low (first, little-endian) half of this
                // word; pd_flags, the high half, is checksummed as usual.
                value &= 0xFFFF_0000;
            }
            *sum = mix(*sum, value);
        }
    }
    sums.iter()
        .fold(0, |folded, &sum| folded ^ mix(mix(sum, 0), 0))
}

/// The checksum PostgreSQL stores in a page's header for page `blkno` (the
/// block number within the relation, i.e. segment_no * PAGES_PER_SEGMENT +
/// page index in the file).
pub fn page_checksum(page: &[u8; PAGE_SIZE], blkno: u32) -> u16 {
    let checksum = block_sum(page) ^ blkno;
    // The remainder is below 65535, so the result fits and is never 0.
    u16::try_from(checksum % 65535 + 1).unwrap_or(u16::MAX)
}

/// What checking one page found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageCheck {
    /// The stored checksum matches.
    Ok,
    /// all zeros (a new page): nothing to check
    New,
    /// the page's LSN is at or after `since_lsn`: it is being written during
    /// the backup, WAL replay restores it (also: a short read, see
    /// [`check_page`])
    Skipped,
    /// stored and computed checksums differ (or the page claims to be new,
    /// `pd_upper == 0`, yet is not all zeros)
    Bad { stored: u16, computed: u16 },
}

fn read_u16(page: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([page[offset], page[offset + 1]])
}

fn read_u32(page: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([
        page[offset],
        page[offset + 1],
        page[offset + 2],
        page[offset + 3],
    ])
}

/// Check one page read during an online backup. `since_lsn` is the backup's
/// start LSN (a u64: (xlogid << 32) | xrecoff); pages with pd_lsn >= it are
/// skipped. pd_lsn is the first 8 bytes of the page: xlogid u32 LE then
/// xrecoff u32 LE.
///
/// A slice shorter than [`PAGE_SIZE`] (a file truncated while being read)
/// is [`PageCheck::Skipped`]; of a longer one only the first [`PAGE_SIZE`]
/// bytes are checked. In order: an all-zero page is [`PageCheck::New`]; a
/// page with `pd_lsn >= since_lsn` is [`PageCheck::Skipped`]; a page with
/// `pd_upper == 0` that is not all zeros is [`PageCheck::Bad`] whatever its
/// checksum (PostgreSQL rejects such a page too); otherwise the stored
/// checksum is compared with the computed one.
pub fn check_page(page: &[u8], blkno: u32, since_lsn: u64) -> PageCheck {
    let Some(page) = page.first_chunk::<PAGE_SIZE>() else {
        return PageCheck::Skipped;
    };
    let pd_upper = read_u16(page, PD_UPPER_OFFSET);
    if pd_upper == 0 && page.iter().all(|&b| b == 0) {
        return PageCheck::New;
    }
    let pd_lsn = (u64::from(read_u32(page, 0)) << 32) | u64::from(read_u32(page, 4));
    if pd_lsn >= since_lsn {
        return PageCheck::Skipped;
    }
    let stored = read_u16(page, PD_CHECKSUM_OFFSET);
    let computed = page_checksum(page, blkno);
    if pd_upper == 0 || stored != computed {
        PageCheck::Bad { stored, computed }
    } else {
        PageCheck::Ok
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The segment number of a relation file name such as `16384`,
/// `16384_fsm`, `16384.2` or `16384_vm.1`; `None` for anything else.
fn relation_file_segment(name: &str) -> Option<u32> {
    let (base, segment) = match name.split_once('.') {
        Some((base, segment)) => {
            if !all_digits(segment) {
                return None;
            }
            (base, segment.parse::<u32>().ok()?)
        }
        None => (name, 0),
    };
    let filenode = match base.split_once('_') {
        Some((filenode, "fsm" | "vm" | "init")) => filenode,
        Some(_) => return None,
        None => base,
    };
    all_digits(filenode).then_some(segment)
}

/// Whether a path relative to the data directory (e.g. "base/5/16384",
/// "base/5/16384.2", "global/1262", "base/5/16384_fsm",
/// "pg_tblspc/16400/PG_15_202209061/5/16401_vm") names a relation data file
/// whose pages carry checksums, and if so the segment number (the ".N"
/// suffix, 0 if none). Files in base/<dboid>/, global/ and
/// pg_tblspc/<oid>/<version dir>/<dboid>/ whose name is digits, optionally
/// followed by _fsm, _vm or _init, optionally followed by .N. Not:
/// pg_filenode.map, PG_VERSION, pg_internal.init, anything with pgsql_tmp,
/// "t3_16384" (temp relations: name starts with 't'), anything else.
pub fn relation_segment(path: &str) -> Option<u32> {
    if path.contains("pgsql_tmp") {
        return None;
    }
    let parts: Vec<&str> = path.split('/').collect();
    let name = match parts.as_slice() {
        ["base", db, name] if all_digits(db) => name,
        ["global", name] => name,
        ["pg_tblspc", tablespace, version, db, name]
            if all_digits(tablespace) && version.starts_with("PG_") && all_digits(db) =>
        {
            name
        }
        _ => return None,
    };
    relation_file_segment(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{ClusterOptions, TestCluster};

    #[test]
    fn relation_segment_accepts_relation_files() {
        assert_eq!(relation_segment("base/5/16384"), Some(0));
        assert_eq!(relation_segment("base/5/16384.2"), Some(2));
        assert_eq!(relation_segment("base/5/16384.17"), Some(17));
        assert_eq!(relation_segment("global/1262"), Some(0));
        assert_eq!(relation_segment("base/5/16384_fsm"), Some(0));
        assert_eq!(relation_segment("base/5/16384_vm"), Some(0));
        assert_eq!(relation_segment("base/5/16384_init"), Some(0));
        assert_eq!(relation_segment("base/5/16384_fsm.3"), Some(3));
        assert_eq!(
            relation_segment("pg_tblspc/16400/PG_15_202209061/5/16401_vm"),
            Some(0)
        );
        assert_eq!(
            relation_segment("pg_tblspc/16400/PG_15_202209061/5/16401.1"),
            Some(1)
        );
    }

    #[test]
    fn relation_segment_rejects_other_files() {
        for path in [
            "global/pg_filenode.map",
            "base/5/pg_filenode.map",
            "base/5/PG_VERSION",
            "base/5/pg_internal.init",
            "global/pg_internal.init",
            "global/pg_control",
            "base/pgsql_tmp/pgsql_tmp1234.0",
            "pg_tblspc/16400/PG_15_202209061/pgsql_tmp/pgsql_tmp99.1",
            "base/5/t3_16384",
            "base/5/t3_16384.1",
            "base/5/16384_foo",
            "base/5/16384.",
            "base/5/16384.x",
            "base/5/16384.99999999999",
            "base/5/.1",
            "base/5/_fsm",
            "base/5/16384_fsm_vm",
            "base/5/16384/1",
            "base/x/16384",
            "base/16384",
            "base//16384",
            "/base/5/16384",
            "base/5/16384/",
            "pg_wal/000000010000000000000001",
            "pg_xact/0000",
            "pg_tblspc/16400/PG_15_202209061/5",
            "pg_tblspc/16400/other/5/16401",
            "pg_tblspc/16400/PG_15_202209061/x/16401",
            "16384",
            "",
        ] {
            assert_eq!(relation_segment(path), None, "{path}");
        }
    }

    /// A page that is not all zeros, with a non-zero pd_upper.
    fn pattern_page() -> [u8; PAGE_SIZE] {
        let mut page = [0u8; PAGE_SIZE];
        for (i, b) in page.iter_mut().enumerate() {
            *b = (i.wrapping_mul(7) ^ (i >> 8)) as u8;
        }
        assert_ne!(read_u16(&page, PD_UPPER_OFFSET), 0);
        page
    }

    /// Expected values computed by PostgreSQL 15 itself (pageinspect's
    /// `page_checksum(bytea, blkno)`, shown there as a signed smallint).
    #[test]
    fn checksum_matches_postgresql_vectors() {
        let page = pattern_page();
        for (blkno, expected) in [
            (0u32, 35707u16),
            (1, 35708),
            (12345, 23460),
            (PAGES_PER_SEGMENT * 3 + 17, 35718),
            (u32::MAX - 1, 29829),
        ] {
            assert_eq!(page_checksum(&page, blkno), expected, "blkno {blkno}");
        }
    }

    #[test]
    fn checksum_ignores_stored_field_and_mixes_blkno() {
        let mut page = pattern_page();
        let sum = page_checksum(&page, 3);
        page[PD_CHECKSUM_OFFSET..PD_CHECKSUM_OFFSET + 2].copy_from_slice(&[0xAB, 0xCD]);
        assert_eq!(page_checksum(&page, 3), sum);
        assert_ne!(page_checksum(&page, 4), sum);
        page[PD_CHECKSUM_OFFSET + 2] ^= 1; // pd_flags is covered
        assert_ne!(page_checksum(&page, 3), sum);
    }

    #[test]
    fn check_page_outcomes() {
        let zero = [0u8; PAGE_SIZE];
        assert_eq!(check_page(&zero, 0, u64::MAX), PageCheck::New);
        assert_eq!(check_page(&zero, 0, 0), PageCheck::New);
        assert_eq!(check_page(&zero[..100], 0, u64::MAX), PageCheck::Skipped);
        assert_eq!(check_page(&[], 0, u64::MAX), PageCheck::Skipped);

        let mut page = pattern_page();
        // LSN 1/2: xlogid 1, xrecoff 2.
        page[0..4].copy_from_slice(&1u32.to_le_bytes());
        page[4..8].copy_from_slice(&2u32.to_le_bytes());
        let lsn = (1u64 << 32) | 2;
        let sum = page_checksum(&page, 9);
        page[PD_CHECKSUM_OFFSET..PD_CHECKSUM_OFFSET + 2].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(check_page(&page, 9, lsn + 1), PageCheck::Ok);
        assert_eq!(check_page(&page, 9, lsn), PageCheck::Skipped);
        assert_eq!(check_page(&page, 9, 0), PageCheck::Skipped);
        let computed = page_checksum(&page, 10);
        assert_eq!(
            check_page(&page, 10, u64::MAX),
            PageCheck::Bad {
                stored: sum,
                computed
            }
        );
        // Longer slice: only the first page counts.
        let mut longer = page.to_vec();
        longer.extend_from_slice(&[0xFF; 10]);
        assert_eq!(check_page(&longer, 9, u64::MAX), PageCheck::Ok);

        // pd_upper == 0 but not all zeros: bad even with a matching sum.
        page[PD_UPPER_OFFSET..PD_UPPER_OFFSET + 2].copy_from_slice(&[0, 0]);
        let sum = page_checksum(&page, 9);
        page[PD_CHECKSUM_OFFSET..PD_CHECKSUM_OFFSET + 2].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(
            check_page(&page, 9, u64::MAX),
            PageCheck::Bad {
                stored: sum,
                computed: sum
            }
        );
    }

    fn read_page(data: &[u8], index: usize) -> &[u8] {
        &data[index * PAGE_SIZE..(index + 1) * PAGE_SIZE]
    }

    #[test]
    fn real_cluster_pages_verify() {
        let cluster = TestCluster::start_with(ClusterOptions {
            data_checksums: true,
            ..Default::default()
        })
        .expect("starting a PostgreSQL cluster with data checksums");
        cluster
            .psql(
                "postgres",
                "CREATE TABLE t (id int PRIMARY KEY, s text);\n\
                 INSERT INTO t SELECT g, md5(g::text) || repeat('x', g % 50) \
                 FROM generate_series(1, 5000) g;\n\
                 UPDATE t SET s = s || 'u' WHERE id % 7 = 0;\n\
                 VACUUM t;\n\
                 CHECKPOINT;",
            )
            .expect("creating table t");
        let rel_path = cluster
            .psql("postgres", "SELECT pg_relation_filepath('t');")
            .expect("pg_relation_filepath")
            .trim()
            .to_owned();
        assert_eq!(relation_segment(&rel_path), Some(0), "{rel_path}");
        cluster.stop().expect("stopping the cluster");

        let data = std::fs::read(cluster.data_dir().join(&rel_path)).expect("reading t's file");
        assert_eq!(data.len() % PAGE_SIZE, 0, "{rel_path}: partial page");
        let pages = data.len() / PAGE_SIZE;
        assert!(pages >= 10, "{rel_path}: only {pages} pages");
        let mut ok_pages = Vec::new();
        for index in 0..pages {
            let blkno = u32::try_from(index).unwrap();
            match check_page(read_page(&data, index), blkno, u64::MAX) {
                PageCheck::Ok => {
                    ok_pages.push(index);
                    // The wrong block number must not verify.
                    assert!(matches!(
                        check_page(read_page(&data, index), blkno + 1, u64::MAX),
                        PageCheck::Bad { .. }
                    ));
                }
                PageCheck::New => {}
                other => panic!("{rel_path} page {index}: {other:?}"),
            }
        }
        assert!(!ok_pages.is_empty(), "{rel_path}: no page verified");

        // The pages were written with an LSN: with an early start LSN they
        // are skipped, not checked.
        assert_eq!(
            check_page(read_page(&data, ok_pages[0]), 0, 1),
            PageCheck::Skipped
        );

        let index = ok_pages[ok_pages.len() / 2];
        let mut page = read_page(&data, index).to_vec();
        page[PAGE_SIZE / 2] ^= 0x01;
        let blkno = u32::try_from(index).unwrap();
        match check_page(&page, blkno, u64::MAX) {
            PageCheck::Bad { stored, computed } => assert_ne!(stored, computed),
            other => panic!("corrupted page {index} checked as {other:?}"),
        }

        // The visibility map written by VACUUM carries checksums too.
        let vm = std::fs::read(cluster.data_dir().join(format!("{rel_path}_vm")))
            .expect("reading t's visibility map");
        assert_eq!(check_page(read_page(&vm, 0), 0, u64::MAX), PageCheck::Ok);

        // pg_database, a shared catalog.
        assert_eq!(relation_segment("global/1262"), Some(0));
        let pg_database =
            std::fs::read(cluster.data_dir().join("global/1262")).expect("reading global/1262");
        assert!(pg_database.len() >= PAGE_SIZE);
        assert_eq!(
            check_page(read_page(&pg_database, 0), 0, u64::MAX),
            PageCheck::Ok
        );
    }
}
