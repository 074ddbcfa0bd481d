//! The segmented log (being written).
