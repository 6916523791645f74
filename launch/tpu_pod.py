"""Cloud TPU VM / pod slice: create it, install the code on every worker, train on all workers, delete.

    python launch/tpu_pod.py up --name=srdd --zone=us-central2-b --accelerator-type=v4-32 \\
        --config=configs/sun397.py --workdir=gs://BUCKET/sun397 \\
        --override=data.source=tfds --override=data.name=sun397 \\
        --override=data.tfds_data_dir=gs://BUCKET/tfds [--dry-run]
    python launch/tpu_pod.py delete --name=srdd --zone=us-central2-b

Actions: create, install, train, up (create + install + train) and delete. Every worker runs the
same command (`gcloud compute tpus tpu-vm ssh --worker=all`); SRDD_MULTIHOST=1 makes
`srdd_jax.main` call `jax.distributed.initialize()`, which finds the slice's hosts by itself.
"""

from __future__ import annotations

import argparse
import re
import shlex

import common

# The TPU software version for JAX per TPU generation (https://cloud.google.com/tpu/docs/runtimes).
RUNTIME_VERSIONS = {"v2": "tpu-ubuntu2204-base", "v3": "tpu-ubuntu2204-base", "v4": "tpu-ubuntu2204-base",
                    "v5litepod": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
CODE_DIR = "srdd_jax"  # on each worker, under the home directory
ARCHIVE = "srdd_jax.tar.gz"


def build_parser() -> argparse.ArgumentParser:
    tpu = argparse.ArgumentParser(add_help=False)
    tpu.add_argument("--name", required=True, help="TPU VM name")
    tpu.add_argument("--zone", required=True, help="e.g. us-central2-b (v4), us-east5-a (v5p)")
    tpu.add_argument("--project", help="Google Cloud project (default: gcloud's configured one)")
    common.add_dry_run(tpu)

    create = argparse.ArgumentParser(add_help=False)
    create.add_argument("--accelerator-type", required=True,
                        help=f"GENERATION-SIZE with GENERATION in {', '.join(RUNTIME_VERSIONS)}, e.g. v4-32")
    create.add_argument("--version", help="TPU software version (default: JAX's for that generation)")
    create.add_argument("--spot", action="store_true", help="create a Spot TPU (cheaper, can be preempted)")

    install = argparse.ArgumentParser(add_help=False)
    install.add_argument("--repo", help="git URL cloned on every worker (default: copy this checkout's HEAD)")
    install.add_argument("--ref", default="HEAD", help="branch, tag or commit of --repo")
    install.add_argument("--python", default="python3.11",
                         help="Python >= 3.11 on the workers (apt-installed if missing)")
    install.add_argument("--stage", action="append", default=[], metavar="GS_FOLDER",
                         help="copy a folder (images or a converted model) into ~/srdd_jax/data/ on each "
                              "worker, repeatable: gs://B/ffhq lands where configs/ffhq.py looks (data/ffhq)")

    train = argparse.ArgumentParser(add_help=False)
    common.add_train_args(train)
    train.add_argument("--detach", action="store_true",
                       help="start training in the background on each worker (log: ~/srdd_jax/train.log)")

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("create", parents=[tpu, create], help="create the TPU VM / pod slice")
    actions.add_parser("install", parents=[tpu, install], help="install the code on every worker")
    actions.add_parser("train", parents=[tpu, train], help="run the training command on every worker")
    actions.add_parser("up", parents=[tpu, create, install, train], help="create + install + train")
    actions.add_parser("delete", parents=[tpu], help="delete the TPU VM / pod slice")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.action in ("create", "up"):
        match = re.fullmatch(r"([a-z0-9]+)-(\d+)", args.accelerator_type)
        if not match or match.group(1) not in RUNTIME_VERSIONS:
            parser.error(f"unknown --accelerator-type {args.accelerator_type!r}: expected GENERATION-SIZE "
                         f"with GENERATION in {', '.join(RUNTIME_VERSIONS)}, e.g. v4-32 or v5litepod-16")
    if args.action in ("install", "up"):
        for folder in args.stage:
            if not folder.startswith("gs://") or not folder.rstrip("/")[len("gs://"):].count("/"):
                parser.error(f"--stage {folder!r}: expected a folder in a bucket, gs://BUCKET/FOLDER")
    if args.action in ("train", "up"):
        common.check_train_args(parser, args)
        if not args.workdir.startswith("gs://"):
            parser.error(f"--workdir {args.workdir!r}: a TPU slice's workers share no disk, and a VM's disk "
                         "goes with the VM; use a Cloud Storage path, gs://BUCKET/PATH")


def gcloud(args: argparse.Namespace, verb: str, *rest: str) -> list[str]:
    """`gcloud compute tpus tpu-vm VERB ...` in the zone (and project) of the TPU VM."""
    command = ["gcloud", "compute", "tpus", "tpu-vm", verb, *rest, f"--zone={args.zone}"]
    return command + ([f"--project={args.project}"] if args.project else [])


def on_all_workers(args: argparse.Namespace, remote: str) -> list[str]:
    """`tpu-vm ssh --worker=all`: the shell command runs on every worker at once."""
    return gcloud(args, "ssh", args.name, "--worker=all", f"--command={remote}")


def create_steps(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    version = args.version or RUNTIME_VERSIONS[args.accelerator_type.split("-")[0]]
    command = gcloud(args, "create", args.name, f"--accelerator-type={args.accelerator_type}",
                     f"--version={version}")
    return [(f"create {args.accelerator_type} TPU VM {args.name}", command + ["--spot"] * args.spot)]


def install_steps(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    steps = []
    py = shlex.quote(args.python)
    remote = [f"(command -v {py} >/dev/null || (sudo apt-get update -qq && "
              f"sudo apt-get install -y -qq {py} {py}-venv))"]
    if args.repo:
        remote.append(f"(test -d {CODE_DIR}/.git || git clone {shlex.quote(args.repo)} {CODE_DIR})")
        remote.append(f"git -C {CODE_DIR} fetch origin {shlex.quote(args.ref)} && "
                      f"git -C {CODE_DIR} checkout FETCH_HEAD")
    else:
        local = f"/tmp/{args.name}-{ARCHIVE}"
        steps.append(("pack this checkout's HEAD (uncommitted changes are not included)",
                      ["git", "-C", common.REPO_ROOT, "archive", "--format=tar.gz", f"--output={local}",
                       "HEAD"]))
        steps.append(("copy it to every worker",
                      gcloud(args, "scp", local, f"{args.name}:{ARCHIVE}", "--worker=all")))
        remote.append(f"mkdir -p {CODE_DIR} && tar -xzf {ARCHIVE} -C {CODE_DIR}")
    remote.append(f"cd {CODE_DIR} && {py} -m venv .venv && .venv/bin/pip install -q -U pip && "
                  ".venv/bin/pip install -q -e '.[gcs]' 'jax[tpu]'")
    remote += ["mkdir -p data"] * bool(args.stage)
    remote += [f"gcloud storage cp -r {shlex.quote(folder.rstrip('/'))} data/" for folder in args.stage]
    description = "install Python, the code and jax[tpu] on every worker"
    description += ", and copy the --stage folders" * bool(args.stage)
    steps.append((description, on_all_workers(args, " && ".join(remote))))
    return steps


def train_steps(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    train = shlex.join(["env", "SRDD_MULTIHOST=1", *common.train_command(args, ".venv/bin/python")])
    if args.detach:
        train = f"nohup {train} > train.log 2>&1 < /dev/null &"
    return [("train on every worker (the same command on each)",
             on_all_workers(args, f"cd {CODE_DIR} && {train}"))]


def delete_steps(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    return [(f"delete TPU VM {args.name}", gcloud(args, "delete", args.name, "--quiet"))]


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    steps = {"create": create_steps, "install": install_steps, "train": train_steps, "delete": delete_steps,
             "up": lambda a: create_steps(a) + install_steps(a) + train_steps(a)}[args.action](args)
    common.run_steps(steps, args.dry_run)


if __name__ == "__main__":
    main()
