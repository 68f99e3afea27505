"""Bad rows never stop a run: they are skipped with the row named, counted in metrics and summary.md."""

import json

from PIL import Image

from spark_vl.trainer.loop import train

from ._train_utils import fast_config, read_metrics


def make_dataset(root):
    Image.new("RGB", (56, 56), "red").save(root / "red.png")
    Image.new("RGB", (56, 56), "blue").save(root / "blue.png")
    Image.new("RGB", (2000, 2000), "blue").save(root / "huge.png")
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    rows = []
    for i in range(12):
        colour = "red" if i % 2 else "blue"
        rows.append({"id": f"good{i}", "problem": "<image>What colour is the shape?", "answer": colour,
                     "images": [f"{colour}.png"], "solution": f"It is {colour}. \\boxed{{{colour}}}"})
    rows += [
        {"id": "missing", "problem": "<image>What colour?", "answer": "red", "images": ["nope.png"]},
        {"id": "broken", "problem": "<image>What colour?", "answer": "red", "images": ["broken.png"]},
        {"id": "empty_q", "problem": "  ", "answer": "red", "images": ["red.png"]},
        {"id": "empty_a", "problem": "<image>What colour?", "answer": "", "images": ["red.png"]},
        {"id": "too_long", "problem": "<image>What colour?", "answer": "blue", "images": ["huge.png"]},
        {"id": "no_answer_column", "problem": "<image>What colour?", "images": ["red.png"]},
    ]
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bad_rows_are_skipped_counted_and_reported(tmp_path, caplog):
    data = make_dataset(tmp_path)
    # max_pixels large enough that the 2000x2000 image expands past the prompt limit instead of being shrunk
    run = train(fast_config(tmp_path / "run", f"data.train=[{data}]", "trainer.rollout_steps=4",
                            "model.max_pixels=4000000", "data.max_prompt_length=300"))
    metrics = read_metrics(run)
    assert metrics[-1]["step"] == 4
    summary = (run / "summary.md").read_text()
    for row in ("missing", "broken", "empty_q", "empty_a", "too_long", "no_answer_column"):
        assert row in summary, row
    assert metrics[-1]["data/skipped_rows"] == 6
    for reason in ("bad_image", "empty_problem", "empty_answer", "prompt_too_long", "malformed_row"):
        assert reason in summary, reason
    assert any("skipping row" in r.message and "missing" in r.message for r in caplog.records)


def test_rows_marked_as_evaluation_data_never_train(tmp_path):
    """A prepared benchmark test split (meta.eval_split, e.g. MMK12 test) is refused for training but fine as
    data.val."""
    from spark_vl.config import load_config
    from spark_vl.models.tiny import build_processor
    from spark_vl.trainer.data import PromptBuilder
    from spark_vl.types import Sample

    Image.new("RGB", (56, 56), "red").save(tmp_path / "red.png")
    sample = Sample(uid="test-1", problem="<image>What colour?", answer="red", images=["red.png"],
                    meta={"eval_split": True})
    cfg, processor = load_config(None, []), build_processor("tiny-qwen2.5-vl")
    train_builder = PromptBuilder(cfg, processor)
    assert train_builder(sample, tmp_path) is None and train_builder.skipped["eval_split_row"] == 1
    assert PromptBuilder(cfg, processor, training=False)(sample, tmp_path) is not None
