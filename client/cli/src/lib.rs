//! # pigeon-cli
//!
//! The `pigeon` command line (binary `pigeon`, module tree in `main.rs`)
//! and the load generator behind `pigeon bench`, which is a library
//! ([`bench`]) so that the side-by-side benchmarks drive Pigeon and its
//! peers through the same harness.

#![warn(missing_docs)]

pub mod bench;
