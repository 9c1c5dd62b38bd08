//! Where S3 credentials and the region come from: the way AWS's own tools take
//! them, so a host set up for the AWS CLI needs nothing more.
//!
//! Order for credentials: a profile named in lifeboat's configuration (from the
//! shared credentials file, then the config file); else the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`); else the
//! profile `AWS_PROFILE` or `default` from the files. The files are
//! `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`) and
//! `AWS_CONFIG_FILE` (default `~/.aws/config`, sections `[profile NAME]`). A
//! repository may name its own credentials file, which then replaces the
//! shared one (and the environment's keys).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::sigv4::Credentials;

/// Where to look; the environment is a parameter so tests need not change the
/// process's own.
pub struct Sources<'a> {
    /// The profile lifeboat's configuration names for the repository, if any.
    pub profile: Option<&'a str>,
    /// The repository's own credentials file, if it names one.
    pub credentials_file: Option<&'a Path>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Sources<'_> {
    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }

    fn home(&self) -> Option<PathBuf> {
        self.var("HOME").map(PathBuf::from)
    }

    fn credentials_file(&self) -> Option<PathBuf> {
        if let Some(p) = self.credentials_file {
            return Some(p.to_path_buf());
        }
        self.var("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| self.home().map(|h| h.join(".aws/credentials")))
    }

    fn config_file(&self) -> Option<PathBuf> {
        self.var("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| self.home().map(|h| h.join(".aws/config")))
    }

    fn profile_name(&self) -> String {
        self.profile
            .map(str::to_string)
            .or_else(|| self.var("AWS_PROFILE"))
            .unwrap_or_else(|| "default".into())
    }

    /// The settings of `profile`: the credentials file's section merged over the
    /// config file's (as the AWS CLI does).
    fn profile_settings(&self, profile: &str) -> Result<BTreeMap<String, String>, String> {
        let mut merged = BTreeMap::new();
        if let Some(path) = self.config_file() {
            let section = if profile == "default" {
                "default".to_string()
            } else {
                format!("profile {profile}")
            };
            merged.extend(read_section(&path, &section)?);
        }
        if let Some(path) = self.credentials_file() {
            merged.extend(read_section(&path, profile)?);
        }
        Ok(merged)
    }

    /// The credentials to sign with, or a message saying where they were looked for.
    pub fn credentials(&self) -> Result<Credentials, String> {
        if self.profile.is_none()
            && self.credentials_file.is_none()
            && let (Some(id), Some(secret)) = (
                self.var("AWS_ACCESS_KEY_ID"),
                self.var("AWS_SECRET_ACCESS_KEY"),
            )
        {
            return Ok(Credentials {
                access_key_id: id,
                secret_access_key: secret,
                session_token: self.var("AWS_SESSION_TOKEN"),
            });
        }
        let profile = self.profile_name();
        let settings = self.profile_settings(&profile)?;
        match (
            settings.get("aws_access_key_id"),
            settings.get("aws_secret_access_key"),
        ) {
            (Some(id), Some(secret)) => Ok(Credentials {
                access_key_id: id.clone(),
                secret_access_key: secret.clone(),
                session_token: settings.get("aws_session_token").cloned(),
            }),
            _ => Err(format!(
                "no S3 credentials: profile {profile:?} has no aws_access_key_id/aws_secret_access_key in {} or {}; hint: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or `profile` in the repository's section (archive_command runs as the postgres user: its HOME is where ~/.aws is looked for)",
                show(self.credentials_file()),
                show(self.config_file()),
            )),
        }
    }

    /// The region: `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's `region`,
    /// else us-east-1. (A region in lifeboat's configuration wins over all of
    /// these; the caller checks it first.)
    pub fn region(&self) -> String {
        self.var("AWS_REGION")
            .or_else(|| self.var("AWS_DEFAULT_REGION"))
            .or_else(|| {
                self.profile_settings(&self.profile_name())
                    .ok()
                    .and_then(|s| s.get("region").cloned())
            })
            .unwrap_or_else(|| "us-east-1".into())
    }
}

fn show(path: Option<PathBuf>) -> String {
    path.map_or_else(|| "(no HOME)".into(), |p| p.display().to_string())
}

/// The `key = value` lines of `[section]` of an INI file; a missing file is empty.
fn read_section(path: &Path, section: &str) -> Result<BTreeMap<String, String>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    Ok(parse_section(&text, section))
}

fn parse_section(text: &str, section: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup<'a>(env: &'a HashMap<&str, String>) -> impl Fn(&str) -> Option<String> + 'a {
        |k: &str| env.get(k).cloned()
    }

    fn files(dir: &Path) -> HashMap<&'static str, String> {
        std::fs::write(
            dir.join("credentials"),
            "[default]\naws_access_key_id = DEFAULTID\naws_secret_access_key = defaultsecret\n\n[offsite]\naws_access_key_id=OFFID\naws_secret_access_key=offsecret\naws_session_token = tok\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("config"),
            "[default]\nregion = eu-west-1\n[profile offsite]\nregion = us-west-2\n[profile cfgonly]\naws_access_key_id = CFGID\naws_secret_access_key = cfgsecret\n",
        )
        .unwrap();
        HashMap::from([
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.join("credentials").display().to_string(),
            ),
            ("AWS_CONFIG_FILE", dir.join("config").display().to_string()),
        ])
    }

    #[test]
    fn environment_then_default_profile() {
        let dir = tempfile::tempdir().unwrap();
        let mut env = files(dir.path());
        {
            let f = lookup(&env);
            let s = Sources {
                profile: None,
                credentials_file: None,
                env: &f,
            };
            let c = s.credentials().unwrap();
            assert_eq!(c.access_key_id, "DEFAULTID");
            assert_eq!(s.region(), "eu-west-1");
        }
        env.insert("AWS_ACCESS_KEY_ID", "ENVID".into());
        env.insert("AWS_SECRET_ACCESS_KEY", "envsecret".into());
        env.insert("AWS_REGION", "ap-south-1".into());
        let f = lookup(&env);
        let s = Sources {
            profile: None,
            credentials_file: None,
            env: &f,
        };
        let c = s.credentials().unwrap();
        assert_eq!((c.access_key_id.as_str(), c.session_token), ("ENVID", None));
        assert_eq!(s.region(), "ap-south-1");
    }

    #[test]
    fn a_configured_profile_wins_over_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let mut env = files(dir.path());
        env.insert("AWS_ACCESS_KEY_ID", "ENVID".into());
        env.insert("AWS_SECRET_ACCESS_KEY", "envsecret".into());
        let f = lookup(&env);
        let s = Sources {
            profile: Some("offsite"),
            credentials_file: None,
            env: &f,
        };
        let c = s.credentials().unwrap();
        assert_eq!(c.access_key_id, "OFFID");
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        assert_eq!(s.region(), "us-west-2");
        let s = Sources {
            profile: Some("cfgonly"),
            credentials_file: None,
            env: &f,
        };
        assert_eq!(s.credentials().unwrap().access_key_id, "CFGID");
    }

    #[test]
    fn a_repository_credentials_file_wins_over_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let mut env = files(dir.path());
        env.insert("AWS_ACCESS_KEY_ID", "ENVID".into());
        env.insert("AWS_SECRET_ACCESS_KEY", "envsecret".into());
        let own = dir.path().join("own");
        std::fs::write(
            &own,
            "[default]\naws_access_key_id = OWNID\naws_secret_access_key = ownsecret\n",
        )
        .unwrap();
        let f = lookup(&env);
        let s = Sources {
            profile: None,
            credentials_file: Some(&own),
            env: &f,
        };
        assert_eq!(s.credentials().unwrap().access_key_id, "OWNID");
    }

    #[test]
    fn missing_credentials_say_where_they_were_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let env = files(dir.path());
        let f = lookup(&env);
        let s = Sources {
            profile: Some("nosuch"),
            credentials_file: None,
            env: &f,
        };
        let e = s.credentials().unwrap_err();
        assert!(e.contains("\"nosuch\"") && e.contains("hint:"), "{e}");
    }
}
