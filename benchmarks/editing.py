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
    python benchmarks/editing.py --reproduction --workdir=workdirs/guidance_cutoff/colour

`--reproduction`: the models of benchmarks/reproduction.py instead (nine openclipart-png icon
folders, configs/image_folder.py at 32 px, one shared tokenizer, a transformer per mask and seed;
those already in --workdir, e.g. a reproduction's or guidance_cutoff.py's `colour` folder, are
reused), editing `--images` of the held-out tenth the models never trained on (evenly spaced
over it, so every class is in) at the config's sampler settings, scored with the reproduction's
classifier and real statistics (its training images). Reports are kept in WORKDIR/editing/ (a
rerun reuses them).

Prints one JSON object and writes WORKDIR/editing.md (the tables) and WORKDIR/editing.png (example
edits: per held-out image, the truth, then per task what the model is given and each mask's
edit by its first seed's model).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import time

import numpy as np
import reproduction

from srdd_jax import experiment, image_grids, saved_models
from srdd_jax.data import image_folder, loading, pipeline
from srdd_jax.evaluation import edit_eval, evaluate
from srdd_jax.evaluation.spec import EDIT_TASKS
from srdd_jax.modes import specs

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
    parser.add_argument("--reproduction", action="store_true",
                        help="benchmarks/reproduction.py's colour-icon models (see above)")
    parser.add_argument("--examples", type=int, default=4, help="held-out images in editing.png")
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
    # one classifier folder: models of one seed share a classifier (the seed is one of its settings)
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


def reproduction_reports(args, masks: list[str], seeds: list[int]) -> tuple[dict, dict]:
    """The editing reports {mask: {seed: report}} of the reproduction's models (trained first where
    missing) and the example edits of each mask's first model ({mask: {task: result}})."""
    repro_args = reproduction.parse_args([f"--workdir={args.workdir}",
                                          f"--seeds={','.join(map(str, seeds))}"]
                                         + (["--quick"] if args.quick else []))
    name = os.path.basename(os.path.normpath(args.data_root)) if args.data_root else "openclipart9"
    classes = (image_folder.folder_classes(args.data_root) if args.data_root
               else reproduction.openclipart_classes())
    train_root, test_root = reproduction.split_data(classes, os.path.join(args.workdir, "data"),
                                                    name)
    config = reproduction.base_config(repro_args, train_root)
    dirs = reproduction.train_models(repro_args, config, masks=tuple(masks))
    fitted = reproduction.fitted_specs(config)
    train_images, _ = evaluate.first_images(loading.load(fitted.data, fitted.model), 0)
    held_out, labels = evaluate.first_images(
        loading.load(fitted.data.replace(root=test_root), fitted.model), 0)
    spread = np.unique(np.linspace(0, len(labels) - 1, min(args.images, len(labels))).round()
                       .astype(int))  # the held-out images are in class order
    images, labels = pipeline.to_unit_range(held_out[spread]), labels[spread]
    evaluators = {}
    data_evaluator = reproduction.evaluator(evaluators, fitted.model, fitted, args.workdir)
    classifier = data_evaluator.load_classifier()
    real = data_evaluator.real_statistics(classifier, train_images, fitted.evaluate.reference_cache)
    reports, examples = {mask: {} for mask in masks}, {}
    for (mask, seed), model_dir in dirs.items():
        spec = dataclasses.replace(fitted.evaluate.edit, tasks=tuple(args.tasks.split(",")),
                                   images=len(labels), seed=seed)
        path = os.path.join(args.workdir, "editing", f"{mask}_seed{seed}.json")
        scored = os.path.exists(path)  # (a rerun reuses the report)
        if not scored or mask not in examples:
            params, model_spec = saved_models.load_model(model_dir)
            model_evaluator = reproduction.evaluator(evaluators, model_spec, fitted, args.workdir)
            if not scored:
                report = edit_eval.evaluate(model_evaluator, params, fitted.sampling, spec, images,
                                            labels, classifier, real)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    json.dump(report, f, indent=1)
            if mask not in examples:
                examples[mask] = edit_examples(args, model_evaluator.sampler(fitted.sampling),
                                               params, spec, images, labels,
                                               model_spec.transformer.num_classes)
        with open(path) as f:
            reports[mask][seed] = json.load(f)
    return reports, examples


def demo_examples(args, masks: list[str], seed: int) -> dict:
    """The example edits of each mask's model of `seed` trained by `run_one`."""
    examples = {}
    for mask in masks:
        config = config_for(args, mask, seed)
        parsed = specs.parse(config)
        params, model_spec = saved_models.load_model(
            os.path.join(args.workdir, f"{mask}_s{seed}", "model"))
        held_out, labels = evaluate.first_images(
            loading.load(parsed.data, model_spec, parsed.evaluate.split), args.images)
        evaluator = evaluate.Evaluator(model_spec, parsed.evaluate, parsed.data, seed,
                                       os.path.join(args.workdir, f"{mask}_s{seed}"))
        examples[mask] = edit_examples(args, evaluator.sampler(parsed.sampling), params,
                                       parsed.evaluate.edit, pipeline.to_unit_range(held_out),
                                       labels, model_spec.transformer.num_classes)
    return examples


def edit_examples(args, sampler, params: dict, spec, images_NHWC: np.ndarray,
                  labels_N: np.ndarray, num_classes: int) -> dict:
    """{task: edit_eval.edit result, "truth": images} for `args.examples` of the scored images,
    spread over their classes, edited again with the run's seed."""
    picked = example_indices(labels_N, args.examples)
    classes = edit_eval.conditioning(spec, labels_N[picked], num_classes)
    out = {task: edit_eval.edit(sampler, params, task, spec, images_NHWC[picked], classes,
                                len(picked)) for task in spec.tasks}
    out["truth"] = images_NHWC[picked]
    return out


def example_indices(labels_N: np.ndarray, count: int) -> np.ndarray:
    """`count` images spread over the classes: the first image of every k-th class present."""
    classes = np.unique(labels_N)
    chosen = classes[np.linspace(0, len(classes) - 1, min(count, len(classes))).round().astype(int)]
    return np.array([int(np.flatnonzero(labels_N == c)[0]) for c in chosen])


TASK_LABELS = {"inpaint_center": "centre", "inpaint_random": "box", "outpaint_top": "out top",
               "outpaint_bottom": "out bot.", "outpaint_left": "out left",
               "outpaint_right": "out right",
               "super_resolution_2x": "SR 2x", "super_resolution_4x": "SR 4x"}


def save_examples(path: str, examples: dict, masks: list[str], min_side: int = 64) -> None:
    """One PNG: a row per held-out image; its truth, then per task what the model is given and
    each mask's edit (nearest-neighbour enlarged a whole number of times to at least `min_side`
    pixels, so the column names fit)."""
    columns, names = [examples[masks[0]]["truth"]], ["truth"]
    for task in (t for t in examples[masks[0]] if t != "truth"):
        label = TASK_LABELS.get(task, task)
        columns.append(examples[masks[0]][task]["given"])
        names.append(label)  # the task's name over what the model is given, then the masks'
        for mask in masks:
            columns.append(examples[mask][task]["edited"])
            names.append(mask)
    tiles = np.stack(columns, axis=1)  # (rows, columns, H, W, C)
    scale = -(-min_side // tiles.shape[2])
    tiles = tiles.repeat(scale, axis=2).repeat(scale, axis=3)
    rows, cols = tiles.shape[:2]
    image_grids.save_grid(path, image_grids.to_uint8(tiles.reshape(rows * cols, *tiles.shape[2:])),
                          cols, tuple(names))


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
    os.makedirs(args.workdir, exist_ok=True)
    if args.reproduction:
        reports, examples = reproduction_reports(args, masks, seeds)
    else:
        reports = {mask: {seed: run_one(args, mask, seed) for seed in seeds} for mask in masks}
        examples = demo_examples(args, masks, seeds[0])
    save_examples(os.path.join(args.workdir, "editing.png"), examples, masks)
    summary = summarise(reports)
    with open(os.path.join(args.workdir, "editing.md"), "w") as f:
        f.write(table(summary, masks) + "\n")
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "config": args.config, "seeds": seeds,
                      "images": args.images, "seconds": time.perf_counter() - start,
                      "summary": summary, "reports": reports}, indent=1))


if __name__ == "__main__":
    main()
