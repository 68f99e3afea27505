"""The training loop and what only it uses (docs/ARCHITECTURE.md).

`loop.py` is the one loop; `batch.py` turns rollouts into `TrainBatch`es; `engine.py` sets up distributed
DeepSpeed and the LR schedule; `checkpoint.py` writes atomic, resumable checkpoints; `data.py` turns datasets
into validated prompts; `rewarding.py` scores rollout groups; `spark_phase.py` schedules SPARK's auxiliary
phase; `metrics.py` / `report.py` write the run outputs. Export to a Hugging Face folder is
`spark_vl.models.export`.
"""
