//! The `lifeboat.toml` configuration file.
//!
//! ```toml
//! [repository.main]
//! url = "file:///var/backups/lifeboat"   # or "s3://bucket/prefix"
//! # encrypted with a passphrase: from $LIFEBOAT_PASSPHRASE (or the variable
//! # named by passphrase_env) or from passphrase_file; or to age recipients:
//! # recipients = ["age1..."], identity_file = "..." where restores run, and
//! # dedup_key_file = "..." (or $LIFEBOAT_DEDUP_KEY) where backups are written
//! compression_level = 1                  # zstd, 1..=19 (default 1: fastest; higher stores a little less)
//! fingerprint = "3f2a-91c0-..."           # optional: refuse a repository with other keys
//!
//! [target.staging]
//! database = "postgres://backup@staging-db/hyper_db"
//! method = "logical"                     # or "physical"; default "logical"
//! repository = "main"                    # or repositories = ["a", "b"]
//! schedule = "0 2 * * *"                 # 5-field cron, in UTC
//! retention = { keep_days = 7 }
//! globals = true                         # pg_dumpall --globals-only
//! globals_role_passwords = false
//! hooks = { before_restore = ["systemctl stop app"], after_restore = ["systemctl start app"] }
//! pg_bindir = "/usr/lib/postgresql/15/bin"
//!
//! [target.production]
//! database = "postgres://backup@localhost/hyper_db"  # the primary, or a standby
//! method = "physical"
//! data_directory = "/var/lib/postgresql/15/main"
//! checkpoint = "fast"                    # or "spread" (the default)
//! primary_database = "postgres://backup@primary/hyper_db"  # optional, when database is a standby
//! ```
//!
//! Unknown keys are errors, so that typos are caught. Errors are one line and
//! start with `FILE:LINE:COLUMN:` whenever the place in the file is known.
//! Relative paths in the file are relative to the file's directory.
//!
//! Secrets are resolved lazily ([`RepositoryConfig::passphrase`],
//! [`RepositoryConfig::dedup_key`]) and never appear in errors. A database
//! connection string may hold a password: [`TargetConfig`]'s `Debug` hides it
//! and errors about it never show it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::pg::conninfo::{ConnInfo, ConnInfoError, redacted};

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "LIFEBOAT_CONFIG";
/// Default environment variable holding a repository passphrase.
pub const PASSPHRASE_ENV: &str = "LIFEBOAT_PASSPHRASE";
/// Environment variable holding the deduplication key.
pub const DEDUP_KEY_ENV: &str = "LIFEBOAT_DEDUP_KEY";
/// The configuration file looked for in the current directory.
pub const CONFIG_FILE_NAME: &str = "lifeboat.toml";
/// The system-wide configuration file.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/lifeboat/lifeboat.toml";

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[repository.NAME]` tables.
    pub repositories: BTreeMap<String, RepositoryConfig>,
    /// `[target.NAME]` tables.
    pub targets: BTreeMap<String, TargetConfig>,
    /// The file this was read from, as given.
    pub path: PathBuf,
}

/// A `[repository.NAME]` table. Paths are absolute once loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryConfig {
    /// `file:///ABSOLUTE/PATH` or `s3://BUCKET[/PREFIX]`.
    pub url: String,
    /// File holding the passphrase (passphrase mode only).
    pub passphrase_file: Option<PathBuf>,
    /// Keep the keys a `passphrase_file` unlocked in `/dev/shm` for the next
    /// process (default); `false`: Argon2id in every process.
    pub unlock_cache: bool,
    /// Environment variable holding the passphrase; `None` means
    /// [`PASSPHRASE_ENV`]. Passphrase mode only.
    pub passphrase_env: Option<String>,
    /// age recipients (`age1...`); non-empty means recipients mode.
    pub recipients: Vec<String>,
    /// age identity file, needed where restores run in recipients mode.
    pub identity_file: Option<PathBuf>,
    /// File holding the deduplication key (else [`DEDUP_KEY_ENV`]).
    pub dedup_key_file: Option<PathBuf>,
    /// zstd level, 1..=19.
    pub compression_level: Option<i32>,
    /// `s3://` repositories: region, endpoint, storage classes, credentials
    /// profile, timeouts (all defaults for `file://`).
    pub s3: crate::storage::s3::S3Settings,
    /// Another repository whose keys this one shares (made by `lifeboat init`
    /// from that one's keys), so backups copy between them unchanged.
    pub keys_from: Option<String>,
    /// The fingerprint the repository's keys must have (as `lifeboat init`
    /// printed it, normalised): a repository with other keys is refused.
    pub fingerprint: Option<String>,
}

/// How a repository is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptionMode {
    /// With a passphrase.
    Passphrase,
    /// To age recipients.
    Recipients,
}

/// A `[target.NAME]` table: one database to back up.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// libpq connection string (URI or keyword/value); may hold a password.
    pub database: String,
    pub method: Method,
    /// Once loaded, exactly one of `repository` and `repositories` is set:
    /// a target that names none gets the only repository defined.
    pub repository: Option<String>,
    pub repositories: Vec<String>,
    pub schedule: Option<Schedule>,
    pub retention: Retention,
    /// Also back up roles and tablespaces (`pg_dumpall --globals-only`).
    pub globals: bool,
    /// Keep role passwords in the globals (else `--no-role-passwords`).
    pub globals_role_passwords: bool,
    pub hooks: Hooks,
    /// Directory of pg_dump, pg_restore, psql... (else from `PATH`).
    pub pg_bindir: Option<PathBuf>,
    /// The server's data directory (physical backups).
    pub data_directory: Option<PathBuf>,
    /// Physical backups: start with an immediate checkpoint (`checkpoint =
    /// "fast"`) instead of waiting for a spread one (the default, as
    /// pg_basebackup's: no I/O spike, but the backup may wait minutes to start).
    pub fast_checkpoint: bool,
    /// Physical targets: how `wal-push` archives.
    pub archive: ArchiveSettings,
    /// Physical targets backed up from a standby: the primary's connection
    /// string, so that the backup can end the primary's current WAL segment
    /// (`pg_switch_wal`) instead of waiting for its archiver to get there.
    pub primary_database: Option<String>,
}

/// `wal-push` modes. Synchronous (the default): the segment is in every
/// repository before archive_command returns. Asynchronous (`archive_async =
/// true`): it is in the local spool (fsync'd) and a background uploader sends
/// it on, so a slow or unreachable repository does not hold up the archiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSettings {
    pub asynchronous: bool,
    /// Default: `lifeboat-spool` in the data directory's pg_wal (never part
    /// of a base backup; on the same disk as the WAL it holds).
    pub spool_directory: Option<PathBuf>,
    /// Bytes the spool may hold.
    pub spool_max_size: u64,
    pub spool_full: SpoolFull,
}

impl Default for ArchiveSettings {
    fn default() -> ArchiveSettings {
        ArchiveSettings {
            asynchronous: false,
            spool_directory: None,
            spool_max_size: DEFAULT_SPOOL_MAX_SIZE,
            spool_full: SpoolFull::Fail,
        }
    }
}

/// 4 GiB: 256 segments of 16 MiB.
pub const DEFAULT_SPOOL_MAX_SIZE: u64 = 4 << 30;

/// What `wal-push` does when the spool is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolFull {
    /// Fail, so PostgreSQL keeps the segment in pg_wal and retries: nothing
    /// is lost, but pg_wal grows while the repository is unreachable.
    Fail,
    /// Drop the segment and say so loudly: pg_wal stays small, the WAL
    /// archive gets a gap (`list` and `verify` show it).
    Drop,
}

/// How a target is backed up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// pg_dump.
    #[default]
    Logical,
    /// A copy of the data directory.
    Physical,
}

/// Which backups to keep; a backup kept by any rule is kept. All unset
/// means keep everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_days: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
}

/// Shell commands run around backups and restores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hooks {
    pub before_restore: Vec<String>,
    pub after_restore: Vec<String>,
    pub before_backup: Vec<String>,
    pub after_backup: Vec<String>,
}

/// A standard 5-field cron schedule (`minute hour day-of-month month
/// day-of-week`), or `@hourly`, `@daily`/`@midnight`, `@weekly`, `@monthly`,
/// `@yearly`/`@annually`. Times are UTC.
///
/// Day of week is 0-7 (0 and 7 are Sunday) or `sun`..`sat`, as in standard
/// cron. Restricting both day of month and day of week is refused, as
/// standard cron would run on either and the scheduler on both.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Schedule {
    source: String,
    cron: cron::Schedule,
}

/// Why a schedule is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(String);

/// An error loading or using the configuration. `Display` is one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No configuration file in any of the places searched.
    #[error(
        "no configuration file found (searched: --config not given, {CONFIG_ENV} not set, {}); hint: create lifeboat.toml or pass --config FILE",
        join_paths(searched)
    )]
    NotFound { searched: Vec<PathBuf> },
    /// The file named by `--config` or `LIFEBOAT_CONFIG` does not exist.
    #[error("configuration file {} (from {origin}) does not exist; hint: create it or fix {origin}", path.display())]
    Missing { path: PathBuf, origin: String },
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A syntax, type or validation error in the file.
    #[error("{}", located(path, *line, *column, message))]
    Invalid {
        path: PathBuf,
        /// 1-based.
        line: Option<usize>,
        /// 1-based, in characters.
        column: Option<usize>,
        message: String,
    },
    #[error(
        "unknown target {name:?}; hint: {}",
        names_hint("configured targets", known)
    )]
    UnknownTarget { name: String, known: Vec<String> },
    #[error(
        "unknown repository {name:?}; hint: {}",
        names_hint("configured repositories", known)
    )]
    UnknownRepository { name: String, known: Vec<String> },
    /// A passphrase or key could not be read; never contains the secret.
    #[error("{message}")]
    Secret { message: String },
}

/// Paths for a message, a bare file name shown as `./NAME`.
fn join_paths(paths: &[PathBuf]) -> String {
    let paths: Vec<String> = paths
        .iter()
        .map(|p| match p.parent() {
            Some(dir) if dir.as_os_str().is_empty() => format!("./{}", p.display()),
            _ => p.display().to_string(),
        })
        .collect();
    paths.join(", ")
}

fn located(path: &Path, line: Option<usize>, column: Option<usize>, message: &str) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("{}:{line}:{column}: {message}", path.display()),
        (Some(line), None) => format!("{}:{line}: {message}", path.display()),
        _ => format!("{}: {message}", path.display()),
    }
}

fn names_hint(what: &str, names: &[String]) -> String {
    if names.is_empty() {
        format!("no {what}")
    } else {
        format!("{what}: {}", names.join(", "))
    }
}

impl Config {
    /// Finds the configuration file: `explicit` (`--config`), else
    /// `$LIFEBOAT_CONFIG`, else `./lifeboat.toml`, else
    /// `/etc/lifeboat/lifeboat.toml`. A file named by `--config` or the
    /// variable must exist.
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
        let named = match explicit {
            Some(path) => Some((path.to_path_buf(), "--config")),
            None => std::env::var_os(CONFIG_ENV)
                .filter(|v| !v.is_empty())
                .map(|v| (PathBuf::from(v), CONFIG_ENV)),
        };
        if let Some((path, origin)) = named {
            return if path.exists() {
                Ok(path)
            } else {
                Err(ConfigError::Missing {
                    path,
                    origin: origin.to_string(),
                })
            };
        }
        let searched = vec![
            PathBuf::from(CONFIG_FILE_NAME),
            PathBuf::from(SYSTEM_CONFIG_PATH),
        ];
        match searched.iter().find(|p| p.is_file()) {
            Some(path) => Ok(path.clone()),
            None => Err(ConfigError::NotFound { searched }),
        }
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`, read from `path` (used in errors and to
    /// resolve relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let message = one_line(e.message());
            match e.span() {
                Some(span) => invalid_at(text, path, span.start, message),
                None => ConfigError::Invalid {
                    path: path.to_path_buf(),
                    line: None,
                    column: None,
                    message,
                },
            }
        })?;
        let mut checker = Checker {
            base: base_dir(path),
            errors: Vec::new(),
        };
        let config = checker.config(raw, path);
        // Of all the problems, report the first in the file.
        match checker.errors.into_iter().min_by_key(|(offset, _)| *offset) {
            Some((offset, message)) => Err(invalid_at(text, path, offset, message)),
            None => Ok(config),
        }
    }

    /// The target called `name`.
    pub fn target(&self, name: &str) -> Result<&TargetConfig, ConfigError> {
        self.targets
            .get(name)
            .ok_or_else(|| ConfigError::UnknownTarget {
                name: name.to_string(),
                known: self.targets.keys().cloned().collect(),
            })
    }

    /// The repository called `name`.
    pub fn repository(&self, name: &str) -> Result<&RepositoryConfig, ConfigError> {
        self.repositories
            .get(name)
            .ok_or_else(|| ConfigError::UnknownRepository {
                name: name.to_string(),
                known: self.repositories.keys().cloned().collect(),
            })
    }
}

fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join("; ")
}

fn invalid_at(text: &str, path: &Path, offset: usize, message: String) -> ConfigError {
    let (line, column) = line_column(text, offset);
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line: Some(line),
        column: Some(column),
        message,
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The absolute directory relative paths in the file at `path` start from.
fn base_dir(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

impl RepositoryConfig {
    /// How this repository is encrypted: to recipients if any are listed.
    pub fn encryption(&self) -> EncryptionMode {
        if self.recipients.is_empty() {
            EncryptionMode::Passphrase
        } else {
            EncryptionMode::Recipients
        }
    }

    /// The environment variable the passphrase is read from when there is no
    /// `passphrase_file`.
    pub fn passphrase_env_name(&self) -> &str {
        self.passphrase_env.as_deref().unwrap_or(PASSPHRASE_ENV)
    }

    /// The passphrase: from `passphrase_file` (without trailing newlines), or
    /// from the environment variable; `None` if that variable is not set or
    /// the repository is encrypted to recipients.
    pub fn passphrase(&self) -> Result<Option<String>, ConfigError> {
        if self.encryption() == EncryptionMode::Recipients {
            return Ok(None);
        }
        match &self.passphrase_file {
            Some(path) => read_secret_file(path, "passphrase file").map(Some),
            None => read_secret_env(self.passphrase_env_name()),
        }
    }

    /// The deduplication key: from `dedup_key_file` (without trailing
    /// newlines), or `$LIFEBOAT_DEDUP_KEY`; `None` if neither is set.
    pub fn dedup_key(&self) -> Result<Option<String>, ConfigError> {
        match &self.dedup_key_file {
            Some(path) => read_secret_file(path, "dedup key file").map(Some),
            None => read_secret_env(DEDUP_KEY_ENV),
        }
    }
}

fn read_secret_file(path: &Path, what: &str) -> Result<String, ConfigError> {
    let secret = |message: String| ConfigError::Secret { message };
    let bytes = std::fs::read(path)
        .map_err(|e| secret(format!("cannot read {what} {}: {e}", path.display())))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| secret(format!("{what} {} is not valid UTF-8", path.display())))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(secret(format!("{what} {} is empty", path.display())));
    }
    Ok(value.to_string())
}

fn read_secret_env(name: &str) -> Result<Option<String>, ConfigError> {
    let secret = |message: String| ConfigError::Secret { message };
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Err(secret(format!(
            "environment variable {name} is set but empty"
        ))),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(secret(format!(
            "environment variable {name} is not valid UTF-8"
        ))),
    }
}

impl TargetConfig {
    /// The repositories this target is backed up to.
    pub fn repository_names(&self) -> Vec<&str> {
        match &self.repository {
            Some(name) => vec![name.as_str()],
            None => self.repositories.iter().map(String::as_str).collect(),
        }
    }

    /// `database`, parsed.
    pub fn conninfo(&self) -> Result<ConnInfo, ConnInfoError> {
        ConnInfo::parse(&self.database)
    }
}

/// A connection string without its password, parsed or not.
fn shown(conninfo: &str) -> String {
    match ConnInfo::parse(conninfo) {
        Ok(info) => info.to_string(),
        Err(_) => redacted(conninfo),
    }
}

/// Shows `database` and `primary_database` without their passwords.
impl fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let database = shown(&self.database);
        f.debug_struct("TargetConfig")
            .field("database", &database)
            .field("method", &self.method)
            .field("repository", &self.repository)
            .field("repositories", &self.repositories)
            .field("schedule", &self.schedule)
            .field("retention", &self.retention)
            .field("globals", &self.globals)
            .field("globals_role_passwords", &self.globals_role_passwords)
            .field("hooks", &self.hooks)
            .field("pg_bindir", &self.pg_bindir)
            .field("data_directory", &self.data_directory)
            .field("fast_checkpoint", &self.fast_checkpoint)
            .field("archive", &self.archive)
            .field(
                "primary_database",
                &self.primary_database.as_deref().map(shown),
            )
            .finish()
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Logical => "logical",
            Method::Physical => "physical",
        })
    }
}

impl Retention {
    /// Whether no rule is set, i.e. every backup is kept.
    pub fn keeps_everything(&self) -> bool {
        *self == Retention::default()
    }

    pub fn rules(&self) -> [(&'static str, Option<u32>); 6] {
        [
            ("keep_last", self.keep_last),
            ("keep_days", self.keep_days),
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
            ("keep_yearly", self.keep_yearly),
        ]
    }
}

impl Schedule {
    /// Parses a 5-field cron expression or an `@` shortcut.
    pub fn parse(source: &str) -> Result<Schedule, ScheduleError> {
        let fail = |message: String| Err(ScheduleError(message));
        let trimmed = source.trim();
        let expression = if let Some(shortcut) = trimmed.strip_prefix('@') {
            match shortcut {
                "yearly" | "annually" => "@yearly".to_string(),
                "monthly" => "@monthly".to_string(),
                "weekly" => "@weekly".to_string(),
                "daily" | "midnight" => "@daily".to_string(),
                "hourly" => "@hourly".to_string(),
                _ => {
                    return fail(
                        "unknown shortcut; expected @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually"
                            .to_string(),
                    );
                }
            }
        } else {
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            let [minute, hour, day_of_month, month, day_of_week] = fields[..] else {
                return fail(format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                    fields.len()
                ));
            };
            let unrestricted = |field: &str| field == "*" || field == "?";
            if !unrestricted(day_of_month) && !unrestricted(day_of_week) {
                return fail(
                    "both day of month and day of week are restricted, which cron implementations read differently; hint: set one of them to *"
                        .to_string(),
                );
            }
            let day_of_week = translate_day_of_week(day_of_week).map_err(ScheduleError)?;
            format!("0 {minute} {hour} {day_of_month} {month} {day_of_week}")
        };
        let cron = match cron::Schedule::from_str(&expression) {
            Ok(cron) => cron,
            Err(e) => {
                // The cron crate repeats the expression with a caret above its message.
                let text = e.to_string();
                let message = text
                    .lines()
                    .rev()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with('^') && *l != expression)
                    .unwrap_or("syntax error");
                return fail(message.trim_end_matches('.').to_string());
            }
        };
        if cron.upcoming(Utc).next().is_none() {
            return fail("never runs".to_string());
        }
        Ok(Schedule {
            source: source.to_string(),
            cron,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The first time strictly after `t` the schedule fires.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.after(&t).next()
    }
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Standard cron's day of week (0-7, 0 and 7 Sunday; names) to the cron
/// crate's (1-7, 1 Sunday), as a list of names.
fn translate_day_of_week(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    let value = |s: &str| -> Result<u32, String> {
        if let Ok(n) = s.parse::<u32>() {
            return if n <= 7 {
                Ok(n)
            } else {
                Err(format!("day of week {n} is out of range (0-7)"))
            };
        }
        let lower = s.to_ascii_lowercase();
        DAY_NAMES
            .iter()
            .position(|d| {
                let d = d.to_ascii_lowercase();
                lower == d || lower == full_day_name(&d)
            })
            .map(|i| i as u32)
            .ok_or_else(|| format!("invalid day of week {s:?}"))
    };
    let mut days = BTreeSet::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => match step.parse::<u32>() {
                Ok(step) if step > 0 => (range, step),
                _ => return Err(format!("invalid step in day of week {item:?}")),
            },
            None => (item, 1),
        };
        let (first, last) = if range == "*" {
            (0, 6)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else if item.contains('/') {
            (value(range)?, 6)
        } else {
            let day = value(range)?;
            (day, day)
        };
        if first > last {
            return Err(format!("day of week range {range:?} goes backwards"));
        }
        days.extend((first..=last).step_by(step as usize).map(|d| d % 7));
    }
    if days.len() == 7 {
        return Ok("*".to_string());
    }
    let names: Vec<&str> = days.into_iter().map(|d| DAY_NAMES[d as usize]).collect();
    Ok(names.join(","))
}

fn full_day_name(prefix: &str) -> &'static str {
    match prefix {
        "sun" => "sunday",
        "mon" => "monday",
        "tue" => "tuesday",
        "wed" => "wednesday",
        "thu" => "thursday",
        "fri" => "friday",
        "sat" => "saturday",
        _ => "",
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Schedule, ScheduleError> {
        Schedule::parse(s)
    }
}

impl TryFrom<String> for Schedule {
    type Error = ScheduleError;

    fn try_from(s: String) -> Result<Schedule, ScheduleError> {
        Schedule::parse(&s)
    }
}

impl From<Schedule> for String {
    fn from(schedule: Schedule) -> String {
        schedule.source
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Schedule) -> bool {
        self.source == other.source
    }
}

impl Eq for Schedule {}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.source).finish()
    }
}

// ---------------------------------------------------------------------------
// The file as written, with the places of the values that are checked.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    repository: BTreeMap<Spanned<String>, Spanned<RawRepository>>,
    #[serde(default)]
    target: BTreeMap<Spanned<String>, Spanned<RawTarget>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepository {
    url: Spanned<String>,
    passphrase_file: Option<Spanned<PathBuf>>,
    passphrase_env: Option<Spanned<String>>,
    unlock_cache: Option<Spanned<bool>>,
    recipients: Option<Spanned<Vec<Spanned<String>>>>,
    identity_file: Option<PathBuf>,
    dedup_key_file: Option<PathBuf>,
    compression_level: Option<Spanned<i64>>,
    region: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    path_style: Option<Spanned<bool>>,
    storage_class: Option<Spanned<String>>,
    wal_storage_class: Option<Spanned<String>>,
    profile: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    attempts: Option<Spanned<i64>>,
    concurrency: Option<Spanned<i64>>,
    retrieval_days: Option<Spanned<i64>>,
    retrieval_tier: Option<Spanned<String>>,
    retrieval_poll: Option<Spanned<String>>,
    keys_from: Option<Spanned<String>>,
    credentials_file: Option<Spanned<PathBuf>>,
    fingerprint: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    database: Spanned<String>,
    #[serde(default)]
    method: Method,
    repository: Option<Spanned<String>>,
    repositories: Option<Spanned<Vec<Spanned<String>>>>,
    schedule: Option<Spanned<String>>,
    retention: Option<Spanned<Retention>>,
    #[serde(default = "default_globals")]
    globals: bool,
    globals_role_passwords: Option<Spanned<bool>>,
    #[serde(default)]
    hooks: Hooks,
    pg_bindir: Option<PathBuf>,
    data_directory: Option<PathBuf>,
    checkpoint: Option<Spanned<String>>,
    primary_database: Option<Spanned<String>>,
    archive_async: Option<Spanned<bool>>,
    spool_directory: Option<Spanned<PathBuf>>,
    spool_max_size: Option<Spanned<String>>,
    spool_full: Option<Spanned<String>>,
}

fn default_globals() -> bool {
    true
}

/// Turns the raw file into a [`Config`], collecting (byte offset, message)
/// for every problem.
struct Checker {
    base: PathBuf,
    errors: Vec<(usize, String)>,
}

impl Checker {
    fn error(&mut self, offset: usize, message: String) {
        self.errors.push((offset, message));
    }

    fn resolve(&self, path: PathBuf) -> PathBuf {
        if path.is_absolute() {
            path
        } else {
            self.base.join(path)
        }
    }

    fn name(&mut self, kind: &str, name: &Spanned<String>) {
        let ok = !name.get_ref().is_empty()
            && name
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            self.error(
                name.span().start,
                format!(
                    "invalid {kind} name {:?}; hint: use only letters, digits, \"-\", \"_\" and \".\"",
                    name.get_ref()
                ),
            );
        }
    }

    fn config(&mut self, raw: RawConfig, path: &Path) -> Config {
        let repository_names: Vec<String> =
            raw.repository.keys().map(|k| k.get_ref().clone()).collect();
        let mut repositories = BTreeMap::new();
        for (name, repo) in raw.repository {
            self.name("repository", &name);
            if let Some(from) = &repo.get_ref().keys_from
                && (from.get_ref() == name.get_ref() || !repository_names.contains(from.get_ref()))
            {
                self.error(
                    from.span().start,
                    format!(
                        "repository {:?}: keys_from {:?} must name another repository of this file; hint: defined: {}",
                        name.get_ref(),
                        from.get_ref(),
                        repository_names.join(", ")
                    ),
                );
            }
            let repo = self.repository(name.get_ref(), repo.into_inner());
            repositories.insert(name.into_inner(), repo);
        }
        // A repository with another's keys has its fingerprint: a pin on
        // either holds for both unless the other pins its own.
        let pins: Vec<(String, String)> = repositories
            .iter()
            .filter(|(_, r)| r.fingerprint.is_none())
            .filter_map(|(n, r)| {
                let from = repositories.get(r.keys_from.as_ref()?)?;
                Some((n.clone(), from.fingerprint.clone()?))
            })
            .collect();
        for (name, pin) in pins {
            if let Some(r) = repositories.get_mut(&name) {
                r.fingerprint = Some(pin);
            }
        }
        let mut targets = BTreeMap::new();
        for (name, target) in raw.target {
            self.name("target", &name);
            let target = self.target(name.get_ref(), target, &repository_names);
            targets.insert(name.into_inner(), target);
        }
        Config {
            repositories,
            targets,
            path: path.to_path_buf(),
        }
    }

    fn repository(&mut self, name: &str, raw: RawRepository) -> RepositoryConfig {
        if let Err(message) = check_url(raw.url.get_ref()) {
            self.error(
                raw.url.span().start,
                format!("repository {name:?}: {message}"),
            );
        }

        let mut recipients = Vec::new();
        if let Some(list) = &raw.recipients {
            if list.get_ref().is_empty() {
                self.error(
                    list.span().start,
                    format!(
                        "repository {name:?}: recipients is empty; hint: list age1... recipients, or remove it to use a passphrase"
                    ),
                );
            }
            for recipient in list.get_ref() {
                let value = recipient.get_ref().trim();
                if !value.starts_with("age1") || value.contains(char::is_whitespace) {
                    self.error(
                        recipient.span().start,
                        format!(
                            "repository {name:?}: recipient {value:?} is not an age recipient; hint: age recipients start with \"age1\" (see age-keygen -y)"
                        ),
                    );
                }
                recipients.push(value.to_string());
            }
        }
        if let (Some(file), Some(_)) = (&raw.passphrase_file, &raw.recipients) {
            self.error(
                file.span().start,
                format!(
                    "repository {name:?}: passphrase_file and recipients are mutually exclusive; hint: a repository is encrypted either with a passphrase or to age recipients"
                ),
            );
        }
        if let (Some(env), Some(_)) = (&raw.passphrase_env, &raw.recipients) {
            self.error(
                env.span().start,
                format!(
                    "repository {name:?}: passphrase_env and recipients are mutually exclusive; hint: a repository is encrypted either with a passphrase or to age recipients"
                ),
            );
        }
        if let (Some(_), Some(env)) = (&raw.passphrase_file, &raw.passphrase_env) {
            self.error(
                env.span().start,
                format!(
                    "repository {name:?}: passphrase_file and passphrase_env are mutually exclusive"
                ),
            );
        }
        if let (Some(flag), None) = (&raw.unlock_cache, &raw.passphrase_file) {
            self.error(
                flag.span().start,
                format!(
                    "repository {name:?}: unlock_cache applies only to a passphrase_file; hint: a passphrase from the environment is never cached"
                ),
            );
        }
        if let Some(env) = &raw.passphrase_env {
            let value = env.get_ref();
            if value.is_empty()
                || value.contains(['=', '\0'])
                || value.contains(char::is_whitespace)
            {
                self.error(
                    env.span().start,
                    format!(
                        "repository {name:?}: passphrase_env must be the name of an environment variable, such as {PASSPHRASE_ENV}"
                    ),
                );
            }
        }

        let mut compression_level = None;
        if let Some(level) = &raw.compression_level {
            match i32::try_from(*level.get_ref()) {
                Ok(l) if (1..=19).contains(&l) => compression_level = Some(l),
                _ => self.error(
                    level.span().start,
                    format!(
                        "repository {name:?}: compression_level must be from 1 to 19, not {}",
                        level.get_ref()
                    ),
                ),
            }
        }

        let fingerprint = raw.fingerprint.as_ref().and_then(|f| {
            let normal = crate::codec::normalize_fingerprint(f.get_ref());
            if normal.is_none() {
                self.error(
                    f.span().start,
                    format!(
                        "repository {name:?}: fingerprint {:?} is not a repository fingerprint; hint: it is 32 hex digits in groups of four, as `lifeboat init` or `lifeboat key fingerprint` prints it",
                        f.get_ref()
                    ),
                );
            }
            normal
        });
        let s3 = self.s3_settings(name, &raw);
        RepositoryConfig {
            fingerprint,
            s3,
            keys_from: raw.keys_from.map(Spanned::into_inner),
            url: raw.url.into_inner(),
            passphrase_file: raw.passphrase_file.map(|p| self.resolve(p.into_inner())),
            passphrase_env: raw.passphrase_env.map(Spanned::into_inner),
            unlock_cache: raw.unlock_cache.is_none_or(Spanned::into_inner),
            recipients,
            identity_file: raw.identity_file.map(|p| self.resolve(p)),
            dedup_key_file: raw.dedup_key_file.map(|p| self.resolve(p)),
            compression_level,
        }
    }

    /// The `s3://` settings; each is refused on a `file://` repository, where
    /// it would silently mean nothing.
    fn s3_settings(&mut self, name: &str, raw: &RawRepository) -> crate::storage::s3::S3Settings {
        use crate::storage::s3::{KNOWN_CLASSES, S3Settings};
        let is_s3 = raw.url.get_ref().starts_with("s3://");
        let only_s3 = |this: &mut Checker, key: &str, span: std::ops::Range<usize>| {
            if !is_s3 {
                this.error(
                    span.start,
                    format!("repository {name:?}: {key} applies only to s3:// repositories"),
                );
            }
        };
        let text = |this: &mut Checker, key: &str, v: &Option<Spanned<String>>| {
            v.as_ref().map(|v| {
                only_s3(this, key, v.span());
                v.get_ref().trim().to_string()
            })
        };
        let region = text(self, "region", &raw.region);
        let endpoint = text(self, "endpoint", &raw.endpoint);
        let profile = text(self, "profile", &raw.profile);
        let credentials_file = raw.credentials_file.as_ref().map(|v| {
            only_s3(self, "credentials_file", v.span());
            self.resolve(v.get_ref().clone())
        });
        let mut classes = Vec::new();
        for (key, v) in [
            ("storage_class", &raw.storage_class),
            ("wal_storage_class", &raw.wal_storage_class),
        ] {
            let class = text(self, key, v).map(|c| c.to_ascii_uppercase());
            if let (Some(c), Some(v)) = (&class, v)
                && !KNOWN_CLASSES.contains(&c.as_str())
            {
                self.error(
                    v.span().start,
                    format!(
                        "repository {name:?}: unknown {key} {c:?}; hint: one of {}",
                        KNOWN_CLASSES.join(", ")
                    ),
                );
            }
            if key == "wal_storage_class"
                && let (Some(c), Some(v)) = (&class, v)
                && crate::storage::s3::ARCHIVE_CLASSES.contains(&c.as_str())
            {
                self.error(
                    v.span().start,
                    format!(
                        "repository {name:?}: wal_storage_class {c:?} cannot be read at once; hint: archived WAL must stay readable (wal-push compares a segment pushed twice, restores replay it): use STANDARD_IA or GLACIER_IR"
                    ),
                );
            }
            classes.push(class);
        }
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            let span = raw.endpoint.as_ref().map_or(0, |v| v.span().start);
            self.error(
                span,
                format!("repository {name:?}: endpoint {e:?} must start with https:// or http://"),
            );
        }
        let path_style = raw.path_style.as_ref().map(|v| {
            only_s3(self, "path_style", v.span());
            *v.get_ref()
        });
        let duration = |this: &mut Checker, key: &str, v: &Option<Spanned<String>>| {
            v.as_ref().and_then(|v| {
                only_s3(this, key, v.span());
                match humantime::parse_duration(v.get_ref()) {
                    Ok(d) if !d.is_zero() => Some(d),
                    _ => {
                        this.error(
                            v.span().start,
                            format!(
                                "repository {name:?}: {key} {:?} is not a duration; hint: such as \"30s\" or \"2m\"",
                                v.get_ref()
                            ),
                        );
                        None
                    }
                }
            })
        };
        let timeout = duration(self, "timeout", &raw.timeout);
        let retrieval_poll = duration(self, "retrieval_poll", &raw.retrieval_poll);
        let retrieval_tier = text(self, "retrieval_tier", &raw.retrieval_tier);
        if let (Some(t), Some(v)) = (&retrieval_tier, &raw.retrieval_tier)
            && !["Standard", "Bulk", "Expedited"].contains(&t.as_str())
        {
            self.error(
                v.span().start,
                format!(
                    "repository {name:?}: retrieval_tier {t:?} is not a retrieval tier; hint: Standard, Bulk or Expedited"
                ),
            );
        }
        let count = |this: &mut Checker, key: &str, v: &Option<Spanned<i64>>, max: i64| {
            v.as_ref().and_then(|v| {
                only_s3(this, key, v.span());
                let n = *v.get_ref();
                if (1..=max).contains(&n) {
                    Some(n)
                } else {
                    this.error(
                        v.span().start,
                        format!("repository {name:?}: {key} must be from 1 to {max}, not {n}"),
                    );
                    None
                }
            })
        };
        let attempts = count(self, "attempts", &raw.attempts, 100).map(|n| n as u32);
        let concurrency = count(self, "concurrency", &raw.concurrency, 64).map(|n| n as usize);
        let retrieval_days =
            count(self, "retrieval_days", &raw.retrieval_days, 365).map(|n| n as u32);
        S3Settings {
            region,
            endpoint,
            path_style,
            storage_class: classes[0].clone(),
            wal_storage_class: classes[1].clone(),
            profile,
            credentials_file,
            timeout,
            attempts,
            part_size: None,
            concurrency,
            retrieval_days,
            retrieval_tier,
            retrieval_poll,
        }
    }

    fn target(&mut self, name: &str, raw: Spanned<RawTarget>, defined: &[String]) -> TargetConfig {
        let table_start = raw.span().start;
        let raw = raw.into_inner();
        let archive = self.archive_settings(name, &raw);

        if let Err(e) = ConnInfo::parse(raw.database.get_ref()) {
            self.error(
                raw.database.span().start,
                format!("target {name:?}: invalid database connection string: {e}"),
            );
        }

        if let Some(p) = &raw.primary_database {
            if raw.method != Method::Physical {
                self.error(
                    p.span().start,
                    format!(
                        "target {name:?}: primary_database applies only to physical targets (backups from a standby)"
                    ),
                );
            }
            if let Err(e) = ConnInfo::parse(p.get_ref()) {
                self.error(
                    p.span().start,
                    format!("target {name:?}: invalid primary_database connection string: {e}"),
                );
            }
        }

        let defined_hint = || names_hint("defined repositories", defined);
        let mut repository = raw.repository.as_ref().map(|r| r.get_ref().clone());
        let mut repositories = Vec::new();
        if let Some(r) = &raw.repository {
            self.repository_reference(name, r, defined);
        }
        if let Some(list) = &raw.repositories {
            if raw.repository.is_some() {
                self.error(
                    list.span().start,
                    format!(
                        "target {name:?} sets both repository and repositories; hint: use only one of them"
                    ),
                );
            }
            if list.get_ref().is_empty() {
                self.error(
                    list.span().start,
                    format!(
                        "target {name:?}: repositories is empty; hint: {}",
                        defined_hint()
                    ),
                );
            }
            for r in list.get_ref() {
                if repositories.contains(r.get_ref()) {
                    self.error(
                        r.span().start,
                        format!("target {name:?} lists repository {:?} twice", r.get_ref()),
                    );
                    continue;
                }
                self.repository_reference(name, r, defined);
                repositories.push(r.get_ref().clone());
            }
        }
        if raw.repository.is_none() && raw.repositories.is_none() {
            match defined {
                [only] => repository = Some(only.clone()),
                [] => self.error(
                    table_start,
                    format!(
                        "target {name:?} has no repository to back up to; hint: add a [repository.NAME] table"
                    ),
                ),
                _ => self.error(
                    table_start,
                    format!(
                        "target {name:?} does not say which repository to use; hint: add repository = \"NAME\" ({})",
                        defined_hint()
                    ),
                ),
            }
        }

        let schedule = raw.schedule.as_ref().and_then(|s| {
            Schedule::parse(s.get_ref())
                .map_err(|e| {
                    self.error(
                        s.span().start,
                        format!("target {name:?}: invalid schedule {:?}: {e}", s.get_ref()),
                    );
                })
                .ok()
        });

        let retention = match raw.retention {
            Some(retention) => {
                for (rule, value) in retention.get_ref().rules() {
                    if value == Some(0) {
                        self.error(
                            retention.span().start,
                            format!(
                                "target {name:?}: retention {rule} must be at least 1; hint: leave it out to not limit backups by it"
                            ),
                        );
                    }
                }
                retention.into_inner()
            }
            None => Retention::default(),
        };

        let globals_role_passwords = raw.globals_role_passwords.as_ref();
        if let Some(flag) = globals_role_passwords.filter(|f| *f.get_ref() && !raw.globals) {
            self.error(
                flag.span().start,
                format!("target {name:?}: globals_role_passwords = true needs globals = true"),
            );
        }

        if raw.method == Method::Physical && raw.data_directory.is_none() {
            self.error(
                raw.database.span().start,
                format!(
                    "target {name:?} is physical but has no data_directory; hint: data_directory = \"/var/lib/postgresql/15/main\" (SHOW data_directory)"
                ),
            );
        }
        let fast_checkpoint = match raw
            .checkpoint
            .as_ref()
            .map(|c| (c.get_ref().as_str(), c.span().start))
        {
            None | Some(("spread", _)) => false,
            Some(("fast", _)) => true,
            Some((other, at)) => {
                self.error(
                    at,
                    format!("target {name:?}: checkpoint {other:?}; hint: \"fast\" or \"spread\""),
                );
                false
            }
        };

        TargetConfig {
            archive,
            database: raw.database.into_inner(),
            method: raw.method,
            repository,
            repositories,
            schedule,
            retention,
            globals: raw.globals,
            globals_role_passwords: raw.globals_role_passwords.is_some_and(Spanned::into_inner),
            hooks: raw.hooks,
            pg_bindir: raw.pg_bindir.map(|p| self.resolve(p)),
            data_directory: raw.data_directory.map(|p| self.resolve(p)),
            fast_checkpoint,
            primary_database: raw.primary_database.map(Spanned::into_inner),
        }
    }

    /// The WAL archiving settings; refused on a logical target.
    fn archive_settings(&mut self, name: &str, raw: &RawTarget) -> ArchiveSettings {
        let mut settings = ArchiveSettings::default();
        let physical = raw.method == Method::Physical;
        let physical_only = |this: &mut Checker, key: &str, at: usize| {
            if !physical {
                this.error(
                    at,
                    format!(
                        "target {name:?}: {key} applies only to physical targets (WAL archiving)"
                    ),
                );
            }
        };
        if let Some(v) = &raw.archive_async {
            physical_only(self, "archive_async", v.span().start);
            settings.asynchronous = *v.get_ref();
        }
        if let Some(v) = &raw.spool_directory {
            physical_only(self, "spool_directory", v.span().start);
            settings.spool_directory = Some(self.resolve(v.get_ref().clone()));
        }
        if let Some(v) = &raw.spool_max_size {
            physical_only(self, "spool_max_size", v.span().start);
            match parse_size(v.get_ref()) {
                Some(n) if n >= 16 << 20 => settings.spool_max_size = n,
                _ => self.error(
                    v.span().start,
                    format!(
                        "target {name:?}: spool_max_size {:?} is not a size of at least 16MiB; hint: such as \"4GiB\"",
                        v.get_ref()
                    ),
                ),
            }
        }
        if let Some(v) = &raw.spool_full {
            physical_only(self, "spool_full", v.span().start);
            settings.spool_full = match v.get_ref().as_str() {
                "fail" => SpoolFull::Fail,
                "drop" => SpoolFull::Drop,
                other => {
                    self.error(
                        v.span().start,
                        format!(
                            "target {name:?}: spool_full {other:?}; hint: \"fail\" (PostgreSQL keeps the WAL and retries) or \"drop\" (the archive gets a gap)"
                        ),
                    );
                    SpoolFull::Fail
                }
            };
        }
        settings
    }

    fn repository_reference(&mut self, target: &str, name: &Spanned<String>, defined: &[String]) {
        if !defined.contains(name.get_ref()) {
            self.error(
                name.span().start,
                format!(
                    "target {target:?} uses repository {:?}, which is not defined; hint: {}",
                    name.get_ref(),
                    names_hint("defined repositories", defined)
                ),
            );
        }
    }
}

/// "4GiB", "512 MiB", "100MB", "1048576": bytes, binary (KiB..TiB) or
/// decimal (kB..TB) units.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// `file:///ABSOLUTE/PATH` or `s3://BUCKET[/PREFIX]`.
fn check_url(url: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected file:///ABSOLUTE/PATH or s3://BUCKET/PREFIX";
    if let Some(path) = url.strip_prefix("file://") {
        if path.starts_with('/') {
            Ok(())
        } else {
            Err(format!(
                "url {url:?} has no absolute path; hint: write file:///{path} (three slashes)"
            ))
        }
    } else if let Some(rest) = url.strip_prefix("s3://") {
        let bucket = rest.split('/').next().unwrap_or("");
        if bucket.is_empty() || bucket.contains(char::is_whitespace) {
            Err(format!("url {url:?} has no bucket name; hint: {EXPECTED}"))
        } else {
            Ok(())
        }
    } else {
        match url.split_once("://") {
            // Only the scheme: the rest could hold credentials.
            Some((scheme, _)) => Err(format!(
                "unsupported url scheme {scheme:?}; hint: {EXPECTED}"
            )),
            None => Err(format!("url is not a URL; hint: {EXPECTED}")),
        }
    }
}
