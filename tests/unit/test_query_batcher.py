"""serve.read.QueryBatcher: text searches that arrive together are embedded and searched
together, each answered with its own hits; and the replica's query-embedder backend."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from cluster.settings import BtcpulseSettings
from cluster.vectors import SearchFilter, VectorHit
from serve.read import QueryBatcher, query_backend

DIM = 8


def vector_of(text: str) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[len(text) % DIM] = 1.0
    v[-1] = float(len(text))  # the text's length travels in the vector
    return v


class FakeParts:
    """An embedder and a store that record every call; ``gate`` holds the embedder until set."""

    def __init__(self) -> None:
        self.embedded: list[list[str]] = []
        self.searched: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on: str | None = None
        self.short_answer = False

    def embed_many(self, texts: list[str]) -> np.ndarray:
        self.gate.wait(10)
        self.embedded.append(list(texts))
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError(f"cannot embed {self.fail_on!r}")
        return np.stack([vector_of(t) for t in texts])

    async def search_many(
        self, vectors: np.ndarray, ks: list[int], flts: list[SearchFilter]
    ) -> list[list[VectorHit]]:
        self.searched.append(len(vectors))
        await asyncio.sleep(0)
        found = [
            [VectorHit(f"len{int(v[-1])}-start{f.start_ts}-{i}", 1.0 - i / 10, {}) for i in range(k)]
            for v, k, f in zip(vectors, ks, flts, strict=True)
        ]
        return found[:-1] if self.short_answer else found


def expected(text: str, k: int, start: float | None) -> list[str]:
    return [f"len{len(text)}-start{start}-{i}" for i in range(k)]


def ids(hits: list[VectorHit]) -> list[str]:
    return [h.id for h in hits]


def test_a_lone_query_is_served_at_once() -> None:
    parts = FakeParts()
    batcher = QueryBatcher(parts.embed_many, parts.search_many)

    async def main() -> list[VectorHit]:
        return await batcher.search("bitcoin etf", 3, SearchFilter(start_ts=5.0))

    assert ids(asyncio.run(main())) == expected("bitcoin etf", 3, 5.0)
    assert parts.embedded == [["bitcoin etf"]] and parts.searched == [1]
    assert (batcher.batches, batcher.queries) == (1, 1)


def test_queries_waiting_together_share_one_batch_and_each_gets_its_own_hits() -> None:
    parts = FakeParts()
    batcher = QueryBatcher(parts.embed_many, parts.search_many)
    texts = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff"]

    async def main() -> list[list[VectorHit]]:
        parts.gate.clear()  # the first query's embedding waits; the others queue behind it
        first = asyncio.ensure_future(batcher.search(texts[0], 2, SearchFilter()))
        await asyncio.sleep(0.05)
        rest = [
            asyncio.ensure_future(batcher.search(t, 1 + i, SearchFilter(start_ts=float(i))))
            for i, t in enumerate(texts[1:])
        ]
        await asyncio.sleep(0.05)
        parts.gate.set()
        return [await first, *[await r for r in rest]]

    got = asyncio.run(main())
    assert parts.embedded == [["a"], texts[1:]]
    assert parts.searched == [1, 5]
    assert ids(got[0]) == expected("a", 2, None)
    for i, (text, hits) in enumerate(zip(texts[1:], got[1:], strict=True)):
        assert ids(hits) == expected(text, 1 + i, float(i))
    assert (batcher.batches, batcher.queries) == (2, 6)


def test_a_batch_holds_at_most_max_batch() -> None:
    parts = FakeParts()
    batcher = QueryBatcher(parts.embed_many, parts.search_many, max_batch=4)

    async def main() -> list[list[VectorHit]]:
        parts.gate.clear()
        futures = [asyncio.ensure_future(batcher.search("x" * (n + 1), 1, SearchFilter())) for n in range(10)]
        await asyncio.sleep(0.05)
        parts.gate.set()
        return [await f for f in futures]

    got = asyncio.run(main())
    # all ten were queued before the worker first ran
    assert [len(b) for b in parts.embedded] == [4, 4, 2]
    assert [ids(h) for h in got] == [expected("x" * (n + 1), 1, None) for n in range(10)]


def test_a_failed_batch_fails_its_queries_and_the_next_is_served() -> None:
    parts = FakeParts()
    batcher = QueryBatcher(parts.embed_many, parts.search_many)
    parts.fail_on = "poison"

    async def main() -> tuple[list[Any], list[VectorHit]]:
        parts.gate.clear()
        first = asyncio.ensure_future(batcher.search("ok", 1, SearchFilter()))
        await asyncio.sleep(0.05)
        together = [asyncio.ensure_future(batcher.search(t, 1, SearchFilter())) for t in ("poison", "fine")]
        await asyncio.sleep(0.05)
        parts.gate.set()
        await first
        outcomes = await asyncio.gather(*together, return_exceptions=True)
        after = await batcher.search("later", 2, SearchFilter())
        return outcomes, after

    outcomes, after = asyncio.run(main())
    assert all(isinstance(o, ValueError) and "poison" in str(o) for o in outcomes), outcomes
    assert ids(after) == expected("later", 2, None)


def test_a_store_that_answers_too_few_fails_the_batch_clearly() -> None:
    parts = FakeParts()
    parts.short_answer = True
    batcher = QueryBatcher(parts.embed_many, parts.search_many)

    async def main() -> None:
        await batcher.search("q", 1, SearchFilter())

    with pytest.raises(RuntimeError, match="answered 0 of 1"):
        asyncio.run(main())


def test_a_caller_that_went_away_is_skipped() -> None:
    parts = FakeParts()
    batcher = QueryBatcher(parts.embed_many, parts.search_many)

    async def main() -> list[VectorHit]:
        parts.gate.clear()
        first = asyncio.ensure_future(batcher.search("first", 1, SearchFilter()))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(batcher.search("gone", 1, SearchFilter()))
        kept = asyncio.ensure_future(batcher.search("kept", 1, SearchFilter()))
        await asyncio.sleep(0)
        gone.cancel()
        parts.gate.set()
        await first
        return await kept

    assert ids(asyncio.run(main())) == expected("kept", 1, None)
    assert parts.embedded == [["first"], ["kept"]]


def test_a_new_event_loop_gets_a_worker_of_its_own() -> None:
    parts = FakeParts()
    batcher = QueryBatcher(parts.embed_many, parts.search_many)
    for text in ("one", "three"):  # asyncio.run: a new loop each time, the old one closed
        assert ids(asyncio.run(batcher.search(text, 1, SearchFilter()))) == expected(text, 1, None)


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        QueryBatcher(FakeParts().embed_many, FakeParts().search_many, max_batch=0)


@pytest.mark.parametrize(
    ("embed", "query", "want"),
    [
        ("auto", None, "onnx-int8"),  # the default, on the CPU
        ("torch", None, "onnx"),  # on the CPU: the same vectors, faster per query
        ("onnx", None, "onnx"),
        ("onnx-int8", None, "onnx-int8"),  # queries embedded as the stored texts were
        ("torch", "torch", "torch"),
        ("onnx-int8", "onnx", "onnx"),
    ],
)
def test_query_backend(embed: str, query: str | None, want: str) -> None:
    settings = BtcpulseSettings(embed_backend=embed, query_backend=query, device="cpu")
    assert query_backend(settings) == want


def test_query_backend_is_validated() -> None:
    with pytest.raises(ValueError, match="auto, torch, onnx, onnx-int8"):
        BtcpulseSettings(query_backend="tensorrt")
