//! Off-site repositories end to end: the built binary against real S3 servers
//! on loopback (moto, s3s-fs), a fault-injecting proxy between them, Glacier
//! retrievals, copies between repositories and restores that fall back to a
//! copy when a pack is damaged.

mod common;

use std::path::{Path, PathBuf};

use common::Env;
use lifeboat::testkit::proxy::{Fault, FaultProxy, Rule};
use lifeboat::testkit::s3::S3Server;

/// `[repository.NAME]` for `server` (through `via` if given), with its own
/// credentials file.
fn s3_repository(
    env: &Env,
    name: &str,
    server: &S3Server,
    prefix: &str,
    via: Option<&str>,
) -> String {
    format!(
        "[repository.{name}]\n{}",
        server.repository_toml(env.dir.path(), prefix, via)
    )
}

fn dev_target(env: &Env, repositories: &str, keep_last: u32) -> String {
    format!(
        "[target.dev]\ndatabase = \"{}\"\nmethod = \"logical\"\nrepositories = [{repositories}]\nretention = {{ keep_last = {keep_last} }}\n",
        env.cluster.uri("hyper_db")
    )
}

fn local_repository(env: &Env, name: &str, extra: &str) -> String {
    format!(
        "[repository.{name}]\nurl = \"file://{}\"\n{extra}\n",
        env.dir.path().join(name).display()
    )
}

/// Restore the newest backup of dev into a new database; check it equals the
/// original. Returns the run's stderr.
fn restore_and_compare(env: &Env, db: &str, extra: &[&str]) -> String {
    let mut args = vec!["restore", "dev", "--into"];
    let uri = env.cluster.uri(db);
    args.push(&uri);
    args.extend(extra);
    let r = env.lifeboat(&args).ok();
    assert_eq!(env.fingerprint(db), env.fingerprint("hyper_db"));
    r.stderr
}

fn every_command_on(server: S3Server) {
    let env = Env::new();
    env.write_config(&format!(
        "{}\n{}",
        s3_repository(&env, "main", &server, "lifeboat/hyper", None),
        dev_target(&env, "\"main\"", 1)
    ));
    let r = env.lifeboat(&["init"]).ok();
    assert!(r.stdout.contains("s3://"), "{}", r.stdout);
    env.lifeboat(&["init"]).fails(2, "already exists");
    env.lifeboat(&["backup", "dev"]).ok();
    env.cluster
        .psql(
            "hyper_db",
            "INSERT INTO tasks (user_id, title) SELECT id, 'more' FROM users LIMIT 1",
        )
        .unwrap();
    env.lifeboat(&["backup", "dev"]).ok();
    assert_eq!(env.list("dev").len(), 2);
    restore_and_compare(&env, "restored", &[]);
    let plain = env.dir.path().join("dump.sql");
    env.lifeboat(&[
        "export",
        "dev",
        "--format",
        "plain",
        "-o",
        plain.to_str().unwrap(),
    ])
    .ok();
    assert!(
        std::fs::read_to_string(&plain)
            .unwrap()
            .contains("CREATE TABLE")
    );
    let r = env.lifeboat(&["prune", "dev"]).ok();
    assert!(r.stdout.contains("delete"), "{}", r.stdout);
    assert_eq!(env.list("dev").len(), 1);
    env.lifeboat(&["verify", "--read-data"]).ok();
    restore_and_compare(&env, "restored_after_prune", &[]);
}

#[test]
fn every_command_works_on_moto() {
    every_command_on(S3Server::moto().unwrap());
}

#[test]
fn every_command_works_on_s3s_fs_which_checks_signatures() {
    every_command_on(S3Server::s3s_fs().unwrap());
}

/// Backup data in GLACIER: a restore says so, retrieves exactly the packs it
/// needs (or, with --no-wait, starts that and stops), then restores.
#[test]
fn restore_from_glacier_retrieves_what_it_needs() {
    let server = S3Server::moto().unwrap();
    let env = Env::new();
    env.write_config(&format!(
        "{}storage_class = \"GLACIER\"\nretrieval_poll = \"1s\"\n\n{}",
        s3_repository(&env, "main", &server, "cold", None),
        dev_target(&env, "\"main\"", 3)
    ));
    env.lifeboat(&["init"]).ok();
    env.lifeboat(&["backup", "dev"]).ok();
    // Listing, verifying and pruning need no retrieval: records and indexes
    // are not archived; verify says what it could not read.
    assert_eq!(env.list("dev").len(), 1);
    let r = env.lifeboat(&["verify", "--read-data"]).ok();
    assert!(r.stdout.contains("archive storage class"), "{}", r.stdout);
    env.lifeboat(&["prune", "--grace", "0s"]).ok();
    let packs = packs_of(&server, "cold");
    assert!(!packs.is_empty());
    for key in &packs {
        let head = server.request("HEAD", key).send().unwrap();
        assert_eq!(head.header("x-amz-storage-class"), Some("GLACIER"), "{key}");
    }
    let dry = env
        .lifeboat(&[
            "restore",
            "dev",
            "--into",
            &env.cluster.uri("never"),
            "--dry-run",
        ])
        .ok();
    assert!(dry.stdout.contains("are in GLACIER"), "{}", dry.stdout);
    assert!(
        no_retrieval_asked(&server, &packs),
        "a dry run starts nothing"
    );
    let uri = env.cluster.uri("restored");
    let r = env
        .lifeboat(&["restore", "dev", "--into", &uri, "--no-wait"])
        .fails(1, "nothing was restored yet");
    assert!(r.stdout.contains("retrieval"), "{}", r.stdout);
    assert!(
        !env.cluster
            .psql("postgres", "SELECT datname FROM pg_database")
            .unwrap()
            .contains("restored"),
        "--no-wait restores nothing"
    );
    assert!(!no_retrieval_asked(&server, &packs));
    // moto completes retrievals at once: the next run restores.
    restore_and_compare(&env, "restored", &[]);
    // A fresh backup's new packs: the restore waits for their retrieval itself.
    env.cluster
        .psql(
            "hyper_db",
            "UPDATE users SET email = email || '.x' WHERE id = 'user_001'",
        )
        .unwrap();
    let first = env.list("dev")[0]["id"].as_str().unwrap().to_string();
    env.lifeboat(&["backup", "dev"]).ok();
    let new_packs: Vec<String> = packs_of(&server, "cold")
        .into_iter()
        .filter(|p| !packs.contains(p))
        .collect();
    assert!(!new_packs.is_empty());
    // Exactly what a restore needs is retrieved: the first backup's packs
    // are readable already, the second one's new packs are left alone.
    let r = env
        .lifeboat(&[
            "restore",
            "dev",
            "--backup",
            &first,
            "--into",
            &env.cluster.uri("first_again"),
        ])
        .ok();
    assert!(!r.stdout.contains("retriev"), "{}", r.stdout);
    assert!(no_retrieval_asked(&server, &new_packs));
    let r = env
        .lifeboat(&["restore", "dev", "--into", &env.cluster.uri("restored2")])
        .ok();
    assert!(r.stdout.contains("retrieved"), "{}", r.stdout);
    assert!(!no_retrieval_asked(&server, &new_packs));
    assert_eq!(env.fingerprint("restored2"), env.fingerprint("hyper_db"));
}

fn packs_of(server: &S3Server, prefix: &str) -> Vec<String> {
    let resp = server
        .request("GET", "")
        .query("list-type", "2")
        .query("prefix", &format!("{prefix}/data/"))
        .send()
        .unwrap();
    resp.text()
        .split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .map(str::to_string)
        .collect()
}

fn no_retrieval_asked(server: &S3Server, keys: &[String]) -> bool {
    keys.iter().all(|k| {
        server
            .request("HEAD", k)
            .send()
            .unwrap()
            .header("x-amz-restore")
            .is_none()
    })
}

/// The plan's off-site copy: every backup goes to a local and an S3
/// repository (same keys, copied without decrypting); a damaged pack in the
/// first is read from the second; a repository with other keys gets
/// re-encrypted copies; copies are incremental.
#[test]
fn copies_to_s3_and_back_and_fallback_on_a_damaged_pack() {
    let server = S3Server::moto().unwrap();
    let env = Env::new();
    let passphrase_file = env.dir.path().join("pass");
    std::fs::write(&passphrase_file, common::PASSPHRASE).unwrap();
    env.write_config(&format!(
        "{}{}keys_from = \"main\"\n\n{}\n{}",
        local_repository(&env, "main", ""),
        s3_repository(&env, "offsite", &server, "offsite", None),
        local_repository(&env, "other", ""),
        dev_target(&env, "\"main\", \"offsite\"", 3)
    ));
    env.lifeboat(&["init", "--repository", "main"]).ok();
    let r = env.lifeboat(&["init", "--repository", "offsite"]).ok();
    assert!(
        r.stdout.contains("with the keys of \"main\""),
        "{}",
        r.stdout
    );
    // other keys: a passphrase repository of its own
    env.lifeboat(&["init", "--repository", "other"]).ok();

    let r = env.lifeboat(&["backup", "dev"]).ok();
    assert!(
        r.stdout.contains("copied to repository \"offsite\"") && r.stdout.contains("same keys"),
        "{}",
        r.stdout
    );
    let id = env.list("dev")[0]["id"].as_str().unwrap().to_string();
    let r = env
        .lifeboat(&["copy", "--from", "main", "--to", "offsite"])
        .ok();
    assert!(
        r.stdout.contains("copied 0 backups"),
        "incremental: {}",
        r.stdout
    );

    // Damage every pack of main: the restore reads them from offsite.
    for pack in walk(&env.dir.path().join("main/data")) {
        let mut bytes = std::fs::read(&pack).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&pack, bytes).unwrap();
    }
    let stderr = restore_and_compare(&env, "from_fallback", &[]);
    assert!(
        stderr.contains("authentication failed") && stderr.contains("from s3://"),
        "the fallback is said: {stderr}"
    );
    restore_and_compare(&env, "from_offsite", &["--repository", "offsite"]);

    // Other keys: re-encrypted, and said so; the copy restores on its own.
    let r = env
        .lifeboat(&["copy", "--from", "offsite", "--to", "other", "dev"])
        .ok();
    assert!(r.stdout.contains("different keys"), "{}", r.stdout);
    assert!(r.stdout.contains("copied 1 backup"), "{}", r.stdout);
    restore_and_compare(&env, "from_other", &["--repository", "other"]);
    let r = env
        .lifeboat(&["copy", "--from", "offsite", "--to", "other", "dev"])
        .ok();
    assert!(r.stdout.contains("copied 0 backups"), "{}", r.stdout);
    // list: one row per backup, saying which repositories hold it.
    let listed = env.list("dev");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(
        listed[0]["repositories"],
        serde_json::json!(["main", "offsite"])
    );
    let r = env.lifeboat(&["list", "dev"]).ok();
    assert!(r.stdout.contains("main, offsite"), "{}", r.stdout);
    let r = env.lifeboat(&["show", &id[..8]]).ok();
    assert!(r.stdout.contains("main, offsite"), "{}", r.stdout);
    let r = env.lifeboat(&["list", "--json"]).ok();
    let all: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let copy = all["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["repositories"] == serde_json::json!(["other"]))
        .expect("the re-encrypted copy is listed");
    assert_eq!(copy["copy_of"], id.as_str());
}

/// Faults between lifeboat and S3: a backup whose requests fail now and then
/// completes and restores; one that cannot finish fails, lists nothing, and
/// leaves only what prune removes.
#[test]
fn backups_survive_a_flaky_service_and_fail_cleanly_when_it_is_down() {
    let server = S3Server::s3s_fs().unwrap();
    let proxy = FaultProxy::start(server.addr()).unwrap();
    let env = Env::new();
    env.write_config(&format!(
        "{}attempts = 4\n\n{}",
        s3_repository(&env, "main", &server, "flaky", Some(&proxy.endpoint())),
        dev_target(&env, "\"main\"", 3)
    ));
    env.lifeboat(&["init"]).ok();
    proxy.inject(
        Rule::new(Fault::Status(503))
            .method("PUT")
            .path("/data/")
            .times(2),
    );
    proxy.inject(Rule::new(Fault::Drop).method("PUT").path("/index/"));
    proxy.inject(
        Rule::new(Fault::DropAfterForward)
            .method("PUT")
            .path("/backups/"),
    );
    proxy.inject(Rule::new(Fault::Status(500)).method("GET").times(3));
    env.lifeboat(&["backup", "dev"]).ok();
    restore_and_compare(&env, "restored", &[]);

    // Down for good while the backup record is written: nothing is listed.
    proxy.inject(
        Rule::new(Fault::Status(503))
            .method("PUT")
            .path("/backups/")
            .times(usize::MAX),
    );
    env.cluster
        .psql(
            "hyper_db",
            "UPDATE users SET email = email || '.y' WHERE id = 'user_001'",
        )
        .unwrap();
    env.lifeboat(&["backup", "dev"])
        .fails(1, "gave up after 4 attempts");
    proxy.clear_rules();
    assert_eq!(env.list("dev").len(), 1, "the failed backup is not listed");
    env.lifeboat(&["verify", "--read-data"]).ok();
    env.lifeboat(&["prune", "--grace", "0s"]).ok();
    env.lifeboat(&["backup", "dev"]).ok();
    restore_and_compare(&env, "restored_again", &[]);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// kill -9 of a copy after its packs, and after its index: the destination
/// lists nothing half-copied, verifies clean, and the next copy completes it.
#[test]
fn a_killed_copy_leaves_the_destination_valid_and_the_next_one_completes() {
    let server = S3Server::s3s_fs().unwrap();
    let env = Env::new();
    env.write_config(&format!(
        "{}{}keys_from = \"main\"\n\n{}",
        local_repository(&env, "main", ""),
        s3_repository(&env, "offsite", &server, "offsite", None),
        dev_target(&env, "\"main\"", 3)
    ));
    env.lifeboat(&["init", "--repository", "main"]).ok();
    env.lifeboat(&["init", "--repository", "offsite"]).ok();
    env.lifeboat(&["backup", "dev"]).ok();
    let listed = |repo: &str| -> usize {
        let r = env.lifeboat(&["list", "--json"]).ok();
        let all: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        all["backups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| {
                v["repositories"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r2| r2 == repo)
            })
            .count()
    };
    for point in ["copy:before-index", "copy:before-records"] {
        env.lifeboat_killed_at(&["copy", "--from", "main", "--to", "offsite"], point);
        assert_eq!(
            listed("offsite"),
            0,
            "{point}: nothing half-copied is listed"
        );
        // Every repository of the configuration, the copy's destination too.
        let v = env.lifeboat(&["verify", "--read-data"]).ok();
        assert!(v.stdout.contains("repository offsite"), "{}", v.stdout);
    }
    let r = env
        .lifeboat(&["copy", "--from", "main", "--to", "offsite"])
        .ok();
    assert!(r.stdout.contains("copied 1 backup"), "{}", r.stdout);
    assert_eq!(listed("offsite"), 1);
    restore_and_compare(&env, "after_crashed_copies", &["--repository", "offsite"]);
}
