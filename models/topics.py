"""Online topic model over precomputed sentence embeddings (BERTopic, merged chunk by chunk).

Design (BERTopic 0.17 "merge models" recipe for incremental learning):

* Documents are never re-embedded: callers pass the 384-d unit vectors they already computed
  with :class:`models.embedder.Embedder` (one forward pass shared by every model).
* :meth:`OnlineTopicModel.assign` labels documents with the current model (nearest topic
  centroid by cosine, ``-1`` below a floor) and buffers them for learning.
* :meth:`OnlineTopicModel.learn` folds the buffer in fixed-size chunks: each chunk gets its own
  small BERTopic (UMAP -> HDBSCAN -> ``CountVectorizer(ngram_range=(1, 2))`` -> c-TF-IDF), then
  ``BERTopic.merge_models([base, chunk], min_similarity=...)`` keeps every existing topic id and
  appends only the chunk topics whose centroid is not close to an existing one. Topic ids are
  therefore stable for ever, and new topics appear as the news changes.

Why UMAP (BERTopic's default reducer) for chunks of a few hundred documents: on this corpus a
10-component PCA + HDBSCAN put ~80% of a 500-document chunk into one cluster or the outliers
(``eom``) or left ~75% as outliers (``leaf``); 5-d cosine UMAP gives ~16 clean clusters per chunk
with ~15% outliers, for ~1.2 s per 500 documents on one core (plus a one-off numba JIT warm-up
of ~10 s in a fresh process). A fixed ``random_state`` makes UMAP deterministic.

Keywords and labels are fixed when a topic is created (the merge keeps the base model's
representation), so a topic's id, keywords and label never change afterwards; only its size
grows. Labels are the top keywords with words that would top every crypto topic ("bitcoin",
"crypto", ...) and words shared by many topics of the same chunk trimmed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import threading
import time
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Words dropped from the vectorizer: in this domain they would top every topic's c-TF-IDF.
DOMAIN_STOP_WORDS: frozenset[str] = frozenset(
    {
        "bitcoin",
        "bitcoins",
        "btc",
        "crypto",
        "cryptos",
        "cryptocurrency",
        "cryptocurrencies",
        "cryptonews",
        "cointelegraph",
        "cryptopotato",
        "usd",
    }
)

#: Extra words trimmed from keywords/labels only (kept in the vectorizer so bigrams such as
#: "price analysis" or "market cap" still form): generic news verbs and market filler.
LABEL_STOP_WORDS: frozenset[str] = frozenset(
    {
        "said",
        "says",
        "say",
        "new",
        "just",
        "today",
        "week",
        "weeks",
        "day",
        "days",
        "year",
        "years",
        "month",
        "months",
        "time",
        "like",
        "according",
        "latest",
        "news",
        "recent",
        "recently",
        "amid",
        "including",
        "based",
        "million",
        "billion",
        "000",
        "coin",
        "coins",
        "token",
        "tokens",
        "blockchain",
        "market",
        "markets",
        "price",
        "prices",
        "digital",
        "asset",
        "assets",
        "industry",
        "space",
        "project",
        "projects",
        "com",
        # boilerplate of a daily digest series in the news feed
        "digest",
        "bite-sized",
        "cryptoasset",
        "blockchain-related",
    }
)

UNASSIGNED = "unassigned"

log = logging.getLogger(__name__)

# Literal escape sequences left by news scrapers ("\\xa0", "\\r\\n") would become tokens.
_ESCAPES = re.compile(r"\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\[rnt]")


def clean_text(text: str) -> str:
    """Drop literal backslash escapes (``\\xa0``, ``\\r\\n``) that scraped feeds carry."""
    return _ESCAPES.sub(" ", text)


@dataclass(frozen=True)
class TopicInfo:
    """One learned topic.

    Attributes:
        id: Stable topic id (``>= 0``); never reused or renumbered.
        label: Short readable label, the top 3-4 keywords joined by ``", "``.
        keywords: Up to ``n_keywords`` words/bigrams, most representative first (c-TF-IDF).
        size: Documents attributed to the topic by learning so far.
        created_at: Unix seconds of the newest document in the chunk that created the topic
            (the moment the model could first know it).
    """

    id: int
    label: str
    keywords: list[str]
    size: int
    created_at: float


@dataclass(frozen=True)
class TopicAssignment:
    """A document's topic: ``topic_id == -1`` (label ``"unassigned"``, no keywords) when no
    model is fitted yet or the document is not close enough to any topic. ``score`` is the
    cosine similarity to the chosen topic centroid (0.0 before the first fit)."""

    topic_id: int
    label: str
    keywords: list[str]
    score: float


@dataclass
class _Snapshot:
    """What :meth:`OnlineTopicModel.assign` reads: replaced as a whole by ``learn``."""

    ids: np.ndarray  # (k,) int64 topic ids
    centroids: np.ndarray  # (k, dim) float32, unit rows
    infos: dict[int, TopicInfo]


def _empty_snapshot(dim: int) -> _Snapshot:
    return _Snapshot(np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32), {})


def make_label(keywords: Sequence[str], max_terms: int = 4) -> str:
    """Readable label from ranked keywords: up to ``max_terms`` terms, skipping a unigram that a
    chosen bigram already contains and a bigram whose words are all chosen already."""
    chosen: list[str] = []
    words: set[str] = set()
    for kw in keywords:
        parts = kw.split()
        if len(parts) == 1 and any(kw in c.split() for c in chosen):
            continue
        if len(parts) > 1 and all(p in words for p in parts):
            continue
        # A bigram that contains an already chosen unigram replaces it (more specific).
        chosen = [c for c in chosen if not (len(c.split()) == 1 and c in parts)]
        chosen.append(kw)
        words.update(parts)
        if len(chosen) >= max_terms:
            break
    return ", ".join(chosen) if chosen else UNASSIGNED


class OnlineTopicModel:
    """Incremental BERTopic topic model with stable ids, over precomputed unit embeddings.

    Args:
        min_fit_docs: Documents needed for the first fit (the first chunk).
        refit_every: Size of every later chunk; :meth:`learn` folds the buffer in chunks of
            exactly this many documents, so results depend only on the order of documents,
            not on when ``learn`` is called.
        min_similarity: Cosine similarity between topic centroids above which a chunk topic is
            folded into the existing topic (``BERTopic.merge_models``); below it, it becomes a
            new topic. Higher -> more, finer topics.
        assign_floor: Minimum cosine similarity between a document and its nearest topic
            centroid for :meth:`assign` to return that topic (else ``-1``).
        min_cluster_size: HDBSCAN ``min_cluster_size`` per chunk (smallest topic that can appear).
        min_samples: HDBSCAN ``min_samples`` (lower -> fewer outliers).
        n_neighbors: UMAP neighbourhood size (local vs global structure).
        n_components: UMAP output dimensions fed to HDBSCAN.
        n_keywords: Keywords kept per topic.
        max_buffer: Cap on buffered, not yet learned documents; the oldest are dropped beyond it
            (bounded memory when nobody calls ``learn``).
        seed: UMAP ``random_state`` (the only randomised step).

    Thread safety: ``assign`` and ``topics`` read an immutable snapshot and append to the
    buffer under a short lock (``_lock``); ``learn`` takes the chunks out of the buffer under
    that lock, fits and merges *without* holding it (so ``assign`` keeps running with the old
    model), then swaps in the new snapshot under the lock. A second lock (``_learn_lock``)
    serialises concurrent ``learn``/``save`` calls. Documents assigned while ``learn`` runs stay
    in the buffer for the next call.
    """

    def __init__(
        self,
        *,
        min_fit_docs: int = 400,
        refit_every: int = 500,
        min_similarity: float = 0.85,
        assign_floor: float = 0.35,
        min_cluster_size: int = 8,
        min_samples: int = 3,
        n_neighbors: int = 15,
        n_components: int = 5,
        n_keywords: int = 8,
        max_buffer: int = 20_000,
        seed: int = 42,
    ) -> None:
        if min_fit_docs < 2 * min_cluster_size:
            raise ValueError(
                f"min_fit_docs ({min_fit_docs}) must be >= 2 * min_cluster_size ({min_cluster_size})"
            )
        if refit_every < 2 * min_cluster_size:
            raise ValueError(
                f"refit_every ({refit_every}) must be >= 2 * min_cluster_size ({min_cluster_size})"
            )
        if not 0.0 < min_similarity <= 1.0:
            raise ValueError(f"min_similarity must be in (0, 1], got {min_similarity}")
        if not -1.0 <= assign_floor <= 1.0:
            raise ValueError(f"assign_floor must be in [-1, 1], got {assign_floor}")
        if min_cluster_size < 2 or min_samples < 1 or n_neighbors < 2 or n_components < 1 or n_keywords < 1:
            raise ValueError(
                "need min_cluster_size >= 2, min_samples >= 1, n_neighbors >= 2, n_components >= 1, "
                "n_keywords >= 1"
            )
        if max_buffer < max(min_fit_docs, refit_every):
            raise ValueError("max_buffer must be >= max(min_fit_docs, refit_every)")
        self.min_fit_docs = int(min_fit_docs)
        self.refit_every = int(refit_every)
        self.min_similarity = float(min_similarity)
        self.assign_floor = float(assign_floor)
        self.min_cluster_size = int(min_cluster_size)
        self.min_samples = int(min_samples)
        self.n_neighbors = int(n_neighbors)
        self.n_components = int(n_components)
        self.n_keywords = int(n_keywords)
        self.max_buffer = int(max_buffer)
        self.seed = int(seed)

        self._lock = threading.Lock()
        self._learn_lock = threading.Lock()
        self._dim: int | None = None
        self._base: Any = None  # merged BERTopic model, None before the first fit
        self._snapshot = _empty_snapshot(0)
        self._sizes: dict[int, int] = {}
        self._infos: dict[int, TopicInfo] = {}
        self._buf_texts: list[str] = []
        self._buf_vecs: list[np.ndarray] = []
        self._buf_ts: list[float] = []
        self.chunks_learned = 0
        self.chunks_skipped = 0

    # ------------------------------------------------------------------ public API

    def assign(
        self,
        texts: list[str],
        vectors: np.ndarray,
        ts: Sequence[float] | None = None,
        learn: bool = True,
    ) -> list[TopicAssignment]:
        """Assign topics with the current model and buffer the documents for :meth:`learn`.

        Args:
            texts: Document texts (title + summary), used for keywords when learning.
            vectors: ``(len(texts), dim)`` float array of unit-norm embeddings, row ``i`` for
                ``texts[i]`` (the shared all-MiniLM-L6-v2 embedding; never recomputed here).
            ts: Publication times, Unix seconds, one per text; ``None`` -> now.
            learn: Buffer the documents for learning (``False``: only assign, e.g. to relabel
                documents the model has already learned from).

        Returns:
            One :class:`TopicAssignment` per text, in order.

        Raises:
            TypeError: ``texts`` is a ``str`` or holds non-``str`` items.
            ValueError: shape mismatch, non-finite vectors, or a dimension differing from
                earlier calls.
        """
        vecs = self._check_input(texts, vectors, ts)
        n = len(texts)
        stamps = [float(t) for t in ts] if ts is not None else [time.time()] * n
        with self._lock:
            snap = self._snapshot
            if learn:
                self._buf_texts.extend(texts)
                self._buf_vecs.extend(vecs)
                self._buf_ts.extend(stamps)
                overflow = len(self._buf_texts) - self.max_buffer
                if overflow > 0:
                    del self._buf_texts[:overflow], self._buf_vecs[:overflow], self._buf_ts[:overflow]
        return self._assign_with(snap, vecs)

    def learn(self) -> int:
        """Fold buffered documents into the model, in chunks (``min_fit_docs`` for the first fit,
        then ``refit_every``); a remainder smaller than a chunk stays buffered.

        Returns:
            The number of new topics created (0 when not enough documents were buffered).
        """
        with self._learn_lock:
            with self._lock:
                chunks = []
                need = self.refit_every if self._base is not None else self.min_fit_docs
                while len(self._buf_texts) >= need:
                    chunks.append(
                        (self._buf_texts[:need], np.stack(self._buf_vecs[:need]), self._buf_ts[:need])
                    )
                    del self._buf_texts[:need], self._buf_vecs[:need], self._buf_ts[:need]
                    need = self.refit_every
            created = 0
            for texts, vecs, stamps in chunks:
                created += self._fold(texts, vecs, stamps)
            if chunks and self._base is not None:
                snap = self._build_snapshot()
                with self._lock:
                    self._snapshot = snap
            return created

    def topics(self) -> list[TopicInfo]:
        """All topics, by id, with their current sizes."""
        with self._lock:
            snap = self._snapshot
        return [snap.infos[int(i)] for i in sorted(snap.ids.tolist())]

    @property
    def buffered(self) -> int:
        """Documents waiting for :meth:`learn`."""
        with self._lock:
            return len(self._buf_texts)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a checkpoint (one zip file: the BERTopic model in safetensors form, the topic
        registry and the buffer) atomically: a temp file beside ``path`` then ``os.replace``."""
        import safetensors.numpy

        path = Path(path)
        with self._learn_lock:
            with self._lock:
                buf_texts = list(self._buf_texts)
                buf_vecs = np.stack(self._buf_vecs) if self._buf_vecs else np.zeros((0, self._dim or 0))
                buf_ts = list(self._buf_ts)
            state = {
                "format": 1,
                "params": self._params(),
                "dim": self._dim,
                "chunks_learned": self.chunks_learned,
                "sizes": {str(k): v for k, v in self._sizes.items()},
                "topics": [
                    {"id": i.id, "label": i.label, "keywords": i.keywords, "created_at": i.created_at}
                    for i in self._infos.values()
                ],
                "buffer_texts": buf_texts,
                "buffer_ts": buf_ts,
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
                    zf.writestr("state.json", json.dumps(state))
                    zf.writestr(
                        "buffer.safetensors",
                        safetensors.numpy.save({"vectors": np.ascontiguousarray(buf_vecs, np.float32)}),
                    )
                    if self._base is not None:
                        with tempfile.TemporaryDirectory() as d:
                            self._base.save(
                                d, serialization="safetensors", save_ctfidf=False, save_embedding_model=False
                            )
                            for f in sorted(Path(d).iterdir()):
                                zf.write(f, "bertopic/" + f.name)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> OnlineTopicModel:
        """Restore a checkpoint written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file is not a checkpoint of this format.
        """
        import safetensors.numpy

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no topic-model checkpoint at {path}")
        try:
            with zipfile.ZipFile(path) as zf:
                state = json.loads(zf.read("state.json"))
                buf = safetensors.numpy.load(zf.read("buffer.safetensors"))["vectors"]
                names = [n for n in zf.namelist() if n.startswith("bertopic/")]
                base = None
                if names:
                    from bertopic import BERTopic
                    from bertopic.backend import BaseEmbedder

                    with tempfile.TemporaryDirectory() as d:
                        for n in names:
                            (Path(d) / n.split("/", 1)[1]).write_bytes(zf.read(n))
                        base = BERTopic.load(d, embedding_model=BaseEmbedder())
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path} is not an OnlineTopicModel checkpoint: {exc}") from exc
        if state.get("format") != 1:
            raise ValueError(f"{path}: unsupported checkpoint format {state.get('format')!r}")
        model = cls(**state["params"])
        model._dim = state["dim"]
        model._base = base
        model.chunks_learned = int(state["chunks_learned"])
        model._sizes = {int(k): int(v) for k, v in state["sizes"].items()}
        model._infos = {
            int(t["id"]): TopicInfo(
                id=int(t["id"]),
                label=t["label"],
                keywords=list(t["keywords"]),
                size=model._sizes.get(int(t["id"]), 0),
                created_at=float(t["created_at"]),
            )
            for t in state["topics"]
        }
        model._buf_texts = list(state["buffer_texts"])
        model._buf_vecs = [np.asarray(v, dtype=np.float32) for v in buf]
        model._buf_ts = [float(t) for t in state["buffer_ts"]]
        model._snapshot = model._build_snapshot() if base is not None else _empty_snapshot(model._dim or 0)
        return model

    # ------------------------------------------------------------------ internals

    def _params(self) -> dict[str, Any]:
        return {
            "min_fit_docs": self.min_fit_docs,
            "refit_every": self.refit_every,
            "min_similarity": self.min_similarity,
            "assign_floor": self.assign_floor,
            "min_cluster_size": self.min_cluster_size,
            "min_samples": self.min_samples,
            "n_neighbors": self.n_neighbors,
            "n_components": self.n_components,
            "n_keywords": self.n_keywords,
            "max_buffer": self.max_buffer,
            "seed": self.seed,
        }

    def _check_input(self, texts: list[str], vectors: np.ndarray, ts: Sequence[float] | None) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("assign() takes a list of texts, not a single str")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is {type(t).__name__}, expected str")
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(texts):
            raise ValueError(f"vectors must have shape ({len(texts)}, dim), got {vecs.shape}")
        if ts is not None and len(ts) != len(texts):
            raise ValueError(f"ts has {len(ts)} values for {len(texts)} texts")
        if ts is not None and not all(math.isfinite(float(t)) for t in ts):
            raise ValueError("ts values must be finite Unix seconds")
        if not np.isfinite(vecs).all():
            raise ValueError("vectors contain NaN or inf")
        with self._lock:
            if self._dim is None and len(texts):
                self._dim = int(vecs.shape[1])
                if self._snapshot.centroids.shape[1] != self._dim:
                    self._snapshot = _empty_snapshot(self._dim)
            if len(texts) and vecs.shape[1] != self._dim:
                raise ValueError(f"vectors have dim {vecs.shape[1]}, the model uses {self._dim}")
        return vecs

    def _assign_with(self, snap: _Snapshot, vecs: np.ndarray) -> list[TopicAssignment]:
        if len(vecs) == 0:
            return []
        if len(snap.ids) == 0:
            return [TopicAssignment(-1, UNASSIGNED, [], 0.0) for _ in range(len(vecs))]
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        unit = np.divide(vecs, norms, out=np.zeros_like(vecs), where=norms > 0)
        sims = unit @ snap.centroids.T
        best = np.argmax(sims, axis=1)
        out = []
        for row, j in enumerate(best):
            score = float(sims[row, j])
            if score < self.assign_floor:
                out.append(TopicAssignment(-1, UNASSIGNED, [], score))
            else:
                info = snap.infos[int(snap.ids[j])]
                out.append(TopicAssignment(info.id, info.label, list(info.keywords), score))
        return out

    def _chunk_model(self) -> Any:
        from bertopic import BERTopic
        from bertopic.backend import BaseEmbedder
        from bertopic.vectorizers import ClassTfidfTransformer
        from hdbscan import HDBSCAN
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer
        from umap import UMAP

        vectorizer = CountVectorizer(
            ngram_range=(1, 2),
            stop_words=sorted(ENGLISH_STOP_WORDS | DOMAIN_STOP_WORDS),
            # Words that start with a letter: drops bare numbers and prices ("20", "000").
            token_pattern=r"(?u)\b[^\W\d_][\w\-]+\b",  # noqa: S106 (a regex, not a secret)
            min_df=2,
        )
        return BERTopic(
            embedding_model=BaseEmbedder(),  # never used: embeddings are always passed in
            umap_model=UMAP(
                n_neighbors=self.n_neighbors,
                n_components=self.n_components,
                min_dist=0.0,
                metric="cosine",
                random_state=self.seed,  # fixed seed: deterministic (and single-threaded)
            ),
            hdbscan_model=HDBSCAN(
                min_cluster_size=self.min_cluster_size,
                min_samples=self.min_samples,
                metric="euclidean",
                cluster_selection_method="eom",
                core_dist_n_jobs=1,
            ),
            vectorizer_model=vectorizer,
            ctfidf_model=ClassTfidfTransformer(reduce_frequent_words=True),
            top_n_words=15,
            calculate_probabilities=False,
            verbose=False,
        )

    def _fold(self, texts: list[str], vecs: np.ndarray, stamps: list[float]) -> int:
        """Fit a BERTopic on one chunk and merge it into the base; returns new topics."""
        from bertopic import BERTopic

        chunk = self._chunk_model()
        with warnings.catch_warnings():
            # UMAP notes that a fixed random_state forces one thread: that is intended.
            warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
            try:
                chunk.fit([clean_text(t) for t in texts], embeddings=vecs)
            except ValueError as exc:
                # A degenerate chunk (e.g. the same text repeated: no term occurs in two documents
                # after stop words) cannot be modelled; skip it rather than stop learning.
                log.warning("topic model: skipped a chunk of %d documents: %s", len(texts), exc)
                self.chunks_skipped += 1
                return 0
        _blank_outlier_row(chunk)
        when = max(stamps)
        common = _common_words(chunk)
        if self._base is None:
            merged = chunk
            doc_topics = [int(t) for t in chunk.topics_]
            old_ids: set[int] = set()
        else:
            before = len(self._base.topics_)
            merged = BERTopic.merge_models([self._base, chunk], min_similarity=self.min_similarity)
            doc_topics = [int(t) for t in merged.topics_[before:]]
            old_ids = set(self._infos)
        new_ids = sorted(t for t in merged.topic_representations_ if t != -1 and t not in old_ids)
        for t in new_ids:
            words = [w for w, _ in merged.topic_representations_[t] if w]
            kws = _keywords(words, common, self.n_keywords)
            self._infos[t] = TopicInfo(t, make_label(kws), kws, 0, when)
        for t in doc_topics:
            if t != -1:
                self._sizes[t] = self._sizes.get(t, 0) + 1
        self._infos = {
            t: TopicInfo(i.id, i.label, i.keywords, self._sizes.get(t, 0), i.created_at)
            for t, i in self._infos.items()
        }
        # Keep the merged model small: one entry per topic id is all merge_models needs
        # (it takes the largest id from this list, and "-1 present" means an outlier row).
        # (merge_models derives "has an outlier row" from -1 being in that list, and gets it wrong
        # when the base had no outliers but the chunk had some: count the rows instead.)
        outlier_row = _has_outlier_row(merged)
        merged.topics_ = ([-1] if outlier_row else []) + sorted(merged.topic_representations_.keys() - {-1})
        _blank_outlier_row(merged)
        self._base = merged
        self.chunks_learned += 1
        return len(new_ids)

    def _build_snapshot(self) -> _Snapshot:
        base = self._base
        off = int(_has_outlier_row(base))
        emb = np.asarray(base.topic_embeddings_, dtype=np.float32)[off:]
        ids = np.array(sorted(base.topic_representations_.keys() - {-1}), dtype=np.int64)
        if len(ids) != emb.shape[0]:
            raise RuntimeError(f"topic model is inconsistent: {len(ids)} topics, {emb.shape[0]} embeddings")
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        cent = np.divide(emb, norms, out=np.zeros_like(emb), where=norms > 0)
        infos = {int(t): self._infos[int(t)] for t in ids}
        return _Snapshot(ids, cent, infos)


def _has_outlier_row(model: Any) -> bool:
    """Whether ``topic_embeddings_`` starts with a row for the -1 pseudo-topic."""
    n_topics = len(model.topic_representations_.keys() - {-1})
    return len(model.topic_embeddings_) == n_topics + 1


def _blank_outlier_row(model: Any) -> None:
    """Zero the outlier (-1) pseudo-topic's embedding.

    ``merge_models`` matches chunk topics against *every* row of the base's topic embeddings,
    the outlier row included; the outlier centroid is the mean of all unclustered news, i.e. the
    generic "crypto market" direction, so real new topics close to it would silently map to -1.
    A zero row has cosine 0 with everything and is never matched.
    """
    if model.topic_embeddings_ is not None and _has_outlier_row(model):
        emb = np.array(model.topic_embeddings_, dtype=np.float32, copy=True)
        emb[0] = 0.0
        model.topic_embeddings_ = emb


def _common_words(model: Any, frac: float = 0.4) -> set[str]:
    """Words among the top words of more than ``frac`` of a chunk's topics (at least 3)."""
    reps = [r for t, r in model.topic_representations_.items() if t != -1]
    if len(reps) < 5:
        return set()
    counts: dict[str, int] = {}
    for rep in reps:
        for w in {p for word, _ in rep[:10] for p in word.split()}:
            counts[w] = counts.get(w, 0) + 1
    return {w for w, c in counts.items() if c >= max(3, frac * len(reps))}


def _keywords(words: list[str], common: set[str], n: int) -> list[str]:
    """Ranked keywords without domain/label stop words and chunk-wide common words."""
    drop = DOMAIN_STOP_WORDS | LABEL_STOP_WORDS | common
    kept = [w for w in words if not any(p in drop for p in w.split())]
    if not kept:  # everything was generic: fall back to the raw ranking
        kept = [w for w in words if w]
    return kept[:n]
