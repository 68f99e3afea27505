import json

from PIL import Image

from spark_vl.config import load_config
from spark_vl.models.tiny import build_processor
from spark_vl.trainer.data import PromptSource


def write(path, prefix, n, root):
    rows = [{"id": f"{prefix}{i}", "problem": "<image>What colour?", "answer": "red", "images": ["red.png"]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_training_mixture_follows_weights_and_resumes(tmp_path):
    Image.new("RGB", (56, 56), "red").save(tmp_path / "red.png")
    write(tmp_path / "a.jsonl", "a", 30, tmp_path)
    write(tmp_path / "b.jsonl", "b", 300, tmp_path)
    cfg = load_config(None, [f"data.train=[{tmp_path / 'a.jsonl'},{tmp_path / 'b.jsonl'}]",
                             "data.train_weights=[0.75,0.25]"])
    processor = build_processor("tiny-qwen2.5-vl")
    source = PromptSource(cfg, processor)
    uids = [p.uid for p in source.next_prompts(400)]
    share_a = sum(1 for u in uids if u.split("-")[-1].startswith("a")) / len(uids)
    assert abs(share_a - 0.75) < 0.06, share_a  # the small source is repeated (epochs), not diluted by size
    again = PromptSource(cfg, processor)
    again.load_state_dict(source.state_dict())
    assert [p.uid for p in again.next_prompts(20)] == [p.uid for p in source.next_prompts(20)]
