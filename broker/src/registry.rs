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
        Ok(ProducerRegistry {
            fs,
            path,
            file: Mutex::new(file),
            epochs: RwLock::new(epochs),
        })
    }

    /// Registers `name`: returns its producer id and new epoch, durably.
    pub fn register(&self, name: &str) -> Result<(i64, i16), String> {
        if name.is_empty() || name.len() > 255 {
            return Err(format!(
                "a producer name has 1 to 255 bytes, not {}",
                name.len()
            ));
        }
        let mut file = self.file.lock();
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
        let bytes = serde_json::to_vec(&next).map_err(|e| e.to_string())?;
        write_atomically(self.fs.as_ref(), &self.path, &bytes)
            .map_err(|e| format!("cannot persist the registration of producer {name}: {e}"))?;
        *file = next;
        self.epochs.write().insert(registered.id, registered.epoch);
        Ok((registered.id, registered.epoch))
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
        assert!(registry.register("").is_err());
    }

    #[test]
    fn a_damaged_file_is_refused_with_advice() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join(FILE_NAME), b"{not json").expect("write");
        let err = ProducerRegistry::open(Arc::new(StdFs), tmp.path()).expect_err("damaged");
        assert!(err.contains("restore it"), "{err}");
    }
}
