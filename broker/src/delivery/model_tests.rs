//! Model test of one partition's delivery state machine: random
//! deliveries, acks, nacks, rejects, extends, releases, lease expiries,
//! consumer disconnects, seeks and dead-letter completions run against the
//! real state machine and a per-offset model; after every step they must
//! agree on every offset. Invariants checked on the way: no message leased
//! to two consumers (the model holds one state per offset), attempts never
//! exceed `max_deliveries`, redelivery delays follow the backoff formula
//! within the jitter, a release is not counted (the message is due at once
//! with the attempts it had before), nothing is dead-lettered twice between
//! seeks, and in the end every message is settled or dead-lettered.
//!
//! The indexes are checked against the model too: the earliest lease
//! deadline and the next due time are exact, and the settled set holds one
//! range per run of settled offsets above the floor. The state rebuilt from
//! the journal, from scratch and from a snapshot file, equals the live
//! state.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const MAX_DELIVERIES: u32 = 3;

fn settings() -> GroupSettings {
    GroupSettings {
        ack_timeout: Duration::from_millis(1000),
        max_deliveries: MAX_DELIVERIES,
        backoff_initial: Duration::from_millis(100),
        backoff_multiplier: 2.0,
        backoff_max: Duration::from_millis(1000),
        backoff_jitter: 0.2,
        max_in_flight: 5,
    }
}

#[derive(Debug, Clone)]
enum Step {
    Produce(u64),
    Deliver {
        consumer: u32,
        max: usize,
    },
    Ack {
        consumer: u32,
        pick: usize,
    },
    Nack {
        consumer: u32,
        pick: usize,
        delay: Option<i64>,
    },
    Reject {
        consumer: u32,
        pick: usize,
    },
    Extend {
        consumer: u32,
        pick: usize,
        ms: i64,
    },
    Release {
        consumer: u32,
        pick: usize,
    },
    Advance(i64),
    Disconnect(u32),
    Seek(usize),
    CompleteDeadLetters,
}

fn step() -> impl Strategy<Value = Step> {
    let consumer = 1u32..4;
    prop_oneof![
        2 => (1u64..6).prop_map(Step::Produce),
        4 => (consumer.clone(), 1usize..6).prop_map(|(consumer, max)| Step::Deliver { consumer, max }),
        4 => (consumer.clone(), any::<usize>()).prop_map(|(consumer, pick)| Step::Ack { consumer, pick }),
        2 => (consumer.clone(), any::<usize>(), proptest::option::of(0i64..500)).prop_map(|(consumer, pick, delay)| Step::Nack { consumer, pick, delay }),
        1 => (consumer.clone(), any::<usize>()).prop_map(|(consumer, pick)| Step::Reject { consumer, pick }),
        1 => (consumer.clone(), any::<usize>(), 1i64..3000).prop_map(|(consumer, pick, ms)| Step::Extend { consumer, pick, ms }),
        2 => (consumer.clone(), any::<usize>()).prop_map(|(consumer, pick)| Step::Release { consumer, pick }),
        3 => (1i64..1500).prop_map(Step::Advance),
        1 => consumer.prop_map(Step::Disconnect),
        1 => any::<usize>().prop_map(Step::Seek),
        2 => Just(Step::CompleteDeadLetters),
    ]
}

/// The model's view of one offset.
#[derive(Debug, Clone, PartialEq)]
enum M {
    New,
    InFlight(Lease),
    Delayed { attempts: u32, due_ms: i64 },
    DeadLettering { attempts: u32 },
    Settled,
}

struct Harness {
    sut: PartitionDelivery,
    model: Vec<M>,
    now: i64,
    jitter: Jitter,
    settings: GroupSettings,
    /// Dead-letter copies per (offset, seek epoch).
    dead_letters: HashMap<(u64, u32), u32>,
    epoch: u32,
    /// Every journal event so far, through its byte encoding.
    journal: Vec<Event>,
    /// A copy of the state taken mid-run (a snapshot) and the journal
    /// length at that moment.
    snapshot: Option<(PartitionDelivery, usize)>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            sut: PartitionDelivery::new(0),
            model: Vec::new(),
            now: 1_000_000,
            jitter: Jitter::new(42),
            settings: settings(),
            dead_letters: HashMap::new(),
            epoch: 0,
            journal: Vec::new(),
            snapshot: None,
        }
    }

    fn pick(&self, pick: usize) -> Option<u64> {
        (!self.model.is_empty()).then(|| (pick % self.model.len()) as u64)
    }

    fn held_by(&self, consumer: u32) -> usize {
        self.model
            .iter()
            .filter(|m| matches!(m, M::InFlight(l) if l.consumer == consumer))
            .count()
    }

    /// After the state machine delayed or dead-lettered `offset` that was
    /// leased with `attempt`: check it against the rules, adopt its due time.
    fn returned(&mut self, offset: u64, attempt: u32, explicit: Option<i64>) {
        match self.sut.state_of(offset) {
            OffsetState::Delayed { attempts, due_ms } => {
                assert!(
                    attempt < MAX_DELIVERIES,
                    "attempt {attempt} was delayed instead of dead-lettered"
                );
                assert_eq!(attempts, attempt);
                let delay = due_ms - self.now;
                match explicit {
                    Some(d) => assert_eq!(delay, d, "explicit nack delay"),
                    None => {
                        let base = self.settings.base_backoff_ms(attempt);
                        let (lo, hi) = (base * 0.8 - 1.0, base * 1.2 + 1.0);
                        assert!(
                            (lo..=hi).contains(&(delay as f64)),
                            "delay {delay} outside {lo}..{hi} for attempt {attempt}"
                        );
                    }
                }
                self.model[offset as usize] = M::Delayed { attempts, due_ms };
            }
            OffsetState::DeadLettering { attempts } => {
                assert_eq!(attempts, attempt);
                assert_eq!(
                    attempt, MAX_DELIVERIES,
                    "dead-lettered before max_deliveries"
                );
                self.model[offset as usize] = M::DeadLettering { attempts };
            }
            other => panic!("offset {offset} returned as {other:?}"),
        }
    }

    fn apply(&mut self, step: &Step) {
        let now = self.now;
        match *step {
            Step::Produce(n) => self.model.extend((0..n).map(|_| M::New)),
            Step::Deliver { consumer, max } => {
                let room =
                    (self.settings.max_in_flight as usize).saturating_sub(self.held_by(consumer));
                let max = max.min(room);
                let got =
                    self.sut
                        .deliver(consumer, max, now, self.model.len() as u64, &self.settings);
                let mut due: Vec<(i64, u64, u32)> = self
                    .model
                    .iter()
                    .enumerate()
                    .filter_map(|(o, m)| match m {
                        M::Delayed { attempts, due_ms } if *due_ms <= now => {
                            Some((*due_ms, o as u64, *attempts))
                        }
                        _ => None,
                    })
                    .collect();
                due.sort();
                let fresh = self
                    .model
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| **m == M::New)
                    .map(|(o, _)| (o as u64, 0u32));
                let expected: Vec<(u64, u32)> = due
                    .into_iter()
                    .map(|(_, o, a)| (o, a))
                    .chain(fresh)
                    .take(max)
                    .collect();
                let got_pairs: Vec<(u64, u32)> =
                    got.iter().map(|d| (d.offset, d.attempt - 1)).collect();
                assert_eq!(got_pairs, expected, "deliveries");
                for d in got {
                    assert!(
                        d.attempt <= MAX_DELIVERIES,
                        "attempt {} beyond max_deliveries",
                        d.attempt
                    );
                    let lease = Lease {
                        consumer,
                        attempt: d.attempt,
                        deadline_ms: now + 1000,
                    };
                    self.model[d.offset as usize] = M::InFlight(lease);
                }
            }
            Step::Ack { consumer, pick } => {
                let Some(offset) = self.pick(pick) else {
                    return;
                };
                let result = self.sut.ack(consumer, offset);
                match self.model[offset as usize] {
                    M::InFlight(l) if l.consumer == consumer => {
                        assert_eq!(result, Ok(()));
                        self.model[offset as usize] = M::Settled;
                    }
                    _ => assert_eq!(result, Err(SettleError::LeaseLost { offset })),
                }
            }
            Step::Nack {
                consumer,
                pick,
                delay,
            } => {
                let Some(offset) = self.pick(pick) else {
                    return;
                };
                let result = self.sut.nack(
                    consumer,
                    offset,
                    delay,
                    now,
                    &self.settings,
                    &mut self.jitter,
                );
                match self.model[offset as usize] {
                    M::InFlight(l) if l.consumer == consumer && offset < self.sut.floor() => {
                        // Skipped by a forward seek: not redelivered.
                        assert_eq!(result, Ok(None));
                        self.model[offset as usize] = M::Settled;
                    }
                    M::InFlight(l) if l.consumer == consumer => {
                        let dead = result.expect("nack of a held lease");
                        assert_eq!(dead.is_some(), l.attempt >= MAX_DELIVERIES);
                        self.returned(
                            offset,
                            l.attempt,
                            delay.filter(|_| l.attempt < MAX_DELIVERIES),
                        );
                    }
                    _ => assert_eq!(result, Err(SettleError::LeaseLost { offset })),
                }
            }
            Step::Reject { consumer, pick } => {
                let Some(offset) = self.pick(pick) else {
                    return;
                };
                let result = self.sut.reject(consumer, offset, "bad".into());
                match self.model[offset as usize] {
                    M::InFlight(l) if l.consumer == consumer && offset < self.sut.floor() => {
                        assert_eq!(result, Ok(None));
                        self.model[offset as usize] = M::Settled;
                    }
                    M::InFlight(l) if l.consumer == consumer => {
                        let dead = result
                            .expect("reject of a held lease")
                            .expect("dead letter");
                        assert_eq!(dead.reason, DeadLetterReason::Rejected("bad".into()));
                        self.model[offset as usize] = M::DeadLettering {
                            attempts: l.attempt,
                        };
                    }
                    _ => assert_eq!(result, Err(SettleError::LeaseLost { offset })),
                }
            }
            Step::Extend { consumer, pick, ms } => {
                let Some(offset) = self.pick(pick) else {
                    return;
                };
                let result = self.sut.extend(consumer, offset, ms, now);
                match &mut self.model[offset as usize] {
                    M::InFlight(l) if l.consumer == consumer => {
                        assert_eq!(result, Ok(now + ms));
                        l.deadline_ms = now + ms;
                    }
                    _ => assert_eq!(result, Err(SettleError::LeaseLost { offset })),
                }
            }
            Step::Release { consumer, pick } => {
                let Some(offset) = self.pick(pick) else {
                    return;
                };
                let result = self.sut.release(consumer, offset, now);
                match self.model[offset as usize] {
                    M::InFlight(l) if l.consumer == consumer && offset < self.sut.floor() => {
                        assert_eq!(result, Ok(()));
                        self.model[offset as usize] = M::Settled;
                    }
                    M::InFlight(l) if l.consumer == consumer => {
                        assert_eq!(result, Ok(()));
                        self.model[offset as usize] = M::Delayed {
                            attempts: l.attempt - 1,
                            due_ms: now,
                        };
                    }
                    _ => assert_eq!(result, Err(SettleError::LeaseLost { offset })),
                }
            }
            Step::Advance(ms) => {
                self.now += ms;
                let now = self.now;
                self.sut.expire(now, &self.settings, &mut self.jitter);
                self.return_matching(|l| l.deadline_ms <= now);
            }
            Step::Disconnect(consumer) => {
                self.sut
                    .drop_consumer(consumer, now, &self.settings, &mut self.jitter);
                self.return_matching(|l| l.consumer == consumer);
            }
            Step::Seek(pick) => {
                let target = (pick % (self.model.len() + 1)) as u64;
                self.sut.seek(target);
                self.epoch += 1;
                for (offset, m) in self.model.iter_mut().enumerate() {
                    let below = (offset as u64) < target;
                    *m = match m {
                        M::InFlight(l) if below => M::InFlight(*l),
                        M::DeadLettering { attempts } if below => M::DeadLettering {
                            attempts: *attempts,
                        },
                        _ if below => M::Settled,
                        _ => M::New,
                    };
                }
            }
            Step::CompleteDeadLetters => {
                let pending: Vec<u64> = self.sut.pending_dead_letters().map(|d| d.offset).collect();
                for offset in pending {
                    let count = self.dead_letters.entry((offset, self.epoch)).or_default();
                    *count += 1;
                    assert_eq!(*count, 1, "offset {offset} dead-lettered twice");
                    self.sut.dead_lettered(offset);
                    assert!(matches!(
                        self.model[offset as usize],
                        M::DeadLettering { .. }
                    ));
                    self.model[offset as usize] = M::Settled;
                }
            }
        }
    }

    /// Leases matching `returns` came back: a seek may have skipped them.
    fn return_matching(&mut self, returns: impl Fn(&Lease) -> bool) {
        let floor = self.sut.floor();
        for offset in 0..self.model.len() as u64 {
            if let M::InFlight(l) = self.model[offset as usize]
                && returns(&l)
            {
                if offset < floor {
                    self.model[offset as usize] = M::Settled;
                } else {
                    self.returned(offset, l.attempt, None);
                }
            }
        }
    }

    /// Moves the state machine's new events into the journal (encoded and
    /// decoded, as the journal log stores them).
    fn journal_events(&mut self) {
        for event in self.sut.take_events() {
            let mut bytes = Vec::new();
            event.encode(&mut bytes);
            self.journal
                .push(Event::decode(&bytes).expect("journal event decodes"));
        }
        if self.snapshot.is_none() && self.journal.len() > 20 {
            self.snapshot = Some((self.sut.clone(), self.journal.len()));
        }
    }

    /// A restart: the state rebuilt from the journal (from scratch, and from
    /// the snapshot plus the events after it) equals the live state, once
    /// open leases are recovered on both sides.
    fn check_recovery(&self) {
        let mut live = self.sut.clone();
        live.take_events();
        let dead_live = live.recover_leases(self.now, &self.settings);
        let mut from_scratch =
            PartitionDelivery::replay(PartitionDelivery::new(0), self.journal.clone());
        let dead_scratch = from_scratch.recover_leases(self.now, &self.settings);
        assert_eq!(dead_scratch, dead_live, "dead letters after recovery");
        assert_eq!(from_scratch, live, "state rebuilt from the whole journal");
        if let Some((snapshot, at)) = &self.snapshot {
            // Through the snapshot file format, as a restart reads it.
            let bytes = super::snapshot::encode(snapshot, *at as u64);
            let (base, covered) = super::snapshot::decode(&bytes).expect("snapshot decodes");
            assert_eq!(covered, *at as u64);
            let mut from_snapshot = PartitionDelivery::replay(base, self.journal[*at..].to_vec());
            from_snapshot.recover_leases(self.now, &self.settings);
            assert_eq!(
                from_snapshot, live,
                "state rebuilt from a snapshot and the journal after it"
            );
        }
        for offset in 0..self.model.len() as u64 {
            if let OffsetState::Delayed { attempts, .. } | OffsetState::DeadLettering { attempts } =
                live.state_of(offset)
            {
                assert!(attempts <= MAX_DELIVERIES);
            }
        }
    }

    fn check(&self) {
        for (offset, m) in self.model.iter().enumerate() {
            let expected = match m {
                M::New => OffsetState::Available { attempts: 0 },
                M::InFlight(l) => OffsetState::InFlight(*l),
                M::Delayed { attempts, due_ms } => OffsetState::Delayed {
                    attempts: *attempts,
                    due_ms: *due_ms,
                },
                M::DeadLettering { attempts } => OffsetState::DeadLettering {
                    attempts: *attempts,
                },
                M::Settled => OffsetState::Settled,
            };
            assert_eq!(
                self.sut.state_of(offset as u64),
                expected,
                "offset {offset}"
            );
        }
        let in_flight = self
            .model
            .iter()
            .filter(|m| matches!(m, M::InFlight(_)))
            .count();
        assert_eq!(self.sut.in_flight(), in_flight);
        let open = self
            .model
            .iter()
            .filter(|m| !matches!(m, M::Settled))
            .count() as u64;
        assert_eq!(
            self.sut.lag(self.model.len() as u64),
            open,
            "lag counts what is not settled"
        );
        self.check_indexes();
    }

    /// The deadline and due indexes are exact, and the settled set holds
    /// one range per run of settled offsets above the floor.
    fn check_indexes(&self) {
        let deadline = self
            .model
            .iter()
            .filter_map(|m| match m {
                M::InFlight(l) => Some(l.deadline_ms),
                _ => None,
            })
            .min();
        assert_eq!(
            self.sut.next_lease_deadline(),
            deadline,
            "earliest deadline"
        );
        let due_after = self
            .model
            .iter()
            .filter_map(|m| match m {
                M::Delayed { due_ms, .. } if *due_ms > self.now => Some(*due_ms),
                _ => None,
            })
            .min();
        assert_eq!(self.sut.next_due_after(self.now), due_after, "next due");
        let floor = self.sut.floor() as usize;
        let above = self.model.get(floor..).unwrap_or_default();
        let settled = above.iter().filter(|m| **m == M::Settled).count();
        let runs = above
            .iter()
            .enumerate()
            .filter(|(i, m)| **m == M::Settled && (*i == 0 || above[i - 1] != M::Settled))
            .count();
        assert_eq!(
            self.sut.settled().len(),
            settled as u64,
            "settled above the floor"
        );
        assert_eq!(self.sut.settled().range_count(), runs, "one range per run");
    }

    /// Delivers and acks until everything is settled or dead-lettered.
    fn drain(&mut self) {
        for _ in 0..200 {
            self.apply(&Step::CompleteDeadLetters);
            self.apply(&Step::Advance(5_000));
            let delivered =
                self.sut
                    .deliver(99, 1000, self.now, self.model.len() as u64, &self.settings);
            for d in delivered {
                self.sut.ack(99, d.offset).expect("ack while draining");
                self.model[d.offset as usize] = M::Settled;
            }
            self.check();
            if self.model.iter().all(|m| *m == M::Settled) {
                return;
            }
        }
        panic!("not everything settled: {:?}", self.model);
    }
}

/// `PROPTEST_CASES` when set (for long runs), else `default`.
fn cases_from_env(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases_from_env(256)))]

    #[test]
    fn delivery_state_machine_matches_model(steps in proptest::collection::vec(step(), 1..120)) {
        let mut harness = Harness::new();
        for step in &steps {
            harness.apply(step);
            harness.check();
            harness.journal_events();
        }
        harness.check_recovery();
        harness.drain();
    }
}

#[test]
fn a_poison_message_is_dead_lettered_after_max_deliveries() {
    let mut h = Harness::new();
    h.apply(&Step::Produce(1));
    for attempt in 1..=MAX_DELIVERIES {
        h.apply(&Step::Advance(2_000));
        let got = h.sut.deliver(1, 1, h.now, 1, &h.settings);
        assert_eq!(got.len(), 1, "attempt {attempt} delivered");
        assert_eq!(got[0].attempt, attempt);
        let dead = h
            .sut
            .nack(1, 0, None, h.now, &h.settings, &mut h.jitter)
            .expect("nack");
        assert_eq!(dead.is_some(), attempt == MAX_DELIVERIES);
    }
    assert_eq!(
        h.sut
            .pending_dead_letters()
            .map(|d| (d.offset, d.attempts))
            .collect::<Vec<_>>(),
        vec![(0, MAX_DELIVERIES)]
    );
    h.sut.dead_lettered(0);
    assert_eq!(h.sut.state_of(0), OffsetState::Settled);
    assert_eq!((h.sut.dead_lettered, h.sut.floor()), (1, 1));
}

#[test]
fn a_release_is_replayed_from_the_journal_with_its_attempt_not_counted() {
    let mut h = Harness::new();
    h.apply(&Step::Produce(2));
    let got = h.sut.deliver(1, 2, h.now, 2, &h.settings);
    assert_eq!(got.len(), 2);
    h.sut
        .nack(1, 1, Some(0), h.now, &h.settings, &mut h.jitter)
        .expect("nack");
    let again = h.sut.deliver(1, 1, h.now, 2, &h.settings);
    assert_eq!((again[0].offset, again[0].attempt), (1, 2));
    h.sut.release(1, 0, h.now).expect("release");
    h.sut.release(1, 1, h.now).expect("release");
    h.journal_events();
    assert!(
        h.journal.contains(&Event::Released {
            offset: 1,
            attempt: 2,
            at_ms: h.now
        }),
        "{:?}",
        h.journal
    );
    let mut replayed = PartitionDelivery::replay(PartitionDelivery::new(0), h.journal.clone());
    let mut live = h.sut.clone();
    live.take_events();
    assert_eq!(replayed, live, "replay equals the live state");
    assert_eq!(
        replayed.state_of(1),
        OffsetState::Delayed {
            attempts: 1,
            due_ms: h.now
        }
    );
    assert!(
        replayed.recover_leases(h.now, &h.settings).is_empty(),
        "no lease left open by the releases"
    );
    let next = replayed.deliver(2, 2, h.now, 2, &h.settings);
    assert_eq!(
        next.iter()
            .map(|d| (d.offset, d.attempt))
            .collect::<Vec<_>>(),
        vec![(0, 1), (1, 2)],
        "the same attempts again"
    );
    // Crash story: a Released event lost with the last commit window
    // leaves the lease open; after the restart it comes back counted.
    let lost = h.journal[..h.journal.len() - 1].to_vec();
    let mut restarted = PartitionDelivery::replay(PartitionDelivery::new(0), lost);
    restarted.recover_leases(h.now, &h.settings);
    assert!(
        matches!(
            restarted.state_of(1),
            OffsetState::Delayed { attempts: 2, .. }
        ),
        "{:?}",
        restarted.state_of(1)
    );
}

#[test]
fn a_million_acks_behind_a_stuck_lease_are_one_settled_range() {
    let settings = settings();
    let mut p = PartitionDelivery::new(0);
    let stuck = p.deliver(1, 1, 0, 1, &settings);
    assert_eq!(stuck[0].offset, 0);
    let n = 1_000_000u64;
    let mut now = 0;
    for start in (1..=n).step_by(10_000) {
        let end = (start + 10_000).min(n + 1);
        for d in p.deliver(2, 10_000, now, end, &settings) {
            p.ack(2, d.offset).expect("ack");
        }
        // The stuck lease is extended forever.
        now += 100;
        p.extend(1, 0, 60_000, now).expect("extend");
        p.take_events();
    }
    assert_eq!((p.floor(), p.next()), (0, n + 1));
    assert_eq!(p.settled().len(), n);
    assert_eq!(
        p.settled().range_count(),
        1,
        "one range, not a million entries"
    );
    let snapshot = super::snapshot::encode(&p, 0);
    assert!(snapshot.len() < 200, "snapshot of {} bytes", snapshot.len());
    p.ack(1, 0).expect("ack");
    assert_eq!(p.floor(), n + 1);
    assert!(p.settled().is_empty());
}

#[test]
fn retention_counts_messages_removed_before_delivery() {
    let mut p = PartitionDelivery::new(0);
    let got = p.deliver(1, 2, 0, 10, &settings());
    p.ack(1, got[0].offset).expect("ack");
    p.apply_retention(6);
    // Offsets 2..6 were never delivered; 1 is in flight, 0 settled.
    assert_eq!(p.removed_by_retention, 4);
    assert_eq!(p.floor(), 6);
    assert_eq!(
        p.deliver(2, 10, 0, 10, &settings())
            .iter()
            .map(|d| d.offset)
            .collect::<Vec<_>>(),
        vec![6, 7, 8, 9]
    );
}
