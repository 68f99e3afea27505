"""The transformers.generate rollout backend (reference implementation, CPU and single-GPU path).

Each prompt is encoded once (`spark_vl.models.encode`), repeated n times, left-padded and generated in
chunks of `generation_batch_size` sequences. Sampling warpers (temperature, top-k, top-p)
are applied by our own processor list so that the recorder, which runs last, sees the exact
distribution each token was drawn from: behaviour log-probs cost one [batch, vocab] buffer, not the
[batch, steps, vocab] of `output_scores`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from spark_vl.config import RolloutConfig
from spark_vl.models.encode import EncodedPrompt, PromptEncoder, pad_prompts
from spark_vl.types import Prompt, Rollout, RolloutGroup, SamplingParams


class _LogprobRecorder(LogitsProcessor):
    """Records log p(token_t) of every sampled token from the final (warped) scores.

    At step t it receives the ids including token t-1, so it reads that token's log-prob from the
    distribution stored at step t-1; `finish` collects the last one after generation ends.
    """

    def __init__(self, prompt_len: int):
        self.prompt_len = prompt_len
        self.prev: torch.Tensor | None = None  # [B, V] log-softmax of the previous step
        self.logprobs: list[torch.Tensor] = []  # one [B] tensor per generated token

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prev is not None:
            self.logprobs.append(self.prev.gather(1, input_ids[:, -1:]).squeeze(1))
        self.prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        if self.prev is not None and sequences.shape[1] > self.prompt_len + len(self.logprobs):
            self.logprobs.append(self.prev.gather(1, sequences[:, -1:]).squeeze(1))
        if not self.logprobs:
            return torch.zeros(sequences.shape[0], 0)
        return torch.stack(self.logprobs, dim=1).cpu()


VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


def vision_token_ids(tokenizer) -> list[int]:
    """Ids of the vision placeholder tokens the tokenizer knows."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
    return sorted({i for i in ids if i is not None and i != tokenizer.unk_token_id})


class HFEngine:
    def __init__(self, model, processor, cfg: RolloutConfig | None = None, synced_gpus: bool = False):
        self.model = model
        self.processor = processor
        self.generation_batch_size = (cfg or RolloutConfig()).generation_batch_size
        self.synced_gpus = synced_gpus
        tok = processor.tokenizer
        self.stop_ids = sorted({tok.eos_token_id, tok.convert_tokens_to_ids("<|endoftext|>")} - {None})
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.stop_ids[0]
        # A response must never contain vision placeholders: the processor would count them as image slots
        # and the update would fail with "image features and image tokens do not match".
        self.suppress_ids = vision_token_ids(tok)

    # Weight sync and sleep/wake only matter for an engine that holds its own copy of the weights.
    def sync_weights(self, model) -> None:
        self.model = model

    def sleep(self) -> None:
        pass

    def wake(self) -> None:
        pass

    @torch.no_grad()
    def generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[RolloutGroup]:
        encode = PromptEncoder(self.processor)  # each prompt is processed once, not n times
        jobs = [p for p in prompts for _ in range(n)]
        rollouts: dict[int, list[Rollout]] = {id(p): [] for p in prompts}
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        size = max(1, self.generation_batch_size)
        chunks = [jobs[start : start + size] for start in range(0, len(jobs), size)]
        for chunk in chunks:
            for prompt, rollout in zip(chunk, self._generate_chunk(chunk, [encode(p) for p in chunk], sampling)):
                rollouts[id(prompt)].append(rollout)
        if self.synced_gpus:
            # ZeRO-3: every generate() call is a collective (parameters are gathered per layer), so a rank with
            # fewer chunks joins the others' remaining calls with a one-token filler whose output is discarded.
            for _ in range(max_over_ranks(len(chunks), next(self.model.parameters()).device) - len(chunks)):
                filler = EncodedPrompt([self.pad_id], [0], None, None)
                self._run_generate([filler], replace(sampling, max_new_tokens=1))
        return [RolloutGroup(prompt=p, rollouts=rollouts[id(p)]) for p in prompts]

    def _generate_chunk(self, prompts: list[Prompt], encoded: list[EncodedPrompt],
                        sampling: SamplingParams) -> list[Rollout]:
        tok = self.processor.tokenizer
        out, prompt_len, logprobs = self._run_generate(encoded, sampling)
        sequences = out.sequences.cpu()
        results = []
        for i, prompt in enumerate(prompts):
            ids = sequences[i, prompt_len:].tolist()
            finish = "length"
            for j, t in enumerate(ids):
                if t in self.stop_ids:
                    ids, finish = ids[: j + 1], "stop"
                    break
            text = tok.decode(ids, skip_special_tokens=True)
            if finish == "length" and sampling.stop and any(s in text for s in sampling.stop):
                finish = "stop"
            results.append(
                Rollout(
                    prompt=prompt,
                    token_ids=ids,
                    text=text,
                    logprobs=logprobs[i, : len(ids)].tolist(),
                    finish_reason=finish,
                )
            )
        return results

    def _run_generate(self, encoded: list[EncodedPrompt], sampling: SamplingParams):
        """transformers.generate on a left-padded batch; returns (output, prompt length, sampled log-probs)."""
        tok = self.processor.tokenizer
        device = next(self.model.parameters()).device
        enc = {k: v.to(device) for k, v in pad_prompts(encoded, self.pad_id, side="left").items()}
        if "pixel_values" in enc:
            enc["pixel_values"] = enc["pixel_values"].to(next(self.model.parameters()).dtype)
        prompt_len = enc["input_ids"].shape[1]
        recorder = _LogprobRecorder(prompt_len)
        processors = LogitsProcessorList()
        if not sampling.greedy:
            if sampling.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_k > 0:
                processors.append(TopKLogitsWarper(sampling.top_k))
            if sampling.top_p < 1.0:
                processors.append(TopPLogitsWarper(sampling.top_p))
        processors.append(recorder)
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(
                **enc,
                do_sample=not sampling.greedy,
                temperature=1.0,
                top_k=None,
                top_p=1.0,
                max_new_tokens=sampling.max_new_tokens,
                repetition_penalty=sampling.repetition_penalty,
                logits_processor=processors,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                suppress_tokens=self.suppress_ids,
                stop_strings=sampling.stop or None,
                tokenizer=tok if sampling.stop else None,
                synced_gpus=self.synced_gpus,
                return_dict_in_generate=True,
                use_cache=True,
            )
        finally:
            self.model.train(was_training)
        return out, prompt_len, recorder.finish(out.sequences)


def max_over_ranks(value: int, device: torch.device) -> int:
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.long, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())
