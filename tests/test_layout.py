"""Token layout, attention masks and the Phi index rule."""

import numpy as np
import pytest

from srdd_jax import scales
from srdd_jax.tokenizer.quantizer import phi_index_table
from srdd_jax.transformer import masks

PN_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def test_scale_bounds_match_var():
    bounds = scales.scale_bounds(PN_256)
    assert bounds[-1] == (424, 680) and bounds[6] == (91, 155)
    assert scales.sequence_length(PN_256) == 680
    levels = scales.token_levels(PN_256)
    assert np.bincount(levels).tolist() == [p * p for p in PN_256]


def test_phi_index_table_matches_var():
    # si = 2 and 7 are exact ties decided by float64 rounding in VAR's numpy code.
    assert phi_index_table(4, 10) == (0, 0, 1, 1, 1, 2, 2, 3, 3, 3)
    assert phi_index_table(4, 14) == (0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3)
    assert phi_index_table(1, 10) == (0,) * 10
    assert phi_index_table(0, 6) == tuple(range(6))


def test_mask_biases_match_reference(reference):
    patch_nums = reference["config"]["patch_nums"]
    io = reference["io"]
    for mask, key in [("markov", "bias_markov_self"), ("markov_prev", "bias_markov_prev")]:
        np.testing.assert_array_equal(masks.attention_bias(patch_nums, mask), io[key])
    var_bias = masks.attention_bias(patch_nums, "var")
    levels = scales.token_levels(patch_nums)
    np.testing.assert_array_equal(var_bias == 0, levels[:, None] >= levels[None, :])


def test_key_ranges_cover_exactly_the_visible_keys():
    for mask in masks.MASKS:
        bias = masks.attention_bias(PN_256, mask)
        for (q0, q1), (k0, k1) in zip(scales.scale_bounds(PN_256), masks.key_ranges(PN_256, mask)):
            visible = np.nonzero(bias[q0] == 0)[0]
            assert (visible[0], visible[-1] + 1) == (k0, k1)
            assert (bias[q0:q1] == 0).sum() == (q1 - q0) * (k1 - k0)


def test_unknown_mask_is_named():
    with pytest.raises(ValueError, match="unknown attention mask 'causal'"):
        masks.key_ranges(PN_256, "causal")
