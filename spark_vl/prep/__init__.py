"""Offline dataset tools behind `spark-vl data ...` (docs/DATA.md).

`recipes.py` runs a recipe (source rows -> convert -> validate -> prepared dataset), `validate.py` checks
rows and images and keeps the report, `writer.py` writes the prepared format, `decontaminate.py` drops rows
that overlap evaluation sets, `difficulty.py` estimates pass rates (with rollouts when asked) and keeps a band,
`cli.py` is the command line. These sit above the training stack: they may use models, rollout and rewards;
nothing in training or evaluation imports them.
"""
