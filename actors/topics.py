"""The topic-model actor: one online topic model shared by every analysis actor.

    analysis actors --assign(texts, vectors)--> topic ids, labels   (current model, fast)
                                               + the documents are buffered for learning
    learner thread  --learn()--> new topics folded in (ids of known topics never change)
                    --save()---> <state_dir>/topics/model.zip (atomic), loaded on restart

One instance, so a topic id means the same thing on every article whichever actor scored it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import asdict
from typing import Any

import numpy as np
import ray

from actors.common import ACTOR_OPTIONS, supervised_thread
from cluster.settings import BtcpulseSettings

log = logging.getLogger(__name__)

NAME = "topic-model"
LEARN_POLL_S = 2.0
#: The learner thread's niceness (Ray runs its workers at 15; 19 is the lowest priority).
LEARNER_NICE = 19


def lower_priority(nice: int) -> int:
    """Give the calling thread (and the threads it starts) niceness ``nice`` (Linux: per
    thread); never raises the priority. Returns the niceness in effect."""
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if nice > current:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        return os.getpriority(os.PRIO_PROCESS, tid)
    except OSError:  # not permitted or not supported: learn at the process's priority
        return os.getpriority(os.PRIO_PROCESS, 0)


@ray.remote(num_cpus=0, max_concurrency=4, **ACTOR_OPTIONS)  # type: ignore[call-overload]  # Ray's stubs lack max_concurrency
class TopicModelActor:
    def __init__(self, settings: BtcpulseSettings) -> None:
        from models.topics import OnlineTopicModel

        self._path = settings.state_dir / "topics" / "model.zip"
        self._path.parent.mkdir(parents=True, exist_ok=True)
        if self._path.exists():
            self._model = OnlineTopicModel.load(self._path)
            log.info("topic model loaded from %s (%d topics)", self._path, len(self._model.topics()))
        else:
            self._model = OnlineTopicModel(refit_every=settings.topic_refit_every)
        self._stats: Counter[str] = Counter()
        self._last_learn_s = 0.0
        self._stop = threading.Event()
        self._thread = supervised_thread(self._learn_loop, "topic-learner")

    def _learn_loop(self) -> None:
        # Learning is background work: on shared cores it yields to the analysis actors that
        # wait on assign() (a fit of 500 documents is seconds of CPU; bench/NOTES.md).
        lower_priority(LEARNER_NICE)
        while not self._stop.wait(LEARN_POLL_S):
            t0 = time.perf_counter()
            before = self._model.chunks_learned
            new = self._model.learn()
            if self._model.chunks_learned != before:  # a fit happened: keep it
                self._model.save(self._path)
                self._last_learn_s = time.perf_counter() - t0
                self._stats["chunks_learned"] += self._model.chunks_learned - before
                self._stats["new_topics"] += new

    def assign(
        self, texts: list[str], vectors: np.ndarray, ts: list[float] | None = None
    ) -> list[dict[str, Any]]:
        """Topic of each text with the current model: ``{topic_id, label, keywords, score}``."""
        out = self._model.assign(texts, vectors, ts)
        self._stats["assigned"] += len(out)
        return [asdict(a) for a in out]

    def topics(self) -> list[dict[str, Any]]:
        return [asdict(t) for t in self._model.topics()]

    def stats(self) -> dict[str, Any]:
        return {
            **self._stats,
            "topics": len(self._model.topics()),
            "last_learn_s": round(self._last_learn_s, 2),
        }

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self._model.save(self._path)
