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


def test_search_rows_show_closed_and_open_loop_figures_against_the_goals(tmp_path: Path) -> None:
    (tmp_path / "pipeline-2026-12-01.json").write_text(json.dumps(_pipeline(0.9, 0.2, 0.8, {})))

    def run(p50: float, p99: float, qps: float, **extra: float) -> dict:
        return {"p50_ms": p50, "p99_ms": p99, "qps": qps, **extra}

    http = {
        "none/1": run(15, 25, 60, **{"recall@10": 0.98}),
        "none/8": run(50, 90, 150),
        "none/@100": run(18, 45, 98.3, errors=0),
        "none/@60": run(15, 40, 59, errors=0),  # met p99, but below the rate of the goal
        "proxy:none/@100": run(30, 300, 90),  # another path: not the goals table's
        "time/1": run(15, 25, 60),
        "time/8": run(50, 90, 150),
        "time/@100": run(20, 55, 98, errors=0),
    }
    search = {"corpus": {"stored": 100_000}, "http": http}
    (tmp_path / "search-2026-12-01.json").write_text(json.dumps(search))
    rows = [line for line in table(tmp_path).splitlines() if line.startswith("| search")]
    assert rows[0].startswith("| search at 100,000 points, no filter: p99 1 / 8 clients | 25 / 90 ms")
    assert rows[0].endswith("| **no** |") and rows[1].endswith("| yes |")  # p99 of 8; QPS 150
    assert rows[2] == (
        "| search, no filter: p50 / p99 at 100/s offered (open loop) | 18 / 45 ms "
        "| <= 50 ms at >= 100/s | yes |"
    )
    assert rows[3].startswith("| search, no filter: p50 / p99 at 60/s offered")
    assert rows[3].endswith("**no** |")
    assert rows[4].startswith("| search, no filter: recall@10 vs exact | 0.980 |")
    assert rows[7].startswith("| search, 30-day filter: p50 / p99 at 100/s offered")
    assert rows[7].endswith("**no** |")
    assert len(rows) == 8  # no recall for the filtered run here


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


def test_the_dashboard_row_is_split_into_the_aggregator_and_the_page_where_measured(tmp_path: Path) -> None:
    run = _pipeline(0.9, 0.2, 0.8, {})
    lat = run["dashboard"]["written_visible"]
    (tmp_path / "pipeline-2026-12-01.json").write_text(json.dumps(run))
    assert "of which written -> counted" not in table(tmp_path)  # a result from before the split
    run["dashboard"]["written_counted"] = {**lat, "p50_s": 0.05, "max_s": 0.3}
    run["dashboard"]["counted_visible"] = {**lat, "p50_s": 0.1, "max_s": 0.6}
    (tmp_path / "pipeline-2026-12-01.json").write_text(json.dumps(run))
    (row,) = [line for line in table(tmp_path).splitlines() if "of which written -> counted" in line]
    assert "| 50 ms / 300 ms; 100 ms / 600 ms | (reported) |" in row
