use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{TimeZone, Utc};
use lifeboat::config::{
    Config, ConfigError, EncryptionMode, Hooks, Method, Retention, Schedule, TargetConfig,
};

const EXAMPLE: &str = r#"[repository.main]
url = "file:///var/backups/lifeboat"
# encryption: a passphrase (env LIFEBOAT_PASSPHRASE, or passphrase_file = "..."), or
# recipients = ["age1..."] plus identity_file = "..." where restores run, and
# dedup_key_file = "..." (or env LIFEBOAT_DEDUP_KEY) on hosts that only write backups
compression_level = 3            # zstd level, optional, 1..=19

[target.dev]
database = "postgres://postgres@localhost:5432/hyper_db"
method = "logical"
repository = "main"
retention = { keep_last = 3 }

[target.staging]
database = "postgres://backup@staging-db/hyper_db"
method = "logical"
schedule = "0 2 * * *"     # standard 5-field cron; validated now, run by the daemon later
retention = { keep_days = 7 }
globals = true               # keep pg_dumpall --globals-only (default true)
globals_role_passwords = false   # default false
hooks = { before_restore = ["systemctl stop app"], after_restore = ["npm run db:migrate:deploy", "systemctl start app"] }
pg_bindir = "/usr/lib/postgresql/15/bin"   # optional
"#;

const REPO: &str = "[repository.main]\nurl = \"file:///var/backups/lifeboat\"\n";

fn parse(text: &str) -> Config {
    Config::parse(text, Path::new("/etc/lifeboat/lifeboat.toml"))
        .unwrap_or_else(|e| panic!("should parse: {e}\n{text}"))
}

/// The one-line error for `text` read from "lifeboat.toml".
fn error(text: &str) -> String {
    match Config::parse(text, Path::new("lifeboat.toml")) {
        Ok(config) => panic!("should not parse: {config:?}\n{text}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "not one line: {msg}");
            msg
        }
    }
}

fn assert_error(text: &str, expected: &str) {
    assert_eq!(error(text), expected, "\n{text}");
}

fn assert_error_starts(text: &str, prefix: &str) {
    let msg = error(text);
    assert!(
        msg.starts_with(prefix),
        "{msg:?} should start with {prefix:?}\n{text}"
    );
}

#[test]
fn example_parses() {
    let config = parse(EXAMPLE);
    assert_eq!(config.path, Path::new("/etc/lifeboat/lifeboat.toml"));
    assert_eq!(config.repositories.len(), 1);
    let main = config.repository("main").unwrap();
    assert_eq!(main.url, "file:///var/backups/lifeboat");
    assert_eq!(main.compression_level, Some(3));
    assert_eq!(main.encryption(), EncryptionMode::Passphrase);
    assert_eq!(main.passphrase_env_name(), "LIFEBOAT_PASSPHRASE");
    assert!(main.recipients.is_empty());

    let dev = config.target("dev").unwrap();
    assert_eq!(dev.database, "postgres://postgres@localhost:5432/hyper_db");
    assert_eq!(dev.method, Method::Logical);
    assert_eq!(dev.repository_names(), ["main"]);
    assert_eq!(
        dev.retention,
        Retention {
            keep_last: Some(3),
            ..Retention::default()
        }
    );
    assert_eq!(dev.schedule, None);
    assert!(dev.globals);
    assert!(!dev.globals_role_passwords);
    assert_eq!(dev.hooks, Hooks::default());
    assert_eq!(dev.conninfo().unwrap().dbname(), Some("hyper_db"));

    let staging = config.target("staging").unwrap();
    assert_eq!(staging.schedule.as_ref().unwrap().as_str(), "0 2 * * *");
    assert_eq!(staging.retention.keep_days, Some(7));
    assert_eq!(staging.repository_names(), ["main"]);
    assert_eq!(staging.hooks.before_restore, ["systemctl stop app"]);
    assert_eq!(
        staging.hooks.after_restore,
        ["npm run db:migrate:deploy", "systemctl start app"]
    );
    assert!(staging.hooks.before_backup.is_empty());
    assert_eq!(
        staging.pg_bindir.as_deref(),
        Some(Path::new("/usr/lib/postgresql/15/bin"))
    );
    assert_eq!(staging.data_directory, None);
}

#[test]
fn defaults() {
    let config = parse(&format!("{REPO}[target.t]\ndatabase = \"\"\n"));
    let t = config.target("t").unwrap();
    assert_eq!(t.method, Method::Logical);
    assert_eq!(t.repository.as_deref(), Some("main"), "the only repository");
    assert!(t.repositories.is_empty());
    assert_eq!(t.repository_names(), ["main"]);
    assert_eq!(t.schedule, None);
    assert!(t.retention.keeps_everything());
    assert!(t.globals);
    assert!(!t.globals_role_passwords);
    assert_eq!(t.hooks, Hooks::default());
    assert_eq!(t.pg_bindir, None);

    let repo = config.repository("main").unwrap();
    assert_eq!(repo.passphrase_file, None);
    assert_eq!(repo.passphrase_env, None);
    assert_eq!(repo.compression_level, None);
    assert_eq!(repo.identity_file, None);
    assert_eq!(repo.dedup_key_file, None);

    // An empty file is a valid, empty configuration.
    let empty = parse("");
    assert!(empty.repositories.is_empty() && empty.targets.is_empty());
}

#[test]
fn full_target_and_repository() {
    let config = parse(
        r#"
[repository.a]
url = "s3://bucket/prefix"
recipients = ["age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq", "age1abc"]
identity_file = "/root/age.key"
dedup_key_file = "dedup.key"

[repository.b]
url = "file:///srv/b"
passphrase_env = "B_PASS"

[target.db]
database = "host=/var/run/postgresql dbname=app"
method = "physical"
repositories = ["a", "b"]
data_directory = "/var/lib/postgresql/15/main"
globals = false
retention = { keep_last = 1, keep_days = 2, keep_daily = 3, keep_weekly = 4, keep_monthly = 5, keep_yearly = 6 }

[target.db.hooks]
before_backup = ["sync"]
after_backup = ["echo done"]
"#,
    );
    let a = config.repository("a").unwrap();
    assert_eq!(a.encryption(), EncryptionMode::Recipients);
    assert_eq!(a.recipients.len(), 2);
    assert_eq!(a.identity_file.as_deref(), Some(Path::new("/root/age.key")));
    assert_eq!(
        a.dedup_key_file.as_deref(),
        Some(Path::new("/etc/lifeboat/dedup.key"))
    );
    let b = config.repository("b").unwrap();
    assert_eq!(b.passphrase_env_name(), "B_PASS");
    assert_eq!(b.encryption(), EncryptionMode::Passphrase);

    let db = config.target("db").unwrap();
    assert_eq!(db.method, Method::Physical);
    assert_eq!(db.repository, None);
    assert_eq!(db.repository_names(), ["a", "b"]);
    assert!(!db.globals);
    assert_eq!(
        db.retention,
        Retention {
            keep_last: Some(1),
            keep_days: Some(2),
            keep_daily: Some(3),
            keep_weekly: Some(4),
            keep_monthly: Some(5),
            keep_yearly: Some(6),
        }
    );
    assert_eq!(db.hooks.before_backup, ["sync"]);
    assert_eq!(db.hooks.after_backup, ["echo done"]);
    assert_eq!(
        db.data_directory.as_deref(),
        Some(Path::new("/var/lib/postgresql/15/main"))
    );
}

#[test]
fn unknown_target_and_repository() {
    let config = parse(EXAMPLE);
    assert_eq!(
        config.target("prod").unwrap_err().to_string(),
        "unknown target \"prod\"; hint: configured targets: dev, staging"
    );
    assert_eq!(
        config.repository("backup").unwrap_err().to_string(),
        "unknown repository \"backup\"; hint: configured repositories: main"
    );
    assert!(matches!(
        config.target("prod"),
        Err(ConfigError::UnknownTarget { .. })
    ));
    assert_eq!(
        parse("").target("x").unwrap_err().to_string(),
        "unknown target \"x\"; hint: no configured targets"
    );
}

#[test]
fn unknown_fields_point_at_the_typo() {
    let typo = EXAMPLE.replace("retention = { keep_days", "retension = { keep_days");
    let msg = error(&typo);
    assert!(
        msg.starts_with("lifeboat.toml:18:1: unknown field `retension`, expected one of "),
        "{msg}"
    );
    assert!(msg.contains("`retention`"), "{msg}");

    assert_error_starts(
        &format!("{REPO}[target.t]\ndatabase = \"\"\nretention = {{ keep_lats = 3 }}\n"),
        "lifeboat.toml:5:15: unknown field `keep_lats`, expected one of `keep_last`",
    );
    assert_error_starts(
        &format!("{REPO}compresion_level = 3\n"),
        "lifeboat.toml:3:1: unknown field `compresion_level`",
    );
    assert_error_starts(
        "[repositories.main]\nurl = \"file:///x\"\n",
        "lifeboat.toml:1:2: unknown field `repositories`, expected `repository` or `target`",
    );
    assert_error_starts(
        &format!("{REPO}[target.t]\ndatabase = \"\"\nhooks = {{ after_restor = [\"x\"] }}\n"),
        "lifeboat.toml:5:11: unknown field `after_restor`",
    );
}

#[test]
fn type_and_syntax_errors_have_line_and_column() {
    assert_error(
        &format!("{REPO}[target.t]\ndatabase = \"\"\nmethod = \"logicl\"\n"),
        "lifeboat.toml:5:10: unknown variant `logicl`, expected `logical` or `physical`",
    );
    assert_error(
        &format!("{REPO}compression_level = \"high\"\n"),
        "lifeboat.toml:3:21: invalid type: string \"high\", expected i64",
    );
    assert_error(
        &format!("{REPO}[target.t]\ndatabase = \"\"\nglobals = \"yes\"\n"),
        "lifeboat.toml:5:11: invalid type: string \"yes\", expected a boolean",
    );
    assert_error(
        &format!("{REPO}[target.t]\nmethod = \"logical\"\n"),
        "lifeboat.toml:3:1: missing field `database`",
    );
    assert_error_starts(
        &format!("{REPO}[target.t]\ndatabase = \"x\n"),
        "lifeboat.toml:4:14: ",
    );
    assert_error_starts(
        &format!("{REPO}url = \"file:///y\"\n"),
        "lifeboat.toml:3:1: duplicate key",
    );
    assert_error_starts(
        &format!("{REPO}[target.t]\ndatabase = \"\"\nretention = {{ keep_last = -1 }}\n"),
        "lifeboat.toml:5:27: invalid value: integer `-1`, expected u32",
    );
}

#[test]
fn column_counts_characters() {
    assert_error_starts(
        &format!("{REPO}[target.\"été\"]\ndatabase = \"\"\n"),
        "lifeboat.toml:3:9: invalid target name \"été\"",
    );
    assert_error_starts(
        &format!(
            "{REPO}[target.t]\ndatabase = \"\"\nhooks = {{ before_backup = [\"é\"], after_backup = 1 }}\n"
        ),
        "lifeboat.toml:5:49: invalid type: integer `1`, expected a sequence",
    );
    assert_error_starts(
        &format!("{REPO}[target.t]\ndatabase = \"ééé\"\nmethod = \"lögical\" # ü\n"),
        "lifeboat.toml:5:10: unknown variant `lögical`",
    );
}

#[test]
fn repository_validation() {
    assert_error(
        "[repository.main]\nurl = \"file://var/backups\"\n",
        "lifeboat.toml:2:7: repository \"main\": url \"file://var/backups\" has no absolute path; hint: write file:///var/backups (three slashes)",
    );
    assert_error(
        "[repository.main]\nurl = \"/var/backups\"\n",
        "lifeboat.toml:2:7: repository \"main\": url is not a URL; hint: expected file:///ABSOLUTE/PATH or s3://BUCKET/PREFIX",
    );
    assert_error(
        "[repository.main]\nurl = \"https://user:secret@example.com/x\"\n",
        "lifeboat.toml:2:7: repository \"main\": unsupported url scheme \"https\"; hint: expected file:///ABSOLUTE/PATH or s3://BUCKET/PREFIX",
    );
    assert_error_starts(
        "[repository.main]\nurl = \"s3:///prefix\"\n",
        "lifeboat.toml:2:7: repository \"main\": url \"s3:///prefix\" has no bucket name",
    );
    parse("[repository.main]\nurl = \"s3://bucket\"\n");

    assert_error(
        &format!("{REPO}compression_level = 20\n"),
        "lifeboat.toml:3:21: repository \"main\": compression_level must be from 1 to 19, not 20",
    );
    assert_error_starts(
        &format!("{REPO}compression_level = 0\n"),
        "lifeboat.toml:3:21: ",
    );
    assert_error_starts(
        &format!("{REPO}compression_level = 99999999999\n"),
        "lifeboat.toml:3:21: ",
    );
    parse(&format!("{REPO}compression_level = 1\n"));
    parse(&format!("{REPO}compression_level = 19\n"));

    assert_error(
        &format!("{REPO}recipients = [\"age1ok\", \"ssh-ed25519 AAAA\"]\n"),
        "lifeboat.toml:3:25: repository \"main\": recipient \"ssh-ed25519 AAAA\" is not an age recipient; hint: age recipients start with \"age1\" (see age-keygen -y)",
    );
    assert_error_starts(
        &format!("{REPO}recipients = []\n"),
        "lifeboat.toml:3:14: repository \"main\": recipients is empty",
    );
    assert_error(
        &format!("{REPO}passphrase_file = \"/k\"\nrecipients = [\"age1x\"]\n"),
        "lifeboat.toml:3:19: repository \"main\": passphrase_file and recipients are mutually exclusive; hint: a repository is encrypted either with a passphrase or to age recipients",
    );
    assert_error_starts(
        &format!("{REPO}recipients = [\"age1x\"]\npassphrase_env = \"P\"\n"),
        "lifeboat.toml:4:18: repository \"main\": passphrase_env and recipients are mutually exclusive",
    );
    assert_error_starts(
        &format!("{REPO}passphrase_file = \"/k\"\npassphrase_env = \"P\"\n"),
        "lifeboat.toml:4:18: repository \"main\": passphrase_file and passphrase_env are mutually exclusive",
    );
    assert_error(
        &format!("{REPO}unlock_cache = false\n"),
        "lifeboat.toml:3:16: repository \"main\": unlock_cache applies only to a passphrase_file; hint: a passphrase from the environment is never cached",
    );
    assert_error_starts(
        &format!("{REPO}passphrase_env = \"A=B\"\n"),
        "lifeboat.toml:3:18: repository \"main\": passphrase_env must be the name",
    );
    assert_error_starts(
        "[repository.\"my repo\"]\nurl = \"file:///x\"\n",
        "lifeboat.toml:1:13: invalid repository name \"my repo\"",
    );
}

#[test]
fn target_repository_references() {
    let two = "[repository.main]\nurl = \"file:///a\"\n[repository.offsite]\nurl = \"s3://b/p\"\n";
    // The example in the documentation: line 9, column 14.
    assert_error(
        "[repository.main]\nurl = \"file:///var/backups/lifeboat\"\ncompression_level = 3\n\n\
         [target.dev]\ndatabase = \"postgres://postgres@localhost:5432/hyper_db\"\n\
         method = \"logical\"\n\nrepository = \"mian\"\n",
        "lifeboat.toml:9:14: target \"dev\" uses repository \"mian\", which is not defined; hint: defined repositories: main",
    );
    assert_error(
        &format!("{two}[target.t]\ndatabase = \"\"\nrepositories = [\"main\", \"ofsite\"]\n"),
        "lifeboat.toml:7:25: target \"t\" uses repository \"ofsite\", which is not defined; hint: defined repositories: main, offsite",
    );
    assert_error(
        &format!("{two}[target.t]\ndatabase = \"\"\n"),
        "lifeboat.toml:5:1: target \"t\" does not say which repository to use; hint: add repository = \"NAME\" (defined repositories: main, offsite)",
    );
    assert_error(
        "[target.t]\ndatabase = \"\"\n",
        "lifeboat.toml:1:1: target \"t\" has no repository to back up to; hint: add a [repository.NAME] table",
    );
    assert_error(
        "[target.t]\ndatabase = \"\"\nrepository = \"x\"\n",
        "lifeboat.toml:3:14: target \"t\" uses repository \"x\", which is not defined; hint: no defined repositories",
    );
    assert_error_starts(
        &format!(
            "{two}[target.t]\ndatabase = \"\"\nrepository = \"main\"\nrepositories = [\"offsite\"]\n"
        ),
        "lifeboat.toml:8:16: target \"t\" sets both repository and repositories",
    );
    assert_error_starts(
        &format!("{two}[target.t]\ndatabase = \"\"\nrepositories = []\n"),
        "lifeboat.toml:7:16: target \"t\": repositories is empty",
    );
    assert_error_starts(
        &format!("{two}[target.t]\ndatabase = \"\"\nrepositories = [\"main\", \"main\"]\n"),
        "lifeboat.toml:7:25: target \"t\" lists repository \"main\" twice",
    );
    // Dotted keys instead of a table header.
    assert_error_starts(
        &format!("target.t.database = \"\"\n{two}"),
        "lifeboat.toml:1:8: target \"t\" does not say which repository to use",
    );

    let config = parse(&format!(
        "{two}[target.t]\ndatabase = \"\"\nrepositories = [\"offsite\", \"main\"]\n\
         [target.u]\ndatabase = \"\"\nrepository = \"offsite\"\n"
    ));
    assert_eq!(
        config.target("t").unwrap().repository_names(),
        ["offsite", "main"]
    );
    assert_eq!(config.target("u").unwrap().repository_names(), ["offsite"]);
}

#[test]
fn database_is_validated_without_showing_the_password() {
    let msg = error(&format!(
        "{REPO}[target.t]\ndatabase = \"postgres://u:hunter2@h:54x32/db\"\n"
    ));
    assert!(
        msg.starts_with(
            "lifeboat.toml:4:12: target \"t\": invalid database connection string: invalid port"
        ),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");

    let msg = error(&format!(
        "{REPO}[target.t]\ndatabase = \"host=h password=hunter2 hunter2\"\n"
    ));
    assert_eq!(
        msg,
        "lifeboat.toml:4:12: target \"t\": invalid database connection string: missing \"=\" after the keyword at position 25"
    );
    let msg = error(&format!(
        "{REPO}[target.t]\ndatabase = \"password='hunter2\"\n"
    ));
    assert!(msg.starts_with("lifeboat.toml:4:12: "), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");

    // A password is allowed; Debug of the target hides it.
    let config = parse(&format!(
        "{REPO}[target.t]\ndatabase = \"postgres://u:hunter2@h/db\"\n"
    ));
    let target = config.target("t").unwrap();
    assert_eq!(target.conninfo().unwrap().password(), Some("hunter2"));
    for shown in [
        format!("{target:?}"),
        format!("{config:?}"),
        format!("{config:#?}"),
    ] {
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("password=********"), "{shown}");
    }
    // Even for a string that no longer parses.
    let mut broken: TargetConfig = target.clone();
    broken.database = "postgres://u:hunter2@h/%zz".to_string();
    assert!(!format!("{broken:?}").contains("hunter2"));
}

#[test]
fn primary_database_is_for_physical_targets_and_hides_its_password() {
    let physical = format!(
        "{REPO}[target.t]\ndatabase = \"host=/run/standby\"\nmethod = \"physical\"\n\
         data_directory = \"/srv/standby\"\nprimary_database = \"postgres://u:hunter2@primary/db\"\n"
    );
    let config = parse(&physical);
    let target = config.target("t").unwrap();
    assert_eq!(
        target.primary_database.as_deref(),
        Some("postgres://u:hunter2@primary/db")
    );
    let shown = format!("{target:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("primary_database"), "{shown}");

    assert_error(
        &format!("{REPO}[target.t]\ndatabase = \"\"\nprimary_database = \"host=primary\"\n"),
        "lifeboat.toml:5:20: target \"t\": primary_database applies only to physical targets (backups from a standby)",
    );
    let msg = error(&physical.replace("@primary/db", "@primary:54x32/db"));
    assert!(
        msg.contains("target \"t\": invalid primary_database connection string: invalid port"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn schedules() {
    let with =
        |schedule: &str| format!("{REPO}[target.t]\ndatabase = \"\"\nschedule = \"{schedule}\"\n");
    for ok in [
        "0 2 * * *",
        "*/15 * * * *",
        "30 1 1 * *",
        "0 3 * * 1-5",
        "0 3 * * mon-fri",
        "0 3 * * SUN",
        "0 3 * * 0,7",
        "0 0 1 jan *",
        "  5 4 * * sun  ",
        "@daily",
        "@hourly",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
        "@midnight",
    ] {
        let config = parse(&with(ok));
        assert_eq!(
            config
                .target("t")
                .unwrap()
                .schedule
                .as_ref()
                .unwrap()
                .as_str(),
            ok
        );
    }

    assert_error(
        &with("0 2 * *"),
        "lifeboat.toml:5:12: target \"t\": invalid schedule \"0 2 * *\": expected 5 fields (minute hour day-of-month month day-of-week), found 4",
    );
    assert_error_starts(
        &with("0 0 2 * * *"),
        "lifeboat.toml:5:12: target \"t\": invalid schedule \"0 0 2 * * *\": expected 5 fields",
    );
    assert_error_starts(
        &with("61 2 * * *"),
        "lifeboat.toml:5:12: target \"t\": invalid schedule \"61 2 * * *\": ",
    );
    assert_error_starts(&with("0 25 * * *"), "lifeboat.toml:5:12: ");
    assert_error_starts(&with("0 2 * * 8"), "lifeboat.toml:5:12: ");
    assert_error_starts(&with("0 2 * * fry"), "lifeboat.toml:5:12: ");
    assert_error_starts(&with("x 2 * * *"), "lifeboat.toml:5:12: ");
    assert_error_starts(&with("@reboot"), "lifeboat.toml:5:12: ");
    assert_error_starts(&with(""), "lifeboat.toml:5:12: ");
    assert_error(
        &with("0 0 30 2 *"),
        "lifeboat.toml:5:12: target \"t\": invalid schedule \"0 0 30 2 *\": never runs",
    );
    assert_error_starts(
        &with("0 0 1 * 1"),
        "lifeboat.toml:5:12: target \"t\": invalid schedule \"0 0 1 * 1\": both day of month and day of week are restricted",
    );
    assert_error_starts(
        &format!("{REPO}[target.t]\ndatabase = \"\"\nschedule = 2\n"),
        "lifeboat.toml:5:12: invalid type: integer `2`, expected a string",
    );
}

#[test]
fn schedule_next_after() {
    let at = |y, mo, d, h, mi| Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap();
    let next = |expr: &str, t| Schedule::parse(expr).unwrap().next_after(t).unwrap();
    // 2025-06-04 is a Wednesday.
    let wed = at(2025, 6, 4, 12, 0);
    assert_eq!(next("0 2 * * *", wed), at(2025, 6, 5, 2, 0));
    assert_eq!(
        next("0 2 * * *", at(2025, 6, 5, 1, 59)),
        at(2025, 6, 5, 2, 0)
    );
    assert_eq!(
        next("0 2 * * *", at(2025, 6, 5, 2, 0)),
        at(2025, 6, 6, 2, 0),
        "strictly after"
    );
    assert_eq!(
        next("*/15 * * * *", at(2025, 6, 4, 12, 7)),
        at(2025, 6, 4, 12, 15)
    );
    assert_eq!(next("30 1 1 * *", wed), at(2025, 7, 1, 1, 30));
    // Standard cron days of week: 0 and 7 are Sunday, 1 is Monday.
    assert_eq!(next("0 3 * * 1", wed), at(2025, 6, 9, 3, 0));
    assert_eq!(next("0 3 * * mon", wed), at(2025, 6, 9, 3, 0));
    assert_eq!(next("0 3 * * 0", wed), at(2025, 6, 8, 3, 0));
    assert_eq!(next("0 3 * * 7", wed), at(2025, 6, 8, 3, 0));
    assert_eq!(next("0 3 * * 6", wed), at(2025, 6, 7, 3, 0));
    assert_eq!(
        next("0 3 * * 1-5", at(2025, 6, 6, 12, 0)),
        at(2025, 6, 9, 3, 0)
    );
    assert_eq!(next("0 3 * * 5-7", wed), at(2025, 6, 6, 3, 0));
    assert_eq!(
        next("0 3 * * */3", wed),
        at(2025, 6, 7, 3, 0),
        "sun, wed, sat"
    );
    assert_eq!(next("0 3 * * 0-6", wed), at(2025, 6, 5, 3, 0));
    assert_eq!(next("@weekly", wed), at(2025, 6, 8, 0, 0));
    assert_eq!(next("@daily", wed), at(2025, 6, 5, 0, 0));
    assert_eq!(next("@hourly", wed), at(2025, 6, 4, 13, 0));
    assert_eq!(next("@monthly", wed), at(2025, 7, 1, 0, 0));
    assert_eq!(next("@yearly", wed), at(2026, 1, 1, 0, 0));

    let s: Schedule = "0 2 * * *".parse().unwrap();
    assert_eq!(s.to_string(), "0 2 * * *");
    assert_eq!(format!("{s:?}"), "Schedule(\"0 2 * * *\")");
    assert!(Schedule::parse("0 2 * * 1-0").is_err());
}

#[test]
fn retention_and_globals_validation() {
    assert_error(
        &format!("{REPO}[target.t]\ndatabase = \"\"\nretention = {{ keep_last = 0 }}\n"),
        "lifeboat.toml:5:13: target \"t\": retention keep_last must be at least 1; hint: leave it out to not limit backups by it",
    );
    assert_error(
        &format!(
            "{REPO}[target.t]\ndatabase = \"\"\nglobals = false\nglobals_role_passwords = true\n"
        ),
        "lifeboat.toml:6:26: target \"t\": globals_role_passwords = true needs globals = true",
    );
    let config = parse(&format!(
        "{REPO}[target.t]\ndatabase = \"\"\nglobals_role_passwords = true\n"
    ));
    assert!(config.target("t").unwrap().globals_role_passwords);
}

#[test]
fn first_error_in_the_file_is_reported() {
    // "b" comes after "a" alphabetically but first in the file.
    let text = format!(
        "{REPO}[target.b]\ndatabase = \"\"\nschedule = \"bad\"\n[target.a]\ndatabase = \"\"\nschedule = \"bad\"\n"
    );
    assert_error_starts(&text, "lifeboat.toml:5:12: target \"b\"");
}

#[test]
fn relative_paths_are_resolved_against_the_config_directory() {
    let text = "[repository.main]\nurl = \"file:///r\"\npassphrase_file = \"secrets/pass\"\n\
                identity_file = \"../age.key\"\ndedup_key_file = \"/abs/dedup\"\n\
                [target.t]\ndatabase = \"\"\npg_bindir = \"bin\"\ndata_directory = \"./data\"\n";
    let config = Config::parse(text, Path::new("/srv/lifeboat/lifeboat.toml")).unwrap();
    let repo = config.repository("main").unwrap();
    assert_eq!(
        repo.passphrase_file.as_deref(),
        Some(Path::new("/srv/lifeboat/secrets/pass"))
    );
    assert!(repo.unlock_cache, "on by default");
    let off = Config::parse(
        &text.replace("identity_file", "unlock_cache = false\nidentity_file"),
        Path::new("/srv/lifeboat/lifeboat.toml"),
    )
    .unwrap();
    assert!(!off.repository("main").unwrap().unlock_cache);
    assert_eq!(
        repo.identity_file.as_deref(),
        Some(Path::new("/srv/lifeboat/../age.key"))
    );
    assert_eq!(
        repo.dedup_key_file.as_deref(),
        Some(Path::new("/abs/dedup"))
    );
    let t = config.target("t").unwrap();
    assert_eq!(t.pg_bindir.as_deref(), Some(Path::new("/srv/lifeboat/bin")));
    assert_eq!(
        t.data_directory.as_deref(),
        Some(Path::new("/srv/lifeboat/data"))
    );

    // A relative config path: resolved to an absolute path from the
    // current directory, so that a later chdir does not matter.
    let cwd = std::env::current_dir().unwrap();
    let config = Config::parse(text, Path::new("conf/lifeboat.toml")).unwrap();
    assert_eq!(config.path, Path::new("conf/lifeboat.toml"));
    assert_eq!(
        config
            .repository("main")
            .unwrap()
            .passphrase_file
            .as_deref(),
        Some(cwd.join("conf/secrets/pass").as_path())
    );
    let config = Config::parse(text, Path::new("lifeboat.toml")).unwrap();
    assert_eq!(
        config.target("t").unwrap().pg_bindir.as_deref(),
        Some(cwd.join("bin").as_path())
    );
}

#[test]
fn load_reads_the_file_and_secret_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lifeboat.toml");
    std::fs::write(
        &path,
        "[repository.main]\nurl = \"file:///r\"\npassphrase_file = \"pass\"\ndedup_key_file = \"dedup\"\n\
         [repository.empty]\nurl = \"file:///e\"\npassphrase_file = \"empty\"\ndedup_key_file = \"missing\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("pass"), "correct horse \n\n").unwrap();
    std::fs::write(dir.path().join("dedup"), "0123abcd\r\n").unwrap();
    std::fs::write(dir.path().join("empty"), "\n").unwrap();

    let config = Config::load(&path).unwrap();
    assert_eq!(config.path, path);
    let main = config.repository("main").unwrap();
    assert_eq!(
        main.passphrase().unwrap().as_deref(),
        Some("correct horse ")
    );
    assert_eq!(main.dedup_key().unwrap().as_deref(), Some("0123abcd"));

    let empty = config.repository("empty").unwrap();
    let msg = empty.passphrase().unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "passphrase file {} is empty",
            dir.path().join("empty").display()
        )
    );
    let msg = empty.dedup_key().unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!(
            "cannot read dedup key file {}: ",
            dir.path().join("missing").display()
        )),
        "{msg}"
    );

    // Errors carry the path as given.
    std::fs::write(&path, "[repository.main]\nurl = 1\n").unwrap();
    let msg = Config::load(&path).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "{}:2:7: invalid type: integer `1`, expected a string",
            path.display()
        )
    );

    let missing = dir.path().join("nope.toml");
    let msg = Config::load(&missing).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("cannot read {}: ", missing.display())),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
}

#[test]
fn recipients_mode_has_no_passphrase() {
    let config = parse(&format!(
        "{REPO}recipients = [\"age1x\"]\nidentity_file = \"/k\"\n"
    ));
    let repo = config.repository("main").unwrap();
    assert_eq!(repo.encryption(), EncryptionMode::Recipients);
    assert_eq!(repo.passphrase().unwrap(), None);
}

// ---------------------------------------------------------------------------
// Behaviour that depends on environment variables and the current directory
// runs in child processes of this test binary (setting variables in this
// process would need `unsafe` and would race with other tests).

const SCENARIO_ENV: &str = "LIFEBOAT_TEST_SCENARIO";
const DIR_ENV: &str = "LIFEBOAT_TEST_DIR";

/// Runs `env_child` in a child process with `scenario`, in `cwd`, with
/// `vars` set (`None`: removed).
fn run_scenario(scenario: &str, cwd: &Path, vars: &[(&str, Option<&OsStr>)]) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "env_child",
            "--exact",
            "--include-ignored",
            "--test-threads=1",
        ])
        .current_dir(cwd)
        .env(SCENARIO_ENV, scenario)
        .env(DIR_ENV, cwd)
        .env_remove("LIFEBOAT_CONFIG")
        .env_remove("LIFEBOAT_PASSPHRASE")
        .env_remove("LIFEBOAT_DEDUP_KEY");
    for (name, value) in vars {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "scenario {scenario} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn environment_and_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    let with_local = dir.path().join("with_local");
    let without_local = dir.path().join("without_local");
    std::fs::create_dir(&with_local).unwrap();
    std::fs::create_dir(&without_local).unwrap();
    std::fs::write(with_local.join("lifeboat.toml"), REPO).unwrap();
    let other = dir.path().join("other.toml");
    std::fs::write(&other, REPO).unwrap();
    let other = other.as_os_str();
    let missing = dir.path().join("missing.toml");
    let missing = missing.as_os_str();

    run_scenario(
        "explicit_wins",
        &with_local,
        &[("LIFEBOAT_CONFIG", Some(other))],
    );
    run_scenario(
        "explicit_missing",
        &with_local,
        &[("LIFEBOAT_CONFIG", Some(other))],
    );
    run_scenario("env_wins", &with_local, &[("LIFEBOAT_CONFIG", Some(other))]);
    run_scenario(
        "env_missing",
        &with_local,
        &[("LIFEBOAT_CONFIG", Some(missing))],
    );
    run_scenario("local", &with_local, &[]);
    run_scenario(
        "local",
        &with_local,
        &[("LIFEBOAT_CONFIG", Some(OsStr::new("")))],
    );
    run_scenario("nothing", &without_local, &[]);

    let pass = OsStr::new("env passphrase");
    run_scenario(
        "passphrase_env",
        &without_local,
        &[("LIFEBOAT_PASSPHRASE", Some(pass))],
    );
    run_scenario(
        "passphrase_custom_env",
        &without_local,
        &[
            ("LIFEBOAT_PASSPHRASE", Some(OsStr::new("wrong"))),
            ("MY_PASS", Some(pass)),
        ],
    );
    run_scenario("passphrase_unset", &without_local, &[]);
    run_scenario(
        "passphrase_empty",
        &without_local,
        &[("LIFEBOAT_PASSPHRASE", Some(OsStr::new("")))],
    );
    run_scenario(
        "passphrase_file_wins",
        &without_local,
        &[("LIFEBOAT_PASSPHRASE", Some(pass))],
    );
    run_scenario(
        "dedup_env",
        &without_local,
        &[("LIFEBOAT_DEDUP_KEY", Some(OsStr::new("k3y")))],
    );
}

#[test]
#[ignore = "run by environment_and_current_directory in a child process"]
fn env_child() {
    let scenario = std::env::var(SCENARIO_ENV).expect("run by environment_and_current_directory");
    let dir = PathBuf::from(std::env::var(DIR_ENV).unwrap());
    let other = std::env::var("LIFEBOAT_CONFIG").map(PathBuf::from);
    let repo = |extra: &str| {
        let config = parse(&format!("{REPO}{extra}"));
        config.repository("main").unwrap().clone()
    };
    match scenario.as_str() {
        "explicit_wins" => {
            let explicit = dir.join("explicit.toml");
            std::fs::write(&explicit, "").unwrap();
            assert_eq!(Config::locate(Some(&explicit)).unwrap(), explicit);
            std::fs::remove_file(&explicit).unwrap();
        }
        "explicit_missing" => {
            let explicit = dir.join("explicit.toml");
            let msg = Config::locate(Some(&explicit)).unwrap_err().to_string();
            assert_eq!(
                msg,
                format!(
                    "configuration file {} (from --config) does not exist; hint: create it or fix --config",
                    explicit.display()
                )
            );
        }
        "env_wins" => assert_eq!(Config::locate(None).unwrap(), other.unwrap()),
        "env_missing" => {
            let err = Config::locate(None).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Missing { origin, .. } if origin == "LIFEBOAT_CONFIG")
            );
            assert!(
                err.to_string()
                    .contains("(from LIFEBOAT_CONFIG) does not exist"),
                "{err}"
            );
        }
        "local" => {
            let path = Config::locate(None).unwrap();
            assert_eq!(path, Path::new("lifeboat.toml"));
            Config::load(&path).unwrap();
        }
        "nothing" => {
            let system = Path::new("/etc/lifeboat/lifeboat.toml");
            if system.is_file() {
                assert_eq!(Config::locate(None).unwrap(), system);
            } else {
                let msg = Config::locate(None).unwrap_err().to_string();
                assert_eq!(
                    msg,
                    "no configuration file found (searched: --config not given, LIFEBOAT_CONFIG not set, ./lifeboat.toml, /etc/lifeboat/lifeboat.toml); hint: create lifeboat.toml or pass --config FILE"
                );
            }
        }
        "passphrase_env" => {
            assert_eq!(
                repo("").passphrase().unwrap().as_deref(),
                Some("env passphrase")
            );
        }
        "passphrase_custom_env" => {
            let repo = repo("passphrase_env = \"MY_PASS\"\n");
            assert_eq!(
                repo.passphrase().unwrap().as_deref(),
                Some("env passphrase")
            );
        }
        "passphrase_unset" => {
            assert_eq!(repo("").passphrase().unwrap(), None);
            assert_eq!(repo("").dedup_key().unwrap(), None);
        }
        "passphrase_empty" => {
            assert_eq!(
                repo("").passphrase().unwrap_err().to_string(),
                "environment variable LIFEBOAT_PASSPHRASE is set but empty"
            );
        }
        "passphrase_file_wins" => {
            let file = dir.join("pass");
            std::fs::write(&file, "from file\n").unwrap();
            let repo = repo(&format!("passphrase_file = {:?}\n", file.to_str().unwrap()));
            assert_eq!(repo.passphrase().unwrap().as_deref(), Some("from file"));
            std::fs::remove_file(&file).unwrap();
        }
        "dedup_env" => {
            let repo = repo("recipients = [\"age1x\"]\n");
            assert_eq!(repo.dedup_key().unwrap().as_deref(), Some("k3y"));
            assert_eq!(repo.passphrase().unwrap(), None);
        }
        other => panic!("unknown scenario {other}"),
    }
}
