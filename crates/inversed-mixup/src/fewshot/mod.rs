//! The few-shot benchmark: every augmentation method on the same samples, resumable cell by cell.

pub mod baselines;
pub mod grid;
pub mod judge;
pub mod methods;
pub mod settings;
