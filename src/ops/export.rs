//! `lifeboat export`: write a standard pg_dump file (or the globals SQL) out of the
//! repository, for pg_restore or psql without lifeboat.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context as _, Result, bail};

use super::{Context, usage};
use crate::codec::Id;
use crate::pg::process;
use crate::pg::tools::PgTools;
use crate::repo::StreamReader;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// pg_dump custom format (pg_restore reads it)
    Custom,
    /// plain SQL (psql reads it)
    Plain,
}

pub struct ExportOptions {
    pub backup: Option<String>,
    /// Read from this repository (default: the first of the target's that has it).
    pub repository: Option<String>,
    /// Do not wait for archived packs to be retrieved.
    pub no_wait: bool,
    pub format: ExportFormat,
    pub globals: bool,
    pub output: Option<PathBuf>,
}

pub fn run(ctx: &Context, target_name: &str, opts: &ExportOptions) -> Result<(Id, u64)> {
    let target = ctx.target(target_name)?;
    let (repo_name, repo) = ctx.open_for_restore(
        target_name,
        opts.backup.as_deref(),
        opts.repository.as_deref(),
    )?;
    repo.check_can_read()?;
    let (id, record) = super::select_backup(&repo, target_name, opts.backup.as_deref())?;
    let name = if opts.globals { "globals" } else { "dump" };
    let stream = record
        .stream(name)
        .with_context(|| format!("backup {} has no {name} stream", id.short()))?;
    if opts.output.is_none()
        && std::io::stdout().is_terminal()
        && opts.format == ExportFormat::Custom
        && !opts.globals
    {
        bail!(usage(
            "refusing to write a binary dump to a terminal; hint: -o FILE, or redirect stdout"
        ));
    }
    let index = repo.load_index()?;
    let packs = repo.packs_of(&index, [&record]);
    let retrieval = if opts.no_wait {
        super::retrieve::Retrieval::NoWait
    } else {
        super::retrieve::Retrieval::Wait
    };
    super::retrieve::ensure_readable(
        ctx,
        &repo,
        ctx.config.repository(&repo_name)?,
        &packs,
        retrieval,
    )?;
    let mut reader = repo.read_stream(&index, stream)?;
    // Write to FILE.partial and rename, so a failed export never leaves a
    // plausible file. The dump holds the database in the clear: readable by
    // its owner only, whatever the umask (a stale FILE.partial, which may be
    // more open, is replaced, not reused).
    let (mut out, partial): (Box<dyn Write>, Option<PathBuf>) = match &opts.output {
        Some(p) => {
            let tmp = PathBuf::from(format!("{}.partial", p.display()));
            match std::fs::remove_file(&tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("cannot remove {}", tmp.display()));
                }
                _ => {}
            }
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            (Box::new(std::io::BufWriter::new(f)), Some(tmp))
        }
        None => (Box::new(std::io::stdout().lock()), None),
    };
    let result = if opts.format == ExportFormat::Plain && !opts.globals {
        let tools =
            PgTools::locate(target.pg_bindir.as_deref()).map_err(|e| usage(e.to_string()))?;
        to_plain(&tools, &mut reader, &mut out)
    } else {
        copy(&mut reader, &mut out)
    };
    let result = result.and_then(|n| {
        out.flush()?;
        Ok(n)
    });
    drop(out);
    match (result, partial) {
        (Ok(n), Some(tmp)) => {
            let f = std::fs::File::open(&tmp)?;
            f.sync_all()?;
            let dest = opts.output.as_ref().expect("partial implies output");
            std::fs::rename(&tmp, dest)?;
            // The new name is durable only once its directory is synced.
            let dir = match dest.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            std::fs::File::open(dir)?.sync_all()?;
            Ok((id, n))
        }
        (Ok(n), None) => Ok((id, n)),
        (Err(e), tmp) => {
            if let Some(t) = tmp {
                let _ = std::fs::remove_file(t);
            }
            Err(e)
        }
    }
}

fn copy(reader: &mut StreamReader, out: &mut dyn Write) -> Result<u64> {
    std::io::copy(reader, out).map_err(|e| super::stream_error(reader, e))
}

/// pg_restore without -d writes the SQL script to stdout.
fn to_plain(tools: &PgTools, reader: &mut StreamReader, out: &mut dyn Write) -> Result<u64> {
    let mut cmd = tools.command("pg_restore")?;
    cmd.args(["--file=-"]);
    let mut child = process::spawn(cmd, Stdio::piped())?;
    let mut stdin = child.stdin();
    let mut stdout = child.stdout();
    let copied = std::thread::scope(|s| {
        let pump = s.spawn(move || {
            let r = std::io::copy(reader, &mut stdin).map_err(|e| (reader.take_error(), e));
            drop(stdin);
            r
        });
        let n = std::io::copy(&mut stdout, out);
        let fed = pump.join().expect("pump thread");
        (n, fed)
    });
    let (n, fed) = copied;
    match fed {
        // The repository failed: that is the cause; stop pg_restore.
        Err((Some(repo_err), _)) => {
            child.kill();
            let _ = child.wait();
            Err(repo_err.into())
        }
        // pg_restore stopped reading: its own message says why.
        Err((None, e)) => {
            child.wait()?;
            Err(e.into())
        }
        Ok(_) => {
            child.wait()?;
            Ok(n?)
        }
    }
}
