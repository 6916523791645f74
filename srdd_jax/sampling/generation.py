"""Many images from a sampler: batches, padding, decoding, progress and timing."""

from __future__ import annotations

import time

import numpy as np

from srdd_jax import parallel, preemption
from srdd_jax.progress import Progress


def generate(sampler, params: dict, labels_N, rng, batch_size: int,
             progress_name: str = "sampling", known_idx_NL=None, known_NL=None) -> dict:
    """Samples and decodes images for all N labels with a `Sampler`, `batch_size` at a time (image
    i draws from (rng, i) whatever the batch size), under the editing constraints (known_idx_NL,
    known_NL) of each image when given (`sampling.editing`). The last batch is padded with rows
    whose tokens are all forced (so they redraw nothing) and the padding is dropped: one program
    serves every batch. With a mesh, results are gathered on every process. Stops between batches
    when a stop was requested (`preemption`).

    Returns dict with images_NHWC (float32 numpy in [-1, 1]), idx_NL (int32 numpy),
    resampled_K (int numpy: tokens MR redrew per sampled scale, over all N images),
    tokens_K (tokens per scale over all N images), compile_s (the batch that compiled the
    sampler, if one did) and images_per_s (sampling and decoding of the other batches; the
    first batch again when all did compile).
    """
    labels_N = np.asarray(labels_N, np.int32)
    lay = sampler.plan.layout
    length, n = lay.length, len(labels_N)
    images, indices, resampled = [], [], np.zeros(len(lay.patch_nums), np.int64)
    progress = Progress(progress_name, n, "images")

    def run(start):
        chunk = labels_N[start:start + batch_size]
        pad = batch_size - len(chunk)
        known = np.ones((batch_size, length), bool)
        known_idx = np.zeros((batch_size, length), np.int32)
        known[:len(chunk)] = False if known_NL is None else known_NL[start:start + batch_size]
        if known_idx_NL is not None:
            known_idx[:len(chunk)] = known_idx_NL[start:start + batch_size]
        out = sampler.sample(params, np.pad(chunk, (0, pad)), rng, known_idx, known,
                             first_index=start)
        decoded = sampler.decoder.decode(params["tokenizer"], out["f_hat_BhwC"])
        return (parallel.to_host(decoded)[:len(chunk)],
                parallel.to_host(out["idx_BL"])[:len(chunk)], np.asarray(out["resampled_K"]))

    timed_n, timed_s, compile_s = 0, 0.0, 0.0
    for start in range(0, n, batch_size):
        begin, programs = time.perf_counter(), sampler.programs_compiled
        batch_images, batch_idx, batch_resampled = run(start)
        if sampler.programs_compiled > programs:  # this batch compiled the sampler
            compile_s += time.perf_counter() - begin
        else:
            timed_n, timed_s = timed_n + len(batch_idx), timed_s + time.perf_counter() - begin
        images.append(batch_images)
        indices.append(batch_idx)
        resampled += batch_resampled
        progress.update(start + len(batch_idx))
        if start + batch_size < n:
            preemption.check_between_batches(progress_name, start + len(batch_idx), n, "images")
    if not timed_n:
        begin = time.perf_counter()
        timed_n, timed_s = len(run(0)[1]), time.perf_counter() - begin
    return dict(images_NHWC=np.concatenate(images), idx_NL=np.concatenate(indices),
                resampled_K=resampled,
                tokens_K=np.asarray([n * pn * pn for pn in lay.patch_nums], np.int64),
                compile_s=compile_s, images_per_s=timed_n / timed_s)
