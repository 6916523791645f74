"""The tokenizer step with the optional perceptual (LPIPS) and adversarial (PatchGAN) terms.

Used when config.tokenizer_training.perceptual_weight or adversarial_weight is > 0 (otherwise
`steps.make_tokenizer_step` runs). The train state's params are {'tokenizer': ...} plus
{'discriminator': ...} with the adversarial term, so orbax checkpoints and resume carry the
discriminator; one `optax.multi_transform` holds the two optimisers (the tokenizer's recipe and
`disc_optim`). Both updates happen in one jitted step from one backward pass: the generator's
adversarial term sees the discriminator through `stop_gradient`, and the discriminator's hinge loss
sees the reconstruction through `stop_gradient`, so each gradient is exactly its own loss's.

The adversarial weight is fixed (no VQGAN adaptive weight): the adaptive weight needs two more
gradients through the decoder's last layer every step, and with `adversarial_start` (the
discriminator joins once reconstruction has converged) a fixed weight is the simpler, stable choice.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import optax

from srdd_jax import models
from srdd_jax.tokenizer.vqvae import VQVAE
from srdd_jax.training import optimizer, perceptual, steps
from srdd_jax.training.spec import TrainSpec

FIELD = "config.tokenizer_training"


def enabled(run: TrainSpec) -> bool:
    return run.perceptual_weight > 0 or run.adversarial_weight > 0


def validate(run: TrainSpec) -> None:
    """ValueError / FileNotFoundError naming the bad field of config.tokenizer_training."""
    for name in ("perceptual_weight", "adversarial_weight", "adversarial_start"):
        if getattr(run, name) < 0:
            raise ValueError(f"{FIELD}.{name}={getattr(run, name)} must be >= 0 (0 = off)")
    if run.disc_channels < 1 or run.disc_layers < 1:
        raise ValueError(f"{FIELD}.disc_channels={run.disc_channels} and disc_layers="
                         f"{run.disc_layers} must be >= 1")
    if run.adversarial_weight > 0 and run.disc_optim.base_lr <= 0:
        raise ValueError(f"{FIELD}.disc_optim.base_lr={run.disc_optim.base_lr} must be > 0")
    if run.perceptual_weight > 0:
        needed = [run.lpips_weights] + ([] if run.lpips_weights.endswith(".npz") else [run.vgg16_weights])
        for name, path in zip(("lpips_weights", "vgg16_weights"), needed):
            if not path or not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{FIELD}.perceptual_weight={run.perceptual_weight} but {FIELD}.{name}={path!r} "
                    f"is not a file. {perceptual.WEIGHTS_HELP}")


def make_optimizer(run: TrainSpec, adversarial: bool):
    """The tokenizer's optimiser on params['tokenizer'], disc_optim on params['discriminator']."""
    transforms = {"tokenizer": optimizer.make_optimizer(run.optim, run.steps, run.batch_size)[0]}
    if adversarial:
        transforms["discriminator"] = optimizer.make_optimizer(run.disc_optim, run.steps,
                                                               run.batch_size)[0]
    def labels(params):
        return {name: jax.tree.map(lambda _, name=name: name, part) for name, part in params.items()}

    return optax.multi_transform(transforms, labels)


def build(spec: models.ModelSpec, run: TrainSpec):
    """(boxed_init, tx, step, frozen) for `loop.train`.

    step(state, *frozen, batch, rng) -> (state, metrics), frozen = (lpips params,) when the
    perceptual term is on, else (). Metrics: loss (the tokenizer's total), recon_mse, vq_loss,
    codebook_usage, grad_norm, and perceptual / gen_adv, disc_loss, disc_real, disc_fake when on.
    """
    model = models.Model(spec)
    tokenizer = model.tokenizer
    adversarial, use_lpips = run.adversarial_weight > 0, run.perceptual_weight > 0
    disc = perceptual.PatchDiscriminator(run.disc_channels, run.disc_layers)
    tx = make_optimizer(run, adversarial)
    frozen = (perceptual.load_lpips(run.lpips_weights, run.vgg16_weights),) if use_lpips else ()
    image = model.zero_image()

    def boxed_init(rng):
        tok_rng, disc_rng = jax.random.split(rng)
        params = {"tokenizer": model.create_params(tok_rng, "tokenizer")}
        if adversarial:
            params["discriminator"] = disc.init(disc_rng, image)["params"]
        return params

    def loss_fn(params, lpips_params, images, step):
        recon, vq_loss, idx_BL = tokenizer.apply({"params": params["tokenizer"]}, images, run.beta,
                                                 method=VQVAE.reconstruct_train)
        recon_mse = jnp.mean(jnp.square(recon - images))
        loss = recon_mse + run.vq_weight * vq_loss
        used = jnp.zeros(tokenizer.spec.vocab_size).at[idx_BL.reshape(-1)].set(1.0)
        metrics = {"recon_mse": recon_mse, "vq_loss": vq_loss, "codebook_usage": jnp.mean(used)}
        if use_lpips:
            metrics["perceptual"] = jnp.mean(perceptual.lpips(lpips_params, images, recon))
            loss = loss + run.perceptual_weight * metrics["perceptual"]
        disc_loss = 0.0
        if adversarial:
            on = (step >= run.adversarial_start).astype(jnp.float32)
            frozen_disc = {"params": jax.lax.stop_gradient(params["discriminator"])}
            metrics["gen_adv"] = -jnp.mean(disc.apply(frozen_disc, recon))
            loss = loss + on * run.adversarial_weight * metrics["gen_adv"]
            disc_vars = {"params": params["discriminator"]}
            real = disc.apply(disc_vars, images)
            fake = disc.apply(disc_vars, jax.lax.stop_gradient(recon))
            disc_loss = on * 0.5 * (jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake)))
            metrics.update(disc_loss=disc_loss, disc_real=jnp.mean(real), disc_fake=jnp.mean(fake))
        return loss + disc_loss, dict(metrics, loss=loss)

    def step(state, *args):
        *lpips_params, batch, rng = args
        del rng  # no stochastic layers
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (_, metrics), grads = grad_fn(state.params, lpips_params[0] if use_lpips else None,
                                      batch["image"], state.step)
        return (steps.apply_gradients(state, grads, tx),
                dict(metrics, grad_norm=optax.tree.norm(grads["tokenizer"])))

    return boxed_init, tx, step, frozen
