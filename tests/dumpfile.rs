//! Tests for `lifeboat::pg::dumpfile`, the pg_dump custom-format TOC reader.
//!
//! Real archives come from the machine's pg_dump (PostgreSQL 15 here, which
//! writes archive version 1.14) run against a throwaway cluster
//! (`lifeboat::testkit::TestCluster`), started once per test binary and
//! stopped as soon as the dumps are taken; pg_dump's stdout is captured in
//! memory, as lifeboat sees it.
//! The other archive versions (1.12, 1.13, 1.15, 1.16) are covered by
//! synthetic archives built by `SynthArchive`, which follows PostgreSQL's
//! `WriteHead`/`WriteToc` for each version.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use lifeboat::pg::dumpfile::{
    BlockScanner, DumpSummary, ParseError, Toc, TocSniffer, is_system_schema, parse_toc,
    parse_toc_with_len, patch_data_offsets,
};
use lifeboat::testkit::TestCluster;

// ---------------------------------------------------------------------------
// The throwaway cluster comes from lifeboat::testkit (it runs the server as
// the postgres OS user when we are root).

/// Run pg_dump with stdout captured in memory (a pipe, as lifeboat runs it).
fn pg_dump(c: &TestCluster, db: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(c.bin("pg_dump"))
        .args(args)
        .arg("-d")
        .arg(c.uri(db))
        .stdin(Stdio::null())
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "pg_dump {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `pg_restore -l` of an archive given on stdin.
fn pg_restore_list(bindir: &Path, archive: &[u8]) -> String {
    let mut child = Command::new(bindir.join("pg_restore"))
        .arg("-l")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pg_restore");
    let mut stdin = child.stdin.take().unwrap();
    let input = archive.to_vec();
    let writer = std::thread::spawn(move || {
        // pg_restore -l stops reading after the TOC; ignore the broken pipe.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "pg_restore -l failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

// ---------------------------------------------------------------------------
// Fixtures: dumps taken once per test binary; the cluster is stopped as soon
// as they are taken.

struct Fixtures {
    bindir: PathBuf,
    /// `pg_dump -Fc -Z0` of the tricky database.
    uncompressed: Vec<u8>,
    /// `pg_dump -Fc` (default compression) of the tricky database.
    compressed: Vec<u8>,
    /// `pg_dump -Fc` of a small database without large objects.
    small: Vec<u8>,
    /// `pg_dump -Fp` of the tricky database.
    plain_sql: Vec<u8>,
    /// `pg_dump -Ft` of the small database.
    tar: Vec<u8>,
}

const BULK_TABLES: usize = 300;

const SETUP_SQL: &str = r#"
CREATE SCHEMA "my schema";
CREATE SCHEMA empty_schema;
CREATE SCHEMA bulk;
CREATE TYPE "my schema".mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE public."Färbe" AS ENUM ('rot', 'grün');
CREATE TABLE "my schema"."Ärger Tabelle" (id int PRIMARY KEY, t text);
INSERT INTO "my schema"."Ärger Tabelle"
    SELECT g, repeat('x', 100) || g FROM generate_series(1, 20000) g;
CREATE TABLE "my schema".moods (m "my schema".mood, f public."Färbe");
INSERT INTO "my schema".moods VALUES ('ok', 'rot');
CREATE TABLE public."it's ""quoted""" (a int);
CREATE TABLE public."semi; colon -- dash" (a int);
CREATE TABLE public."two
lines" (a int);
CREATE TABLE public.measurements (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE public.measurements_2024 PARTITION OF public.measurements
    FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE public."measurements 2025" PARTITION OF public.measurements
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO public.measurements VALUES (1, '2024-05-05'), (2, '2025-05-05');
CREATE MATERIALIZED VIEW "my schema"."mat view" AS SELECT count(*) AS n FROM "my schema"."Ärger Tabelle";
CREATE MATERIALIZED VIEW public.mv2 AS SELECT 1 AS one;
CREATE VIEW public.not_a_table AS SELECT 1 AS one;
CREATE SEQUENCE public.seq_not_a_table;
-- Changed privileges on a system object put pg_catalog into the TOC.
CREATE ROLE dumpfile_monitor;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text) TO dumpfile_monitor;
SELECT lo_from_bytea(0, 'large object one');
SELECT lo_from_bytea(0, decode(repeat('ab', 100000), 'hex'));
DO $$
BEGIN
  FOR i IN 1..300 LOOP
    EXECUTE format('CREATE TABLE bulk.%I (id int PRIMARY KEY, payload text DEFAULT %L)',
                   'table_with_a_fairly_long_name_' || lpad(i::text, 3, '0'),
                   repeat('p', 200));
  END LOOP;
END $$;
"#;

fn expected_tables() -> Vec<(String, String)> {
    let mut t: Vec<(String, String)> = [
        ("my schema", "Ärger Tabelle"),
        ("my schema", "moods"),
        ("public", "it's \"quoted\""),
        ("public", "semi; colon -- dash"),
        ("public", "two\nlines"),
        ("public", "measurements"),
        ("public", "measurements_2024"),
        ("public", "measurements 2025"),
    ]
    .iter()
    .map(|(s, n)| (s.to_string(), n.to_string()))
    .collect();
    for i in 1..=BULK_TABLES {
        t.push((
            "bulk".to_string(),
            format!("table_with_a_fairly_long_name_{i:03}"),
        ));
    }
    t.sort();
    t
}

fn expected_user_schemas() -> BTreeSet<String> {
    ["bulk", "empty_schema", "my schema", "public"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn expected_schemas() -> BTreeSet<String> {
    ["bulk", "empty_schema", "my schema", "pg_catalog", "public"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let c = TestCluster::start().expect("start test cluster");
        c.createdb("tricky").unwrap();
        c.createdb("small db").unwrap();
        c.psql("tricky", SETUP_SQL).unwrap();
        c.psql(
            "small db",
            "CREATE TABLE only_one (a int); INSERT INTO only_one VALUES (1);",
        )
        .unwrap();
        Fixtures {
            bindir: c.bindir().to_path_buf(),
            uncompressed: pg_dump(&c, "tricky", &["-Fc", "-Z0"]),
            compressed: pg_dump(&c, "tricky", &["-Fc"]),
            small: pg_dump(&c, "small db", &["-Fc"]),
            plain_sql: pg_dump(&c, "tricky", &["-Fp"]),
            tar: pg_dump(&c, "small db", &["-Ft"]),
        }
        // `c` is dropped here, stopping the cluster.
    })
}

fn toc_len(archive: &[u8]) -> usize {
    parse_toc_with_len(archive).expect("archive parses").1
}

// ---------------------------------------------------------------------------
// Real pg_dump output.

#[test]
fn real_dump_lists_exact_schemas_tables_and_large_objects() {
    let f = fixtures();
    for (name, archive, compression) in [
        ("-Z0", &f.uncompressed, "none"),
        ("default compression", &f.compressed, "gzip"),
    ] {
        let toc = parse_toc(archive).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(toc.header.format, 1, "{name}");
        assert_eq!(toc.header.compression, compression, "{name}");
        assert_eq!(toc.header.database, "tricky", "{name}");
        assert_eq!(toc.header.int_size, 4);
        assert_eq!(toc.header.off_size, 8);
        assert_eq!(toc.tables(), expected_tables(), "{name}");
        assert_eq!(toc.schemas(), expected_schemas(), "{name}");
        assert_eq!(toc.user_schemas(), expected_user_schemas(), "{name}");
        assert!(toc.has_large_objects(), "{name}");
        assert_eq!(
            toc.materialized_views(),
            vec![
                ("my schema".to_string(), "mat view".to_string()),
                ("public".to_string(), "mv2".to_string()),
            ]
        );
        // Dump IDs are unique and positive.
        let ids: BTreeSet<i32> = toc.entries.iter().map(|e| e.dump_id).collect();
        assert_eq!(ids.len(), toc.entries.len());
        assert!(ids.iter().all(|&id| id > 0));
        // Every table with data has a TABLE DATA entry with a dumper.
        let data: BTreeSet<(&str, &str)> = toc
            .entries
            .iter()
            .filter(|e| e.desc == "TABLE DATA")
            .inspect(|e| assert!(e.had_dumper, "{e:?}"))
            .map(|e| (e.namespace.as_str(), e.tag.as_str()))
            .collect();
        assert!(data.contains(&("my schema", "Ärger Tabelle")));
        let enums: Vec<&str> = toc
            .entries
            .iter()
            .filter(|e| e.desc == "TYPE")
            .map(|e| e.tag.as_str())
            .collect();
        assert!(
            enums.contains(&"mood") && enums.contains(&"Färbe"),
            "{enums:?}"
        );
    }

    let a = parse_toc(&f.uncompressed).unwrap();
    let b = parse_toc(&f.compressed).unwrap();
    assert_eq!(a.entries, b.entries, "TOC does not depend on compression");
    assert!(
        toc_len(&f.uncompressed) < f.uncompressed.len() / 2,
        "the data must follow the TOC in the stream"
    );
    assert!(toc_len(&f.uncompressed) > 64 * 1024, "TOC should be large");
}

#[test]
fn real_dump_header_fields() {
    let f = fixtures();
    let toc = parse_toc(&f.uncompressed).unwrap();
    let h = &toc.header;
    // PostgreSQL 12 to 15 write 1.14; this also tells which pg_dump we ran.
    let major: u32 = h
        .pg_dump_version
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let expected_minor = match major {
        11 => 13,
        12..=15 => 14,
        16 => 15,
        _ => 16,
    };
    assert_eq!((h.version.0, h.version.1), (1, expected_minor), "{h:?}");
    assert!(h.server_version.starts_with(&major.to_string()), "{h:?}");
    assert_eq!(h.created.len(), "2024-01-01 00:00:00".len(), "{h:?}");
    assert_eq!(toc.archive_version(), format!("1.{expected_minor}.0"));
    eprintln!(
        "verified against real pg_dump {}: archive {}",
        h.pg_dump_version,
        toc.archive_version()
    );
}

#[test]
fn real_dump_small_database_without_large_objects() {
    let f = fixtures();
    let toc = parse_toc(&f.small).unwrap();
    assert_eq!(toc.header.database, "small db");
    assert_eq!(
        toc.tables(),
        vec![("public".to_string(), "only_one".to_string())]
    );
    assert_eq!(toc.schemas(), BTreeSet::from(["public".to_string()]));
    assert!(!toc.has_large_objects());
    assert!(toc.materialized_views().is_empty());
}

/// Parse `pg_restore -l` output: header fields and, per dump ID, the line.
fn restore_list(listing: &str) -> (BTreeMap<String, String>, BTreeMap<i32, String>) {
    let mut header = BTreeMap::new();
    let mut entries = BTreeMap::new();
    for line in listing.lines() {
        if let Some(rest) = line.strip_prefix(';') {
            if let Some((k, v)) = rest.trim().split_once(": ") {
                header.insert(k.trim().to_string(), v.trim().to_string());
            } else if let Some(v) = rest.trim().strip_prefix("Archive created at ") {
                header.insert("created".to_string(), v.to_string());
            }
        } else if let Some((id, rest)) = line.split_once("; ") {
            entries.insert(id.parse().unwrap(), rest.to_string());
        }
    }
    (header, entries)
}

#[test]
fn real_dump_matches_pg_restore_list() {
    let f = fixtures();
    for archive in [&f.uncompressed, &f.compressed, &f.small] {
        let toc = parse_toc(archive).unwrap();
        let (header, listed) = restore_list(&pg_restore_list(&f.bindir, archive));
        let h = &toc.header;

        assert_eq!(header["dbname"], h.database);
        assert_eq!(header["TOC Entries"], toc.entries.len().to_string());
        assert_eq!(
            header["Dump Version"],
            format!("{}.{}-{}", h.version.0, h.version.1, h.version.2)
        );
        assert_eq!(header["Format"], "CUSTOM");
        assert_eq!(header["Integer"], format!("{} bytes", h.int_size));
        assert_eq!(header["Offset"], format!("{} bytes", h.off_size));
        assert_eq!(header["Dumped from database version"], h.server_version);
        assert_eq!(header["Dumped by pg_dump version"], h.pg_dump_version);
        assert!(
            header["created"].starts_with(&h.created),
            "{} vs {}",
            header["created"],
            h.created
        );
        // pg_restore 15 prints the zlib level: -1 (default) or 0.
        let expected_level_none = header["Compression"] == "0" || header["Compression"] == "none";
        assert_eq!(expected_level_none, h.compression == "none");

        // pg_restore -l lists every entry except the special ones it
        // handles itself and, without -C, the database's own entries.
        for e in &toc.entries {
            let Some(line) = listed.get(&e.dump_id) else {
                assert!(
                    ["ENCODING", "STDSTRINGS", "SEARCHPATH", "DATABASE"].contains(&e.desc.as_str())
                        || e.tag.starts_with("DATABASE "),
                    "not listed by pg_restore -l: {e:?}"
                );
                continue;
            };
            assert!(line.contains(&format!(" {} ", e.desc)), "{e:?} vs {line}");
            let shown_schema = if e.namespace.is_empty() {
                "-"
            } else {
                &e.namespace
            };
            // pg_restore -l replaces newlines in names by spaces.
            let shown = format!(
                " {} {} {} {}",
                e.desc,
                shown_schema.replace('\n', " "),
                e.tag.replace('\n', " "),
                e.owner
            );
            assert!(
                line.trim_end().ends_with(shown.trim_end()),
                "{e:?} vs {line}"
            );
        }
        let ids: BTreeSet<i32> = toc.entries.iter().map(|e| e.dump_id).collect();
        assert!(listed.keys().all(|id| ids.contains(id)));

        // Tables from the text listing, where it is unambiguous.
        let from_listing: BTreeSet<(String, String)> = listed
            .values()
            .filter_map(|line| {
                let t: Vec<&str> = line.split(' ').collect();
                (t.len() == 6 && t[2] == "TABLE").then(|| (t[3].to_string(), t[4].to_string()))
            })
            .collect();
        let ours: BTreeSet<(String, String)> = toc
            .tables()
            .into_iter()
            .filter(|(s, n)| !s.contains(char::is_whitespace) && !n.contains(char::is_whitespace))
            .collect();
        assert_eq!(ours, from_listing);
        assert!(!ours.is_empty());
    }
}

#[test]
fn real_dump_truncated_prefixes_are_incomplete() {
    let f = fixtures();

    // Small archive: every cut point before the end of the TOC.
    let full = parse_toc(&f.small).unwrap();
    let end = toc_len(&f.small);
    for cut in 0..end {
        assert_eq!(
            parse_toc(&f.small[..cut]),
            Err(ParseError::Incomplete),
            "cut at {cut} of {end}"
        );
    }
    assert_eq!(parse_toc(&f.small[..end]).unwrap(), full);

    // Large archive: a handful of cut points.
    let full = parse_toc(&f.uncompressed).unwrap();
    let end = toc_len(&f.uncompressed);
    for cut in [
        0,
        1,
        4,
        5,
        6,
        8,
        9,
        20,
        100,
        end / 3,
        end / 2,
        end - 20,
        end - 9,
        end - 1,
    ] {
        assert_eq!(
            parse_toc(&f.uncompressed[..cut]),
            Err(ParseError::Incomplete),
            "cut at {cut} of {end}"
        );
    }
    assert_eq!(parse_toc(&f.uncompressed[..end]).unwrap(), full);
    assert_eq!(parse_toc(&f.uncompressed[..end + 1]).unwrap(), full);
}

fn assert_invalid(bytes: &[u8], what: &str) {
    match parse_toc(bytes) {
        Err(ParseError::Invalid(msg)) => eprintln!("{what}: {msg}"),
        other => panic!("{what}: expected Invalid, got {other:?}"),
    }
}

#[test]
fn invalid_inputs() {
    let f = fixtures();
    assert_invalid(&f.plain_sql, "plain SQL dump");
    assert_invalid(&f.plain_sql[..3], "start of plain SQL dump");
    assert_invalid(&f.tar, "tar format");
    assert_invalid(b"hello, world", "garbage");
    // A prefix of the magic is not yet known to be wrong.
    assert_eq!(parse_toc(b"P"), Err(ParseError::Incomplete));
    assert_eq!(parse_toc(b"PGDM"), Err(ParseError::Incomplete));
    assert_invalid(b"PGDX", "broken magic");
}

#[test]
fn corrupted_real_dump_is_invalid() {
    let f = fixtures();
    let good = &f.small;
    let corrupt = |at: usize, val: u8| {
        let mut b = good.clone();
        b[at] = val;
        b
    };
    assert_invalid(&corrupt(0, b'X'), "bad magic");
    assert_invalid(&corrupt(6, 17), "archive 1.17");
    assert_invalid(&corrupt(6, 11), "archive 1.11");
    assert_invalid(&corrupt(5, 2), "archive 2.x");
    assert_invalid(&corrupt(8, 0), "int size 0");
    assert_invalid(&corrupt(10, 5), "directory format");
    // Byte 11 is the compression Int's sign byte (< 1.15) or the
    // compression algorithm byte (>= 1.15): 7 is invalid for both.
    assert_invalid(&corrupt(11, 7), "bad compression field");
    // First TOC entry's dump ID (after the TOC count): make it 0.
    let toc = parse_toc(good).unwrap();
    let db = toc.header.database.len();
    let vers = toc.header.server_version.len() + toc.header.pg_dump_version.len();
    let compression_len = if toc.header.version.1 >= 15 { 1 } else { 5 };
    // magic 5 + version 3 + sizes 2 + format 1 + compression + 7 Ints
    // + 3 Strs + TOC count Int; then the dump ID Int.
    let dump_id_at = 5 + 3 + 2 + 1 + compression_len + 7 * 5 + 3 * 5 + db + vers + 5;
    let mut b = good.clone();
    b[dump_id_at + 1..dump_id_at + 5].copy_from_slice(&[0, 0, 0, 0]);
    assert_invalid(&b, "dump ID 0");
}

// ---------------------------------------------------------------------------
// TocSniffer.

fn sniff(archive: &[u8], piece: usize) -> (Result<Toc, String>, usize) {
    let mut s = TocSniffer::default();
    for chunk in archive.chunks(piece) {
        s.feed(chunk);
    }
    let end = toc_len(archive);
    if archive.len() >= 2 * end {
        // The buffer doubled past the TOC end before the stream ended.
        assert!(s.is_done(), "piece {piece}");
        assert_eq!(s.buffered(), 0, "buffer released once done");
    }
    let attempts = s.parse_attempts();
    (s.finish(), attempts)
}

#[test]
fn sniffer_same_result_for_any_piece_size() {
    let f = fixtures();
    for archive in [&f.uncompressed, &f.compressed, &f.small] {
        let expected = parse_toc(archive).unwrap();
        let end = toc_len(archive);
        for piece in [1, 7, 64 * 1024] {
            let (got, attempts) = sniff(archive, piece);
            assert_eq!(got.as_ref(), Ok(&expected), "piece {piece}");
            // Attempts double the buffer: about log2(TOC length) of them.
            let bound = (usize::BITS - end.leading_zeros()) as usize + 2;
            assert!(
                attempts <= bound,
                "piece {piece}: {attempts} attempts > {bound}"
            );
        }
    }
}

#[test]
fn sniffer_failures() {
    let f = fixtures();
    // Stream ends inside the TOC.
    let end = toc_len(&f.uncompressed);
    let mut s = TocSniffer::default();
    s.feed(&f.uncompressed[..end / 2]);
    assert!(!s.is_done());
    let err = s.finish().unwrap_err();
    assert!(err.contains("before the end"), "{err}");

    // Empty stream.
    assert!(TocSniffer::default().finish().is_err());

    // Not an archive: known at once, and nothing more is buffered.
    let mut s = TocSniffer::default();
    s.feed(&f.plain_sql[..100]);
    assert!(s.is_done());
    s.feed(&f.plain_sql[100..]);
    assert_eq!(s.buffered(), 0);
    let err = s.finish().unwrap_err();
    assert!(err.contains("plain SQL"), "{err}");

    // TOC larger than the limit: buffering stops at the limit.
    let limit = end / 4;
    let mut s = TocSniffer::new(limit);
    for chunk in f.uncompressed.chunks(1000) {
        s.feed(chunk);
        assert!(s.buffered() <= limit);
    }
    assert!(s.is_done());
    let err = s.finish().unwrap_err();
    assert!(err.contains(&limit.to_string()), "{err}");

    // Limit exactly the TOC length is enough.
    let mut s = TocSniffer::new(end);
    for chunk in f.uncompressed.chunks(3000) {
        s.feed(chunk);
    }
    assert_eq!(s.finish().unwrap(), parse_toc(&f.uncompressed).unwrap());
}

#[test]
fn system_schema_names() {
    for s in [
        "pg_catalog",
        "information_schema",
        "pg_toast",
        "pg_temp_3",
        "pg_toast_temp_3",
    ] {
        assert!(is_system_schema(s), "{s}");
    }
    for s in [
        "public",
        "my schema",
        "catalog",
        "Pg_catalog",
        "information_schema2",
    ] {
        assert!(!is_system_schema(s), "{s}");
    }
}

#[test]
fn summary_round_trips_through_json() {
    let f = fixtures();
    let toc = parse_toc(&f.uncompressed).unwrap();
    let s = toc.summary();
    assert_eq!(s.database, "tricky");
    assert_eq!(s.tables, expected_tables());
    assert_eq!(
        s.schemas,
        expected_schemas().into_iter().collect::<Vec<_>>()
    );
    assert!(s.large_objects);
    assert_eq!(s.entries, toc.entries.len());
    assert_eq!(s.materialized_views.len(), 2);
    let json = serde_json::to_string(&s).unwrap();
    let back: DumpSummary = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
}

// ---------------------------------------------------------------------------
// Synthetic archives for the versions the machine's pg_dump does not write.

/// Writes archives the way PostgreSQL's WriteHead/WriteToc do for `minor`.
struct SynthArchive {
    minor: u8,
    buf: Vec<u8>,
}

struct SynthEntry<'a> {
    dump_id: i32,
    desc: &'a str,
    namespace: Option<&'a str>,
    tag: &'a str,
    owner: &'a str,
    section: i32,
    had_dumper: bool,
    relkind: u8,
    deps: &'a [i32],
}

impl SynthArchive {
    fn int(&mut self, i: i32) {
        self.buf.push(u8::from(i < 0));
        self.buf.extend_from_slice(&i.unsigned_abs().to_le_bytes());
    }

    fn str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.int(s.len() as i32);
                self.buf.extend_from_slice(s.as_bytes());
            }
            None => self.int(-1),
        }
    }

    /// `compression`: the algorithm byte for >= 1.15, the zlib level before.
    fn new(minor: u8, compression: i32, db: &str) -> SynthArchive {
        let mut a = SynthArchive {
            minor,
            buf: b"PGDMP".to_vec(),
        };
        a.buf.extend_from_slice(&[1, minor, 0, 4, 8, 1]);
        if minor >= 15 {
            a.buf.push(compression as u8);
        } else {
            a.int(compression);
        }
        for v in [56, 34, 12, 24, 10, 124, 0] {
            a.int(v); // 2024-11-24 12:34:56
        }
        a.str(Some(db));
        a.str(Some("99.1"));
        a.str(Some("99.2"));
        a
    }

    fn toc(mut self, entries: &[SynthEntry<'_>]) -> Vec<u8> {
        self.int(entries.len() as i32);
        for e in entries {
            self.int(e.dump_id);
            self.int(i32::from(e.had_dumper));
            self.str(Some("1259"));
            self.str(Some("16385"));
            self.str(Some(e.tag));
            self.str(Some(e.desc));
            self.int(e.section);
            self.str(Some("CREATE SOMETHING;\n"));
            self.str(Some("DROP SOMETHING;\n"));
            self.str(if e.had_dumper {
                Some("COPY x FROM stdin;\n")
            } else {
                None
            });
            self.str(e.namespace);
            self.str(Some(""));
            if self.minor >= 14 {
                self.str(Some("heap"));
            }
            if self.minor >= 16 {
                self.int(i32::from(e.relkind));
            }
            self.str(Some(e.owner));
            self.str(Some("false"));
            for d in e.deps {
                self.str(Some(&d.to_string()));
            }
            self.str(None);
            // Data offset: not set (streamed to a pipe).
            self.buf.push(1);
            self.buf.extend_from_slice(&[0; 8]);
        }
        // Some data after the TOC.
        self.buf
            .extend_from_slice(b"\x01\x02\x03 data blocks follow");
        self.buf
    }
}

fn synth_entries(minor: u8) -> Vec<SynthEntry<'static>> {
    let e = |dump_id, desc, namespace, tag, section, had_dumper, relkind| SynthEntry {
        dump_id,
        desc,
        namespace,
        tag,
        owner: "owner name",
        section,
        had_dumper,
        relkind,
        deps: &[1, 2],
    };
    let mut v = vec![
        e(1, "ENCODING", None, "ENCODING", 2, false, 0),
        e(2, "SCHEMA", None, "my schema", 2, false, 0),
        e(
            3,
            "TABLE",
            Some("my schema"),
            "Ärger Tabelle",
            2,
            false,
            b'r',
        ),
        e(4, "TABLE", Some("public"), "parted", 2, false, b'p'),
        e(
            5,
            "MATERIALIZED VIEW",
            Some("my schema"),
            "mat view",
            2,
            false,
            b'm',
        ),
        e(
            6,
            "TABLE DATA",
            Some("my schema"),
            "Ärger Tabelle",
            3,
            true,
            0,
        ),
    ];
    if minor >= 16 {
        v.push(e(
            7,
            "BLOB METADATA",
            None,
            "LARGE OBJECTS 16390..16391",
            2,
            false,
            0,
        ));
        v.push(e(8, "BLOBS", None, "BLOBS", 3, true, 0));
    } else {
        v.push(e(7, "BLOB", None, "16390", 2, false, 0));
        v.push(e(8, "BLOBS", None, "BLOBS", 3, true, 0));
    }
    v
}

#[test]
fn synthetic_archives_of_all_supported_versions() {
    // (minor, compression field as written, expected compression)
    let cases = [
        (12, 0, "none"),
        (12, -1, "gzip"),
        (13, 6, "gzip"),
        (14, 0, "none"),
        (15, 0, "none"),
        (15, 1, "gzip"),
        (15, 2, "lz4"),
        (15, 3, "zstd"),
        (16, 3, "zstd"),
        (16, 0, "none"),
    ];
    for (minor, compression, expected) in cases {
        let archive = SynthArchive::new(minor, compression, "synth db").toc(&synth_entries(minor));
        let (toc, end) = parse_toc_with_len(&archive).unwrap_or_else(|e| panic!("1.{minor}: {e}"));
        assert_eq!(
            end,
            archive.len() - b"\x01\x02\x03 data blocks follow".len()
        );
        let h = &toc.header;
        assert_eq!(h.version, (1, minor, 0));
        assert_eq!(h.compression, expected, "1.{minor}");
        assert_eq!(h.created, "2024-11-24 12:34:56");
        assert_eq!(h.database, "synth db");
        assert_eq!(h.server_version, "99.1");
        assert_eq!(h.pg_dump_version, "99.2");
        assert_eq!(toc.entries.len(), 8);
        assert_eq!(
            toc.tables(),
            vec![
                ("my schema".to_string(), "Ärger Tabelle".to_string()),
                ("public".to_string(), "parted".to_string()),
            ]
        );
        assert_eq!(
            toc.schemas(),
            BTreeSet::from(["my schema".to_string(), "public".to_string()])
        );
        assert_eq!(toc.user_schemas(), toc.schemas());
        assert!(toc.has_large_objects());
        let e = &toc.entries[5];
        assert_eq!(
            (
                e.dump_id,
                e.desc.as_str(),
                e.section,
                e.had_dumper,
                e.owner.as_str()
            ),
            (6, "TABLE DATA", 3, true, "owner name")
        );
        assert_eq!(toc.summary().archive_version, format!("1.{minor}.0"));
        for cut in 0..end {
            assert_eq!(
                parse_toc(&archive[..cut]),
                Err(ParseError::Incomplete),
                "1.{minor} cut at {cut}"
            );
        }
    }
}

#[test]
fn synthetic_archive_with_wrong_version_label_is_not_misread() {
    // 1.15 and 1.16 have the same header; the TOC differs by relkind. An
    // archive labelled with the other version must not yield the tables.
    let expected = Ok(vec![
        ("my schema".to_string(), "Ärger Tabelle".to_string()),
        ("public".to_string(), "parted".to_string()),
    ]);
    for (written, label) in [(15, 16), (16, 15), (13, 14), (14, 13)] {
        let mut archive = SynthArchive::new(written, 0, "db").toc(&synth_entries(written));
        assert_eq!(parse_toc(&archive).map(|t| t.tables()), expected);
        archive[6] = label;
        let got = parse_toc(&archive).map(|t| t.tables());
        assert_ne!(got, expected, "1.{written} read as 1.{label}");
        eprintln!("1.{written} read as 1.{label}: {got:?}");
    }
}

/// A piped dump has no data offsets; the scanner finds every data block and
/// the patched copy points each TOC entry at its block, as pg_dump does for files.
#[test]
fn block_scanner_patches_offsets_of_piped_dumps() {
    let f = fixtures();
    for (name, archive) in [("-Z0", &f.uncompressed), ("compressed", &f.compressed)] {
        let before = parse_toc(archive).unwrap();
        let unset = before
            .entries
            .iter()
            .filter(|e| e.data_offset_flag == 1)
            .count();
        assert!(
            unset > 300,
            "{name}: a piped dump leaves offsets unset ({unset})"
        );
        for piece in [1usize, 7, 65536, archive.len()] {
            let mut scanner = BlockScanner::default();
            for c in archive.chunks(piece) {
                scanner.feed(c);
            }
            let (toc, found) = scanner.finish().unwrap();
            let mut file = std::io::Cursor::new(archive.to_vec());
            let patched = patch_data_offsets(&mut file, &toc, &found).unwrap();
            assert_eq!(
                patched, unset,
                "{name}, pieces of {piece}: every data entry patched"
            );
            let out = file.into_inner();
            assert_eq!(out.len(), archive.len());
            let after = parse_toc(&out).unwrap();
            for e in after
                .entries
                .iter()
                .filter(|e| e.had_dumper && e.data_offset_flag == 2)
            {
                let at = e.data_offset_at + 1;
                let off = u64::from_le_bytes(out[at..at + 8].try_into().unwrap()) as usize;
                assert!(
                    out[off] == 1 || out[off] == 3,
                    "{name}: block type at {off}"
                );
                let id = u32::from_le_bytes(out[off + 2..off + 6].try_into().unwrap());
                assert_eq!(
                    id as i32, e.dump_id,
                    "{name}: block at {off} is entry {}",
                    e.dump_id
                );
            }
        }
    }
    // A truncated archive is reported, not patched wrongly.
    let mut scanner = BlockScanner::default();
    scanner.feed(&f.uncompressed[..f.uncompressed.len() - 3]);
    assert!(scanner.finish().is_err());
}
