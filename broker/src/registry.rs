//! The producer registry: stable producer names → producer id and epoch.
//!
//! Registering a name returns its producer id and the next epoch (a new
//! name gets a new id and epoch 0). Partition writers ask the registry for
//! the current epoch of a producer id ([`EpochSource`]) so that batches of
//! an older epoch are refused everywhere at once (`ProducerFenced`), even
//! in partitions the new instance has not written to yet.
//!
//! ## Persistence and crash story
//!
//! `<data-dir>/producers.json`, replaced atomically (temp file, fsync,
//! rename, fsync dir) **before** a registration is answered:
//!
//! ```json
//! {"version":1,"next_id":3,"producers":{"orders-7":{"id":0,"epoch":4}}}
//! ```
//!
//! A crash before the rename leaves the previous registrations; the client
//! got no answer and registers again. An epoch is therefore never handed out
//! twice. When an epoch would pass `i16::MAX`, the name gets a fresh id.
//!
//! ## Bounds
//!
//! Names are never forgotten (a name keeps its id so that its batches stay
//! recognisable), so the registry holds at most [`MAX_PRODUCERS`] names: a
//! new name beyond that is refused with a clear error, while every known
//! name still registers. Without the cap a client inventing names would
//! grow the file (rewritten whole at each new registration) until the
//! broker could no longer read it at startup.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::io::{FileSystem, read_all, write_atomically};
use crate::log::producers::EpochSource;

/// File name inside the data directory.
pub const FILE_NAME: &str = "producers.json";
/// Largest registry file read (about a million producer names).
const MAX_FILE_BYTES: usize = 128 << 20;
/// Most producer names registered (a file of a few MiB, well inside
/// [`MAX_FILE_BYTES`]).
pub const MAX_PRODUCERS: usize = 100_000;
/// Longest registered name: a client's name (255 bytes) under its user's
/// name (`<user>/<name>`, see `service/checked.rs`).
pub const MAX_NAME_LEN: usize = 512;

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The name is not valid.
    #[error("{0}")]
    InvalidName(String),
    /// [`MAX_PRODUCERS`] names are registered already.
    #[error("{0}")]
    Full(String),
    /// The registration could not be made durable.
    #[error("{0}")]
    Storage(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Registered {
    id: i64,
    epoch: i16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RegistryFile {
    version: u32,
    next_id: i64,
    producers: BTreeMap<String, Registered>,
}

/// Names, ids and epochs of idempotent producers.
#[derive(Debug)]
pub struct ProducerRegistry {
    fs: Arc<dyn FileSystem>,
    path: PathBuf,
    /// The persisted state; held while a registration is written.
    file: Mutex<RegistryFile>,
    /// Current epoch per producer id, for the partition writers.
    epochs: RwLock<HashMap<i64, i16>>,
    /// The name of each producer id (whose user owns it).
    names: RwLock<HashMap<i64, String>>,
}

impl ProducerRegistry {
    /// Loads the registry of `data_dir` (empty if there is none yet).
    pub fn open(fs: Arc<dyn FileSystem>, data_dir: &Path) -> Result<ProducerRegistry, String> {
        let path = data_dir.join(FILE_NAME);
        let file = if fs.exists(&path) {
            let bytes = read_all(fs.as_ref(), &path, MAX_FILE_BYTES)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let file: RegistryFile = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is damaged ({e}); restore it from a backup, or delete it to forget every producer (their next batches are then refused as unknown until they register again)", path.display()))?;
            if file.version != 1 {
                return Err(format!(
                    "{} has version {}, which this build does not read",
                    path.display(),
                    file.version
                ));
            }
            file
        } else {
            RegistryFile {
                version: 1,
                ..RegistryFile::default()
            }
        };
        let epochs = file.producers.values().map(|r| (r.id, r.epoch)).collect();
        let names = file
            .producers
            .iter()
            .map(|(name, r)| (r.id, name.clone()))
            .collect();
        Ok(ProducerRegistry {
            fs,
            path,
            file: Mutex::new(file),
            epochs: RwLock::new(epochs),
            names: RwLock::new(names),
        })
    }

    /// Registers `name`: returns its producer id and new epoch, durably.
    pub fn register(&self, name: &str) -> Result<(i64, i16), RegisterError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(RegisterError::InvalidName(format!(
                "a producer name has 1 to {MAX_NAME_LEN} bytes, not {}",
                name.len()
            )));
        }
        let mut file = self.file.lock();
        if !file.producers.contains_key(name) && file.producers.len() >= MAX_PRODUCERS {
            return Err(RegisterError::Full(format!(
                "cannot register producer {name}: the broker already knows {MAX_PRODUCERS} producer names; give each service instance a stable name and reuse it"
            )));
        }
        let mut next = file.clone();
        let registered = match next.producers.get(name) {
            Some(r) if r.epoch < i16::MAX => Registered {
                id: r.id,
                epoch: r.epoch + 1,
            },
            _ => {
                let id = next.next_id;
                next.next_id += 1;
                Registered { id, epoch: 0 }
            }
        };
        next.producers.insert(name.to_owned(), registered);
        let bytes = serde_json::to_vec(&next).map_err(|e| RegisterError::Storage(e.to_string()))?;
        write_atomically(self.fs.as_ref(), &self.path, &bytes).map_err(|e| {
            RegisterError::Storage(format!(
                "cannot persist the registration of producer {name}: {e}"
            ))
        })?;
        *file = next;
        self.epochs.write().insert(registered.id, registered.epoch);
        self.names.write().insert(registered.id, name.to_owned());
        Ok((registered.id, registered.epoch))
    }

    /// The name producer id `id` was registered under.
    pub fn name_of(&self, id: i64) -> Option<String> {
        self.names.read().get(&id).cloned()
    }

    /// Registered producers.
    pub fn len(&self) -> usize {
        self.file.lock().producers.len()
    }

    /// Whether no producer registered yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl EpochSource for ProducerRegistry {
    fn current_epoch(&self, producer_id: i64) -> Option<i16> {
        self.epochs.read().get(&producer_id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::StdFs;

    #[test]
    fn names_keep_their_id_and_bump_their_epoch_across_restarts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let registry = ProducerRegistry::open(Arc::new(StdFs), tmp.path()).expect("open");
        assert_eq!(registry.register("orders-7"), Ok((0, 0)));
        assert_eq!(registry.register("billing"), Ok((1, 0)));
        assert_eq!(registry.register("orders-7"), Ok((0, 1)));
        assert_eq!(registry.current_epoch(0), Some(1));
        drop(registry);
        let registry = ProducerRegistry::open(Arc::new(StdFs), tmp.path()).expect("reopen");
        assert_eq!(registry.current_epoch(0), Some(1));
        assert_eq!(registry.register("orders-7"), Ok((0, 2)));
        assert_eq!(registry.register("new"), Ok((2, 0)));
        assert_eq!(registry.name_of(0).as_deref(), Some("orders-7"));
        assert_eq!(registry.name_of(7), None);
        assert!(registry.register("").is_err());
    }

    #[test]
    fn new_names_are_refused_past_the_cap_and_known_names_still_register() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let registry = ProducerRegistry::open(Arc::new(StdFs), tmp.path()).expect("open");
        {
            // Fill the registry in memory (persisting 100,000 times would
            // be slow); the cap is checked against what is registered.
            let mut file = registry.file.lock();
            for i in 0..MAX_PRODUCERS as i64 {
                file.producers
                    .insert(format!("p-{i}"), Registered { id: i, epoch: 0 });
            }
            file.next_id = MAX_PRODUCERS as i64;
        }
        let err = registry.register("one-too-many").expect_err("full");
        assert!(matches!(err, RegisterError::Full(_)), "{err:?}");
        assert!(err.to_string().contains("stable name"), "{err}");
        assert_eq!(
            registry.register("p-7"),
            Ok((7, 1)),
            "a known name still registers"
        );
        assert!(matches!(
            registry.register(""),
            Err(RegisterError::InvalidName(_))
        ));
    }

    #[test]
    fn a_damaged_file_is_refused_with_advice() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join(FILE_NAME), b"{not json").expect("write");
        let err = ProducerRegistry::open(Arc::new(StdFs), tmp.path()).expect_err("damaged");
        assert!(err.contains("restore it"), "{err}");
    }
}
