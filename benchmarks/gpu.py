"""GPU check, side by side with the official VAR PyTorch code, in one run.

Everything runs on one GPU in bfloat16 with random weights (VAR's released shapes, d`--depth`),
each measurement in its own process (so its peak memory and start-up are its own):

- `check`: cuDNN fused attention against the exact XLA path (teacher-forced logits, gradients,
  and the greedy markov sampler's tokens) on a small model;
- `first_sample_cold` / `first_sample_warm`: a new process samples `--batch` 256 px images (markov,
  CFG 1.5, top-k 900, top-p 0.96, decoded) with an empty, then with a filled, persistent
  compilation cache; reports import, init, compile and first-sample seconds, then the
  steady-state images/s and the peak device memory;
- `sample_512` (markov) and `sample_var` (var mask, 256 px): steady state and peak memory;
- `train_dots` (from images: the tokenizer encodes them in the step, as VAR's trainer does) and
  `train_tokens_<remat>` (from cached tokens, `mode=tokenize`) for each rematerialisation
  policy: the transformer train step at 256 px, `--batch` images: time to the first step (init,
  compile), steady-state step time, tokens/s, peak memory, and model FLOP utilisation (the
  transformer's matmul FLOPs, tokenizer not counted) against the bf16 matmul rate measured in
  the same process;
- `torch_train`: the same train step with VAR's code (`--var-src`: a checkout of
  github.com/FoundationVision/VAR, never part of this repository), under
  `torch.autocast(bfloat16)`, SDPA attention, fused AdamW.

Sampling side by side with VAR's code (images/s, tokens and decoder apart, peak memory, each lever
alone) is `benchmarks/vs_var.py --device gpu`; the README's one device command runs both.

Prints one JSON line per measurement as it ends (also appended to OUT/gpu_results.jsonl), then a
summary with the ratios. `--quick` shrinks every size (for a dry run on a CPU).

    python benchmarks/gpu.py --out DIR --var-src VAR [--depth 16] [--batch 64] [--budget 540]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

STARTED = time.perf_counter()
PN_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
PN_512 = (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)
QUICK_PN = (1, 2, 4)
SETTINGS = dict(cfg=1.5, top_k=900, top_p=0.96)


# ------------------------------------------------------------------------------------- helpers
def _model_spec(args, patch_nums, mask="markov", remat=None, attention="auto"):
    from scaling import model_spec

    from srdd_jax.tokenizer.spec import TokenizerSpec

    if args.quick:
        spec = model_spec(2, 64, dtype="bfloat16", remat=remat, patch_nums=QUICK_PN, mask=mask)
        spec = spec.replace(tokenizer=TokenizerSpec(ch=32, ch_mult=(1, 1, 2), num_res_blocks=1,
                                                    z_channels=8, vocab_size=64))
    else:
        spec = model_spec(args.depth, dtype="bfloat16", remat=remat, patch_nums=patch_nums,
                          mask=mask)
    return spec.with_transformer(attention=attention)


def _device_peak_bytes():
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def bf16_matmul_rate(quick: bool) -> float:
    """bf16 FLOP/s of an n x n x n matrix product on random data (median of 10 after warm-up)."""
    import jax
    import jax.numpy as jnp

    n = 512 if quick else 8192
    a, b = (jax.random.normal(jax.random.key(i), (n, n), jnp.bfloat16) for i in (1, 2))
    matmul = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(matmul(a, b))
    times = []
    for _ in range(10):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a, b))
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def forward_flops_per_sequence(spec, mask: str) -> float:
    """Matmul FLOPs of one teacher-forced sequence: blocks, head and attention (no tokenizer)."""
    from srdd_jax import scales
    from srdd_jax.transformer import masks

    tr = spec.transformer
    c, v = tr.embed_dim, spec.tokenizer.vocab_size
    hidden = round(c * tr.mlp_ratio)
    bounds = scales.scale_bounds(spec.patch_nums)
    keys = masks.get(mask).key_ranges(spec.patch_nums)
    attention_pairs = sum((q1 - q0) * (k1 - k0) for (q0, q1), (k0, k1) in zip(bounds, keys))
    length = scales.sequence_length(spec.patch_nums)
    per_token = tr.depth * 2 * (3 * c * c + c * c + 2 * c * hidden) + 2 * c * v
    return length * per_token + tr.depth * 4 * attention_pairs * c


# --------------------------------------------------------------------------------- measurements
def measure_check(args) -> dict:
    """cuDNN vs XLA attention: relative errors of bf16 logits and gradients, greedy token match."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from srdd_jax import models, scales
    from srdd_jax.sampling.sampler import Sampler
    from srdd_jax.sampling.settings import SamplerSettings
    from srdd_jax.transformer import attention

    result = {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind}
    spec = _model_spec(args, QUICK_PN if args.quick else PN_256, attention="xla")
    if not args.quick:
        spec = spec.with_transformer(depth=4, embed_dim=256, num_heads=4)
    result["fused_available"] = attention.fused_supported(jnp.bfloat16, 64)
    if not result["fused_available"]:
        return dict(result, skipped="no cuDNN fused attention on this platform")
    params = {w: nn.unbox(models.Model(spec).init_params(jax.random.key(i), w))
              for i, w in enumerate(("tokenizer", "transformer"))}
    batch = 4
    length = scales.sequence_length(spec.patch_nums) - 1
    labels = jnp.arange(batch) % 10
    x = jax.random.normal(jax.random.key(3), (batch, length, spec.tokenizer.z_channels))
    for mask in ("var", "markov"):
        outs = {}
        for impl in ("xla", "cudnn"):
            model = models.Model(spec.with_transformer(mask=mask, attention=impl)).transformer

            def loss(p, model=model):
                return jnp.mean(jnp.square(model.apply({"params": p}, labels, x)))

            logits = jax.jit(lambda p, model=model: model.apply({"params": p}, labels, x))(
                params["transformer"])
            grads = jax.jit(jax.grad(loss))(params["transformer"])
            outs[impl] = (np.asarray(logits, np.float32),
                          np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)]))
        for i, what in enumerate(("logits", "grads")):
            ref, got = outs["xla"][i], outs["cudnn"][i]
            result[f"{mask}_{what}_rel_err"] = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    tokens = {}
    for impl in ("xla", "cudnn"):
        sampler = Sampler(spec.with_transformer(attention=impl),
                          SamplerSettings(greedy=True, cfg=1.5), mask="markov")
        tokens[impl] = np.asarray(sampler.sample(params, labels, jax.random.key(0))["idx_BL"])
    result["markov_greedy_token_match"] = float(np.mean(tokens["xla"] == tokens["cudnn"]))
    return result


def measure_sample(args, patch_nums, mask: str, cache_dir: str) -> dict:
    """Time to the first decoded batch in a new process, then steady state and peak memory."""
    started = time.perf_counter()
    import flax.linen as nn
    import jax
    import numpy as np

    jax.devices()
    backend_s = time.perf_counter() - started
    from srdd_jax import compilation_cache, models
    from srdd_jax.sampling.sampler import Sampler
    from srdd_jax.sampling.settings import SamplerSettings

    cache = compilation_cache.enable(cache_dir)
    ready = time.perf_counter()
    spec = _model_spec(args, patch_nums, mask=mask, attention=args.attention)
    params = {w: nn.unbox(models.Model(spec).init_params(jax.random.key(i), w))
              for i, w in enumerate(("tokenizer", "transformer"))}
    jax.block_until_ready(params)
    init_s = time.perf_counter() - ready
    batch = args.batch if patch_nums == PN_256 else args.batch_512
    batch = 4 if args.quick else batch
    sampler = Sampler(spec, SamplerSettings(**SETTINGS), mask=mask)
    start = time.perf_counter()
    sampler.compile(params, batch)  # the sampler and the decoder
    compile_s = time.perf_counter() - start
    labels = np.arange(batch, dtype=np.int32) % spec.transformer.num_classes

    def generate(seed):
        out = sampler.sample(params, labels, jax.random.key(seed))
        return jax.block_until_ready(sampler.decoder.decode(params["tokenizer"], out["f_hat_BhwC"]))

    start = time.perf_counter()
    images = generate(0)
    first_run_s = time.perf_counter() - start
    total_s = time.perf_counter() - started
    times = []
    for seed in range(1, 6):
        start = time.perf_counter()
        generate(seed)
        times.append(time.perf_counter() - start)
    step = statistics.median(times)
    return {
        "mask": mask, "image_size": sampler.model.image_size, "batch": batch, "cache": cache,
        "import_and_backend_s": backend_s, "init_s": init_s, "compile_s": compile_s,
        "sampler_compile_s": sampler.compile_seconds, "first_batch_s": first_run_s,
        "time_to_first_sample_s": total_s,
        "time_to_first_sample_after_import_s": total_s - backend_s,
        "batch_s": step, "batch_s_all": times, "images_per_s": batch / step,
        "peak_device_bytes": _device_peak_bytes(),
        "images_finite": bool(np.isfinite(np.asarray(images)).all()),
        "attention": spec.transformer.attention,
    }


def measure_train(args, remat: str, cached_tokens: bool) -> dict:
    started = time.perf_counter()
    import flax.linen as nn
    import jax
    from scaling import random_batch, train_step_parts

    from srdd_jax import compilation_cache, models, scales
    from srdd_jax.training import steps as train_steps

    compilation_cache.enable("off")
    jax.devices()
    ready = time.perf_counter()
    spec = _model_spec(args, PN_256, remat=remat, attention=args.attention)
    model = models.Model(spec)
    batch = 4 if args.quick else args.batch
    jitted, abstract_state, abstract_batch, tx = train_step_parts(spec, batch, cached_tokens)
    tok = nn.unbox(model.init_params(jax.random.key(0), "tokenizer"))
    init = train_steps.unboxed_init(lambda r: model.create_params(r, "transformer"), tx)
    state = jax.block_until_ready(jax.jit(init)(jax.random.key(1)))
    init_s = time.perf_counter() - ready
    start = time.perf_counter()
    compiled = jitted.lower(abstract_state, tok, abstract_batch, jax.random.key(2)).compile()
    compile_s = time.perf_counter() - start
    data = jax.device_put(random_batch(spec, batch, cached_tokens=cached_tokens))
    start = time.perf_counter()
    state, metrics = compiled(state, tok, data, jax.random.key(3))
    jax.block_until_ready(metrics)
    first_step_s = time.perf_counter() - start
    to_first_step = time.perf_counter() - ready
    steps = 3 if args.quick else 10
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = compiled(state, tok, data, jax.random.key(4 + i))
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - start) / steps
    peak = _device_peak_bytes()
    memory = compiled.memory_analysis()
    rate = bf16_matmul_rate(args.quick)
    flops = 3 * batch * forward_flops_per_sequence(spec, spec.transformer.mask)
    tokens = batch * scales.sequence_length(spec.patch_nums)
    return {
        "remat": remat, "input": "tokens" if cached_tokens else "images", "batch": batch,
        "init_s": init_s, "compile_s": compile_s,
        "first_step_s": first_step_s, "time_to_first_step_s": to_first_step,
        "import_and_backend_s": ready - started, "step_s": step_s, "tokens_per_s": tokens / step_s,
        "images_per_s": batch / step_s, "peak_device_bytes": peak,
        "xla_temp_bytes": getattr(memory, "temp_size_in_bytes", None),
        "model_flops_per_step": flops, "bf16_matmul_flops_per_s": rate,
        "mfu": flops / step_s / rate, "loss": float(metrics["loss"]),
        "attention": spec.transformer.attention,
    }


# ------------------------------------------------------------------------------ official VAR
def _torch_models(args, patch_nums):
    import torch

    sys.path.insert(0, os.path.abspath(args.var_src))
    from models import build_vae_var

    torch.manual_seed(0)
    depth = 2 if args.quick else args.depth
    kwargs = dict(V=64, Cvae=8, ch=32) if args.quick else {}
    return build_vae_var(device=args.torch_device, patch_nums=patch_nums, depth=depth,
                         num_classes=1000, shared_aln=False, attn_l2_norm=True, **kwargs)


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _reset_peak():
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _torch_peak_bytes():
    import torch

    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def measure_torch_train(args) -> dict:
    import torch
    import torch.nn.functional as F

    start = time.perf_counter()
    patch_nums = QUICK_PN if args.quick else PN_256
    vae, var = _torch_models(args, patch_nums)
    vae.eval()
    var.train()
    opt = torch.optim.AdamW(var.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05,
                            fused=torch.cuda.is_available())
    batch = 4 if args.quick else args.batch
    size = 16 * patch_nums[-1]
    images = torch.rand(batch, 3, size, size, device=args.torch_device) * 2 - 1
    labels = torch.arange(batch, device=args.torch_device) % 1000

    def step():
        with torch.no_grad():
            idx = vae.img_to_idxBl(images)
            x = vae.quantize.idxBl_to_var_input(idx)
        target = torch.cat(idx, dim=1)
        with torch.autocast(args.torch_device, dtype=torch.bfloat16):
            logits = var(labels, x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    _sync()
    build_s = time.perf_counter() - start
    step()
    _sync()
    to_first_step = time.perf_counter() - start
    _reset_peak()
    steps = 3 if args.quick else 10
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _sync()
    step_s = (time.perf_counter() - start) / steps
    tokens = batch * sum(p * p for p in patch_nums)
    return {"batch": batch, "build_s": build_s, "time_to_first_step_s": to_first_step,
            "step_s": step_s, "tokens_per_s": tokens / step_s, "images_per_s": batch / step_s,
            "peak_device_bytes": _torch_peak_bytes(), "loss": float(loss),
            "bf16_matmul_flops_per_s": _torch_matmul_rate(args.quick)}


def _torch_matmul_rate(quick: bool) -> float:
    import torch

    n = 512 if quick else 8192
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    a @ b
    _sync()
    times = []
    for _ in range(10):
        start = time.perf_counter()
        a @ b
        _sync()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


# ---------------------------------------------------------------------------------------- driver
def plan(args) -> list[tuple[str, list[str], int]]:
    """(name, extra argv, timeout seconds), most important first."""
    cache = os.path.join(args.out, "xla_cache") if args.quick else tempfile.mkdtemp(prefix="xla_")
    steps = [("check", [], 150),
             ("first_sample_cold", [f"--cache={cache}"], 240),
             ("first_sample_warm", [f"--cache={cache}"], 120)]
    if args.var_src:
        steps += [("torch_train", [], 150)]
    steps += [("sample_512", ["--cache=off"], 200), ("train_dots", [], 200),
              ("train_tokens_dots", [], 200), ("train_tokens_none", [], 200),
              ("train_tokens_full", [], 200), ("sample_var", ["--cache=off"], 200)]
    return steps


def run_one(args, name: str, cache: str) -> dict:
    if name == "check":
        return measure_check(args)
    if name.startswith("first_sample"):
        return measure_sample(args, PN_256, "markov", cache)
    if name == "sample_512":
        return measure_sample(args, PN_512, "markov", cache)
    if name == "sample_var":
        return measure_sample(args, PN_256, "var", cache)
    if name.startswith("train_"):
        return measure_train(args, name.split("_")[-1], name.startswith("train_tokens_"))
    if name == "torch_train":
        return measure_torch_train(args)
    raise ValueError(f"unknown measurement {name!r}")


def summary(results: dict) -> dict:
    def get(name, key):
        return results.get(name, {}).get(key)

    def ratio(a, b):
        return a / b if a is not None and b else None

    return {
        "time_to_first_sample_cold_s": get("first_sample_cold", "time_to_first_sample_s"),
        "time_to_first_sample_warm_s": get("first_sample_warm", "time_to_first_sample_s"),
        "time_to_first_sample_warm_after_import_s": get("first_sample_warm",
                                                        "time_to_first_sample_after_import_s"),
        "train_step_over_official": ratio(get("torch_train", "step_s"),
                                          get("train_dots", "step_s")),
        "train_mfu": {k: v.get("mfu") for k, v in results.items() if k.startswith("train_")},
        "train_step_s": {k: v.get("step_s") for k, v in results.items() if "train" in k},
        "train_peak_bytes": {k: v.get("peak_device_bytes") for k, v in results.items()
                             if "train" in k},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--var-src", default="", help="checkout of FoundationVision/VAR")
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batch-512", type=int, default=16)
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run")
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--torch-device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="off", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.only:
        print(json.dumps(run_one(args, args.only, args.cache)))
        return
    results, log = {}, os.path.join(args.out, "gpu_results.jsonl")
    for name, extra, timeout in plan(args):
        left = args.budget - (time.perf_counter() - STARTED)
        if left < 30:
            results[name] = {"skipped": f"out of time ({left:.0f} s left of the budget)"}
            continue
        argv = [sys.executable, os.path.abspath(__file__), f"--only={name}", f"--out={args.out}",
                f"--depth={args.depth}", f"--batch={args.batch}", f"--batch-512={args.batch_512}",
                f"--var-src={args.var_src}", f"--attention={args.attention}",
                f"--torch-device={args.torch_device}", *extra]
        if args.quick:
            argv.append("--quick")
        begin = time.perf_counter()
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=min(timeout, left))
            lines = out.stdout.strip().splitlines()
            if out.returncode == 0 and lines:
                results[name] = json.loads(lines[-1])
            else:
                results[name] = {"error": out.stderr.strip().splitlines()[-12:]}
        except subprocess.TimeoutExpired:
            results[name] = {"error": f"timed out after {min(timeout, left):.0f} s"}
        results[name]["wall_s"] = time.perf_counter() - begin
        if name == "check" and args.attention == "auto" and "error" in results[name]:
            args.attention = "xla"  # the fused kernel failed here: measure the rest without it
        line = json.dumps({"name": name, **results[name]})
        print(line, flush=True)
        with open(log, "a") as f:
            f.write(line + "\n")
    report = {"benchmark": "gpu", "depth": args.depth, "results": results,
              "summary": summary(results)}
    with open(os.path.join(args.out, "gpu_summary.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
