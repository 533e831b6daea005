"""Unit tests for models/: embedder shape/norm/semantics, device choice, sentiment quality."""

from __future__ import annotations

import csv
import os
from pathlib import Path

# Set before anything imports transformers / huggingface_hub: the tests must never reach
# for the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

from models import LABELS, Embedder, LexiconSentiment, ModelLoadError, pick_device
from models.evaluate import tune_band
from models.sentiment import VADER_BAND, labels_from_scores

REPO_ROOT = Path(__file__).resolve().parents[2]
CRYPTOLIN = REPO_ROOT.parent / "shared" / "data" / "cryptolin_dev" / "cryptolin_dev.csv"
GOLD = {-1: "negative", 0: "neutral", 1: "positive"}


# ---------------------------------------------------------------- device


def test_pick_device_auto_and_cpu() -> None:
    import torch

    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("CPU ") == "cpu"


@pytest.mark.parametrize("bad", ["gpu", "", "cuda:x", "tpu"])
def test_pick_device_rejects_unknown(bad: str) -> None:
    with pytest.raises(ValueError):
        pick_device(bad)


def test_pick_device_cuda_without_gpu_is_clear_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA"):
        pick_device("cuda")


# ---------------------------------------------------------------- embedder


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def test_embedder_shape_dtype_norm(embedder: Embedder) -> None:
    texts = ["Bitcoin hits $60,000", "Ethereum gas fees fall", "x" * 5000]  # last is truncated
    emb = embedder.encode(texts)
    assert embedder.name == "all-MiniLM-L6-v2"
    assert embedder.dim == 384
    assert emb.shape == (3, 384)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_embedder_semantics(embedder: Embedder) -> None:
    a, b, c = embedder.encode(
        [
            "Bitcoin ETF approved by SEC",
            "SEC approves spot bitcoin exchange-traded fund",
            "Recipe for banana bread",
        ]
    )
    assert float(a @ b) > float(a @ c) + 0.3
    assert float(a @ b) > float(b @ c) + 0.3


def test_embedder_batch_size_and_order_invariance(embedder: Embedder) -> None:
    texts = [f"headline number {i} about bitcoin" for i in range(10)]
    full = embedder.encode(texts, batch_size=64)
    small = embedder.encode(texts, batch_size=3)
    single = embedder.encode([texts[7]])
    np.testing.assert_allclose(full, small, atol=1e-5)
    np.testing.assert_allclose(full[7], single[0], atol=1e-5)


def test_embedder_empty_and_bad_input(embedder: Embedder) -> None:
    empty = embedder.encode([])
    assert empty.shape == (0, 384)
    assert empty.dtype == np.float32
    with pytest.raises(TypeError):
        embedder.encode("a single string")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        embedder.encode(["x"], batch_size=0)


def test_embedder_unknown_model_is_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot load"):
        Embedder(model="no-such-org/no-such-model-xyz", device="cpu")
    with pytest.raises(ModelLoadError):
        Embedder(model=str(tmp_path), device="cpu")  # exists but holds no model


# ---------------------------------------------------------------- sentiment


def test_sentiment_obvious_examples() -> None:
    model = LexiconSentiment()
    texts = [
        "Bitcoin soars to all-time high as SEC approves spot ETF",
        "Exchange hacked, $200 million stolen; withdrawals halted",
        "Bitcoin price plunges as China announces crypto crackdown",
        "Bitcoin rallies 10% on record inflows",
        "Coinbase to publish quarterly report on Thursday",
    ]
    scores, labels = model.score(texts)
    assert model.name == "vader+crypto"
    assert scores.dtype == np.float32 and scores.shape == (5,)
    assert np.all((scores >= -1) & (scores <= 1))
    assert set(labels.tolist()) <= set(LABELS)
    assert labels.tolist() == ["positive", "negative", "negative", "positive", "neutral"]


def test_sentiment_domain_words_plain_vader_misses() -> None:
    # Words VADER's lexicon lacks; the crypto lexicon must give them the right sign.
    crypto, plain = LexiconSentiment(), LexiconSentiment(crypto=False)
    texts = ["Bitcoin rally", "Bitcoin plunges", "Exchange faces bankruptcy", "Token delisted"]
    assert plain.name == "vader"
    np.testing.assert_array_equal(plain.compound(texts), 0.0)
    s = crypto.compound(texts)
    assert s[0] > 0.05 and (s[1:] < -0.05).all()


def test_sentiment_neutralises_crypto_jargon() -> None:
    # VADER alone reads these names as sentiment ("Trust" +2.3, "Fear" -2.2, "Greed" -1.7).
    texts = ["Grayscale Bitcoin Trust files annual report", "Fear & Greed index at 50"]
    assert np.all(np.abs(LexiconSentiment(crypto=False).compound(texts)) > 0.5)
    assert np.all(np.abs(LexiconSentiment().compound(texts)) < 0.05)


def test_sentiment_empty_and_band_validation() -> None:
    scores, labels = LexiconSentiment().score([])
    assert scores.shape == (0,) and labels.shape == (0,)
    with pytest.raises(ValueError):
        LexiconSentiment(band=(0.1, -0.1))
    np.testing.assert_array_equal(
        labels_from_scores(np.array([-0.5, -0.05, 0.0, 0.05, 0.5]), VADER_BAND),
        ["negative", "negative", "neutral", "positive", "positive"],
    )


def _load_cryptolin() -> tuple[list[str], np.ndarray]:
    if not CRYPTOLIN.is_file():
        pytest.skip(
            "CryptoLin dev set absent: expected <repo>/../shared/data/cryptolin_dev/cryptolin_dev.csv"
        )
    with CRYPTOLIN.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["news"] for r in rows], np.array([GOLD[int(r["label"])] for r in rows])


def _macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    return float(f1_score(gold, pred, labels=list(LABELS), average="macro", zero_division=0))


def test_crypto_lexicon_beats_plain_vader_on_cryptolin_dev() -> None:
    """Crypto lexicon (band cross-validated) must beat plain VADER (default ±0.05) on macro-F1.

    The band is chosen on the four training folds and applied to the held-out fold, so the
    figure asserted on never saw its own labels during tuning. It is also compared with plain
    VADER given the same tuning, so band tuning alone cannot account for the gain.
    """
    texts, gold = _load_cryptolin()
    assert len(texts) == 1341  # the documented dev half; a different file would mislead

    plain_scores = LexiconSentiment(crypto=False).compound(texts)
    crypto_scores = LexiconSentiment(crypto=True).compound(texts)
    plain_default_f1 = _macro_f1(gold, labels_from_scores(plain_scores, VADER_BAND))

    def cv_f1(scores: np.ndarray) -> float:
        pred = np.empty(len(gold), dtype=object)
        for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(scores, gold):
            pred[test] = labels_from_scores(scores[test], tune_band(scores[train], gold[train]))
        return _macro_f1(gold, pred.astype(str))

    crypto_cv_f1 = cv_f1(crypto_scores)
    plain_cv_f1 = cv_f1(plain_scores)
    assert crypto_cv_f1 > plain_default_f1, (crypto_cv_f1, plain_default_f1)
    assert crypto_cv_f1 > plain_cv_f1, (crypto_cv_f1, plain_cv_f1)
    # Measured 0.543 vs 0.440; a margin guards against a change that wins only by noise.
    assert crypto_cv_f1 - plain_default_f1 > 0.05, (crypto_cv_f1, plain_default_f1)
