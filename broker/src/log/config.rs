//! Settings of one partition log, with the defaults of docs/design.md, and
//! the handle of the broker-wide cache of open segment files its clones
//! share ([`super::open_segments`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::open_segments::OpenSegments;

/// When appended bytes are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append is acknowledged only after an `fdatasync` covering it;
    /// concurrent appends share one `fdatasync` (group commit).
    Always,
    /// Appends are acknowledged once written to the page cache; an
    /// `fdatasync` runs at most this long after the first unsynced write.
    Interval(Duration),
    /// Appends are acknowledged once written to the page cache; the log only
    /// syncs at segment roll and at recovery checkpoints.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => {
                let ms = s
                    .strip_prefix("interval:")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| {
                        format!(
                            "fsync policy {s:?} is not one of always, interval:<ms> (ms > 0), never"
                        )
                    })?;
                Ok(FsyncPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

/// Settings of one partition log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// A segment rolls once appending would take it past this size.
    pub segment_bytes: u64,
    /// A non-empty segment rolls once it is this old (ms), at the next append.
    pub segment_ms: u64,
    /// An index entry is added every this many bytes of log.
    pub index_interval_bytes: u32,
    /// Sealed segments whose newest record is older than this (ms) are deleted.
    pub retention_ms: Option<u64>,
    /// Oldest sealed segments are deleted while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Durability of appends.
    pub fsync: FsyncPolicy,
    /// Under `fsync=always`, write zeros ahead of a busy log's small
    /// commits, so that their `fdatasync`s carry no file-size update (see
    /// "Zeros ahead of the appends" in [`super::writer::commit`]). Off by
    /// default: the active segment's file then ends with its last batch.
    pub preallocate: bool,
    /// Largest record batch accepted for appending, header included. Stored
    /// batches are only held to [`BATCH_BYTES_BOUND`], so lowering this
    /// keeps larger batches already stored readable.
    pub max_batch_bytes: u32,
    /// A recovery checkpoint is written after this many bytes: the most an
    /// unclean restart has to scan (plus the last commit group).
    pub checkpoint_interval_bytes: u64,
    /// Idempotent producer state is dropped after this long without a
    /// batch from the producer (ms).
    pub producer_expiry_ms: u64,
    /// The caches bounding the open `.log` files (`max_open_segments`)
    /// and index maps (twice that) of sealed segments, shared by every log given a clone of this
    /// config (see [`super::open_segments`]). Two configs compare equal
    /// here when the capacities do.
    pub open_segments: OpenSegments,
    /// A log that takes no write for this long (ms) gets a recovery
    /// checkpoint at its synced end, so that a crash after its traffic
    /// stopped finds nothing to scan; 0: never. At most one such
    /// checkpoint per log per this period. See [`super::writer::commit`].
    pub idle_checkpoint_ms: u64,
}

/// The largest record batch the on-disk format allows, header included: the
/// largest `max_batch_bytes` any configuration may set (2 GiB, so that a
/// segment with its last batch stays below the 4 GiB that 32-bit index
/// positions address). Stored batches are checked against this bound, never
/// against the current `max_batch_bytes`: that setting limits new appends
/// only, so lowering it never makes stored batches unreadable.
pub const BATCH_BYTES_BOUND: u32 = 2 * 1024 * 1024 * 1024;

/// 128 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 128 * 1024 * 1024;
/// 7 days.
pub const DEFAULT_SEGMENT_MS: u64 = 7 * 24 * 3600 * 1000;
/// 7 days.
pub const DEFAULT_PRODUCER_EXPIRY_MS: u64 = 7 * 24 * 3600 * 1000;
/// 7 days.
pub const DEFAULT_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;
/// 5 s.
pub const DEFAULT_IDLE_CHECKPOINT_MS: u64 = 5000;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_ms: DEFAULT_SEGMENT_MS,
            index_interval_bytes: 4096,
            retention_ms: Some(DEFAULT_RETENTION_MS),
            retention_bytes: None,
            fsync: FsyncPolicy::Always,
            preallocate: false,
            max_batch_bytes: 8 * 1024 * 1024,
            checkpoint_interval_bytes: 64 * 1024 * 1024,
            producer_expiry_ms: DEFAULT_PRODUCER_EXPIRY_MS,
            open_segments: OpenSegments::default(),
            idle_checkpoint_ms: DEFAULT_IDLE_CHECKPOINT_MS,
        }
    }
}

impl LogConfig {
    /// Checks the limits the on-disk format imposes (index positions are
    /// 32-bit, so a segment must stay below 4 GiB even with its last batch).
    pub fn validate(&self) -> Result<(), String> {
        const MAX_SEGMENT: u64 = 2 * 1024 * 1024 * 1024;
        if self.segment_bytes < 1024 || self.segment_bytes > MAX_SEGMENT {
            return Err(format!(
                "segment_bytes is {}; it must be between 1024 and {MAX_SEGMENT}",
                self.segment_bytes
            ));
        }
        if self.max_batch_bytes < 64 || self.max_batch_bytes > BATCH_BYTES_BOUND {
            return Err(format!(
                "max_batch_bytes is {}; it must be between 64 and {BATCH_BYTES_BOUND}",
                self.max_batch_bytes
            ));
        }
        if self.index_interval_bytes == 0 {
            return Err("index_interval_bytes must be above 0".into());
        }
        if self.segment_ms == 0 {
            return Err("segment_ms must be above 0".into());
        }
        Ok(())
    }

    /// Entries an index of one segment can need: one per interval, plus the
    /// final time entry and slack for the batch that crosses the size limit.
    pub(crate) fn index_capacity(&self) -> usize {
        (self.segment_bytes / u64::from(self.index_interval_bytes)) as usize + 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fsync_policies() {
        assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
        assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
        assert_eq!(
            "interval:250".parse(),
            Ok(FsyncPolicy::Interval(Duration::from_millis(250)))
        );
        for bad in ["", "sometimes", "interval:", "interval:0", "interval:-3"] {
            let err = bad.parse::<FsyncPolicy>().expect_err(bad);
            assert!(err.contains("always, interval:<ms>"), "{err}");
        }
        assert_eq!(
            FsyncPolicy::Interval(Duration::from_millis(5)).to_string(),
            "interval:5"
        );
    }

    #[test]
    fn default_config_is_valid() {
        assert_eq!(LogConfig::default().validate(), Ok(()));
        let tiny = LogConfig {
            segment_bytes: 10,
            ..LogConfig::default()
        };
        assert!(tiny.validate().expect_err("tiny").contains("segment_bytes"));
    }
}
