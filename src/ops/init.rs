//! `lifeboat init` and `lifeboat key generate`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};

use super::{Context, usage};
use crate::config::EncryptionMode;
use crate::repo::{InitKeys, Repository};

/// Create a file readable only by its owner; never overwrite.
pub fn write_secret_file(path: &Path, contents: &str) -> Result<()> {
    let mut f = create_secret_file(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

fn create_secret_file(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => usage(format!(
                "{} already exists; hint: lifeboat never overwrites a key file: move it away or choose another path",
                path.display()
            )),
            _ => anyhow::anyhow!("cannot create {}: {e}", path.display()),
        })
}

/// Write a new age identity file; returns the public recipient.
pub fn key_generate(output: &Path) -> Result<String> {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let text = format!(
        "# created: {}\n# public key: {recipient}\n{}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        identity.to_string().expose_secret()
    );
    write_secret_file(output, &text)?;
    Ok(recipient)
}

/// Initialise one repository; returns the lines to tell the user.
pub fn init_repository(ctx: &Context, name: &str) -> Result<Vec<String>> {
    let rc = ctx.config.repository(name)?;
    let storage: Arc<dyn crate::storage::Storage> =
        Arc::from(crate::storage::open(&rc.url, &rc.s3).map_err(|e| usage(format!("{e:#}")))?);
    let level = rc
        .compression_level
        .unwrap_or(crate::format::DEFAULT_COMPRESSION_LEVEL);
    let mut lines = Vec::new();
    if let Some(from) = &rc.keys_from {
        return init_sharing(ctx, name, from, storage);
    }
    match rc.encryption() {
        EncryptionMode::Passphrase => {
            let pass = rc.passphrase()?.ok_or_else(|| {
                usage(format!(
                    "repository {name:?} needs a passphrase; hint: set LIFEBOAT_PASSPHRASE, or passphrase_file in [repository.{name}], or recipients for public-key mode"
                ))
            })?;
            if pass.chars().count() < 12 {
                bail!(usage(
                    "the passphrase is shorter than 12 characters; hint: use a long random passphrase (e.g. `openssl rand -base64 24`)"
                ));
            }
            let outcome = Repository::init(storage, InitKeys::Passphrase(pass.clone()), level)
                .with_context(|| format!("repository {name:?}"))?;
            if let Some(cache) = super::unlock_cache(rc) {
                outcome.remember(&cache, &pass);
            }
            lines.push(format!(
                "created repository {name:?} at {} (passphrase mode)",
                rc.url
            ));
            lines.push(pin_line(name, &outcome.repo, rc.fingerprint.as_deref()));
            lines.push("keep the passphrase safe and apart from the backups: without it no backup can be restored.".into());
        }
        EncryptionMode::Recipients => {
            let dedup_path: PathBuf = rc.dedup_key_file.clone().unwrap_or_else(|| {
                ctx.config
                    .path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(format!("{name}.dedup-key"))
            });
            if dedup_path.exists() {
                bail!(usage(format!(
                    "{} already exists; hint: a dedup key belongs to one repository: move the old one away",
                    dedup_path.display()
                )));
            }
            let outcome =
                Repository::init(storage, InitKeys::Recipients(rc.recipients.clone()), level)
                    .with_context(|| format!("repository {name:?}"))?;
            let key = outcome
                .dedup_key
                .expect("recipients mode yields a dedup key");
            write_secret_file(&dedup_path, &format!("{}\n", key.to_base64()))?;
            lines.push(format!(
                "created repository {name:?} at {} (public-key mode)",
                rc.url
            ));
            lines.push(pin_line(name, &outcome.repo, rc.fingerprint.as_deref()));
            lines.push(format!(
                "wrote the dedup key to {} (mode 0600): backup hosts need it (dedup_key_file or LIFEBOAT_DEDUP_KEY); it lets them write backups, not read them.",
                dedup_path.display()
            ));
            lines.push("keep the age identity of the recipients safe and off the backup hosts: only it can read backups, and without it no backup can be restored.".into());
        }
    }
    Ok(lines)
}

/// What to tell the user about the new repository's fingerprint, given the
/// one the configuration pins (if any).
fn pin_line(name: &str, repo: &Repository, pinned: Option<&str>) -> String {
    let fp = repo.fingerprint();
    match pinned {
        None => format!(
            "its fingerprint is {fp}: put `fingerprint = \"{fp}\"` in [repository.{name}] on every host that uses it, and it refuses a repository whose keys someone swapped for their own."
        ),
        Some(p) if p == fp => format!("its fingerprint is {fp}, the one [repository.{name}] pins."),
        Some(p) => format!(
            "warning: its fingerprint is {fp}, but [repository.{name}] pins {p} (the keys of an earlier repository?): every command refuses this repository until you put `fingerprint = \"{fp}\"` there, here and on every host that uses it."
        ),
    }
}

/// A repository with the keys of `from` (already initialised): backups copy
/// between them byte for byte, and each stands in for the other when a pack
/// is damaged or missing.
fn init_sharing(
    ctx: &Context,
    name: &str,
    from: &str,
    storage: Arc<dyn crate::storage::Storage>,
) -> Result<Vec<String>> {
    let rc = ctx.config.repository(name)?;
    let source = ctx
        .open_repository(from)
        .with_context(|| format!("keys_from of repository {name:?}"))?;
    let keys = match rc.encryption() {
        EncryptionMode::Passphrase => InitKeys::Passphrase(rc.passphrase()?.ok_or_else(|| {
            usage(format!(
                "repository {name:?} needs a passphrase to wrap the shared keys with; hint: set {} or passphrase_file (it may be the same passphrase as {from:?})",
                rc.passphrase_env_name()
            ))
        })?),
        EncryptionMode::Recipients => InitKeys::Recipients(rc.recipients.clone()),
    };
    let pass = match &keys {
        InitKeys::Passphrase(p) => Some(p.clone()),
        InitKeys::Recipients(_) => None,
    };
    let outcome = source
        .init_sharing(storage, keys)
        .with_context(|| format!("repository {name:?}"))?;
    if let (Some(cache), Some(pass)) = (super::unlock_cache(rc), pass) {
        outcome.remember(&cache, &pass);
    }
    let mut lines = vec![
        format!(
            "created repository {name:?} at {} with the keys of {from:?}: `lifeboat copy` copies backups to it unchanged",
            rc.url
        ),
        pin_line(name, &outcome.repo, rc.fingerprint.as_deref()),
    ];
    lines.push(match rc.encryption() {
        EncryptionMode::Passphrase => format!(
            "its passphrase unlocks the same keys as {from:?}'s: anyone with either passphrase can read both repositories."
        ),
        EncryptionMode::Recipients => format!(
            "the dedup key of {from:?} is also this repository's: backup hosts use the same dedup_key_file for both."
        ),
    });
    Ok(lines)
}
