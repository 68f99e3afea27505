"""Shared fixtures: the builtin tiny models (built once per session) and clean distributed state."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_qwen25():
    from spark_vl.models.tiny import build_tiny

    return build_tiny("tiny-qwen2.5-vl", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen3():
    from spark_vl.models.tiny import build_tiny

    return build_tiny("tiny-qwen3-vl", seed=0)


@pytest.fixture(params=["tiny-qwen2.5-vl", "tiny-qwen3-vl"])
def tiny_model(request, tiny_qwen25, tiny_qwen3):
    return tiny_qwen25 if request.param == "tiny-qwen2.5-vl" else tiny_qwen3


def pytest_collection_modifyitems(config, items):
    import importlib.util

    import torch

    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_vllm = pytest.mark.skip(reason="needs vLLM installed")
    has_vllm = importlib.util.find_spec("vllm") is not None
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(skip_vllm)
