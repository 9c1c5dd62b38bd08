//! Retention, prune, verify and pins end to end, including crashes at chosen
//! points (debug builds honour LIFEBOAT_CRASH_AT / LIFEBOAT_PAUSE_AT, see
//! src/failpoint.rs), concurrent commands and damaged repositories.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Stdio};

use common::{Env, Run};

/// Make the database differ from every earlier backup (a new pack's worth).
///
/// The table sorts last, so its rows end the dump: every chunk a backup
/// stores then holds some of its own rows (or its own table of contents) and
/// no later backup can need it. With common data after the changed rows,
/// two later dumps can cut that data alike while the first dump cut it
/// otherwise (the cut points depend on the repository's random chunker
/// seed), and the forgotten backup's pack would rightly be kept.
fn change(env: &Env, n: u32) {
    env.cluster
        .psql(
            "hyper_db",
            &format!(
                "DROP TABLE IF EXISTS zz_churn;
                 CREATE TABLE zz_churn AS SELECT {n} AS n, md5(g::text || '{n}') AS pad FROM generate_series(1, 20000) g;"
            ),
        )
        .unwrap();
}

/// The number just before the first `what` in `text` (0 if none).
fn count_before(text: &str, what: &str) -> u64 {
    text.find(what)
        .and_then(|at| text[..at].rsplit(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Back up and remember what the database looked like, by backup id.
fn backup(env: &Env, target: &str, seen: &mut HashMap<String, String>) -> String {
    env.lifeboat(&["backup", target]).ok();
    let id = env.list(target).last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    seen.insert(id.clone(), env.fingerprint("hyper_db"));
    id
}

fn ids(env: &Env, target: &str) -> Vec<String> {
    env.list(target)
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every listed backup of `target` restores to what was backed up.
#[track_caller]
fn all_restore(env: &Env, target: &str, seen: &HashMap<String, String>, tag: &str) {
    for (i, id) in ids(env, target).iter().enumerate() {
        let db = format!("r_{tag}_{i}");
        env.lifeboat(&[
            "restore",
            target,
            "--backup",
            id,
            "--into",
            &env.cluster.uri(&db),
        ])
        .ok();
        assert_eq!(
            Some(&env.fingerprint(&db)),
            seen.get(id),
            "backup {id} restored to something else ({tag})"
        );
        env.cluster
            .psql("postgres", &format!("DROP DATABASE \"{db}\""))
            .unwrap();
    }
}

fn verify_json(env: &Env, extra: &[&str]) -> (Run, serde_json::Value) {
    let mut args = vec!["verify", "--json"];
    args.extend_from_slice(extra);
    let r = env.lifeboat(&args);
    let v: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("verify --json: {e}\n{}\n{}", r.stdout, r.stderr));
    (r, v)
}

#[track_caller]
fn assert_verifies_clean(env: &Env, what: &str) {
    let (r, v) = verify_json(env, &["--read-data", "--decompress"]);
    assert_eq!(r.code, 0, "verify after {what}: {}\n{}", r.stdout, r.stderr);
    assert_eq!(v[0]["problems"].as_array().unwrap().len(), 0, "{what}");
    assert_eq!(v[0]["content_checked"], true);
}

/// A repository with targets `dev` (backed up once) and `other` (a table of
/// its own, not backed up yet).
fn initialised_with_other_target() -> Env {
    let env = Env::new();
    env.add_database_target(
        "other",
        "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 50000) g",
    );
    env.lifeboat(&["init"]).ok();
    env.lifeboat(&["backup", "dev"]).ok();
    env
}

#[test]
fn read_data_proves_the_stored_bytes_and_decompress_the_content() {
    let env = initialised_with_other_target();
    let (_, v) = verify_json(&env, &["--read-data"]);
    assert_eq!(v[0]["problems"].as_array().unwrap().len(), 0);
    assert_eq!(v[0]["blobs_authenticated"], true);
    assert_eq!(v[0]["content_checked"], false);
    let r = env.lifeboat(&["verify", "--read-data"]).ok();
    assert!(
        r.stdout.contains("every blob authenticated (--decompress"),
        "{}",
        r.stdout
    );
    assert_verifies_clean(&env, "one backup");
    env.lifeboat(&["verify", "--decompress"])
        .fails(2, "--read-data");

    // Blobs whose plaintext changed after their ids were taken: the stored
    // bytes are the ones written, so --read-data passes; --decompress and a
    // restore find each one, and name the backup.
    env.lifeboat_env(
        &["backup", "other"],
        &[
            ("LIFEBOAT_PASSPHRASE", common::PASSPHRASE),
            ("LIFEBOAT_FAIL_AT", "encode:flip-plaintext"),
        ],
    )
    .ok();
    let other = ids(&env, "other")[0][..8].to_string();
    let dev = ids(&env, "dev")[0][..8].to_string();
    env.lifeboat(&["verify", "--read-data"]).ok();
    let r = env
        .lifeboat(&["verify", "--read-data", "--decompress"])
        .fails(1, "verify found");
    let lines: Vec<&str> = r.stdout.lines().filter(|l| l.contains("PROBLEM")).collect();
    assert!(!lines.is_empty(), "{}", r.stdout);
    for l in &lines {
        assert!(l.contains("content does not match its id"), "{l}");
        assert!(l.contains(&other) && !l.contains(&dev), "{l}");
    }
    assert!(
        r.stdout.contains("target dev: newest good backup"),
        "{}",
        r.stdout
    );
    env.lifeboat(&["restore", "other", "--into", &env.cluster.uri("other_r")])
        .fails(1, "content does not match its id");
    env.lifeboat(&["restore", "dev", "--into", &env.cluster.uri("dev_r")])
        .ok();
}

fn leftover_packs(env: &Env) -> u64 {
    verify_json(env, &[]).1[0]["leftover_packs"]
        .as_u64()
        .unwrap()
}

fn spawn(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Child {
    let mut cmd = common::lifeboat_cmd();
    cmd.arg("--config")
        .arg(&env.config)
        .args(args)
        .env("LIFEBOAT_PASSPHRASE", common::PASSPHRASE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// `lifeboat ARGS` held at failpoint `point` until resumed.
fn paused(env: &Env, args: &[&str], point: &str) -> common::Paused {
    let mut cmd = common::lifeboat_cmd();
    cmd.arg("--config")
        .arg(&env.config)
        .args(args)
        .env("LIFEBOAT_PASSPHRASE", common::PASSPHRASE);
    common::Paused::start(cmd, point, env.dir.path().join(format!("resume-{point}")))
}

fn finish(child: Child) -> Run {
    let o = child.wait_with_output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn prune_keeps_what_the_rules_say_and_pins_and_frees_the_rest() {
    let env = Env::new(); // target dev: keep_last = 3
    env.lifeboat(&["init"]).ok();
    let mut seen = HashMap::new();
    let mut made = Vec::new();
    for n in 0..5 {
        change(&env, n);
        made.push(backup(&env, "dev", &mut seen));
    }
    let pinned = &made[0];
    env.lifeboat(&["pin", &pinned[..8], "--reason", "before the migration"])
        .ok();
    let packs_before = env.packs().len();

    let dry = env.lifeboat(&["prune", "--dry-run"]).ok();
    assert_eq!(ids(&env, "dev").len(), 5, "a dry run deletes nothing");
    assert_eq!(env.packs().len(), packs_before);
    assert!(dry.stdout.contains("keep_last = 3"), "{}", dry.stdout);
    assert!(dry.stdout.contains("pinned"), "{}", dry.stdout);
    assert!(
        dry.stdout.contains("newest, keep_last #1"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains(&format!("delete  {}", &made[1][..8])));

    let real = env.lifeboat(&["prune"]).ok();
    // Plan, then apply: the real run printed the same plan.
    let plan = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.contains("dry run") && !l.contains("deleted "))
            .map(String::from)
            .collect()
    };
    assert_eq!(plan(&dry.stdout), plan(&real.stdout));
    let mut want = vec![
        made[0].clone(),
        made[2].clone(),
        made[3].clone(),
        made[4].clone(),
    ];
    want.sort();
    let mut have = ids(&env, "dev");
    have.sort();
    assert_eq!(have, want, "the 3 newest and the pinned one remain");
    assert!(
        env.packs().len() < packs_before,
        "the forgotten backup's data is freed"
    );
    let again = env.lifeboat(&["prune", "--dry-run"]).ok();
    assert!(
        again.stdout.contains("data: 0 packs to delete"),
        "prune left nothing unneeded: {}",
        again.stdout
    );
    assert_verifies_clean(&env, "prune");
    all_restore(&env, "dev", &seen, "pruned");

    // Unpinned, the rules apply to it again.
    env.lifeboat(&["unpin", &pinned[..8]]).ok();
    env.lifeboat(&["prune"]).ok();
    assert_eq!(ids(&env, "dev"), made[2..].to_vec());
    assert_verifies_clean(&env, "second prune");
    assert_eq!(leftover_packs(&env), 0);
}

#[test]
fn kill_9_at_every_point_of_backup_and_prune_leaves_a_valid_repository() {
    let env = Env::new();
    env.lifeboat(&["init"]).ok();
    let mut seen = HashMap::new();
    let mut n = 0;
    for _ in 0..2 {
        change(&env, n);
        n += 1;
        backup(&env, "dev", &mut seen);
    }
    let crash_points = [
        "pack:1",
        "backup:before-index",
        "backup:before-record",
        "backup:after-record",
        "prune:after-forget",
        "prune:after-index",
        "prune:after-index-delete",
        "prune:pack-delete:1",
    ];
    for point in crash_points {
        change(&env, n);
        n += 1;
        let fingerprint = env.fingerprint("hyper_db");
        let before = ids(&env, "dev");
        let args: &[&str] = if point.starts_with("prune") {
            // Something to prune: one more backup than keep_last = 3.
            backup(&env, "dev", &mut seen);
            change(&env, n);
            n += 1;
            backup(&env, "dev", &mut seen);
            &["prune"]
        } else {
            &["backup", "dev"]
        };
        env.lifeboat_killed_at(args, point);
        let after = ids(&env, "dev");
        if point == "backup:after-record" {
            // The record was written: a complete backup, listed and restorable.
            assert_eq!(after.len(), before.len() + 1, "{point}");
            seen.insert(after.last().unwrap().clone(), fingerprint);
        } else if point.starts_with("backup") {
            assert_eq!(after, before, "{point}: nothing half-written is listed");
        }
        assert_verifies_clean(&env, point);
        all_restore(&env, "dev", &seen, &point.replace([':', '-'], "_"));
        if point == "pack:1" {
            // The crashed backup's pack is minutes old: within the default
            // grace period (its writer might only be slow), prune keeps it.
            let left = leftover_packs(&env);
            assert!(left > 0, "the crash left a pack no index lists");
            let r = env.lifeboat(&["prune"]).ok();
            assert!(
                r.stdout.contains("younger than the grace period"),
                "{}",
                r.stdout
            );
            assert_eq!(leftover_packs(&env), left);
        }
        // The next backup and prune work and clean up what the crash left.
        backup(&env, "dev", &mut seen);
        env.lifeboat(&["prune", "--grace", "0s"]).ok();
        assert_eq!(leftover_packs(&env), 0, "{point}: prune left leftovers");
        assert_verifies_clean(&env, &format!("prune after {point}"));
    }
    all_restore(&env, "dev", &seen, "end");
}

fn pack_bytes(env: &Env) -> u64 {
    env.packs()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn prune_rewrites_partly_needed_packs_and_a_crash_while_it_does_loses_nothing() {
    let env = Env::new();
    let target = env.target_section("dev", "hyper_db", "");
    env.write_repo_config("", &target.replace("keep_last = 3", "keep_last = 1"));
    env.lifeboat(&["init"]).ok();
    let mut seen = HashMap::new();
    // Each round adds a large table that every later backup keeps: the pack
    // of the backup that added it is then partly needed (that table) and
    // partly not (the dump's header and its own churned rows).
    let grow = |n: u32| {
        env.cluster
            .psql(
                "hyper_db",
                &format!(
                    "CREATE TABLE aa_{n} AS SELECT g, md5(g::text || 'aa{n}') AS pad FROM generate_series(1, 200000) g;"
                ),
            )
            .unwrap();
        change(&env, n);
    };
    grow(0);
    backup(&env, "dev", &mut seen);
    for (n, point) in ["prune:repack:1", "prune:after-index", "prune:pack-delete:1"]
        .into_iter()
        .enumerate()
    {
        grow(n as u32 + 1);
        backup(&env, "dev", &mut seen);
        let bytes_before = pack_bytes(&env);
        let dry = env
            .lifeboat(&["prune", "--dry-run", "--max-unused", "0"])
            .ok();
        // One pack or two: a backup's blobs reach its packs in the order the
        // compressing workers finish, so the forgotten backup's own chunks
        // may straddle a pack boundary.
        assert!(
            count_before(&dry.stdout, " to rewrite without what no backup needs") >= 1,
            "{point}: {}",
            dry.stdout
        );
        env.lifeboat_killed_at(&["prune", "--max-unused", "0"], point);
        assert_verifies_clean(&env, point);
        all_restore(&env, "dev", &seen, &point.replace([':', '-'], "_"));

        let r = env
            .lifeboat(&["prune", "--max-unused", "0", "--grace", "0s"])
            .ok();
        assert_eq!(leftover_packs(&env), 0, "{point}: {}", r.stdout);
        assert_verifies_clean(&env, &format!("prune after {point}"));
        all_restore(&env, "dev", &seen, &format!("after_{n}"));
        assert!(
            pack_bytes(&env) < bytes_before,
            "{point}: what the forgotten backup alone needed is freed"
        );
        let again = env
            .lifeboat(&["prune", "--dry-run", "--max-unused", "0"])
            .ok();
        assert!(
            again
                .stdout
                .contains("data: 0 packs to delete (0 B), 0 to rewrite"),
            "{point}: {}",
            again.stdout
        );
    }
    // A clean run says what it rewrote.
    grow(9);
    backup(&env, "dev", &mut seen);
    let r = env.lifeboat(&["prune", "--max-unused", "0"]).ok();
    let rewrote = r.stdout.find("rewrote ").map(|at| &r.stdout[at..]);
    assert!(
        rewrote.is_some_and(|t| count_before(t, " packs") >= 1),
        "{}",
        r.stdout
    );
    assert_verifies_clean(&env, "a clean rewrite");
    all_restore(&env, "dev", &seen, "end");
}

#[test]
fn concurrent_backups_and_prunes_lose_nothing() {
    let env = Env::new();
    env.add_database_target(
        "other",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    env.lifeboat(&["init"]).ok();
    let mut seen = HashMap::new();
    for n in 0..4 {
        change(&env, n);
        backup(&env, "dev", &mut seen);
    }

    // A backup in progress: prune refuses and changes nothing; the backup lands.
    change(&env, 10);
    let fingerprint = env.fingerprint("hyper_db");
    let slow = paused(&env, &["backup", "dev"], "backup:before-record");
    env.lifeboat(&["prune"])
        .fails(1, "the repository is in use");
    slow.resume().ok();
    seen.insert(ids(&env, "dev").last().unwrap().clone(), fingerprint);
    assert_eq!(
        ids(&env, "dev").len(),
        5,
        "prune did nothing while the backup ran"
    );

    // A prune in progress: a backup waits for it, then lands; a second prune refuses.
    let prune = paused(&env, &["prune"], "prune:locked");
    env.lifeboat(&["prune"])
        .fails(1, "another prune is running");
    change(&env, 11);
    // The backup waits for the prune; the prune goes on once it does.
    let mut backup = spawn(&env, &["backup", "dev"], &[]);
    let mut stderr = std::io::BufReader::new(backup.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("waiting for") {
        let n = std::io::BufRead::read_line(&mut stderr, &mut said).unwrap();
        assert!(n > 0, "the backup did not wait for the prune: {said}");
    }
    prune.resume().ok();
    std::io::Read::read_to_string(&mut stderr, &mut said).unwrap();
    assert!(backup.wait().unwrap().success(), "{said}");
    seen.insert(
        ids(&env, "dev").last().unwrap().clone(),
        env.fingerprint("hyper_db"),
    );
    assert_verifies_clean(&env, "concurrent prune and backup");
    all_restore(&env, "dev", &seen, "concurrent");

    // Two backups of different targets at once.
    let a = spawn(&env, &["backup", "dev"], &[]);
    let b = spawn(&env, &["backup", "other"], &[]);
    finish(a).ok();
    finish(b).ok();
    assert_eq!(ids(&env, "other").len(), 1);
    seen.insert(
        ids(&env, "dev").last().unwrap().clone(),
        env.fingerprint("hyper_db"),
    );
    assert_verifies_clean(&env, "two backups at once");
    all_restore(&env, "dev", &seen, "parallel");
    env.lifeboat(&["restore", "other", "--into", &env.cluster.uri("other_copy")])
        .ok();
    assert_eq!(env.fingerprint("other_copy"), env.fingerprint("other"));
}

/// The index file each backup session wrote, oldest first.
fn index_files(env: &Env) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(env.repo_path().join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    files
}

#[test]
fn verify_names_each_kind_of_damage_and_other_backups_still_restore() {
    let env = initialised_with_other_target();
    let dev_packs = env.packs();
    env.lifeboat(&["backup", "other"]).ok();
    let dev_id = ids(&env, "dev")[0][..8].to_string();
    let other_fp = env.fingerprint("other");
    assert_verifies_clean(&env, "two backups");
    let pack = dev_packs[0].clone();
    let pack_name = pack.file_name().unwrap().to_str().unwrap().to_string();
    let original = std::fs::read(&pack).unwrap();
    let other_restores = |tag: &str| {
        let db = format!("other_{tag}");
        env.lifeboat(&["restore", "other", "--into", &env.cluster.uri(&db)])
            .ok();
        assert_eq!(env.fingerprint(&db), other_fp, "{tag}");
    };
    #[track_caller]
    fn damaged(env: &Env, read_data: bool, object: &str, problem: &str, backup: &str) {
        let args: &[&str] = if read_data {
            &["verify", "--read-data"]
        } else {
            &["verify"]
        };
        let r = env.lifeboat(args).fails(1, "verify found");
        let line = r
            .stdout
            .lines()
            .find(|l| l.contains("PROBLEM") && l.contains(object))
            .unwrap_or_else(|| panic!("no problem names {object}:\n{}", r.stdout));
        assert!(line.contains(problem), "{line}");
        assert!(line.contains(backup), "{line}");
        assert!(
            r.stdout.contains("target other: newest good backup"),
            "{}",
            r.stdout
        );
    }

    // A missing pack.
    std::fs::remove_file(&pack).unwrap();
    damaged(&env, false, &pack_name, "missing", &dev_id);
    other_restores("missing");
    std::fs::write(&pack, &original).unwrap();

    // A truncated pack: the size says so without reading.
    std::fs::write(&pack, &original[..original.len() - 100]).unwrap();
    damaged(&env, false, &pack_name, "truncated", &dev_id);
    other_restores("truncated");

    // A flipped byte: only reading finds it.
    let mut flipped = original.clone();
    flipped[original.len() / 2] ^= 1;
    std::fs::write(&pack, &flipped).unwrap();
    env.lifeboat(&["verify"]).ok();
    damaged(&env, true, &pack_name, "altered", &dev_id);
    other_restores("flipped");
    std::fs::write(&pack, &original).unwrap();
    assert_verifies_clean(&env, "repair of the pack");

    // A damaged index file, then a missing one: verify says which pack lost
    // its index, restores of other backups work, and prune re-indexes.
    let dev_index = index_files(&env)[0].clone();
    let index_bytes = std::fs::read(&dev_index).unwrap();
    let mut bad = index_bytes.clone();
    bad[10] ^= 1;
    std::fs::write(&dev_index, &bad).unwrap();
    let index_name = dev_index.file_name().unwrap().to_str().unwrap().to_string();
    damaged(&env, false, &pack_name, "no index lists it", &dev_id);
    let r = env.lifeboat(&["verify"]).fails(1, "verify found");
    assert!(r.stdout.contains(&index_name), "{}", r.stdout);
    other_restores("bad_index");
    std::fs::remove_file(&dev_index).unwrap();
    damaged(&env, false, &pack_name, "no index lists it", &dev_id);
    other_restores("no_index");
    env.lifeboat(&["restore", "dev", "--into", &env.cluster.uri("dev_no_index")])
        .fails(1, "not in any index");
    let pruned = env.lifeboat(&["prune"]).ok();
    assert!(
        pruned.stdout.contains("the new index lists them again"),
        "{}",
        pruned.stdout
    );
    assert_verifies_clean(&env, "prune re-indexed");
    env.lifeboat(&[
        "restore",
        "dev",
        "--into",
        &env.cluster.uri("dev_reindexed"),
    ])
    .ok();
    assert_eq!(
        env.fingerprint("dev_reindexed"),
        env.fingerprint("hyper_db")
    );

    // A damaged backup record: named by verify and list; prune changes nothing
    // (it cannot know what that backup needs); the other target still restores.
    let record = env
        .repo_path()
        .join("backups")
        .join(ids(&env, "dev")[0].clone());
    let mut rec = std::fs::read(&record).unwrap();
    rec[20] ^= 1;
    std::fs::write(&record, &rec).unwrap();
    let r = env.lifeboat(&["verify"]).fails(1, "verify found");
    assert!(
        r.stdout.contains(&format!("PROBLEM backups/{}", &dev_id)),
        "{}",
        r.stdout
    );
    let l = env.lifeboat(&["list"]).ok();
    assert!(l.stderr.contains("cannot be read"), "{}", l.stderr);
    assert!(l.stdout.contains("other"), "{}", l.stdout);
    let packs = env.packs().len();
    env.lifeboat(&["prune", "--grace", "0s"])
        .fails(1, "prune would not know which data those backups need");
    assert_eq!(env.packs().len(), packs);
    other_restores("bad_record");
}
