"""Shared by the launch scripts: the training command's flags, and running or printing steps.

A step is one command as an argument list. `--dry-run` prints every step as a shell line (with a
`#` comment saying what it does) and runs nothing; otherwise the steps run in order and the first
failure stops the script with its exit status and command.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def add_dry_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands that would run, and run nothing")


def add_train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="config file in the repository, e.g. configs/ffhq.py or configs/ffhq.py:tiny")
    parser.add_argument("--workdir", required=True, help="checkpoints, logs and samples; shared by all hosts")
    parser.add_argument("--override", action="append", default=[], metavar="FIELD=VALUE",
                        help="config override, repeatable: data.source=tfds gives --config.data.source=tfds")


def check_train_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    config_file = args.config.split(":")[0]
    if not os.path.isfile(os.path.join(REPO_ROOT, config_file)):
        parser.error(f"--config {args.config}: no file {config_file} in {REPO_ROOT} "
                     f"(choose one of configs/{{{','.join(_config_names())}}}.py)")
    for override in args.override:
        field, sep, _ = override.partition("=")
        if not sep or not field or field.startswith(("-", "config.")):
            parser.error(f"--override {override!r}: expected FIELD=VALUE, e.g. data.source=tfds")


def _config_names() -> list[str]:
    return sorted(f[:-3] for f in os.listdir(os.path.join(REPO_ROOT, "configs")) if f.endswith(".py"))


def train_command(args: argparse.Namespace, python: str) -> list[str]:
    """`python -m srdd_jax.main` with the config, the workdir and the overrides."""
    return [python, "-m", "srdd_jax.main", f"--config={args.config}", f"--workdir={args.workdir}",
            *(f"--config.{override}" for override in args.override)]


def run_steps(steps: list[tuple[str, list[str]]], dry_run: bool) -> None:
    """Runs (description, command) steps in order; stops at the first failure."""
    for i, (description, command) in enumerate(steps, 1):
        print(f"# [{i}/{len(steps)}] {description}\n{shlex.join(command)}", flush=True)
        if dry_run:
            continue
        try:
            status = subprocess.run(command).returncode
        except FileNotFoundError:
            sys.exit(f"error: step {i}/{len(steps)} ({description}): {command[0]} is not on PATH")
        if status:
            sys.exit(f"error: step {i}/{len(steps)} ({description}) failed with exit status {status}: "
                     f"{shlex.join(command)}")


def run_together(description: str, commands: dict[str, list[str]], dry_run: bool) -> None:
    """Starts one command per host at once and waits for all of them; when one fails, the others are
    terminated and the script stops naming that host."""
    print(f"# {description}: run these {len(commands)} commands at the same time", flush=True)
    for command in commands.values():
        print(shlex.join(command), flush=True)
    if dry_run:
        return
    try:
        running = {host: subprocess.Popen(command) for host, command in commands.items()}
    except FileNotFoundError as err:
        sys.exit(f"error: {err.filename} is not on PATH")
    while running:
        for host, process in list(running.items()):
            status = process.poll()
            if status is None:
                continue
            del running[host]
            if status:
                for other in running.values():
                    other.terminate()
                sys.exit(f"error: {description} on {host} failed with exit status {status}: "
                         f"{shlex.join(commands[host])}")
        time.sleep(1)
