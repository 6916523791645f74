"""Shared test set-up: 8 host CPU devices, full-precision matmuls, and the PyTorch reference.

The reference folder is $SRDD_VAR_REFERENCE, by default ../shared/fixtures/var_reference/tiny
next to the repository. Every architecture size is read from its config.json, so any fixture made
the same way works.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
# Tests compile the same small programs many times (resumed runs, repeated samplers): cache them.
jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), "srdd_jax_test_xla"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"


def reference_dir() -> Path:
    default = SHARED_DIR / "fixtures" / "var_reference" / "tiny"
    return Path(os.environ.get("SRDD_VAR_REFERENCE", default))


def manifests_path() -> Path:
    return SHARED_DIR / "fixtures" / "var_reference" / "released_checkpoint_manifests.json"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference material not found at {path}: it lives in ../shared beside the "
                    "repository (or set SRDD_VAR_REFERENCE to a fixture folder)")
    return path


@pytest.fixture(scope="session")
def reference():
    """The fixture's config.json, io.npz arrays (NCHW as saved) and raw state dicts."""
    from srdd_jax import weights_io

    folder = require(reference_dir())
    with open(folder / "config.json") as f:
        config = json.load(f)
    io = dict(np.load(folder / "io.npz"))
    return dict(
        folder=folder,
        config=config,
        io=io,
        vae_sd=weights_io.load_state_dict(str(folder / "vae.pth"), "vae"),
        var_sd=weights_io.load_state_dict(str(folder / "var.pth"), "var"),
    )


@pytest.fixture(scope="session")
def converted(reference):
    """(model spec, params) converted from the reference state dicts."""
    from srdd_jax.convert import var_checkpoints

    return var_checkpoints.convert_state_dicts(reference["vae_sd"], reference["var_sd"])


def nhwc(x_BCHW: np.ndarray) -> np.ndarray:
    return np.transpose(x_BCHW, (0, 2, 3, 1))


@pytest.fixture(scope="session")
def tiny_demo_workdir(tmp_path_factory) -> Path:
    """DIR after `python -m srdd_jax.main --config=configs/demo.py:tiny --workdir=DIR` (tokenizer,
    transformer, model/, logs, grids), run once per session: the tests of main and of the
    notebooks share it."""
    from srdd_jax.data import sources

    if not os.path.isdir(sources.FASHION_MNIST_DIR):
        pytest.skip("needs `apt-get install dataset-fashion-mnist` (.ci/run installs it)")
    workdir = tmp_path_factory.mktemp("tiny_demo") / "demo"
    run = subprocess.run([sys.executable, "-m", "srdd_jax.main", "--config=configs/demo.py:tiny",
                          f"--workdir={workdir}"], cwd=REPO_ROOT, env=cli_env(), timeout=900,
                         capture_output=True, text=True)
    (workdir.parent / "console.txt").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, run.stderr[-3000:]
    return workdir


@pytest.fixture(scope="session")
def tiny_var_hub(tmp_path_factory) -> dict:
    """Environment for an offline Hugging Face Hub cache that holds the tiny reference under VAR's
    released names (FoundationVision/var: vae_ch160v4096z32.pth, var_d16.pth), laid out as
    huggingface_hub does, and a srdd_jax cache for converted models shared by the session:
    {HF_HUB_OFFLINE, HF_HUB_CACHE, SRDD_JAX_CACHE}."""
    folder = require(reference_dir())
    root = tmp_path_factory.mktemp("hub")
    repo = root / "hub" / "models--FoundationVision--var"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    shutil.copy(folder / "vae.pth", repo / "snapshots" / revision / "vae_ch160v4096z32.pth")
    shutil.copy(folder / "var.pth", repo / "snapshots" / revision / "var_d16.pth")
    return {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(root / "hub"),
            "SRDD_JAX_CACHE": str(root / "srdd_jax")}


def info_lines_from(console: str, package) -> list[str]:
    """The absl-format INFO lines (`I1204 18:25:34.8 123 file.py:42] ...`) of `console` logged from a
    module of `package` (e.g. orbax.checkpoint), by file name; names srdd_jax also uses are left
    out, as they cannot be told apart."""
    import srdd_jax

    def names(module_dir):
        return {path.name for path in Path(module_dir).rglob("*.py")}

    theirs = names(os.path.dirname(package.__file__)) - names(os.path.dirname(srdd_jax.__file__))
    pattern = re.compile(r"^I\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\]")
    return [line for line in console.splitlines()
            if (match := pattern.match(line)) and match.group(1) in theirs]


def cli_env() -> dict:
    """Environment for `python -m srdd_jax.main` subprocesses: the repository importable, one
    device, and the tests' XLA compilation cache."""
    return dict(os.environ, PYTHONPATH=str(REPO_ROOT), XLA_FLAGS="",
                JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir)



def _largest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def garble(directory: Path, size: int = 4096) -> Path:
    """Overwrites `size` bytes in the middle of the largest file under `directory` (an orbax
    checkpoint's array data) with random bytes; returns the file."""
    path = _largest_file(directory)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + size] = np.random.default_rng(0).integers(0, 256, size, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def truncate(directory: Path) -> Path:
    """Cuts the largest file under `directory` to half its size; returns the file."""
    path = _largest_file(directory)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path
