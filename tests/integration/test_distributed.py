"""Multi-process DeepSpeed on CPU (gloo): torchrun --nproc_per_node 2 with ZeRO-2 and ZeRO-3.

With greedy rollouts and one optimizer step per rollout step, a 2-rank run sees exactly the data of a
1-process run, so global loss normalisation must give the same losses and gradient norm.
"""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ._train_utils import clean_env

ROOT = Path(__file__).resolve().parents[2]
COMMON = [
    "data.synthetic_size=64", "data.val_size=8", "rollout.samples_per_prompt=2", "rollout.max_new_tokens=8",
    "rollout.temperature=0", "trainer.prompts_per_step=4", "trainer.sequences_per_optimizer_step=8",
    "trainer.micro_batch_size=2", "algorithm.sft_prompts_per_step=2", "trainer.eval_max_new_tokens=8",
    "logging.progress=false", "logging.tensorboard=false", "trainer.rollout_steps=2",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(tmp_path: Path, nproc: int, *overrides: str) -> list[dict]:
    out = tmp_path / f"run-{nproc}-{'-'.join(o.split('=')[1].replace('/', '_') for o in overrides)}"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
           "-m", "spark_vl.cli", "train", "--config", "configs/demo_cpu.yaml", *COMMON, *overrides,
           f"trainer.output_dir={out}"]
    env = clean_env(OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_like_one_process(single: list[dict], double: list[dict], extra: tuple[str, ...] = ()) -> None:
    """Steps 1 and 2 of a 2-rank run against 1 process. Step 1 starts from identical weights; after one update
    ZeRO-3's partitioned reductions (summed in another order) leave ~1e-4 relative differences."""
    for step, rel in ((1, 2e-4), (2, 1e-3)):
        a, b = single[step], double[step]
        for key in ("loss/sft", "loss/policy", "actor/grad_norm", "actor/kl", "reward/mean", "response/length_mean",
                    *extra):
            assert b[key] == pytest.approx(a[key], rel=rel, abs=1e-6), (step, key, a[key], b[key])


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_two_ranks_match_one_process(tmp_path, stage):
    single = run(tmp_path, 1, f"deepspeed.zero_stage={stage}", "algorithm.kl_coef=0.01")
    double = run(tmp_path, 2, f"deepspeed.zero_stage={stage}", "algorithm.kl_coef=0.01")
    assert [m["step"] for m in double] == [0, 1, 2]
    assert_like_one_process(single, double)


@pytest.mark.slow
def test_shared_prompts_on_two_zero3_ranks_match_one_process(tmp_path):
    """trainer.share_prompts under ZeRO-3 lockstep (every rank runs the prompt pass, the response pass and as many
    head chunks as the others, whatever its rows): two ranks sharing prompts train like one process without."""
    single = run(tmp_path, 1, "deepspeed.zero_stage=3", "algorithm.kl_coef=0.01")
    double = run(tmp_path, 2, "deepspeed.zero_stage=3", "algorithm.kl_coef=0.01", "trainer.share_prompts=true")
    assert [m["step"] for m in double] == [0, 1, 2]
    assert_like_one_process(single, double)


@pytest.mark.slow
def test_zero3_loads_a_checkpoint_folder_partitioned(tmp_path):
    """A local HF folder under ZeRO-3 loads through deepspeed.zero.Init (HfDeepSpeedConfig), trains with a KL
    reference on 2 ranks, and matches 1 process."""
    from spark_vl.models.tiny import build_tiny

    model, processor = build_tiny("tiny-qwen2.5-vl", seed=3)
    folder = tmp_path / "hf"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    args = ("deepspeed.zero_stage=3", "algorithm.kl_coef=0.01", f"model.path={folder}")
    single, double = run(tmp_path, 1, *args), run(tmp_path, 2, *args)
    for key in ("loss/sft", "actor/grad_norm", "actor/kl"):
        assert double[1][key] == pytest.approx(single[1][key], rel=2e-4, abs=1e-6), key


@pytest.mark.slow
def test_spark_two_ranks_build_and_train_what_one_process_does(tmp_path):
    """SPARK under ZeRO-3 on 2 ranks: per step, the judgments and reflections built and trained (global totals)
    equal a 1-process run of the same config. The scripted backend answers right or wrong as a function of the
    prompt uid, so both runs see the same verified groups; odd caps split unevenly over the ranks."""
    from ._train_utils import SCRIPTED

    args = (SCRIPTED, "deepspeed.zero_stage=3", "spark.enabled=true", "spark.judgment_cap=3",
            "spark.reflection_cap=1", "trainer.rollout_steps=4", "algorithm.sft_prompts_per_step=0")
    single, double = run(tmp_path, 1, *args), run(tmp_path, 2, *args)
    keys = ("spark/aux/judgments_trained", "spark/aux/reflections_trained", "spark/aux/mean_age",
            "spark/recycle/judge_candidates", "spark/recycle/reflect_candidates")
    built = lambda m: (m["spark/recycle/pointwise"] + m["spark/recycle/pairwise"],  # noqa: E731
                       m["spark/recycle/reflect_cot"] + m["spark/recycle/reflect_answer"])
    assert sum(m["spark/aux/judgments_trained"] for m in single[1:]) > 0
    # The held-out judge evaluation deals its pairs over the ranks and gathers the scores, every rank running the
    # same four passes: one process's metrics (the arithmetic of dealing and gathering is checked by hand in
    # tests/unit/test_spark_loop_helpers.py; the random tiny model's P(Yes) is nearly constant here).
    for key in ("eval/judge_accuracy", "eval/judge_auc", "eval/judge_pairwise_accuracy",
                "eval/judge_pairwise_consistency", "eval/judge_p_yes_correct", "eval/judge_p_yes_wrong"):
        assert double[0][key] == pytest.approx(single[0][key], abs=1e-5), key
    for a, b in zip(single[1:], double[1:], strict=True):
        assert built(a) == built(b), a["step"]
        for key in keys:
            assert a.get(key) == b.get(key), (a["step"], key, a.get(key), b.get(key))


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_ranks_with_and_without_images_in_one_step(tmp_path, stage):
    """ZeRO-3 gathers a module's parameters collectively when it runs, and ZeRO-2 reduces gradients in buckets
    filled in the backward's order, so a rank whose batch has no image must still run the vision tower (and its
    backward) when another rank's batch has one (`vision_filler`; before it, ZeRO-3 hung in step 1's rollout and
    ZeRO-2 failed in the first update: "Received data size doesn't match expected size"). A 50/50 mixture of image
    and text-only rows gives rank 0 an image prompt and rank 1 two text-only prompts in step 1, and a single
    held-out prompt leaves rank 1 without one in the evaluations (the ranks now agree on the number of generate
    calls before the first; that hung too under ZeRO-3); the 2-rank run finishes and matches 1 process."""
    from spark_vl.config import load_config
    from spark_vl.models.tiny import build_tiny
    from spark_vl.trainer.data import PromptSource

    data = tmp_path / "arith.jsonl"
    data.write_text("".join(json.dumps({"id": f"t{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(16)))
    args = (f"deepspeed.zero_stage={stage}", "algorithm.kl_coef=0.01", f"data.train=[builtin:synthetic,{data}]",
            "data.train_weights=[0.5,0.5]", "data.val_size=1")  # and rank 1 holds no held-out prompt
    source = PromptSource(load_config("configs/demo_cpu.yaml", [*COMMON, *args, f"trainer.output_dir={tmp_path}"]),
                          build_tiny("tiny-qwen2.5-vl")[1])
    step1 = source.next_prompts(4)
    assert [[len(p.images) for p in step1[rank::2]] for rank in (0, 1)] == [[1, 0], [0, 0]]
    single, double = run(tmp_path, 1, *args), run(tmp_path, 2, *args)
    assert [m["step"] for m in double] == [0, 1, 2]
    assert_like_one_process(single, double)
    for step in (0, 2):
        assert double[step]["eval/length"] == single[step]["eval/length"], step


@pytest.mark.slow
def test_zero3_spo_first_visit_probes_on_uneven_ranks(tmp_path):
    """SPO's first-visit probes under ZeRO-3: in step 4 of this run one rank has an unseen prompt and the other none.
    The rank without one must still join the prober's forward passes (the ranks agree on the number of generate
    calls before the first; before that, this run hung in step 4); the 2-rank run matches 1 process."""
    args = ("deepspeed.zero_stage=3", "algorithm.advantage=spo", "algorithm.spo_init_samples=2",
            "data.synthetic_size=16", "data.val_size=2", "algorithm.sft_prompts_per_step=0", "trainer.rollout_steps=6")
    single, double = run(tmp_path, 1, *args), run(tmp_path, 2, *args)
    assert [m["step"] for m in double] == list(range(7))
    probes = [m.get("spo/init_rollout/responses") for m in single[1:]]
    assert 2.0 in probes  # one unseen prompt (2 samples) in a step: on one rank only
    for a, b in zip(single[1:], double[1:], strict=True):
        for key in ("spo/init_rollout/responses", "loss/policy", "reward/mean"):
            assert b.get(key) == pytest.approx(a.get(key), rel=1e-3, abs=1e-6), (a["step"], key)


@pytest.mark.slow
def test_zero3_reward_judge_when_only_one_rank_has_rows_to_judge(tmp_path):
    """reward.judge_weight > 0 scores rows without a gold by the judge's P(Yes); under ZeRO-3 every rank joins the
    judge's forward passes when any rank has such a row. In step 1 here rank 0 holds an image prompt and a gold-less
    text-only prompt, rank 1 two text-only prompts with a gold. The random model writes no final answer, so there is
    nothing to show the judge: every rank is called with nothing to judge and runs no pass (before, each rank ran a
    dummy pair and counted it in `judge/scored`: 2 here against 0 for one process). The 2-rank run matches 1
    process. (The passes themselves on uneven ranks, dummy rows and the vision filler, are unit-tested:
    test_reward_judge.py; a random model cannot be made to write a boxed answer here.)"""
    from spark_vl.config import load_config
    from spark_vl.models.tiny import build_tiny
    from spark_vl.trainer.data import PromptSource

    rows = [{"id": f"t{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(16)]
    data = tmp_path / "arith.jsonl"
    args = ("deepspeed.zero_stage=3", "algorithm.kl_coef=0.01", f"data.train=[builtin:synthetic,{data}]",
            "data.train_weights=[0.5,0.5]", "reward.judge_weight=0.5")

    def step1(lines):
        data.write_text("".join(json.dumps(r) + "\n" for r in lines))
        cfg = load_config("configs/demo_cpu.yaml", [*COMMON, *args, f"trainer.output_dir={tmp_path}"])
        return PromptSource(cfg, build_tiny("tiny-qwen2.5-vl")[1]).next_prompts(4)

    # The draw does not depend on the answers (gold-less rows are kept when judge_weight > 0): take every text row
    # of step 1 out of rank 0's share and drop its answer.
    drawn = step1(rows)
    for p in drawn[0::2]:
        if not p.images:
            next(r for r in rows if r["problem"] == p.sample.problem)["answer"] = ""
    drawn = step1(rows)
    has_gold = [[bool(p.sample.answer) for p in drawn[rank::2]] for rank in (0, 1)]
    assert [[len(p.images) for p in drawn[rank::2]] for rank in (0, 1)] == [[1, 0], [0, 0]]
    assert has_gold == [[True, False], [True, True]]
    single, double = run(tmp_path, 1, *args), run(tmp_path, 2, *args)
    assert [m["step"] for m in double] == [0, 1, 2]
    assert_like_one_process(single, double, extra=("judge/scored",))
