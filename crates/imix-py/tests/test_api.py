"""The Python API: shapes and types, invert/interpolate/warmup round trips against the command
line, progress callbacks, and the GIL released during compute."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_imix, write_tsv

import inversed_mixup
from inversed_mixup import Augmenter, ImixError


def test_embed_is_float32_unit_rows_of_width_dim(aug: Augmenter):
    e = aug.embed(["A warm, funny film.", "A dull, lifeless film.", "The cat sat on the mat."])
    assert isinstance(e, np.ndarray) and e.dtype == np.float32 and e.shape == (3, aug.dim) == (3, 384)
    assert e.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # Same text, same embedding, whatever else is in the batch.
    np.testing.assert_array_equal(aug.embed(["A warm, funny film."])[0], e[0])
    assert aug.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        aug.embed("a single string is not a list of texts")


def test_invert_rows_equal_imix_invert(aug: Augmenter, imix_bin: str, tmp_path: Path):
    texts = ["The cat sat on the mat.", "  A warm, funny film.  "]
    # correct:4, the default's path (correct:16) at a quarter of its cost.
    rows = aug.invert(texts, max_new_tokens=8, decode="correct:4", progress=False)
    src = tmp_path / "s.txt"
    src.write_text("\n".join(texts) + "\n")
    p = run_imix(imix_bin, "invert", "--input", str(src), "--out", str(tmp_path / "o.jsonl"), "--max-new-tokens", "8", "--decode", "correct:4")
    assert p.returncode == 0, p.stderr
    cli = [json.loads(l) for l in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert rows == cli
    assert list(rows[0]) == ["text", "reconstruction", "cosine", "token_f1", "bleu", "exact"]
    assert rows[1]["text"] == "A warm, funny film."  # trimmed, as a file line is


def test_interpolate_walks_from_b_to_a(aug: Augmenter):
    rows = aug.interpolate("A warm, funny film.", "A dull, lifeless film.", steps=3, max_new_tokens=8)
    assert [r["lambda"] for r in rows] == [0.0, 0.5, 1.0]
    assert all(list(r) == ["lambda", "text", "cos_a", "cos_b"] and r["text"] for r in rows)
    assert rows[-1]["cos_a"] > rows[-1]["cos_b"] and rows[0]["cos_b"] > rows[0]["cos_a"]


def test_warmup_writes_the_bundle_imix_writes(bundle: str):
    d = Path(bundle)
    for f in ("classifier.safetensors", "adaptor.safetensors", "warmup.ckpt", "warmup.curve.jsonl"):
        assert (d / f).is_file(), f
    curve = [json.loads(l) for l in (d / "warmup.curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [1, 2] and all(np.isfinite([c["ce"], c["gen"]]).all() for c in curve)


def test_warmup_refines_on_unlabeled_text_after_its_passes(aug: Augmenter, small, tmp_path: Path):
    # gen_passes=0.5 over the small set is its first step only; the unlabeled file keeps L_GEN on.
    texts, labels = small
    pool = tmp_path / "pool.txt"
    pool.write_text("a quiet town by the river.\nthe market opens at dawn.\n")
    out = Path(aug.warmup(texts, labels, tmp_path / "m", steps=3, batch_size=4, gen_passes=0.5, unlabeled=pool, replay=2, progress=False))
    curve = [json.loads(l) for l in (out / "warmup.curve.jsonl").read_text().splitlines()]
    assert all(c["gen"] > 0 for c in curve), curve
    bare = Path(aug.warmup(texts, labels, tmp_path / "b", steps=3, batch_size=4, gen_passes=0.5, progress=False))
    curve = [json.loads(l) for l in (bare / "warmup.curve.jsonl").read_text().splitlines()]
    assert curve[0]["gen"] > 0 and all(c["gen"] == 0 for c in curve[1:]), curve
    with pytest.raises(ImixError, match="missing.txt"):
        aug.warmup(texts, labels, tmp_path / "c", steps=1, unlabeled=[tmp_path / "missing.txt"], progress=False)


def checkpoint_header(path: Path) -> dict:
    """The JSON header inversed-mixup keeps in a safetensors file's metadata."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(json.loads(raw[8 : 8 + n])["__metadata__"]["inversed_mixup"])


def test_int_labels_are_strings_and_imix_reads_the_bundle(aug: Augmenter, small, imix_bin: str, tmp_path: Path):
    texts, labels = small
    ints = [1 if l == "pos" else 0 for l in labels]
    out = aug.warmup(texts, np.array(ints), tmp_path / "m", steps=1, batch_size=4, progress=False)
    assert checkpoint_header(Path(out) / "classifier.safetensors")["labels"] == ["0", "1"]
    # The command line augments with it, reading the labels from a file.
    data = write_tsv(tmp_path / "d.tsv", texts, [str(i) for i in ints])
    p = run_imix(imix_bin, "augment", "--model", out, "--input", str(data), "--out", str(tmp_path / "a.jsonl"), "--max-new-tokens", "4", "--batch-size", "8")
    assert p.returncode == 0, p.stderr
    rows = aug.augment(texts, ints, out, max_new_tokens=4, batch_size=8, progress=False)
    assert rows == [json.loads(l) for l in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert set(rows[0]["soft_label"]) == {"0", "1"}


def test_progress_callback_sees_every_batch(aug: Augmenter, small, bundle: str):
    seen = []
    rows = aug.augment(*small, bundle, max_new_tokens=4, batch_size=3, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(3, 8), (6, 8), (8, 8)] and len(rows) == aug.last_stats["generated"] - aug.last_stats["empty"]
    # An exception in the callback reaches the caller.
    def boom(d, t):
        raise KeyError("stop")

    with pytest.raises(KeyError, match="stop"):
        aug.invert(["The cat sat on the mat."], max_new_tokens=2, progress=boom)


def test_compute_releases_the_gil(aug: Augmenter):
    """Another Python thread runs while a call computes."""
    state = {"in_call": False, "ticks": 0}

    def work():
        state["in_call"] = True
        aug.invert(["The cat sat on the mat.", "A dull, lifeless film."] * 2, max_new_tokens=8, decode="greedy", progress=False)
        state["in_call"] = False

    t = threading.Thread(target=work)
    t.start()
    while not state["in_call"]:
        time.sleep(0.001)
    while state["in_call"]:
        state["ticks"] += 1
        time.sleep(0.0005)
    t.join()
    assert state["ticks"] > 20, state


def test_package_surface():
    assert issubclass(ImixError, ValueError)
    assert inversed_mixup.__version__ == "0.1.0"
    pkg = Path(inversed_mixup.__file__).parent
    assert (pkg / "py.typed").is_file() and (pkg / "__init__.pyi").is_file()


def test_warmup_resume_continues_the_curve_without_repeating_steps(aug: Augmenter, small, tmp_path: Path):
    # Keep the step-2 checkpoint of a 4-step run, then put it back as if the run had been killed
    # after logging steps 3 and part of 4: resuming cuts the curve back to step 2, as imix does,
    # and retraces steps 3 and 4 exactly.
    out = tmp_path / "m"
    ckpt, curve, kept = out / "warmup.ckpt", out / "warmup.curve.jsonl", tmp_path / "step2.ckpt"

    def keep_step_2(done, total):
        if done == 2:
            shutil.copy(ckpt, kept)

    aug.warmup(*small, out, steps=4, batch_size=4, checkpoint_every=2, progress=keep_step_2)
    full = [json.loads(l) for l in curve.read_text().splitlines()]
    shutil.copy(kept, ckpt)
    with curve.open("a") as f:
        f.write('{"step":4,"c')
    aug.warmup(*small, out, steps=4, batch_size=4, checkpoint_every=2, resume=True, progress=False)
    rows = [json.loads(l) for l in curve.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows == full
