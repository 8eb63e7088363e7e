//! Which vector instruction set the kernels run on: the best this CPU has (detected once), capped
//! by the `IMIX_SIMD` environment variable or [`set_cap`]. Every kernel asks [`level`], so one
//! binary built for baseline x86-64 runs AVX-512 on CPUs that have it, AVX2 on those that do not,
//! and plain loops elsewhere (aarch64 included).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// A vector instruction set the kernels have builds for, from least to most capable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Plain loops for the compilation target (SSE2 on x86-64, NEON on aarch64 where LLVM uses it).
    Scalar = 0,
    /// AVX2 + FMA: 256-bit lanes.
    Avx2 = 1,
    /// AVX-512 F/BW/DQ/VL + AVX2 + FMA: 512-bit lanes.
    Avx512 = 2,
}

impl Level {
    /// Every level, least capable first.
    pub const ALL: [Level; 3] = [Level::Scalar, Level::Avx2, Level::Avx512];

    /// The name `IMIX_SIMD` takes for this level.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    fn from_u8(v: u8) -> Level {
        match v {
            0 => Level::Scalar,
            1 => Level::Avx2,
            _ => Level::Avx512,
        }
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        Level::ALL
            .into_iter()
            .find(|l| l.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("IMIX_SIMD={s:?} is not one of scalar, avx2, avx512"))
    }
}

/// The most capable level this CPU supports.
pub fn detected() -> Level {
    static DETECTED: OnceLock<Level> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") {
                    return Level::Avx512;
                }
                return Level::Avx2;
            }
        }
        Level::Scalar
    })
}

/// No cap set yet: the first call to [`level`] reads `IMIX_SIMD`.
const UNSET: u8 = u8::MAX;
static CAP: AtomicU8 = AtomicU8::new(UNSET);

/// The cap `IMIX_SIMD` asks for (`None` when unset or empty).
pub fn cap_from_env() -> Result<Option<Level>, String> {
    match std::env::var("IMIX_SIMD") {
        Ok(v) if !v.trim().is_empty() => v.parse().map(Some),
        _ => Ok(None),
    }
}

/// Caps the level every kernel uses from now on (`None`: the detected one). For tests that compare
/// the paths, and for benchmarks that time one against another in the same process.
pub fn set_cap(cap: Option<Level>) {
    CAP.store(
        cap.map_or(Level::Avx512 as u8, |l| l as u8),
        Ordering::Relaxed,
    );
}

/// The level the kernels use now: the detected one, capped. An `IMIX_SIMD` value that does not
/// parse is ignored here; binaries refuse it at start-up through [`cap_from_env`].
#[inline]
pub fn level() -> Level {
    let mut cap = CAP.load(Ordering::Relaxed);
    if cap == UNSET {
        cap = cap_from_env()
            .ok()
            .flatten()
            .map_or(Level::Avx512 as u8, |l| l as u8);
        // A concurrent set_cap wins over the environment.
        cap = match CAP.compare_exchange(UNSET, cap, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => cap,
            Err(now) => now,
        };
    }
    detected().min(Level::from_u8(cap))
}

/// The levels this CPU can run, least capable first (what path-equality tests iterate over).
pub fn supported() -> Vec<Level> {
    Level::ALL
        .into_iter()
        .filter(|&l| l <= detected())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_bad_names_are_refused() {
        for l in Level::ALL {
            assert_eq!(l.name().parse::<Level>(), Ok(l));
        }
        assert_eq!(" AVX2 ".parse::<Level>(), Ok(Level::Avx2));
        let e = "sse9".parse::<Level>().unwrap_err();
        assert!(e.contains("sse9") && e.contains("avx512"), "{e}");
    }

    #[test]
    fn the_scalar_level_is_always_supported() {
        assert_eq!(supported()[0], Level::Scalar);
        assert_eq!(*supported().last().unwrap(), detected());
    }
}
