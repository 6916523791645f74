"""Teacher-forced forward pass of the transformer: `var` vs `markov` mask, side by side.

Runs the released d16 shape (random weights) at batch 2 in float32 and prints JSON with, per mask,
the median forward time, compile time, XLA's FLOP count and the achieved fraction of a float32
matmul peak measured in the same process, XLA's memory analysis of the compiled step and the peak RSS
of a process that ran only that mask, plus the markov/var ratios.

    python benchmarks/forward_masks.py [--depth 16] [--batch 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def matmul_peak_flops(size: int = 2048, repeats: int = 5) -> float:
    """Best float32 FLOP/s of one (size x size) @ (size x size) matmul on the default device."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((size, size), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    jax.block_until_ready(matmul(a))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a))
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def measure(mask: str, depth: int, batch: int, repeats: int) -> dict:
    import jax
    import numpy as np

    from srdd_jax import compilation_cache, models, scales
    from srdd_jax.transformer.spec import TransformerSpec

    compilation_cache.enable("off")  # cold compiles only
    spec = models.ModelSpec(transformer=TransformerSpec.for_depth(depth=depth, mask=mask))
    model = models.Model(spec)
    module = model.transformer
    params = jax.block_until_ready(model.init_params(jax.random.key(0), "transformer"))
    rng = np.random.default_rng(0)
    length = scales.sequence_length(spec.patch_nums) - 1
    labels = rng.integers(0, spec.transformer.num_classes, batch).astype(np.int32)
    tokens = rng.normal(size=(batch, length, spec.tokenizer.z_channels)).astype(np.float32)

    start = time.perf_counter()
    compiled = jax.jit(module.apply).lower({"params": params}, labels, tokens).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float(cost.get("flops", 0.0)) if cost else 0.0
    jax.block_until_ready(compiled({"params": params}, labels, tokens))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled({"params": params}, labels, tokens))
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    peak = matmul_peak_flops()
    return {
        "mask": mask,
        "forward_s_median": median,
        "forward_s_all": times,
        "compile_s": compile_s,
        "xla_flops": flops,
        "flops_per_s": flops / median,
        "matmul_peak_flops_per_s": peak,
        "fraction_of_matmul_peak": flops / median / peak,
        "xla_temp_bytes": getattr(memory, "temp_size_in_bytes", None),
        "xla_argument_bytes": getattr(memory, "argument_size_in_bytes", None),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "jax_version": jax.__version__,
        "device": str(jax.devices()[0]),
    }


def main() -> None:
    from srdd_jax.transformer import masks

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=masks.NAMES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure(args.only, args.depth, args.batch, args.repeats)))
        return
    results = {}
    for mask in ("var", "markov"):
        out = subprocess.run(
            [sys.executable, __file__, f"--only={mask}", f"--depth={args.depth}",
             f"--batch={args.batch}", f"--repeats={args.repeats}"],
            check=True, capture_output=True, text=True,
        )
        results[mask] = json.loads(out.stdout.strip().splitlines()[-1])
    var, markov = results["var"], results["markov"]
    report = {
        "benchmark": "teacher_forced_forward",
        "model": f"d{args.depth}", "batch": args.batch, "dtype": "float32",
        "results": results,
        "markov_over_var": {
            "forward_time": markov["forward_s_median"] / var["forward_s_median"],
            "xla_flops": markov["xla_flops"] / var["xla_flops"] if var["xla_flops"] else None,
            "xla_temp_bytes": (markov["xla_temp_bytes"] / var["xla_temp_bytes"]
                               if var["xla_temp_bytes"] else None),
            "peak_rss": markov["peak_rss_bytes"] / var["peak_rss_bytes"],
        },
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
