//! `lifeboat wal-push` (archive_command) and `lifeboat wal-fetch`
//! (restore_command).
//!
//! Both run with the server's data directory as working directory, which
//! tells them the cluster (its system identifier, from `global/pg_control`)
//! and, through the configuration's `data_directory`, the target.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use super::{Context, usage};
use crate::config::Method;
use crate::pg::wal::WalFile;

/// Where the archive and restore commands find their cluster.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WalOptions {
    /// The physical target (default: the one whose data_directory is PGDATA,
    /// or the only physical target)
    #[arg(long)]
    pub target: Option<String>,
    /// The server's data directory (default: the working directory, which is
    /// where PostgreSQL runs archive_command and restore_command)
    #[arg(long, value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
}

/// The system identifier in `global/pg_control` (its first 8 bytes).
pub fn system_identifier(pgdata: &Path) -> Result<u64> {
    let path = pgdata.join("global/pg_control");
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "reading {} to learn which cluster this is; hint: run from the data directory or give --pgdata",
            path.display()
        )
    })?;
    let first: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{} is too short", path.display()))?;
    Ok(u64::from_le_bytes(first))
}

/// The physical target a data directory belongs to.
pub fn target_for(ctx: &Context, opts: &WalOptions, pgdata: &Path) -> Result<String> {
    if let Some(t) = &opts.target {
        ctx.target(t)?;
        return Ok(t.clone());
    }
    let here = std::fs::canonicalize(pgdata).unwrap_or_else(|_| pgdata.to_path_buf());
    let physical: Vec<(&String, &crate::config::TargetConfig)> = ctx
        .config
        .targets
        .iter()
        .filter(|(_, t)| t.method == Method::Physical)
        .collect();
    for (name, t) in &physical {
        if let Some(d) = &t.data_directory
            && std::fs::canonicalize(d).is_ok_and(|d| d == here)
        {
            return Ok(name.to_string());
        }
    }
    match physical.as_slice() {
        [(name, _)] => Ok(name.to_string()),
        [] => bail!(usage(
            "no physical target in the configuration; hint: add a target with method = \"physical\" and data_directory"
        )),
        _ => bail!(usage(format!(
            "several physical targets and none has data_directory {}; hint: give --target NAME",
            here.display()
        ))),
    }
}

pub(super) fn pgdata(opts: &WalOptions) -> Result<PathBuf> {
    match &opts.pgdata {
        Some(p) => Ok(p.clone()),
        None => std::env::current_dir().context("the working directory"),
    }
}

/// Archive one file: into every repository of the target, or, with
/// `archive_async`, into the local spool that the uploader empties.
pub fn push(ctx: &Context, path: &Path, opts: &WalOptions) -> Result<()> {
    let pgdata = pgdata(opts)?;
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        pgdata.join(path)
    };
    let name = full
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind = WalFile::parse(&name).ok_or_else(|| {
        usage(format!(
            "{name:?} is not a WAL file name; hint: archive_command = 'lifeboat wal-push %p'"
        ))
    })?;
    let system_id = system_identifier(&pgdata)?;
    let target = target_for(ctx, opts, &pgdata)?;
    if ctx.target(&target)?.archive.asynchronous {
        check_cluster(&full, &name, &kind, system_id, &pgdata)?;
        super::spool::push(ctx, &target, &pgdata, &full)?;
        return Ok(());
    }
    let content = std::fs::read(&full).with_context(|| format!("reading {}", full.display()))?;
    check_cluster(&full, &name, &kind, system_id, &pgdata)?;
    // Into every repository of the target: a failure in any one fails the
    // push, so PostgreSQL keeps the segment and retries; the repositories that
    // have it already answer the retry from what they hold.
    let mut first = None;
    let mut failed = Vec::new();
    for (repo_name, repo) in ctx.open_repositories(&ctx.repositories_of(Some(&target))?) {
        let pushed = repo.and_then(|repo| Ok(repo.push_wal(system_id, &name, &content)?));
        match pushed {
            Ok(p) => {
                first.get_or_insert(p);
            }
            Err(e) => failed.push(format!("repository {repo_name:?}: {e:#}")),
        }
    }
    match (first, failed.is_empty()) {
        (Some(_), true) => Ok(()),
        _ => bail!("archiving {name} failed: {}", failed.join("; ")),
    }
}

/// A segment's first page names its cluster: refuse one of another cluster.
fn check_cluster(
    path: &Path,
    name: &str,
    kind: &WalFile,
    system_id: u64,
    pgdata: &Path,
) -> Result<()> {
    use std::io::Read;
    if !matches!(kind, WalFile::Segment { .. }) {
        return Ok(());
    }
    let mut head = [0u8; 32];
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    if f.read_exact(&mut head).is_ok() {
        let id = u64::from_le_bytes(head[24..32].try_into().expect("8 bytes"));
        if id != system_id {
            bail!(
                "{name} belongs to cluster {id}, not to the cluster of {} ({system_id})",
                pgdata.display()
            );
        }
    }
    Ok(())
}
