//! Which sealed segments retention deletes: oldest first, a whole segment
//! at a time, while the oldest is past `retention_ms` (its newest record is
//! older than that) or the log is larger than `retention_bytes`. The active
//! segment is never deleted.

/// What retention needs to know about a sealed segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SealedInfo {
    pub size: u64,
    pub max_timestamp: i64,
}

/// How many segments from the front of `sealed` to delete.
pub(crate) fn expired_prefix(
    sealed: &[SealedInfo],
    active_size: u64,
    now_ms: i64,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
) -> usize {
    let mut total: u64 = sealed.iter().map(|s| s.size).sum::<u64>() + active_size;
    let mut count = 0;
    for segment in sealed {
        let too_old = retention_ms.is_some_and(|ms| {
            now_ms.saturating_sub(segment.max_timestamp) > i64::try_from(ms).unwrap_or(i64::MAX)
        });
        let too_big = retention_bytes.is_some_and(|bytes| total > bytes);
        if !too_old && !too_big {
            break;
        }
        total -= segment.size;
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(size: u64, max_timestamp: i64) -> SealedInfo {
        SealedInfo {
            size,
            max_timestamp,
        }
    }

    #[test]
    fn deletes_oldest_segments_past_retention_time() {
        let sealed = [seg(10, 100), seg(10, 200), seg(10, 300)];
        assert_eq!(expired_prefix(&sealed, 5, 1250, Some(1000), None), 2);
        assert_eq!(expired_prefix(&sealed, 5, 1000, Some(1000), None), 0);
        assert_eq!(expired_prefix(&sealed, 5, 10_000, None, None), 0);
    }

    #[test]
    fn deletes_while_the_log_is_over_retention_bytes() {
        let sealed = [seg(10, 100), seg(10, 200), seg(10, 300)];
        // 35 bytes in all: deleting two leaves 15 ≤ 20.
        assert_eq!(expired_prefix(&sealed, 5, 0, None, Some(20)), 2);
        assert_eq!(expired_prefix(&sealed, 5, 0, None, Some(35)), 0);
        // Never the active segment, however large.
        assert_eq!(expired_prefix(&sealed, 500, 0, None, Some(1)), 3);
    }
}
