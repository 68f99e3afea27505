from collections import Counter

from spark_vl.data.sampler import MixtureSampler


def test_single_source_epochs_are_permutations():
    s = MixtureSampler([10], seed=1)
    first = [s.next()[1] for _ in range(10)]
    second = [s.next()[1] for _ in range(10)]
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10))
    assert first != second and s.epoch() == 2


def test_resume_continues_identically():
    a = MixtureSampler([7, 5], weights=[0.5, 0.5], seed=3)
    for _ in range(9):
        a.next()
    b = MixtureSampler([7, 5], weights=[0.5, 0.5], seed=3)
    b.load_state_dict(a.state_dict())
    assert [a.next() for _ in range(30)] == [b.next() for _ in range(30)]


def test_mixture_follows_weights():
    s = MixtureSampler([100, 1000], weights=[0.8, 0.2], seed=0)
    counts = Counter(s.next()[0] for _ in range(5000))
    assert abs(counts[0] / 5000 - 0.8) < 0.03


def test_no_shuffle_is_in_order():
    s = MixtureSampler([4], seed=0, shuffle=False)
    assert [s.next()[1] for _ in range(6)] == [0, 1, 2, 3, 0, 1]
