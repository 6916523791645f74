"""The training loop shared by the tokenizer and the transformer.

Builds the mesh, the sharded train state (created directly sharded, or restored from the newest
checkpoint of the run that verifies, together with the data iterator's position: see
`run_checkpoints`), compiles the step ahead of time and logs its memory analysis, then steps, logs
(clu writers: TensorBoard + console) and checkpoints. A non-finite loss, or non-finite parameters
about to be saved, stop the run with a message that names the checkpoint a rerun would resume
from, whether it verifies, and advice that depends on what is known (`diagnosis`).
A stop requested by SIGTERM/SIGINT (`preemption`; all processes agree on the step) saves a
checkpoint of the step reached, with the data position, and raises errors.PreemptedError. A save
that fails for lack of space raises errors.NoSpaceError naming the path, the free space, the size
needed and the checkpoint a rerun resumes from.
Every log step prints one progress line (steps/s, ETA and the scalar metrics); all metrics,
per-scale ones included, go to TensorBoard and clu's logging writer.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from srdd_jax import errors, fingerprints, parallel, preemption
from srdd_jax.progress import Progress
from srdd_jax.training import diagnosis, run_checkpoints, steps
from srdd_jax.training.spec import TrainSpec


class NonFiniteLossError(errors.KnownError, FloatingPointError):
    pass


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What the loop knows about a run besides its steps.

    config_section: where the run's settings live in the experiment config ('training', ...).
    model_config: the config that decides the run's state, as {'model': {...}}; recorded with
      every checkpoint, and a run directory made by another one is refused.
    restart_hint: appended to that refusal: another way out (', or ...').
    check_batch: a host batch -> the ways it disagrees with the model (see diagnosis).
    """

    config_section: str
    model_config: dict
    restart_hint: str = ""
    check_batch: Callable[[dict], list[str]] = diagnosis.batch_problems


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


def train(name: str, run: TrainSpec, workdir: str, mesh, iterator,
          boxed_init, tx, step_fn, seed: int, context: RunContext, frozen=(), frozen_shardings=(),
          writer=None, on_checkpoint=None):
    """Runs `step_fn(state, *frozen, batch, rng) -> (state, metrics)` for run.steps steps.

    Args:
      name: the run's sub-directory of workdir ('tokenizer' or 'transformer').
      run: steps, log_every, checkpoint_every, keep_checkpoints, profile_steps (0: no
        profile; else one trace of that many steps in workdir/logs/name/plugins/profile),
        preemption_save_seconds (how long a stop requested by a signal waits for its checkpoint).
      iterator: a `data.pipeline.Batches` or any iterator with its interface (batch_spec, get/set_state).
      boxed_init: rng -> boxed params (logical partitioning metadata gives the shardings).
      frozen: extra arguments passed unchanged to every step (e.g. frozen tokenizer params).
      context: the run's config section, model config and batch check (see RunContext).
      on_checkpoint: optional callback(step, params) after each saved checkpoint (sample grids);
        every process calls it.
    Returns:
      The final params.
    """
    started = time.perf_counter()
    init_rng, step_rng = jax.random.split(jax.random.key(seed))
    abstract_boxed = jax.eval_shape(lambda r: steps.init_state(boxed_init, tx, r), init_rng)
    state_shardings = parallel.param_shardings(abstract_boxed, mesh)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            nn.unbox(abstract_boxed), state_shardings)
    with run_checkpoints.open_manager(os.path.join(workdir, name), run.keep_checkpoints,
                                      run.checkpoint_every) as manager:
        restored = run_checkpoints.restore(manager, abstract, context.model_config,
                                           context.restart_hint)
        if restored is None:
            state = jax.jit(steps.unboxed_init(boxed_init, tx),
                            out_shardings=state_shardings)(init_rng)
            start = 0
        else:
            start, state = restored.step, restored.state
            iterator.set_state(restored.data_state)
            logging.info("%s: resumed from step %d (data position %s)", name, start,
                         restored.data_state)
        if start >= run.steps:
            logging.info("%s: already trained for %d steps", name, run.steps)
            return state.params
        jax.block_until_ready(state)
        init_seconds = time.perf_counter() - started
        frozen = jax.device_put(tuple(frozen), tuple(frozen_shardings))
        compiling = time.perf_counter()
        compiled = _compile(name, step_fn, mesh, iterator.batch_spec(), abstract, state_shardings,
                            frozen, frozen_shardings, step_rng)
        compile_seconds = time.perf_counter() - compiling
        writer = writer or metric_writers.create_default_writer(
            os.path.join(workdir, "logs", name), just_logging=jax.process_index() > 0)
        actions = [periodic_actions.ReportProgress(num_train_steps=run.steps, writer=writer,
                                                   every_steps=run.log_every)]
        if run.profile_steps and start + 1 + run.profile_steps <= run.steps:
            # One trace of profile_steps steps, from the first step after compilation.
            actions.append(periodic_actions.Profile(
                logdir=os.path.join(workdir, "logs", name), num_profile_steps=run.profile_steps,
                profile_duration_ms=None, first_profile=start + 1, every_secs=None))
        last_finite = None  # the last step whose loss was logged finite
        progress = Progress(name, run.steps, "steps", start=start, step_prefix=True)

        def stop(what: str, done: int, local_batch: dict) -> NonFiniteLossError:
            return _non_finite_error(name, what, done, manager, abstract, context, run,
                                     local_batch, last_finite, start)

        for step in range(start, run.steps):
            local_batch = next(iterator)
            state, metrics = compiled(state, *frozen, global_batch(local_batch, mesh), step_rng)
            done = step + 1
            if step == start:
                jax.block_until_ready(metrics)
                logging.info("%s: first step done %.1f s after start (%s %.1f s, compile %.1f s)",
                             name, time.perf_counter() - started,
                             "init" if restored is None else "restore", init_seconds,
                             compile_seconds)
            for action in actions:
                action(done)
            saving = done % run.checkpoint_every == 0 or done == run.steps
            if done % run.log_every == 0 or saving:
                values = flat_metrics(jax.device_get(metrics))
                if not np.isfinite(values["loss"]):
                    raise stop(f"loss is {values['loss']}", done, local_batch)
                last_finite = done
                writer.write_scalars(done, values)
                progress.update(done, _summary(values), force=True)
            signal_name = preemption.stop_agreed()
            if saving or signal_name:
                fingerprint = fingerprints.tree_fingerprint(state)
                bad = fingerprints.nonfinite_arrays(fingerprint)
                if bad:
                    raise stop(f"the parameters became non-finite ({fingerprints.summary(bad)})",
                               done, local_batch)
                with run_checkpoints.reporting_no_space(manager, done, state):
                    run_checkpoints.save(manager, done, state, iterator.get_state(),
                                         context.model_config, fingerprint)
                logging.info("%s: checkpoint of step %d in %s", name, done, manager.directory)
                if signal_name:
                    raise _preempted(name, signal_name, done, manager, state,
                                     run.preemption_save_seconds, context.config_section)
                if on_checkpoint is not None:
                    on_checkpoint(done, state.params)
        with run_checkpoints.reporting_no_space(manager, run.steps, state):
            manager.wait_until_finished()
    writer.flush()
    return state.params


def _preempted(name, signal_name, done, manager, state, seconds, section
               ) -> errors.PreemptedError:
    """Waits up to `seconds` for the checkpoint of step `done` to be written, then the error that
    ends the run: where it stopped and where a rerun resumes."""
    with run_checkpoints.reporting_no_space(manager, done, state):
        finished = run_checkpoints.wait_for_saves(manager, seconds)
    if finished:
        where = f"checkpoint {done} is saved in {manager.directory}; rerun the same command to resume"
        return errors.PreemptedError(f"{name}: stopped by {signal_name} after step {done}: {where}.")
    newest = run_checkpoints.complete_steps(manager, exclude=done)
    where = (f"its checkpoint did not finish within {seconds:g} s (config.{section}."
             f"preemption_save_seconds); a rerun resumes from "
             f"{f'checkpoint {newest[-1]}' if newest else 'step 0'} in {manager.directory}")
    return errors.PreemptedError(f"{name}: stopped by {signal_name} after step {done}: {where}.",
                                 pending_writes=True)


def _compile(name, step_fn, mesh, batch_spec, abstract, state_shardings, frozen, frozen_shardings,
             step_rng):
    """The step compiled ahead of time for the state, frozen arguments and batch shardings; logs
    its memory analysis."""
    abstract_batch = {key: jax.ShapeDtypeStruct(shape, dtype)
                      for key, (shape, dtype) in batch_spec.items()}
    shard_batch = {key: parallel.batch_sharding(mesh, len(shape))
                   for key, (shape, _) in batch_spec.items()}
    replicated = parallel.replicated(mesh)
    jitted = jax.jit(step_fn, in_shardings=(state_shardings, *frozen_shardings, shard_batch,
                                            replicated),
                     out_shardings=(state_shardings, replicated), donate_argnums=(0,))
    compiled = jitted.lower(abstract, *frozen, abstract_batch, step_rng).compile()
    memory = compiled.memory_analysis()
    if memory is not None:
        logging.info("%s step memory: arguments %.1f MiB, temporaries %.1f MiB, outputs %.1f MiB",
                     name, memory.argument_size_in_bytes / 2**20, memory.temp_size_in_bytes / 2**20,
                     memory.output_size_in_bytes / 2**20)
    return compiled


def _non_finite_error(name, what, done, manager, abstract, context, run, local_batch,
                      last_finite, start) -> NonFiniteLossError:
    """The error for a non-finite loss or state at step `done`: which checkpoint a rerun resumes
    from, whether it verifies (it is read back and checked), and advice from diagnosis."""
    manager.wait_until_finished()
    latest = manager.latest_step()
    if latest is None:
        resume = "There is no checkpoint yet: a rerun starts from step 0."
    else:
        try:
            run_checkpoints.load_verified(manager, latest, abstract)
            status = "it verifies (read back, its arrays match the checksums recorded at save)"
        except errors.DamagedCheckpointError as error:
            status = (f"it does NOT verify ({error}); a rerun moves it aside and falls back to "
                      "an older one")
        resume = f"A rerun resumes from checkpoint {latest} in {manager.directory}: {status}."
    advice = diagnosis.advice(context.config_section, run.optim,
                              context.check_batch(local_batch), last_finite, start)
    return NonFiniteLossError(f"{name}: {what} at step {done}; stopped without saving this "
                              f"state. {resume} {advice}")
