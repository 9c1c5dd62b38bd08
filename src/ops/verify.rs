//! `lifeboat verify [TARGET] [--read-data [--decompress]] [--json]`: is every backup
//! restorable, and how old is each target's newest good backup?

use std::io::Write;

use anyhow::{Result, bail};
use serde::Serialize;

use super::progress::Progress;
use super::{Context, human_bytes};
use crate::repo::{ReadData, VerifyReport};

#[derive(Serialize)]
struct RepositoryReport<'a> {
    repository: &'a str,
    url: String,
    targets: Vec<TargetHealth>,
    #[serde(flatten)]
    report: &'a VerifyReport,
}

/// The newest backup of a target that verified clean.
#[derive(Serialize, Clone)]
struct TargetHealth {
    target: String,
    newest_good: Option<String>,
    newest_good_finished: Option<chrono::DateTime<chrono::Utc>>,
    age_seconds: Option<i64>,
    backups: usize,
    bad_backups: usize,
}

pub fn run(
    ctx: &Context,
    target: Option<&str>,
    depth: ReadData,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let names = ctx.repositories_of(target)?;
    let mut problems = 0;
    let mut reports = Vec::new();
    for name in &names {
        let repo = ctx.open_repository(name)?;
        let hidden = ctx.quiet || depth == ReadData::No;
        let progress = Progress::bytes(&format!("verifying {name}"), None, hidden);
        let mut report = repo.verify(depth, &|n| progress.set(n))?;
        progress.finish();
        if let Some(t) = target {
            let ids: Vec<_> = report
                .backups
                .iter()
                .filter(|b| b.target == t)
                .map(|b| b.id)
                .collect();
            report.backups.retain(|b| b.target == t);
            report
                .problems
                .retain(|p| p.backups.is_empty() || p.backups.iter().any(|b| ids.contains(b)));
        }
        problems += report.problems.len();
        let mut targets: Vec<String> = ctx
            .config
            .targets
            .iter()
            .filter(|(_, t)| t.repository_names().contains(&name.as_str()))
            .map(|(n, _)| n.clone())
            .chain(report.backups.iter().map(|b| b.target.clone()))
            .filter(|t| target.is_none_or(|want| want == t))
            .collect();
        targets.sort();
        targets.dedup();
        let now = chrono::Utc::now();
        let health: Vec<TargetHealth> = targets
            .into_iter()
            .map(|t| {
                let mine: Vec<_> = report.backups.iter().filter(|b| b.target == t).collect();
                let good = mine.iter().rev().find(|b| b.ok);
                TargetHealth {
                    newest_good: good.map(|b| b.id.short()),
                    newest_good_finished: good.map(|b| b.finished),
                    age_seconds: good.map(|b| (now - b.finished).num_seconds()),
                    backups: mine.len(),
                    bad_backups: mine.iter().filter(|b| !b.ok).count(),
                    target: t,
                }
            })
            .collect();
        reports.push((name.clone(), repo.url(), health, report));
    }

    if json {
        let views: Vec<RepositoryReport> = reports
            .iter()
            .map(|(name, url, targets, report)| RepositoryReport {
                repository: name,
                url: url.clone(),
                targets: targets.clone(),
                report,
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &views)?;
        writeln!(out)?;
    } else {
        for (name, url, targets, r) in &reports {
            print_report(out, name, url, targets, r)?;
        }
    }
    if problems > 0 {
        bail!("verify found {problems} problem(s); the backups named above may not restore");
    }
    if !json {
        writeln!(out, "verify: no problems")?;
    }
    Ok(())
}

fn print_report(
    out: &mut dyn Write,
    name: &str,
    url: &str,
    targets: &[TargetHealth],
    r: &VerifyReport,
) -> std::io::Result<()> {
    writeln!(
        out,
        "repository {name} ({url}): {} backups, {} packs ({}), {} index files",
        r.backups.len(),
        r.packs,
        human_bytes(r.pack_bytes),
        r.index_files
    )?;
    if r.read_data {
        writeln!(
            out,
            "  read {}: {}",
            human_bytes(r.bytes_read),
            if r.content_checked {
                "pack hashes and trailers checked; every blob authenticated, decompressed and re-hashed to its id"
            } else if r.blobs_authenticated {
                "pack hashes and trailers checked; every blob authenticated (--decompress also re-hashes the plaintext)"
            } else {
                "pack hashes and trailers checked; blobs NOT authenticated: this host has no identity (it can write backups but not read them); run verify --read-data where the identity is"
            }
        )?;
    } else {
        writeln!(
            out,
            "  checked that every object exists with the right size (--read-data also reads and authenticates every byte)"
        )?;
    }
    if r.archived_packs > 0 {
        writeln!(
            out,
            "  {} packs are in an archive storage class (S3 Glacier): their presence and size were checked, their content was NOT read (a restore retrieves and authenticates what it needs)",
            r.archived_packs
        )?;
    }
    if r.leftover_packs > 0 {
        writeln!(
            out,
            "  {} packs no backup needs (left by interrupted backups): `lifeboat prune` removes them",
            r.leftover_packs
        )?;
    }
    for t in targets {
        match (&t.newest_good, t.newest_good_finished, t.age_seconds) {
            (Some(id), Some(at), Some(age)) => writeln!(
                out,
                "  target {}: newest good backup {id}, finished {} ({} ago){}",
                t.target,
                at.format("%Y-%m-%d %H:%M:%S UTC"),
                ago(age),
                if t.bad_backups > 0 {
                    format!("; {} damaged backups", t.bad_backups)
                } else {
                    String::new()
                }
            )?,
            _ if t.backups == 0 => writeln!(out, "  target {}: no backups yet", t.target)?,
            _ => writeln!(
                out,
                "  target {}: NO good backup ({} backups, all damaged)",
                t.target, t.backups
            )?,
        }
    }
    for p in &r.problems {
        let ids: Vec<String> = p.backups.iter().map(|b| b.short()).collect();
        writeln!(
            out,
            "  PROBLEM {}: {}{}",
            p.object,
            p.problem,
            if ids.is_empty() {
                String::new()
            } else {
                format!("; affects backups {}", ids.join(", "))
            }
        )?;
    }
    Ok(())
}

/// "3h 12m", rounded down to the minute.
fn ago(seconds: i64) -> String {
    if seconds < 60 {
        return "less than a minute".into();
    }
    humantime::format_duration(std::time::Duration::from_secs(seconds as u64 / 60 * 60)).to_string()
}
