//! Crash and pause points for the crash and concurrency tests. In debug builds
//! only (the tests run the debug binary): with `LIFEBOAT_CRASH_AT=NAME` the
//! process sends itself SIGKILL when it reaches point NAME, which is a kill -9
//! at an exact place; with `LIFEBOAT_PAUSE_AT=NAME:SECONDS` it sleeps there.
//! With `LIFEBOAT_FAIL_AT=NAME[,NAME...]`, `fails(NAME)` is true: the caller
//! then acts as if the system had refused what it was about to do.
//! Release builds compile `hit` to nothing and `fails` to false.
//!
//! Points: `pack:N` (after the N-th pack of a session is durable),
//! `backup:before-index`, `backup:before-record`, `backup:after-record`,
//! `backup:locked`, `prune:locked`, `prune:after-forget`, `prune:after-index`,
//! `prune:after-index-delete`, `prune:pack-delete:N` (after N packs deleted),
//! `copy:before-index`, `copy:before-records`, `basebackup:before-stop`
//! (the files copied, `pg_backup_stop` not yet called). A pause says so on
//! stderr (`failpoint: paused at NAME`), and ends early once the file
//! `LIFEBOAT_RESUME_FILE` names exists. Failures:
//! `restore:o-direct-open` and `restore:o-direct-write` (`EINVAL`, as from a
//! file system without `O_DIRECT`); `encode:flip-plaintext` (every blob
//! stored with its first byte flipped after its id was taken).

pub fn hit(name: &str) {
    #[cfg(debug_assertions)]
    {
        if std::env::var("LIFEBOAT_CRASH_AT").is_ok_and(|v| v == name) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
        }
        if let Ok(v) = std::env::var("LIFEBOAT_PAUSE_AT")
            && let Some((point, secs)) = v.rsplit_once(':')
            && point == name
            && let Ok(secs) = secs.parse::<f64>()
        {
            // Tests wait for this line before they act on the pause, and
            // may end it early by creating LIFEBOAT_RESUME_FILE.
            eprintln!("failpoint: paused at {name} for {secs} s");
            let until = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
            let resume = std::env::var_os("LIFEBOAT_RESUME_FILE");
            while std::time::Instant::now() < until
                && !resume
                    .as_ref()
                    .is_some_and(|f| std::path::Path::new(f).exists())
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

pub fn fails(name: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        std::env::var("LIFEBOAT_FAIL_AT").is_ok_and(|v| v.split(',').any(|p| p == name))
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = name;
        false
    }
}
