"""Tests for kmax_tf.weight_io: every model variable saved and restored, checkpoint paths."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from kmax_tf import weight_io


class _Nested(keras.layers.Layer):
  """Keeps sub-layers in a list: the case TensorFlow's object graph does not reach."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.blocks = [keras.layers.Dense(3, name=f"dense_{i}") for i in range(2)]

  def call(self, x):
    for block in self.blocks:
      x = block(x)
    return x


def _nested_model():
  inputs = keras.Input((4,))
  return keras.Model(inputs, _Nested(name="nested")(inputs))


def test_model_variables_saves_and_restores_every_weight(tmp_path):
  model = _nested_model()
  path = tf.train.Checkpoint(model=weight_io.ModelVariables(model)).save(str(tmp_path / "c"))
  saved = {v.path: v.numpy() for v in model.variables}
  assert len(saved) == 4
  fresh = _nested_model()
  weight_io.restore_model_variables(fresh, path)
  for variable in fresh.variables:
    np.testing.assert_array_equal(variable.numpy(), saved[variable.path])


def test_restore_requires_every_variable_unless_told(tmp_path):
  small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense_0")])
  path = tf.train.Checkpoint(model=weight_io.ModelVariables(small)).save(str(tmp_path / "c"))
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense_0"),
                            keras.layers.Dense(2, name="dense_1")])
  with pytest.raises(AssertionError):
    weight_io.restore_model_variables(model, path)
  weight_io.restore_model_variables(model, str(tmp_path), require_all=False)
  np.testing.assert_array_equal(model.layers[0].kernel.numpy(), small.layers[0].kernel.numpy())


def test_resolve_checkpoint_takes_a_prefix_or_the_latest_in_a_directory(tmp_path):
  variable = tf.Variable(1.0)
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(value=variable), str(tmp_path), 5)
  first, second = manager.save(), manager.save()
  assert weight_io.resolve_checkpoint(first) == first
  assert weight_io.resolve_checkpoint(str(tmp_path)) == second


def test_resolve_checkpoint_names_what_is_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match="No checkpoint in directory"):
    weight_io.resolve_checkpoint(str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r"ckpt-3.index is missing"):
    weight_io.resolve_checkpoint(str(tmp_path / "ckpt-3"))
