"""Inception stem: three 3x3 convs, the first strided, widths scaled by the multiplier."""
import numpy as np

from kmax_tf.model.layers import stems


def test_shapes_and_widths():
  stem = stems.InceptionStem(width_multiplier=0.25, activation="gelu")
  y = stem(np.zeros((1, 33, 17, 3), np.float32))
  assert y.shape == (1, 17, 9, 32)
  kernels = [tuple(w.shape) for w in stem.trainable_weights if len(w.shape) == 4]
  assert kernels == [(3, 3, 3, 16), (3, 3, 16, 16), (3, 3, 16, 32)]
  assert stems.InceptionStem.from_config(stem.get_config()).get_config() == stem.get_config()
