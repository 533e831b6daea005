"""btcpulse analyze (models.offline): real models over small real-looking files; one JSON line
per input row, in order, with clear errors for files it cannot read."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from models.offline import AnalyzeError, analyze_file, parse_when, read_rows, text_getter
from models.pipeline import Analyzer

ROWS = [
    (
        "5-7-2022 04:24",
        "CryptoNews",
        "Bitcoin Returns Above USD 20K, Ethereum Rallies",
        "Bitcoin price climbed.",
    ),
    ("5-7-2022 04:30", "CoinTelegraph", "Hackers drain $600M from Poly Network bridge", "Funds stolen."),
    ("5-7-2022 05:00", "CryptoPotato", "", ""),
    (
        "5-7-2022 05:10",
        "CryptoPotato",
        "Hackers drain $600 million from the Poly Network bridge",
        "Stolen funds.",
    ),
    ("6-7-2022 09:00", "CryptoNews", "SEC delays decision on spot Bitcoin ETF <script>alert(1)</script>", ""),
]


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(batch_size=4)


def _csv(path: Path, sep: str = ";") -> Path:
    lines = [sep.join(("date", "source", "title", "text"))]
    lines += [sep.join(row) for row in ROWS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(path: Path, analyzer: Analyzer, **kw: object) -> tuple[list[dict], object]:
    out = io.StringIO()
    report = analyze_file(path, out, analyzer=analyzer, **kw)  # type: ignore[arg-type]
    return [json.loads(line) for line in out.getvalue().splitlines()], report


def test_one_line_per_row_in_order(tmp_path: Path, analyzer: Analyzer) -> None:
    lines, report = _run(_csv(tmp_path / "news.csv"), analyzer)
    assert [line["row"] for line in lines] == [0, 1, 2, 3, 4]
    assert lines[2] == {"row": 2, "error": "no text"}
    for line in (lines[0], lines[1], lines[3], lines[4]):
        assert line["sentiment"] in ("negative", "neutral", "positive")
        assert -1 <= line["score"] <= 1 and 0 <= line["confidence"] <= 1
        assert set(line["topic"]) == {"id", "label", "keywords"}
        assert isinstance(line["story"], int)
    assert lines[1]["sentiment"] == "negative"
    assert "security_hacks" in lines[1]["categories"]
    assert "etf_institutional" in lines[4]["categories"]
    # the same story from two sources, 40 minutes apart, is one story named by its first row
    assert lines[1]["story"] == lines[3]["story"] == 1
    assert lines[0]["story"] == 0 and lines[4]["story"] == 4
    assert report.rows == 5 and report.analysed == 4 and report.errors == 1  # type: ignore[attr-defined]


def test_comma_csv_with_text_column_and_jsonl(tmp_path: Path, analyzer: Analyzer) -> None:
    lines, _ = _run(_csv(tmp_path / "news.csv", sep="\t"), analyzer, text_column="title")
    assert len(lines) == 5 and lines[2]["error"] == "no text"
    jl = tmp_path / "news.jsonl"
    jl.write_bytes(
        b'{"title": "Bitcoin crashes 20% as liquidations mount", "published_at": "2022-06-13T10:00:00Z"}\n'
        b"[1, 2]\n"
        b"not json\n"
        b'{"title": "Caf\xe9 owner accepts bitcoin \xff payments"}\n'
    )
    lines, _ = _run(jl, analyzer)
    assert [line["row"] for line in lines] == [0, 1, 2, 3]
    assert lines[0]["sentiment"] == "negative"
    assert "not an object" in lines[1]["error"] and "not JSON" in lines[2]["error"]
    assert "sentiment" in lines[3]  # non-UTF-8 bytes are replaced, the row is still analysed


def test_clear_errors(tmp_path: Path, analyzer: Analyzer) -> None:
    path = _csv(tmp_path / "news.csv")
    with pytest.raises(
        AnalyzeError, match="no column 'headline_text'; the file has date, source, title, text"
    ):
        _run(path, analyzer, text_column="headline_text")
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(AnalyzeError, match="no text column found among a, b"):
        _run(odd, analyzer)
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(AnalyzeError, match="empty file"):
        read_rows(empty)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5-7-2022 04:24", 1656995040.0),
        ("2022-07-05T04:24:00Z", 1656995040.0),
        ("2022-07-05", 1656979200.0),
        ("1656995040", 1656995040.0),
        (1656995040000, 1656995040.0),
        ("", None),
        ("yesterday", None),
        (None, None),
    ],
)
def test_parse_when(value: object, expected: float | None) -> None:
    assert parse_when(value) == expected


def test_text_getter_prefers_title_and_summary() -> None:
    get = text_getter(["Title", "summary", "x"], None)
    assert get({"Title": "Head <b>line</b>", "summary": "Body"}) == "Head line. Body"
    assert text_getter(["news"], None)({"news": "only"}) == "only"


def test_cli_analyze_writes_lines_and_reports(tmp_path: Path) -> None:
    path = _csv(tmp_path / "news.csv")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        app, ["analyze", str(path), "--out", str(out), "--sentiment-model", "lexicon"]
    )
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 5
    bad = CliRunner().invoke(app, ["analyze", str(path), "--text-column", "nope"])
    assert bad.exit_code == 2
    assert "no column 'nope'" in bad.output
