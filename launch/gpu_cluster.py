"""Multi-GPU, multi-node training: one process per node, each using all of its GPUs.

    python launch/gpu_cluster.py ssh --hosts=node0,node1 --config=configs/ffhq.py \\
        --workdir=/shared/runs/ffhq --override=data.root=/shared/data/ffhq [--dry-run]
    python launch/gpu_cluster.py slurm --nodes=2 --gpus-per-node=8 --config=configs/ffhq.py \\
        --workdir=/shared/runs/ffhq [--partition=gpu] [--time=48:00:00] [--dry-run]

`ssh` starts the same command on every host at once, each with JAX_COORDINATOR_ADDRESS (the first
host unless --coordinator says otherwise), SRDD_NUM_PROCESSES and its own SRDD_PROCESS_ID, which
`srdd_jax.main` passes to `jax.distributed.initialize`. The checkout and its .venv (with
`jax[cuda12]`) must exist at --code-dir on every host. `slurm` submits one `sbatch` job whose `srun`
runs one task per node with SRDD_MULTIHOST=1; JAX reads the coordinator, process count and
process id from SLURM's variables, and JAX_LOCAL_DEVICE_IDS gives each task all GPUs of its node.
"""

from __future__ import annotations

import argparse
import re
import shlex

import common

COORDINATOR_PORT = 8476


def build_parser() -> argparse.ArgumentParser:
    shared = argparse.ArgumentParser(add_help=False)
    common.add_train_args(shared)
    shared.add_argument("--python", default=".venv/bin/python",
                        help="Python with srdd_jax installed, relative to the code directory or absolute")
    common.add_dry_run(shared)

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    ssh = modes.add_parser("ssh", parents=[shared], help="start one process per host over ssh")
    ssh.add_argument("--hosts", required=True, help="comma-separated ssh hosts; the first is process 0")
    ssh.add_argument("--coordinator",
                     help=f"HOST:PORT all hosts can reach (default: first host, port {COORDINATOR_PORT})")
    ssh.add_argument("--code-dir", default=common.REPO_ROOT,
                     help="the checkout on every host; relative paths are under the remote home "
                          "(default: this checkout's path, for a shared filesystem)")
    slurm = modes.add_parser("slurm", parents=[shared], help="submit an sbatch job, one task per node")
    slurm.add_argument("--nodes", type=int, required=True)
    slurm.add_argument("--gpus-per-node", type=int, required=True)
    slurm.add_argument("--partition")
    slurm.add_argument("--time", help="time limit, e.g. 48:00:00")
    slurm.add_argument("--job-name", default="srdd")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    common.check_train_args(parser, args)
    if not (args.workdir.startswith("gs://") or args.workdir.startswith("/")):
        parser.error(f"--workdir {args.workdir!r}: every process reads and writes the same checkpoints, so "
                     "use an absolute path on a filesystem all nodes share, or gs://BUCKET/PATH")
    if args.mode == "ssh":
        hosts = args.hosts.split(",")
        if "" in hosts or len(set(hosts)) != len(hosts):
            parser.error(f"--hosts {args.hosts!r}: expected distinct comma-separated hosts, e.g. node0,node1")
        if args.coordinator and not re.fullmatch(r"[^\s:]+:\d+", args.coordinator):
            parser.error(f"--coordinator {args.coordinator!r}: expected HOST:PORT, "
                         f"e.g. node0:{COORDINATOR_PORT}")
    elif args.nodes < 1 or args.gpus_per_node < 1:
        parser.error(f"--nodes {args.nodes} --gpus-per-node {args.gpus_per_node}: both must be at least 1")


def ssh_commands(args: argparse.Namespace) -> dict[str, list[str]]:
    hosts = args.hosts.split(",")
    coordinator = args.coordinator or f"{hosts[0].split('@')[-1]}:{COORDINATOR_PORT}"
    commands = {}
    for process_id, host in enumerate(hosts):
        env = [f"JAX_COORDINATOR_ADDRESS={coordinator}", f"SRDD_NUM_PROCESSES={len(hosts)}",
               f"SRDD_PROCESS_ID={process_id}"]
        train = shlex.join(["env", *env, *common.train_command(args, args.python)])
        commands[host] = ["ssh", "-o", "BatchMode=yes", host, f"cd {shlex.quote(args.code_dir)} && {train}"]
    return commands


def sbatch_command(args: argparse.Namespace) -> list[str]:
    devices = ",".join(map(str, range(args.gpus_per_node)))
    task = ["srun", "env", "SRDD_MULTIHOST=1", f"JAX_LOCAL_DEVICE_IDS={devices}",
            *common.train_command(args, args.python)]
    options = [f"--job-name={args.job_name}", f"--nodes={args.nodes}", "--ntasks-per-node=1",
               f"--gpus-per-node={args.gpus_per_node}", f"--chdir={common.REPO_ROOT}",
               "--output=slurm-%j.out"]
    options += [f"--partition={args.partition}"] * bool(args.partition)
    options += [f"--time={args.time}"] * bool(args.time)
    return ["sbatch", *options, f"--wrap={shlex.join(task)}"]


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    if args.mode == "ssh":
        common.run_together("train, one process per host", ssh_commands(args), args.dry_run)
    else:
        common.run_steps([(f"submit: {args.nodes} nodes x {args.gpus_per_node} GPUs, one task per node",
                           sbatch_command(args))], args.dry_run)


if __name__ == "__main__":
    main()
