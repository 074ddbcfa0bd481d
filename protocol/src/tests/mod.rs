//! Tests of the protocol as a whole: property tests (round trips, codec
//! streaming, robustness against arbitrary bytes) and unit tests (limits,
//! error offsets, known-answer frames).

mod groups;
mod known_answer;
mod limits;
mod robustness;
mod round_trip;
mod strategies;
mod support;
