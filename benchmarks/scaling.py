"""How start-up cost and memory scale with depth: init, compile, steady state, memory.

For each depth (default 4, 16, 30; width 64 * depth, VAR's released shapes at 256 px, random
weights) a fresh process (so peak RSS is its own, and with the persistent compilation cache off)
measures:
- train_compile_s and train_temp_bytes: ahead-of-time compilation of the transformer train step
  (tokenizer encoding included) at `--batch`, from shapes alone, and XLA's temporary memory for it;
  every compile time also as CPU time (`*_compile_cpu_s*`), which other jobs on the machine barely
  change;
- sampler_compile_s / sampler_temp_bytes for the `var` and `markov` samplers (CFG 1.5, top-k 900,
  top-p 0.96) at `--batch`, likewise;
- init_s: then creating the tokenizer and transformer parameters (one jitted program each);
- step_s: the steady-state train step (median of `--steps` steps after one warm-up), when the
  train state fits in memory (else `step_skipped` says why);
- peak_rss_bytes of the process.
With `--repeats N` the depths are measured round robin N times (fresh processes) and every number
is the median. Prints JSON with all of it and the ratios of the deepest to the shallowest depth.

    python benchmarks/scaling.py [--depths 4,16,30] [--batch 8] [--steps 2] [--remat dots]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time


def model_spec(depth: int, width: int | None = None, dtype: str = "float32",
               remat: str | None = None, patch_nums=None, mask: str = "markov"):
    """VAR's released tokenizer and a d`depth` transformer (width 64 * depth unless given), as a
    `models.ModelSpec`."""
    from srdd_jax import models
    from srdd_jax.transformer.spec import TransformerSpec

    overrides = dict(mask=mask, dtype=dtype)
    if width:
        overrides.update(embed_dim=width, num_heads=max(width // 64, 1))
    if remat:
        overrides["remat"] = remat
    return models.ModelSpec(patch_nums=tuple(patch_nums or models.PATCH_NUMS_256),
                            transformer=TransformerSpec.for_depth(depth, **overrides))


def train_step_parts(spec, batch: int, cached_tokens: bool = False):
    """(jitted step, abstract state, abstract batch, optimizer) for the transformer train step:
    from images (the tokenizer encodes them in the step) or from cached tokens."""
    import jax

    from srdd_jax import models
    from srdd_jax.training import optimizer
    from srdd_jax.training import steps as train_steps
    from srdd_jax.training.spec import OptimSpec

    model = models.Model(spec)
    tx, _ = optimizer.make_optimizer(OptimSpec(), 1000, batch)
    step = train_steps.make_transformer_step(model.transformer, model.tokenizer, tx)
    init = train_steps.unboxed_init(lambda r: model.create_params(r, "transformer"), tx)
    abstract_state = jax.eval_shape(init, jax.random.key(0))
    abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                  random_batch(spec, batch, cached_tokens=cached_tokens))
    return jax.jit(step, donate_argnums=(0,)), abstract_state, abstract_batch, tx


def random_batch(spec, batch: int, seed: int = 0, cached_tokens: bool = False) -> dict:
    """Random images in [-1, 1] (or token sequences) and labels."""
    import numpy as np

    from srdd_jax import models, scales

    rng = np.random.default_rng(seed)
    labels = (np.arange(batch) % spec.transformer.num_classes).astype(np.int32)
    if cached_tokens:
        length = scales.sequence_length(spec.patch_nums)
        return {"tokens": rng.integers(0, spec.tokenizer.vocab_size, (batch, length), np.int32),
                "label": labels}
    size = models.Model(spec).image_size
    return {"image": rng.uniform(-1, 1, (batch, size, size, spec.tokenizer.in_channels)
                                 ).astype(np.float32), "label": labels}


def available_memory_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def tree_bytes(tree) -> int:
    import jax
    import numpy as np

    return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def temp_bytes(compiled):
    memory = compiled.memory_analysis()
    return getattr(memory, "temp_size_in_bytes", None)


def measure(depth: int, width: int | None, batch: int, steps: int, remat: str | None) -> dict:
    import flax.linen as nn
    import jax

    from srdd_jax import compilation_cache, models
    from srdd_jax.sampling.sampler import Sampler
    from srdd_jax.sampling.settings import SamplerSettings

    compilation_cache.enable("off")  # cold compiles only
    spec = model_spec(depth, width, remat=remat)
    model = models.Model(spec)
    result = {"depth": depth, "width": spec.transformer.embed_dim,
              "heads": spec.transformer.num_heads, "remat": spec.transformer.remat, "batch": batch}

    # Compilation first, from shapes alone (no parameter in memory yet, at any depth).
    abstract_params = {which: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                           nn.unbox(model.abstract_params(which)))
                       for which in ("tokenizer", "transformer")}
    jitted, abstract_state, abstract_batch, tx = train_step_parts(spec, batch)
    with _timed(result, "train_compile"):
        compiled = jitted.lower(abstract_state, abstract_params["tokenizer"], abstract_batch,
                                jax.random.key(1)).compile()
    result["train_temp_bytes"] = temp_bytes(compiled)
    settings = SamplerSettings(cfg=1.5, top_k=900, top_p=0.96)
    for mask in ("var", "markov"):
        sampler = Sampler(spec, settings, mask=mask)
        with _timed(result, "sampler_compile", mask):
            sampler_compiled = sampler.compile(abstract_params, batch)
        result[f"sampler_temp_bytes_{mask}"] = temp_bytes(sampler_compiled)

    start = time.perf_counter()
    params = {which: jax.block_until_ready(nn.unbox(model.init_params(jax.random.key(i), which)))
              for i, which in enumerate(("tokenizer", "transformer"))}
    result["init_s"] = time.perf_counter() - start
    result["transformer_params"] = sum(x.size for x in jax.tree.leaves(params["transformer"]))

    state_bytes = 4 * tree_bytes(params["transformer"])  # params, two Adam moments, gradients
    if steps < 1:
        result["step_skipped"] = "--steps=0"
    elif state_bytes + (result["train_temp_bytes"] or 0) > 0.8 * available_memory_bytes():
        result["step_skipped"] = (f"the train state and step need about "
                                  f"{(state_bytes + (result['train_temp_bytes'] or 0)) / 2**30:.1f}"
                                  f" GiB, more than 80% of the {available_memory_bytes() / 2**30:.1f}"
                                  " GiB available")
    else:
        tr_params = params.pop("transformer")
        state = jax.jit(lambda p: _fresh_state(p, tx), donate_argnums=(0,))(tr_params)
        data = random_batch(spec, batch)
        times = []
        for i in range(steps + 1):
            start = time.perf_counter()
            state, metrics = compiled(state, params["tokenizer"], data, jax.random.key(i))
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
        result["step_s"] = statistics.median(times[1:])
        result["loss"] = float(metrics["loss"])
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


@contextlib.contextmanager
def _timed(result: dict, name: str, suffix: str = ""):
    """Records `<name>_s[_suffix]` (wall clock) and `<name>_cpu_s[_suffix]` (CPU time of every
    thread of this process: the work done, whatever else the machine runs meanwhile)."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    tail = f"_{suffix}" if suffix else ""
    result[f"{name}_s{tail}"] = time.perf_counter() - wall
    result[f"{name}_cpu_s{tail}"] = time.process_time() - cpu


def _fresh_state(params, tx):
    import jax.numpy as jnp

    from srdd_jax.training import steps as train_steps

    return train_steps.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                  opt_state=tx.init(params))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depths", default="4,16,30")
    parser.add_argument("--width", type=int, default=0, help="width for every depth (0: 64*depth)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--remat", default="", help="none|dots|full (default: the config's)")
    parser.add_argument("--repeats", type=int, default=1, help="processes per depth; every "
                        "number reported is the median over them (all runs are kept in `runs`)")
    parser.add_argument("--only", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args.width or None, args.batch, args.steps,
                                 args.remat or None)))
        return
    depths = [int(d) for d in args.depths.split(",")]
    runs = {depth: [] for depth in depths}
    for _ in range(args.repeats):  # round robin, so a busy spell of the machine hits every depth
        for depth in depths:
            if runs[depth] and "error" in runs[depth][-1]:
                continue
            out = subprocess.run([sys.executable, __file__, f"--only={depth}", f"--width={args.width}",
                                  f"--batch={args.batch}", f"--steps={args.steps}",
                                  f"--remat={args.remat}"], capture_output=True, text=True)
            runs[depth].append(json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0
                               else {"error": out.stderr.strip().splitlines()[-1:]})
    results = {f"d{depth}": _medians(runs[depth]) for depth in depths}
    low, high = results.get(f"d{min(depths)}", {}), results.get(f"d{max(depths)}", {})
    keys = ("init_s", "train_compile_s", "train_compile_cpu_s", "sampler_compile_s_var",
            "sampler_compile_cpu_s_var", "sampler_compile_s_markov", "sampler_compile_cpu_s_markov",
            "train_temp_bytes", "peak_rss_bytes")
    ratios = {key: high[key] / low[key] for key in keys if low.get(key) and high.get(key)}
    print(json.dumps({"benchmark": "scaling", "platform": _platform(), "results": results,
                      f"ratios_d{max(depths)}_over_d{min(depths)}": ratios}, indent=1))


def _medians(runs: list[dict]) -> dict:
    """One result per depth: each number the median over the runs (the runs kept under `runs`)."""
    if any("error" in run for run in runs):
        return runs[-1]
    fixed = ("depth", "width", "heads", "batch", "transformer_params")
    merged = {key: (statistics.median(run[key] for run in runs)
                    if isinstance(value, (int, float)) and key not in fixed else value)
              for key, value in runs[0].items()}
    if len(runs) > 1:
        merged["runs"] = runs
    return merged


def _platform() -> str:
    import jax

    return f"{jax.default_backend()} ({jax.device_count()} devices, {jax.devices()[0].device_kind})"


if __name__ == "__main__":
    main()
