import pytest
from PIL import Image

from spark_vl.data.images import ImageError, load_image
from spark_vl.data.prompts import build_prompt, load_template, prompt_length, user_content
from spark_vl.data.synthetic import synthetic_sample, synthetic_samples
from spark_vl.models.encode import render
from spark_vl.types import Sample


@pytest.mark.parametrize("size", [(56, 56), (100, 37), (300, 200), (640, 480)])
def test_prompt_length_counts_expanded_image_tokens(tiny_model, size):
    _, processor = tiny_model
    sample = Sample(uid="x", problem="<image>Compare <image> these.", answer="1",
                    images=[Image.new("RGB", size, "red"), Image.new("RGB", (size[1], size[0]), "blue")])
    prompt = build_prompt(sample)
    enc = processor(text=[render(prompt, processor)], images=prompt.images, return_tensors="pt")
    assert prompt_length(prompt, processor) == enc["input_ids"].shape[1]


def test_placeholders_become_interleaved_image_parts():
    content = user_content("Look <image> then <image 2> and answer.", 2)
    assert [c["type"] for c in content] == ["text", "image", "text", "image", "text"]
    assert content[0]["text"] == "Look" and content[-1]["text"] == "and answer."
    # no (or mismatched) placeholders: images first, placeholders stripped from the text
    assert [c["type"] for c in user_content("What is it?", 2)] == ["image", "image", "text"]
    assert user_content("<image> <image> two", 1)[-1]["text"] == "two"


def test_format_template_applied_and_spark_suffix_expressible():
    sample = synthetic_sample(0)
    text = build_prompt(sample, "spark").messages[-1]["content"][-1]["text"]
    assert text.endswith(load_template("spark").split("\n")[-1])
    assert "What colour is the shape?" in text
    with pytest.raises(FileNotFoundError, match="known format templates"):
        load_template("nope")


def test_image_refs_and_errors(tmp_path):
    img = Image.new("RGB", (8, 8), "red")
    img.save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    refs = ("a.png", str(tmp_path / "a.png"), data, {"bytes": data, "path": None}, {"bytes": None, "path": "a.png"})
    for ref in refs:
        assert load_image(ref, tmp_path).size == (8, 8)
    with pytest.raises(ImageError, match="does not exist"):
        load_image("missing.png", tmp_path)
    with pytest.raises(ImageError, match="cannot decode"):
        load_image(b"garbage", tmp_path)


def test_builtin_synthetic_is_deterministic_and_answers_match_pictures():
    a, b = synthetic_samples(20, seed=3), synthetic_samples(20, seed=3)
    assert [s.answer for s in a] == [s.answer for s in b]
    assert all(x.images[0].tobytes() == y.images[0].tobytes() for x, y in zip(a, b))
    assert synthetic_samples(5, seed=4)[0].images[0].tobytes() != a[0].images[0].tobytes()
    from spark_vl.data.synthetic import COLORS

    for s in a:
        if s.category == "color":  # the answer's colour is the most frequent non-white pixel colour
            colours = [(n, c) for n, c in s.images[0].getcolors(maxcolors=1 << 16) if c != (255, 255, 255)]
            assert max(colours)[1] == COLORS[s.answer]
        assert s.solution.endswith(f"\\boxed{{{s.answer}}}")


def test_prompts_this_process_uses_are_counted_by_their_encoding_which_the_rollout_reuses(tiny_model, monkeypatch):
    """Alone, the training source counts a drawn prompt's tokens by encoding it (kept with the prompt for the
    rollout and the update: one processor call per drawn prompt, no second render just to count); on several
    ranks, where each rank builds the whole step and keeps its share, and for held-out prompts, it counts without
    the image processor. Either count equals `prompt_length`; a prompt of exactly max_prompt_length is kept."""
    from dataclasses import replace

    from spark_vl.config import Config
    from spark_vl.models.encode import PromptEncoder
    from spark_vl.trainer.data import PromptBuilder, PromptSource

    _, processor = tiny_model
    sample = synthetic_sample(3, seed=1)
    cfg = Config()
    n = prompt_length(build_prompt(sample, cfg.data.format_template), processor)

    def builder(limit, encode=True):
        return PromptBuilder(replace(cfg, data=replace(cfg.data, max_prompt_length=limit)), processor, encode=encode)

    for encode in (True, False):
        assert builder(n, encode)(sample, None) is not None and builder(n - 1, encode)(sample, None) is None
    calls = []
    real = type(processor).__call__
    monkeypatch.setattr(type(processor), "__call__", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    prompt = builder(n)(sample, None)
    assert calls == [1]
    assert len(PromptEncoder(processor)(prompt).input_ids) == n and calls == [1]  # the rollout's encode: cached
    assert builder(n, encode=False)(sample, None) is not None and calls == [1]
    assert PromptSource(cfg, processor).build.encode and not PromptSource(cfg, processor, ranks=2).build.encode
