"""Runtime input: what every training and evaluation step reads.

`prepared.py` reads any dataset spec (prepared folder, parquet/json/jsonl, `datasets` folder) into `Sample`s;
`sources.py` opens raw files; `rows.py` is the raw row -> Sample vocabulary (`RowContext`, `SkipRow`,
`Skipped`) shared by recipes and benchmark adapters; `answers.py` normalises gold answers; `images.py`
decodes image references; `prompts.py` renders templates into `Prompt`s; `sampler.py` is the resumable
mixture sampler; `synthetic.py` is the builtin set. The offline tools that write datasets live in
`spark_vl.prep`.
"""
