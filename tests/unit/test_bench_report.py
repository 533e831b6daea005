"""bench.report (the goals table from the latest results) and bench.pipeline's pure helpers."""

from __future__ import annotations

import json
from pathlib import Path

from bench.pipeline import spent, summary
from bench.report import table
from bench.run import update_readme


def _pipeline(ratio: float, p50: float, p99: float, extra: dict[str, str]) -> dict:
    lat = {"n": 10, "missing": 0, "p50_s": p50, "p95_s": p99, "p99_s": p99, "max_s": p99}
    return {
        "extra_env": extra,
        "load_before": 1.0,
        "load_after": 2.0,
        "ceiling": {"items_per_s": 50.0, "analyzers_per_s": 55.0},
        "pipeline": {"items_per_s": 50.0 * ratio, "peak_rss_mib": {"a": 10.0, "b": 20.0}},
        "ratio": ratio,
        "ratio_analyzers": ratio * 50 / 55,
        "latency": [
            {"rate": 20.0, "stream": lat, "searchable": lat},
            {"rate": 30.0, "stream": lat, "searchable": lat},
        ],
        "idle_rss_mib": {"a": 5.0, "b": 6.0},
        "dashboard": {"written_visible": lat, "open": lat, "history_30d": lat},
    }


def test_goals_table_uses_the_make_bench_runs_of_the_newest_day(tmp_path: Path) -> None:
    (tmp_path / "pipeline-2026-11-30.json").write_text(json.dumps(_pipeline(0.1, 9, 9, {})))
    (tmp_path / "pipeline-2026-12-01.json").write_text(json.dumps(_pipeline(0.9, 0.2, 0.8, {})))
    on_torch = _pipeline(0.7, 0.3, 2.0, {"BTCPULSE_EMBED_BACKEND": "torch"})
    (tmp_path / "pipeline-2026-12-01-torch.json").write_text(json.dumps(on_torch))
    (tmp_path / "pipeline-2026-12-01-experiment.json").write_text(json.dumps(_pipeline(0.0, 9, 9, {})))
    md = table(tmp_path)
    assert "on 2026-12-01" in md
    assert "= **0.90**" in md and "= **0.70**" in md and "0.10" not in md and "= **0.00**" not in md
    rows = {line.split(" | ")[0]: line for line in md.splitlines() if line.startswith("| ")}
    assert rows["| ceiling vs pipeline (defaults)"].endswith("| yes |")
    assert rows["| ceiling vs pipeline (embed_backend=torch)"].endswith("| **no** |")
    assert rows["| publish -> live stream at 20/s (defaults): p50 / p95 / p99"].endswith("| yes |")
    assert rows["| publish -> live stream at 20/s (embed_backend=torch): p50 / p95 / p99"].endswith(
        "| **no** |"
    )
    assert "11 / 30 MiB" in md  # memory: the processes summed
    assert "search at" not in md  # no search result that day


def test_readme_block_between_markers_is_replaced(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- g -->\nold\n<!-- /g -->\nb\n")
    assert update_readme(readme, "new", ("<!-- g -->", "<!-- /g -->"))
    assert readme.read_text() == "a\n<!-- g -->\nnew\n<!-- /g -->\nb\n"


def test_summary_and_spent() -> None:
    s = summary([0.1, 0.2, 0.3, 0.4], 5)
    assert s["n"] == 4 and s["missing"] == 1 and s["p50_s"] == 0.25 and s["max_s"] == 0.4
    assert summary([], 3) == {"n": 0, "missing": 3}
    assert spent({"a": 1.0, "b": 5.0}, {"a": 3.0, "b": 5.01, "c": 1.0}) == {"a": 2.0, "c": 1.0}
