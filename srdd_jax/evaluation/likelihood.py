"""Negative log-likelihood of held-out images under a model, in bits per token.

Teacher forcing, as in training: tokenizer encode -> teacher-forcing input -> transformer logits
(with the model's attention mask: var, markov or markov_prev) -> cross-entropy of every token.
For each scale s the result is the mean over images and the scale's tokens; the total is the
token-weighted mean over all L tokens, and bits per image is L times that (the sum over scales of
per-scale mean x tokens in the scale). Images are labelled with their class (conditional) or with
the null class (unconditional). The per-batch program is jitted once per batch size, with the
batch split over the mesh and the parameters sharded by the logical-axis rules, like training.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh

from srdd_jax import losses, models, parallel
from srdd_jax.progress import Progress
from srdd_jax.tokenizer.vqvae import VQVAE


class Likelihood:
    """Per-scale token NLL of a model spec; call `nll(params, images, labels)`."""

    def __init__(self, spec: models.ModelSpec, batch_size: int, mesh: Mesh | None = None,
                 mask: str | None = None):
        """batch_size: images per program call (the last batch is padded); mask: a name in the
        mask registry replacing the spec's."""
        model = models.Model(spec.with_transformer(mask=mask) if mask else spec)
        self.spec = model.spec
        self.batch_size = batch_size
        self.mesh = mesh
        self.patch_nums = tuple(spec.patch_nums)
        self.tokenizer, self.transformer = model.tokenizer, model.transformer
        if mesh is None:
            self._step = jax.jit(self._sums)
            self._shardings = None
        else:
            self._shardings = (model.shardings(mesh, "tokenizer"),
                               model.shardings(mesh, "transformer"))
            batch = [parallel.batch_sharding(mesh, nd, batch_size) for nd in (4, 1, 1)]
            self._step = jax.jit(self._sums, in_shardings=(*self._shardings, *batch),
                                 out_shardings=parallel.replicated(mesh))

    def _sums(self, tok_params, tr_params, images_BHWC, labels_B, valid_B):
        """Sums over the valid images of each scale's token cross-entropy in nats, (S,) float32."""
        x = images_BHWC.astype(jnp.float32) / 127.5 - 1.0
        tok = {"params": tok_params}
        idx_BL = self.tokenizer.apply(tok, x, method=VQVAE.encode_to_indices)
        x_BLCv = self.tokenizer.apply(tok, idx_BL, method=VQVAE.teacher_forcing_input)
        logits_BLV = self.transformer.apply({"params": tr_params}, labels_B, x_BLCv)
        ce_BL = losses.cross_entropy(logits_BLV, idx_BL) * valid_B[:, None]
        return losses.per_scale_sum(ce_BL, self.patch_nums)

    def nll(self, params: dict, images_NHWC: np.ndarray, labels_N: np.ndarray,
            unconditional: bool = False) -> dict:
        """NLL of uint8 (N, H, W, C) images with (N,) int labels (ignored when `unconditional`:
        every image gets the null class).

        Returns: {bits_per_token: float, bits_per_token_per_scale: [S floats], bits_per_image: float,
        nats_per_token: float, images: N, tokens_per_image: L}.
        """
        n, b = len(images_NHWC), self.batch_size
        if n == 0:
            raise ValueError("no images to compute a likelihood for")
        labels_N = np.asarray(labels_N, np.int32)
        if unconditional:
            labels_N = np.full(n, self.spec.transformer.num_classes, np.int32)
        tok_params, tr_params = params["tokenizer"], params["transformer"]
        if self._shardings is not None:
            tok_params, tr_params = jax.device_put((tok_params, tr_params), self._shardings)
        totals_S, start_time = np.zeros(len(self.patch_nums)), time.time()
        progress = Progress(f"likelihood ({'unconditional' if unconditional else 'conditional'})", n,
                            "images")
        for start in range(0, n, b):
            chunk, labels = images_NHWC[start:start + b], labels_N[start:start + b]
            valid = np.arange(b) < len(chunk)
            pad = b - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
                labels = np.concatenate([labels, np.zeros(pad, np.int32)])
            totals_S += np.asarray(self._step(tok_params, tr_params, chunk, labels,
                                              valid.astype(np.float32)), np.float64)
            progress.update(min(start + b, n))
        counts_S = np.asarray([pn * pn for pn in self.patch_nums], np.float64)
        nats_per_scale = totals_S / (n * counts_S)
        nats_per_token = totals_S.sum() / (n * counts_S.sum())
        logging.info("likelihood (%s): %d images in %.1fs", "unconditional" if unconditional
                     else "conditional", n, time.time() - start_time)
        return dict(bits_per_token=float(nats_per_token / math.log(2)),
                    bits_per_token_per_scale=[float(v / math.log(2)) for v in nats_per_scale],
                    bits_per_image=float(totals_S.sum() / n / math.log(2)),
                    nats_per_token=float(nats_per_token), images=int(n),
                    tokens_per_image=int(counts_S.sum()))
