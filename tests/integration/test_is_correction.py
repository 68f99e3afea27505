"""The importance-sampling weights reach the policy loss in the real trainer (CPU, one process).

A scripted backend reports sampler log-probs of -1 for every token, far from the random tiny model's (about -6):
every token's ratio lies outside [1/cap, cap], so `mask` removes the policy gradient entirely, while `none`
keeps it and `token` scales it; the gap metrics are logged each step.
"""

from __future__ import annotations

import math

import pytest

from spark_vl.trainer.loop import train

from ._train_utils import ScriptedEngine, fast_config, read_metrics

BACKEND = "rollout.backend=tests.integration.test_is_correction:ScriptedWithLogprobs"


class ScriptedWithLogprobs(ScriptedEngine):
    """Half of each group right, half wrong (so advantages are not zero), sampler log-probs -1 per token."""

    def answer(self, prompt, k: int) -> str:
        return f"Let me look. \\boxed{{{prompt.sample.answer if k % 2 == 0 else 'nothing'}}}"

    def sampler_logprobs(self, ids: list[int]) -> list[float]:
        return [-1.0] * len(ids)


@pytest.mark.parametrize("mode", ["none", "mask", "token"])
def test_is_weights_reach_the_policy_loss(tmp_path, mode):
    run = train(fast_config(tmp_path / mode, BACKEND, f"algorithm.is_correction={mode}", "trainer.rollout_steps=1",
                            "algorithm.sft_prompts_per_step=0", "trainer.eval_max_new_tokens=2",
                            "rollout.samples_per_prompt=4"))
    step = read_metrics(run)[1]
    assert step["rollout/is_outside_frac"] == 1.0 and step["rollout/is_ratio_max"] < 0.5
    assert step["rollout/logprob_abs_diff"] > 2.0 and math.isfinite(step["rollout/sampler_kl_k3"])
    print({k: step[k] for k in ("loss/policy", "actor/grad_norm", "groups/zero_variance")})
    assert step["groups/zero_variance"] == 0.0  # every group has advantages
    if mode == "mask":  # every token dropped: no policy gradient at all
        assert step["actor/grad_norm"] == 0.0
    else:
        assert step["actor/grad_norm"] > 0.0
