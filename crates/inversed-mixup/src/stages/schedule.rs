//! Which rows each optimiser step trains on, shared by stages 1 and 2: a pure function of
//! (seed, step), so that a resumed run sees exactly the data the uninterrupted run would have.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Epoch-wise shuffled batches over a fixed set of rows.
#[derive(Debug, Clone)]
pub struct Batches {
    rows: Vec<usize>,
    batch_size: usize,
    seed: u64,
    salt: u64,
    lengths: Option<Vec<usize>>,
}

impl Batches {
    /// Batches of `batch_size` (at most the number of rows) over `rows`; `salt` separates the
    /// seed streams of different stages.
    pub fn new(rows: Vec<usize>, batch_size: usize, seed: u64, salt: u64) -> Self {
        let batch_size = batch_size.min(rows.len()).max(1);
        Self {
            rows,
            batch_size,
            seed,
            salt,
            lengths: None,
        }
    }

    /// Groups rows of similar `lengths` (indexed by row) into the same batch, within windows of
    /// 32 batches, to cut padding; batch order stays random.
    pub fn grouped_by(mut self, lengths: Vec<usize>) -> Self {
        self.lengths = Some(lengths);
        self
    }

    /// Full batches per epoch.
    pub fn per_epoch(&self) -> usize {
        (self.rows.len() / self.batch_size).max(1)
    }

    /// The rows of step `step` (0-based).
    pub fn at(&self, step: usize) -> Vec<usize> {
        let (bs, per_epoch) = (self.batch_size, self.per_epoch());
        let (epoch, k) = (step / per_epoch, step % per_epoch);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ self.salt.wrapping_add(epoch as u64));
        let mut idx = self.rows.clone();
        idx.shuffle(&mut rng);
        let Some(len) = &self.lengths else {
            return idx[k * bs..((k + 1) * bs).min(idx.len())].to_vec();
        };
        let mut batches: Vec<Vec<usize>> = Vec::with_capacity(per_epoch);
        for chunk in idx.chunks(bs * 32) {
            let mut c = chunk.to_vec();
            c.sort_by_key(|&i| len[i]);
            batches.extend(
                c.chunks(bs)
                    .filter(|b| b.len() == bs)
                    .map(<[usize]>::to_vec),
            );
        }
        batches.shuffle(&mut rng);
        batches.into_iter().nth(k).unwrap_or_default()
    }
}
