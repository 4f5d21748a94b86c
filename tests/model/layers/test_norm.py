"""The norm factory builds deeplab2's synchronized BN and survives get_config."""
import keras
import pytest

from kmax_tf.model.layers import norm


def test_defaults_are_deeplab2_solver_defaults():
  layer = norm.BatchNormFactory()(name="bn")
  assert isinstance(layer, keras.layers.BatchNormalization)
  assert layer.momentum == 0.99 and layer.epsilon == 1e-3
  assert layer.synchronized


def test_get_accepts_factory_config_and_none():
  factory = norm.BatchNormFactory(0.9, 1e-5, False)
  assert norm.get(factory) is factory
  assert norm.get(factory.get_config()) == factory
  assert norm.get(None) == norm.BatchNormFactory()
  with pytest.raises(TypeError, match="norm_layer"):
    norm.get("batch_norm")


def test_float32_dtype_under_mixed_precision():
  layer = norm.BatchNormFactory()(name="bn", dtype="float32")
  assert layer.compute_dtype == "float32"
