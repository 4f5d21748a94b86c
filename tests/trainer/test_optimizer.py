"""Tests for kmax_tf.trainer.optimizer against hand-written numpy versions of deeplab2's rules."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from kmax_tf.protos import trainer_pb2
from kmax_tf.trainer import optimizer as optimizer_lib


def _solver(**fields):
  solver = trainer_pb2.SolverOptions(base_learning_rate=5e-4, training_number_of_steps=1000,
                                     warmup_steps=100, optimizer="adamw",
                                     adamw_weight_decay=0.05)
  for name, value in fields.items():
    setattr(solver, name, value)
  return solver


def _expected_learning_rate(step, base=5e-4, warmup=100, total=1000, power=0.9):
  if step < warmup:
    return base * step / warmup
  return base * (1 - min(step, total) / total) ** power  # Poly at the global step.


@pytest.mark.parametrize("step", [0, 1, 50, 99, 100, 101, 500, 999, 1000, 1500])
def test_warmup_then_poly_schedule(step):
  schedule = optimizer_lib.build_learning_rate_schedule(_solver())
  assert float(schedule(step)) == pytest.approx(_expected_learning_rate(step), rel=1e-4, abs=1e-12)


def test_multiplier_scales_the_whole_schedule():
  schedule = optimizer_lib.build_learning_rate_schedule(_solver(), multiplier=0.1)
  assert float(schedule(50)) == pytest.approx(0.1 * _expected_learning_rate(50), rel=1e-5)
  assert float(schedule(600)) == pytest.approx(0.1 * _expected_learning_rate(600), rel=1e-5)


def test_schedule_serialization_round_trip():
  schedule = optimizer_lib.build_learning_rate_schedule(_solver())
  restored = optimizer_lib.WarmupThenDecay.from_config(schedule.get_config())
  assert float(restored(300)) == pytest.approx(float(schedule(300)))


def _toy_model():
  inputs = keras.Input((4, 4, 3))
  x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
  x = keras.layers.BatchNormalization(name="bn")(x)
  x = keras.layers.DepthwiseConv2D(1, name="dw")(x)
  return keras.Model(inputs, keras.layers.Dense(2, name="dense")(x))


def test_only_kernels_are_decayed():
  model = _toy_model()
  decayed = sorted(v.path for v in model.trainable_variables if optimizer_lib.decays_weight(v))
  assert decayed == ["conv/kernel", "dense/kernel", "dw/kernel"]


def test_adamw_step_matches_deeplab2_formula():
  """One AdamW step: w <- w - lr*wd*w on kernels only, then the Adam update on everything."""
  model = _toy_model()
  solver = _solver(warmup_steps=0)
  optimizers = optimizer_lib.build_optimizers(solver, model.trainable_variables)
  before = {v.path: v.numpy().copy() for v in model.trainable_variables}
  rng = np.random.default_rng(0)
  gradients = {id(v): rng.normal(size=v.shape).astype(np.float32)
               for v in model.trainable_variables}
  optimizers.apply_gradients(gradients)
  lr = 5e-4  # Poly at step 0.
  for variable in model.trainable_variables:
    w, g = before[variable.path], gradients[id(variable)]
    if optimizer_lib.decays_weight(variable):
      w = w - lr * 0.05 * w
    # Adam's first step as TF/Keras (and deeplab2's legacy Adam) compute it: epsilon is added to
    # sqrt(v) before bias correction, i.e. w -= lr * g / (|g| + eps / sqrt(1 - beta_2)).
    expected = w - lr * g / (np.abs(g) + 1e-7 / np.sqrt(1 - 0.999))
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-7,
                               err_msg=variable.path)


def test_backbone_gets_its_own_optimizer_with_scaled_rate():
  model = _toy_model()
  backbone_variables = model.get_layer("conv").trainable_variables
  solver = _solver(backbone_learning_rate_multiplier=0.1)
  optimizers = optimizer_lib.build_optimizers(solver, model.trainable_variables,
                                              backbone_variables)
  assert {id(v) for v in optimizers.backbone_variables} == {id(v) for v in backbone_variables}
  assert not {id(v) for v in optimizers.main_variables} & {id(v) for v in backbone_variables}
  assert set(optimizers.checkpoint_items()) == {"optimizer", "backbone_optimizer"}
  schedule_ratio = (optimizers.backbone._learning_rate(50) /  # pylint: disable=protected-access
                    optimizers.main._learning_rate(50))  # pylint: disable=protected-access
  assert float(schedule_ratio) == pytest.approx(0.1)
  # Without the field, one optimizer updates everything.
  single = optimizer_lib.build_optimizers(_solver(), model.trainable_variables, backbone_variables)
  assert single.backbone is None and len(single.main_variables) == len(model.trainable_variables)


@pytest.mark.parametrize("weight_decay", [None, 0.05])
def test_step_shared_adam_equals_keras_adam(weight_decay):
  """Three scheduled steps in a tf.function: the same weights as Keras's own optimizer."""
  schedule = optimizer_lib.build_learning_rate_schedule(_solver(warmup_steps=2))
  models = [_toy_model(), _toy_model()]
  models[1].set_weights(models[0].get_weights())
  ours = optimizer_lib.StepSharedAdam(learning_rate=schedule, weight_decay=weight_decay)
  keras_adam = keras.optimizers.Adam(learning_rate=schedule, weight_decay=weight_decay)
  for optimizer, model in ((ours, models[0]), (keras_adam, models[1])):
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if not optimizer_lib.decays_weight(v)])
  steps = []
  for optimizer, model in ((ours, models[0]), (keras_adam, models[1])):
    optimizer.build(model.trainable_variables)
    steps.append(tf.function(
        lambda grads, o=optimizer, m=model: o.apply(grads, m.trainable_variables)))
  rng = np.random.default_rng(1)
  for _ in range(3):
    gradients = [tf.constant(rng.normal(size=v.shape).astype(np.float32))
                 for v in models[0].trainable_variables]
    for step in steps:
      step(gradients)
  for mine, reference in zip(models[0].trainable_variables, models[1].trainable_variables):
    np.testing.assert_array_equal(mine.numpy(), reference.numpy(), err_msg=mine.path)
  assert int(ours.iterations.numpy()) == 3


def test_gradient_clipping_uses_one_norm_over_both_optimizers():
  """SGD's first step is w - lr * g: with clipping, g scaled by clip / ||all gradients||."""
  model = _toy_model()
  backbone_variables = model.get_layer("conv").trainable_variables
  solver = _solver(optimizer="sgd", warmup_steps=0, backbone_learning_rate_multiplier=1.0,
                   use_gradient_clipping=True, clip_gradient_norm=0.5)
  optimizers = optimizer_lib.build_optimizers(solver, model.trainable_variables,
                                              backbone_variables)
  before = {v.path: v.numpy().copy() for v in model.trainable_variables}
  rng = np.random.default_rng(2)
  gradients = {id(v): rng.normal(size=v.shape).astype(np.float32)
               for v in model.trainable_variables}
  global_norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in gradients.values()))
  assert global_norm > 0.5
  optimizers.apply_gradients(gradients)
  for variable in model.trainable_variables:
    expected = before[variable.path] - 5e-4 * gradients[id(variable)] * 0.5 / global_norm
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-8,
                               err_msg=variable.path)


def test_loss_scaled_optimizers_skip_together_and_clip_true_gradients():
  """A non-finite gradient in one optimizer's share skips the step of both (their scales stay
  equal); clipping measures the unscaled gradients."""
  model = _toy_model()
  backbone_variables = model.get_layer("conv").trainable_variables
  solver = _solver(optimizer="sgd", warmup_steps=0, backbone_learning_rate_multiplier=1.0,
                   use_gradient_clipping=True, clip_gradient_norm=0.5)
  optimizers = optimizer_lib.build_optimizers(solver, model.trainable_variables,
                                              backbone_variables, loss_scale=True)
  assert isinstance(optimizers.backbone, keras.optimizers.LossScaleOptimizer)
  scale = float(optimizers.main.dynamic_scale.numpy())
  assert float(optimizers.scale_loss(tf.constant(2.0))) == 2.0 * scale
  before = {v.path: v.numpy().copy() for v in model.trainable_variables}
  rng = np.random.default_rng(2)
  gradients = {id(v): rng.normal(size=v.shape).astype(np.float32)
               for v in model.trainable_variables}
  poisoned = dict(gradients)
  poisoned[id(backbone_variables[0])] = np.full(backbone_variables[0].shape, np.inf, np.float32)
  optimizers.apply_gradients({k: g * scale for k, g in poisoned.items()})
  for variable in model.trainable_variables:
    np.testing.assert_array_equal(variable.numpy(), before[variable.path])
  assert float(optimizers.main.dynamic_scale.numpy()) == scale / 2
  assert float(optimizers.backbone.dynamic_scale.numpy()) == scale / 2
  scale /= 2
  global_norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in gradients.values()))
  optimizers.apply_gradients({k: g * scale for k, g in gradients.items()})
  for variable in model.trainable_variables:
    expected = before[variable.path] - 5e-4 * gradients[id(variable)] * 0.5 / global_norm
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-4, atol=1e-8,
                               err_msg=variable.path)
