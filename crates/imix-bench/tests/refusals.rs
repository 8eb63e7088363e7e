//! What `imix-bench` refuses, and how (the harness of `imix`'s refusal table).

#[path = "../../imix/tests/support/refusal.rs"]
mod refusal;

/// (arguments with `D/` for the temp dir, exit code, message fragment)
const TABLE: &[(&str, i32, &str)] = &[
    ("--data D --out D/o --shots 0", 2, "--shots"),
    (
        "--data D --out D/o --final-from-warmup",
        2,
        "--warmup-finetune",
    ),
    (
        "--data D --out D/o --warmup-finetune --final-from-warmup --task-model probe",
        1,
        "--final-from-warmup: the linear probe",
    ),
    (
        "--data D --out D/o --shots some",
        2,
        "neither a count of at least 1 nor `all`",
    ),
    (
        "--data D --out D/o --datasets toy --methods none",
        1,
        "toy/train.tsv does not exist",
    ),
    ("--data D --out D/o --seeds 0", 1, "--seeds 0"),
    ("--data D --out D/o --threshold 2", 1, "--threshold 2"),
    ("--data D --out D/o --epochs 0", 1, "--epochs 0"),
    ("--data D --out D/o --max-test 0", 1, "--max-test 0"),
    ("--data D --out D/o --lr-encoder 0", 1, "--lr-encoder 0"),
    ("--data D --out D/o --per-example 0", 1, "--per-example 0"),
    ("--data D --out D/o --aug-weight -1", 1, "--aug-weight -1"),
    ("--data D --out D/o --methods foo", 2, "foo"),
    ("--data D --out D/o --max-minutes -1", 1, "--max-minutes -1"),
    (
        "--data D/nowhere --out D/o",
        1,
        "retrieval-mixup needs unlabeled sentences",
    ),
    ("--data D --out D/train.tsv/b", 1, "not a directory"),
    ("--out D/o", 2, "--data <DIR>"),
];

#[test]
fn every_bad_flag_is_refused_clearly_before_any_work() {
    refusal::check(env!("CARGO_BIN_EXE_imix-bench"), TABLE);
}
