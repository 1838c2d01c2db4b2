import math

import numpy as np
import pytest

from evaluator.federated.updates import (
    MODULUS,
    Layout,
    clip_l2,
    dequantize,
    distributed_noise_std,
    flatten,
    gaussian_noise,
    l2_norm,
    max_bits_for_sites,
    quantization_error_bound,
    quantize_stochastic,
    unflatten,
)


def _weights(rng):
    return {
        "layer2.weight": rng.normal(size=(3, 4)).astype(np.float32),
        "layer1.bias": rng.normal(size=(5,)).astype(np.float16),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "layer1.weight": rng.normal(size=(5, 2, 2)).astype(np.float64),
    }


def test_flatten_orders_by_name_and_unflatten_round_trips_names_shapes_dtypes():
    weights = _weights(np.random.default_rng(0))
    vector, layout = flatten(weights)
    assert vector.dtype == np.float64 and vector.shape == (1 + 5 + 20 + 12,)
    assert layout.names == tuple(sorted(weights))
    back = unflatten(vector, layout)
    assert list(back) == sorted(weights)
    for name, array in weights.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        np.testing.assert_array_equal(back[name], array)


def test_layout_serializes_to_json_compatible_dict():
    _, layout = flatten(_weights(np.random.default_rng(1)))
    assert Layout.from_dict(layout.to_dict()) == layout


def test_unflatten_refuses_a_vector_of_the_wrong_length():
    vector, layout = flatten({"a": np.ones(3)})
    with pytest.raises(ValueError, match="layout needs"):
        unflatten(vector[:2], layout)


def test_flatten_refuses_nothing_and_non_numeric():
    with pytest.raises(ValueError):
        flatten({})
    with pytest.raises(ValueError, match="non-numeric"):
        flatten({"a": np.array(["x"])})


@pytest.mark.parametrize("scale", [1e-3, 0.5, 1.0, 3.0, 1e6])
@pytest.mark.parametrize("max_norm", [1e-2, 1.0, 7.5])
def test_clip_bound_holds_and_short_updates_are_unchanged(scale, max_norm):
    rng = np.random.default_rng(2)
    for dtype in (np.float64, np.float32):
        update = (rng.normal(size=1000) * scale).astype(dtype)
        clipped, norm = clip_l2(update, max_norm)
        assert norm == pytest.approx(l2_norm(update))
        assert l2_norm(clipped) <= max_norm + 1e-6
        if norm <= max_norm:
            np.testing.assert_array_equal(clipped, update.astype(np.float64))
        else:
            assert l2_norm(clipped) == pytest.approx(max_norm, rel=1e-12)
            # direction is preserved
            np.testing.assert_allclose(clipped * norm / max_norm, update, rtol=1e-6)


def test_clip_refuses_nan_and_inf_which_would_otherwise_pass_unclipped():
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="non-finite"):
            clip_l2(np.array([1.0, bad]), 1.0)
    with pytest.raises(ValueError):
        clip_l2(np.ones(3), 0.0)


def test_clip_does_not_modify_its_input():
    update = np.full(4, 10.0)
    clip_l2(update, 1.0)
    assert np.all(update == 10.0)


def test_distributed_noise_std_is_exactly_z_c_over_sqrt_m():
    assert distributed_noise_std(1.1, 2.0, 4) == 1.1 * 2.0 / 2.0
    for z, c, m in [(0.5, 1.0, 3), (1.0, 0.1, 5), (2.3, 4.0, 17)]:
        std = distributed_noise_std(z, c, m)
        assert std == z * c / math.sqrt(m)
        # m sites' independent noise sums to variance m * std^2 = (z C)^2
        assert math.isclose(m * std**2, (z * c) ** 2, rel_tol=1e-12)
    assert distributed_noise_std(0.0, 1.0, 3) == 0.0
    with pytest.raises(ValueError):
        distributed_noise_std(1.0, 1.0, 0)


def test_gaussian_noise_empirical_std_matches_and_sum_over_sites_has_std_zc():
    z, c, m, n = 1.3, 0.7, 5, 200_000
    std = distributed_noise_std(z, c, m)
    rng = np.random.default_rng(3)
    noise = gaussian_noise((m, n), std, rng)
    assert abs(noise.mean()) < 5 * std / math.sqrt(m * n)
    assert noise.std() == pytest.approx(std, rel=0.01)
    assert noise.sum(axis=0).std() == pytest.approx(z * c, rel=0.01)


def test_zero_std_gives_zeros_and_negative_std_is_refused():
    rng = np.random.default_rng(0)
    assert np.all(gaussian_noise(5, 0.0, rng) == 0)
    with pytest.raises(ValueError):
        gaussian_noise(5, -1.0, rng)


def test_max_bits_for_sites():
    assert max_bits_for_sites(1) == 32
    assert max_bits_for_sites(3) == 30
    assert max_bits_for_sites(4) == 30
    assert max_bits_for_sites(5) == 29
    assert max_bits_for_sites(1000) == 22


def test_stochastic_quantization_is_unbiased():
    rng = np.random.default_rng(4)
    c, bits = 1.0, 4  # coarse grid so rounding error is visible
    x = rng.uniform(-c, c, size=50)
    draws = 20_000
    estimates = np.stack(
        [
            dequantize(
                quantize_stochastic(x, clip_norm=c, bits=bits, rng=rng), clip_norm=c, bits=bits, n_summed=1
            )
            for _ in range(draws)
        ]
    )
    step = 2 * c / (2**bits - 1)
    # per-value rounding error has std <= step/2; the mean over draws shrinks it by sqrt(draws)
    assert np.all(np.abs(estimates.mean(axis=0) - x) < 5 * (step / 2) / math.sqrt(draws))
    assert np.all(np.abs(estimates - x) < step + 1e-12)


def test_quantization_error_bound_for_a_sum():
    rng = np.random.default_rng(5)
    c, bits, n = 2.0, 16, 5
    xs = rng.uniform(-c, c, size=(n, 10_000))
    total = sum(quantize_stochastic(x, clip_norm=c, bits=bits, rng=rng).astype(np.int64) for x in xs)
    error = np.abs(dequantize(total, clip_norm=c, bits=bits, n_summed=n) - xs.sum(axis=0))
    assert error.max() <= quantization_error_bound(clip_norm=c, bits=bits, n_summed=n)
    assert quantization_error_bound(clip_norm=c, bits=bits, n_summed=n) == n * 2 * c / (2**bits - 1)


def test_quantization_clamps_values_outside_the_range():
    rng = np.random.default_rng(6)
    q = quantize_stochastic(np.array([-5.0, 5.0]), clip_norm=1.0, bits=8, rng=rng)
    assert q.tolist() == [0, 255]


@pytest.mark.parametrize("n_max", [3, 5, 16, 17, 1000])
def test_no_wrap_for_n_max_sites_at_the_extremes(n_max):
    bits = max_bits_for_sites(n_max)
    rng = np.random.default_rng(7)
    c = 1.0
    top = quantize_stochastic(np.full(4, c), clip_norm=c, bits=bits, rng=rng, n_max=n_max)
    bottom = quantize_stochastic(np.full(4, -c), clip_norm=c, bits=bits, rng=rng, n_max=n_max)
    assert top.tolist() == [2**bits - 1] * 4 and bottom.tolist() == [0] * 4
    # the sum modulo 2**32 (what secure aggregation computes) equals the true integer sum
    wrapped = np.zeros(4, dtype=np.uint32)
    for _ in range(n_max):
        wrapped += top
    assert int(wrapped[0]) == n_max * (2**bits - 1) < MODULUS
    np.testing.assert_allclose(dequantize(wrapped, clip_norm=c, bits=bits, n_summed=n_max), n_max * c)
    np.testing.assert_allclose(dequantize(bottom * 0, clip_norm=c, bits=bits, n_summed=n_max), -n_max * c)
    # one more bit would wrap
    with pytest.raises(ValueError, match="wrap"):
        quantize_stochastic(np.zeros(1), clip_norm=c, bits=bits + 1, rng=rng, n_max=n_max)
    with pytest.raises(ValueError, match="wrapped"):
        dequantize(wrapped, clip_norm=c, bits=bits + 1, n_summed=n_max)


def test_quantize_refuses_bad_parameters():
    rng = np.random.default_rng(0)
    for bits in (0, 32, 2.5):
        with pytest.raises(ValueError):
            quantize_stochastic(np.zeros(2), clip_norm=1.0, bits=bits, rng=rng)
    with pytest.raises(ValueError):
        quantize_stochastic(np.array([np.nan]), clip_norm=1.0, bits=8, rng=rng)


def test_round_trips_through_a_real_safetensors_file(tmp_path):
    from safetensors.numpy import load_file, save_file

    weights = {k: v for k, v in _weights(np.random.default_rng(8)).items() if k != "bn.num_batches_tracked"}
    save_file(weights, tmp_path / "w.safetensors")
    loaded = load_file(tmp_path / "w.safetensors")
    vector, layout = flatten(loaded)
    back = unflatten(vector, layout)
    save_file(back, tmp_path / "back.safetensors")
    assert (tmp_path / "w.safetensors").read_bytes() == (tmp_path / "back.safetensors").read_bytes()
