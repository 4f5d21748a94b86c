"""Axial attention with relative positional encodings (Axial-DeepLab; deeplab2 `axial_layers.py`).

Every axis is attended *globally* whatever its length, so one built model runs at any input size.
The relative positional embeddings are tables of `2 * MAX_SPAN - 1` rows (deeplab2's size, so
checkpoints map one to one) indexed at run time by `key - query`; distances beyond
`MAX_SPAN - 1 = 254` share the edge rows, as in deeplab2's own `RelativePositionalEncoding`.
deeplab2 additionally refuses axes longer than `query_shape = 129` (its local-attention path is not
implemented); here such axes simply get global attention, which is what deeplab2 computes for
every length it accepts.
"""
from __future__ import annotations

import keras
from keras import ops

from kmax_tf.model.layers import norm

MAX_SPAN = 255


def relative_distance_index(length):
  """`[L, L]` int32 rows of the embedding table for (query l, key m): `m - l + MAX_SPAN - 1`."""
  positions = ops.arange(length, dtype="int32")
  index = positions[None, :] - positions[:, None] + (MAX_SPAN - 1)
  return ops.clip(index, 0, 2 * MAX_SPAN - 2)


def flat_matmul(inputs, kernel):
  """`[B, L, C] x [C, D] -> [B*L, D]` as ONE `[B*L, C] x [C, D]` matmul.

  That is the product deeplab2's `tf.einsum("nlc,cd->nld")` runs. `keras.ops.einsum` maps the same
  equation to a batched matmul per sequence, whose float32 rounding differs; the kMaX decoder
  amplifies such differences by ~1e5 under random weights (benchmarks/vs_deeplab2.py), so this
  keeps converted deeplab2 models bit-identical. The result stays flat so that a bias added to it
  (a batch norm folded for serving) fuses with the MatMul.
  """
  return ops.matmul(ops.reshape(inputs, (-1, inputs.shape[-1])), kernel)


# The attention's products, [B, heads, L(query), L(key)] similarities and [B, L, heads, d]
# retrievals; `lmd` are the relative embeddings gathered for each (query, key) pair.
CONTENT_SIMILARITY = "bhld,bhmd->bhlm"
QUERY_RPE_SIMILARITY = "bhld,lmd->bhlm"
KEY_RPE_SIMILARITY = "bhmd,lmd->bhlm"
CONTENT_RETRIEVAL = "bhlm,bhmd->blhd"
RPE_RETRIEVAL = "bhlm,lmd->blhd"


@keras.saving.register_keras_serializable(package="kmax_tf")
class AxialAttention(keras.layers.Layer):
  """Global multi-head attention along axis 1 of `[B, L, C]` -> `[B, L, total_value_depth]`.

  Similarity = content (q.k) + query-RPE (q.r_q) + key-RPE (k.r_k), each batch-normalized per
  head (no 1/sqrt(d) scaling; the BN sets the scale), softmax over keys; retrieved output =
  content (w.v) + value-RPE (w.r_v), batch-normalized per head and channel.
  """

  def __init__(self, total_key_depth: int, total_value_depth: int, num_heads: int = 8,
               norm_layer=None, **kwargs):
    super().__init__(**kwargs)
    if total_key_depth % num_heads or total_value_depth % num_heads:
      raise ValueError(f"{self.name}: key depth {total_key_depth} and value depth "
                       f"{total_value_depth} must be divisible by num_heads={num_heads}")
    self.total_key_depth = total_key_depth
    self.total_value_depth = total_value_depth
    self.num_heads = num_heads
    self.norm_layer = norm.get(norm_layer)
    self._key_depth = total_key_depth // num_heads
    self._value_depth = total_value_depth // num_heads
    self.batch_norm_qkv = self.norm_layer(name="batch_norm_qkv")
    # Similarity logits feed a softmax: keep their BN (and the softmax) in float32. They are laid
    # out [B, (type, head), L, M], so the BN channels are axis 1.
    self.batch_norm_similarity = self.norm_layer(name="batch_norm_similarity", dtype="float32",
                                                 axis=1)
    self.batch_norm_retrieved_output = self.norm_layer(name="batch_norm_retrieved_output")

  def build(self, input_shape):
    channels = input_shape[-1]
    self.qkv_kernel = self.add_weight(
        name="qkv_kernel", shape=(channels, 2 * self.total_key_depth + self.total_value_depth),
        initializer=keras.initializers.TruncatedNormal(stddev=channels ** -0.5))
    rpe_rows = 2 * MAX_SPAN - 1
    self.query_rpe = self.add_weight(name="query_rpe", shape=(rpe_rows, self._key_depth),
                                     initializer=keras.initializers.TruncatedNormal(stddev=1.0))
    self.key_rpe = self.add_weight(name="key_rpe", shape=(rpe_rows, self._key_depth),
                                   initializer=keras.initializers.TruncatedNormal(stddev=1.0))
    self.value_rpe = self.add_weight(name="value_rpe", shape=(rpe_rows, self._value_depth),
                                     initializer=keras.initializers.TruncatedNormal(stddev=1.0))
    qkv_depth = 2 * self.total_key_depth + self.total_value_depth
    self.batch_norm_qkv.build((None, qkv_depth))  # it normalises the flat product
    self.batch_norm_similarity.build((None, 3 * self.num_heads, None, None))
    self.batch_norm_retrieved_output.build((None, None, 2 * self.total_value_depth))

  def call(self, inputs, training=None):
    length = ops.shape(inputs)[1]
    heads = self.num_heads
    query, key, value = self.project_heads(inputs, training=training)
    query_rpe, key_rpe, value_rpe = self.relative_embeddings(length, inputs.dtype)
    # [B, (type, head), L(query), L(key)]: content, query-RPE and key-RPE similarities.
    similarity = ops.concatenate([
        ops.einsum(CONTENT_SIMILARITY, query, key),
        ops.einsum(QUERY_RPE_SIMILARITY, query, query_rpe),
        ops.einsum(KEY_RPE_SIMILARITY, key, key_rpe),
    ], axis=1)
    similarity = self.batch_norm_similarity(ops.cast(similarity, "float32"), training=training)
    similarity = ops.sum(ops.reshape(similarity, (-1, 3, heads, length, length)), axis=1)
    weights = ops.cast(ops.softmax(similarity, axis=-1), inputs.dtype)
    # [B, L, 2, heads, dv]: content and positional retrievals; BN channels are (type, head, d).
    retrieved = ops.stack([
        ops.einsum(CONTENT_RETRIEVAL, weights, value),
        ops.einsum(RPE_RETRIEVAL, weights, value_rpe),
    ], axis=2)
    retrieved = ops.reshape(retrieved, (-1, length, 2 * self.total_value_depth))
    retrieved = self.batch_norm_retrieved_output(retrieved, training=training)
    retrieved = ops.reshape(retrieved, (-1, length, 2, self.total_value_depth))
    return ops.sum(retrieved, axis=2)

  def project_heads(self, inputs, training=None):
    """`[B, L, C]` -> query, key `[B, heads, L, dk]` and value `[B, heads, L, dv]` (after
    `batch_norm_qkv`)."""
    length = ops.shape(inputs)[1]
    heads, dk, dv = self.num_heads, self._key_depth, self._value_depth
    qkv = flat_matmul(inputs, ops.cast(self.qkv_kernel, inputs.dtype))
    qkv = self.batch_norm_qkv(qkv, training=training)
    query, key, value = ops.split(
        qkv, [self.total_key_depth, 2 * self.total_key_depth], axis=-1)
    # Heads before positions ([B, heads, L, d]), as in deeplab2: the products below are then
    # batched matmuls whose results need no transpose of their two innermost axes, which TF's
    # CPU transpose does slowly (with heads last this layer took 48 ms instead of 33 ms on a
    # 41-long axis of 256 channels).
    query = ops.transpose(ops.reshape(query, (-1, length, heads, dk)), (0, 2, 1, 3))
    key = ops.transpose(ops.reshape(key, (-1, length, heads, dk)), (0, 2, 1, 3))
    value = ops.transpose(ops.reshape(value, (-1, length, heads, dv)), (0, 2, 1, 3))
    return query, key, value

  def relative_embeddings(self, length, dtype):
    """The query, key and value embeddings of every (query l, key m) pair: `[L, L, d]` each."""
    index = relative_distance_index(length)
    return tuple(ops.cast(ops.take(table, index, axis=0), dtype)
                 for table in (self.query_rpe, self.key_rpe, self.value_rpe))

  def get_config(self):
    config = super().get_config()
    config.update(total_key_depth=self.total_key_depth,
                  total_value_depth=self.total_value_depth, num_heads=self.num_heads,
                  norm_layer=self.norm_layer.get_config())
    return config


@keras.saving.register_keras_serializable(package="kmax_tf")
class AxialAttention2D(keras.layers.Layer):
  """Height-axis then width-axis attention: `[B, H, W, C] -> [B, H', W', filters*value_exp]`.

  With `strides=2` rows are subsampled (`[::2]`) after the height attention and columns after the
  width attention, so an odd side `2k+1` becomes `k+1`.
  """

  def __init__(self, filters: int, strides: int = 1, key_expansion: float = 1.0,
               value_expansion: float = 2.0, num_heads: int = 8, norm_layer=None, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.strides = strides
    self.key_expansion = key_expansion
    self.value_expansion = value_expansion
    self.num_heads = num_heads
    self.norm_layer = norm.get(norm_layer)
    self.total_key_depth = int(round(filters * key_expansion))
    self.total_value_depth = int(round(filters * value_expansion))
    self.height_axis = AxialAttention(self.total_key_depth, self.total_value_depth, num_heads,
                                      norm_layer=self.norm_layer, name="height_axis")
    self.width_axis = AxialAttention(self.total_key_depth, self.total_value_depth, num_heads,
                                     norm_layer=self.norm_layer, name="width_axis")

  def build(self, input_shape):
    channels = input_shape[-1]
    self.height_axis.build((None, None, channels))
    self.width_axis.build((None, None, self.total_value_depth))

  def call(self, inputs, training=None):
    shape = ops.shape(inputs)
    height, width = shape[1], shape[2]
    depth = self.total_value_depth
    x = ops.transpose(inputs, (0, 2, 1, 3))
    x = ops.reshape(x, (-1, height, inputs.shape[-1]))
    x = self.height_axis(x, training=training)
    x = ops.transpose(ops.reshape(x, (-1, width, height, depth)), (0, 2, 1, 3))
    if self.strides > 1:
      x = x[:, ::self.strides]
    strided_height = ops.shape(x)[1]
    x = self.width_axis(ops.reshape(x, (-1, width, depth)), training=training)
    x = ops.reshape(x, (-1, strided_height, width, depth))
    if self.strides > 1:
      x = x[:, :, ::self.strides]
    return x

  def get_config(self):
    config = super().get_config()
    config.update(filters=self.filters, strides=self.strides, key_expansion=self.key_expansion,
                  value_expansion=self.value_expansion, num_heads=self.num_heads,
                  norm_layer=self.norm_layer.get_config())
    return config
