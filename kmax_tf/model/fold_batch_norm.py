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
from keras import ops
import numpy as np
import tensorflow as tf

from kmax_tf.model.layers import axial_attention
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


def _affine(batch_norm):
  """The inference batch norm as `x * scale + shift`: (scale, shift) in float64, `[C]` each."""
  if not (batch_norm.center and batch_norm.scale):
    raise ValueError(f"{batch_norm.path}: cannot fold a batch norm without both gamma and beta "
                     f"(center={batch_norm.center}, scale={batch_norm.scale})")
  scale = (np.asarray(batch_norm.gamma, np.float64) /
           np.sqrt(np.asarray(batch_norm.moving_variance, np.float64) + batch_norm.epsilon))
  return scale, np.asarray(batch_norm.beta, np.float64) - np.asarray(
      batch_norm.moving_mean, np.float64) * scale


def _fold(kernel, batch_norm, depthwise: bool = False) -> None:
  """Scales the output channels of `kernel` (`[..., C]`, or depthwise `[kh, kw, Cin, M]` whose
  output channel `c * M + m` is `[..., c, m]`) and turns `batch_norm` into a `FoldedBatchNorm`."""
  values = np.asarray(kernel, np.float64)
  channels = values.shape[-2] * values.shape[-1] if depthwise else values.shape[-1]
  if batch_norm.moving_mean.shape != (channels,):
    raise ValueError(f"{batch_norm.path}: cannot fold a batch norm of shape "
                     f"{batch_norm.moving_mean.shape} into kernel {kernel.path} "
                     f"{list(values.shape)}")
  scale, shift = _affine(batch_norm)
  kernel.assign((values * scale.reshape(values.shape[-2:] if depthwise else (channels,))).astype(
      kernel.dtype))
  batch_norm.beta.assign(shift.astype(batch_norm.beta.dtype))
  batch_norm.__class__ = FoldedBatchNorm


class FoldedAxialAttention(axial_attention.AxialAttention):
  """`AxialAttention` with its three batch norms folded (`_fold_axial_attention`). Inference only.

  Same variables, with new meanings:
  - `qkv_kernel` and `batch_norm_qkv.beta` (a `FoldedBatchNorm`): the projection with its batch
    norm folded in, and the value columns also scaled by the retrieved-output batch norm's
    content scale (a softmax-weighted sum of scaled values is the scaled sum);
  - `batch_norm_similarity.gamma`: the similarity scales per (type, head), applied to the query
    (content and query-RPE terms) and the key (key-RPE term) before their products instead of
    to three `[B, heads, L, L]` maps. Its shifts add a constant per head to every row of the
    summed similarity, which the softmax over keys removes, so they are dropped;
  - `batch_norm_retrieved_output`: `gamma[V:]` scales the positional retrieval, `beta[:V]` is
    the sum of both retrievals' shifts.
  The unfolded layer concatenates the three similarity maps, normalises and sums them, and
  stacks, normalises and sums the two retrievals: here they are summed once.
  """

  def call(self, inputs, training=None):
    if training:
      raise ValueError(f"{self.name}: a folded attention layer is for inference only")
    length = ops.shape(inputs)[1]
    heads, depth = self.num_heads, self.total_value_depth
    query, key, value = self.project_heads(inputs)
    query_rpe, key_rpe, value_rpe = self.relative_embeddings(length, inputs.dtype)
    scales = ops.cast(ops.reshape(self.batch_norm_similarity.gamma, (3, 1, heads, 1, 1)),
                      inputs.dtype)
    similarity = (ops.einsum(axial_attention.CONTENT_SIMILARITY, query * scales[0], key) +
                  ops.einsum(axial_attention.QUERY_RPE_SIMILARITY, query * scales[1], query_rpe) +
                  ops.einsum(axial_attention.KEY_RPE_SIMILARITY, key * scales[2], key_rpe))
    weights = ops.cast(ops.softmax(ops.cast(similarity, "float32"), axis=-1), inputs.dtype)
    output_norm = self.batch_norm_retrieved_output
    position_scale = ops.cast(ops.reshape(output_norm.gamma[depth:], (heads, -1)), inputs.dtype)
    shift = ops.cast(ops.reshape(output_norm.beta[:depth], (heads, -1)), inputs.dtype)
    retrieved = (ops.einsum(axial_attention.CONTENT_RETRIEVAL, weights, value) +
                 ops.einsum(axial_attention.RPE_RETRIEVAL, weights, value_rpe) * position_scale +
                 shift)  # [B, L, heads, dv]
    return ops.reshape(retrieved, (-1, length, depth))


def _fold_axial_attention(layer: axial_attention.AxialAttention) -> None:
  """Folds `layer`'s three batch norms (see `FoldedAxialAttention`) and swaps its class."""
  _fold(layer.qkv_kernel, layer.batch_norm_qkv)
  depth, value_columns = layer.total_value_depth, slice(2 * layer.total_key_depth, None)
  output_scale, output_shift = _affine(layer.batch_norm_retrieved_output)
  content_scale = output_scale[:depth]
  kernel = np.asarray(layer.qkv_kernel, np.float64)
  kernel[:, value_columns] *= content_scale
  layer.qkv_kernel.assign(kernel.astype(layer.qkv_kernel.dtype))
  bias = np.asarray(layer.batch_norm_qkv.beta, np.float64)
  bias[value_columns] *= content_scale
  layer.batch_norm_qkv.beta.assign(bias.astype(layer.batch_norm_qkv.beta.dtype))
  output_norm = layer.batch_norm_retrieved_output
  output_norm.gamma.assign(np.concatenate([np.ones(depth), output_scale[depth:]]).astype(
      output_norm.gamma.dtype))
  output_norm.beta.assign(np.concatenate([output_shift[:depth] + output_shift[depth:],
                                          np.zeros(depth)]).astype(output_norm.beta.dtype))
  similarity_scale, _ = _affine(layer.batch_norm_similarity)
  layer.batch_norm_similarity.gamma.assign(similarity_scale.astype(
      layer.batch_norm_similarity.gamma.dtype))
  layer.__class__ = FoldedAxialAttention


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
  built model, in place), and the three batch norms of every axial attention layer
  (`FoldedAxialAttention`). Returns the number of batch norms folded.

  Covered: `Conv2DSame` (including its shifted-tap atrous form, which reads the same kernel),
  `Conv1x1`, both halves of `SeparableConv2DSame` and `AxialAttention`. Other batch norms (on
  the kMaX layers' attention products, head features) follow products of two activations on the
  few cluster centers, not a kernel, and are left as they are, and so is the batch norm before
  each ReLU block group's output (`_unfoldable_batch_norms`).
  """
  keep = _unfoldable_batch_norms(model)
  folded = 0
  for layer in model._flatten_layers(include_self=True, recursive=True):  # pylint: disable=protected-access
    if (isinstance(layer, axial_attention.AxialAttention) and
        not isinstance(layer, FoldedAxialAttention)):
      _fold_axial_attention(layer)
      folded += 3
      continue
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
