"""Export a checkpoint to a Hugging Face folder and load it back with the stock Auto classes."""

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from spark_vl.cli import main as cli_main
from spark_vl.data.prompts import build_prompt
from spark_vl.data.synthetic import synthetic_samples
from spark_vl.models.encode import render
from spark_vl.models.export import consolidated_state_dict, list_checkpoints
from spark_vl.trainer.loop import train

from ._train_utils import fast_config, read_metrics


@pytest.mark.parametrize("stage", [0, 2])
def test_export_reload_generate(tmp_path, stage):
    run = train(fast_config(tmp_path / "run", "trainer.rollout_steps=1", f"deepspeed.zero_stage={stage}"))
    ckpt = list_checkpoints(run)[-1]
    out = tmp_path / "hf"
    assert cli_main(["export", str(ckpt), str(out)]) == 0
    assert (out / "model.safetensors").exists() and (out / "generation_config.json").exists()
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert processor.tokenizer.chat_template
    trained = consolidated_state_dict(ckpt)
    for name, p in model.state_dict().items():
        if name in trained:
            assert torch.equal(p, trained[name].to(p.dtype)), name
    prompt = build_prompt(synthetic_samples(1)[0])
    enc = processor(text=[render(prompt, processor)], images=prompt.images, return_tensors="pt",
                    return_mm_token_type_ids=True)
    out_ids = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert out_ids.shape[1] == enc["input_ids"].shape[1] + 5 or processor.tokenizer.eos_token_id in out_ids[0]


def test_train_from_exported_local_folder(tmp_path):
    run = train(fast_config(tmp_path / "run", "trainer.rollout_steps=1"))
    out = tmp_path / "hf"
    assert cli_main(["export", str(run), str(out)]) == 0  # a run dir exports its latest checkpoint
    again = train(fast_config(tmp_path / "again", f"model.path={out}", "trainer.rollout_steps=1"))
    # Same seed, same expert rows at step 1: the exported (trained) weights must already fit them better than
    # the random initialisation did, which shows the folder's weights were loaded, not re-initialised.
    assert read_metrics(again)[1]["loss/sft"] < read_metrics(run)[1]["loss/sft"]
