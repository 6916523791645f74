"""Transformer train step (`var` vs `markov` mask) and input pipeline throughput, side by side.

Default: the demo model (configs/demo.py) on random images. Prints JSON with, per mask, steps/s,
tokens/s and model FLOP utilisation (XLA's FLOP count of the compiled step over a float32 matmul
peak measured in the same process), plus the Fashion-MNIST input pipeline's images/s, which must
stay well above the images/s the train step consumes.

    python benchmarks/train_step.py [--steps 10] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import time

from forward_masks import matmul_peak_flops


def demo_config():
    """configs/demo.py's default config, loaded by path like config_flags does."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "configs" / "demo.py"
    spec = importlib.util.spec_from_file_location("demo_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def measure_step(mask: str, steps: int, batch: int) -> dict:
    import flax.linen as nn
    import jax
    import numpy as np

    from srdd_jax import compilation_cache, models, parallel, scales
    from srdd_jax.data import sources
    from srdd_jax.modes import specs
    from srdd_jax.training import loop, optimizer
    from srdd_jax.training import steps as train_steps

    compilation_cache.enable("off")  # cold compiles only
    cfg = demo_config()
    spec = specs.model_spec(cfg.model).with_transformer(mask=mask)
    model = models.Model(spec)
    size = model.image_size
    rng = np.random.default_rng(0)
    source = sources.Source(rng.integers(0, 256, (batch * 4, size, size, 1)).astype(np.uint8),
                            (np.arange(batch * 4) % 10).astype(np.int32), tuple("0123456789"))
    mesh = parallel.make_mesh(-1, 1)
    tx, _ = optimizer.make_optimizer(specs.train_spec(cfg, "training").optim, 1000, batch)
    init = train_steps.unboxed_init(lambda r: model.init_params(r, "transformer"), tx)
    state = jax.jit(init)(jax.random.key(0))
    tok_params = nn.unbox(model.init_params(jax.random.key(1), "tokenizer"))
    step = train_steps.make_transformer_step(model.transformer, model.tokenizer, tx)
    iterator = source.batches(batch, 0)
    batch_arrays = loop.global_batch(next(iterator), mesh)
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0,)).lower(state, tok_params, batch_arrays,
                                                        jax.random.key(2)).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    state, metrics = compiled(state, tok_params, batch_arrays, jax.random.key(2))
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, tok_params, loop.global_batch(next(iterator), mesh),
                                  jax.random.key(2))
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / steps
    peak = matmul_peak_flops()
    tokens = batch * scales.sequence_length(spec.patch_nums)
    return {"mask": mask, "compile_s": compile_s, "step_s": seconds, "steps_per_s": 1 / seconds,
            "tokens_per_s": tokens / seconds, "images_per_s": batch / seconds,
            "xla_flops_per_step": flops, "mfu_vs_matmul_peak": flops / seconds / peak,
            "matmul_peak_flops_per_s": peak}


def measure_pipeline(batch: int, batches: int = 200) -> dict:
    from srdd_jax.data import sources

    start = time.perf_counter()
    source = sources.fashion_mnist("train", 32, 1)
    load_s = time.perf_counter() - start
    iterator = source.batches(batch, 0)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    return {"source": "fashion_mnist", "load_s": load_s, "images_per_s": batch * batches / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    results = {mask: measure_step(mask, args.steps, args.batch) for mask in ("var", "markov")}
    pipeline = measure_pipeline(args.batch)
    print(json.dumps({
        "benchmark": "train_step", "model": "configs/demo.py", "batch": args.batch,
        "results": results,
        "markov_over_var_step_time": results["markov"]["step_s"] / results["var"]["step_s"],
        "input_pipeline": pipeline,
        "pipeline_over_step_images_per_s": pipeline["images_per_s"] / max(
            r["images_per_s"] for r in results.values()),
    }, indent=1))


if __name__ == "__main__":
    main()
