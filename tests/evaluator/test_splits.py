import numpy as np
import pytest

from evaluator.splits import public_private_split, split_sizes


def test_split_is_seeded_disjoint_and_complete():
    public, private = public_private_split(100, public_fraction=0.3, seed=42)
    assert len(public) == 30 and len(private) == 70
    assert set(public).isdisjoint(private) and set(public) | set(private) == set(range(100))
    again = public_private_split(100, public_fraction=0.3, seed=42)
    assert np.array_equal(public, again[0])
    assert not np.array_equal(public, public_private_split(100, public_fraction=0.3, seed=43)[0])
    everything, nothing = public_private_split(10, public_fraction=1.0, seed=0)
    assert len(everything) == 10 and len(nothing) == 0


def _drawn(n_rows: int, public_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The split as it was always drawn: a seeded permutation, cut, each part sorted."""
    order = np.random.default_rng(seed).permutation(n_rows)
    n_public = n_rows if public_fraction >= 1.0 else max(1, min(n_rows - 1, round(public_fraction * n_rows)))
    return np.sort(order[:n_public]), np.sort(order[n_public:])


def test_split_and_sizes_match_the_drawn_split():
    # The all-public fast path and the counts-only helper give exactly what the permutation gives.
    for n_rows in (0, 1, 2, 7, 100, 1001):
        for fraction in (0.01, 0.3, 0.5, 0.99, 1.0):
            for seed in (0, 5):
                public, private = public_private_split(n_rows, public_fraction=fraction, seed=seed)
                want_public, want_private = _drawn(n_rows, fraction, seed)
                assert np.array_equal(public, want_public) and np.array_equal(private, want_private)
                assert public.dtype == want_public.dtype and private.dtype == want_private.dtype
                assert split_sizes(n_rows, public_fraction=fraction) == (len(public), len(private))


def test_sizes_refuse_a_fraction_outside_the_range():
    for fraction in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError):
            split_sizes(10, public_fraction=fraction)
