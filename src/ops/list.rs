//! `lifeboat list` and `lifeboat show`: what is in the repositories.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;

use super::{Context, human_bytes};
use crate::codec::Id;
use crate::format::BackupRecord;

/// One backup as `list --json` and `show --json` print it.
#[derive(Serialize)]
pub struct BackupView {
    pub id: String,
    pub short_id: String,
    pub repository: String,
    pub target: String,
    pub method: crate::format::BackupKind,
    pub started: chrono::DateTime<chrono::Utc>,
    pub finished: chrono::DateTime<chrono::Utc>,
    pub duration_seconds: f64,
    pub database: String,
    pub server_version: String,
    pub dump_size: u64,
    pub total_size: u64,
    pub new_bytes: u64,
    pub stored_bytes: u64,
    /// Plaintext size over what this backup added to storage.
    pub dedup_ratio: f64,
    pub host: String,
    /// Kept by prune whatever the retention rules say (`lifeboat pin`).
    pub pinned: bool,
}

impl BackupView {
    pub fn new(repository: &str, id: &Id, r: &BackupRecord) -> BackupView {
        BackupView {
            id: id.to_hex(),
            short_id: id.short(),
            repository: repository.into(),
            target: r.target.clone(),
            method: r.kind,
            started: r.started,
            finished: r.finished,
            duration_seconds: (r.finished - r.started).num_milliseconds() as f64 / 1000.0,
            database: r.database.name.clone(),
            server_version: r.database.server_version.clone(),
            dump_size: r.stream("dump").map_or(0, |s| s.size),
            total_size: r.stats.size,
            new_bytes: r.stats.new_bytes,
            stored_bytes: r.stats.stored_bytes,
            dedup_ratio: if r.stats.stored_bytes == 0 {
                0.0
            } else {
                r.stats.size as f64 / r.stats.stored_bytes as f64
            },
            host: r.host.clone(),
            pinned: false,
        }
    }
}

/// Backups of every repository the configuration names (or of one target's).
pub fn collect(ctx: &Context, target: Option<&str>) -> Result<Vec<(BackupView, BackupRecord)>> {
    let names = ctx.repositories_of(target)?;
    let mut out = Vec::new();
    for name in names {
        let repo = ctx.open_repository(&name)?;
        let scan = repo.scan_backups()?;
        for d in &scan.damaged {
            eprintln!(
                "warning: repository {name:?}: {} cannot be read ({}); hint: run `lifeboat verify`",
                d.object, d.problem
            );
        }
        let pins = repo.list_pins()?;
        for (id, rec) in scan.records {
            if target.is_none_or(|t| rec.target == t) {
                let mut view = BackupView::new(&name, &id, &rec);
                view.pinned = pins.is_pinned(&id);
                out.push((view, rec));
            }
        }
    }
    out.sort_by_key(|a| a.0.started);
    Ok(out)
}

pub fn print_table(out: &mut dyn Write, views: &[BackupView]) -> std::io::Result<()> {
    if views.is_empty() {
        return writeln!(out, "no backups");
    }
    writeln!(
        out,
        "{:<8}  {:<12}  {:<8}  {:<20}  {:>7}  {:<16}  {:>9}  {:>9}  {:>9}  {:>6}  PINNED",
        "ID",
        "TARGET",
        "METHOD",
        "STARTED (UTC)",
        "SECS",
        "DATABASE",
        "DUMP",
        "NEW",
        "STORED",
        "DEDUP"
    )?;
    for v in views {
        writeln!(
            out,
            "{:<8}  {:<12}  {:<8}  {:<20}  {:>7.1}  {:<16}  {:>9}  {:>9}  {:>9}  {:>5.1}x  {}",
            v.short_id,
            v.target,
            format!("{:?}", v.method).to_lowercase(),
            v.started.format("%Y-%m-%d %H:%M:%S"),
            v.duration_seconds,
            format!("{} ({})", v.database, v.server_version),
            human_bytes(v.dump_size),
            human_bytes(v.new_bytes),
            human_bytes(v.stored_bytes),
            v.dedup_ratio,
            if v.pinned { "yes" } else { "" }
        )?;
    }
    Ok(())
}

pub fn print_details(out: &mut dyn Write, v: &BackupView, r: &BackupRecord) -> std::io::Result<()> {
    writeln!(out, "backup      {}", v.id)?;
    writeln!(out, "repository  {}", v.repository)?;
    if v.pinned {
        writeln!(
            out,
            "pinned      yes: prune keeps it (`lifeboat unpin {}` releases it)",
            v.short_id
        )?;
    }
    writeln!(out, "target      {} ({:?})", v.target, v.method)?;
    writeln!(out, "started     {}", v.started.to_rfc3339())?;
    writeln!(
        out,
        "finished    {} ({:.1} s)",
        v.finished.to_rfc3339(),
        v.duration_seconds
    )?;
    writeln!(out, "host        {}", v.host)?;
    writeln!(
        out,
        "database    {} on PostgreSQL {} ({}, collate {}, {} on disk)",
        v.database,
        v.server_version,
        r.database.encoding,
        r.database.collate,
        human_bytes(r.database.size_bytes)
    )?;
    for (tool, version) in &r.tools {
        writeln!(out, "{tool:<11} {version}")?;
    }
    for s in &r.streams {
        writeln!(
            out,
            "stream      {} ({}): {} in {} chunks",
            s.name,
            s.format,
            human_bytes(s.size),
            s.chunks.len()
        )?;
    }
    if let Some(d) = &r.dump {
        writeln!(
            out,
            "contents    {} schemas, {} tables, {} materialized views{}",
            d.schemas.len(),
            d.tables.len(),
            d.materialized_views.len(),
            if d.large_objects {
                ", large objects"
            } else {
                ""
            }
        )?;
    }
    writeln!(
        out,
        "stored      {} new of {} ({} chunks, {} new), {} written, dedup {:.1}x",
        human_bytes(r.stats.new_bytes),
        human_bytes(r.stats.size),
        r.stats.chunks,
        r.stats.new_chunks,
        human_bytes(r.stats.stored_bytes),
        v.dedup_ratio
    )?;
    Ok(())
}
