"""Offline evaluation of the sentiment scorers on a human-labelled CSV (CryptoLin dev half).

Library code: returns dicts, prints nothing. The CSV needs columns ``news`` (text) and
``label`` (-1 negative, 0 neutral, 1 positive).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold

from models.sentiment import LABELS, VADER_BAND, LexiconSentiment, labels_from_scores

#: Candidate band edges searched by :func:`tune_band` (|edge| from 0.01 to 0.60).
BAND_GRID: np.ndarray = np.round(np.arange(0.01, 0.605, 0.01), 2)

_GOLD = {-1: "negative", 0: "neutral", 1: "positive"}


def load_labelled(csv_path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read ``news`` and ``label`` columns; returns ``(texts, labels)`` with string labels."""
    texts: list[str] = []
    gold: list[str] = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            texts.append(row["news"])
            gold.append(_GOLD[int(row["label"])])
    return texts, np.asarray(gold)


def macro_f1(gold: np.ndarray, pred: np.ndarray) -> float:
    """Macro-F1 over the three :data:`LABELS` (a class never predicted counts as F1 0)."""
    return float(f1_score(gold, pred, labels=list(LABELS), average="macro", zero_division=0))


def _macro_f1_idx(gold_idx: np.ndarray, pred_idx: np.ndarray) -> float:
    # Same definition as sklearn's macro-F1 with zero_division=0, but ~100x faster, which
    # matters because tune_band evaluates thousands of bands per call.
    cm = np.bincount(gold_idx * 3 + pred_idx, minlength=9).reshape(3, 3)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # = 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros(3), where=denom > 0)
    return float(f1.mean())


def tune_band(scores: np.ndarray, gold: np.ndarray, grid: np.ndarray = BAND_GRID) -> tuple[float, float]:
    """The ``(lo, hi) = (-a, b)`` over ``a, b`` in ``grid`` that maximises macro-F1 on these data.

    Ties go to the first in grid order, i.e. the narrowest band, the one nearest VADER's default.
    """
    s = np.asarray(scores, dtype=np.float64)
    index = {label: i for i, label in enumerate(LABELS)}
    gold_idx = np.fromiter((index[str(g)] for g in gold), dtype=np.int64, count=len(gold))
    best, best_f1 = (-float(grid[0]), float(grid[0])), -1.0
    for a in grid:
        for b in grid:
            pred = np.ones(len(s), dtype=np.int64)
            pred[s <= -a] = 0
            pred[s >= b] = 2
            f1 = _macro_f1_idx(gold_idx, pred)
            if f1 > best_f1:
                best, best_f1 = (-float(a), float(b)), f1
    return best


def cross_validated(scores: np.ndarray, gold: np.ndarray, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Honest figures for a tuned band: tune on the training folds, label the held-out fold.

    Returns:
        ``{"macro_f1", "accuracy"}`` over the pooled out-of-fold predictions, plus
        ``"fold_macro_f1"`` (per fold) and ``"bands"`` (the band chosen in each fold).
    """
    s = np.asarray(scores)
    pred = np.empty(len(s), dtype=object)
    bands: list[tuple[float, float]] = []
    fold_f1: list[float] = []
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in skf.split(s.reshape(-1, 1), gold):
        band = tune_band(s[train], gold[train])
        bands.append(band)
        pred[test] = labels_from_scores(s[test], band)
        fold_f1.append(macro_f1(gold[test], pred[test].astype(str)))
    p = pred.astype(str)
    return {
        "macro_f1": macro_f1(gold, p),
        "accuracy": float(accuracy_score(gold, p)),
        "fold_macro_f1": fold_f1,
        "bands": bands,
    }


def evaluate_sentiment(csv_path: str | Path, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Plain VADER against VADER + crypto lexicon on a labelled CSV.

    Returns:
        A dict with ``n`` and, per scorer (``"vader"``, ``"vader+crypto"``):
        ``"default_band"`` (macro-F1/accuracy at VADER's ±0.05, no tuning) and
        ``"cv"`` (band tuned on training folds, scored on held-out folds; see
        :func:`cross_validated`), plus ``"full_data_band"``: the band that maximises macro-F1
        on all rows (optimistic, for choosing a shipped default, not for reporting).
    """
    texts, gold = load_labelled(csv_path)
    out: dict[str, Any] = {"n": len(texts)}
    for crypto in (False, True):
        model = LexiconSentiment(crypto=crypto, band=VADER_BAND)
        scores = model.compound(texts)
        default = labels_from_scores(scores, VADER_BAND)
        out[model.name] = {
            "default_band": {
                "band": VADER_BAND,
                "macro_f1": macro_f1(gold, default),
                "accuracy": float(accuracy_score(gold, default)),
            },
            "cv": cross_validated(scores, gold, folds=folds, seed=seed),
            "full_data_band": tune_band(scores, gold),
        }
    return out


def compare_backends(csv_path: str | Path, backends: list[str]) -> list[dict[str, Any]]:
    """The shipped sentiment model on the labelled CSV with each encoder backend: accuracy,
    macro-F1, texts/s (after a warm-up) and how often its labels agree with the first backend's."""
    import time

    from models.sentiment_model import TransformerSentiment

    texts, gold = load_labelled(csv_path)
    rows: list[dict[str, Any]] = []
    first: np.ndarray | None = None
    for backend in backends:
        model = TransformerSentiment("", device="cpu", backend=backend)
        model.predict(texts[:32])
        t0 = time.perf_counter()
        pred = np.asarray(model.predict(texts).labels)
        seconds = time.perf_counter() - t0
        first = pred if first is None else first
        rows.append(
            {
                "backend": backend,
                "texts": len(texts),
                "accuracy": round(float(accuracy_score(gold, pred)), 4),
                "macro_f1": round(macro_f1(gold, pred), 4),
                "texts_per_s": round(len(texts) / seconds, 1),
                "labels_agree_with_first": round(float(np.mean(pred == first)), 4),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m models.evaluate [--data CSV] [--backends torch,onnx,onnx-int8]``: one JSON
    line per backend of the shipped sentiment model (see :func:`compare_backends`)."""
    import argparse
    import json
    import os
    import sys

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "cryptolin_dev" / "cryptolin_dev.csv"
    parser = argparse.ArgumentParser(prog="python -m models.evaluate", description=main.__doc__)
    parser.add_argument("--data", type=Path, default=default)
    parser.add_argument("--backends", default="torch,onnx,onnx-int8")
    args = parser.parse_args(argv)
    for row in compare_backends(args.data, args.backends.split(",")):
        sys.stdout.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
