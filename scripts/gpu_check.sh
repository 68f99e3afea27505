#!/usr/bin/env bash
# GPU check (under 10 minutes on one H100/H200): bf16 training steps of random-weight Qwen2.5-VL at 3B and 7B
# shape, ZeRO-0/2/3 on one rank with gradient checkpointing; tokens/s, MFU and peak memory per phase beside the
# memory plan, as a markdown table (stdout and gpu_check.md). Needs only torch and transformers on the machine:
# wheels for anything else (DeepSpeed and its small dependencies) are installed from .whl/ without an index.
# Fill .whl/ on a machine with network access, e.g.:
#   pip wheel --no-deps -w .whl deepspeed==0.19.8 hjson py-cpuinfo ninja msgpack nvidia-ml-py
#   bash scripts/gpu_check.sh [--steps 3] [--phases 3b:0,7b:3:offload] [--out gpu_check.md]
# CPU rehearsal of the same logic: python scripts/gpu_check.py --dry-run
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python -m pip install --quiet --no-index --find-links .whl .whl/*.whl
fi
python -c "import deepspeed" 2>/dev/null || { echo "gpu_check: deepspeed is not importable; carry its wheel in .whl/" >&2; exit 2; }
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
args=("$@")
[[ " $* " == *" --out "* ]] || args+=(--out gpu_check.md)
exec timeout 580 python scripts/gpu_check.py "${args[@]}"
