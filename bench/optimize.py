"""Can the embedded store build its HNSW graph beside live traffic? ``python -m bench.optimize``.

Writes ``--n`` clustered 384-d unit vectors into an :class:`cluster.vectors.EdgeVectorStore`
(batches of 1,000, a ``published_ts`` payload), then runs the engine's ``optimize()`` (the HNSW
build) in a thread while, in this process, a ticker thread wakes every 10 ms and a writer
upserts 100 points every 200 ms. It prints one JSON object: the optimize's seconds, the longest
time the ticker was kept from running (all of it, if the engine holds the GIL), how many upserts
finished while the optimize ran, the count and recall@10 against exact cosine (100 queries)
before and after, and what ``info()`` says. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

DIM = 384


def main(argv: list[str] | None = None) -> int:
    from cluster.vectors import EdgeVectorStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=25_000)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(50, DIM)).astype(np.float32)

    def make(n: int, offset: int) -> tuple[list[str], np.ndarray]:
        v = centers[rng.integers(0, 50, n)] + 0.6 * rng.normal(size=(n, DIM)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return [str(uuid.UUID(int=offset + i + 1)) for i in range(n)], v.astype(np.float32)

    store = EdgeVectorStore(Path(tempfile.mkdtemp()) / "shard", DIM)
    ids, vecs = make(args.n, 0)
    for i in range(0, args.n, 1000):
        store.upsert(
            ids[i : i + 1000], vecs[i : i + 1000], [{"published_ts": float(j)} for j in range(i, i + 1000)]
        )
    queries = make(100, 10**9)[1]

    def recall(all_ids: list[str], all_vecs: np.ndarray) -> float:
        top = np.argsort(-(queries @ all_vecs.T), axis=1)[:, :10]
        return float(
            np.mean(
                [
                    len({all_ids[j] for j in top[q]} & {h.id for h in store.search(queries[q], 10)}) / 10
                    for q in range(100)
                ]
            )
        )

    out: dict[str, Any] = {"n": args.n, "recall_before": recall(ids, vecs)}
    info = store._shard.info()
    out["info_before"] = [info.segments_count, info.points_count, info.indexed_vectors_count]
    ticks: list[float] = []
    done = threading.Event()
    extra_ids, extra_vecs = make(5000, 2 * 10**9)
    upserts: list[tuple[float, float]] = []

    def ticker() -> None:
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.01)

    def writer() -> None:
        i = 0
        while not done.is_set() and i < 5000:
            t0 = time.perf_counter()
            store.upsert(extra_ids[i : i + 100], extra_vecs[i : i + 100], [{"published_ts": 1e6 + i}] * 100)
            upserts.append((t0, time.perf_counter()))
            i += 100
            time.sleep(0.2)

    threads = [threading.Thread(target=f, daemon=True) for f in (ticker, writer)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    t_opt = time.perf_counter()
    built = store._shard.optimize()
    t_end = time.perf_counter()
    done.set()
    for t in threads:
        t.join()
    inside = [b for b in ticks if t_opt - 0.05 <= b <= t_end + 0.5]
    written = len(upserts) * 100
    all_ids, all_vecs = ids + extra_ids[:written], np.vstack([vecs, extra_vecs[:written]])
    info = store._shard.info()
    out.update(
        {
            "optimize_s": round(t_end - t_opt, 2),
            "built": built,
            "longest_ticker_gap_s": round(float(np.diff(inside).max()), 2) if len(inside) > 1 else None,
            "upserts_finished_during_optimize": sum(1 for a, b in upserts if t_opt < b < t_end),
            "count_after": store.count(),
            "expected_after": len(all_ids),
            "recall_after": recall(all_ids, all_vecs),
            "info_after": [info.segments_count, info.points_count, info.indexed_vectors_count],
        }
    )
    store.close()
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
