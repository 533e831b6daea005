"""Device selection and CPU thread control for the ML models.

Everything that decides *where* a model runs lives here, so the embedder and any later
model agree on the rule: ``"auto"`` means CUDA when PyTorch can see a GPU, else the CPU. The
same goes for *how* a transformer encoder runs (:func:`resolve_backend`).
"""

from __future__ import annotations

import torch

#: Values accepted by :func:`pick_device`. ``"cuda:N"`` (a specific GPU) is accepted too.
DEVICE_CHOICES = ("auto", "cpu", "cuda")


def pick_device(pref: str = "auto") -> str:
    """Resolve a device preference to a concrete torch device string.

    Args:
        pref: ``"auto"`` (CUDA if ``torch.cuda.is_available()``, else CPU), ``"cpu"``,
            ``"cuda"`` or ``"cuda:N"``. Case and surrounding whitespace are ignored.

    Returns:
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        ValueError: ``pref`` is not one of the accepted values, or it asks for CUDA on a
            machine where PyTorch sees no GPU (or fewer than ``N + 1`` GPUs). Failing here,
            rather than deep inside the first forward pass, makes a misconfiguration obvious.
    """
    p = pref.strip().lower() if isinstance(pref, str) else ""
    if p == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if p == "cpu":
        return "cpu"
    if p == "cuda" or p.startswith("cuda:"):
        index = 0
        if p != "cuda":
            suffix = p.removeprefix("cuda:")
            if not suffix.isdigit():
                raise ValueError(f"device {pref!r}: expected 'cuda:<index>', e.g. 'cuda:0'")
            index = int(suffix)
        if not torch.cuda.is_available():
            raise ValueError(f"device {pref!r} requested but torch sees no CUDA device; use 'auto' or 'cpu'")
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device {pref!r} requested but torch sees only {torch.cuda.device_count()} GPU(s)"
            )
        return p
    raise ValueError(
        f"unknown device {pref!r}; expected one of {', '.join(DEVICE_CHOICES)} or 'cuda:<index>'"
    )


#: Encoder backends: torch, ONNX Runtime fp32, ONNX Runtime with int8 weights and activations.
BACKENDS = ("torch", "onnx", "onnx-int8")


def resolve_backend(backend: str, device: str = "auto") -> str:
    """The encoder backend to use for ``backend`` on ``device``.

    ``"auto"`` is ``"onnx-int8"`` on the CPU and ``"torch"`` on CUDA. On 2 CPU cores int8 runs
    the analysis models at 1.3-2x torch's items/s (``python -m bench.threads``) and keeps the
    decisions calibrated on torch vectors within the labelled data's resolution (categories,
    stories: ``python -m models.backends_eval``; sentiment: ``python -m models.evaluate``).
    Any other value is returned as it is, once checked.

    Raises:
        ValueError: not ``"auto"`` nor one of :data:`BACKENDS`; a bad ``device`` (as
            :func:`pick_device`).
    """
    if backend == "auto":
        return "torch" if pick_device(device).startswith("cuda") else "onnx-int8"
    if backend not in BACKENDS:
        raise ValueError(
            f"unknown encoder backend {backend!r}; expected auto or one of {', '.join(BACKENDS)}"
        )
    return backend


def texts_per_pass(backend: str, batch_size: int) -> int:
    """Most texts one forward pass of an encoder on ``backend`` may take, given ``batch_size``.

    1 for ``"onnx-int8"``: its activations are quantised with one scale per pass, so a text
    batched with others would get a vector (and a label) that depends on them, and a
    redelivered article another analysis than the first time. Alone, no padding is computed
    either; ``python -m bench.threads --backend onnx-int8`` measured no loss of rate.
    """
    return 1 if backend == "onnx-int8" else batch_size


def torch_threads(n: int | None = None) -> int:
    """Set (when ``n`` is given) and return the number of intra-op CPU threads torch uses.

    Args:
        n: Threads to use, ``>= 1``; ``None`` only reads the current setting.

    Returns:
        The thread count in effect after the call.

    Raises:
        ValueError: ``n`` is less than 1.
    """
    if n is not None:
        if n < 1:
            raise ValueError(f"torch_threads: n must be >= 1, got {n}")
        torch.set_num_threads(n)
    return torch.get_num_threads()
