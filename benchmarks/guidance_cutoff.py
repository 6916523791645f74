"""What stopping guidance at the last scales costs in quality: paired evaluations over seeds.

`cfg_until` (srdd_jax.sampling.guidance) runs the last scales without guidance, so they need
no unconditional rows (faster sampling; benchmarks/vs_var.py measures the speed). This script
measures what it does to the samples, on two kinds of data, each with `--seeds` training seeds:

- `demo`: the main job's model (configs/demo.py: Fashion-MNIST, 16 px, scales 1-2-4-8, Markov),
  trained with each seed; sampled at its settings (CFG 3, linear ramp, top-p 0.9) and scored
  against the 10,000 test images;
- `colour`: the reproduction's colour icons (nine openclipart-png folders, configs/image_folder.py
  at 32 px, scales 1-2-4-8; benchmarks/reproduction.py makes the data split and the tokenizer),
  a Markov transformer per seed; sampled at CFG 3 (linear ramp) and scored against the
  training images, as the reproduction does.

Each model is sampled with the unchanged sampler and with each cutoff of `--cutoffs` (cfg_until:
-2 = the last two scales unguided), with the same sampling seed (the training seed), so every
difference is paired. Scores: in-domain FID on the features of a classifier trained on the same
data (one classifier per dataset, shared by all models: `fid_<data>`, not Inception FID) and
class accuracy. A cutoff "costs quality" when its mean is worse than the unchanged sampler's by
more than the sum of the two standard deviations over seeds (the reproduction's effect rule).

    python benchmarks/guidance_cutoff.py --workdir=workdirs/guidance_cutoff   # about 1 h, 2 cores
    python benchmarks/guidance_cutoff.py --workdir=/tmp/cutoff_quick --quick  # minutes

Every stage is skipped when its output exists (an interrupted run resumes). Writes
`records.jsonl` (one line per evaluation), `results.json` and `results.md`, and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import time

import jax
import reproduction
from absl import logging

from srdd_jax import experiment, saved_models
from srdd_jax.data import loading
from srdd_jax.evaluation import evaluate
from srdd_jax.modes import specs

DATASETS = ("demo", "colour")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="workdirs/guidance_cutoff")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cutoffs", default="-2,-1", help="cfg_until values to compare")
    parser.add_argument("--cfg", type=float, default=3.0, help="guidance (linear ramp)")
    parser.add_argument("--per_class", type=int, default=100, help="samples per class")
    parser.add_argument("--quick", action="store_true", help="tiny models and a few samples")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.per_class = "0,1", 4
    return args


def _load_config(path: str, variant: str):
    spec = importlib.util.spec_from_file_location("cutoff_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def _with(config, **fields):
    cfg = config.copy_and_resolve_references()
    cfg.update(fields)
    return cfg


# ------------------------------------------------------------------------------------ datasets
def demo_setup(args) -> tuple:
    """(the config read into specs, {seed: model dir}, real images, classifier workdir)."""
    root = os.path.join(args.workdir, "demo")
    config = _load_config("configs/demo.py", "tiny" if args.quick else "")
    config.evaluate.update(dict(classifier_dir=os.path.join(root, "classifier"),
                                reference_cache=os.path.join(root, "reference")))
    dirs = {}
    for seed in reproduction.values(args.seeds, int):
        run_dir = os.path.join(root, f"seed{seed}")
        if not os.path.exists(os.path.join(run_dir, "model")):
            experiment.run(_with(config, seed=seed), run_dir)
        dirs[seed] = os.path.join(run_dir, "model")
    parsed = specs.parse(config)
    images, _ = evaluate.first_images(loading.load(parsed.data, parsed.model, parsed.evaluate.split),
                                      parsed.evaluate.reference_images)
    return parsed, dirs, images, root


def colour_setup(args) -> tuple:
    root = os.path.join(args.workdir, "colour")
    repro_args = reproduction.parse_args([f"--workdir={root}", f"--seeds={args.seeds}",
                                          f"--per_class={args.per_class}"]
                                         + (["--quick"] if args.quick else []))
    train_root, _ = reproduction.split_data(reproduction.openclipart_classes(),
                                            os.path.join(root, "data"), "openclipart9")
    config = reproduction.base_config(repro_args, train_root)
    dirs = {seed: path for (_, seed), path in
            reproduction.train_models(repro_args, config, masks=("markov",)).items()}
    fitted = reproduction.fitted_specs(config)
    images, _ = evaluate.first_images(loading.load(fitted.data, fitted.model), 0)
    return fitted, dirs, images, root


# ---------------------------------------------------------------------------------- evaluation
def evaluate_dataset(args, name: str, log) -> list[dict]:
    parsed, dirs, real_images, root = (demo_setup if name == "demo" else colour_setup)(args)
    evaluators = {}
    data_evaluator = reproduction.evaluator(evaluators, parsed.model, parsed, root)
    classifier = data_evaluator.load_classifier()
    real = data_evaluator.real_statistics(classifier, real_images, parsed.evaluate.reference_cache)
    base = dataclasses.replace(parsed.sampling, cfg=args.cfg, cfg_schedule="linear")
    settings = [("unchanged", base)] + [
        (f"cfg_until={c}", dataclasses.replace(base, cfg_until=c))
        for c in reproduction.values(args.cutoffs, int)]
    records = []
    for seed, model_dir in dirs.items():
        params, model_spec = saved_models.load_model(model_dir)
        model_evaluator = reproduction.evaluator(evaluators, model_spec, parsed, root)
        for label, setting in settings:
            key = (name, seed, label)
            if key in log["done"]:
                records.append(log["done"][key])
                continue
            start = time.time()
            result = model_evaluator.sample_metrics(params, setting, classifier, real,
                                                    args.per_class, seed)
            record = dict(dataset=name, seed=seed, setting=label, seconds=time.time() - start,
                          metric=f"fid_{evaluate.dataset_tag(parsed.data)}",
                          patch_nums=list(model_spec.patch_nums),
                          **{k: v for k, v in result.items() if isinstance(v, (int, float))})
            log["file"].write(json.dumps(record) + "\n")
            log["file"].flush()
            records.append(record)
            logging.info("%s seed %d %s: %s %.2f, class accuracy %.3f", name, seed, label,
                         record["metric"], record[record["metric"]], record["class_accuracy"])
    return records


def summarise(records: list[dict]) -> dict:
    """Per dataset and setting: mean ± std over seeds of the metric, class accuracy and images/s,
    and the paired difference to the unchanged sampler with `costs_quality`."""
    out = {}
    for name in sorted({r["dataset"] for r in records}):
        rows = [r for r in records if r["dataset"] == name]
        metric = rows[0]["metric"]
        by_setting = {}
        for r in rows:
            by_setting.setdefault(r["setting"], {})[r["seed"]] = r
        base = by_setting["unchanged"]
        entry = {"metric": metric, "patch_nums": rows[0]["patch_nums"], "settings": {}}
        for label, per_seed in by_setting.items():
            seeds = sorted(set(per_seed) & set(base))
            stats = {k: reproduction.mean_std([per_seed[s][k] for s in seeds])
                     for k in (metric, "class_accuracy", "images_per_s")}
            stats["seeds"] = len(seeds)
            if label != "unchanged":
                stats["paired_delta"] = {k: reproduction.mean_std(
                    [per_seed[s][k] - base[s][k] for s in seeds]) for k in (metric, "class_accuracy")}
                base_stats = entry["settings"]["unchanged"]
                worse_fid = (stats[metric][0] > base_stats[metric][0]
                             and reproduction.is_effect(stats[metric], base_stats[metric]))
                worse_acc = (stats["class_accuracy"][0] < base_stats["class_accuracy"][0]
                             and reproduction.is_effect(stats["class_accuracy"],
                                                        base_stats["class_accuracy"]))
                stats["costs_quality"] = bool(worse_fid or worse_acc)
            entry["settings"][label] = stats
        out[name] = entry
    return out


def markdown(summary: dict) -> str:
    lines = []
    for name, entry in summary.items():
        metric = entry["metric"]
        lines += [f"{name} (scales {'-'.join(map(str, entry['patch_nums']))}; mean ± std over "
                  f"{entry['settings']['unchanged']['seeds']} seeds; Δ paired with the unchanged "
                  "sampler, same seeds):", "",
                  f"| sampler | {metric} | Δ {metric} | class acc. | Δ class acc. | images/s | "
                  "costs quality |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for label, s in entry["settings"].items():
            delta = s.get("paired_delta")
            lines.append(
                f"| {label} | {reproduction._pm(s[metric])} | "
                f"{reproduction._pm(delta[metric]) if delta else '—'} | "
                f"{reproduction._pm(s['class_accuracy'], 3)} | "
                f"{reproduction._pm(delta['class_accuracy'], 3) if delta else '—'} | "
                f"{reproduction._pm(s['images_per_s'], 1)} | "
                f"{('**yes**' if s['costs_quality'] else 'no') if delta else '—'} |")
        lines.append("")
    return "\n".join(lines)


def run(args) -> dict:
    os.makedirs(args.workdir, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", os.path.join(args.workdir, "xla_cache"))
    path = os.path.join(args.workdir, "records.jsonl")
    done = {}
    if os.path.exists(path):
        with open(path) as f:
            for r in (json.loads(line) for line in f if line.strip()):
                done.setdefault((r["dataset"], r["seed"], r["setting"]), r)
    start, records = time.time(), []
    with open(path, "a") as f:
        for name in args.datasets.split(","):
            records += evaluate_dataset(args, name, {"done": done, "file": f})
    summary = summarise(records)
    results = dict(args=vars(args), summary=summary, records=records, total_s=time.time() - start,
                   date=time.strftime("%Y-%m-%d"))
    with open(os.path.join(args.workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    table = markdown(summary)
    with open(os.path.join(args.workdir, "results.md"), "w") as f:
        f.write(table)
    print(table)
    return results


if __name__ == "__main__":
    logging.set_verbosity(logging.INFO)
    run(parse_args())
