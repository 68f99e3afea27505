"""GPU check: bf16 training steps of random-weight Qwen2.5-VL at 3B and 7B shape on one CUDA GPU, ZeRO-0/2/3 on one
rank with gradient checkpointing, against the memory plan (spark_vl.plan). Fits in 10 minutes on an H100/H200.

    bash scripts/gpu_check.sh                       # installs carried wheels from .whl/, then runs this
    python scripts/gpu_check.py --dry-run           # CPU: the tiny builtin shape, one step per phase (tests use it)

Each phase runs in its own process (clean CUDA memory and DeepSpeed state): build the model from the built-in shape
(transformers' Qwen2_5_VLForConditionalGeneration from a config, bf16, random weights), wrap it with the project's
DeepSpeed config (spark_vl.trainer.distributed.deepspeed_config), take `--steps` optimizer steps on random tokens with
one image per row, the loss from the trainer's chunked log-probs (spark_vl.algorithms.logprobs.sequence_logprobs).
Reported per phase: peak memory of the set-up (model + engine) and of the steps
(torch.cuda.max_memory_allocated, reset between the two), tokens/s and MFU = 6 N tokens / time / 989e12 (H100/H200
dense bf16 peak; recomputation not counted), next to the plan's update-phase estimate without its 2 GiB runtime
reserve (max_memory_allocated does not see the CUDA context). On one rank ZeRO-2/3 shard over a world of 1, so they
save nothing here; 7B's fp32 Adam states (12 B/param, 93 GiB) are therefore offloaded to the CPU for those phases.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # gpu_check.sh puts it on PYTHONPATH (the tree is not installed there)

PEAK_FLOPS = 989e12  # H100/H200 SXM dense bf16
GiB = 2**30
# name: (shape, micro-batch, sequence length, image tokens per row)
SIZES = {"3b": ("Qwen/Qwen2.5-VL-3B-Instruct", 4, 2048, 256), "7b": ("Qwen/Qwen2.5-VL-7B-Instruct", 2, 2048, 256),
         "tiny": ("builtin:tiny-qwen2.5-vl", 2, 64, 16)}
# (size, ZeRO stage, offload optimizer)
PHASES = [("3b", 0, False), ("3b", 2, False), ("3b", 3, False), ("7b", 0, False), ("7b", 2, True), ("7b", 3, True)]
DRY_PHASES = [("tiny", 0, False), ("tiny", 2, False), ("tiny", 3, False)]


def hf_config(shape):
    from transformers import Qwen2_5_VLConfig

    text = dict(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
                max_position_embeddings=32768, tie_word_embeddings=shape.tied_embeddings,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                 "mrope_section": [16, 24, 24] if shape.head_dim == 128 else [2, 3, 3]})
    vision = dict(depth=shape.vision_depth, hidden_size=shape.vision_hidden,
                  intermediate_size=shape.vision_intermediate, num_heads=shape.vision_heads,
                  out_hidden_size=shape.hidden, patch_size=shape.patch,
                  spatial_merge_size=shape.merge, temporal_patch_size=shape.temporal_patch, window_size=112,
                  fullatt_block_indexes=[7, 15, 23, 31] if shape.vision_depth == 32 else [shape.vision_depth - 1])
    ids = dict(image_token_id=shape.vocab - 4, video_token_id=shape.vocab - 3, vision_start_token_id=shape.vocab - 2,
               vision_end_token_id=shape.vocab - 1)
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=shape.tied_embeddings, **ids)


def phase_config(size: str, stage: int, offload: bool, steps: int):
    """The project Config this phase corresponds to (for the DeepSpeed config and the plan)."""
    from spark_vl.config import load_config

    name, mb, seq, img = SIZES[size]
    return load_config(None, [
        f"model.path={name}", "model.gradient_checkpointing=true", f"model.max_pixels={img * 28 * 28}",
        f"data.max_prompt_length={seq // 2}", f"rollout.max_new_tokens={seq - seq // 2}",
        f"trainer.micro_batch_size={mb}", f"trainer.prompts_per_step={mb}", "rollout.samples_per_prompt=1",
        "algorithm.advantage=spo",  # one sequence per prompt (the check times the update, not the estimator)
        f"trainer.sequences_per_optimizer_step={mb}", f"trainer.rollout_steps={steps}", "algorithm.kl_coef=0",
        f"deepspeed.zero_stage={stage}", f"deepspeed.offload_optimizer={str(offload).lower()}",
        "rollout.generation_batch_size=1",
    ])


def plan_estimate(cfg, gpu_memory: int) -> tuple[int, bool]:
    """The plan's update-phase bytes without the runtime reserve, and whether the whole plan fits."""
    from spark_vl import plan as P

    p = P.make_plan(cfg, P.Hardware(1, 1, gpu_memory))
    return p.gpu("update") - P.RUNTIME_RESERVE, p.gpu("update") <= gpu_memory


def make_batch(shape, mb: int, seq: int, img: int, device, dtype):
    """Random tokens with `img` image-pad tokens per row and matching random pixel patches (one image per row)."""
    from types import SimpleNamespace

    import torch

    cfg = hf_config(shape)
    side = int(round(img**0.5)) * shape.merge  # patch grid (h = w) of an image with `img` merged tokens
    img = (side // shape.merge) ** 2
    ids = torch.randint(0, shape.vocab - 8, (mb, seq), device=device)
    ids[:, 1] = cfg.vision_start_token_id
    ids[:, 2 : 2 + img] = cfg.image_token_id
    ids[:, 2 + img] = cfg.vision_end_token_id
    mm = torch.zeros_like(ids)
    mm[:, 2 : 2 + img] = 1
    patch_dim = 3 * shape.temporal_patch * shape.patch**2
    pixels = torch.randn(mb * side * side, patch_dim, device=device, dtype=dtype)
    grid = torch.tensor([[1, side, side]] * mb, device=device)
    # the fields sequence_logprobs reads from a TrainBatch: every position scored, no shared images or prompts,
    # positions computed by the model
    return SimpleNamespace(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
                           image_grid_thw=grid, mm_token_type_ids=mm, response_mask=torch.ones(mb, seq - 1),
                           position_ids=None, image_index=None, vision_grid_thw=None, shared=None)


def run_phase(size: str, stage: int, offload: bool, steps: int, device_name: str) -> dict:
    import deepspeed
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from spark_vl import plan as P
    from spark_vl.algorithms.logprobs import sequence_logprobs
    from spark_vl.config import derived
    from spark_vl.trainer.distributed import deepspeed_config, init_distributed

    name, mb, seq, img = SIZES[size]
    shape = P.shape_from_config(name)
    cfg = phase_config(size, stage, offload, steps)
    dist = init_distributed(device_name)
    cuda = dist.device.type == "cuda"
    dtype = torch.bfloat16
    total = torch.cuda.get_device_properties(0).total_memory if cuda else 80 * GiB
    estimate, fits = plan_estimate(cfg, total)
    result = dict(size=size, stage=stage, offload=offload, micro_batch=mb, seq=seq,
                  params=P.count_params(shape).total, plan_gib=estimate / GiB, plan_fits=fits)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    torch.manual_seed(0)
    with torch.device(dist.device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(hf_config(shape), dtype=dtype,
                                                                  attn_implementation="sdpa")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    ds = deepspeed_config(cfg, derived(cfg, 1), dtype)
    ds["zero_force_ds_cpu_optimizer"] = False  # a torch AdamW steps the offloaded fp32 partition on the CPU
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=cuda and not offload)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds)
    batch = make_batch(shape, mb, seq, img, dist.device, dtype)
    result["setup_s"] = time.perf_counter() - t0
    if cuda:
        torch.cuda.synchronize()
        result["setup_peak_gib"] = torch.cuda.max_memory_allocated() / GiB
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        logp, _ = sequence_logprobs(engine.module, batch)
        loss = -logp.float().mean()
        engine.backward(loss)
        engine.step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    step_s = min(times[1:]) if len(times) > 1 else times[0]  # the first step warms up kernels and allocator
    tokens = mb * seq
    result.update(step_s=step_s, tokens_per_s=tokens / step_s,
                  mfu=6 * result["params"] * tokens / step_s / PEAK_FLOPS, loss=float(loss))
    if cuda:
        result["step_peak_gib"] = torch.cuda.max_memory_allocated() / GiB
    return result


def table(results: list[dict], device: str) -> str:
    lines = [f"GPU check on {device} ({time.strftime('%Y-%m-%d')}): random-weight Qwen2.5-VL, bf16, gradient "
             "checkpointing, one rank, one image per row; MFU = 6 N tokens / time / 989 TFLOPS.", "",
             "| shape | ZeRO | optimizer | micro-batch x seq | set-up peak GiB | step peak GiB | plan GiB "
             "| step s | tokens/s | MFU |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        head = (f"| {r['size']} ({r.get('params', 0) / 1e9:.2f} B) | {r['stage']} | "
                f"{'CPU (offload)' if r['offload'] else 'GPU'} | {r.get('micro_batch')} x {r.get('seq')} |")
        if "error" in r:
            lines.append(f"{head} {r['error']} | | {r.get('plan_gib', 0):.1f} | | | |")
            continue
        setup, step = (f"{r[k]:.1f}" if k in r else "n/a" for k in ("setup_peak_gib", "step_peak_gib"))
        lines.append(f"{head} {setup} | {step} | {r['plan_gib']:.1f} | "
                     f"{r['step_s']:.2f} | {r['tokens_per_s']:,.0f} | {100 * r['mfu']:.1f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shape, one step per phase")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--phases", default=None, help="comma list of size:stage[:offload], e.g. 3b:2,7b:3:offload")
    parser.add_argument("--budget-s", type=float, default=540.0, help="skip phases once this much time is spent")
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)  # internal: run one phase, print JSON
    args = parser.parse_args(argv)
    device = "cpu" if args.dry_run else "cuda"
    if args.phase:
        size, stage, offload = args.phase.split(":")
        print("RESULT " + json.dumps(run_phase(size, int(stage), offload == "1", args.steps, device)), flush=True)
        return 0
    if args.phases:
        phases = [(p.split(":")[0], int(p.split(":")[1]), p.endswith(":offload")) for p in args.phases.split(",")]
    else:
        phases = DRY_PHASES if args.dry_run else PHASES
    steps = 1 if args.dry_run else args.steps
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device (use --dry-run on CPU)", file=sys.stderr)
            return 2
        device_name = torch.cuda.get_device_name(0)
        total = torch.cuda.get_device_properties(0).total_memory
    else:
        device_name, total = "CPU (dry run)", 80 * GiB
    start, results = time.perf_counter(), []
    for size, stage, offload in phases:
        cfg = phase_config(size, stage, offload, steps)
        estimate, fits = plan_estimate(cfg, total)
        base = dict(size=size, stage=stage, offload=offload, micro_batch=SIZES[size][1], seq=SIZES[size][2],
                    plan_gib=estimate / GiB)
        left = args.budget_s - (time.perf_counter() - start)
        if left < 45:
            results.append({**base, "error": "skipped (time budget)"})
            continue
        if not fits:
            results.append({**base, "error": "skipped: the plan says it does not fit"})
            continue
        env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(key, None)
        cmd = [sys.executable, __file__, "--phase", f"{size}:{stage}:{int(offload)}", "--steps", str(steps)]
        if args.dry_run:
            cmd.append("--dry-run")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=left, env=env)
        except subprocess.TimeoutExpired:
            results.append({**base, "error": "timed out"})
            continue
        found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if found:
            results.append(json.loads(found[-1][len("RESULT "):]))
        else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            oom = any("OutOfMemory" in line or "out of memory" in line for line in tail)
            results.append({**base, "error": "out of memory" if oom else f"failed: {tail[-1][:80] if tail else '?'}"})
        print(json.dumps(results[-1]), flush=True)
    text = table(results, device_name)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if all("error" not in r or r["error"].startswith("skipped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
