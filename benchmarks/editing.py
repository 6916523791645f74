"""Zero-shot editing, var against markov: the editing evaluation (srdd_jax/evaluation/edit_eval.py)
of models trained the same way with each mask and several seeds.

For every (mask, seed): trains `--config` with that mask and seed in WORKDIR/<mask>_s<seed> (kept:
a finished model is reused), then runs `--config.mode=evaluate` with `evaluate.edit.tasks` (every
task by default) on `--images` held-out images, and aggregates each metric as mean ± standard
deviation over the seeds. A difference between the masks is marked an effect (bold) only when it
exceeds the sum of their standard deviations.

    python benchmarks/editing.py --workdir=workdirs/editing                   # demo, 3 seeds
    python benchmarks/editing.py --workdir=/tmp/editing_quick --quick         # smoke run
    python benchmarks/editing.py --config=configs/image_folder.py --data_root=ICONS --workdir=DIR

Prints one JSON object and writes WORKDIR/editing.md (the tables).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time

import numpy as np

from srdd_jax import experiment
from srdd_jax.evaluation.spec import EDIT_TASKS

METRICS = ("known_psnr", "known_ssim", "generated_psnr", "whole_psnr", "whole_ssim", "input_psnr",
           "class_accuracy")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/demo.py")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--masks", default="var,markov")
    parser.add_argument("--tasks", default=",".join(EDIT_TASKS))
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--data_root", default="", help="data.root, for image-folder configs")
    parser.add_argument("--quick", action="store_true", help="the config's tiny variant, 2 seeds")
    return parser.parse_args(argv)


def config_for(args, mask: str, seed: int):
    path, _, variant = args.config.partition(":")
    spec = importlib.util.spec_from_file_location("editing_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("tiny" if args.quick else variant)
    config.model.transformer.mask = mask
    if args.data_root:
        config.data.root = args.data_root
    config.seed = seed
    config.evaluate.seed = seed
    config.evaluate.edit.update(dict(tasks=tuple(args.tasks.split(",")), images=args.images,
                                     seed=seed))
    # one in-domain classifier for every model (the same data and settings)
    config.evaluate.classifier_dir = os.path.join(args.workdir, "classifier")
    return config


def run_one(args, mask: str, seed: int) -> dict:
    """The editing report of one (mask, seed), training the model first unless it exists."""
    workdir = os.path.join(args.workdir, f"{mask}_s{seed}")
    config = config_for(args, mask, seed)
    if not os.path.isfile(os.path.join(workdir, "model", "model_config.json")):
        experiment.run(config, workdir)
    report_path = os.path.join(workdir, "evaluate", "report.json")
    config.mode = "evaluate"
    experiment.run(config, workdir)
    with open(report_path) as f:
        return json.load(f)["edit"]


def metric_names(by_seed: dict) -> tuple[str, ...]:
    """METRICS and the in-domain FID (its key names the dataset: fid_<tag>)."""
    first = next(iter(next(iter(by_seed.values())).values()))
    return METRICS + tuple(k for k in first if k.startswith("fid_"))


def summarise(reports: dict) -> dict:
    """{mask: {task: {metric: (mean, std)}}} over seeds."""
    out = {}
    for mask, by_seed in reports.items():
        out[mask] = {}
        for task in next(iter(by_seed.values())):
            out[mask][task] = {}
            for metric in metric_names(by_seed):
                values = [r[task][metric] for r in by_seed.values() if metric in r[task]]
                if values:
                    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                    out[mask][task][metric] = (float(np.mean(values)), std)
    return out


def table(summary: dict, masks: list[str]) -> str:
    """One markdown table per metric: tasks as rows, masks as columns."""
    lines = []
    tasks = list(next(iter(summary.values())))
    for metric in dict.fromkeys(k for m in masks for t in tasks for k in summary[m][t]):
        if not any(metric in summary[m][t] for m in masks for t in tasks):
            continue
        lines += ["", f"{metric} (mean ± std over seeds):", "",
                  "| task | " + " | ".join(masks) + " |", "| --- |" + " --- |" * len(masks)]
        for task in tasks:
            cells = [summary[m][task].get(metric) for m in masks]
            effect = (len(masks) == 2 and all(cells)
                      and abs(cells[0][0] - cells[1][0]) > cells[0][1] + cells[1][1])
            shown = [("**{:.3f} ± {:.3f}**" if effect else "{:.3f} ± {:.3f}").format(*c)
                     if c else "—" for c in cells]
            lines.append(f"| {task} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    seeds = [int(s) for s in (("0,1" if args.quick else args.seeds).split(","))]
    masks = args.masks.split(",")
    start = time.perf_counter()
    reports = {mask: {seed: run_one(args, mask, seed) for seed in seeds} for mask in masks}
    summary = summarise(reports)
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "editing.md"), "w") as f:
        f.write(table(summary, masks) + "\n")
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "config": args.config, "seeds": seeds,
                      "images": args.images, "seconds": time.perf_counter() - start,
                      "summary": summary, "reports": reports}, indent=1))


if __name__ == "__main__":
    main()
