"""Token caches: a split encoded once by the frozen tokenizer (`mode=tokenize`), then read by
transformer training (`training.cached_tokens=DIR`), whose step then skips the tokenizer's encoder
and builds the teacher-forcing input from the cached indices.

A cache directory (`WORKDIR/tokens/<split>`) holds `tokens.npy` (N, L) int16 (int32 when the
vocabulary exceeds 32767), memory-mapped when read, so ImageNet's 1.28M x 680 tokens (1.7 GB) need
not fit in RAM; `labels.npy` (N,) int32; and `meta.json`, written last: the tokenizer that made it
(its config, patch_nums and a sha256 of its parameters), the class names, the data config and the
two arrays' fingerprints (see `fingerprints`). Loading verifies the arrays against them (one read
of the files) and training refuses a cache made by another tokenizer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib

import jax
import numpy as np
from absl import logging

from srdd_jax import errors, fingerprints, parallel, preemption
from srdd_jax.data import pipeline
from srdd_jax.progress import Progress
from srdd_jax.tokenizer.vqvae import VQVAE

TOKENS_FILE, LABELS_FILE, META_FILE = "tokens.npy", "labels.npy", "meta.json"


def tokenizer_fingerprint(spec, tok_params) -> dict:
    """{'tokenizer': its spec's dict, 'patch_nums': [...], 'params_sha256': hex} of a tokenizer
    (`spec`: the `models.ModelSpec`)."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(tok_params))[0]:
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return json.loads(json.dumps({"tokenizer": dataclasses.asdict(spec.tokenizer),
                                  "patch_nums": list(spec.patch_nums),
                                  "params_sha256": digest.hexdigest()}))


@dataclasses.dataclass
class TokenCache:
    tokens: np.ndarray  # (N, L) int16/int32, memory-mapped
    labels: np.ndarray  # (N,) int32
    meta: dict
    skipped: list = dataclasses.field(default_factory=list)  # always empty: every record reads

    @property
    def num_examples(self) -> int:
        return len(self.labels)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.meta["class_names"])

    # pipeline.Records: read by the grain pipeline on threads (the memory map stays in this process)
    def read_many(self, indices: np.ndarray) -> dict:
        """The rows `indices` at once, read from the memory map in sorted order."""
        order = np.argsort(indices)
        tokens = np.empty((len(indices), self.tokens.shape[1]), np.int32)
        tokens[order] = self.tokens[indices[order]]
        return {"tokens": tokens, "label": np.asarray(self.labels[indices], np.int32),
                "ok": np.ones(len(indices), bool)}

    def example_spec(self) -> dict:
        return {"tokens": ((self.tokens.shape[1],), np.int32), "label": ((), np.int32)}

    def finish(self, batch: dict) -> dict:
        return batch

    def batches(self, global_batch: int, seed: int, process_index: int = 0, process_count: int = 1):
        """This process's resumable batches {'tokens': int32 (b, L), 'label': int32 (b,)}."""
        return pipeline.Batches(self, global_batch, seed, process_index, process_count,
                                where="the token cache")


def token_dtype(vocab_size: int):
    """int16 when every index fits, else int32."""
    return np.int16 if vocab_size <= np.iinfo(np.int16).max + 1 else np.int32


def write_cache(directory: str, tokens_NL: np.ndarray, labels_N: np.ndarray, meta: dict) -> None:
    """Writes a cache (plain files: call it on one process); tokens are stored as int16 when the
    vocabulary allows. meta.json, with the arrays' fingerprints, is written last."""
    os.makedirs(directory, exist_ok=True)
    arrays = {"tokens": tokens_NL.astype(token_dtype(meta["tokenizer"]["vocab_size"])),
              "labels": labels_N.astype(np.int32)}
    np.save(os.path.join(directory, TOKENS_FILE), arrays["tokens"])
    np.save(os.path.join(directory, LABELS_FILE), arrays["labels"])
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(dict(meta, arrays=fingerprints.tree_fingerprint(arrays)), f, indent=1)


def load_cache(directory: str) -> TokenCache:
    """The cache in `directory`, verified against the fingerprints in its meta.json (caches
    written before fingerprints existed load with a warning)."""
    meta_path = os.path.join(directory, META_FILE)
    if not os.path.isfile(meta_path):
        raise errors.MissingFileError(
            f"config.training.cached_tokens={directory!r} holds no token cache ({META_FILE} "
            "missing): write one with --config.mode=tokenize, which creates WORKDIR/tokens/<split>")
    meta = _read(directory, META_FILE, lambda path: json.loads(pathlib.Path(path).read_text()))
    arrays = {"tokens": _read(directory, TOKENS_FILE, lambda path: np.load(path, mmap_mode="r")),
              "labels": _read(directory, LABELS_FILE, np.load)}
    if "arrays" not in meta:
        logging.warning("token cache %s has no fingerprints (written before they existed): "
                        "loaded without verification", directory)
    else:
        problems = fingerprints.mismatches(meta["arrays"], fingerprints.tree_fingerprint(arrays))
        if problems:
            raise errors.DamagedCheckpointError(
                f"the token cache {directory} does not match the fingerprints in its {META_FILE}: "
                f"{fingerprints.summary(problems)}. Its files are damaged: re-run "
                "--config.mode=tokenize to write it again")
    return TokenCache(arrays["tokens"], arrays["labels"], meta)


def _read(directory: str, name: str, read):
    """read(path) of one cache file; a failure is reported as damage naming the file."""
    path = os.path.join(directory, name)
    try:
        return read(path)
    except (OSError, ValueError, EOFError) as error:
        raise errors.DamagedCheckpointError(
            f"the token cache {directory} does not load ({name}: {errors.first_line(error)}): "
            "re-run --config.mode=tokenize to write it again") from error


def check_tokenizer(cache: TokenCache, spec, tok_params, directory: str) -> None:
    """Raises errors.IncompatibleCheckpointError (a ValueError) unless the cache was made by this
    tokenizer (config, patch_nums, params)."""
    want = tokenizer_fingerprint(spec, tok_params)
    for key, what in (("patch_nums", "patch_nums"), ("tokenizer", "tokenizer config"),
                      ("params_sha256", "tokenizer parameters")):
        if cache.meta[key] != want[key]:
            raise errors.IncompatibleCheckpointError(
                f"config.training.cached_tokens={directory!r} was made by a tokenizer with other "
                f"{what} ({cache.meta[key]} vs this run's {want[key]}): re-run "
                "--config.mode=tokenize with this run's tokenizer, or point "
                "config.init.tokenizer at the one that made the cache")


def encode_source(source, tokenizer: VQVAE, tok_params, mesh, batch_size: int):
    """Encodes every image of `source` in order: returns (tokens (N, L) int16, or int32 for
    vocabularies over 32768, and labels (N,) int32).

    Batches are sharded over the mesh; each process feeds its slice of every batch and all get
    the whole result.
    """
    replicated = parallel.replicated(mesh)
    sharding = parallel.batch_sharding(mesh, 4)
    encode = jax.jit(lambda p, x: tokenizer.apply({"params": p}, x, method=VQVAE.encode_to_indices),
                     in_shardings=(replicated, sharding), out_shardings=replicated)
    tok_params = jax.device_put(tok_params, replicated)
    local = batch_size // jax.process_count()
    start = jax.process_index() * local
    all_tokens, all_labels = [], []
    dtype = token_dtype(tokenizer.spec.vocab_size)
    progress = Progress("tokenize", source.num_examples, "images")
    for images, labels in source.ordered(batch_size):
        padded = np.zeros((batch_size,) + images.shape[1:], np.float32)
        padded[:len(images)] = images.astype(np.float32) / 127.5 - 1.0
        batch = jax.make_array_from_process_local_data(sharding, padded[start:start + local])
        idx = encode(tok_params, batch)
        all_tokens.append(np.asarray(idx.addressable_data(0))[:len(images)].astype(dtype))
        all_labels.append(labels)
        progress.update(sum(map(len, all_labels)))
        preemption.check_between_batches("tokenize", sum(map(len, all_labels)),
                                         source.num_examples, "images")
    return np.concatenate(all_tokens), np.concatenate(all_labels).astype(np.int32)
