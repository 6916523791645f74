"""launch/: the dry-run command sequences for a v4-32 pod and a 2-node x 8-GPU cluster, argument
errors, stopping at the first failing step, and the per-node environment main.py reads."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[1] / "launch"
CONFIG, TPU_WORKDIR, GPU_WORKDIR = "configs/sun397.py", "gs://bucket/runs/sun397", "/shared/runs/ffhq"
TFDS = ["--override=data.source=tfds", "--override=data.name=sun397", "--override=data.tfds_data_dir=gs://bucket/tfds"]
GPU_RUN = [f"--config={CONFIG}", f"--workdir={GPU_WORKDIR}"]
TPU_UP = ["up", "--name=srdd", "--zone=us-central2-b", "--accelerator-type=v4-32", f"--config={CONFIG}",
          f"--workdir={TPU_WORKDIR}", *TFDS]


def launch(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LAUNCH / script), *args], capture_output=True, text=True,
                          timeout=60)


def commands(result: subprocess.CompletedProcess) -> list[list[str]]:
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines() if not line.startswith("#")]


def test_tpu_pod_up_dry_run():
    create, pack, copy, install, train = commands(launch("tpu_pod.py", *TPU_UP, "--dry-run"))
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "srdd"]
    assert {"--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--zone=us-central2-b"} <= {*create}
    assert pack[:2] == ["git", "-C"] and "archive" in pack
    assert copy[4] == "scp" and "--worker=all" in copy
    assert install[4:6] == ["ssh", "srdd"] and "--worker=all" in install
    assert "jax[tpu]" in install[-2] and ".[gcs]" in install[-2]
    assert train[4:6] == ["ssh", "srdd"] and "--worker=all" in train and "--zone=us-central2-b" in train
    remote = shlex.split(train[-2].removeprefix("--command="))
    assert "SRDD_MULTIHOST=1" in remote
    assert remote[remote.index("-m") + 1] == "srdd_jax.main"
    assert {f"--config={CONFIG}", f"--workdir={TPU_WORKDIR}", "--config.data.source=tfds",
            "--config.data.tfds_data_dir=gs://bucket/tfds"} <= set(remote)


def test_tpu_pod_other_actions_dry_run():
    where = ["--name=srdd", "--zone=us-central2-b", "--dry-run"]
    (delete,) = commands(launch("tpu_pod.py", "delete", *where))
    assert delete[4:6] == ["delete", "srdd"] and "--quiet" in delete
    (install,) = commands(launch("tpu_pod.py", "install", *where, "--repo=https://example.com/srdd_jax.git",
                                 "--stage=gs://bucket/ffhq"))
    assert "git clone https://example.com/srdd_jax.git srdd_jax" in install[-2]
    assert "gcloud storage cp -r gs://bucket/ffhq data/" in install[-2]
    (train,) = commands(launch("tpu_pod.py", "train", *where, f"--config={CONFIG}",
                               f"--workdir={TPU_WORKDIR}", "--detach"))
    assert "nohup" in train[-2] and "> train.log" in train[-2] and "--worker=all" in train


def test_gpu_ssh_dry_run_two_nodes():
    lines = commands(launch("gpu_cluster.py", "ssh", "--hosts=node0,user@node1", *GPU_RUN,
                            "--override=data.root=/shared/data", "--dry-run"))
    assert [line[:4] for line in lines] == [
        ["ssh", "-o", "BatchMode=yes", h] for h in ("node0", "user@node1")]
    for process_id, line in enumerate(lines):
        remote = shlex.split(line[-1])
        assert {"JAX_COORDINATOR_ADDRESS=node0:8476", "SRDD_NUM_PROCESSES=2", f"SRDD_PROCESS_ID={process_id}",
                *GPU_RUN, "--config.data.root=/shared/data"} <= {*remote}
        assert remote[remote.index("-m") + 1] == "srdd_jax.main"


def test_gpu_slurm_dry_run_two_nodes_eight_gpus():
    (sbatch,) = commands(launch("gpu_cluster.py", "slurm", "--nodes=2", "--gpus-per-node=8", *GPU_RUN,
                                "--partition=gpu", "--dry-run"))
    assert sbatch[0] == "sbatch"
    assert {"--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=8", "--partition=gpu"} <= set(sbatch)
    task = shlex.split(sbatch[-1].removeprefix("--wrap="))
    assert task[:4] == ["srun", "env", "SRDD_MULTIHOST=1", "JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7"]
    assert {*GPU_RUN} <= {*task}


@pytest.mark.parametrize("script,args,message", [
    ("tpu_pod.py", [a for a in TPU_UP if not a.startswith("--workdir")], "required: --workdir"),
    ("tpu_pod.py", [*TPU_UP, "--workdir=/home/me/run"], "use a Cloud Storage path"),
    ("tpu_pod.py", [*TPU_UP, "--accelerator-type=v9-32"], "unknown --accelerator-type 'v9-32'"),
    ("tpu_pod.py", [*TPU_UP, "--config=configs/imagenet.py"], "no file configs/imagenet.py"),
    ("tpu_pod.py", [*TPU_UP, "--override=--config.seed=1"], "expected FIELD=VALUE"),
    ("tpu_pod.py", [*TPU_UP, "--stage=/data/ffhq"], "gs://BUCKET/FOLDER"),
    ("gpu_cluster.py", ["ssh", "--hosts=a,a", *GPU_RUN], "distinct"),
    ("gpu_cluster.py", ["ssh", "--hosts=a", *GPU_RUN, "--workdir=runs/x"], "filesystem all nodes share"),
    ("gpu_cluster.py", ["ssh", "--hosts=a", "--coordinator=a", *GPU_RUN], "expected HOST:PORT"),
    ("gpu_cluster.py", ["slurm", "--nodes=0", "--gpus-per-node=8", *GPU_RUN], "at least 1"),
])
def test_bad_arguments_are_refused(script, args, message):
    result = launch(script, *args, "--dry-run")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert result.stdout == ""


def test_steps_stop_at_first_failure(capsys):
    sys.path.insert(0, str(LAUNCH))
    try:
        import common
    finally:
        sys.path.remove(str(LAUNCH))
    with pytest.raises(SystemExit, match=r"step 2/3 \(fails\) failed with exit status 3"):
        common.run_steps([("ok", ["true"]), ("fails", ["sh", "-c", "exit 3"]), ("never", ["true"])], False)
    assert "never" not in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no-such-tool-xyz is not on PATH"):
        common.run_steps([("missing", ["no-such-tool-xyz"])], False)
    with pytest.raises(SystemExit, match="on b failed with exit status 4"):
        common.run_together("train", {"a": ["sleep", "30"], "b": ["sh", "-c", "exit 4"]}, False)


def test_main_reads_process_count_and_id(monkeypatch):
    from absl import app

    from srdd_jax import main

    monkeypatch.delenv("SRDD_NUM_PROCESSES", raising=False)
    monkeypatch.delenv("SRDD_PROCESS_ID", raising=False)
    assert main.distributed_args() == {}  # left to JAX's auto-detection (TPU, SLURM)
    monkeypatch.setenv("SRDD_NUM_PROCESSES", "2")
    monkeypatch.setenv("SRDD_PROCESS_ID", "1")
    assert main.distributed_args() == {"num_processes": 2, "process_id": 1}
    monkeypatch.setenv("SRDD_PROCESS_ID", "one")
    with pytest.raises(app.UsageError, match="SRDD_PROCESS_ID must be a non-negative integer"):
        main.distributed_args()
