"""The SPARK auxiliary queue: judge/reflection prompts with a maximum age and checkpointable state.

    queue = AuxQueue(max_age=cfg.spark.max_age)
    queue.push(recycle(...).prompts, step)
    if queue.ready(k, step):             # evicts expired items first
        aux_prompts = queue.pop(k, step)

An item built at policy step s has age t - s at step t and is dropped (and counted) once its age exceeds
`max_age`. `pop` takes the newest items first (`plan_take`), so the auxiliary phase trains the current step's
items (age 0 when a step builds as many as a phase takes) and surplus items age out instead of pushing every
later phase off-policy; `push` stores one step's items with judgments and reflections interleaved, so a partial
pop takes both kinds in their built proportion instead of judgments first. The reference code popped the oldest 64,
emptied its cache at every episode boundary and kept stale leftovers within an episode (defect 9.8); this
queue carries items across epochs and drops them by age only.

With several ranks each rank queues its own items; `plan_take` over every rank's `inventory` (and `waterfill`
for the recycling caps) splits a global budget so that what all ranks take equals what one process would.

`state_dict()` holds only plain Python values (str, int, float, bool, None, bytes, lists, dicts), so it loads
with `torch.load(weights_only=True)`: decoded images are stored as PNG bytes; a PIL image inside a sample's
image references becomes an HF image struct {"bytes": png, "path": None}; other non-plain values in `meta`
dicts are stored as their repr (logging-only fields).
"""

from __future__ import annotations

import dataclasses
import io
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image

from spark_vl.types import Prompt, Sample

STATE_VERSION = 1


@dataclass
class QueueStats:
    size: int  # items queued now
    oldest_age: int  # policy steps since the oldest queued item was built (0 when empty)
    mean_age: float
    pushed: int  # totals since the queue was created (restored with the state)
    popped: int
    expired: int  # dropped because older than max_age

    def as_dict(self, prefix: str = "spark/queue/") -> dict[str, float]:
        return {prefix + k: v for k, v in asdict(self).items()}


class AuxQueue:
    """FIFO of auxiliary prompts tagged with the policy step that built them."""

    def __init__(self, max_age: int | None = 4):
        if max_age is not None and max_age < 0:
            raise ValueError(f"spark.max_age={max_age} must be >= 0 (or None for no limit)")
        self.max_age = max_age
        self._items: deque[tuple[int, Prompt]] = deque()
        self.pushed = 0
        self.popped = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, prompts: list[Prompt], step: int) -> None:
        """Append `prompts`, built at policy step `step`, with judgments and reflections interleaved."""
        self._items.extend((step, p) for p in interleave_kinds(prompts))
        self.pushed += len(prompts)

    def evict(self, step: int) -> int:
        """Drop items older than `max_age` at `step`; returns how many were dropped."""
        if self.max_age is None:
            return 0
        before = len(self._items)
        self._items = deque((s, p) for s, p in self._items if step - s <= self.max_age)
        dropped = before - len(self._items)
        self.expired += dropped
        return dropped

    def ready(self, k: int, step: int) -> bool:
        """Whether `k` fresh items are queued at `step` (expired items are evicted first)."""
        self.evict(step)
        return len(self._items) >= k

    def inventory(self, step: int) -> dict[tuple[int, str], int]:
        """Fresh items by (built step, kind) at `step` (expired items are evicted first)."""
        self.evict(step)
        counts: dict[tuple[int, str], int] = {}
        for s, p in self._items:
            counts[(s, _kind(p))] = counts.get((s, _kind(p)), 0) + 1
        return counts

    def pop(self, k: int, step: int) -> list[Prompt]:
        """Up to `k` fresh items, newest step first, the kinds of a step taken as they were interleaved."""
        return self.pop_planned(plan_take([self.inventory(step)], k)[0])

    def pop_planned(self, plan: dict[tuple[int, str], int]) -> list[Prompt]:
        """Remove and return `plan[(step, kind)]` items of each (step, kind), first pushed first; the result is
        ordered newest step first with kinds interleaved."""
        left, taken, kept = dict(plan), [], deque()
        for s, p in self._items:
            key = (s, _kind(p))
            if left.get(key, 0) > 0:
                left[key] -= 1
                taken.append((s, p))
            else:
                kept.append((s, p))
        self._items = kept
        self.popped += len(taken)
        out = []
        for s in sorted({s for s, _ in taken}, reverse=True):
            out += interleave_kinds([p for t, p in taken if t == s])
        return out

    def ages(self, step: int) -> list[int]:
        return [step - s for s, _ in self._items]

    def stats(self, step: int) -> QueueStats:
        ages = self.ages(step)
        return QueueStats(
            size=len(ages),
            oldest_age=max(ages, default=0),
            mean_age=sum(ages) / len(ages) if ages else 0.0,
            pushed=self.pushed,
            popped=self.popped,
            expired=self.expired,
        )

    def state_dict(self) -> dict[str, Any]:
        """Plain-value state (loads with torch.load(weights_only=True)); images as PNG bytes."""
        return {
            "version": STATE_VERSION,
            "max_age": self.max_age,
            "counters": {"pushed": self.pushed, "popped": self.popped, "expired": self.expired},
            "items": [{"step": s, "prompt": prompt_to_state(p)} for s, p in self._items],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore items and counters; the configured `max_age` stays (a resumed run may change it)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"aux queue state version {state.get('version')!r} is not {STATE_VERSION}")
        counters = state.get("counters", {})
        self.pushed = int(counters.get("pushed", 0))
        self.popped = int(counters.get("popped", 0))
        self.expired = int(counters.get("expired", 0))
        self._items = deque((int(item["step"]), prompt_from_state(item["prompt"])) for item in state["items"])


def _kind(prompt: Prompt) -> str:
    return "reflect" if prompt.kind == "reflect" else "judge"


def interleaved_split(judgments: int, reflections: int, k: int) -> tuple[int, int]:
    """(judgments, reflections) among the first k items of an interleaved j, r, j, r, ... list (the longer kind's
    tail at the end): what a newest-first pop of k items takes from one step."""
    k = min(k, judgments + reflections)
    j = min(judgments, (k + 1) // 2) if k <= 2 * min(judgments, reflections) else (
        judgments if judgments <= reflections else k - reflections)
    return j, k - j


def plan_take(inventories: list[dict[tuple[int, str], int]], budget: int) -> list[dict[tuple[int, str], int]]:
    """Per rank, how many items of each (step, kind) to pop so that all ranks together take what one process
    holding all their items would: newest step first, a step's kinds in their interleaved order, each kind's
    count split over the ranks by `waterfill`. Pure; every rank computes the same plan from the gathered
    inventories."""
    plans: list[dict[tuple[int, str], int]] = [{} for _ in inventories]
    steps = sorted({s for inv in inventories for s, _ in inv}, reverse=True)
    for s in steps:
        if budget <= 0:
            break
        per_kind = {kind: [inv.get((s, kind), 0) for inv in inventories] for kind in ("judge", "reflect")}
        j, r = interleaved_split(sum(per_kind["judge"]), sum(per_kind["reflect"]), budget)
        for kind, count in (("judge", j), ("reflect", r)):
            for rank, quota in enumerate(waterfill(per_kind[kind], count)):
                if quota:
                    plans[rank][(s, kind)] = quota
        budget -= j + r
    return plans


def interleave_kinds(prompts: list[Prompt]) -> list[Prompt]:
    """Judgments and reflections alternated (each kind in its own order; the longer one's tail at the end)."""
    judge = [p for p in prompts if _kind(p) == "judge"]
    reflect = [p for p in prompts if _kind(p) == "reflect"]
    out = []
    for i in range(max(len(judge), len(reflect))):
        out += judge[i : i + 1] + reflect[i : i + 1]
    return out


def waterfill(counts: list[int], budget: int) -> list[int]:
    """Split `budget` over ranks holding `counts` items: equal shares (lower ranks take the remainder), never more
    than a rank holds, and what a rank cannot take goes to the others. Sums to min(budget, sum(counts)).

    waterfill([8, 8], 8) == [4, 4];  waterfill([2, 10], 8) == [2, 6];  waterfill([3, 0], 8) == [3, 0].
    """
    quotas = [0] * len(counts)
    left = min(max(0, budget), sum(counts))
    open_ranks = [i for i, c in enumerate(counts) if c > 0]
    while left > 0 and open_ranks:
        share, extra = divmod(left, len(open_ranks))
        for j, i in enumerate(open_ranks):
            give = min(counts[i] - quotas[i], share + (1 if j < extra else 0))
            quotas[i] += give
            left -= give
        open_ranks = [i for i in open_ranks if quotas[i] < counts[i]]
    return quotas


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _from_png(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _plain(value: Any) -> Any:
    """A copy of `value` made of plain Python values; PIL images become HF image structs with PNG bytes."""
    if value is None or isinstance(value, (str, bool, int, float, bytes)):
        return value
    if isinstance(value, Image.Image):
        return {"bytes": _png(value), "path": None}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:  # numpy / torch scalars
        return value.item()
    return repr(value)


def prompt_to_state(prompt: Prompt) -> dict[str, Any]:
    """A Prompt as plain values (images as PNG bytes)."""
    sample = {f.name: _plain(getattr(prompt.sample, f.name)) for f in dataclasses.fields(Sample)}
    return {
        "uid": prompt.uid,
        "messages": _plain(prompt.messages),
        "images": [_png(img) for img in prompt.images],
        "sample": sample,
        "kind": prompt.kind,
        "meta": _plain(prompt.meta),
    }


def prompt_from_state(state: dict[str, Any]) -> Prompt:
    """Inverse of `prompt_to_state`."""
    return Prompt(
        uid=state["uid"],
        messages=state["messages"],
        images=[_from_png(b) for b in state["images"]],
        sample=Sample(**state["sample"]),
        kind=state["kind"],
        meta=state["meta"],
    )
