"""Checkpoint conversion: released manifests, bad files, and the convert command."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO_ROOT, manifests_path, require

from srdd_jax import models, saved_models, weights_io
from srdd_jax.convert import mapping, var_checkpoints

PN_256 = models.PATCH_NUMS_256


def _shape_only(manifest: dict) -> dict:
    """Zero-stride stand-ins with each key's shape (no memory, even for d30)."""
    return {key: np.broadcast_to(np.float32(0), tuple(shape)) for key, shape in manifest.items()}


@pytest.fixture(scope="module")
def manifests():
    with open(require(manifests_path())) as f:
        return json.load(f)


@pytest.mark.parametrize("name", ["var_d16", "var_d20", "var_d24", "var_d30"])
def test_released_transformer_manifests_map_completely(manifests, name):
    manifest = manifests[name]
    depth = int(name.split("_d")[1])
    spec, params = var_checkpoints.convert_state_dicts(var_sd=_shape_only(manifest))
    assert tuple(spec.patch_nums) == PN_256  # from L = 680 (the stand-in lvl_1L holds zeros)
    tr = spec.transformer
    assert (tr.depth, tr.embed_dim, tr.num_heads, tr.num_classes) == (depth, 64 * depth, depth, 1000)
    assert tr.attn_l2_norm == ("blocks.0.attn.scale_mul_1H11" in manifest)
    assert params["transformer"]["head"]["kernel"].shape == (64 * depth, 4096)
    n_params = sum(x.size for x in _leaves(params))
    n_buffers = sum(int(np.prod(manifest[k])) for k in manifest
                    if mapping.SKIPPED_VAR_BUFFERS.match(k))
    assert n_params == sum(int(np.prod(s)) for s in manifest.values()) - n_buffers


def test_released_tokenizer_manifest_maps_completely(manifests):
    manifest = manifests["vae_ch160v4096z32"]
    spec, params = var_checkpoints.convert_state_dicts(vae_sd=_shape_only(manifest))
    tok = spec.tokenizer
    assert (tok.ch, tok.ch_mult, tok.z_channels, tok.vocab_size, tok.share_quant_resi) == (
        160, (1, 1, 2, 2, 4), 32, 4096, 4)
    assert sum(x.size for x in _leaves(params)) == 108_948_355


def _leaves(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _leaves(value)
    else:
        yield tree


def test_missing_unknown_and_misshaped_keys_are_named(reference):
    sd = dict(reference["var_sd"])
    del sd["blocks.1.ffn.fc2.bias"]
    sd["blocks.0.attn.extra_gate"] = np.zeros(3, np.float32)
    sd["head.bias"] = np.zeros(7, np.float32)
    with pytest.raises(mapping.CheckpointMismatchError) as err:
        var_checkpoints.convert_state_dicts(var_sd=sd)
    message = str(err.value)
    assert "blocks.0.attn.extra_gate" in message
    assert "head.bias (7,)" in message
    assert "blocks.1.ffn.fc2.bias" in message  # the missing slice of blocks/ffn/fc2/bias


def test_wrong_file_kind_is_named(reference):
    with pytest.raises(mapping.CheckpointMismatchError, match="VAR transformer state dict"):
        var_checkpoints.convert_state_dicts(var_sd=reference["vae_sd"])
    with pytest.raises(mapping.CheckpointMismatchError, match="VAR tokenizer"):
        var_checkpoints.convert_state_dicts(vae_sd=reference["var_sd"])


def test_tokenizer_and_transformer_must_agree(reference):
    vae_sd = dict(reference["vae_sd"])
    codebook = vae_sd["quantize.embedding.weight"]
    vae_sd["quantize.embedding.weight"] = np.concatenate([codebook, codebook])
    with pytest.raises(mapping.CheckpointMismatchError, match="vocab_size"):
        var_checkpoints.convert_state_dicts(vae_sd, reference["var_sd"])


def test_corrupt_and_missing_files_give_clear_errors(reference, tmp_path):
    data = (reference["folder"] / "var.pth").read_bytes()
    truncated = tmp_path / "var_truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or incomplete"):
        weights_io.load_state_dict(str(truncated), "var")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        weights_io.load_state_dict(str(tmp_path / "nope.pth"), "var")


def test_training_checkpoint_layout_is_unwrapped(reference, tmp_path):
    import torch

    wrapped = {"epoch": 3, "trainer": {"var_wo_ddp": {k: torch.from_numpy(np.array(v))
                                                      for k, v in reference["var_sd"].items()}}}
    path = tmp_path / "ar-ckpt-last.pth"
    torch.save(wrapped, path)
    sd = weights_io.load_state_dict(str(path), "var")
    np.testing.assert_array_equal(sd["head.weight"], reference["var_sd"]["head.weight"])


def test_convert_command_round_trip(reference, converted, tmp_path):
    out = tmp_path / "model"
    folder = reference["folder"]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    cmd = [sys.executable, "-m", "srdd_jax.convert", f"--vae={folder / 'vae.pth'}",
           f"--var={folder / 'var.pth'}", f"--out={out}", "--mask=markov"]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=600)
    params, spec = saved_models.load_model(str(out))
    assert spec.transformer.mask == "markov"
    _, expected = converted
    assert jax.tree.structure(params) == jax.tree.structure(expected)
    jax.tree.map(lambda got, want: np.testing.assert_array_equal(np.asarray(got), want),
                 params, expected)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode != 0 and "already exists" in second.stderr
    # Any existing directory is refused before anything is read (here: no such .pth).
    workdir = tmp_path / "a_workdir"
    workdir.mkdir()
    (workdir / "config.json").write_text("{}")
    refused = subprocess.run([sys.executable, "-m", "srdd_jax.convert", "--vae=missing.pth",
                              f"--out={workdir}"], env=env, capture_output=True, text=True,
                             timeout=600)
    assert refused.returncode != 0 and f"{workdir} already exists" in refused.stderr
    assert "missing.pth" not in refused.stderr
    assert (workdir / "config.json").read_text() == "{}"
