"""The paper's directions on colour data, with seeds: SRDD (Markov mask) against VAR (block-causal).

Data: nine icon folders of Debian's `openclipart-png` (`apt-get install openclipart-png`: arrows,
flags, fruit, map symbols, pictograms, playing cards, road signs, smilies, stars), or any
`--data_root` with one sub-folder per class. Every tenth image of each class (in sorted order) is
held out: the models train on the rest, the held-out images give the NLL. Models:
`configs/image_folder.py` at 32 px (channels, classes and names read from the data). One tokenizer
is trained and shared; then, for each mask and each training seed, a transformer with the same
size, steps and data (only the mask and the seed differ).

For every model:
- held-out NLL per scale (bits per token);
- a CFG sweep over `--cfg` with the `linear` and the `constant` schedule: in-domain FID on the
  features of a classifier trained on the same data (`fid_<data>`, never called FID), class
  accuracy of the samples, precision and recall;
- a masked-resampling sweep at `--mr_cfg` (linear schedule): thresholds x iterations, with the
  fraction of tokens MR redrew at each scale.

Every table gives mean ± standard deviation over the training seeds (the sampling seed is the
training seed, so the spread holds both), and calls a difference an effect only when it exceeds
the sum of the two standard deviations.

    pip install -e '.[repro]'
    python benchmarks/reproduction.py --workdir=workdirs/reproduction          # about 2 h, 2 cores
    python benchmarks/reproduction.py --workdir=/tmp/repro_quick --quick       # minutes

Every stage writes to the workdir and is skipped when its output exists, so an interrupted run
resumes. Writes `results.json`, `results.md` (the tables) and `plots/*.png`, and prints the
tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import time

import jax
import numpy as np
from absl import logging

from srdd_jax import experiment, saved_models
from srdd_jax.data import image_folder, loading
from srdd_jax.evaluation import evaluate, likelihood
from srdd_jax.modes import model_resolver, specs
from srdd_jax.sampling.settings import SamplerSettings

MASKS = ("var", "markov")
OPENCLIPART_ROOT = "/usr/share/openclipart/png"
OPENCLIPART_CLASSES = (  # class name -> folder under OPENCLIPART_ROOT (read recursively)
    ("arrows", "shapes/arrows"), ("flags", "signs_and_symbols/flags"), ("fruit", "food/fruit"),
    ("map_symbols", "signs_and_symbols/map_symbols"), ("pictograms", "transportation/aiga-symbols"),
    ("playing_cards", "recreation/games/cards"), ("road_signs", "transportation/roadsigns"),
    ("smilies", "people/smilies"), ("stars", "shapes/stars"))
HELD_OUT_EVERY = 10  # every tenth image of a class is held out


# ------------------------------------------------------------------------------------ settings
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--workdir", default="workdirs/reproduction")
    parser.add_argument("--data_root", default="", help="one sub-folder per class (default: "
                        "nine openclipart-png folders)")
    parser.add_argument("--name", default="", help="the data's name in metric keys (default: "
                        "openclipart9, or the data_root folder's name)")
    parser.add_argument("--config", default="configs/image_folder.py")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, the same for each mask")
    parser.add_argument("--tokenizer_steps", type=int, default=0, help="0: the config's")
    parser.add_argument("--steps", type=int, default=0, help="transformer steps (0: the config's)")
    parser.add_argument("--per_class", type=int, default=100, help="samples per class per setting")
    parser.add_argument("--cfg", default="0,1,2,3,5,7.5,10", help="guidance scales")
    parser.add_argument("--schedules", default="linear,constant")
    parser.add_argument("--mr_cfg", type=float, default=3.0, help="guidance of the MR sweep (linear)")
    parser.add_argument("--mr_thresholds", default="0.001,0.01,0.05")
    parser.add_argument("--mr_iterations", default="5,25")
    parser.add_argument("--classifier_steps", type=int, default=1500)
    parser.add_argument("--quick", action="store_true", help="tiny model, two seeds, a few steps "
                        "and settings: a smoke run in minutes")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.per_class, args.cfg, args.mr_thresholds, args.mr_iterations = (
            "0,1", 4, "0,3", "0.05", "2")
        args.tokenizer_steps, args.steps, args.classifier_steps = 4, 4, 20
    return args


def values(text: str, kind=float) -> list:
    return [kind(x) for x in text.split(",") if x]


def base_config(args, train_root: str):
    path, _, variant = args.config.partition(":")
    spec = importlib.util.spec_from_file_location("repro_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("tiny" if args.quick else variant)
    config.data.root = train_root
    if args.tokenizer_steps:
        config.tokenizer_training.steps = args.tokenizer_steps
    if args.steps:
        config.training.steps = args.steps
    config.training.checkpoint_every = config.training.steps
    config.evaluate.update(dict(per_class=args.per_class, classifier_steps=args.classifier_steps,
                                classifier_dir=os.path.join(args.workdir, "classifier"),
                                reference_cache=os.path.join(args.workdir, "reference"),
                                reference_images=0, classifier_images=0))
    return config


def _with(config, **fields):
    cfg = config.copy_and_resolve_references()
    cfg.update(fields)
    return cfg


def fitted_specs(config) -> specs.ExperimentSpec:
    """The config read into specs, with the model the training runs fit to the data (channels,
    classes and class names read from it)."""
    parsed = specs.parse(config)
    return model_resolver.with_model(
        parsed, model_resolver.for_training(parsed, config.model_from_data))


def evaluator(evaluators: dict, spec, experiment_spec: specs.ExperimentSpec,
              workdir: str) -> evaluate.Evaluator:
    """The Evaluator of a model spec on the experiment's data, one per spec in `evaluators`: the
    models of one spec (the other seeds) reuse its samplers and their compiled programs."""
    if spec not in evaluators:
        evaluators[spec] = evaluate.Evaluator(spec, experiment_spec.evaluate, experiment_spec.data,
                                              experiment_spec.seed, workdir)
    return evaluators[spec]


# ---------------------------------------------------------------------------------------- data
def openclipart_classes(root: str = OPENCLIPART_ROOT) -> list[tuple[str, list[str]]]:
    """(class name, sorted image files) of the nine openclipart folders."""
    if not os.path.isdir(root):
        raise SystemExit(f"{root} not found: `apt-get install openclipart-png`, or pass --data_root")
    classes = []
    for name, folder in OPENCLIPART_CLASSES:
        files = sorted(os.path.join(d, f) for d, _, names in os.walk(os.path.join(root, folder))
                       for f in names if f.lower().endswith(".png"))
        classes.append((name, files))
    return classes


def split_data(classes, destination: str, name: str) -> tuple[str, str]:
    """Links every class's images into <destination>/<name>/<class>/ (training) and
    <destination>/<name>_test/<class>/ (every HELD_OUT_EVERY-th image); returns both roots."""
    train_root, test_root = (os.path.join(destination, n) for n in (name, f"{name}_test"))
    if os.path.isdir(test_root):
        return train_root, test_root
    for class_name, files in classes:
        for root in (train_root, test_root):
            os.makedirs(os.path.join(root, class_name), exist_ok=True)
        for i, path in enumerate(files):
            root = test_root if i % HELD_OUT_EVERY == 0 else train_root
            link = os.path.join(root, class_name, f"{i:05d}_{os.path.basename(path)}")
            os.symlink(os.path.abspath(path), link)
    return train_root, test_root


# ------------------------------------------------------------------------------------ training
def train_models(args, config, masks=MASKS) -> dict:
    """Trains the shared tokenizer, then a transformer per (mask, seed); {(mask, seed): model dir}."""
    tok_dir = os.path.join(args.workdir, "tokenizer")
    if not os.path.exists(os.path.join(tok_dir, "model")):
        experiment.run(_with(config, mode="train_tokenizer"), tok_dir)
    dirs = {}
    for mask in masks:
        for seed in values(args.seeds, int):
            run_dir = os.path.join(args.workdir, f"{mask}_seed{seed}")
            if not os.path.exists(os.path.join(run_dir, "model")):
                cfg = _with(config, mode="train", seed=seed)
                cfg.model.transformer.mask = mask
                cfg.init.tokenizer = os.path.join(tok_dir, "model")
                experiment.run(cfg, run_dir)
            dirs[(mask, seed)] = os.path.join(run_dir, "model")
    return dirs


# ---------------------------------------------------------------------------------- evaluation
def settings_grid(args, fitted: specs.ExperimentSpec) -> list[tuple[str, dict]]:
    """(sweep, sampler settings) of every evaluation of one model."""
    base = fitted.sampling
    grid = [("cfg", dataclasses.replace(base, cfg=scale, cfg_schedule=schedule))
            for schedule in args.schedules.split(",") for scale in values(args.cfg)]
    mr_base = dataclasses.replace(base, cfg=args.mr_cfg, cfg_schedule="linear")
    grid.append(("mr", mr_base))
    grid += [("mr", dataclasses.replace(mr_base, mr=True, mr_threshold=threshold,
                                        mr_iterations=iterations))
             for threshold in values(args.mr_thresholds)
             for iterations in values(args.mr_iterations, int)]
    return [(sweep, dataclasses.asdict(s)) for sweep, s in grid]


def evaluate_models(args, fitted: specs.ExperimentSpec, dirs: dict, test_root: str) -> list[dict]:
    """One record per (model, evaluation), appended to evaluations.jsonl as it ends (a rerun
    skips the records already there)."""
    log_path = os.path.join(args.workdir, "evaluations.jsonl")
    done, have = [], set()
    if os.path.exists(log_path):
        with open(log_path) as f:
            for record in (json.loads(line) for line in f if line.strip()):
                key = (record["mask"], record["seed"], record["sweep"],
                       json.dumps(record.get("settings"), sort_keys=True))
                if key not in have:  # the first of any repeats (two runs on one workdir)
                    have.add(key)
                    done.append(record)
    images, labels = evaluate.first_images(loading.load(fitted.data, fitted.model), 0)
    evaluators = {}
    data_evaluator = evaluator(evaluators, fitted.model, fitted, args.workdir)
    classifier = data_evaluator.load_classifier()
    real = data_evaluator.real_statistics(classifier, images, fitted.evaluate.reference_cache)
    test_data = fitted.data.replace(root=test_root)
    test_images, test_labels = evaluate.first_images(loading.load(test_data, fitted.model), 0)
    grid = settings_grid(args, fitted)
    with open(log_path, "a") as log:
        if not any(r["sweep"] == "real" for r in done):  # the floor: held-out real images
            record = dict(mask="data", seed=0, sweep="real", settings=None, **_scalars(
                data_evaluator.classifier_metrics(classifier, real, test_images, test_labels)))
            log.write(json.dumps(record) + "\n")
            done.append(record)
        for (mask, seed), model_dir in dirs.items():
            params, model_spec = saved_models.load_model(model_dir)
            model_evaluator = evaluator(evaluators, model_spec, fitted, args.workdir)
            todo = [("nll", None)] + grid
            for sweep, settings in todo:
                key = (mask, seed, sweep, json.dumps(settings, sort_keys=True))
                if key in have:
                    continue
                start = time.time()
                if sweep == "nll":
                    result = likelihood.Likelihood(model_spec, fitted.evaluate.batch_size).nll(
                        params, test_images, test_labels)
                else:
                    result = _scalars(model_evaluator.sample_metrics(
                        params, SamplerSettings(**_tuples(settings)), classifier, real,
                        args.per_class, seed))
                record = dict(mask=mask, seed=seed, sweep=sweep, settings=settings,
                              seconds=time.time() - start, **result)
                log.write(json.dumps(record) + "\n")
                log.flush()
                done.append(record)
                logging.info("%s seed %d %s %s: %s", mask, seed, sweep, _describe(settings),
                             {k: v for k, v in result.items() if isinstance(v, float)})
    return done


def _tuples(settings: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}


def _scalars(metrics: dict) -> dict:
    keep = ("resampled_per_scale", "tokens_per_scale", "class_accuracy_per_class")
    return {k: v for k, v in metrics.items()
            if (isinstance(v, (int, float)) and k != "compile_s") or k in keep}


def _describe(settings) -> str:
    if not settings:
        return ""
    text = f"cfg {settings['cfg']:g} {settings['cfg_schedule']}"
    if settings["mr"]:
        text += f", MR {settings['mr_threshold']:g} x {settings['mr_iterations']}"
    return text


# --------------------------------------------------------------------------------- aggregation
def mean_std(xs) -> tuple[float, float]:
    xs = np.asarray(xs, np.float64)
    return float(xs.mean()), float(xs.std(ddof=1)) if len(xs) > 1 else 0.0


def aggregate(records: list[dict], metric: str) -> dict:
    """{mask: {'nll': per-scale and total (mean, std), 'cfg': {(schedule, cfg): stats},
    'mr': {(threshold, iterations): stats}}} over seeds; stats = {metric: (mean, std),
    'class_accuracy': ..., 'redrawn_per_scale': [(mean, std)], 'seeds': n}."""
    out = {}
    for mask in MASKS:
        rows = [r for r in records if r["mask"] == mask]
        nll = [r for r in rows if r["sweep"] == "nll"]
        entry = {"nll": {"bits_per_token": mean_std([r["bits_per_token"] for r in nll]),
                         "per_scale": [mean_std(v) for v in zip(*[r["bits_per_token_per_scale"]
                                                                  for r in nll])],
                         "seeds": len(nll)}, "cfg": {}, "mr": {}}
        groups: dict = {}
        for r in rows:
            if r["sweep"] == "nll" or r["settings"].get("mr_rerun"):  # (a removed option's runs)
                continue
            s = r["settings"]
            key = ((s["cfg_schedule"], s["cfg"]) if r["sweep"] == "cfg" else
                   (s["mr_threshold"] if s["mr"] else 0.0, s["mr_iterations"] if s["mr"] else 0))
            groups.setdefault((r["sweep"], key), []).append(r)
        for (sweep, key), group in groups.items():
            stats = {name: mean_std([g[name] for g in group])
                     for name in (metric, "class_accuracy", "images_per_s")}
            if all("resampled_per_scale" in g for g in group):
                fractions = [np.asarray(g["resampled_per_scale"]) / np.asarray(g["tokens_per_scale"])
                             for g in group]
                stats["redrawn_per_scale"] = [mean_std(v) for v in zip(*fractions)]
            stats["seeds"] = len(group)
            entry[sweep][key] = stats
        out[mask] = entry
    return out


def is_effect(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """A difference of means larger than the sum of the two standard deviations."""
    return abs(a[0] - b[0]) > a[1] + b[1]


def _pm(stat, digits=2) -> str:
    return f"{stat[0]:.{digits}f} ± {stat[1]:.{digits}f}"


def markdown(summary: dict, metric: str, patch_nums, seeds: int, real: dict | None = None) -> str:
    lines = [f"Mean ± standard deviation over {seeds} training seeds; **bold** marks an effect "
             "(a difference larger than the sum of the two standard deviations).", ""]
    if real:
        lines += [f"Held-out real images ({real['images']}), scored like the samples: {metric} "
                  f"{real[metric]:.2f}, class accuracy {real['class_accuracy']:.3f} (the floor "
                  "at that many images; samples are scored in larger sets).", ""]
    lines += ["Held-out NLL (bits per token), markov against var:", "",
              "| mask | total | " + " | ".join(f"{p}x{p}" for p in patch_nums) + " |",
              "| --- | --- | " + " | ".join("---" for _ in patch_nums) + " |"]
    var, markov = summary["var"]["nll"], summary["markov"]["nll"]
    for mask, other in (("var", markov), ("markov", var)):
        entry = summary[mask]["nll"]
        cells = [_bold(_pm(s, 3), mask == "markov" and is_effect(s, o))
                 for s, o in zip(entry["per_scale"], other["per_scale"])]
        total = _bold(_pm(entry["bits_per_token"], 3),
                      mask == "markov" and is_effect(entry["bits_per_token"], other["bits_per_token"]))
        lines.append(f"| {mask} | {total} | " + " | ".join(cells) + " |")
    for schedule in sorted({k[0] for k in summary["var"]["cfg"]}):
        lines += ["", f"CFG sweep, `{schedule}` schedule ({metric}, lower is better; class "
                  "accuracy of the samples):", "",
                  f"| CFG | var {metric} | markov {metric} | var class acc. | markov class acc. |",
                  "| --- | --- | --- | --- | --- |"]
        for key in sorted(k for k in summary["var"]["cfg"] if k[0] == schedule):
            v, m = summary["var"]["cfg"][key], summary["markov"]["cfg"].get(key)
            if m is None:
                continue
            lines.append(f"| {key[1]:g} | {_pm(v[metric])} | {_cell(m[metric], v[metric])} | "
                         f"{_pm(v['class_accuracy'], 3)} | "
                         f"{_cell(m['class_accuracy'], v['class_accuracy'], 3)} |")
    for mask in MASKS:
        mr = summary[mask]["mr"]
        base = mr.get((0.0, 0))
        if not base:
            continue
        lines += ["", f"Masked resampling, {mask} ({metric}; **bold**: an effect against no MR; "
                  "tokens redrawn as a share of each scale's tokens, summed over iterations):", "",
                  f"| threshold | iterations | {metric} | class acc. | redrawn per scale |",
                  "| --- | --- | --- | --- | --- |",
                  f"| — | 0 | {_pm(base[metric])} | {_pm(base['class_accuracy'], 3)} | — |"]
        for key in sorted(k for k in mr if k[1]):
            s = mr[key]
            redrawn = " ".join(f"{m:.3f}" for m, _ in s.get("redrawn_per_scale", []))
            lines.append(f"| {key[0]:g} | {key[1]} | {_cell(s[metric], base[metric])} | "
                         f"{_cell(s['class_accuracy'], base['class_accuracy'], 3)} | {redrawn} |")
    return "\n".join(lines)


def _bold(text: str, bold: bool) -> str:
    return f"**{text}**" if bold else text


def _cell(stat, other, digits=2) -> str:
    """`stat` as mean ± std, in bold when it differs from `other` by an effect."""
    return _bold(_pm(stat, digits), is_effect(stat, other))


def plot(summary: dict, metric: str, patch_nums, folder: str, real: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for mask in MASKS:
        per_scale = summary[mask]["nll"]["per_scale"]
        axes[0].errorbar(range(len(patch_nums)), [m for m, _ in per_scale], [s for _, s in per_scale],
                         marker="o", capsize=3, label=mask)
        for schedule, style in (("linear", "-"), ("constant", "--")):
            keys = sorted(k for k in summary[mask]["cfg"] if k[0] == schedule)
            if not keys:
                continue
            stats = [summary[mask]["cfg"][k] for k in keys]
            for ax, name in ((axes[1], metric), (axes[2], "class_accuracy")):
                ax.errorbar([k[1] for k in keys], [s[name][0] for s in stats],
                            [s[name][1] for s in stats], linestyle=style, marker="o", capsize=3,
                            label=f"{mask}, {schedule}")
    if real:
        axes[1].axhline(real[metric], color="grey", linestyle=":", label="held-out real images")
        axes[2].axhline(real["class_accuracy"], color="grey", linestyle=":",
                        label="held-out real images")
    axes[0].set_xticks(range(len(patch_nums)), [f"{p}x{p}" for p in patch_nums])
    axes[0].set(title="held-out NLL per scale", xlabel="scale", ylabel="bits / token")
    axes[1].set(title="in-domain FID (classifier features)", xlabel="CFG scale", ylabel=metric)
    axes[2].set(title="class accuracy of samples", xlabel="CFG scale", ylabel="accuracy")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "nll_and_cfg.png"), dpi=100)
    plt.close(fig)
    fig, axes = plt.subplots(1, 3, figsize=(18, 4))
    for mask, baseline_colour in zip(MASKS, ("grey", "black")):
        mr = summary[mask]["mr"]
        for iterations in sorted({k[1] for k in mr if k[1]}):
            keys = sorted(k for k in mr if k[1] == iterations)
            label = f"{mask}, {iterations} it."
            for ax, name in ((axes[0], metric), (axes[1], "class_accuracy")):
                ax.errorbar([k[0] for k in keys], [mr[k][name][0] for k in keys],
                            [mr[k][name][1] for k in keys], marker="o", capsize=3, label=label)
            largest = keys[-1]
            if "redrawn_per_scale" in mr[largest]:
                axes[2].plot(range(len(patch_nums)), [m for m, _ in mr[largest]["redrawn_per_scale"]],
                             marker="o", label=f"{label}, threshold {largest[0]:g}")
        if (0.0, 0) in mr:
            for ax, name in ((axes[0], metric), (axes[1], "class_accuracy")):
                ax.axhline(mr[(0.0, 0)][name][0], linestyle=":", color=baseline_colour,
                           label=f"{mask}, no MR")
    axes[0].set(title="masked resampling", xlabel="threshold", ylabel=metric, xscale="log")
    axes[1].set(title="class accuracy of samples", xlabel="threshold", ylabel="accuracy",
                xscale="log")
    axes[2].set(title="tokens redrawn (share of the scale)", xlabel="scale")
    axes[2].set_xticks(range(len(patch_nums)), [f"{p}x{p}" for p in patch_nums])
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "mr_sweep.png"), dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------- main
def run(args) -> dict:
    os.makedirs(args.workdir, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", os.path.join(args.workdir, "xla_cache"))
    name = args.name or ("openclipart9" if not args.data_root else
                         os.path.basename(os.path.normpath(args.data_root)))
    classes = image_folder.folder_classes(args.data_root) if args.data_root else openclipart_classes()
    train_root, test_root = split_data(classes, os.path.join(args.workdir, "data"), name)
    config = base_config(args, train_root)
    start = time.time()
    dirs = train_models(args, config)
    trained_s = time.time() - start
    fitted = fitted_specs(config)  # the model from the data
    records = evaluate_models(args, fitted, dirs, test_root)
    metric = f"fid_{evaluate.dataset_tag(fitted.data)}"
    summary = aggregate(records, metric)
    real = next((r for r in records if r["sweep"] == "real"), None)
    seeds = len(values(args.seeds, int))
    patch_nums = list(fitted.model.patch_nums)
    results = dict(args=vars(args), data=dict(train=train_root, test=test_root,
                                              classes=list(fitted.model.class_names)),
                   metric=metric, seeds=values(args.seeds, int), train_s=trained_s,
                   total_s=time.time() - start, devices=[str(d) for d in jax.devices()],
                   real_held_out=real, summary=_jsonable(summary), records=records)
    with open(os.path.join(args.workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    table = markdown(summary, metric, patch_nums, seeds, real)
    with open(os.path.join(args.workdir, "results.md"), "w") as f:
        f.write(table + "\n")
    plot(summary, metric, patch_nums, os.path.join(args.workdir, "plots"), real)
    print(table)
    return results


def _jsonable(summary: dict) -> dict:
    return {mask: {"nll": entry["nll"],
                   "cfg": [dict(schedule=k[0], cfg=k[1], **v) for k, v in sorted(entry["cfg"].items())],
                   "mr": [dict(threshold=k[0], iterations=k[1], **v)
                          for k, v in sorted(entry["mr"].items())]}
            for mask, entry in summary.items()}


if __name__ == "__main__":
    logging.set_verbosity(logging.INFO)
    run(parse_args())
