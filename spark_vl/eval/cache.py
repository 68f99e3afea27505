"""The on-disk generation cache: every generation is appended as soon as its batch finishes.

Layout (one JSONL file per model x protocol x benchmark x mode):

    <cache_dir>/<model slug>/<protocol slug>/<benchmark slug>.<mode>.jsonl
    <cache_dir>/<model slug>/model.json            the full model id the slug stands for

Each line is one item: {"key", "uid", "texts", "finish_reasons", "num_tokens", "extra"}. The key is the
item uid plus a hash of everything that determines the generation (rendered messages with their image
parts, decoding settings), so a changed prompt template or token budget regenerates instead of reusing a stale
answer. Lines are flushed and fsync'ed per batch; a crash loses at most the batch in flight. A torn last
line (killed mid-write) is ignored on load and counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spark_vl.types import Prompt, SamplingParams


def slug(text: str, max_len: int = 80) -> str:
    """A file-name-safe version of `text`; long or lossy names get a short hash suffix."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"
    if clean != text or len(clean) > max_len:
        clean = f"{clean[: max_len - 9]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return clean


def item_key(prompt: Prompt, sampling: SamplingParams, n: int = 1, extra: str = "") -> str:
    """uid + a hash of the rendered request; identical requests map to the same cache line."""
    payload = json.dumps(
        {
            "messages": prompt.messages,  # image parts included, so the image count is part of the key
            "sampling": [sampling.temperature, sampling.top_p, sampling.top_k, sampling.max_new_tokens,
                         sampling.repetition_penalty, sampling.seed, list(sampling.stop)],
            "n": n,
            "extra": extra,
        },
        sort_keys=True,
        default=str,
    )
    return f"{prompt.uid}:{hashlib.sha1(payload.encode()).hexdigest()[:16]}"


@dataclass
class CacheEntry:
    key: str
    uid: str
    texts: list[str]
    finish_reasons: list[str] = field(default_factory=list)
    num_tokens: list[int] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class GenerationCache:
    """Append-only JSONL files keyed by (model, protocol, benchmark, mode, item)."""

    def __init__(self, root: str | Path, model_id: str):
        self.root = Path(root)
        self.model_id = model_id
        self.model_dir = self.root / slug(model_id)
        self.torn_lines = 0  # lines that could not be parsed on load (a write interrupted by a crash)

    def path(self, protocol: str, benchmark: str, mode: str) -> Path:
        return self.model_dir / slug(protocol) / f"{slug(benchmark)}.{slug(mode)}.jsonl"

    def load(self, protocol: str, benchmark: str, mode: str) -> dict[str, CacheEntry]:
        path = self.path(protocol, benchmark, mode)
        entries: dict[str, CacheEntry] = {}
        if not path.is_file():
            return entries
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                    entry = CacheEntry(**data)
                except (json.JSONDecodeError, TypeError):
                    self.torn_lines += 1
                    continue
                entries[entry.key] = entry  # a later line for the same key wins
        return entries

    def append(self, protocol: str, benchmark: str, mode: str, entries: list[CacheEntry]) -> None:
        if not entries:
            return
        path = self.path(protocol, benchmark, mode)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = self.model_dir / "model.json"
        if not meta.exists():
            meta.write_text(json.dumps({"model": self.model_id}) + "\n")
        text = "".join(json.dumps(e.__dict__, ensure_ascii=False) + "\n" for e in entries)
        with path.open("a", encoding="utf-8") as f:
            if f.tell() > 0 and not _ends_with_newline(path):
                f.write("\n")  # never glue a new line onto a torn one
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
