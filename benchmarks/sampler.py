"""Sampler speed and memory: `var` (KV cache) vs `markov` (no cache), with and without MR.

Released d16 shape with random weights, 256 px, CFG on (doubled batch), float32, default device.
Each configuration runs in its own process (peak RSS is per configuration) and reports: compile
time, sampling time and images/s (tokens -> f_hat), useful model FLOPs counted over real tokens
only (padding excluded) and their rate as a fraction of a float32 matmul peak measured in the
same process, the attention-context bytes (KV cache) and XLA's temporary memory. Decoding the
images with the tokenizer is timed once, separately (it is the same for every mask).

    python benchmarks/sampler.py [--depth 16] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from forward_masks import matmul_peak_flops

CONFIGS = [("var", False), ("markov", False), ("var", True), ("markov", True)]


def useful_flops(spec, sampler, rows: int) -> float:
    """Model FLOPs over the real tokens of every sampled scale (no padding), for `rows` sequences."""
    tr, tok = spec.transformer, spec.tokenizer
    c, v, cv = tr.embed_dim, tok.vocab_size, tok.z_channels
    hidden = round(c * tr.mlp_ratio)
    lay = sampler.plan.layout
    total = 0.0
    for pn, (k0, k1) in zip(lay.patch_nums, sampler.plan.mask.key_ranges(lay.patch_nums)):
        n = pn * pn
        per_block = 2 * n * c * (3 * c + c + 2 * hidden) + 4 * n * (k1 - k0) * c
        total += rows * (tr.depth * per_block + 2 * n * c * v + 2 * n * cv * c)
    return total


def measure(mask: str, mr: bool, depth: int, batch: int) -> dict:
    import flax.linen as nn
    import jax
    import numpy as np

    from srdd_jax import compilation_cache, models
    from srdd_jax.sampling.sampler import Sampler
    from srdd_jax.sampling.settings import SamplerSettings
    from srdd_jax.transformer.spec import TransformerSpec

    compilation_cache.enable("off")  # cold compiles only
    spec = models.ModelSpec(transformer=TransformerSpec.for_depth(depth=depth, mask=mask))
    model = models.Model(spec)
    params = {"tokenizer": model.init_params(jax.random.key(0), "tokenizer"),
              "transformer": model.init_params(jax.random.key(1), "transformer")}
    params = jax.block_until_ready(nn.unbox(params))
    settings = SamplerSettings(cfg=1.5, top_k=900, top_p=0.96, mr=mr, mr_iterations=5)
    sampler = Sampler(spec, settings, mask=mask)
    labels = np.arange(batch, dtype=np.int32) % spec.transformer.num_classes
    length = sampler.sequence_length
    start = time.perf_counter()
    compiled = sampler.compile(params, batch)
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    args = (params["tokenizer"], params["transformer"], sampler.plan, labels, jax.random.key(0),
            np.int32(0), np.zeros((batch, length), np.int32), np.zeros((batch, length), bool))
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    sample_s = time.perf_counter() - start
    flops = useful_flops(spec, sampler, 2 * batch)
    peak = matmul_peak_flops()
    result = {
        "mask": mask, "mr": mr, "compile_s": compile_s, "sample_s": sample_s,
        "images_per_s": batch / sample_s,
        "useful_flops": flops, "useful_flops_per_s": flops / sample_s,
        "matmul_peak_flops_per_s": peak, "fraction_of_matmul_peak": flops / sample_s / peak,
        "attention_cache_bytes": sampler.cache_bytes(batch),
        "xla_temp_bytes": getattr(memory, "temp_size_in_bytes", None),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "tokens_resampled": int(np.asarray(out["resampled_K"]).sum()),
        "buckets": [list(b.scale_ids) for b in sampler.plan.layout.buckets],
    }
    if mask == "markov" and not mr:  # decoding cost, the same for every configuration
        jax.block_until_ready(sampler.decoder.decode(params["tokenizer"], out["f_hat_BhwC"]))
        start = time.perf_counter()
        jax.block_until_ready(sampler.decoder.decode(params["tokenizer"], out["f_hat_BhwC"]))
        result["decode_s"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        mask, mr = args.only.split(":")
        print(json.dumps(measure(mask, mr == "mr", args.depth, args.batch)))
        return
    results = {}
    for mask, mr in CONFIGS:
        name = f"{mask}{'_mr' if mr else ''}"
        out = subprocess.run(
            [sys.executable, __file__, f"--only={mask}:{'mr' if mr else 'plain'}",
             f"--depth={args.depth}", f"--batch={args.batch}"],
            check=True, capture_output=True, text=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    ratios = {
        f"markov_over_var{suffix}": {
            "sample_time": results[f"markov{suffix}"]["sample_s"] / results[f"var{suffix}"]["sample_s"],
            "attention_cache_bytes": (results[f"markov{suffix}"]["attention_cache_bytes"]
                                      / results[f"var{suffix}"]["attention_cache_bytes"]),
            "xla_temp_bytes": (results[f"markov{suffix}"]["xla_temp_bytes"]
                               / results[f"var{suffix}"]["xla_temp_bytes"]),
        }
        for suffix in ("", "_mr")
    }
    print(json.dumps({"benchmark": "sampler", "model": f"d{args.depth}", "batch": args.batch,
                      "cfg": 1.5, "dtype": "float32", "results": results, "ratios": ratios},
                     indent=1))


if __name__ == "__main__":
    main()
