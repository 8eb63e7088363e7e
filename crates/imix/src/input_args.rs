//! How input files are read, shared by every command that reads text.

use clap::Args;
use inversed_mixup::data::corpus::{ReadOptions, DEFAULT_MAX_CHARS};

/// Limits and tolerance of the input readers.
#[derive(Args, Debug, Clone)]
pub struct InputArgs {
    /// Refuse (or with --skip-bad skip) texts longer than this many characters
    #[arg(long, default_value_t = DEFAULT_MAX_CHARS, value_name = "N")]
    pub max_chars: usize,
    /// Skip bad lines (empty, too long, not UTF-8, malformed) with a warning naming each, instead
    /// of stopping at the first
    #[arg(long)]
    pub skip_bad: bool,
}

impl InputArgs {
    /// Checks the flags (before any work).
    pub fn check(&self) -> anyhow::Result<()> {
        Ok(crate::check::at_least_one("max_chars", self.max_chars)?)
    }

    /// Reading options for `text_column` (and `label_column`, when labels are read).
    pub fn options(&self, text_column: &str, label_column: Option<&str>) -> ReadOptions {
        ReadOptions {
            text_column: text_column.into(),
            label_column: label_column.map(String::from),
            max_chars: self.max_chars,
            skip_bad: self.skip_bad,
        }
    }
}
