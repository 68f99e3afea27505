"""Generative scores (RewardDance-style): the policy's own probability of the positive verdict, from logits.

    p = judge_score(model, processor, prompts, answers)                       # P(Yes): answer i is correct
    p = judge_score(model, processor, prompts, pairs, form="pairwise")        # P(A): pairs[i][0] is the correct one
    p = judge_score(model, processor, prompts, pairs, form="reference",       # P(Yes): pairs[i][0] matches the
                    template=load_judge_template("", "pairwise"))             #   reference answer pairs[i][1]

How the verdict position is made well defined: the judge prompt is built from a SPARK judge template
(pointwise_yes_no or pairwise; by default the first by file name) around the policy prompt's question and images,
and the assistant turn is pre-filled with `prefix` (default `\\boxed{`), i.e. the model answers verdict-first with
no reasoning. The two verdict strings ("Yes"/"No" or "A"/"B") are tokenized together with the whole text; the input
ends at the last token the two continuations share and the score compares the logits of their first differing
token. This stays exact when a tokenizer merges the verdict into the prefix (e.g. a "{Yes" token): the prefix is
then cut before that token instead of after it.

Normalisation: softmax over the two verdict tokens only, p = exp(l_pos) / (exp(l_pos) + exp(l_neg)). A full-vocabulary
probability would leak mass to formatting variants ("yes", " Yes", "\\text") and make scores incomparable across
prompts; the two-way form is what RewardDance-style rewards and calibration metrics need.

All prompts go through ONE batched forward pass (left padded, no sampling; `batch_size` splits it only when
asked). The processor's `mm_token_type_ids` is passed to the forward: Qwen3-VL requires it and Qwen2.5-VL
computes different rope positions without it.

Uses: best-of-N selection at inference (`best_of_n`), calibration metrics (`judge_metrics(p_yes=...)`), and a
soft reward for samples without a verifiable gold (weight `reward.judge_weight`, see docs/SPARK.md).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from spark_vl.models.encode import encode_prompts, pad_prompts, render, vision_filler
from spark_vl.spark.templates import Template, load_templates, make_aux_prompt
from spark_vl.types import Prompt

VERDICT_TOKENS = {"pointwise": ("Yes", "No"), "pairwise": ("A", "B"), "reference": ("Yes", "No")}
TEMPLATE_KIND = {"pointwise": "pointwise_yes_no", "pairwise": "pairwise", "reference": "reference"}


def _pick_template(form: str, template: str | Template | None, templates_root: str | None) -> Template:
    kind = TEMPLATE_KIND[form]
    if isinstance(template, Template):  # a loaded file, e.g. a reward-judge template (load_judge_template)
        if template.kind != kind:
            raise ValueError(f"judge form {form!r} needs a {kind} template, got {template.kind}/{template.name}")
        return template
    if form == "reference":
        raise ValueError("form='reference' needs a Template with {reference} (spark.templates.load_judge_template)")
    choices = load_templates(templates_root).get(kind)
    if template is None:
        return choices[0]
    for t in choices:
        if t.name == template:
            return t
    raise ValueError(f"no {kind} template named {template!r}; known: {', '.join(t.name for t in choices)}")


def judge_prompts(
    prompts: list[Prompt],
    responses: list[Any],
    form: Literal["pointwise", "pairwise", "reference"] = "pointwise",
    template: str | Template | None = None,
    templates_root: str | None = None,
) -> list[Prompt]:
    """The judge prompts `judge_score` scores: `responses[i]` (a string, an (A, B) pair, or for "reference" an
    (answer, reference answer) pair) shown for prompts[i]."""
    if form not in VERDICT_TOKENS:
        raise ValueError(f"form must be 'pointwise', 'pairwise' or 'reference', got {form!r}")
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    tpl = _pick_template(form, template, templates_root)
    out = []
    for i, (prompt, resp) in enumerate(zip(prompts, responses, strict=True)):
        if form != "pointwise" and not (isinstance(resp, (tuple, list)) and len(resp) == 2):
            raise ValueError(f"{form} responses must be pairs; item {i} is {resp!r}")
        if form == "pairwise":
            values = {"answer_a": str(resp[0]), "answer_b": str(resp[1])}
        elif form == "reference":
            values = {"answer": str(resp[0]), "reference": str(resp[1])}
        else:
            values = {"answer": str(resp)}
        meta = {"judge_form": form, "verdict_kind": "ab" if form == "pairwise" else "yes_no"}
        out.append(
            make_aux_prompt(
                prompt, tpl, uid=f"{prompt.uid}/score{i}", kind="judge", label="", answer_type=None, meta=meta,
                **values,
            )
        )
    return out


def verdict_split(tokenizer, text: str, positive: str, negative: str) -> tuple[int, int, int]:
    """(tokens of `text` to drop from its end, positive token id, negative token id).

    The input must end at the last token shared by `text + positive` and `text + negative`; the ids are their
    first differing tokens.
    """
    base = tokenizer(text, add_special_tokens=False)["input_ids"]
    pos = tokenizer(text + positive, add_special_tokens=False)["input_ids"]
    neg = tokenizer(text + negative, add_special_tokens=False)["input_ids"]
    shared = 0
    while shared < min(len(pos), len(neg)) and pos[shared] == neg[shared]:
        shared += 1
    if shared >= min(len(pos), len(neg)) or base[:shared] != pos[:shared] or shared == 0:
        raise ValueError(f"cannot find a verdict position for {positive!r}/{negative!r} after {text[-40:]!r}")
    return len(base) - shared, pos[shared], neg[shared]


@torch.no_grad()
def judge_score(
    model,
    processor,
    prompts: list[Prompt],
    responses: list[str] | list[tuple[str, str]],
    form: Literal["pointwise", "pairwise", "reference"] = "pointwise",
    *,
    template: str | Template | None = None,
    templates_root: str | None = None,
    prefix: str = "\\boxed{",
    batch_size: int | None = None,
    lockstep: bool = False,
) -> list[float]:
    """Probability of the positive verdict (Yes / A), softmax over the two verdict tokens, one forward pass.

    Args:
        model, processor: a Qwen2.5-VL / Qwen3-VL model and its processor.
        prompts: the policy prompts (question and images are taken from them).
        responses: pointwise: what is judged for each prompt, shown verbatim (pass the extracted final answer to
            judge answers as SPARK's training does, or the full response to judge with reasoning); pairwise:
            (answer_a, answer_b) pairs; reference: (answer, reference answer) pairs.
        form: "pointwise" -> P(Yes), "pairwise" -> P(A is the correct one), "reference" -> P(Yes: the answer
            matches the reference; RewardDance's comparative form, with a reward-judge template).
        template: the SPARK judge template file stem (default: the first of its kind by name), or a loaded
            `Template` (e.g. `load_judge_template(...)`).
        prefix: the pre-filled start of the assistant turn; the verdict token follows it.
        batch_size: rows per forward pass (None = all prompts in one pass).
        lockstep: ZeRO-3 on several ranks: a pass whose rows have no image gets the `vision_filler` row, so the
            vision tower runs on every rank; its logits are dropped.
    """
    if not prompts:
        return []
    rows = verdict_rows(processor, judge_prompts(prompts, list(responses), form, template, templates_root),
                        form, prefix)
    size = batch_size or len(rows)
    scores: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(rows), size):
            scores += _score_rows(model, processor, rows[start : start + size], lockstep)
    finally:
        model.train(was_training)
    return scores


def verdict_rows(processor, judge: list[Prompt], form: str = "pointwise", prefix: str = "\\boxed{") -> list[tuple]:
    """Per judge prompt: (prompt, text with the pre-filled `prefix`, tokens to drop, positive id, negative id)."""
    positive, negative = VERDICT_TOKENS[form]
    rows = []
    for p in judge:
        text = render(p, processor) + prefix
        drop, pos_id, neg_id = verdict_split(processor.tokenizer, text, positive, negative)
        rows.append((p, text, drop, pos_id, neg_id))
    return rows


def _score_rows(model, processor, rows: list[tuple[Prompt, str, int, int, int]], lockstep: bool) -> list[float]:
    return torch.softmax(verdict_logits(model, processor, rows, lockstep), dim=1)[:, 0].tolist()


def verdict_logits(model, processor, rows: list[tuple[Prompt, str, int, int, int]],
                   lockstep: bool = False) -> torch.Tensor:
    """[B, 2] logits of the (positive, negative) verdict tokens: the per-row encodings (each cut before its verdict
    token) left-padded into one forward pass (with `lockstep`, plus the `vision_filler` row when no row has an
    image). Differentiable: no grad mode is set here."""
    tok = processor.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    prompts, texts, drops = ([row[i] for row in rows] for i in range(3))
    encoded = [enc.truncated(len(enc.input_ids) - drop)  # one processor call for every row
               for enc, drop in zip(encode_prompts(prompts, processor, texts), drops)]
    if lockstep and all(e.pixel_values is None for e in encoded):
        encoded.append(vision_filler(processor))
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in pad_prompts(encoded, pad_id, side="left").items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(next(model.parameters()).dtype)
    logits_BV = model(**inputs, logits_to_keep=1).logits[: len(rows), -1, :].float()
    pos = torch.tensor([r[3] for r in rows], device=logits_BV.device)
    neg = torch.tensor([r[4] for r in rows], device=logits_BV.device)
    return torch.stack([logits_BV.gather(1, pos[:, None])[:, 0], logits_BV.gather(1, neg[:, None])[:, 0]], dim=1)


def best_of_n(
    model,
    processor,
    prompt: Prompt,
    candidates: list[str],
    *,
    template: str | None = None,
    templates_root: str | None = None,
) -> tuple[int, list[float]]:
    """Index of the candidate (e.g. extracted final answers) with the highest P(Yes), and all the scores."""
    if not candidates:
        raise ValueError("best_of_n needs at least one candidate")
    scores = judge_score(
        model, processor, [prompt] * len(candidates), candidates, template=template, templates_root=templates_root
    )
    return max(range(len(scores)), key=scores.__getitem__), scores
