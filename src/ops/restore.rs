//! `lifeboat restore TARGET` for logical backups: the plan's manual restore
//! procedure, done safely. The restore is planned first (`plan`), then applied
//! (`apply`), so `--dry-run` prints exactly the steps a real run takes.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};

use super::backup::connect_error;
use super::progress::Progress;
use super::{Context, human_bytes, interrupted, usage, watch_for_interrupts};
use crate::codec::Id;
use crate::format::{BackupRecord, Stream};
use crate::pg::dumpfile::{BlockScanner, patch_data_offsets};
use crate::pg::process::{self, Connection};
use crate::pg::tools::{PgTools, ident, literal, parse_major};
use crate::repo::{Index, Repository, StreamReader};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct RestoreOptions {
    /// Backup id or prefix (default: the newest of the target)
    #[arg(long)]
    pub backup: Option<String>,
    /// Restore into this database instead of the target's (created if missing)
    #[arg(long, value_name = "URL")]
    pub into: Option<String>,
    /// Replace the contents of an existing database (asks first unless --yes)
    #[arg(long)]
    pub clean: bool,
    /// Parallel pg_restore processes (tables' data and index builds at once);
    /// physical restores: files written at once (default: the CPU count)
    #[arg(long, short)]
    pub jobs: Option<u32>,
    /// Print the steps without changing anything
    #[arg(long)]
    pub dry_run: bool,
    /// Read the backup from this repository (default: the first of the
    /// target's repositories that has it)
    #[arg(long, value_name = "NAME")]
    pub repository: Option<String>,
    /// Packs in an archive storage class (S3 Glacier): start their retrieval
    /// and stop instead of waiting (run the restore again once readable)
    #[arg(long)]
    pub no_wait: bool,
    /// Do not ask for confirmation
    #[arg(long, short)]
    pub yes: bool,
    /// Apply the backup's roles and tablespaces first (for a new server)
    #[arg(long)]
    pub globals: bool,
    /// Do not restore ownership (pg_restore --no-owner)
    #[arg(long)]
    pub no_owner: bool,
    /// Where --jobs puts a temporary copy of the dump, for backups that do not
    /// record their data blocks (made before 2026-11-25; default: $TMPDIR)
    #[arg(long, value_name = "DIR")]
    pub temp_dir: Option<PathBuf>,
    #[command(flatten)]
    pub physical: super::pitr::PitrOptions,
}

impl RestoreOptions {
    /// What to do about packs in an archive storage class.
    pub fn retrieval(&self) -> super::retrieve::Retrieval {
        use super::retrieve::Retrieval;
        if self.dry_run {
            Retrieval::DryRun
        } else if self.no_wait {
            Retrieval::NoWait
        } else {
            Retrieval::Wait
        }
    }
}

/// One step of a restore, in order.
#[derive(Debug, Clone)]
pub enum Step {
    Hooks {
        phase: &'static str,
        commands: Vec<String>,
    },
    CreateDatabase {
        name: String,
    },
    Globals,
    BlockConnections {
        db: String,
        superuser: bool,
    },
    DropSchemas {
        schemas: Vec<String>,
        large_objects: bool,
    },
    PgRestore(PgRestoreRun),
    CheckTables {
        tables: usize,
    },
    AllowConnections {
        db: String,
    },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Hooks { phase, commands } => {
                write!(f, "run hooks.{phase}: {}", commands.join(" ; "))
            }
            Step::CreateDatabase { name } => write!(f, "create database {}", ident(name)),
            Step::Globals => write!(
                f,
                "apply the backup's globals: create missing roles and tablespaces, and set existing roles' attributes and memberships as in the backup"
            ),
            Step::BlockConnections {
                db,
                superuser: true,
            } => write!(
                f,
                "refuse new connections to {} (CONNECTION LIMIT 0) and end the open ones",
                ident(db)
            ),
            Step::BlockConnections {
                db,
                superuser: false,
            } => write!(
                f,
                "end the open connections to {} (not a superuser: new connections cannot be refused; stop the application in hooks.before_restore)",
                ident(db)
            ),
            Step::DropSchemas {
                schemas,
                large_objects,
            } => {
                let list: Vec<String> = schemas.iter().map(|s| ident(s)).collect();
                write!(
                    f,
                    "drop schemas {} (CASCADE) and recreate public",
                    list.join(", ")
                )?;
                if *large_objects {
                    write!(f, ", and remove all large objects")?;
                }
                Ok(())
            }
            Step::PgRestore(run) => {
                match &run.mode {
                    RestoreMode::Split => write!(
                        f,
                        "pg_restore streaming from the repository: the schema, then the tables' data in {0} parallel pg_restore processes, then indexes and constraints with --jobs={0}",
                        run.jobs
                    )?,
                    RestoreMode::TempCopy(dir) => write!(
                        f,
                        "pg_restore with {} jobs from a temporary copy in {}",
                        run.jobs,
                        dir.display()
                    )?,
                    RestoreMode::Stream => write!(f, "pg_restore streaming from the repository")?,
                }
                if run.no_owner {
                    write!(f, " (--no-owner)")?;
                }
                Ok(())
            }
            Step::CheckTables { tables } => {
                write!(f, "check that all {tables} tables of the dump exist")
            }
            Step::AllowConnections { db } => write!(f, "allow connections to {} again", ident(db)),
        }
    }
}

/// How pg_restore runs.
#[derive(Debug, Clone)]
pub struct PgRestoreRun {
    pub jobs: u32,
    pub mode: RestoreMode,
    pub no_owner: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreMode {
    /// One pg_restore reading the dump as it streams from the repository.
    Stream,
    /// A backup that records where each table's data is: the schema, then
    /// `jobs` pg_restore processes each streaming its tables' data, then
    /// post-data with `--jobs`. No temporary copy.
    Split,
    /// Older backups: `pg_restore --jobs` from a temporary copy in this directory.
    TempCopy(PathBuf),
}

/// What a restore will do, and with what.
pub struct Plan {
    pub target: String,
    pub backup_id: Id,
    pub record: BackupRecord,
    pub dest: Connection,
    pub dest_db: String,
    /// The destination server's server_version_num.
    pub dest_version: u32,
    pub exists: bool,
    pub steps: Vec<Step>,
}

pub struct RestoreOutcome {
    pub backup_id: Id,
    pub database: String,
    pub tables: usize,
    pub seconds: f64,
    pub steps: Vec<String>,
}

pub fn run(
    ctx: &Context,
    target_name: &str,
    opts: &RestoreOptions,
) -> Result<Option<RestoreOutcome>> {
    let target = ctx.target(target_name)?;
    if target.method == crate::config::Method::Physical {
        return physical(ctx, target_name, opts);
    }
    let physical_only = opts.physical.given();
    if !physical_only.is_empty() {
        bail!(usage(format!(
            "target {target_name:?} is logical: {} {} for physical targets only; hint: --into URL restores into another database",
            physical_only.join(", "),
            if physical_only.len() == 1 {
                "is"
            } else {
                "are"
            }
        )));
    }
    // Bad input first: before looking for the backup in the repositories.
    if let Some(url) = &opts.into {
        super::connection_from(url, "--into")?;
    }
    let (repo_name, repo) = ctx.open_for_restore(
        target_name,
        opts.backup.as_deref(),
        opts.repository.as_deref(),
    )?;
    repo.check_can_read()?;
    let tools = PgTools::locate(target.pg_bindir.as_deref()).map_err(|e| usage(e.to_string()))?;
    let index = repo.load_index()?;
    let plan = plan(ctx, &repo, &index, &tools, target_name, opts)?;

    println!(
        "restore backup {} of {} (taken {}) into database {} on {}",
        plan.backup_id.short(),
        plan.target,
        plan.record.started.format("%Y-%m-%d %H:%M:%S UTC"),
        plan.dest_db,
        plan.dest.describe()
    );
    for (i, s) in plan.steps.iter().enumerate() {
        println!("  {}. {s}", i + 1);
    }
    let packs = repo.packs_of(&index, [&plan.record]);
    let rc = ctx.config.repository(&repo_name)?;
    super::retrieve::ensure_readable(ctx, &repo, rc, &packs, opts.retrieval())?;
    if opts.dry_run {
        println!("dry run: nothing was changed");
        return Ok(None);
    }
    if ((plan.exists && opts.clean) || opts.globals) && !opts.yes {
        confirm(&plan, opts.globals)?;
    }
    watch_for_interrupts();
    apply(ctx, &repo, &index, &tools, &plan).map(Some)
}

/// A physical target: point-in-time recovery into a data directory.
fn physical(
    ctx: &Context,
    target_name: &str,
    opts: &RestoreOptions,
) -> Result<Option<RestoreOutcome>> {
    if opts.into.is_some() || opts.clean || opts.globals || opts.no_owner {
        bail!(usage(format!(
            "target {target_name:?} is physical: --into, --clean, --globals and --no-owner are for logical targets; hint: --data-dir DIR"
        )));
    }
    let jobs = opts
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u32));
    let outcome = super::pitr::run(ctx, target_name, opts, jobs)?;
    if let Some(o) = outcome {
        println!(
            "restored backup {} into {} in {:.1} s",
            o.backup_id.short(),
            o.data_dir.display(),
            o.seconds
        );
        match (o.started, opts.physical.standby) {
            (Some(conn), false) => {
                println!("the server is up and promoted: connect with {conn}")
            }
            (Some(conn), true) => println!(
                "the standby is up, consistent and replaying (read-only): connect with {conn}"
            ),
            (None, false) => println!(
                "start it with: pg_ctl -D {} start (it recovers to the target, then promotes)",
                o.data_dir.display()
            ),
            (None, true) => println!(
                "start it with: pg_ctl -D {} start (a standby: it stays in recovery until promoted with pg_ctl promote)",
                o.data_dir.display()
            ),
        }
    }
    Ok(None)
}

/// Decide every step, and check everything that can be checked, before
/// anything is changed: a restore that cannot finish must not start dropping.
pub fn plan(
    ctx: &Context,
    repo: &Repository,
    index: &Index,
    tools: &PgTools,
    target_name: &str,
    opts: &RestoreOptions,
) -> Result<Plan> {
    let target = ctx.target(target_name)?;
    let own = opts.into.is_none();
    let dest = match &opts.into {
        Some(url) => super::connection_from(url, "--into")?,
        None => ctx.connection(target_name)?,
    };
    let (backup_id, record) = super::select_backup(repo, target_name, opts.backup.as_deref())?;
    let mut needed = vec!["dump"];
    if opts.globals {
        needed.push("globals");
    }
    for name in needed {
        let stream = record
            .stream(name)
            .ok_or_else(|| usage(format!("backup {} has no {name} stream", backup_id.short())))?;
        if let Some(id) = stream.chunks.iter().find(|id| !index.contains(id)) {
            bail!(
                "backup {} cannot be restored: its {name} needs blob {}, which is not in any index (a missing or damaged index file); hint: `lifeboat verify` tells more, and `lifeboat prune` re-indexes packs whose index was lost",
                backup_id.short(),
                id.short()
            );
        }
    }
    let dumped_by = record.tools.get("pg_dump").and_then(|v| parse_major(v));
    if let Some(major) = dumped_by.filter(|m| *m > tools.major) {
        bail!(usage(format!(
            "pg_restore {} cannot read a dump made by pg_dump {major}; hint: install the PostgreSQL {major} client programs or set pg_bindir",
            tools.major
        )));
    }

    let dest_db = dest.dbname().map(str::to_string).ok_or_else(|| {
        usage("the destination names no database; hint: give --into postgres://HOST/DBNAME")
    })?;
    let maint = dest.with_dbname("postgres");
    let rows = tools
        .query(
            &maint,
            &format!(
                "SELECT 1 FROM pg_database WHERE datname = {}",
                literal(&dest_db)
            ),
        )
        .map_err(|e| connect_error(&maint, e))?;
    let exists = !rows.is_empty();
    let dest_version: u32 = tools
        .query(&maint, "SHOW server_version_num")
        .map_err(|e| connect_error(&maint, e))?
        .first()
        .and_then(|r| r[0].parse().ok())
        .unwrap_or(0);
    if exists && opts.clean && record.dump.is_none() {
        bail!(usage(format!(
            "backup {} has no table of contents, so lifeboat cannot tell what --clean must drop; hint: restore --into a new database",
            backup_id.short()
        )));
    }
    let blocks_known = record
        .dump
        .as_ref()
        .is_some_and(|d| !d.data_blocks.is_empty());
    let mode = match opts.jobs.unwrap_or(1) {
        0 | 1 => RestoreMode::Stream,
        _ if blocks_known => RestoreMode::Split,
        _ => RestoreMode::TempCopy(opts.temp_dir.clone().unwrap_or_else(std::env::temp_dir)),
    };
    if let RestoreMode::TempCopy(dir) = &mode {
        let need = record.stream("dump").map_or(0, |s| s.size);
        let free = fs4::available_space(dir)
            .with_context(|| format!("cannot check free space in {}", dir.display()))?;
        if free < need {
            bail!(usage(format!(
                "not enough space in {} for the temporary dump copy ({} needed, {} free); hint: pass --temp-dir DIR, or restore without --jobs",
                dir.display(),
                human_bytes(need),
                human_bytes(free)
            )));
        }
    }

    let dump = record.dump.clone().unwrap_or_default();
    let mut steps = Vec::new();
    if !exists {
        steps.push(Step::CreateDatabase {
            name: dest_db.clone(),
        });
    } else {
        let existing = user_tables(tools, &dest)?;
        if !opts.clean && !existing.is_empty() {
            let (s, t) = &existing[0];
            bail!(usage(format!(
                "database {dest_db:?} already has {} tables (e.g. {}.{}); hint: add --clean to replace its contents, or restore --into a new database",
                existing.len(),
                ident(s),
                ident(t)
            )));
        }
    }
    if opts.globals {
        steps.push(Step::Globals);
    }
    let cleaning = exists && opts.clean;
    if cleaning {
        if own && !target.hooks.before_restore.is_empty() {
            steps.push(Step::Hooks {
                phase: "before_restore",
                commands: target.hooks.before_restore.clone(),
            });
        }
        let superuser = tools
            .query(
                &maint,
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            )
            .map(|r| r.first().is_some_and(|r| r[0] == "t"))
            .unwrap_or(false);
        steps.push(Step::BlockConnections {
            db: dest_db.clone(),
            superuser,
        });
        let mut schemas: Vec<String> = dump
            .schemas
            .iter()
            .filter(|s| !crate::pg::dumpfile::is_system_schema(s))
            .cloned()
            .collect();
        if !schemas.iter().any(|s| s == "public") {
            schemas.insert(0, "public".into());
        }
        steps.push(Step::DropSchemas {
            schemas,
            large_objects: dump.large_objects,
        });
    }
    steps.push(Step::PgRestore(PgRestoreRun {
        jobs: opts.jobs.unwrap_or(1).max(1),
        mode,
        no_owner: opts.no_owner,
    }));
    steps.push(Step::CheckTables {
        tables: dump.tables.len(),
    });
    if cleaning {
        steps.push(Step::AllowConnections {
            db: dest_db.clone(),
        });
        if own && !target.hooks.after_restore.is_empty() {
            steps.push(Step::Hooks {
                phase: "after_restore",
                commands: target.hooks.after_restore.clone(),
            });
        }
    }
    Ok(Plan {
        target: target_name.into(),
        backup_id,
        record,
        dest,
        dest_db,
        dest_version,
        exists,
        steps,
    })
}

fn confirm(plan: &Plan, globals: bool) -> Result<()> {
    let what = match (plan.exists, globals) {
        (true, true) => "replace the contents of database {db:?} and change roles on its server",
        (true, false) => "replace the contents of database {db:?}",
        _ => "change roles and tablespaces on the server of database {db:?}",
    }
    .replace("{db:?}", &format!("{:?}", plan.dest_db));
    if !std::io::stdin().is_terminal() {
        bail!(usage(format!(
            "refusing to {what} without confirmation; hint: pass --yes (see the steps above, or --dry-run)"
        )));
    }
    eprint!("This will {what}. Type the database name to continue: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if answer.trim() != plan.dest_db {
        bail!(usage("not confirmed; nothing was changed"));
    }
    Ok(())
}

fn user_tables(tools: &PgTools, conn: &Connection) -> Result<Vec<(String, String)>> {
    let rows = tools
        .query(
            conn,
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' ORDER BY 1, 2",
        )
        .map_err(|e| connect_error(conn, e))?;
    Ok(rows
        .into_iter()
        .filter(|r| r.len() == 2)
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect())
}

pub fn apply(
    ctx: &Context,
    repo: &Repository,
    index: &Index,
    tools: &PgTools,
    plan: &Plan,
) -> Result<RestoreOutcome> {
    let clock = Instant::now();
    let maint = plan.dest.with_dbname("postgres");
    let mut blocked: Option<String> = None;
    let mut done = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        if !ctx.quiet {
            eprintln!("step {}/{}: {step}", i + 1, plan.steps.len());
        }
        let result = if interrupted() {
            Err(anyhow!("interrupted"))
        } else {
            run_step(ctx, repo, index, tools, plan, &maint, step, &mut blocked)
        };
        if let Err(e) = result {
            let text = format!("{e:#}");
            let (cause, hint) = match text.split_once("; hint: ") {
                Some((c, h)) => (c.to_string(), Some(h.to_string())),
                None => (text, None),
            };
            let mut msg = format!("restore failed at step {} ({step}): {cause}", i + 1);
            if let Some(limit) = blocked.take() {
                match allow_connections(tools, &maint, &plan.dest_db, &limit) {
                    Ok(()) => msg.push_str("; connections to the database are allowed again"),
                    Err(e2) => msg.push_str(&format!(
                        "; and allowing connections again failed too ({e2:#}): run ALTER DATABASE {} CONNECTION LIMIT {limit}",
                        ident(&plan.dest_db)
                    )),
                }
            }
            if let Some(h) = hint {
                msg.push_str(&format!("; hint: {h}"));
            }
            return Err(anyhow!(msg));
        }
        done.push(step.to_string());
    }
    Ok(RestoreOutcome {
        backup_id: plan.backup_id,
        database: plan.dest_db.clone(),
        tables: plan.record.dump.as_ref().map_or(0, |d| d.tables.len()),
        seconds: clock.elapsed().as_secs_f64(),
        steps: done,
    })
}

#[allow(clippy::too_many_arguments)]
fn run_step(
    ctx: &Context,
    repo: &Repository,
    index: &Index,
    tools: &PgTools,
    plan: &Plan,
    maint: &Connection,
    step: &Step,
    blocked: &mut Option<String>,
) -> Result<()> {
    let db = &plan.dest_db;
    match step {
        Step::Hooks { phase, commands } => run_hooks(phase, commands, plan),
        Step::CreateDatabase { name } => create_database(tools, maint, name, &plan.record),
        Step::Globals => restore_globals(repo, index, tools, maint, &plan.record),
        Step::BlockConnections { db, superuser } => {
            if *superuser {
                let rows = tools.query(
                    maint,
                    &format!(
                        "SELECT datconnlimit FROM pg_database WHERE datname = {}",
                        literal(db)
                    ),
                )?;
                let mut limit = rows.first().map_or("-1".to_string(), |r| r[0].clone());
                if limit == "0" {
                    // Most likely an earlier restore that was killed mid-way.
                    eprintln!(
                        "warning: {} already had CONNECTION LIMIT 0 (an interrupted restore?); it will be unlimited (-1) afterwards",
                        ident(db)
                    );
                    limit = "-1".into();
                }
                eprintln!(
                    "note: if lifeboat is killed before it finishes, allow connections again with: ALTER DATABASE {} CONNECTION LIMIT {limit};",
                    ident(db)
                );
                tools.execute(
                    maint,
                    &format!("ALTER DATABASE {} CONNECTION LIMIT 0", ident(db)),
                )?;
                *blocked = Some(limit);
            }
            tools.execute(
                maint,
                &format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()",
                    literal(db)
                ),
            )?;
            Ok(())
        }
        Step::DropSchemas {
            schemas,
            large_objects,
        } => {
            // One transaction per schema, so a schema with thousands of
            // tables does not need all their locks at once with the others'.
            for s in schemas {
                tools.execute(
                    &plan.dest,
                    &format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(s)),
                )?;
            }
            // Recreate public as initdb on the destination's version makes it.
            let public = if plan.dest_version >= 150000 {
                "CREATE SCHEMA IF NOT EXISTS public AUTHORIZATION pg_database_owner; GRANT USAGE ON SCHEMA public TO PUBLIC"
            } else {
                "CREATE SCHEMA IF NOT EXISTS public; GRANT ALL ON SCHEMA public TO PUBLIC"
            };
            tools.execute(&plan.dest, public)?;
            if *large_objects {
                // In batches: each lo_unlink takes a lock until commit.
                loop {
                    let rows = tools.query(
                        &plan.dest,
                        "SELECT count(lo_unlink(oid)) FROM (SELECT oid FROM pg_largeobject_metadata LIMIT 10000) lo",
                    )?;
                    if rows.first().is_none_or(|r| r[0] == "0") {
                        break;
                    }
                }
            }
            Ok(())
        }
        Step::PgRestore(run) => {
            let stream = plan
                .record
                .stream("dump")
                .context("the backup has no dump stream")?;
            Restorer {
                ctx,
                repo,
                index,
                tools,
                plan,
                stream,
                run,
            }
            .restore()
        }
        Step::CheckTables { .. } => check_tables(tools, plan),
        Step::AllowConnections { db: _ } => {
            if let Some(limit) = blocked.take() {
                allow_connections(tools, maint, db, &limit)?;
            }
            Ok(())
        }
    }
}

fn allow_connections(tools: &PgTools, maint: &Connection, db: &str, limit: &str) -> Result<()> {
    let limit: i64 = limit.parse().unwrap_or(-1);
    tools.execute(
        maint,
        &format!("ALTER DATABASE {} CONNECTION LIMIT {limit}", ident(db)),
    )?;
    Ok(())
}

fn run_hooks(phase: &str, commands: &[String], plan: &Plan) -> Result<()> {
    for c in commands {
        let mut cmd = std::process::Command::new("sh");
        crate::pg::process::scrub_secrets(&mut cmd);
        let status = cmd
            .arg("-c")
            .arg(c)
            .env("LIFEBOAT_TARGET", &plan.target)
            .env("LIFEBOAT_DATABASE", &plan.dest_db)
            .env("LIFEBOAT_BACKUP_ID", plan.backup_id.to_hex())
            .env("LIFEBOAT_HOOK", phase)
            .status()
            .with_context(|| format!("could not run hook {c:?}"))?;
        if !status.success() {
            bail!("hook {c:?} failed ({status})");
        }
    }
    Ok(())
}

fn create_database(
    tools: &PgTools,
    maint: &Connection,
    name: &str,
    rec: &BackupRecord,
) -> Result<()> {
    let d = &rec.database;
    let base = format!("CREATE DATABASE {} TEMPLATE template0", ident(name));
    let with_locale = format!(
        "{base} ENCODING {} LC_COLLATE {} LC_CTYPE {}",
        literal(&d.encoding),
        literal(&d.collate),
        literal(&d.ctype)
    );
    if d.encoding.is_empty() {
        return tools.execute(maint, &base).map_err(|e| e.into());
    }
    match tools.execute(maint, &with_locale) {
        Ok(()) => Ok(()),
        Err(e)
            if e.stderr()
                .is_some_and(|s| s.contains("locale") || s.contains("collation")) =>
        {
            eprintln!(
                "warning: this server lacks the backup's locale ({}); creating {} with encoding {} and the server's default locale",
                d.collate,
                ident(name),
                d.encoding
            );
            tools.execute(maint, &format!("{base} ENCODING {}", literal(&d.encoding)))?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn restore_globals(
    repo: &Repository,
    index: &Index,
    tools: &PgTools,
    maint: &Connection,
    rec: &BackupRecord,
) -> Result<()> {
    let stream = rec
        .stream("globals")
        .context("this backup has no globals (the target has globals = false)")?;
    let mut sql = Vec::new();
    let mut reader = repo.read_stream(index, stream)?;
    if let Err(e) = reader.read_to_end(&mut sql) {
        return Err(super::stream_error(&mut reader, e));
    }
    let script = globals_script(&String::from_utf8_lossy(&sql))?;
    let mut file = tempfile::Builder::new()
        .prefix("lifeboat-globals-")
        .tempfile()?;
    file.write_all(script.as_bytes())?;
    file.flush()?;
    let mut cmd = tools.command("psql")?;
    cmd.args(["-X", "-q", "-w", "-v", "ON_ERROR_STOP=0", "-f"])
        .arg(file.path());
    maint.apply(&mut cmd);
    let mut child = process::spawn(cmd, Stdio::null())?;
    std::io::copy(&mut child.stdout(), &mut std::io::sink())?;
    let stderr = child.wait()?;
    // Roles that already exist are expected on an existing server.
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ERROR") && !l.contains("already exists"))
        .collect();
    for p in &problems {
        eprintln!("warning: globals: {p}");
    }
    Ok(())
}

/// The globals SQL as psql may run it: psql meta-commands (`\\! shell`) are
/// refused, so a forged backup cannot run commands on the restore host.
/// pg_dumpall's own `\\restrict` guard lines are dropped.
fn globals_script(sql: &str) -> Result<String> {
    let mut out = String::with_capacity(sql.len());
    for line in sql.lines() {
        let t = line.trim_start();
        if t.starts_with("\\restrict") || t.starts_with("\\unrestrict") {
            continue;
        }
        if t.starts_with('\\') {
            bail!(
                "the backup's globals contain a psql meta-command ({}); refusing to run them",
                t.split_whitespace().next().unwrap_or(t)
            );
        }
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// One pg_restore step: what it reads and what it runs with.
struct Restorer<'a> {
    ctx: &'a Context,
    repo: &'a Repository,
    index: &'a Index,
    tools: &'a PgTools,
    plan: &'a Plan,
    stream: &'a Stream,
    run: &'a PgRestoreRun,
}

/// Bytes fed to pg_restore so far, for the progress bar (shared by the
/// parallel feeders).
struct Fed<'a> {
    bytes: std::sync::atomic::AtomicU64,
    progress: &'a Progress,
}

/// A stream reader that counts into `Fed` and stops on SIGINT/SIGTERM.
struct Counted<'a, 'f> {
    inner: &'a mut StreamReader,
    fed: &'a Fed<'f>,
}

impl Read for Counted<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if interrupted() {
            return Err(std::io::Error::other("interrupted"));
        }
        let n = self.inner.read(buf)?;
        let before = self
            .fed
            .bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        self.fed.progress.set(before + n as u64);
        Ok(n)
    }
}

impl Restorer<'_> {
    fn restore(&self) -> Result<()> {
        let progress = Progress::bytes("restore", Some(self.stream.size), self.ctx.quiet);
        let fed = Fed {
            bytes: Default::default(),
            progress: &progress,
        };
        let result = match &self.run.mode {
            RestoreMode::Split => self.split(&fed),
            RestoreMode::TempCopy(dir) => self.via_temp_copy(dir, &fed),
            RestoreMode::Stream => {
                let reader = self.repo.read_stream(self.index, self.stream);
                self.feed(self.command()?, &[], std::iter::once(reader), &fed)
            }
        };
        progress.finish();
        result
    }

    fn command(&self) -> Result<std::process::Command> {
        let mut cmd = self.tools.command("pg_restore")?;
        cmd.args(["--exit-on-error", "--no-password"]);
        // Commits do not wait for WAL flushes (check_tables makes everything
        // durable before the restore is reported done). maintenance_work_mem is
        // left alone on purpose: raising it lets every pg_restore job start
        // parallel index builds, which oversubscribes small servers (measured:
        // +40% with -j2 on 2 cores). The user's own PGOPTIONS come last and win.
        let user_options = std::env::var("PGOPTIONS").unwrap_or_default();
        cmd.env("PGOPTIONS", format!("{RESTORE_SETTINGS} {user_options}"));
        if self.run.no_owner {
            cmd.arg("--no-owner");
        }
        self.plan.dest.apply(&mut cmd);
        Ok(cmd)
    }

    /// Run pg_restore reading `head`, then each reader in turn, on its
    /// standard input. If the repository fails (or we are interrupted),
    /// pg_restore is stopped and that error returned; if pg_restore stops
    /// reading, its own message says why.
    fn feed(
        &self,
        cmd: std::process::Command,
        head: &[u8],
        readers: impl Iterator<Item = crate::repo::Result<StreamReader>>,
        fed: &Fed,
    ) -> Result<()> {
        let mut child = process::spawn(cmd, Stdio::piped())?;
        let mut stdin = child.stdin();
        let mut failed: Option<anyhow::Error> = None;
        let mut broken = stdin.write_all(head).is_err();
        for reader in readers {
            if broken {
                break;
            }
            let mut reader = match reader {
                Ok(r) => r,
                Err(e) => {
                    failed = Some(e.into());
                    break;
                }
            };
            let copied = std::io::copy(
                &mut Counted {
                    inner: &mut reader,
                    fed,
                },
                &mut stdin,
            );
            if let Err(e) = copied {
                match reader.take_error() {
                    Some(re) => failed = Some(re.into()),
                    None if interrupted() => failed = Some(e.into()),
                    None => broken = true,
                }
                break;
            }
        }
        drop(stdin);
        if let Some(e) = failed {
            child.kill();
            let _ = child.wait();
            return Err(e);
        }
        child.wait()?;
        if broken {
            bail!("pg_restore stopped reading its input");
        }
        Ok(())
    }

    /// Parallel restore of a backup that does not record its data blocks:
    /// pg_restore --jobs needs a seekable file.
    fn via_temp_copy(&self, dir: &std::path::Path, fed: &Fed) -> Result<()> {
        let mut reader = self.repo.read_stream(self.index, self.stream)?;
        let size = self.stream.size;
        let free = fs4::available_space(dir).unwrap_or(u64::MAX);
        eprintln!(
            "parallel restore needs {} of temporary space in {} ({} free)",
            human_bytes(size),
            dir.display(),
            human_bytes(free)
        );
        if free < size {
            bail!(usage(format!(
                "not enough space in {} for the temporary dump copy; hint: pass --temp-dir DIR with at least {} free, or restore without --jobs",
                dir.display(),
                human_bytes(size)
            )));
        }
        let mut tmp = tempfile::Builder::new()
            .prefix("lifeboat-restore-")
            .suffix(".dump")
            .tempfile_in(dir)?;
        // A dump streamed from pg_dump has no data offsets in its TOC; fill
        // them in so each pg_restore worker seeks to its table's data instead
        // of scanning the file from the start.
        let mut scanner = BlockScanner::default();
        let mut counted = Counted {
            inner: &mut reader,
            fed,
        };
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match counted.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(super::stream_error(&mut reader, e)),
            };
            scanner.feed(&buf[..n]);
            tmp.as_file_mut().write_all(&buf[..n])?;
        }
        match scanner.finish() {
            Ok((toc, found)) => {
                patch_data_offsets(tmp.as_file_mut(), &toc, &found)?;
            }
            Err(e) => eprintln!(
                "warning: could not index the dump's data blocks ({e}); pg_restore will scan for them"
            ),
        }
        tmp.as_file_mut().flush()?;
        let mut cmd = self.command()?;
        cmd.arg(format!("--jobs={}", self.run.jobs)).arg(tmp.path());
        process::spawn(cmd, Stdio::null())?.wait()?;
        Ok(())
    }

    /// A parallel restore without a temporary copy of the dump. pg_restore
    /// can only run jobs in parallel from a seekable file, but one pg_restore
    /// reading a stream restores any subset of the archive given as a `-L`
    /// list, if the stream holds the header, the TOC and that subset's data
    /// blocks in archive order. So: the schema (pre-data) from header + TOC;
    /// the tables' data split over `jobs` pg_restore processes, largest first
    /// to the least loaded one, each fed only its blocks from the repository;
    /// then indexes, constraints and the rest (post-data) with `--jobs` from a
    /// file holding just the header and TOC (those entries have no data).
    fn split(&self, fed: &Fed) -> Result<()> {
        let (repo, index, stream) = (self.repo, self.index, self.stream);
        let mut blocks = self
            .plan
            .record
            .dump
            .as_ref()
            .map(|d| d.data_blocks.clone())
            .unwrap_or_default();
        blocks.sort_by_key(|b| b.1);
        let prefix_len = blocks.first().map_or(stream.size, |b| b.1);
        let ranges: Vec<(i32, std::ops::Range<u64>)> = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| (b.0, b.1..blocks.get(i + 1).map_or(stream.size, |n| n.1)))
            .collect();
        if ranges
            .iter()
            .any(|(_, r)| r.start >= r.end || r.end > stream.size)
        {
            bail!(
                "the backup's data block positions do not fit its dump; hint: restore without --jobs"
            );
        }
        let mut prefix = Vec::new();
        let mut reader = repo.read_stream_range(index, stream, 0..prefix_len)?;
        if let Err(e) = reader.read_to_end(&mut prefix) {
            return Err(super::stream_error(&mut reader, e));
        }
        drop(reader);
        let toc = crate::pg::dumpfile::parse_toc(&prefix)
            .map_err(|e| anyhow!("the dump's table of contents: {e}"))?;

        // Pre-data: tables, types, functions... from header + TOC alone.
        let mut cmd = self.command()?;
        cmd.arg("--section=pre-data");
        self.feed(cmd, &prefix, std::iter::empty(), fed)?;

        // Data: one `-L` list per worker, each fed its units.
        let (units, assigned) = split_data(&ranges, self.run.jobs);
        // Data entries without a block (sequence values) go to the first worker.
        let with_block: std::collections::HashSet<i32> = ranges.iter().map(|r| r.0).collect();
        let blockless: Vec<i32> = toc
            .entries
            .iter()
            .filter(|e| e.section == 3 && !with_block.contains(&e.dump_id))
            .map(|e| e.dump_id)
            .collect();
        let lists = tempfile::Builder::new()
            .prefix("lifeboat-restore-")
            .tempdir()?;
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = assigned
                .iter()
                .enumerate()
                .filter(|(w, mine)| !mine.is_empty() || (*w == 0 && !blockless.is_empty()))
                .map(|(w, mine)| {
                    let first = if w == 0 { &blockless[..] } else { &[] };
                    let ids = first
                        .iter()
                        .chain(mine.iter().flat_map(|&i| units[i].0.iter()));
                    let list: String = ids.map(|id| format!("{id};\n")).collect();
                    let path = lists.path().join(format!("data-{w}.list"));
                    let (prefix, units) = (&prefix, &units);
                    s.spawn(move || -> Result<()> {
                        std::fs::write(&path, list)?;
                        let mut cmd = self.command()?;
                        cmd.arg("--section=data").arg("--use-list").arg(&path);
                        let readers = mine
                            .iter()
                            .map(|&i| repo.read_stream_range(index, stream, units[i].1.clone()));
                        self.feed(cmd, prefix, readers, fed)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("a restore feeder panicked")))
                })
                .collect()
        });
        for r in results {
            r?;
        }

        // Post-data: indexes, constraints, triggers, ACLs, in parallel.
        let toc_file = lists.path().join("toc.dump");
        std::fs::write(&toc_file, &prefix)?;
        let mut cmd = self.command()?;
        cmd.arg("--section=post-data")
            .arg(format!("--jobs={}", self.run.jobs.max(1)))
            .arg(&toc_file);
        process::spawn(cmd, Stdio::null())?.wait()?;
        Ok(())
    }
}

/// Data blocks restored together: their dump ids and their bytes in the dump.
type Unit = (Vec<i32>, std::ops::Range<u64>);

/// Group the data blocks into units (neighbouring small blocks travel
/// together, so that a thousand small tables do not each fetch and decrypt
/// the chunk they share) and give the units to `jobs` workers, largest first
/// to the least loaded. Returns the units (dump ids, byte range) and, per
/// worker, its units in archive order.
fn split_data(ranges: &[(i32, std::ops::Range<u64>)], jobs: u32) -> (Vec<Unit>, Vec<Vec<usize>>) {
    let mut units: Vec<Unit> = Vec::new();
    for (id, r) in ranges {
        match units.last_mut() {
            Some((ids, u))
                if r.end - r.start < SMALL_BLOCK
                    && u.end == r.start
                    && u.end - u.start < SMALL_BLOCK =>
            {
                ids.push(*id);
                u.end = r.end;
            }
            _ => units.push((vec![*id], r.clone())),
        }
    }
    let jobs = (jobs as usize).max(1);
    let mut load = vec![0u64; jobs];
    let mut assigned: Vec<Vec<usize>> = vec![Vec::new(); jobs];
    let mut by_size: Vec<usize> = (0..units.len()).collect();
    by_size.sort_by_key(|&i| std::cmp::Reverse(units[i].1.end - units[i].1.start));
    for i in by_size {
        let w = (0..jobs).min_by_key(|&w| load[w]).unwrap_or(0);
        load[w] += units[i].1.end - units[i].1.start;
        assigned[w].push(i);
    }
    for mine in &mut assigned {
        mine.sort();
    }
    (units, assigned)
}

/// Data blocks smaller than this are restored together with their neighbours.
const SMALL_BLOCK: u64 = 4 << 20;

/// Session settings for pg_restore's connections (see `pg_restore`).
const RESTORE_SETTINGS: &str = "-c synchronous_commit=off";

fn check_tables(tools: &PgTools, plan: &Plan) -> Result<()> {
    // pg_restore committed asynchronously; one synchronous commit flushes the
    // WAL up to here, so everything restored is durable before we say so.
    tools.execute(
        &plan.dest,
        "SET synchronous_commit = on; BEGIN; SELECT txid_current(); COMMIT;",
    )?;
    let Some(dump) = &plan.record.dump else {
        bail!("this backup has no table list, so the restore cannot be checked");
    };
    let present: std::collections::HashSet<(String, String)> =
        user_tables(tools, &plan.dest)?.into_iter().collect();
    let missing: Vec<String> = dump
        .tables
        .iter()
        .filter(|t| !present.contains(t))
        .map(|(s, t)| format!("{}.{}", ident(s), ident(t)))
        .collect();
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
        bail!(
            "{} of {} tables of the dump are missing after pg_restore: {}",
            missing.len(),
            dump.tables.len(),
            shown.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn small_neighbouring_blocks_travel_together_and_big_ones_spread() {
        const M: u64 = 1 << 20;
        // Three small tables, a big one, two small ones, another big one.
        let ranges = vec![
            (1, 0..M),
            (2, M..2 * M),
            (3, 2 * M..3 * M),
            (4, 3 * M..13 * M),
            (5, 13 * M..14 * M),
            (6, 14 * M..15 * M),
            (7, 15 * M..23 * M),
        ];
        let (units, assigned) = super::split_data(&ranges, 2);
        let ids: Vec<Vec<i32>> = units.iter().map(|u| u.0.clone()).collect();
        assert_eq!(ids, [vec![1, 2, 3], vec![4], vec![5, 6], vec![7]]);
        // Largest first to the least loaded: 10 MiB | 8 MiB, then 3 MiB joins
        // the 8, then 2 MiB joins the 10; each worker in archive order.
        assert_eq!(assigned, [vec![1, 2], vec![0, 3]]);
        let (_, one) = super::split_data(&ranges, 1);
        assert_eq!(one, [vec![0, 1, 2, 3]]);
    }

    #[test]
    fn globals_script_refuses_meta_commands() {
        let ok =
            super::globals_script("\\restrict abc\nCREATE ROLE a;\n\\unrestrict abc\n").unwrap();
        assert_eq!(ok, "CREATE ROLE a;\n");
        let err = super::globals_script("CREATE ROLE a;\n\\! rm -rf /\n").unwrap_err();
        assert!(err.to_string().contains("meta-command"), "{err}");
    }
}
