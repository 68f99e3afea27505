"""torchrun --nproc_per_node 2 tests/vllm/_zero3_sync.py OUT_DIR  (run by test_vllm_distributed.py)

Each rank: the tiny model under DeepSpeed ZeRO-3 (gloo), a colocated vLLM engine (external_launcher), rank-specific
prompts; generate -> one optimizer step -> sync_weights -> generate again, and the sampled tokens' log-probs
compared with the trainer's (a ZeRO-3 forward). Writes OUT_DIR/rank<k>.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(out: Path) -> None:
    import deepspeed
    import torch

    from spark_vl.algorithms.logprobs import sequence_logprobs
    from spark_vl.config import RolloutConfig
    from spark_vl.data.prompts import build_prompt
    from spark_vl.data.synthetic import synthetic_samples
    from spark_vl.models.encode import encode_prompt
    from spark_vl.models.tiny import build_tiny
    from spark_vl.rollout.vllm import VLLMEngine
    from spark_vl.trainer.batch import Sequence, collate
    from spark_vl.types import SamplingParams
    from tests.vllm._helpers import trainer_logprobs

    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    model, processor = build_tiny("tiny-qwen2.5-vl-hd64", seed=0)
    ds = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, "train_batch_size": 4 * world,
          "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True, "steps_per_print": 10**9}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ds_engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds)
    module = ds_engine.module
    partitioned = all(p.numel() == 0 or p.numel() < p.ds_numel for p in module.parameters())
    engine = VLLMEngine(module, processor, RolloutConfig(backend="vllm", vllm_max_model_len=512,
                                                         vllm_weight_bucket_mb=0.25))
    prompts = [build_prompt(s) for s in synthetic_samples(2 * world, seed=5)][rank::world]  # each rank its own
    sampling = SamplingParams(temperature=1.0, max_new_tokens=8)

    def gap(groups) -> float:
        return max(abs(a - b) for a, b in trainer_logprobs(module, processor, groups, 1.0, engine.suppress_ids))

    groups = engine.generate(prompts, 2, sampling)
    before = gap(groups)
    seqs = [Sequence(encode_prompt(g.prompt, processor), r.token_ids) for g in groups for r in g.rollouts]
    lp, _ = sequence_logprobs(module, collate(seqs, processor.tokenizer.pad_token_id))
    ds_engine.backward(-lp.mean())
    ds_engine.step()
    stale = gap(engine.generate(prompts, 2, sampling))
    engine.sync_weights(module)
    after = gap(engine.generate(prompts, 2, sampling))
    result = {"rank": rank, "world": world, "partitioned": partitioned, "gap_initial": before,
              "gap_stale": stale, "gap_after_sync": after, "buckets": len(engine.last_buckets),
              "tensors": sum(map(len, engine.last_buckets)),
              "hf_params": len(list(module.named_parameters(remove_duplicate=False))),
              "prompt_uids": [p.uid for p in prompts]}
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    torch.distributed.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
