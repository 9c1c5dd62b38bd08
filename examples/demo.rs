//! The README's first command: back up and restore the plan's sample database
//! with the real lifeboat binary, then run the plan's restore checks.
//!
//! Run it with `bash scripts/demo.sh` (which installs what is missing and builds).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use lifeboat::testkit::{self, TestCluster};

fn main() -> Result<()> {
    let bin = lifeboat_binary()?;
    println!("== starting a throwaway PostgreSQL cluster");
    let cluster = TestCluster::start()?;
    cluster.createdb("hyper_db")?;
    cluster.psql("hyper_db", testkit::sample_hyper_db_sql())?;
    let counts = cluster.psql(
        "hyper_db",
        "SELECT (SELECT count(*) FROM users) || ' users, ' || (SELECT count(*) FROM tasks) || ' tasks'",
    )?;
    println!(
        "   PostgreSQL on port {} (socket {}), database hyper_db: {}",
        cluster.port(),
        cluster.socket_dir().display(),
        counts.trim()
    );

    let work = testkit::temp_dir_for_postgres()?;
    let config = work.path().join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[repository.main]\nurl = \"file://{}/repo\"\n\n[target.dev]\ndatabase = \"{}\"\nmethod = \"logical\"\nrepository = \"main\"\nretention = {{ keep_last = 3 }}\n",
            work.path().display(),
            cluster.uri("hyper_db")
        ),
    )?;
    println!("\n== lifeboat.toml\n{}", std::fs::read_to_string(&config)?);

    let run = |args: &[&str]| -> Result<()> {
        println!("$ lifeboat {}", args.join(" "));
        let status = Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .args(args)
            .env(
                "LIFEBOAT_PASSPHRASE",
                "demo passphrase, keep it somewhere safe",
            )
            .status()
            .with_context(|| format!("running {}", bin.display()))?;
        if !status.success() {
            bail!("lifeboat {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    run(&["init"])?;
    run(&["backup", "dev"])?;
    run(&["list"])?;
    let into = cluster.uri("hyper_db_restored");
    let clock = Instant::now();
    run(&["restore", "dev", "--into", &into])?;
    let rto = clock.elapsed();

    println!("\n== the plan's restore checks, on hyper_db_restored");
    let q = |db: &str, sql: &str| cluster.psql(db, sql).map(|s| s.trim().to_string());
    let hash = "SELECT password_hash FROM users WHERE name = 'John Doe'";
    let (before, after) = (q("hyper_db", hash)?, q("hyper_db_restored", hash)?);
    check(
        "John Doe's password hash is intact",
        !after.is_empty() && before == after,
    )?;
    let tasks = "SELECT count(*) FROM tasks WHERE user_id = 'user_001'";
    let (before, after) = (q("hyper_db", tasks)?, q("hyper_db_restored", tasks)?);
    check(
        &format!("user_001 has its {after} tasks"),
        before == after && after != "0",
    )?;
    let plan = q(
        "hyper_db_restored",
        "ANALYZE; SET enable_seqscan = off; EXPLAIN ANALYZE SELECT * FROM tasks WHERE user_id = 'user_001'",
    )?;
    check(
        "the index on tasks(user_id) is used",
        plan.contains("tasks_user_id_idx"),
    )?;
    println!(
        "   restore took {:.1} s (RTO for this database)",
        rto.as_secs_f64()
    );
    println!("\ndone: the backup was restored and checked. The cluster and files are removed now.");
    Ok(())
}

fn check(what: &str, ok: bool) -> Result<()> {
    println!("   [{}] {what}", if ok { "ok" } else { "FAILED" });
    if !ok {
        bail!("check failed: {what}");
    }
    Ok(())
}

/// target/<profile>/lifeboat next to target/<profile>/examples/demo, or $LIFEBOAT_BIN.
fn lifeboat_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LIFEBOAT_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|profile| profile.join("lifeboat"))
        .context("cannot locate the lifeboat binary")?;
    if !bin.exists() {
        bail!(
            "{} not found; build it first: cargo build --release",
            bin.display()
        );
    }
    Ok(bin)
}
