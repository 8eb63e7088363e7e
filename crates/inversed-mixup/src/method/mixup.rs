//! Mixup in embedding space: pairing strategies, mixing ratios and soft labels.

use crate::{Error, Result};
use rand::seq::IndexedRandom;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};

/// Which pairs of examples are mixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Pairing {
    /// Partners always carry a different label.
    CrossClass,
    /// Partners always carry the same label.
    SameClass,
    /// Any other example.
    Random,
}

impl std::str::FromStr for Pairing {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cross-class" => Ok(Pairing::CrossClass),
            "same-class" => Ok(Pairing::SameClass),
            "random" => Ok(Pairing::Random),
            _ => Err(Error::Config(format!(
                "`pairs` {s:?}: expected cross-class, same-class or random"
            ))),
        }
    }
}

/// How the mixing ratio lambda is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum LambdaSpec {
    /// Always this value.
    Fixed(f64),
    /// Drawn from Beta(alpha, alpha).
    Beta(f64),
    /// Every value of the grid for every pair.
    Grid(Vec<f64>),
    /// Drawn uniformly from `[lo, hi]`: mid-lambda mixes, far from either source.
    Uniform(f64, f64),
}

impl std::str::FromStr for LambdaSpec {
    type Err = Error;
    /// Parses `0.5`, `beta:ALPHA`, `grid:0,0.25,0.5` or `uniform:LO,HI`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |m: &str| {
            Error::Config(format!(
                "`lambda` {s:?}: {m} (expected 0.5, beta:ALPHA, grid:0,0.5,1 or uniform:0.3,0.7)"
            ))
        };
        let unit = |v: &str| -> Result<f64> {
            let x: f64 = v.trim().parse().map_err(|_| bad("not a number"))?;
            if (0.0..=1.0).contains(&x) {
                Ok(x)
            } else {
                Err(bad("values must lie in [0, 1]"))
            }
        };
        if let Some(a) = s.strip_prefix("beta:") {
            let a: f64 = a.parse().map_err(|_| bad("alpha is not a number"))?;
            if !(a.is_finite() && a > 0.0) {
                return Err(bad("alpha must be a positive number"));
            }
            Ok(LambdaSpec::Beta(a))
        } else if let Some(u) = s.strip_prefix("uniform:") {
            let v = u.split(',').map(unit).collect::<Result<Vec<_>>>()?;
            match v[..] {
                [lo, hi] if lo <= hi => Ok(LambdaSpec::Uniform(lo, hi)),
                _ => Err(bad("uniform needs LO,HI with LO <= HI")),
            }
        } else if let Some(g) = s.strip_prefix("grid:") {
            let v = g.split(',').map(unit).collect::<Result<Vec<_>>>()?;
            if v.is_empty() {
                return Err(bad("empty grid"));
            }
            Ok(LambdaSpec::Grid(v))
        } else {
            Ok(LambdaSpec::Fixed(unit(s)?))
        }
    }
}

/// One planned mix: `lambda * x_a + (1 - lambda) * x_b`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    /// Index of the first source.
    pub a: usize,
    /// Index of the second source.
    pub b: usize,
    /// Weight of `a`.
    pub lambda: f64,
}

/// Plans `per_example` partners for every example (each with one lambda, or every grid value).
/// Examples without any valid partner are reported as an error, never skipped silently.
pub fn plan(
    labels: &[usize],
    pairing: Pairing,
    per_example: usize,
    lambda: &LambdaSpec,
    seed: u64,
) -> Result<Vec<Mix>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dist = match lambda {
        LambdaSpec::Beta(alpha) => Some(beta(*alpha)?),
        _ => None,
    };
    let mut out = Vec::new();
    for (i, &yi) in labels.iter().enumerate() {
        let cands: Vec<usize> = (0..labels.len())
            .filter(|&j| j != i)
            .filter(|&j| match pairing {
                Pairing::CrossClass => labels[j] != yi,
                Pairing::SameClass => labels[j] == yi,
                Pairing::Random => true,
            })
            .collect();
        if cands.is_empty() {
            return Err(Error::Config(format!("example {i} has no {pairing:?} partner: the data needs at least two examples per class (same-class) or two classes (cross-class)")));
        }
        for _ in 0..per_example {
            let j = *cands.choose(&mut rng).expect("non-empty");
            match lambda {
                LambdaSpec::Fixed(l) => out.push(Mix {
                    a: i,
                    b: j,
                    lambda: *l,
                }),
                LambdaSpec::Beta(_) => out.push(Mix {
                    a: i,
                    b: j,
                    lambda: dist.as_ref().expect("built above").sample(&mut rng),
                }),
                LambdaSpec::Grid(g) => out.extend(g.iter().map(|&l| Mix {
                    a: i,
                    b: j,
                    lambda: l,
                })),
                LambdaSpec::Uniform(lo, hi) => out.push(Mix {
                    a: i,
                    b: j,
                    lambda: rng.random_range(*lo..=*hi),
                }),
            }
        }
    }
    Ok(out)
}

/// Soft label `lambda * onehot(a) + (1 - lambda) * onehot(b)` over `classes` classes.
pub fn soft_label(ya: usize, yb: usize, lambda: f64, classes: usize) -> Vec<f64> {
    let mut v = vec![0.0; classes];
    v[ya] += lambda;
    v[yb] += 1.0 - lambda;
    v
}

/// Beta(alpha, alpha), or a configuration error naming alpha.
pub fn beta(alpha: f64) -> Result<Beta<f64>> {
    Beta::new(alpha, alpha).map_err(|e| Error::Config(format!("beta:{alpha}: {e}")))
}
