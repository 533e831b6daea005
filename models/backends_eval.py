"""Do the ONNX backends keep the decisions calibrated on torch vectors?

    python -m models.backends_eval [--news PATH] [--backends torch,onnx,onnx-int8]

The categorizer's threshold and the story tracker's were chosen on all-MiniLM-L6-v2 vectors
from torch. For each embedding backend this scores, on the same hand-labelled data:

* **categories** (``models/data/categories_sample.csv``): micro precision / recall at the
  default threshold on the dev and held-out halves, and the share of the 200 x 9 decisions
  equal to torch's;
* **stories** (``models/data/story_pairs.csv``, 62 cross-source pairs): precision / recall of
  ``cosine >= models.stories.DEFAULT_THRESHOLD``, and the share of pair decisions equal to torch's;
* the mean and lowest cosine of each text's vector to its torch vector.

Texts are embedded as the analysis actor embeds them: ``"title. summary"``, in passes of the
default ``embed_batch_size`` in file order.
One JSON line per backend; nothing is asserted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from models.categories import Categorizer
from models.categories_eval import DEFAULT_NEWS_CSV, DEV_SIZE, evaluate, load_sample, news_texts, predictions
from models.stories import DEFAULT_THRESHOLD as STORY_THRESHOLD

PAIRS_CSV = Path(__file__).resolve().parent / "data" / "story_pairs.csv"


def _micro(pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    micro = next(r for r in evaluate(pred, gold) if r.category == "micro")
    return {"precision": round(micro.precision, 3), "recall": round(micro.recall, 3)}


def compare(news_csv: Path, backends: list[str], batch_size: int) -> list[dict[str, Any]]:
    from models.embedder import Embedder

    sample = load_sample()
    with PAIRS_CSV.open(newline="", encoding="utf-8") as f:
        pairs = list(csv.DictReader(f))
    pair_rows = sorted({int(p[k]) for p in pairs for k in ("row_a", "row_b")})
    where = {r: i for i, r in enumerate(pair_rows)}
    same = np.array([p["same_story"] == "1" for p in pairs])
    cat_texts = news_texts(news_csv, sample.rows)
    pair_texts = news_texts(news_csv, pair_rows)

    out: list[dict[str, Any]] = []
    reference: dict[str, Any] = {}
    for backend in backends:
        embedder = Embedder(device="cpu", backend=backend)
        cat_vecs = embedder.encode(cat_texts, batch_size=batch_size)
        pair_vecs = embedder.encode(pair_texts, batch_size=batch_size)
        cats = predictions(Categorizer(embedder), cat_texts, cat_vecs)
        sims = np.array(
            [float(pair_vecs[where[int(p["row_a"])]] @ pair_vecs[where[int(p["row_b"])]]) for p in pairs]
        )
        joined = sims >= STORY_THRESHOLD
        row: dict[str, Any] = {
            "backend": backend,
            "categories_dev": _micro(cats[:DEV_SIZE], sample.labels[:DEV_SIZE]),
            "categories_heldout": _micro(cats[DEV_SIZE:], sample.labels[DEV_SIZE:]),
            "stories": {
                "threshold": STORY_THRESHOLD,
                "precision": round(float((joined & same).sum() / max(joined.sum(), 1)), 3),
                "recall": round(float((joined & same).sum() / same.sum()), 3),
            },
        }
        if not reference:
            reference = {
                "backend": backend,
                "cats": cats,
                "joined": joined,
                "vecs": np.vstack([cat_vecs, pair_vecs]),
            }
        else:
            cos = (np.vstack([cat_vecs, pair_vecs]) * reference["vecs"]).sum(axis=1)
            row[f"vs_{reference['backend']}"] = {
                "category_decisions_same": round(float(np.mean(cats == reference["cats"])), 4),
                "story_decisions_same": round(float(np.mean(joined == reference["joined"])), 4),
                "cosine_mean": round(float(cos.mean()), 4),
                "cosine_min": round(float(cos.min()), 4),
            }
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    from cluster.settings import BtcpulseSettings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(
        prog="python -m models.backends_eval", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--news", type=Path, default=DEFAULT_NEWS_CSV, help="cryptonews.csv")
    parser.add_argument("--backends", default="torch,onnx,onnx-int8", help="the first is the reference")
    parser.add_argument("--batch-size", type=int, default=BtcpulseSettings().embed_batch_size)
    args = parser.parse_args(argv)
    for row in compare(args.news, args.backends.split(","), args.batch_size):
        sys.stdout.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
