//! Flag checks that run before any model loads (the library's `data::flags`, shared with the
//! Python package): a bad value is refused with the flag's name and its valid range.

pub use inversed_mixup::data::flags::{at_least_one, non_negative, positive, resume_target, unit};
