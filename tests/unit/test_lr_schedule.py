import math

import pytest

from spark_vl.trainer.distributed import lr_lambda


def test_warmup_then_cosine_to_floor_and_clamped():
    total, warmup, floor = 100, 10, 0.1
    assert lr_lambda(0, total, warmup, floor) == pytest.approx(0.1)
    assert lr_lambda(9, total, warmup, floor) == pytest.approx(1.0)
    assert lr_lambda(10, total, warmup, floor) == pytest.approx(1.0)
    mid = 10 + 45
    half_way = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi / 2))
    assert lr_lambda(mid, total, warmup, floor) == pytest.approx(half_way)
    assert lr_lambda(100, total, warmup, floor) == pytest.approx(floor)
    # past the planned total (e.g. extra auxiliary phases) the lr stays at the floor, never climbs back
    assert lr_lambda(150, total, warmup, floor) == pytest.approx(floor)
    values = [lr_lambda(s, total, warmup, floor) for s in range(10, 200)]
    assert all(a >= b - 1e-12 for a, b in zip(values, values[1:]))
