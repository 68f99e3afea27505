"""A fake `vllm.LLM` with the API surface spark_vl.rollout.vllm uses, recording every call.

It expands each image placeholder into `tokens_per_image` tokens (what real vLLM reports back), samples
deterministic tokens with made-up log-probs, and has an in-process worker whose model answers
`reload_weights` / `load_weights` like vLLM's: it consumes the (HF name, tensor) iterator and returns the vLLM
parameter names it set (all of them, unless told to forget some).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class FakeSamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 16
    repetition_penalty: float = 1.0
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None
    seed: int | None = None
    logprobs: int | None = None
    logit_bias: dict[int, float] | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True


@dataclass
class Logprob:
    logprob: float


@dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[Completion]


@dataclass
class FakeVLLMModel:
    """vLLM's model inside the worker: receives (HF name, tensor) pairs."""

    param_names: list[str]
    forget: set[str] = field(default_factory=set)  # vLLM parameters the fake pretends were not in the push
    received: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)

    def named_parameters(self):
        return [(n, None) for n in self.param_names]

    def load_weights(self, weights):
        for name, tensor in weights:
            self.received.append((name, tuple(tensor.shape)))
        return set(self.param_names) - self.forget


class FakeRunner:
    def __init__(self, model: FakeVLLMModel, log: list):
        self.model, self.log = model, log

    def get_model(self):
        return self.model

    def reload_weights(self, weights_iterator=None, is_checkpoint_format=True):
        self.log.append(("reload_weights", is_checkpoint_format))
        self.model.load_weights(weights_iterator)


class FakeWorker:
    def __init__(self, runner: FakeRunner):
        self.model_runner = runner


class FakeEngineCore:
    def __init__(self, log: list):
        self.log = log

    def reset_encoder_cache(self):
        self.log.append(("reset_encoder_cache",))


class FakeLLM:
    def __init__(self, image_token_id: int, tokens_per_image: int, param_names: list[str], eos_id: int,
                 response: list[int] | None = None):
        self.calls: list[tuple] = []
        self.image_token_id = image_token_id
        self.tokens_per_image = tokens_per_image
        self.model = FakeVLLMModel(list(param_names))
        self.worker = FakeWorker(FakeRunner(self.model, self.calls))
        self.llm_engine = FakeEngineCore(self.calls)
        self.eos_id = eos_id
        self.response = response or [11, 12, 13]
        self.requests: list[dict] = []
        self.sampling: list[FakeSamplingParams] = []

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]

    # -- the LLM API ---------------------------------------------------------------------------------------------
    def generate(self, requests, sampling_params, use_tqdm=True):
        self.calls.append(("generate", len(requests)))
        self.requests.extend(requests)
        self.sampling.append(sampling_params)
        outs = []
        for r in requests:
            expanded = []
            for t in r["prompt_token_ids"]:
                expanded.extend([t] * (self.tokens_per_image if t == self.image_token_id else 1))
            completions = []
            for k in range(sampling_params.n):
                ids = [t + k for t in self.response] + [self.eos_id]  # sample k differs; stops on EOS
                logprobs = [{t: Logprob(-0.5 - 0.1 * j)} for j, t in enumerate(ids)]
                completions.append(Completion(ids, logprobs, "stop"))
            outs.append(RequestOutput(expanded, completions))
        return outs

    def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        self.calls.append(("collective_rpc",))
        return [method(self.worker, *args, **(kwargs or {}))]

    def sleep(self, level=1):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tuple(tags or ())))
        return True

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))
        return True

    def reset_mm_cache(self):
        self.calls.append(("reset_mm_cache",))
