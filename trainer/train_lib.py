"""Assembles model, loss, data, optimizers, checkpoints and Orbit from an `ExperimentOptions`."""
from __future__ import annotations

import dataclasses
import os

import keras
import orbit
import tensorflow as tf

from kmax_tf import weight_io
from kmax_tf.trainer import checkpoints
from kmax_tf.trainer import distribution
from kmax_tf.trainer import optimizer as optimizer_lib
from kmax_tf.trainer import runner
from kmax_tf.trainer import summaries

MODES = ("train", "eval", "train_and_eval", "continuous_eval")


@dataclasses.dataclass
class RunOptions:
  """Runtime choices that are not part of the experiment config."""
  seed: int | None = None
  deterministic: bool = False
  jit_compile: bool = False
  mixed_precision: str | None = None  # None, "mixed_bfloat16" or "mixed_float16".
  devices: tuple[str, ...] | None = None  # Explicit MirroredStrategy devices (tests).
  max_steps: int | None = None  # Stop earlier than training_number_of_steps (tests, demo).
  skip_bad_records: bool = False  # Drop unreadable/invalid training records, counting them.


class ModelDirError(ValueError):
  """`model_dir` cannot be created or written; raised before any model is built."""


def check_writable(directory: str) -> None:
  """Creates `directory` and writes and deletes a file in it; ModelDirError if that fails."""
  probe = os.path.join(directory, f".kmax_write_check_{os.getpid()}")
  try:
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(probe, "w") as f:
      f.write("")
    tf.io.gfile.remove(probe)
  except (tf.errors.OpError, OSError) as error:
    reason = error.message if isinstance(error, tf.errors.OpError) else str(error)
    raise ModelDirError(f"--model_dir: cannot write to {directory}: {reason}") from error


def experiment_dir(model_dir: str, options) -> str:
  """deeplab2 writes under `model_dir/<experiment_name>` when the name is set."""
  return os.path.join(model_dir, options.experiment_name) if options.experiment_name else model_dir


def run_experiment(mode: str, options, model_dir: str, master: str | None = None,
                   num_gpus: int = 0, run_options: RunOptions | None = None):
  """Runs `mode` for the experiment; returns the last train or eval logs dict.

  The checkpoint (global step, model, optimizers) lives in `experiment_dir(model_dir)`; a
  restarted run resumes from the newest readable checkpoint there. Every mode writes there
  (checkpoints, summaries, evaluation results), so an unwritable directory raises ModelDirError
  before anything is built.
  """
  # Imported here so that `kmax_tf.trainer` stays importable without building models.
  from kmax_tf import datasets  # pylint: disable=import-outside-toplevel
  from kmax_tf.data import reader  # pylint: disable=import-outside-toplevel
  from kmax_tf.losses import kmax_loss  # pylint: disable=import-outside-toplevel
  from kmax_tf.model import builder  # pylint: disable=import-outside-toplevel

  if mode not in MODES:
    raise ValueError(f"--mode must be one of {', '.join(MODES)}; got {mode!r}")
  run_options = run_options or RunOptions()
  if run_options.deterministic:
    tf.config.experimental.enable_op_determinism()
  if run_options.seed is not None:
    keras.utils.set_random_seed(run_options.seed)
  if run_options.mixed_precision:
    keras.mixed_precision.set_global_policy(run_options.mixed_precision)

  model_dir = experiment_dir(model_dir, options)
  check_writable(model_dir)
  strategy = distribution.create_strategy(master, num_gpus, run_options.devices)
  if run_options.jit_compile and mode in ("train", "train_and_eval"):
    runner.check_jit_compile(strategy)  # Before minutes of model building and tracing.
  trainer_options = options.trainer_options
  solver = trainer_options.solver_options
  total_steps = solver.training_number_of_steps
  if run_options.max_steps is not None:
    total_steps = min(total_steps, run_options.max_steps)

  with strategy.scope():
    model = builder.build_model(options)
    global_step = orbit.utils.create_global_step()
    trainer = evaluator = None
    checkpoint_items = {"global_step": global_step,
                        "model": weight_io.ModelVariables(model)}
    if mode in ("train", "train_and_eval"):
      loss = kmax_loss.build_loss(options, training=True, seed=run_options.seed)
      optimizers = optimizer_lib.build_optimizers(
          solver, model.trainable_variables, model.encoder.trainable_variables,
          loss_scale=run_options.mixed_precision == "mixed_float16")
      checkpoint_items.update(optimizers.checkpoint_items())

      def dataset_fn(input_context=None, *, seed=run_options.seed, start=None):
        return reader.build_dataset(
            options.train_dataset_options, is_training=True,
            deterministic=run_options.deterministic, seed=seed, input_context=input_context,
            skip_bad_records=run_options.skip_bad_records, start=start)

      # Kept in the checkpoint, so that a restart continues this run's input order.
      input_seed = reader.resolve_seed(run_options.seed, run_options.deterministic,
                                       is_training=True)
      trainer = runner.KMaXTrainer(
          strategy=strategy, model=model, loss=loss, loss_names=loss.loss_names,
          optimizers=optimizers, train_dataset=dataset_fn, global_step=global_step,
          total_steps=total_steps, input_seed=input_seed, jit_compile=run_options.jit_compile,
          panoptic_overlay=summaries.PanopticOverlay(
              model, datasets.get_dataset(options.train_dataset_options.dataset),
              options.evaluator_options))
      checkpoint_items.update(trainer.checkpoint_items)
      checkpoint_items["loss_sampler_state"] = loss.seed_generator.state
    if mode != "train":
      from kmax_tf.evaluation import evaluator as evaluator_lib  # pylint: disable=import-outside-toplevel
      evaluator = evaluator_lib.build_orbit_evaluator(options, model, strategy, model_dir,
                                                     global_step=global_step)

    # A new run (no checkpoint in model_dir yet) starts from backbone.pretrained_weights and
    # then initial_checkpoint (deeplab2 or kmax-tf format, detected), as deeplab2 does.
    init_fn = lambda: checkpoints.initialize_from_options(model, options.model_options)
    # Under MultiWorkerMirroredStrategy every worker takes part in saving, but only the chief
    # writes to model_dir and summaries; the others keep their (identical) copy apart.
    checkpoint_dir = model_dir
    if not strategy.extended.should_checkpoint:
      checkpoint_dir = os.path.join(model_dir, "workers",
                                    f"worker_{strategy.cluster_resolver.task_id}")
    summaries_on = strategy.extended.should_save_summary
    manager = checkpoints.ResilientCheckpointManager(
        tf.train.Checkpoint(**checkpoint_items), directory=checkpoint_dir,
        max_to_keep=trainer_options.num_checkpoints_to_keep, step_counter=global_step,
        checkpoint_interval=trainer_options.save_checkpoints_steps, init_fn=init_fn)
    if trainer is not None:
      manager.remove_unfinished_saves()
    controller = orbit.Controller(
        strategy=strategy, trainer=trainer, evaluator=evaluator, global_step=global_step,
        steps_per_loop=trainer_options.steps_per_loop, checkpoint_manager=manager,
        summary_interval=trainer_options.save_summaries_steps if summaries_on else None,
        summary_dir=os.path.join(model_dir, "train") if summaries_on else None,
        eval_summary_dir=os.path.join(model_dir, "eval") if summaries_on else None)

  evaluator_options = options.evaluator_options
  eval_steps = evaluator_options.eval_steps
  if mode == "train":
    if int(global_step.numpy()) == 0:
      controller.save_checkpoint()
    controller.train(steps=total_steps)
    return None
  if mode == "train_and_eval":
    return controller.train_and_evaluate(
        train_steps=total_steps, eval_steps=eval_steps,
        eval_interval=evaluator_options.eval_interval)
  if mode == "eval":
    return controller.evaluate(steps=eval_steps)
  timeout = evaluator_options.continuous_eval_timeout
  return controller.evaluate_continuously(
      steps=eval_steps, timeout=None if timeout < 0 else timeout)
