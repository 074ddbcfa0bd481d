//! The broker's one notion of wall-clock time: [`Clock`], milliseconds since
//! the Unix epoch, behind a trait so tests can control time.
//!
//! | clock | used by | moves |
//! | --- | --- | --- |
//! | [`SystemClock`] | partition logs (append times, segment age, retention), topics, group stores | with the system clock |
//! | [`TokioClock`] | group engines (lease deadlines, redelivery times) | with tokio's clock: wall time at first use, then tokio's `Instant`, so paused-time tests (`tokio::time::pause`) drive it |
//! | `ManualClock` (tests and the `test-util` feature) | tests | only when told to |

use std::fmt::Debug;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + Debug + 'static {
    /// Now, in ms since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// Wall-clock milliseconds that follow tokio's clock: read once from the
/// system clock, then advanced by tokio's `Instant`, so an engine's timers
/// and its timestamps agree, and a test that pauses tokio's time controls
/// both.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        static START: std::sync::OnceLock<(tokio::time::Instant, i64)> = std::sync::OnceLock::new();
        let (start, wall) =
            START.get_or_init(|| (tokio::time::Instant::now(), SystemClock.now_ms()));
        wall + tokio::time::Instant::now()
            .duration_since(*start)
            .as_millis() as i64
    }
}

/// A clock that moves only when told to (tests, and the `test-util`
/// feature).
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone)]
pub struct ManualClock(std::sync::Arc<std::sync::atomic::AtomicI64>);

#[cfg(any(test, feature = "test-util"))]
impl ManualClock {
    /// A clock at `now_ms`.
    pub fn new(now_ms: i64) -> ManualClock {
        ManualClock(std::sync::Arc::new(now_ms.into()))
    }

    /// Moves the clock by `ms` (may be negative: clocks step back).
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}
