"""Bad input raises ImixError (a ValueError) with the message `imix` prints for the same mistake.

Where the command line names a flag (`--batch-size`), Python names the keyword (`batch_size`);
where it names a file and line (`train.tsv:4: empty text`), Python names the list and index
(`texts[2]: empty text`); the rest of the message is the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cli_error, run_imix, write_tsv

from inversed_mixup import Augmenter, ImixError


def augment_both(aug, small, bundle, imix_bin, tmp_path, kw, flags, texts=None, labels=None):
    """The Python error and the command line's error for the same augmentation call."""
    texts = small[0] if texts is None else texts
    labels = small[1] if labels is None else labels
    with pytest.raises(ImixError) as e:
        aug.augment(texts, labels, bundle, progress=False, **kw)
    data = write_tsv(tmp_path / "d.tsv", texts, labels)
    cli = cli_error(run_imix(imix_bin, "augment", "--model", bundle, "--input", str(data), "--out", str(tmp_path / "o.jsonl"), *flags))
    return str(e.value), cli


#: (Python keywords, imix flags) whose messages are identical but for the keyword's name.
SAME = {
    "decode spec": (dict(decode="beam:100000"), ["--decode", "beam:100000"]),
    "top-p out of range": (dict(decode="top-p:1.5"), ["--decode", "top-p:1.5"]),
    "batch size 0": (dict(batch_size=0), ["--batch-size", "0"]),
    "threshold": (dict(threshold=1.5), ["--threshold", "1.5"]),
    "lambda grid": (dict(lam="grid:0,2"), ["--lambda", "grid:0,2"]),
    "max new tokens": (dict(max_new_tokens=0), ["--max-new-tokens", "0"]),
}


@pytest.mark.parametrize("case", list(SAME))
def test_bad_settings_have_the_cli_message(case, aug: Augmenter, small, bundle: str, imix_bin: str, tmp_path: Path):
    kw, flags = SAME[case]
    py, cli = augment_both(aug, small, bundle, imix_bin, tmp_path, kw, flags)
    keyword = next(iter(kw))
    assert keyword in py and py.replace(keyword, flags[0], 1) == cli, (py, cli)


def test_bad_shard_has_the_cli_message(aug: Augmenter, small, bundle: str, imix_bin: str, tmp_path: Path):
    for shard, flag in [((4, 4), "4/4"), ((-1, 3), "-1/3"), ("1", "1")]:
        py, cli = augment_both(aug, small, bundle, imix_bin, tmp_path, dict(shard=shard), [f"--shard={flag}"])
        assert py == f'invalid configuration: shard "{flag}": expected I/N with 0 <= I < N, e.g. 0/4 (I is 0-based, as SLURM_ARRAY_TASK_ID)'
        assert cli == py.replace("shard", "--shard", 1), (py, cli)


def test_unknown_label_has_the_cli_message(aug: Augmenter, small, bundle: str, imix_bin: str, tmp_path: Path):
    labels = list(small[1])
    labels[7] = "meh"
    py, cli = augment_both(aug, small, bundle, imix_bin, tmp_path, {}, [], labels=labels)
    assert py == 'labels[7]: unknown label "meh" (the model knows neg, pos)'
    assert cli.endswith("d.tsv:9: " + py.split(": ", 1)[1]), cli


def test_empty_text_has_the_cli_message(aug: Augmenter, small, bundle: str, imix_bin: str, tmp_path: Path):
    texts = list(small[0])
    texts[2] = "   "
    py, cli = augment_both(aug, small, bundle, imix_bin, tmp_path, {}, [], texts=texts)
    assert py == "texts[2]: empty text" and cli.endswith("d.tsv:4: empty text"), (py, cli)
    with pytest.raises(ImixError, match=r"^texts\[1\]: empty text$"):
        aug.invert(["fine", ""], progress=False)


def test_empty_lists_are_refused(aug: Augmenter, bundle: str, imix_bin: str, tmp_path: Path):
    with pytest.raises(ImixError) as e:
        aug.augment([], [], bundle, progress=False)
    empty = write_tsv(tmp_path / "empty.tsv", [], [])
    cli = cli_error(run_imix(imix_bin, "augment", "--model", bundle, "--input", str(empty), "--out", str(tmp_path / "o.jsonl")))
    assert str(e.value) == "invalid configuration: no labelled rows in texts"
    assert cli == f"invalid configuration: no labelled rows in {empty}"
    with pytest.raises(ImixError, match="^invalid configuration: no labelled rows in texts$"):
        aug.warmup([], [], tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()
    with pytest.raises(ImixError, match="^texts: no sentences to invert$"):
        aug.invert([], progress=False)


def test_other_mistakes(aug: Augmenter, small, bundle: str, imix_bin: str, tmp_path: Path):
    with pytest.raises(ImixError, match="^texts and labels differ in length: 8 texts, 7 labels$"):
        aug.augment(small[0], small[1][:7], bundle, progress=False)
    # Not a bundle: the same message as imix for the same path.
    with pytest.raises(ImixError) as e:
        aug.augment(*small, tmp_path, progress=False)
    data = write_tsv(tmp_path / "d.tsv", *small)
    assert str(e.value) == cli_error(run_imix(imix_bin, "augment", "--model", str(tmp_path), "--input", str(data), "--out", str(tmp_path / "o.jsonl")))
    with pytest.raises(ImixError, match=r"^steps 1: must be at least 2 \(the two ends\)$"):
        aug.interpolate("a", "b", steps=1)
    with pytest.raises(ImixError, match="^steps 0: must be at least 1$"):
        aug.warmup(*small, tmp_path / "w", steps=0)
    with pytest.raises(TypeError):
        aug.augment(*small, bundle, shard=3)
    # Keywords the command has no flag for, and values of the wrong type, name the keyword.
    with pytest.raises(ImixError, match="^unknown field stepz"):
        aug.warmup(*small, tmp_path / "w", stepz=3)
    with pytest.raises(ImixError, match="^max_new_tokens: invalid value: integer `-1`"):
        aug.augment(*small, bundle, max_new_tokens=-1)


def test_a_misspelt_instruction_set_cap_is_refused(monkeypatch, imix_bin: str, tmp_path: Path):
    # The same refusal as the command line's, before any model loads.
    monkeypatch.setenv("IMIX_SIMD", "sse9")
    with pytest.raises(ImixError) as e:
        Augmenter()
    msg = 'IMIX_SIMD="sse9" is not one of scalar, avx2, avx512'
    assert str(e.value) == msg
    assert cli_error(run_imix(imix_bin, "fetch")) == msg


def test_labels_and_empty_texts_are_checked_as_the_cli_checks(aug: Augmenter, small, tmp_path: Path):
    for bad in (None, 1.5, float("nan"), True):
        labels = list(small[1])
        labels[3] = bad
        with pytest.raises(ImixError, match=r"^labels\[3\]: .* is not a label \(a str or an int\)$"):
            aug.warmup(small[0], labels, tmp_path / "w", progress=False)
    assert not (tmp_path / "w").exists()
    with pytest.raises(ImixError, match=r"^texts\[1\]: empty text$"):
        aug.embed(["fine", "  "])


def test_huge_shard_numbers_are_refused_not_a_panic(aug: Augmenter, small, bundle: str):
    # Shard arithmetic overflowed here once (a PanicException, which `except Exception` misses).
    with pytest.raises(ImixError, match=r"shards but only \d+ decode batches"):
        aug.augment(*small, bundle, shard=(2**62, 2**63), progress=False)
