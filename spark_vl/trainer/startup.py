"""What `train()` does around its steps besides the checks of `preflight`: seeds, the memory plan's line, the
progress bar, and the error that ends a run. Kept out of loop.py so the loop reads as the loop."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import random
import sys

import numpy as np
import torch

from spark_vl.config import Config
from spark_vl.plan import plan_summary
from spark_vl.trainer.distributed import DistInfo

log = logging.getLogger("spark_vl.train")


class TrainingAborted(RuntimeError):
    """The run cannot continue (e.g. repeated non-finite losses); the message says why."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# glibc's mallopt parameters (malloc.h) and the values set by `keep_freed_memory`.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling for it on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 2**30
TOP_PAD = 64 * 2**20


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse instead of handing it back to the kernel: blocks up to
    32 MiB come from the heap (not a fresh mmap each), and up to 1 GiB of free heap is kept. By default a freed
    activation of a few hundred KiB goes back to the kernel and the next one is faulted in again page by page
    (~2,500 page faults a training step on the issue-17 workload, ~6 at these settings). Only the allocator's
    bookkeeping changes, never a value. Skipped when the user set any MALLOC_* variable or preloads another
    allocator (LD_PRELOAD), and off Linux or glibc; returns whether it was applied."""
    if sys.platform != "linux" or "LD_PRELOAD" in os.environ or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # a C library without mallopt (musl's exists, does nothing, returns 0)
        return False
    return all(mallopt(param, value) == 1 for param, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))


def print_memory_plan(cfg: Config, dist: DistInfo) -> None:
    """The memory plan's one line (`spark-vl plan` has the table); a warning when it does not fit."""
    cuda = dist.device.type == "cuda"
    gpu_memory = torch.cuda.get_device_properties(dist.device).total_memory if cuda else None
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
    line, fits = plan_summary(cfg, dist.world_size, gpu_memory=gpu_memory, gpus_per_node=per_node)
    print(line if cuda else f"{line} (assumes 80 GiB GPUs; this run is on CPU)")
    if not fits:
        log.warning("%s", line)


def progress_bar(cfg: Config, dist: DistInfo, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=cfg.trainer.rollout_steps, initial=initial, desc="train", dynamic_ncols=True,
                disable=not (dist.is_main and cfg.logging.progress))
