"""Throughput of the analysis models on real headlines: ``make bench``.

What is measured, side by side in one run, on the same texts (headline + summary of the
CryptoNews 2021-2022 file, read through :func:`actors.replay.read_file`, so each text is exactly
what :attr:`cluster.records.NewsItem.text` gives the models):

* ``embedder.encode`` -- :class:`models.embedder.Embedder` alone, for each backend (``torch``,
  ``onnx`` = ONNX Runtime fp32, ``onnx-int8`` = dynamically quantised int8, one text per pass)
  at batch sizes 16, 32, 64, 128, with each backend's agreement with torch (cosine of its vectors to the torch
  ones at batch 32 on the same texts: mean and min);
* ``sentiment.score`` -- :class:`models.sentiment.LexiconSentiment` alone, and
  ``sentiment.predict`` -- the shipped sentiment model (MiniLM + LoRA) alone, batch 32;
* ``analyze`` -- :func:`actors.analysis.analyze` with a :class:`models.pipeline.Analyzer`
  (embed + shipped sentiment + categories + the per-article fields, what the analysis consumer
  runs per batch by default) at the batch size that was fastest for the torch embedder in this run (the
  consumer's default backend).

The Markdown is a list of sections (:class:`Section`: a title, a table, notes); a new kind of
measurement (pipeline, latency, search) adds a section without touching the others.

Method: each configuration gets one warm-up call (on a slice of the texts) that is not timed;
then ``--repeats`` timed passes over all the texts. The embedder and sentiment passes are
interleaved round-robin (the order rotating every repeat), so that a burst of load from other
processes on a shared machine falls on all of them alike rather than on one. Figures are
items per second of wall time: the median over the repeats and the min-max range. The machine
may be shared and noisy; nothing here asserts a timing, the figures are reported as measured,
with the load average before and after the run.

Results go to ``<out>/<YYYY-MM-DD>.json`` (every repeat, the environment) and
``<out>/<YYYY-MM-DD>.md`` (the table, also written to stdout); a ``--quick`` run writes
``<YYYY-MM-DD>-quick.*`` so it never overwrites a full run of the same day.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cluster.records import NewsItem
    from models.embedder import Embedder

# Must be set before the model libraries are imported (they are imported inside main()).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "crypto_news_2021_2022" / "cryptonews.csv"
DEFAULT_OUT = REPO / "bench" / "results"
BATCH_SIZES: tuple[int, ...] = (16, 32, 64, 128)
BACKENDS: tuple[str, ...] = ("torch", "onnx", "onnx-int8")
REFERENCE_BATCH = 32  # the torch vectors every backend's accuracy is measured against

FULL_TEXTS, FULL_REPEATS = 512, 3
QUICK_TEXTS, QUICK_REPEATS = 256, 1
WARMUP_TEXTS = 128


@dataclass
class Measurement:
    """One configuration and its timed repeats."""

    name: str
    batch: int | None
    items: int
    backend: str | None = None
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    #: The last timed call's return value (kept to check accuracy; not written out).
    output: Any = None
    cos_to_torch: tuple[float, float] | None = None  # (mean, min) over the texts

    @property
    def rates(self) -> list[float]:
        return [self.items / s for s in self.seconds]

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    def to_dict(self) -> dict[str, Any]:
        rates = self.rates
        out = {
            "name": self.name,
            "backend": self.backend,
            "batch": self.batch,
            "items": self.items,
            "repeats": len(self.seconds),
            "seconds": [round(s, 4) for s in self.seconds],
            "cpu_seconds": [round(s, 4) for s in self.cpu_seconds],
            "items_per_s": [round(r, 2) for r in rates],
            "items_per_s_median": round(statistics.median(rates), 2),
            "items_per_s_min": round(min(rates), 2),
            "items_per_s_max": round(max(rates), 2),
            "cpu_s_per_1k_median": round(statistics.median(self.cpu_seconds) * 1000 / self.items, 3),
        }
        if self.cos_to_torch is not None:
            out["cos_to_torch_mean"] = round(self.cos_to_torch[0], 6)
            out["cos_to_torch_min"] = round(self.cos_to_torch[1], 6)
        return out


def _log(msg: str) -> None:
    sys.stderr.write(f"[bench] {msg}\n")
    sys.stderr.flush()


def _timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """Wall and process-CPU seconds of one call, and what it returned."""
    c0, t0 = time.process_time(), time.perf_counter()
    result = fn()
    t1, c1 = time.perf_counter(), time.process_time()
    return t1 - t0, c1 - c0, result


Call = tuple[Measurement, Callable[[], object]]


def round_robin(calls: Sequence[Call], warmups: Sequence[Callable[[], object]], repeats: int) -> None:
    """One untimed warm-up per configuration, then ``repeats`` rounds that time each call once,
    the order rotated by one every round (no configuration always runs first or last)."""
    for warm in warmups:
        warm()
    for rnd in range(repeats):
        k = rnd % len(calls)
        for m, fn in [*calls[k:], *calls[:k]]:
            wall, cpu, m.output = _timed(fn)
            m.seconds.append(wall)
            m.cpu_seconds.append(cpu)
        _log(f"round {rnd + 1}/{repeats}: " + ", ".join(f"{_short(m)}={m.rates[-1]:.1f}/s" for m, _ in calls))


def _short(m: Measurement) -> str:
    name = m.backend if m.backend else m.name.split(" ")[0].split(".")[0]
    return name + (f"@{m.batch}" if m.batch else "")


def load_items(path: Path, n: int) -> tuple[list[NewsItem], int]:
    """``n`` news items spread evenly over the file's time span, and how many it holds."""
    from actors.replay import ReplayReport, read_file
    from cluster.records import NewsItem

    rows = [row.record for row in read_file(path, report=ReplayReport())]
    items = [r for r in rows if isinstance(r, NewsItem)]
    if len(items) <= n:
        return items, len(items)
    return [items[i * len(items) // n] for i in range(n)], len(items)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _command(argv: Sequence[str]) -> str:
    # make exports MAKELEVEL to the commands it runs; `make bench` passes no arguments.
    if os.environ.get("MAKELEVEL") and not argv:
        return "make bench"
    return " ".join([".venv/bin/python -m bench.run", *argv])


def _environment(embedder: Embedder) -> dict[str, Any]:
    import numpy
    import sentence_transformers
    import torch
    import transformers

    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_usable": affinity,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": embedder.device,
        "model": embedder.name,
        "max_seq_length": embedder.max_seq_length,
        "git_commit": _git_commit(),
    }


def _onnx_info(embedder: Embedder) -> dict[str, Any]:
    import onnxruntime

    path = embedder.onnx_path
    return {
        "onnxruntime": onnxruntime.__version__,
        "file": path.name if path else None,
        "export_folder": path.parent.name if path else None,
        "intra_op_num_threads": getattr(embedder, "_intra_op_num_threads", None),
    }


def _text_stats(embedder: Embedder, texts: list[str]) -> dict[str, Any]:
    stats: dict[str, Any] = {"mean_chars": round(statistics.mean(len(t) for t in texts), 1)}
    tokenizer = getattr(embedder, "tokenizer", None)
    if tokenizer is not None:
        lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
        stats["mean_tokens"] = round(statistics.mean(lengths), 1)
        stats["max_tokens"] = max(lengths)
        stats["truncated"] = sum(n > embedder.max_seq_length for n in lengths)
    return stats


def _fmt(rate: float) -> str:
    return f"{rate:,.1f}"


@dataclass
class Section:
    """One table of the report: a ``### title``, a header row, data rows and notes under it.

    To report a new kind of measurement (pipeline, latency, search), build another
    ``Section`` in :func:`report_sections`; the renderer and the README update are unchanged.
    """

    title: str
    header: list[str]
    rows: list[list[str]]
    align: str = ""  # one char per column: "l" left, "r" right; default: first left, rest right
    notes: list[str] = field(default_factory=list)

    def render(self) -> list[str]:
        align = self.align or "l" + "r" * (len(self.header) - 1)
        rule = ["---" if a == "l" else "---:" for a in align]
        lines = [
            f"### {self.title}",
            "",
            "| " + " | ".join(self.header) + " |",
            "| " + " | ".join(rule) + " |",
        ]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.notes:
            lines += ["", *self.notes]
        return lines


def _rate_cells(m: dict[str, Any]) -> list[str]:
    return [
        _fmt(m["items_per_s_median"]),
        f"{_fmt(m['items_per_s_min'])} - {_fmt(m['items_per_s_max'])}",
        f"{m['cpu_s_per_1k_median']:.2f}",
    ]


def report_sections(result: dict[str, Any]) -> list[Section]:
    """The report's tables, in order (see :class:`Section`)."""
    cfg = result["config"]
    measurements = result["measurements"]
    backends = [m for m in measurements if m["name"] == "embedder.encode"]
    others = [m for m in measurements if m["name"] != "embedder.encode"]
    backend_rows = [
        [
            str(m.get("backend") or "torch"),
            str(m["batch"]),
            *_rate_cells(m),
            f"{m['cos_to_torch_mean']:.4f} / {m['cos_to_torch_min']:.4f}"
            if "cos_to_torch_mean" in m
            else "-",
        ]
        for m in backends
    ]
    model_rows = [
        [m["name"], str(m["batch"]) if m["batch"] is not None else "-", *_rate_cells(m)] for m in others
    ]
    return [
        Section(
            "Embedder backends (embedder.encode)",
            [
                "backend",
                "batch",
                "items/s (median)",
                "range",
                "CPU s / 1k items (median)",
                "cos to torch (mean / min)",
            ],
            backend_rows,
            align="lrrrrr",
            notes=[
                "`onnx`: ONNX Runtime fp32; `onnx-int8`: weights int8 per channel, activations quantised "
                "per pass (dynamic), one text per pass whatever the batch size. Cosine to the torch "
                f"vectors ({cfg['accuracy_reference']})."
            ],
        ),
        Section(
            "Models and the analysis consumer",
            ["measurement", "batch", "items/s (median)", "range", "CPU s / 1k items (median)"],
            model_rows,
            notes=[
                "`sentiment.score` (lexicon) and `sentiment.predict` (the shipped model) ran interleaved "
                "with the backends (phase 1); `analyze` (the consumer's models as shipped) ran with the "
                f"torch embedder at its fastest batch in phase 1 ({result['best_batch']}), interleaved "
                "with that embedder alone (`paired`, phase 2); embed + shipped sentiment predicted from "
                f"those two parts: {_fmt(result['analyze_predicted_items_per_s'])} items/s (no "
                "categories in it)."
            ],
        ),
    ]


def render_markdown(result: dict[str, Any]) -> str:
    env, cfg = result["environment"], result["config"]
    lines = [f"# btcpulse bench, {result['date']}", ""]
    for section in report_sections(result):
        lines += [*section.render(), ""]
    stats = cfg["text_stats"]
    tokens = (
        f", mean {stats['mean_tokens']} tokens (max {stats['max_tokens']}, {stats['truncated']} truncated)"
        if "mean_tokens" in stats
        else ""
    )
    load = result["loadavg"]
    onnx = env.get("onnx") or {}
    ort: dict[str, Any] = next(iter(onnx.values()), {})
    ort_text = (
        f", onnxruntime {ort['onnxruntime']} with {ort['intra_op_num_threads']} intra-op threads"
        if ort
        else ""
    )
    lines += [
        f"{cfg['texts']} texts (headline + summary, mean {stats['mean_chars']} chars{tokens}) from "
        f"`{cfg['data']}`; 1 untimed warm-up call per configuration ({cfg['warmup_texts']} texts), then "
        f"{cfg['repeats']} timed pass(es) over all texts, configurations interleaved round-robin; median "
        "and min - max over the passes. CPU s = this process's CPU time (all threads); under load from "
        "other processes it stays steadier than items/s.",
        "",
        f"{env['cpu_model']}, {env['cpus_usable']} usable CPUs, torch {env['torch']} with "
        f"{env['torch_threads']} threads{ort_text}, device {env['device']}, model {env['model']} "
        f"(max_seq_length {env['max_seq_length']}); commit {env['git_commit']}; load average "
        f"{load['before'][0]:.2f} before, {load['after'][0]:.2f} after (1 min). Shared machine: "
        "figures are as measured, not asserted.",
        "",
        f"Command: `{result['command']}`"
        + (" (what `make bench` runs)" if result["command"] == _command([]) != "make bench" else ""),
    ]
    return "\n".join(lines) + "\n"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK_TEXTS} texts, {QUICK_REPEATS} repeat")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder (default bench/results)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the cryptonews.csv file")
    p.add_argument("--texts", type=int, default=None, help="override the number of texts")
    p.add_argument("--repeats", type=int, default=None, help="override the number of timed repeats")
    p.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"embedder backends, comma-separated (default {','.join(BACKENDS)}; torch always runs)",
    )
    args = p.parse_args(argv)
    if args.texts is None:
        args.texts = QUICK_TEXTS if args.quick else FULL_TEXTS
    if args.repeats is None:
        args.repeats = QUICK_REPEATS if args.quick else FULL_REPEATS
    if args.texts < 1 or args.repeats < 1:
        p.error("--texts and --repeats must be >= 1")
    chosen = [b.strip() for b in str(args.backends).split(",") if b.strip()]
    unknown = [b for b in chosen if b not in BACKENDS]
    if unknown:
        p.error(f"--backends: unknown {unknown}; expected some of {','.join(BACKENDS)}")
    args.backends = tuple(["torch", *[b for b in BACKENDS if b in chosen and b != "torch"]])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(raw_argv)
    data: Path = args.data
    if not data.is_file():
        sys.stderr.write(
            f"bench: news data not found at {data}\n"
            "  expected ../shared/data/crypto_news_2021_2022/cryptonews.csv beside the repository "
            "(or pass --data PATH)\n"
        )
        return 2

    load_before = os.getloadavg()
    started = datetime.now(UTC)

    import numpy as np

    from actors.analysis import analyze
    from models.embedder import Embedder
    from models.pipeline import Analyzer
    from models.sentiment import LexiconSentiment
    from models.sentiment_model import load_sentiment

    items, available = load_items(data, args.texts)
    if not items:
        sys.stderr.write(f"bench: no readable news rows in {data}\n")
        return 2
    texts = [item.text for item in items]
    n = len(texts)
    if n < args.texts:
        _log(f"only {n} news rows in the file; using all of them")

    _log("loading models (the first ONNX use exports and quantises the model, ~10-30 s)")
    embedders = {b: Embedder(backend=b) for b in args.backends}
    embedder = embedders["torch"]
    sentiment = LexiconSentiment()
    shipped = load_sentiment("", device=embedder.device)  # what the consumer runs by default
    env = _environment(embedder)
    env["onnx"] = {b: _onnx_info(e) for b, e in embedders.items() if b != "torch"}
    stats = _text_stats(embedder, texts)
    warm_texts, warm_items = texts[:WARMUP_TEXTS], items[:WARMUP_TEXTS]

    # Phase 1: each model alone, every backend x batch size, interleaved.
    embeds = [
        Measurement("embedder.encode", b, n, backend=backend)
        for backend in args.backends
        for b in BATCH_SIZES
    ]
    senti = Measurement("sentiment.score", None, n)
    senti_model = Measurement(f"sentiment.predict ({shipped.name})", 32, n)
    phase1: list[Call] = [
        (m, partial(embedders[str(m.backend)].encode, texts, batch_size=int(m.batch or 0))) for m in embeds
    ]
    phase1.append((senti, partial(sentiment.score, texts)))
    phase1.append((senti_model, partial(shipped.predict, texts)))
    _log(f"{n} texts; phase 1: embedder {list(args.backends)} x batch {list(BATCH_SIZES)}, and sentiment")
    round_robin(
        phase1,
        [partial(embedders[str(m.backend)].encode, warm_texts, batch_size=int(m.batch or 0)) for m in embeds]
        + [partial(sentiment.score, warm_texts), partial(shipped.predict, warm_texts)],
        args.repeats,
    )
    reference = next(m.output for m in embeds if m.backend == "torch" and m.batch == REFERENCE_BATCH)
    for m in embeds:
        cos = np.sum(np.asarray(m.output) * reference, axis=1)  # rows are unit-norm
        m.cos_to_torch = (float(cos.mean()), float(cos.min()))

    # Phase 2: the consumer's function at the embedder's best batch size, interleaved with the
    # embedder alone at that size, so the two are compared under the same load.
    # The consumer's Analyzer as it runs by default: the shipped sentiment model.
    best = max((m for m in embeds if m.backend == "torch"), key=lambda m: m.median)
    best_batch = int(best.batch or 0)
    analyzer = Analyzer(device=embedder.device, backend="torch", batch_size=best_batch)
    paired = Measurement("embedder.encode (paired)", best_batch, n)
    both = Measurement("analyze (embed + sentiment + categories)", best_batch, n)
    _log(f"phase 2: analyze vs embedder alone at batch {best_batch}")
    round_robin(
        [
            (paired, partial(analyzer.embedder.encode, texts, batch_size=best_batch)),
            (both, partial(analyze, items, analyzer)),
        ],
        [partial(analyze, warm_items, analyzer)],
        args.repeats,
    )

    predicted = 1.0 / (1.0 / paired.median + 1.0 / senti_model.median)
    date = started.date().isoformat()
    result: dict[str, Any] = {
        "date": date,
        "started_utc": started.isoformat(timespec="seconds"),
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": _command(raw_argv),
        "config": {
            "data": os.path.relpath(os.path.abspath(data), REPO),
            "rows_in_file": available,
            "texts": n,
            "selection": "evenly spaced over the time-sorted news rows",
            "repeats": args.repeats,
            "warmup_texts": len(warm_texts),
            "batch_sizes": list(BATCH_SIZES),
            "backends": list(args.backends),
            "accuracy_reference": f"torch backend at batch {REFERENCE_BATCH}, same texts",
            "quick": bool(args.quick),
            "text_stats": stats,
        },
        "environment": env,
        "loadavg": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "best_batch": best_batch,
        "analyze_predicted_items_per_s": round(predicted, 2),
        "measurements": [m.to_dict() for m in [*embeds, senti, senti_model, paired, both]],
    }

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{date}-quick" if args.quick else date
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    markdown = render_markdown(result)
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(markdown, encoding="utf-8")
    sys.stdout.write(markdown)
    sys.stdout.flush()
    _log(f"wrote {json_path} and {md_path}")
    if not args.quick and update_readme(REPO / "README.md", markdown):
        _log("updated the benchmark table in README.md")
    return 0


README_START, README_END = "<!-- bench-table -->", "<!-- /bench-table -->"


def update_readme(readme: Path, markdown: str, markers: tuple[str, str] = (README_START, README_END)) -> bool:
    """Put ``markdown`` between the README's ``markers`` (by default the bench-table's: the
    latest full run)."""
    start, end = markers
    if not readme.exists():
        return False
    text = readme.read_text(encoding="utf-8")
    if start not in text:
        return False
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1] if end in rest else "\n"
    readme.write_text(f"{head}{start}\n{markdown.strip()}\n{end}{tail}", encoding="utf-8")
    return True


if __name__ == "__main__":
    raise SystemExit(main())
