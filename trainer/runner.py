"""Orbit trainer for kMaX-DeepLab: one compiled train step, loss metrics, NaN guard, progress.

The trainer takes its parts (model, loss, optimizers, dataset) ready-made, so the same class runs
under every distribution strategy and in tests with small stand-ins; `trainer/train_lib.py`
assembles the real ones from a config.
"""
from __future__ import annotations

import time
from typing import Callable

import keras
import orbit
import tensorflow as tf
from absl import logging

from kmax_tf.data import reader
from kmax_tf.trainer import optimizer as optimizer_lib
from kmax_tf.trainer import summaries

TOTAL_LOSS = "total_loss"


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or Inf; the last saved checkpoint is left untouched."""


def check_jit_compile(strategy: tf.distribute.Strategy) -> None:
  """Raises ValueError if the train step cannot be XLA-compiled under `strategy`.

  The step is compiled per replica: a `tf.function(jit_compile=True)` nested in `strategy.run`.
  With more than one replica, synchronized batch norm and the gradient all-reduce are
  cross-replica `merge_call`s, which TensorFlow refuses inside a nested function (the run would
  otherwise fail only once the step is traced, with a traceback from batch norm).
  """
  replicas = strategy.num_replicas_in_sync
  if replicas > 1:
    raise ValueError(
        f"--jit_compile: the XLA-compiled train step runs on one device only; this "
        f"{type(strategy).__name__} has {replicas} replicas, whose synchronized batch norm and "
        "gradient all-reduce cannot run inside it. Drop --jit_compile (TPUs compile every step "
        "with XLA anyway).")


class KMaXTrainer(orbit.StandardTrainer):
  """Trains `model` on `loss(inputs, outputs)` with deeplab2's step semantics.

  Per step: forward with `training=True`; every loss term averaged over the batch; the total
  divided by the number of replicas (gradients are summed across replicas); gradients applied by
  the main and, if configured, the backbone optimizer; `global_step` incremented.
  """

  def __init__(self, *, strategy: tf.distribute.Strategy, model: keras.Model,
               loss: Callable, loss_names, optimizers: optimizer_lib.Optimizers,
               train_dataset: Callable, global_step: tf.Variable, total_steps: int,
               input_seed: int = 0, jit_compile: bool = False,
               panoptic_overlay: Callable | None = None):
    """Args:
      strategy: the distribution strategy the model and optimizers were built under.
      model: maps images `[B, H, W, 3]` to the output dict of `KMaXDeepLab`.
      loss: `loss(inputs, outputs) -> {name: [B] tensor}` including `total_loss`.
      loss_names: every key `loss` returns (metrics are created before tracing).
      optimizers: from `optimizer.build_optimizers`.
      train_dataset: `train_dataset(input_context=None, *, seed=None, start=None)` returning a
        `tf.data.Dataset` of batched training dicts (`reader.build_dataset`'s keys, with
        `input_position` and `skipped_records`). On one device it is called with the seed and
        start position kept in `input_state`, once the checkpoint has been restored; with
        several replicas, per input pipeline with an `InputContext`.
      global_step: incremented once per step; checkpoints and summaries key on it.
      total_steps: `training_number_of_steps`, for the ETA.
      input_seed: the input order's seed for a run that starts from scratch.
      jit_compile: compile the step with XLA (one device only, see `check_jit_compile`).
      panoptic_overlay: `overlay(images [1, H, W, 3]) -> uint8 [1, H, W, 3]`; when given, every
        loop that writes summaries also writes the first image of the last batch
        (`images/input`) and the prediction drawn over it (`images/panoptic_prediction`).
    """
    if jit_compile:
      check_jit_compile(strategy)
    self._strategy = strategy
    self._model = model
    self._loss = loss
    self._optimizers = optimizers
    self._global_step = global_step
    self._total_steps = total_steps
    self._step_fn = tf.function(self._forward_backward, jit_compile=True) if jit_compile else (
        self._forward_backward)
    self._loop_start: tuple[float, int] | None = None
    self._panoptic_overlay = panoptic_overlay
    self._dataset_fn = train_dataset
    # One device resumes the input stream where the checkpoint left it; a distributed input
    # pipeline per replica starts afresh (its streams are not tracked).
    self._resumable_input = isinstance(strategy, tf.distribute.OneDeviceStrategy)
    with strategy.scope():
      # The first image of the latest batch (first replica's), for the image summaries.
      self._last_image = tf.Variable(
          tf.zeros([0, 0, 0, 3]), shape=tf.TensorShape([None, None, None, 3]), trainable=False,
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA, name="last_train_image")
      self._loss_metrics = {name: keras.metrics.Mean(name=f"train_{name}")
                            for name in loss_names}
      # [seed, epoch, position, paste epoch, paste position]: the input streams' seed and where
      # they continue (`reader.build_dataset`'s `input_position`).
      self._input_state = tf.Variable(
          [input_seed] + [0] * reader.POSITION_SIZE, dtype=tf.int64, trainable=False,
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA, name="input_state")
      self._skipped_records = tf.Variable(
          0, dtype=tf.int64, trainable=False, aggregation=tf.VariableAggregation.SUM,
          name="skipped_records")
      dataset = None
      if not self._resumable_input:
        dataset = orbit.utils.make_distributed_dataset(strategy, train_dataset)
    super().__init__(dataset, options=orbit.StandardTrainerOptions(
        use_tf_while_loop=False, use_tf_function=True))

  @property
  def checkpoint_items(self) -> dict:
    """The trainer's own state to checkpoint besides model and optimizers.

    `input_state`: the input stream's seed and position (a few bytes, not the pipeline's
    buffers); `skipped_records`: bad records dropped so far (`--skip_bad_records`).
    """
    return {"input_state": self._input_state, "skipped_records": self._skipped_records}

  def train(self, num_steps):
    if self._resumable_input and self.train_dataset is None:
      # Built here rather than in __init__: only now has the checkpoint been restored.
      seed, *start = (int(value) for value in self._input_state.numpy())
      with self._strategy.scope():
        self.train_dataset = self._dataset_fn(seed=seed, start=start)
    return super().train(num_steps)

  @property
  def model(self) -> keras.Model:
    return self._model

  @property
  def optimizers(self) -> optimizer_lib.Optimizers:
    return self._optimizers

  def train_loop_begin(self):
    for metric in self._loss_metrics.values():
      metric.reset_state()
    self._loop_start = (time.time(), int(self._global_step.numpy()))

  def _forward_backward(self, inputs):
    variables = self._model.trainable_variables
    with tf.GradientTape() as tape:
      outputs = self._model(inputs["image"], training=True)
      losses = {name: tf.reduce_mean(value) for name, value in self._loss(inputs, outputs).items()}
      scaled = self._optimizers.scale_loss(
          losses[TOTAL_LOSS] / self._strategy.num_replicas_in_sync)
    gradients = tape.gradient(scaled, variables)
    self._optimizers.apply_gradients(
        {id(v): g for v, g in zip(variables, gradients) if g is not None})
    for name, value in losses.items():
      self._loss_metrics[name].update_state(value)

  def train_step(self, iterator):
    def step(inputs):
      inputs = dict(inputs)
      position = inputs.pop("input_position")
      self._skipped_records.assign_add(tf.reduce_sum(inputs.pop("skipped_records")))
      self._step_fn(inputs)
      if self._panoptic_overlay is not None:
        # Outside the (possibly XLA-compiled) step: the variable's shape is dynamic.
        self._last_image.assign(inputs["image"][:1])
      if self._resumable_input:
        # The batch's last sample is the latest of each stream.
        self._input_state.assign(tf.concat([self._input_state[:1], position[-1]], 0))
      self._global_step.assign_add(1)

    self._strategy.run(step, args=(next(iterator),))

  def train_loop_end(self):
    logs = {f"losses/{metric.name}": metric.result() for metric in self._loss_metrics.values()}
    total = float(self._loss_metrics[TOTAL_LOSS].result())
    step = int(self._global_step.numpy())
    if not tf.math.is_finite(total):
      raise NonFiniteLossError(
          f"Training loss became {total} by step {step}; stopping. The latest checkpoint saved "
          "before this loop is intact: lower the learning rate or check the data, then restart "
          "to resume from it.")
    logs["learning_rate"] = self._optimizers.main.learning_rate
    skipped = int(self._skipped_records.numpy())
    logs["input/skipped_bad_records"] = skipped
    if self._panoptic_overlay is not None and bool(tf.summary.should_record_summaries()):
      image = self._last_image.read_value()
      summaries.write_images("images/input", image, step)
      summaries.write_images("images/panoptic_prediction", self._panoptic_overlay(image), step)
    if self._loop_start is not None:
      start_time, start_step = self._loop_start
      elapsed = max(time.time() - start_time, 1e-9)
      steps_per_second = (step - start_step) / elapsed
      remaining = max(self._total_steps - step, 0)
      eta = remaining / steps_per_second if steps_per_second > 0 else float("inf")
      logs["steps_per_second"] = steps_per_second
      logging.info("step %d/%d | %.2f steps/s | ETA %s | total_loss %.4f%s", step,
                   self._total_steps, steps_per_second, _format_duration(eta), total,
                   f" | skipped {skipped} bad records" if skipped else "")
    return logs


def _format_duration(seconds: float) -> str:
  if seconds == float("inf"):
    return "?"
  seconds = int(seconds)
  return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
