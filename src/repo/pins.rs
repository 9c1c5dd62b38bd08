//! Pins: `pins/<backup-id>` keeps a backup whatever its target's retention says
//! (FORMAT.md, "Pins").

use std::collections::HashMap;

use chrono::Utc;

use super::{Damage, Repository, Result};
use crate::codec::Id;
use crate::format::{self, PinFile};
use crate::storage::PutMode;

/// The repository's pins; a pin object that cannot be read still pins the
/// backup its name gives (keeping too much is the safe side).
#[derive(Default)]
pub struct Pins {
    pub pins: HashMap<Id, Option<PinFile>>,
    pub damaged: Vec<Damage>,
}

impl Pins {
    pub fn is_pinned(&self, id: &Id) -> bool {
        self.pins.contains_key(id)
    }
}

impl Repository {
    pub fn pin(&self, backup: &Id, reason: Option<String>) -> Result<()> {
        let pin = PinFile {
            version: format::FORMAT_VERSION,
            backup: *backup,
            created: Utc::now(),
            host: super::lock::hostname(),
            user: std::env::var("USER").unwrap_or_default(),
            reason,
        };
        let sealed = self.meta.seal("pin", &super::to_json(&pin));
        self.storage
            .put(&format::pin_path(backup), &sealed, PutMode::Overwrite)?;
        Ok(())
    }

    /// Returns whether the backup was pinned.
    pub fn unpin(&self, backup: &Id) -> Result<bool> {
        let path = format::pin_path(backup);
        match self.storage.head(&path) {
            Ok(_) => {
                self.storage.delete(&path)?;
                Ok(true)
            }
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub fn list_pins(&self) -> Result<Pins> {
        let mut out = Pins::default();
        for obj in self.storage.list(format::PINS_DIR)? {
            let name = &obj.path[format::PINS_DIR.len()..];
            let Ok(id) = name.parse::<Id>() else {
                out.damaged.push(Damage {
                    object: obj.path.clone(),
                    problem: "not named after a backup id".into(),
                });
                continue;
            };
            let pin = self
                .storage
                .get(&obj.path)
                .map_err(super::RepoError::from)
                .and_then(|b| self.unseal(&obj.path, "pin", &b))
                .and_then(|json| {
                    serde_json::from_slice::<PinFile>(&json)
                        .map_err(|e| self.corrupt(&obj.path, e.to_string()))
                });
            match pin {
                Ok(p) if p.backup == id => {
                    out.pins.insert(id, Some(p));
                }
                Ok(_) => {
                    out.damaged.push(Damage {
                        object: obj.path.clone(),
                        problem: "names another backup than its file name".into(),
                    });
                    out.pins.insert(id, None);
                }
                Err(e) => {
                    out.damaged.push(Damage::from_error(&obj.path, &e));
                    out.pins.insert(id, None);
                }
            }
        }
        Ok(out)
    }
}
