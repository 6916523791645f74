"""The grain input pipeline (srdd_jax/data/pipeline.py) on image folders and prepared shards:
throughput and memory.

Makes (once, in --dir) a folder of N and one of 4N photo-like JPEGs at ImageNet's typical size,
500 x 375 (smooth colour fields with noise, 10 classes), and the N folder's prepared shards (PNG
and JPEG at quality 95, `srdd_jax/data/shards.py`), then, each in its own process:
- images/s of training batches from the folder (decode, shorter-side resize to 288, random 256
  crop, batch) with 0 workers (threads of the process), 1 and 2 worker processes, after a
  warm-up; the same from each shard set (decode the stored 288-px image, random 256 crop, batch)
  with 1 and 2 workers;
- peak RSS of the process (and the sum of its workers' peaks) while reading the same number of
  batches from the N- and the 4N-image folder: the stream holds the file list, never the images,
  so the peak does not grow with the folder;
- with --train, the peak RSS of a whole training run (`python -m srdd_jax.main` with
  configs/image_folder.py:32, the folder streamed with random crops, 20 tokenizer and 20
  transformer steps of batch 32) on the N- and the 4N-image folder.

    python benchmarks/input_pipeline.py [--images 5000] [--batch 32] [--batches 80] [--dir DIR] [--train]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import time

SIZE = 256


def make_folder(root: str, count: int, seed: int = 0) -> str:
    """`count` 500 x 375 JPEGs under root/class_k/, written once (an existing folder is reused)."""
    import numpy as np
    from PIL import Image

    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return root
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = os.path.join(root, f"class_{i % 10}")
        os.makedirs(folder, exist_ok=True)
        corners = rng.uniform(0, 255, (2, 2, 3))
        ys, xs = np.linspace(0, 1, 375)[:, None, None], np.linspace(0, 1, 500)[None, :, None]
        field = (corners[0, 0] * (1 - ys) * (1 - xs) + corners[0, 1] * (1 - ys) * xs
                 + corners[1, 0] * ys * (1 - xs) + corners[1, 1] * ys * xs)
        pixels = np.clip(field + rng.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{i:06d}.jpg"), quality=90)
    open(done, "w").close()
    return root


def make_shards(root: str, directory: str, encoding: str) -> str:
    """The folder's prepared shards (written once, as mode=prepare does)."""
    from srdd_jax.data import shards
    from srdd_jax.data.image_folder import FolderStream
    from srdd_jax.data.spec import PrepareSpec

    if not os.path.exists(os.path.join(directory, shards.META_FILE)):
        shards.write(FolderStream(root, SIZE, 3, workers=0), directory, PrepareSpec(encoding=encoding))
    return directory


def measure(root: str, workers: int, batch: int, batches: int) -> dict:
    """Reads `batches` training batches (after 3 warm-up batches) in this process from a folder,
    or from prepared shards when `root` holds them."""
    from srdd_jax.data import shards
    from srdd_jax.data.image_folder import FolderStream

    if os.path.exists(os.path.join(root, shards.META_FILE)):
        stream = shards.Shards(root, SIZE, 3, train_crop="random", workers=workers)
    else:
        stream = FolderStream(root, SIZE, 3, train_crop="random", workers=workers)
    iterator = stream.batches(batch, seed=0)
    for _ in range(3):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers_mb = sum(_peak_rss_mb(child.pid) for child in multiprocessing.active_children())
    return {"images": stream.num_examples, "workers": workers, "images_per_s": batch * batches / seconds,
            "peak_rss_mb": own, "peak_rss_of_workers_mb": workers_mb}


def _peak_rss_mb(pid: int) -> float:
    """A live process's peak resident memory (VmHWM), MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def in_subprocess(root: str, workers: int, batch: int, batches: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", root, "--workers", str(workers),
                          "--batch", str(batch), "--batches", str(batches)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def training_peak_rss_mb(root: str, workdir: str) -> dict:
    """Peak RSS of one training run on `root` (its own process, measured by a wrapper process)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, "-m", "srdd_jax.main", "--config=configs/image_folder.py:32",
               f"--workdir={workdir}", f"--config.data.root={root}", "--config.data.streaming=always",
               "--config.data.train_crop=random", "--config.tokenizer_training.steps=20",
               "--config.training.steps=20", "--config.tokenizer_training.checkpoint_every=20",
               "--config.training.checkpoint_every=20", "--config.compilation_cache=off"]
    wrapper = ("import resource, subprocess, sys, time; start = time.perf_counter(); "
               "code = subprocess.run(sys.argv[1:]).returncode; "
               "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "
               "time.perf_counter() - start)")
    out = subprocess.run([sys.executable, "-c", wrapper, *command], cwd=repo, capture_output=True,
                         text=True, check=True)
    code, peak, seconds = out.stdout.split()[-3:]
    if code != "0":
        raise RuntimeError(f"training on {root} failed:\n{out.stderr[-3000:]}")
    return {"peak_rss_mb": float(peak), "seconds": float(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=80)
    parser.add_argument("--dir", default="/tmp/srdd_input_pipeline")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--train", action="store_true", help="also the peak RSS of training runs")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.workers, args.batch, args.batches)))
        return
    small = make_folder(os.path.join(args.dir, f"n{args.images}_500x375"), args.images)
    large = make_folder(os.path.join(args.dir, f"n{4 * args.images}_500x375"), 4 * args.images,
                        seed=1)
    rate = {f"workers_{w}": in_subprocess(small, w, args.batch, args.batches) for w in (0, 1, 2)}
    for encoding in ("png", "jpeg"):
        directory = make_shards(small, os.path.join(args.dir, f"n{args.images}_shards_{encoding}"),
                                encoding)
        size_mb = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))
        rate[f"shards_{encoding}"] = {
            "megabytes": size_mb / 2**20,
            **{f"workers_{w}": in_subprocess(directory, w, args.batch, args.batches) for w in (1, 2)}}
    memory = {f"{name}_images": in_subprocess(root, 0, args.batch, args.batches)
              for name, root in (("n", small), ("4n", large))}
    report = {
        "date": time.strftime("%Y-%m-%d"), "cpu_cores": os.cpu_count(), "image_size": SIZE,
        "batch": args.batch, "batches": args.batches, "throughput": rate, "memory": memory,
        "peak_rss_growth_mb_4n_over_n": (memory["4n_images"]["peak_rss_mb"]
                                         - memory["n_images"]["peak_rss_mb"]),
    }
    if args.train:
        training = {f"{name}_images": training_peak_rss_mb(root, os.path.join(args.dir, f"run_{name}"))
                    for name, root in (("n", small), ("4n", large))}
        report["training"] = dict(training, peak_rss_growth_mb_4n_over_n=(
            training["4n_images"]["peak_rss_mb"] - training["n_images"]["peak_rss_mb"]))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
