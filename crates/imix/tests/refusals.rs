//! What imix refuses, and how: every bad flag and bad input of the table is refused with the
//! expected exit code and a message naming the flag or the file, before any work starts
//! (`support/refusal.rs`).

mod support {
    pub mod refusal;
}

/// (arguments with `D/` for the temp dir, exit code, message fragment)
const TABLE: &[(&str, i32, &str)] = &[
    // align
    (
        "align --corpus D/sentences.txt --out D/o/a.st --batch-size 0",
        1,
        "--batch-size 0: must be at least 1",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --lr nan",
        1,
        "--lr NaN: must be a positive number",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --lr -1",
        1,
        "--lr -1",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --lr inf",
        1,
        "--lr inf",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --k 0",
        1,
        "--k 0",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --hidden 0",
        1,
        "--hidden 0",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --steps 0",
        1,
        "--steps 0",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --lr-floor 1.5",
        1,
        "--lr-floor 1.5: must lie in [0, 1]",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --clip -1",
        1,
        "--clip -1",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --weight-decay nan",
        1,
        "--weight-decay NaN",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --max-minutes -1",
        1,
        "--max-minutes -1: must be a number >= 0",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --max-target-tokens 0",
        1,
        "--max-target-tokens 0",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --checkpoint-every 0",
        1,
        "--checkpoint-every 0",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --lora-rank 4 --lora-alpha 0",
        1,
        "--lora-alpha 0",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --lora-rank 4 --lora-targets q,zz",
        1,
        "LoRA target \"zz\"",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --deep-scale 2",
        1,
        "--deep-scale 2 without --deep-rank",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --deep-rank 4 --deep-scale 0",
        1,
        "--deep-scale 0",
    ),
    (
        "align --corpus D/missing.txt --out D/o/a.st",
        1,
        "missing.txt: No such file",
    ),
    (
        "align --corpus D/empty.txt --out D/o/a.st",
        1,
        "no sentences in",
    ),
    (
        "align --corpus D/blank.txt --out D/o/a.st",
        1,
        "no sentences in",
    ),
    (
        "align --corpus D/mid-blank.txt --out D/o/a.st",
        1,
        "mid-blank.txt:2: empty text",
    ),
    (
        "align --corpus D/notutf8.txt --out D/o/a.st",
        1,
        "notutf8.txt:2: not valid UTF-8",
    ),
    ("align --out D/o/a.st", 2, "--input"),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --resume",
        1,
        "--resume: no checkpoint at",
    ),
    (
        "warmup --data D/train.tsv --out D/o --resume",
        1,
        "--resume: no checkpoint at",
    ),
    (
        "align --corpus D/long.txt --out D/o/a.st --max-chars 10",
        1,
        "long.txt:2: text is 36 characters, over the limit of 10 (--max-chars)",
    ),
    (
        "align --corpus D/sentences.txt --out D/o/a.st --max-chars 0",
        1,
        "--max-chars 0",
    ),
    (
        "invert --input D/long.txt --output D/o/i.jsonl --max-chars 10",
        1,
        "long.txt:2: text is 36 characters",
    ),
    (
        "train --data D/train.tsv --eval D/train.tsv --max-chars 0",
        1,
        "--max-chars 0",
    ),
    // warmup
    (
        "warmup --data D/train.tsv --out D/o --batch-size 0",
        1,
        "--batch-size 0",
    ),
    (
        "warmup --data D/train.tsv --out D/o --steps 0",
        1,
        "--steps 0",
    ),
    (
        "warmup --data D/train.tsv --out D/o --beta -1",
        1,
        "--beta -1",
    ),
    (
        "warmup --data D/train.tsv --out D/o --lr-classifier nan",
        1,
        "--lr-classifier NaN",
    ),
    (
        "warmup --data D/train.tsv --out D/o --lr-adaptor 0",
        1,
        "--lr-adaptor 0",
    ),
    (
        "warmup --data D/train.tsv --out D/o --lr-encoder inf",
        1,
        "--lr-encoder inf",
    ),
    (
        "warmup --data D/train.tsv --out D/o --gen-passes 0",
        1,
        "--gen-passes 0",
    ),
    (
        "warmup --data D/train.tsv --out D/o --gen-passes many",
        2,
        "`many` is neither a number of passes nor `all`",
    ),
    (
        "warmup --data D/train.tsv --out D/o --unlabeled D/missing.txt",
        1,
        "missing.txt",
    ),
    (
        "warmup --data D/train.tsv --out D/o --unlabeled D/train.tsv --replay 0",
        1,
        "--replay 0",
    ),
    (
        "warmup --data D/train.tsv --out D/o --checkpoint-every 0",
        1,
        "--checkpoint-every 0",
    ),
    (
        "warmup --data D/missing.tsv --out D/o",
        1,
        "missing.tsv: No such file",
    ),
    (
        "warmup --data D/train.tsv --out D/o --shots 0",
        1,
        "--shots 0",
    ),
    (
        "warmup --data D/noheader.tsv --out D/o",
        1,
        "noheader.tsv:1: no column \"label\"",
    ),
    (
        "warmup --data D/badrow.tsv --out D/o",
        1,
        "badrow.tsv:3: 3 fields but the header has 2",
    ),
    (
        "warmup --data D/train.tsv --out D/o --label-column y",
        1,
        "no column \"y\"",
    ),
    // augment
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --threshold 1.5",
        1,
        "--threshold 1.5: must lie in [0, 1]",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --threshold -1",
        1,
        "--threshold -1",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --threshold nan",
        1,
        "--threshold NaN",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --per-example 0",
        1,
        "--per-example 0",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --batch-size 0",
        1,
        "--batch-size 0",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --lambda beta:inf",
        1,
        "alpha must be a positive number",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --lambda beta:0",
        1,
        "alpha must be a positive number",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --lambda 1.5",
        1,
        "values must lie in [0, 1]",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --lambda grid:",
        1,
        "lambda \"grid:\"",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --decode beam:100000",
        1,
        "from 1 to 64",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --decode rerank:0",
        1,
        "rerank:N",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --decode top-p:2",
        1,
        "top-p:P",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --decode nucleus",
        1,
        "decode \"nucleus\"",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --repetition-penalty 0",
        1,
        "--repetition-penalty 0",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --max-new-tokens 0",
        1,
        "--max-new-tokens 0",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --pairs diagonal",
        2,
        "diagonal",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --intrusion ignore",
        2,
        "ignore",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/o/a.jsonl --format xml",
        2,
        "xml",
    ),
    (
        "augment --model D/nobundle --data D/train.tsv --out D/o/a.jsonl",
        1,
        "not a bundle written by `imix warmup`",
    ),
    // invert
    (
        "invert --input D/sentences.txt --output D/o/i.jsonl --batch-size 0",
        1,
        "--batch-size 0",
    ),
    (
        "invert --input D/sentences.txt --output D/o/i.jsonl --limit 0",
        1,
        "--limit 0",
    ),
    (
        "invert --input D/empty.txt --output D/o/i.jsonl",
        1,
        "no sentences to invert",
    ),
    (
        "invert --input D/missing.txt --output D/o/i.jsonl",
        1,
        "missing.txt: No such file",
    ),
    (
        "invert --input D/sentences.txt --output D/o/i.jsonl --decode beam:0",
        1,
        "beam:W",
    ),
    // train
    (
        "train --data D/train.tsv --eval D/train.tsv --steps 0",
        1,
        "--steps 0",
    ),
    (
        "train --data D/train.tsv --eval D/train.tsv --lr nan",
        1,
        "--lr NaN",
    ),
    (
        "train --data D/train.tsv --eval D/train.tsv --finetune --epochs 0",
        1,
        "--epochs 0",
    ),
    (
        "train --data D/train.tsv --eval D/train.tsv --finetune --out D/o/c.st",
        2,
        "--out",
    ),
    (
        "train --data D/train.tsv --eval D/train.tsv --augment D/train.tsv --augment-weight 0",
        1,
        "--augment-weight 0",
    ),
    (
        "train --data D/train.tsv --eval D/train.tsv --augment-weight 0.5",
        2,
        "--augment",
    ),
    (
        "train --data D/train.tsv --eval D/train.tsv --from-warmup D",
        2,
        "--finetune",
    ),
    (
        "train --data D/train.tsv --eval D/train.tsv --finetune --from-warmup D",
        1,
        "no encoder.safetensors",
    ),
    (
        "train --data D/train.tsv --eval D/train.tsv --finetune --lr-encoder -1",
        1,
        "--lr-encoder -1",
    ),
    (
        "train --data D/train.tsv --eval D/missing.tsv",
        1,
        "missing.tsv: No such file",
    ),
    (
        "train --data D/train.tsv --eval D/train.tsv --augment D/sum.jsonl",
        1,
        "sum.jsonl:1: soft label",
    ),
    (
        "train --data D/train.tsv --eval D/train.tsv --augment D/label.jsonl",
        1,
        "label.jsonl:1: unknown label \"positive\"",
    ),
    (
        "train --data D/train.tsv --eval D/train.tsv --augment D/nan.jsonl",
        1,
        "nan.jsonl:1: probability of \"pos\" is not a number",
    ),
    (
        "train --data D/train.tsv --eval D/train.tsv --augment D/nocol.csv",
        1,
        "nocol.csv:1: no column \"soft_label.neg\"",
    ),
    (
        "train --data D/train.tsv --eval D/train.tsv --shots 0",
        1,
        "--shots 0",
    ),
    // outputs that cannot be written are found before any work
    (
        "align --corpus D/sentences.txt --out D/train.tsv/a.st",
        1,
        "not a directory",
    ),
    (
        "warmup --data D/train.tsv --out D/train.tsv/m",
        1,
        "not a directory",
    ),
    (
        "augment --model D/o --data D/train.tsv --out D/train.tsv/a.jsonl",
        1,
        "not a directory",
    ),
    (
        "invert --input D/sentences.txt --output D/train.tsv/i.jsonl",
        1,
        "not a directory",
    ),
    (
        "train --data D/train.tsv --eval D/train.tsv --out D/train.tsv/c.st",
        1,
        "not a directory",
    ),
    // hardening, second round
    (
        "warmup --data D/one.tsv --out D/o",
        1,
        "the labels hold one class only (pos)",
    ),
    (
        "warmup --data D/utf16.tsv --out D/o",
        1,
        "utf16.tsv:1: this file is UTF-16 (little-endian), not UTF-8",
    ),
    (
        "invert --input D/utf16-nobom.txt --out D/o.jsonl",
        1,
        "this file is UTF-16 (little-endian)",
    ),
    (
        "invert --input D/sentences.txt --output D",
        1,
        "is a directory: name a file to write",
    ),
    (
        "invert --input D/sentences.txt --out D/o.jsonl --mixes",
        1,
        "sentences.txt:1: --mixes needs pairs",
    ),
    (
        "invert --input D/train.tsv --out D/o.jsonl --mixes",
        1,
        "no column \"a\"",
    ),
    (
        "invert --input D/train.tsv --out D/o.jsonl --lambdas 0.5",
        2,
        "--mixes",
    ),
    // interpolate and the command line itself
    (
        "interpolate a b --steps 1",
        1,
        "--steps 1: must be at least 2",
    ),
    ("interpolate a b --decode beam:999", 1, "from 1 to 64"),
    ("frobnicate", 2, "frobnicate"),
];

#[test]
fn every_bad_flag_and_input_is_refused_clearly_before_any_work() {
    assert!(TABLE.len() >= 40, "the table has {} rows", TABLE.len());
    support::refusal::check(env!("CARGO_BIN_EXE_imix"), TABLE);
}
