"""The FID Inception-v3 port against torch-fidelity's module (random weights) and its loader."""

import importlib
import importlib.util
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from srdd_jax import parallel
from srdd_jax.evaluation import features, inception, inception_weights


def _torch_fidelity_inception():
    """torch-fidelity's Inception module, imported without the package `__init__` (which imports
    every feature extractor, CLIP's needing torchvision)."""
    if "torch_fidelity" not in sys.modules:
        spec = importlib.util.find_spec("torch_fidelity")
        if spec is None:
            pytest.skip("torch-fidelity is not installed (pip install torch-fidelity --no-deps); "
                        "it is the parity reference for the FID Inception-v3")
        sys.modules["torch_fidelity"] = importlib.util.module_from_spec(spec)  # not executed
    return importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")


@pytest.fixture(scope="module")
def torch_reference(tmp_path_factory):
    """(torch-fidelity InceptionV3 with He-initialised weights and random BN statistics, .pth)."""
    torch = pytest.importorskip("torch")
    tf_inception = _torch_fidelity_inception()
    # Skip its weight download/load: the weights are re-initialised below.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tf_inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict",
                      lambda self, state, *args, **kwargs: None)
        net = tf_inception.FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased", "logits"])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (2 / fan_in) ** 0.5)
            elif isinstance(module, torch.nn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(0.5 + torch.rand(c, generator=gen))
                module.bias.copy_(0.1 * torch.randn(c, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            elif isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / 2048 ** 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen))
    path = tmp_path_factory.mktemp("inception") / "random_inception.pth"
    torch.save(net.state_dict(), path)
    return net, str(path)


def _rel_err(ours, ref):
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def test_inception_matches_torch_fidelity(torch_reference):
    import torch

    net, path = torch_reference
    images = np.random.default_rng(0).integers(0, 256, size=(2, 40, 52, 3), dtype=np.uint8)
    with torch.no_grad():
        pool, logits_unbiased, logits = (t.numpy() for t in net(torch.from_numpy(images).permute(0, 3, 1, 2)))
    mesh = parallel.make_mesh(devices=jax.devices()[:2])  # one image per device
    out = features.InceptionFeatures(path, mesh=mesh, batch_size=2)(images)
    assert out["pool"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    for key, ref in (("pool", pool), ("logits", logits), ("logits_unbiased", logits_unbiased)):
        err = _rel_err(out[key], ref)
        assert err < 1e-4, f"{key}: max error {err:.2e} of the largest value"


@pytest.mark.parametrize("size_in", [(7, 11), (40, 52), (299, 299)])
def test_tf1_bilinear_resize_matches_torch_fidelity(size_in):
    import torch

    _torch_fidelity_inception()
    resize = importlib.import_module("torch_fidelity.interpolate_compat_tensorflow")
    x = np.random.default_rng(1).uniform(0, 255, size=(1, *size_in, 2)).astype(np.float32)
    ref = resize.interpolate_bilinear_2d_like_tensorflow1x(
        torch.from_numpy(x).permute(0, 3, 1, 2), size=(299, 299), align_corners=False)
    ours = np.asarray(inception.resize_bilinear_tf1(x, (299, 299)))
    np.testing.assert_allclose(ours, ref.permute(0, 2, 3, 1).numpy(), rtol=0, atol=1e-4)


def test_grayscale_is_tiled_to_rgb():
    gray = np.random.default_rng(2).integers(0, 256, size=(1, 9, 9, 1), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(inception.preprocess(gray)),
                                  np.asarray(inception.preprocess(np.repeat(gray, 3, -1))))


def test_weights_map_every_tensor_and_round_trip_npz(torch_reference, tmp_path):
    _, path = torch_reference
    state = inception_weights.read_state_dict(path)
    params = inception_weights.state_dict_to_params(state)
    n_convs = sum(k.endswith(".conv.weight") for k in state)
    shapes = inception_weights.param_shapes()
    assert len(shapes) == 2 * n_convs + 2  # kernel + bias per conv, fc kernel and bias
    npz = tmp_path / "inception.npz"
    inception_weights.convert(path, str(npz))
    from_npz = inception_weights.load_params(str(npz))
    assert np.array_equal(from_npz["Mixed_7c"]["branch_pool"]["kernel"],
                          params["Mixed_7c"]["branch_pool"]["kernel"])


def test_weights_errors_name_the_keys(torch_reference, tmp_path):
    state = inception_weights.read_state_dict(torch_reference[1])
    bad = dict(state)
    del bad["Mixed_5b.branch1x1.bn.running_var"]
    bad["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
    bad["fc.bias"] = np.zeros(1000, np.float32)
    with pytest.raises(ValueError) as err:
        inception_weights.state_dict_to_params(bad)
    for fragment in ("Mixed_5b.branch1x1.bn.running_var", "AuxLogits.fc.weight", "fc.bias: (1000,)"):
        assert fragment in str(err.value)
    with pytest.raises(FileNotFoundError, match="releases/download/v0.2.0"):
        inception_weights.read_state_dict(str(tmp_path / "pt_inception-2015-12-05-6726825d.pth"))


def test_command_line_scores_samples_against_a_cached_reference_folder(torch_reference, tmp_path):
    from srdd_jax.evaluation.__main__ import score

    _, path = torch_reference
    rng = np.random.default_rng(1)
    reference = tmp_path / "reference"
    reference.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(reference / f"{i}.png")
    np.savez(tmp_path / "samples.npz", rng.integers(0, 256, (4, 40, 52, 3), dtype=np.uint8))
    mesh = parallel.make_mesh(devices=jax.devices()[:2])  # the parity test's program: cached
    args = (str(tmp_path / "samples.npz"), str(reference), path, str(tmp_path / "cache"))
    out = score(*args, batch_size=2, pr_k=2, mesh=mesh)
    assert out["samples"] == out["reference"] == 4
    assert out["fid_inception"] > 0 and out["is_inception"] >= 1.0
    assert len(list((tmp_path / "cache").glob("*_inception.npz"))) == 1
    for image in reference.iterdir():  # the second call reads the cached statistics only
        image.unlink()
    assert score(*args, batch_size=2, pr_k=2, mesh=mesh) == out
