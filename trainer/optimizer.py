"""Optimizers and learning-rate schedules from `SolverOptions`, as deeplab2 sets them up.

- Schedule: linear warmup `base * step / warmup_steps` for `step < warmup_steps`, then the poly
  (or cosine) decay evaluated at the *global* step (the decay is not shifted by the warmup).
- `adamw`: decoupled weight decay `w <- w - lr_t * wd * w` applied before the Adam update, with
  `lr_t` the scheduled rate, as Keras 3's `Adam(weight_decay=...)` does. `StepSharedAdam` below
  is that optimizer with its per-step scalars computed once per step instead of once per
  variable (same ops, same numbers; far fewer graph ops to trace).
- Decay applies to conv/dense kernels only. deeplab2 selects them with the regex
  `.*(kernel|weight):0$` on TF1-style names; Keras 3 variable names have no `:0` suffix (the same
  regex would decay nothing), so the rule here matches the short name instead.
- When `backbone_learning_rate_multiplier` is set, the backbone gets a second optimizer of the
  same kind with the learning rate scaled by it.
- `loss_scale=True` (for `mixed_float16`, whose small gradients underflow in float16) wraps each
  optimizer in Keras' `LossScaleOptimizer`; `Optimizers` keeps the two in step (see there).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kmax_tf")
class WarmupThenDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup from 0 to `peak_learning_rate`, then `decay_schedule(step)`."""

  def __init__(self, peak_learning_rate: float, decay_schedule, warmup_steps: int):
    super().__init__()
    self.peak_learning_rate = peak_learning_rate
    self.decay_schedule = decay_schedule
    self.warmup_steps = warmup_steps

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    if self.warmup_steps <= 0:
      return self.decay_schedule(step)
    warmup = self.peak_learning_rate * step / float(self.warmup_steps)
    return tf.where(step < self.warmup_steps, warmup, self.decay_schedule(step))

  def get_config(self):
    return {
        "peak_learning_rate": self.peak_learning_rate,
        "decay_schedule": keras.optimizers.schedules.serialize(self.decay_schedule),
        "warmup_steps": self.warmup_steps,
    }

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["decay_schedule"] = keras.optimizers.schedules.deserialize(config["decay_schedule"])
    return cls(**config)


def build_learning_rate_schedule(solver_options, multiplier: float = 1.0):
  """The schedule of `solver_options` with its base learning rate times `multiplier`."""
  base = solver_options.base_learning_rate * multiplier
  steps = solver_options.training_number_of_steps
  if solver_options.learning_policy == "poly":
    decay = keras.optimizers.schedules.PolynomialDecay(
        base, decay_steps=steps, end_learning_rate=solver_options.poly_end_learning_rate,
        power=solver_options.poly_learning_power)
  elif solver_options.learning_policy == "cosine":
    decay = keras.optimizers.schedules.CosineDecay(base, decay_steps=steps)
  else:
    raise ValueError(f"Unknown learning_policy {solver_options.learning_policy!r}")
  return WarmupThenDecay(base, decay, solver_options.warmup_steps)


def decays_weight(variable) -> bool:
  """Whether AdamW decays `variable`: conv/dense (incl. depthwise) kernels only."""
  return variable.name.endswith(("kernel", "weight"))


@keras.saving.register_keras_serializable(package="kmax_tf")
class StepSharedAdam(keras.optimizers.Adam):
  """Keras 3's Adam (with optional decoupled weight decay), step scalars computed once per step.

  Keras evaluates the learning-rate schedule once per decayed variable (`_apply_weight_decay`
  reads `self.learning_rate`) and the bias correction `lr * sqrt(1 - b2^t) / (1 - b1^t)` once per
  variable (`update_step`). With a few hundred variables that is tens of thousands of graph ops,
  which dominated tracing the train step (micro config: the traced step fell from 40.3k to 32.0k
  graph ops; the optimizer had been ~45 s of a 124 s trace on a loaded 2-core machine). The
  arithmetic per variable is Keras's, in the same order, so the updates are bit-identical.
  TensorFlow backend only (uses `tf.distribute` updates, as Keras's TF optimizer does); under
  MirroredStrategy it matches one device (tests/trainer/test_distribution.py).
  """

  def _apply_weight_decay(self, variables):
    if self.weight_decay is None:
      return
    learning_rate = self.learning_rate  # The schedule, evaluated once for every variable.

    def decay_all(distribution, variables):
      def decay(variable):
        lr = tf.cast(learning_rate, variable.dtype)
        wd = tf.cast(self.weight_decay, variable.dtype)
        variable.assign_sub(variable * wd * lr)

      for variable in variables:
        if self._use_weight_decay(variable):
          variable = variable.value if isinstance(variable, keras.Variable) else variable
          distribution.extended.update(variable, decay, group=False)

    tf.__internal__.distribute.interim.maybe_merge_call(decay_all, self._distribution_strategy,
                                                        variables)

  def _backend_update_step(self, grads, trainable_variables, learning_rate):
    # Hands `update_step` the bias-corrected rate instead of the raw one.
    local_step = tf.cast(self.iterations + 1, tf.float32)
    beta_1_power = tf.pow(tf.cast(self.beta_1, tf.float32), local_step)
    beta_2_power = tf.pow(tf.cast(self.beta_2, tf.float32), local_step)
    alpha = (tf.cast(learning_rate, tf.float32) * tf.sqrt(1 - beta_2_power) /
             (1 - beta_1_power))
    super()._backend_update_step(grads, trainable_variables, alpha)

  def update_step(self, gradient, variable, learning_rate):
    """Adam's moment and weight updates; `learning_rate` is already bias-corrected."""
    if self.amsgrad:
      raise NotImplementedError("StepSharedAdam does not implement amsgrad")
    alpha = tf.cast(learning_rate, variable.dtype)
    gradient = tf.cast(gradient, variable.dtype)
    m = self._momentums[self._get_variable_index(variable)]
    v = self._velocities[self._get_variable_index(variable)]
    self.assign_add(m, (gradient - m) * (1 - self.beta_1))
    self.assign_add(v, (tf.square(gradient) - v) * (1 - self.beta_2))
    self.assign_sub(variable, (m * alpha) / (tf.sqrt(v) + self.epsilon))


def _make_optimizer(solver_options, schedule, variables: Sequence):
  kind = solver_options.optimizer
  if kind == "adamw":
    optimizer = StepSharedAdam(
        learning_rate=schedule, weight_decay=solver_options.adamw_weight_decay,
        beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in variables if not decays_weight(v)])
  elif kind == "adam":
    optimizer = StepSharedAdam(learning_rate=schedule)
  elif kind == "sgd":
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9)
  else:
    raise ValueError(f"Unknown optimizer {kind!r}")
  return optimizer


@dataclasses.dataclass
class Optimizers:
  """The optimizers of one model and the variables each one updates.

  `backbone` is None unless the solver sets `backbone_learning_rate_multiplier`. With
  `loss_scaled`, both are `keras.optimizers.LossScaleOptimizer`s: the loss is multiplied by the
  main one's dynamic scale (`scale_loss`) and each one divides its gradients by its own scale,
  skipping the step and halving the scale when a gradient is not finite. A step is skipped by
  both or neither (a non-finite gradient anywhere poisons all of them), so their scales, which
  start equal, stay equal.
  """
  main: keras.optimizers.Optimizer
  main_variables: list
  backbone: keras.optimizers.Optimizer | None = None
  backbone_variables: list = dataclasses.field(default_factory=list)
  clip_gradient_norm: float | None = None
  loss_scaled: bool = False

  @property
  def learning_rate(self):
    """Current learning rate of the main optimizer."""
    return self.main.learning_rate

  def scale_loss(self, loss):
    """`loss` times the dynamic loss scale (unchanged without loss scaling)."""
    return self.main.scale_loss(loss) if self.loss_scaled else loss

  def apply_gradients(self, gradients_by_variable: dict):
    """Applies `{id(variable): gradient}` (of `scale_loss(loss)`) with the optimizer that owns
    each variable.

    With `clip_gradient_norm`, all gradients are first scaled together to that global norm, as
    deeplab2 clips them before splitting them between its optimizers (a per-optimizer
    `global_clipnorm` would measure two separate norms). Under a distribution strategy this
    clips each replica's gradients before they are summed, as deeplab2 does (and as Keras 3's
    `global_clipnorm` would): with N replicas each clips its own share of the loss
    (`loss / N`), so clipping engages at a different total norm than on one device.
    """
    keys = list(gradients_by_variable)
    gradients = [gradients_by_variable[k] for k in keys]
    if self.clip_gradient_norm:
      # Gradients of the scaled loss are `scale` times the true ones, and so is their norm.
      scale = self.main.dynamic_scale if self.loss_scaled else 1.0
      gradients, _ = tf.clip_by_global_norm(gradients, self.clip_gradient_norm * scale)
    if self.loss_scaled:
      finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients])
      poison = tf.where(finite, 1.0, float("nan"))
      gradients = [g * tf.cast(poison, g.dtype) for g in gradients]
    gradients_by_variable = dict(zip(keys, gradients))
    for optimizer, variables in ((self.main, self.main_variables),
                                 (self.backbone, self.backbone_variables)):
      if optimizer is not None and variables:
        optimizer.apply_gradients(
            [(gradients_by_variable[id(v)], v) for v in variables])

  def checkpoint_items(self) -> dict:
    items = {"optimizer": self.main}
    if self.backbone is not None:
      items["backbone_optimizer"] = self.backbone
    return items


def build_optimizers(solver_options, trainable_variables: Sequence,
                     backbone_variables: Sequence = (), loss_scale: bool = False) -> Optimizers:
  """Builds the main (and, if configured, backbone) optimizer over `trainable_variables`.

  Args:
    solver_options: `SolverOptions`.
    trainable_variables: every trainable variable of the model.
    backbone_variables: the backbone's trainable variables (a subset); they get their own
      optimizer with `backbone_learning_rate_multiplier` when that field is set.
    loss_scale: wrap the optimizers in Keras' dynamic `LossScaleOptimizer` (`mixed_float16`).
  """
  backbone_ids = {id(v) for v in backbone_variables}
  if solver_options.HasField("backbone_learning_rate_multiplier") and backbone_ids:
    main_variables = [v for v in trainable_variables if id(v) not in backbone_ids]
    backbone_list = [v for v in trainable_variables if id(v) in backbone_ids]
    backbone = _make_optimizer(
        solver_options,
        build_learning_rate_schedule(solver_options,
                                     solver_options.backbone_learning_rate_multiplier),
        backbone_list)
  else:
    main_variables, backbone_list, backbone = list(trainable_variables), [], None
  main = _make_optimizer(solver_options, build_learning_rate_schedule(solver_options),
                         main_variables)
  if loss_scale:
    main = keras.optimizers.LossScaleOptimizer(main)
    if backbone is not None:
      backbone = keras.optimizers.LossScaleOptimizer(backbone)
  # Built now, not lazily in the first apply: slot variables created inside the compiled train
  # loop make tf.function trace the whole step twice (once creating them, once without), and
  # under MirroredStrategy their initialisation cannot be lifted out of the loop at all.
  main.build(main_variables)
  if backbone is not None:
    backbone.build(backbone_list)
  clip = solver_options.clip_gradient_norm if solver_options.use_gradient_clipping else None
  return Optimizers(main, main_variables, backbone, backbone_list, clip_gradient_norm=clip,
                    loss_scaled=loss_scale)
