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
        let objs = self.storage.list(format::PINS_DIR)?;
        let read = super::parallel_map(&objs, super::METADATA_READERS, |obj| {
            self.storage
                .get(&obj.path)
                .map_err(super::RepoError::from)
                .and_then(|b| self.unseal(&obj.path, "pin", &b))
                .and_then(|json| {
                    serde_json::from_slice::<PinFile>(&json)
                        .map_err(|e| self.corrupt(&obj.path, e.to_string()))
                })
        });
        for (obj, pin) in objs.into_iter().zip(read) {
            let name = &obj.path[format::PINS_DIR.len()..];
            let Ok(id) = name.parse::<Id>() else {
                out.damaged.push(Damage {
                    object: obj.path.clone(),
                    problem: "not named after a backup id".into(),
                });
                continue;
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::test_repo;
    use crate::storage::Storage;

    fn id(n: u8) -> Id {
        format!("{n:02x}").repeat(32).parse().unwrap()
    }

    /// Many pins read at once: each intact one is listed with its file; a
    /// damaged, moved or misnamed one is reported, and a damaged or moved
    /// one still pins the backup its name gives.
    #[test]
    fn pins_are_listed_and_damage_keeps_the_backup_pinned() {
        let (storage, repo) = test_repo();
        for n in 1..=20 {
            repo.pin(&id(n), Some(format!("reason {n}"))).unwrap();
        }
        let altered = format::pin_path(&id(3));
        let mut bytes = storage.get(&altered).unwrap();
        bytes[20] ^= 1;
        storage.put(&altered, &bytes, PutMode::Overwrite).unwrap();
        let moved = storage.get(&format::pin_path(&id(4))).unwrap();
        storage
            .put(&format::pin_path(&id(21)), &moved, PutMode::Create)
            .unwrap();
        storage
            .put(
                &format!("{}not-an-id", format::PINS_DIR),
                b"x",
                PutMode::Create,
            )
            .unwrap();

        let pins = repo.list_pins().unwrap();
        assert_eq!(pins.pins.len(), 21);
        for n in (1..=20).filter(|&n| n != 3) {
            let pin = pins.pins[&id(n)].as_ref().expect("an intact pin");
            assert_eq!(pin.reason.as_deref(), Some(format!("reason {n}").as_str()));
        }
        assert!(pins.pins[&id(3)].is_none() && pins.is_pinned(&id(3)));
        assert!(pins.pins[&id(21)].is_none() && pins.is_pinned(&id(21)));
        let mut damaged: Vec<&str> = pins.damaged.iter().map(|d| d.object.as_str()).collect();
        damaged.sort_unstable();
        let mut expected = vec![
            altered.clone(),
            format::pin_path(&id(21)),
            format!("{}not-an-id", format::PINS_DIR),
        ];
        expected.sort_unstable();
        assert_eq!(damaged, expected);
    }
}
