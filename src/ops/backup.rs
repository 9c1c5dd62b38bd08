//! `lifeboat backup TARGET` for logical targets: pg_dumpall --globals-only and
//! pg_dump -Fc -Z0 streamed into one repository session, then indexed, then listed.

use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use chrono::Utc;

use super::progress::Progress;
use super::{Context, human_bytes, usage};
use crate::codec::Id;
use crate::config::Method;
use crate::format::{self, BackupKind, BackupRecord, DatabaseInfo};
use crate::pg::dumpfile::{BlockScanner, TocSniffer};
use crate::pg::process::{self, Connection};
use crate::pg::tools::PgTools;

/// How long a backup waits for a running prune (which holds the exclusive lock).
pub(super) const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10 * 60);

pub struct BackupOutcome {
    pub id: Id,
    pub record: BackupRecord,
    pub seconds: f64,
}

impl std::fmt::Display for BackupOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.record;
        if let Some(p) = &r.physical {
            return write!(
                f,
                "backup {} of {} done: PostgreSQL {}{}, {} in {} files, WAL {}..{} on timeline {}, {} new, {} stored, {:.1} s{}",
                self.id.short(),
                r.target,
                r.database.server_version,
                if p.from_standby {
                    " (from a standby)"
                } else {
                    ""
                },
                human_bytes(r.database.size_bytes),
                p.files,
                p.start_lsn,
                p.stop_lsn,
                p.timeline,
                human_bytes(r.stats.new_bytes),
                human_bytes(r.stats.stored_bytes),
                self.seconds,
                if p.corrupt_pages.is_empty() {
                    String::new()
                } else {
                    format!("; {} corrupt page(s) found", p.corrupt_pages.len())
                }
            );
        }
        let dump = r.stream("dump").map_or(0, |s| s.size);
        write!(
            f,
            "backup {} of {} done: database {} (PostgreSQL {}), dump {}, {} new, {} stored, {:.1} s",
            self.id.short(),
            r.target,
            r.database.name,
            r.database.server_version,
            human_bytes(dump),
            human_bytes(r.stats.new_bytes),
            human_bytes(r.stats.stored_bytes),
            self.seconds
        )
    }
}

/// Facts about the database, asked before dumping; also proves we can connect.
/// `pg_dumpall --globals-only`: roles, memberships, tablespaces.
fn dump_globals(tools: &PgTools, conn: &Connection, passwords: bool) -> Result<Vec<u8>> {
    let mut cmd = tools.command("pg_dumpall")?;
    cmd.args(["--globals-only", "-w"]);
    if !passwords {
        cmd.arg("--no-role-passwords");
    }
    conn.apply(&mut cmd);
    let mut child = process::spawn(cmd, Stdio::null())?;
    let mut sql = Vec::new();
    let read = std::io::Read::read_to_end(&mut child.stdout(), &mut sql);
    child.wait()?;
    read?;
    Ok(sql)
}

pub fn database_info(tools: &PgTools, conn: &Connection) -> Result<DatabaseInfo> {
    let rows = tools
        .query(
            conn,
            "SELECT current_database(), current_setting('server_version'), current_setting('server_version_num'), \
             pg_encoding_to_char(encoding), datcollate, datctype, pg_database_size(oid) \
             FROM pg_database WHERE datname = current_database()",
        )
        .map_err(|e| connect_error(conn, e))?;
    let row = rows
        .first()
        .filter(|r| r.len() == 7)
        .context("unexpected answer from the server")?;
    Ok(DatabaseInfo {
        name: row[0].clone(),
        server_version: row[1].split_whitespace().next().unwrap_or("").to_string(),
        server_version_num: row[2].parse().unwrap_or(0),
        encoding: row[3].clone(),
        collate: row[4].clone(),
        ctype: row[5].clone(),
        size_bytes: row[6].parse().unwrap_or(0),
    })
}

/// A connection that fails before any work: wrong address, credentials or names
/// are setup problems (exit 2); a server that is busy or shutting down is a
/// failed operation (exit 1) worth retrying.
pub fn connect_error(conn: &Connection, e: process::ProcessError) -> anyhow::Error {
    const SETUP: [&str; 8] = [
        "password authentication failed",
        "no password supplied",
        "does not exist",
        "could not translate host name",
        "Connection refused",
        "No such file or directory",
        "no pg_hba.conf entry",
        "permission denied",
    ];
    match e.stderr() {
        Some(msg) => {
            let text = format!(
                "cannot connect to {}: {msg}; hint: check the database URL, the password (PGPASSWORD or ~/.pgpass) and that the server is running",
                conn.describe()
            );
            if SETUP.iter().any(|s| msg.contains(s)) {
                usage(text)
            } else {
                anyhow::anyhow!(text)
            }
        }
        None => usage(e.to_string()),
    }
}

pub fn run(ctx: &Context, target_name: &str) -> Result<BackupOutcome> {
    let target = ctx.target(target_name)?;
    if target.method == Method::Physical {
        return super::basebackup::run(ctx, target_name);
    }
    let (repo_name, _) = ctx.target_repository(target_name)?;
    let conn = ctx.connection(target_name)?;
    let tools = PgTools::locate(target.pg_bindir.as_deref()).map_err(|e| usage(e.to_string()))?;
    // Unlocking the repository (Argon2id, about 0.1 s) while the server says
    // what it is: a backup's fixed cost counts on small databases.
    let (repo, database) = std::thread::scope(|s| {
        let opened = s.spawn(|| ctx.open_repository(&repo_name));
        let database = database_info(&tools, &conn);
        (opened.join(), database)
    });
    let repo = repo.map_err(|_| anyhow::anyhow!("opening the repository panicked"))??;
    let database = database?;
    tools
        .check_can_dump(database.server_version_num / 10000)
        .map_err(|e| usage(e.to_string()))?;
    let lock = lock_for_backup(ctx, &repo, target_name)?;
    let started = Utc::now();
    let clock = Instant::now();
    let mut session = repo.start_session()?;
    let mut streams = Vec::new();

    // The globals (a few KiB) are dumped while pg_dump runs, and stored after it.
    let globals = target.globals.then(|| {
        let (tools, conn) = (tools.clone(), conn.clone());
        let passwords = target.globals_role_passwords;
        std::thread::spawn(move || dump_globals(&tools, &conn, passwords))
    });

    let mut cmd = tools.command("pg_dump")?;
    cmd.args(["--format=custom", "--compress=0", "--no-password"]);
    conn.apply(&mut cmd);
    let mut child = process::spawn(cmd, Stdio::null())?;
    process::batch_scheduling();
    let out = process::ReadAhead::new(child.stdout());
    let progress = Progress::bytes(&format!("backup {target_name}"), None, ctx.quiet);
    let mut sniffer = TocSniffer::new(64 * 1024 * 1024);
    let mut blocks = BlockScanner::default();
    let written = session.write_stream(
        "dump",
        "pg_dump-custom",
        out,
        &mut |bytes| {
            sniffer.feed(bytes);
            blocks.feed(bytes);
        },
        &|n| progress.set(n),
    );
    progress.finish();
    if written.is_err() {
        child.kill();
    }
    // If storing failed we killed pg_dump: the storage error is the cause.
    // Otherwise pg_dump's own message explains a short or failed stream.
    let dumped = child.wait();
    let stream = match (written, dumped) {
        (Err(e), _) => return Err(e).context("storing the dump"),
        (Ok(_), Err(e)) => bail!("{e}"),
        (Ok(s), Ok(_)) => s,
    };
    if stream.size == 0 {
        bail!("pg_dump produced no output");
    }
    streams.push(stream);
    if let Some(globals) = globals {
        let sql = globals
            .join()
            .map_err(|_| anyhow::anyhow!("pg_dumpall's reader panicked"))?
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e}; hint: pg_dumpall --globals-only needs a superuser when role passwords are kept (globals_role_passwords = true); otherwise set globals = false in [target.{target_name}]"
                )
            })?;
        let stream = session
            .write_stream("globals", "sql", &sql[..], &mut |_| {}, &|_| {})
            .context("storing the globals")?;
        streams.insert(0, stream);
    }
    let dump = match sniffer.finish() {
        Ok(toc) => {
            let mut summary = toc.summary();
            // Where each table's data is: parallel restores need it. Without
            // it they fall back to a temporary copy of the dump.
            match blocks.finish() {
                Ok((_, found)) => summary.data_blocks = found,
                Err(e) => eprintln!(
                    "warning: could not locate the dump's data blocks ({e}); parallel restores of this backup will need a temporary copy"
                ),
            }
            Some(summary)
        }
        Err(e) => {
            eprintln!(
                "warning: could not read the dump's table of contents ({e}); restores of this backup cannot check its tables"
            );
            None
        }
    };

    let stats = session.finish().context("storing the backup")?;
    let mut tools_used = std::collections::BTreeMap::new();
    tools_used.insert("pg_dump".to_string(), tools.version.clone());
    let record = BackupRecord {
        copied_from: None,
        version: format::FORMAT_VERSION,
        kind: BackupKind::Logical,
        target: target_name.into(),
        host: crate::repo::hostname(),
        lifeboat: env!("CARGO_PKG_VERSION").into(),
        started,
        finished: Utc::now(),
        database,
        tools: tools_used,
        streams,
        dump,
        physical: None,
        stats,
    };
    commit(&repo, lock, record, clock)
}

/// The shared lock a backup writes under; waits for a running prune.
pub(super) fn lock_for_backup(
    ctx: &Context,
    repo: &crate::repo::Repository,
    target_name: &str,
) -> Result<crate::repo::LockGuard> {
    let lock =
        repo.lock_shared_waiting(&format!("backup {target_name}"), LOCK_WAIT, &|holder| {
            if !ctx.quiet {
                eprintln!("waiting for {holder} to finish (up to 10 minutes)");
            }
        })?;
    crate::failpoint::hit("backup:locked");
    Ok(lock)
}

/// List the backup: everything it references is durable and indexed (the
/// session finished), and the lock must still be ours, or prune may have
/// run meanwhile (docs/FORMAT.md, "Write ordering").
pub(super) fn commit(
    repo: &crate::repo::Repository,
    lock: crate::repo::LockGuard,
    record: BackupRecord,
    clock: Instant,
) -> Result<BackupOutcome> {
    crate::failpoint::hit("backup:before-record");
    lock.check_held()?;
    let id = repo.write_backup_record(&record)?;
    crate::failpoint::hit("backup:after-record");
    drop(lock);
    Ok(BackupOutcome {
        id,
        record,
        seconds: clock.elapsed().as_secs_f64(),
    })
}
