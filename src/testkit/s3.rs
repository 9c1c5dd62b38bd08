//! Test support: real S3 servers on 127.0.0.1, started and stopped by tests.
//!
//! Two servers, because neither does everything: **moto** (`moto[server]`, a
//! Python package) knows storage classes, RestoreObject and
//! ListMultipartUploads but accepts any signature; **s3s-fs** (a Rust binary
//! over a plain directory) verifies SigV4 signatures but refuses archive
//! classes and has no RestoreObject. Each [`S3Server`] runs on a free port with
//! its own random access key, secret and a fresh, empty bucket, and is killed
//! with its temporary directory on drop.
//!
//! Nothing is skipped: a missing server is an error that says how to install
//! it (`scripts/install-prereqs.sh`). Requests for setting up and inspecting
//! test state go through [`S3Server::request`], signed with lifeboat's own
//! SigV4 signer; put a [`super::proxy::FaultProxy`] in between with
//! [`S3Request::via`].

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rand::Rng;
use rand::distributions::Alphanumeric;
use tempfile::TempDir;

use crate::storage::s3::sigv4::{self, Credentials};

/// The region every test server is signed for (moto creates buckets without a
/// location constraint only there).
pub const REGION: &str = "us-east-1";

/// The moto version `scripts/install-prereqs.sh` installs.
pub const MOTO_VERSION: &str = "5.2.5";

/// The s3s-fs version `scripts/install-prereqs.sh` installs (0.15 and later
/// need a newer rustc).
pub const S3S_FS_VERSION: &str = "0.14.1";

const INSTALL_HINT: &str = "hint: run scripts/install-prereqs.sh";

/// Starts moto's server without its per-request log lines and banner.
const MOTO_MAIN: &str = "import logging,sys; logging.getLogger('werkzeug').setLevel(logging.ERROR); \
     from moto.server import main; main(sys.argv[1:])";

/// How long a server may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a server has to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Ports tried before giving up, when another process took the chosen one.
const START_ATTEMPTS: usize = 3;

/// Budget of one request made by the kit (bucket creation, test requests).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest response body [`S3Request::send`] reads.
const MAX_BODY: u64 = 1 << 30;

/// Which server an [`S3Server`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Kind {
    /// moto: storage classes, RestoreObject; does not check signatures.
    Moto,
    /// s3s-fs: checks SigV4; no archive classes, no RestoreObject.
    S3sFs,
}

/// A running S3 server with one empty bucket. Killed (SIGTERM, then SIGKILL
/// after 2 s) and its files removed on drop; if it died while the test ran,
/// the drop fails the test with the server's output.
pub struct S3Server {
    kind: S3Kind,
    child: Child,
    port: u16,
    bucket: String,
    access_key: String,
    secret_key: String,
    /// The server's stdout and stderr.
    log: PathBuf,
    agent: ureq::Agent,
    /// Whether a drop that finds the server dead fails the test: from a
    /// successful start until the death has been reported otherwise.
    watch: bool,
    /// Holds the log and, for s3s-fs, the object root. Dropped after the
    /// server is stopped.
    _dir: TempDir,
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server")
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint())
            .field("bucket", &self.bucket)
            .field("access_key", &self.access_key)
            .field("secret_key", &"********")
            .finish()
    }
}

impl S3Server {
    /// Starts moto's server (`python3` with `moto[server]`). Its 5 MiB
    /// minimum part size is kept (`S3_UPLOAD_PART_MIN_SIZE` is removed from
    /// its environment).
    pub fn moto() -> Result<S3Server> {
        Self::start(S3Kind::Moto)
    }

    /// Starts the `s3s-fs` binary (from PATH, `$CARGO_HOME/bin` or
    /// `~/.cargo/bin`) over a fresh temporary directory.
    pub fn s3s_fs() -> Result<S3Server> {
        Self::start(S3Kind::S3sFs)
    }

    /// Starts a server of `kind`.
    pub fn start(kind: S3Kind) -> Result<S3Server> {
        let program = match kind {
            S3Kind::Moto => PathBuf::from("python3"),
            S3Kind::S3sFs => find_s3s_fs()?,
        };
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(kind, &program) {
                Ok(server) => return Ok(server),
                // Another process took the port between our check and the
                // server's bind: try another one.
                Err(StartError::PortTaken(e)) => last_error = Some(e),
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("could not start {kind:?}")))
    }

    fn start_once(kind: S3Kind, program: &Path) -> Result<S3Server, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-s3-")
            .tempdir()
            .context("creating a temporary directory for an S3 server")?;
        let port = super::reserve_free_port()?;
        let access_key = format!("AK{}", random_text(18).to_ascii_uppercase());
        let secret_key = random_text(40);
        let log = dir.path().join("server.log");
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating a file handle")?;

        let mut cmd = Command::new(program);
        match kind {
            S3Kind::Moto => {
                cmd.arg("-c")
                    .arg(MOTO_MAIN)
                    .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .env_remove("S3_UPLOAD_PART_MIN_SIZE")
                    .env_remove("INITIAL_NO_AUTH_ACTION_COUNT");
            }
            S3Kind::S3sFs => {
                let root = dir.path().join("root");
                std::fs::create_dir(&root)
                    .with_context(|| format!("creating {}", root.display()))?;
                cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", &access_key, "--secret-key", &secret_key])
                    .arg(&root)
                    .env("RUST_LOG", "error");
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let child = cmd.spawn().map_err(|e| {
            anyhow!(
                "could not run {} for the {kind:?} S3 server: {e}; {INSTALL_HINT}",
                program.display()
            )
        })?;

        let mut server = S3Server {
            kind,
            child,
            port,
            bucket: format!("lifeboat-{}", random_text(12).to_ascii_lowercase()),
            access_key,
            secret_key,
            log,
            agent: agent(REQUEST_TIMEOUT),
            watch: false,
            _dir: dir,
        };
        server.wait_ready()?;
        server.create_bucket()?;
        server.watch = true;
        Ok(server)
    }

    /// Polls until the server answers; fails early if it exits.
    fn wait_ready(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let probe = agent(Duration::from_secs(2));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for an S3 server")? {
                let log = self.log_tail();
                let e = anyhow!(
                    "the {:?} S3 server on port {} exited at start ({status}); {INSTALL_HINT}\n{log}",
                    self.kind,
                    self.port
                );
                return Err(if log.contains("in use") {
                    StartError::PortTaken(e)
                } else {
                    StartError::Other(e)
                });
            }
            let ready = match self.kind {
                // The TCP port opens before moto's app is loaded.
                S3Kind::Moto => probe
                    .get(format!("{}/moto-api/", self.endpoint()))
                    .call()
                    .is_ok_and(|r| r.status().is_success()),
                S3Kind::S3sFs => {
                    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
                }
            };
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StartError::Other(anyhow!(
                    "the {:?} S3 server on port {} did not answer within {} s\n{}",
                    self.kind,
                    self.port,
                    START_TIMEOUT.as_secs(),
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn create_bucket(&self) -> Result<()> {
        let resp = self.request("PUT", "").send()?;
        if resp.status != 200 {
            bail!(
                "creating bucket {} on the {:?} S3 server: {} {}\n{}",
                self.bucket,
                self.kind,
                resp.status,
                resp.text(),
                self.log_tail()
            );
        }
        Ok(())
    }

    // -------------------------------------------------------------- accessors

    /// Which server this is.
    pub fn kind(&self) -> S3Kind {
        self.kind
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's address, for [`super::proxy::FaultProxy::start`].
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The bucket created for this server (empty at start).
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The credentials that sign requests to this server.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            access_key_id: self.access_key.clone(),
            secret_access_key: self.secret_key.clone(),
            session_token: None,
        }
    }

    /// `s3://BUCKET/PREFIX` (`s3://BUCKET` for an empty prefix).
    pub fn url(&self, prefix: &str) -> String {
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{prefix}", self.bucket)
        }
    }

    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_REGION` for a
    /// lifeboat child process.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_REGION".into(), REGION.into()),
        ]
    }

    /// Writes `DIR/aws-credentials`, an AWS shared-credentials file with this
    /// server's key in its `[default]` profile, mode 0644 so the `postgres`
    /// OS user (archive_command) can read it; point `AWS_SHARED_CREDENTIALS_FILE`
    /// at it. `dir` must be reachable by that user too (see
    /// [`super::temp_dir_for_postgres`]). Panics if the file cannot be written.
    pub fn write_credentials_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("aws-credentials");
        let text = format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            self.access_key, self.secret_key
        );
        std::fs::write(&path, text)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// The body of a lifeboat `[repository.NAME]` table for this server: url,
    /// endpoint (`via`, e.g. a [`super::proxy::FaultProxy`]'s, instead of the
    /// server's own when given), region, path-style addressing and a 5 s
    /// timeout. One `key = value` per line, ending in a newline.
    pub fn toml(&self, prefix: &str, via: Option<&str>) -> String {
        let endpoint = via.map_or_else(|| self.endpoint(), str::to_string);
        format!(
            "url = \"{}\"\nendpoint = \"{endpoint}\"\nregion = \"{REGION}\"\npath_style = true\ntimeout = \"5s\"\n",
            self.url(prefix)
        )
    }

    /// `toml` plus `credentials_file`, pointing at a credentials file written
    /// into `dir` (readable by the cluster's OS user, who runs archive_command).
    pub fn repository_toml(&self, dir: &Path, prefix: &str, via: Option<&str>) -> String {
        let creds = self.write_credentials_file(dir);
        format!(
            "{}credentials_file = \"{}\"\n",
            self.toml(prefix, via),
            creds.display()
        )
    }

    /// The last lines of the server's output.
    pub fn log_tail(&self) -> String {
        super::tail_lines(&self.log, super::LOG_TAIL_LINES)
    }

    /// An error if the server is no longer running, with its output.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.watch = false;
                Err(self.died(status))
            }
            Err(e) => Err(anyhow!("waiting for the {:?} S3 server: {e}", self.kind)),
        }
    }

    fn died(&self, status: ExitStatus) -> anyhow::Error {
        anyhow!(
            "the {:?} S3 server on port {} died during the test ({status})\n{}",
            self.kind,
            self.port,
            self.log_tail()
        )
    }

    // -------------------------------------------------------------- requests

    /// A request for `key` in this server's bucket (`""`: the bucket itself),
    /// signed with the server's credentials when sent. `key` is not encoded;
    /// the request path is encoded once, as S3 wants it.
    pub fn request(&self, method: &str, key: &str) -> S3Request<'_> {
        S3Request {
            server: self,
            method: method.to_string(),
            key: key.to_string(),
            query: Vec::new(),
            headers: Vec::new(),
            body: Vec::new(),
            via: None,
            secret_key: None,
        }
    }

    /// Stores `body` at `key`; fails unless the server answers 200.
    pub fn put_object(&self, key: &str, body: &[u8]) -> Result<()> {
        let resp = self.request("PUT", key).body(body).send()?;
        if resp.status != 200 {
            bail!("PUT {key}: {} {}", resp.status, resp.text());
        }
        Ok(())
    }

    /// The object at `key`, `None` if there is none (404).
    pub fn get_object(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let resp = self.request("GET", key).send()?;
        match resp.status {
            200 => Ok(Some(resp.body)),
            404 => Ok(None),
            s => bail!("GET {key}: {s} {}", resp.text()),
        }
    }

    // -------------------------------------------------------------- moto only

    /// moto: RestoreObject requests take `secs` seconds. moto's clock for a
    /// key starts when the object is created, not at the restore request,
    /// and shows a restore as done before `secs` have passed: a restore is
    /// "ongoing" from `secs` to `2 * secs` after the PUT.
    pub fn set_restore_delay(&self, secs: u64) -> Result<()> {
        let body = serde_json::json!({
            "model_name": "s3::keyrestore",
            "transition": {"progression": "time", "seconds": secs},
        });
        self.moto_api("state-manager/set-transition", &body.to_string())
    }

    /// moto: RestoreObject completes at once again (moto's default).
    pub fn unset_restore_delay(&self) -> Result<()> {
        let body = serde_json::json!({"model_name": "s3::keyrestore"});
        self.moto_api("state-manager/unset-transition", &body.to_string())
    }

    /// moto: forgets everything it holds and creates the bucket again, empty.
    /// A restore delay set earlier stays.
    pub fn reset(&self) -> Result<()> {
        self.moto_api("reset", "")?;
        self.create_bucket()
    }

    fn moto_api(&self, what: &str, body: &str) -> Result<()> {
        if self.kind != S3Kind::Moto {
            bail!(
                "/moto-api/{what} exists only on moto, not on {:?}",
                self.kind
            );
        }
        let url = format!("{}/moto-api/{what}", self.endpoint());
        let mut resp = self
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .send(body)
            .with_context(|| format!("POST {url}"))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            bail!("POST {url}: {status} {text}");
        }
        Ok(())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let died = match self.child.try_wait() {
            Ok(Some(status)) => Some(status),
            Ok(None) => {
                stop(&mut self.child);
                None
            }
            Err(_) => None,
        };
        if let Some(status) = died
            && self.watch
            && !std::thread::panicking()
        {
            panic!("{:#}", self.died(status));
        }
    }
}

/// SIGTERM, then SIGKILL if the process is still there after `STOP_GRACE`.
fn stop(child: &mut Child) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

enum StartError {
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Other(e)
    }
}

/// An HTTP client for the kit: statuses are answers, not errors; no proxy
/// from the environment (the servers are on 127.0.0.1); no redirects.
fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

fn random_text(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// The s3s-fs binary: on PATH, in `$CARGO_HOME/bin` or in `~/.cargo/bin`.
pub fn find_s3s_fs() -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.iter()
        .map(|d| d.join("s3s-fs"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "s3s-fs (the S3 server the tests use to check signatures) not found on PATH, in \
                 $CARGO_HOME/bin or ~/.cargo/bin; {INSTALL_HINT} (cargo install s3s-fs --version \
                 {S3S_FS_VERSION} --features binary --locked)"
            )
        })
}

// ------------------------------------------------------------------ requests

/// A signed request to an [`S3Server`], built with [`S3Server::request`].
pub struct S3Request<'a> {
    server: &'a S3Server,
    method: String,
    key: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    via: Option<String>,
    secret_key: Option<String>,
}

impl S3Request<'_> {
    /// Adds a query parameter (not encoded; `("uploads", "")` for `?uploads`).
    pub fn query(mut self, name: &str, value: &str) -> Self {
        self.query.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds a header; it is signed too.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }

    /// Sends to `endpoint` (`http://HOST:PORT`, e.g. a fault proxy's) instead
    /// of the server itself; signed for that host, as a client of it would.
    pub fn via(mut self, endpoint: &str) -> Self {
        self.via = Some(endpoint.trim_end_matches('/').to_string());
        self
    }

    /// Signs with this secret instead of the server's (a forged request).
    pub fn secret(mut self, secret_key: &str) -> Self {
        self.secret_key = Some(secret_key.to_string());
        self
    }

    /// Sends the request; any HTTP status is an `Ok` answer.
    pub fn send(self) -> Result<S3Response> {
        let server = self.server;
        let endpoint = self.via.clone().unwrap_or_else(|| server.endpoint());
        let host = endpoint
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("endpoint {endpoint:?} must start with http://"))?
            .to_string();
        let path = if self.key.is_empty() {
            format!("/{}", server.bucket)
        } else {
            format!("/{}/{}", server.bucket, self.key)
        };
        let mut creds = server.credentials();
        if let Some(secret) = &self.secret_key {
            creds.secret_access_key.clone_from(secret);
        }
        let payload = sigv4::payload_sha256(&self.body);
        let signed = sigv4::sign(
            &sigv4::Request {
                method: &self.method,
                host: &host,
                path: &path,
                query: &self.query,
                headers: &self.headers,
                payload_sha256: &payload,
            },
            &creds,
            REGION,
            chrono::Utc::now(),
        );
        let query = sigv4::canonical_query(&self.query);
        let mut url = format!("{endpoint}{}", sigv4::encode_path(&path));
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        let mut builder = ureq::http::Request::builder()
            .method(self.method.as_str())
            .uri(&url)
            .header("host", &host);
        for (name, value) in self.headers.iter().chain(&signed) {
            builder = builder.header(name, value);
        }
        let what = format!("{} {url}", self.method);
        // GET, HEAD and DELETE go without a body (and Content-Length);
        // PUT and POST always send one, if empty.
        let sends_body = !self.body.is_empty() || matches!(self.method.as_str(), "PUT" | "POST");
        let result = if sends_body {
            server.agent.run(builder.body(self.body)?)
        } else {
            server.agent.run(builder.body(())?)
        };
        let mut resp = result.with_context(|| what.clone())?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = if self.method == "HEAD" {
            Vec::new()
        } else {
            resp.body_mut()
                .with_config()
                .limit(MAX_BODY)
                .read_to_vec()
                .with_context(|| format!("reading the answer to {what}"))?
        };
        Ok(S3Response {
            status,
            headers,
            body,
        })
    }
}

/// What an [`S3Request`] got back.
#[derive(Debug, Clone)]
pub struct S3Response {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl S3Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy), for messages and XML checks.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::proxy::{Fault, FaultProxy, Rule};

    /// PUT and GET through the fault proxy, signed: the proxy keeps the
    /// signature valid (it forwards the request as sent), and a fault it
    /// injects reaches the client while the server never sees the request.
    fn put_get_through_proxy(server: &S3Server) -> Result<()> {
        let proxy = FaultProxy::start(server.addr())?;
        let via = proxy.endpoint();
        let body = b"through the proxy \x00\xff".repeat(1000);
        let key = "dir one/obj+1=ü";

        let put = server.request("PUT", key).body(&body).via(&via).send()?;
        assert_eq!(put.status, 200, "{}", put.text());
        assert_eq!(put.header("connection"), Some("close"));
        let get = server.request("GET", key).via(&via).send()?;
        assert_eq!(get.status, 200, "{}", get.text());
        assert_eq!(get.body, body);
        assert_eq!(server.get_object(key)?.as_deref(), Some(&body[..]));

        let head = server.request("HEAD", key).via(&via).send()?;
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-length"),
            Some(&*body.len().to_string())
        );

        let list = server
            .request("GET", "")
            .query("list-type", "2")
            .query("prefix", "dir one/")
            .via(&via)
            .send()?;
        assert_eq!(list.status, 200, "{}", list.text());
        assert!(
            list.text().contains("<Key>dir one/obj+1=ü</Key>"),
            "{}",
            list.text()
        );

        proxy.inject(Rule::new(Fault::Status(503)).method("GET"));
        let failed = server.request("GET", key).via(&via).send()?;
        assert_eq!(failed.status, 503);
        assert!(failed.text().contains("<Code>ServiceUnavailable</Code>"));

        let log = proxy.requests();
        let methods: Vec<(&str, Option<u16>)> =
            log.iter().map(|l| (l.method.as_str(), l.status)).collect();
        assert_eq!(
            methods,
            [
                ("PUT", Some(200)),
                ("GET", Some(200)),
                ("HEAD", Some(200)),
                ("GET", Some(200)),
                ("GET", Some(503)),
            ]
        );
        assert_eq!(
            log[0].path,
            format!("/{}/dir%20one/obj%2B1%3D%C3%BC", server.bucket())
        );
        assert_eq!(log[3].query, "list-type=2&prefix=dir%20one%2F");
        assert_eq!(log[4].fault.as_deref(), Some("Status(503)"));
        Ok(())
    }

    #[test]
    fn moto_serves_through_the_proxy_and_ignores_signatures() -> Result<()> {
        let server = S3Server::moto()?;
        assert_eq!(server.kind(), S3Kind::Moto);
        put_get_through_proxy(&server)?;

        let forged = server
            .request("PUT", "forged")
            .body(b"x")
            .secret("not-the-secret")
            .send()?;
        assert_eq!(forged.status, 200, "moto does not check signatures");
        Ok(())
    }

    #[test]
    fn s3s_fs_serves_through_the_proxy_and_checks_signatures() -> Result<()> {
        let server = S3Server::s3s_fs()?;
        assert_eq!(server.kind(), S3Kind::S3sFs);
        put_get_through_proxy(&server)?;

        let forged = server
            .request("PUT", "forged")
            .body(b"x")
            .secret("not-the-secret")
            .send()?;
        assert_eq!(forged.status, 403, "{}", forged.text());
        assert!(
            forged.text().contains("SignatureDoesNotMatch"),
            "{}",
            forged.text()
        );
        assert_eq!(server.get_object("forged")?, None);

        let err = server.set_restore_delay(1).unwrap_err();
        assert!(err.to_string().contains("only on moto"), "{err}");
        Ok(())
    }

    #[test]
    fn each_server_has_its_own_bucket_and_keys() -> Result<()> {
        let a = S3Server::s3s_fs()?;
        let b = S3Server::s3s_fs()?;
        assert_ne!(a.endpoint(), b.endpoint());
        assert_ne!(a.bucket(), b.bucket());
        assert_ne!(a.secret_key(), b.secret_key());
        let resp = a.request("PUT", "x").via(&b.endpoint()).body(b"x").send()?;
        assert_eq!(resp.status, 403, "b must not know a's key: {}", resp.text());
        Ok(())
    }

    #[test]
    fn configuration_and_credentials_describe_the_server() -> Result<()> {
        let server = S3Server::moto()?;
        let b = server.bucket();
        assert_eq!(server.url("/p/q/"), format!("s3://{b}/p/q"));
        assert_eq!(server.url(""), format!("s3://{b}"));
        let toml = server.toml("pre", Some("http://127.0.0.1:1"));
        assert_eq!(
            toml,
            format!(
                "url = \"s3://{b}/pre\"\nendpoint = \"http://127.0.0.1:1\"\nregion = \"us-east-1\"\npath_style = true\ntimeout = \"5s\"\n"
            )
        );
        assert!(server.toml("pre", None).contains(&server.endpoint()));
        let env = server.env();
        assert!(env.contains(&("AWS_REGION".into(), "us-east-1".into())));
        assert!(env.contains(&("AWS_ACCESS_KEY_ID".into(), server.access_key().into())));

        let dir = tempfile::tempdir()?;
        let path = server.write_credentials_file(dir.path());
        let text = std::fs::read_to_string(&path)?;
        assert!(text.starts_with("[default]\n"), "{text}");
        assert!(text.contains(&format!(
            "aws_secret_access_key = {}\n",
            server.secret_key()
        )));
        assert_eq!(
            std::fs::metadata(&path)?.permissions().mode() & 0o777,
            0o644
        );
        assert!(!format!("{server:?}").contains(server.secret_key()));
        Ok(())
    }

    #[test]
    #[should_panic(expected = "S3 server on port")]
    fn a_server_that_dies_during_the_test_fails_it() {
        let mut server = S3Server::s3s_fs().unwrap();
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        drop(server);
    }

    #[test]
    fn check_running_reports_a_dead_server_once() -> Result<()> {
        let mut server = S3Server::moto()?;
        server.check_running()?;
        server.child.kill()?;
        server.child.wait()?;
        let err = server.check_running().unwrap_err();
        assert!(err.to_string().contains("died during the test"), "{err}");
        // Reported: the drop does not fail the test again.
        Ok(())
    }

    #[test]
    fn moto_restore_delay_and_reset() -> Result<()> {
        let server = S3Server::moto()?;
        let resp = server
            .request("PUT", "cold")
            .header("x-amz-storage-class", "GLACIER")
            .body(b"frozen")
            .send()?;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(server.request("GET", "cold").send()?.status, 403);

        // moto counts from the object's creation: the restore is "ongoing"
        // from N to 2N seconds after the PUT.
        server.set_restore_delay(1)?;
        std::thread::sleep(Duration::from_millis(1200));
        let restore = server
            .request("POST", "cold")
            .query("restore", "")
            .body(b"<RestoreRequest><Days>1</Days></RestoreRequest>")
            .send()?;
        assert_eq!(restore.status, 202, "{}", restore.text());
        let head = server.request("HEAD", "cold").send()?;
        assert_eq!(
            head.header("x-amz-restore"),
            Some("ongoing-request=\"true\""),
            "{:?}",
            head.headers
        );
        server.unset_restore_delay()?;
        let head = server.request("HEAD", "cold").send()?;
        let restored = head.header("x-amz-restore").unwrap_or_default();
        assert!(
            restored.starts_with("ongoing-request=\"false\""),
            "{restored}"
        );
        assert_eq!(server.get_object("cold")?.as_deref(), Some(&b"frozen"[..]));

        server.reset()?;
        assert_eq!(server.get_object("cold")?, None);
        server.put_object("after-reset", b"ok")?;
        Ok(())
    }
}
