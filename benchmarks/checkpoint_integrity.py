"""What integrity records cost: saving and loading a d16-size model directory (VAR's tokenizer and
d16 transformer, random float32 weights) with `saved_models.save_model` / `load_model`, against the
same orbax calls without the records, and the fingerprint pass alone.

Prints JSON: the parameter count and bytes; the median seconds of the plain orbax save, of the
plain restore (to host arrays, then onto the default device, as load_model does), of save_model
and load_model (which add the fingerprint at save and its check after the restore), and of one
fingerprint of the tree (after a first call that compiles, timed separately); the added seconds
and fractions; and the fingerprint's throughput, which also sets the cost for a train checkpoint
(params + two Adam moments: three times the bytes).

    python benchmarks/checkpoint_integrity.py [--depth 16] [--repeats 5] [--dir /tmp/ckpt_bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time


def timed(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default="", help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    import flax.linen as nn
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    from srdd_jax import checkpoints, fingerprints, models, saved_models
    from srdd_jax.transformer.spec import TransformerSpec

    spec = models.ModelSpec(transformer=TransformerSpec.for_depth(args.depth))
    model = models.Model(spec)
    params = jax.block_until_ready({
        "tokenizer": nn.unbox(model.init_params(jax.random.key(0), "tokenizer")),
        "transformer": nn.unbox(model.init_params(jax.random.key(1), "transformer"))})
    leaves = jax.tree.leaves(params)
    scratch = args.dir or tempfile.mkdtemp(prefix="checkpoint_integrity_")
    plain_dir, model_dir = f"{scratch}/plain", f"{scratch}/model"

    def plain_save():
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(checkpoints.directory_path(plain_dir), params, force=True)

    def plain_restore():  # what load_model does, without the record and the verification
        target = jax.tree.map(lambda x: np.empty(x.shape, x.dtype), params)
        with ocp.StandardCheckpointer() as checkpointer:
            restored = checkpointer.restore(checkpoints.directory_path(plain_dir), target)
        jax.block_until_ready(jax.device_put(restored))

    start = time.perf_counter()
    fingerprints.tree_fingerprint(params)
    first_fingerprint_s = time.perf_counter() - start
    fingerprint_s = timed(lambda: fingerprints.tree_fingerprint(params), args.repeats)
    # Alternated, so that drifts of the machine (page cache, other load) hit both sides alike.
    plain_save_s, save_s, plain_restore_s, load_s = [], [], [], []
    for _ in range(args.repeats):
        plain_save_s += timed(plain_save, 1)
        save_s += timed(lambda: saved_models.save_model(model_dir, params, spec, overwrite=True), 1)
        plain_restore_s += timed(plain_restore, 1)
        load_s += timed(lambda: jax.block_until_ready(saved_models.load_model(model_dir)[0]), 1)
    shutil.rmtree(scratch, ignore_errors=True)

    nbytes = sum(x.nbytes for x in leaves)
    median = {name: statistics.median(values) for name, values in dict(
        fingerprint=fingerprint_s, plain_save=plain_save_s, save_model=save_s,
        plain_restore=plain_restore_s, load_model=load_s).items()}
    print(json.dumps({
        "depth": args.depth, "parameters": int(sum(x.size for x in leaves)),
        "bytes": int(nbytes), "arrays": len(leaves), "repeats": args.repeats,
        "jax": jax.__version__, "orbax": ocp.__version__ if hasattr(ocp, "__version__") else "",
        "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
        "first_fingerprint_s (compiles)": round(first_fingerprint_s, 3),
        "median_s": {name: round(value, 3) for name, value in median.items()},
        "all_s": {name: [round(v, 3) for v in values] for name, values in dict(
            fingerprint=fingerprint_s, plain_save=plain_save_s, save_model=save_s,
            plain_restore=plain_restore_s, load_model=load_s).items()},
        "save_added_s": round(median["save_model"] - median["plain_save"], 3),
        "save_added_fraction": round(median["save_model"] / median["plain_save"] - 1, 3),
        "load_added_s": round(median["load_model"] - median["plain_restore"], 3),
        "load_added_fraction": round(median["load_model"] / median["plain_restore"] - 1, 3),
        "fingerprint_gb_per_s": round(nbytes / median["fingerprint"] / 1e9, 2),
    }, indent=1))


if __name__ == "__main__":
    main()
