//! Shared helpers for the end-to-end tests in `tests/` and the benchmarks in
//! `benches/`: locating the built binaries, temp data dirs, waiting for a
//! condition with a deadline.
