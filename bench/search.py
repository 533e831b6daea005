"""Similar-news search at scale, through the HTTP API: latency, QPS and recall@10.

    python -m bench.search [--n 100000] [--data ../shared/data] [--variants default,m32,...]

1. **Texts.** The recorded news and posts hold far fewer than 100,000 articles (7.5k
   CoinTelegraph/CryptoNews/CryptoPotato articles, 12.8k r/Bitcoin self-posts), so the stored
   set is built from *real text only*, in these units, each its own point:

   * per news article: its headline + summary (what the pipeline embeds), the headline alone,
     the summary alone;
   * per r/Bitcoin post: title + body (as the pipeline embeds it), the title alone, and the
     body cut into passages of whole sentences (~60-300 characters each).

   Every unit is kept once: texts equal after folding case and white space are dropped
   (duplicate vectors would make recall ill-defined). Units share their article's time,
   source and URL. Queries are held out: the CryptoLin headlines (other years and outlets,
   never stored), plus, if needed, none of the stored set.
2. **Vectors** from the project's embedder (``onnx-int8`` on the CPU by default, the backend
   the stack is started with so queries are embedded the same way), cached as .npy under
   ``~/.cache/btcpulse/bench/`` by a hash of the texts, model and backend.
3. **Store.** The points (payloads as :func:`actors.analysis.payload` writes them, sentiment
   from the shipped model, categories from the categorizer) are written straight into the
   embedded qdrant-edge shard of a state dir of the benchmark's own, the shard is optimised
   (HNSW built) and closed, then ``btcpulse up --no-live`` serves it on ports of its own.
4. **Latency / QPS** of ``GET /api/search?q=...&k=10`` (text queries: the API embeds them),
   with 1 and 8 keep-alive clients (closed loop: each sends its next query when answered),
   and at ``--rates`` requests/s offered (open loop: Poisson arrivals, each latency from the
   request's due time), without and with a 30-day ``start``/``end`` filter; ``--proxy`` adds
   the same runs through Serve's proxy beside the API port (the API port is the replica's own,
   Serve's direct ingress).
5. **Recall@10** of the API's ids against exact cosine top-10 (numpy over all vectors, or
   over the filtered subset), for the same queries embedded here with the same model.

Nothing is asserted; a Markdown table goes to stdout and JSON to
``bench/results/search-<date>.json``. The load average is recorded with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CACHE = Path.home() / ".cache" / "btcpulse" / "bench"
RESULTS = ROOT / "bench" / "results"

NEWS_CSV = Path("crypto_news_2021_2022") / "cryptonews.csv"
REDDIT_CSV = Path("reddit_r_bitcoin_2021_2022") / "r_bitcoin_selfposts_2021-10-12_2022-07-05.csv"
QUERIES_CSV = Path("cryptolin_dev") / "cryptolin_dev.csv"

#: Passages of a post's body: whole sentences, joined until at least MIN chars, at most MAX.
PASSAGE_MIN_CHARS = 60
PASSAGE_MAX_CHARS = 300
#: A unit needs this many letters to be worth a point (drops "lol", bare links, numbers).
MIN_LETTERS = 12
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[*A-Z0-9])")
_URL = re.compile(r"https?://\S+")
_LETTER = re.compile(r"[^\W\d_]")
_FOLD = re.compile(r"\s+")


def say(text: str = "") -> None:
    """A progress or result line on stdout, at once."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# Texts (pure)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unit:
    """One stored point: a real text and the article it came from."""

    text: str
    kind: str  # "article", "title", "summary", "passage"
    article_id: str
    source: str
    url: str
    title: str
    published_at: str
    published_ts: float


def fold(text: str) -> str:
    """The form two texts are compared in for duplicates: case and white space folded."""
    return _FOLD.sub(" ", text).strip().casefold()


def sentences(text: str) -> list[str]:
    """``text`` cut after ., ! or ? followed by space and a capital, digit or quote."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def passages(text: str, min_chars: int = PASSAGE_MIN_CHARS, max_chars: int = PASSAGE_MAX_CHARS) -> list[str]:
    """Whole sentences of ``text`` grouped into passages of about ``min_chars``..``max_chars``.

    A sentence longer than ``max_chars`` is cut at a space near it; a short tail joins the
    passage before it when that stays within ``max_chars``.
    """
    out: list[str] = []
    current = ""
    for sentence in sentences(_URL.sub(" ", text)):
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", min_chars, max_chars)
            cut = cut if cut > 0 else max_chars
            if current:
                out.append(current)
                current = ""
            out.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if not sentence:
            continue
        if current and len(current) + 1 + len(sentence) > max_chars:
            out.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
        if len(current) >= min_chars:
            out.append(current)
            current = ""
    if current:
        if out and len(out[-1]) + 1 + len(current) <= max_chars:
            out[-1] = f"{out[-1]} {current}"
        else:
            out.append(current)
    return out


def unique_units(units: Iterable[Unit], seen: set[str] | None = None) -> list[Unit]:
    """``units`` without texts that fold to one already seen (first kept), nor near-empty ones."""
    seen = set() if seen is None else seen
    out: list[Unit] = []
    for u in units:
        key = fold(u.text)
        if len(_LETTER.findall(key)) < MIN_LETTERS or key in seen:
            continue
        seen.add(key)
        out.append(u)
    return out


def article_units(item: Any, *, body_passages: bool) -> list[Unit]:
    """The units of one NewsItem: title + summary, title, summary or its passages."""

    def unit(text: str, kind: str) -> Unit:
        return Unit(
            text=text,
            kind=kind,
            article_id=item.id,
            source=item.source,
            url=item.url,
            title=item.title,
            published_at=item.published_at,
            published_ts=item.published_ts,
        )

    units = [unit(item.text[:2000], "article"), unit(item.title, "title")]
    if item.summary:
        if body_passages:
            units += [unit(p, "passage") for p in passages(item.summary)]
        else:
            units.append(unit(item.summary, "summary"))
    return units


def point_id(u: Unit) -> str:
    """A stable UUID per unit (the article's id alone would make its units overwrite one another)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{u.article_id}#{u.kind}#{fold(u.text)}"))


def build_units(data: Path, n: int) -> tuple[list[Unit], dict[str, Any]]:
    """At most ``n`` unique units from the recorded news and posts (the project's readers),
    whole articles first, then titles and summaries, then post passages in time order."""
    from actors.replay import ReplayReport, read_file

    report = ReplayReport()
    news = [r.record for r in read_file(data / NEWS_CSV, report=report)]
    # The body whole: the passages need all of it (the pipeline cuts a summary at 2,000 chars).
    posts = [r.record for r in read_file(data / REDDIT_CSV, report=report, max_summary_chars=100_000)]
    by_kind: dict[str, list[Unit]] = {"article": [], "title": [], "summary": [], "passage": []}
    for item in news:
        for u in article_units(item, body_passages=False):
            by_kind[u.kind].append(u)
    for item in posts:
        for u in article_units(item, body_passages=True):
            by_kind[u.kind].append(u)
    seen: set[str] = set()
    units: list[Unit] = []
    for kind in ("article", "title", "summary", "passage"):
        units += unique_units(by_kind[kind], seen)
    counts_all = {k: sum(1 for u in units if u.kind == k) for k in by_kind}
    units = units[:n]
    info = {
        "news_articles": len(news),
        "reddit_posts": len(posts),
        "unique_units_available": sum(counts_all.values()),
        "units_available_by_kind": counts_all,
        "units_stored_by_kind": {k: sum(1 for u in units if u.kind == k) for k in by_kind},
        "stored": len(units),
        "bad_rows": report.bad_total,
        "how": (
            "real texts only: per news article headline+summary, headline, summary; per r/Bitcoin "
            f"post title+body, title, body passages of whole sentences ({PASSAGE_MIN_CHARS}-"
            f"{PASSAGE_MAX_CHARS} chars); exact duplicates after folding case/space dropped"
        ),
    }
    return units, info


def load_queries(data: Path, stored: Sequence[Unit], n: int) -> list[str]:
    """Up to ``n`` held-out query headlines (CryptoLin), none equal to a stored text, in file order."""
    import csv

    seen = {fold(u.text) for u in stored}
    out: list[str] = []
    with (data / QUERIES_CSV).open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text = (row.get("news") or "").strip()
            key = fold(text)
            if not text or key in seen or len(text) > 500:
                continue
            seen.add(key)
            out.append(text)
            if len(out) >= n:
                break
    return out


def texts_key(texts: Sequence[str], model: str, backend: str) -> str:
    """The cache key of a set of vectors: the texts in order, the model and the backend."""
    h = hashlib.sha256()
    h.update(f"{model}\0{backend}\0{len(texts)}\0".encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:24]


# --------------------------------------------------------------------------------------------
# Vectors (cached)
# --------------------------------------------------------------------------------------------


def embed_cached(
    texts: Sequence[str],
    *,
    model: str = "",
    backend: str = "onnx-int8",
    batch_size: int = 32,
    log: Any = say,
) -> np.ndarray:
    """Unit vectors of ``texts``, from ``CACHE/<key>.npy`` when there, else embedded and saved."""
    key = texts_key(texts, model or "default", backend)
    path = CACHE / f"vectors-{key}.npy"
    if path.exists():
        vectors = np.load(path)
        if vectors.shape[0] == len(texts):
            log(f"vectors: {len(texts):,} from the cache ({path.name})")
            return vectors
    from models.embedder import Embedder

    embedder = Embedder(model, device="cpu", backend=backend)
    out = np.empty((len(texts), embedder.dim), dtype=np.float32)
    chunk = 4096
    t0 = time.perf_counter()
    for i in range(0, len(texts), chunk):
        out[i : i + chunk] = embedder.encode(list(texts[i : i + chunk]), batch_size=batch_size)
        done = min(i + chunk, len(texts))
        rate = done / (time.perf_counter() - t0)
        log(f"vectors: {done:,}/{len(texts):,} ({rate:.0f}/s, load {_load()})")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(path)
    return out


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ", 1)[0]
    except OSError:
        return "?"


def embed_queries_cached(texts: Sequence[str], *, model: str = "", backend: str = "onnx-int8") -> np.ndarray:
    """Query vectors as the API makes them: one text per call, one thread (every backend
    now gives a text the same vector in any batch; ``onnx-int8`` by one pass per text)."""
    key = texts_key(texts, model or "default", backend + "/single")
    path = CACHE / f"queries-{key}.npy"
    if path.exists():
        vectors = np.load(path)
        if vectors.shape[0] == len(texts):
            return vectors
    from models.embedder import Embedder

    embedder = Embedder(model, device="cpu", backend=backend, intra_op_num_threads=1)
    out = np.stack([embedder.encode([t])[0] for t in texts]).astype(np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def query_embedding_cost(
    texts: Sequence[str],
    backends: Sequence[str] = ("torch", "onnx", "onnx-int8"),
    per_pass: Sequence[int] = (1, 8),
) -> list[dict[str, Any]]:
    """Milliseconds per query to embed ``texts`` in this process on one thread, per backend
    and texts per pass: what the Serve replica's query embedder costs each search."""
    from models.device import torch_threads
    from models.embedder import Embedder

    torch_threads(1)
    rows: list[dict[str, Any]] = []
    for backend in backends:
        embedder = Embedder(device="cpu", backend=backend, intra_op_num_threads=1)
        embedder.encode(list(texts[:16]), batch_size=8)  # warm-up
        for n in per_pass:
            t0 = time.perf_counter()
            for i in range(0, len(texts), n):
                embedder.encode(list(texts[i : i + n]), batch_size=n)
            ms = 1000 * (time.perf_counter() - t0) / len(texts)
            rows.append({"backend": backend, "per_pass": n, "ms_per_query": round(ms, 2)})
            say(f"query embedding: {json.dumps(rows[-1])}")
    return rows


def analyses_cached(
    texts: Sequence[str], vectors: np.ndarray, *, key: str, log: Any = say
) -> dict[str, list[Any]]:
    """Sentiment (the lexicon scorer) and categories (the categorizer, as the analysis actor
    runs it) of ``texts``, cached as JSON beside the vectors."""
    path = CACHE / f"analyses-{key}.json"
    if path.exists():
        cached: dict[str, list[Any]] = json.loads(path.read_text())
        if len(cached.get("labels", [])) == len(texts):
            log(f"sentiment/categories: {len(texts):,} from the cache ({path.name})")
            return cached
    from models.categories import Categorizer
    from models.embedder import Embedder
    from models.sentiment_model import load_sentiment

    # The lexicon scorer: the shipped classifier ran at ~30 texts/s here under load, an hour
    # for 100k texts; search does not read the sentiment, the API only renders it.
    sentiment = load_sentiment("lexicon", device="cpu")
    categorizer = Categorizer(Embedder("", device="cpu", backend="onnx-int8"))
    out: dict[str, list[Any]] = {"labels": [], "scores": [], "confidence": [], "categories": []}
    t0 = time.perf_counter()
    chunk = 4096
    for i in range(0, len(texts), chunk):
        part = list(texts[i : i + chunk])
        s = sentiment.predict(part)
        out["labels"] += [str(x) for x in s.labels]
        out["scores"] += [round(float(x), 4) for x in s.scores]
        out["confidence"] += [round(float(x), 4) for x in s.confidence]
        out["categories"] += [
            {k: round(float(v), 4) for k, v in c.items()}
            for c in categorizer.predict(part, vectors[i : i + chunk])
        ]
        done = min(i + chunk, len(texts))
        log(f"sentiment/categories: {done:,}/{len(texts):,} ({time.perf_counter() - t0:.0f} s)")
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def payloads(
    units: Sequence[Unit], ids: Sequence[str], analyses: dict[str, list[Any]]
) -> list[dict[str, Any]]:
    """What :func:`actors.analysis.payload` stores, per unit (no topic: the topic model is stateful)."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    out = []
    for i, (u, pid) in enumerate(zip(units, ids, strict=True)):
        cats: dict[str, float] = analyses["categories"][i]
        out.append(
            {
                "id": pid,
                "title": u.title,
                "url": u.url,
                "source": u.source,
                "summary": u.text[:500],
                "published_at": u.published_at,
                "published_ts": u.published_ts,
                "sentiment": analyses["scores"][i],
                "sentiment_label": analyses["labels"][i],
                "confidence": analyses["confidence"][i],
                "categories": list(cats),
                "category_scores": list(cats.values()),
                "topic_id": -1,
                "topic_label": "",
                "story_id": u.article_id,
                "analyzed_at": now,
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# Exact search, recall, summaries (pure)
# --------------------------------------------------------------------------------------------


def exact_topk(
    vectors: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None
) -> np.ndarray:
    """Row indices of the ``k`` best cosine matches per query (unit rows: a dot product), best
    first; with ``mask``, only among the rows where it is True. Ties go to the lower index."""
    idx = np.arange(len(vectors)) if mask is None else np.flatnonzero(mask)
    sub = vectors[idx]
    out = np.empty((len(queries), min(k, len(idx))), dtype=np.int64)
    for start in range(0, len(queries), 256):
        scores = queries[start : start + 256] @ sub.T
        kk = out.shape[1]
        part = (
            np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            if kk < sub.shape[0]
            else np.tile(np.arange(sub.shape[0]), (scores.shape[0], 1))
        )
        rows = np.arange(scores.shape[0])[:, None]
        order = np.lexsort((part, -scores[rows, part]), axis=1)
        out[start : start + 256] = idx[part[rows, order]]
    return out


def recall_at_k(found: Sequence[Sequence[str]], truth: Sequence[Sequence[str]], k: int = 10) -> float:
    """Mean over queries of |found[:k] ∩ truth[:k]| / |truth[:k]| (a query with no truth is skipped)."""
    values = [len(set(f[:k]) & set(t[:k])) / len(t[:k]) for f, t in zip(found, truth, strict=True) if t[:k]]
    return float(np.mean(values)) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), linear between the closest ranks."""
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summarize(latencies_s: Sequence[float], wall_s: float, clients: int) -> dict[str, Any]:
    """p50/p90/p99/max in ms and QPS (requests / wall time) of a closed-loop run."""
    ms = [x * 1000.0 for x in latencies_s]
    return {
        "clients": clients,
        "requests": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p90_ms": round(percentile(ms, 90), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2) if ms else float("nan"),
        "qps": round(len(ms) / wall_s, 1) if wall_s > 0 else float("nan"),
    }


def window(ts: np.ndarray, days: float) -> tuple[float, float]:
    """``days`` ending one second after the newest time (the most recent month of the data)."""
    end = float(ts.max()) + 1.0
    return end - days * 86400.0, end


# --------------------------------------------------------------------------------------------
# The store: load, optimise, search in-process
# --------------------------------------------------------------------------------------------


def shard_path(state_dir: Path, collection: str = "news") -> Path:
    return state_dir / "qdrant" / collection


def load_store(
    path: Path,
    ids: Sequence[str],
    vectors: np.ndarray,
    rows: Sequence[dict[str, Any]],
    *,
    m: int,
    ef_construct: int,
    optimize: bool,
    log: Any = say,
) -> dict[str, Any]:
    """Write the points into a new qdrant-edge shard at ``path`` (through :class:`EdgeVectorStore`,
    as the vector-store actor does), optionally build its HNSW index, and close it."""
    import shutil

    from cluster.vectors import EdgeVectorStore

    if path.exists():
        shutil.rmtree(path)
    store = EdgeVectorStore(path, vectors.shape[1], hnsw_m=m, hnsw_ef_construct=ef_construct)
    t0 = time.perf_counter()
    batch = 1000
    for i in range(0, len(ids), batch):
        store.upsert(ids[i : i + batch], vectors[i : i + batch], rows[i : i + batch])
    upsert_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    if optimize:
        store._shard.optimize()
    optimize_s = time.perf_counter() - t1
    info = store._shard.info()
    out = {
        "m": m,
        "ef_construct": ef_construct,
        "optimized": optimize,
        "points": info.points_count,
        "indexed_vectors": info.indexed_vectors_count,
        "segments": info.segments_count,
        "upsert_s": round(upsert_s, 1),
        "optimize_s": round(optimize_s, 1),
        "load_after": _load(),
    }
    store.close()
    log(f"store: {out}")
    return out


def store_search(
    path: Path,
    dim: int,
    queries: np.ndarray,
    flt: Any,
    *,
    hnsw_ef: int | None,
    k: int = 10,
) -> tuple[list[list[str]], list[float]]:
    """The shard's top-``k`` ids per query, in-process (one thread), and each search's time."""
    import cluster.vectors as cv

    saved = cv.SEARCH_HNSW_EF
    cv.SEARCH_HNSW_EF = hnsw_ef
    store = cv.EdgeVectorStore(path, dim)
    try:
        for q in queries[:20]:  # warm the mmap'd pages
            store.search(q, k, flt)
        found, times = [], []
        for q in queries:
            t0 = time.perf_counter()
            hits = store.search(q, k, flt)
            times.append(time.perf_counter() - t0)
            found.append([h.id for h in hits])
    finally:
        store.close()
        cv.SEARCH_HNSW_EF = saved
    return found, times


# --------------------------------------------------------------------------------------------
# The stack and HTTP
# --------------------------------------------------------------------------------------------

STACK_ENV = {
    "BTCPULSE_STATE_DIR": "/tmp/btcp-search",  # noqa: S108 - the benchmark's own stack
    "BTCPULSE_PULSAR_BROKER_PORT": "6950",
    "BTCPULSE_PULSAR_WEB_PORT": "8380",
    "BTCPULSE_PULSAR_BOOKIE_PORT": "3481",
    "BTCPULSE_RAY_PORT": "6679",
    "BTCPULSE_RAY_DASHBOARD_PORT": "8565",
    "BTCPULSE_API_PORT": "8300",
    "BTCPULSE_RAY_NUM_CPUS": "2",
    "BTCPULSE_EMBED_BACKEND": "onnx-int8",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def stack_env(state_dir: Path, m: int, ef_construct: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(STACK_ENV)
    env["BTCPULSE_STATE_DIR"] = str(state_dir)
    env["BTCPULSE_QDRANT_HNSW_M"] = str(m)
    env["BTCPULSE_QDRANT_HNSW_EF_CONSTRUCT"] = str(ef_construct)
    return env


def btcpulse(args: list[str], env: dict[str, str], timeout_s: float = 600) -> None:
    import subprocess

    exe = Path(sys.executable).with_name("btcpulse")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "cluster.cli"]
    subprocess.run([*cmd, *args], env=env, check=True, timeout=timeout_s)


class _Searches:
    """What one HTTP run collects: latencies, the ids each query got, errors; and each of the
    stack's processes' CPU seconds from start to end."""

    def __init__(self, api: str, params: Sequence[dict[str, Any]], state_dir: Path | None) -> None:
        import threading

        self.api, self.params, self.state_dir = api, params, state_dir
        self.latencies: list[float] = []
        self.results: dict[int, list[str]] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def send(self, client: Any, i: int, since: float) -> None:
        """Request ``i``; its latency counts from ``since`` (perf_counter)."""
        r = client.get("/api/search", params=self.params[i % len(self.params)])
        dt = time.perf_counter() - since
        with self.lock:
            if r.status_code != 200:
                self.errors.append(f"{r.status_code} {r.text[:200]}")
                return
            self.latencies.append(dt)
            self.results.setdefault(i % len(self.params), [h["id"] for h in r.json()["results"]])

    @contextlib.contextmanager
    def client(self, ready: Any) -> Iterator[Any]:
        """A keep-alive connection, opened (one /healthz) before ``ready`` lets the clock start:
        opening 32 at once takes the client ~0.3 s, which is not the server's time."""
        import httpx

        with httpx.Client(base_url=self.api, timeout=30.0) as client:
            try:
                client.get("/healthz")
            finally:
                ready.wait()  # a broken barrier raises in every party rather than hang
            yield client

    def run(
        self, threads: Sequence[Any], clients: int, requests: int, ready: Any
    ) -> tuple[dict[str, Any], list[list[str]]]:
        """Start ``threads``; time (and count CPU) from when all have passed ``ready``."""
        from bench.stack import cpu_seconds

        for t in threads:
            t.start()
        ready.wait()
        cpu0, own0 = (cpu_seconds(self.state_dir) if self.state_dir else {}), os.times()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        summary = summarize(self.latencies, wall, clients)
        if self.state_dir:
            cpu1, own1 = cpu_seconds(self.state_dir), os.times()
            spent = {k: cpu1[k] - cpu0[k] for k in cpu1 if k in cpu0}
            spent["client (this benchmark)"] = own1.user + own1.system - own0.user - own0.system
            summary["cpu_ms_per_request"] = {
                k: round(1000 * v / requests, 2)
                for k, v in sorted(spent.items(), key=lambda kv: -kv[1])
                if v > 0
            }
        summary["errors"] = len(self.errors)
        if self.errors:
            summary["first_error"] = self.errors[0]
        summary["load"] = Path("/proc/loadavg").read_text().split()[:3]
        return summary, [self.results.get(i, []) for i in range(len(self.params))]


def http_run(
    api: str, params: Sequence[dict[str, Any]], clients: int, requests: int, state_dir: Path | None = None
) -> tuple[dict[str, Any], list[list[str]]]:
    """``requests`` searches over ``clients`` keep-alive connections (closed loop, each
    client taking the next query in turn); the summary and, per query index, the ids returned.
    With ``state_dir``, the summary also says how many CPU milliseconds each of the stack's
    processes (and this client) spent per request."""
    import threading

    run = _Searches(api, params, state_dir)
    counter = iter(range(requests))
    ready = threading.Barrier(clients + 1, timeout=120)

    def worker() -> None:
        with run.client(ready) as client:
            while True:
                with run.lock:
                    i = next(counter, None)
                if i is None:
                    return
                run.send(client, i, time.perf_counter())

    return run.run([threading.Thread(target=worker) for _ in range(clients)], clients, requests, ready)


def arrivals(rate: float, requests: int, seed: int = 0) -> list[float]:
    """Send times (s from the start) of a Poisson stream of ``rate`` requests per second."""
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=requests)
    return np.cumsum(gaps).tolist()


def http_open(
    api: str,
    params: Sequence[dict[str, Any]],
    rate: float,
    requests: int,
    state_dir: Path | None = None,
    connections: int = 32,
) -> tuple[dict[str, Any], list[list[str]]]:
    """``requests`` searches arriving at ``rate`` per second (open loop, Poisson), whatever the
    server's pace: each latency counts from the request's scheduled time, so time spent waiting
    for a free connection (the server fell behind) is in it. As :func:`http_run` otherwise;
    ``qps`` is requests over the wall time, the stream's own randomness and the last answer
    included: a little below ``rate`` when the server keeps up, far below when it cannot."""
    import queue
    import threading

    run = _Searches(api, params, state_dir)
    due: queue.Queue[tuple[int, float] | None] = queue.Queue()
    times = arrivals(rate, requests)
    ready = threading.Barrier(connections + 2, timeout=120)

    def dispatcher() -> None:
        ready.wait()
        t0 = time.perf_counter()
        for i, at in enumerate(times):
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            due.put((i, t0 + at))
        for _ in range(connections):
            due.put(None)

    def worker() -> None:
        with run.client(ready) as client:
            while (item := due.get()) is not None:
                run.send(client, item[0], item[1])

    threads = [threading.Thread(target=dispatcher)] + [
        threading.Thread(target=worker) for _ in range(connections)
    ]
    summary, got = run.run(threads, connections, requests, ready)
    summary["offered_qps"] = rate
    return summary, got


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    m: int
    ef_construct: int
    optimize: bool

    @classmethod
    def parse(cls, spec: str) -> Variant:
        """``name:m:ef_construct[:plain]`` (plain: the shard as written, no optimize())."""
        parts = spec.split(":")
        return cls(parts[0], int(parts[1]), int(parts[2]), not (len(parts) > 3 and parts[3] == "plain"))


def _ef(spec: str) -> int | None:
    return None if spec in ("", "none", "default") else int(spec)


def table(rows: Sequence[tuple[str, str, str, str]]) -> str:
    out = ["| metric | measured | goal | met? |", "| --- | ---: | ---: | :---: |"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.search",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--n", type=int, default=100_000, help="points to store (default 100000)")
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    ap.add_argument("--queries", type=int, default=1000, help="held-out query headlines for recall")
    ap.add_argument("--days", type=float, default=30.0, help="length of the time filter")
    ap.add_argument(
        "--variants",
        default="plain:16:100:plain,m16:16:100",
        help="store variants name:m:ef_construct[:plain], measured in-process (comma-separated)",
    )
    ap.add_argument("--ef", default="none,64,128,256", help="search-time hnsw_ef values to try in-process")
    ap.add_argument("--serve", default="best", help="variant the stack serves ('best', a name, or 'none')")
    ap.add_argument("--requests", type=int, default=400, help="HTTP requests per 1-client run (x2 for 8)")
    ap.add_argument(
        "--like", action="store_true", help="also time like=<id> searches (no query embedding; no recall)"
    )
    ap.add_argument(
        "--state-dir",
        type=Path,
        default=Path(STACK_ENV["BTCPULSE_STATE_DIR"]),
        help="the stack's state dir: REMOVED and rebuilt on every run (default %(default)s)",
    )
    ap.add_argument(
        "--proxy",
        action="store_true",
        help="also measure through Serve's proxy (its own port beside the API's, one hop more: "
        "the path of a Ray cluster started without direct ingress)",
    )
    ap.add_argument(
        "--rates",
        default="100",
        help="offered loads (requests/s, comma-separated) for open-loop runs: Poisson arrivals, "
        "latency from each request's scheduled time ('' for none)",
    )
    ap.add_argument("--tag", default="", help="suffix of the results file: search-<date>[-tag].json")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    started = datetime.now(UTC)
    load_before = Path("/proc/loadavg").read_text().split()[:3]

    units, corpus = build_units(args.data, args.n)
    say(f"corpus: {json.dumps(corpus)}")
    if len(units) < args.n:
        say(f"NOTE: only {len(units):,} unique real texts available (asked for {args.n:,})")
    query_texts = load_queries(args.data, units, args.queries)
    texts = [u.text for u in units]
    vectors = embed_cached(texts)
    qvec = embed_queries_cached(query_texts)
    analyses = analyses_cached(texts, vectors, key=texts_key(texts, "lexicon", "onnx-int8"))
    ids = [point_id(u) for u in units]
    assert len(set(ids)) == len(ids), "point ids collide"
    rows = payloads(units, ids, analyses)
    ts = np.array([u.published_ts for u in units])
    start_ts, end_ts = window(ts, args.days)
    mask = (ts >= start_ts) & (ts < end_ts)
    say(f"time filter {iso(start_ts)} .. {iso(end_ts)}: {int(mask.sum()):,} of {len(ts):,} points")

    from cluster.vectors import SearchFilter

    t0 = time.perf_counter()
    truth = {
        "none": [[ids[j] for j in row] for row in exact_topk(vectors, qvec, 10)],
        "time": [[ids[j] for j in row] for row in exact_topk(vectors, qvec, 10, mask)],
    }
    exact_s = time.perf_counter() - t0
    filters = {"none": None, "time": SearchFilter(start_ts=start_ts, end_ts=end_ts)}

    # 1. in-process sweep over the store's build and search parameters
    sweep: list[dict[str, Any]] = []
    variants = [Variant.parse(s) for s in args.variants.split(",") if s]
    scratch = args.state_dir.with_name(args.state_dir.name + "-variants")
    built: dict[str, Path] = {}
    for v in variants:
        path = shard_path(scratch / v.name)
        built[v.name] = path
        info = load_store(path, ids, vectors, rows, m=v.m, ef_construct=v.ef_construct, optimize=v.optimize)
        for ef in [_ef(e) for e in args.ef.split(",")] if v.optimize else [None]:
            entry: dict[str, Any] = {"variant": v.name, "hnsw_ef": ef, "store": info}
            for fname, flt in filters.items():
                found, times = store_search(path, vectors.shape[1], qvec, flt, hnsw_ef=ef)
                stats = summarize(times, sum(times), 1)
                entry[fname] = {
                    "recall@10": round(recall_at_k(found, truth[fname]), 4),
                    "p50_ms": stats["p50_ms"],
                    "p99_ms": stats["p99_ms"],
                    "load": Path("/proc/loadavg").read_text().split()[:3],
                }
            say(f"in-process: {json.dumps(entry)}")
            sweep.append(entry)

    def score(e: dict[str, Any]) -> tuple[bool, float, float]:
        ok = min(e["none"]["recall@10"], e["time"]["recall@10"]) >= 0.95
        return (ok, -max(e["none"]["p99_ms"], e["time"]["p99_ms"]) if ok else 0.0, e["time"]["recall@10"])

    best = max(sweep, key=score) if sweep else None
    if best:
        say(f"best in-process: {best['variant']} hnsw_ef={best['hnsw_ef']}")
    serve_name = (best["variant"] if best else "none") if args.serve == "best" else args.serve

    # 2. what the query embedding alone costs, per backend (the replica embeds every q=)
    query_cost = query_embedding_cost(query_texts[:200])

    # 3. the stack, serving one variant, measured through HTTP
    import cluster.vectors as cv

    http: dict[str, Any] = {}
    served: dict[str, Any] | None = None
    if serve_name != "none":
        import shutil

        v = next(x for x in variants if x.name == serve_name)
        served = {"variant": v.name, "m": v.m, "ef_construct": v.ef_construct, "hnsw_ef": cv.SEARCH_HNSW_EF}
        if args.state_dir.exists():
            shutil.rmtree(args.state_dir)
        final = shard_path(args.state_dir)
        final.parent.mkdir(parents=True)
        shutil.move(str(built[v.name]), str(final))
        env = stack_env(args.state_dir, v.m, v.ef_construct)
        api = f"http://127.0.0.1:{env['BTCPULSE_API_PORT']}"
        targets = [("", api)]
        if args.proxy:
            # The API port is the replica's own (direct ingress); Serve's proxy listens beside it.
            from cluster.settings import BtcpulseSettings

            # (the rest of the stack's settings come from this process's environment, as env's)
            proxy = BtcpulseSettings(api_port=int(env["BTCPULSE_API_PORT"])).proxy_port
            targets.append(("proxy:", f"http://127.0.0.1:{proxy}"))
        try:
            t_up = time.perf_counter()
            btcpulse(["up", "--no-live"], env)
            served["up_s"] = round(time.perf_counter() - t_up, 1)
            nq = min(len(query_texts), args.requests)
            base = [{"q": q, "k": 10} for q in query_texts[:nq]]
            timed = [{**p, "start": iso(start_ts), "end": iso(end_ts)} for p in base]
            http_run(api, base[:50], 2, 100)  # warm-up: the query model, the actor, the pages
            runs: list[tuple[str, list[dict[str, Any]]]] = [("none", base), ("time", timed)]
            if args.like:
                # the same path without the query embedding: a stored point's own vector
                runs.append(
                    ("like", [{"like": ids[j], "k": 10} for j in range(0, len(ids), len(ids) // nq)][:nq])
                )
            for prefix, url in targets:
                for fname, params in runs:
                    for clients, n in ((1, args.requests), (8, 2 * args.requests)):
                        summary, got = http_run(url, params, clients, n, args.state_dir)
                        if fname in truth:
                            summary["recall@10"] = round(recall_at_k(got, truth[fname][:nq]), 4)
                        http[f"{prefix}{fname}/{clients}"] = summary
                        say(f"http {prefix}{fname} filter, {clients} client(s): {json.dumps(summary)}")
                    for rate in rates:
                        summary, _ = http_open(url, params, rate, 2 * args.requests, args.state_dir)
                        http[f"{prefix}{fname}/@{rate:g}"] = summary
                        say(f"http {prefix}{fname} filter, {rate:g}/s offered: {json.dumps(summary)}")
        finally:
            try:
                btcpulse(["down"], env, timeout_s=300)
            except Exception as exc:  # report the figures anyway; say what is left running
                say(f"WARNING: btcpulse down failed ({exc}); stop the stack on {args.state_dir} by hand")
    if scratch.exists():
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)

    # 4. report
    rows_md: list[tuple[str, str, str, str]] = []
    for key, label in (
        ("none", "no filter"),
        ("time", f"{args.days:g}-day filter"),
        ("like", "like=<id>, no embedding"),
        ("proxy:none", "no filter, through Serve's proxy"),
        ("proxy:time", f"{args.days:g}-day filter, through Serve's proxy"),
    ):
        for clients in (1, 8):
            h = http.get(f"{key}/{clients}")
            if not h:
                continue
            rows_md.append((f"HTTP p50, {label}, {clients} client(s)", f"{h['p50_ms']} ms", "-", "-"))
            rows_md.append(
                (
                    f"HTTP p99, {label}, {clients} client(s)",
                    f"{h['p99_ms']} ms",
                    "<= 50 ms",
                    "yes" if h["p99_ms"] <= 50 else "no",
                )
            )
            rows_md.append(
                (
                    f"QPS, {label}, {clients} client(s)",
                    f"{h['qps']}",
                    ">= 100",
                    "yes" if h["qps"] >= 100 else "no",
                )
            )
        for rate in rates:
            h = http.get(f"{key}/@{rate:g}")
            if not h:
                continue
            at = f"{label}, {rate:g}/s offered (open loop)"
            rows_md.append((f"HTTP p50, {at}", f"{h['p50_ms']} ms", "-", "-"))
            rows_md.append(
                (f"HTTP p99, {at}", f"{h['p99_ms']} ms", "<= 50 ms", "yes" if h["p99_ms"] <= 50 else "no")
            )
            # served: requests / wall time, the arrival stream's own ramp and tail included
            rows_md.append((f"QPS served, {at}", f"{h['qps']}", "-", "-"))
        h = http.get(f"{key}/1")
        if h and "recall@10" in h:
            rows_md.append(
                (
                    f"recall@10 via API, {label}",
                    f"{h['recall@10']}",
                    ">= 0.95",
                    "yes" if h["recall@10"] >= 0.95 else "no",
                )
            )
    for e in sweep:
        for key, label in (("none", "no filter"), ("time", f"{args.days:g}-day filter")):
            r = e[key]
            rows_md.append(
                (
                    f"in-process store {e['variant']} ef={e['hnsw_ef'] or 'default'}, {label}: "
                    "recall@10 / p50 / p99",
                    f"{r['recall@10']} / {r['p50_ms']} ms / {r['p99_ms']} ms",
                    ">= 0.95",
                    "yes" if r["recall@10"] >= 0.95 else "no",
                )
            )
    for row in query_cost:
        rows_md.append(
            (
                f"query embedding alone, {row['backend']}, {row['per_pass']} per pass, 1 thread",
                f"{row['ms_per_query']} ms per query",
                "-",
                "-",
            )
        )
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    result = {
        "date": started.date().isoformat(),
        "started_at": started.isoformat(),
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "corpus": corpus,
        "queries": len(query_texts),
        "query_source": str(QUERIES_CSV),
        "time_filter": {"start": iso(start_ts), "end": iso(end_ts), "points": int(mask.sum())},
        "exact_search_s": round(exact_s, 2),
        "sweep": sweep,
        "served": served,
        "http": http,
        "query_embedding": query_cost,
        "load_before": load_before,
        "load_after": load_after,
        "cpus": os.cpu_count(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"search-{started.date().isoformat()}{'-' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    say()
    say(table(rows_md))
    say(f"\nload average before {' '.join(load_before)}, after {' '.join(load_after)}; {os.cpu_count()} CPUs")
    say(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
