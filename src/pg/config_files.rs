//! The server's configuration files that live outside its data directory
//! (Debian and Ubuntu keep `postgresql.conf`, `pg_hba.conf`, `pg_ident.conf`
//! and `conf.d/` under `/etc/postgresql/VERSION/CLUSTER/`).
//!
//! A base backup copies the data directory, so without these a restored copy
//! cannot start. `outside_files` finds them (following `include`,
//! `include_if_exists` and `include_dir`); a restore writes them into the new
//! data directory and `rewrite` points the copies at each other rather than at
//! the original cluster's files: a restored copy runs next to production.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// PostgreSQL's own limit on nested includes.
pub const MAX_DEPTH: usize = 10;

/// Where the restored copies of kept files go, inside the data directory.
pub const RESTORED_DIR: &str = "lifeboat-config";

/// What the server says its configuration files are (`SHOW config_file` ...).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub config_file: String,
    pub hba_file: String,
    pub ident_file: String,
}

/// One configuration file to keep: its original path, and which setting
/// names it (`None`: it is included by another one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    pub setting: Option<String>,
    pub path: PathBuf,
    pub content: Vec<u8>,
}

/// `path` with `.` and `..` taken out by text, as PostgreSQL's
/// `canonicalize_path` does (symbolic links are not followed).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            c => out.push(c.as_os_str()),
        }
    }
    out
}

/// The configuration files outside the data directory (`data_dirs`: the
/// server's `data_directory` and the path lifeboat reads it at, which may be
/// spelled differently), and a warning for each one that could not be read
/// (the backup goes on without it).
pub fn outside_files(settings: &Settings, data_dirs: &[&Path]) -> (Vec<ConfigFile>, Vec<String>) {
    let dirs: Vec<PathBuf> = data_dirs.iter().map(|d| normalize(d)).collect();
    let inside = |p: &Path| dirs.iter().any(|d| p.starts_with(d));
    let data_dir = dirs.first().cloned().unwrap_or_default();
    // hba_file and ident_file may be relative: to the data directory, where
    // the postmaster runs.
    let setting_path = |v: &str| (!v.is_empty()).then(|| normalize(&data_dir.join(v)));
    let mut found: BTreeMap<PathBuf, ConfigFile> = BTreeMap::new();
    let mut warnings = Vec::new();
    // (path, setting, depth, whether it must exist)
    let mut queue: Vec<(PathBuf, Option<&str>, usize, bool)> = Vec::new();
    for (value, setting) in [
        (&settings.ident_file, "ident_file"),
        (&settings.hba_file, "hba_file"),
        (&settings.config_file, "config_file"),
    ] {
        if let Some(p) = setting_path(value) {
            queue.push((p, Some(setting), 0, true));
        }
    }
    let mut seen = std::collections::HashSet::new();
    while let Some((path, setting, depth, required)) = queue.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        // Only postgresql.conf's syntax has includes (pg_hba.conf's `@file`
        // lists are not followed).
        let conf_syntax = setting.is_none_or(|s| s == "config_file");
        if inside(&path) && !conf_syntax {
            continue; // in the backup already
        }
        let content = match std::fs::read(&path) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && (!required || inside(&path)) => {
                continue;
            }
            Err(e) => {
                warnings.push(format!(
                    "{} cannot be read ({e}): it is not in the backup; keep a copy of it yourself",
                    path.display()
                ));
                continue;
            }
        };
        if conf_syntax {
            let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
            for d in directives(&String::from_utf8_lossy(&content)) {
                let required = match d.name.as_str() {
                    "include" | "include_dir" => true,
                    "include_if_exists" => false,
                    _ => continue,
                };
                if depth + 1 > MAX_DEPTH {
                    warnings.push(format!(
                        "{}: includes nested deeper than {MAX_DEPTH} are not followed",
                        path.display()
                    ));
                    break;
                }
                let target = normalize(&dir.join(&d.value));
                if d.name == "include_dir" {
                    for f in conf_files_in(&target) {
                        queue.push((f, None, depth + 1, true));
                    }
                } else {
                    queue.push((target, None, depth + 1, required));
                }
            }
        }
        if !inside(&path) {
            found.insert(
                path.clone(),
                ConfigFile {
                    setting: setting.map(str::to_string),
                    path,
                    content,
                },
            );
        }
    }
    (found.into_values().collect(), warnings)
}

/// The files of an `include_dir`, as PostgreSQL reads them: names ending in
/// `.conf`, not starting with a dot, in name order.
fn conf_files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".conf") && !name.starts_with('.') && e.path().is_file()
        })
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// One `name = value` line of a postgresql.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Directive {
    name: String,
    value: String,
}

/// Parse a line: `name [=] value [# comment]`, the value quoted (with `''`
/// and PostgreSQL's backslash escapes) or a bare word. `None` for blank
/// lines, comments and lines PostgreSQL would refuse.
fn parse_line(line: &str) -> Option<Directive> {
    let s = line.trim_start();
    let name_len = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(s.len());
    if name_len == 0 {
        return None;
    }
    let (name, rest) = s.split_at(name_len);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    let value = match rest.strip_prefix('\'') {
        Some(quoted) => unquote(quoted)?,
        None => rest
            .split(|c: char| c.is_whitespace() || c == '#')
            .next()
            .unwrap_or("")
            .to_string(),
    };
    Some(Directive {
        name: name.to_ascii_lowercase(),
        value,
    })
}

/// The rest of a quoted value after its opening quote, as GUC_scanstr reads
/// it; `None` if the quote is not closed.
fn unquote(quoted: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = quoted.chars().peekable();
    loop {
        match chars.next()? {
            '\'' if chars.peek() == Some(&'\'') => {
                chars.next();
                out.push('\'');
            }
            '\'' => return Some(out),
            '\\' => match chars.next()? {
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                c @ '0'..='7' => {
                    let mut v = c.to_digit(8)?;
                    for _ in 0..2 {
                        match chars.peek().and_then(|c| c.to_digit(8)) {
                            Some(d) => {
                                v = v * 8 + d;
                                chars.next();
                            }
                            None => break,
                        }
                    }
                    out.push(char::from_u32(v & 0xff)?);
                }
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
}

/// A value quoted for postgresql.conf.
pub fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

fn directives(text: &str) -> impl Iterator<Item = Directive> + '_ {
    text.lines().filter_map(parse_line)
}

/// Where a restore puts the copy of a kept file that was at `original` (an
/// absolute path): under `RESTORED_DIR` in the new data directory.
pub fn restored_path(data_dir: &Path, original: &Path) -> PathBuf {
    let mut out = data_dir.join(RESTORED_DIR);
    for c in original.components() {
        if let Component::Normal(part) = c {
            out.push(part);
        }
    }
    out
}

/// Settings that name the original cluster's own files: commented out in a
/// restored copy (`data_directory` would start the copy on production's data,
/// `external_pid_file` would overwrite production's pid file).
const ORIGINAL_ONLY: &[&str] = &[
    "data_directory",
    "external_pid_file",
    "config_file",
    "promote_trigger_file",
];
/// The original's recovery and replication settings: a copy restored from a
/// standby's backup must not stream from production or take over the
/// standby's slot, run its archive_cleanup_command (which may delete from a
/// shared archive) or wait out its apply delay; a recovery target left by an
/// earlier restore (the server backed up was itself restored) would stop the
/// new recovery at the old target; and a copy has none of the original's
/// synchronous standbys, so with `synchronous_standby_names` every commit
/// would wait forever. The restore writes its own recovery settings after
/// these.
const NOT_FOR_THE_COPY: &[&str] = &[
    "synchronous_standby_names",
    "primary_conninfo",
    "primary_slot_name",
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
    "recovery_min_apply_delay",
    "recovery_target",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "recovery_target_action",
];
/// Of those, the ones whose value may hold a password: neither printed nor
/// kept in the comment (`primary_conninfo` is, with its password hidden, when
/// it parses).
const HIDDEN_VALUE: &[&str] = &[
    "primary_conninfo",
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
];
/// Directories a server writes into: one outside the data directory is the
/// original's (its logs, its statistics before 15), so the copy uses its own
/// default inside the data directory.
const WRITTEN_DIRS: &[&str] = &["log_directory", "stats_temp_directory"];

/// How a restored copy's configuration refers to files.
pub struct Relocation<'a> {
    /// The original cluster's data directory, and the new one.
    pub old_data_dir: &'a Path,
    pub new_data_dir: &'a Path,
    /// Files kept from outside the original data directory (original paths);
    /// `None` for backups made before lifeboat kept them, whose outside
    /// paths are left as they are.
    pub kept: Option<&'a [PathBuf]>,
}

impl Relocation<'_> {
    /// Where `path` (as the original cluster saw it) is in the restored copy:
    /// `None` if it is outside the original data directory and not kept.
    pub fn map(&self, path: &Path) -> Option<PathBuf> {
        let path = normalize(path);
        if let Ok(rest) = path.strip_prefix(self.old_data_dir) {
            return Some(self.new_data_dir.join(rest));
        }
        let kept = self.kept?;
        kept.iter()
            .any(|p| p.starts_with(&path))
            .then(|| restored_path(self.new_data_dir, &path))
    }

    /// The original path of a file of the restored copy.
    pub fn original_of(&self, restored: &Path) -> Option<PathBuf> {
        let rest = restored.strip_prefix(self.new_data_dir).ok()?;
        match rest.strip_prefix(RESTORED_DIR) {
            Ok(kept) => Some(Path::new("/").join(kept)),
            Err(_) => Some(self.old_data_dir.join(rest)),
        }
    }
}

/// What `rewrite` did to one file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rewritten {
    /// The new content: the old one byte for byte if nothing changed.
    pub text: Vec<u8>,
    /// One line per change.
    pub changes: Vec<String>,
    /// Paths it still names on the original host (not in the backup).
    pub warnings: Vec<String>,
    /// The files of the restored copy it includes (to rewrite in turn).
    pub includes: Vec<PathBuf>,
    /// Directories it now includes that the caller must create (an
    /// `include_dir` that had no files, so none were kept).
    pub empty_dirs: Vec<PathBuf>,
}

fn not_kept(name: &str, value: &str) -> String {
    format!(
        "{name} = {} names a file of the original host (it is not in the backup)",
        quote(value)
    )
}

/// Rewrite a restored postgresql.conf, postgresql.auto.conf or included file,
/// line by line (lines it does not change are kept byte for byte, whatever
/// their encoding): settings that name the original cluster's own files are
/// commented out, and paths to files that were restored point at the copies.
/// `original_file` is where the file was (relative includes start there),
/// `restored_file` where its copy is.
pub fn rewrite(
    text: &[u8],
    original_file: &Path,
    restored_file: &Path,
    r: &Relocation<'_>,
) -> Rewritten {
    let dir = original_file.parent().unwrap_or(Path::new("/"));
    let here = restored_file.parent().unwrap_or(Path::new("/"));
    let mut out = Rewritten::default();
    for line in text.split_inclusive(|b| *b == b'\n') {
        let lossy = String::from_utf8_lossy(line);
        let Some(d) = parse_line(&lossy) else {
            out.text.extend_from_slice(line);
            continue;
        };
        let name = d.name.as_str();
        let value = Path::new(&d.value);
        // Some(None): comment out; Some(Some(v)): set to v.
        let replaced: Option<Option<PathBuf>> = if ORIGINAL_ONLY.contains(&name) {
            Some(None)
        } else if NOT_FOR_THE_COPY.contains(&name) {
            if HIDDEN_VALUE.contains(&name) {
                // A connection string is kept with its password hidden (the
                // DBA sees where the original streamed from); a command is
                // not kept at all: nothing says where in it a password is.
                let shown = (name == "primary_conninfo")
                    .then(|| super::conninfo::ConnInfo::parse(&d.value).ok())
                    .flatten()
                    .map(|c| quote(&c.to_string()));
                let (kept, change) = match &shown {
                    Some(v) => (v.as_str(), format!("was {v}")),
                    None => (
                        "(not kept: it may hold a password)",
                        "its value not shown".to_string(),
                    ),
                };
                out.text.extend_from_slice(
                    format!("# lifeboat restore: was {name} = {kept}\n").as_bytes(),
                );
                out.changes.push(format!("{name} commented out ({change})"));
                continue;
            }
            Some(None)
        } else if WRITTEN_DIRS.contains(&name) && value.is_absolute() {
            let moved = normalize(value)
                .strip_prefix(r.old_data_dir)
                .map(|rest| r.new_data_dir.join(rest));
            Some(moved.ok())
        } else if matches!(name, "hba_file" | "ident_file") && value.is_absolute() {
            match r.map(value) {
                Some(p) => Some(Some(p)),
                None => {
                    out.warnings.push(not_kept(name, &d.value));
                    None
                }
            }
        } else if matches!(name, "include" | "include_if_exists" | "include_dir") {
            let target = normalize(&dir.join(value));
            let mapped = r.map(&target);
            match &mapped {
                Some(p) if name == "include_dir" => out.includes.extend(conf_files_in(p)),
                Some(p) if p.is_file() => out.includes.push(p.clone()),
                _ => {}
            }
            match mapped {
                // A relative path that still leads to the copy stays.
                Some(p) if normalize(&here.join(value)) == p => None,
                Some(p) => Some(Some(p)),
                None if name == "include_if_exists" => None,
                None if name == "include_dir" && r.kept.is_some() => {
                    // Its files are kept when it has any: it was empty.
                    let empty = restored_path(r.new_data_dir, &target);
                    out.empty_dirs.push(empty.clone());
                    Some(Some(empty))
                }
                None => {
                    out.warnings.push(not_kept(name, &d.value));
                    None
                }
            }
        } else {
            None
        };
        match replaced {
            None => out.text.extend_from_slice(line),
            Some(new) => {
                let body = lossy.trim_end_matches(['\n', '\r']);
                out.text
                    .extend_from_slice(format!("# lifeboat restore: was {body}\n").as_bytes());
                match new {
                    Some(p) => {
                        let v = quote(&p.to_string_lossy());
                        out.text
                            .extend_from_slice(format!("{name} = {v}\n").as_bytes());
                        out.changes
                            .push(format!("{name} = {v} (was {})", quote(&d.value)));
                    }
                    None => out
                        .changes
                        .push(format!("{name} = {} commented out", quote(&d.value))),
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_like_postgresql() {
        let p = |l: &str| parse_line(l).map(|d| (d.name, d.value));
        assert_eq!(p("port = 5432"), Some(("port".into(), "5432".into())));
        assert_eq!(
            p("  Include_Dir 'conf.d'   # local"),
            Some(("include_dir".into(), "conf.d".into()))
        );
        assert_eq!(
            p("data_directory='/var/lib/it''s \\'x\\''"),
            Some(("data_directory".into(), "/var/lib/it's 'x'".into()))
        );
        assert_eq!(
            p("x = 'a\\tb\\101\\\\c'"),
            Some(("x".into(), "a\tbA\\c".into()))
        );
        assert_eq!(p("work_mem=4MB#c"), Some(("work_mem".into(), "4MB".into())));
        assert_eq!(p("# port = 1"), None);
        assert_eq!(p(""), None);
        assert_eq!(p("x = 'unterminated"), None);
        // What `quote` writes reads back the same.
        for v in ["/a b/it's", "C:\\x\\'y", ""] {
            let line = format!("k = {}", quote(v));
            assert_eq!(p(&line), Some(("k".into(), v.to_string())), "{line}");
        }
        assert_eq!(
            normalize(Path::new("/etc/pg/../pg/./conf.d/")),
            Path::new("/etc/pg/conf.d")
        );
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A Debian-style layout: the configuration under etc/, the data elsewhere.
    fn debian(root: &Path) -> Settings {
        let etc = root.join("etc/15/main");
        let data = root.join("data");
        write(
            &etc.join("postgresql.conf"),
            &format!(
                "data_directory = '{}'\nhba_file = '{}'\nident_file = '{}'\n\
                 external_pid_file = '/run/15-main.pid'\ninclude_dir = 'conf.d'\n\
                 include_if_exists = 'absent.conf'\ninclude '{}'\nport = 5432\n\
                 include '{}'\nlog_directory = '/var/log/postgresql'\n",
                data.display(),
                etc.join("pg_hba.conf").display(),
                etc.join("pg_ident.conf").display(),
                root.join("shared/../shared/extra.conf").display(),
                data.join("inside.conf").display(),
            ),
        );
        write(&etc.join("pg_hba.conf"), "local all all peer\n");
        write(&etc.join("pg_ident.conf"), "");
        write(&etc.join("conf.d/b.conf"), "work_mem = '8MB'\n");
        write(&etc.join("conf.d/a.conf"), "include 'nested.conf'\n");
        write(&etc.join("conf.d/nested.conf"), "shared_buffers = 64MB\n");
        write(&etc.join("conf.d/.hidden.conf"), "bad\n");
        write(&etc.join("conf.d/notes.txt"), "bad\n");
        write(&root.join("shared/extra.conf"), "max_connections = 50\n");
        write(&data.join("PG_VERSION"), "15\n");
        // Included from outside but in the data directory (backed up
        // already), and including an outside file itself.
        write(
            &data.join("inside.conf"),
            &format!(
                "include '{}'\n",
                root.join("shared/from-inside.conf").display()
            ),
        );
        write(&root.join("shared/from-inside.conf"), "work_mem = '9MB'\n");
        Settings {
            config_file: etc.join("postgresql.conf").display().to_string(),
            hba_file: etc.join("pg_hba.conf").display().to_string(),
            ident_file: etc.join("pg_ident.conf").display().to_string(),
        }
    }

    #[test]
    fn finds_every_file_outside_the_data_directory() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let settings = debian(root);
        let (files, warnings) = outside_files(&settings, &[&root.join("data")]);
        assert!(warnings.is_empty(), "{warnings:?}");
        let etc = root.join("etc/15/main");
        let got: Vec<(Option<&str>, PathBuf)> = files
            .iter()
            .map(|f| (f.setting.as_deref(), f.path.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (None, etc.join("conf.d/a.conf")),
                (None, etc.join("conf.d/b.conf")),
                (None, etc.join("conf.d/nested.conf")),
                (Some("hba_file"), etc.join("pg_hba.conf")),
                (Some("ident_file"), etc.join("pg_ident.conf")),
                (Some("config_file"), etc.join("postgresql.conf")),
                (None, root.join("shared/extra.conf")),
                (None, root.join("shared/from-inside.conf")),
            ]
        );
        assert_eq!(files[3].content, b"local all all peer\n");
    }

    #[test]
    fn a_cluster_configured_inside_its_data_directory_keeps_nothing_extra() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        write(&data.join("postgresql.conf"), "include_dir = 'conf.d'\n");
        write(&data.join("conf.d/x.conf"), "port = 1\n");
        write(&data.join("hba.conf"), "");
        // hba_file relative: to the data directory. pg_ident.conf is missing
        // (inside the data directory: nothing to say).
        let s = Settings {
            config_file: data.join("postgresql.conf").display().to_string(),
            hba_file: "hba.conf".into(),
            ident_file: data.join("pg_ident.conf").display().to_string(),
        };
        let (files, warnings) = outside_files(&s, &[&data]);
        assert!(files.is_empty(), "{files:?}");
        assert!(warnings.is_empty(), "{warnings:?}");
        // Outside and unreadable: said, not fatal.
        let s = Settings {
            ident_file: t.path().join("etc/pg_ident.conf").display().to_string(),
            ..s
        };
        let (_, warnings) = outside_files(&s, &[&data]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("pg_ident.conf"), "{warnings:?}");
    }

    #[test]
    fn include_loops_stop() {
        let t = tempfile::tempdir().unwrap();
        let etc = t.path().join("etc");
        write(&etc.join("postgresql.conf"), "include 'a.conf'\n");
        write(
            &etc.join("a.conf"),
            "include 'postgresql.conf'\ninclude 'a.conf'\n",
        );
        let s = Settings {
            config_file: etc.join("postgresql.conf").display().to_string(),
            ..Settings::default()
        };
        let (files, _) = outside_files(&s, &[&t.path().join("data")]);
        assert_eq!(files.len(), 2);
    }

    fn values(text: &[u8], n: &str) -> Vec<String> {
        directives(&String::from_utf8_lossy(text))
            .filter(|d| d.name == n)
            .map(|d| d.value)
            .collect()
    }

    /// `rewrite` of a standby's postgresql.auto.conf restored as a copy.
    fn rewrite_standby_auto(auto: &str) -> Rewritten {
        let r = Relocation {
            old_data_dir: Path::new("/srv/standby"),
            new_data_dir: Path::new("/srv/copy"),
            kept: None,
        };
        rewrite(
            auto.as_bytes(),
            Path::new("/srv/standby/postgresql.auto.conf"),
            Path::new("/srv/copy/postgresql.auto.conf"),
            &r,
        )
    }

    #[test]
    fn a_restored_copy_keeps_none_of_the_originals_recovery_settings() {
        // What pg_basebackup -R writes into a standby's postgresql.auto.conf.
        // And what an earlier lifeboat restore of the backed-up server added.
        let auto = "primary_conninfo = 'user=replicator password=hunter2 host=primary port=5432'\n\
                    primary_slot_name = 'standby1'\nwork_mem = '8MB'\n\
                    restore_command = 'lifeboat wal-fetch %f %p'\n\
                    recovery_target_time = '2026-11-25 14:03:00+00'\n\
                    recovery_target_action = 'promote'\n\
                    archive_cleanup_command = 'pg_archivecleanup /mnt/archive %r'\n\
                    synchronous_standby_names = 'standby1'\n";
        let out = rewrite_standby_auto(auto);
        for gone in NOT_FOR_THE_COPY {
            assert!(values(&out.text, gone).is_empty(), "{gone}");
        }
        assert_eq!(values(&out.text, "work_mem"), ["8MB"]);
        let text = String::from_utf8(out.text).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains(
                "# lifeboat restore: was primary_conninfo = 'user=replicator password=******** host=primary port=5432'\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# lifeboat restore: was restore_command = (not kept"),
            "{text}"
        );
        assert_eq!(out.changes.len(), 7, "{:?}", out.changes);
        assert!(
            out.changes.iter().all(|c| !c.contains("hunter2")),
            "{:?}",
            out.changes
        );
    }

    #[test]
    fn a_primary_conninfo_that_does_not_parse_is_not_kept() {
        let auto = "primary_conninfo = 'host=primary password=hunter2 port'\n";
        let out = rewrite_standby_auto(auto);
        let text = String::from_utf8(out.text).unwrap();
        assert_eq!(
            text,
            "# lifeboat restore: was primary_conninfo = (not kept: it may hold a password)\n"
        );
        assert!(out.changes.iter().all(|c| !c.contains("hunter2")));
    }

    #[test]
    fn a_restored_copy_points_at_its_own_files() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let settings = debian(root);
        let (files, _) = outside_files(&settings, &[&root.join("data")]);
        let kept: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
        let etc = root.join("etc/15/main");
        let new = root.join("restored");
        let r = Relocation {
            old_data_dir: &root.join("data"),
            new_data_dir: &new,
            kept: Some(&kept),
        };
        // As the restore does: the kept files in place first.
        for f in &files {
            write(
                &restored_path(&new, &f.path),
                &String::from_utf8_lossy(&f.content),
            );
        }
        write(&new.join("inside.conf"), "");
        let text = std::fs::read(etc.join("postgresql.conf")).unwrap();
        let out = rewrite(
            &text,
            &etc.join("postgresql.conf"),
            &new.join("postgresql.conf"),
            &r,
        );
        let get = |n: &str| values(&out.text, n);
        assert!(get("data_directory").is_empty());
        assert!(get("external_pid_file").is_empty());
        assert!(get("log_directory").is_empty());
        assert_eq!(
            get("hba_file"),
            [restored_path(&new, &etc.join("pg_hba.conf"))
                .display()
                .to_string()]
        );
        assert_eq!(
            get("ident_file"),
            [restored_path(&new, &etc.join("pg_ident.conf"))
                .display()
                .to_string()]
        );
        assert_eq!(
            get("include_dir"),
            [restored_path(&new, &etc.join("conf.d"))
                .display()
                .to_string()]
        );
        assert_eq!(
            get("include"),
            [
                restored_path(&new, &root.join("shared/extra.conf"))
                    .display()
                    .to_string(),
                new.join("inside.conf").display().to_string()
            ]
        );
        // Missing and optional: left as it was.
        assert_eq!(get("include_if_exists"), ["absent.conf"]);
        assert_eq!(get("port"), ["5432"]);
        let text = String::from_utf8(out.text.clone()).unwrap();
        assert!(
            text.contains("# lifeboat restore: was data_directory = "),
            "{text}"
        );
        assert_eq!(out.changes.len(), 8, "{:?}", out.changes);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        // What the copy reads next, to rewrite in turn.
        let mut inc = out.includes.clone();
        inc.sort();
        let conf_d = restored_path(&new, &etc.join("conf.d"));
        let mut expected = vec![
            conf_d.join("a.conf"),
            conf_d.join("b.conf"),
            conf_d.join("nested.conf"),
            new.join("inside.conf"),
            restored_path(&new, &root.join("shared/extra.conf")),
        ];
        expected.sort();
        assert_eq!(inc, expected);
        assert_eq!(
            r.original_of(&conf_d.join("a.conf")),
            Some(etc.join("conf.d/a.conf"))
        );
        assert_eq!(
            r.original_of(&new.join("inside.conf")),
            Some(root.join("data/inside.conf"))
        );

        // A file inside the data directory that includes a kept outside file.
        let inside = format!(
            "include '{}'\n",
            root.join("shared/from-inside.conf").display()
        );
        let out = rewrite(
            inside.as_bytes(),
            &root.join("data/inside.conf"),
            &new.join("inside.conf"),
            &r,
        );
        assert_eq!(
            values(&out.text, "include"),
            [restored_path(&new, &root.join("shared/from-inside.conf"))
                .display()
                .to_string()]
        );

        // A file with nothing to change comes back byte for byte, whatever its
        // encoding.
        let plain = b"port = 5432\r\n# caf\xe9 (Latin-1)\nwork_mem = '4MB'";
        let out = rewrite(
            plain,
            &etc.join("postgresql.conf"),
            &new.join("postgresql.conf"),
            &r,
        );
        assert_eq!(out.text, plain);
        assert!(out.changes.is_empty());
        // Latin-1 around a change: the other lines are kept byte for byte.
        let mixed = b"# caf\xe9\nexternal_pid_file = '/run/x.pid'\n# \xe9t\xe9\n";
        let out = rewrite(
            mixed,
            &etc.join("postgresql.conf"),
            &new.join("postgresql.conf"),
            &r,
        );
        assert!(out.text.starts_with(b"# caf\xe9\n# lifeboat restore: was "));
        assert!(out.text.ends_with(b"\n# \xe9t\xe9\n"));
        assert!(values(&out.text, "external_pid_file").is_empty());
    }

    #[test]
    fn an_empty_include_dir_becomes_an_empty_copy() {
        let t = tempfile::tempdir().unwrap();
        let (old, new) = (t.path().join("data"), t.path().join("restored"));
        let etc = t.path().join("etc");
        std::fs::create_dir_all(&new).unwrap();
        let r = Relocation {
            old_data_dir: &old,
            new_data_dir: &new,
            kept: Some(&[]),
        };
        let out = rewrite(
            b"include_dir = 'conf.d'\n",
            &etc.join("postgresql.conf"),
            &new.join("postgresql.conf"),
            &r,
        );
        let copy = restored_path(&new, &etc.join("conf.d"));
        assert_eq!(
            values(&out.text, "include_dir"),
            [copy.display().to_string()]
        );
        assert_eq!(out.empty_dirs, [copy]);
    }

    #[test]
    fn paths_not_in_the_backup_are_left_and_named() {
        let t = tempfile::tempdir().unwrap();
        let (old, new) = (t.path().join("data"), t.path().join("restored"));
        let text = b"include '/etc/common.conf'\nhba_file = '/etc/pg/hba.conf'\nexternal_pid_file = '/run/x.pid'\n";
        // A backup from before lifeboat kept outside files: only what names
        // the original's own files changes.
        let r = Relocation {
            old_data_dir: &old,
            new_data_dir: &new,
            kept: None,
        };
        let out = rewrite(
            text,
            &old.join("postgresql.conf"),
            &new.join("postgresql.conf"),
            &r,
        );
        assert_eq!(values(&out.text, "include"), ["/etc/common.conf"]);
        assert_eq!(values(&out.text, "hba_file"), ["/etc/pg/hba.conf"]);
        assert!(values(&out.text, "external_pid_file").is_empty());
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
        // Relative paths inside the data directory mean the same in the copy;
        // an absolute one into the old data directory follows it.
        let r = Relocation {
            old_data_dir: &old,
            new_data_dir: &new,
            kept: Some(&[]),
        };
        let text = format!(
            "include_dir = 'conf.d'\nhba_file = 'pg_hba.conf'\nident_file = '{}'\n",
            old.join("ident.conf").display()
        );
        let out = rewrite(
            text.as_bytes(),
            &old.join("postgresql.conf"),
            &new.join("postgresql.conf"),
            &r,
        );
        assert_eq!(values(&out.text, "include_dir"), ["conf.d"]);
        assert_eq!(values(&out.text, "hba_file"), ["pg_hba.conf"]);
        assert_eq!(
            values(&out.text, "ident_file"),
            [new.join("ident.conf").display().to_string()]
        );
    }
}
