"""GPU throughput of the embedding (+ sentiment) forward passes: headlines/s by batch and precision.

Stand-alone on purpose: it runs on a CUDA machine that has Python with torch, transformers and
numpy but not this project's virtual environment, so it imports nothing from the project (no
``models``, no pydantic-settings, no vaderSentiment, no packaged-model wheel). The embedding
model is read from a directory (``--model DIR``: a sentence-transformers or plain Hugging Face
folder of all-MiniLM-L6-v2, float32 or float16 safetensors; ``--save-fp16 SRC DST`` makes the
float16 copy, ~45 MB).

What it measures, for each precision (fp16, bf16, fp32) and batch size (64 .. 4096), on real
headline + summary texts (what ``NewsItem.text`` gives the models) taken in arrival order and
cut into consecutive batches, each padded to its longest text (rounded up to a multiple of 8):

* ``tokenize``: the fast tokenizer alone (CPU), texts/s;
* ``model``: pre-tokenized batches -> GPU copy -> forward -> mean pooling -> L2 norm -> float32
  vectors back on the host; texts/s;
* ``e2e``: tokenization included, pipelined (a thread tokenizes the next batches while the GPU
  runs the current one, the way a consumer would); ``e2e serial`` is derived as
  ``1 / (1/tokenize + 1/model)`` (tokenize, then run, no overlap);
* ``e2e+sent``: as ``e2e`` plus the sentiment forward per batch. With ``--sentiment-model DIR``
  that is the given sequence classifier; otherwise a second, separate MiniLM-sized transformer
  with a 3-way linear head stands in for the fine-tuned MiniLM classifier (same cost, not its
  predictions) and the output says so.

Method: CUDA is synchronised before every clock read (the host gets the vectors back each batch,
so a pass ends when its last vectors are on the host); one untimed warm-up over a quarter of
the texts per configuration; the median (and min-max) of ``--repeats`` timed passes. A time
budget (``--budget-s``) stops starting new configurations so the whole run stays short; what was
skipped is listed. Precision accuracy: cosine of fp16 / bf16 vectors to fp32 ones on the same
texts.

Output: a JSON file in ``$OUT`` if that is set, else ``bench/results/``, and a Markdown table,
printed last.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import platform
import statistics
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "crypto_news_2021_2022" / "cryptonews.csv"
BATCH_SIZES: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096)
PRECISIONS: tuple[str, ...] = ("fp16", "bf16", "fp32")
MAX_SEQ_LENGTH = 128  # what models/embedder.py uses
PAD_MULTIPLE = 8  # tensor-core friendly; padding is masked out, results are unchanged
ACCURACY_TEXTS = 1024

Batch = dict[str, Any]  # tokenizer output: input_ids, attention_mask, token_type_ids (CPU tensors)


def _log(msg: str) -> None:
    sys.stderr.write(f"[gpu-bench] {msg}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- inputs


def load_texts(path: Path, headlines_only: bool) -> list[str]:
    """Texts from the CryptoNews CSV (``;``-separated), in file order.

    ``title. text`` like ``NewsItem.text`` (what the consumer embeds), or the title alone.
    Rows without a title are skipped.
    """
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter=";"))
    out = []
    for r in rows:
        title, summary = (r.get("title") or "").strip(), (r.get("text") or "").strip()
        if not title:
            continue
        out.append(title if headlines_only or not summary else f"{title}. {summary}")
    return out


def safetensors_dtypes(folder: Path) -> list[str]:
    """Tensor dtypes stored in ``folder``'s ``*.safetensors`` files (read from the header only)."""
    found: set[str] = set()
    for f in sorted(folder.glob("*.safetensors")):
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        found |= {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    return sorted(found)


def pooling_mode(folder: Path) -> str:
    """The sentence-transformers pooling of ``folder`` ("mean" when it has no pooling config)."""
    cfg = folder / "1_Pooling" / "config.json"
    if not cfg.is_file():
        return "mean (no 1_Pooling/config.json; assumed)"
    data = json.loads(cfg.read_text(encoding="utf-8"))
    if data.get("pooling_mode") == "mean" or data.get("pooling_mode_mean_tokens"):
        return "mean"
    raise SystemExit(f"gpu.py: {cfg} is not mean pooling; this benchmark only implements mean pooling")


def save_fp16(src: Path, dst: Path) -> None:
    """Copy a model folder with its weights in float16 (halves the size: ~45 MB for MiniLM).

    Config, tokenizer and sentence-transformers files are copied as they are; every
    floating-point weight is stored as float16. Loading it in fp32 upcasts those values (the
    fp16 rounding stays: cosine to the original ~0.99999).
    """
    import shutil

    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(src))
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.suffix in (".safetensors", ".bin") or item.name in ("README.md", ".gitattributes"):
            continue
        target = dst / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)
    model.to(torch.float16).save_pretrained(str(dst), safe_serialization=True)
    _log(
        f"saved float16 copy of {src} to {dst} "
        f"({sum(f.stat().st_size for f in dst.rglob('*') if f.is_file()) / 1e6:.1f} MB)"
    )


# ---------------------------------------------------------------- models


class Encoder:
    """Transformer + mean pooling + L2 norm on one device and dtype (the embedder's maths).

    Each wrapper works on its own copy of the (float32, CPU) master model: ``Module.to`` is in
    place, and the other precisions must still start from the float32 weights.
    """

    def __init__(self, model: Any, device: str, dtype: Any) -> None:
        self.model = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
        self.device = device

    def __call__(self, batch: Batch) -> Any:
        import torch

        feeds = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        hidden = self.model(**feeds).last_hidden_state  # (B, T, D)
        mask = feeds["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1).float() / mask.float().sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=1)  # float32 (B, D)


class ProxySentiment:
    """Stand-in cost of a fine-tuned MiniLM classifier: a separate MiniLM transformer, [CLS]
    vector -> 3-way linear head -> softmax. Its outputs are meaningless; its cost is the point."""

    def __init__(self, model: Any, device: str, dtype: Any) -> None:
        import torch

        self.model = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
        torch.manual_seed(0)
        hidden = int(model.config.hidden_size)
        self.head = torch.nn.Linear(hidden, 3).to(device=device, dtype=dtype)
        self.device = device

    def __call__(self, batch: Batch) -> Any:
        feeds = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        cls = self.model(**feeds).last_hidden_state[:, 0]
        return self.head(cls).float().softmax(-1)


class Classifier:
    """A real sequence classifier (``--sentiment-model``): logits -> softmax."""

    def __init__(self, model: Any, device: str, dtype: Any) -> None:
        self.model = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
        self.device = device

    def __call__(self, batch: Batch) -> Any:
        feeds = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        return self.model(**feeds).logits.float().softmax(-1)


# ---------------------------------------------------------------- timing


@dataclass
class Row:
    """One configuration: rates per mode (texts/s, every repeat)."""

    precision: str
    batch: int
    rates: dict[str, list[float]] = field(default_factory=dict)
    peak_mem_mb: float | None = None

    def median(self, mode: str) -> float | None:
        r = self.rates.get(mode)
        return statistics.median(r) if r else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "precision": self.precision,
            "batch": self.batch,
            "peak_mem_mb": self.peak_mem_mb,
        }
        for mode, r in self.rates.items():
            out[mode] = {
                "texts_per_s": [round(x, 1) for x in r],
                "median": round(statistics.median(r), 1),
                "min": round(min(r), 1),
                "max": round(max(r), 1),
            }
        tok, mod = self.median("tokenize"), self.median("model")
        if tok and mod:
            out["e2e_serial_derived"] = round(1.0 / (1.0 / tok + 1.0 / mod), 1)
        return out


class Runner:
    """Tokenization (a pool of threads, each with its own tokenizer copy) and model passes.

    The fast tokenizer is Rust and releases the GIL, but one instance must not be called from
    two threads at once (it keeps per-call padding/truncation state), hence the copies. On
    the H100 machine a single thread tokenized only ~7,000 texts/s (48 tokens each), a
    seventh of what fp16 MiniLM embeds, so a pool is what lets the GPU be fed.
    """

    def __init__(self, tokenizer: Any, device: str, sync: Callable[[], None], threads: int) -> None:
        self.tokenizer = tokenizer
        self.device = device
        self.sync = sync
        self.pin = device.startswith("cuda")
        self.threads = threads
        self._local = threading.local()
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tokenize")

    def tokenize(self, texts: Sequence[str]) -> Batch:
        tok = getattr(self._local, "tokenizer", None)
        if tok is None:
            tok = self._local.tokenizer = copy.deepcopy(self.tokenizer)
        enc = tok(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=MAX_SEQ_LENGTH,
            pad_to_multiple_of=PAD_MULTIPLE,
            return_tensors="pt",
        )
        batch = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if self.pin:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        return batch

    @staticmethod
    def chunks(texts: Sequence[str], size: int) -> Iterator[Sequence[str]]:
        for i in range(0, len(texts), size):
            yield texts[i : i + size]

    def tokenize_all(self, texts: Sequence[str], size: int) -> list[Batch]:
        """Every batch, tokenized by the pool (in order)."""
        return list(self.pool.map(self.tokenize, self.chunks(texts, size)))

    def pass_pretokenized(self, batches: list[Batch], models: Sequence[Callable[[Batch], Any]]) -> None:
        import torch

        with torch.inference_mode():
            for b in batches:
                outs = [m(b) for m in models]
                for o in outs:
                    o.cpu()  # the vectors / probabilities back on the host (syncs this batch)

    def pass_pipelined(
        self, texts: Sequence[str], size: int, models: Sequence[Callable[[Batch], Any]]
    ) -> None:
        """The pool tokenizes up to ``threads + 2`` batches ahead while this thread runs the models."""
        import torch

        chunks = self.chunks(texts, size)
        pending: deque[Future[Batch]] = deque()
        for chunk in chunks:
            pending.append(self.pool.submit(self.tokenize, chunk))
            if len(pending) >= self.threads + 2:
                break
        with torch.inference_mode():
            while pending:
                b = pending.popleft().result()
                nxt = next(chunks, None)
                if nxt is not None:
                    pending.append(self.pool.submit(self.tokenize, nxt))
                outs = [m(b) for m in models]
                for o in outs:
                    o.cpu()

    def timed(
        self, fn: Callable[[], object], n: int, repeats: int, warm: Callable[[], object]
    ) -> list[float]:
        warm()
        self.sync()
        rates = []
        for _ in range(repeats):
            self.sync()
            t0 = time.perf_counter()
            fn()
            self.sync()
            rates.append(n / (time.perf_counter() - t0))
        return rates


def measure(
    runner: Runner,
    sent_runner: Runner,
    embed: Callable[[Batch], Any],
    sent_model: Callable[[Batch], Any],
    texts: Sequence[str],
    size: int,
    repeats: int,
    tokenize_cache: dict[int, list[float]],
) -> Row:
    """All modes at one batch size (tokenization timed once per size, whatever the precision)."""
    n = len(texts)
    row = Row("", size)
    warm_texts = texts[: max(size * 2, n // 4)]
    if size not in tokenize_cache:
        tokenize_cache[size] = runner.timed(
            lambda: runner.tokenize_all(texts, size),
            n,
            repeats,
            lambda: runner.tokenize_all(warm_texts, size),
        )
    row.rates["tokenize"] = tokenize_cache[size]
    pre = runner.tokenize_all(texts, size)
    warm_pre = pre[: max(2, len(pre) // 4)]
    row.rates["model"] = runner.timed(
        lambda: runner.pass_pretokenized(pre, [embed]),
        n,
        repeats,
        lambda: runner.pass_pretokenized(warm_pre, [embed]),
    )
    row.rates["e2e"] = runner.timed(
        lambda: runner.pass_pipelined(texts, size, [embed]),
        n,
        repeats,
        lambda: runner.pass_pipelined(warm_texts, size, [embed]),
    )
    if sent_runner is runner:
        both = [embed, sent_model]
        row.rates["e2e+sent"] = runner.timed(
            lambda: runner.pass_pipelined(texts, size, both),
            n,
            repeats,
            lambda: runner.pass_pipelined(warm_texts, size, both),
        )
    else:
        # Different vocabularies: each model tokenizes for itself (two pipelines, one after the other).
        def two(ts: Sequence[str]) -> None:
            runner.pass_pipelined(ts, size, [embed])
            sent_runner.pass_pipelined(ts, size, [sent_model])

        row.rates["e2e+sent"] = runner.timed(lambda: two(texts), n, repeats, lambda: two(warm_texts))
    return row


# ---------------------------------------------------------------- main


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/gpu.py", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="all-MiniLM-L6-v2 folder (fp32 or fp16 safetensors)")
    p.add_argument("--sentiment-model", type=Path, default=None, help="sequence-classifier folder (optional)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="cryptonews.csv")
    p.add_argument("--headlines-only", action="store_true", help="titles only, not title + summary")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="any of fp16,bf16,fp32")
    p.add_argument("--texts", type=int, default=None, help="texts per pass (default 8192; --quick 8)")
    p.add_argument("--repeats", type=int, default=None, help="timed passes (default 3; --quick 1)")
    p.add_argument(
        "--tokenizer-threads", type=int, default=None, help="tokenizer pool (default min(16, CPUs))"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile(dynamic=True) the models")
    p.add_argument("--quick", action="store_true", help="tiny run (CPU smoke test): 8 texts, batch 4, fp32")
    p.add_argument("--budget-s", type=float, default=170.0, help="start no new configuration after this")
    p.add_argument("--out", type=Path, default=None, help="results folder (default $OUT, else bench/results)")
    p.add_argument(
        "--save-fp16", nargs=2, type=Path, metavar=("SRC", "DST"), help="write a float16 copy and exit"
    )
    a = p.parse_args(argv)
    if a.save_fp16:
        return a
    if a.model is None:
        p.error("--model DIR is required (the all-MiniLM-L6-v2 folder)")
    if a.quick:
        a.texts = a.texts or 8
        a.repeats = a.repeats or 1
        if a.batch_sizes == p.get_default("batch_sizes"):
            a.batch_sizes = "4"
        if a.precisions == p.get_default("precisions"):
            a.precisions = "fp32"
    a.texts = a.texts or 8192
    a.repeats = a.repeats or 3
    a.batch_sizes = [int(x) for x in str(a.batch_sizes).split(",") if x]
    a.precisions = [x.strip() for x in str(a.precisions).split(",") if x.strip()]
    bad = [x for x in a.precisions if x not in PRECISIONS]
    if bad or not a.precisions:
        p.error(f"--precisions: unknown {bad}; expected some of {','.join(PRECISIONS)}")
    if not a.batch_sizes or min(a.batch_sizes) < 1 or a.texts < 1 or a.repeats < 1:
        p.error("--batch-sizes, --texts and --repeats must be >= 1")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.save_fp16:
        save_fp16(*args.save_fp16)
        return 0
    started = datetime.now(UTC)
    t_start = time.perf_counter()
    if not (args.model / "config.json").is_file():
        _log(f"no config.json in {args.model}: --model must be the all-MiniLM-L6-v2 folder")
        return 2
    if not args.data.is_file():
        _log(f"news data not found at {args.data} (pass --data path/to/cryptonews.csv)")
        return 2

    import numpy as np
    import torch
    import transformers
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    device = args.device
    on_cuda = device.startswith("cuda")
    if on_cuda and not torch.cuda.is_available():
        _log("no CUDA device visible to torch; use --device cpu for a smoke test")
        return 2

    def sync() -> None:
        if on_cuda:
            torch.cuda.synchronize(device)

    base = load_texts(args.data, args.headlines_only)
    n = max(args.texts, 2 * max(args.batch_sizes)) if not args.quick else args.texts
    n = -(-n // max(args.batch_sizes)) * max(args.batch_sizes) if not args.quick else n
    texts = [base[i % len(base)] for i in range(n)]  # cycled when n exceeds the file
    tokenizer = AutoTokenizer.from_pretrained(str(args.model))
    lengths = [len(x) for x in tokenizer(texts, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]]
    pooling = pooling_mode(args.model)
    stored = safetensors_dtypes(args.model)
    _log(
        f"{n} texts (file has {len(base)}), mean {statistics.mean(lengths):.1f} tokens; "
        f"weights stored as {stored}"
    )

    embed_cpu = AutoModel.from_pretrained(str(args.model)).float().eval()
    sent_cpu: Any = None
    sent_tokenizer: Any = None
    if args.sentiment_model is not None:
        sent_cpu = (
            AutoModelForSequenceClassification.from_pretrained(str(args.sentiment_model)).float().eval()
        )
        sent_tokenizer = AutoTokenizer.from_pretrained(str(args.sentiment_model))
        shared_tokens = sent_tokenizer.get_vocab() == tokenizer.get_vocab()
        sentiment_desc = f"{args.sentiment_model.name} ({type(sent_cpu).__name__})" + (
            "" if shared_tokens else ", own tokenizer"
        )
    else:
        sent_cpu = AutoModel.from_pretrained(str(args.model)).float().eval()
        shared_tokens = True
        sentiment_desc = "PROXY: a second MiniLM transformer + 3-way head (no --sentiment-model given)"
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

    threads = args.tokenizer_threads or min(16, os.cpu_count() or 1)
    runner = Runner(tokenizer, device, sync, threads)
    sent_runner = runner if shared_tokens else Runner(sent_tokenizer, device, sync, threads)
    # One thread, once: what a consumer that tokenizes inline would get.
    single = Runner(tokenizer, device, sync, 1)
    single_texts = [base[i % len(base)] for i in range(256 if args.quick else 2048)]
    single_rate = single.timed(
        lambda: single.tokenize_all(single_texts, 256),
        len(single_texts),
        1,
        lambda: single.tokenize_all(texts, 256),
    )[0]
    _log(f"tokenizer: {single_rate:,.0f} texts/s on 1 thread (batch 256); pipelines use {threads} threads")
    rows: list[Row] = []
    skipped: list[str] = []
    tokenize_rates: dict[int, list[float]] = {}
    accuracy: dict[str, dict[str, float]] = {}
    reference: Any = None
    acc_texts = texts[:ACCURACY_TEXTS]

    for prec in args.precisions:
        if time.perf_counter() - t_start > args.budget_s:
            skipped += [f"{prec}@{b}" for b in args.batch_sizes]
            continue
        dtype = dtypes[prec]
        embed = Encoder(embed_cpu, device, dtype)
        sent_model: Any = (
            Classifier(sent_cpu, device, dtype)
            if args.sentiment_model is not None
            else ProxySentiment(sent_cpu, device, dtype)
        )
        if args.compile:
            embed.model = torch.compile(embed.model, dynamic=True)
            sent_model.model = torch.compile(sent_model.model, dynamic=True)

        # Accuracy against fp32 on the same texts (fp32 itself is the reference when run).
        with torch.inference_mode():
            vecs = torch.cat([embed(runner.tokenize(c)).cpu() for c in runner.chunks(acc_texts, 256)]).numpy()
        if prec == "fp32":
            reference = vecs
        elif reference is None:
            ref_model = Encoder(embed_cpu, device, torch.float32)
            with torch.inference_mode():
                reference = torch.cat(
                    [ref_model(runner.tokenize(c)).cpu() for c in runner.chunks(acc_texts, 256)]
                ).numpy()
            del ref_model
        cos = np.sum(vecs * reference, axis=1)
        accuracy[prec] = {
            "cos_to_fp32_mean": round(float(cos.mean()), 6),
            "cos_to_fp32_min": round(float(cos.min()), 6),
        }

        for size in args.batch_sizes:
            if time.perf_counter() - t_start > args.budget_s:
                skipped.append(f"{prec}@{size}")
                continue
            if on_cuda:
                torch.cuda.reset_peak_memory_stats(device)
            row = measure(runner, sent_runner, embed, sent_model, texts, size, args.repeats, tokenize_rates)
            row.precision = prec
            if on_cuda:
                row.peak_mem_mb = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
            rows.append(row)
            _log(
                f"{prec} batch {size}: model {row.median('model'):,.0f}/s, e2e {row.median('e2e'):,.0f}/s, "
                f"e2e+sent {row.median('e2e+sent'):,.0f}/s, tokenize {row.median('tokenize'):,.0f}/s"
            )
        del embed, sent_model  # free this precision's GPU copies before the next
        if on_cuda:
            torch.cuda.empty_cache()

    device_name = torch.cuda.get_device_name(device) if on_cuda else platform.processor() or "cpu"
    result: dict[str, Any] = {
        "date": started.date().isoformat(),
        "started_utc": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t_start, 1),
        "command": _command(sys.argv[1:] if argv is None else argv),
        "device": device,
        "device_name": device_name,
        "environment": {
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "attn_implementation": getattr(embed_cpu.config, "_attn_implementation", None),
        },
        "config": {
            "texts": n,
            "texts_in_file": len(base),
            "text": "title only" if args.headlines_only else "title. summary (NewsItem.text)",
            "mean_tokens": round(statistics.mean(lengths), 1),
            "max_seq_length": MAX_SEQ_LENGTH,
            "pad_to_multiple_of": PAD_MULTIPLE,
            "tokenizer_threads": threads,
            "tokenize_single_thread_per_s": round(single_rate, 1),
            "repeats": args.repeats,
            "compile": bool(args.compile),
            "weights_stored_as": stored,
            "pooling": pooling,
            "sentiment": sentiment_desc,
            "budget_s": args.budget_s,
        },
        "accuracy": accuracy,
        "rows": [r.to_dict() for r in rows],
        "skipped": skipped,
    }
    out_dir = args.out or Path(os.environ.get("OUT") or REPO / "bench" / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = ("-quick" if args.quick else "") + ("-cpu" if not on_cuda else "")
    path = out_dir / f"gpu-{result['date']}{suffix}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    _log(f"wrote {path} in {result['seconds']} s")
    sys.stdout.write(render_markdown(result))
    sys.stdout.flush()
    return 0


def _command(argv: Sequence[str]) -> str:
    """The command line as run, with the value of ``$OUT`` written as ``$OUT`` (no host paths)."""
    out = os.environ.get("OUT")
    text = " ".join(["bench/gpu.py", *argv])
    return text.replace(out, "$OUT") if out else text


def render_markdown(result: dict[str, Any]) -> str:
    """The table: one row per precision x batch, texts/s medians (min-max for e2e+sent)."""

    def f(row: dict[str, Any], key: str) -> str:
        v = row.get(key)
        if isinstance(v, dict):
            return f"{v['median']:,.0f}"
        return f"{v:,.0f}" if isinstance(v, int | float) else "-"

    cfg, env = result["config"], result["environment"]
    lines = [
        f"## GPU bench, {result['date']}: {result['device_name']}",
        "",
        "| precision | batch | model/s | tokenize/s | e2e/s (pipelined) | e2e serial/s (derived) "
        "| embed + sentiment/s | e2e+sent range | peak MB | cos to fp32 (mean / min) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        acc = result["accuracy"].get(r["precision"], {})
        es = r.get("e2e+sent", {})
        lines.append(
            f"| {r['precision']} | {r['batch']} | {f(r, 'model')} | {f(r, 'tokenize')} | {f(r, 'e2e')} "
            f"| {f(r, 'e2e_serial_derived')} | {f(r, 'e2e+sent')} "
            f"| {es.get('min', 0):,.0f} - {es.get('max', 0):,.0f} | {r['peak_mem_mb'] or '-'} "
            f"| {acc.get('cos_to_fp32_mean', float('nan')):.5f} "
            f"/ {acc.get('cos_to_fp32_min', float('nan')):.5f} |"
        )
    lines += [
        "",
        f"{cfg['texts']} texts ({cfg['text']}, mean {cfg['mean_tokens']} tokens, max_seq_length "
        f"{cfg['max_seq_length']}), consecutive batches padded to the longest (multiple of "
        f"{cfg['pad_to_multiple_of']}); tokenizer pool of {cfg['tokenizer_threads']} threads "
        f"(1 thread: {cfg['tokenize_single_thread_per_s']:,.0f} texts/s); "
        f"median of {cfg['repeats']} timed pass(es) after a warm-up. "
        f"Sentiment: {cfg['sentiment']}. Weights stored as {cfg['weights_stored_as']}; "
        f"torch.compile {'on' if cfg['compile'] else 'off'}; attention {env['attn_implementation']}.",
        f"torch {env['torch']} (CUDA {env['cuda']}), transformers {env['transformers']}, "
        f"Python {env['python']}, {env['cpu_count']} CPUs; run took {result['seconds']} s.",
    ]
    if result["skipped"]:
        lines.append(f"Skipped (time budget {cfg['budget_s']} s): {', '.join(result['skipped'])}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
