"""AuxQueue: newest-first pops with kinds interleaved, waterfill quotas, max_age eviction with counts, and a
state that survives torch.save/torch.load."""

from __future__ import annotations

import io
import random

import pytest
import torch
from PIL import Image

from spark_vl.config import SparkConfig
from spark_vl.data.prompts import build_prompt
from spark_vl.spark.aux_queue import AuxQueue, interleave_kinds, interleaved_split, plan_take, waterfill
from spark_vl.spark.recycle import recycle
from spark_vl.types import RewardOutput, Rollout, RolloutGroup, Sample


def aux_prompts(uid: str, step: int, n_images: int = 1):
    images = [Image.new("RGB", (30, 20 + i), (200, 10 * i, 5)) for i in range(n_images)]
    sample = Sample(uid=uid, problem="Count the circles.", answer="2", images=list(images), answer_type="integer",
                    meta={"tags": ("a", 1)})
    p = build_prompt(sample, template="spark", images=images)
    rollouts = [
        Rollout(prompt=p, token_ids=[], text=f"\\boxed{{{a}}}",
                reward=RewardOutput(overall=float(a == 2), parts={"accuracy": float(a == 2)}))
        for a in (2, 3)
    ]
    return recycle([RolloutGroup(prompt=p, rollouts=rollouts)], SparkConfig(), random.Random(0), step).prompts


def test_newest_first_pop_and_max_age():
    q = AuxQueue(max_age=2)
    q.push(aux_prompts("a", 0), step=0)  # 2 prompts
    q.push(aux_prompts("b", 1), step=1)
    q.push(aux_prompts("c", 3), step=3)
    assert len(q) == 6 and q.ages(3) == [3, 3, 2, 2, 0, 0]
    assert q.stats(3).oldest_age == 3
    assert not q.ready(5, step=3)  # evicts the two step-0 items (age 3 > 2)
    assert q.expired == 2 and len(q) == 4
    out = q.pop(3, step=3)  # the current step's items first, then the newest leftovers; kinds alternate
    assert [(p.meta["origin_uid"], p.kind) for p in out] == [("c", "judge"), ("c", "reflect"), ("b", "judge")]
    s = q.stats(3)
    assert (s.size, s.pushed, s.popped, s.expired) == (1, 6, 3, 2)
    assert q.pop(10, step=10) == [] and q.expired == 3
    assert q.stats(10).as_dict()["spark/queue/expired"] == 3


def test_no_max_age_and_bad_values():
    q = AuxQueue(max_age=None)
    q.push(aux_prompts("a", 0), 0)
    assert len(q.pop(5, 1000)) == 2
    with pytest.raises(ValueError):
        AuxQueue(max_age=-1)


@pytest.mark.parametrize("n_images", [0, 2])
def test_state_round_trip_through_torch_save(n_images):
    q = AuxQueue(max_age=4)
    q.push(aux_prompts("a", 0, n_images), 0)
    q.push(aux_prompts("b", 2, n_images), 2)
    q.pop(1, 2)
    buf = io.BytesIO()
    torch.save({"aux_queue": q.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["aux_queue"]  # plain values only
    r = AuxQueue(max_age=4)
    r.load_state_dict(state)
    assert (len(r), r.pushed, r.popped, r.expired) == (len(q), q.pushed, q.popped, q.expired)
    assert r.ages(5) == q.ages(5)
    for a, b in zip(q.pop(10, 3), r.pop(10, 3), strict=True):
        assert (a.uid, a.kind, a.label, a.messages, a.meta) == (b.uid, b.kind, b.label, b.messages, b.meta)
        assert a.sample.answer_type == b.sample.answer_type and a.sample.problem == b.sample.problem
        assert len(a.images) == len(b.images) == n_images
        for x, y in zip(a.images, b.images, strict=True):
            assert x.size == y.size and x.tobytes() == y.convert(x.mode).tobytes()
        assert len(b.sample.images) == n_images  # PIL refs became {"bytes": png, "path": None}
        assert all(isinstance(ref, dict) and ref["bytes"] for ref in b.sample.images)
    with pytest.raises(ValueError, match="version"):
        r.load_state_dict({"version": 99, "items": []})


def test_push_interleaves_kinds_so_a_partial_pop_takes_both():
    prompts = aux_prompts("a", 0) + aux_prompts("b", 0) + aux_prompts("c", 0)
    ordered = sorted(prompts, key=lambda p: p.kind)  # judge, judge, judge, reflect, reflect, reflect
    assert [p.kind for p in interleave_kinds(ordered)] == ["judge", "reflect"] * 3
    q = AuxQueue(max_age=4)
    q.push(ordered, step=1)
    assert sorted(p.kind for p in q.pop(2, step=1)) == ["judge", "reflect"]


@pytest.mark.parametrize("counts, budget, expected", [
    ([8, 8], 8, [4, 4]),  # equal shares
    ([2, 10], 8, [2, 6]),  # what rank 0 cannot take goes to rank 1
    ([3, 0], 8, [3, 0]),  # fewer than the budget: everything
    ([5, 5, 5], 4, [2, 1, 1]),  # the remainder to the lower ranks
    ([1, 1], 0, [0, 0]),
    ([], 4, []),
])
def test_waterfill_by_hand(counts, budget, expected):
    quotas = waterfill(counts, budget)
    assert quotas == expected
    assert sum(quotas) == min(budget, sum(counts)) and all(q <= c for q, c in zip(quotas, counts))


@pytest.mark.parametrize("j, r, k, expected", [
    (2, 2, 3, (2, 1)),  # j r j
    (3, 1, 3, (2, 1)),  # j r j | j
    (1, 3, 3, (1, 2)),  # j r r | r
    (3, 1, 9, (3, 1)),  # everything
    (0, 3, 2, (0, 2)),
])
def test_interleaved_split_by_hand(j, r, k, expected):
    assert interleaved_split(j, r, k) == expected


def test_plan_take_equals_one_process_for_any_split_over_ranks():
    """Whatever items each rank holds, the ranks together pop what one process holding all of them would."""
    rng = random.Random(0)
    for _ in range(200):
        ranks = rng.choice([1, 2, 3, 8])
        inventories = [{(s, kind): rng.randint(0, 3) for s in (1, 2, 3) for kind in ("judge", "reflect")}
                       for _ in range(ranks)]
        budget = rng.randint(0, 30)
        merged = {key: sum(inv[key] for inv in inventories) for key in inventories[0]}
        one = plan_take([merged], budget)[0]
        plans = plan_take(inventories, budget)
        for key in merged:
            assert sum(p.get(key, 0) for p in plans) == one.get(key, 0), key
            assert all(p.get(key, 0) <= inv[key] for p, inv in zip(plans, inventories))
        assert sum(one.values()) == min(budget, sum(merged.values()))
        newest_taken = [s for (s, _), c in one.items() if c]
        # an older step is touched only when every newer item was taken
        for (s, kind), c in merged.items():
            if newest_taken and s > min(newest_taken):
                assert one.get((s, kind), 0) == c
