"""Built-in tiny Qwen-VL models for tests and the CPU demo: real transformers classes, random weights.

`build_tiny("tiny-qwen2.5-vl", seed)` returns (model, processor) without touching the network:
  - a byte-level BPE tokenizer trained in-process on a small corpus (maths, the synthetic tasks'
    vocabulary, our prompt templates) plus the Qwen special tokens, with a Qwen-style chat template;
  - the stock image processor / video processor / processor classes of the model family;
  - a config small enough that forward, backward and generate take milliseconds.
The same seed gives bit-identical weights and the same tokenizer.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

TINY_MODELS = ("tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-qwen2.5-vl-hd64", "tiny-qwen3-vl-hd64")
# The -hd64 variants have attention heads of 64 dimensions (text hidden 128, 2 heads), the smallest head size
# vLLM's CPU attention accepts; they are what the tests marked `vllm` run on.
HEAD_DIM_64 = "-hd64"

# Qwen2-VL style chat template: images become <|vision_start|><|image_pad|><|vision_end|>, which the
# processor expands to one pad token per merged patch.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: enough to give short, stable token sequences."""
    words = (
        "How many shapes are in the image? What colour is the shape? Which is larger, the left or the right "
        "shape? Count the circles squares triangles. red green blue yellow purple orange black white left "
        "right top bottom circle square triangle angle area triangle degrees cm the answer is "
        "Think step by step, then put the final answer in \\boxed{}. Please reason step by step. "
        "Is this answer correct? Yes No A B (A) (B) Answer: correct incorrect Which answer is correct? "
        "Here is a solution that may be wrong. Check it and give the right final answer. "
        "You are a helpful assistant. Question: Proposed answer: Solution: Verdict: <think> </think> "
        "<answer> </answer> \\frac{1}{2} \\sqrt{3} \\pi x = y + 1 - 2 * 3 / 4 ^ 5 ( ) [ ] , . : ; ! ?"
    )
    lines = [words]
    lines += [f"\\boxed{{{i}}} The answer is {i}. There are {i} shapes." for i in range(101)]
    lines += [f"{a} + {b} = {a + b}" for a in range(12) for b in range(12)]
    lines += ["\\boxed{Yes}", "\\boxed{No}", "\\boxed{A}", "\\boxed{B}", "\\boxed{red}", "\\boxed{blue}"]
    # Template files shipped with the package are part of the corpus, so prompts tokenize compactly.
    root = Path(__file__).resolve().parent.parent / "templates"
    if root.is_dir():
        lines += [p.read_text() for p in sorted(root.rglob("*.txt"))]
    return lines


@functools.lru_cache(maxsize=4)
def _tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok.to_str()


def build_tokenizer(vocab_size: int = 512):
    """A PreTrainedTokenizerFast with the Qwen special tokens and chat template (deterministic)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_processor(family: str, min_pixels: int = 3136, max_pixels: int = 12544):
    """The real Qwen processor class of `family` around the in-process tokenizer."""
    family = family.removesuffix(HEAD_DIM_64)
    tokenizer = build_tokenizer()
    if family == "tiny-qwen2.5-vl":
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
        video_processor = Qwen2VLVideoProcessor()
        processor = Qwen2_5_VLProcessor(
            image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor
        )
    elif family == "tiny-qwen3-vl":
        from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

        image_processor = Qwen2VLImageProcessor(
            min_pixels=min_pixels, max_pixels=max_pixels, patch_size=16, merge_size=2, temporal_patch_size=2
        )
        video_processor = Qwen3VLVideoProcessor()
        processor = Qwen3VLProcessor(
            image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor
        )
    else:
        raise ValueError(f"unknown builtin model {family!r}; known: {', '.join(TINY_MODELS)}")
    processor.chat_template = CHAT_TEMPLATE
    return processor


def build_config(family: str, tokenizer):
    wide = family.endswith(HEAD_DIM_64)
    family = family.removesuffix(HEAD_DIM_64)
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in [
        ("image_token_id", "<|image_pad|>"),
        ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"),
        ("vision_end_token_id", "<|vision_end|>"),
    ]}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    # mrope_section splits head_dim / 2 rotary frequencies over (time, height, width)
    mrope = [2, 3, 3]
    if wide:
        text.update(hidden_size=128, intermediate_size=256, num_attention_heads=2, num_key_value_heads=2)
        mrope = [8, 12, 12]
    if family == "tiny-qwen2.5-vl":
        from transformers import Qwen2_5_VLConfig

        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope}
        vision = dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=text["hidden_size"],
            patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1],
        )
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    from transformers import Qwen3VLConfig

    text["head_dim"] = 64 if wide else 16
    text["rope_parameters"] = {
        "rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope, "mrope_interleaved": True,
    }
    vision = dict(
        depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=text["hidden_size"],
        patch_size=16,
        spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=256, deepstack_visual_indexes=[0],
    )
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)


def build_tiny(name: str, seed: int = 0, min_pixels: int = 3136, max_pixels: int = 12544):
    """(model, processor) of a builtin tiny model; `name` is "tiny-qwen2.5-vl" or "tiny-qwen3-vl"."""
    from transformers import AutoModelForImageTextToText

    if name not in TINY_MODELS:
        raise ValueError(f"unknown builtin model {name!r}; known: {', '.join('builtin:' + m for m in TINY_MODELS)}")
    processor = build_processor(name, min_pixels, max_pixels)
    config = build_config(name, processor.tokenizer)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return model, processor
