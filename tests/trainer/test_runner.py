"""KMaXTrainer under mixed_float16: loss scaling keeps small gradients from underflowing."""
import keras
import numpy as np
import orbit
import pytest
import tensorflow as tf

from kmax_tf.data import reader
from kmax_tf.protos import trainer_pb2
from kmax_tf.trainer import optimizer as optimizer_lib
from kmax_tf.trainer import runner

# The loss is multiplied by this (and the SGD learning rate divided by it): float32 training is
# unchanged, but the gradients of float16 activations (~1e-9) are below float16's smallest
# subnormal (6e-8) and flush to zero unless the loss is scaled up first.
_LOSS_FACTOR = 1e-7
_STEPS = 12


def _dataset_fn(input_context=None, **unused):
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 255, (8, 4, 4, 3)).astype(np.float32)
  batch = {"image": images, "target": images.mean(axis=(1, 2))[:, :1] / 255.0,
           "input_position": np.zeros((8, reader.POSITION_SIZE), np.int64),
           "skipped_records": np.zeros(8, np.int64)}
  return tf.data.Dataset.from_tensors(batch).repeat()


def _loss(inputs, outputs):
  error = tf.cast(outputs, tf.float32) - inputs["target"]
  return {"total_loss": _LOSS_FACTOR * tf.reduce_sum(tf.square(error), axis=-1)}


def _train(policy, loss_scale):
  """(total losses of each step, last gradients of the first kernel unscaled, optimizers)."""
  keras.mixed_precision.set_global_policy(policy)
  try:
    keras.utils.set_random_seed(1)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
      inputs = keras.Input((4, 4, 3))
      x = keras.layers.Flatten()(inputs / 255.0)
      x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
      model = keras.Model(inputs, keras.layers.Dense(1, name="out")(x))
      solver = trainer_pb2.SolverOptions(
          optimizer="sgd", base_learning_rate=0.02 / _LOSS_FACTOR, training_number_of_steps=100,
          learning_policy="poly", poly_learning_power=0.0)
      optimizers = optimizer_lib.build_optimizers(
          solver, model.trainable_variables, loss_scale=loss_scale)
      trainer = runner.KMaXTrainer(
          strategy=strategy, model=model, loss=_loss, loss_names=("total_loss",),
          optimizers=optimizers, train_dataset=_dataset_fn,
          global_step=orbit.utils.create_global_step(), total_steps=_STEPS)
      losses = [float(trainer.train(tf.constant(1))["losses/train_total_loss"])
                for _ in range(_STEPS)]
    batch = next(iter(_dataset_fn()))
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(_loss(batch, model(batch["image"]))["total_loss"])
      loss = optimizers.scale_loss(loss)
    gradient = tape.gradient(loss, model.get_layer("hidden").kernel)
    if loss_scale:
      gradient = gradient / optimizers.main.dynamic_scale
    return np.array(losses), gradient.numpy(), optimizers
  finally:
    keras.mixed_precision.set_global_policy("float32")


def test_float16_with_loss_scaling_trains_like_float32():
  float32_losses, float32_gradient, _ = _train("float32", loss_scale=False)
  float16_losses, float16_gradient, optimizers = _train("mixed_float16", loss_scale=True)
  assert isinstance(optimizers.main, keras.optimizers.LossScaleOptimizer)
  assert np.isfinite(float16_gradient).all() and np.abs(float16_gradient).max() > 0
  np.testing.assert_allclose(float16_gradient, float32_gradient, rtol=0.05,
                             atol=0.05 * np.abs(float32_gradient).max())
  assert np.isfinite(float16_losses).all()
  assert float32_losses[-1] < 0.5 * float32_losses[0]
  np.testing.assert_allclose(float16_losses, float32_losses, rtol=0.05)


def test_float16_without_loss_scaling_loses_its_gradients():
  """The failure loss scaling prevents: the same run without it does not learn."""
  losses, gradient, _ = _train("mixed_float16", loss_scale=False)
  assert np.abs(gradient).max() == 0
  assert losses[-1] == pytest.approx(losses[0], rel=1e-3)
