//! Redelivery timer load: 1,000,000 messages of one partition leased, then
//! nacked into delayed redelivery, measured for memory (bytes of heap per
//! tracked message, counted by a wrapping global allocator) and for the cost
//! of firing (taking every due message back out for delivery). Then two
//! memory figures of other shapes: leases taken one at a time (each its own
//! deadline, the worst case of the deadline index), and acks behind one
//! lease that is never settled (the settled offsets above the floor).
//!
//! ```sh
//! cargo bench --bench delivery_timers
//! PIGEON_BENCH_MESSAGES=200000 cargo bench --bench delivery_timers
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use pigeon_broker::delivery::{GroupSettings, Jitter, PartitionDelivery};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only
// keeps a count of the bytes outstanding.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as for `GlobalAlloc::realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn main() {
    let n: u64 = std::env::var("PIGEON_BENCH_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let settings = GroupSettings {
        max_deliveries: 10,
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
        ..GroupSettings::default()
    };
    let mut jitter = Jitter::new(7);
    let now = 1_700_000_000_000i64;
    let mut state = PartitionDelivery::new(0);
    let consumer = 1;

    let before = live();
    let started = Instant::now();
    let leased = state.deliver(consumer, n as usize, now, n, &settings);
    let lease_time = started.elapsed();
    assert_eq!(leased.len() as u64, n);
    drop(leased);
    state.take_events();
    state.compact();
    let lease_bytes = live() - before;
    println!(
        "| leases held | {n} | {:.1} B each | leased in {lease_time:.2?} ({:.0} per s) |",
        lease_bytes as f64 / n as f64,
        n as f64 / lease_time.as_secs_f64()
    );

    let started = Instant::now();
    for offset in 0..n {
        // Spread the due times over a minute (backoff with jitter).
        let _ = state.nack(
            consumer,
            offset,
            None,
            now + (offset as i64 % 60_000),
            &settings,
            &mut jitter,
        );
    }
    let nack_time = started.elapsed();
    state.take_events();
    state.compact();
    let delayed_bytes = live() - before;
    println!(
        "| delayed redeliveries | {} | {:.1} B each | scheduled in {nack_time:.2?} ({:.0} per s) |",
        state.delayed(),
        delayed_bytes as f64 / n as f64,
        n as f64 / nack_time.as_secs_f64()
    );

    // Fire: advance the clock in 10 ms steps past every due time, taking
    // what is due each step, as the group's timer would.
    let due_at = now + 62_000 + 1_200;
    let mut clock = now;
    let mut fired = 0usize;
    let mut late_steps = 0usize;
    let started = Instant::now();
    while clock <= due_at {
        clock += 10;
        let step_start = Instant::now();
        let got = state.deliver(consumer, usize::MAX, clock, n, &settings);
        fired += got.len();
        if step_start.elapsed() > Duration::from_millis(2) {
            late_steps += 1;
        }
        state.take_events();
    }
    let fire_time = started.elapsed();
    let steps = (due_at - now) / 10;
    println!(
        "| fired | {fired} | {steps} timer steps of 10 ms | all taken in {fire_time:.2?} of CPU; {late_steps} steps took over 2 ms |"
    );
    assert_eq!(fired as u64, n, "every delayed message fired");
    drop(state);
    one_deadline_each(n, &settings);
    acks_behind_a_stuck_lease(n, &settings);
}

/// `n` leases taken one per ms: no two share a deadline.
fn one_deadline_each(n: u64, settings: &GroupSettings) {
    let now = 1_700_000_000_000i64;
    let mut state = PartitionDelivery::new(0);
    let before = live();
    for i in 0..n {
        state.deliver(1, 1, now + i as i64, n, settings);
        if i % 4096 == 0 {
            state.take_events();
        }
    }
    state.take_events();
    state.compact();
    println!(
        "| leases held, each its own deadline | {n} | {:.1} B each | — |",
        (live() - before) as f64 / n as f64
    );
}

/// Offset 0 leased and never settled, then `n` messages delivered and
/// acked behind it: the floor stays at 0.
fn acks_behind_a_stuck_lease(n: u64, settings: &GroupSettings) {
    let now = 1_700_000_000_000i64;
    let mut state = PartitionDelivery::new(0);
    state.deliver(1, 1, now, 1, settings);
    state.take_events();
    state.compact();
    let before = live();
    let started = Instant::now();
    for end in (2..=n + 1).step_by(1000) {
        for d in state.deliver(2, 1000, now, end.min(n + 1), settings) {
            let _ = state.ack(2, d.offset);
        }
        state.take_events();
    }
    state.compact();
    println!(
        "| acks behind a stuck lease | {n} | {:.2} B each | acked in {:.2?} |",
        (live() - before) as f64 / n as f64,
        started.elapsed()
    );
}
