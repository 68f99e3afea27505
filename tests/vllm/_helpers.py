"""Shared by the real-vLLM tests and their torchrun scripts."""

from __future__ import annotations

import torch

from spark_vl.models.encode import encode_prompt
from spark_vl.trainer.batch import Sequence, collate


def trainer_logprobs(model, processor, groups, temperature, banned):
    """The trainer's log-probs of the sampled tokens: log_softmax(logits / T) with the engine's banned vision tokens
    removed from the distribution (as vLLM's logit bias does), paired with vLLM's."""
    pairs = []
    for g in groups:
        enc = encode_prompt(g.prompt, processor)
        for r in g.rollouts:
            assert len(r.logprobs) == len(r.token_ids) > 0
            batch = collate([Sequence(enc, r.token_ids)], processor.tokenizer.pad_token_id)
            with torch.no_grad():
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                               mm_token_type_ids=batch.mm_token_type_ids, pixel_values=batch.pixel_values,
                               image_grid_thw=batch.image_grid_thw).logits[0].float()
            logits[:, banned] = float("-inf")
            logp = torch.log_softmax(logits / temperature, dim=-1)
            p = len(enc.input_ids)
            ours = logp[p - 1 : p - 1 + len(r.token_ids)].gather(1, torch.tensor(r.token_ids)[:, None])[:, 0]
            pairs += list(zip(ours.tolist(), r.logprobs))
    return pairs
