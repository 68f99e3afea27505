"""judge_score: the batched verdict probability equals the two-way softmax computed by hand, row by row."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from spark_vl.config import ModelConfig
from spark_vl.data.prompts import build_prompt
from spark_vl.models import load_model
from spark_vl.models.encode import render
from spark_vl.spark.judge import best_of_n, judge_prompts, judge_score, verdict_split
from spark_vl.types import Sample


@pytest.fixture(scope="module", params=["builtin:tiny-qwen2.5-vl", "builtin:tiny-qwen3-vl"])
def tiny(request):
    return load_model(ModelConfig(path=request.param), "cpu")


def prompts():
    one = [Image.new("RGB", (56, 56), "white")]
    two = [Image.new("RGB", (40, 64), "red"), Image.new("RGB", (64, 32), "blue")]
    rows = [
        Sample(uid="img", problem="How many circles are in the image?", answer="3", images=one),
        Sample(uid="txt", problem="What is 2 + 2?", answer="4"),
        Sample(uid="two", problem="Compare <image> and <image>: which is larger?", answer="left", images=two),
    ]
    return [build_prompt(s, template="spark", images=imgs) for s, imgs in zip(rows, [one, [], two], strict=True)]


def by_hand(model, processor, judge_prompt, positive: str, negative: str) -> float:
    """Unbatched forward of one judge prompt ending in \\boxed{; softmax over the two verdict tokens."""
    text = render(judge_prompt, processor) + "\\boxed{"
    tok = processor.tokenizer
    base = tok(text, add_special_tokens=False)["input_ids"]
    pos_id = tok(text + positive, add_special_tokens=False)["input_ids"][len(base)]
    neg_id = tok(text + negative, add_special_tokens=False)["input_ids"][len(base)]
    enc = processor(text=[text], images=judge_prompt.images or None, return_tensors="pt",
                    return_mm_token_type_ids=True)
    with torch.no_grad():
        logits = model(**enc).logits[0, -1].float()
    return torch.softmax(torch.stack([logits[pos_id], logits[neg_id]]), dim=0)[0].item()


def test_pointwise_matches_hand_softmax(tiny):
    model, processor = tiny
    model.train()
    ps, answers = prompts(), ["3", "five", "left"]
    got = judge_score(model, processor, ps, answers)
    assert model.training  # mode restored
    want = [by_hand(model, processor, j, "Yes", "No") for j in judge_prompts(ps, answers)]
    assert got == pytest.approx(want, abs=1e-4)
    assert all(0.0 < p < 1.0 for p in got)


def test_pairwise_matches_hand_softmax(tiny):
    model, processor = tiny
    ps, pairs = prompts(), [("3", "4"), ("4", "5"), ("left", "right")]
    got = judge_score(model, processor, ps, pairs, form="pairwise", batch_size=2)
    want = [by_hand(model, processor, j, "A", "B") for j in judge_prompts(ps, pairs, form="pairwise")]
    assert got == pytest.approx(want, abs=1e-4)
    best, scores = best_of_n(model, processor, ps[0], ["1", "2", "3"])
    assert scores[best] == max(scores) and len(scores) == 3
    with pytest.raises(ValueError, match="pairs"):
        judge_score(model, processor, ps[:1], ["3"], form="pairwise")


class MergingTokenizer:
    """Splits on characters but merges "{Yes" / "{No" into one token, as some BPE vocabularies do."""

    vocab = {"{Yes": 100, "{No": 101}

    def __call__(self, text, add_special_tokens=False):
        ids, i = [], 0
        while i < len(text):
            for piece, tid in self.vocab.items():
                if text.startswith(piece, i):
                    ids.append(tid)
                    i += len(piece)
                    break
            else:
                ids.append(ord(text[i]))
                i += 1
        return {"input_ids": ids}


def test_verdict_split_cuts_before_a_merged_verdict_token():
    assert verdict_split(MergingTokenizer(), "x\\boxed{", "Yes", "No") == (1, 100, 101)
    assert verdict_split(MergingTokenizer(), "x\\boxed{ ", "A", "B") == (0, ord("A"), ord("B"))
