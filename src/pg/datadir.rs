//! What a base backup copies from a data directory: every file, directory and
//! tablespace link, minus what PostgreSQL's documentation says to leave out
//! ("Backing Up the Data Directory", and pg_basebackup's own list).

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Directories whose contents are not copied (the directory itself is:
/// PostgreSQL expects it to exist).
const EMPTY_DIRS: &[&str] = &[
    "pg_wal",
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

/// Files never copied, wherever they are (pg_internal.init is rebuilt at start).
const SKIP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "pg_internal.init",
    // Left by an old exclusive backup, or by the restore this server came
    // from: a copy must not carry them (lifeboat writes its own backup_label).
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "tablespace_map.old",
    "backup_manifest",
    "recovery.signal",
    "standby.signal",
];

/// One thing to copy, relative to the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub size: u64,
    pub mtime: i64,
    /// Where to read it (tablespace files live outside the data directory).
    pub source: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// `pg_tblspc/<oid>` -> the tablespace's location.
    Link(String),
}

/// Every entry of the data directory (and of each tablespace's directory for
/// this server version, `PG_<major>_<catversion>`) a base backup copies,
/// sorted by path.
pub fn walk(data_dir: &Path) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    walk_dir(data_dir, "", &mut out)?;
    // Tablespaces: pg_tblspc/<oid> links to the location; only this
    // server's own subdirectory there is ours (another major version's
    // cluster may share the location).
    let version_dir = tablespace_version_dir(data_dir)?;
    let links: Vec<(String, String)> = out
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::Link(target) if e.path.starts_with("pg_tblspc/") => {
                Some((e.path.clone(), target.clone()))
            }
            _ => None,
        })
        .collect();
    for (path, target) in links {
        let location = if Path::new(&target).is_absolute() {
            PathBuf::from(&target)
        } else {
            data_dir.join("pg_tblspc").join(&target)
        };
        if let Some(v) = &version_dir {
            let dir = location.join(v);
            if dir.is_dir() {
                let rel = format!("{path}/{v}");
                out.push(dir_entry(&dir, &rel)?);
                walk_dir(&dir, &rel, &mut out)?;
            }
        }
    }
    drop_unlogged(&mut out);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// `PG_15_202209061`: this server's directory in its tablespaces, the one
/// that starts with `PG_<major>_` (the major version from PG_VERSION).
fn tablespace_version_dir(data_dir: &Path) -> io::Result<Option<String>> {
    let major = std::fs::read_to_string(data_dir.join("PG_VERSION"))?
        .trim()
        .to_string();
    let prefix = format!("PG_{major}_");
    let tblspc = data_dir.join("pg_tblspc");
    let Ok(rd) = std::fs::read_dir(&tblspc) else {
        return Ok(None);
    };
    for link in rd.flatten() {
        if let Ok(inner) = std::fs::read_dir(link.path()) {
            for e in inner.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) {
                    return Ok(Some(name));
                }
            }
        }
    }
    Ok(None)
}

fn dir_entry(path: &Path, rel: &str) -> io::Result<Entry> {
    let md = std::fs::metadata(path)?;
    Ok(Entry {
        path: rel.to_string(),
        kind: Kind::Dir,
        mode: md.permissions().mode() & 0o7777,
        size: 0,
        mtime: md.mtime(),
        source: path.to_path_buf(),
    })
}

fn walk_dir(dir: &Path, rel: &str, out: &mut Vec<Entry>) -> io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        // Dropped while we walk (a database or table going away): fine,
        // WAL replay drops it too.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
    };
    for item in rd {
        let item = match item {
            Ok(i) => i,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let name = item.file_name().to_string_lossy().into_owned();
        let path = item.path();
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        if SKIP_FILES.contains(&name.as_str()) || name.starts_with("pgsql_tmp") {
            continue;
        }
        let md = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let mode = md.permissions().mode() & 0o7777;
        if md.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?.to_string_lossy().into_owned();
            if rel == "pg_tblspc" {
                out.push(Entry {
                    path: child,
                    kind: Kind::Link(target),
                    mode,
                    size: 0,
                    mtime: md.mtime(),
                    source: path,
                });
                continue;
            }
            // pg_wal as a link (initdb --waldir): an empty directory in the
            // copy. Other links (config files): follow them.
            if rel.is_empty() && name == "pg_wal" {
                out.push(Entry {
                    path: child,
                    kind: Kind::Dir,
                    mode: 0o700,
                    size: 0,
                    mtime: md.mtime(),
                    source: path,
                });
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => out.push(Entry {
                    path: child,
                    kind: Kind::File,
                    mode: m.permissions().mode() & 0o7777,
                    size: m.len(),
                    mtime: m.mtime(),
                    source: path,
                }),
                _ => {}
            }
            continue;
        }
        if md.is_dir() {
            out.push(Entry {
                path: child.clone(),
                kind: Kind::Dir,
                mode,
                size: 0,
                mtime: md.mtime(),
                source: path.clone(),
            });
            let top_level_skip = rel.is_empty() && EMPTY_DIRS.contains(&name.as_str());
            // pg_wal/archive_status must exist for the server to archive.
            if top_level_skip {
                if name == "pg_wal" {
                    out.push(Entry {
                        path: "pg_wal/archive_status".into(),
                        kind: Kind::Dir,
                        mode,
                        size: 0,
                        mtime: md.mtime(),
                        source: path.join("archive_status"),
                    });
                }
                continue;
            }
            walk_dir(&path, &child, out)?;
        } else if md.is_file() {
            out.push(Entry {
                path: child,
                kind: Kind::File,
                mode,
                size: md.len(),
                mtime: md.mtime(),
                source: path,
            });
        }
    }
    Ok(())
}

/// Unlogged relations are reset to their init fork at startup: copy only
/// the `_init` fork of a relation that has one (as pg_basebackup does).
fn drop_unlogged(entries: &mut Vec<Entry>) {
    let init: HashSet<String> = entries
        .iter()
        .filter_map(|e| e.path.strip_suffix("_init").map(str::to_string))
        .filter(|p| super::checksum::relation_segment(&format!("{p}_init")).is_some())
        .collect();
    if init.is_empty() {
        return;
    }
    entries.retain(|e| {
        if e.kind != Kind::File || e.path.ends_with("_init") {
            return true;
        }
        // base/5/16384, base/5/16384.1, base/5/16384_fsm, base/5/16384_vm.2
        let (dir, file) = e.path.rsplit_once('/').unwrap_or(("", &e.path));
        let stem = file.split(['.', '_']).next().unwrap_or(file);
        !init.contains(&format!("{dir}/{stem}"))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, rel.as_bytes()).unwrap();
    }

    #[test]
    fn excludes_what_postgresql_says_to_exclude() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("data");
        for f in [
            "PG_VERSION",
            "global/pg_control",
            "global/pg_internal.init",
            "base/5/16384",
            "base/5/16384.1",
            "base/5/16390",
            "base/5/16390_init",
            "base/5/16390_fsm",
            "base/5/pgsql_tmp/pgsql_tmp123.0",
            "pg_wal/000000010000000000000001",
            "pg_wal/archive_status/000000010000000000000001.done",
            "pg_replslot/s/state",
            "pg_stat_tmp/global.stat",
            "postmaster.pid",
            "postgresql.auto.conf",
            "backup_label.old",
            "pg_xact/0000",
        ] {
            touch(&root, f);
        }
        std::fs::write(root.join("PG_VERSION"), "15\n").unwrap();
        let ts = t.path().join("ts");
        touch(&ts, "PG_15_202209061/5/16400");
        touch(&ts, "PG_14_202107181/5/99999");
        std::fs::create_dir_all(root.join("pg_tblspc")).unwrap();
        std::os::unix::fs::symlink(&ts, root.join("pg_tblspc/16399")).unwrap();

        let paths: Vec<String> = walk(&root).unwrap().into_iter().map(|e| e.path).collect();
        for want in [
            "PG_VERSION",
            "global/pg_control",
            "base/5/16384",
            "base/5/16384.1",
            "base/5/16390_init",
            "pg_wal",
            "pg_wal/archive_status",
            "pg_replslot",
            "pg_stat_tmp",
            "postgresql.auto.conf",
            "pg_xact/0000",
            "pg_tblspc/16399",
            "pg_tblspc/16399/PG_15_202209061/5/16400",
        ] {
            assert!(
                paths.iter().any(|p| p == want),
                "{want} missing from {paths:?}"
            );
        }
        for unwanted in [
            "global/pg_internal.init",
            "base/5/16390",
            "base/5/16390_fsm",
            "base/5/pgsql_tmp",
            "pg_wal/000000010000000000000001",
            "pg_replslot/s",
            "pg_stat_tmp/global.stat",
            "postmaster.pid",
            "backup_label.old",
            "pg_tblspc/16399/PG_14_202107181/5/99999",
        ] {
            let inside = format!("{unwanted}/");
            assert!(
                !paths
                    .iter()
                    .any(|p| p == unwanted || p.starts_with(&inside)),
                "{unwanted} copied"
            );
        }
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
    }
}
