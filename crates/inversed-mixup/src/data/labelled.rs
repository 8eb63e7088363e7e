//! Labelled data: label vocabularies, unknown labels, few-shot sampling.

use crate::data::corpus::{read_files, ReadOptions, Row};
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Labelled examples with class ids into `labels`.
#[derive(Debug, Clone)]
pub struct Labelled {
    /// Rows (text, label name, file, line).
    pub rows: Vec<Row>,
    /// Class id of each row.
    pub y: Vec<usize>,
    /// Class names, index = id.
    pub labels: Vec<String>,
}

impl Labelled {
    /// The texts.
    pub fn texts(&self) -> Vec<String> {
        self.rows.iter().map(|r| r.text.clone()).collect()
    }
}

/// Reads labelled files. With `known` labels (a trained model's), any other label is an error
/// naming its file and line; otherwise the label set is the sorted set found in the data.
pub fn read_labelled(
    paths: &[PathBuf],
    text_column: &str,
    label_column: &str,
    known: Option<&[String]>,
) -> Result<Labelled> {
    read_labelled_with(
        paths,
        &ReadOptions {
            text_column: text_column.into(),
            label_column: Some(label_column.into()),
            ..Default::default()
        },
        known,
    )
}

/// [`read_labelled`] with every reading option (`label_column` must be set).
pub fn read_labelled_with(
    paths: &[PathBuf],
    opt: &ReadOptions,
    known: Option<&[String]>,
) -> Result<Labelled> {
    if opt.label_column.is_none() {
        return Err(Error::Config(
            "reading labelled data needs a label column".into(),
        ));
    }
    let rows = read_files(paths, opt)?.rows;
    if rows.is_empty() {
        return Err(Error::Config(format!(
            "no labelled rows in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let labels: Vec<String> = match known {
        Some(k) => k.to_vec(),
        None => rows
            .iter()
            .filter_map(|r| r.label.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    };
    let mut y = Vec::with_capacity(rows.len());
    for r in &rows {
        let l = r.label.as_deref().unwrap_or("");
        let id = labels
            .iter()
            .position(|x| x == l)
            .ok_or_else(|| Error::Input {
                path: r.file.clone(),
                line: r.line,
                msg: format!(
                    "unknown label {l:?} (the model knows {})",
                    labels.join(", ")
                ),
            })?;
        y.push(id);
    }
    Ok(Labelled { rows, y, labels })
}

/// Keeps `k` random examples per class (seeded); classes with fewer keep all and are reported.
pub fn few_shot(d: &Labelled, k: usize, seed: u64) -> Labelled {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut keep = Vec::new();
    for c in 0..d.labels.len() {
        let mut idx: Vec<usize> = (0..d.y.len()).filter(|&i| d.y[i] == c).collect();
        idx.shuffle(&mut rng);
        if idx.len() < k {
            tracing::warn!(
                "class {:?} has only {} examples (asked for {k})",
                d.labels[c],
                idx.len()
            );
        }
        keep.extend(idx.into_iter().take(k));
    }
    keep.sort();
    Labelled {
        rows: keep.iter().map(|&i| d.rows[i].clone()).collect(),
        y: keep.iter().map(|&i| d.y[i]).collect(),
        labels: d.labels.clone(),
    }
}

/// A dev sample of `k` examples per class drawn (seeded) from the rows of `d` that are not in
/// `train`: model selection then never sees a training row, nor any row outside `d` (the test split
/// is a different file and is never read for it).
pub fn dev_sample(d: &Labelled, train: &Labelled, k: usize, seed: u64) -> Labelled {
    let used: BTreeSet<(&PathBuf, usize)> = train.rows.iter().map(|r| (&r.file, r.line)).collect();
    let keep: Vec<usize> = (0..d.rows.len())
        .filter(|&i| !used.contains(&(&d.rows[i].file, d.rows[i].line)))
        .collect();
    let rest = Labelled {
        rows: keep.iter().map(|&i| d.rows[i].clone()).collect(),
        y: keep.iter().map(|&i| d.y[i]).collect(),
        labels: d.labels.clone(),
    };
    few_shot(&rest, k, seed ^ 0xde5e_ed00)
}
