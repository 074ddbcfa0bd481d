//! File I/O trait (being written).
