//! Cost of one delivery operation as the group's state grows: one
//! partition's delivery state machine (`pigeon_broker::delivery`) holding
//! N leases in flight (N = 1,000, 100,000, 1,000,000), measured per
//! operation with criterion. Flat figures across N are the point: no
//! operation scans the leases, the delays or the settled offsets.
//!
//! | benchmark | one iteration |
//! | --- | --- |
//! | `deliver_ack` | lease the next new message to another consumer and ack it |
//! | `expire` | the lease with the earliest deadline expires (into a delay due at once), and is leased again with the latest deadline (N stays) |
//! | `extend` | one lease's deadline moves (re-indexed) |
//! | `state_of_delayed` | `message show` of a delayed message among N delays |
//! | `ack_behind_stuck_lease` | ack a message while one old lease stops the floor (the settled set stays one range) |
//!
//! Every lease has its own deadline (leased 1 ms apart), the worst case for
//! the deadline index (no two leases share a run).
//!
//! ```sh
//! cargo bench --bench delivery_ops
//! cargo bench --bench delivery_ops -- expire      # one group
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use pigeon_broker::delivery::{GroupSettings, Jitter, PartitionDelivery};

/// Sizes of the state: leases in flight (and delays, for `state_of`).
const SIZES: [u64; 3] = [1_000, 100_000, 1_000_000];

/// The clock at the start (ms since the epoch).
const T0: i64 = 1_700_000_000_000;

fn settings() -> GroupSettings {
    GroupSettings {
        ack_timeout: Duration::from_secs(3600),
        max_deliveries: u32::MAX,
        // An expired lease is due again at once (and re-leased next).
        backoff_initial: Duration::ZERO,
        backoff_max: Duration::ZERO,
        backoff_jitter: 0.0,
        max_in_flight: u32::MAX,
        ..GroupSettings::default()
    }
}

/// `n` leases held by consumer 1, leased 1 ms apart (distinct deadlines).
fn in_flight(n: u64, settings: &GroupSettings) -> PartitionDelivery {
    let mut state = PartitionDelivery::new(0);
    for i in 0..n {
        state.deliver(1, 1, T0 + i as i64, n, settings);
    }
    state.take_events();
    state
}

fn deliver_ack(c: &mut Criterion) {
    let settings = settings();
    let mut group = c.benchmark_group("deliver_ack");
    for n in SIZES {
        let mut state = in_flight(n, &settings);
        let mut end = n;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                end += 1;
                let got = state.deliver(2, 1, T0, end, &settings);
                state.ack(2, got[0].offset).expect("ack");
                state.take_events();
            });
        });
    }
    group.finish();
}

fn expire(c: &mut Criterion) {
    // Leases of 1 ms: lease i (leased at T0 + i) ends at T0 + i + 1, so the
    // clock can move 1 ms per iteration and re-lease at or after the due
    // time with a deadline after every other one.
    let settings = GroupSettings {
        ack_timeout: Duration::from_millis(1),
        ..settings()
    };
    let mut jitter = Jitter::new(1);
    let mut group = c.benchmark_group("expire");
    for n in SIZES {
        let mut state = in_flight(n, &settings);
        let mut now = T0 + 1;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let dead = state.expire(now, &settings, &mut jitter);
                black_box(dead);
                // Due at once: leased again, ending after every other lease.
                let again = state.deliver(1, 1, now + n as i64 - 1, n, &settings);
                black_box(again);
                state.take_events();
                now += 1;
            });
        });
        assert_eq!(
            state.in_flight() as u64,
            n,
            "one expired, one leased each time"
        );
        assert_eq!(state.delayed(), 0);
    }
    group.finish();
}

fn extend(c: &mut Criterion) {
    let settings = settings();
    let mut group = c.benchmark_group("extend");
    for n in SIZES {
        let mut state = in_flight(n, &settings);
        let mut i = 0u64;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let offset = i % n;
                i += 1;
                let until = state
                    .extend(1, offset, 7_200_000, T0 + i as i64)
                    .expect("extend");
                black_box(until);
            });
        });
    }
    group.finish();
}

fn state_of_delayed(c: &mut Criterion) {
    let settings = settings();
    let mut jitter = Jitter::new(1);
    let mut group = c.benchmark_group("state_of_delayed");
    for n in SIZES {
        let mut state = in_flight(n, &settings);
        for offset in 0..n {
            let delay = Some((offset % 60_000) as i64);
            state
                .nack(1, offset, delay, T0, &settings, &mut jitter)
                .expect("nack");
        }
        state.take_events();
        let mut i = 0u64;
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                i = (i + 7919) % n;
                black_box(state.state_of(i));
            });
        });
    }
    group.finish();
}

fn ack_behind_stuck_lease(c: &mut Criterion) {
    let settings = settings();
    let mut group = c.benchmark_group("ack_behind_stuck_lease");
    for n in SIZES {
        // Offset 0 is leased and never settled; n acks follow it.
        let mut state = PartitionDelivery::new(0);
        state.deliver(1, 1, T0, 1, &settings);
        for end in (2..=n + 1).step_by(1000) {
            for d in state.deliver(2, 1000, T0, end.min(n + 1), &settings) {
                state.ack(2, d.offset).expect("ack");
            }
            state.take_events();
        }
        let mut end = state.next();
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                end += 1;
                let got = state.deliver(2, 1, T0, end, &settings);
                state.ack(2, got[0].offset).expect("ack");
                state.take_events();
            });
        });
        assert_eq!(state.settled().range_count(), 1);
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    deliver_ack(&mut c);
    expire(&mut c);
    extend(&mut c);
    state_of_delayed(&mut c);
    ack_behind_stuck_lease(&mut c);
    c.final_summary();
}
