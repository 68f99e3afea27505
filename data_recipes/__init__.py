"""Dataset recipes: one module per source dataset, each defining `RECIPE = Recipe(...)` (docs/DATA.md).

Run one with `spark-vl data prepare <name> ...` or `python -m data_recipes.<name> ...`; `spark_vl.prep.recipes`
finds them by name as `data_recipes.<name>:RECIPE`.
"""
