import numpy as np

from evaluator.splits import public_private_split


def test_split_is_seeded_disjoint_and_complete():
    public, private = public_private_split(100, public_fraction=0.3, seed=42)
    assert len(public) == 30 and len(private) == 70
    assert set(public).isdisjoint(private) and set(public) | set(private) == set(range(100))
    again = public_private_split(100, public_fraction=0.3, seed=42)
    assert np.array_equal(public, again[0])
    assert not np.array_equal(public, public_private_split(100, public_fraction=0.3, seed=43)[0])
    everything, nothing = public_private_split(10, public_fraction=1.0, seed=0)
    assert len(everything) == 10 and len(nothing) == 0
