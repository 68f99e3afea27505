"""Typed configuration: one dataclass per section, YAML presets, `a.b=c` overrides, validated once.

    cfg = load_config("configs/demo_cpu.yaml", ["trainer.rollout_steps=5", "algorithm.kl_coef=0.001"])

Loading rejects unknown keys (with the closest valid key), values of the wrong type and impossible
combinations (batch sizes that do not divide), raising `ConfigError`; the CLI turns that into exit
code 2 without a traceback. `derived(cfg, world_size)` computes the quantities users otherwise get
wrong (gradient accumulation, optimizer steps per rollout step, total optimizer steps).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

UnionType = type(int | None)  # the type of `X | Y` annotations (types.UnionType, without importing `types`)


class ConfigError(ValueError):
    """A configuration problem the user must fix; the message names the key and the value."""


@dataclass
class ModelConfig:
    path: str = "builtin:tiny-qwen2.5-vl"  # local dir, hub id, or builtin:tiny-qwen2.5-vl / builtin:tiny-qwen3-vl
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"  # auto = bf16 on GPU, fp32 on CPU
    min_pixels: int = 3136  # image resize bounds handed to the processor (pixels per image)
    max_pixels: int = 1048576
    gradient_checkpointing: bool = False
    freeze_vision: bool = False  # freeze the vision tower (patch embed + blocks)
    freeze_projector: bool = False  # freeze the vision-to-text merger
    attn_implementation: str = "sdpa"
    seed: int = 0  # seed of the builtin tiny models' random weights


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=lambda: ["builtin:synthetic"])  # prepared dirs, files or builtin:*
    train_weights: list[float] = field(default_factory=list)  # mixture weights, one per train entry (empty = by size)
    # Expert data of the supervised / CHORD term (same spec forms as train; its rows with a `solution` are used). Empty
    # = the rows of `train` that have a `solution`.
    sft: list[str] = field(default_factory=list)
    val: list[str] = field(default_factory=list)  # held-out data; empty + builtin train = a held-out synthetic split
    val_size: int = 64  # held-out prompts scored by the trainer's evaluation
    synthetic_size: int = 2000  # rows of builtin:synthetic
    synthetic_tasks: list[str] = field(default_factory=lambda: ["count", "color", "compare"])
    synthetic_image_size: int = 56
    format_template: str = "boxed"  # a file in spark_vl/templates/format/ (name) or a path to a template file
    system_prompt: str | None = None
    max_prompt_length: int = 1024  # tokens INCLUDING image tokens; longer prompts are dropped and counted
    shuffle: bool = True
    seed: int = 0


@dataclass
class RolloutConfig:
    backend: str = "hf"  # hf, vllm (colocated, spark_vl/rollout/vllm.py) or a "package.module:Class" engine
    samples_per_prompt: int = 4  # n rollouts per prompt (the GRPO group size)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = disabled
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    repetition_penalty: float = 1.0
    generation_batch_size: int = 64  # sequences per generate() call (prompts x samples)
    # backend vllm: share of TOTAL GPU memory the engine claims while awake (weights + KV cache)
    vllm_gpu_memory_utilization: float = 0.5
    vllm_tensor_parallel_size: int = 1  # ranks per vLLM engine (within a node; must divide the world size)
    vllm_enable_sleep: bool = True  # free the engine's GPU memory during the update (GPU only; no-op on CPU)
    vllm_sleep_level: int = 2  # 1 = weights to host RAM (a copy per rank), 2 = drop them (re-pushed at wake)
    vllm_max_model_len: int | None = None  # prompt + response tokens; None = the model's maximum
    vllm_max_images_per_prompt: int = 4
    vllm_weight_bucket_mb: int = 1024  # weight push: parameters gathered and sent per bucket (cut at layers)
    vllm_enforce_eager: bool = False  # no CUDA graphs (always eager on CPU)


@dataclass
class RewardConfig:
    name: str = "math"  # a built-in reward name or "package.module:function"
    extract: Literal["first", "last"] = "last"  # which final answer counts when several are given
    format: Literal["none", "boxed", "think_boxed", "answer_tag"] = "boxed"  # what the format part checks
    format_weight: float = 0.0  # overall = (1 - w) * accuracy + w * format
    timeout_s: float = 2.0  # hard limit for one symbolic comparison
    num_workers: int = 0  # verifier process pool size; 0 = score in-process (still time-limited)
    judge_weight: float = 0.0  # rows WITHOUT a verifiable gold: overall = judge_weight x P(Yes) of the judge
    # --- RewardDance-style generative reward (docs/REWARD_JUDGE.md): P(Yes) of a judge model at the verdict token.
    judge_mix: float = 0.0  # policy rows WITH a gold: overall = (1 - judge_mix) x verifier + judge_mix x P(Yes)
    # The judge: "" = the policy itself (its own P(Yes), changing as it trains); else a SEPARATE frozen checkpoint
    # (local dir, hub id, builtin:*; a builtin judge is built with model.seed + 1), same dtype and ZeRO stage.
    judge_model: str = ""
    judge_form: Literal["pointwise", "pairwise"] = "pointwise"  # pairwise: against the row's reference answer
    # A file stem in spark_vl/templates/judge/ or a path; "" = judge/<judge_form>.txt (the policy judging
    # pointwise keeps SPARK's own first pointwise_yes_no template, the wording SPARK trains it on).
    judge_template: str = ""
    judge_batch_size: int = 32  # judge prompts per forward pass
    judge_cache: int = 100000  # (prompt uid, answer) -> P(Yes) entries kept for a separate judge (0 = off)
    extract_fallback: bool = True  # no box/<answer> tag: also read "the answer is ..." and the last line
    format_single_answer: bool = True  # the format part requires exactly one final answer (box or tag)
    # DAPO's soft overlong punishment, added to the reward: 0 up to rollout.max_new_tokens - overlong_buffer
    # tokens, then falling linearly to -overlong_penalty at max_new_tokens. 0 = off.
    overlong_buffer: int = 0
    overlong_penalty: float = 1.0


@dataclass
class AlgorithmConfig:
    advantage: str = "grpo"  # grpo | dr_grpo | rloo | reinforce_pp_baseline | spo | "package.module:function"
    norm_by_std: bool = True  # divide by the group std (GRPO); False = Dr.GRPO's mean-only advantage
    std_unbiased: bool = True  # torch.std (n - 1), as OpenRLHF/SPARK code; False = population std (paper)
    adv_eps: float = 1e-6
    policy_loss: str = "ppo_clip"  # ppo_clip | gspo | "package.module:function"
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: float | None = None  # e.g. 3.0; None = off
    kl_coef: float = 0.0  # 0 = no reference model is built
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    loss_agg: Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = (
        "token-mean"
    )
    loss_agg_norm: int | None = None  # constant of seq-mean-token-sum-norm; None = rollout.max_new_tokens
    ppo_epochs: int = 1  # passes over each rollout batch
    # One epoch and one optimizer step per phase: the update's own forward pass, detached, gives the old log-probs
    # (ratio exactly 1, as a separate pass would give up to rounding) and that pass is skipped. Used only where it is
    # exact (Derived.reuse_old_logprobs; never with active dropout). false = always run the separate pass.
    reuse_old_logprobs: bool = True
    sft_coef: float = 0.0  # sft_schedule=constant: weight of the supervised NLL term on expert solutions (0 = off)
    sft_prompts_per_step: int = 0  # expert samples (rows with a `solution`) mixed into each step, all ranks
    # --- CHORD (arXiv 2508.11408, docs/CHORD.md): loss = (1 - mu) * RL + mu * SFT, mu scheduled over optimizer steps.
    sft_schedule: Literal["constant", "chord"] = "constant"  # constant = RL + sft_coef * SFT (chord ignores sft_coef)
    chord_mu_peak: float = 0.9  # mu after the warm-up (CHORD-mu: 0.9)
    chord_mu_valley: float = 0.05  # mu after the decay, the floor (CHORD-mu: 0.05)
    chord_mu_warmup: int = 0  # optimizer steps of linear warm-up from mu = 0 to the peak (0 = start at the peak)
    chord_mu_decay: int = 200  # optimizer steps of cosine decay from the peak to the valley (0 = valley at once)
    chord_phi: bool = False  # weight each expert token's NLL by phi = p (1 - p), detached (CHORD-phi); any schedule
    # Expert share of each step as CHORD's expert_data_ratio: experts / (experts + rollout sequences); replaces
    # sft_prompts_per_step with ceil(r x rollout sequences / (1 - r)) (Derived.expert_sequences_per_step). 0 = off.
    expert_ratio: float = 0.0
    entropy_coef: float = 0.0
    # SPO (advantage: spo; algorithms/spo.py): one response per prompt against a per-prompt success-rate tracker.
    spo_rho: Literal["kl", "constant"] = "kl"  # forgetting factor: from the policy's drift on the prompt, or fixed
    spo_rho_min: float = 0.875  # lower clip of the KL-adaptive rho (the constant with spo_rho: constant)
    spo_init_samples: int = 4  # samples of a first-visit prompt that set its prior (0 = Jeffreys 0.5 / 0.5)
    spo_pass_rate: str = "passrate_7b"  # a `difficulty` field holding an offline pass rate: prior without sampling
    spo_prioritize: bool = True  # draw prompts with weight sqrt(v (1 - v)) + 0.05 instead of epoch order
    # DAPO's dynamic sampling: drop policy groups whose rewards are all equal and draw more prompts until the step
    # holds prompts_per_step informative groups, at most this many extra rounds (then the step runs short).
    dynamic_sampling: bool = False
    dynamic_sampling_max_rounds: int = 3
    # Importance-sampling correction of the sampler/trainer gap, rho = exp(old_logp - sampler_logp) per token
    # (spark_vl/algorithms/correction.py): token = min(rho, cap) [TIS], mask = drop tokens with rho outside
    # [1/cap, cap], sequence = min(prod rho, cap), sequence_mask = drop sequences whose geometric-mean rho is outside
    # [1/cap, cap]. auto = token for rollout.backend=vllm, none otherwise (hf samples with the trained module).
    is_correction: Literal["auto", "none", "token", "mask", "sequence", "sequence_mask"] = "auto"
    is_cap: float = 2.0


@dataclass
class SparkConfig:
    enabled: bool = False  # false = plain GRPO
    schedule: Literal["alternate", "mixed"] = "alternate"
    judgment_cap: int = 32  # judgment prompts kept per policy step
    reflection_cap: int = 32  # reflection prompts kept per policy step
    pointwise_prob: float = 0.3  # mixed groups: pointwise with this probability, else pairwise
    reflection_cot_fraction: float = 0.5  # share of reflection prompts that show the full reasoning
    reflection_from_correct: float = 0.0  # share of reflection prompts built from correct rollouts
    pointwise_ab_prob: float = 0.5  # pointwise prompts phrased as A/B (A = correct) instead of Yes/No
    pointwise_correct_prob: float = 0.5  # mixed groups, pointwise: probability of showing a correct answer
    pairwise_a_prob: float = 0.5  # pairwise: probability that the correct answer sits in slot A
    judge_input: Literal["answer", "cot"] = "answer"  # judge prompts show the final answer or the full response
    # Our addition, off = reference: equal numbers of correct- and wrong-answer pointwise items per step (surplus
    # Yes items show another group's rejected answer, surplus No items the gold; docs/SPARK.md §1).
    balance_pointwise: bool = False
    mixed_share: float = 0.5  # schedule=mixed: share of each step's prompts that are auxiliary
    max_age: int = 4  # auxiliary prompts older than this many policy steps are dropped
    samples_per_prompt: int | None = None  # rollouts per auxiliary prompt; None = rollout.samples_per_prompt
    templates: str | None = None  # a folder of template files replacing spark_vl/templates/spark
    # Ablations of the paper (docs/SPARK.md): GRPO reward-only = train_on_policy false + recycle_from initial;
    # GRPO policy & reward without co-evolution = recycle_from initial.
    train_on_policy: bool = True  # false: policy prompts are rolled out and recycled but not trained on
    recycle_from: Literal["policy", "initial"] = "policy"  # initial: auxiliary data from the frozen initial model
    # Warm start for models that never write a verdict (the tiny CPU demo): this many auxiliary prompts per
    # alternate phase also get the supervised term (algorithm.sft_coef) on "\boxed{label}". Reference: 0.
    aux_sft_prompts: int = 0


@dataclass
class TrainerConfig:
    output_dir: str = "runs/spark-vl"
    rollout_steps: int = 20  # policy rollout steps (each: sample, rollout, reward, update)
    prompts_per_step: int = 8  # global prompts per rollout step
    sequences_per_optimizer_step: int = 32  # global sequences per optimizer step (the PPO mini-batch)
    micro_batch_size: int = 4  # sequences per device per forward/backward
    # Log-prob and update forwards compute each distinct prompt of a micro-batch once, its rows' responses attending
    # to its keys and values (`SharedPrompts`): the same values up to float rounding, not bitwise; saves the
    # repeated prompt tokens (most of a VLM row when the image is large). Not with model.gradient_checkpointing
    # or flash_attention_2 (refused at load time).
    share_prompts: bool = False
    # Score rewards in a thread while the step's old/reference log-prob passes run (they read the rollouts, never the
    # rewards: the same values). Only with the builtin verifier (reward.name=math), no judge model and no dynamic
    # sampling (which drops groups by their rewards), and where the passes leave a core free (on a GPU, or fewer
    # torch threads than cores: on a CPU they fill, the scorer would only take turns with them).
    overlap_reward: bool = True
    lr: float = 1e-6
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_ratio: float = 0.03  # share of total optimizer steps spent in linear warm-up
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 1.0
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    save_every: int = 0  # rollout steps between checkpoints; 0 = only at the end
    keep_last: int = 2  # checkpoints kept
    eval_every: int = 0  # rollout steps between held-out evaluations; 0 = only before and after training
    eval_max_new_tokens: int | None = None  # None = rollout.max_new_tokens
    # Benchmarks scored alongside the held-out set (same schedule), as "name=path": a benchmark adapter name
    # (mathvista=/data/MathVista) or any other name for a prepared dataset; eval.limit items each,
    # eval.protocol, logged as bench/<name>/<metric>.
    eval_benchmarks: list[str] = field(default_factory=list)
    max_bad_steps: int = 3  # consecutive steps with a non-finite loss or gradient norm before the run aborts
    overwrite: bool = False  # start fresh in an output_dir holding an earlier run: delete its checkpoints and logs


@dataclass
class DeepSpeedConfig:
    zero_stage: Literal[0, 1, 2, 3] = 0
    offload_optimizer: bool = False
    offload_param: bool = False
    config_file: str | None = None  # a DeepSpeed JSON whose entries override the generated ones


@dataclass
class EvalConfig:
    benchmarks: list[str] = field(default_factory=list)
    protocol: str = "spark"
    max_new_tokens: int = 2048
    repetition_penalty: float = 1.05
    batch_size: int = 16
    limit: int | None = None  # items per benchmark (None = all)
    self_reflect: bool = False
    max_rounds: int = 2
    judge_input: Literal["answer", "cot"] = "answer"  # what the self-reflection judge sees (SPARK: answer only)
    best_of_n: int = 0  # >1 adds a best-of-N row picked by the model's own P(yes); 0 = off
    best_of_n_temperature: float = 1.0  # sampling temperature of the N candidates
    reward_both_orders: bool = False  # reward benchmarks: also judge the flipped order (position consistency)
    cache_dir: str | None = None  # generation cache; None = <out>/cache


@dataclass
class LoggingConfig:
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "spark-vl"
    log_samples_every: int = 10  # rollout steps between dumps of example rollouts to samples.jsonl (0 = never)
    progress: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


# ---------------------------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a validated `Config` from a YAML preset (optional) and `a.b=c` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(raw).__name__}")
    for item in overrides or []:
        _apply_override(raw, item)
    cfg = _build(Config, raw, "")
    validate(cfg)
    return cfg


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    dotted, _, text = item.partition("=")
    keys = dotted.strip().split(".")
    if len(keys) < 2 or not all(keys):
        raise ConfigError(f"override {item!r} must name a section and a key, e.g. trainer.lr=1e-6")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {key} is not a section")
    node[keys[-1]] = value


# Names users bring from other frameworks (OpenRLHF, verl, EasyR1, TRL) -> ours; used for "did you mean".
SYNONYMS = {
    "learning_rate": "lr",
    "n_samples_per_prompt": "samples_per_prompt",
    "num_generations": "samples_per_prompt",
    "rollout_batch_size": "prompts_per_step",
    "train_batch_size": "sequences_per_optimizer_step",
    "mini_batch_size": "sequences_per_optimizer_step",
    "micro_train_batch_size": "micro_batch_size",
    "init_kl_coef": "kl_coef",
    "kl_loss_coef": "kl_coef",
    "eps_clip": "clip_low",
    "clip_ratio_low": "clip_low",
    "clip_ratio_high": "clip_high",
    "max_epochs": "ppo_epochs",
    "generate_max_len": "max_new_tokens",
    "max_response_length": "max_new_tokens",
    "max_prompt_length": "max_prompt_length",
    "num_episodes": "rollout_steps",
    "max_steps": "rollout_steps",
    "save_steps": "save_every",
    "warmup": "warmup_ratio",
}


def suggest(key: str, names: list[str]) -> str | None:
    """The valid key closest to `key`: direct typo, or a known synonym (or a typo of one)."""
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return close[0]
    for alias in difflib.get_close_matches(key, list(SYNONYMS), n=3, cutoff=0.75):
        if SYNONYMS[alias] in names:
            return SYNONYMS[alias]
    return None


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            close = suggest(str(key), names)
            hint = f"; did you mean {prefix}{close}?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key {prefix}{key}{hint}")
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, raw[name] if raw[name] is not None else {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(raw[name], hint, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against the annotation `hint`, converting only where it is lossless (int -> float)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: cannot be {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single item is accepted for a list (e.g. data.train=path)
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value!r} must be a list")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} must be an integer")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string; users write it that way
            try:
                return float(value.strip())
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r} must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            raise ConfigError(f"{key}={value!r} must be a string")
        return value
    return value


# Advantages computed from a prompt's group of rollouts: with one rollout per prompt they are 0 (or NaN).
GROUP_ADVANTAGES = ("grpo", "dr_grpo", "rloo", "reinforce_pp_baseline")


def _numbers(node: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(key, value) of every float in the config, list items included."""
    out = []
    for f in dataclasses.fields(node):
        value, key = getattr(node, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out += _numbers(value, f"{key}.")
        elif isinstance(value, float):
            out.append((key, value))
        elif isinstance(value, list):
            out += [(f"{key}[{i}]", v) for i, v in enumerate(value) if isinstance(v, float)]
    return out


def validate(cfg: Config, world_size: int = 1) -> None:
    """Reject impossible values and batch sizes that do not divide, naming the key and the value."""
    t, r, a = cfg.trainer, cfg.rollout, cfg.algorithm
    for key, value in _numbers(cfg):
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value} must be a finite number")
    if t.share_prompts and cfg.model.gradient_checkpointing:
        raise ConfigError("trainer.share_prompts=true needs the prompts' keys and values kept through the trunk, "
                          "which model.gradient_checkpointing=true drops: set one of them false")
    if t.share_prompts and cfg.model.attn_implementation not in ("sdpa", "eager"):
        raise ConfigError(f"trainer.share_prompts=true gives each response a [rows, 1, response, prompt + response] "
                          f"attention mask, which model.attn_implementation={cfg.model.attn_implementation} does not "
                          "take: use sdpa or eager, or set trainer.share_prompts=false")
    if cfg.reward.timeout_s <= 0:
        raise ConfigError(f"reward.timeout_s={cfg.reward.timeout_s} must be > 0 (the symbolic comparison's limit)")
    if cfg.reward.num_workers < 0:
        raise ConfigError(f"reward.num_workers={cfg.reward.num_workers} must be >= 0 (0 = score in-process)")
    group_sizes = [("rollout.samples_per_prompt", r.samples_per_prompt)]
    if cfg.spark.enabled and cfg.spark.samples_per_prompt is not None:
        group_sizes.append(("spark.samples_per_prompt", cfg.spark.samples_per_prompt))
    for key, n in group_sizes:
        if n == 1 and a.advantage in GROUP_ADVANTAGES:
            raise ConfigError(f"{key}=1 with algorithm.advantage={a.advantage}: a group-relative advantage needs at "
                              "least 2 rollouts per prompt (with 1 every advantage is 0 and nothing is learned); "
                              "for one response per prompt use algorithm.advantage=spo")
    positive = {
        "trainer.rollout_steps": t.rollout_steps,
        "trainer.prompts_per_step": t.prompts_per_step,
        "trainer.sequences_per_optimizer_step": t.sequences_per_optimizer_step,
        "trainer.micro_batch_size": t.micro_batch_size,
        "rollout.samples_per_prompt": r.samples_per_prompt,
        "rollout.max_new_tokens": r.max_new_tokens,
        "rollout.generation_batch_size": r.generation_batch_size,
        "algorithm.ppo_epochs": a.ppo_epochs,
        "data.max_prompt_length": cfg.data.max_prompt_length,
        "trainer.keep_last": t.keep_last,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}={value} must be positive")
    if t.lr <= 0:
        raise ConfigError(f"trainer.lr={t.lr} must be positive")
    if not 0.0 <= t.min_lr_ratio <= 1.0:
        raise ConfigError(f"trainer.min_lr_ratio={t.min_lr_ratio} must lie in [0, 1]")
    if not 0.0 <= t.warmup_ratio < 1.0:
        raise ConfigError(f"trainer.warmup_ratio={t.warmup_ratio} must lie in [0, 1)")
    if len(t.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in t.adam_betas):
        raise ConfigError(f"trainer.adam_betas={t.adam_betas} must be two numbers in [0, 1)")
    if r.temperature < 0:
        raise ConfigError(f"rollout.temperature={r.temperature} must be >= 0 (0 = greedy)")
    if not 0.0 < r.top_p <= 1.0:
        raise ConfigError(f"rollout.top_p={r.top_p} must lie in (0, 1]")
    if a.clip_low < 0 or a.clip_high < 0:
        raise ConfigError(f"algorithm.clip_low/clip_high ({a.clip_low}, {a.clip_high}) must be >= 0")
    if a.dual_clip is not None and a.dual_clip <= 1.0:
        raise ConfigError(f"algorithm.dual_clip={a.dual_clip} must be > 1 (or null to disable)")
    if a.kl_coef < 0:
        raise ConfigError(f"algorithm.kl_coef={a.kl_coef} must be >= 0")
    if a.advantage == "spo" and cfg.spark.enabled:
        raise ConfigError("algorithm.advantage=spo with spark.enabled=true is not supported: SPARK's auxiliary "
                          "prompts are built once, so a per-prompt value tracker has no history for them")
    if a.advantage == "spo" and a.dynamic_sampling:
        raise ConfigError("algorithm.dynamic_sampling filters groups of equal rewards; SPO samples one response per "
                          "prompt and has none: turn one of them off")
    if not 0.0 < a.spo_rho_min < 1.0:
        raise ConfigError(f"algorithm.spo_rho_min={a.spo_rho_min} must lie in (0, 1)")
    if a.spo_init_samples < 0 or a.dynamic_sampling_max_rounds < 0:
        raise ConfigError("algorithm.spo_init_samples and algorithm.dynamic_sampling_max_rounds must be >= 0")
    if not 0 <= cfg.reward.overlong_buffer < r.max_new_tokens:
        raise ConfigError(f"reward.overlong_buffer={cfg.reward.overlong_buffer} must lie in [0, rollout.max_new_tokens"
                          f"={r.max_new_tokens})")
    if a.policy_loss == "gspo" and (a.loss_agg != "seq-mean-token-mean" or max(a.clip_low, a.clip_high) > 0.01):
        # GSPO clips a sequence-level ratio (a geometric mean of token ratios), which stays within ~1e-3 of 1: a
        # token-level range such as 0.2 never binds, and token-mean weights long sequences more than the paper.
        raise ConfigError(
            f"algorithm.policy_loss=gspo with algorithm.clip_low={a.clip_low}, algorithm.clip_high={a.clip_high}, "
            f"algorithm.loss_agg={a.loss_agg}: GSPO uses its own sequence-level settings; set "
            "algorithm.clip_low=3e-4 algorithm.clip_high=4e-4 algorithm.loss_agg=seq-mean-token-mean (GSPO paper)"
        )
    if a.sft_coef < 0 or a.sft_prompts_per_step < 0:
        raise ConfigError("algorithm.sft_coef and algorithm.sft_prompts_per_step must be >= 0")
    _validate_chord(a)
    if not 0.0 <= cfg.reward.judge_mix <= 1.0 or cfg.reward.judge_weight < 0:
        raise ConfigError(f"reward.judge_mix={cfg.reward.judge_mix} must lie in [0, 1] and reward.judge_weight="
                          f"{cfg.reward.judge_weight} be >= 0")
    if cfg.reward.judge_batch_size <= 0 or cfg.reward.judge_cache < 0:
        raise ConfigError(f"reward.judge_batch_size={cfg.reward.judge_batch_size} must be positive and "
                          f"reward.judge_cache={cfg.reward.judge_cache} >= 0")
    if cfg.reward.judge_model and cfg.reward.judge_weight <= 0 and cfg.reward.judge_mix <= 0:
        raise ConfigError(f"reward.judge_model={cfg.reward.judge_model!r} is never used: set reward.judge_weight "
                          "(rows without a gold) and/or reward.judge_mix (rows with a gold) > 0")
    if not 0.0 <= cfg.reward.format_weight <= 1.0:
        raise ConfigError(f"reward.format_weight={cfg.reward.format_weight} must lie in [0, 1]")
    if cfg.model.min_pixels <= 0 or cfg.model.max_pixels < cfg.model.min_pixels:
        raise ConfigError(
            f"model.min_pixels={cfg.model.min_pixels} / model.max_pixels={cfg.model.max_pixels}: "
            "need 0 < min_pixels <= max_pixels"
        )
    if cfg.data.train_weights and len(cfg.data.train_weights) != len(cfg.data.train):
        raise ConfigError(
            f"data.train_weights has {len(cfg.data.train_weights)} entries but data.train has {len(cfg.data.train)}"
        )
    if any(w < 0 for w in cfg.data.train_weights):
        raise ConfigError(f"data.train_weights={cfg.data.train_weights} must be >= 0")
    for key in ("pointwise_prob", "reflection_cot_fraction", "reflection_from_correct", "mixed_share",
                "pointwise_ab_prob", "pointwise_correct_prob", "pairwise_a_prob"):
        value = getattr(cfg.spark, key)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"spark.{key}={value} must lie in [0, 1]")
    rollout_sequences = t.prompts_per_step * r.samples_per_prompt
    if rollout_sequences % t.sequences_per_optimizer_step:
        raise ConfigError(
            f"trainer.sequences_per_optimizer_step={t.sequences_per_optimizer_step} must divide the sequences of "
            f"one rollout step (trainer.prompts_per_step x rollout.samples_per_prompt = {rollout_sequences})"
        )
    if cfg.spark.enabled and cfg.spark.schedule == "alternate":
        aux_n = cfg.spark.samples_per_prompt or r.samples_per_prompt
        aux_sequences = t.prompts_per_step * aux_n
        if aux_sequences % t.sequences_per_optimizer_step:
            raise ConfigError(
                f"trainer.sequences_per_optimizer_step={t.sequences_per_optimizer_step} must divide the sequences of "
                f"one SPARK auxiliary phase (trainer.prompts_per_step x spark.samples_per_prompt = {aux_sequences})"
            )
    if cfg.spark.enabled and cfg.spark.schedule == "mixed":
        if cfg.spark.samples_per_prompt not in (None, r.samples_per_prompt):
            raise ConfigError(
                f"spark.samples_per_prompt={cfg.spark.samples_per_prompt} differs from rollout.samples_per_prompt="
                f"{r.samples_per_prompt}, but under spark.schedule=mixed auxiliary prompts share the policy batch "
                "(one group size per step); leave spark.samples_per_prompt null or use schedule=alternate"
            )
    if r.backend not in ("hf", "vllm") and ":" not in r.backend:
        raise ConfigError(f"rollout.backend={r.backend!r} is not a backend; choose hf, vllm or package.module:Class")
    if a.is_cap <= 1.0:
        raise ConfigError(f"algorithm.is_cap={a.is_cap} must be > 1")
    if r.backend == "vllm":
        if not 0.0 < r.vllm_gpu_memory_utilization <= 1.0:
            raise ConfigError(f"rollout.vllm_gpu_memory_utilization={r.vllm_gpu_memory_utilization} must lie in "
                              "(0, 1]")
        if r.vllm_sleep_level not in (1, 2):
            raise ConfigError(f"rollout.vllm_sleep_level={r.vllm_sleep_level} must be 1 or 2")
        tp = r.vllm_tensor_parallel_size
        if tp < 1 or (world_size > 1 and world_size % tp):  # world size 1 = loading, before the launch is known
            raise ConfigError(f"rollout.vllm_tensor_parallel_size={tp} must divide the world size {world_size}")
        if cfg.spark.enabled and cfg.spark.recycle_from == "initial":
            raise ConfigError("spark.recycle_from=initial needs a second rollout engine for the frozen initial "
                              "model; with rollout.backend=vllm that is a second vLLM engine per process, which is "
                              "not supported: use rollout.backend=hf for this ablation")
    per_rank = t.micro_batch_size * world_size
    if t.sequences_per_optimizer_step % per_rank:
        raise ConfigError(
            f"trainer.sequences_per_optimizer_step={t.sequences_per_optimizer_step} must be a multiple of "
            f"trainer.micro_batch_size x world size = {t.micro_batch_size} x {world_size} = {per_rank}"
        )
    if t.prompts_per_step % world_size:
        raise ConfigError(
            f"trainer.prompts_per_step={t.prompts_per_step} must be a multiple of the world size {world_size}"
        )


def _validate_chord(a: AlgorithmConfig) -> None:
    """CHORD's schedule and the expert share (algorithm.sft_schedule, chord_*, expert_ratio)."""
    if not 0.0 <= a.expert_ratio < 1.0:
        raise ConfigError(f"algorithm.expert_ratio={a.expert_ratio} must lie in [0, 1)")
    if a.expert_ratio > 0 and a.sft_prompts_per_step > 0:
        raise ConfigError(
            f"algorithm.expert_ratio={a.expert_ratio} and algorithm.sft_prompts_per_step={a.sft_prompts_per_step} "
            "both set the experts per step; set one of them (the other to 0)"
        )
    for key in ("chord_mu_peak", "chord_mu_valley"):
        if not 0.0 <= getattr(a, key) <= 1.0:
            raise ConfigError(f"algorithm.{key}={getattr(a, key)} must lie in [0, 1]")
    if a.chord_mu_warmup < 0 or a.chord_mu_decay < 0:
        raise ConfigError(
            f"algorithm.chord_mu_warmup={a.chord_mu_warmup} / chord_mu_decay={a.chord_mu_decay} must be >= 0"
        )
    if a.sft_schedule == "chord" and a.sft_prompts_per_step == 0 and a.expert_ratio == 0:
        raise ConfigError(
            "algorithm.sft_schedule=chord mixes expert rows into every step: set algorithm.expert_ratio (e.g. 0.2) "
            "or algorithm.sft_prompts_per_step > 0"
        )


def expert_sequences(cfg: Config) -> int:
    """Expert sequences per rollout step, all ranks: algorithm.sft_prompts_per_step, or with algorithm.expert_ratio
    r, CHORD's ceil(r x total) where total = experts + rollout sequences, i.e. ceil(r x rollout / (1 - r))."""
    a = cfg.algorithm
    if a.expert_ratio <= 0:
        return a.sft_prompts_per_step
    rollout = cfg.trainer.prompts_per_step * cfg.rollout.samples_per_prompt
    return math.ceil(round(a.expert_ratio * rollout / (1.0 - a.expert_ratio), 9))


@dataclass
class Derived:
    """All batch arithmetic, computed once from the config; printed at start and saved with the resolved config.

    Policy phase: `prompts_per_step` prompts x `rollout.samples_per_prompt` rollouts, dealt into optimizer steps
    of `sequences_per_optimizer_step` sequences, `ppo_epochs` times. SPARK's alternate auxiliary phase trains
    `aux_prompts_per_phase` recycled prompts x `aux_samples_per_prompt` the same way; under `mixed` they take
    `aux_prompts_per_phase` of the policy batch instead. The recycling caps are per step over all ranks.
    """

    world_size: int
    sequences_per_rollout_step: int  # policy sequences per step, all ranks
    grad_accum_steps: int  # micro-batches per optimizer step per rank
    optimizer_steps_per_rollout_step: int  # policy phase (0 when spark.train_on_policy is false)
    aux_prompts_per_phase: int  # SPARK: alternate = one auxiliary phase; mixed = share of each batch; else 0
    aux_samples_per_prompt: int
    aux_optimizer_steps_per_phase: int  # alternate only (mixed trains auxiliary prompts in the policy steps)
    judgment_cap: int  # judgment items built per step, all ranks
    reflection_cap: int
    expert_sequences_per_step: int  # expert solutions mixed into each policy step, all ranks (sft / CHORD)
    total_optimizer_steps: int  # planned: the LR schedule spans these
    warmup_steps: int
    is_correction: str = "none"  # algorithm.is_correction with "auto" resolved for the rollout backend
    # The old log-probs come from the update's own forward pass (algorithm.reuse_old_logprobs, where exact)
    reuse_old_logprobs: bool = False  # policy phase
    aux_reuse_old_logprobs: bool = False  # SPARK's alternate auxiliary phase


def derived(cfg: Config, world_size: int = 1) -> Derived:
    """Derived batch arithmetic (see `Derived`). The total counts an auxiliary phase after every policy step
    under `alternate`, so the LR schedule spans both phases (the reference code's counts policy steps only)."""
    t, s = cfg.trainer, cfg.spark
    n = cfg.rollout.samples_per_prompt
    sequences = t.prompts_per_step * n
    policy_steps = cfg.algorithm.ppo_epochs * sequences // t.sequences_per_optimizer_step
    if not s.enabled or s.train_on_policy:
        trained_policy_steps = policy_steps
    else:
        trained_policy_steps = 0  # reward-only ablation: policy prompts are rolled out and recycled, not trained
    aux_prompts, aux_n, aux_steps = 0, n, 0
    judgment_cap, reflection_cap = s.judgment_cap, s.reflection_cap
    if s.enabled and s.schedule == "alternate":
        aux_prompts, aux_n = t.prompts_per_step, s.samples_per_prompt or n
        aux_steps = cfg.algorithm.ppo_epochs * aux_prompts * aux_n // t.sequences_per_optimizer_step
    elif s.enabled:  # mixed: build no more per step than the next step's batch takes, in the caps' proportion
        aux_prompts = math.floor(s.mixed_share * t.prompts_per_step)
        both = max(1, s.judgment_cap + s.reflection_cap)
        if both > aux_prompts:
            judgment_cap = round(aux_prompts * s.judgment_cap / both)
            reflection_cap = aux_prompts - judgment_cap
    total = (trained_policy_steps + aux_steps) * t.rollout_steps
    return Derived(
        world_size=world_size,
        sequences_per_rollout_step=sequences,
        grad_accum_steps=t.sequences_per_optimizer_step // (t.micro_batch_size * world_size),
        optimizer_steps_per_rollout_step=trained_policy_steps,
        aux_prompts_per_phase=aux_prompts,
        aux_samples_per_prompt=aux_n,
        aux_optimizer_steps_per_phase=aux_steps,
        judgment_cap=judgment_cap,
        reflection_cap=reflection_cap,
        expert_sequences_per_step=expert_sequences(cfg),
        total_optimizer_steps=total,
        warmup_steps=int(round(t.warmup_ratio * total)),
        is_correction=resolve_is_correction(cfg),
        reuse_old_logprobs=on_policy_update(cfg, trained_policy_steps),
        aux_reuse_old_logprobs=on_policy_update(cfg, aux_steps),
    )


def on_policy_update(cfg: Config, optimizer_steps: int) -> bool:
    """A phase whose single optimizer step is its only pass over its sequences: every micro-batch's forward runs
    with the weights that sampled them, so the old log-probs equal the update's own (detached)."""
    return cfg.algorithm.reuse_old_logprobs and cfg.algorithm.ppo_epochs == 1 and optimizer_steps == 1


def resolve_is_correction(cfg: Config) -> str:
    """`algorithm.is_correction` with auto resolved: token-level TIS for vLLM rollouts (a different engine
    samples), none for hf (the trained module samples; the ratio is 1 up to numerics)."""
    mode = cfg.algorithm.is_correction
    if mode != "auto":
        return mode
    return "token" if cfg.rollout.backend == "vllm" else "none"


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
