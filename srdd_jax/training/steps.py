"""Train state, losses and train steps (pure functions of (state, batch, rng)).

The transformer learns next-scale cross-entropy on teacher-forcing inputs from the frozen
tokenizer; the tokenizer learns reconstruction + VAR's commitment/codebook loss. Metrics are scalars
(and per-scale vectors), fetched by the loop only on logging steps.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from srdd_jax import losses
from srdd_jax.tokenizer.vqvae import VQVAE
from srdd_jax.transformer.model import VAR


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any
    opt_state: Any


def apply_gradients(state: TrainState, grads, tx) -> TrainState:
    """One optimiser update; the step counter advances."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         opt_state=opt_state)


def init_state(init_params_fn, tx, rng) -> TrainState:
    """A fresh state; with boxed (logically partitioned) params the state stays boxed, so its
    partition specs can be read before anything is allocated."""
    params = init_params_fn(rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def transformer_loss(transformer: VAR, params, x_BLCv, idx_BL, labels_B, rng, label_smoothing):
    """Mean next-scale cross-entropy (VAR weights every token 1/L) and metrics."""
    logits = transformer.apply({"params": params}, labels_B, x_BLCv, train=True,
                               rngs={"dropout": rng})
    ce = losses.cross_entropy(logits, idx_BL, label_smoothing)
    correct = (jnp.argmax(logits, axis=-1) == idx_BL).astype(jnp.float32)
    metrics = {
        "loss": jnp.mean(ce),
        "accuracy": jnp.mean(correct),
        "loss_per_scale": losses.per_scale_mean(ce, transformer.patch_nums),
        "accuracy_per_scale": losses.per_scale_mean(correct, transformer.patch_nums),
    }
    return metrics["loss"], metrics


def make_transformer_step(transformer: VAR, tokenizer: VQVAE, tx, label_smoothing: float = 0.0):
    """(state, tokenizer_params, batch, rng) -> (state, metrics). The tokenizer is frozen.

    batch: {'image': (B, H, W, C), 'label': (B,)}, or {'tokens': int32 (B, L), 'label': (B,)} from
    a token cache, which skips the encoder (the tokenizer still gives the teacher-forcing input).
    """

    def step(state: TrainState, tok_params, batch, rng):
        rng = jax.random.fold_in(rng, state.step)
        tok = {"params": tok_params}
        idx_BL = batch["tokens"] if "tokens" in batch else tokenizer.apply(
            tok, batch["image"], method=VQVAE.encode_to_indices)
        x_BLCv = jax.lax.stop_gradient(
            tokenizer.apply(tok, idx_BL, method=VQVAE.teacher_forcing_input))
        grad_fn = jax.value_and_grad(transformer_loss, argnums=1, has_aux=True)
        (_, metrics), grads = grad_fn(transformer, state.params, x_BLCv, idx_BL, batch["label"],
                                      rng, label_smoothing)
        return apply_gradients(state, grads, tx), dict(metrics, grad_norm=optax.tree.norm(grads))

    return step


def tokenizer_loss(tokenizer: VQVAE, params, images_BHWC, vq_weight: float, beta: float):
    """Reconstruction MSE + vq_weight * commitment/codebook loss, and metrics incl. code usage."""
    recon, vq_loss, idx_BL = tokenizer.apply({"params": params}, images_BHWC, beta,
                                             method=VQVAE.reconstruct_train)
    recon_loss = jnp.mean(jnp.square(recon - images_BHWC))
    used = jnp.zeros(tokenizer.spec.vocab_size).at[idx_BL.reshape(-1)].set(1.0)
    metrics = {"loss": recon_loss + vq_weight * vq_loss, "recon_mse": recon_loss,
               "vq_loss": vq_loss, "codebook_usage": jnp.mean(used)}
    return metrics["loss"], metrics


def make_tokenizer_step(tokenizer: VQVAE, tx, vq_weight: float = 1.0, beta: float = 0.25):
    """(state, batch, rng) -> (state, metrics)."""

    def step(state: TrainState, batch, rng):
        del rng  # the tokenizer has no stochastic layers
        grad_fn = jax.value_and_grad(tokenizer_loss, argnums=1, has_aux=True)
        (_, metrics), grads = grad_fn(tokenizer, state.params, batch["image"], vq_weight, beta)
        return apply_gradients(state, grads, tx), dict(metrics, grad_norm=optax.tree.norm(grads))

    return step


def unboxed_init(init_params_fn, tx):
    """init_state without the logical-partitioning boxes (what the jitted steps carry)."""
    return lambda rng: nn.unbox(init_state(init_params_fn, tx, rng))
