"""gs:// workdirs: the writers go through etils.epath, checked against a fake bucket.

The fake is epath's own tf.io.gfile backend with gs:// redirected to TensorFlow's in-memory
`ram://` filesystem, so no network or credentials are needed. A writer that treated the URI as a
local path would instead create a `gs:` folder in the working directory, which the fixture forbids.
Orbax is not run here: its arrays go through tensorstore's own GCS driver, and its
CheckpointManager asks google-cloud-storage about the bucket, neither of which this fake reaches.
"""

import io

import numpy as np
import pytest
import tensorflow as tf
from etils.epath import backend
from PIL import Image

from srdd_jax import experiment, experiment_config, image_grids, saved_models
from srdd_jax.modes import specs
from srdd_jax.modes import workdir as workdir_record


def _ram(arg):
    return "ram://" + arg[len("gs://"):] if isinstance(arg, str) and arg.startswith("gs://") else arg


class _RamGfile:
    """tf.io.gfile with gs:// paths sent to ram://."""

    def __getattr__(self, name):
        function = getattr(tf.io.gfile, name)
        return lambda *args, **kwargs: function(*map(_ram, args), **kwargs)


class _RamBackend(backend._TfBackend):
    @property
    def gfile(self):
        return _RamGfile()


@pytest.fixture
def bucket(monkeypatch, tmp_path):
    """A fresh fake bucket's gs:// URI; the working directory must stay free of `gs:`."""
    monkeypatch.delenv("EPATH_USE_TF", raising=False)
    monkeypatch.setattr(backend, "tf_backend", _RamBackend())
    monkeypatch.chdir(tmp_path)
    yield f"gs://{tmp_path.name}"
    assert not (tmp_path / "gs:").exists()


def _read(uri: str) -> bytes:
    with tf.io.gfile.GFile(_ram(uri), "rb") as f:
        return f.read()


def test_grid_and_samples_written_to_gs(bucket):
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    image_grids.save_grid(f"{bucket}/run/samples/grid.png", images, columns=3)
    image_grids.save_samples(f"{bucket}/run/samples/grid.npz", images, np.arange(6), np.ones((6, 5)))
    png = np.asarray(Image.open(io.BytesIO(_read(f"{bucket}/run/samples/grid.png"))))
    np.testing.assert_array_equal(png, image_grids.grid(images, 3))
    npz = np.load(io.BytesIO(_read(f"{bucket}/run/samples/grid.npz")))
    np.testing.assert_array_equal(npz["arr_0"], images)
    np.testing.assert_array_equal(npz["labels"], np.arange(6))


def test_modes_record_their_config_on_gs_and_name_missing_models(bucket):
    config = experiment_config.base_config(experiment_config.tiny_model())
    config.mode = "sample"
    workdir_record.record(f"{bucket}/run", config, specs.model_spec(config.model))
    assert '"mode": "sample"' in _read(f"{bucket}/run/config_sample.json").decode()
    config.init.model = f"{bucket}/no_model"
    with pytest.raises(FileNotFoundError, match=f"{bucket}/no_model/model_config.json"):
        experiment.run(config, f"{bucket}/run2")


def test_model_directory_on_gs_keeps_its_uri(bucket):
    tf.io.gfile.makedirs(_ram(f"{bucket}/model/params"))
    with pytest.raises(FileExistsError, match=f"{bucket}/model already holds a model"):
        saved_models.save_model(f"{bucket}/model", {}, specs.model_spec(experiment_config.tiny_model()))
