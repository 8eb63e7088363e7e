//! Checks of settings before any work (the command line's flags, the Python keywords that mirror
//! them): a bad value is refused with the field's name and its valid range, never discovered after
//! minutes of work or turned into NaN output.

use crate::Error;

/// A refused setting ([`Error::Invalid`]): the field in backticks, then what is wrong.
fn refused(field: &str, rest: String) -> Error {
    Error::Invalid(format!("`{field}`{rest}"))
}

/// A finite number above zero (learning rates, Beta alpha, LoRA alpha).
pub fn positive(field: &str, v: f64) -> crate::Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(refused(field, format!(" {v}: must be a positive number")));
    }
    Ok(())
}

/// A finite number from 0 to 1 (probabilities, fractions, thresholds).
pub fn unit(field: &str, v: f64) -> crate::Result<()> {
    if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
        return Err(refused(field, format!(" {v}: must lie in [0, 1]")));
    }
    Ok(())
}

/// A count of at least one (steps, batch sizes, shots, k, widths).
pub fn at_least_one(field: &str, n: usize) -> crate::Result<()> {
    if n == 0 {
        return Err(refused(field, " 0: must be at least 1".into()));
    }
    Ok(())
}

/// A finite number that is not negative (weights of loss terms, weight decay, clipping norms).
pub fn non_negative(field: &str, v: f64) -> crate::Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(refused(field, format!(" {v}: must be a number >= 0")));
    }
    Ok(())
}

/// `--resume` needs a checkpoint to continue, and a new run must not overwrite one: both are
/// found before any work.
pub fn resume_target(resume: bool, ckpt: &std::path::Path) -> crate::Result<()> {
    match (resume, ckpt.exists()) {
        (true, false) => Err(refused(
            "resume",
            format!(
                ": no checkpoint at {} to continue (leave out `resume` to start a new run)",
                ckpt.display()
            ),
        )),
        (false, true) => Err(Error::Invalid(format!(
            "{} exists: pass `resume` to continue it, or delete it to start over",
            ckpt.display()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert!(positive("lr", 1e-3).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(positive("lr", bad)
                .unwrap_err()
                .to_string()
                .starts_with("`lr` "));
        }
        assert!(
            unit("threshold", 0.8).is_ok()
                && unit("threshold", 1.5).is_err()
                && unit("threshold", f64::NAN).is_err()
        );
        assert!(at_least_one("steps", 0).is_err() && at_least_one("steps", 1).is_ok());
        assert!(non_negative("beta", 0.0).is_ok() && non_negative("beta", -0.1).is_err());
    }
}
