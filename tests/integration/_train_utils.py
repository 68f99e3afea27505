"""Helpers for integration tests that run the real trainer on the builtin tiny models."""

from __future__ import annotations

import json
import os
from pathlib import Path

from spark_vl.config import load_config

FAST = [
    "data.synthetic_size=64",
    "data.val_size=8",
    "data.max_prompt_length=256",
    "rollout.samples_per_prompt=2",
    "rollout.max_new_tokens=8",
    "trainer.prompts_per_step=4",
    "trainer.sequences_per_optimizer_step=4",
    "trainer.micro_batch_size=2",
    "algorithm.sft_prompts_per_step=2",
    "algorithm.sft_coef=1.0",
    "trainer.eval_every=0",
    "trainer.eval_max_new_tokens=8",
    "logging.progress=false",
    "logging.tensorboard=true",
]


DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a training subprocess: without the rendezvous variables that an in-process
    `train()` earlier in this pytest session set (the child would try to bind the parent's port)."""
    return {**{k: v for k, v in os.environ.items() if k not in DIST_VARS}, **extra}


def fast_config(out: Path, *overrides: str):
    return load_config("configs/demo_cpu.yaml", [*FAST, f"trainer.output_dir={out}", *overrides])


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


SCRIPTED = "rollout.backend=tests.integration._train_utils:ScriptedEngine"


class ScriptedEngine:
    """A rollout backend (plugged in by name, `SCRIPTED`) whose responses are right or wrong as a fixed function of
    the prompt uid and the sample index, as real token ids: the same on any number of ranks.

    Used where a random tiny model would never produce an answer (e.g. to exercise SPARK recycling). Subclasses
    change `answer` (what the k-th response says) and `sampler_logprobs` (what the sampler reports).
    """

    def __init__(self, model, processor, cfg=None, synced_gpus=False):
        self.processor = processor

    def sync_weights(self, model):
        pass

    def sleep(self):
        pass

    def wake(self):
        pass

    def answer(self, prompt, k: int) -> str:
        """The k-th response to `prompt`: right or wrong by a hash of (uid, k)."""
        import zlib

        gold = prompt.sample.answer
        right = zlib.crc32(f"{prompt.uid}/{k}".encode()) % 2 == 0
        wrong = {"Yes": "No", "No": "Yes", "A": "B", "B": "A"}.get(gold, "7" if gold != "7" else "8")
        return f"Let me look. \\boxed{{{gold if right else wrong}}}"

    def sampler_logprobs(self, ids: list[int]) -> list[float] | None:
        return None  # the trainer's own log-probs stand in (no sampler gap)

    def generate(self, prompts, n, sampling):
        from spark_vl.types import Rollout, RolloutGroup

        tok = self.processor.tokenizer
        groups = []
        for p in prompts:
            rollouts = []
            for k in range(n):
                text = self.answer(p, k)
                ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                rollouts.append(Rollout(prompt=p, token_ids=ids, text=text, logprobs=self.sampler_logprobs(ids)))
            groups.append(RolloutGroup(prompt=p, rollouts=rollouts))
        return groups


NOISY = "rollout.backend=tests.integration._train_utils:NoisyScriptedEngine"


class NoisyScriptedEngine(ScriptedEngine):
    """Right with a fixed probability per prompt (0.2, 0.4, 0.6 or 0.8 from its uid), drawn with torch's RNG (which
    checkpoints restore, so a resumed run draws the same); every sample is logged in `NoisyScriptedEngine.log` as
    (prompt key, sample uid, right)."""

    log: list[tuple[str, str, bool]] = []
    groups_log: list[list[bool]] = []  # per generated group, its rollouts' correctness

    @staticmethod
    def pass_rate(uid: str) -> float:
        import zlib

        return (zlib.crc32(uid.encode()) % 4 + 1) / 5

    def answer(self, prompt, k: int) -> str:
        import torch

        from spark_vl.data.prompts import prompt_key

        right = bool(torch.rand(()) < self.pass_rate(prompt.sample.uid))
        NoisyScriptedEngine.log.append((prompt_key(prompt), prompt.sample.uid, right))
        return f"\\boxed{{{prompt.sample.answer if right else 'nope'}}}"

    def generate(self, prompts, n, sampling):
        groups = super().generate(prompts, n, sampling)
        for g in groups:
            NoisyScriptedEngine.groups_log.append([r.text != "\\boxed{nope}" for r in g.rollouts])
        return groups
