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
    calls = count_processor_calls(processor, monkeypatch)
    prompt = builder(n)(sample, None)
    assert calls == [1]
    assert len(PromptEncoder(processor)(prompt).input_ids) == n and calls == [1]  # the rollout's encode: cached
    assert builder(n, encode=False)(sample, None) is not None and calls == [1]
    assert PromptSource(cfg, processor).build.encode and not PromptSource(cfg, processor, ranks=2).build.encode


def count_processor_calls(processor, monkeypatch) -> list[int]:
    calls: list[int] = []
    real = type(processor).__call__
    monkeypatch.setattr(type(processor), "__call__", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    return calls


def test_prompts_encoded_together_equal_each_prompt_encoded_alone(tiny_model, monkeypatch):
    """One processor call on several prompts (images of different sizes, two images, none; rendered or with given
    texts, as the judge pre-fills answers) gives every prompt the same ids, token types, pixels (bitwise, same
    dtype) and grids as its own call; `PromptEncoder.many` encodes only the prompts not encoded yet, in one call,
    and keeps them for later lookups."""
    import torch

    from spark_vl.models.encode import PromptEncoder, encode_prompt, encode_prompts

    _, processor = tiny_model
    prompts = [build_prompt(s) for s in synthetic_samples(2, seed=3)]
    prompts += [build_prompt(Sample(uid=f"x{i}", problem=problem, answer="1", images=images)) for i, (problem, images)
                in enumerate([("<image>Compare <image> these.", [Image.new("RGB", (100, 37), "red"),
                                                                 Image.new("RGB", (300, 200), "blue")]),
                              ("What is 2 + 2?", []),
                              ("<image>How many?", [Image.new("RGB", (640, 480), "green")])])]
    texts = [render(p, processor) + f"The answer is {i}." for i, p in enumerate(prompts)]  # pre-filled (the judge)
    alone = [encode_prompt(p, processor) for p in prompts]
    alone_with_texts = [encode_prompt(p, processor, t) for p, t in zip(prompts, texts, strict=True)]
    assert alone_with_texts[0].input_ids[: len(alone[0].input_ids)] == alone[0].input_ids
    pairs = [(encode_prompts(prompts, processor), alone),
             (encode_prompts(prompts, processor, texts), alone_with_texts)]
    for t, a in ((t, a) for together, each in pairs for t, a in zip(together, each, strict=True)):
        assert t.input_ids == a.input_ids and t.mm_token_type_ids == a.mm_token_type_ids
        if a.pixel_values is None:
            assert t.pixel_values is None and t.image_grid_thw is None
        else:
            assert t.pixel_values.dtype == a.pixel_values.dtype and torch.equal(t.pixel_values, a.pixel_values)
            assert torch.equal(t.image_grid_thw, a.image_grid_thw)
    encoder = PromptEncoder(processor)
    first = encoder(prompts[0])
    calls = count_processor_calls(processor, monkeypatch)
    got = encoder.many(prompts + prompts[1:2])
    assert calls == [1] and got[0] is first and got[1] is got[-1]
    assert [e.input_ids for e in got[:-1]] == [a.input_ids for a in alone]
    assert encoder.many(prompts) == got[:-1] and calls == [1]


def test_a_step_draws_what_drawing_row_by_row_draws_and_encodes_it_in_one_call(tmp_path, monkeypatch):
    """The source draws each step's rows as a batch (their lengths counted by one processor call) yet keeps, skips
    and counts exactly the rows that drawing, building and counting one row at a time would, in the same order:
    rows too long (found only by the count) and empty rows are replaced by later draws, over several steps."""
    import json

    from spark_vl.config import load_config
    from spark_vl.models.tiny import build_processor
    from spark_vl.trainer.data import PromptSource

    Image.new("RGB", (56, 56), "red").save(tmp_path / "red.png")
    rows = [{"id": f"r{i}", "answer": "red", "images": ["red.png"],
             "problem": "" if i % 7 == 3 else "<image>What colour?" + " really" * (80 if i % 5 == 1 else 0)}
            for i in range(40)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(None, [f"data.train=[{tmp_path / 'd.jsonl'}]", "data.max_prompt_length=100"])
    processor = build_processor("tiny-qwen2.5-vl")
    source, one_by_one = PromptSource(cfg, processor), PromptSource(cfg, processor)
    calls = count_processor_calls(processor, monkeypatch)
    rounds = []
    for k in (4, 4, 6, 5):
        expected = []
        while len(expected) < k:
            source_index, index = one_by_one.sampler.next(None)
            rows_, root = one_by_one.sources[source_index]
            prompt = one_by_one.build(rows_[index], root)
            if prompt is not None:
                expected.append(prompt.uid)
        too_long = source.skipped["prompt_too_long"]
        del calls[:]
        assert [p.uid for p in source.next_prompts(k)] == expected
        rounds.append((len(calls), source.skipped["prompt_too_long"] - too_long))
    # one processor call per round: one, plus at most one more per row found too long
    assert all(1 <= n <= 1 + extra for n, extra in rounds) and (1, 0) in rounds, rounds
    assert source.skipped == one_by_one.skipped and source.skipped["prompt_too_long"] > 0
    assert source.skipped["empty_problem"] > 0 and source.build.examples == one_by_one.build.examples


@pytest.mark.parametrize("problem", ["", "<image>What colour?" + " really" * 80])
def test_a_source_with_no_usable_row_stops_with_an_error_naming_rows(tmp_path, problem):
    """Empty rows (known when built) and rows too long (known only when counted) alike: after 50 + 10k unusable
    draws in a row the source stops with an error that names rows, instead of drawing forever."""
    import json

    from spark_vl.config import load_config
    from spark_vl.models.tiny import build_processor
    from spark_vl.trainer.data import PromptSource

    Image.new("RGB", (56, 56), "red").save(tmp_path / "red.png")
    rows = [{"id": f"r{i}", "answer": "red", "images": ["red.png"], "problem": problem} for i in range(5)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(None, [f"data.train=[{tmp_path / 'd.jsonl'}]", "data.max_prompt_length=100"])
    source = PromptSource(cfg, build_processor("tiny-qwen2.5-vl"))
    with pytest.raises(ValueError, match=r"71 consecutive unusable rows: \[\('r"):
        source.next_prompts(2)
    assert sum(source.skipped.values()) == 71
