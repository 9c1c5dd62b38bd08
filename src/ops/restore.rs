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
use super::{Context, human_bytes, usage};
use crate::codec::Id;
use crate::format::{BackupRecord, Stream};
use crate::pg::conninfo::ConnInfo;
use crate::pg::process::{self, Connection};
use crate::pg::tools::{PgTools, ident, literal};
use crate::repo::{Index, Repository};

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
    /// Parallel pg_restore jobs (uses a temporary copy of the dump)
    #[arg(long, short, default_value_t = 1)]
    pub jobs: u32,
    /// Print the steps without changing anything
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation
    #[arg(long, short)]
    pub yes: bool,
    /// Apply the backup's roles and tablespaces first (for a new server)
    #[arg(long)]
    pub globals: bool,
    /// Do not restore ownership (pg_restore --no-owner)
    #[arg(long)]
    pub no_owner: bool,
    /// Where --jobs puts its temporary copy (default: $TMPDIR)
    #[arg(long, value_name = "DIR")]
    pub temp_dir: Option<PathBuf>,
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
                "apply the backup's globals (roles, tablespaces); existing ones are kept"
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
                match &run.temp_dir {
                    Some(dir) => write!(
                        f,
                        "pg_restore with {} jobs from a temporary copy in {}",
                        run.jobs,
                        dir.display()
                    )?,
                    None => write!(f, "pg_restore streaming from the repository")?,
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
    /// Parallel restores read a temporary copy of the dump from here.
    pub temp_dir: Option<PathBuf>,
    pub no_owner: bool,
}

/// What a restore will do, and with what.
pub struct Plan {
    pub target: String,
    pub backup_id: Id,
    pub record: BackupRecord,
    pub dest: Connection,
    pub dest_db: String,
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
    let (repo_name, _) = ctx.target_repository(target_name)?;
    let repo = ctx.open_repository(&repo_name)?;
    repo.check_can_read()?;
    let tools = PgTools::locate(target.pg_bindir.as_deref()).map_err(|e| usage(e.to_string()))?;
    let plan = plan(ctx, &repo, &tools, target_name, opts)?;

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
    if opts.dry_run {
        println!("dry run: nothing was changed");
        return Ok(None);
    }
    if plan.exists && opts.clean && !opts.yes {
        confirm(&plan)?;
    }
    apply(ctx, &repo, &tools, &plan).map(Some)
}

pub fn plan(
    ctx: &Context,
    repo: &Repository,
    tools: &PgTools,
    target_name: &str,
    opts: &RestoreOptions,
) -> Result<Plan> {
    let target = ctx.target(target_name)?;
    let (backup_id, record) =
        super::export::select_backup(repo, target_name, opts.backup.as_deref())?;
    let own = opts.into.is_none();
    let dest = match &opts.into {
        Some(url) => {
            Connection::new(&ConnInfo::parse(url).map_err(|e| usage(format!("--into: {e}")))?)
        }
        None => ctx.connection(target_name)?,
    };
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
    let temp_dir =
        (opts.jobs > 1).then(|| opts.temp_dir.clone().unwrap_or_else(std::env::temp_dir));
    steps.push(Step::PgRestore(PgRestoreRun {
        jobs: opts.jobs.max(1),
        temp_dir,
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
        exists,
        steps,
    })
}

fn confirm(plan: &Plan) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!(usage(format!(
            "refusing to replace the contents of database {:?} without confirmation; hint: pass --yes (see the steps above, or --dry-run)",
            plan.dest_db
        )));
    }
    eprint!(
        "This replaces the contents of database {:?}. Type the database name to continue: ",
        plan.dest_db
    );
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
    tools: &PgTools,
    plan: &Plan,
) -> Result<RestoreOutcome> {
    let clock = Instant::now();
    let index = repo.load_index()?;
    let maint = plan.dest.with_dbname("postgres");
    let mut blocked: Option<String> = None;
    let mut done = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        if !ctx.quiet {
            eprintln!("step {}/{}: {step}", i + 1, plan.steps.len());
        }
        let result = run_step(ctx, repo, &index, tools, plan, &maint, step, &mut blocked);
        if let Err(e) = result {
            let mut msg = format!("restore failed at step {} ({step}): {e:#}", i + 1);
            if let Some(limit) = blocked.take() {
                match allow_connections(tools, &maint, &plan.dest_db, &limit) {
                    Ok(()) => msg.push_str("; connections to the database are allowed again"),
                    Err(e2) => msg.push_str(&format!(
                        "; and allowing connections again failed too ({e2:#}): run ALTER DATABASE {} CONNECTION LIMIT {limit}",
                        ident(&plan.dest_db)
                    )),
                }
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
                let limit = rows.first().map_or("-1".to_string(), |r| r[0].clone());
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
            let mut sql = String::from("BEGIN;\n");
            for s in schemas {
                sql.push_str(&format!("DROP SCHEMA IF EXISTS {} CASCADE;\n", ident(s)));
            }
            // Recreate public as initdb makes it (owner and default grants).
            if plan.record.database.server_version_num >= 150000 {
                sql.push_str("CREATE SCHEMA public AUTHORIZATION pg_database_owner;\nGRANT USAGE ON SCHEMA public TO PUBLIC;\n");
            } else {
                sql.push_str("CREATE SCHEMA public;\nGRANT ALL ON SCHEMA public TO PUBLIC;\n");
            }
            if *large_objects {
                sql.push_str("SELECT count(lo_unlink(oid)) FROM pg_largeobject_metadata;\n");
            }
            sql.push_str("COMMIT;");
            tools.execute(&plan.dest, &sql)?;
            Ok(())
        }
        Step::PgRestore(run) => {
            let stream = plan
                .record
                .stream("dump")
                .context("the backup has no dump stream")?;
            pg_restore(ctx, repo, index, tools, plan, stream, run)
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
        let status = std::process::Command::new("sh")
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
        return Err(reader
            .take_error()
            .map(anyhow::Error::from)
            .unwrap_or_else(|| e.into()));
    }
    let mut cmd = tools.command("psql")?;
    cmd.args(["-X", "-q", "-w", "-v", "ON_ERROR_STOP=0"]);
    maint.apply(&mut cmd);
    let mut child = process::spawn(cmd, Stdio::piped())?;
    let mut stdin = child.stdin();
    let _ = stdin.write_all(&sql);
    drop(stdin);
    let mut out = child.stdout();
    std::io::copy(&mut out, &mut std::io::sink())?;
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

fn pg_restore(
    ctx: &Context,
    repo: &Repository,
    index: &Index,
    tools: &PgTools,
    plan: &Plan,
    stream: &Stream,
    run: &PgRestoreRun,
) -> Result<()> {
    let mut cmd = tools.command("pg_restore")?;
    cmd.args(["--exit-on-error", "--no-password"]);
    if run.no_owner {
        cmd.arg("--no-owner");
    }
    plan.dest.apply(&mut cmd);
    let progress = Progress::bytes("restore", Some(stream.size), ctx.quiet);
    let mut reader = repo.read_stream(index, stream)?;
    let mut counted = Counted {
        inner: &mut reader,
        n: 0,
        progress: &progress,
    };
    if let Some(dir) = run.temp_dir.as_deref() {
        let free = fs4::available_space(dir).unwrap_or(u64::MAX);
        eprintln!(
            "parallel restore needs {} of temporary space in {} ({} free)",
            human_bytes(stream.size),
            dir.display(),
            human_bytes(free)
        );
        if free < stream.size {
            bail!(usage(format!(
                "not enough space in {} for the temporary dump copy; hint: pass --temp-dir DIR with at least {} free, or restore without --jobs",
                dir.display(),
                human_bytes(stream.size)
            )));
        }
        let mut tmp = tempfile::Builder::new()
            .prefix("lifeboat-restore-")
            .suffix(".dump")
            .tempfile_in(dir)?;
        if let Err(e) = std::io::copy(&mut counted, tmp.as_file_mut()) {
            return Err(repo_or_io(counted.inner, e));
        }
        tmp.as_file_mut().flush()?;
        progress.finish();
        cmd.arg(format!("--jobs={}", run.jobs)).arg(tmp.path());
        let child = process::spawn(cmd, Stdio::null())?;
        child.wait()?;
        return Ok(());
    }
    let mut child = process::spawn(cmd, Stdio::piped())?;
    let mut stdin = child.stdin();
    let copied = std::io::copy(&mut counted, &mut stdin);
    drop(stdin);
    progress.finish();
    match copied {
        Ok(_) => {
            child.wait()?;
            Ok(())
        }
        Err(e) => {
            if let Some(re) = counted.inner.take_error() {
                child.kill();
                let _ = child.wait();
                return Err(re.into());
            }
            // pg_restore went away: its own message says why.
            child.wait()?;
            Err(e.into())
        }
    }
}

fn repo_or_io(reader: &mut crate::repo::StreamReader, e: std::io::Error) -> anyhow::Error {
    reader
        .take_error()
        .map(anyhow::Error::from)
        .unwrap_or_else(|| e.into())
}

struct Counted<'a> {
    inner: &'a mut crate::repo::StreamReader,
    n: u64,
    progress: &'a Progress,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        self.progress.set(self.n);
        Ok(n)
    }
}

fn check_tables(tools: &PgTools, plan: &Plan) -> Result<()> {
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
