//! The record batch format (being written).
