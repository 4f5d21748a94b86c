"""Backbone stems: the ResNet 7x7 conv stem and the Inception stem of Axial-ResNet ('resnet_beta')."""
from __future__ import annotations

import keras

from kmax_tf.model.layers import composite
from kmax_tf.model.layers import conv
from kmax_tf.model.layers import norm


@keras.saving.register_keras_serializable(package="kmax_tf")
class InceptionStem(composite.BuiltOnFirstCall, keras.layers.Layer):
  """`[B, H, W, 3] -> [B, (H-1)/2+1, (W-1)/2+1, 128w]`, not activated.

  Three 3x3 convs: 64w stride 2 (+BN+act), 64w (+BN+act), 128w (+BN).
  """

  def __init__(self, width_multiplier: float = 1.0, activation: str = "relu", norm_layer=None,
               **kwargs):
    super().__init__(**kwargs)
    self.width_multiplier = width_multiplier
    self.activation = activation
    self.norm_layer = norm.get(norm_layer)
    narrow, wide = int(64 * width_multiplier), int(128 * width_multiplier)
    self.conv1_bn_act = conv.Conv2DSame(narrow, 3, strides=2, norm_layer=self.norm_layer,
                                        activation=activation, name="conv1_bn_act")
    self.conv2_bn_act = conv.Conv2DSame(narrow, 3, norm_layer=self.norm_layer,
                                        activation=activation, name="conv2_bn_act")
    self.conv3_bn = conv.Conv2DSame(wide, 3, norm_layer=self.norm_layer, name="conv3_bn")

  def call(self, inputs, training=None):
    x = self.conv1_bn_act(inputs, training=training)
    x = self.conv2_bn_act(x, training=training)
    return self.conv3_bn(x, training=training)

  def get_config(self):
    config = super().get_config()
    config.update(width_multiplier=self.width_multiplier, activation=self.activation,
                  norm_layer=self.norm_layer.get_config())
    return config
