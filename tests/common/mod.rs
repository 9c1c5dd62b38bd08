//! Shared set-up for end-to-end tests: a real cluster, a repository directory,
//! a lifeboat.toml, and the built `lifeboat` binary run as a child process.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lifeboat::testkit::{self, TestCluster};
use tempfile::TempDir;

pub const PASSPHRASE: &str = "correct horse battery staple";

pub struct Env {
    pub cluster: TestCluster,
    pub dir: TempDir,
    pub config: PathBuf,
}

/// What one lifeboat run did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "lifeboat failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails(self, code: i32, needle: &str) -> Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}

impl Env {
    /// A cluster with the hyper_db sample loaded and a passphrase repository
    /// (not yet initialised) with target "dev".
    pub fn new() -> Env {
        let cluster = TestCluster::start().expect("start PostgreSQL");
        cluster.createdb("hyper_db").unwrap();
        cluster
            .psql("hyper_db", testkit::sample_hyper_db_sql())
            .unwrap();
        let dir = testkit::temp_dir_for_postgres().unwrap();
        let config = dir.path().join("lifeboat.toml");
        let env = Env {
            cluster,
            dir,
            config,
        };
        env.write_repo_config("", &env.target_section("dev", "hyper_db", ""));
        env
    }

    /// A config with repository "main" (extra settings in `repo_extra`) and `targets`.
    pub fn write_repo_config(&self, repo_extra: &str, targets: &str) {
        self.write_config(&format!(
            "[repository.main]\nurl = \"file://{}\"\n{repo_extra}\n\n{targets}",
            self.repo_path().display()
        ));
    }

    pub fn repo_path(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    pub fn target_section(&self, name: &str, db: &str, extra: &str) -> String {
        format!(
            "[target.{name}]\ndatabase = \"{}\"\nmethod = \"logical\"\nrepository = \"main\"\nretention = {{ keep_last = 3 }}\n{extra}\n",
            self.cluster.uri(db)
        )
    }

    /// A new database `name` made by `sql`, and a target of the same name
    /// backing it up into repository "main".
    pub fn add_database_target(&self, name: &str, sql: &str) {
        self.cluster.createdb(name).unwrap();
        self.cluster.psql(name, sql).unwrap();
        let cfg = std::fs::read_to_string(&self.config).unwrap();
        self.write_config(&format!("{cfg}\n{}", self.target_section(name, name, "")));
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn lifeboat(&self, args: &[&str]) -> Run {
        self.lifeboat_env(args, &[("LIFEBOAT_PASSPHRASE", PASSPHRASE)])
    }

    pub fn lifeboat_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = lifeboat_cmd();
        cmd.arg("--config").arg(&self.config).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().expect("run lifeboat"))
    }

    /// Run lifeboat and have it killed (debug builds: `LIFEBOAT_CRASH_AT`) at
    /// failpoint `point`; fails the test if it was not.
    pub fn lifeboat_killed_at(&self, args: &[&str], point: &str) -> Run {
        let r = self.lifeboat_env(
            args,
            &[
                ("LIFEBOAT_PASSPHRASE", PASSPHRASE),
                ("LIFEBOAT_CRASH_AT", point),
            ],
        );
        assert_eq!(
            r.code, -1,
            "{point}: not killed\n{}\n{}",
            r.stdout, r.stderr
        );
        r
    }

    pub fn fingerprint(&self, db: &str) -> String {
        testkit::database_fingerprint(&self.cluster, db).unwrap()
    }

    /// `datconnlimit` of a database (-1: unlimited).
    pub fn connection_limit(&self, db: &str) -> String {
        let sql = format!("SELECT datconnlimit FROM pg_database WHERE datname = '{db}'");
        self.cluster
            .psql("postgres", &sql)
            .unwrap()
            .trim()
            .to_string()
    }

    /// Backups listed for a target, as JSON values.
    pub fn list(&self, target: &str) -> Vec<serde_json::Value> {
        let r = self.lifeboat(&["list", target, "--json"]).ok();
        let all: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        all["backups"]
            .as_array()
            .expect("list --json has backups")
            .clone()
    }

    /// Every pack file of the repository.
    pub fn packs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.repo_path().join("data"), &mut out);
        out.sort();
        out
    }
}

pub fn lifeboat_cmd() -> Command {
    lifeboat_cmd_at(Path::new(env!("CARGO_BIN_EXE_lifeboat")))
}

/// The lifeboat binary at `program` (a copy of the built one), with none of
/// the caller's lifeboat or libpq environment.
pub fn lifeboat_cmd_at(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for v in [
        "LIFEBOAT_CONFIG",
        "LIFEBOAT_PASSPHRASE",
        "LIFEBOAT_DEDUP_KEY",
        "PGPASSWORD",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
    ] {
        cmd.env_remove(v);
    }
    cmd
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// A lifeboat run held at a failpoint (debug builds): started with
/// `LIFEBOAT_PAUSE_AT=POINT`, returned once it says it is paused there, and
/// let go by [`Paused::resume`] (it creates `LIFEBOAT_RESUME_FILE`). No
/// sleeps that a slow machine outruns. Its output is read by threads (a full
/// pipe never blocks it); dropped unresumed (a failed assertion), it is
/// killed.
pub struct Paused {
    child: Option<std::process::Child>,
    lines: std::sync::mpsc::Receiver<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
    said: String,
    resume: PathBuf,
}

impl Paused {
    #[track_caller]
    pub fn start(mut cmd: Command, point: &str, resume: PathBuf) -> Paused {
        let _ = std::fs::remove_file(&resume);
        let mut child = cmd
            .env("LIFEBOAT_PAUSE_AT", format!("{point}:300"))
            .env("LIFEBOAT_RESUME_FILE", &resume)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run lifeboat");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut out = child.stdout.take().expect("stdout");
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
            s
        });
        let mut paused = Paused {
            child: Some(child),
            lines,
            stdout: Some(stdout),
            said: String::new(),
            resume,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let wanted = format!("failpoint: paused at {point} ");
        while !paused.said.contains(&wanted) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match paused.lines.recv_timeout(left) {
                Ok(line) => {
                    paused.said.push_str(&line);
                    paused.said.push('\n');
                }
                Err(_) => panic!(
                    "lifeboat did not reach {point} (ended, or 120 s): {}",
                    paused.said
                ),
            }
        }
        paused
    }

    /// Let it go on, and wait for it to end.
    pub fn resume(mut self) -> Run {
        std::fs::write(&self.resume, "").expect("resume file");
        for line in self.lines.iter() {
            self.said.push_str(&line);
            self.said.push('\n');
        }
        let status = self.child.take().expect("child").wait().expect("wait");
        let stdout = self.stdout.take().expect("stdout").join().expect("stdout");
        Run {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr: std::mem::take(&mut self.said),
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
