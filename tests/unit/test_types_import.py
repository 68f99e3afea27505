"""spark_vl.types stays torch-free: reward pool workers import it (and RewardOutput) without paying for torch."""

from __future__ import annotations

import subprocess
import sys


def test_importing_types_and_rewards_does_not_import_torch():
    code = "import sys, spark_vl.types, spark_vl.rewards; print('torch' in sys.modules, 'sympy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr
