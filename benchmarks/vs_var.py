"""srdd_jax against the official VAR code, side by side in one run: sampling loop and decoder.

Each configuration runs at each batch size in a fresh process of its own (so its start-up and
peak memory are its own); `--repeats N` measures everything N times round robin and reports
medians. The models are VAR's released shapes (d`--depth`, 256 px, random weights), sampling
at VAR's settings: CFG 1.5 with its linear ramp, top-k 900, top-p 0.96, float32 on the CPU
(bfloat16 autocast / compute dtype with `--device gpu`).

Configurations (`--configs`, comma-separated):
- `official`: VAR's `autoregressive_infer_cfg` (`--var-src`: a checkout of
  github.com/FoundationVision/VAR, never part of this repository); its final `fhat_to_img` is
  timed apart as the decode;
- `var`, `markov`: srdd_jax's sampler and decoder with the library's defaults (every lever that
  leaves the samples unchanged is on);
- `<mask>_cfg_until`: also guidance stopped at the last two scales (`cfg_until=-2`: changes the
  samples; see the README's quality table);
- levers alone (`--levers` adds them): `markov_no_levers` (VAR's doubled batch at every scale,
  size buckets with `bucket_cost=32`, XLA's default convolution kernels), then each lever alone on
  top of that: `markov_rows_only` (the conditional rows alone where the guidance weight is 0),
  `markov_buckets_only` (one loop per scale, `bucket_cost=0`), `markov_ynn_only` (the decoder on
  YNNPACK, CPU only), and `markov_rows_cfg_until` (the rows lever with `cfg_until=-2`: stopping
  guidance saves time only through the rows it no longer runs); `markov` and `markov_cfg_until`
  are them stacked.
  (The attention kernel's layout and the upsampling convs on the low-resolution grid are always
  on: they replaced slower code.)

Per configuration and batch: time to the first images (build, compile, first run), then per run
`tokens_s` (the sampling loop up to f_hat) and `decode_s` (f_hat -> images) timed apart,
`images_per_s` of the whole sample, useful FLOPs per image (transformer over the real tokens and
the rows it runs, plus the standard decoder's convolutions; padding and the cheaper computation
of the upsampling convs are not counted), their rate as a share of a float32 (bf16 on GPU) matmul
rate measured in the same process, and memory: the process's peak RSS (`peak_rss_bytes`: weight
creation, compilation and sampling), the peak RSS while sampling and decoding with the weights in
memory (`peak_rss_sampling_bytes`: the kernel's peak count restarted once the weights exist, so
each library's way of creating random weights is left out), and peak device memory on a GPU.
srdd_jax compiles from shapes before creating its weights, and holds the weights sampling reads
(`sampler.for_sampling`: no tokenizer encoder); VAR's process holds its whole VQ-VAE.
The persistent compilation cache is per configuration: cold in the first round, warm after.
Prints one JSON line per measurement as it ends and a JSON report with the ratios to `official`.

    python benchmarks/vs_var.py --var-src ../VAR [--batches 1,8] [--repeats 1] [--levers]
        [--device cpu|gpu] [--out results.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

STARTED = time.perf_counter()
SETTINGS = dict(cfg=1.5, top_k=900, top_p=0.96)
QUICK = dict(depth=2, width=64, patch_nums=(1, 2, 4), vocab=64, z_channels=8, ch=32, top_k=16)
# name: (mask, sampler setting overrides, environment)
OURS = {
    "var": ("var", {}, {}),
    "markov": ("markov", {}, {}),
    "var_cfg_until": ("var", {"cfg_until": -2}, {}),
    "markov_cfg_until": ("markov", {"cfg_until": -2}, {}),
    "markov_no_levers": ("markov", {"skip_unguided_rows": False, "bucket_cost": 32},
                         {"SRDD_CPU_CONV_LIBRARY": "xla"}),
    "markov_rows_only": ("markov", {"bucket_cost": 32}, {"SRDD_CPU_CONV_LIBRARY": "xla"}),
    "markov_buckets_only": ("markov", {"skip_unguided_rows": False},
                            {"SRDD_CPU_CONV_LIBRARY": "xla"}),
    "markov_ynn_only": ("markov", {"skip_unguided_rows": False, "bucket_cost": 32}, {}),
    "markov_rows_cfg_until": ("markov", {"bucket_cost": 32, "cfg_until": -2},
                              {"SRDD_CPU_CONV_LIBRARY": "xla"}),
}
DEFAULT_CONFIGS = ("official", "var", "markov", "markov_cfg_until", "var_cfg_until")
LEVER_CONFIGS = ("markov_no_levers", "markov_rows_only", "markov_buckets_only", "markov_ynn_only",
                 "markov_rows_cfg_until")


# ------------------------------------------------------------------------------------- FLOPs
def transformer_flops(patch_nums, depth: int, width: int, vocab: int, z_channels: int,
                      mlp_ratio: float, mask: str, rows_per_scale) -> float:
    """Matmul FLOPs of one sampled batch over the real tokens of every scale: blocks (qkv, proj,
    MLP, attention over the keys the mask allows), head and word embedding, for the rows each
    scale runs (2B where guided)."""
    from srdd_jax.transformer import masks

    hidden = round(width * mlp_ratio)
    total = 0.0
    key_ranges = masks.get(mask).key_ranges(patch_nums)
    for pn, rows, (k0, k1) in zip(patch_nums, rows_per_scale, key_ranges):
        n = pn * pn
        per_block = 2 * n * width * (4 * width + 2 * hidden) + 4 * n * (k1 - k0) * width
        total += rows * (depth * per_block + 2 * n * width * vocab + 2 * n * z_channels * width)
    return total


def decoder_flops(image_size: int, ch: int, ch_mult, num_res_blocks: int, z_channels: int) -> float:
    """Convolution and attention FLOPs of VAR's decoder for one image, counting each upsampling
    conv at the upsampled resolution (the standard algorithm's work)."""
    def conv(size, c_in, c_out, k=3):
        return 2 * size * size * c_in * c_out * k * k

    def resblock(size, c_in, c_out):
        return conv(size, c_in, c_out) + conv(size, c_out, c_out) + (
            conv(size, c_in, c_out, 1) if c_in != c_out else 0)

    def attention(size, c):
        return 4 * conv(size, c, c, 1) + 4 * (size * size) ** 2 * c

    levels = len(ch_mult)
    size = image_size // 2 ** (levels - 1)
    c = ch * ch_mult[-1]
    total = conv(size, z_channels, z_channels) + conv(size, z_channels, c)  # post_quant, conv_in
    total += 2 * resblock(size, c, c) + attention(size, c)  # mid
    for level in reversed(range(levels)):
        c_out = ch * ch_mult[level]
        for _ in range(num_res_blocks + 1):
            total += resblock(size, c, c_out)
            c = c_out
            if level == levels - 1:
                total += attention(size, c)
        if level != 0:
            size *= 2
            total += conv(size, c, c)
    return total + conv(size, c, 3)


# ------------------------------------------------------------------------------- measurements
def _rss() -> int:
    """Peak resident memory of the process so far, bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak_rss() -> bool:
    """Restarts the kernel's peak-RSS count (VmHWM) from the current RSS (Linux >= 4.0), so that
    `_sampling_peak_rss` sees only what sampling needs once the weights are in memory."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _sampling_peak_rss() -> int | None:
    """VmHWM since `_reset_peak_rss`, bytes (None where /proc has no such line)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _sizes(args) -> dict:
    if args.quick:
        return QUICK
    return dict(depth=args.depth, width=64 * args.depth, patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16),
                vocab=4096, z_channels=32, ch=160, top_k=SETTINGS["top_k"])


def _timed(fn, runs: int):
    """(first call seconds, [seconds of each later call], last result)."""
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return first, times, result


def measure_ours(args, name: str, batch: int) -> dict:
    started = time.perf_counter()
    import flax.linen as nn
    import jax
    import numpy as np
    from forward_masks import matmul_peak_flops

    from srdd_jax import compilation_cache, cpu_kernels, models
    from srdd_jax.sampling.sampler import Sampler, for_sampling
    from srdd_jax.sampling.settings import SamplerSettings
    from srdd_jax.tokenizer.spec import TokenizerSpec
    from srdd_jax.transformer.spec import TransformerSpec

    cache = compilation_cache.enable(args.cache or "off")
    warm = bool(cache and os.path.isdir(cache) and os.listdir(cache))
    mask, overrides, _ = OURS[name]
    sizes = _sizes(args)
    dtype = "bfloat16" if args.device == "gpu" else "float32"
    tokenizer = TokenizerSpec(vocab_size=sizes["vocab"], z_channels=sizes["z_channels"],
                              ch=sizes["ch"])
    transformer = TransformerSpec.for_depth(sizes["depth"], embed_dim=sizes["width"],
                                            num_heads=sizes["width"] // 64 or 1, mask=mask,
                                            dtype=dtype)
    spec = models.ModelSpec(tuple(sizes["patch_nums"]), tokenizer=tokenizer, transformer=transformer)
    model = models.Model(spec)
    settings = SamplerSettings(**dict(SETTINGS, top_k=sizes["top_k"], **overrides))
    sampler = Sampler(spec, settings, mask=mask)
    # Compiled from shapes before the weights exist, so the compiler's memory is handed back
    # before the weights take theirs (as `--config.mode=sample` does).
    abstract = {w: nn.unbox(model.abstract_params(w)) for w in ("tokenizer", "transformer")}
    sampler.compile(for_sampling(abstract), batch)
    compiled = time.perf_counter()
    params = {"tokenizer": {}, "transformer": {}}
    for i, which in enumerate(("tokenizer", "transformer")):  # the encoder goes before the next
        params[which] = nn.unbox(model.init_params(jax.random.key(i), which))
        params = for_sampling(params)
    labels = np.arange(batch, dtype=np.int32) % spec.transformer.num_classes
    seeds = iter(range(10**6))
    holder = {}
    weights_rss = _rss()
    reset = _reset_peak_rss()

    def tokens():
        holder["out"] = jax.block_until_ready(sampler.sample(params, labels,
                                                             jax.random.key(next(seeds))))
        return holder["out"]

    def decode():
        return jax.block_until_ready(sampler.decoder.decode(params["tokenizer"],
                                                            holder["out"]["f_hat_BhwC"]))

    ready = time.perf_counter()
    first_tokens, token_times, _ = _timed(tokens, 0)
    first_decode, _, _ = _timed(decode, 0)
    to_first = time.perf_counter() - started
    token_times, decode_times = [], []
    for _ in range(args.runs):  # alternate, so both see the same machine
        token_times.append(_timed(tokens, 0)[0])
        decode_times.append(_timed(decode, 0)[0])
    tok = spec.tokenizer
    flops_tokens = transformer_flops(spec.patch_nums, sizes["depth"], sizes["width"], sizes["vocab"],
                                     sizes["z_channels"], 4.0, mask,
                                     sampler.plan.rows_per_scale(batch))
    flops_decode = batch * decoder_flops(model.image_size, sizes["ch"], tuple(tok.ch_mult),
                                         tok.num_res_blocks, sizes["z_channels"])
    sampling_rss = _sampling_peak_rss() if reset else None
    rate = _jax_matmul_rate(args) if args.device == "gpu" else matmul_peak_flops()
    images = np.asarray(decode())
    return _report(name, batch, token_times, decode_times, flops_tokens, flops_decode, rate,
                   build_s=ready - started, compile_s=compiled - started,
                   first_tokens_s=first_tokens, first_decode_s=first_decode,
                   time_to_first_images_s=to_first, finite=bool(np.isfinite(images).all()),
                   peak_rss_with_weights_loaded_bytes=weights_rss,
                   peak_rss_sampling_bytes=sampling_rss, compilation_cache="warm" if warm else "cold",
                   guided_scales=list(sampler.plan.guided),
                   decoder_options=cpu_kernels.conv_options() if args.device == "cpu" else {},
                   backend=jax.default_backend(),
                   peak_device_bytes=_jax_peak_bytes())


def measure_official(args, batch: int) -> dict:
    started = time.perf_counter()
    import numpy as np
    import torch

    sys.path.insert(0, os.path.abspath(args.var_src))
    from models import build_vae_var

    device = "cuda" if args.device == "gpu" else "cpu"
    if device == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count())
    sizes = _sizes(args)
    torch.manual_seed(0)
    extra = dict(V=sizes["vocab"], Cvae=sizes["z_channels"], ch=sizes["ch"]) if args.quick else {}
    vae, var = build_vae_var(device=device, patch_nums=sizes["patch_nums"], depth=sizes["depth"],
                             num_classes=1000, shared_aln=False, attn_l2_norm=True, **extra)
    initialise_convs_and_linears(vae)
    vae.eval()
    var.eval()
    decode_images = vae.fhat_to_img
    captured = {}

    def keep_f_hat(f_hat):  # the sampling loop ends in fhat_to_img: time the decode apart
        captured["f_hat"] = f_hat
        return f_hat.clone()

    vae.fhat_to_img = keep_f_hat
    labels = torch.arange(batch, device=device) % 1000
    seeds = iter(range(10**6))
    weights_rss = _rss()
    reset = _reset_peak_rss()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def tokens():
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16,
                                                    enabled=device == "cuda"):
            var.autoregressive_infer_cfg(batch, labels, g_seed=next(seeds), cfg=SETTINGS["cfg"],
                                         top_k=sizes["top_k"], top_p=SETTINGS["top_p"])
        sync()

    def decode():
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16,
                                                    enabled=device == "cuda"):
            images = decode_images(captured["f_hat"])
        sync()
        return images

    ready = time.perf_counter()
    first_tokens = _timed(tokens, 0)[0]
    first_decode = _timed(decode, 0)[0]
    to_first = time.perf_counter() - started
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    token_times, decode_times = [], []
    for _ in range(args.runs):
        token_times.append(_timed(tokens, 0)[0])
        decode_times.append(_timed(decode, 0)[0])
    sampling_rss = _sampling_peak_rss() if reset else None
    images = decode().float().cpu().numpy()
    c, depth = sizes["width"], sizes["depth"]
    flops_tokens = transformer_flops(sizes["patch_nums"], depth, c, sizes["vocab"],
                                     sizes["z_channels"], 4.0, "var", [2 * batch] * len(
                                         sizes["patch_nums"]))
    image_size = 16 * sizes["patch_nums"][-1]
    flops_decode = batch * decoder_flops(image_size, sizes["ch"], (1, 1, 2, 2, 4), 2,
                                         sizes["z_channels"])
    return _report("official", batch, token_times, decode_times, flops_tokens, flops_decode,
                   _torch_matmul_rate(device, args.quick), build_s=ready - started,
                   first_tokens_s=first_tokens, first_decode_s=first_decode,
                   time_to_first_images_s=to_first, finite=bool(np.isfinite(images).all()),
                   peak_rss_with_weights_loaded_bytes=weights_rss,
                   peak_rss_sampling_bytes=sampling_rss, threads=torch.get_num_threads(),
                   torch=torch.__version__,
                   peak_device_bytes=torch.cuda.max_memory_allocated() if device == "cuda" else None)


def initialise_convs_and_linears(module) -> None:
    """Fills the VQ-VAE's conv and linear weights, which `build_vae_var` leaves uninitialised (it
    switches PyTorch's initialisation off, since the released weights are loaded over them):
    uninitialised memory decodes to non-finite images and may hold denormals, which slow a CPU.
    Normal(0, 1/fan_in) weights and zero biases, seeded."""
    import torch

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
                layer.weight.normal_(0.0, layer.weight[0].numel() ** -0.5, generator=generator)
                if layer.bias is not None:
                    layer.bias.zero_()


def _report(name, batch, token_times, decode_times, flops_tokens, flops_decode, rate, **extra):
    tokens_s, decode_s = statistics.median(token_times), statistics.median(decode_times)
    whole = tokens_s + decode_s
    return dict(config=name, batch=batch, tokens_s=tokens_s, decode_s=decode_s, whole_s=whole,
                tokens_s_all=token_times, decode_s_all=decode_times, images_per_s=batch / whole,
                flops_per_image=(flops_tokens + flops_decode) / batch,
                tokens_flops_per_image=flops_tokens / batch,
                decode_flops_per_image=flops_decode / batch, matmul_flops_per_s=rate,
                tokens_share_of_matmul_rate=flops_tokens / tokens_s / rate,
                decode_share_of_matmul_rate=flops_decode / decode_s / rate,
                share_of_matmul_rate=(flops_tokens + flops_decode) / whole / rate,
                peak_rss_bytes=_rss(), **extra)


def _jax_matmul_rate(args) -> float:
    import jax
    import jax.numpy as jnp

    n = 512 if args.quick else 8192
    a = jnp.ones((n, n), jnp.bfloat16)
    matmul = jax.jit(lambda x: x @ x)
    jax.block_until_ready(matmul(a))
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        jax.block_until_ready(matmul(a))
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _jax_peak_bytes():
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def _torch_matmul_rate(device: str, quick: bool) -> float:
    """Best FLOP/s of a square matmul: float32 2048 on the CPU (as `forward_masks.matmul_peak_flops`
    measures JAX), bf16 8192 on a GPU."""
    import torch

    n = 512 if quick else (8192 if device == "cuda" else 2048)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.ones(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(6):
        start = time.perf_counter()
        a @ a
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


# ---------------------------------------------------------------------------------------- driver
def summary(results: list[dict]) -> dict:
    """Medians over repeats per (config, batch), and every ratio to `official` at that batch."""
    grouped = {}
    for r in results:
        if "error" not in r:
            grouped.setdefault((r["config"], r["batch"]), []).append(r)
    keys = ("tokens_s", "decode_s", "whole_s", "images_per_s", "peak_rss_bytes",
            "peak_rss_sampling_bytes",
            "share_of_matmul_rate", "tokens_share_of_matmul_rate", "decode_share_of_matmul_rate",
            "flops_per_image", "time_to_first_images_s", "peak_device_bytes")
    medians = {}
    for (name, batch), runs in grouped.items():
        medians[f"{name}@{batch}"] = {
            k: statistics.median(r[k] for r in runs) for k in keys
            if all(r.get(k) is not None for r in runs)}
        medians[f"{name}@{batch}"]["repeats"] = len(runs)
    ratios = {}
    for label, m in medians.items():
        name, batch = label.split("@")
        ref = medians.get(f"official@{batch}")
        if name == "official" or not ref:
            continue
        ratios[label] = {
            "images_per_s": m["images_per_s"] / ref["images_per_s"],
            "tokens_speed": ref["tokens_s"] / m["tokens_s"],
            "decode_speed": ref["decode_s"] / m["decode_s"],
            "peak_rss": m["peak_rss_bytes"] / ref["peak_rss_bytes"],
        }
        if m.get("peak_rss_sampling_bytes") and ref.get("peak_rss_sampling_bytes"):
            ratios[label]["peak_rss_sampling"] = (m["peak_rss_sampling_bytes"]
                                                  / ref["peak_rss_sampling_bytes"])
        if m.get("peak_device_bytes") and ref.get("peak_device_bytes"):
            ratios[label]["peak_device_memory"] = m["peak_device_bytes"] / ref["peak_device_bytes"]
    return {"medians": medians, "over_official": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--var-src", default="", help="checkout of FoundationVision/VAR")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS))
    parser.add_argument("--levers", action="store_true", help="also each lever alone")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="rounds over every configuration")
    parser.add_argument("--runs", type=int, default=2, help="timed runs per process")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    parser.add_argument("--out", default="", help="also append each JSON line to this file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a dry run")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        name, batch = args.only.split("@")
        result = (measure_official(args, int(batch)) if name == "official"
                  else measure_ours(args, name, int(batch)))
        print(json.dumps(result))
        return
    configs = [c for c in args.configs.split(",") if c]
    if args.levers:
        configs += [c for c in LEVER_CONFIGS if c not in configs]
    unknown = [c for c in configs if c != "official" and c not in OURS]
    if unknown:
        parser.error(f"unknown configurations {unknown}: choose from official, {', '.join(OURS)}")
    if "official" in configs and not args.var_src:
        parser.error("official needs --var-src (a checkout of FoundationVision/VAR)")
    batches = [int(b) for b in args.batches.split(",")]
    # One persistent compilation cache per configuration: cold in the first round, warm after.
    cache_root = tempfile.mkdtemp(prefix="vs_var_xla_")
    results = []
    for round_index in range(args.repeats):
        for batch in batches:
            for name in configs:
                env = dict(os.environ, **(OURS[name][2] if name in OURS else {}))
                argv = [sys.executable, os.path.abspath(__file__), f"--only={name}@{batch}",
                        f"--var-src={args.var_src}", f"--depth={args.depth}",
                        f"--runs={args.runs}", f"--device={args.device}",
                        f"--threads={args.threads}",
                        f"--cache={os.path.join(cache_root, f'{name}_{batch}')}"
                        ] + (["--quick"] if args.quick else [])
                try:
                    out = subprocess.run(argv, capture_output=True, text=True, env=env,
                                         timeout=args.timeout)
                    lines = out.stdout.strip().splitlines()
                    result = (json.loads(lines[-1]) if out.returncode == 0 and lines else
                              {"config": name, "batch": batch,
                               "error": out.stderr.strip().splitlines()[-8:]})
                except subprocess.TimeoutExpired:
                    result = {"config": name, "batch": batch,
                              "error": f"timed out after {args.timeout:.0f} s"}
                result["round"] = round_index
                results.append(result)
                line = json.dumps(result)
                print(line, flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(line + "\n")
    report = {"benchmark": "vs_var", "device": args.device, "depth": args.depth,
              "settings": SETTINGS, "date": time.strftime("%Y-%m-%d"), "cpu_count": os.cpu_count(),
              "wall_s": time.perf_counter() - STARTED, **summary(results)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
