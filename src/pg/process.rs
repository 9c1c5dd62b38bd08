//! One wrapper for every PostgreSQL client program lifeboat runs.
//!
//! stdout is streamed by the caller, stderr is drained on its own thread (so
//! neither pipe can fill and deadlock), and a failure carries the program's own
//! message and exit status. Passwords travel in PGPASSWORD, never in argv.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use super::conninfo::ConnInfo;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(
        "{program} not found at {path}; hint: install the PostgreSQL client programs (apt-get install postgresql-client) or set pg_bindir in the target"
    )]
    NotFound { program: String, path: PathBuf },
    #[error("could not start {program}: {message}")]
    Spawn { program: String, message: String },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
}

impl ProcessError {
    /// The program's own stderr, if it ran.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            ProcessError::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// A connection as client programs take it: conninfo without password, plus the
/// password for the environment.
#[derive(Clone)]
pub struct Connection {
    info: ConnInfo,
    password: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connection({})", self.info)
    }
}

impl Connection {
    /// Refuses secrets other than the password: they would have to go on a
    /// command line, where every user of the host can read them.
    pub fn new(info: &ConnInfo) -> Result<Connection, String> {
        for key in ["sslpassword", "oauth_client_secret"] {
            if info.get(key).is_some() {
                return Err(format!(
                    "{key} in a connection string would be visible in the process list; hint: put it in a service file (PGSERVICEFILE) and use service=NAME"
                ));
            }
        }
        Ok(Connection {
            password: info.password().map(str::to_string),
            info: info.without_password(),
        })
    }

    pub fn dbname(&self) -> Option<&str> {
        self.info.dbname()
    }

    pub fn with_dbname(&self, db: &str) -> Connection {
        Connection {
            info: self.info.with_dbname(db),
            password: self.password.clone(),
        }
    }

    /// What to show the user (never the password).
    pub fn describe(&self) -> String {
        self.info.to_string()
    }

    /// Add `-d <conninfo>` and the password environment to a command.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.arg("-d").arg(self.info.to_conninfo_string());
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
    }
}

/// A running client program.
pub struct Running {
    program: String,
    child: Child,
    stderr: Option<JoinHandle<String>>,
}

/// Build a command for `program` in `bindir`, never prompting for a password.
pub fn command(bindir: &Path, program: &str) -> Result<Command, ProcessError> {
    let path = bindir.join(program);
    if !path.exists() {
        return Err(ProcessError::NotFound {
            program: program.into(),
            path,
        });
    }
    let mut cmd = Command::new(path);
    scrub_secrets(&mut cmd);
    cmd.env(
        "PGCONNECT_TIMEOUT",
        std::env::var("PGCONNECT_TIMEOUT").unwrap_or_else(|_| "10".into()),
    );
    Ok(cmd)
}

/// Names of environment variables that hold lifeboat's own secrets (passphrases,
/// dedup keys) beyond the `LIFEBOAT_*` ones, registered from the configuration.
static SECRET_ENV: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

pub fn register_secret_env(names: Vec<String>) {
    let _ = SECRET_ENV.set(names);
}

/// Child programs and hooks never inherit lifeboat's secrets.
pub fn scrub_secrets(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LIFEBOAT_") {
            cmd.env_remove(&k);
        }
    }
    for k in SECRET_ENV.get().into_iter().flatten() {
        cmd.env_remove(k);
    }
}

pub fn spawn(mut cmd: Command, stdin: Stdio) -> Result<Running, ProcessError> {
    let program = Path::new(cmd.get_program())
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ProcessError::Spawn {
            program: program.clone(),
            message: e.to_string(),
        })?;
    let mut err = child.stderr.take().expect("stderr piped");
    let stderr = std::thread::spawn(move || {
        let mut buf = Vec::new();
        // Keep the tail only: a chatty program must not grow memory without bound.
        let mut chunk = [0u8; 8192];
        while let Ok(n) = err.read(&mut chunk) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > 64 * 1024 {
                buf.drain(..buf.len() - 32 * 1024);
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    });
    Ok(Running {
        program,
        child,
        stderr: Some(stderr),
    })
}

impl Running {
    /// The program's stdout, with a pipe buffer of 1 to 4 MiB (as large as the
    /// kernel allows): pg_dump writes in small pieces, and a 64 KiB pipe wakes
    /// the reader for every few of them.
    pub fn stdout(&mut self) -> ChildStdout {
        let out = self.child.stdout.take().expect("stdout taken once");
        // 4 MiB where allowed (root, or fs.pipe-max-size raised), else the
        // 1 MiB unprivileged maximum: the child writes on while our reader
        // waits for a core.
        if nix::fcntl::fcntl(&out, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4 << 20)).is_err() {
            let _ = nix::fcntl::fcntl(&out, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
        }
        out
    }
    pub fn stdin(&mut self) -> ChildStdin {
        self.child.stdin.take().expect("stdin piped and taken once")
    }
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Wait for exit; a non-zero status becomes an error with the program's stderr.
    pub fn wait(mut self) -> Result<String, ProcessError> {
        let status = self.child.wait().map_err(|e| ProcessError::Spawn {
            program: self.program.clone(),
            message: e.to_string(),
        })?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        check(&self.program, status, stderr)
    }
}

fn check(program: &str, status: ExitStatus, stderr: String) -> Result<String, ProcessError> {
    if status.success() {
        return Ok(stderr);
    }
    let status = match status.code() {
        Some(c) => format!("exit code {c}"),
        None => "killed by a signal".into(),
    };
    Err(ProcessError::Failed {
        program: program.into(),
        status,
        stderr: tidy(&stderr),
    })
}

/// Make a program's stderr fit on one line: drop its "program: " prefixes and
/// join lines.
pub fn tidy(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let text = lines.join(" / ");
    if text.is_empty() {
        "no error output".into()
    } else {
        text
    }
}

/// Run a program to completion, returning its stdout.
pub fn output(cmd: Command) -> Result<Vec<u8>, ProcessError> {
    let mut r = spawn(cmd, Stdio::null())?;
    let mut out = Vec::new();
    let _ = r.stdout().read_to_end(&mut out);
    r.wait()?;
    Ok(out)
}

/// Put every thread of this process in SCHED_BATCH, with `chrt` (util-linux;
/// the policy needs no privilege and keeps the nice value). A waking batch
/// thread does not preempt the one running. A logical backup's reader wakes
/// for every few 4 KiB writes of pg_dump; as a normal thread it took the
/// core from pg_dump or the server each time, and on 2 cores that left the
/// server waiting for pg_dump (docs/BENCHMARKS.md, Notes, fifteenth stop).
/// Threads started later inherit it, as do children started later; ones
/// started before (pg_dump) keep theirs. Where `chrt` is missing or
/// refuses, nothing changes.
pub fn batch_scheduling() {
    let _ = Command::new("chrt")
        .args(["--batch", "--all-tasks", "--pid", "0"])
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Reads a child's output on its own thread, a megabyte at a time, so the
/// child never waits while the consumer is busy (chunking and hashing come in
/// bursts). At most `DEPTH` blocks wait, which bounds memory to 8 MiB (3 were
/// measurably slower on 2 cores shared with the server and pg_dump).
pub struct ReadAhead {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    /// Consumed blocks go back to the reading thread for reuse.
    back: std::sync::mpsc::SyncSender<Vec<u8>>,
    block: Vec<u8>,
    pos: usize,
    done: bool,
}

impl ReadAhead {
    const BLOCK: usize = 1 << 20;
    const DEPTH: usize = 8;

    pub fn new<R: Read + Send + 'static>(mut src: R) -> ReadAhead {
        let (tx, rx) = std::sync::mpsc::sync_channel(Self::DEPTH);
        let (back, spare) = std::sync::mpsc::sync_channel::<Vec<u8>>(Self::DEPTH + 1);
        std::thread::spawn(move || {
            loop {
                let mut block = spare.try_recv().unwrap_or_default();
                block.resize(Self::BLOCK, 0);
                let mut len = 0;
                let mut eof = false;
                while len < block.len() {
                    match src.read(&mut block[len..]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => len += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                block.truncate(len);
                if (len > 0 && tx.send(Ok(block)).is_err()) || eof {
                    return; // the consumer is gone, or the end
                }
            }
        });
        ReadAhead {
            rx,
            back,
            block: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.block.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    let used = std::mem::replace(&mut self.block, b);
                    let _ = self.back.try_send(used);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => self.done = true,
            }
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scheduling policy of thread `tid` of this process (3: SCHED_BATCH).
    fn policy(tid: &str) -> String {
        let sched = std::fs::read_to_string(format!("/proc/self/task/{tid}/sched")).unwrap();
        let line = sched.lines().find(|l| l.starts_with("policy")).unwrap();
        line.rsplit(':').next().unwrap().trim().to_string()
    }

    #[test]
    fn batch_scheduling_moves_the_threads_that_run_and_those_started_later() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let before = std::thread::spawn(move || {
            tx.send(std::fs::read_link("/proc/thread-self").unwrap())
                .unwrap();
            let _ = wait.recv();
        });
        let before_tid = rx.recv().unwrap().file_name().unwrap().to_owned();
        batch_scheduling();
        let me = std::fs::read_link("/proc/thread-self").unwrap();
        let after = std::thread::spawn(|| {
            let me = std::fs::read_link("/proc/thread-self").unwrap();
            policy(&me.file_name().unwrap().to_string_lossy())
        });
        assert_eq!(policy(&me.file_name().unwrap().to_string_lossy()), "3");
        assert_eq!(policy(&before_tid.to_string_lossy()), "3");
        assert_eq!(after.join().unwrap(), "3", "inherited");
        done.send(()).unwrap();
        before.join().unwrap();
    }
}
