"""Per-category precision / recall of :class:`models.categories.Categorizer` on the hand-labelled
sample ``models/data/categories_sample.csv`` (see ``models/data/README.md``).

The sample's first 100 rows are the *dev* half (looked at while tuning the rules, weights and
threshold), the last 100 the *held-out* half (only scored). Run::

    python -m models.categories_eval [--news PATH] [--threshold T]

It prints one Markdown table per half. The article texts come from the news CSV (the sample
keeps only row index and title); they are embedded here, once, with the packaged MiniLM, and
joined as the pipeline joins them (``"title. summary"``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.categories import CATEGORIES, CATEGORY_LABELS, DEFAULT_THRESHOLD, Categorizer, EmbedderLike

SAMPLE_CSV = Path(__file__).resolve().parent / "data" / "categories_sample.csv"
#: Where the news CSV sits relative to the repository (a sibling ``shared/data`` folder).
DEFAULT_NEWS_CSV = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "crypto_news_2021_2022" / "cryptonews.csv"
)
#: The sample's first DEV_SIZE rows are the dev half; the rest is held out.
DEV_SIZE = 100
SAMPLE_SEED = 2022


@dataclass(frozen=True)
class Sample:
    """The hand-labelled sample: row indices into the news CSV, titles, labels ``(n, 9)`` 0/1."""

    rows: list[int]
    titles: list[str]
    labels: np.ndarray

    def half(self, name: str) -> Sample:
        """``"dev"`` (first :data:`DEV_SIZE` rows) or ``"heldout"`` (the rest)."""
        if name == "dev":
            sl = slice(0, DEV_SIZE)
        elif name == "heldout":
            sl = slice(DEV_SIZE, None)
        else:
            raise ValueError(f"half must be 'dev' or 'heldout', got {name!r}")
        return Sample(self.rows[sl], self.titles[sl], self.labels[sl])


def draw_sample(news_csv: Path, n: int = 200, seed: int = SAMPLE_SEED) -> tuple[list[int], list[int]]:
    """How the sample rows were drawn (kept for reproducibility; labelling was by hand).

    Rows with an empty title are skipped; ``n`` rows are drawn stratified by ``subject``, then
    split in two halves, also stratified by ``subject``.

    Returns:
        (dev rows, held-out rows), row indices into the CSV (0-based, header excluded).
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split

    df = pd.read_csv(news_csv, sep=";", keep_default_na=False)
    ok = df[df["title"].str.strip() != ""]
    idx, _ = train_test_split(ok.index.to_numpy(), train_size=n, stratify=ok["subject"], random_state=seed)
    dev, held = train_test_split(idx, train_size=n // 2, stratify=ok["subject"].loc[idx], random_state=seed)
    return [int(i) for i in dev], [int(i) for i in held]


def load_sample(path: Path = SAMPLE_CSV) -> Sample:
    """Read the labelled sample; raises ``ValueError`` on a missing column or a non-0/1 label."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"row", "title", *CATEGORIES} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path.name}: missing columns {sorted(missing)}")
        rows, titles, labels = [], [], []
        for line, rec in enumerate(reader, start=2):
            values = [rec[c].strip() for c in CATEGORIES]
            if any(v not in ("0", "1") for v in values):
                raise ValueError(f"{path.name}:{line}: labels must be 0 or 1, got {values}")
            rows.append(int(rec["row"]))
            titles.append(rec["title"])
            labels.append([int(v) for v in values])
    return Sample(rows, titles, np.asarray(labels, dtype=np.int8).reshape(-1, len(CATEGORIES)))


def news_texts(news_csv: Path, rows: Sequence[int]) -> list[str]:
    """``"title. summary"`` for the given CSV rows, cleaned as the collectors clean them."""
    import pandas as pd

    from cluster.records import clean_text

    df = pd.read_csv(news_csv, sep=";", keep_default_na=False)
    out = []
    for r in rows:
        title = clean_text(str(df.at[r, "title"]), 300)
        summary = clean_text(str(df.at[r, "text"]), 2000)
        out.append(f"{title}. {summary}" if summary else title)
    return out


@dataclass(frozen=True)
class CategoryReport:
    """Per-category counts on one labelled set."""

    category: str
    tp: int
    fp: int
    fn: int

    @property
    def support(self) -> int:
        return self.tp + self.fn

    @property
    def predicted(self) -> int:
        return self.tp + self.fp

    @property
    def precision(self) -> float:
        """tp / predicted; NaN when nothing was predicted."""
        return self.tp / self.predicted if self.predicted else float("nan")

    @property
    def recall(self) -> float:
        """tp / support; NaN when the category has no positives."""
        return self.tp / self.support if self.support else float("nan")


def evaluate(pred: np.ndarray, gold: np.ndarray) -> list[CategoryReport]:
    """Per-category counts plus a final ``"micro"`` row; ``pred``/``gold`` are ``(n, 9)`` 0/1."""
    pred = np.asarray(pred).astype(bool)
    gold = np.asarray(gold).astype(bool)
    if pred.shape != gold.shape or pred.ndim != 2 or pred.shape[1] != len(CATEGORIES):
        raise ValueError(f"pred and gold must both be (n, {len(CATEGORIES)}), got {pred.shape}, {gold.shape}")
    out = [
        CategoryReport(
            c,
            int((pred[:, j] & gold[:, j]).sum()),
            int((pred[:, j] & ~gold[:, j]).sum()),
            int((~pred[:, j] & gold[:, j]).sum()),
        )
        for j, c in enumerate(CATEGORIES)
    ]
    out.append(
        CategoryReport(
            "micro",
            sum(r.tp for r in out),
            sum(r.fp for r in out),
            sum(r.fn for r in out),
        )
    )
    return out


def predictions(
    categorizer: Categorizer, texts: list[str], vectors: np.ndarray, threshold: float | None = None
) -> np.ndarray:
    """(n, 9) 0/1 predictions at ``threshold`` (the categorizer's own when None)."""
    t = categorizer.threshold if threshold is None else threshold
    return (categorizer.scores(texts, vectors) >= t).astype(np.int8)


def markdown(reports: list[CategoryReport], title: str) -> str:
    """A Markdown table: category, precision, recall, support, predicted."""

    def fmt(x: float) -> str:
        return "–" if np.isnan(x) else f"{x:.2f}"

    lines = [
        f"**{title}**",
        "",
        "| category | precision | recall | support | predicted |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in reports:
        name = "**micro**" if r.category == "micro" else CATEGORY_LABELS[r.category]
        lines.append(f"| {name} | {fmt(r.precision)} | {fmt(r.recall)} | {r.support} | {r.predicted} |")
    return "\n".join(lines)


def run(
    news_csv: Path = DEFAULT_NEWS_CSV,
    sample_csv: Path = SAMPLE_CSV,
    threshold: float | None = None,
    embedder: EmbedderLike | None = None,
) -> dict[str, list[CategoryReport]]:
    """Score both halves; returns ``{"dev": [...], "heldout": [...]}``."""
    if not news_csv.exists():
        raise FileNotFoundError(f"news CSV not found: {news_csv} (pass --news)")
    if embedder is None:
        from models.embedder import Embedder

        embedder = Embedder()
    sample = load_sample(sample_csv)
    texts = news_texts(news_csv, sample.rows)
    vectors = embedder.encode(texts)
    cat = Categorizer(embedder, threshold=DEFAULT_THRESHOLD if threshold is None else threshold)
    pred = predictions(cat, texts, vectors)
    return {
        "dev": evaluate(pred[:DEV_SIZE], sample.labels[:DEV_SIZE]),
        "heldout": evaluate(pred[DEV_SIZE:], sample.labels[DEV_SIZE:]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--news", type=Path, default=DEFAULT_NEWS_CSV, help="cryptonews.csv")
    parser.add_argument("--sample", type=Path, default=SAMPLE_CSV, help="labelled sample CSV")
    parser.add_argument("--threshold", type=float, default=None, help=f"default {DEFAULT_THRESHOLD}")
    args = parser.parse_args(argv)
    res = run(args.news, args.sample, args.threshold)
    n = len(load_sample(args.sample).rows)
    held = markdown(res["heldout"], f"Held-out half (rows {DEV_SIZE + 1}-{n}, not used for tuning)")
    dev = markdown(res["dev"], f"Dev half (rows 1-{DEV_SIZE}, used for tuning)")
    sys.stdout.write(f"{held}\n\n{dev}\n")


if __name__ == "__main__":
    main()
