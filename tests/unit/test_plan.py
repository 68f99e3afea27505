"""spark_vl.plan: each memory term against hand arithmetic on a made-up shape, ZeRO sharding, offload, the
parameter count of real shapes, the CLI, and every preset validated for the world size it was written for."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from spark_vl import plan as P
from spark_vl.config import load_config, validate

ROOT = Path(__file__).resolve().parents[2]
GiB = 2**30

# A made-up Qwen2.5-VL-like shape with round numbers, for hand arithmetic.
SHAPE = P.ModelShape("qwen2_5_vl", hidden=100, layers=3, heads=4, kv_heads=2, head_dim=25, intermediate=300,
                     vocab=1000, tied_embeddings=False, vision_depth=2, vision_hidden=20, vision_intermediate=40,
                     vision_heads=2, patch=14, merge=2, name="made-up")


def cfg_with(*overrides: str):
    base = ["trainer.prompts_per_step=8", "rollout.samples_per_prompt=4", "trainer.sequences_per_optimizer_step=32",
            "trainer.micro_batch_size=2", "data.max_prompt_length=50", "rollout.max_new_tokens=30",
            "model.max_pixels=3136", "model.min_pixels=784", "algorithm.kl_coef=0", "rollout.generation_batch_size=4"]
    return load_config(None, [*base, *overrides])


def term(plan, prefix):
    found = [t for t in plan.terms if t.name.startswith(prefix)]
    assert len(found) == 1, [t.name for t in plan.terms]
    return found[0]


def test_param_count_by_hand():
    pc = P.count_params(SHAPE)
    # q 100x100+100, k/v 2 x (100x50+50), o 100x100, MLP 3x100x300, 2 norms
    layer = (100 * 100 + 100) + 2 * (100 * 50 + 50) + 100 * 100 + 3 * 100 * 300 + 2 * 100
    assert pc.text_layers == 3 * layer
    assert pc.embedding == 2 * 1000 * 100 + 100
    block = 20 * 60 + 60 + 20 * 20 + 20 + 3 * 20 * 40 + 2 * 40 + 20 + 2 * 20
    assert pc.vision_tower == 3 * 2 * 14 * 14 * 20 + 2 * block
    assert pc.projector == 20 + 80 * 80 + 80 + 80 * 100 + 100


@pytest.mark.parametrize("name, published", [
    ("Qwen/Qwen2.5-VL-7B-Instruct", 8.29e9), ("Qwen/Qwen2.5-VL-3B-Instruct", 3.75e9),
    ("Qwen/Qwen2.5-VL-32B-Instruct", 33.5e9), ("Qwen/Qwen2.5-VL-72B-Instruct", 73.4e9),
    ("Qwen/Qwen3-VL-8B-Instruct", 8.77e9), ("Qwen/Qwen3-VL-32B-Instruct", 33.4e9),
])
def test_known_shapes_match_published_sizes(name, published):
    assert P.count_params(P.shape_from_config(name)).total == pytest.approx(published, rel=0.01)


@pytest.mark.parametrize("name", ["Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen3-VL-8B-Instruct", "builtin:tiny-qwen3-vl"])
def test_count_equals_transformers_model_on_meta_device(name):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLConfig, Qwen3VLConfig

    s = P.shape_from_config(name)
    text = dict(vocab_size=s.vocab, hidden_size=s.hidden, intermediate_size=s.intermediate,
                num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads,
                head_dim=s.head_dim)
    vision = dict(depth=s.vision_depth, hidden_size=s.vision_hidden, intermediate_size=s.vision_intermediate,
                  num_heads=s.vision_heads, out_hidden_size=s.hidden, patch_size=s.patch, spatial_merge_size=s.merge)
    if s.family == "qwen2_5_vl":
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=s.tied_embeddings)
    else:
        vision.update(num_position_embeddings=s.vision_position_embeddings,
                      deepstack_visual_indexes=list(range(s.deepstack)))
        config = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=s.tied_embeddings)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    assert P.count_params(s).total == sum(p.numel() for p in model.parameters())


def test_shape_from_local_config_json(tmp_path):
    (tmp_path / "config.json").write_text(
        '{"model_type": "qwen2_5_vl", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,'
        ' "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064, "tie_word_embeddings": false,'
        ' "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,'
        ' "patch_size": 14, "spatial_merge_size": 2}}')
    shape = P.shape_from_config(str(tmp_path))
    assert P.count_params(shape).total == P.count_params(P.KNOWN_SHAPES["Qwen/Qwen2.5-VL-7B-Instruct"]).total
    with pytest.raises(ValueError, match="known"):
        P.shape_from_config(str(tmp_path / "missing"))


def test_model_state_terms_by_zero_stage():
    n = P.count_params(SHAPE).total
    world = P.Hardware(gpus_per_node=4, nodes=1, gpu_memory=80 * GiB)
    expected = {  # (weights, grads, optimizer) bytes per GPU
        0: (2 * n, 2 * n, 12 * n),
        1: (2 * n, 2 * n, 12 * n // 4),
        2: (2 * n, 2 * n // 4, 12 * n // 4),
        3: (2 * n // 4, 2 * n // 4, 12 * n // 4),
    }
    for stage, (w, g, o) in expected.items():
        plan = P.make_plan(cfg_with(f"deepspeed.zero_stage={stage}"), world, shape=SHAPE)
        assert (term(plan, "policy weights").bytes, term(plan, "gradients").bytes,
                term(plan, "optimizer states").bytes) == (w, g, o), stage


def test_offload_moves_terms_to_host():
    n = P.count_params(SHAPE).total
    hw = P.Hardware(gpus_per_node=4, nodes=2, gpu_memory=80 * GiB)
    on_gpu = P.make_plan(cfg_with("deepspeed.zero_stage=3"), hw, shape=SHAPE)
    off = P.make_plan(cfg_with("deepspeed.zero_stage=3", "deepspeed.offload_optimizer=true",
                               "deepspeed.offload_param=true"), hw, shape=SHAPE)
    assert {t.name: t.where for t in off.terms}["optimizer states (offloaded)"] == "host"
    assert term(off, "optimizer states").bytes == 12 * n // 8
    assert term(off, "gradients (fp32").bytes == 4 * n // 8 and term(off, "gradients (fp32").where == "host"
    assert term(off, "policy weights").where == "host"
    moved = 2 * n // 8 + 2 * n // 8 + 12 * n // 8  # weights, bf16 grads, optimizer states leave the GPU
    assert on_gpu.gpu("update") - off.gpu("update") == moved
    assert off.host_per_node - on_gpu.host_per_node == 4 * (2 * n // 8 + 4 * n // 8 + 12 * n // 8)


def test_frozen_copies_and_trainable_count():
    n = P.count_params(SHAPE).total
    hw = P.Hardware(gpus_per_node=2, nodes=1, gpu_memory=80 * GiB)
    plan = P.make_plan(cfg_with("deepspeed.zero_stage=3", "algorithm.kl_coef=0.01", "spark.enabled=true",
                                "spark.recycle_from=initial", "model.freeze_vision=true"), hw, shape=SHAPE)
    assert term(plan, "KL reference").bytes == 2 * n // 2
    assert term(plan, "initial model").bytes == 2 * n // 2
    assert plan.trainable == n - P.count_params(SHAPE).vision_tower
    assert term(plan, "optimizer states").bytes == 12 * plan.trainable // 2
    assert not [t for t in plan.terms if t.name.startswith("activations, vision")]  # frozen tower: none kept


def test_activation_terms_by_hand():
    hw = P.Hardware(gpus_per_node=1, nodes=1, gpu_memory=80 * GiB)
    b, seq, h, q, kv, inter, layers = 2, 80, 100, 100, 50, 300, 3
    per_tl = 2 * (4 * h + 2 * q + 2 * kv + 4 * inter) + 4 * 4  # 3816 B per token per layer
    assert per_tl == 3816
    full = P.make_plan(cfg_with(), hw, shape=SHAPE)
    assert term(full, "activations, language").bytes == b * seq * layers * per_tl + b * seq * h * 4
    ckpt = P.make_plan(cfg_with("model.gradient_checkpointing=true"), hw, shape=SHAPE)
    expected = b * seq * layers * 2 * h + 2 * b * seq * per_tl + b * seq * h * 4
    assert term(ckpt, "activations, language").bytes == expected
    # vision: 3136 px / 28^2 = 4 image tokens = 16 patches per image, one image per row
    patches, vh, vi = b * 4 * 4, 20, 40
    per_pv = 2 * (4 * vh + 2 * vh + 2 * vh + 4 * vi) + 4 * 2
    assert term(full, "activations, vision").bytes == patches * 2 * per_pv
    assert term(ckpt, "activations, vision").bytes == patches * 2 * 2 * vh + 2 * patches * per_pv


def test_image_tokens_from_pixel_budget():
    assert P.image_tokens(P.KNOWN_SHAPES["Qwen/Qwen2.5-VL-7B-Instruct"], 1048576) == 1337  # / 28^2
    assert P.image_tokens(P.KNOWN_SHAPES["Qwen/Qwen3-VL-8B-Instruct"], 1048576) == 1024  # / 32^2


def test_logprob_chunk_follows_the_trainer_rule():
    pytest.importorskip("torch")
    from spark_vl.algorithms import logprobs

    assert P.MAX_CHUNK_ELEMENTS == logprobs.MAX_CHUNK_ELEMENTS
    for batch, vocab in ((1, 151936), (8, 152064), (3, 1000)):
        assert P.chunk_length(batch, vocab) == logprobs.chunk_length(batch, vocab)
    hw = P.Hardware(gpus_per_node=1, nodes=1, gpu_memory=80 * GiB)
    plan = P.make_plan(cfg_with(), hw, shape=SHAPE)
    # chunk = 2^25 // (2 x 1000) = 16777 positions > the 80-token sequence: the whole sequence is one chunk
    assert term(plan, "log-prob chunk").bytes == 2 * 80 * 1000 * 16


def test_rollout_terms_hf_and_vllm():
    hw = P.Hardware(gpus_per_node=2, nodes=1, gpu_memory=80 * GiB)
    plan = P.make_plan(cfg_with(), hw, shape=SHAPE)
    kv_per_token = 2 * 3 * 50 * 2
    assert term(plan, "HF generate: KV cache").bytes == 4 * 80 * kv_per_token  # 4 sequences per call
    assert term(plan, "HF generate: prefill").bytes == 4 * 50 * (3 * 300 + 2 * 100) * 2
    v = P.make_plan(cfg_with("rollout.backend=vllm", "rollout.vllm_gpu_memory_utilization=0.5"), hw, shape=SHAPE)
    assert term(v, "vLLM engine, awake").bytes == 40 * GiB and term(v, "vLLM engine, awake").phase == "rollout"
    assert v.gpu("rollout") - v.gpu("update") > 30 * GiB  # asleep (level 2) during the update
    lvl1 = P.make_plan(cfg_with("rollout.backend=vllm"), hw, shape=SHAPE, vllm_sleep_level=1)
    assert term(lvl1, "vLLM weights while asleep").where == "host"
    awake = P.make_plan(cfg_with("rollout.backend=vllm", "rollout.vllm_enable_sleep=false"), hw, shape=SHAPE)
    assert awake.gpu("update") - v.gpu("update") == int(0.5 * 80 * GiB)


def test_verdict_suggestions_and_summary():
    cfg = load_config(ROOT / "configs/qwen2_5_vl/7b_grpo.yaml", ["deepspeed.zero_stage=0"])
    hw = P.Hardware(gpus_per_node=8, nodes=1, gpu_memory=80 * GiB)
    plan = P.make_plan(cfg, hw)
    assert not plan.fits and "DOES NOT FIT" in P.verdict(plan)
    tips = P.suggestions(cfg, hw)
    assert any(tip.startswith("deepspeed.zero_stage=") for tip in tips), tips
    line, fits = P.plan_summary(cfg, world_size=8)
    assert not fits and line.startswith("memory plan: DOES NOT FIT") and "\n" not in line
    line, fits = P.plan_summary(load_config(ROOT / "configs/qwen2_5_vl/7b_grpo.yaml"), world_size=8)
    assert fits and line.startswith("memory plan: FITS")
    line, fits = P.plan_summary(cfg_with("model.path=/nonexistent/model"), world_size=1)
    assert fits and "skipped" in line


def test_parse_size():
    assert P.parse_size("80GiB") == 80 * GiB == P.parse_size("80G") == P.parse_size("80")
    assert P.parse_size("141GB") == 141 * 10**9
    assert P.parse_size("1.5TiB") == int(1.5 * 2**40)


def test_cli_prints_tables_and_verdict():
    proc = subprocess.run([sys.executable, "-m", "spark_vl.cli", "plan", "--config", "configs/qwen2_5_vl/7b_grpo.yaml",
                           "--gpus-per-node", "8", "--gpu-memory", "80GiB", "--host-memory", "1TiB"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "per GPU" in proc.stdout and "per host" in proc.stdout and "verdict: FITS" in proc.stdout
    small = subprocess.run([sys.executable, "-m", "spark_vl.cli", "plan", "--config",
                            "configs/qwen2_5_vl/7b_grpo.yaml", "--gpu-memory", "24GiB"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert small.returncode == 1 and "DOES NOT FIT" in small.stdout and "what to change" in small.stdout


def intended_world_size(path: Path) -> tuple[int, int]:
    """(GPUs per node, nodes) from a preset's header: `--gpus-per-node N --nodes M` on its plan line, or
    torchrun's `--nproc_per_node N [--nnodes M]`; 1 x 1 for presets without one (the CPU demos)."""
    head = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    per = re.search(r"--(?:gpus-per-node|nproc_per_node)[ =](\d+)", head)
    nodes = re.search(r"--(?:nodes|nnodes)[ =](\d+)", head)
    return (int(per.group(1)) if per else 1), (int(nodes.group(1)) if nodes else 1)


def test_every_preset_validates_for_its_intended_world_size():
    presets = sorted((ROOT / "configs").rglob("*.yaml"))
    assert len(presets) >= 12
    for path in presets:
        per, nodes = intended_world_size(path)
        cfg = load_config(path)
        validate(cfg, per * nodes)


@pytest.mark.parametrize("preset", ["qwen2_5_vl/32b_grpo.yaml", "qwen2_5_vl/32b_spark.yaml", "qwen3_vl/32b_grpo.yaml",
                                    "qwen3_vl/32b_spark.yaml", "qwen3_vl/8b_spark.yaml"])
def test_new_presets_fit_their_hardware_and_carry_the_plan(preset):
    path = ROOT / "configs" / preset
    text = path.read_text()
    per, nodes = intended_world_size(path)
    gpu = re.search(r"--gpu-memory (\S+)", text).group(1)
    host = re.search(r"--host-memory ([0-9.]+[A-Za-z]*)", text).group(1)
    plan = P.make_plan(load_config(path), P.Hardware(per, nodes, P.parse_size(gpu), P.parse_size(host)))
    assert plan.fits, P.verdict(plan)
    assert P.verdict(plan) in text  # the pasted plan output is current


def test_plan_does_not_import_torch():
    code = ("import sys; import spark_vl.plan as P; from spark_vl.config import load_config; "
            "P.plan_summary(load_config('configs/qwen2_5_vl/7b_grpo.yaml'), 8); assert 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
