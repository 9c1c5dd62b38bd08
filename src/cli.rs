//! The command line: parse, call an operation, print, map errors to exit codes.
//! Exit codes: 0 success, 1 the operation failed, 2 usage or configuration error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::ops::export::{ExportFormat, ExportOptions};
use crate::ops::restore::RestoreOptions;
use crate::ops::{self, Context, UsageError};

#[derive(Parser)]
#[command(
    name = "lifeboat",
    version,
    about = "PostgreSQL backups you can prove by restoring them"
)]
struct Cli {
    /// Configuration file (default: $LIFEBOAT_CONFIG, ./lifeboat.toml, /etc/lifeboat/lifeboat.toml)
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// No progress bars or step messages
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the repositories of the configuration (never touches an existing one)
    Init {
        /// Only this repository
        #[arg(long)]
        repository: Option<String>,
    },
    /// Manage age keys for public-key mode
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Back up a target now
    Backup { target: String },
    /// List backups
    List {
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one backup in detail
    Show {
        /// Backup id or a unique prefix of it
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a database
    Restore {
        target: String,
        #[command(flatten)]
        opts: Box<RestoreOptions>,
    },
    /// Apply the retention rules and delete what no remaining backup needs
    Prune {
        /// Apply only this target's rules (data no backup needs is freed either way)
        target: Option<String>,
        /// Print what would be kept, deleted and freed; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Packs that no index lists (left by interrupted backups) are deleted
        /// only once this old, in case their writer is merely slow
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
        /// A kept pack of which more than this percentage is data no backup
        /// needs is rewritten without it (100: never rewrite)
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(0..=100))]
        max_unused: u8,
        /// Rewrites copy at most this much in one prune (the packs with the
        /// most to free first); the rest waits for the next prune
        #[arg(long, default_value = "4GiB", value_parser = parse_size_arg)]
        max_rewrite: u64,
    },
    /// Check that every backup's objects exist (and with --read-data, are intact)
    Verify {
        target: Option<String>,
        /// Read every stored byte: hash every pack and authenticate every
        /// blob (at the speed of reading them)
        #[arg(long)]
        read_data: bool,
        /// With --read-data: also decompress every blob and re-hash it to its
        /// id (CPU-bound: every byte of plaintext)
        #[arg(long, requires = "read_data")]
        decompress: bool,
        #[arg(long)]
        json: bool,
    },
    /// Keep a backup whatever the retention rules say
    Pin {
        /// Backup id or a unique prefix of it
        id: String,
        /// Why (stored with the pin)
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let the retention rules apply to a pinned backup again
    Unpin {
        /// Backup id or a unique prefix of it
        id: String,
    },
    /// Copy the backups (and archived WAL) one repository lacks from another
    Copy {
        /// Only this target's backups (default: all in the source)
        target: Option<String>,
        /// The repository to copy from
        #[arg(long, value_name = "NAME")]
        from: String,
        /// The repository to copy to
        #[arg(long, value_name = "NAME")]
        to: String,
        /// Say what would be copied; change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Archive one WAL file (archive_command = 'lifeboat wal-push %p')
    WalPush {
        /// The file (%p: relative to the data directory)
        path: PathBuf,
        #[command(flatten)]
        opts: ops::wal::WalOptions,
    },
    /// Restore one archived WAL file (restore_command = 'lifeboat wal-fetch %f %p')
    WalFetch {
        /// The file name (%f)
        name: String,
        /// Where to write it (%p)
        dest: PathBuf,
        #[command(flatten)]
        opts: ops::wal::WalOptions,
    },
    /// Send the files of the WAL spool to the repositories (started by
    /// wal-push when archive_async = true)
    #[command(hide = true)]
    WalUpload {
        #[command(flatten)]
        opts: ops::wal::WalOptions,
    },
    /// Fetch WAL ahead of recovery and answer wal-fetch (started by wal-fetch)
    #[command(hide = true)]
    WalPrefetch {
        #[command(flatten)]
        opts: ops::wal::WalOptions,
    },
    /// Write a standard pg_dump file (or the globals SQL) from a backup
    Export {
        target: String,
        #[arg(long)]
        backup: Option<String>,
        #[arg(long, value_enum, default_value = "custom")]
        format: ExportFormat,
        /// Export the globals (roles, tablespaces) as SQL instead of the database
        #[arg(long)]
        globals: bool,
        /// Output file (default: standard output)
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Read from this repository (default: the first of the target's that has the backup)
        #[arg(long, value_name = "NAME")]
        repository: Option<String>,
        /// Packs in S3 Glacier: start their retrieval and stop instead of waiting
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Write a new age identity file and print its public recipient
    Generate {
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
    },
    /// Print the fingerprint of each repository's keys (to pin it in the
    /// configuration of the hosts that use it)
    Fingerprint {
        /// Only this repository
        repository: Option<String>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) if e.is::<NotArchived>() => ExitCode::from(1),
        Err(e) => {
            let text = format!("{e:#}");
            let (msg, hint) = match text.split_once("; hint: ") {
                Some((m, h)) => (m.to_string(), Some(h.to_string())),
                None => (text, None),
            };
            eprintln!("error: {msg}");
            if let Some(h) = hint {
                eprintln!("hint: {h}");
            }
            ExitCode::from(if is_usage(&e) { 2 } else { 1 })
        }
    }
}

/// wal-fetch of a file that was never archived: exit 1, message printed.
#[derive(Debug, thiserror::Error)]
#[error("not archived")]
struct NotArchived;

fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<UsageError>()
            || c.is::<crate::config::ConfigError>()
            || c.downcast_ref::<crate::repo::RepoError>()
                .is_some_and(|r| r.is_usage())
    })
}

/// Our own stdout closed early (`lifeboat list | head`): not a failure. Only a
/// bare write error counts; a broken pipe to a child program is a real failure.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn run(cli: Cli) -> Result<()> {
    if let Command::Key {
        command: KeyCommand::Generate { output },
    } = &cli.command
    {
        let recipient = ops::init::key_generate(output)?;
        eprintln!(
            "wrote identity to {} (mode 0600); keep it safe: it reads your backups",
            output.display()
        );
        println!("{recipient}");
        return Ok(());
    }
    let path = Config::locate(cli.config.as_deref())?;
    let ctx = Context::new(Config::load(&path)?, cli.quiet);
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Key {
            command: KeyCommand::Fingerprint { repository },
        } => {
            let names = match repository {
                Some(n) => vec![n],
                None => {
                    let mut all: Vec<String> = ctx.config.repositories.keys().cloned().collect();
                    all.sort();
                    all
                }
            };
            for n in names {
                let repo = ctx.open_repository(&n)?;
                writeln!(out, "[repository.{n}]")?;
                writeln!(out, "fingerprint = \"{}\"", repo.fingerprint())?;
            }
        }
        Command::Key { .. } => unreachable!("handled above"),
        Command::Init { repository } => {
            let names: Vec<String> = match repository {
                Some(n) => vec![n],
                // Those that take their keys from another come after it.
                None => {
                    let mut names: Vec<String> = ctx.config.repositories.keys().cloned().collect();
                    names.sort_by_key(|n| ctx.config.repositories[n].keys_from.is_some());
                    names
                }
            };
            for n in names {
                for line in ops::init::init_repository(&ctx, &n)? {
                    writeln!(out, "{line}")?;
                }
            }
        }
        Command::Backup { target } => {
            let outcome = ops::backup::run(&ctx, &target)?;
            writeln!(out, "{outcome}")?;
            out.flush()?;
            for line in ops::copy::after_backup(&ctx, &target, &outcome.id, &outcome.record)? {
                writeln!(out, "{line}")?;
            }
        }
        Command::Copy {
            from,
            to,
            target,
            dry_run,
        } => {
            let opts = ops::copy::CopyOptions {
                from,
                to,
                target,
                dry_run,
            };
            let outcome = ops::copy::run(&ctx, &opts)?;
            for line in ops::copy::describe(&opts, &outcome) {
                writeln!(out, "{line}")?;
            }
        }
        Command::List { target, json } => {
            let listing = ops::list::collect(&ctx, target.as_deref())?;
            let views: Vec<_> = listing.backups.into_iter().map(|(v, _)| v).collect();
            if json {
                let all = serde_json::json!({ "backups": views, "wal": listing.wal });
                serde_json::to_writer_pretty(&mut out, &all)?;
                writeln!(out)?;
            } else {
                ops::list::print_table(&mut out, &views)?;
                for line in listing.wal.iter().flat_map(ops::list::wal_lines) {
                    writeln!(out, "{line}")?;
                }
            }
        }
        Command::Show { id, json } => {
            let (view, record) = find_anywhere(&ctx, &id)?;
            if json {
                let mut v = serde_json::to_value(&view)?;
                v["record"] = serde_json::to_value(summary_record(&record))?;
                serde_json::to_writer_pretty(&mut out, &v)?;
                writeln!(out)?;
            } else {
                ops::list::print_details(&mut out, &view, &record)?;
            }
        }
        Command::Restore { target, opts } => {
            if let Some(o) = ops::restore::run(&ctx, &target, &opts)? {
                writeln!(
                    out,
                    "restored backup {} into database {}: {} tables checked, {:.1} s",
                    o.backup_id.short(),
                    o.database,
                    o.tables,
                    o.seconds
                )?;
            }
        }
        Command::Prune {
            target,
            dry_run,
            grace,
            max_unused,
            max_rewrite,
        } => {
            ops::prune::run(
                &ctx,
                &ops::prune::PruneOptions {
                    target,
                    dry_run,
                    limits: crate::repo::CleanupLimits {
                        grace,
                        max_unused,
                        max_rewrite,
                    },
                },
                &mut out,
            )?;
        }
        Command::Verify {
            target,
            read_data,
            decompress,
            json,
        } => {
            let depth = match (read_data, decompress) {
                (false, _) => crate::repo::ReadData::No,
                (true, false) => crate::repo::ReadData::Stored,
                (true, true) => crate::repo::ReadData::Plaintext,
            };
            ops::verify::run(&ctx, target.as_deref(), depth, json, &mut out)?
        }
        Command::WalPush { path, opts } => {
            ops::wal::push(&ctx, &path, &opts)?;
        }
        Command::WalFetch { name, dest, opts } => {
            if !ops::fetch::fetch(&ctx, &name, &dest, &opts)? {
                eprintln!("{name} is not in the archive");
                return Err(NotArchived.into());
            }
        }
        Command::WalUpload { opts } => ops::spool::upload(&ctx, &opts)?,
        Command::WalPrefetch { opts } => ops::fetch::prefetch(&ctx, &opts)?,
        Command::Pin { id, reason } => writeln!(out, "{}", ops::pin::pin(&ctx, &id, reason)?)?,
        Command::Unpin { id } => writeln!(out, "{}", ops::pin::unpin(&ctx, &id)?)?,
        Command::Export {
            target,
            backup,
            format,
            globals,
            output,
            repository,
            no_wait,
        } => {
            let to_file = output.clone();
            let (id, n) = ops::export::run(
                &ctx,
                &target,
                &ExportOptions {
                    backup,
                    repository,
                    no_wait,
                    format,
                    globals,
                    output,
                },
            )?;
            if let Some(p) = to_file {
                eprintln!(
                    "exported backup {} to {} ({})",
                    id.short(),
                    p.display(),
                    ops::human_bytes(n)
                );
            }
        }
    }
    Ok(())
}

/// The record without chunk lists, for `show --json`.
fn summary_record(r: &crate::format::BackupRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(m) = v.pointer_mut("/physical/manifest") {
        let n = m.as_array().map_or(0, |a| a.len());
        *m = serde_json::json!(n);
    }
    if let Some(streams) = v.get_mut("streams").and_then(|s| s.as_array_mut()) {
        for s in streams {
            if let Some(obj) = s.as_object_mut() {
                let n = obj
                    .get("chunks")
                    .and_then(|c| c.as_array())
                    .map_or(0, |a| a.len());
                obj.insert("chunks".into(), serde_json::json!(n));
            }
        }
    }
    v
}

fn find_anywhere(
    ctx: &Context,
    prefix: &str,
) -> Result<(ops::list::BackupView, crate::format::BackupRecord)> {
    let (name, repo, id, rec) = ops::find_backup(ctx, prefix)?;
    let mut view = ops::list::BackupView::new(&name, &id, &rec);
    view.pinned = repo.list_pins()?.is_pinned(&id);
    // Copies with the same keys have the same id: say where else it is.
    for other in ctx.config.repositories.keys().filter(|n| **n != name) {
        if let Ok(r) = ctx.open_repository(other)
            && r.find_backup(&id.to_hex()).is_ok()
        {
            view.repositories.push(other.clone());
        }
    }
    Ok((view, rec))
}

/// A size on the command line: "4GiB", "512 MiB", "100MB", bytes.
fn parse_size_arg(s: &str) -> std::result::Result<u64, String> {
    crate::config::parse_size(s).ok_or_else(|| {
        format!("{s:?} is not a size; expected a number with an optional unit, e.g. 4GiB or 500MB")
    })
}
