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
    /// The first repository (of the configuration's order) that holds it.
    pub repository: String,
    /// Every repository that holds it (copies with the same keys have the
    /// same id).
    pub repositories: Vec<String>,
    /// A copy re-encrypted into a repository with other keys: the id of the
    /// backup it was copied from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<String>,
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
    /// Physical backups: where they sit in the WAL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal: Option<WalPosition>,
}

#[derive(Serialize)]
pub struct WalPosition {
    pub system_identifier: String,
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub consistent_at: chrono::DateTime<chrono::Utc>,
    pub corrupt_pages: usize,
}

impl BackupView {
    pub fn new(repository: &str, id: &Id, r: &BackupRecord) -> BackupView {
        BackupView {
            id: id.to_hex(),
            short_id: id.short(),
            repository: repository.into(),
            repositories: vec![repository.into()],
            copy_of: r.copied_from.as_ref().map(|c| c.backup.to_hex()),
            target: r.target.clone(),
            method: r.kind,
            started: r.started,
            finished: r.finished,
            duration_seconds: (r.finished - r.started).num_milliseconds() as f64 / 1000.0,
            database: r.database.name.clone(),
            server_version: r.database.server_version.clone(),
            dump_size: match &r.physical {
                Some(_) => r.database.size_bytes,
                None => r.stream("dump").map_or(0, |s| s.size),
            },
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
            wal: r.physical.as_ref().map(|p| WalPosition {
                system_identifier: p.system_identifier.to_string(),
                timeline: p.timeline,
                start_lsn: p.start_lsn.to_string(),
                stop_lsn: p.stop_lsn.to_string(),
                consistent_at: p.stop_time,
                corrupt_pages: p.corrupt_pages.len(),
            }),
        }
    }
}

/// Backups of every repository the configuration names (or of one target's).
/// What `list` shows: the backups, oldest first, and (with `wal`) for each
/// cluster with physical backups its WAL archive (see `wal_views`).
#[derive(Default)]
pub struct Listing {
    pub backups: Vec<(BackupView, BackupRecord)>,
    pub wal: Vec<WalArchiveView>,
}

pub fn collect(ctx: &Context, target: Option<&str>) -> Result<Listing> {
    let names = ctx.repositories_of(target)?;
    let mut listing = Listing::default();
    let out = &mut listing.backups;
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
        let records: Vec<_> = scan
            .records
            .into_iter()
            .filter(|(_, rec)| target.is_none_or(|t| rec.target == t))
            .collect();
        listing.wal.extend(wal_views(&name, &repo, &records)?);
        for (id, rec) in records {
            let hex = id.to_hex();
            if let Some((seen, _)) = out.iter_mut().find(|(v, _)| v.id == hex) {
                seen.repositories.push(name.clone());
                seen.pinned |= pins.is_pinned(&id);
                continue;
            }
            let mut view = BackupView::new(&name, &id, &rec);
            view.pinned = pins.is_pinned(&id);
            out.push((view, rec));
        }
    }
    out.sort_by_key(|a| a.0.started);
    Ok(listing)
}

pub fn print_table(out: &mut dyn Write, views: &[BackupView]) -> std::io::Result<()> {
    if views.is_empty() {
        return writeln!(out, "no backups");
    }
    writeln!(
        out,
        "{:<8}  {:<12}  {:<8}  {:<20}  {:>7}  {:<16}  {:>9}  {:>9}  {:>9}  {:>6}  {:<6}  REPOSITORIES",
        "ID",
        "TARGET",
        "METHOD",
        "STARTED (UTC)",
        "SECS",
        "DATABASE",
        "DUMP",
        "NEW",
        "STORED",
        "DEDUP",
        "PINNED"
    )?;
    for v in views {
        writeln!(
            out,
            "{:<8}  {:<12}  {:<8}  {:<20}  {:>7.1}  {:<16}  {:>9}  {:>9}  {:>9}  {:>5.1}x  {:<6}  {}",
            v.short_id,
            v.target,
            format!("{:?}", v.method).to_lowercase(),
            v.started.format("%Y-%m-%d %H:%M:%S"),
            v.duration_seconds,
            match &v.wal {
                Some(w) => format!("cluster ({}) tl {}", v.server_version, w.timeline),
                None => format!("{} ({})", v.database, v.server_version),
            },
            human_bytes(v.dump_size),
            human_bytes(v.new_bytes),
            human_bytes(v.stored_bytes),
            v.dedup_ratio,
            if v.pinned { "yes" } else { "" },
            match &v.copy_of {
                Some(src) => format!("{} (copy of {})", v.repositories.join(", "), &src[..8]),
                None => v.repositories.join(", "),
            }
        )?;
    }
    Ok(())
}

pub fn print_details(out: &mut dyn Write, v: &BackupView, r: &BackupRecord) -> std::io::Result<()> {
    writeln!(out, "backup      {}", v.id)?;
    writeln!(out, "repository  {}", v.repositories.join(", "))?;
    if let Some(src) = &v.copy_of {
        writeln!(
            out,
            "copy of     {src} (re-encrypted for this repository's keys)"
        )?;
    }
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
    if let Some(p) = &r.physical {
        writeln!(
            out,
            "cluster     system identifier {}, data directory {}, {} files{}",
            p.system_identifier,
            p.data_directory,
            p.files,
            if p.from_standby {
                ", taken from a standby"
            } else {
                ""
            }
        )?;
        writeln!(
            out,
            "wal         timeline {}, {} to {}; consistent at {} (restores reach any later point the archive has)",
            p.timeline,
            p.start_lsn,
            p.stop_lsn,
            p.stop_time.to_rfc3339()
        )?;
        writeln!(
            out,
            "checksums   {}",
            match (p.data_checksums, p.corrupt_pages.len()) {
                (false, _) => "off (pages not checked)".to_string(),
                (true, 0) => "every page checked, none corrupt".to_string(),
                (true, n) => format!("{n} corrupt page(s)"),
            }
        )?;
        for c in &p.corrupt_pages {
            writeln!(
                out,
                "  corrupt   {} block {} (stored checksum {}, computed {})",
                c.path, c.block, c.stored, c.computed
            )?;
        }
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

/// One cluster's WAL archive in one repository, as `list` prints it (and
/// `list --json` under `wal`): per timeline the archived segments and the
/// gaps between them, and where the restorable window starts.
#[derive(Serialize)]
pub struct WalArchiveView {
    pub repository: String,
    pub target: String,
    pub system_identifier: String,
    /// The oldest point a restore can reach: where the oldest physical
    /// backup of the cluster in this repository became consistent.
    pub restorable_from: Option<chrono::DateTime<chrono::Utc>>,
    pub timelines: Vec<TimelineView>,
}

#[derive(Serialize)]
pub struct TimelineView {
    pub timeline: u32,
    pub first_segment: String,
    pub last_segment: String,
    /// Segments archived between the first and the last (gaps left out).
    pub segments: u64,
    /// When the last segment was archived (where the storage says).
    pub newest_archived: Option<chrono::DateTime<chrono::Utc>>,
    /// Runs of segments missing between the first and the last.
    pub gaps: Vec<WalGap>,
}

#[derive(Serialize)]
pub struct WalGap {
    pub first_missing: String,
    pub last_missing: String,
}

/// For every (target, cluster) among `records` with physical backups: its
/// WAL archive in repository `name`.
fn wal_views(
    name: &str,
    repo: &crate::repo::Repository,
    records: &[(Id, BackupRecord)],
) -> Result<Vec<WalArchiveView>> {
    // (target, system id) -> (segment size, oldest backup); records are oldest first.
    let mut clusters: std::collections::BTreeMap<(&str, u64), (u64, &BackupRecord)> =
        std::collections::BTreeMap::new();
    for (_, rec) in records {
        if let Some(p) = &rec.physical {
            clusters
                .entry((&rec.target, p.system_identifier))
                .or_insert((p.wal_segment_size, rec));
        }
    }
    let mut views = Vec::new();
    for ((tname, sysid), (seg_size, oldest)) in clusters {
        let archive = repo.list_wal(sysid)?;
        let timelines = archive
            .ranges(seg_size)
            .into_iter()
            .map(|(tli, runs)| {
                let (first, last) = (&runs[0].first, &runs[runs.len() - 1].last);
                TimelineView {
                    timeline: tli,
                    first_segment: first.name(seg_size),
                    last_segment: last.name(seg_size),
                    segments: runs
                        .iter()
                        .map(|r| r.last.number - r.first.number + 1)
                        .sum(),
                    newest_archived: archive
                        .get(&last.name(seg_size))
                        .and_then(|f| f.modified)
                        .map(chrono::DateTime::<chrono::Utc>::from),
                    gaps: runs
                        .windows(2)
                        .map(|w| WalGap {
                            first_missing: w[0].last.next().name(seg_size),
                            last_missing: crate::pg::wal::Segment {
                                timeline: tli,
                                number: w[1].first.number - 1,
                            }
                            .name(seg_size),
                        })
                        .collect(),
                }
            })
            .collect();
        views.push(WalArchiveView {
            repository: name.into(),
            target: tname.into(),
            system_identifier: sysid.to_string(),
            restorable_from: oldest.physical.as_ref().map(|p| p.stop_time),
            timelines,
        });
    }
    Ok(views)
}

/// The lines `list` prints under its table for one WAL archive.
pub fn wal_lines(v: &WalArchiveView) -> Vec<String> {
    let time = |t: &Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default()
    };
    let mut lines = vec![format!(
        "WAL of {} in {} (cluster {}): restorable from {} (oldest backup)",
        v.target,
        v.repository,
        v.system_identifier,
        time(&v.restorable_from)
    )];
    for t in &v.timelines {
        lines.push(format!(
            "  timeline {}: {} to {} ({} segments, newest archived {})",
            t.timeline,
            t.first_segment,
            t.last_segment,
            t.segments,
            time(&t.newest_archived)
        ));
        for g in &t.gaps {
            lines.push(format!(
                "    gap: {} to {} missing",
                g.first_missing, g.last_missing
            ));
        }
    }
    lines
}
