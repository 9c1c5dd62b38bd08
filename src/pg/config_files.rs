//! The server's configuration files that live outside its data directory
//! (Debian and Ubuntu keep `postgresql.conf`, `pg_hba.conf`, `pg_ident.conf`
//! and `conf.d/` under `/etc/postgresql/VERSION/CLUSTER/`).
//!
//! A base backup copies the data directory, so without these a restored copy
//! cannot start. `outside_files` finds them (following `include`,
//! `include_if_exists` and `include_dir`); a restore writes them into the new
//! data directory and `rewrite` points the copies at each other, never at the
//! original cluster's files: a restored copy runs next to production.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// PostgreSQL's own limit on nested includes.
const MAX_DEPTH: usize = 10;

/// Where the restored copies of included files go, inside the data directory.
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

/// The configuration files outside `data_dir`, and a warning for each one
/// that could not be read (the backup goes on without it).
pub fn outside_files(settings: &Settings, data_dir: &Path) -> (Vec<ConfigFile>, Vec<String>) {
    let data_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let inside = |p: &Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .starts_with(&data_dir)
    };
    let mut found: BTreeMap<PathBuf, ConfigFile> = BTreeMap::new();
    let mut warnings = Vec::new();
    // (path, setting, depth, whether it must exist)
    let mut queue: Vec<(PathBuf, Option<&str>, usize, bool)> = vec![
        (
            settings.config_file.clone().into(),
            Some("config_file"),
            0,
            true,
        ),
        (settings.hba_file.clone().into(), Some("hba_file"), 0, true),
        (
            settings.ident_file.clone().into(),
            Some("ident_file"),
            0,
            true,
        ),
    ];
    while let Some((path, setting, depth, required)) = queue.pop() {
        if path.as_os_str().is_empty() || found.contains_key(&path) {
            continue;
        }
        let content = match std::fs::read(&path) {
            Ok(c) => c,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                warnings.push(format!(
                    "{} cannot be read ({e}): it is not in the backup; keep a copy of it yourself",
                    path.display()
                ));
                continue;
            }
        };
        // Only postgresql.conf's syntax has includes.
        if setting.is_none_or(|s| s == "config_file") {
            let dir = path.parent().unwrap_or(Path::new("/"));
            for d in directives(&String::from_utf8_lossy(&content)) {
                let target = dir.join(&d.value);
                if depth + 1 > MAX_DEPTH {
                    warnings.push(format!(
                        "{}: includes nested deeper than {MAX_DEPTH} are not followed",
                        path.display()
                    ));
                    break;
                }
                match d.name.as_str() {
                    "include" => queue.push((target, None, depth + 1, true)),
                    "include_if_exists" => queue.push((target, None, depth + 1, false)),
                    "include_dir" => {
                        for f in conf_files_in(&target) {
                            queue.push((f, None, depth + 1, true));
                        }
                    }
                    _ => {}
                }
            }
        }
        found.insert(
            path.clone(),
            ConfigFile {
                setting: setting.map(str::to_string),
                path,
                content,
            },
        );
    }
    // Those inside the data directory are in the backup already (their
    // includes were still followed).
    let files = found.into_values().filter(|f| !inside(&f.path)).collect();
    (files, warnings)
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

/// Parse a line: `name [=] value [# comment]`, the value quoted ('it''s',
/// 'it\'s') or a bare word. `None` for blank lines, comments and lines
/// PostgreSQL would refuse.
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
        Some(quoted) => {
            let mut out = String::new();
            let mut chars = quoted.chars();
            loop {
                match chars.next()? {
                    '\'' => {
                        if chars.as_str().starts_with('\'') {
                            chars.next();
                            out.push('\'');
                        } else {
                            break;
                        }
                    }
                    '\\' => out.push(chars.next()?),
                    c => out.push(c),
                }
            }
            out
        }
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

fn directives(text: &str) -> impl Iterator<Item = Directive> + '_ {
    text.lines().filter_map(parse_line)
}

/// Where a restore puts the copy of a file that was at `original` (an
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
const ORIGINAL_ONLY: &[&str] = &["data_directory", "external_pid_file", "config_file"];

/// How a restored copy's configuration refers to files.
pub struct Relocation<'a> {
    /// The original cluster's data directory, and the new one.
    pub old_data_dir: &'a Path,
    pub new_data_dir: &'a Path,
    /// Where the file being rewritten was (relative includes start there),
    /// and where its copy is.
    pub original_file: &'a Path,
    pub restored_file: &'a Path,
    /// Files kept from outside the original data directory (original paths).
    pub kept: &'a [PathBuf],
}

impl Relocation<'_> {
    /// Where `path` (as the original cluster saw it) is in the restored copy:
    /// `None` if it is outside the original data directory and not kept.
    fn map(&self, path: &Path) -> Option<PathBuf> {
        if let Ok(rest) = path.strip_prefix(self.old_data_dir) {
            return Some(self.new_data_dir.join(rest));
        }
        let kept = |p: &PathBuf| p == path || p.starts_with(path);
        self.kept
            .iter()
            .any(kept)
            .then(|| restored_path(self.new_data_dir, path))
    }
}

/// Rewrite a restored postgresql.conf (or an included file): settings that
/// name the original cluster's files are commented out, and paths to files
/// that were restored point at the copies. Returns the new text (the same
/// text if nothing changed) and one line per change.
pub fn rewrite(text: &str, r: &Relocation<'_>) -> (String, Vec<String>) {
    let dir = r.original_file.parent().unwrap_or(Path::new("/"));
    let mut out = String::with_capacity(text.len());
    let mut changes = Vec::new();
    for line in text.split_inclusive('\n') {
        let Some(d) = parse_line(line) else {
            out.push_str(line);
            continue;
        };
        let body = line.trim_end_matches(['\n', '\r']);
        let replaced = match d.name.as_str() {
            n if ORIGINAL_ONLY.contains(&n) => Some(None),
            // A path relative to the data directory means the same in the copy.
            "hba_file" | "ident_file" | "stats_temp_directory"
                if Path::new(&d.value).is_absolute() =>
            {
                Some(r.map(Path::new(&d.value)))
            }
            "include" | "include_if_exists" | "include_dir" => {
                let here = r.restored_file.parent().unwrap_or(Path::new("/"));
                match r.map(&dir.join(&d.value)) {
                    // A relative path that still leads to the copy stays.
                    Some(p) if here.join(&d.value) == p => None,
                    Some(p) => Some(Some(p)),
                    None if d.name == "include_if_exists" => None,
                    None => Some(None),
                }
            }
            _ => None,
        };
        match replaced {
            None => out.push_str(line),
            Some(new) => {
                out.push_str(&format!("# lifeboat restore: was {body}\n"));
                match &new {
                    Some(p) => {
                        let quoted = format!("'{}'", p.to_string_lossy().replace('\'', "''"));
                        out.push_str(&format!("{} = {quoted}\n", d.name));
                        changes.push(format!("{} = {quoted} (was {})", d.name, d.value));
                    }
                    None => changes.push(format!("{} = '{}' commented out", d.name, d.value)),
                }
            }
        }
    }
    (out, changes)
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
        assert_eq!(p("work_mem=4MB#c"), Some(("work_mem".into(), "4MB".into())));
        assert_eq!(p("# port = 1"), None);
        assert_eq!(p(""), None);
        assert_eq!(p("x = 'unterminated"), None);
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A Debian-style layout: the configuration under etc/, the data elsewhere.
    fn debian(root: &Path) -> Settings {
        let etc = root.join("etc/15/main");
        write(
            &etc.join("postgresql.conf"),
            &format!(
                "data_directory = '{}'\nhba_file = '{}'\nident_file = '{}'\n\
                 external_pid_file = '/run/15-main.pid'\ninclude_dir = 'conf.d'\n\
                 include_if_exists = 'absent.conf'\ninclude '{}'\nport = 5432\n",
                root.join("data").display(),
                etc.join("pg_hba.conf").display(),
                etc.join("pg_ident.conf").display(),
                root.join("shared/extra.conf").display(),
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
        write(&root.join("data/PG_VERSION"), "15\n");
        // Included from outside, but lives in the data directory: backed up already.
        write(&root.join("data/inside.conf"), "\n");
        std::fs::OpenOptions::new()
            .append(true)
            .open(etc.join("postgresql.conf"))
            .map(|mut f| {
                std::io::Write::write_all(
                    &mut f,
                    format!("include '{}'\n", root.join("data/inside.conf").display()).as_bytes(),
                )
            })
            .unwrap()
            .unwrap();
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
        let (files, warnings) = outside_files(&settings, &root.join("data"));
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
        write(&data.join("pg_hba.conf"), "");
        let s = Settings {
            config_file: data.join("postgresql.conf").display().to_string(),
            hba_file: data.join("pg_hba.conf").display().to_string(),
            ident_file: data.join("pg_ident.conf").display().to_string(),
        };
        let (files, warnings) = outside_files(&s, &data);
        assert!(files.is_empty(), "{files:?}");
        // pg_ident.conf is missing: said, not fatal.
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
        let (files, _) = outside_files(&s, &t.path().join("data"));
        assert_eq!(files.len(), 2);
    }

    #[test]
    fn a_restored_copy_points_at_its_own_files_only() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let settings = debian(root);
        let (files, _) = outside_files(&settings, &root.join("data"));
        let kept: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
        let etc = root.join("etc/15/main");
        let new = root.join("restored");
        let r = Relocation {
            old_data_dir: &root.join("data"),
            new_data_dir: &new,
            original_file: &etc.join("postgresql.conf"),
            restored_file: &new.join("postgresql.conf"),
            kept: &kept,
        };
        let text = std::fs::read_to_string(etc.join("postgresql.conf")).unwrap();
        let (out, changes) = rewrite(&text, &r);
        let settings: Vec<(String, String)> = directives(&out).map(|d| (d.name, d.value)).collect();
        let get = |n: &str| {
            settings
                .iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        assert!(get("data_directory").is_empty(), "{out}");
        assert!(get("external_pid_file").is_empty(), "{out}");
        assert_eq!(
            get("hba_file"),
            [restored_path(&new, &etc.join("pg_hba.conf"))
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
        // Missing and optional: left as it was (it still resolves to nothing).
        assert_eq!(get("include_if_exists"), ["absent.conf"]);
        assert_eq!(get("port"), ["5432"]);
        assert!(
            out.contains("# lifeboat restore: was data_directory = "),
            "{out}"
        );
        assert_eq!(changes.len(), 7, "{changes:?}");

        // A file with nothing to change comes back byte for byte.
        let plain = "port = 5432\r\n# comment\nwork_mem = '4MB'";
        assert_eq!(rewrite(plain, &r), (plain.to_string(), vec![]));
    }

    #[test]
    fn relative_includes_inside_the_data_directory_stay() {
        let t = tempfile::tempdir().unwrap();
        let old = t.path().join("data");
        let new = t.path().join("restored");
        let r = Relocation {
            old_data_dir: &old,
            new_data_dir: &new,
            original_file: &old.join("postgresql.conf"),
            restored_file: &new.join("postgresql.conf"),
            kept: &[],
        };
        let text = "include_dir = 'conf.d'\nhba_file = 'pg_hba.conf'\n";
        assert_eq!(rewrite(text, &r).0, text);
        // An absolute one into the old data directory follows it.
        let text = format!("hba_file = '{}'\n", old.join("hba.conf").display());
        let (out, _) = rewrite(&text, &r);
        assert!(
            out.ends_with(&format!(
                "hba_file = '{}'\n",
                new.join("hba.conf").display()
            )),
            "{out}"
        );
    }
}
