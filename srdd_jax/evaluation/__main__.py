"""Inception metrics of a set of images against a reference set, from the command line.

    python -m srdd_jax.evaluation --samples=workdirs/demo/samples/samples.npz \
        --reference=REFERENCE_FOLDER_OR_NPZ --inception_weights=pt_inception-2015-12-05-6726825d.pth

`--samples` and `--reference` are `.npz` files (key `arr_0`, uint8 (N, H, W, C), as written by
`mode=sample`) or folders of images. Prints JSON: fid_inception, is_inception (10 splits, as
torch-fidelity), is_inception_std, precision_inception, recall_inception (k-NN, `--pr_k`). The
reference statistics are computed once and cached in `--cache_dir` under the reference's path;
delete that file when the reference images change.
"""

from __future__ import annotations

import argparse
import json
import os
import re

from srdd_jax import parallel
from srdd_jax.evaluation import features, images, metrics


def score(samples: str, reference: str, weights: str, cache_dir: str, batch_size: int = 50,
          pr_k: int = 3, mesh=None) -> dict:
    """Inception FID / IS / precision / recall of the images at `samples` against `reference`."""
    inception = features.InceptionFeatures(weights, mesh=mesh, batch_size=batch_size)
    name = re.sub(r"[^A-Za-z0-9]+", "_", os.path.abspath(reference)).strip("_") + "_inception"
    real = features.cached_stats(cache_dir, name, lambda: inception(images.load_images(reference))["pool"])
    fake_images = images.load_images(samples)
    fake = inception(fake_images)
    scores = features.compare(features.FeatureStats.from_features(fake["pool"]), real, pr_k)
    is_mean, is_std = metrics.inception_score(fake["logits_unbiased"], min(10, len(fake_images)))
    return dict(fid_inception=scores["fid"], is_inception=is_mean, is_inception_std=is_std,
                precision_inception=scores["precision"], recall_inception=scores["recall"],
                samples=len(fake_images), reference=len(real.features))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--samples", required=True, help=".npz (arr_0) or folder of images")
    parser.add_argument("--reference", required=True, help=".npz (arr_0) or folder of images")
    parser.add_argument("--inception_weights", required=True,
                        help="pt_inception-2015-12-05-6726825d.pth, or the .npz converted from it")
    parser.add_argument("--cache_dir", default=os.path.join(os.path.expanduser("~"), ".cache", "srdd_jax"))
    parser.add_argument("--batch_size", type=int, default=64, help="a multiple of the device count")
    parser.add_argument("--pr_k", type=int, default=3)
    args = parser.parse_args(argv)
    for flag in ("samples", "reference"):
        if not os.path.exists(getattr(args, flag)):
            parser.error(f"--{flag}={getattr(args, flag)} does not exist")
    result = score(args.samples, args.reference, args.inception_weights, args.cache_dir,
                   args.batch_size, args.pr_k, parallel.make_mesh())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
