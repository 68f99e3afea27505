"""A deterministic, resumable sampler over one dataset or a weighted mixture of several.

Draw i picks a source with weights (an RNG seeded by (seed, i)), then that source's next index in
its current epoch's permutation (seeded by (seed, source, epoch)). The whole state is two counters,
so a resumed run draws exactly what an uninterrupted one would. Optional per-row weights (SPO's prioritised
sampling) replace the permutation with a weighted draw from the same seeded RNG.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class SamplerState:
    draws: int = 0
    per_source: list[int] = field(default_factory=list)  # items drawn from each source so far


class MixtureSampler:
    def __init__(self, sizes: list[int], weights: list[float] | None = None, seed: int = 0, shuffle: bool = True):
        if not sizes or any(n <= 0 for n in sizes):
            raise ValueError(f"every training source needs at least one row, got sizes {sizes}")
        weights = list(weights) if weights else [float(n) for n in sizes]
        if len(weights) != len(sizes) or sum(weights) <= 0:
            raise ValueError(f"mixture weights {weights} do not match sources of sizes {sizes}")
        self.sizes, self.weights, self.seed, self.shuffle = sizes, weights, seed, shuffle
        self.state = SamplerState(0, [0] * len(sizes))
        self._perm_cache: dict[tuple[int, int], list[int]] = {}

    def _perm(self, source: int, epoch: int) -> list[int]:
        key = (source, epoch)
        if key not in self._perm_cache:
            n = self.sizes[source]
            if self.shuffle:
                g = torch.Generator().manual_seed(hash((self.seed, source, epoch)) & 0x7FFFFFFF)
                self._perm_cache[key] = torch.randperm(n, generator=g).tolist()
            else:
                self._perm_cache[key] = list(range(n))
            if len(self._perm_cache) > 2 * len(self.sizes):
                self._perm_cache.pop(next(iter(self._perm_cache)))
        return self._perm_cache[key]

    def next(self, row_weights: list[np.ndarray] | None = None) -> tuple[int, int]:
        """(source, row index) of the next draw. With `row_weights` (one array per source, e.g. SPO's priorities)
        the row is drawn with probability proportional to its weight (seeded by the draw count, so a resumed run
        with the same weights draws the same rows) instead of the epoch's permutation."""
        rng = random.Random(f"{self.seed}/{self.state.draws}")
        source = 0 if len(self.sizes) == 1 else rng.choices(range(len(self.sizes)), weights=self.weights)[0]
        k = self.state.per_source[source]
        epoch, pos = divmod(k, self.sizes[source])
        self.state.draws += 1
        self.state.per_source[source] += 1
        if row_weights is not None:
            cumulative = np.cumsum(row_weights[source], dtype=np.float64)
            index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
            return source, min(index, self.sizes[source] - 1)
        return source, self._perm(source, epoch)[pos]

    def epoch(self, source: int = 0) -> int:
        return self.state.per_source[source] // self.sizes[source]

    def state_dict(self) -> dict:
        return {"draws": self.state.draws, "per_source": list(self.state.per_source), "sizes": list(self.sizes)}

    def load_state_dict(self, state: dict) -> None:
        if list(state["sizes"]) != list(self.sizes):
            raise ValueError(
                f"the checkpoint's sampler was over sources of sizes {state['sizes']}, the data now has {self.sizes}"
            )
        self.state = SamplerState(int(state["draws"]), list(state["per_source"]))
