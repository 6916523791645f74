"""The training loop shared by the tokenizer and the transformer.

Builds the mesh, the sharded train state (created directly sharded, or restored from the latest
checkpoint in the run's directory together with the data iterator's position), compiles the step
ahead of time and logs its memory analysis, then steps, logs (clu writers: TensorBoard + console),
checkpoints, and stops with a clear message on a non-finite loss without saving that state.
Every log step prints one progress line (steps/s, ETA and the scalar metrics); all metrics,
per-scale ones included, go to TensorBoard and clu's logging writer.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from srdd_jax import checkpoints, parallel
from srdd_jax.progress import Progress
from srdd_jax.training import steps


class NonFiniteLossError(FloatingPointError):
    pass


def global_batch(local: dict, mesh) -> dict:
    """Host-local numpy batch -> global arrays sharded over the mesh's batch axes."""
    return {name: jax.make_array_from_process_local_data(parallel.batch_sharding(mesh, x.ndim), x)
            for name, x in local.items()}


def flat_metrics(metrics: dict) -> dict:
    """Scalars as they are, per-scale vectors as name/s{index}."""
    flat = {}
    for name, value in metrics.items():
        value = np.asarray(value)
        if value.ndim == 0:
            flat[name] = float(value)
        else:
            flat.update({f"{name}/s{i}": float(v) for i, v in enumerate(value)})
    return flat


def _summary(values: dict) -> str:
    """`loss 3.21, accuracy 0.123, ...`: the scalar metrics, without the per-scale ones."""
    return ", ".join(f"{name} {value:.4g}" for name, value in sorted(values.items(), key=_loss_first)
                     if "/" not in name)


def _loss_first(item):
    return item[0] != "loss", item[0]


def train(name: str, run_cfg: ml_collections.ConfigDict, workdir: str, mesh, iterator,
          boxed_init, tx, step_fn, seed: int, frozen=(), frozen_shardings=(), writer=None,
          on_checkpoint=None):
    """Runs `step_fn(state, *frozen, batch, rng) -> (state, metrics)` for run_cfg.steps steps.

    Args:
      name: the run's sub-directory of workdir ('tokenizer' or 'transformer').
      run_cfg: steps, log_every, checkpoint_every, keep_checkpoints, profile_steps (0: no
        profile; else one trace of that many steps in workdir/logs/name/plugins/profile).
      iterator: a BatchIterator or any iterator with its interface (batch_spec, get/set_state).
      boxed_init: rng -> boxed params (logical partitioning metadata gives the shardings).
      frozen: extra arguments passed unchanged to every step (e.g. frozen tokenizer params).
      on_checkpoint: optional callback(step, params) after each saved checkpoint (sample grids).
    Returns:
      The final params.
    """
    init_rng, step_rng = jax.random.split(jax.random.key(seed))
    abstract_boxed = jax.eval_shape(lambda r: steps.init_state(boxed_init, tx, r), init_rng)
    state_shardings = parallel.param_shardings(abstract_boxed, mesh)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            nn.unbox(abstract_boxed), state_shardings)
    manager = checkpoints.train_manager(os.path.join(workdir, name), run_cfg.keep_checkpoints,
                                        run_cfg.checkpoint_every)
    restored = checkpoints.restore_train(manager, abstract)
    if restored is None:
        state = jax.jit(steps.unboxed_init(boxed_init, tx), out_shardings=state_shardings)(init_rng)
        start = 0
    else:
        start, state, data_state = restored
        iterator.set_state(data_state)
        logging.info("%s: resumed from step %d (data position %s)", name, start, data_state)
    spec = iterator.batch_spec()
    abstract_batch = {key: jax.ShapeDtypeStruct(shape, dtype) for key, (shape, dtype) in spec.items()}
    shard_batch = {key: parallel.batch_sharding(mesh, len(shape)) for key, (shape, _) in spec.items()}
    replicated = parallel.replicated(mesh)
    frozen = jax.device_put(tuple(frozen), tuple(frozen_shardings))
    jitted = jax.jit(step_fn, in_shardings=(state_shardings, *frozen_shardings, shard_batch,
                                            replicated),
                     out_shardings=(state_shardings, replicated), donate_argnums=(0,))
    compiled = jitted.lower(abstract, *frozen, abstract_batch, step_rng).compile()
    memory = compiled.memory_analysis()
    if memory is not None:
        logging.info("%s step memory: arguments %.1f MiB, temporaries %.1f MiB, outputs %.1f MiB",
                     name, memory.argument_size_in_bytes / 2**20, memory.temp_size_in_bytes / 2**20,
                     memory.output_size_in_bytes / 2**20)
    writer = writer or metric_writers.create_default_writer(
        os.path.join(workdir, "logs", name), just_logging=jax.process_index() > 0)
    actions = [periodic_actions.ReportProgress(num_train_steps=run_cfg.steps, writer=writer,
                                               every_steps=run_cfg.log_every)]
    if run_cfg.profile_steps and start + 1 + run_cfg.profile_steps <= run_cfg.steps:
        # One trace of profile_steps steps, from the first step after compilation.
        actions.append(periodic_actions.Profile(
            logdir=os.path.join(workdir, "logs", name), num_profile_steps=run_cfg.profile_steps,
            profile_duration_ms=None, first_profile=start + 1, every_secs=None))
    progress = Progress(name, run_cfg.steps, "steps", start=start, step_prefix=True)
    for step in range(start, run_cfg.steps):
        batch = global_batch(next(iterator), mesh)
        state, metrics = compiled(state, *frozen, batch, step_rng)
        done = step + 1
        for action in actions:
            action(done)
        saving = done % run_cfg.checkpoint_every == 0 or done == run_cfg.steps
        if done % run_cfg.log_every == 0 or saving:
            values = flat_metrics(jax.device_get(metrics))
            if not np.isfinite(values["loss"]):
                manager.wait_until_finished()
                raise NonFiniteLossError(
                    f"{name}: loss is {values['loss']} at step {done}; stopping. The last good "
                    f"checkpoint (step {manager.latest_step()}) is kept in {manager.directory}. "
                    "Lower the learning rate or enable gradient clipping.")
            writer.write_scalars(done, values)
            progress.update(done, _summary(values), force=True)
        if saving:
            checkpoints.save_train(manager, done, state, iterator.get_state(), force=True)
            logging.info("%s: checkpoint of step %d in %s", name, done, manager.directory)
            if on_checkpoint is not None:
                on_checkpoint(done, state.params)
    manager.wait_until_finished()
    writer.flush()
    return state.params
