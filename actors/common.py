"""What every stage actor shares: its supervised loop and the dead-letter sink.

Actors are thin shells: the work they do is in pure functions next to them, testable
without Ray. An actor's loop runs in a thread started by ``__init__``; when that loop dies
of an unexpected error the process exits, Ray restarts the actor (``max_restarts=-1``),
``__init__`` runs again and the loop resumes from the subscription's cursor.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from typing import Any

import pulsar

from cluster.records import DeadLetter

log = logging.getLogger(__name__)

_PARTITION = re.compile(r"-partition-\d+$")

# Restart forever; never retry a task on a restarted actor (stats calls are cheap to redo).
ACTOR_OPTIONS: dict[str, Any] = {"max_restarts": -1, "max_task_retries": 0, "lifetime": "detached"}


def on_head() -> dict[str, float]:
    """The ``resources`` that pin a task, actor or Serve replica to the head node: a sliver of
    the resource only the head has."""
    from ray._common.constants import HEAD_NODE_RESOURCE_NAME

    return {HEAD_NODE_RESOURCE_NAME: 0.001}


def named_actors(namespace: str) -> list[str]:
    """The names of the live named actors of ``namespace``, sorted."""
    import ray

    found = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in found if a["namespace"] == namespace)


def supervised_thread(target: Callable[[], None], name: str) -> threading.Thread:
    """Run ``target`` in a daemon thread; if it raises, end the process so Ray restarts it."""

    def run() -> None:
        try:
            target()
        except BaseException:
            log.exception("%s loop died; exiting so the actor restarts", name)
            logging.shutdown()
            os._exit(70)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


#: How long an idle stage blocks for its next message before it looks at its stop flag.
IDLE_WAIT_MS = 1000


def consume_batches(
    consumer: pulsar.Consumer, handle: Callable[[list[pulsar.Message]], None], stop: threading.Event
) -> None:
    """Receive batches until ``stop`` is set; each batch goes to ``handle``, which acknowledges
    what it has durably processed.

    A batch starts with the first message to arrive (an idle stage blocks on it and costs
    nothing) and takes what else comes within the subscription's batch wait, up to its batch
    size (:func:`cluster.topics.subscribe`). So a lone message is not held back for a batch
    that will not fill, and under load the queue fills while a batch is processed: the next
    one is taken full at once.
    """
    while not stop.is_set():
        try:
            first = consumer.receive(timeout_millis=IDLE_WAIT_MS)
        except pulsar.Timeout:
            continue
        handle([first, *consumer.batch_receive()])


class FaultHooks:
    """The fault suite's hooks in a consumer, armed through the actor's ``inject_fault``.

    Only with ``settings.fault_injection`` (off by default): a call while it is off raises.
    What is armed lives in the process, so a crash disarms it.

    * ``crash_after_write``: the next batch ends the process after its results are durable
      (stores written, sends confirmed) and before it is acknowledged, so the broker
      redelivers a batch whose effects are already there.
    * ``poison`` with a marker: the models fail on every text that contains the marker, as
      they would on an input they cannot process.
    """

    def __init__(self, enabled: bool, stage: str) -> None:
        self._enabled = enabled
        self._stage = stage
        self._crash_after_write = False
        self._poison: set[str] = set()

    def arm(self, kind: str, arg: str = "") -> None:
        if not self._enabled:
            raise PermissionError("fault injection is off (set BTCPULSE_FAULT_INJECTION=1)")
        if kind == "crash_after_write":
            self._crash_after_write = True
        elif kind == "poison" and arg:
            self._poison.add(arg)
        else:
            raise ValueError(f"unknown fault {kind!r} (crash_after_write, or poison with a marker)")
        log.warning("%s: fault armed: %s %s", self._stage, kind, arg)

    def after_write(self) -> None:
        """Between the durable write and the acknowledgement."""
        if self._crash_after_write:
            log.warning("%s: injected crash after the write, before the acknowledgement", self._stage)
            logging.shutdown()
            os._exit(75)

    def check_texts(self, texts: list[str]) -> None:
        """Raise as a model would on a text holding an armed poison marker."""
        for marker in self._poison:
            if any(marker in t for t in texts):
                raise ValueError(f"injected poison {marker!r}: the models cannot process this text")


def logical_topic(name: str) -> str:
    """The topic a message was published to: a partition's name without ``-partition-<n>``."""
    return _PARTITION.sub("", name)


def dead_letter(producer: pulsar.Producer, msg: pulsar.Message, reason: str, redeliveries: int) -> None:
    """Publish ``msg`` with the reason to the dead-letter topic and wait for the broker."""
    record = DeadLetter(
        topic=logical_topic(msg.topic_name()),
        message_id=str(msg.message_id()),
        reason=reason[:2000],
        payload=msg.data()[:65536].decode("utf-8", errors="replace"),
        redeliveries=redeliveries,
    )
    producer.send(record)


class BatchSender:
    """Send a batch asynchronously, then wait until the broker has every message.

    ``wait`` raises when any send failed, so the caller does not acknowledge its inputs.
    """

    def __init__(self, producer: pulsar.Producer) -> None:
        self._producer = producer
        self._errors: list[str] = []

    def send(self, record: Any, *, key: str | None = None, sequence_id: int | None = None) -> None:
        def done(res: pulsar.Result, _msg_id: Any) -> None:
            if res != pulsar.Result.Ok:
                self._errors.append(str(res))

        kwargs: dict[str, Any] = {}
        if key is not None:
            kwargs["partition_key"] = key
        if sequence_id is not None:
            kwargs["sequence_id"] = sequence_id
        self._producer.send_async(record, done, **kwargs)

    def wait(self) -> None:
        self._producer.flush()
        if self._errors:
            errors, self._errors = self._errors, []
            raise RuntimeError(f"{len(errors)} sends failed: {errors[:3]}")
