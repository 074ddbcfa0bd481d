//! The producer registry: stable producer names → producer id and epoch.
//!
//! Registering a name returns its producer id and the next epoch (a new
//! name gets a new id and epoch 0). Partition writers ask the registry for
//! the current epoch of a producer id ([`EpochSource`]) so that batches of
//! an older epoch are refused everywhere at once (`ProducerFenced`), even
//! in partitions the new instance has not written to yet. Ids are never
//! handed out twice, even after their name expired.
//!
//! ## Persistence: an append-only log
//!
//! `<data-dir>/producers.log`: a registration appends one record and
//! `fdatasync`s it **before** it is answered (one small append, never a
//! rewrite of the whole registry). All integers little-endian:
//!
//! | field | bytes | meaning |
//! | --- | --- | --- |
//! | `length` | u32 | bytes of `body` |
//! | `crc` | u32 | CRC-32 (IEEE) of `body` |
//! | `body.kind` | u8 | 1 register, 2 forget (the name expired), 3 next id |
//! | `body.id` | i64 | producer id (kind 3: the next id to hand out) |
//! | `body.epoch` | i16 | its epoch (0 for kinds 2 and 3) |
//! | `body.last_used_ms` | u64 | when the name was last used (ms since the Unix epoch) |
//! | `body.name_length` | u16 | bytes of `name` (0 for kind 3) |
//! | `body.name` | bytes | the name, UTF-8, at most [`MAX_NAME_LEN`] |
//!
//! Replaying the records in order gives the registry: a register record
//! sets a name's id and epoch, a forget record removes the name, a next-id
//! record raises the next id; the next id is also above every id seen.
//!
//! **Compaction.** Once the log holds more than twice as many records as
//! live names (and at least [`COMPACT_MIN_RECORDS`]), it is rewritten with
//! one next-id record and one register record per live name, as
//! `producers.log.tmp` (written, `fdatasync`ed), renamed over
//! `producers.log`, and the directory synced. The cost is amortized: at
//! most one rewrite per as many registrations as there are names.
//!
//! ## Crash story
//!
//! - During an append: the record may be torn. At open, a last record
//!   that is incomplete or fails its CRC is cut off (the file is
//!   truncated to the last whole record and synced); its registration was
//!   not answered, so the client registers again. An epoch answered was
//!   synced first, so it is never handed out twice. A bad record followed
//!   by more than one record's worth of bytes is damage, not a torn
//!   append: the broker refuses to start, naming the file.
//! - During a compaction: before the rename, `producers.log` is the
//!   complete old log and the leftover `.tmp` is removed at open; after
//!   it, the new log holds every live name.
//! - Upgrade: a data directory with the older `producers.json` (the whole
//!   registry, rewritten at each registration) is converted at open: the
//!   log is written by a compaction, then the JSON file is removed. A
//!   crash between the two leaves both; the log wins and the JSON file is
//!   removed at the next open.
//!
//! ## Bounds
//!
//! At most `max_producer_names` names (a setting, see `crate::caps`); a
//! new name beyond that is refused with a clear error, while every known
//! name still registers. A name unused (no registration, no idempotent
//! batch) for `producer_expiry_ms` expires: it is forgotten (a forget
//! record) when a sweep finds it, at most once a minute at a registration
//! and at once when the registry is full. Use is kept in memory: at open
//! every name counts as used then, so a restart never expires a name
//! early. A producer whose name expired registers again (its old id stays
//! retired).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use serde::Deserialize;

use crate::io::{
    FileSystem, OpenMode, StorageFile, read_all, sync_parent, temp_path, write_all_at,
};
use crate::log::producers::EpochSource;

/// The log's file name inside the data directory.
pub const FILE_NAME: &str = "producers.log";
/// The older format's file name (converted at open).
pub const LEGACY_FILE_NAME: &str = "producers.json";
/// Largest registry file read.
const MAX_FILE_BYTES: usize = 256 << 20;
/// Longest registered name: a client's name (255 bytes) under its user's
/// name (`<user>/<name>`, see `service/checked/mod.rs`).
pub const MAX_NAME_LEN: usize = 512;
/// Bytes of a record before its name.
const RECORD_HEAD: usize = 4 + 4 + 1 + 8 + 2 + 8 + 2;
/// The largest record.
const MAX_RECORD: usize = RECORD_HEAD + MAX_NAME_LEN;
/// No compaction below this many records.
const COMPACT_MIN_RECORDS: usize = 1024;
/// Least time between two sweeps for expired names (unless full).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

const KIND_REGISTER: u8 = 1;
const KIND_FORGET: u8 = 2;
const KIND_NEXT_ID: u8 = 3;

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The name is not valid.
    #[error("{0}")]
    InvalidName(String),
    /// `max_producer_names` names are registered already.
    #[error("{0}")]
    Full(String),
    /// The registration could not be made durable.
    #[error("{0}")]
    Storage(String),
}

/// The registry's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryLimits {
    /// Most names kept.
    pub max_names: usize,
    /// A name unused this long expires.
    pub expiry: Duration,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        RegistryLimits {
            max_names: 100_000,
            expiry: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: u8,
    id: i64,
    epoch: i16,
    last_used_ms: u64,
    name: String,
}

impl Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(RECORD_HEAD + self.name.len());
        body.push(self.kind);
        body.extend_from_slice(&self.id.to_le_bytes());
        body.extend_from_slice(&self.epoch.to_le_bytes());
        body.extend_from_slice(&self.last_used_ms.to_le_bytes());
        // Names are at most MAX_NAME_LEN (checked before any record).
        body.extend_from_slice(&(self.name.len() as u16).to_le_bytes());
        body.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
    }

    /// The record at the front of `bytes` and its length; `None` if it is
    /// incomplete or damaged.
    fn decode(bytes: &[u8]) -> Option<(Entry, usize)> {
        let length = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
        if !(RECORD_HEAD - 8..=MAX_RECORD - 8).contains(&length) {
            return None;
        }
        let body = bytes.get(8..8 + length)?;
        if crc32fast::hash(body) != crc {
            return None;
        }
        let name_length = u16::from_le_bytes(body[19..21].try_into().ok()?) as usize;
        if 21 + name_length != body.len() {
            return None;
        }
        let entry = Entry {
            kind: body[0],
            id: i64::from_le_bytes(body[1..9].try_into().ok()?),
            epoch: i16::from_le_bytes(body[9..11].try_into().ok()?),
            last_used_ms: u64::from_le_bytes(body[11..19].try_into().ok()?),
            name: String::from_utf8(body[21..].to_vec()).ok()?,
        };
        Some((entry, 8 + length))
    }
}

/// A name's registration in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Registered {
    id: i64,
    epoch: i16,
}

/// What the log replays to, and the open log.
#[derive(Debug)]
struct State {
    file: Arc<dyn StorageFile>,
    /// Bytes of the log (where the next record goes).
    end: u64,
    /// Records in the log.
    records: usize,
    next_id: i64,
    names: HashMap<String, Registered>,
    /// When expired names were last swept (ms).
    swept_ms: u64,
}

/// What an id is, for the partition writers and the permission checks.
#[derive(Debug)]
struct Live {
    epoch: i16,
    name: String,
    last_used_ms: AtomicU64,
}

/// Names, ids and epochs of idempotent producers.
#[derive(Debug)]
pub struct ProducerRegistry {
    fs: Arc<dyn FileSystem>,
    path: PathBuf,
    limits: RegistryLimits,
    /// The log and its replayed state; held while a record is written.
    state: Mutex<State>,
    /// Per producer id: epoch, name and last use.
    ids: RwLock<HashMap<i64, Live>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn storage(path: &Path, e: impl std::fmt::Display) -> String {
    format!("producer registry {}: {e}", path.display())
}

impl ProducerRegistry {
    /// Loads the registry of `data_dir` with the default limits.
    pub fn open(fs: Arc<dyn FileSystem>, data_dir: &Path) -> Result<ProducerRegistry, String> {
        Self::open_with(fs, data_dir, RegistryLimits::default())
    }

    /// Loads the registry of `data_dir` (empty if there is none yet),
    /// converting an older `producers.json`, cutting a torn last record.
    pub fn open_with(
        fs: Arc<dyn FileSystem>,
        data_dir: &Path,
        limits: RegistryLimits,
    ) -> Result<ProducerRegistry, String> {
        let path = data_dir.join(FILE_NAME);
        let tmp = temp_path(&path);
        if fs.exists(&tmp) {
            fs.remove_file(&tmp).map_err(|e| storage(&tmp, e))?;
        }
        let legacy = data_dir.join(LEGACY_FILE_NAME);
        let opened = if fs.exists(&path) {
            None
        } else if fs.exists(&legacy) {
            Some(read_legacy(fs.as_ref(), &legacy)?)
        } else {
            Some((0, HashMap::new()))
        };
        let state = match opened {
            None => replay(fs.as_ref(), &path)?,
            Some((next_id, names)) => {
                let file = write_compacted(fs.as_ref(), &path, next_id, &names, now_ms())
                    .map_err(|e| storage(&path, e))?;
                let end = file.len().map_err(|e| storage(&path, e))?;
                State {
                    file,
                    end,
                    records: names.len() + 1,
                    next_id,
                    names,
                    swept_ms: now_ms(),
                }
            }
        };
        if fs.exists(&legacy) {
            fs.remove_file(&legacy).map_err(|e| storage(&legacy, e))?;
            sync_parent(fs.as_ref(), &legacy).map_err(|e| storage(&legacy, e))?;
        }
        let now = now_ms();
        let ids = state.names.iter().map(|(name, r)| {
            let live = Live {
                epoch: r.epoch,
                name: name.clone(),
                last_used_ms: AtomicU64::new(now),
            };
            (r.id, live)
        });
        let ids = ids.collect();
        Ok(ProducerRegistry {
            fs,
            path,
            limits,
            state: Mutex::new(state),
            ids: RwLock::new(ids),
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
        let now = now_ms();
        let mut state = self.state.lock();
        let known = state.names.contains_key(name);
        let full = state.names.len() >= self.limits.max_names;
        if !known && (full || now.saturating_sub(state.swept_ms) >= SWEEP_EVERY.as_millis() as u64)
        {
            self.sweep(&mut state, now)?;
        }
        if !known && state.names.len() >= self.limits.max_names {
            return Err(RegisterError::Full(format!(
                "cannot register producer {name}: the broker already knows {} producer names (max_producer_names), none idle for producer_expiry_ms; give each service instance a stable name and reuse it",
                self.limits.max_names
            )));
        }
        let (registered, next_id) = match state.names.get(name) {
            Some(r) if r.epoch < i16::MAX => (
                Registered {
                    id: r.id,
                    epoch: r.epoch + 1,
                },
                state.next_id,
            ),
            _ => (
                Registered {
                    id: state.next_id,
                    epoch: 0,
                },
                state.next_id + 1,
            ),
        };
        let entry = Entry {
            kind: KIND_REGISTER,
            id: registered.id,
            epoch: registered.epoch,
            last_used_ms: now,
            name: name.to_owned(),
        };
        self.append(&mut state, &[entry]).map_err(|e| {
            RegisterError::Storage(format!(
                "cannot persist the registration of producer {name}: {e}"
            ))
        })?;
        state.next_id = next_id;
        if let Some(old) = state.names.insert(name.to_owned(), registered)
            && old.id != registered.id
        {
            self.ids.write().remove(&old.id);
        }
        let live = Live {
            epoch: registered.epoch,
            name: name.to_owned(),
            last_used_ms: AtomicU64::new(now),
        };
        self.ids.write().insert(registered.id, live);
        self.compact_if_due(&mut state);
        Ok((registered.id, registered.epoch))
    }

    /// Appends `entries` as one write and syncs them.
    fn append(&self, state: &mut State, entries: &[Entry]) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for entry in entries {
            entry.encode(&mut bytes);
        }
        let written = write_all_at(state.file.as_ref(), &bytes, state.end)
            .and_then(|()| state.file.sync_data());
        if let Err(e) = written {
            // Whatever part of the write landed is cut off again, so the
            // next append starts at a record boundary.
            let _ = state.file.set_len(state.end);
            return Err(e);
        }
        state.end += bytes.len() as u64;
        state.records += entries.len();
        Ok(())
    }

    /// Forgets every name unused for the expiry: one forget record each,
    /// appended together.
    fn sweep(&self, state: &mut State, now: u64) -> Result<(), RegisterError> {
        state.swept_ms = now;
        let expiry = self.limits.expiry.as_millis() as u64;
        let expired: Vec<(i64, String)> = {
            let ids = self.ids.read();
            let idle = ids.iter().filter(|(_, live)| {
                now.saturating_sub(live.last_used_ms.load(Ordering::Relaxed)) >= expiry
            });
            idle.map(|(id, live)| (*id, live.name.clone())).collect()
        };
        if expired.is_empty() {
            return Ok(());
        }
        let entries: Vec<Entry> = expired
            .iter()
            .map(|(id, name)| Entry {
                kind: KIND_FORGET,
                id: *id,
                epoch: 0,
                last_used_ms: now,
                name: name.clone(),
            })
            .collect();
        self.append(state, &entries).map_err(|e| {
            RegisterError::Storage(format!("cannot persist expired producer names: {e}"))
        })?;
        let mut ids = self.ids.write();
        for (id, name) in &expired {
            ids.remove(id);
            state.names.remove(name);
        }
        tracing::info!(
            expired = expired.len(),
            "forgot producer names unused for producer_expiry_ms"
        );
        Ok(())
    }

    /// Rewrites the log with the live names once it holds more than twice
    /// as many records (a failure is logged; the log stays as it is).
    fn compact_if_due(&self, state: &mut State) {
        if state.records < COMPACT_MIN_RECORDS || state.records <= 2 * state.names.len() + 1 {
            return;
        }
        let ids = self.ids.read();
        let used = |r: &Registered| {
            ids.get(&r.id)
                .map_or(0, |l| l.last_used_ms.load(Ordering::Relaxed))
        };
        let names: HashMap<String, (Registered, u64)> = state
            .names
            .iter()
            .map(|(n, r)| (n.clone(), (*r, used(r))))
            .collect();
        drop(ids);
        match write_compacted_with_use(self.fs.as_ref(), &self.path, state.next_id, &names) {
            Ok(file) => {
                state.end = file.len().unwrap_or(0);
                state.file = file;
                state.records = names.len() + 1;
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot compact the producer registry; it keeps growing until a compaction succeeds");
            }
        }
    }

    /// The name producer id `id` was registered under.
    pub fn name_of(&self, id: i64) -> Option<String> {
        self.ids.read().get(&id).map(|l| l.name.clone())
    }

    /// Registered producers.
    pub fn len(&self) -> usize {
        self.state.lock().names.len()
    }

    /// Whether no producer registered yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl EpochSource for ProducerRegistry {
    fn current_epoch(&self, producer_id: i64) -> Option<i16> {
        let ids = self.ids.read();
        let live = ids.get(&producer_id)?;
        live.last_used_ms.store(now_ms(), Ordering::Relaxed);
        Some(live.epoch)
    }
}

/// Replays `path`; cuts a torn last record.
fn replay(fs: &dyn FileSystem, path: &Path) -> Result<State, String> {
    let bytes = read_all(fs, path, MAX_FILE_BYTES).map_err(|e| storage(path, e))?;
    let mut at = 0;
    let mut records = 0;
    let mut next_id = 0i64;
    let mut names: HashMap<String, Registered> = HashMap::new();
    while at < bytes.len() {
        let Some((entry, used)) = Entry::decode(&bytes[at..]) else {
            if bytes.len() - at > MAX_RECORD {
                return Err(format!(
                    "{} is damaged at byte {at} (a record fails its check and {} bytes follow it); restore it from a backup, or delete it to forget every producer (their next batches are then refused as unknown until they register again)",
                    path.display(),
                    bytes.len() - at
                ));
            }
            break;
        };
        if entry.kind != KIND_NEXT_ID {
            next_id = next_id.max(entry.id.saturating_add(1));
        }
        match entry.kind {
            KIND_REGISTER => {
                let registered = Registered {
                    id: entry.id,
                    epoch: entry.epoch,
                };
                names.insert(entry.name, registered);
            }
            KIND_FORGET => {
                if names.get(&entry.name).is_some_and(|r| r.id == entry.id) {
                    names.remove(&entry.name);
                }
            }
            KIND_NEXT_ID => next_id = next_id.max(entry.id),
            other => {
                return Err(format!(
                    "{} has a record of kind {other} at byte {at}, which this build does not know",
                    path.display()
                ));
            }
        }
        at += used;
        records += 1;
    }
    let file = fs
        .open(path, OpenMode::ReadWrite)
        .map_err(|e| storage(path, e))?;
    if at < bytes.len() {
        tracing::warn!(file = %path.display(), cut = bytes.len() - at, "cutting a torn last record of the producer registry (its registration was never answered)");
        file.set_len(at as u64)
            .and_then(|()| file.sync_data())
            .map_err(|e| storage(path, e))?;
    }
    Ok(State {
        file,
        end: at as u64,
        records,
        next_id,
        names,
        swept_ms: now_ms(),
    })
}

/// The older JSON registry: its next id and names.
fn read_legacy(
    fs: &dyn FileSystem,
    path: &Path,
) -> Result<(i64, HashMap<String, Registered>), String> {
    #[derive(Deserialize)]
    struct Old {
        id: i64,
        epoch: i16,
    }
    #[derive(Deserialize)]
    struct OldFile {
        version: u32,
        next_id: i64,
        producers: HashMap<String, Old>,
    }
    let bytes = read_all(fs, path, MAX_FILE_BYTES).map_err(|e| storage(path, e))?;
    let old: OldFile = serde_json::from_slice(&bytes).map_err(|e| format!("{} is damaged ({e}); restore it from a backup, or delete it to forget every producer (their next batches are then refused as unknown until they register again)", path.display()))?;
    if old.version != 1 {
        return Err(format!(
            "{} has version {}, which this build does not read",
            path.display(),
            old.version
        ));
    }
    let names = old.producers.into_iter().map(|(name, r)| {
        let registered = Registered {
            id: r.id,
            epoch: r.epoch,
        };
        (name, registered)
    });
    Ok((old.next_id, names.collect()))
}

/// Writes a compacted log of `names` (all last used at `used_ms`).
fn write_compacted(
    fs: &dyn FileSystem,
    path: &Path,
    next_id: i64,
    names: &HashMap<String, Registered>,
    used_ms: u64,
) -> std::io::Result<Arc<dyn StorageFile>> {
    let names = names
        .iter()
        .map(|(n, r)| (n.clone(), (*r, used_ms)))
        .collect();
    write_compacted_with_use(fs, path, next_id, &names)
}

/// Writes `path.tmp` (a next-id record, then one register record per
/// name), syncs it, renames it over `path`, syncs the directory; returns
/// the new log, open.
fn write_compacted_with_use(
    fs: &dyn FileSystem,
    path: &Path,
    next_id: i64,
    names: &HashMap<String, (Registered, u64)>,
) -> std::io::Result<Arc<dyn StorageFile>> {
    let mut bytes = Vec::new();
    let head = Entry {
        kind: KIND_NEXT_ID,
        id: next_id,
        epoch: 0,
        last_used_ms: now_ms(),
        name: String::new(),
    };
    head.encode(&mut bytes);
    for (name, (r, used)) in names {
        let entry = Entry {
            kind: KIND_REGISTER,
            id: r.id,
            epoch: r.epoch,
            last_used_ms: *used,
            name: name.clone(),
        };
        entry.encode(&mut bytes);
    }
    let tmp = temp_path(path);
    let file = fs.open(&tmp, OpenMode::Create)?;
    file.set_len(0)?;
    write_all_at(file.as_ref(), &bytes, 0)?;
    file.sync_data()?;
    drop(file);
    fs.rename(&tmp, path)?;
    sync_parent(fs, path)?;
    fs.open(path, OpenMode::ReadWrite)
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
