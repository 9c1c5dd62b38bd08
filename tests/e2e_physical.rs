//! Physical backups, WAL archiving and point-in-time recovery, end to end: a
//! real cluster whose archive_command is the built lifeboat binary, base
//! backups, restores to every kind of target with the restored server
//! started, timelines, duplicate and failing WAL pushes, kill -9.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Paused, Run, lifeboat_cmd, lifeboat_cmd_at};
use lifeboat::testkit::proxy::{Fault, FaultProxy, Rule};
use lifeboat::testkit::s3::S3Server;
use lifeboat::testkit::{self, ClusterOptions, TestCluster};
use tempfile::TempDir;

const PASSPHRASE: &str = "correct horse battery staple";

struct Env {
    cluster: TestCluster,
    dir: TempDir,
    config: PathBuf,
}

impl Env {
    /// A cluster archiving into a lifeboat repository, target "production".
    fn new(checksums: bool) -> Env {
        Env::with_repository(
            checksums,
            |dir| format!("url = \"file://{}\"\n", dir.join("repo").display()),
            "",
        )
    }

    /// The same with repository "main" described by `repository(dir)` (the
    /// lines of its table but the passphrase; `dir` is the test's directory)
    /// and `target` added to the target's table.
    fn with_repository(
        checksums: bool,
        repository: impl FnOnce(&Path) -> String,
        target: &str,
    ) -> Env {
        let dir = testkit::temp_dir_for_postgres().unwrap();
        let config = dir.path().join("lifeboat.toml");
        let pass = dir.path().join("passphrase");
        std::fs::write(&pass, PASSPHRASE).unwrap();
        // archive_command and restore_command run the binary as the cluster's
        // OS user, who may not reach the build directory (a checkout under
        // /root): use a copy in the shared directory.
        let binary = dir.path().join("lifeboat");
        std::fs::copy(env!("CARGO_BIN_EXE_lifeboat"), &binary).unwrap();
        let archive = format!(
            "{} --config {} --quiet wal-push %p",
            binary.display(),
            config.display()
        );
        let cluster = TestCluster::start_with(ClusterOptions {
            data_checksums: checksums,
            wal_archiving: Some(archive),
            extra_conf: vec!["wal_level = replica".into()],
        })
        .expect("start PostgreSQL");
        let env = Env {
            cluster,
            dir,
            config,
        };
        std::fs::write(
            &env.config,
            format!(
                "[repository.main]\n{}passphrase_file = \"{}\"\n\n\
                 [target.production]\ndatabase = \"{}\"\nmethod = \"physical\"\n\
                 data_directory = \"{}\"\ncheckpoint = \"fast\"\nretention = {{ keep_last = 2 }}\n{target}",
                repository(env.dir.path()),
                pass.display(),
                env.cluster.uri("postgres"),
                env.cluster.data_dir().display()
            ),
        )
        .unwrap();
        env.lb(&["init"]).ok();
        // The archiver runs as the cluster's OS user.
        testkit::chown_for_postgres(env.dir.path()).unwrap();
        env.cluster.createdb("app").unwrap();
        env.sql("CREATE TABLE t (id int PRIMARY KEY, note text)");
        env
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn lb(&self, args: &[&str]) -> Run {
        self.lb_env(args, &[])
    }

    /// [`Env::lb`] with more environment variables.
    fn lb_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Run {
        // The copy: restore writes its own path into restore_command.
        let mut cmd = lifeboat_cmd_at(&self.dir.path().join("lifeboat"));
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.envs(vars.iter().copied());
        let o = cmd.output().expect("run lifeboat");
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn sql(&self, q: &str) -> String {
        self.cluster.psql("app", q).unwrap().trim().to_string()
    }

    /// Finish the current segment and wait until the archiver stored it.
    fn archive_now(&self) {
        let seg = self.sql("SELECT pg_walfile_name(pg_switch_wal())");
        self.wait_archived(&seg);
    }

    fn wait_archived(&self, seg: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // last_archived_wal alone can end on an older file (a .backup
            // history file archived after the next segment), so also accept
            // the segment's .done, and require no older .ready left behind.
            let last = self.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
            let done = self.sql(&format!(
                "SELECT count(*) FILTER (WHERE name = '{seg}.done'), \
                 count(*) FILTER (WHERE name LIKE '%.ready' AND name <= '{seg}.ready') \
                 FROM pg_ls_archive_statusdir()"
            ));
            let (done, pending) = done.split_once('|').unwrap_or(("0", "1"));
            if (last.as_str() >= seg || done == "1") && pending == "0" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{seg} not archived after 60 s (last {last:?}); server log:\n{}",
                testkit::tail_lines(self.cluster.log_file(), 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn backup(&self) -> serde_json::Value {
        let r = self.lb(&["backup", "production"]).ok();
        assert!(r.stdout.contains("on timeline"), "{}", r.stdout);
        let list = self.lb(&["list", "production", "--json"]).ok();
        let all: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
        let mut all = all["backups"].as_array().unwrap().clone();
        all.pop().expect("the backup is listed")
    }

    /// A new directory for a restore, reachable by the cluster's OS user.
    fn restore_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Add physical target `name` backing up the server at `database`
    /// whose data directory is `data_dir`, with `extra` configuration lines.
    fn add_physical_target(&self, name: &str, database: &str, data_dir: &Path, extra: &str) {
        append(
            &self.config,
            &format!(
                "\n[target.{name}]\ndatabase = \"{database}\"\nmethod = \"physical\"\n\
                 data_directory = \"{}\"\ncheckpoint = \"fast\"\n{extra}",
                data_dir.display(),
            ),
        );
    }

    /// `lifeboat backup TARGET`, held before it stops the backup.
    fn backup_paused_before_stop(&self, target: &str) -> Paused {
        let mut cmd = lifeboat_cmd_at(&self.dir.path().join("lifeboat"));
        cmd.arg("--config")
            .arg(&self.config)
            .args(["backup", target]);
        Paused::start(
            cmd,
            "basebackup:before-stop",
            self.dir.path().join("resume"),
        )
    }

    /// Restore into a new directory `name` with `args` and `--start` on a
    /// free port; panics with the server's log if it fails. Returns the
    /// directory, the port and lifeboat's output.
    fn restore_started(&self, name: &str, args: &[&str]) -> (PathBuf, u16, Run) {
        self.restore_target_started("production", name, args)
    }

    /// [`Env::restore_started`] of another target.
    fn restore_target_started(
        &self,
        target: &str,
        name: &str,
        args: &[&str],
    ) -> (PathBuf, u16, Run) {
        let dir = self.restore_dir(name);
        let port = free_port();
        let port_s = port.to_string();
        let mut all = vec![
            "restore",
            target,
            "--data-dir",
            dir.to_str().unwrap(),
            "--start",
            "--port",
            &port_s,
        ];
        all.extend(args);
        let r = self.lb(&all);
        if r.code != 0 {
            let log = std::fs::read_to_string(dir.join("lifeboat-restore.log")).unwrap_or_default();
            panic!(
                "restore {args:?} failed:\nstdout: {}\nstderr: {}\nlog:\n{log}",
                r.stdout, r.stderr
            );
        }
        let standby = args.contains(&"--standby");
        let up = if standby {
            "the standby is up"
        } else {
            "promoted"
        };
        assert!(r.stdout.contains(up), "{}", r.stdout);
        if !standby {
            prefetcher_gone_after_promotion(&dir);
        }
        (dir, port, r)
    }

    /// Restore with `args`, start the server, return its rows of t.
    fn restore_rows(&self, name: &str, args: &[&str]) -> Vec<i32> {
        self.restore_target_rows("production", name, args)
    }

    fn restore_target_rows(&self, target: &str, name: &str, args: &[&str]) -> Vec<i32> {
        let (dir, port, _) = self.restore_target_started(target, name, args);
        let rows = self.restored_sql(port, "SELECT id FROM t ORDER BY id");
        self.stop_restored(&dir);
        rows.lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.parse().unwrap())
            .collect()
    }

    fn restored_uri(&self, port: u16) -> String {
        format!(
            "postgres://postgres@/app?host={}&port={port}",
            testkit::percent_encode(&self.cluster.socket_dir().to_string_lossy())
        )
    }

    fn restored_sql(&self, port: u16, q: &str) -> String {
        self.cluster.psql_uri(&self.restored_uri(port), q).unwrap()
    }

    /// [`Env::archive_now`] on a restored server started with `--archive`.
    fn restored_archive_now(&self, port: u16) -> String {
        let sql = |q: &str| {
            let out = self.restored_sql(port, q);
            out.trim().to_string()
        };
        let seg = sql("SELECT pg_walfile_name(pg_switch_wal())");
        let deadline = Instant::now() + Duration::from_secs(60);
        while sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < seg {
            assert!(
                Instant::now() < deadline,
                "the restored server did not archive {seg}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        seg
    }

    fn stop_restored(&self, dir: &Path) {
        let out = self
            .cluster
            .server_command("pg_ctl")
            .arg("-D")
            .arg(dir)
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn insert(&self, id: i32) {
        self.sql(&format!("INSERT INTO t VALUES ({id}, 'row {id}')"));
    }
}

/// A streaming standby of an [`Env`]'s cluster (`pg_basebackup -R`), in
/// the test's directory; stopped on drop.
struct Standby {
    dir: PathBuf,
    port: u16,
    socket_dir: PathBuf,
    pg_ctl: PathBuf,
    run_as: Option<(u32, u32)>,
}

impl Standby {
    fn start(env: &Env) -> Standby {
        Self::start_named(env, "standby", env.cluster.port())
    }

    /// A standby of this one (cascading replication), in `name`.
    fn cascade(&self, env: &Env, name: &str) -> Standby {
        Self::start_named(env, name, self.port)
    }

    /// A standby in directory `name` streaming from the server on `port`.
    fn start_named(env: &Env, name: &str, upstream_port: u16) -> Standby {
        let c = &env.cluster;
        let dir = env.dir.path().join(name);
        let out = c
            .server_command("pg_basebackup")
            .arg("-D")
            .arg(&dir)
            .args(["-R", "-X", "stream", "-c", "fast", "-U", "postgres", "-h"])
            .arg(c.socket_dir())
            .args(["-p", &upstream_port.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_basebackup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        // pg_basebackup -R put primary_conninfo there; the last setting wins.
        // archive_cleanup_command: a standby's own, that no copy may run.
        append(
            &dir.join("postgresql.auto.conf"),
            &format!("port = {port}\nhot_standby = on\narchive_cleanup_command = 'true'\n"),
        );
        let standby = Standby {
            dir,
            port,
            socket_dir: c.socket_dir().to_path_buf(),
            pg_ctl: c.bin("pg_ctl"),
            run_as: c.run_as().map(|u| (u.uid, u.gid)),
        };
        let out = c
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&standby.dir)
            .arg("-l")
            .arg(env.dir.path().join(format!("{name}.log")))
            .args(["-w", "start"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "standby did not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            testkit::tail_lines(&env.dir.path().join(format!("{name}.log")), 30)
        );
        standby
    }

    fn uri(&self, db: &str) -> String {
        format!(
            "postgres://postgres@/{db}?host={}&port={}",
            testkit::percent_encode(&self.socket_dir.to_string_lossy()),
            self.port
        )
    }

    /// Promote it (`pg_ctl promote`, waiting until it accepts writes).
    fn promote(&self, env: &Env) {
        let out = env
            .cluster
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.dir)
            .args(["-w", "promote"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl promote: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Wait until the standby replayed everything the primary wrote so far.
    fn catch_up(&self, env: &Env) {
        self.reach(env, &env.sql("SELECT pg_current_wal_lsn()"));
    }

    /// Wait until the standby replayed the WAL up to `lsn`.
    fn reach(&self, env: &Env, lsn: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let q = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        while self.sql(env, &q) != "t" {
            assert!(Instant::now() < deadline, "the standby did not reach {lsn}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sql(&self, env: &Env, q: &str) -> String {
        let out = env.cluster.psql_uri(&self.uri("app"), q).unwrap();
        out.trim().to_string()
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        let mut cmd = std::process::Command::new(&self.pg_ctl);
        cmd.arg("-D")
            .arg(&self.dir)
            .args(["-m", "immediate", "-w", "stop"]);
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt as _;
            cmd.uid(uid).gid(gid);
        }
        let _ = cmd.output();
    }
}

/// Append `text` to the file at `path`.
fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(text.as_bytes()).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The pgBackRest integration test's bar: writes with recorded times, an LSN,
/// an xid and a named restore point between them; restore to each and check
/// exactly which rows exist. Consecutive restores from one repository, each
/// reaching its own target.
#[test]
fn point_in_time_recovery_to_every_kind_of_target() {
    let env = Env::new(false);
    env.insert(1);
    let backup = env.backup();
    assert_eq!(backup["method"], "physical");

    env.insert(2);
    let time_after_2 = env.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(50));
    env.insert(3);
    let lsn_after_3 = env.sql("SELECT pg_current_wal_insert_lsn()");
    env.insert(4);
    let xid_5 = env.sql("BEGIN; INSERT INTO t VALUES (5, 'row 5'); SELECT txid_current(); COMMIT;");
    env.insert(6);
    env.sql("SELECT pg_create_restore_point('before-7')");
    env.insert(7);
    env.archive_now();

    // Refused before anything is written, saying what can be reached.
    let early = env.restore_dir("early");
    let refused = |flag: &str, value: &str, why: &str| {
        env.lb(&[
            "restore",
            "production",
            "--data-dir",
            early.to_str().unwrap(),
            flag,
            value,
        ])
        .fails(2, why)
    };
    let r = refused(
        "--to-time",
        "2000-01-01 00:00:00+00",
        "before the oldest backup",
    );
    assert!(r.stderr.contains("consistent at"), "{}", r.stderr);
    refused("--to-lsn", "FF/0", "beyond the archived WAL");
    refused(
        "--to-time",
        "2999-01-01 00:00:00+00",
        "after the newest archived WAL",
    );
    assert!(
        !early.exists(),
        "a refused restore wrote {}",
        early.display()
    );

    // A dry run says what it would do and writes nothing.
    let r = env
        .lb(&[
            "restore",
            "production",
            "--data-dir",
            early.to_str().unwrap(),
            "--dry-run",
        ])
        .ok();
    assert!(r.stdout.contains("dry run"), "{}", r.stdout);
    assert!(!early.exists());

    assert_eq!(
        env.restore_rows("to-time", &["--to-time", &time_after_2]),
        vec![1, 2]
    );
    assert_eq!(
        env.restore_rows("to-lsn", &["--to-lsn", &lsn_after_3]),
        vec![1, 2, 3]
    );
    assert_eq!(
        env.restore_rows("to-xid", &["--to-xid", &xid_5]),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        env.restore_rows("to-name", &["--to-name", "before-7"]),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(env.restore_rows("latest", &[]), vec![1, 2, 3, 4, 5, 6, 7]);
    // The restored servers did not archive into the repository: still one timeline.
    let tl2 = env.lb(&["list", "production"]).ok();
    assert!(!tl2.stdout.contains("timeline 2"), "{}", tl2.stdout);
}

/// A tablespace goes back where --tablespace-map says, through a link of its
/// own, and the original location is left alone; the restored copy reads the
/// tablespace's rows.
#[test]
fn a_tablespace_restores_into_its_mapped_directory() {
    let env = Env::new(false);
    let location = env.dir.path().join("ts-original");
    std::fs::create_dir(&location).unwrap();
    testkit::chown_for_postgres(&location).unwrap();
    env.sql(&format!(
        "CREATE TABLESPACE fast LOCATION '{}'",
        location.display()
    ));
    env.sql(
        "CREATE TABLE tt (id int) TABLESPACE fast; INSERT INTO tt SELECT generate_series(1, 1000)",
    );
    env.insert(1);
    env.backup();
    env.archive_now();
    let before = std::fs::read_dir(&location).unwrap().count();
    let mapped = env.dir.path().join("ts-restored");
    let map = format!("fast={}", mapped.display());
    let (dir, port, _) = env.restore_started("restored", &["--tablespace-map", &map]);
    assert_eq!(
        env.restored_sql(port, "SELECT count(*) FROM tt").trim(),
        "1000"
    );
    let oid = env.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'fast'");
    assert_eq!(
        std::fs::read_link(dir.join("pg_tblspc").join(&oid)).unwrap(),
        mapped
    );
    env.stop_restored(&dir);
    assert_eq!(std::fs::read_dir(&location).unwrap().count(), before);
    assert_eq!(env.sql("SELECT count(*) FROM tt"), "1000");
}

/// Restored files are written through the page cache, or with O_DIRECT
/// (`--direct-io always`; by default only when the restore is larger than
/// half the memory) where the file system takes it, falling back to the page
/// cache where it does not (refused when opening, or at the first write):
/// the files are the same every way, and the copy starts.
#[test]
fn restored_files_are_the_same_with_or_without_o_direct() {
    let env = Env::new(false);
    // Several MiB, so that a file gets more than one run of writes.
    env.sql(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat('x', 200) AS v \
         FROM generate_series(1, 30000) g",
    );
    env.insert(1);
    env.backup();
    env.archive_now();
    // Whether the file system of the test's directory takes O_DIRECT at all.
    let takes_direct = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
            .open(env.dir.path().join("o-direct-probe"))
            .is_ok()
    };
    let restore = |name: &str, direct_io: &str, fail_at: &str| -> PathBuf {
        let dir = env.restore_dir(name);
        let mut args = vec!["restore", "production", "--data-dir", dir.to_str().unwrap()];
        if !direct_io.is_empty() {
            args.extend(["--direct-io", direct_io]);
        }
        let mut vars = Vec::new();
        if !fail_at.is_empty() {
            vars.push(("LIFEBOAT_FAIL_AT", fail_at));
        }
        let r = env.lb_env(&args, &vars).ok();
        assert_eq!(
            r.stdout.contains("with O_DIRECT (--direct-io always)"),
            direct_io == "always",
            "{}",
            r.stdout
        );
        assert_eq!(
            r.stderr.contains("refused O_DIRECT"),
            direct_io == "always" && (!fail_at.is_empty() || !takes_direct),
            "{name}: {}",
            r.stderr
        );
        dir
    };
    let data_files = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut all: Vec<(PathBuf, Vec<u8>)> = ["base", "global", "pg_xact"]
            .iter()
            .flat_map(|sub| files_under(&dir.join(sub)))
            .map(|p| {
                (
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        all.sort();
        all
    };
    // A small restore: through the page cache by default.
    let expected = data_files(&restore("default", "", ""));
    let largest = expected.iter().map(|(_, b)| b.len()).max().unwrap();
    assert!(largest > 4 << 20, "the largest file has {largest} bytes");
    for (name, direct_io, fail_at) in [
        ("never", "never", ""),
        ("direct", "always", ""),
        ("refused-open", "always", "restore:o-direct-open"),
        ("refused-write", "always", "restore:o-direct-write"),
    ] {
        let got = data_files(&restore(name, direct_io, fail_at));
        assert_eq!(got.len(), expected.len(), "{name}: files");
        for ((p, a), (q, b)) in got.iter().zip(&expected) {
            assert_eq!(p, q, "{name}");
            assert!(a == b, "{name}: {} differs", p.display());
        }
    }
    let (dir, port, _) = env.restore_started("started", &["--direct-io", "always"]);
    assert_eq!(
        env.restored_sql(port, "SELECT count(*) FROM big").trim(),
        "30000"
    );
    env.stop_restored(&dir);
}

/// A cluster whose configuration lives outside its data directory, as on
/// Debian (/etc/postgresql/15/main): the backup keeps postgresql.conf,
/// pg_hba.conf, pg_ident.conf and conf.d/, and a restored copy starts with
/// them, pointed at its own files: not at the original data directory, and
/// without touching the original's pid file.
#[test]
fn a_cluster_configured_outside_its_data_directory_restores_and_starts() {
    let env = Env::new(false);
    env.insert(1);
    let data = env.cluster.data_dir().to_path_buf();
    let etc = env.dir.path().join("etc/15/main");
    std::fs::create_dir_all(etc.join("conf.d")).unwrap();
    // Empty, as Debian ships conf.d: the copy needs it to exist too.
    std::fs::create_dir_all(etc.join("empty.d")).unwrap();
    env.cluster.stop().unwrap();
    for f in ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] {
        std::fs::rename(data.join(f), etc.join(f)).unwrap();
    }
    let pid_file = env.dir.path().join("production.pid");
    append(
        &etc.join("postgresql.conf"),
        &format!(
            "\ndata_directory = '{}'\nhba_file = '{}'\nident_file = '{}'\n\
         external_pid_file = '{}'\ninclude_dir = 'conf.d'\ninclude_dir = 'empty.d'\n",
            data.display(),
            etc.join("pg_hba.conf").display(),
            etc.join("pg_ident.conf").display(),
            pid_file.display()
        ),
    );
    std::fs::write(
        etc.join("conf.d/lifeboat-test.conf"),
        "lifeboat_test.marker = 'from conf.d'\n",
    )
    .unwrap();
    testkit::chown_for_postgres(env.dir.path()).unwrap();
    env.cluster.start_from_config_dir(&etc).unwrap();
    assert_eq!(env.sql("SHOW lifeboat_test.marker"), "from conf.d");
    let production_pid = std::fs::read_to_string(&pid_file).unwrap();

    env.backup();
    env.insert(2);
    env.archive_now();
    // Changed after the backup: the copy must read its own, kept one.
    std::fs::write(
        etc.join("conf.d/lifeboat-test.conf"),
        "lifeboat_test.marker = 'changed after the backup'\n",
    )
    .unwrap();
    let (dir, port, r) = env.restore_started("restored", &[]);
    assert!(
        r.stdout
            .contains("configuration from outside the data directory"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains(&format!(
            "data_directory = '{}' commented out",
            data.display()
        )),
        "{}",
        r.stderr
    );
    let show = |q: &str| env.restored_sql(port, q).trim().to_string();
    assert_eq!(
        show("SELECT string_agg(id::text, ',' ORDER BY id) FROM t"),
        "1,2"
    );
    assert_eq!(show("SHOW lifeboat_test.marker"), "from conf.d");
    let own = std::fs::canonicalize(&dir).unwrap();
    assert_eq!(PathBuf::from(show("SHOW data_directory")), own);
    for file in ["hba_file", "ident_file"] {
        let path = show(&format!("SHOW {file}"));
        assert!(PathBuf::from(&path).starts_with(&own), "{file} = {path}");
    }
    assert_eq!(show("SHOW external_pid_file"), "");
    assert!(dir.join("postgresql.conf").is_file());
    env.stop_restored(&dir);
    // The original's pid file is its own still, and it still runs.
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), production_pid);
    assert_eq!(env.sql("SELECT count(*) FROM t"), "2");
}

/// A restored server that becomes the new primary (--archive) archives a new
/// timeline; a restore to a point on that timeline reaches it. A second base
/// backup after small changes stores little. Pushing a segment twice works;
/// different content under an archived name is refused; a push that cannot
/// write fails and PostgreSQL's retry succeeds later.
#[test]
fn timelines_duplicates_and_failing_pushes() {
    let env = Env::new(false);
    env.sql("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g");
    let first = env.backup();
    env.sql("UPDATE t SET note = 'changed' WHERE id <= 10");
    let second = env.backup();
    let (a, b) = (
        first["stored_bytes"].as_u64().unwrap(),
        second["stored_bytes"].as_u64().unwrap(),
    );
    assert!(b * 5 < a, "second backup stored {b} bytes, first {a}");

    // Same segment again: fine. Altered: refused, loudly.
    let seg = env.sql("SELECT pg_walfile_name(pg_switch_wal())");
    env.wait_archived(&seg);
    let scratch = env.dir.path().join("scratch");
    std::fs::create_dir_all(scratch.join("global")).unwrap();
    std::fs::copy(
        env.cluster.data_dir().join("global/pg_control"),
        scratch.join("global/pg_control"),
    )
    .unwrap();
    let pgdata = ["--pgdata", scratch.to_str().unwrap()];
    let fetched = scratch.join(&seg);
    let mut args = vec!["wal-fetch", seg.as_str(), fetched.to_str().unwrap()];
    args.extend(pgdata);
    env.lb(&args).ok();
    let mut args = vec!["wal-push", fetched.to_str().unwrap()];
    args.extend(pgdata);
    env.lb(&args).ok();
    let mut bytes = std::fs::read(&fetched).unwrap();
    bytes[100_000] ^= 0xff;
    std::fs::write(&fetched, &bytes).unwrap();
    env.lb(&args).fails(1, "different content");
    // wal-fetch prefetches the following segments into pg_wal.
    std::fs::create_dir_all(scratch.join("pg_wal")).unwrap();
    for id in -1005..-1000 {
        env.insert(id);
        env.archive_now();
    }
    env.sql("DELETE FROM t WHERE id < -1000");
    let mut segs: Vec<String> = wal_files(&env)
        .into_iter()
        .filter(|n| n.len() == 24)
        .collect();
    segs.sort();
    let dest = scratch.join("pg_wal/RECOVERYXLOG");
    // `wal-fetch NAME %p` as recovery runs it, into `dest`
    let wal_fetch = |name: &str| {
        let mut args = vec!["wal-fetch", name, dest.to_str().unwrap()];
        args.extend(pgdata);
        env.lb(&args)
    };
    wal_fetch(&segs[0]).ok();
    let ahead = scratch.join("pg_wal/lifeboat-prefetch").join(&segs[1]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ahead.exists() {
        assert!(Instant::now() < deadline, "{} was not prefetched", segs[1]);
        std::thread::sleep(Duration::from_millis(50));
    }
    wal_fetch(&segs[1]).ok();
    assert!(
        !ahead.exists(),
        "the prefetched segment is handed over, not copied"
    );
    assert_eq!(
        std::fs::metadata(&dest).unwrap().len(),
        16 * 1024 * 1024,
        "a whole segment"
    );
    // The following segments, asked for one after another as recovery does:
    // each one the prefetcher brings (or wal-fetch fetches itself), never a
    // wal-fetch waiting for a prefetcher that does not bring its segment (it
    // would give up after 30 s).
    for seg in segs.iter().skip(2).take(3) {
        let started = Instant::now();
        wal_fetch(seg).ok();
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "wal-fetch {seg} waited for the prefetcher in vain"
        );
        assert_eq!(
            std::fs::read(&dest).unwrap()[8..16],
            segment_start(seg),
            "{seg}: a segment holds its own WAL"
        );
    }
    // While the prefetcher runs, wal-fetch asks it, and opens no repository
    // itself: without the passphrase file it still hands over segments, and
    // says at once what is not archived (the segment after the end of the
    // archive, a timeline history file recovery looks for).
    let pass = env.dir.path().join("passphrase");
    let hidden = env.dir.path().join("passphrase.away");
    std::fs::rename(&pass, &hidden).unwrap();
    for seg in &segs[5..7] {
        wal_fetch(seg).ok();
        assert_eq!(std::fs::read(&dest).unwrap()[8..16], segment_start(seg));
    }
    let after_end = next_segment(segs.last().unwrap());
    for missing in [after_end.as_str(), "00000009.history"] {
        wal_fetch(missing).fails(1, "not in the archive");
    }
    // Without a prefetcher (killed), wal-fetch needs the repository again,
    // and says so; with the passphrase back, it works and starts a new one.
    let spool = scratch.join("pg_wal/lifeboat-prefetch");
    let pid: i32 = std::fs::read_to_string(spool.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    wait_gone(pid);
    // (what it fetched ahead is whole, and would still be handed over)
    let _ = std::fs::remove_file(spool.join(&segs[7]));
    // The new prefetcher cannot open the repository either, and wal-fetch
    // says why it stopped (its own stderr goes nowhere).
    let failed = wal_fetch(&segs[7]).fails(1, "passphrase");
    assert!(
        failed
            .stderr
            .contains("warning: the WAL prefetcher stopped: cannot read passphrase file"),
        "{}",
        failed.stderr
    );
    std::fs::rename(&hidden, &pass).unwrap();
    let answered = wal_fetch(&segs[7]).ok();
    assert_eq!(
        std::fs::read(&dest).unwrap()[8..16],
        segment_start(&segs[7])
    );
    let new_pid = std::fs::read_to_string(spool.join("pid")).unwrap_or_else(|e| {
        panic!(
            "no prefetcher after wal-fetch {}: {e}; wal-fetch said: {}; the spool holds {:?}",
            segs[7],
            answered.stderr,
            std::fs::read_dir(&spool)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect::<Vec<_>>()
        )
    });
    assert_ne!(new_pid.trim(), pid.to_string(), "a new prefetcher");
    // A pid file naming a live process that is no prefetcher (the pid of one
    // gone with a reboot, reused): wal-fetch does not wait for its answers
    // (it would give up only after 60 s).
    let pid: i32 = new_pid.trim().parse().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    wait_gone(pid);
    std::fs::write(spool.join("pid"), std::process::id().to_string()).unwrap();
    let _ = std::fs::remove_file(spool.join(&segs[8]));
    let started = Instant::now();
    wal_fetch(&segs[8]).ok();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited for a stranger"
    );
    assert_eq!(
        std::fs::read(&dest).unwrap()[8..16],
        segment_start(&segs[8])
    );
    // A damaged archived segment, asked of the running prefetcher: wal-fetch
    // reports the damage (fetching it itself), never "not in the archive",
    // which would end a recovery early without a word.
    let sysid: u64 = env
        .sql("SELECT system_identifier FROM pg_control_system()")
        .parse()
        .unwrap();
    let object = env.repo().join(lifeboat::format::wal_path(sysid, &segs[0]));
    let original = std::fs::read(&object).unwrap();
    let mut damaged = original.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(&object, &damaged).unwrap();
    assert!(
        std::fs::read_to_string(spool.join("pid")).is_ok(),
        "a prefetcher runs"
    );
    let r = wal_fetch(&segs[0]).fails(1, &segs[0]);
    assert!(!r.stderr.contains("not in the archive"), "{}", r.stderr);
    // verify finds it by reading: --read-data authenticates every piece of
    // every archived file, --decompress also re-hashes the whole file.
    env.lb(&["verify"]).ok();
    for extra in [&[][..], &["--decompress"][..]] {
        let mut args = vec!["verify", "--read-data"];
        args.extend(extra);
        let r = env.lb(&args).fails(1, "verify found");
        let line = r
            .stdout
            .lines()
            .find(|l| l.contains("PROBLEM") && l.contains(&segs[0]))
            .unwrap_or_else(|| panic!("{args:?} does not name {}:\n{}", segs[0], r.stdout));
        assert!(line.contains("authentication failed"), "{line}");
    }
    std::fs::write(&object, &original).unwrap();
    // A segment of another cluster is refused (its header names the cluster).
    let other = env.dir.path().join("other");
    std::fs::create_dir_all(other.join("global")).unwrap();
    let mut control = std::fs::read(scratch.join("global/pg_control")).unwrap();
    control[0] ^= 1;
    std::fs::write(other.join("global/pg_control"), &control).unwrap();
    env.lb(&[
        "wal-push",
        fetched.to_str().unwrap(),
        "--pgdata",
        other.to_str().unwrap(),
    ])
    .fails(1, "belongs to cluster");
    // A name never archived: wal-fetch fails at once.
    let mut args = vec!["wal-fetch", "0000000100000000000000FF", "/dev/null"];
    args.extend(pgdata);
    env.lb(&args).fails(1, "not in the archive");

    // The repository cannot be written: the archiver fails and retries.
    let sysid = env.sql("SELECT system_identifier FROM pg_control_system()");
    let tli_dir = env.repo().join("wal").join(&sysid).join("00000001");
    let failed_before: i64 = env
        .sql("SELECT failed_count FROM pg_stat_archiver")
        .parse()
        .unwrap();
    set_mode(&tli_dir, 0o555);
    env.insert(-1);
    let seg = env.sql("SELECT pg_walfile_name(pg_switch_wal())");
    let deadline = Instant::now() + Duration::from_secs(60);
    while env
        .sql("SELECT failed_count FROM pg_stat_archiver")
        .parse::<i64>()
        .unwrap()
        == failed_before
    {
        assert!(Instant::now() < deadline, "the archiver never failed");
        std::thread::sleep(Duration::from_millis(100));
    }
    set_mode(&tli_dir, 0o755);
    env.wait_archived(&seg);

    // Restore as a new primary, write on the new timeline, archive it.
    let dir = env.restore_dir("new-primary");
    let port = free_port();
    env.lb(&[
        "restore",
        "production",
        "--data-dir",
        dir.to_str().unwrap(),
        "--start",
        "--archive",
        "--port",
        &port.to_string(),
    ])
    .ok();
    let uri = env.restored_uri(port);
    let tli = env
        .cluster
        .psql_uri(&uri, "SELECT timeline_id FROM pg_control_checkpoint()")
        .unwrap();
    env.cluster
        .psql_uri(
            &uri,
            "CHECKPOINT; INSERT INTO t VALUES (-2, 'on the new timeline')",
        )
        .unwrap();
    let seg = env.restored_archive_now(port);
    env.stop_restored(&dir);
    assert!(seg.starts_with("00000002"), "new timeline {tli}: {seg}");
    let list = env.lb(&["list", "production"]).ok();
    assert!(list.stdout.contains("timeline 2"), "{}", list.stdout);

    // Latest on timeline 2 has the new row; timeline 1 does not.
    let rows = env.restore_rows("tl2", &["--timeline", "2"]);
    assert!(rows.contains(&-2) && rows.contains(&-1), "{rows:?}");
    let rows = env.restore_rows("tl1", &["--timeline", "current"]);
    assert!(!rows.contains(&-2) && rows.contains(&-1), "{rows:?}");

    // Retention keep_last = 2: prune forgets the first backup and the WAL
    // before the second one; everything left verifies and restores. Every
    // pack with anything unneeded in it is rewritten (groups of blocks stay
    // whole), so the restore below reads rewritten packs too.
    let before = wal_files(&env);
    env.backup();
    let r = env
        .lb(&["prune", "--grace", "0s", "--max-unused", "0"])
        .ok();
    assert!(r.stdout.contains("WAL: "), "{}", r.stdout);
    // At least the first backup's own backup_label was unneeded in its pack.
    assert!(
        r.stdout.contains("rewrote ") && !r.stdout.contains("rewrote 0 packs"),
        "{}",
        r.stdout
    );
    let after = wal_files(&env);
    assert!(
        after.len() < before.len(),
        "{} -> {} WAL files",
        before.len(),
        after.len()
    );
    assert!(
        after.iter().any(|f| f.ends_with(".history")),
        "history files are kept"
    );
    env.lb(&["verify", "--read-data"]).ok();
    let rows = env.restore_rows("after-prune", &[]);
    assert!(rows.contains(&-1) && rows.len() == 20001, "{}", rows.len());

    // A hole in the archive after the newest backup: verify names it.
    env.insert(-3);
    let hole = env.sql("SELECT pg_walfile_name(pg_switch_wal())");
    env.insert(-4);
    env.archive_now();
    let path = env
        .repo()
        .join("wal")
        .join(&sysid)
        .join(&hole[..8])
        .join(&hole);
    std::fs::remove_file(&path).unwrap();
    let r = env.lb(&["verify"]).fails(1, "");
    assert!(
        r.stdout.contains(&hole) && r.stdout.contains("gap"),
        "{}",
        r.stdout
    );
    // list shows it too, in text and in JSON: the restorable window at a glance.
    let r = env.lb(&["list", "production"]).ok();
    assert!(
        r.stdout.contains(&format!("gap: {hole} to {hole} missing")),
        "{}",
        r.stdout
    );
    let r = env.lb(&["list", "production", "--json"]).ok();
    let all: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let wal = &all["wal"][0];
    assert_eq!(wal["system_identifier"], serde_json::json!(sysid));
    assert!(wal["restorable_from"].is_string(), "{wal}");
    let tli = u32::from_str_radix(&hole[..8], 16).unwrap();
    let tl = wal["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["timeline"] == tli)
        .unwrap_or_else(|| panic!("no timeline {tli}: {wal}"));
    assert_eq!(
        tl["gaps"],
        serde_json::json!([{"first_missing": hole, "last_missing": hole}])
    );
    assert!(tl["newest_archived"].is_string(), "{tl}");
}

/// Three generations: a restore to a named point, promoted with --archive
/// (generation 2), backed up as a target of its own, then restored to its
/// latest (generation 3). Generation 2's configuration still held the first
/// restore's recovery settings when it was backed up: the second restore
/// comments them out, or its recovery would stop at the old target.
#[test]
fn a_restored_server_backed_up_restores_to_its_own_latest() {
    let env = Env::new(false);
    env.insert(1);
    env.backup();
    env.insert(2);
    env.sql("SELECT pg_create_restore_point('gen1')");
    env.insert(3);
    env.archive_now();
    let (gen2, port, _) = env.restore_started("gen2", &["--to-name", "gen1", "--archive"]);
    let auto = std::fs::read_to_string(gen2.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("recovery_target_name = 'gen1'"), "{auto}");
    env.add_physical_target("second", &env.restored_uri(port), &gen2, "");
    env.restored_sql(port, "INSERT INTO t VALUES (20, 'generation 2')");
    let r = env.lb(&["backup", "second"]).ok();
    assert!(r.stdout.contains("on timeline 2"), "{}", r.stdout);
    env.restored_sql(port, "INSERT INTO t VALUES (21, 'after its backup')");
    env.restored_archive_now(port);
    env.stop_restored(&gen2);

    let (gen3, port, r) = env.restore_target_started("second", "gen3", &[]);
    assert!(
        r.stderr
            .contains("recovery_target_name = 'gen1' commented out"),
        "{}",
        r.stderr
    );
    assert_eq!(
        env.restored_sql(port, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t")
            .trim(),
        "1,2,20,21"
    );
    env.stop_restored(&gen3);
}

/// Wait until the killed process `pid` (not our child) has exited: a
/// thread of it still in a system call (an fsync, say) keeps it alive
/// after the SIGKILL. A zombie has no command line.
/// Recovery is over once the server promoted: the WAL prefetcher (if
/// recovery started one) exits within seconds, and takes what it fetched
/// beyond the recovery target with it.
fn prefetcher_gone_after_promotion(pgdata: &Path) {
    let spool = pgdata.join("pg_wal/lifeboat-prefetch");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pid = std::fs::read_to_string(spool.join("pid")).ok();
        let running = pid.as_deref().is_some_and(|p| {
            std::fs::read(format!("/proc/{}/cmdline", p.trim()))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == b"wal-prefetch"))
        });
        if !running {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the WAL prefetcher {pid:?} still runs 10 s after the promotion"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<String> = std::fs::read_dir(&spool)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() >= 24 && n[..24].chars().all(|c| c.is_ascii_hexdigit()))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "WAL left in the spool after recovery: {left:?}"
    );
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty()) {
        assert!(
            Instant::now() < deadline,
            "process {pid} outlived its SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A segment's first page header's xlp_pageaddr: where the segment starts.
fn segment_start(seg: &str) -> [u8; 8] {
    let log = u64::from_str_radix(&seg[8..16], 16).unwrap();
    let number = u64::from_str_radix(&seg[16..24], 16).unwrap();
    ((log << 32) + number * (16 << 20)).to_le_bytes()
}

/// The segment after `seg` (16 MiB segments).
fn next_segment(seg: &str) -> String {
    let log = u64::from_str_radix(&seg[8..16], 16).unwrap();
    let number = u64::from_str_radix(&seg[16..24], 16).unwrap() + 1;
    let (log, number) = if number == 256 {
        (log + 1, 0)
    } else {
        (log, number)
    };
    format!("{}{log:08X}{number:08X}", &seg[..8])
}

/// Every archived file name in the repository.
fn wal_files(env: &Env) -> Vec<String> {
    files_under(&env.repo().join("wal"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// Every file below `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// kill -9 in the middle of a base backup: nothing listed, the repository
/// verifies, the server is not left in backup mode, the next backup works
/// and restores. With data checksums on, a corrupt page is reported and the
/// backup still completes.
#[test]
fn crash_mid_backup_and_corrupt_pages() {
    let env = Env::new(true);
    env.sql("INSERT INTO t SELECT g, repeat('y', 500) FROM generate_series(1, 20000) g");
    env.sql("CHECKPOINT");
    let mut cmd = lifeboat_cmd();
    cmd.arg("--config")
        .arg(&env.config)
        .args(["backup", "production"])
        .env("LIFEBOAT_CRASH_AT", "pack:1");
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "the crash point was not reached");
    let listed: serde_json::Value =
        serde_json::from_str(&env.lb(&["list", "production", "--json"]).ok().stdout).unwrap();
    assert_eq!(listed["backups"], serde_json::json!([]), "{listed}");
    // The backup session ended with lifeboat: no backend is left in backup mode.
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_backup_start%' AND pid <> pg_backend_pid()") != "0" {
        assert!(Instant::now() < deadline, "a backup session outlived lifeboat");
        std::thread::sleep(Duration::from_millis(100));
    }
    env.lb(&["verify", "--read-data"]).ok();

    // Corrupt one page of another table on disk (the server is stopped
    // meanwhile, so the bad page is what it reads back).
    env.sql("CREATE TABLE junk AS SELECT g FROM generate_series(1, 10000) g; CHECKPOINT");
    let file = env.sql("SELECT pg_relation_filepath('junk')");
    env.cluster.stop().unwrap();
    let path = env.cluster.data_dir().join(&file);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8192 * 3 + 4000] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    env.cluster.restart().unwrap();
    let r = env.lb(&["backup", "production"]).ok();
    assert!(r.stdout.contains("1 corrupt page"), "{}", r.stdout);
    assert!(r.stderr.contains(&file), "{}", r.stderr);
    env.lb(&["verify", "--read-data"]).ok();
    let rows = env.restore_rows("after-crash", &[]);
    assert_eq!(rows.len(), 20000);

    // A disk that fills up half-way: the restore says so, takes back what
    // it wrote, and does not hang with its writers stopped.
    assert!(
        testkit::running_as_root(),
        "this test mounts a small tmpfs and needs root (CI runs as root): run the suite as root"
    );
    let small = env.restore_dir("small-disk");
    std::fs::create_dir(&small).unwrap();
    let _mount = testkit::TmpfsMount::new(&small, "8m");
    let dir = small.join("pgdata");
    let r = env
        .lb(&["restore", "production", "--data-dir", dir.to_str().unwrap()])
        .fails(1, "No space left on device");
    assert!(r.stderr.contains("removed again"), "{}", r.stderr);
    assert!(!dir.exists(), "a failed restore left {}", dir.display());

    // A damaged pack makes a restore fail half-way: it names the pack and
    // takes back what it wrote.
    let packs = files_under(&env.repo().join("data"));
    let largest = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(largest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(largest, &bytes).unwrap();
    let dir = env.restore_dir("damaged");
    let r = env
        .lb(&["restore", "production", "--data-dir", dir.to_str().unwrap()])
        .fails(1, "authentication failed");
    assert!(r.stderr.contains("removed again"), "{}", r.stderr);
    assert!(!dir.exists(), "a failed restore left {}", dir.display());
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The production row off-site: every WAL segment archived into S3 by the
/// archive_command (running as the cluster's OS user, with the repository's
/// own credentials file), a base backup in S3, and point-in-time recovery
/// from it with restore_command fetching from S3; all of it through a proxy
/// that fails requests now and then and loses acknowledgements.
#[test]
fn archiving_base_backup_and_recovery_through_s3() {
    let server = S3Server::moto().unwrap();
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let env = Env::with_repository(
        false,
        |dir| server.repository_toml(dir, "production", Some(&proxy.endpoint())),
        "",
    );
    env.insert(1);
    // WAL pushes whose PUT fails, whose acknowledgement is lost, and a pack
    // upload that fails: each is retried and completes.
    proxy.inject(
        Rule::new(Fault::Status(503))
            .method("PUT")
            .path("/wal/")
            .times(2),
    );
    proxy.inject(
        Rule::new(Fault::DropAfterForward)
            .method("PUT")
            .path("/wal/"),
    );
    proxy.inject(Rule::new(Fault::Drop).method("PUT").path("/data/"));
    let backup = env.backup();
    assert_eq!(backup["method"], "physical");
    env.insert(2);
    let time_after_2 = env.sql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(50));
    env.insert(3);
    env.archive_now();
    assert_eq!(
        env.restore_rows("s3-time", &["--to-time", &time_after_2]),
        [1, 2]
    );
    // Fetches that fail once are retried too.
    proxy.inject(
        Rule::new(Fault::Status(500))
            .method("GET")
            .path("/wal/")
            .times(3),
    );
    assert_eq!(env.restore_rows("s3-latest", &[]), [1, 2, 3]);
    assert_eq!(
        proxy.faults_left(),
        0,
        "every fault was met: {:?}",
        proxy.requests()
    );
    let r = env.lb(&["verify", "--read-data"]).ok();
    assert!(r.stdout.contains("s3://"), "{}", r.stdout);
    assert!(
        server
            .get_object("production/config")
            .unwrap()
            .is_some_and(|c| !c.is_empty()),
        "the repository lives in the bucket"
    );
}

/// Asynchronous archiving: archive_command returns once the segment is in the
/// local spool, also while S3 is unreachable; the uploader sends everything
/// once it is back. A full spool fails the push by default (PostgreSQL keeps
/// the segment and retries); with spool_full = "drop" it is dropped, loudly,
/// and verify shows the gap.
#[test]
fn async_archiving_spools_while_s3_is_down() {
    let server = S3Server::moto().unwrap();
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let env = Env::with_repository(
        false,
        |dir| {
            let repo = server.repository_toml(dir, "production", Some(&proxy.endpoint()));
            format!("{repo}attempts = 2\n")
        },
        "archive_async = true\nspool_max_size = \"48MiB\"\n",
    );
    let spool = env.cluster.data_dir().join("pg_wal/lifeboat-spool");
    env.insert(1);
    env.backup();

    proxy.set_down(true);
    env.insert(2);
    env.archive_now();
    env.insert(3);
    env.archive_now();
    assert!(spooled(&spool) >= 2, "spooled while S3 is down");
    // Full: the push fails, PostgreSQL keeps the segments and retries.
    for _ in 0..3 {
        env.sql("SELECT pg_switch_wal()");
        env.insert(4 + env.sql("SELECT count(*) FROM t").parse::<i32>().unwrap());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.sql("SELECT failed_count FROM pg_stat_archiver") == "0" {
        assert!(Instant::now() < deadline, "the archiver never failed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = testkit::tail_lines(env.cluster.log_file(), 200);
    assert!(log.contains("spool") && log.contains("is full"), "{log}");

    proxy.set_down(false);
    env.archive_now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while spooled(&spool) > 0 {
        assert!(
            Instant::now() < deadline,
            "the spool was not emptied: {}",
            std::fs::read_to_string(spool.join("uploader.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let rows = env.sql("SELECT count(*) FROM t").parse::<usize>().unwrap();
    assert_eq!(env.restore_rows("after-outage", &[]).len(), rows);
    env.lb(&["verify"]).ok();

    // Dropping instead of failing: the archive gets a gap, said loudly.
    let config = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        config.replace(
            "spool_max_size = \"48MiB\"",
            "spool_max_size = \"16MiB\"\nspool_full = \"drop\"",
        ),
    )
    .unwrap();
    proxy.set_down(true);
    env.insert(100);
    env.archive_now();
    env.insert(101);
    env.archive_now();
    let log = testkit::tail_lines(env.cluster.log_file(), 200);
    assert!(log.contains("DROPPED"), "{log}");
    proxy.set_down(false);
    let wait_empty = || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while spooled(&spool) > 0 {
            assert!(Instant::now() < deadline, "the spool was not emptied");
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    wait_empty();
    // A segment after the dropped one: the gap is inside the archive.
    env.insert(102);
    env.archive_now();
    wait_empty();
    let r = env.lb(&["verify"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("a gap in the archived WAL"),
        "{}",
        r.stdout
    );
}

fn spooled(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().len() == 24)
                .count()
        })
        .unwrap_or(0)
}

/// The production row with its off-site copy: WAL archived into a local and
/// an S3 repository with the same keys, each base backup copied to S3 after
/// it is stored locally, and point-in-time recovery from the S3 copy, also
/// when the local repository has lost its packs.
#[test]
fn physical_backups_in_two_repositories() {
    let server = S3Server::moto().unwrap();
    let env = Env::with_repository(
        false,
        |dir| {
            format!(
                "url = \"file://{}\"\npassphrase_file = \"{pass}\"\n\n\
                 [repository.other]\nurl = \"file://{}\"\npassphrase_file = \"{pass}\"\n\n\
                 [repository.offsite]\n{}keys_from = \"main\"\n",
                dir.join("repo").display(),
                dir.join("other").display(),
                server.repository_toml(dir, "production", None),
                pass = dir.join("passphrase").display(),
            )
        },
        "repositories = [\"main\", \"offsite\"]\n",
    );
    env.insert(1);
    let r = env.lb(&["backup", "production"]).ok();
    assert!(
        r.stdout.contains("copied to repository \"offsite\""),
        "{}",
        r.stdout
    );
    env.insert(2);
    env.archive_now();
    let list = env.lb(&["list", "production", "--json"]).ok();
    let listed: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(
        listed["backups"][0]["repositories"],
        serde_json::json!(["main", "offsite"])
    );
    assert_eq!(
        env.restore_rows("from-offsite", &["--repository", "offsite"]),
        [1, 2]
    );
    // A repository with keys of its own gets a re-encrypted copy (blocks
    // and WAL), which restores on its own.
    let r = env
        .lb(&["copy", "--from", "main", "--to", "other", "production"])
        .ok();
    assert!(
        r.stdout.contains("different keys") && r.stdout.contains("copied 1 backup"),
        "{}",
        r.stdout
    );
    assert_eq!(
        env.restore_rows("from-other", &["--repository", "other"]),
        [1, 2]
    );
    // The local repository loses its packs: the restore reads them from S3.
    std::fs::remove_dir_all(env.repo().join("data")).unwrap();
    assert_eq!(env.restore_rows("fallback", &[]), [1, 2]);
}

/// A base backup from a streaming standby (the backup API on the standby,
/// the WAL from the primary's archiver, the primary's segment ended through
/// primary_database) restores to the latest point and to a restore point.
/// A primary_database that is not the standby's primary is refused before
/// anything starts.
#[test]
fn a_base_backup_from_a_standby_restores() {
    let env = Env::new(true);
    env.insert(1);
    let standby = Standby::start(&env);
    env.insert(2);
    standby.catch_up(&env);
    for (name, primary) in [
        ("replica", Some(env.cluster.uri("postgres"))),
        ("wrong", Some(standby.uri("postgres"))),
        ("alone", None),
        (
            "unreachable",
            Some("postgres://postgres@127.0.0.1:1/postgres".to_string()),
        ),
    ] {
        let primary = primary
            .map(|p| format!("primary_database = \"{p}\"\n"))
            .unwrap_or_default();
        env.add_physical_target(name, &standby.uri("postgres"), &standby.dir, &primary);
    }

    env.lb(&["backup", "wrong"])
        .fails(2, "primary_database names a server in recovery");
    let r = env.lb(&["backup", "replica"]).ok();
    assert!(r.stdout.contains("(from a standby)"), "{}", r.stdout);
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
    let list = env.lb(&["list", "replica", "--json"]).ok();
    let listed: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let backups = listed["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "{}", list.stdout);
    let id = backups[0]["id"].as_str().unwrap();
    let show = env.lb(&["show", id]).ok();
    assert!(
        show.stdout.contains("taken from a standby"),
        "{}",
        show.stdout
    );
    let wrong = env.lb(&["list", "wrong", "--json"]).ok();
    let wrong: serde_json::Value = serde_json::from_str(&wrong.stdout).unwrap();
    assert_eq!(
        wrong["backups"],
        serde_json::json!([]),
        "refused, not listed"
    );

    // Without primary_database, or with one that cannot be reached, the
    // backup waits for the primary's archiver and ends once it archived the
    // segment (here: a switch on the primary made after the backup said what
    // it waits for).
    for (target, first_says) in [
        (
            "alone",
            "backing up from a standby: the backup ends once the primary has archived",
        ),
        (
            "unreachable",
            "warning: primary_database: cannot connect to user=postgres host=127.0.0.1 port=1",
        ),
    ] {
        env.insert(10);
        standby.catch_up(&env);
        let mut child = lifeboat_cmd_at(&env.dir.path().join("lifeboat"))
            .arg("--config")
            .arg(&env.config)
            .args(["backup", target])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        loop {
            let mut line = String::new();
            let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
            said.push_str(&line);
            assert!(n > 0, "{target}: the backup ended before waiting: {said}");
            if line.contains("waiting for the primary to archive WAL up to") {
                break;
            }
        }
        assert!(said.contains(first_says), "{target}: {said}");
        env.archive_now();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{target}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        env.sql("DELETE FROM t WHERE id = 10");
    }

    env.sql("SELECT pg_create_restore_point('before 3')");
    env.insert(3);
    env.archive_now();
    // The standby's primary_conninfo and slot (pg_basebackup -R) are not
    // the copy's: commented out, the password not kept.
    let (dir, port, r) = env.restore_target_started("replica", "latest", &[]);
    let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    for setting in ["primary_conninfo", "archive_cleanup_command"] {
        assert!(
            r.stderr.contains(&format!("{setting} commented out")),
            "{}",
            r.stderr
        );
        assert!(!auto.lines().any(|l| l.starts_with(setting)), "{auto}");
    }
    // Kept in a comment, for the DBA: where the original streamed from.
    assert!(
        auto.lines().any(
            |l| l.starts_with("# lifeboat restore: was primary_conninfo = '")
                && l.contains("port=")
        ),
        "{auto}"
    );
    assert_eq!(
        env.restored_sql(port, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t")
            .trim(),
        "1,2,3"
    );
    env.stop_restored(&dir);
    assert_eq!(
        env.restore_target_rows("replica", "named", &["--to-name", "before 3"]),
        [1, 2]
    );
}

/// The standby a backup reads from is promoted while the backup runs:
/// PostgreSQL refuses to stop that backup (the copy would not be
/// consistent), so the backup fails with PostgreSQL's reason and a hint,
/// lists nothing, and leaves the repository valid; what it copied is
/// indexed, so the next backup (of the new primary) stores little again.
#[test]
fn a_standby_promoted_during_its_backup_fails_the_backup_cleanly() {
    let env = Env::new(true);
    env.sql("INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(10, 20000) g");
    let standby = Standby::start(&env);
    standby.catch_up(&env);
    env.add_physical_target("replica", &standby.uri("postgres"), &standby.dir, "");
    let paused = env.backup_paused_before_stop("replica");
    standby.promote(&env);
    let said = paused
        .resume()
        .fails(1, "the standby was promoted during online backup");
    for needle in ["the backup is not listed", "hint: back up the new primary"] {
        assert!(
            said.stderr.contains(needle),
            "lacks {needle:?}: {}",
            said.stderr
        );
    }
    let list = env.lb(&["list", "replica", "--json"]).ok();
    let listed: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(listed["backups"], serde_json::json!([]), "{}", list.stdout);
    env.lb(&["verify", "--read-data"]).ok();
    // What the failed backup copied is indexed: a backup of the new primary
    // finds most of it there already.
    env.lb(&["backup", "replica"]).ok();
    let list = env.lb(&["list", "replica", "--json"]).ok();
    let listed: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let done = &listed["backups"][0];
    let (new, total) = (
        done["new_bytes"].as_u64().unwrap(),
        done["total_size"].as_u64().unwrap(),
    );
    assert!(
        new * 4 < total,
        "{new} of {total} bytes new: {}",
        list.stdout
    );
}

/// A cascading standby follows its upstream standby onto a new timeline
/// when that one is promoted. A backup of it that started on the old
/// timeline and stops on the new one is refused and not listed.
#[test]
fn a_backup_of_a_standby_whose_upstream_is_promoted_is_refused() {
    let env = Env::new(true);
    env.insert(1);
    let upstream = Standby::start(&env);
    upstream.catch_up(&env);
    let cascaded = upstream.cascade(&env, "cascaded");
    cascaded.catch_up(&env);
    env.add_physical_target("cascaded", &cascaded.uri("postgres"), &cascaded.dir, "");
    let paused = env.backup_paused_before_stop("cascaded");
    upstream.promote(&env);
    // WAL of the new timeline, up to a checkpoint, replayed by the cascaded
    // standby; its restartpoint then moves its minimum recovery point (where
    // a backup of it stops) onto the new timeline.
    upstream.sql(&env, "INSERT INTO t VALUES (2, 'row 2')");
    upstream.sql(&env, "CHECKPOINT");
    cascaded.reach(&env, &upstream.sql(&env, "SELECT pg_current_wal_lsn()"));
    cascaded.sql(&env, "CHECKPOINT");
    assert_eq!(
        cascaded.sql(
            &env,
            "SELECT min_recovery_end_timeline FROM pg_control_recovery()"
        ),
        "2"
    );
    paused.resume().fails(
        1,
        "the standby moved from timeline 1 to 2 during the backup",
    );
    let list = env.lb(&["list", "cascaded", "--json"]).ok();
    let listed: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(listed["backups"], serde_json::json!([]), "{}", list.stdout);
    env.lb(&["verify"]).ok();
}

/// `restore --standby --archive` of a server with `archive_mode = always`:
/// the new standby archives again every segment it restores from the
/// repository, into that same repository. They are the primary's segments
/// byte for byte: each push is accepted, none fails.
#[test]
fn a_standby_with_archive_mode_always_archives_what_it_replays_again() {
    let env = Env::new(false);
    env.sql("ALTER SYSTEM SET archive_mode = 'always'");
    env.cluster.restart().unwrap();
    env.insert(1);
    env.backup();
    env.insert(2);
    env.archive_now();
    let (dir, port, _) = env.restore_started("always", &["--standby", "--archive"]);
    assert_eq!(env.restored_sql(port, "SHOW archive_mode").trim(), "always");
    env.insert(3);
    env.archive_now();
    let archiver = || {
        env.restored_sql(
            port,
            "SELECT archived_count || ',' || failed_count || ',' || \
             (SELECT string_agg(id::text, ',' ORDER BY id) FROM t) FROM pg_stat_archiver",
        )
        .trim()
        .to_string()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = archiver();
        let fields: Vec<&str> = now.split(',').collect();
        assert_eq!(fields[1], "0", "the standby's archiver failed: {now}");
        if fields[0] != "0" && fields[2..] == ["1", "2", "3"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the standby archived nothing: {now}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    env.stop_restored(&dir);
    env.lb(&["verify", "--read-data"]).ok();
}

/// `restore --standby`: a new standby built from the repository replays the
/// archive, stays in recovery and keeps following the archive; with
/// --primary-conninfo it streams from the primary once the archive is
/// replayed. A standby takes no recovery target.
#[test]
fn a_restore_as_a_standby_follows_the_archive_and_the_primary() {
    let env = Env::new(false);
    env.insert(1);
    env.backup();
    env.insert(2);
    env.archive_now();
    let rows =
        |port: u16| env.restored_sql(port, "SELECT string_agg(id::text, ',' ORDER BY id) FROM t");
    let wait_for = |port: u16, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while rows(port).trim() != want {
            assert!(
                Instant::now() < deadline,
                "the standby did not reach {want}: {}",
                rows(port)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    let (dir, port, r) = env.restore_started("from-archive", &["--standby"]);
    assert!(
        r.stdout.contains("set up a standby on timeline latest"),
        "{}",
        r.stdout
    );
    assert!(dir.join("standby.signal").is_file());
    assert!(!dir.join("recovery.signal").exists());
    let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    for line in ["recovery_target_timeline = 'latest'", "hot_standby = on"] {
        assert!(auto.lines().any(|l| l == line), "{line}: {auto}");
    }
    assert_eq!(
        env.restored_sql(port, "SELECT pg_is_in_recovery()").trim(),
        "t"
    );
    // Consistent at the backup's end; the next segments come from the archive.
    wait_for(port, "1,2");
    env.insert(3);
    env.archive_now();
    wait_for(port, "1,2,3");
    env.stop_restored(&dir);

    let primary = format!(
        "host={} port={} user=postgres",
        env.cluster.socket_dir().display(),
        env.cluster.port()
    );
    env.sql("SELECT pg_create_physical_replication_slot('copy')");
    let (dir, port, _) = env.restore_started(
        "streaming",
        &[
            "--standby",
            "--primary-conninfo",
            &primary,
            "--primary-slot-name",
            "copy",
        ],
    );
    // Not archived: only streaming brings it.
    env.insert(4);
    wait_for(port, "1,2,3,4");
    assert_eq!(
        env.restored_sql(port, "SELECT status FROM pg_stat_wal_receiver")
            .trim(),
        "streaming"
    );
    assert_eq!(
        env.sql("SELECT active FROM pg_replication_slots WHERE slot_name = 'copy'"),
        "t"
    );
    env.stop_restored(&dir);

    let other = env.restore_dir("refused");
    let restore_other = |args: &[&str]| {
        let mut all = vec![
            "restore",
            "production",
            "--data-dir",
            other.to_str().unwrap(),
        ];
        all.extend(args);
        env.lb(&all)
    };
    restore_other(&["--standby", "--to-name", "x"]).fails(2, "cannot be used with");
    restore_other(&["--primary-conninfo", &primary]).fails(2, "--standby");
    let r = restore_other(&[
        "--standby",
        "--primary-conninfo",
        "host=primary password=hunter2 port",
    ])
    .fails(2, "--primary-conninfo: ");
    assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
    // A password there works, with a warning that does not repeat it.
    let with_password = format!("{primary} password=hunter2");
    let r = restore_other(&[
        "--standby",
        "--primary-conninfo",
        &with_password,
        "--dry-run",
    ])
    .ok();
    assert!(
        r.stderr
            .contains("warning: the password in --primary-conninfo is visible"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("hunter2") && !r.stderr.contains("hunter2"));
    assert!(!other.exists());
}
