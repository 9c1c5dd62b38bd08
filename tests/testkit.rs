//! Tests of the test kit itself: real PostgreSQL clusters, fixtures and the
//! database fingerprint.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use anyhow::Result;
use lifeboat::testkit::{
    self, ClusterOptions, TestCluster, database_fingerprint, roundtrip_schema_sql,
    sample_hyper_db_sql,
};

#[test]
fn cluster_starts_and_psql_works() -> Result<()> {
    let cluster = TestCluster::start()?;
    assert_eq!(cluster.psql("postgres", "SELECT 1 + 1;")?.trim(), "2");
    assert_eq!(
        cluster.psql("postgres", "SHOW server_encoding;")?.trim(),
        "UTF8"
    );
    assert_eq!(
        cluster.psql("postgres", "SHOW listen_addresses;")?.trim(),
        "127.0.0.1"
    );
    assert_eq!(
        cluster.psql("postgres", "SHOW port;")?.trim(),
        cluster.port().to_string()
    );
    assert!(cluster.data_dir().join("PG_VERSION").exists());
    assert!(cluster.log_file().exists());
    assert!(
        cluster
            .socket_dir()
            .join(format!(".s.PGSQL.{}", cluster.port()))
            .exists()
    );

    // Root runs the server as the unprivileged postgres user.
    let data_owner = std::fs::metadata(cluster.data_dir())?.uid();
    if testkit::running_as_root() {
        let pg = testkit::postgres_os_user()?;
        assert_eq!(cluster.os_user(), "postgres");
        assert_eq!(data_owner, pg.uid);
        let pid = cluster.postmaster_pid()?.expect("running server has a pid");
        assert_eq!(std::fs::metadata(format!("/proc/{pid}"))?.uid(), pg.uid);
    } else {
        assert_ne!(data_owner, 0);
    }

    // SQL errors surface with psql's stderr.
    let err = cluster
        .psql("postgres", "SELECT * FROM no_such_table;")
        .unwrap_err();
    assert!(format!("{err:#}").contains("no_such_table"), "{err:#}");
    Ok(())
}

#[test]
fn hyper_db_fixture_loads() -> Result<()> {
    let cluster = TestCluster::start()?;
    cluster.createdb("hyper_db")?;
    cluster.psql("hyper_db", sample_hyper_db_sql())?;

    let john = cluster.psql(
        "hyper_db",
        "SELECT id, name FROM users WHERE email = 'john.doe@example.com';",
    )?;
    assert_eq!(john.trim(), "user_042|John Doe");
    let alice = cluster.psql("hyper_db", "SELECT name FROM users WHERE id = 'user_001';")?;
    assert_eq!(alice.trim(), "Alice Example");
    let counts = cluster.psql(
        "hyper_db",
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM tasks), \
                (SELECT count(*) FROM tasks WHERE user_id = 'user_001'), \
                (SELECT count(*) FROM _migrations);",
    )?;
    let counts: Vec<u64> = counts
        .trim()
        .split('|')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    assert_eq!(counts[0], 50);
    assert_eq!(counts[1], 5000);
    assert!(counts[2] >= 6, "user_001 has {} tasks", counts[2]);
    assert_eq!(counts[3], 2);
    let hashes = cluster.psql(
        "hyper_db",
        "SELECT count(*) FROM users WHERE password_hash ~ '^\\$2b\\$12\\$[./A-Za-z0-9]{53}$';",
    )?;
    assert_eq!(hashes.trim(), "50");
    Ok(())
}

#[test]
fn roundtrip_fixture_loads_twice_and_is_deterministic() -> Result<()> {
    let cluster = TestCluster::start()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("roundtrip.sql");
    std::fs::write(&file, roundtrip_schema_sql())?;

    cluster.createdb("rt_one")?;
    cluster.exec_file("rt_one", &file)?;
    // A second database on the same cluster (the role already exists), and
    // a database name that needs percent-encoding in the URI.
    let odd_name = "rt two ünï/?&";
    cluster.createdb(odd_name)?;
    cluster.psql(odd_name, roundtrip_schema_sql())?;

    let rows = cluster.psql(
        odd_name,
        "SELECT \"значение\" FROM \"ünïcødé\".\"Ärger Tabelle\" WHERE \"Schlüssel\" = 'straße';",
    )?;
    assert_eq!(rows.trim(), "привет");
    let lo = cluster.psql(
        "rt_one",
        "SELECT length(lo_get(424201)), length(lo_get(424202));",
    )?;
    assert_eq!(lo.trim(), "24|52000");

    let one = database_fingerprint(&cluster, "rt_one")?;
    let two = database_fingerprint(&cluster, odd_name)?;
    assert_eq!(one, two, "two loads of the fixture should be identical");

    // The fingerprint covers the interesting parts of the schema.
    for needle in [
        "data \"ünïcødé\".\"Ärger Tabelle\" md5 ",
        "partitioned table reporting.events partition by RANGE (happened_on)",
        "partition of reporting.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
        "materialized view reporting.customer_totals",
        "enum app.mood ('sad', 'ok', 'happy', 'überglücklich')",
        "domain app.email text not null",
        "generated always as (upper(name)) stored",
        "generated always as identity",
        "CREATE TRIGGER orders_audit",
        "WHERE (status = 'open'::text)",
        "large object 424201 size 24",
        "comment on table app.customers is 'Kunden – customers ✓'",
        "roundtrip_reader=r/postgres",
        "sequence app.invoice_no bigint start 1000 increment 7",
        "sequence app.audit_log_id_seq bigint start 1 increment 1 min 1 max 9223372036854775807 cache 1 owned by app.audit_log.id last_value 500 is_called false",
        "owned by app.invoices.invoice_no last_value 4242 is_called true",
        "CREATE OR REPLACE FUNCTION app.audit_order()",
        "data reporting.events md5 ",
        "rows 250",
    ] {
        assert!(one.contains(needle), "fingerprint lacks {needle:?}:\n{one}");
    }
    Ok(())
}

#[test]
fn fingerprint_is_stable_and_detects_changes() -> Result<()> {
    let cluster = TestCluster::start()?;
    cluster.createdb("hyper_db")?;
    cluster.psql("hyper_db", sample_hyper_db_sql())?;

    let first = database_fingerprint(&cluster, "hyper_db")?;
    let second = database_fingerprint(&cluster, "hyper_db")?;
    assert_eq!(first, second);
    assert!(first.contains("data public.tasks md5 "));
    assert!(first.contains("rows 5000"));

    cluster.psql(
        "hyper_db",
        "UPDATE tasks SET title = title || '!' WHERE id = 4242;",
    )?;
    let changed = database_fingerprint(&cluster, "hyper_db")?;
    assert_ne!(first, changed);
    // Only the tasks data line changed.
    let diff: Vec<(&str, &str)> = first
        .lines()
        .zip(changed.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(diff.len(), 1, "{diff:#?}");
    assert!(diff[0].0.starts_with("data public.tasks md5 "));

    // Schema-only changes are seen too.
    cluster.psql("hyper_db", "COMMENT ON TABLE users IS 'people';")?;
    assert_ne!(changed, database_fingerprint(&cluster, "hyper_db")?);
    Ok(())
}

#[test]
fn two_clusters_get_different_ports() -> Result<()> {
    let a = TestCluster::start()?;
    let b = TestCluster::start()?;
    assert_ne!(a.port(), b.port());
    assert_ne!(a.socket_dir(), b.socket_dir());
    a.psql("postgres", "CREATE TABLE only_in_a ();")?;
    assert_eq!(
        b.psql(
            "postgres",
            "SELECT count(*) FROM pg_class WHERE relname = 'only_in_a';"
        )?
        .trim(),
        "0"
    );
    Ok(())
}

#[test]
fn kill9_takes_the_cluster_down_and_restart_recovers() -> Result<()> {
    let cluster = TestCluster::start()?;
    cluster.psql(
        "postgres",
        "CREATE TABLE survivor (v int); INSERT INTO survivor VALUES (42); CHECKPOINT;\
         INSERT INTO survivor VALUES (43);",
    )?;
    cluster.kill9()?;
    assert!(!cluster.is_running());
    assert!(cluster.psql("postgres", "SELECT 1;").is_err());
    // Committed data survives crash recovery (fsync=off is fine: the OS
    // did not crash).
    cluster.restart()?;
    assert_eq!(
        cluster
            .psql(
                "postgres",
                "SELECT string_agg(v::text, ',' ORDER BY v) FROM survivor;"
            )?
            .trim(),
        "42,43"
    );
    Ok(())
}

#[test]
fn stop_and_restart() -> Result<()> {
    let cluster = TestCluster::start()?;
    cluster.stop()?;
    assert!(cluster.psql("postgres", "SELECT 1;").is_err());
    cluster.restart()?;
    assert_eq!(cluster.psql("postgres", "SELECT 1;")?.trim(), "1");
    cluster.restart()?;
    assert_eq!(cluster.psql("postgres", "SELECT 2;")?.trim(), "2");
    Ok(())
}

#[test]
fn drop_removes_the_cluster() -> Result<()> {
    let cluster = TestCluster::start()?;
    let root = cluster.root_dir().to_path_buf();
    let pid = cluster.postmaster_pid()?.expect("pid");
    drop(cluster);
    assert!(!root.exists());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    }) {
        assert!(Instant::now() < deadline, "postmaster {pid} still running");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn tcp_login_with_scram_password() -> Result<()> {
    let cluster = TestCluster::start()?;
    cluster.create_login_role("app user", "p@ss:w/rd é")?;
    cluster.createdb("appdb")?;
    let uri = cluster.tcp_uri("app user", "p@ss:w/rd é", "appdb");
    let who = cluster.psql_uri(&uri, "SELECT current_user, inet_server_addr();")?;
    assert_eq!(who.trim(), "app user|127.0.0.1");
    let bad = cluster.tcp_uri("app user", "wrong", "appdb");
    let err = cluster.psql_uri(&bad, "SELECT 1;").unwrap_err();
    assert!(
        format!("{err:#}").contains("password authentication failed"),
        "{err:#}"
    );
    Ok(())
}

#[test]
fn options_checksums_extra_conf_and_wal_archiving() -> Result<()> {
    let archive = testkit::temp_dir_for_postgres()?;
    let cluster = TestCluster::start_with(ClusterOptions {
        data_checksums: true,
        extra_conf: vec!["work_mem = '7MB'".to_string()],
        wal_archiving: Some(format!(
            "test ! -f {dir}/%f && cp %p {dir}/%f",
            dir = archive.path().display()
        )),
    })?;
    assert_eq!(
        cluster.psql("postgres", "SHOW data_checksums;")?.trim(),
        "on"
    );
    assert_eq!(cluster.psql("postgres", "SHOW work_mem;")?.trim(), "7MB");
    assert_eq!(cluster.psql("postgres", "SHOW archive_mode;")?.trim(), "on");

    let segment = cluster.psql(
        "postgres",
        "CREATE TABLE t AS SELECT generate_series(1, 1000) AS x;\n\
         SELECT pg_walfile_name(pg_current_wal_lsn());\n\
         SELECT pg_switch_wal();",
    )?;
    let segment = segment.lines().next().unwrap_or("").trim().to_string();
    assert_eq!(segment.len(), 24, "{segment:?}");
    let archived = archive.path().join(&segment);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !archived.exists() {
        assert!(
            Instant::now() < deadline,
            "{} not archived; log:\n{}",
            segment,
            testkit::tail_lines(cluster.log_file(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn bindir_has_client_tools() -> Result<()> {
    let bindir = testkit::pg_bindir()?;
    for tool in [
        "initdb",
        "pg_ctl",
        "postgres",
        "psql",
        "pg_dump",
        "pg_restore",
    ] {
        assert!(bindir.join(tool).is_file(), "{tool} missing in {bindir:?}");
    }
    Ok(())
}

#[test]
fn bad_extra_conf_fails_with_log_tail() {
    let err = TestCluster::start_with(ClusterOptions {
        extra_conf: vec!["no_such_setting_xyz = 1".to_string()],
        ..Default::default()
    })
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("no_such_setting_xyz"), "{msg}");
}

/// The fingerprint is meant to compare an original with a restored copy:
/// a plain pg_dump | pg_restore round trip must give an equal fingerprint.
#[test]
fn fingerprint_survives_pg_dump_and_pg_restore() -> Result<()> {
    let cluster = TestCluster::start()?;
    cluster.createdb("source")?;
    cluster.psql("source", roundtrip_schema_sql())?;
    cluster.createdb("restored")?;

    let dump_dir = tempfile::tempdir()?;
    let dump = dump_dir.path().join("source.dump");
    let status = std::process::Command::new(cluster.bin("pg_dump"))
        .args(["-Fc", "-f"])
        .arg(&dump)
        .arg("-d")
        .arg(cluster.uri("source"))
        .status()?;
    assert!(status.success(), "pg_dump failed");
    let out = std::process::Command::new(cluster.bin("pg_restore"))
        .args(["--exit-on-error", "-d"])
        .arg(cluster.uri("restored"))
        .arg(&dump)
        .output()?;
    assert!(
        out.status.success(),
        "pg_restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let source = database_fingerprint(&cluster, "source")?;
    let restored = database_fingerprint(&cluster, "restored")?;
    if source != restored {
        let diff: Vec<String> = source
            .lines()
            .zip(restored.lines())
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .collect();
        panic!("fingerprints differ:\n{}", diff.join("\n"));
    }
    Ok(())
}
