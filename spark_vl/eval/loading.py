"""Read a benchmark's rows in its real schema and turn them into Samples.

Sources, in order of preference:
  - a local `datasets` folder (`save_to_disk`), a folder of parquet files in the hub layout
    (`<config>/<split>-*.parquet`, `data/<split>-*.parquet`), a single parquet / JSON / JSONL file;
    a local source that does not exist is an error naming the path (never retried as a hub id);
  - `hf:<owner/name>` or, without a source, the benchmark's hub id through
    `datasets.load_dataset(hub_id, config, split=...)` (needs the network).
A local folder that holds only some of a benchmark's splits (e.g. 3 of DynaMath's 10 variants) is evaluated on
the splits present; `LoadedBenchmark.missing_splits` names the others and the report says so.
Rows that cannot become a Sample are skipped, counted and listed (`LoadedBenchmark.skipped`, `rows.Skipped`
records); images are not decoded here (a missing or broken image is reported when the prompt is built).
"""

from __future__ import annotations

import logging
from pathlib import Path

from spark_vl.data.prepared import load_samples
from spark_vl.data.rows import MALFORMED, RowContext, Skipped, SkipRow, check_row
from spark_vl.data.sources import MissingSplitError, SourceError, open_source
from spark_vl.eval.benchmarks import PREPARED_PREFIX, Benchmark, LoadedBenchmark
from spark_vl.types import Sample

logger = logging.getLogger("spark_vl.eval")
HUB_PREFIX = "hf:"  # --data hf:<owner/name> loads a hub copy; any other --data value is a local path


class BenchmarkSourceError(ValueError):
    """A benchmark whose data cannot be read at all (missing path, offline hub, unknown split)."""


def _hub_rows(hub_id: str, config: str | None, split: str | None):
    try:
        from datasets import load_dataset

        ds = load_dataset(hub_id, config, split=split)
    except Exception as err:  # offline, unknown id, gated: one line that says what to do instead
        raise BenchmarkSourceError(
            f"cannot load hub dataset {hub_id!r} (config {config}, split {split}): {type(err).__name__}: {err}. "
            "Offline? Download it elsewhere and pass --data <benchmark>=<local folder or parquet>."
        ) from None
    arrow = ds.with_format("arrow")  # image columns stay undecoded {"bytes", "path"} structs

    def rows():
        for table in arrow.iter(batch_size=256):
            yield from table.to_pylist()

    return rows(), None, f"hub {hub_id}" + (f" config {config}" if config else "") + f" split {split}"


def _local_rows(path: Path, split: str | None, single_split: bool):
    try:
        source = open_source(str(path), split)
    except MissingSplitError:
        if not single_split or split is None:
            raise
        try:  # a folder or file without split names holds just this benchmark's one split
            source = open_source(str(path), None)
        except SourceError as err:
            raise BenchmarkSourceError(str(err)) from None
    except SourceError as err:
        if not single_split or split is None:
            raise BenchmarkSourceError(str(err)) from None
        try:  # a folder or file without split names holds just this benchmark's one split
            source = open_source(str(path), None)
        except SourceError:
            raise BenchmarkSourceError(str(err)) from None
    return (row for _, row in source.rows()), source.root, source.description


def load_benchmark(
    bench: Benchmark, source: str | None = None, *, split: str | None = None, limit: int | None = None
) -> LoadedBenchmark:
    """Samples of `bench` from `source` (local path; None = the hub id), optionally one `split`, first `limit`."""
    if bench.name.startswith(PREPARED_PREFIX):
        return _load_prepared(bench, source or bench.name.removeprefix(PREPARED_PREFIX), limit)
    if source is not None and source.startswith(HUB_PREFIX):
        spec, local = source.removeprefix(HUB_PREFIX), False  # an explicit hub id (a mirror of the benchmark)
    elif source is not None:
        spec, local = source, True  # a --data value is a local path: never silently tried as a hub id
        if not Path(spec).expanduser().exists():
            raise BenchmarkSourceError(
                f"{bench.name}: data path {spec} does not exist (expected a datasets folder, a folder of parquet "
                f"files, or a parquet/json/jsonl file; for a hub copy write {HUB_PREFIX}<owner/name>)"
            )
    elif bench.hub_id is not None:
        spec, local = bench.hub_id, False
    else:
        raise BenchmarkSourceError(f"benchmark {bench.name} has no hub id; pass --data {bench.name}=<path>")
    path = Path(spec).expanduser()
    if local and bench.hub_config and (path / bench.hub_config).is_dir():
        path = path / bench.hub_config
    splits: tuple[str | None, ...] = (split,) if split else bench.splits
    if local and path.is_file():
        splits = (None,)  # one file = one split (DynaMath files carry `varid` per row)
    samples: list[Sample] = []
    skipped: list[Skipped] = []
    root: Path | None = None
    descriptions = []
    missing: list[str] = []
    last_error: Exception | None = None
    for name in splits:
        if local:
            try:
                rows, root, description = _local_rows(path, name, single_split=len(splits) == 1)
            except MissingSplitError as err:
                missing.append(str(name))  # a folder with some of the splits: evaluate those, name the rest
                last_error = err
                continue
        else:
            rows, root, description = _hub_rows(spec, bench.hub_config, name)
        descriptions.append(description)
        for index, row in enumerate(rows):
            row_id = f"{name or ''}#{index}"
            try:
                sample = bench.convert(row, RowContext(row_id, index, root=root, split=name))
                check_row(sample)
                samples.append(sample)
            except SkipRow as err:
                skipped.append(Skipped(row_id, err.kind, str(err)))
            except (KeyError, TypeError, ValueError) as err:
                skipped.append(Skipped(row_id, MALFORMED, f"{type(err).__name__}: {err}"))
    if missing and len(missing) == len(splits):
        raise BenchmarkSourceError(f"{bench.name}: {path} holds none of the splits {', '.join(missing)} "
                                   f"({last_error})")
    if missing:
        logger.warning("%s: %s holds %d of %d splits; missing: %s", bench.name, path, len(splits) - len(missing),
                       len(splits), ", ".join(missing))
    if bench.row_filter is not None:
        samples = [s for s in samples if bench.row_filter(s)]
    if bench.sort_key is not None:
        samples.sort(key=bench.sort_key)
    samples = _unique_uids(samples, skipped)
    if limit is not None:
        samples = samples[:limit]
    return LoadedBenchmark(bench, samples, skipped, root, "; ".join(dict.fromkeys(descriptions)),
                           missing_splits=missing, splits=[str(s) for s in splits if s is not None])


def _unique_uids(samples: list[Sample], skipped: list[Skipped]) -> list[Sample]:
    """Drop rows whose uid repeats an earlier one (the cache and the reports are keyed by uid)."""
    seen: set[str] = set()
    kept = []
    for s in samples:
        if s.uid in seen:
            skipped.append(Skipped(s.uid, "duplicate_uid", "duplicate uid (an earlier row has the same id)"))
            continue
        seen.add(s.uid)
        kept.append(s)
    return kept


def _load_prepared(bench: Benchmark, path: str, limit: int | None) -> LoadedBenchmark:
    try:
        result = load_samples(path)
    except (FileNotFoundError, ValueError) as err:
        raise BenchmarkSourceError(f"cannot load prepared dataset {path}: {err}") from None
    skipped = list(result.skipped)
    samples = _unique_uids(list(result.samples), skipped)
    if limit is not None:
        samples = samples[:limit]
    root = Path(result.root) if getattr(result, "root", None) else None
    return LoadedBenchmark(bench, samples, skipped, root, f"prepared {path}")
