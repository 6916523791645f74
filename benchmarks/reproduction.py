"""The first reproduction: SRDD (Markov mask) against VAR (block-causal mask) on Fashion-MNIST.

Both transformers share one tokenizer and have the same size, data order, seed and number of
steps (`configs/demo.py`); only `model.transformer.mask` differs. Then, for each:
- held-out NLL per scale (bits per token, the cross-entropy tied to the diffusion ELBO);
- a CFG sweep: in-domain FID on classifier features (`fid_fmnist`, never called FID) and the class
  accuracy of class-conditional samples;
- for `markov` (optionally `var` too), a masked-resampling sweep over threshold x iterations.

    pip install -e '.[repro]'
    python benchmarks/reproduction.py --workdir=workdirs/reproduction

Defaults take about 40 minutes on 2 CPU cores; `--steps`, `--per_class` etc. make it longer.
Every stage writes to the workdir and is skipped when its output exists, so an interrupted run
resumes. Writes `results.json`, `results.md` (the tables) and `plots/*.png`, and prints the JSON.
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

from srdd_jax import checkpoints, experiment
from srdd_jax.evaluation import evaluate, likelihood
from srdd_jax.sampling.sampler import SamplerSettings

MASKS = ("var", "markov")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--workdir", default="workdirs/reproduction")
    parser.add_argument("--config", default="configs/demo.py")
    parser.add_argument("--tokenizer_steps", type=int, default=350)
    parser.add_argument("--steps", type=int, default=500, help="transformer steps, the same for both")
    parser.add_argument("--per_class", type=int, default=100, help="samples per class per setting")
    parser.add_argument("--nll_images", type=int, default=10000, help="held-out test images for NLL")
    parser.add_argument("--cfg", default="0,1,1.5,3,5,10", help="guidance scales (linear schedule)")
    parser.add_argument("--mr_thresholds", default="0.001,0.01,0.1")
    parser.add_argument("--mr_iterations", default="0,5,25")
    parser.add_argument("--mr_masks", default="markov", help="masks that get the MR sweep")
    parser.add_argument("--classifier_steps", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def base_config(args):
    spec = importlib.util.spec_from_file_location("repro_config", args.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.seed = args.seed
    config.tokenizer_training.steps = args.tokenizer_steps
    config.training.steps = args.steps
    config.training.checkpoint_every = args.steps
    config.evaluate.update(dict(per_class=args.per_class, nll_images=args.nll_images,
                                classifier_steps=args.classifier_steps,
                                classifier_dir=os.path.join(args.workdir, "classifier"),
                                reference_cache=os.path.join(args.workdir, "reference")))
    return config


def train_models(args, config) -> dict:
    """Trains the shared tokenizer, then one transformer per mask; returns {mask: model dir}."""
    tok_dir = os.path.join(args.workdir, "tokenizer")
    timings = {}
    if not os.path.exists(os.path.join(tok_dir, "model")):
        start = time.time()
        experiment.run(_with(config, mode="train_tokenizer"), tok_dir)
        timings["tokenizer_s"] = time.time() - start
    dirs = {}
    for mask in MASKS:
        run_dir = os.path.join(args.workdir, mask)
        if not os.path.exists(os.path.join(run_dir, "model")):
            cfg = _with(config, mode="train")
            cfg.model.transformer.mask = mask
            cfg.init.tokenizer = os.path.join(tok_dir, "model")
            start = time.time()
            experiment.run(cfg, run_dir)
            timings[f"train_{mask}_s"] = time.time() - start
        dirs[mask] = os.path.join(run_dir, "model")
    logging.info("training times: %s", timings)
    return dirs


def _with(config, **fields):
    cfg = config.copy_and_resolve_references()
    cfg.update(fields)
    return cfg


def settings_with(config, **fields) -> SamplerSettings:
    return dataclasses.replace(SamplerSettings.from_config(config.sample.settings), **fields)


def evaluate_models(args, config, dirs: dict) -> dict:
    """NLL per scale, the CFG sweep and the MR sweep for every mask."""
    mesh = None
    images, labels = evaluate.first_images(experiment.load_data(config, config.evaluate.split),
                                     config.evaluate.reference_images)
    classifier = evaluate.load_classifier(config, args.workdir)
    real = evaluate.real_statistics(config, classifier, images, config.evaluate.reference_cache, mesh)
    results = dict(classifier_test_accuracy=classifier.test_accuracy, models={})
    for mask, model_dir in dirs.items():
        params, model_cfg = checkpoints.load_model(model_dir)
        cfg = _with(config)
        cfg.model = model_cfg
        count = min(args.nll_images, len(labels))
        nll = likelihood.Likelihood(model_cfg, cfg.evaluate.batch_size).nll(
            params, images[:count], labels[:count])
        entry = dict(nll=nll, cfg_sweep=[], mr_sweep=[])
        for scale in floats(args.cfg):
            metrics = evaluate.sample_metrics(cfg, params, settings_with(cfg, cfg=scale), classifier,
                                              real, args.per_class, args.seed)
            entry["cfg_sweep"].append(dict(cfg=scale, **_scalars(metrics)))
            logging.info("%s cfg=%s: %s", mask, scale, _scalars(metrics))
        if mask in args.mr_masks.split(","):
            for iterations in (int(x) for x in floats(args.mr_iterations)):
                for threshold in floats(args.mr_thresholds) if iterations else [0.0]:
                    settings = settings_with(cfg, mr=iterations > 0, mr_threshold=threshold or 0.01,
                                             mr_iterations=max(iterations, 1))
                    metrics = evaluate.sample_metrics(cfg, params, settings, classifier, real,
                                                      args.per_class, args.seed)
                    entry["mr_sweep"].append(dict(threshold=threshold, iterations=iterations,
                                                  **_scalars(metrics)))
                    logging.info("%s MR %s x %d: %s", mask, threshold, iterations, _scalars(metrics))
        results["models"][mask] = entry
    return results


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "compile_s"}


def markdown(results: dict, config) -> str:
    """The README tables: NLL per scale, the CFG sweep, the MR sweep."""
    models, fid = results["models"], f"fid_{evaluate.dataset_tag(config)}"
    pns = list(config.model.patch_nums)
    lines = ["| mask | NLL bits/token | " + " | ".join(f"scale {p}x{p}" for p in pns) + " |",
             "| --- | --- | " + " | ".join("---" for _ in pns) + " |"]
    for mask, entry in models.items():
        per_scale = " | ".join(f"{v:.3f}" for v in entry["nll"]["bits_per_token_per_scale"])
        lines.append(f"| {mask} | {entry['nll']['bits_per_token']:.3f} | {per_scale} |")
    lines += ["", "| CFG | " + " | ".join(f"{m} {fid} | {m} class acc." for m in models) + " |",
              "| --- | " + " | ".join("--- | ---" for _ in models) + " |"]
    for i, row in enumerate(next(iter(models.values()))["cfg_sweep"]):
        picked = [e["cfg_sweep"][i] for e in models.values()]
        cells = " | ".join(f"{r[fid]:.2f} | {r['class_accuracy']:.3f}" for r in picked)
        lines.append(f"| {row['cfg']:g} | {cells} |")
    for mask, entry in models.items():
        if not entry["mr_sweep"]:
            continue
        lines += ["", f"MR sweep ({mask}, cfg {config.sample.settings.cfg:g}):", "",
                  f"| threshold | iterations | {fid} | class acc. | images/s |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['threshold']:g} | {r['iterations']} | {r[fid]:.2f} | "
                  f"{r['class_accuracy']:.3f} | {r['images_per_s']:.0f} |" for r in entry["mr_sweep"]]
    return "\n".join(lines)


def plot(results: dict, config, folder: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    models, fid = results["models"], f"fid_{evaluate.dataset_tag(config)}"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for mask, entry in models.items():
        axes[0].plot(range(len(config.model.patch_nums)), entry["nll"]["bits_per_token_per_scale"],
                     "o-", label=mask)
        sweep = entry["cfg_sweep"]
        axes[1].plot([r["cfg"] for r in sweep], [r[fid] for r in sweep], "o-", label=mask)
        axes[2].plot([r["cfg"] for r in sweep], [r["class_accuracy"] for r in sweep], "o-", label=mask)
    axes[0].set_xticks(range(len(config.model.patch_nums)),
                       [f"{p}x{p}" for p in config.model.patch_nums])
    axes[0].set(title="held-out NLL per scale", xlabel="scale", ylabel="bits / token")
    axes[1].set(title="in-domain FID (classifier features)", xlabel="CFG scale", ylabel=fid)
    axes[2].set(title="class accuracy of samples", xlabel="CFG scale", ylabel="accuracy")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(folder, "nll_and_cfg.png"), dpi=100)
    plt.close(fig)
    mr = {mask: e["mr_sweep"] for mask, e in models.items() if e["mr_sweep"]}
    if mr:
        fig, ax = plt.subplots(figsize=(6, 4))
        for mask, rows in mr.items():
            for threshold in sorted({r["threshold"] for r in rows if r["iterations"]}):
                picked = [r for r in rows if r["threshold"] in (threshold, 0.0)]
                ax.plot([r["iterations"] for r in picked], [r[fid] for r in picked], "o-",
                        label=f"{mask}, threshold {threshold:g}")
        ax.set(title="masked resampling", xlabel="MR iterations", ylabel=fid)
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(folder, "mr_sweep.png"), dpi=100)
        plt.close(fig)


def main() -> None:
    args = parse_args()
    logging.set_verbosity(logging.INFO)
    jax.config.update("jax_compilation_cache_dir", os.path.join(args.workdir, "xla_cache"))
    os.makedirs(args.workdir, exist_ok=True)
    config = base_config(args)
    start = time.time()
    dirs = train_models(args, config)
    trained_s = time.time() - start
    results = evaluate_models(args, config, dirs)
    results.update(args=vars(args), train_s=trained_s, total_s=time.time() - start,
                   devices=[str(d) for d in jax.devices()])
    with open(os.path.join(args.workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(args.workdir, "results.md"), "w") as f:
        f.write(markdown(results, config) + "\n")
    plot(results, config, os.path.join(args.workdir, "plots"))
    print(json.dumps(results, default=float))
    print(markdown(results, config))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
