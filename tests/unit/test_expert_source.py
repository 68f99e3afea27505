"""data.sft: expert rows come from a separate dataset (its rows with a solution) and resume exactly."""

import json

import pytest
from PIL import Image

from spark_vl.config import load_config
from spark_vl.models.tiny import build_processor
from spark_vl.trainer.data import PromptSource


def write(path, prefix, n, **extra):
    rows = [{"id": f"{prefix}{i}", "problem": "<image>What colour?", "images": ["red.png"], **extra}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_experts_come_from_data_sft(tmp_path):
    Image.new("RGB", (56, 56), "red").save(tmp_path / "red.png")
    write(tmp_path / "train.jsonl", "t", 20, answer="red", solution="train solution \\boxed{red}")
    write(tmp_path / "sft.jsonl", "s", 6, answer="red", solution="expert solution \\boxed{red}")
    write(tmp_path / "nosol.jsonl", "n", 3, answer="red")  # no solution: contributes no expert row
    cfg = load_config(None, [f"data.train={tmp_path / 'train.jsonl'}",
                             f"data.sft=[{tmp_path / 'sft.jsonl'},{tmp_path / 'nosol.jsonl'}]"])
    processor = build_processor("tiny-qwen2.5-vl")
    source = PromptSource(cfg, processor)
    experts = source.next_experts(10)
    assert len(experts) == 10 and all(p.kind == "expert" for p in experts)
    assert {p.sample.solution for p in experts} == {"expert solution \\boxed{red}"}
    again = PromptSource(cfg, processor)
    again.load_state_dict(source.state_dict())
    assert [p.uid for p in again.next_experts(5)] == [p.uid for p in source.next_experts(5)]


def test_without_data_sft_experts_are_training_rows_with_a_solution(tmp_path):
    Image.new("RGB", (56, 56), "red").save(tmp_path / "red.png")
    write(tmp_path / "train.jsonl", "t", 4, answer="red", solution="worked \\boxed{red}")
    cfg = load_config(None, [f"data.train={tmp_path / 'train.jsonl'}"])
    assert {p.sample.solution for p in PromptSource(cfg, build_processor("tiny-qwen2.5-vl")).next_experts(3)} == {
        "worked \\boxed{red}"}
    write(tmp_path / "plain.jsonl", "p", 4, answer="red")
    cfg = load_config(None, [f"data.train={tmp_path / 'plain.jsonl'}", f"data.sft={tmp_path / 'plain.jsonl'}"])
    with pytest.raises(ValueError, match="no row of data.sft"):
        PromptSource(cfg, build_processor("tiny-qwen2.5-vl")).next_experts(1)
