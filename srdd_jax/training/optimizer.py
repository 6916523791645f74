"""VAR's optimiser recipe: AdamW (0.9, 0.95), weight-decay groups, lr scaled by batch, warm-up then
linear decay ('lin0'), weight decay on a cosine from twd to twde, global-norm gradient clipping."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import optax

from srdd_jax.training.spec import OptimSpec

# Parameters VAR excludes from weight decay by name (besides every 1-D parameter and bias).
NO_DECAY = re.compile(r"pos_start|pos_embed|lvl_embed|scale_mul|ada_gss|bias")
STACKED_BLOCKS = "blocks"  # the transformer's scanned blocks: parameters stacked over layers


def decay_mask(params):
    """True for parameters that get weight decay (VAR: >= 2-D weights outside the no-decay names;
    a stacked block parameter's leading layers axis does not count)."""
    def keep(path, leaf):
        names = [str(getattr(p, "key", p)) for p in path]
        ndim = leaf.ndim - (names[:1] == [STACKED_BLOCKS])
        return ndim >= 2 and not NO_DECAY.search("/".join(names))

    return jax.tree_util.tree_map_with_path(keep, params)


def lr_schedule(peak_lr: float, total_steps: int, warmup_steps: int, final_ratio: float,
                start_ratio: float = 0.005):
    """VAR's 'lin0': linear warm-up from start_ratio*peak; flat for the first 5 % after warm-up;
    then linear decay to final_ratio*peak at the last step."""
    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm = start_ratio + (1 - start_ratio) * step / max(warmup_steps, 1)
        progress = (step - warmup_steps) / max(total_steps - 1 - warmup_steps, 1)
        decay = jnp.where(progress < 0.05, 1.0,
                          final_ratio + (1 - final_ratio) * (1 - progress) / 0.95)
        return peak_lr * jnp.where(step < warmup_steps, warm, jnp.maximum(decay, final_ratio))

    return schedule


def wd_schedule(start: float, end: float, total_steps: int):
    """VAR's weight decay: wd(it) = end + (start - end) * (0.5 + 0.5 cos(pi it / (total_steps - 1))),
    so start at step 0 and end at the last step."""
    def schedule(step):
        progress = jnp.minimum(jnp.asarray(step, jnp.float32) / max(total_steps - 1, 1), 1.0)
        return end + (start - end) * (0.5 + 0.5 * jnp.cos(jnp.pi * progress))

    return schedule


def make_optimizer(optim: OptimSpec, total_steps: int, global_batch: int):
    """optim: base_lr (per 256 images), warmup_steps, final_lr_ratio, beta1, beta2, eps,
    weight_decay, weight_decay_end (twde; < 0: equal to weight_decay, constant), grad_clip.
    As in torch's AdamW, the decay applied at step t is lr(t) * wd(t) * param.
    Returns (optax transformation, lr schedule)."""
    peak = optim.base_lr * global_batch / 256
    schedule = lr_schedule(peak, total_steps, optim.warmup_steps, optim.final_lr_ratio)
    # A constant stays a float, so the optimiser state (and older checkpoints) keep their structure.
    end = optim.weight_decay if optim.weight_decay_end < 0 else optim.weight_decay_end
    weight_decay = (optim.weight_decay if end == optim.weight_decay else
                    wd_schedule(optim.weight_decay, end, total_steps))
    tx = optax.chain(
        optax.clip_by_global_norm(optim.grad_clip),
        optax.adamw(schedule, b1=optim.beta1, b2=optim.beta2, eps=optim.eps,
                    weight_decay=weight_decay, mask=decay_mask),
    )
    return tx, schedule
