"""Export-time folding of inference batch norm into the convolution before it.

In inference a batch norm after a convolution is a per-channel affine map,
`y = conv(x, K) * s + (beta - mean * s)` with `s = gamma / sqrt(variance + epsilon)`, so it equals
`conv(x, K * s) + b` with `b = beta - mean * s`. After `fold_batch_norms` the convolution reads
`K * s` and the batch norm only adds `b` with `tf.nn.bias_add`: Conv2D + BiasAdd (+ Relu) is the
pattern TensorFlow's CPU graph optimizer (grappler's remapper) fuses into one `_FusedConv2D`
kernel, with oneDNN's graph rewrite on or off, where the batch norm's multiply-add chain stays
separate element-wise passes over every activation.

One batch norm per block group stays unfolded: the one before the last block's residual sum, when
the blocks activate with ReLU or ELU (see `_unfoldable_batch_norms`).

The training model is never folded: folding rewrites variable values in place, so it is for
models built only to serve (`export.build_inference_model`), and a folded model must not be
trained or saved as a training checkpoint.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kmax_tf.model.layers import blocks
from kmax_tf.model.layers import conv

# Activations grappler's oneDNN remapper fuses after a convolution + bias + residual addition.
_REMAPPER_ADD_ACTIVATIONS = frozenset({"relu", "elu"})


class FoldedBatchNorm(keras.layers.BatchNormalization):
  """A batch norm whose scale went into the preceding kernel: `[..., C] -> x + beta`.

  Same variables as the batch norm it replaces (`beta` holds the folded bias); moving statistics
  and `gamma` are unused. Inference only.
  """

  def call(self, inputs, training=None, mask=None):
    if training:
      raise ValueError(f"{self.name}: a folded batch norm is for inference only")
    return tf.nn.bias_add(inputs, tf.cast(self.beta, inputs.dtype))


def _fold(kernel, batch_norm, depthwise: bool = False) -> None:
  """Scales the output channels of `kernel` (`[..., C]`, or depthwise `[kh, kw, Cin, M]` whose
  output channel `c * M + m` is `[..., c, m]`) and turns `batch_norm` into a `FoldedBatchNorm`."""
  values = np.asarray(kernel, np.float64)
  channels = values.shape[-2] * values.shape[-1] if depthwise else values.shape[-1]
  if not (batch_norm.center and batch_norm.scale) or batch_norm.moving_mean.shape != (channels,):
    raise ValueError(f"{batch_norm.path}: cannot fold a batch norm of shape "
                     f"{batch_norm.moving_mean.shape} (center={batch_norm.center}, "
                     f"scale={batch_norm.scale}) into kernel {kernel.path} {list(values.shape)}")
  mean = np.asarray(batch_norm.moving_mean, np.float64)
  scale = (np.asarray(batch_norm.gamma, np.float64) /
           np.sqrt(np.asarray(batch_norm.moving_variance, np.float64) + batch_norm.epsilon))
  kernel.assign((values * scale.reshape(values.shape[-2:] if depthwise else (channels,))).astype(
      kernel.dtype))
  batch_norm.beta.assign((np.asarray(batch_norm.beta, np.float64) - mean * scale).astype(
      batch_norm.beta.dtype))
  batch_norm.__class__ = FoldedBatchNorm


def _unfoldable_batch_norms(model: keras.Model) -> set[int]:
  """Ids of the batch norms that must stay unfolded for the graph to be optimized under oneDNN.

  With oneDNN, grappler's remapper (TensorFlow 2.20) fuses Conv2D + BiasAdd + Add + Relu into one
  node without checking that the Add has no other reader. A block group's output, the last
  block's residual sum, is also read by the next group's first activation and, as a backbone
  endpoint, by the pixel decoder's layer norm; fusing it deletes a node that layer norm still
  reads, the remapper fails ("Mutation::Apply error: fanout ... exist for missing node") and the
  whole graph runs without any of its fusions. An unfolded batch norm between that convolution
  and the sum breaks the pattern, at the cost of one scale-and-shift per block group.
  """
  keep = set()
  for layer in model._flatten_layers(include_self=True, recursive=True):  # pylint: disable=protected-access
    if isinstance(layer, blocks.BlockGroup) and layer.activation in _REMAPPER_ADD_ACTIVATIONS:
      keep.add(id(layer.blocks[-1].conv3_bn.batch_norm))
  return keep


def fold_batch_norms(model: keras.Model) -> int:
  """Folds every batch norm that directly follows a convolution or projection of `model` (a
  built model, in place). Returns the number folded.

  Covered: `Conv2DSame` (including its shifted-tap atrous form, which reads the same kernel),
  `Conv1x1` and both halves of `SeparableConv2DSame`. Other batch norms (on attention
  similarities, retrieved values, head features) follow products of two activations, not a
  kernel, and are left as they are, and so is the batch norm before each ReLU block group's
  output (`_unfoldable_batch_norms`).
  """
  keep = _unfoldable_batch_norms(model)
  folded = 0
  for layer in model._flatten_layers(include_self=True, recursive=True):  # pylint: disable=protected-access
    pairs = []
    if isinstance(layer, conv.Conv2DSame) and layer.batch_norm is not None:
      pairs.append((layer.conv.kernel, layer.batch_norm))
    elif isinstance(layer, conv.Conv1x1) and layer.batch_norm is not None:
      pairs.append((layer.dense.kernel, layer.batch_norm))
    elif isinstance(layer, conv.SeparableConv2DSame):
      pairs.append((layer.depthwise.kernel, layer.depthwise_bn, True))
    for kernel, batch_norm, *depthwise in pairs:
      if isinstance(batch_norm, FoldedBatchNorm) or id(batch_norm) in keep:
        continue
      _fold(kernel, batch_norm, *depthwise)
      folded += 1
  return folded
