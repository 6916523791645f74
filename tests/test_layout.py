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
        np.testing.assert_array_equal(masks.get(mask).attention_bias(patch_nums), io[key])
    var_bias = masks.get("var").attention_bias(patch_nums)
    levels = scales.token_levels(patch_nums)
    np.testing.assert_array_equal(var_bias == 0, levels[:, None] >= levels[None, :])


def test_key_ranges_cover_exactly_the_visible_keys():
    for mask in [*masks.MASKS.values(), masks.Mask("two_previous", 2, "a planted new mask")]:
        bias = mask.attention_bias(PN_256)
        for (q0, q1), (k0, k1) in zip(scales.scale_bounds(PN_256), mask.key_ranges(PN_256)):
            visible = np.nonzero(bias[q0] == 0)[0]
            assert (visible[0], visible[-1] + 1) == (k0, k1)
            assert (bias[q0:q1] == 0).sum() == (q1 - q0) * (k1 - k0)


def test_unknown_mask_is_named():
    with pytest.raises(ValueError, match="unknown attention mask 'causal': choose one of var, markov"):
        masks.get("causal")


def test_a_mask_is_its_window():
    """One number per mask gives what training sees and what sampling carries."""
    assert {name: mask.window for name, mask in masks.MASKS.items()} == {
        "var": None, "markov": 0, "markov_prev": 1}
    for mask in masks.MASKS.values():
        visible = mask.scale_visibility(len(PN_256))
        for si in range(len(PN_256)):
            seen = np.nonzero(visible[si])[0]
            expected_first = 0 if mask.window is None else max(si - mask.window, 0)
            assert (seen[0], seen[-1]) == (expected_first, si)


def test_the_sampler_names_a_window_it_has_no_context_for():
    from srdd_jax.models import ModelSpec
    from srdd_jax.sampling import context, plan
    from srdd_jax.sampling.settings import SamplerSettings

    made = plan.make_plan(ModelSpec(), SamplerSettings())
    planted = made.replace(mask=masks.Mask("two_previous", 2, "a planted new mask"))
    with pytest.raises(ValueError, match="window 2: the sampler has contexts for windows"):
        context.for_plan(None, planted)
