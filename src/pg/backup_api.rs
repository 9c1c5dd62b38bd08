//! PostgreSQL's non-exclusive backup API, through one psql session held open
//! for the whole backup (the API requires start and stop in one session).
//!
//! If lifeboat dies, psql's stdin closes, psql exits, the session ends and the
//! server aborts the backup by itself: nothing is left "in backup mode".

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Stdio};

use super::process::{self, Connection, ProcessError, Running};
use super::tools::PgTools;
use super::wal::Lsn;

const END: &str = "--lifeboat-end--";
const FIELD: char = '\x1f';

/// What the server says about itself before a base backup.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub version_num: u32,
    pub version: String,
    pub system_identifier: u64,
    pub in_recovery: bool,
    pub data_directory: String,
    pub data_checksums: bool,
    pub block_size: u32,
    pub wal_segment_size: u64,
    pub archive_mode: String,
    /// archive_command, or `archive_library` when that is set (15+).
    pub archiver: String,
    pub tablespaces: Vec<(u32, String, String)>,
    /// Where its configuration files are.
    pub config: super::config_files::Settings,
}

/// What `pg_backup_stop` returns.
#[derive(Debug, Clone)]
pub struct StopInfo {
    pub lsn: Lsn,
    pub backup_label: String,
    pub tablespace_map: String,
    pub time: chrono::DateTime<chrono::Utc>,
    pub next_xid: Option<u64>,
    /// On a standby: the timeline of the stop point (`min_recovery_end_timeline`),
    /// if the server said.
    pub stop_timeline: Option<u32>,
}

pub struct BackupApi {
    child: Option<Running>,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    version_num: u32,
}

impl BackupApi {
    pub fn connect(tools: &PgTools, conn: &Connection) -> Result<BackupApi, ProcessError> {
        let mut cmd = tools.command("psql")?;
        cmd.args(["-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1"])
            .args(["-F", "\x1f"]);
        conn.apply(&mut cmd);
        let mut child = process::spawn(cmd, Stdio::piped())?;
        let stdin = child.stdin();
        let stdout = BufReader::new(child.stdout());
        let mut api = BackupApi {
            child: Some(child),
            stdin,
            stdout,
            version_num: 0,
        };
        let v = api.query("SELECT current_setting('server_version_num')")?;
        api.version_num = v
            .first()
            .and_then(|r| r.first())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok(api)
    }

    /// Rows of fields. psql stops at the first error (ON_ERROR_STOP), and
    /// its message becomes the error.
    pub fn query(&mut self, sql: &str) -> Result<Vec<Vec<String>>, ProcessError> {
        let sent = writeln!(self.stdin, "{sql};\n\\echo {END}").and_then(|_| self.stdin.flush());
        let mut rows = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            let n = if sent.is_ok() {
                self.stdout.read_line(&mut line).unwrap_or(0)
            } else {
                0
            };
            if n == 0 {
                return Err(self.failed());
            }
            let l = line.trim_end_matches('\n');
            if l == END {
                return Ok(rows);
            }
            if !l.is_empty() {
                rows.push(l.split(FIELD).map(str::to_string).collect());
            }
        }
    }

    /// psql ended: its exit status and message.
    fn failed(&mut self) -> ProcessError {
        match self.child.take() {
            Some(c) => match c.wait() {
                Err(e) => e,
                Ok(_) => psql_error("exit code 0", "the session ended unexpectedly".into()),
            },
            None => psql_error("ended", "the session already ended".into()),
        }
    }

    fn one_row(&mut self, sql: &str, fields: usize) -> Result<Vec<String>, ProcessError> {
        let rows = self.query(sql)?;
        match rows.into_iter().next() {
            Some(r) if r.len() == fields => Ok(r),
            other => Err(unexpected(format!("{sql}: {other:?}"))),
        }
    }

    pub fn facts(&mut self) -> Result<ServerFacts, ProcessError> {
        let archiver = if self.version_num >= 150000 {
            "coalesce(nullif(current_setting('archive_library'), ''), current_setting('archive_command'))"
        } else {
            "current_setting('archive_command')"
        };
        let r = self.one_row(
            &format!(
                "SELECT current_setting('server_version_num'), current_setting('server_version'), \
                 (SELECT system_identifier FROM pg_control_system()), pg_is_in_recovery(), \
                 current_setting('data_directory'), current_setting('data_checksums'), \
                 current_setting('block_size'), \
                 (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'), \
                 current_setting('archive_mode'), {archiver}, \
                 current_setting('config_file'), current_setting('hba_file'), \
                 current_setting('ident_file')"
            ),
            13,
        )?;
        let tablespaces = self
            .query(
                "SELECT oid, spcname, pg_tablespace_location(oid) FROM pg_tablespace \
                 WHERE pg_tablespace_location(oid) <> '' ORDER BY oid",
            )?
            .into_iter()
            .filter(|r| r.len() == 3)
            .filter_map(|r| Some((r[0].parse().ok()?, r[1].clone(), r[2].clone())))
            .collect();
        let num = |s: &str| s.parse().unwrap_or(0);
        Ok(ServerFacts {
            version_num: num(&r[0]) as u32,
            version: r[1].split_whitespace().next().unwrap_or("").to_string(),
            system_identifier: num(&r[2]),
            in_recovery: r[3] == "t",
            data_directory: r[4].clone(),
            data_checksums: r[5] == "on",
            block_size: num(&r[6]) as u32,
            wal_segment_size: num(&r[7]),
            archive_mode: r[8].clone(),
            archiver: r[9].clone(),
            tablespaces,
            config: super::config_files::Settings {
                config_file: r[10].clone(),
                hba_file: r[11].clone(),
                ident_file: r[12].clone(),
            },
        })
    }

    /// Start the backup; returns the start LSN (the checkpoint's redo point).
    pub fn start(&mut self, label: &str, fast: bool) -> Result<Lsn, ProcessError> {
        let label = super::tools::literal(label);
        let sql = if self.version_num >= 150000 {
            format!("SELECT pg_backup_start({label}, {fast})")
        } else {
            format!("SELECT pg_start_backup({label}, {fast}, false)")
        };
        let r = self.one_row(&sql, 1)?;
        r[0].parse().map_err(unexpected)
    }

    /// Stop the backup without waiting for the archiver (lifeboat waits for
    /// the WAL to arrive in its own repository instead). `time` is the
    /// server's clock, or on a standby the primary's commit time of the last
    /// transaction replayed if that is later (the clocks may differ).
    pub fn stop(&mut self, in_recovery: bool) -> Result<StopInfo, ProcessError> {
        let call = if self.version_num >= 150000 {
            "pg_backup_stop(false)"
        } else {
            "pg_stop_backup(false, false)"
        };
        let r = self.one_row(
            &format!(
                "SELECT lsn, encode(convert_to(labelfile, 'UTF8'), 'hex'), \
                 encode(convert_to(coalesce(spcmapfile, ''), 'UTF8'), 'hex'), \
                 to_char(greatest(clock_timestamp(), pg_last_xact_replay_timestamp()) AT TIME ZONE 'UTC', \
                 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
                 FROM {call}"
            ),
            4,
        )?;
        let text = |hex_text: &str| -> Result<String, ProcessError> {
            let bytes = hex::decode(hex_text).map_err(|e| unexpected(e.to_string()))?;
            String::from_utf8(bytes).map_err(|e| unexpected(e.to_string()))
        };
        let next_xid = if self.version_num >= 130000 {
            "SELECT pg_snapshot_xmax(pg_current_snapshot())"
        } else {
            "SELECT txid_snapshot_xmax(txid_current_snapshot())"
        };
        let next_xid = self
            .one_row(next_xid, 1)
            .ok()
            .and_then(|r| r[0].parse().ok());
        let stop_timeline = if in_recovery {
            self.one_row(
                "SELECT min_recovery_end_timeline FROM pg_control_recovery()",
                1,
            )
            .ok()
            .and_then(|r| r[0].parse().ok())
        } else {
            None
        };
        Ok(StopInfo {
            lsn: r[0].parse().map_err(unexpected)?,
            backup_label: text(&r[1])?,
            tablespace_map: text(&r[2])?,
            time: r[3]
                .parse()
                .map_err(|e: chrono::ParseError| unexpected(e.to_string()))?,
            next_xid,
            stop_timeline,
        })
    }

    /// On a primary: end the current WAL segment if WAL before `before` is
    /// still being written into it (`pg_switch_wal`), so that the archiver
    /// can archive what a standby's backup needs. True if it switched.
    pub fn switch_wal_if_before(&mut self, before: Lsn) -> Result<bool, ProcessError> {
        let r = self.one_row(
            &format!(
                "SELECT CASE WHEN pg_current_wal_insert_lsn() < '{before}'::pg_lsn \
                 THEN pg_switch_wal() IS NOT NULL ELSE false END"
            ),
            1,
        )?;
        Ok(r[0] == "t")
    }

    /// End the session (a backup still running is aborted by the server).
    pub fn close(mut self) {
        let _ = writeln!(self.stdin, "\\q");
        if let Some(c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

fn psql_error(status: &str, stderr: String) -> ProcessError {
    ProcessError::Failed {
        program: "psql".into(),
        status: status.into(),
        stderr,
    }
}

/// The server answered something the backup API never returns.
fn unexpected(what: String) -> ProcessError {
    psql_error("unexpected answer", what)
}

/// The timeline a backup_label names ("START TIMELINE: 1").
pub fn label_timeline(label: &str) -> Option<u32> {
    label
        .lines()
        .find_map(|l| l.strip_prefix("START TIMELINE:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    #[test]
    fn timeline_from_label() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-25 10:00:00 UTC\nLABEL: x\nSTART TIMELINE: 3\n";
        assert_eq!(super::label_timeline(label), Some(3));
        assert_eq!(super::label_timeline("x"), None);
    }
}
