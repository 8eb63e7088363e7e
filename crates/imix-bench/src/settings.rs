//! What a benchmark row depends on beyond its cell, method, task model and warm-up flags: the
//! settings of the run that made it, recorded on the row so that a run with other settings never
//! reuses it as its own.

use crate::grid::{shots_name, BenchConfig, CellResult, Protocol};
use inversed_mixup::Result;
use std::collections::BTreeMap;
use std::path::Path;

/// Setting name -> value, as recorded in `results.jsonl` (a map, so that a conflict can name the
/// settings that differ).
pub type Settings = BTreeMap<String, String>;

impl BenchConfig {
    /// This run's settings; `adaptor` is the stage-1 adaptor file, identified by its content (a
    /// new shipped adaptor is a new setting: the grid runs again).
    pub fn settings(&self, adaptor: &Path) -> Result<Settings> {
        let mut s = Settings::new();
        let mut put = |k: &str, v: String| s.insert(k.to_string(), v);
        put("per_example", self.per_example.to_string());
        // Recorded only when set, so that rows from before the setting existed still match.
        if self.aug_weight != 1.0 {
            put("aug_weight", self.aug_weight.to_string());
        }
        put("warmup_steps", self.warmup_steps.to_string());
        put("pairing", format!("{:?}", self.pairing));
        put("lambda", format!("{:?}", self.lambda));
        let g = &self.gen;
        put(
            "decode",
            format!(
                "{:?} max_new_tokens={} no_repeat_ngram={} repetition_penalty={} temperature={} valid_utf8={}",
                g.decode, g.max_new_tokens, g.no_repeat_ngram, g.repetition_penalty, g.temperature, g.valid_utf8
            ),
        );
        put("threshold", self.threshold.to_string());
        put(
            "max_test",
            self.max_test.map_or("all".into(), |n| n.to_string()),
        );
        // Recorded only on dev, so that test rows from before the setting existed still match.
        if self.eval_dev {
            put("eval_split", "dev".into());
        }
        match &self.protocol {
            Protocol::Probe => put("probe", format!("steps={} lr={}", self.cls_steps, self.cls_lr)),
            Protocol::Finetune(f) => put(
                "finetune",
                format!("epochs={} batch={} lr_encoder={} lr_head={} warmup={} weight_decay={} top_layers={}", f.epochs, f.batch_size, f.lr_encoder, f.lr_head, f.warmup, f.weight_decay, f.top_layers),
            ),
        };
        put("adaptor", file_id(adaptor)?);
        Ok(s)
    }
}

/// `sha256:PREFIX` of a file's bytes: what identifies an adaptor across copies and names.
fn file_id(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|e| inversed_mixup::Error::io(path, e))?;
    let hex: String = Sha256::digest(&bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("sha256:{hex}"))
}

/// The first row of `rows` that this run (settings `mine`, shot counts `shots`) would report with
/// its own but that was computed with other settings, described with the settings that differ
/// (`line` is 1-based in results.jsonl). Within one task model, warm-up setting and shot count a
/// folder holds one set of settings, every dataset and method alike (conservative: a baseline is
/// refused over a setting that cannot change it); other shot counts may differ (the fully
/// supervised setting trains fewer epochs). Rows without a record (written before settings were
/// recorded) are taken as they are.
pub fn conflict(
    rows: &[CellResult],
    cfg: &BenchConfig,
    shots: &[usize],
    mine: &Settings,
) -> Option<String> {
    rows.iter().enumerate().find_map(|(i, r)| {
        let theirs = r.settings.as_ref()?;
        let same_kind = r.task_model == cfg.protocol.name()
            && shots.contains(&r.shots)
            && (r.warmup_finetune, r.final_from_warmup) == cfg.warm_flags(r.method);
        if !same_kind || theirs == mine {
            return None;
        }
        let keys: std::collections::BTreeSet<&String> = theirs.keys().chain(mine.keys()).collect();
        let none = String::from("(unset)");
        let diff: Vec<String> = keys
            .into_iter()
            .filter(|k| theirs.get(*k) != mine.get(*k))
            .map(|k| {
                format!(
                    "{k} {} (this run: {})",
                    theirs.get(k).unwrap_or(&none),
                    mine.get(k).unwrap_or(&none)
                )
            })
            .collect();
        Some(format!(
            "line {}: {} {}-shot seed {} {} was computed with {}",
            i + 1,
            r.dataset,
            shots_name(r.shots),
            r.seed,
            r.method,
            diff.join(", ")
        ))
    })
}
