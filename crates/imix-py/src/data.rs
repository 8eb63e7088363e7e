//! Python lists in place of input files: the rows get the checks `data::corpus` applies to every
//! line of a file (trimmed, not empty, at most `max_chars` characters, no empty label), and labels
//! are mapped to class ids as `data::labelled` does. A bad row is named by its list and index
//! (`texts[3]: empty text`) where the command line names a file and line.

use crate::errors::{Fail, Result};
use inversed_mixup::data::corpus::Row;
use inversed_mixup::data::labelled::Labelled;
use inversed_mixup::Error;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Where the rows of a list come from, for `Row::file` (the library's bookkeeping of a row's origin).
const ORIGIN: &str = "texts";

/// Checked rows of `texts` (with `labels`, when given).
pub fn rows(texts: Vec<String>, labels: Option<Vec<String>>, max_chars: usize) -> Result<Vec<Row>> {
    inversed_mixup::data::flags::at_least_one("max_chars", max_chars)?;
    if let Some(l) = &labels {
        if l.len() != texts.len() {
            return Err(Fail::Bad(format!(
                "texts and labels differ in length: {} texts, {} labels",
                texts.len(),
                l.len()
            )));
        }
    }
    let mut labels = labels.map(Vec::into_iter);
    texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let label = labels.as_mut().and_then(Iterator::next);
            let text = t.trim();
            if text.is_empty() {
                return Err(Fail::Bad(format!("texts[{i}]: empty text")));
            }
            let n = text.chars().count();
            if n > max_chars {
                return Err(Fail::Bad(format!(
                    "texts[{i}]: text is {n} characters, over the limit of {max_chars} (max_chars)"
                )));
            }
            if label.as_deref().is_some_and(|l| l.trim().is_empty()) {
                return Err(Fail::Bad(format!("labels[{i}]: empty label")));
            }
            Ok(Row {
                text: text.to_string(),
                label: label.map(|l| l.trim().to_string()),
                file: PathBuf::from(ORIGIN),
                line: i + 1,
            })
        })
        .collect()
}

/// Labelled data from `texts` and `labels`: with `known` labels (a bundle's), any other label is
/// refused; otherwise the label set is the sorted set found.
pub fn labelled(
    texts: Vec<String>,
    labels: Vec<String>,
    max_chars: usize,
    known: Option<&[String]>,
) -> Result<Labelled> {
    let rows = rows(texts, Some(labels), max_chars)?;
    if rows.is_empty() {
        return Err(Error::Config(format!("no labelled rows in {ORIGIN}")).into());
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
    for (i, r) in rows.iter().enumerate() {
        let l = r.label.as_deref().unwrap_or("");
        let id = labels.iter().position(|x| x == l).ok_or_else(|| {
            Fail::Bad(format!(
                "labels[{i}]: unknown label {l:?} (the model knows {})",
                labels.join(", ")
            ))
        })?;
        y.push(id);
    }
    Ok(Labelled { rows, y, labels })
}
