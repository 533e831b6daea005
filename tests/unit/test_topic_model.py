"""models.topics.OnlineTopicModel on real 2021-2022 crypto news: readable labels, stable ids,
new topics for a new theme, checkpoints, determinism, input checks.

(``test_topics.py`` beside this file tests the Pulsar topic definitions in ``cluster.topics``.)
"""

from __future__ import annotations

import csv
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from models.topics import (
    DOMAIN_STOP_WORDS,
    UNASSIGNED,
    OnlineTopicModel,
    TopicAssignment,
    clean_text,
    make_label,
)
from tests.conftest import shared_file

CHUNK = 300
KEYWORD = re.compile(r"^[a-z][a-z0-9\-']*( [a-z][a-z0-9\-']*)?$")


def _rows(path: Path) -> list[tuple[float, str]]:
    out = []
    with path.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh, delimiter=";"):
            ts = datetime.strptime(row["date"], "%d-%m-%Y %H:%M").replace(tzinfo=UTC).timestamp()
            text = f"{row['title'] or ''} {row['text'] or ''}".strip()
            out.append((ts, text))
    out.sort(key=lambda r: r[0])  # the file is newest first
    return out


class Corpus:
    """Two months of news before the Terra collapse (2 chunks) and the collapse week."""

    def __init__(self) -> None:
        from models.embedder import Embedder

        rows = _rows(shared_file("crypto_news_2021_2022", "cryptonews.csv"))
        start = datetime(2022, 2, 15, tzinfo=UTC).timestamp()
        crash = datetime(2022, 5, 9, tzinfo=UTC).timestamp()
        base = [r for r in rows if r[0] >= start][: 2 * CHUNK]
        new = [r for r in rows if r[0] >= crash][:CHUNK]
        emb = Embedder(device="cpu")
        self.base_ts = [r[0] for r in base]
        self.base_texts = [r[1] for r in base]
        self.base_vecs = emb.encode(self.base_texts)
        self.new_ts = [r[0] for r in new]
        self.new_texts = [r[1] for r in new]
        self.new_vecs = emb.encode(self.new_texts)

    def chunk(self, i: int) -> tuple[list[str], np.ndarray, list[float]]:
        s = slice(i * CHUNK, (i + 1) * CHUNK)
        return self.base_texts[s], self.base_vecs[s], self.base_ts[s]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus()


def _model() -> OnlineTopicModel:
    return OnlineTopicModel(min_fit_docs=CHUNK, refit_every=CHUNK)


@pytest.fixture(scope="module")
def learned(corpus: Corpus) -> dict[str, object]:
    """A model after each of three learns (two Feb-Apr chunks, then the Terra week), with the
    topics seen after each step."""
    m = _model()
    before = m.assign(*corpus.chunk(0))
    assert m.learn() > 0
    after1 = {t.id: t for t in m.topics()}
    texts, vecs, ts = corpus.chunk(1)
    # learn() in a background thread while assign() keeps being called on the old model.
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(m.learn()))
    m.assign(texts, vecs, ts)
    worker.start()
    during = [m.assign(texts[:50], vecs[:50], ts[:50]) for _ in range(3)]
    worker.join()
    m.learn()  # the 150 documents assigned while learning were buffered: not yet a chunk
    after2 = {t.id: t for t in m.topics()}
    m.assign(corpus.new_texts, corpus.new_vecs, corpus.new_ts)
    new_count = m.learn()
    after3 = {t.id: t for t in m.topics()}
    return {
        "model": m,
        "before": before,
        "during": during,
        "after1": after1,
        "after2": after2,
        "after3": after3,
        "new_count": new_count,
    }


def test_unfitted_model_assigns_unassigned(corpus: Corpus) -> None:
    m = _model()
    texts, vecs, ts = corpus.chunk(0)
    out = m.assign(texts[:5], vecs[:5], ts[:5])
    assert out == [TopicAssignment(-1, UNASSIGNED, [], 0.0)] * 5
    assert m.learn() == 0  # 5 < min_fit_docs: nothing to fold yet
    assert m.buffered == 5
    assert m.assign(texts[:3], vecs[:3], ts[:3], learn=False)[0].topic_id == -1
    assert m.buffered == 5  # learn=False: assigned, not buffered
    assert m.topics() == []


def test_labels_are_readable(learned: dict[str, object]) -> None:
    topics = list(learned["after2"].values())  # type: ignore[attr-defined]
    assert len(topics) >= 8, [t.label for t in topics]
    for t in topics:
        assert t.label and t.label != UNASSIGNED
        assert 1 <= len(t.keywords) <= 8
        assert t.label.split(", ")[0] in t.keywords
        for kw in t.keywords:
            assert KEYWORD.match(kw), (kw, t.label)
            assert kw not in ENGLISH_STOP_WORDS, (kw, t.label)
            assert not set(kw.split()) & DOMAIN_STOP_WORDS, (kw, t.label)
    labels = [t.label for t in topics]
    assert len(set(labels)) >= 0.9 * len(labels), labels
    # The Russia/Ukraine war dominated Feb-Mar 2022 news: some topic must say so.
    assert any({"russia", "russian", "ukraine", "ukrainian", "sanctions"} & set(t.keywords) for t in topics)


def test_ids_and_keywords_stable_across_learns(learned: dict[str, object]) -> None:
    after1, after2, after3 = learned["after1"], learned["after2"], learned["after3"]
    assert isinstance(after1, dict) and isinstance(after2, dict) and isinstance(after3, dict)
    for earlier, later in ((after1, after2), (after2, after3)):
        assert set(earlier) <= set(later)
        for tid, t in earlier.items():
            assert later[tid].keywords == t.keywords
            assert later[tid].label == t.label
            assert later[tid].created_at == t.created_at
            assert later[tid].size >= t.size
    assert sorted(after3) == list(range(len(after3)))  # ids are dense, new ones appended


def test_assign_during_background_learn_is_consistent(learned: dict[str, object]) -> None:
    # Whichever model (old or new) answered, each assignment names an existing topic with its
    # own label and keywords: assign() never sees a half-updated model.
    after2 = learned["after2"]
    assert isinstance(after2, dict)
    for batch in learned["during"]:  # type: ignore[attr-defined]
        assert len(batch) == 50
        for a in batch:
            if a.topic_id == -1:
                assert a.label == UNASSIGNED
            else:
                assert (a.label, a.keywords) == (after2[a.topic_id].label, after2[a.topic_id].keywords)


def test_new_theme_creates_new_topic(learned: dict[str, object]) -> None:
    after2, after3 = learned["after2"], learned["after3"]
    assert isinstance(after2, dict) and isinstance(after3, dict)
    assert learned["new_count"] == len(after3) - len(after2) > 0
    fresh = [after3[i] for i in set(after3) - set(after2)]
    crash = [t for t in fresh if {"luna", "terra", "ust"} & {w for k in t.keywords for w in k.split()}]
    assert crash, [t.label for t in fresh]
    may9 = datetime(2022, 5, 9, tzinfo=UTC).timestamp()
    assert all(t.created_at >= may9 for t in fresh)


def test_assignments_follow_topics(corpus: Corpus, learned: dict[str, object]) -> None:
    m = learned["model"]
    assert isinstance(m, OnlineTopicModel)
    texts, vecs, ts = corpus.chunk(0)
    out = m.assign(texts, vecs, ts)
    known = {t.id: t for t in m.topics()}
    assigned = [a for a in out if a.topic_id != -1]
    assert len(assigned) >= 0.6 * len(out)
    for a in assigned:
        assert a.label == known[a.topic_id].label
        assert a.score >= m.assign_floor
    # Before any fit everything was unassigned.
    assert all(a.topic_id == -1 for a in learned["before"])  # type: ignore[attr-defined]


def test_save_load_roundtrip(tmp_path: Path, corpus: Corpus, learned: dict[str, object]) -> None:
    m = learned["model"]
    assert isinstance(m, OnlineTopicModel)
    path = tmp_path / "ckpt" / "topics.zip"
    m.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["topics.zip"]  # no temp file left behind
    m2 = OnlineTopicModel.load(path)
    assert m2.topics() == m.topics()
    assert m2.buffered == m.buffered
    texts, vecs, ts = corpus.chunk(1)
    a, b = m.assign(texts, vecs, ts), m2.assign(texts, vecs, ts)
    assert [x.topic_id for x in a] == [y.topic_id for y in b]
    assert [x.label for x in a] == [y.label for y in b]
    np.testing.assert_allclose([x.score for x in a], [y.score for y in b], atol=1e-6)
    # Saving again over the same path replaces it atomically.
    m2.save(path)
    assert OnlineTopicModel.load(path).topics() == m.topics()


def test_deterministic_given_seed_and_order(corpus: Corpus) -> None:
    runs = []
    for _ in range(2):
        m = _model()
        m.assign(*corpus.chunk(0))
        m.learn()
        runs.append(m.topics())
    assert runs[0] == runs[1]


def test_bad_input_errors(tmp_path: Path) -> None:
    m = OnlineTopicModel(min_fit_docs=20, refit_every=20)
    vecs = np.ones((2, 4), dtype=np.float32) / 2
    with pytest.raises(TypeError, match="single str"):
        m.assign("one text", vecs[:1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected str"):
        m.assign(["a", 3], vecs)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="shape"):
        m.assign(["a", "b", "c"], vecs)
    with pytest.raises(ValueError, match="shape"):
        m.assign(["a", "b"], np.ones(8))
    with pytest.raises(ValueError, match="NaN"):
        m.assign(["a", "b"], np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="ts has"):
        m.assign(["a", "b"], vecs, [1.0])
    m.assign(["a", "b"], vecs)
    with pytest.raises(ValueError, match="dim 5"):
        m.assign(["a"], np.ones((1, 5)))
    assert m.assign([], np.zeros((0, 4))) == []
    with pytest.raises(ValueError, match="min_fit_docs"):
        OnlineTopicModel(min_fit_docs=5, min_cluster_size=8)
    with pytest.raises(ValueError, match="min_similarity"):
        OnlineTopicModel(min_similarity=1.5)
    with pytest.raises(FileNotFoundError):
        OnlineTopicModel.load(tmp_path / "missing.zip")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not an OnlineTopicModel checkpoint"):
        OnlineTopicModel.load(junk)


def test_make_label_and_clean_text() -> None:
    # A bigram made of chosen words adds nothing; a unigram inside a chosen bigram neither.
    assert make_label(["terra", "luna", "terra luna", "ust", "do kwon", "peg"]) == "terra, luna, ust, do kwon"
    assert make_label(["el salvador", "el", "salvador", "bonds"]) == "el salvador, bonds"
    assert make_label([]) == UNASSIGNED
    assert clean_text(r"UST\xa0crashes\r\nagain") == "UST crashes  again"


def test_degenerate_chunk_is_skipped_not_fatal() -> None:
    m = OnlineTopicModel(min_fit_docs=20, refit_every=20, min_cluster_size=5)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(20, 8)).astype(np.float32)
    m.assign(["the"] * 20, vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    assert m.learn() == 0
    assert (m.chunks_skipped, m.chunks_learned, m.buffered) == (1, 0, 0)
