//! The crash loop of issue 6 against a real `pigeon-broker`: idempotent
//! producers and acking, nacking and rejecting consumers keep working while
//! the broker is killed with SIGKILL and restarted at random moments; then
//! a checker compares what the clients recorded with what the log and the
//! dead-letter topics hold (see `pigeon_suite::crash_loop` for the workload
//! and every check).
//!
//! - `crash_loop_short` runs in CI: 10 kill cycles, about a minute.
//! - `crash_loop_long` is opt-in (`--ignored`): 100 cycles at a higher
//!   rate; meant for a release build:
//!   `cargo test --release --test crash_loop_e2e -- --ignored --nocapture`.
//!
//! Both print the seed first and the figures last. `PIGEON_CRASH_SEED`
//! replays a seed (the same records, decisions and kill timing) and
//! `PIGEON_CRASH_CYCLES` changes the number of cycles.

use pigeon_suite::crash_loop::{self, Config};

#[test]
fn crash_loop_short() {
    let config = Config::short().with_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let figures = crash_loop::run(&config, dir.path());
    assert_eq!(figures.cycles, config.cycles);
    assert_eq!((figures.lost, figures.log_duplicates), (0, 0));
    assert!(figures.acked > 0 && figures.deliveries > 0, "{figures}");
}

#[test]
#[ignore = "long: 100+ kill cycles; run with --ignored (release build recommended)"]
fn crash_loop_long() {
    let config = Config::long().with_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let figures = crash_loop::run(&config, dir.path());
    assert_eq!(figures.cycles, config.cycles);
    assert_eq!((figures.lost, figures.log_duplicates), (0, 0));
    println!("{figures}");
}
