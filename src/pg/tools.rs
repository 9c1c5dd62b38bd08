//! Finding the PostgreSQL client programs and asking the server simple questions.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::{self, Connection, ProcessError};

#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error(
        "no PostgreSQL client programs found (looked in {0}); hint: apt-get install postgresql-client, or set pg_bindir in the target"
    )]
    NotFound(String),
    #[error(
        "pg_dump {tools} cannot dump a PostgreSQL {server} server; hint: install the version {server} client programs (postgresql-client-{server}) or set pg_bindir"
    )]
    TooOld { tools: u32, server: u32 },
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// One installation's client programs (pg_dump, pg_restore, psql, pg_dumpall).
#[derive(Debug, Clone)]
pub struct PgTools {
    pub bindir: PathBuf,
    pub major: u32,
    /// `pg_dump --version` output, e.g. "pg_dump (PostgreSQL) 15.18".
    pub version: String,
}

impl PgTools {
    /// The configured bindir, else the newest installation found.
    pub fn locate(configured: Option<&Path>) -> Result<PgTools, ToolsError> {
        let candidates: Vec<PathBuf> = match configured {
            Some(p) => vec![p.to_path_buf()],
            None => candidate_bindirs(),
        };
        let mut best: Option<PgTools> = None;
        for dir in &candidates {
            if let Ok(t) = PgTools::probe(dir)
                && best.as_ref().is_none_or(|b| t.major > b.major)
            {
                best = Some(t);
            }
        }
        best.ok_or_else(|| {
            ToolsError::NotFound(if candidates.is_empty() {
                "pg_config --bindir, /usr/lib/postgresql/*/bin and PATH".to_string()
            } else {
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        })
    }

    fn probe(dir: &Path) -> Result<PgTools, ProcessError> {
        let mut cmd = process::command(dir, "pg_dump")?;
        cmd.arg("--version");
        let out = process::output(cmd)?;
        let version = String::from_utf8_lossy(&out).trim().to_string();
        let major = parse_major(&version).ok_or_else(|| ProcessError::Spawn {
            program: "pg_dump".into(),
            message: format!("unrecognised version {version:?}"),
        })?;
        Ok(PgTools {
            bindir: dir.to_path_buf(),
            major,
            version,
        })
    }

    pub fn check_can_dump(&self, server_major: u32) -> Result<(), ToolsError> {
        if self.major < server_major {
            return Err(ToolsError::TooOld {
                tools: self.major,
                server: server_major,
            });
        }
        Ok(())
    }

    pub fn command(&self, program: &str) -> Result<Command, ProcessError> {
        process::command(&self.bindir, program)
    }

    /// Run SQL through psql and return rows of text fields.
    pub fn query(&self, conn: &Connection, sql: &str) -> Result<Vec<Vec<String>>, ProcessError> {
        let mut cmd = self.command("psql")?;
        cmd.args(["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"])
            .args(["-F", "\x1f", "-R", "\x1e", "-c", sql]);
        conn.apply(&mut cmd);
        let out = process::output(cmd)?;
        let text = String::from_utf8_lossy(&out);
        Ok(text
            .split('\x1e')
            .map(|r| r.trim_end_matches('\n'))
            .filter(|r| !r.is_empty())
            .map(|r| r.split('\x1f').map(str::to_string).collect())
            .collect())
    }

    /// Run SQL statements (no result wanted).
    pub fn execute(&self, conn: &Connection, sql: &str) -> Result<(), ProcessError> {
        self.query(conn, sql).map(|_| ())
    }
}

/// Where PostgreSQL's programs may be: `pg_config --bindir`, then Debian's
/// `/usr/lib/postgresql/*/bin`, each once. Directories on PATH only count when
/// neither finds anything: on Debian they hold Perl wrappers that cost a
/// process each and lead to the same binaries.
fn candidate_bindirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut found: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("bin")).collect();
        found.sort();
        dirs.extend(found);
    }
    dirs.retain(|d| d.join("pg_dump").exists());
    if dirs.is_empty()
        && let Some(path) = std::env::var_os("PATH")
    {
        dirs.extend(std::env::split_paths(&path).filter(|d| d.join("pg_dump").exists()));
    }
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(std::fs::canonicalize(d).unwrap_or_else(|_| d.clone())));
    dirs
}

/// "pg_dump (PostgreSQL) 15.18 (Debian ...)" -> 15; "9.6.24" -> 9.
pub fn parse_major(version: &str) -> Option<u32> {
    let v = version
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    v.split(['.', 'b', 'r', 'd']).next()?.parse().ok()
}

/// Quote an SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quote an SQL string literal. The E'' form means the same whatever
/// standard_conforming_strings is set to.
pub fn literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn literals_escape_quotes_and_backslashes() {
        assert_eq!(super::literal("it's"), "E'it''s'");
        assert_eq!(super::literal("a\\b"), "E'a\\\\b'");
        assert_eq!(super::ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn majors() {
        assert_eq!(
            super::parse_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(super::parse_major("pg_dump (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(super::parse_major("garbage"), None);
    }
}
