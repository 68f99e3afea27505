"""The training loop and what only it uses (docs/ARCHITECTURE.md).

`loop.py` is the one loop (`train()` first, every phase a named call); `batch.py` turns rollouts into
`TrainBatch`es; `distributed.py` sets up distributed DeepSpeed, collectives and the LR schedule;
`checkpoint.py` writes atomic, resumable checkpoints; `data.py` turns datasets into validated prompts;
`spark_phase.py` holds SPARK's queue and per-step global caps; `metrics.py` / `report.py` write the run
outputs. Export to a Hugging Face folder is `spark_vl.models.export`.
"""
