"""What `train()` does around its steps besides the checks of `preflight`: seeds, the memory plan's line, the
progress bar, and the error that ends a run. Kept out of loop.py so the loop reads as the loop."""

from __future__ import annotations

import logging
import os
import random

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
