//! [`GroupSettings`]: a consumer group's delivery settings, shared by
//! CreateGroup, DescribeGroup, AlterGroup and JoinGroup.
//!
//! Layout (30 bytes): `ack_timeout_ms` u32, `max_deliveries` u32,
//! `backoff_initial_ms` u32, `backoff_multiplier` f64 (its IEEE-754 bits as
//! a u64), `backoff_max_ms` u32, `backoff_jitter_permille` u16,
//! `max_in_flight` u32.
//!
//! The codec refuses, both ways, what no group could use: a multiplier that
//! is NaN, infinite or below 1.0, and a jitter above 1000 ‰. Everything else
//! (a zero ack timeout, a backoff maximum below its initial value, …) is
//! well-formed here and left to the broker, which answers `InvalidConfig`.

use crate::codec_error::{CodecError, CodecErrorKind};
use crate::wire::{Reader, Writer};

/// Largest `backoff_jitter_permille`: ±100 %.
pub const MAX_BACKOFF_JITTER_PERMILLE: u16 = 1000;

/// How a consumer group delivers: leases, redelivery backoff, dead
/// lettering and flow control.
///
/// Attempt n + 1 of a message that was nacked or whose lease expired is due
/// `min(backoff_max_ms, backoff_initial_ms × backoff_multiplier^(n−1))`
/// ± `backoff_jitter_permille` ‰ later.
///
/// Equality compares `backoff_multiplier` bit for bit, so that `Eq` holds;
/// every value the codec accepts is finite and ≥ 1.0, where that is the same
/// as numeric equality.
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    /// How long a delivery's lease lasts before the message is redelivered.
    pub ack_timeout_ms: u32,
    /// Deliveries of one message before it is dead-lettered.
    pub max_deliveries: u32,
    /// Delay before the second attempt.
    pub backoff_initial_ms: u32,
    /// Growth of the delay per attempt; finite and ≥ 1.0.
    pub backoff_multiplier: f64,
    /// Longest delay between attempts.
    pub backoff_max_ms: u32,
    /// Random spread of each delay, in thousandths: 200 = ±20 %; ≤ 1000.
    pub backoff_jitter_permille: u16,
    /// Most messages in flight to one consumer at a time.
    pub max_in_flight: u32,
}

impl Default for GroupSettings {
    /// The defaults of `docs/design.md`: 30 s ack timeout, 5 deliveries, backoff
    /// 1 s × 2.0 up to 5 min with ±20 % jitter, 1000 in flight.
    fn default() -> Self {
        GroupSettings {
            ack_timeout_ms: 30_000,
            max_deliveries: 5,
            backoff_initial_ms: 1_000,
            backoff_multiplier: 2.0,
            backoff_max_ms: 300_000,
            backoff_jitter_permille: 200,
            max_in_flight: 1_000,
        }
    }
}

impl PartialEq for GroupSettings {
    fn eq(&self, other: &Self) -> bool {
        self.ack_timeout_ms == other.ack_timeout_ms
            && self.max_deliveries == other.max_deliveries
            && self.backoff_initial_ms == other.backoff_initial_ms
            && self.backoff_multiplier.to_bits() == other.backoff_multiplier.to_bits()
            && self.backoff_max_ms == other.backoff_max_ms
            && self.backoff_jitter_permille == other.backoff_jitter_permille
            && self.max_in_flight == other.max_in_flight
    }
}

impl Eq for GroupSettings {}

/// Whether `multiplier` is one a group can use: finite and at least 1.0.
fn multiplier_is_valid(multiplier: f64) -> bool {
    multiplier.is_finite() && multiplier >= 1.0
}

fn invalid(offset: usize, field: &'static str, value: u64) -> CodecError {
    CodecError::new(offset, CodecErrorKind::InvalidValue { field, value })
}

impl GroupSettings {
    /// Appends the settings, refusing a multiplier that is NaN, infinite or
    /// below 1.0 and a jitter above 1000 (`InvalidValue` at the field).
    pub(crate) fn encode(&self, w: &mut Writer<'_>) -> Result<(), CodecError> {
        w.u32(self.ack_timeout_ms);
        w.u32(self.max_deliveries);
        w.u32(self.backoff_initial_ms);
        if !multiplier_is_valid(self.backoff_multiplier) {
            return Err(invalid(
                w.offset(),
                "backoff_multiplier",
                self.backoff_multiplier.to_bits(),
            ));
        }
        w.f64(self.backoff_multiplier);
        w.u32(self.backoff_max_ms);
        if self.backoff_jitter_permille > MAX_BACKOFF_JITTER_PERMILLE {
            return Err(invalid(
                w.offset(),
                "backoff_jitter_permille",
                u64::from(self.backoff_jitter_permille),
            ));
        }
        w.u16(self.backoff_jitter_permille);
        w.u32(self.max_in_flight);
        Ok(())
    }

    /// Reads the settings; a bad multiplier (reported by its bits) or
    /// jitter is `InvalidValue` at the offset of that field.
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, CodecError> {
        let ack_timeout_ms = r.u32("ack_timeout_ms")?;
        let max_deliveries = r.u32("max_deliveries")?;
        let backoff_initial_ms = r.u32("backoff_initial_ms")?;
        let at = r.offset();
        let backoff_multiplier = r.f64("backoff_multiplier")?;
        if !multiplier_is_valid(backoff_multiplier) {
            return Err(invalid(
                at,
                "backoff_multiplier",
                backoff_multiplier.to_bits(),
            ));
        }
        let backoff_max_ms = r.u32("backoff_max_ms")?;
        let at = r.offset();
        let backoff_jitter_permille = r.u16("backoff_jitter_permille")?;
        if backoff_jitter_permille > MAX_BACKOFF_JITTER_PERMILLE {
            return Err(invalid(
                at,
                "backoff_jitter_permille",
                u64::from(backoff_jitter_permille),
            ));
        }
        Ok(GroupSettings {
            ack_timeout_ms,
            max_deliveries,
            backoff_initial_ms,
            backoff_multiplier,
            backoff_max_ms,
            backoff_jitter_permille,
            max_in_flight: r.u32("max_in_flight")?,
        })
    }
}
