"""Where a sample's time goes, part by part, against the same parts of the official VAR code.

Each side runs in its own process (`--var-src`: a checkout of github.com/FoundationVision/VAR,
never part of this repository) at VAR's d`--depth` shape with random weights, float32, on the
default device, and times (best of `--repeats` after a warm-up):

- `step_w<n>`: one scale through every block and the head for the doubled batch (2B rows of n
  tokens attending to their own scale: the markov step; VAR's blocks with no mask);
- `attention_w<n>`: the attention kernel alone at one block's shape (srdd_jax's
  `attention.attend` against PyTorch's `scaled_dot_product_attention`, which VAR calls);
- `filter_draw_w256`: guidance, top-k 900, top-p 0.96 and the draw for B rows of the last
  scale (srdd_jax's `tokens` against VAR's `sample_with_top_k_top_p_`);
- `decode_image`: the VQ-VAE decoder for one image.

Prints JSON: each side's seconds per part and srdd_jax's speed relative to VAR's (>1: faster).

    python benchmarks/sampler_parts.py --var-src ../VAR [--batch 8] [--depth 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

WIDTHS = (256, 36)


def best(fn, repeats: int, sync=lambda x: x) -> float:
    sync(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def measure_ours(args) -> dict:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from srdd_jax import compilation_cache, models
    from srdd_jax.sampling import guidance, tokens
    from srdd_jax.sampling.sampler import Sampler
    from srdd_jax.sampling.settings import SamplerSettings
    from srdd_jax.transformer import attention
    from srdd_jax.transformer.model import VAR
    from srdd_jax.transformer.spec import TransformerSpec

    compilation_cache.enable("off")
    spec = models.ModelSpec(transformer=TransformerSpec.for_depth(args.depth, mask="markov"))
    model = models.Model(spec)
    tr = model.transformer
    params = nn.unbox(model.init_params(jax.random.key(1), "transformer"))
    c, heads = spec.transformer.embed_dim, spec.transformer.num_heads
    rows, vocab = 2 * args.batch, spec.tokenizer.vocab_size
    labels = jnp.arange(rows) % spec.transformer.num_classes
    sync = jax.block_until_ready
    out = {}
    for width in WIDTHS:
        x = jax.random.normal(jax.random.key(0), (rows, width, c))
        valid = jnp.ones((rows, width), bool)

        def step(p, x, valid=valid):
            cond = tr.apply({"params": p}, labels, method=VAR.condition)
            return tr.apply({"params": p}, x, cond, (), valid, method=VAR.step)[0]

        step = jax.jit(step)
        out[f"step_w{width}"] = best(lambda step=step, x=x: step(params, x), args.repeats, sync)
        q, k, v = (jax.random.normal(jax.random.key(i), (rows, heads, width, c // heads))
                   for i in range(3))
        kernel = jax.jit(lambda q, k, v: attention.attend(q, k, v, 1.0, "xla"))
        out[f"attention_w{width}"] = best(lambda kernel=kernel, q=q, k=k, v=v: kernel(q, k, v),
                                          args.repeats, sync)
    logits = jax.random.normal(jax.random.key(4), (rows, 256, vocab))
    uniforms = jax.random.uniform(jax.random.key(5), (args.batch, 256))
    pick = jax.jit(lambda lg, u: tokens.draw(u, tokens.distribution(
        guidance.guide(lg, 1.5), 1.0, 900, 0.96), False))
    out["filter_draw_w256"] = best(lambda: pick(logits, uniforms), args.repeats, sync)
    tok_params = nn.unbox(model.init_params(jax.random.key(0), "tokenizer"))
    sampler = Sampler(spec, SamplerSettings())
    f_hat = jax.random.normal(jax.random.key(6), (1, 16, 16, spec.tokenizer.z_channels))
    out["decode_image"] = best(lambda: sampler.decoder.decode(tok_params, f_hat), args.repeats, sync)
    return {k: float(np.asarray(v)) for k, v in out.items()}


def measure_official(args) -> dict:
    import torch

    sys.path.insert(0, os.path.abspath(args.var_src))
    from models import build_vae_var
    from models.helpers import sample_with_top_k_top_p_

    torch.set_num_threads(args.threads or os.cpu_count())
    torch.manual_seed(0)
    from vs_var import initialise_convs_and_linears

    vae, var = build_vae_var(device="cpu", depth=args.depth, shared_aln=False, attn_l2_norm=True)
    initialise_convs_and_linears(vae)  # build_vae_var leaves them uninitialised
    vae.eval()
    var.eval()
    c, heads = var.C, var.num_heads
    rows, vocab = 2 * args.batch, var.V
    labels = torch.arange(rows) % 1000
    out = {}
    with torch.inference_mode():
        cond = var.class_emb(labels)
        cond_or_gss = var.shared_ada_lin(cond)
        for width in WIDTHS:
            x0 = torch.randn(rows, width, c)

            def step(x0=x0):
                x = x0
                for block in var.blocks:
                    x = block(x=x, cond_BD=cond_or_gss, attn_bias=None)
                return var.get_logits(x, cond)

            out[f"step_w{width}"] = best(step, args.repeats)
            q, k, v = (torch.randn(rows, heads, width, c // heads) for _ in range(3))
            out[f"attention_w{width}"] = best(
                lambda q=q, k=k, v=v: torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, scale=1.0), args.repeats)
        logits = torch.randn(rows, 256, vocab)
        generator = torch.Generator().manual_seed(0)

        def pick():
            guided = 2.5 * logits[:args.batch] - 1.5 * logits[args.batch:]
            return sample_with_top_k_top_p_(guided, rng=generator, top_k=900, top_p=0.96)

        out["filter_draw_w256"] = best(pick, args.repeats)
        f_hat = torch.randn(1, var.Cvae, 16, 16)
        out["decode_image"] = best(lambda: vae.fhat_to_img(f_hat), args.repeats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--var-src", required=True, help="checkout of FoundationVision/VAR")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    parser.add_argument("--only", choices=("ours", "official"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        print(json.dumps(measure_ours(args) if args.only == "ours" else measure_official(args)))
        return
    results = {}
    for side in ("official", "ours"):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), f"--only={side}",
                              f"--var-src={args.var_src}", f"--batch={args.batch}",
                              f"--depth={args.depth}", f"--repeats={args.repeats}",
                              f"--threads={args.threads}"],
                             check=True, capture_output=True, text=True)
        results[side] = json.loads(out.stdout.strip().splitlines()[-1])
    speed = {k: results["official"][k] / results["ours"][k] for k in results["ours"]}
    print(json.dumps({"benchmark": "sampler_parts", "batch": args.batch, "depth": args.depth,
                      "date": time.strftime("%Y-%m-%d"), "seconds": results,
                      "ours_speed_over_official": speed}, indent=1))


if __name__ == "__main__":
    main()
