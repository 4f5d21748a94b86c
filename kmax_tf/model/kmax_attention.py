"""k-means cross-attention (kMaX-DeepLab, deeplab2 `dual_path_transformer.py` k-means path).

The cluster centers are updated like one k-means step:
1. assignment: every pixel goes to the cluster with the largest mask logit (argmax over the N
   clusters, not a softmax over pixels), as a one-hot that carries no gradient;
2. update: each center receives the *sum* of the values of its pixels, batch-normalized
   (no division by the cluster size; empty clusters get 0 before BN), then a 1x1 projection + BN
   whose gamma starts at 0.
"""
from __future__ import annotations

import keras
from keras import ops
import tensorflow as tf

from kmax_tf.model.layers import composite
from kmax_tf.model.layers import conv
from kmax_tf.model.layers import norm


def kmeans_assignment(mask_logits):
  """`[B, h, w, N]` logits -> `[B, h*w, N]` float32 one-hot of the argmax cluster per pixel.

  Wrapped in stop_gradient: the assignment is learned only through the losses on the
  predictions that produced the logits (deep supervision), as in deeplab2.
  """
  num_clusters = mask_logits.shape[-1]
  # TensorFlow's argmax, as deeplab2 takes it. keras.ops.argmax first rewrites -0.0 (so that it
  # loses to +0.0): four element-wise passes over the logits at every kMaX layer, and a bitcast
  # that TFLite's builtin ops cannot run; ties at zero are the only difference.
  assignment = ops.one_hot(tf.argmax(mask_logits, axis=-1, output_type=tf.int32), num_clusters,
                           dtype="float32")
  return ops.stop_gradient(ops.reshape(assignment, (ops.shape(mask_logits)[0], -1, num_clusters)))


@keras.saving.register_keras_serializable(package="kmax_tf")
class KMeansCrossAttention(composite.BuiltOnFirstCall, keras.layers.Layer):
  """`call(mask_logits [B,h,w,N], pixel_values [B,h,w,Dv]) -> center update [B, N, channels]`.

  update = conv3_bn(BN(A^T . V)) with A the hard assignment of `kmeans_assignment`. The sum and
  its BN run in float32 under mixed precision: a large cluster sums tens of thousands of values.
  """

  def __init__(self, channels: int, norm_layer=None, **kwargs):
    super().__init__(**kwargs)
    self.channels = channels
    self.norm_layer = norm.get(norm_layer)
    self.kmeans_memory_batch_norm_retrieved_value = self.norm_layer(
        name="kmeans_memory_batch_norm_retrieved_value", dtype="float32")
    self.kmeans_memory_conv3_bn = conv.Conv1x1(channels, norm_layer=self.norm_layer,
                                               bn_gamma_initializer="zeros",
                                               name="kmeans_memory_conv3_bn")

  def call(self, mask_logits, pixel_values, training=None):
    if mask_logits.shape[-1] is None:
      raise ValueError(f"{self.name}: the number of clusters (last axis of mask_logits) must be "
                       "static")
    assignment = kmeans_assignment(mask_logits)
    values = ops.reshape(ops.cast(pixel_values, "float32"),
                         (ops.shape(pixel_values)[0], -1, pixel_values.shape[-1]))
    update = ops.einsum("bln,bld->bnd", assignment, values)
    update = self.kmeans_memory_batch_norm_retrieved_value(update, training=training)
    return self.kmeans_memory_conv3_bn(ops.cast(update, self.compute_dtype), training=training)

  def get_config(self):
    config = super().get_config()
    config.update(channels=self.channels, norm_layer=self.norm_layer.get_config())
    return config
