"""Runs that survive the cloud: a stop requested by SIGTERM saves the step reached and resumes with
the same losses; one run per workdir; a full disk is one line and loses nothing; every known
failure of the command line is one `error:` line without a traceback."""

import errno
import os
import signal
import subprocess
import sys
import time

import flax.linen as nn
import jax
import numpy as np
import pytest
from conftest import REPO_ROOT, cli_env
from PIL import Image
from test_training import Recorder, _config, _train_transformer

from srdd_jax import errors, experiment_config, models, parallel, preemption, workdir_lock
from srdd_jax.data import sources
from srdd_jax.modes import specs
from srdd_jax.sampling import generation
from srdd_jax.sampling.sampler import Sampler
from srdd_jax.sampling.settings import SamplerSettings
from srdd_jax.training import run_checkpoints


class StopRequestedAt(Recorder):
    """A writer that requests a stop, as SIGTERM would, when step `step` is logged."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def write_scalars(self, step, scalars):
        super().write_scalars(step, scalars)
        if step == self.step:
            preemption.request("SIGTERM")


def _six_steps_checkpoint_every_two():
    cfg = _config()
    cfg.training.checkpoint_every = 2
    return cfg, parallel.make_mesh(1, 1, jax.devices()[:1])


def _steps_on_disk(run_dir) -> list[int]:
    return sorted(int(p.name) for p in run_dir.iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def uninterrupted_losses(tmp_path_factory):
    cfg, mesh = _six_steps_checkpoint_every_two()
    full = Recorder()
    _train_transformer(cfg, tmp_path_factory.mktemp("uninterrupted"), mesh, full)
    return full.scalars


def test_stop_request_saves_the_step_reached_and_the_run_resumes_with_the_same_losses(
        uninterrupted_losses, tmp_path):
    cfg, mesh = _six_steps_checkpoint_every_two()
    with preemption.handle_signals(), pytest.raises(errors.PreemptedError) as stopped:
        _train_transformer(cfg, tmp_path, mesh, StopRequestedAt(3))
    assert stopped.value.exit_code == errors.PREEMPTED_EXIT_CODE == 75
    message = str(stopped.value)
    assert (f"transformer: stopped by SIGTERM after step 3: checkpoint 3 is saved in "
            f"{tmp_path / 'transformer'}; rerun the same command to resume") in message
    assert _steps_on_disk(tmp_path / "transformer") == [2, 3]  # 3 is off the every-2 schedule
    assert not preemption.requested()  # the handlers' block has ended
    resumed = Recorder()
    _train_transformer(cfg, tmp_path, mesh, resumed)
    assert min(resumed.scalars) == 4  # resumed after step 3, with its data position
    for step in (4, 5, 6):
        assert resumed.scalars[step]["loss"] == pytest.approx(
            uninterrupted_losses[step]["loss"], abs=1e-5)


def test_a_save_that_does_not_finish_in_time_names_the_checkpoint_a_rerun_resumes_from(tmp_path,
                                                                                       monkeypatch):
    cfg, mesh = _six_steps_checkpoint_every_two()
    cfg.training.preemption_save_seconds = 0.5
    real_save = run_checkpoints.save

    def slow_save(manager, step, *args):
        if step == 3:  # checkpoint 2 is complete; the save the stop asks for never is in time
            manager.wait_until_finished()
            monkeypatch.setattr(run_checkpoints, "wait_for_saves", lambda manager, seconds: False)
            return True
        return real_save(manager, step, *args)

    monkeypatch.setattr(run_checkpoints, "save", slow_save)
    with preemption.handle_signals(), pytest.raises(errors.PreemptedError) as stopped:
        _train_transformer(cfg, tmp_path, mesh, StopRequestedAt(3))
    assert ("its checkpoint did not finish within 0.5 s "
            "(config.training.preemption_save_seconds); a rerun resumes from checkpoint 2") in str(
                stopped.value)


def test_a_second_signal_stops_at_once():
    script = ("import os, signal, time\n"
              "from srdd_jax import preemption\n"
              "with preemption.handle_signals():\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    print('requested:', preemption.requested(), flush=True)\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    time.sleep(30)\n"
              "    print('still running', flush=True)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=cli_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGTERM, result.stderr[-2000:]
    assert result.stdout == "requested: SIGTERM\n"


def test_sampling_stops_between_batches_and_returns_nothing():
    spec = specs.model_spec(experiment_config.tiny_model())
    params = {which: nn.unbox(models.Model(spec).init_params(jax.random.key(i), which))
              for i, which in enumerate(("tokenizer", "transformer"))}
    sampler = Sampler(spec, SamplerSettings(cfg=1.5), mask="markov")
    labels = np.arange(6, dtype=np.int32)
    with preemption.handle_signals():
        preemption.request("SIGTERM")  # arrives during the first batch
        with pytest.raises(errors.PreemptedError) as stopped:
            generation.generate(sampler, params, labels, jax.random.key(0), batch_size=2)
    assert "sampling: stopped by SIGTERM after 2 of 6 images; nothing was written" in str(
        stopped.value)


# ----------------------------------------------------------------------------- workdir lock
def test_lock_refuses_a_second_writer_naming_the_holder_and_lets_readers_run(tmp_path):
    with workdir_lock.hold(str(tmp_path), "train", writes_shared_state=True):
        with pytest.raises(errors.WorkdirHeldError) as held:
            with workdir_lock.hold(str(tmp_path), "tokenize", writes_shared_state=True):
                pass
        message = str(held.value)
        assert f"{tmp_path} is in use by another run (mode train, PID {os.getpid()} on host" in message
        assert "use another --workdir" in message
        with workdir_lock.hold(str(tmp_path), "sample", writes_shared_state=False):
            with pytest.raises(errors.WorkdirHeldError, match="mode sample"):
                with workdir_lock.hold(str(tmp_path), "sample", writes_shared_state=False):
                    pass
    with workdir_lock.hold(str(tmp_path), "train", writes_shared_state=True):  # released: free again
        pass


def test_stale_lock_is_reported_and_taken_over(tmp_path, caplog):
    (tmp_path / workdir_lock.WRITER_LOCK).write_text(
        '{"mode": "train", "host": "lost-machine", "pid": 4242, "since": "2026-01-01 00:00:00 UTC"}')
    with workdir_lock.hold(str(tmp_path), "train", writes_shared_state=True):
        pass
    [report] = [r.getMessage() for r in caplog.records if "stale lock" in r.getMessage()]
    assert "PID 4242 on host lost-machine" in report and "ended without releasing it" in report
    assert (tmp_path / workdir_lock.WRITER_LOCK).read_text() == ""


# -------------------------------------------------------------------------------- full disk
@pytest.fixture
def small_filesystem(tmp_path):
    """A 32 MB tmpfs mounted under tmp_path when this process may mount one (root), else None."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory) -> None:
    """Writes a file in `directory` until its filesystem refuses with ENOSPC."""
    with open(directory / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 2**20)
        except OSError as error:
            assert error.errno == errno.ENOSPC


class FillDiskAt(Recorder):
    def __init__(self, step, directory):
        super().__init__()
        self.step, self.directory = step, directory

    def write_scalars(self, step, scalars):
        super().write_scalars(step, scalars)
        if step == self.step:  # after checkpoint `step - 1` is complete on disk
            deadline = time.monotonic() + 120
            while not (self.directory / "run" / "transformer" / str(step - 1)).is_dir():
                assert time.monotonic() < deadline, "checkpoint never finished"
                time.sleep(0.1)
            _fill(self.directory)


# The failed background write leaves orbax's pending callbacks to a closed event loop (reported
# once as the error; the command line keeps them off the console), which pytest would list.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_full_disk_is_one_line_keeps_the_last_checkpoint_and_resumes_after_space_is_freed(
        uninterrupted_losses, small_filesystem, tmp_path, monkeypatch):
    cfg, mesh = _six_steps_checkpoint_every_two()
    if small_filesystem is None:  # no mount allowed: the writer is refused as a full disk would
        workdir, writer = tmp_path / "run", Recorder()
        real_save = run_checkpoints.save

        def refusing_save(manager, step, *args):
            if step >= 4:
                manager.wait_until_finished()  # checkpoint 2 is complete, as on a disk that fills
                raise OSError(errno.ENOSPC, "No space left on device", str(manager.directory))
            return real_save(manager, step, *args)

        monkeypatch.setattr(run_checkpoints, "save", refusing_save)
    else:  # the filesystem fills up after checkpoint 2
        workdir = small_filesystem / "run"
        writer = FillDiskAt(3, small_filesystem)
    with pytest.raises(errors.NoSpaceError) as full:
        _train_transformer(cfg, workdir, mesh, writer)
    message = str(full.value)
    assert "\n" not in message
    assert f"no space left on the device for the checkpoints in {workdir / 'transformer'}" in message
    assert " MB free, the checkpoint needs about " in message
    assert "it resumes from checkpoint 2, which is complete" in message
    assert _steps_on_disk(workdir / "transformer") == [2]  # nothing half-written under a step name
    monkeypatch.undo()
    if small_filesystem is not None:
        (small_filesystem / "filler").unlink()
    resumed = Recorder()
    _train_transformer(cfg, workdir, mesh, resumed)
    assert min(resumed.scalars) == 3
    assert resumed.scalars[6]["loss"] == pytest.approx(uninterrupted_losses[6]["loss"], abs=1e-5)


def test_no_space_is_recognised_through_storage_libraries_messages():
    assert errors.is_no_space(OSError(errno.ENOSPC, "No space left on device"))
    wrapped = ValueError("RESOURCE_EXHAUSTED: Error writing \"d/ocdbt.process_0/d/x\" in OCDBT "
                         "database at local file \"/w/transformer/20\"")
    assert errors.is_no_space(wrapped)
    try:
        raise RuntimeError("save failed") from OSError(errno.EDQUOT, "Disk quota exceeded")
    except RuntimeError as chained:
        assert errors.is_no_space(chained)
    assert not errors.is_no_space(OSError(errno.EACCES, "Permission denied"))


# ------------------------------------------------------------------------------ command line
def _main_process(workdir, *flags_) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "srdd_jax.main", "--config=configs/demo.py:tiny",
                             f"--workdir={workdir}", *flags_], cwd=REPO_ROOT, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _main(workdir, *flags_, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "srdd_jax.main", "--config=configs/demo.py:tiny",
                           f"--workdir={workdir}", *flags_], cwd=REPO_ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def _needs_fashion_mnist():
    if not os.path.isdir(sources.FASHION_MNIST_DIR):
        pytest.skip("needs `apt-get install dataset-fashion-mnist` (.ci/run installs it)")


def test_sigterm_mid_run_exits_75_with_a_checkpoint_and_a_second_run_is_refused(tmp_path):
    _needs_fashion_mnist()
    workdir = tmp_path / "demo"
    run_flags = ("--config.tokenizer_training.steps=2", "--config.training.steps=100000",
                 "--config.training.log_every=1", "--config.training.checkpoint_every=100000")
    first = _main_process(workdir, *run_flags)
    lines, deadline = [], time.monotonic() + 600
    while time.monotonic() < deadline:
        line = first.stdout.readline()
        lines.append(line)
        if "transformer: step" in line or not line:
            break
    assert "transformer: step" in lines[-1], "".join(lines)[-3000:]
    second = _main(workdir, *run_flags, timeout=300)  # the same command while the first runs
    first.send_signal(signal.SIGTERM)
    output = first.communicate(timeout=300)[0]
    assert second.returncode == 1 and second.stderr.count("Traceback") == 0, second.stderr[-3000:]
    [held] = [line for line in second.stderr.splitlines() if line.startswith("error: ")]
    assert f"{workdir} is in use by another run (mode train, PID {first.pid} on host" in held
    assert first.returncode == errors.PREEMPTED_EXIT_CODE, output[-3000:]
    assert output.count("Traceback") == 0
    [stopped] = [line for line in output.splitlines() if line.startswith("error: ")]
    step = int(stopped.split("stopped by SIGTERM after step ")[1].split(":")[0])
    assert f"checkpoint {step} is saved in {workdir / 'transformer'}" in stopped
    assert step in _steps_on_disk(workdir / "transformer")
    resumed = _main(workdir, "--config.tokenizer_training.steps=2",
                    f"--config.training.steps={step + 1}", "--config.training.log_every=1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"transformer: resumed from step {step}" in resumed.stderr


def test_data_that_disagrees_with_the_model_or_is_missing_is_one_error_line(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"class{i}" for i in range(9)]:
        (tmp_path / "rgb" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(
                tmp_path / "rgb" / name / f"{i}.png")
    result = _main(tmp_path / "run", "--config.data.source=image_folder",
                   f"--config.data.root={tmp_path / 'rgb'}", timeout=300)
    assert result.returncode == 1 and result.stderr.count("Traceback") == 0, result.stderr[-3000:]
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "config.model.tokenizer.in_channels=1" in error
    assert "config.model.transformer.num_classes=10" in error
    missing = _main(tmp_path / "run2", "--config.data.source=image_folder",
                    f"--config.data.root={tmp_path / 'nowhere'}", timeout=300)
    assert missing.returncode == 1 and missing.stderr.count("Traceback") == 0, missing.stderr[-3000:]
    [error] = [line for line in missing.stderr.splitlines() if line.startswith("error: ")]
    assert f"image folder {tmp_path / 'nowhere'} does not exist (data.root)" in error


def test_full_disk_through_the_command_line_is_one_line_and_a_rerun_resumes(small_filesystem):
    _needs_fashion_mnist()
    if small_filesystem is None:
        pytest.skip("mounting a small tmpfs needs root (the in-process test injects ENOSPC)")
    workdir = small_filesystem / "demo"
    first = _main_process(workdir, "--config.tokenizer_training.steps=100000",
                          "--config.tokenizer_training.log_every=1")
    lines, deadline = [], time.monotonic() + 600
    while time.monotonic() < deadline:  # checkpoints every 2 steps; fill the disk after the first
        line = first.stdout.readline()
        lines.append(line)
        if "tokenizer: checkpoint of step 2" in line or not line:
            break
    assert "checkpoint of step 2" in lines[-1], "".join(lines)[-3000:]
    while not (workdir / "tokenizer" / "2").is_dir():  # written in the background
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    _fill(small_filesystem)
    output = first.communicate(timeout=300)[0]
    assert first.returncode == 1, output[-3000:]
    assert output.count("Traceback") == 0, output[-3000:]
    [error] = [line for line in output.splitlines() if line.startswith("error: ")]
    assert f"no space left on the device for the checkpoints in {workdir / 'tokenizer'}" in error, error
    newest = int(error.split("it resumes from checkpoint ")[1].split(",")[0])
    assert newest in _steps_on_disk(workdir / "tokenizer")
    (small_filesystem / "filler").unlink()
    resumed = _main(workdir, f"--config.tokenizer_training.steps={newest + 2}",
                    "--config.training.steps=2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"tokenizer: resumed from step {newest}" in resumed.stderr
