"""Resize ops against PyTorch's F.interpolate ('area' and 'bicubic', align_corners=False)."""

import numpy as np
import pytest

from srdd_jax.tokenizer import resize

torch = pytest.importorskip("torch", reason="parity with F.interpolate needs the [test] extra")
F = torch.nn.functional

SIZE_PAIRS = [(16, 1), (16, 2), (16, 3), (16, 5), (16, 6), (16, 10), (16, 13), (32, 9), (32, 24),
              (7, 16), (1, 16), (3, 16), (13, 16), (9, 32), (5, 7)]


def _torch_resize(x_BHWC, size, mode):
    x = torch.from_numpy(np.transpose(x_BHWC, (0, 3, 1, 2)).copy())
    return np.transpose(F.interpolate(x, size=size, mode=mode).numpy(), (0, 2, 3, 1))


# Area is exact up to summation order; bicubic/bilinear weights are PyTorch's float32 values, but
# downsampling cubics sum many signed taps, so those agree to a few float32 ulps of the data.
MODES = [("area", resize.area_resize, 1e-6, 0.0), ("bicubic", resize.bicubic_resize, 5e-6, 1e-5),
         ("bilinear", resize.bilinear_resize, 5e-6, 1e-5)]


@pytest.mark.parametrize("mode,ours,atol,rtol", MODES)
@pytest.mark.parametrize("size_in,size_out", SIZE_PAIRS)
def test_resize_matches_torch(mode, ours, atol, rtol, size_in, size_out):
    x = np.random.default_rng(size_in * 100 + size_out).normal(size=(2, size_in, size_in, 3))
    x = x.astype(np.float32)
    np.testing.assert_allclose(np.asarray(ours(x, (size_out, size_out))),
                               _torch_resize(x, (size_out, size_out), mode), rtol=rtol, atol=atol)


def test_area_bins_overlap_like_adaptive_pooling():
    # 16 -> 3 averages [0,6) [5,11) [10,16): rows 5 and 10 are shared by two bins.
    mat = resize.area_matrix(16, 3)
    assert [tuple(np.nonzero(row)[0][[0, -1]]) for row in mat] == [(0, 5), (5, 10), (10, 15)]
    np.testing.assert_allclose(mat.sum(axis=1), 1.0)


def test_non_square_resize_and_bad_sizes():
    x = np.ones((1, 4, 6, 2), np.float32)
    assert resize.bicubic_resize(x, (8, 3)).shape == (1, 8, 3, 2)
    with pytest.raises(ValueError, match="positive"):
        resize.area_matrix(16, 0)
