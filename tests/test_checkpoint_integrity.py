"""Checkpoints you can trust: fingerprints, damaged model directories and token caches, and the
command line's one error for damaged or incompatible checkpoints."""

import re
import shutil
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from conftest import REPO_ROOT, cli_env, garble, truncate
from jax.sharding import NamedSharding, PartitionSpec

from srdd_jax import errors, experiment_config, fingerprints, parallel, saved_models
from srdd_jax.data import tokens
from srdd_jax.modes import specs


def _arrays() -> dict:
    rng = np.random.default_rng(0)
    return {"kernel": rng.normal(size=(64, 48)).astype(np.float32),
            "tokens": rng.integers(0, 4096, (10, 7)).astype(np.int16),
            "scale": np.float32(3.0),
            "half": rng.normal(size=(6,)).astype(jax.numpy.bfloat16)}


def test_fingerprint_is_the_same_for_any_placement(monkeypatch):
    host = _arrays()
    record = fingerprints.tree_fingerprint(host)
    assert set(record) == {"kernel", "tokens", "scale", "half"}
    assert record["kernel"]["shape"] == [64, 48] and record["tokens"]["dtype"] == "int16"
    mesh = parallel.make_mesh(2, 4) if jax.device_count() >= 8 else parallel.make_mesh()
    placed = {"kernel": jax.device_put(host["kernel"], NamedSharding(mesh, PartitionSpec("data", "fsdp"))),
              "tokens": jax.device_put(host["tokens"], NamedSharding(mesh, PartitionSpec(None, None))),
              "scale": jax.numpy.asarray(host["scale"]), "half": jax.numpy.asarray(host["half"])}
    assert fingerprints.tree_fingerprint(placed) == record
    # Hashed in place, as arrays on accelerators or spread over processes are.
    monkeypatch.setattr(fingerprints, "_on_host", lambda leaf: False)
    assert fingerprints.tree_fingerprint(placed) == record
    # Host arrays in other pieces (the kernel array spans pieces of all three sizes).
    monkeypatch.setattr(fingerprints, "PIECE_SIZES", (1000, 60, 16))
    monkeypatch.setattr(fingerprints, "_on_host", lambda leaf: True)
    assert fingerprints.tree_fingerprint(host) == record


def test_fingerprint_catches_one_changed_bit_and_moved_values():
    host = _arrays()
    record = fingerprints.tree_fingerprint(host)
    flipped = dict(host, kernel=host["kernel"].copy())
    flipped["kernel"].view(np.uint32)[17, 3] ^= 1
    assert fingerprints.mismatches(record, fingerprints.tree_fingerprint(flipped)) == [
        f"kernel: checksum {fingerprints.tree_fingerprint(flipped)['kernel']['checksum']}, "
        f"recorded {record['kernel']['checksum']}"]
    swapped = dict(host, tokens=host["tokens"][::-1].copy())
    assert [p.split(":")[0] for p in fingerprints.mismatches(
        record, fingerprints.tree_fingerprint(swapped))] == ["tokens"]
    nan = dict(host, kernel=np.where(np.arange(48) == 5, np.nan, host["kernel"]).astype(np.float32))
    found = fingerprints.tree_fingerprint(nan)
    assert fingerprints.nonfinite_arrays(found) == ["kernel"]
    assert "(64 non-finite values)" in fingerprints.mismatches(record, found)[0]
    reshaped = dict(host, kernel=host["kernel"].reshape(48, 64))
    assert fingerprints.mismatches(record, fingerprints.tree_fingerprint(reshaped)) == [
        "kernel: float32(48, 64), recorded float32(64, 48)"]


def test_model_directory_with_garbled_values_is_refused_naming_the_array(tmp_path):
    spec = specs.model_spec(experiment_config.tiny_model())
    params = {"transformer": {"head": {"kernel": np.random.default_rng(1).normal(
        size=(512, 1024)).astype(np.float32)}}}
    saved_models.save_model(str(tmp_path / "model"), params, spec)
    loaded, _ = saved_models.load_model(str(tmp_path / "model"))
    np.testing.assert_array_equal(loaded["transformer"]["head"]["kernel"],
                                  params["transformer"]["head"]["kernel"])
    garble(tmp_path / "model" / "params", size=64)  # inside the array's bytes: other values
    with pytest.raises(errors.DamagedCheckpointError,
                       match=r"model/params does not match its integrity record: "
                             r"transformer/head/kernel: checksum [0-9a-f]{16}, recorded"):
        saved_models.load_model(str(tmp_path / "model"))


def test_model_directory_without_files_names_them(tmp_path):
    with pytest.raises(errors.MissingFileError, match=r"nothing/model_config\.json not found"):
        saved_models.load_model(str(tmp_path / "nothing"))


def test_token_cache_is_verified_when_loaded(tmp_path):
    directory = str(tmp_path / "tokens")
    rng = np.random.default_rng(0)
    meta = {"tokenizer": {"vocab_size": 4096}, "patch_nums": [1, 2], "params_sha256": "",
            "class_names": ["a"]}
    tokens_NL = rng.integers(0, 4096, (300, 5)).astype(np.int32)
    tokens.write_cache(directory, tokens_NL, np.zeros(300, np.int32), meta)
    cache = tokens.load_cache(directory)
    np.testing.assert_array_equal(cache.tokens, tokens_NL)
    path = tmp_path / "tokens" / tokens.TOKENS_FILE
    data = bytearray(path.read_bytes())
    data[-7] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(errors.DamagedCheckpointError,
                       match=r"does not match the fingerprints in its meta\.json: tokens: checksum"):
        tokens.load_cache(directory)
    path.write_bytes(bytes(data[:len(data) // 2]))
    with pytest.raises(errors.DamagedCheckpointError,
                       match=r"tokens does not load \(tokens\.npy: ValueError: mmap length"):
        tokens.load_cache(directory)


# -------------------------------------------------------------------------------- command line
def _main(workdir, *flags_, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "srdd_jax.main", "--config=configs/demo.py:tiny",
                           f"--workdir={workdir}", *flags_], cwd=REPO_ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def _error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def test_sample_from_garbled_model_exits_naming_the_array(tiny_demo_workdir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_demo_workdir / "model", model)
    garble(model / "params")
    result = _main(tmp_path / "run", "--config.mode=sample", f"--config.init.model={model}")
    assert result.returncode == 1, result.stderr[-3000:]
    [error] = _error_lines(result)
    # Garbled bytes either decode to other values (the checksums catch them) or fail to decode.
    assert re.search(r"(does not match its integrity record: |could not be read \(array )"
                     r"(tokenizer|transformer)/\S+", error), error
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "samples").exists()


def test_truncated_file_gives_one_error_and_no_background_noise(tiny_demo_workdir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_demo_workdir / "model", model)
    truncate(model / "params")
    result = _main(tmp_path / "run", "--config.mode=sample", f"--config.init.model={model}")
    assert result.returncode == 1
    [error] = _error_lines(result)
    assert f"{model}/params could not be read (array " in error and "save or convert" in error
    assert result.stderr.count("Traceback") == 0 and "Event loop is closed" not in result.stderr
    debug = _main(tmp_path / "run", "--config.mode=sample", f"--config.init.model={model}",
                  "--debug")
    assert debug.returncode == 1 and debug.stderr.count("Traceback (most recent call last)") >= 1


def test_changed_model_in_an_existing_workdir_is_refused_at_start_up(tiny_demo_workdir, tmp_path):
    workdir = tmp_path / "demo"
    shutil.copytree(tiny_demo_workdir, workdir)
    result = _main(workdir, "--config.model.transformer.depth=3", timeout=300)
    assert result.returncode == 1
    [error] = _error_lines(result)
    assert f"{workdir}/transformer holds checkpoints of another model" in error
    assert "model.transformer.depth: 2 in checkpoint 4, 3 now" in error
    assert "--workdir=NEW_DIR" in error and f"--config.init.transformer={workdir}/model" in error
    assert "Traceback" not in result.stderr and "step memory" not in result.stderr  # no training


def test_console_drops_only_the_leftovers_of_a_failed_orbax_read(monkeypatch):
    """After one failed read, orbax's abandoned array reads and tensorstore's callbacks on its
    closed loop raise where nothing can catch them; main's hook drops exactly those."""
    from srdd_jax import main

    async def _read_array_index_and_device_put():
        raise Exception("Encountered error while reading array index")

    async def other_work():
        return None

    printed = []
    monkeypatch.setattr(sys, "__unraisablehook__", printed.append)
    leftovers = [(_read_array_index_and_device_put(), Exception("Encountered error")),
                 (None, RuntimeError("Event loop is closed"))]
    others = [(other_work(), Exception("a real failure")), (None, RuntimeError("another"))]
    for coroutine, error in leftovers + others:
        main._drop_event_loop_noise(types.SimpleNamespace(
            exc_type=type(error), exc_value=error, exc_traceback=None, err_msg=None, object=coroutine))
        if coroutine is not None:
            coroutine.close()
    assert [u.exc_value for u in printed] == [error for _, error in others]
