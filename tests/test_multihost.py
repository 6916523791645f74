"""Two JAX processes on this machine (the multi-host path: jax.distributed with gloo collectives,
2 CPU devices each) train configs/demo.py:tiny's transformer, write a complete model, and resume
from a checkpoint after the newest one was damaged; SIGTERM to one of them stops both at the same
step with a checkpoint of it.

The tokenizer comes from the tiny demo's model (config.init.tokenizer, as when fine-tuning from a
converted VAR model), which keeps the test near a minute: the two-process tokenizer run takes the
same collective code paths (train checkpoints) as the transformer's.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT, cli_env, garble

from srdd_jax import errors, saved_models

# jax.distributed's shutdown barrier waits up to 5 minutes for the other process; before the fix
# process 1 finished, then waited there while process 0 hung in a save only it had entered.
SHUTDOWN_TIMEOUT_S = 300
RUN_TIMEOUT_S = 420


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(workdir, *flags_) -> list[tuple[int, str, float]]:
    """Runs main in two processes; returns (exit status, log, exit time) of each."""
    return _wait_for_both(_start_two(workdir, *flags_))


def _start_two(workdir, *flags_) -> list[tuple[subprocess.Popen, object]]:
    """Starts main in two processes: (process, its log file) of each."""
    port = _free_port()
    runs = []
    for process_id in range(2):
        env = dict(cli_env(), JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                   SRDD_NUM_PROCESSES="2", SRDD_PROCESS_ID=str(process_id),
                   JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
                   XLA_FLAGS="--xla_force_host_platform_device_count=2")
        log = open(f"{workdir}.process{process_id}.log", "w+")  # noqa: SIM115 (closed below)
        command = [sys.executable, "-m", "srdd_jax.main", "--config=configs/demo.py:tiny",
                   f"--workdir={workdir}", *flags_]
        runs.append((subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log,
                                      stderr=subprocess.STDOUT), log))
    return runs


def _wait_for_both(runs) -> list[tuple[int, str, float]]:
    deadline, exits = time.monotonic() + RUN_TIMEOUT_S, {}
    while len(exits) < 2 and time.monotonic() < deadline:
        for index, (process, _) in enumerate(runs):
            if index not in exits and process.poll() is not None:
                exits[index] = time.monotonic()
        time.sleep(0.5)
    results = []
    for index, (process, log) in enumerate(runs):
        if index not in exits:
            process.kill()
        status = process.wait()
        log.seek(0)
        results.append((status, log.read(), exits.get(index, float("inf"))))
        log.close()
    return results


@pytest.mark.slow
def test_two_processes_save_the_model_and_resume(tiny_demo_workdir, tmp_path):
    workdir = tmp_path / "demo"
    flags_ = [f"--config.init.tokenizer={tiny_demo_workdir / 'model'}"]
    first = _two_processes(workdir, *flags_)
    for status, log, _ in first:
        assert status == 0, log[-5000:]
        assert "(2 processes)" in log
    assert abs(first[0][2] - first[1][2]) < SHUTDOWN_TIMEOUT_S / 5  # nobody waited at shutdown
    params, spec = saved_models.load_model(str(workdir / "model"))  # verified against its record
    assert set(params) == {"tokenizer", "transformer"} and spec.transformer.depth == 2
    assert sorted(p.name for p in (workdir / "transformer").iterdir()) == ["2", "4"]

    # The same command again, after damaging the newest checkpoint: both processes agree that it
    # fails, process 0 moves it aside, and the run continues from step 2 to the end (the same
    # compiled programs: this run hits the compilation cache).
    garble(workdir / "transformer" / "4" / "state")
    second = _two_processes(workdir, *flags_)
    for status, log, _ in second:
        assert status == 0, log[-5000:]
        assert "moved it to" in log and "transformer: resumed from step 2" in log
    assert (workdir / "damaged" / "transformer" / "4").is_dir()
    assert sorted(p.name for p in (workdir / "transformer").iterdir()) == ["2", "4"]
    saved_models.load_model(str(workdir / "model"))


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step_with_a_checkpoint(tiny_demo_workdir,
                                                                              tmp_path):
    workdir = tmp_path / "demo"
    init = f"--config.init.tokenizer={tiny_demo_workdir / 'model'}"
    runs = _start_two(workdir, init, "--config.training.steps=100000",
                      "--config.training.log_every=1", "--config.training.checkpoint_every=100000")
    process_0_log = f"{workdir}.process0.log"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline and runs[0][0].poll() is None:
        if os.path.exists(process_0_log) and "transformer: step" in open(process_0_log).read():
            break
        time.sleep(0.5)
    runs[1][0].send_signal(signal.SIGTERM)  # only process 1 is told
    stopped = _wait_for_both(runs)
    steps = []
    for status, log, _ in stopped:
        assert status == errors.PREEMPTED_EXIT_CODE, log[-5000:]
        assert "Traceback" not in log
        [line] = [x for x in log.splitlines() if x.startswith("error: ")]
        steps.append(int(line.split(" after step ")[1].split(":")[0]))
    assert steps[0] == steps[1], stopped[0][1][-2000:]  # both agreed on the step
    assert str(steps[0]) in os.listdir(workdir / "transformer")
    resumed = _two_processes(workdir, init, f"--config.training.steps={steps[0] + 1}")
    for status, log, _ in resumed:
        assert status == 0, log[-5000:]
        assert f"transformer: resumed from step {steps[0]}" in log
    saved_models.load_model(str(workdir / "model"))
