//! The recovery checkpoint of a partition: how far the log is known to be
//! durable and intact, and whether the last shutdown was clean.
//!
//! File `checkpoint` in the partition directory, 48 bytes, little-endian,
//! replaced atomically (temp file, fsync, rename, fsync dir):
//!
//! | at | size | field | meaning |
//! | --- | --- | --- | --- |
//! | 0 | 4 | magic | `PGCK` |
//! | 4 | 2 | version u16 | 1 |
//! | 6 | 1 | clean u8 | 1 if written by a clean shutdown, else 0 |
//! | 7 | 1 | fence u8 | 1 if an fsync of the bytes after `position` failed, else 0 |
//! | 8 | 8 | segment_base u64 | base offset of the segment the point is in |
//! | 16 | 8 | position u64 | bytes of that segment that are durable and valid |
//! | 24 | 8 | next_offset u64 | offset after the last batch before `position` |
//! | 32 | 8 | max_timestamp i64 | largest timestamp before `position` |
//! | 40 | 4 | reserved | 0 |
//! | 44 | 4 | crc u32 | CRC-32 of bytes 0..44 |
//!
//! Invariant: the checkpoint is only written after the log bytes before
//! `position` (and every earlier segment) were fsynced and the index entries
//! for them were flushed, so recovery may trust them and scan only what
//! follows. A missing or damaged checkpoint means "scan everything". Under
//! `fsync=never` and `interval` the checkpoint naming a new segment is
//! written only once the background sync of the segment sealed before it
//! completed, and no checkpoint is written while that sync runs (see
//! [`super::writer::seal`]).
//!
//! ## Fence
//!
//! A checkpoint with `fence = 1` is written when an `fdatasync` of the
//! active segment fails (see [`super::writer::fence`]), or the background
//! sync of a sealed segment does (then it names that segment, and recovery
//! first removes the segments after it). After a failed
//! writeback Linux may mark the dirty pages clean: a restarted process
//! would read the never-written tail back from the page cache, valid CRCs
//! and all, and a new descriptor's fsync would succeed. The fence says "the
//! log ends at `position` of segment `segment_base`; nothing after it is
//! durable": recovery cuts the segment there without scanning what follows,
//! then replaces the fence with an ordinary checkpoint before the log takes
//! appends. No producer snapshot is written with a fence (the table in
//! memory holds the lost batches); the existing one predates the fence, and
//! recovery walks the log from the snapshot's offset as usual.

use std::path::Path;

use crate::io::{FileSystem, read_all, write_atomically};

/// File name of the checkpoint inside a partition directory.
pub(crate) const FILE_NAME: &str = "checkpoint";
const MAGIC: &[u8; 4] = b"PGCK";
const VERSION: u16 = 1;
const LEN: usize = 48;

/// A recovery point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub clean: bool,
    /// The log ends at `position`: an fsync of what followed failed.
    pub fence: bool,
    pub segment_base: u64,
    pub position: u64,
    pub next_offset: u64,
    pub max_timestamp: i64,
}

impl Checkpoint {
    pub fn encode(&self) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        out[0..4].copy_from_slice(MAGIC);
        out[4..6].copy_from_slice(&VERSION.to_le_bytes());
        out[6] = u8::from(self.clean);
        out[7] = u8::from(self.fence);
        out[8..16].copy_from_slice(&self.segment_base.to_le_bytes());
        out[16..24].copy_from_slice(&self.position.to_le_bytes());
        out[24..32].copy_from_slice(&self.next_offset.to_le_bytes());
        out[32..40].copy_from_slice(&self.max_timestamp.to_le_bytes());
        let crc = crc32fast::hash(&out[..44]);
        out[44..48].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes; `None` if the bytes are not a valid checkpoint.
    pub fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        if bytes.len() != LEN || &bytes[0..4] != MAGIC || bytes[4..6] != VERSION.to_le_bytes() {
            return None;
        }
        let u64_at = |at: usize| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(raw)
        };
        let crc = u32::from_le_bytes([bytes[44], bytes[45], bytes[46], bytes[47]]);
        if crc != crc32fast::hash(&bytes[..44]) || bytes[6] > 1 || bytes[7] > 1 {
            return None;
        }
        Some(Checkpoint {
            clean: bytes[6] == 1,
            fence: bytes[7] == 1,
            segment_base: u64_at(8),
            position: u64_at(16),
            next_offset: u64_at(24),
            max_timestamp: u64_at(32) as i64,
        })
    }

    /// Reads the checkpoint of `dir`; `None` when missing or damaged (then
    /// the whole log is scanned). A read error is returned: it says nothing
    /// about the file, and rescanning every segment because of it would
    /// make a transient error cost a full scan.
    pub fn read(fs: &dyn FileSystem, dir: &Path) -> std::io::Result<Option<Checkpoint>> {
        let path = dir.join(FILE_NAME);
        // One byte more than a checkpoint, so a longer file is refused.
        let bytes = match read_all(fs, &path, LEN + 1) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let decoded = Checkpoint::decode(&bytes);
        if decoded.is_none() {
            tracing::warn!(path = %path.display(), "recovery checkpoint is damaged; the whole log will be scanned");
        }
        Ok(decoded)
    }

    /// Where a fence cuts the segment at `base`, `file_len` bytes long:
    /// `Some(position)` when this checkpoint is a fence in that segment and
    /// bytes follow its position.
    pub fn fenced_end(&self, base: u64, file_len: u64) -> Option<u64> {
        (self.fence && self.segment_base == base && self.position < file_len)
            .then_some(self.position)
    }

    /// Durably replaces the checkpoint of `dir`.
    pub fn write(&self, fs: &dyn FileSystem, dir: &Path) -> std::io::Result<()> {
        write_atomically(fs, &dir.join(FILE_NAME), &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_and_round_trip() {
        let cp = Checkpoint {
            clean: true,
            fence: false,
            segment_base: 7,
            position: 4096,
            next_offset: 99,
            max_timestamp: 1_700_000_000_000,
        };
        let bytes = cp.encode();
        assert_eq!(&bytes[0..8], b"PGCK\x01\x00\x01\x00");
        assert_eq!(bytes[8], 7);
        assert_eq!(&bytes[16..18], &[0x00, 0x10]);
        assert_eq!(Checkpoint::decode(&bytes), Some(cp));
    }

    #[test]
    fn damaged_checkpoint_is_ignored() {
        let mut bytes = Checkpoint {
            clean: false,
            fence: false,
            segment_base: 0,
            position: 1,
            next_offset: 1,
            max_timestamp: 1,
        }
        .encode();
        bytes[20] ^= 1;
        assert_eq!(Checkpoint::decode(&bytes), None);
        assert_eq!(Checkpoint::decode(&bytes[..40]), None);
    }

    #[test]
    fn fence_round_trips_and_cuts_only_its_own_segment() {
        let fence = Checkpoint {
            clean: false,
            fence: true,
            segment_base: 100,
            position: 4096,
            next_offset: 150,
            max_timestamp: 1,
        };
        let bytes = fence.encode();
        assert_eq!(bytes[7], 1);
        assert_eq!(Checkpoint::decode(&bytes), Some(fence));
        assert_eq!(fence.fenced_end(100, 5000), Some(4096));
        assert_eq!(fence.fenced_end(100, 4096), None, "nothing follows");
        assert_eq!(fence.fenced_end(0, 5000), None, "another segment");
        let plain = Checkpoint {
            fence: false,
            ..fence
        };
        assert_eq!(plain.fenced_end(100, 5000), None);
    }
}
