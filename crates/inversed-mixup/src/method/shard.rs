//! Deterministic partition of stage 3 over independent processes (`--shard I/N`): shard I gets a
//! contiguous run of whole decode batches, so its rows are exactly the rows the unsharded run
//! writes for those batches, and the shards' outputs concatenated in order equal the unsharded one.

use crate::{Error, Result};
use std::ops::Range;

/// Shard `index` (0-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which shard, from 0 to `count - 1`.
    pub index: usize,
    /// How many shards.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!("`shard` {s:?}: expected I/N with 0 <= I < N, e.g. 0/4 (I is 0-based, as SLURM_ARRAY_TASK_ID)"))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// The whole work as one shard.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// The items (mixes) of this shard among `n`, decoded in batches of `batch`: whole batches,
    /// split as evenly as batches allow.
    pub fn range(&self, n: usize, batch: usize) -> Range<usize> {
        let batches = n.div_ceil(batch.max(1)) as u128;
        // In u128: user-given shard numbers times the batch count must not overflow.
        let first = |i: usize| {
            let b = (batches * i as u128 / self.count as u128) * batch.max(1) as u128;
            b.min(n as u128) as usize
        };
        first(self.index)..first(self.index + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shard numbers near usize::MAX (a hostile or mistyped `--shard`) neither overflow nor panic.
    #[test]
    fn huge_shard_numbers_do_not_overflow() {
        let s: Shard = format!("{}/{}", usize::MAX - 1, usize::MAX)
            .parse()
            .unwrap();
        let r = s.range(100, 16);
        assert!(r.start <= r.end && r.end <= 100, "{r:?}");
        assert_eq!(
            Shard {
                index: 3,
                count: usize::MAX
            }
            .range(100, 16),
            0..0
        );
    }

    #[test]
    fn shards_tile_the_work_in_whole_batches() {
        for n in [0, 1, 7, 16, 33, 100] {
            for batch in [1, 4, 16] {
                for count in [1, 2, 3, 5, 8] {
                    let ranges: Vec<_> = (0..count)
                        .map(|index| Shard { index, count }.range(n, batch))
                        .collect();
                    assert_eq!(ranges[0].start, 0);
                    assert_eq!(ranges[count - 1].end, n);
                    for w in ranges.windows(2) {
                        assert_eq!(
                            w[0].end, w[1].start,
                            "n {n} batch {batch} count {count}: {ranges:?}"
                        );
                    }
                    for r in &ranges {
                        assert!(r.start % batch == 0 && r.start <= r.end, "{ranges:?}");
                        // Even: shards differ by at most one batch.
                        assert!(
                            r.len() <= (n.div_ceil(batch) / count + 1) * batch,
                            "{ranges:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn specs_parse_and_bad_ones_name_the_flag() {
        assert_eq!(
            "2/4".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 4 }
        );
        for bad in ["4/4", "0/0", "1", "a/b", "-1/3", "1/2/3"] {
            assert!(
                bad.parse::<Shard>()
                    .unwrap_err()
                    .to_string()
                    .contains("`shard`"),
                "{bad}"
            );
        }
    }
}
