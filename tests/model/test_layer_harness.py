"""The layer-test harness fails on layers whose config loses or misreports an argument."""
import keras
import layer_harness
import numpy as np
import pytest


@keras.saving.register_keras_serializable(package="kmax_tf_tests")
class _Scale(keras.layers.Layer):
  """`[B, C] -> [B, units]`: `factor * x W + offset`."""

  def __init__(self, units, factor=1.0, offset=0.0, **kwargs):
    super().__init__(**kwargs)
    self.units, self.factor, self.offset = units, factor, offset

  def build(self, input_shape):
    self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")

  def call(self, inputs):
    return self.factor * keras.ops.matmul(inputs, self.kernel) + self.offset

  def get_config(self):
    return {**super().get_config(), "units": self.units, "factor": self.factor,
            "offset": self.offset}


class _ForgetsOffset(_Scale):
  def get_config(self):
    config = super().get_config()
    del config["offset"]
    return config


class _ReportsDefaultFactor(_Scale):
  def get_config(self):
    return {**super().get_config(), "factor": 1.0}


_X = (np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32),)
_KWARGS = dict(units=4, factor=2.0, offset=0.5)


def test_a_complete_config_passes():
  layer = layer_harness.run_layer_test(_Scale, _KWARGS, _X)
  assert layer.offset == 0.5


def test_an_argument_left_out_of_get_config_fails():
  with pytest.raises(AssertionError, match=r"lacks constructor arguments \['offset'\]"):
    layer_harness.run_layer_test(_ForgetsOffset, _KWARGS, _X)


def test_an_argument_reported_as_its_default_fails():
  with pytest.raises(AssertionError, match="factor=1.0"):
    layer_harness.run_layer_test(_ReportsDefaultFactor, _KWARGS, _X)


def test_a_default_argument_value_is_refused():
  # It would not show whether the argument survives the config.
  with pytest.raises(AssertionError, match="non-default offset"):
    layer_harness.run_layer_test(_Scale, dict(units=4, factor=2.0, offset=0.0), _X)
