"""PSNR and SSIM (evaluation/image_similarity.py) against their definitions, and the editing
evaluation's masks."""

import numpy as np
import pytest

from srdd_jax.evaluation import edit_eval, image_similarity
from srdd_jax.evaluation.spec import EditEvalSpec


def test_psnr_follows_its_definition_over_a_region():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 0.8, (2, 12, 12, 3))
    np.testing.assert_allclose(image_similarity.psnr(a, a + 0.1), [20.0, 20.0])
    assert list(image_similarity.psnr(a, a)) == [image_similarity.PSNR_CAP] * 2
    b = a.copy()
    b[:, :6] += 0.01  # only the top half differs
    region = np.zeros((12, 12))
    region[6:] = 1
    assert list(image_similarity.psnr(a, b, region)) == [image_similarity.PSNR_CAP] * 2
    np.testing.assert_allclose(image_similarity.psnr(a, b, 1 - region), [40.0, 40.0])


def test_ssim_of_one_window_equals_the_weighted_formula():
    """An 11 x 11 image has one window: SSIM is Wang et al.'s formula with Gaussian weights."""
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, (1, 11, 11, 1))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    g = np.exp(-(np.arange(11) - 5) ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    x, y = a[0, ..., 0], b[0, ..., 0]
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy, cxy = (w * x * x).sum() - mx ** 2, (w * y * y).sum() - my ** 2, (w * x * y).sum() - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    want = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    np.testing.assert_allclose(image_similarity.ssim(a, b), [want], rtol=1e-10)
    assert image_similarity.ssim(a, a)[0] == pytest.approx(1.0)


def test_ssim_falls_with_noise_and_needs_eleven_pixels():
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 1, (1, 24, 24, 3))
    scores = [image_similarity.ssim(a, np.clip(a + rng.normal(0, s, a.shape), 0, 1))[0]
              for s in (0.02, 0.1, 0.3)]
    assert 1 > scores[0] > scores[1] > scores[2]
    with pytest.raises(ValueError, match="at least 11 x 11"):
        image_similarity.ssim(a[:, :8, :8], a[:, :8, :8])


def test_edit_masks_keep_what_each_task_gives():
    spec = EditEvalSpec(outpaint_strip=0.25, seed=3)
    centre = edit_eval.keep_masks("inpaint_center", 2, 16, spec, None)
    assert centre.shape == (2, 16, 16) and centre[:, 4:12, 4:12].sum() == 0 and centre.sum() == 2 * 192
    left = edit_eval.keep_masks("outpaint_left", 1, 16, spec, None)[0]
    assert left[:, :4].sum() == 0 and left[:, 4:].min() == 1
    top = edit_eval.keep_masks("outpaint_top", 1, 16, spec, None)[0]
    assert top[:4].sum() == 0 and top[4:].min() == 1
    boxes = edit_eval.keep_masks("inpaint_random", 3, 16, spec, None)
    generated = (1 - boxes).sum(axis=(1, 2))
    assert len(set(generated)) > 1 and all(16 <= g <= 64 for g in generated)
    np.testing.assert_array_equal(boxes, edit_eval.keep_masks("inpaint_random", 3, 16, spec, None))
    with pytest.raises(ValueError, match=r"config\.evaluate\.edit\.tasks has \['blur'\]"):
        EditEvalSpec(tasks=("blur",)).validate()


def test_ssim_of_a_region_without_window_centres_is_nan():
    a = np.random.default_rng(3).uniform(0, 1, (1, 16, 16, 1))
    border = np.ones((16, 16))
    border[4:12, 4:12] = 0  # the 16 px centre box: every window centre (5..10) lies inside it
    assert np.isnan(image_similarity.ssim(a, a, border)[0])
    assert image_similarity.ssim(a, a, 1 - border)[0] == pytest.approx(1.0)
