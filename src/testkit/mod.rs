//! Test support: throw-away, real PostgreSQL clusters.
//!
//! Used by the integration tests and by the demo. Nothing here is mocked: a
//! [`TestCluster`] runs `initdb` and `pg_ctl` from a real PostgreSQL
//! installation (see [`pg_bindir`]) in a temporary directory, listening on
//! a Unix socket inside that directory and on `127.0.0.1:<free port>`.
//!
//! PostgreSQL refuses to run as root. When the current process is root (as
//! in CI), the server processes run as the unprivileged `postgres` OS user
//! and the temporary directory is handed over to that user; otherwise they
//! run as the current user. Clients (`psql`) always run as the current user.
//!
//! Set `LIFEBOAT_TEST_KEEP=1` to keep the temporary directory (data
//! directory and server log) of every cluster for debugging; the server is
//! still stopped.

pub mod proxy;
pub mod s3;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tempfile::TempDir;

/// Environment variable that overrides where the PostgreSQL binaries are.
pub const BINDIR_ENV: &str = "LIFEBOAT_TEST_PG_BINDIR";

/// Environment variable that, when set to a non-empty value other than `0`,
/// keeps each cluster's temporary directory after the cluster is dropped.
pub const KEEP_ENV: &str = "LIFEBOAT_TEST_KEEP";

/// The database superuser every test cluster is initialised with.
pub const SUPERUSER: &str = "postgres";

/// The unprivileged OS user the server runs as when we are root.
pub const POSTGRES_OS_USER: &str = "postgres";

/// How many ports `TestCluster::start_with` tries before giving up.
const START_ATTEMPTS: usize = 5;

/// Seconds `pg_ctl -w` waits for start/stop.
const PG_CTL_TIMEOUT_SECS: u32 = 60;

/// Lines of server log quoted in start errors.
const LOG_TAIL_LINES: usize = 30;

/// Ports handed out by this process, so two clusters started concurrently
/// never race for the same one.
static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

const INSTALL_HINT: &str = "Install the PostgreSQL server with `apt-get install postgresql` \
     (Debian/Ubuntu; or run scripts/install-prereqs.sh as root), or point \
     LIFEBOAT_TEST_PG_BINDIR at a directory containing initdb, pg_ctl, postgres and psql";

// ------------------------------------------------------------------ binaries

/// Directory holding the PostgreSQL server binaries (`initdb`, `pg_ctl`,
/// `postgres`, `psql`, `pg_dump`, ...).
///
/// Looks at, in order: `$LIFEBOAT_TEST_PG_BINDIR`, `pg_config --bindir`, the
/// highest version under `/usr/lib/postgresql/*/bin`. A candidate counts
/// only if it actually contains `initdb`, `pg_ctl` and `postgres` (Debian's
/// `pg_config` may describe a libpq version whose server is not installed).
/// Never silently skips: the error explains how to install PostgreSQL.
pub fn pg_bindir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if has_server_binaries(&dir) {
            return Ok(dir);
        }
        bail!(
            "{BINDIR_ENV}={} does not contain initdb, pg_ctl and postgres. {INSTALL_HINT}",
            dir.display()
        );
    }

    let mut tried = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server_binaries(&dir) {
            return Ok(dir);
        }
        tried.push(dir);
    }

    let mut versions: Vec<(Vec<u32>, PathBuf)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = parse_version(&name) else {
                continue;
            };
            let dir = entry.path().join("bin");
            if has_server_binaries(&dir) {
                versions.push((version, dir));
            } else {
                tried.push(dir);
            }
        }
    }
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }

    let tried = if tried.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = tried.iter().map(|d| d.display().to_string()).collect();
        format!(" (looked in: {})", list.join(", "))
    };
    bail!("PostgreSQL server binaries not found{tried}. {INSTALL_HINT}")
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|b| dir.join(b).is_file())
}

fn parse_version(s: &str) -> Option<Vec<u32>> {
    s.split('.').map(|p| p.parse().ok()).collect()
}

// ------------------------------------------------------------------ OS users

/// An OS account, as read from `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// A tmpfs of `size` (as `mount -o size=` takes it: "3m") mounted on an
/// existing directory, unmounted on drop (even if the test panics). Needs
/// root.
pub struct TmpfsMount(pub PathBuf);

impl TmpfsMount {
    pub fn new(dir: &Path, size: &str) -> TmpfsMount {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs on {}: {status}",
            dir.display()
        );
        TmpfsMount(dir.to_path_buf())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Whether this process runs with effective uid 0.
pub fn running_as_root() -> bool {
    effective_uid() == Some(0)
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Uid: real effective saved fs
    line.split_whitespace().nth(2)?.parse().ok()
}

fn lookup_passwd(pred: impl Fn(&OsUser) -> bool) -> Result<Option<OsUser>> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 7 {
            continue;
        }
        let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse()) else {
            continue;
        };
        let user = OsUser {
            name: fields[0].to_string(),
            uid,
            gid,
            home: PathBuf::from(fields[5]),
        };
        if pred(&user) {
            return Ok(Some(user));
        }
    }
    Ok(None)
}

/// The unprivileged `postgres` OS user (from `/etc/passwd`).
pub fn postgres_os_user() -> Result<OsUser> {
    lookup_passwd(|u| u.name == POSTGRES_OS_USER)?.ok_or_else(|| {
        anyhow!(
            "running as root, but there is no `{POSTGRES_OS_USER}` user in /etc/passwd; \
             PostgreSQL refuses to run as root. {INSTALL_HINT} (the package creates the user)"
        )
    })
}

/// The OS user the test servers run as: `postgres` when we are root, the
/// current user otherwise. `None` means "the current user, no switching".
fn server_os_user() -> Result<Option<OsUser>> {
    if running_as_root() {
        Ok(Some(postgres_os_user()?))
    } else {
        Ok(None)
    }
}

fn current_user_name() -> String {
    if let Some(uid) = effective_uid()
        && let Ok(Some(u)) = lookup_passwd(|u| u.uid == uid)
    {
        return u.name;
    }
    std::env::var("USER").unwrap_or_else(|_| "unknown".to_string())
}

/// Recursively hands `path` over to the `postgres` OS user when we are root
/// (no-op otherwise). Symlinks are re-owned, not followed.
pub fn chown_for_postgres(path: &Path) -> Result<()> {
    if let Some(user) = server_os_user()? {
        chown_recursive(path, user.uid, user.gid)?;
    }
    Ok(())
}

fn chown_recursive(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_recursive(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ temp dirs

/// Where to create temporary directories that the `postgres` user must be
/// able to reach and that hold a Unix socket (path length <= 107 bytes).
fn temp_base() -> PathBuf {
    let base = std::env::temp_dir();
    // "/lifeboat-pg-XXXXXX/sock/.s.PGSQL.65535" is ~40 bytes.
    let short_enough = base.as_os_str().len() + 48 <= 107;
    let reachable = !running_as_root() || traversable_by_others(&base);
    if short_enough && reachable {
        base
    } else {
        PathBuf::from("/tmp")
    }
}

fn traversable_by_others(dir: &Path) -> bool {
    dir.ancestors().all(|d| {
        std::fs::metadata(d)
            .map(|m| m.permissions().mode() & 0o001 != 0)
            .unwrap_or(false)
    })
}

fn make_temp_dir(prefix: &str) -> Result<TempDir> {
    let base = temp_base();
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// A temporary directory usable by both the current user and the cluster's
/// OS user: mode 0755, owned by `postgres` when we are root. Meant for
/// things a server-side process writes to, e.g. a repository that
/// `archive_command` pushes WAL into. Files created in it later by root are
/// owned by root; use [`chown_for_postgres`] if the server must write them.
pub fn temp_dir_for_postgres() -> Result<TempDir> {
    let dir = make_temp_dir("lifeboat-shared-")?;
    chown_for_postgres(dir.path())?;
    Ok(dir)
}

// ------------------------------------------------------------------ ports

fn reserve_free_port() -> Result<u16> {
    let mut guard = USED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let used = guard.get_or_insert_with(HashSet::new);
    for _ in 0..50 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if used.contains(&port) {
            continue;
        }
        // The ephemeral listener is closed; make sure the port can be bound
        // again right now.
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err() {
            continue;
        }
        used.insert(port);
        return Ok(port);
    }
    bail!("could not find a free TCP port on 127.0.0.1")
}

// ------------------------------------------------------------------ URIs

/// Percent-encodes everything except RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Quotes an SQL identifier (always, like `format('%I')` would when needed).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes an SQL string literal (standard_conforming_strings = on).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

// ------------------------------------------------------------------ options

/// How to initialise and configure a [`TestCluster`]. Construct with
/// `ClusterOptions { data_checksums: true, ..Default::default() }` so new
/// fields can be added later.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// `initdb --data-checksums`.
    pub data_checksums: bool,
    /// Lines appended verbatim to `postgresql.conf` (after the kit's own
    /// settings, so they win).
    pub extra_conf: Vec<String>,
    /// If set: `archive_mode = on` and this `archive_command` (`%p`, `%f`
    /// as usual). It runs as the cluster's OS user: write into a directory
    /// from [`temp_dir_for_postgres`].
    pub wal_archiving: Option<String>,
}

// ------------------------------------------------------------------ cluster

/// A running, throw-away PostgreSQL cluster. Stopped (`-m immediate`) and
/// deleted on drop.
#[derive(Debug)]
pub struct TestCluster {
    /// `None` only during `Drop` (taken to keep or delete it).
    temp: Option<TempDir>,
    root: PathBuf,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    bindir: PathBuf,
    /// `Some` when the server runs as a different OS user (we are root).
    run_as: Option<OsUser>,
    os_user_name: String,
    /// postgresql.conf as written by initdb; the kit's block is appended.
    base_conf: String,
    options: ClusterOptions,
    locale: String,
    running: AtomicBool,
}

impl TestCluster {
    /// Starts a cluster with default options.
    pub fn start() -> Result<TestCluster> {
        Self::start_with(ClusterOptions::default())
    }

    /// Initialises and starts a cluster. Tries up to 5 ports if the chosen
    /// one turns out to be taken.
    pub fn start_with(options: ClusterOptions) -> Result<TestCluster> {
        let bindir = pg_bindir()?;
        let run_as = server_os_user()?;
        let os_user_name = match &run_as {
            Some(u) => u.name.clone(),
            None => current_user_name(),
        };

        let temp = make_temp_dir("lifeboat-pg-")?;
        let root = temp.path().to_path_buf();
        let socket_dir = root.join("sock");
        std::fs::create_dir(&socket_dir)?;
        std::fs::set_permissions(&socket_dir, std::fs::Permissions::from_mode(0o755))?;
        if let Some(u) = &run_as {
            chown_recursive(&root, u.uid, u.gid)?;
        }

        let mut cluster = TestCluster {
            data_dir: root.join("data"),
            log_file: root.join("postgres.log"),
            socket_dir,
            root,
            temp: Some(temp),
            port: 0,
            bindir,
            run_as,
            os_user_name,
            base_conf: String::new(),
            options,
            locale: String::new(),
            running: AtomicBool::new(false),
        };
        cluster.initdb()?;
        cluster.base_conf = std::fs::read_to_string(cluster.conf_path())
            .context("reading postgresql.conf written by initdb")?;

        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            cluster.port = reserve_free_port()?;
            cluster.write_conf()?;
            let log_len_before = file_len(&cluster.log_file);
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    let new_log = read_from(&cluster.log_file, log_len_before);
                    let port_clash = new_log.contains("Address already in use")
                        || new_log.contains("could not create any TCP/IP sockets")
                        || new_log.contains("could not bind");
                    if !port_clash {
                        return Err(e);
                    }
                    last_err = Some(e);
                }
            }
        }
        Err(last_err
            .unwrap_or_else(|| anyhow!("no start attempted"))
            .context(format!(
                "PostgreSQL did not start after {START_ATTEMPTS} attempts with different ports"
            )))
    }

    // -------------------------------------------------------------- accessors

    /// TCP port on 127.0.0.1 (the Unix socket uses the same number).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The data directory (PGDATA).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Directory of the PostgreSQL binaries used.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The server log (`pg_ctl -l`).
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The temporary directory containing everything of this cluster.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// Name of the OS user the server processes run as.
    pub fn os_user(&self) -> &str {
        &self.os_user_name
    }

    /// `Some(user)` when the server runs as another OS user than this
    /// process (i.e. we are root and it runs as `postgres`).
    pub fn run_as(&self) -> Option<&OsUser> {
        self.run_as.as_ref()
    }

    /// The locale the cluster was initialised with (`C.UTF-8` or `C`).
    pub fn locale(&self) -> &str {
        &self.locale
    }

    /// The options the cluster was created with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// Path of a binary in [`Self::bindir`], e.g. `pg_dump`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// Connection URI for the superuser over the Unix socket (trust auth):
    /// `postgres://postgres@/DB?host=SOCKETDIR&port=PORT`.
    pub fn uri(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@/{}?host={}&port={}",
            percent_encode(db),
            percent_encode(&self.socket_dir.to_string_lossy()),
            self.port
        )
    }

    /// Connection URI over TCP to 127.0.0.1 (scram-sha-256 auth); see
    /// [`Self::create_login_role`].
    pub fn tcp_uri(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            percent_encode(user),
            percent_encode(password),
            self.port,
            percent_encode(db)
        )
    }

    /// Whether the kit believes the server is running (it was started and
    /// not stopped or killed through this handle).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    // -------------------------------------------------------------- clients

    /// Runs SQL through `psql -X -q -A -t -v ON_ERROR_STOP=1` against `db`
    /// (superuser, Unix socket) and returns its stdout. Runs as the current
    /// OS user.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        self.psql_uri(&self.uri(db), sql)
    }

    /// Like [`Self::psql`] with an explicit connection string.
    pub fn psql_uri(&self, conninfo: &str, sql: &str) -> Result<String> {
        let mut cmd = self.psql_command(conninfo);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("running {}", self.bin("psql").display()))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let sql_owned = sql.to_owned();
        // Feed stdin from a thread so large scripts cannot deadlock against
        // a full stdout pipe.
        let writer = std::thread::spawn(move || stdin.write_all(sql_owned.as_bytes()));
        let out = child.wait_with_output()?;
        let write_result = writer
            .join()
            .map_err(|_| anyhow!("stdin writer panicked"))?;
        check_psql(&out, conninfo)?;
        write_result.context("writing SQL to psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs an SQL file with `psql -f` against `db`; returns stdout.
    pub fn exec_file(&self, db: &str, path: &Path) -> Result<String> {
        let conninfo = self.uri(db);
        let out = self
            .psql_command(&conninfo)
            .arg("-f")
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.bin("psql").display()))?;
        check_psql(&out, &conninfo).with_context(|| format!("executing {}", path.display()))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn psql_command(&self, conninfo: &str) -> Command {
        let mut cmd = Command::new(self.bin("psql"));
        clear_pg_env(&mut cmd);
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .env("PGCLIENTENCODING", "UTF8")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(conninfo);
        cmd
    }

    /// `CREATE DATABASE name` (UTF8, cluster default locale).
    pub fn createdb(&self, name: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {};", quote_ident(name)),
        )
        .with_context(|| format!("creating database {name:?}"))?;
        Ok(())
    }

    /// Creates a role that can log in over TCP with a (scram) password.
    pub fn create_login_role(&self, user: &str, password: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!(
                "SET password_encryption = 'scram-sha-256';\n\
                 CREATE ROLE {} LOGIN PASSWORD {};",
                quote_ident(user),
                quote_literal(password)
            ),
        )
        .with_context(|| format!("creating role {user:?}"))?;
        Ok(())
    }

    // -------------------------------------------------------------- lifecycle

    /// Stops the server (`pg_ctl -m fast -w stop`).
    pub fn stop(&self) -> Result<()> {
        self.pg_ctl_stop("fast")?;
        self.running.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Stops the server if it is running, then starts it again (after
    /// [`Self::kill9`] this performs crash recovery). Same port.
    pub fn restart(&self) -> Result<()> {
        if self.is_running() {
            self.stop()?;
        }
        self.pg_ctl_start()
    }

    /// Simulates a crash: `kill -9` the postmaster (pid from
    /// `postmaster.pid`), then waits until it and its children are gone
    /// (children that outlive the postmaster by more than 10 s are killed
    /// too). The data directory is left as a crash would leave it.
    pub fn kill9(&self) -> Result<()> {
        let pid = self
            .postmaster_pid()?
            .ok_or_else(|| anyhow!("postmaster.pid not found: the server is not running"))?;
        let children = child_pids(pid);
        let out = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .output()
            .context("running kill")?;
        if !out.status.success() {
            bail!(
                "kill -9 {pid} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        self.running.store(false, Ordering::SeqCst);
        if !wait_until(Duration::from_secs(10), || !process_alive(pid)) {
            bail!("postmaster {pid} still alive 10 s after kill -9");
        }
        if !wait_until(Duration::from_secs(10), || {
            children.iter().all(|&c| !process_alive(c))
        }) {
            for &c in children.iter().filter(|&&c| process_alive(c)) {
                let _ = Command::new("kill").args(["-9", &c.to_string()]).output();
            }
            wait_until(Duration::from_secs(5), || {
                children.iter().all(|&c| !process_alive(c))
            });
        }
        Ok(())
    }

    /// The postmaster's pid from `postmaster.pid`, if the file exists.
    pub fn postmaster_pid(&self) -> Result<Option<u32>> {
        let path = self.data_dir.join("postmaster.pid");
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                let first = s.lines().next().unwrap_or("").trim();
                let pid = first
                    .parse()
                    .with_context(|| format!("bad first line in {}: {first:?}", path.display()))?;
                Ok(Some(pid))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Command for a server-side binary (initdb, pg_ctl, postgres,
    /// pg_controldata, ...) that runs as the cluster's OS user, with a clean
    /// PG* environment and the cluster's directory as working directory.
    pub fn server_command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin(name));
        clear_pg_env(&mut cmd);
        cmd.current_dir(&self.root);
        if let Some(u) = &self.run_as {
            cmd.uid(u.uid)
                .gid(u.gid)
                .env("HOME", &u.home)
                .env("USER", &u.name)
                .env("LOGNAME", &u.name);
        }
        cmd
    }

    // -------------------------------------------------------------- internals

    fn conf_path(&self) -> PathBuf {
        self.data_dir.join("postgresql.conf")
    }

    fn initdb(&mut self) -> Result<()> {
        let mut last = None;
        for locale in ["C.UTF-8", "C"] {
            // initdb removes the data directory itself when it fails.
            let mut cmd = self.server_command("initdb");
            cmd.arg("-D")
                .arg(&self.data_dir)
                .args([
                    "-U",
                    SUPERUSER,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ])
                .arg(format!("--locale={locale}"));
            if self.options.data_checksums {
                cmd.arg("--data-checksums");
            }
            let out = run(&mut cmd, "initdb")?;
            if out.status.success() {
                self.locale = locale.to_string();
                return Ok(());
            }
            let err = command_error("initdb", &out);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !stderr.to_lowercase().contains("locale") {
                return Err(err);
            }
            last = Some(err);
        }
        Err(last.expect("at least one initdb attempt"))
    }

    fn write_conf(&self) -> Result<()> {
        let mut conf = self.base_conf.clone();
        let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
        conf.push_str("\n# ---- lifeboat testkit ----\n");
        let _ = writeln!(conf, "listen_addresses = '127.0.0.1'");
        let _ = writeln!(conf, "port = {}", self.port);
        let _ = writeln!(
            conf,
            "unix_socket_directories = {}",
            quote(&self.socket_dir.to_string_lossy())
        );
        conf.push_str(
            "fsync = off\n\
             max_connections = 50\n\
             shared_buffers = 32MB\n\
             logging_collector = off\n\
             lc_messages = 'C'\n",
        );
        if let Some(cmd) = &self.options.wal_archiving {
            conf.push_str("archive_mode = on\n");
            let _ = writeln!(conf, "archive_command = {}", quote(cmd));
        }
        if !self.options.extra_conf.is_empty() {
            conf.push_str("# ---- extra_conf ----\n");
            for line in &self.options.extra_conf {
                conf.push_str(line);
                conf.push('\n');
            }
        }
        // Overwriting the existing file keeps its owner (postgres).
        std::fs::write(self.conf_path(), conf).context("writing postgresql.conf")
    }

    /// Starts the stopped server from a configuration directory of its own
    /// (`pg_ctl -D DIR` where DIR's postgresql.conf sets `data_directory`, as
    /// on Debian): the caller moved the configuration there.
    pub fn start_from_config_dir(&self, dir: &Path) -> Result<()> {
        self.pg_ctl_start_in(dir)
    }

    fn pg_ctl_start(&self) -> Result<()> {
        self.pg_ctl_start_in(&self.data_dir)
    }

    fn pg_ctl_start_in(&self, dir: &Path) -> Result<()> {
        self.remove_stale_pid_file()?;
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(dir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", &PG_CTL_TIMEOUT_SECS.to_string(), "start"])
            .stdin(Stdio::null());
        let out = run(&mut cmd, "pg_ctl start")?;
        if !out.status.success() {
            return Err(command_error("pg_ctl start", &out).context(format!(
                "PostgreSQL failed to start (port {}); last lines of {}:\n{}",
                self.port,
                self.log_file.display(),
                tail_lines(&self.log_file, LOG_TAIL_LINES)
            )));
        }
        self.running.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<()> {
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args([
                "-m",
                mode,
                "-w",
                "-t",
                &PG_CTL_TIMEOUT_SECS.to_string(),
                "stop",
            ])
            .stdin(Stdio::null());
        let out = run(&mut cmd, "pg_ctl stop")?;
        if !out.status.success() {
            return Err(command_error("pg_ctl stop", &out));
        }
        Ok(())
    }

    /// After `kill9` the postmaster may linger as a zombie when nothing
    /// reaps orphans (PID 1 in some containers does not); PostgreSQL would
    /// then believe its lock files (`postmaster.pid` and the socket's
    /// `.lock`) are still valid. A lock naming a dead or zombie pid is stale.
    fn remove_stale_pid_file(&self) -> Result<()> {
        let socket_lock = self.socket_dir.join(format!(".s.PGSQL.{}.lock", self.port));
        for path in [self.data_dir.join("postmaster.pid"), socket_lock] {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Some(pid) = text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<u32>().ok())
            else {
                continue;
            };
            if process_alive(pid) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            }
        }
        Ok(())
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.pg_ctl_stop("immediate");
            self.running.store(false, Ordering::SeqCst);
        }
        let keep = std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty() && v != "0");
        if let Some(temp) = self.temp.take() {
            if keep {
                let path = temp.keep();
                eprintln!("{KEEP_ENV}: keeping test cluster in {}", path.display());
            } else {
                drop(temp);
            }
        }
    }
}

// ------------------------------------------------------------------ helpers

/// Removes every `PG*` variable (PGHOST, PGPORT, PGUSER, PGDATABASE,
/// PGPASSWORD, PGSERVICE, PGOPTIONS, PGDATA, ...) so the caller's
/// environment cannot redirect or reconfigure the kit's commands.
fn clear_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&key);
        }
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("running {what} ({:?})", cmd.get_program()))
}

fn command_error(what: &str, out: &Output) -> anyhow::Error {
    anyhow!(
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

fn check_psql(out: &Output, conninfo: &str) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "psql -d {conninfo} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn read_from(path: &Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The last `n` lines of a text file (empty string if unreadable).
pub fn tail_lines(path: &Path, n: usize) -> String {
    let text = read_from(path, 0);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// True if `pid` exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => proc_stat_fields(&stat).is_some_and(|(state, _)| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// (state, ppid) from a /proc/PID/stat line; the command name may contain
/// spaces and parentheses, so parse after the last ')'.
fn proc_stat_fields(stat: &str) -> Option<(&str, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut it = rest.split_whitespace();
    let state = it.next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

fn child_pids(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
            && proc_stat_fields(&stat).is_some_and(|(_, ppid)| ppid == parent)
        {
            pids.push(pid);
        }
    }
    pids
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------------------------------------ fixtures

/// SQL of the demo database `hyper_db` (users, tasks, _migrations). Load
/// into an empty database.
pub fn sample_hyper_db_sql() -> &'static str {
    include_str!("../../tests/fixtures/hyper_db.sql")
}

/// SQL of the hard round-trip schema (many schemas, odd types, partitions,
/// large objects, grants to role `roundtrip_reader`, ...). Load into an
/// empty database; may be loaded into several databases of one cluster.
pub fn roundtrip_schema_sql() -> &'static str {
    include_str!("../../tests/fixtures/roundtrip.sql")
}

// ------------------------------------------------------------------ fingerprint

/// Predicate on a namespace alias `n` selecting user schemas.
const USER_NS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
                       AND n.nspname !~ '^pg_(toast_)?temp_'";

/// Sorted, comma-joined ACL items, or 'default' for NULL.
fn acl_sql(expr: &str) -> String {
    format!(
        "coalesce((SELECT string_agg(a::text, ',' ORDER BY a::text COLLATE \"C\") \
         FROM unnest({expr}) a), 'default')"
    )
}

fn fingerprint_sql() -> String {
    let ns = USER_NS;
    let mut sql = String::from(
        "SET search_path = pg_catalog;\n\
         SET TimeZone = 'UTC';\n\
         SET DateStyle = 'ISO, YMD';\n\
         SET IntervalStyle = 'postgres';\n\
         SET extra_float_digits = 1;\n\
         SET bytea_output = 'hex';\n\
         SET lc_monetary = 'C';\n\
         SET client_encoding = 'UTF8';\n",
    );
    fn section(sql: &mut String, title: &str, query: String) {
        let _ = writeln!(sql, "SELECT '## {title}';");
        sql.push_str(&query);
        sql.push_str(";\n");
    }

    section(
        &mut sql,
        "schemas",
        format!(
            "SELECT format('schema %I', n.nspname) FROM pg_namespace n WHERE {ns} \
             ORDER BY n.nspname COLLATE \"C\""
        ),
    );

    section(
        &mut sql,
        "extensions",
        "SELECT format('extension %I %s schema %I', e.extname, e.extversion, n.nspname) \
         FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
         ORDER BY e.extname COLLATE \"C\""
            .to_string(),
    );

    section(
        &mut sql,
        "types",
        format!(
            r#"SELECT line FROM (
  SELECT format('enum %I.%I (%s)', n.nspname, t.typname,
           (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
              FROM pg_enum e WHERE e.enumtypid = t.oid)) AS line
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
   WHERE t.typtype = 'e' AND {ns}
  UNION ALL
  SELECT format('domain %I.%I %s%s%s%s', n.nspname, t.typname,
           format_type(t.typbasetype, t.typtypmod),
           CASE WHEN t.typnotnull THEN ' not null' ELSE '' END,
           coalesce(' default ' || t.typdefault, ''),
           coalesce((SELECT string_agg(format(' constraint %I %s', c.conname, pg_get_constraintdef(c.oid, true)),
                                       '' ORDER BY c.conname COLLATE "C")
                       FROM pg_constraint c WHERE c.contypid = t.oid), ''))
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
   WHERE t.typtype = 'd' AND {ns}
  UNION ALL
  SELECT format('composite %I.%I (%s)', n.nspname, t.typname,
           (SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)
              FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped))
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
    JOIN pg_class c ON c.oid = t.typrelid
   WHERE t.typtype = 'c' AND c.relkind = 'c' AND {ns}
  UNION ALL
  SELECT format('range %I.%I subtype %s', n.nspname, t.typname, format_type(r.rngsubtype, NULL))
    FROM pg_range r JOIN pg_type t ON t.oid = r.rngtypid
    JOIN pg_namespace n ON n.oid = t.typnamespace
   WHERE {ns}
) s ORDER BY line COLLATE "C""#
        ),
    );

    section(
        &mut sql,
        "relations",
        format!(
            r#"SELECT format('%s %I.%I%s%s%s',
         CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table'
                        WHEN 'm' THEN 'materialized view' END,
         n.nspname, c.relname,
         CASE WHEN c.relkind = 'p' THEN ' partition by ' || pg_get_partkeydef(c.oid) ELSE '' END,
         CASE WHEN c.relispartition THEN
           ' partition of ' || (SELECT format('%I.%I', pn.nspname, pc.relname)
                                  FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent
                                  JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                                 WHERE i.inhrelid = c.oid)
           || ' ' || pg_get_expr(c.relpartbound, c.oid)
         ELSE '' END,
         CASE WHEN c.relkind = 'm' AND NOT c.relispopulated THEN ' (not populated)' ELSE '' END)
       || E'\n' || coalesce((
         SELECT string_agg(format('  column %I %s%s%s%s%s%s', a.attname,
                  format_type(a.atttypid, a.atttypmod),
                  CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
                  CASE a.attidentity WHEN 'a' THEN ' generated always as identity'
                                     WHEN 'd' THEN ' generated by default as identity' ELSE '' END,
                  CASE WHEN a.attgenerated = 's' THEN ' generated always as (' || pg_get_expr(d.adbin, d.adrelid) || ') stored'
                       WHEN d.adbin IS NOT NULL THEN ' default ' || pg_get_expr(d.adbin, d.adrelid)
                       ELSE '' END,
                  CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN
                    ' collate ' || (SELECT format('%I.%I', cn.nspname, co.collname)
                                      FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                                     WHERE co.oid = a.attcollation)
                  ELSE '' END,
                  CASE WHEN a.attacl IS NOT NULL THEN ' acl ' || {col_acl} ELSE '' END),
                E'\n' ORDER BY a.attnum)
           FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
           LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '  (no columns)')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm') AND {ns}
 ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C""#,
            col_acl = acl_sql("a.attacl")
        ),
    );

    // last_value/is_called come from the sequence relation itself
    // (pg_sequence_last_value hides the value when !is_called), so one
    // generated query per sequence, run by psql's \gexec in order.
    let _ = writeln!(sql, "SELECT '## sequences';");
    let _ = writeln!(
        sql,
        r#"SELECT format($fp$SELECT %L || last_value || ' is_called ' || is_called FROM %I.%I$fp$,
         format('sequence %I.%I %s start %s increment %s min %s max %s cache %s%s%s last_value ',
           n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
           s.seqmin, s.seqmax, s.seqcache, CASE WHEN s.seqcycle THEN ' cycle' ELSE '' END,
           coalesce((SELECT format(' owned by %I.%I.%I', tn.nspname, tc.relname, ta.attname)
                       FROM pg_depend dep JOIN pg_class tc ON tc.oid = dep.refobjid
                       JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                       JOIN pg_attribute ta ON ta.attrelid = tc.oid AND ta.attnum = dep.refobjsubid
                      WHERE dep.classid = 'pg_class'::regclass AND dep.objid = c.oid
                        AND dep.refclassid = 'pg_class'::regclass AND dep.refobjsubid > 0
                        AND dep.deptype IN ('a', 'i')), '')),
         n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_sequence s ON s.seqrelid = c.oid
 WHERE c.relkind = 'S' AND {ns}
 ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"
\gexec"#
    );

    section(
        &mut sql,
        "views",
        format!(
            r#"SELECT format('%s %I.%I as %s',
         CASE c.relkind WHEN 'v' THEN 'view' ELSE 'materialized view' END,
         n.nspname, c.relname, pg_get_viewdef(c.oid, true))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('v', 'm') AND {ns}
 ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C""#
        ),
    );

    section(
        &mut sql,
        "triggers",
        format!(
            r#"SELECT pg_get_triggerdef(tg.oid, true)
         || CASE tg.tgenabled WHEN 'O' THEN '' ELSE ' (enabled=' || tg.tgenabled::text || ')' END
  FROM pg_trigger tg JOIN pg_class c ON c.oid = tg.tgrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT tg.tgisinternal AND {ns}
 ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C", tg.tgname COLLATE "C""#
        ),
    );

    section(
        &mut sql,
        "indexes",
        format!(
            r#"SELECT pg_get_indexdef(i.indexrelid)
         || CASE WHEN i.indisvalid THEN '' ELSE ' (invalid)' END
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
  JOIN pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE {ns}
 ORDER BY n.nspname COLLATE "C", ic.relname COLLATE "C""#
        ),
    );

    section(
        &mut sql,
        "constraints",
        format!(
            r#"SELECT format('constraint %I on %I.%I: %s', co.conname, n.nspname, c.relname,
         pg_get_constraintdef(co.oid, true))
  FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE {ns}
 ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C", co.conname COLLATE "C""#
        ),
    );

    // Every comment on a non-built-in object (tables, columns, schemas,
    // functions, types, large objects, ...).
    section(
        &mut sql,
        "comments",
        "SELECT line FROM (SELECT format('comment on %s is %L', \
                pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description) AS line \
           FROM pg_description d WHERE d.objoid >= 16384) s \
          ORDER BY line COLLATE \"C\""
            .to_string(),
    );

    section(
        &mut sql,
        "grants",
        format!(
            r#"SELECT line FROM (
  SELECT format('schema %I: %s', n.nspname, {nsp_acl}) AS line
    FROM pg_namespace n WHERE {ns}
  UNION ALL
  SELECT format('%s %I.%I: %s',
           CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
                          WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
                          WHEN 'f' THEN 'foreign table' END,
           n.nspname, c.relname, {rel_acl})
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.relacl IS NOT NULL AND {ns}
  UNION ALL
  SELECT format('function %I.%I(%s): %s', n.nspname, p.proname,
           pg_get_function_identity_arguments(p.oid), {pro_acl})
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE p.proacl IS NOT NULL AND {ns}
  UNION ALL
  SELECT format('type %I.%I: %s', n.nspname, t.typname, {typ_acl})
    FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
   WHERE t.typacl IS NOT NULL AND {ns}
) s ORDER BY line COLLATE "C""#,
            nsp_acl = acl_sql("n.nspacl"),
            rel_acl = acl_sql("c.relacl"),
            pro_acl = acl_sql("p.proacl"),
            typ_acl = acl_sql("t.typacl"),
        ),
    );

    section(
        &mut sql,
        "functions",
        format!(
            r#"SELECT CASE WHEN p.prokind = 'a'
            THEN format('aggregate %I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
            ELSE pg_get_functiondef(p.oid) END
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE {ns}
 ORDER BY n.nspname COLLATE "C", p.proname COLLATE "C",
          pg_get_function_identity_arguments(p.oid) COLLATE "C""#
        ),
    );

    section(
        &mut sql,
        "large objects",
        format!(
            "SELECT format('large object %s size %s md5 %s acl %s', m.oid, \
                    length(lo_get(m.oid)), md5(lo_get(m.oid)), {lo_acl}) \
               FROM pg_largeobject_metadata m ORDER BY m.oid",
            lo_acl = acl_sql("m.lomacl")
        ),
    );

    // One generated query per table, executed by psql's \gexec in order.
    let _ = writeln!(sql, "SELECT '## data';");
    let _ = writeln!(
        sql,
        r#"SELECT format($fp$SELECT %L || coalesce(md5(string_agg(r, E'\n' ORDER BY r COLLATE "C")), '-') || ' rows ' || count(*) FROM (SELECT ROW(t.*)::text AS r FROM %I.%I t) q$fp$,
              format('data %I.%I md5 ', n.nspname, c.relname), n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm') AND (c.relkind <> 'm' OR c.relispopulated) AND {ns}
 ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"
\gexec"#
    );
    sql
}

/// A deterministic text description of database `db`: schemas, types,
/// tables and their columns, sequences (with last values), views,
/// triggers, indexes, constraints, comments, grants, functions, large
/// objects (md5 of contents), and for every table, partition and populated
/// materialized view the md5 and count of all its rows (each row as text,
/// sorted in "C" collation). Two databases with equal contents give equal
/// strings; compare an original with its restored copy.
///
/// Object names appear but OIDs (except large-object OIDs, which are
/// user-visible) do not. Session settings that affect text output
/// (TimeZone, DateStyle, ...) are pinned.
pub fn database_fingerprint(cluster: &TestCluster, db: &str) -> Result<String> {
    cluster
        .psql(db, &fingerprint_sql())
        .with_context(|| format!("fingerprinting database {db:?}"))
}
