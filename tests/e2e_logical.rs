//! Logical backups end to end: real clusters, the real binary, a real repository.

mod common;

use common::Env;
use lifeboat::testkit;

#[test]
fn round_trip_of_a_hard_schema_restores_every_row() {
    let env = Env::new();
    env.add_database_target("rt", testkit::roundtrip_schema_sql());
    // Two tables of several MiB: a parallel restore splits the data over
    // several pg_restore processes (small tables travel together).
    env.cluster
        .psql(
            "rt",
            "CREATE TABLE public.bulk_a AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 150000) g;
             CREATE TABLE public.bulk_b AS SELECT g AS id, md5((-g)::text) AS h FROM generate_series(1, 150000) g;",
        )
        .unwrap();
    env.lifeboat(&["init"]).ok();
    let out = env.lifeboat(&["backup", "rt"]).ok();
    assert!(out.stdout.contains("backup "), "{}", out.stdout);
    let original = env.fingerprint("rt");

    // Into a database that does not exist: created, restored, equal.
    let into = env.cluster.uri("rt_copy");
    env.lifeboat(&["restore", "rt", "--into", &into]).ok();
    assert_eq!(env.fingerprint("rt_copy"), original);

    // Parallel restore, each pg_restore fed its tables' data from the
    // repository (no temporary copy of the dump).
    let into2 = env.cluster.uri("rt_parallel");
    let dry = env
        .lifeboat(&[
            "restore",
            "rt",
            "--into",
            &into2,
            "--jobs",
            "3",
            "--dry-run",
        ])
        .ok();
    assert!(
        dry.stdout.contains("3 parallel pg_restore processes"),
        "{}",
        dry.stdout
    );
    let r = env
        .lifeboat(&["restore", "rt", "--into", &into2, "--jobs", "3"])
        .ok();
    assert!(!r.stderr.contains("temporary"), "{}", r.stderr);
    assert_eq!(env.fingerprint("rt_parallel"), original);

    // Export without lock-in: pg_restore and psql read what lifeboat writes.
    let custom = env.dir.path().join("rt.dump");
    // A crashed export's leftover, more open than an export writes: replaced.
    let stale = env.dir.path().join("rt.dump.partial");
    std::fs::write(&stale, "stale").unwrap();
    env.lifeboat(&[
        "export",
        "rt",
        "--format",
        "custom",
        "-o",
        custom.to_str().unwrap(),
    ])
    .ok();
    // The dump is the database in the clear: its owner's only.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&custom).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "export -o mode {mode:o}");
    assert!(!stale.exists(), "no .partial left");
    env.cluster.createdb("rt_from_custom").unwrap();
    let st = std::process::Command::new(env.cluster.bin("pg_restore"))
        .args(["--exit-on-error", "-d", &env.cluster.uri("rt_from_custom")])
        .arg(&custom)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(env.fingerprint("rt_from_custom"), original);

    let plain = env.dir.path().join("rt.sql");
    env.lifeboat(&[
        "export",
        "rt",
        "--format",
        "plain",
        "-o",
        plain.to_str().unwrap(),
    ])
    .ok();
    let sql = std::fs::read_to_string(&plain).unwrap();
    assert!(sql.contains("CREATE TABLE"), "plain export is SQL");
    env.cluster.createdb("rt_from_plain").unwrap();
    env.cluster.psql("rt_from_plain", &sql).unwrap();
    assert_eq!(env.fingerprint("rt_from_plain"), original);
}

#[test]
fn second_backup_of_unchanged_database_stores_almost_nothing() {
    let env = Env::new();
    // Several chunks' worth of data (chunks average 1 MiB).
    env.cluster
        .psql("hyper_db", "CREATE TABLE events AS SELECT g AS id, md5(g::text) AS a, md5((g * 3)::text) AS b FROM generate_series(1, 200000) g;")
        .unwrap();
    env.lifeboat(&["init"]).ok();
    env.lifeboat(&["backup", "dev"]).ok();
    env.lifeboat(&["backup", "dev"]).ok();
    let list = env.list("dev");
    assert_eq!(list.len(), 2);
    let first_stored = list[0]["stored_bytes"].as_u64().unwrap();
    let second_new = list[1]["new_bytes"].as_u64().unwrap();
    let second_size = list[1]["total_size"].as_u64().unwrap();
    assert!(first_stored > 0);
    // The dump header (timestamp) lands in one chunk; everything else dedups.
    assert!(
        second_size > 10 * 1024 * 1024,
        "dump of {second_size} bytes is too small for this test"
    );
    assert!(
        second_new * 4 < second_size,
        "second backup added {second_new} of {second_size} bytes"
    );
    // show by unique prefix
    let id = list[1]["short_id"].as_str().unwrap();
    let show = env.lifeboat(&["show", id]).ok();
    assert!(show.stdout.contains("hyper_db"), "{}", show.stdout);
    assert!(show.stdout.contains("tables"), "{}", show.stdout);
}

#[test]
fn tampered_pack_fails_restore_and_export_naming_it() {
    let env = Env::new();
    env.lifeboat(&["init"]).ok();
    env.lifeboat(&["backup", "dev"]).ok();
    let packs = env.packs();
    assert!(!packs.is_empty());
    for p in &packs {
        let mut bytes = std::fs::read(p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(p, bytes).unwrap();
    }
    let name = packs[0].file_name().unwrap().to_str().unwrap()[..16].to_string();
    let into = env.cluster.uri("tampered");
    let r = env.lifeboat(&["restore", "dev", "--into", &into]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("damaged") && r.stderr.contains("data/"),
        "{}",
        r.stderr
    );
    let out = env.dir.path().join("x.dump");
    let r = env.lifeboat(&["export", "dev", "-o", out.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("data/"), "{}", r.stderr);
    assert!(!out.exists(), "a failed export leaves no file");
    assert!(r.stderr.contains(&name), "names the pack: {}", r.stderr);
    let into = env.cluster.uri("tampered_parallel");
    let r = env.lifeboat(&["restore", "dev", "--into", &into, "--jobs", "2"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(&name), "names the pack: {}", r.stderr);
}

/// A passphrase file's unlock is cached in /dev/shm for the next process
/// (Argon2id once; `init` already fills it); a wrong passphrase in the file
/// is still refused.
#[test]
fn a_cached_unlock_still_refuses_a_wrong_passphrase_file() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let pass = env.dir.path().join("pass");
    std::fs::write(&pass, format!("{}\n", common::PASSPHRASE)).unwrap();
    let config = |extra: &str| {
        env.write_repo_config(
            &format!("passphrase_file = \"{}\"\n{extra}", pass.display()),
            &env.target_section("dev", "hyper_db", ""),
        )
    };
    config("");
    env.lifeboat_env(&["init"], &[]).ok();
    // Key file parameters Argon2id refuses: a later process can only
    // unlock the repository from the cache, here the entry init wrote.
    let keys: Vec<_> = std::fs::read_dir(env.repo_path().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(keys.len(), 1);
    let original = std::fs::read(&keys[0]).unwrap();
    let mut kf: serde_json::Value = serde_json::from_slice(&original).unwrap();
    kf["kdf"]["memory_kib"] = serde_json::json!(1u64 << 30);
    let unusable = serde_json::to_vec(&kf).unwrap();
    std::fs::write(&keys[0], &unusable).unwrap();
    env.lifeboat_env(&["backup", "dev"], &[]).ok();
    std::fs::write(&keys[0], &original).unwrap();
    let cache = std::path::PathBuf::from(format!("/dev/shm/lifeboat-{}", nix::unistd::geteuid()));
    let meta = std::fs::symlink_metadata(&cache).expect("the unlock cache directory");
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o777, 0o700, "private to its user");
    std::fs::write(&pass, "not the passphrase at all\n").unwrap();
    env.lifeboat_env(&["list"], &[])
        .fails(2, "wrong passphrase");
    std::fs::write(&pass, common::PASSPHRASE).unwrap();

    // Once more after the wrong passphrase (which went through Argon2id):
    // the cache still opens with the right one.
    std::fs::write(&keys[0], &unusable).unwrap();
    let r = env.lifeboat_env(&["list", "--json"], &[]).ok();
    assert!(r.stdout.contains("\"dev\""), "{}", r.stdout);
    config("unlock_cache = false");
    let r = env.lifeboat_env(&["list"], &[]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("kdf parameters out of range"),
        "{}",
        r.stderr
    );
}

#[test]
fn wrong_passphrase_is_a_usage_error() {
    let env = Env::new();
    env.lifeboat(&["init"]).ok();
    env.lifeboat_env(
        &["list"],
        &[("LIFEBOAT_PASSPHRASE", "not the passphrase at all")],
    )
    .fails(2, "wrong passphrase");
    env.lifeboat_env(&["list"], &[])
        .fails(2, "LIFEBOAT_PASSPHRASE");
}

/// `lifeboat key generate -o FILE`, which prints the recipient.
fn generate_key(env: &Env, file: &std::path::Path) -> common::Run {
    env.lifeboat(&["key", "generate", "-o", file.to_str().unwrap()])
        .ok()
}

#[test]
fn public_key_mode_backup_host_cannot_restore() {
    let env = Env::new();
    let identity = env.dir.path().join("restore.key");
    let r = generate_key(&env, &identity);
    let recipient = r.stdout.trim().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    let key_text = std::fs::read_to_string(&identity).unwrap();
    assert!(key_text.contains("AGE-SECRET-KEY-1") && key_text.contains(&recipient));
    assert!(
        !r.stdout.contains("AGE-SECRET-KEY"),
        "the secret is never printed"
    );

    let dedup = env.dir.path().join("main.dedup-key");
    let target = env.target_section("dev", "hyper_db", "");
    let recipients = format!("recipients = [\"{recipient}\"]\n");
    env.write_repo_config(
        &format!("{recipients}dedup_key_file = \"{}\"", dedup.display()),
        &target,
    );
    let r = env.lifeboat_env(&["init"], &[]).ok();
    assert!(r.stdout.contains("dedup key"), "{}", r.stdout);
    assert!(dedup.exists());
    env.lifeboat_env(&["backup", "dev"], &[]).ok();
    env.lifeboat_env(&["list"], &[]).ok();
    let into = env.cluster.uri("from_writer");
    env.lifeboat_env(&["restore", "dev", "--into", &into], &[])
        .fails(2, "identity_file");
    // The backup host verifies what it can and says what it could not.
    let v = env.lifeboat_env(&["verify", "--read-data"], &[]).ok();
    assert!(v.stdout.contains("blobs NOT authenticated"), "{}", v.stdout);
    assert!(
        v.stdout.contains("target dev: newest good backup"),
        "{}",
        v.stdout
    );
    env.lifeboat_env(&["prune"], &[]).ok();

    // The restore host has only the identity.
    env.write_repo_config(
        &format!("{recipients}identity_file = \"{}\"", identity.display()),
        &target,
    );
    let reader_cfg = std::fs::read_to_string(&env.config).unwrap();
    let original = env.fingerprint("hyper_db");
    env.lifeboat_env(&["restore", "dev", "--into", &into], &[])
        .ok();
    assert_eq!(env.fingerprint("from_writer"), original);

    // Another identity cannot read.
    let other = env.dir.path().join("other.key");
    generate_key(&env, &other);
    env.write_config(&reader_cfg.replace(identity.to_str().unwrap(), other.to_str().unwrap()));
    env.lifeboat_env(&["list"], &[])
        .fails(2, "identity does not match");
}

/// The `fingerprint = "..."` that `lifeboat init` or `key fingerprint` printed.
fn printed_fingerprint(stdout: &str) -> String {
    let at = stdout.find("fingerprint = \"").expect("a fingerprint line") + 15;
    stdout[at..at + 39].to_string()
}

#[test]
fn a_pinned_fingerprint_refuses_a_repository_whose_keys_were_swapped() {
    let env = Env::new();
    let identity = env.dir.path().join("restore.key");
    let recipient = generate_key(&env, &identity).stdout.trim().to_string();
    let recipients = format!("recipients = [\"{recipient}\"]\n");
    let target = env.target_section("dev", "hyper_db", "");
    let writer = |dedup: &str| format!("{recipients}dedup_key_file = \"{dedup}\"");
    let dedup = env.dir.path().join("main.dedup-key");
    env.write_repo_config(&writer(dedup.to_str().unwrap()), &target);
    let init = env.lifeboat_env(&["init"], &[]).ok();
    let pin = printed_fingerprint(&init.stdout);
    env.lifeboat_env(&["backup", "dev"], &[]).ok();

    // The restore host pins what init printed.
    let reader = format!(
        "{recipients}identity_file = \"{}\"\nfingerprint = \"{pin}\"",
        identity.display()
    );
    env.write_repo_config(&reader, &target);
    env.lifeboat_env(&["list"], &[]).ok();
    let shown = env.lifeboat_env(&["key", "fingerprint"], &[]).ok();
    assert_eq!(printed_fingerprint(&shown.stdout), pin);
    // Written in capitals and without dashes, it is the same pin.
    let loose = pin.replace('-', "").to_uppercase();
    env.write_repo_config(&reader.replace(&pin, &loose), &target);
    env.lifeboat_env(&["list"], &[]).ok();

    // Someone who can write to the storage makes a repository of their own
    // for the same (public) recipient and puts its keys in place of ours.
    // (Made with our pin still in its configuration, init says the pin
    // does not fit the keys it just made.)
    let forged = env.dir.path().join("forged");
    env.write_config(&format!(
        "[repository.main]\nurl = \"file://{}\"\n{}\nfingerprint = \"{pin}\"\n\n{target}",
        forged.display(),
        writer(env.dir.path().join("forged.dedup-key").to_str().unwrap())
    ));
    let init = env.lifeboat_env(&["init"], &[]).ok();
    assert!(
        init.stdout.contains(&format!(
            "warning: its fingerprint is {}, but [repository.main] pins {pin}",
            printed_fingerprint(&init.stdout)
        )),
        "{}",
        init.stdout
    );
    assert_ne!(printed_fingerprint(&init.stdout), pin);
    let repo = env.repo_path();
    std::fs::remove_dir_all(repo.join("keys")).unwrap();
    std::fs::create_dir(repo.join("keys")).unwrap();
    for key in std::fs::read_dir(forged.join("keys")).unwrap() {
        let key = key.unwrap().path();
        std::fs::copy(&key, repo.join("keys").join(key.file_name().unwrap())).unwrap();
    }
    std::fs::copy(forged.join("config"), repo.join("config")).unwrap();

    env.write_repo_config(&reader, &target);
    let r = env
        .lifeboat_env(&["list"], &[])
        .fails(2, "is not the one the configuration pins");
    assert!(r.stderr.contains(&pin), "{}", r.stderr);
    env.lifeboat_env(
        &["restore", "dev", "--into", &env.cluster.uri("forged")],
        &[],
    )
    .fails(2, "is not the one the configuration pins");
    // Without the pin the identity opens the swapped keys: the hole the pin closes.
    env.write_repo_config(
        &reader.replace(&format!("fingerprint = \"{pin}\""), ""),
        &target,
    );
    let other = env.lifeboat_env(&["key", "fingerprint"], &[]).ok();
    assert_ne!(printed_fingerprint(&other.stdout), pin);

    // A pin that is not a fingerprint is a configuration error.
    env.write_repo_config(&reader.replace(&pin, "not-a-fingerprint"), &target);
    env.lifeboat_env(&["list"], &[])
        .fails(2, "is not a repository fingerprint");
}

#[test]
fn clean_restore_runs_the_manual_procedure_with_hooks() {
    let env = Env::new();
    let log = env.dir.path().join("hooks.log");
    let hooks = format!(
        "hooks = {{ before_restore = [\"echo before $LIFEBOAT_DATABASE >> {0}\"], after_restore = [\"echo after >> {0}\"] }}",
        log.display()
    );
    env.write_repo_config("", &env.target_section("dev", "hyper_db", &hooks));
    env.lifeboat(&["init"]).ok();
    env.lifeboat(&["backup", "dev"]).ok();
    let original = env.fingerprint("hyper_db");

    // The application keeps writing after the backup; a migration adds a table.
    env.cluster
        .psql(
            "hyper_db",
            "DELETE FROM tasks WHERE user_id = 'user_001'; CREATE TABLE app_new (x int);",
        )
        .unwrap();
    assert_ne!(env.fingerprint("hyper_db"), original);

    // Without --clean it refuses to restore over existing tables.
    env.lifeboat(&["restore", "dev"]).fails(2, "--clean");
    // Dry run prints the steps and changes nothing.
    let dry = env
        .lifeboat(&["restore", "dev", "--clean", "--dry-run"])
        .ok();
    for step in [
        "before_restore",
        "CONNECTION LIMIT 0",
        "drop schemas",
        "pg_restore",
        "allow connections",
        "after_restore",
    ] {
        assert!(
            dry.stdout.contains(step),
            "dry run lacks {step:?}:\n{}",
            dry.stdout
        );
    }
    assert!(!log.exists(), "dry run ran no hook");
    // Not on a terminal and no --yes: refuses.
    env.lifeboat(&["restore", "dev", "--clean"])
        .fails(2, "--yes");

    env.lifeboat(&["restore", "dev", "--clean", "--yes"]).ok();
    assert_eq!(env.fingerprint("hyper_db"), original);
    let hooks_ran = std::fs::read_to_string(&log).unwrap();
    assert_eq!(hooks_ran, "before hyper_db\nafter\n");
    assert_eq!(
        env.connection_limit("hyper_db"),
        "-1",
        "connections allowed again"
    );
}

#[test]
fn failing_hook_stops_and_leaves_connections_allowed() {
    let env = Env::new();
    env.write_repo_config(
        "",
        &env.target_section(
            "dev",
            "hyper_db",
            "hooks = { after_restore = [\"exit 3\"] }",
        ),
    );
    env.lifeboat(&["init"]).ok();
    env.lifeboat(&["backup", "dev"]).ok();
    let r = env.lifeboat(&["restore", "dev", "--clean", "--yes"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("after_restore") && r.stderr.contains("exit 3"),
        "{}",
        r.stderr
    );
    assert_eq!(
        env.connection_limit("hyper_db"),
        "-1",
        "connections allowed again"
    );
}

#[test]
fn failed_pg_dump_fails_the_backup_and_lists_nothing() {
    let env = Env::new();
    env.cluster.create_login_role("weak", "weakpass").unwrap();
    env.cluster
        .psql(
            "hyper_db",
            "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;",
        )
        .unwrap();
    env.write_repo_config(
        "",
        &format!(
            "[target.wrongpw]\ndatabase = \"{}\"\nmethod = \"logical\"\n\n[target.noperm]\ndatabase = \"{}\"\nmethod = \"logical\"\nglobals = false\n",
            env.cluster.tcp_uri("weak", "not-the-password", "hyper_db"),
            env.cluster.tcp_uri("weak", "weakpass", "hyper_db"),
        ),
    );
    env.lifeboat(&["init"]).ok();
    let r = env
        .lifeboat(&["backup", "wrongpw"])
        .fails(2, "password authentication failed");
    assert!(
        !r.stderr.contains("not-the-password"),
        "password leaked: {}",
        r.stderr
    );
    env.lifeboat(&["backup", "noperm"])
        .fails(1, "permission denied");
    assert!(env.list("noperm").is_empty());
    assert!(env.list("wrongpw").is_empty());
}

#[test]
fn server_gone_mid_dump_fails_with_pg_dumps_message() {
    let env = Env::new();
    // Enough data that the dump takes a moment.
    env.cluster
        .psql(
            "hyper_db",
            "CREATE TABLE big AS SELECT g, md5(g::text) || md5((g*7)::text) AS t FROM generate_series(1, 1500000) g;",
        )
        .unwrap();
    env.lifeboat(&["init"]).ok();
    let cluster = &env.cluster;
    let killer = std::thread::scope(|s| {
        let h = s.spawn(|| {
            for _ in 0..400 {
                let out = cluster
                    .psql(
                        "postgres",
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pg_dump' AND state = 'active'",
                    )
                    .unwrap_or_default();
                if out.trim() != "0" && !out.trim().is_empty() {
                    return true;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            false
        });
        let r = env.lifeboat(&["backup", "dev"]);
        (h.join().unwrap(), r)
    });
    let (killed, r) = killer;
    assert!(killed, "the test could not catch pg_dump running");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("pg_dump"), "{}", r.stderr);
    assert!(env.list("dev").is_empty(), "nothing half-written is listed");
    // The repository still works.
    env.lifeboat(&["backup", "dev"]).ok();
    assert_eq!(env.list("dev").len(), 1);
}

#[test]
fn globals_restore_onto_a_brand_new_server() {
    let env = Env::new();
    env.cluster.createdb("rt").unwrap();
    env.cluster
        .psql("rt", testkit::roundtrip_schema_sql())
        .unwrap();
    env.write_repo_config("", &env.target_section("rt", "rt", ""));
    env.lifeboat(&["init"]).ok();
    env.lifeboat(&["backup", "rt"]).ok();
    let globals = env.lifeboat(&["export", "rt", "--globals"]).ok();
    assert!(
        globals.stdout.contains("CREATE ROLE roundtrip_reader"),
        "{}",
        globals.stdout
    );
    assert!(
        !globals.stdout.contains("PASSWORD"),
        "role passwords only when asked"
    );

    let fresh = lifeboat::testkit::TestCluster::start().unwrap();
    // Without the globals the grants to roundtrip_reader cannot be restored:
    // the restore fails loudly at pg_restore instead of reporting success.
    let r = env.lifeboat(&["restore", "rt", "--into", &fresh.uri("rt_noglobals")]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("pg_restore") && r.stderr.contains("roundtrip_reader"),
        "{}",
        r.stderr
    );
    let into = fresh.uri("rt");
    // Changing roles on a server asks first.
    env.lifeboat(&["restore", "rt", "--into", &into, "--globals"])
        .fails(2, "--yes");
    env.lifeboat(&["restore", "rt", "--into", &into, "--globals", "--yes"])
        .ok();
    let original = env.fingerprint("rt");
    assert_eq!(
        testkit::database_fingerprint(&fresh, "rt").unwrap(),
        original
    );
    let role = fresh
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname = 'roundtrip_reader'",
        )
        .unwrap();
    assert_eq!(role.trim(), "1");
}

#[test]
fn bad_input_gets_one_line_errors_and_exit_codes() {
    let env = Env::new();
    // Not initialised.
    env.lifeboat(&["list"]).fails(2, "not initialised");
    env.lifeboat(&["init"]).ok();
    // init never touches an existing repository.
    env.lifeboat(&["init"]).fails(2, "already exists");
    // Unknown target.
    env.lifeboat(&["backup", "nope"]).fails(2, "unknown target");
    // A config error with line and column.
    let good = std::fs::read_to_string(&env.config).unwrap();
    env.write_config(&good.replace(
        "method = \"logical\"",
        "method = \"logical\"\nretension = 3",
    ));
    let r = env.lifeboat(&["list"]).fails(2, "lifeboat.toml:");
    assert!(r.stderr.contains("retension"), "{}", r.stderr);
    env.write_config(&good);
    // A newer repository format.
    let cfg_path = env.repo_path().join("config");
    let saved = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(&cfg_path, saved.replace("\"version\":1", "\"version\":99")).unwrap();
    env.lifeboat(&["list"])
        .fails(2, "newer than this lifeboat supports");
    std::fs::write(&cfg_path, saved).unwrap();
    // Unreachable database.
    let unreachable = good.replace(&format!("port={}", env.cluster.port()), "port=1");
    env.write_config(&unreachable);
    env.lifeboat(&["backup", "dev"]).fails(2, "cannot connect");
    // pg_dump missing.
    env.write_config(&good.replace(
        "method = \"logical\"",
        "method = \"logical\"\npg_bindir = \"/nonexistent/bin\"",
    ));
    env.lifeboat(&["backup", "dev"]).fails(2, "pg_bindir");
    env.write_config(&good);
    // A secret that would land on a command line is refused.
    env.lifeboat(&["restore", "dev", "--into", "dbname=x sslpassword=hunter2"])
        .fails(2, "process list");
    // Options of physical restores are refused, not ignored.
    for (opts, named) in [
        (
            &["--start"][..],
            "logical: --start is for physical targets only",
        ),
        (&["--to-time", "2026-11-25 14:03:00"], "--to-time is for"),
        (&["--standby", "--start"], "--start, --standby are for"),
        (&["--direct-io", "never"], "--direct-io is for"),
    ] {
        let mut args = vec!["restore", "dev"];
        args.extend(opts);
        env.lifeboat(&args).fails(2, named);
    }
    // Unknown backup id.
    env.lifeboat(&["show", "ffffffff"])
        .fails(2, "no backup matches");
    assert!(env.list("dev").is_empty());
}

#[test]
fn full_disk_fails_cleanly_and_keeps_the_repository_valid() {
    assert!(
        testkit::running_as_root(),
        "this test mounts a small tmpfs and needs root (CI runs as root): run the suite as root"
    );
    let env = Env::new();
    let mnt = env.repo_path();
    std::fs::create_dir_all(&mnt).unwrap();
    let _mount = testkit::TmpfsMount::new(&mnt, "3m");
    env.lifeboat(&["init"]).ok();
    env.lifeboat(&["backup", "dev"]).ok();
    // Incompressible data larger than the disk.
    env.cluster
        .psql(
            "hyper_db",
            "CREATE TABLE noise AS SELECT g, decode(md5(g::text) || md5((g+1)::text) || md5((g+2)::text), 'hex') AS b FROM generate_series(1, 200000) g;",
        )
        .unwrap();
    let r = env.lifeboat(&["backup", "dev"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("no space left"), "{}", r.stderr);
    let list = env.list("dev");
    assert_eq!(list.len(), 1, "only the first backup is listed");
    let into = env.cluster.uri("after_full");
    env.cluster.psql("hyper_db", "DROP TABLE noise").unwrap();
    env.lifeboat(&["restore", "dev", "--into", &into]).ok();
    assert_eq!(env.fingerprint("after_full"), env.fingerprint("hyper_db"));
    // Still full of the failed backup's packs: prune frees them, verify is clean.
    env.lifeboat(&["prune", "--grace", "0s"]).ok();
    env.lifeboat(&["verify", "--read-data"]).ok();
    env.lifeboat(&["backup", "dev"]).ok();
}

#[test]
fn kill_9_mid_backup_leaves_the_repository_valid() {
    let env = Env::new();
    env.lifeboat(&["init"]).ok();
    env.lifeboat(&["backup", "dev"]).ok();
    // Enough incompressible data that the backup writes several packs.
    env.cluster
        .psql(
            "hyper_db",
            "CREATE TABLE noise AS SELECT g, decode(md5(g::text) || md5((g+1)::text) || md5((g+2)::text), 'hex') AS b FROM generate_series(1, 700000) g;",
        )
        .unwrap();
    let mut child = common::lifeboat_cmd()
        .arg("--config")
        .arg(&env.config)
        .args(["backup", "dev"])
        .env("LIFEBOAT_PASSPHRASE", common::PASSPHRASE)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until at least one pack of this backup is on disk, then kill.
    let before = env.packs().len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while env.packs().len() <= before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(
        env.packs().len() > before,
        "the backup wrote no pack in time"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    assert_eq!(env.list("dev").len(), 1, "the killed backup is not listed");
    // The next backup completes (the killed one left unindexed packs, for prune) and restores.
    env.lifeboat(&["backup", "dev"]).ok();
    assert_eq!(env.list("dev").len(), 2);
    let into = env.cluster.uri("after_kill");
    env.lifeboat(&["restore", "dev", "--into", &into]).ok();
    assert_eq!(env.fingerprint("after_kill"), env.fingerprint("hyper_db"));
    // The first backup still restores.
    let first = env.list("dev")[0]["short_id"].as_str().unwrap().to_string();
    let into = env.cluster.uri("first_after_kill");
    env.lifeboat(&["restore", "dev", "--backup", &first, "--into", &into])
        .ok();
}

#[test]
fn sigterm_during_clean_restore_allows_connections_again() {
    let env = Env::new();
    env.cluster
        .psql(
            "hyper_db",
            "CREATE TABLE big AS SELECT g, md5(g::text) AS t FROM generate_series(1, 2000000) g;",
        )
        .unwrap();
    env.lifeboat(&["init"]).ok();
    env.lifeboat(&["backup", "dev"]).ok();
    let child = common::lifeboat_cmd()
        .arg("--config")
        .arg(&env.config)
        .args(["restore", "dev", "--clean", "--yes"])
        .env("LIFEBOAT_PASSPHRASE", common::PASSPHRASE)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the database is blocked, then ask lifeboat to stop.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while env.connection_limit("hyper_db") != "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the restore never blocked connections"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(stderr.contains("allowed again"), "{stderr}");
    assert_eq!(env.connection_limit("hyper_db"), "-1");
}
