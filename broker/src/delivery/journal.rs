//! Journal events of a partition's delivery state: every change the state
//! machine makes is recorded as an event, and replaying the events in order
//! rebuilds the state. The group engine appends them to the group's journal
//! log (a partition log of its own, so it gets group commit, CRCs and torn
//! tail recovery for free) and snapshots the state to keep replay short.
//!
//! ## Event encoding (value of one journal record; little-endian)
//!
//! | tag | event | fields |
//! | --- | --- | --- |
//! | 8 | `Leased` | offset u64, attempt u32, first delivery u32, this delivery u32 (seconds since the Unix epoch) |
//! | 1 | `Leased`, as written before delivery times were kept (read only; times 0) | offset u64, attempt u32 |
//! | 2 | `Acked` | offset u64 |
//! | 3 | `Delayed` | offset u64, attempt u32, due_ms i64 |
//! | 9 | `DeadLetterStarted` | offset u64, attempts u32, dlq_from u64 (the dead-letter partition's end offset when it started), reason u8 (0 max deliveries, 1 rejected), reason text (u16 length + UTF-8) |
//! | 4 | `DeadLetterStarted`, as written before `dlq_from` was kept (read only; `dlq_from` unknown) | offset u64, attempts u32, reason u8, reason text (u16 length + UTF-8) |
//! | 5 | `DeadLettered` | offset u64 |
//! | 6 | `Seek` | target u64 |
//! | 7 | `Retention` | log_start u64 |
//! | 10 | `Released` | offset u64, attempt u32 (the released lease's), at_ms i64 (when it is available again) |
//!
//! Tag 10 is taken (`Released`, another change). A tag is never reused: an
//! older broker meeting a newer tag refuses the journal ("unknown journal
//! event tag") rather than misreading it.
//!
//! ## What survives a crash
//!
//! Events reach the disk in group commits, lazily: the last commit window
//! (a few milliseconds) can be lost. Then a lease or an ack made just before
//! the crash is forgotten, and the message is delivered again (at-least-once;
//! an ack can be repeated, never a message lost). Leases that were open at
//! the crash come back at once when the group is reopened, each counted as
//! an attempt, so a message that crashes every consumer still reaches the
//! dead-letter queue after `max_deliveries`.
//!
//! A `Released` lost that way leaves the lease open in the journal: after
//! the restart the message comes back counted as an attempt, as if its
//! consumer had gone away (the release saved an attempt only once
//! durable).

use pigeon_protocol::truncate_at_char_boundary;

use super::partition::{DeadLetterReason, DeliveryTimes};
use crate::io::LeCursor;

/// One change of a partition's delivery state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `offset` was delivered, this being attempt `attempt`.
    Leased {
        /// The offset.
        offset: u64,
        /// Its attempt number.
        attempt: u32,
        /// Its first delivery and this one.
        times: DeliveryTimes,
    },
    /// `offset` was acked.
    Acked {
        /// The offset.
        offset: u64,
    },
    /// `offset` waits for attempt `attempt + 1` until `due_ms`.
    Delayed {
        /// The offset.
        offset: u64,
        /// Deliveries so far.
        attempt: u32,
        /// When it is due again.
        due_ms: i64,
    },
    /// `offset`'s dead-letter copy is to be written.
    DeadLetterStarted {
        /// The offset.
        offset: u64,
        /// Deliveries it had.
        attempts: u32,
        /// Why.
        reason: DeadLetterReason,
        /// The dead-letter partition's end offset when it started (`None`:
        /// read from a tag-4 event, written before it was kept).
        dlq_from: Option<u64>,
    },
    /// `offset`'s dead-letter copy is durable.
    DeadLettered {
        /// The offset.
        offset: u64,
    },
    /// Delivery moved to `target`.
    Seek {
        /// The new start.
        target: u64,
    },
    /// Retention moved the log start to `log_start`.
    Retention {
        /// The new log start.
        log_start: u64,
    },
    /// The consumer gave `offset` back unprocessed: it is available again
    /// from `at_ms`, and its next delivery is attempt `attempt` again (the
    /// release is not counted).
    Released {
        /// The offset.
        offset: u64,
        /// The attempt of the lease given back.
        attempt: u32,
        /// When it was given back (ms since the epoch).
        at_ms: i64,
    },
}

/// Longest reason text kept.
pub const MAX_REASON_LEN: usize = 1024;

impl Event {
    /// Appends the encoded event to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Event::Leased {
                offset,
                attempt,
                times,
            } => {
                out.push(8);
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&attempt.to_le_bytes());
                out.extend_from_slice(&times.first_s.to_le_bytes());
                out.extend_from_slice(&times.last_s.to_le_bytes());
            }
            Event::Acked { offset } => tagged_u64(out, 2, *offset),
            Event::Delayed {
                offset,
                attempt,
                due_ms,
            } => {
                out.push(3);
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&attempt.to_le_bytes());
                out.extend_from_slice(&due_ms.to_le_bytes());
            }
            Event::DeadLetterStarted {
                offset,
                attempts,
                reason,
                dlq_from,
            } => {
                out.push(if dlq_from.is_some() { 9 } else { 4 });
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&attempts.to_le_bytes());
                if let Some(from) = dlq_from {
                    out.extend_from_slice(&from.to_le_bytes());
                }
                encode_reason(out, reason);
            }
            Event::DeadLettered { offset } => tagged_u64(out, 5, *offset),
            Event::Seek { target } => tagged_u64(out, 6, *target),
            Event::Retention { log_start } => tagged_u64(out, 7, *log_start),
            Event::Released {
                offset,
                attempt,
                at_ms,
            } => {
                out.push(10);
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&attempt.to_le_bytes());
                out.extend_from_slice(&at_ms.to_le_bytes());
            }
        }
    }

    /// Decodes one event; a message says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Event, String> {
        let mut r = Reader(LeCursor::new(bytes));
        let event = match r.u8()? {
            1 => Event::Leased {
                offset: r.u64()?,
                attempt: r.u32()?,
                times: DeliveryTimes::default(),
            },
            8 => Event::Leased {
                offset: r.u64()?,
                attempt: r.u32()?,
                times: DeliveryTimes {
                    first_s: r.u32()?,
                    last_s: r.u32()?,
                },
            },
            2 => Event::Acked { offset: r.u64()? },
            3 => Event::Delayed {
                offset: r.u64()?,
                attempt: r.u32()?,
                due_ms: r.u64()? as i64,
            },
            tag @ (4 | 9) => {
                let offset = r.u64()?;
                let attempts = r.u32()?;
                let dlq_from = if tag == 9 { Some(r.u64()?) } else { None };
                Event::DeadLetterStarted {
                    offset,
                    attempts,
                    reason: r.reason()?,
                    dlq_from,
                }
            }
            5 => Event::DeadLettered { offset: r.u64()? },
            6 => Event::Seek { target: r.u64()? },
            7 => Event::Retention {
                log_start: r.u64()?,
            },
            10 => Event::Released {
                offset: r.u64()?,
                attempt: r.u32()?,
                at_ms: r.u64()? as i64,
            },
            tag => return Err(format!("unknown journal event tag {tag}")),
        };
        if !r.0.is_empty() {
            return Err(format!(
                "{} bytes after the event",
                bytes.len() - r.0.position()
            ));
        }
        Ok(event)
    }
}

/// A dead-letter reason: kind u8, then the text (u16 length + UTF-8, at
/// most [`MAX_REASON_LEN`] bytes, cut at a character boundary).
fn encode_reason(out: &mut Vec<u8>, reason: &DeadLetterReason) {
    let (kind, text) = match reason {
        DeadLetterReason::MaxDeliveries => (0u8, ""),
        DeadLetterReason::Rejected(text) => (1u8, text.as_str()),
    };
    out.push(kind);
    let text = truncate_at_char_boundary(text, MAX_REASON_LEN);
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn tagged_u64(out: &mut Vec<u8>, tag: u8, value: u64) {
    out.push(tag);
    out.extend_from_slice(&value.to_le_bytes());
}

/// The broker's [`LeCursor`] with the journal's error messages: a short
/// read says at which byte the event was cut off.
struct Reader<'a>(LeCursor<'a>);

impl<'a> Reader<'a> {
    fn read<T>(&mut self, get: impl FnOnce(&mut LeCursor<'a>) -> Option<T>) -> Result<T, String> {
        let at = self.0.position();
        get(&mut self.0).ok_or_else(|| format!("event truncated at byte {at}"))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        self.read(|r| r.take(n))
    }
    fn u8(&mut self) -> Result<u8, String> {
        self.read(LeCursor::u8)
    }
    fn u16(&mut self) -> Result<u16, String> {
        self.read(LeCursor::u16)
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.read(LeCursor::u32)
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.read(LeCursor::u64)
    }
    /// A dead-letter reason as [`encode_reason`] writes it.
    fn reason(&mut self) -> Result<DeadLetterReason, String> {
        let kind = self.u8()?;
        let len = self.u16()? as usize;
        if len > MAX_REASON_LEN {
            return Err(format!("reason of {len} bytes exceeds {MAX_REASON_LEN}"));
        }
        let text = String::from_utf8(self.take(len)?.to_vec())
            .map_err(|_| "reason is not UTF-8".to_string())?;
        match kind {
            0 => Ok(DeadLetterReason::MaxDeliveries),
            1 => Ok(DeadLetterReason::Rejected(text)),
            other => Err(format!("unknown dead-letter reason {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
                |(offset, attempt, first_s, last_s)| Event::Leased {
                    offset,
                    attempt,
                    times: DeliveryTimes { first_s, last_s },
                }
            ),
            any::<u64>().prop_map(|offset| Event::Acked { offset }),
            (any::<u64>(), any::<u32>(), any::<i64>()).prop_map(|(offset, attempt, due_ms)| {
                Event::Delayed {
                    offset,
                    attempt,
                    due_ms,
                }
            }),
            (
                any::<u64>(),
                any::<u32>(),
                proptest::option::of(".{0,40}"),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(offset, attempts, text, dlq_from)| {
                    Event::DeadLetterStarted {
                        offset,
                        attempts,
                        reason: text
                            .map_or(DeadLetterReason::MaxDeliveries, DeadLetterReason::Rejected),
                        dlq_from,
                    }
                }),
            any::<u64>().prop_map(|offset| Event::DeadLettered { offset }),
            any::<u64>().prop_map(|target| Event::Seek { target }),
            any::<u64>().prop_map(|log_start| Event::Retention { log_start }),
            (any::<u64>(), any::<u32>(), any::<i64>()).prop_map(|(offset, attempt, at_ms)| {
                Event::Released {
                    offset,
                    attempt,
                    at_ms,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn events_round_trip(e in event()) {
            let mut bytes = Vec::new();
            e.encode(&mut bytes);
            prop_assert_eq!(Event::decode(&bytes), Ok(e));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Event::decode(&bytes);
        }
    }

    #[test]
    fn leases_written_before_delivery_times_still_decode() {
        let mut old = vec![1u8];
        old.extend_from_slice(&7u64.to_le_bytes());
        old.extend_from_slice(&2u32.to_le_bytes());
        assert_eq!(
            Event::decode(&old),
            Ok(Event::Leased {
                offset: 7,
                attempt: 2,
                times: DeliveryTimes::default(),
            })
        );
    }

    #[test]
    fn dead_letters_started_before_dlq_from_was_kept_still_decode() {
        let mut old = vec![4u8];
        old.extend_from_slice(&7u64.to_le_bytes());
        old.extend_from_slice(&3u32.to_le_bytes());
        old.extend_from_slice(&[1, 3, 0, b'b', b'a', b'd']);
        assert_eq!(
            Event::decode(&old),
            Ok(Event::DeadLetterStarted {
                offset: 7,
                attempts: 3,
                reason: DeadLetterReason::Rejected("bad".into()),
                dlq_from: None,
            })
        );
    }

    #[test]
    fn known_answer_dead_letter_started_with_its_dlq_offset() {
        let mut bytes = Vec::new();
        Event::DeadLetterStarted {
            offset: 7,
            attempts: 3,
            reason: DeadLetterReason::MaxDeliveries,
            dlq_from: Some(513),
        }
        .encode(&mut bytes);
        let mut expected = vec![9u8];
        expected.extend_from_slice(&7u64.to_le_bytes());
        expected.extend_from_slice(&3u32.to_le_bytes());
        expected.extend_from_slice(&513u64.to_le_bytes());
        expected.extend_from_slice(&[0, 0, 0]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn errors_say_where_the_event_is_cut_off_or_overruns() {
        assert_eq!(
            Event::decode(&[2, 1]),
            Err("event truncated at byte 1".to_string())
        );
        let mut long = vec![4u8];
        long.extend_from_slice(&7u64.to_le_bytes());
        long.extend_from_slice(&2u32.to_le_bytes());
        long.extend_from_slice(&[1, 5, 0, b'a']);
        assert_eq!(
            Event::decode(&long),
            Err("event truncated at byte 16".to_string()),
            "a reason text shorter than its length"
        );
        let mut trailing = Vec::new();
        Event::Seek { target: 3 }.encode(&mut trailing);
        trailing.extend_from_slice(&[0, 0]);
        assert_eq!(
            Event::decode(&trailing),
            Err("2 bytes after the event".to_string())
        );
    }

    #[test]
    fn known_answer_released() {
        let mut bytes = Vec::new();
        Event::Released {
            offset: 258,
            attempt: 2,
            at_ms: -1,
        }
        .encode(&mut bytes);
        let mut expected = vec![10u8, 2, 1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0];
        expected.extend_from_slice(&[0xff; 8]);
        assert_eq!(bytes, expected);
        assert_eq!(
            Event::decode(&expected),
            Ok(Event::Released {
                offset: 258,
                attempt: 2,
                at_ms: -1
            })
        );
    }

    #[test]
    fn known_answer_acked() {
        let mut bytes = Vec::new();
        Event::Acked { offset: 258 }.encode(&mut bytes);
        assert_eq!(bytes, [2, 2, 1, 0, 0, 0, 0, 0, 0]);
        assert!(
            Event::decode(&[11])
                .expect_err("tag")
                .contains("unknown journal event tag 11")
        );
        assert!(
            Event::decode(&[2, 1])
                .expect_err("short")
                .contains("truncated")
        );
    }
}
