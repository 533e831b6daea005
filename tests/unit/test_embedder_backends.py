"""Unit tests for the Embedder's ONNX Runtime backends: agreement with torch on real
headlines, order, token-budget batching, the export cache, and errors.

The exports go to a temporary ``BTCPULSE_CACHE_DIR`` (one export for the module, ~10-20 s on
a 2-core machine), so a run never depends on, or damages, the user's cache.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest

from models.embedder import BACKENDS, Embedder, _atomic_write, mean_pool
from tests.conftest import shared_file

N_TEXTS = 200


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("btcpulse-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BTCPULSE_CACHE_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def headlines() -> list[str]:
    """``N_TEXTS`` real headline + summary texts, spread over the file (what the models read)."""
    import csv

    path = shared_file("crypto_news_2021_2022", "cryptonews.csv")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    texts = [f"{r['title']}. {r['text']}" if r["text"] else r["title"] for r in rows if r["title"]]
    step = len(texts) // N_TEXTS
    return texts[::step][:N_TEXTS]


@pytest.fixture(scope="module")
def torch_emb() -> Embedder:
    return Embedder(device="cpu")


@pytest.fixture(scope="module")
def onnx_emb(onnx_cache: Path) -> Embedder:
    return Embedder(device="cpu", backend="onnx")


@pytest.fixture(scope="module")
def int8_emb(onnx_cache: Path, onnx_emb: Embedder) -> Embedder:
    return Embedder(device="cpu", backend="onnx-int8")


@pytest.fixture(scope="module")
def reference(torch_emb: Embedder, headlines: list[str]) -> np.ndarray:
    return torch_emb.encode(headlines, batch_size=32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1))  # rows are unit-norm


def test_onnx_fp32_matches_torch(onnx_emb: Embedder, headlines: list[str], reference: np.ndarray) -> None:
    out = onnx_emb.encode(headlines, batch_size=32)
    assert out.shape == (N_TEXTS, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    cos = _cosines(out, reference)
    # Measured min 0.9999999 (the same float32 maths, different kernels).
    assert cos.min() >= 0.9999, cos.min()
    assert onnx_emb.backend == "onnx" and onnx_emb.dim == 384 and onnx_emb.name == "all-MiniLM-L6-v2"


def test_onnx_int8_close_to_torch(int8_emb: Embedder, headlines: list[str], reference: np.ndarray) -> None:
    cos = _cosines(int8_emb.encode(headlines, batch_size=32), reference)
    # Measured mean 0.992, min 0.969 over these 200 texts (per-channel int8 weights, int8
    # activations quantised per text: each text runs in its own pass).
    assert cos.mean() >= 0.985, cos.mean()
    assert cos.min() >= 0.95, cos.min()
    # Still a semantic embedding: each text's nearest torch vector is its own.
    sims = int8_emb.encode(headlines[:50]) @ reference[:50].T
    assert (sims.argmax(axis=1) == np.arange(50)).all()


def test_onnx_order_preserved(onnx_emb: Embedder, headlines: list[str]) -> None:
    texts = headlines[:40]
    full = onnx_emb.encode(texts, batch_size=8)
    backwards = onnx_emb.encode(texts[::-1], batch_size=8)[::-1]
    np.testing.assert_allclose(full, backwards, atol=1e-5)
    for i in (0, 17, 39):
        np.testing.assert_allclose(onnx_emb.encode([texts[i]])[0], full[i], atol=1e-5)


def test_int8_vectors_do_not_depend_on_their_batch(int8_emb: Embedder, headlines: list[str]) -> None:
    # Dynamic int8 quantises activations with one scale per pass, so the backend runs one text
    # per pass: the same text gets the same vector whatever it is embedded with.
    texts = headlines[:40]
    full = int8_emb.encode(texts, batch_size=8)
    backwards = int8_emb.encode(texts[::-1], batch_size=32)[::-1]
    np.testing.assert_allclose(full, backwards, atol=1e-6)
    for i in (0, 17, 39):
        np.testing.assert_allclose(int8_emb.encode([texts[i]])[0], full[i], atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_token_budget_gives_same_vectors(
    backend: str, torch_emb: Embedder, onnx_emb: Embedder, headlines: list[str]
) -> None:
    emb = torch_emb if backend == "torch" else onnx_emb
    texts = [*headlines[:30], "word " * 400]  # one text truncated to max_seq_length
    plain = emb.encode(texts, batch_size=16)
    budget = emb.encode(texts, batch_size=16, max_tokens=200)  # < 128 * 2: the long one alone
    np.testing.assert_allclose(plain, budget, atol=1e-5)


def test_onnx_empty_and_bad_input(onnx_emb: Embedder) -> None:
    empty = onnx_emb.encode([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32
    with pytest.raises(TypeError):
        onnx_emb.encode("a single string")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        onnx_emb.encode(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="batch_size"):
        onnx_emb.encode(["x"], batch_size=0)
    with pytest.raises(ValueError, match="max_tokens"):
        onnx_emb.encode(["x"], max_tokens=0)


def test_bad_backend_and_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown embedding backend 'tensorrt'.*onnx-int8"):
        Embedder(backend="tensorrt")
    with pytest.raises(ValueError, match="half=True"):
        Embedder(device="cpu", backend="onnx", half=True)
    with pytest.raises(ValueError, match="intra_op_num_threads"):
        Embedder(device="cpu", backend="onnx", intra_op_num_threads=0)
    with pytest.raises(ValueError):  # no GPU here, or int8 is CPU-only where there is one
        Embedder(device="cuda", backend="onnx-int8")
    assert BACKENDS == ("torch", "onnx", "onnx-int8")


def test_auto_backend_is_int8_on_the_cpu(onnx_cache: Path) -> None:
    from models.device import resolve_backend

    assert resolve_backend("auto", "cpu") == "onnx-int8"
    assert resolve_backend("onnx", "cpu") == "onnx"
    with pytest.raises(ValueError, match="unknown encoder backend"):
        resolve_backend("tensorrt")
    assert Embedder(device="cpu", backend="auto").backend == "onnx-int8"
    assert Embedder(device="cpu").backend == "torch"  # the library's own default stays torch


def test_export_is_cached_by_weights_hash_and_rebuilt_when_damaged(
    onnx_cache: Path, onnx_emb: Embedder, int8_emb: Embedder, headlines: list[str]
) -> None:
    fp32, int8 = onnx_emb.onnx_path, int8_emb.onnx_path
    assert fp32 is not None and int8 is not None
    folder = fp32.parent
    assert folder.parent == onnx_cache / "onnx"
    assert re.fullmatch(r"all-MiniLM-L6-v2-[0-9a-f]{16}", folder.name)
    assert int8.parent == folder
    assert {p.name for p in folder.iterdir()} == {fp32.name, int8.name, "export.json"}  # no temp files

    stamp = fp32.stat().st_mtime_ns
    again = Embedder(device="cpu", backend="onnx")
    assert again.onnx_path == fp32 and fp32.stat().st_mtime_ns == stamp  # reused, not re-exported

    int8.write_bytes(b"not an onnx model")  # e.g. a disk filled up mid-copy
    rebuilt = Embedder(device="cpu", backend="onnx-int8")
    assert rebuilt.onnx_path == int8 and int8.stat().st_size > 1_000_000
    expected = int8_emb.encode(headlines[:20])
    np.testing.assert_allclose(rebuilt.encode(headlines[:20]), expected, atol=1e-5)


def test_atomic_write_race_leaves_one_complete_file(tmp_path: Path) -> None:
    final = tmp_path / "model.onnx"
    payload = b"x" * 2_000_000
    barrier = threading.Barrier(4)

    def produce(tmp: Path) -> None:
        barrier.wait()
        tmp.write_bytes(payload)

    threads = [threading.Thread(target=_atomic_write, args=(final, produce)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert final.read_bytes() == payload
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_mean_pool_ignores_padding_and_all_padding_row() -> None:
    hidden = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    mask = np.array([[1, 1, 0], [0, 0, 0]])
    out = mean_pool(hidden, mask)
    np.testing.assert_allclose(out[0], hidden[0, :2].mean(axis=0))
    np.testing.assert_array_equal(out[1], 0.0)
