"""The analysis models under the conditions an analysis actor meets them: ``python -m bench.threads``.

Each configuration runs in a fresh process (OpenMP reads ``OMP_WAIT_POLICY`` once, when torch
loads it) and times :func:`actors.analysis.analyze` over 128 real headline + summary texts at
batch sizes 1, 4, 8 and 16, after a warm-up:

* ``backend``: ``torch``, ``onnx`` (fp32 ONNX Runtime: the same vectors and labels) or
  ``onnx-int8``, for the embedder and the sentiment encoder alike;
* ``threads``: 1 (what Ray gives an actor with ``num_cpus=1``: ``OMP_NUM_THREADS=1``) or 2;
* ``omp``: libgomp's threads spin between parallel regions (``ACTIVE``, its default) or sleep
  (``PASSIVE``, what the pool gives its actors);
* ``ort_spin``: for ``onnx-int8``, ONNX Runtime's threads busy-wait after a run (its default) or
  not (what :func:`models.embedder.onnx_session` sets);
* ``busy``: alone, or beside a process that keeps half a core busy (the broker, Serve and the
  other stages share the cores with the actor), at the actors' niceness (Ray runs workers at 15).

Nothing is asserted; one JSON line per configuration goes to stdout, a table to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BATCHES = (1, 4, 8, 16)
TEXTS = 128
#: (backend, threads, OMP_WAIT_POLICY, ORT spinning, busy neighbour)
CONFIGS: tuple[tuple[str, int, str, bool, bool], ...] = (
    ("torch", 1, "ACTIVE", False, False),
    ("torch", 2, "ACTIVE", False, False),
    ("torch", 2, "PASSIVE", False, False),
    ("torch", 2, "ACTIVE", False, True),
    ("torch", 2, "PASSIVE", False, True),
    ("onnx", 2, "PASSIVE", False, False),
    ("onnx-int8", 2, "PASSIVE", True, False),
    ("onnx-int8", 2, "PASSIVE", False, False),
)
#: Half a core: 50 ms of spinning, 50 ms of sleep.
BUSY = (
    "import time\n"
    "while True:\n"
    "    t = time.monotonic()\n"
    "    while time.monotonic() - t < 0.05: pass\n"
    "    time.sleep(0.05)\n"
)


def child(backend: str, threads: int, ort_spin: bool) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    if ort_spin:  # put back ONNX Runtime's default (threads spin after a run)
        import onnxruntime as ort

        original = ort.SessionOptions.add_session_config_entry

        def entry(self: Any, key: str, value: str) -> None:
            original(self, key, "1" if key == "session.intra_op.allow_spinning" else value)

        ort.SessionOptions.add_session_config_entry = entry

    from actors.analysis import analyze
    from bench.stack import NEWS, real_items
    from models.pipeline import Analyzer

    analyzer = Analyzer(backend=backend, batch_size=16)
    items = real_items([NEWS])[:TEXTS]
    analyze(items[:32], analyzer)
    rates = {}
    for b in BATCHES:
        t0 = time.perf_counter()
        for i in range(0, len(items), b):
            analyze(items[i : i + b], analyzer)
        rates[str(b)] = round(len(items) / (time.perf_counter() - t0), 1)
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("BACKEND", "THREADS", "ORT_SPIN"))
    parser.add_argument("--backend", action="append", help="only these backends (repeat); default all")
    args = parser.parse_args(argv)
    if args.child:
        backend, threads, spin = args.child
        sys.stdout.write(json.dumps(child(backend, int(threads), spin == "1")) + "\n")
        return 0
    repo = Path(__file__).resolve().parents[1]
    rows = []
    for backend, threads, omp, spin, busy in CONFIGS:
        if args.backend and backend not in args.backend:
            continue
        env = {**os.environ, "OMP_WAIT_POLICY": omp, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
        neighbour = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
        try:
            out = subprocess.run(
                [
                    "nice",
                    "-n",
                    "15",
                    sys.executable,
                    "-m",
                    "bench.threads",
                    "--child",
                    backend,
                    str(threads),
                    "1" if spin else "0",
                ],
                env=env,
                cwd=repo,
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            ).stdout
        finally:
            if neighbour is not None:
                neighbour.kill()
        row = {
            "backend": backend,
            "threads": threads,
            "omp": omp,
            "ort_spin": spin,
            "busy": busy,
            "items_per_s": json.loads(out.strip().splitlines()[-1]),
            "load": os.getloadavg()[0],
        }
        rows.append(row)
        sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()
    sys.stderr.write(
        "| backend | threads | OMP_WAIT_POLICY | ORT spinning | half a core busy | "
        + " | ".join(f"batch {b}" for b in BATCHES)
        + " |\n"
    )
    sys.stderr.write("| --- | ---: | --- | --- | --- |" + " ---: |" * len(BATCHES) + "\n")
    for r in rows:
        rates = " | ".join(f"{r['items_per_s'][str(b)]:.1f}" for b in BATCHES)
        sys.stderr.write(
            f"| {r['backend']} | {r['threads']} | {r['omp']} | {'yes' if r['ort_spin'] else 'no'} "
            f"| {'yes' if r['busy'] else 'no'} | {rates} |\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
