//! Measurement: text similarity of reconstructions, classification metrics, statistics over seeds.

pub mod classes;
pub mod stats;
pub mod text;
