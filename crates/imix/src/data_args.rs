//! Labelled-data arguments shared by warmup, augment and train.

use crate::input_args::InputArgs;
use anyhow::Result;
use clap::Args;
use inversed_mixup::data::labelled::{few_shot, read_labelled_with, Labelled};
use std::path::PathBuf;

/// Where labelled data comes from and how much of it to use.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Labelled data: .tsv (header label<TAB>text), .csv or .jsonl
    #[arg(long = "input", visible_alias = "data", value_name = "FILE")]
    pub data: PathBuf,
    /// Column (or JSON key) with the text
    #[arg(long, default_value = "text")]
    pub text_column: String,
    /// Column (or JSON key) with the label
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Keep only K examples per class, sampled with --shots-seed (same seed, same sample)
    #[arg(long, value_name = "K")]
    pub shots: Option<usize>,
    /// Seed of the few-shot sample
    #[arg(long, default_value_t = 0)]
    pub shots_seed: u64,
    #[command(flatten)]
    pub input: InputArgs,
}

impl DataArgs {
    /// Reads the data (with a known label set when a model exists) and applies --shots.
    pub fn load(&self, known: Option<&[String]>) -> Result<Labelled> {
        Ok(self.load_with_pool(known)?.1)
    }

    /// The whole file and the sample --shots draws from it.
    pub fn load_with_pool(&self, known: Option<&[String]>) -> Result<(Labelled, Labelled)> {
        if let Some(k) = self.shots {
            crate::check::at_least_one("shots", k)?;
        }
        self.input.check()?;
        let all = read_labelled_with(
            std::slice::from_ref(&self.data),
            &self
                .input
                .options(&self.text_column, Some(&self.label_column)),
            known,
        )?;
        let d = match self.shots {
            Some(k) => few_shot(&all, k, self.shots_seed),
            None => all.clone(),
        };
        tracing::info!(
            "{} labelled sentences, classes: {}",
            d.rows.len(),
            d.labels.join(", ")
        );
        Ok((all, d))
    }
}
