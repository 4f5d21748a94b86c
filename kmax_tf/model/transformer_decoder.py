"""kMaX transformer decoder (deeplab2 `transformer_decoder/kmax.py` + the k-means configuration of
`DualPathTransformerLayer`).

Learned cluster centers `[N, D]` pass through kMaX layers (2 each on the pixel-decoder features at
strides 32, 16, 8 by default). A layer = k-means cross-attention -> center self-attention -> FFN,
with post-activation (GELU) residuals; only the centers are updated, never the pixels. Every layer
also emits the prediction of its clustering head (used for its argmax and deep supervision).
"""
from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from kmax_tf.model import heads
from kmax_tf.model import kmax_attention
from kmax_tf.model.layers import activations
from kmax_tf.model.layers import composite
from kmax_tf.model.layers import conv
from kmax_tf.model.layers import drop_path
from kmax_tf.model.layers import norm

# Pixel-decoder endpoint used by the layers at each stride.
STRIDE_ENDPOINTS = ((32, "decoder_stage1"), (16, "decoder_stage2"), (8, "decoder_stage3"))
AUXILIARY_OUTPUTS = "auxiliary_outputs_pred"


@keras.saving.register_keras_serializable(package="kmax_tf")
class CenterSelfAttention(keras.layers.Layer):
  """Multi-head attention among centers: q `[B,N,heads,dk]`, k `[B,N,heads,dk]`, v `[B,N,heads,dv]`
  -> `[B, N, heads*dv]`.

  Logits q.k are not scaled by 1/sqrt(dk); a BN per head (float32) sets their scale. The retrieved
  values get a BN per (head, channel) and the activation.
  """

  def __init__(self, num_heads: int, value_depth: int, activation: str = "gelu",
               norm_layer=None, **kwargs):
    super().__init__(**kwargs)
    self.num_heads = num_heads
    self.value_depth = value_depth
    self.activation = activation
    self.norm_layer = norm.get(norm_layer)
    self._activation_fn = activations.get_activation(activation)
    self.batch_norm_similarity = self.norm_layer(name="batch_norm_similarity", dtype="float32")
    self.batch_norm_retrieved_value = self.norm_layer(name="batch_norm_retrieved_value")

  def build(self, input_shape):
    self.batch_norm_similarity.build((None, None, None, self.num_heads))
    self.batch_norm_retrieved_value.build((None, None, self.value_depth))

  def call(self, query, key, value, training=None):
    length = ops.shape(query)[1]
    similarity = ops.cast(ops.einsum("blhd,bmhd->blmh", query, key), "float32")
    similarity = self.batch_norm_similarity(similarity, training=training)
    weights = ops.cast(ops.softmax(similarity, axis=2), value.dtype)
    retrieved = ops.einsum("blmh,bmhd->blhd", weights, value)
    retrieved = ops.reshape(retrieved, (-1, length, self.value_depth))
    return self._activation_fn(self.batch_norm_retrieved_value(retrieved, training=training))

  def get_config(self):
    config = super().get_config()
    config.update(num_heads=self.num_heads, value_depth=self.value_depth,
                  activation=self.activation, norm_layer=self.norm_layer.get_config())
    return config


@keras.saving.register_keras_serializable(package="kmax_tf")
class KMaXDecoderLayer(composite.BuiltOnFirstCall, keras.layers.Layer):
  """One kMaX layer: `call(pixels [B,h,w,Cp], centers [B,N,D]) -> (centers' [B,N,D], aux dict)`.

  1. m = act(BN(W m_in)); p = act(BN(W act(pixels))) (D channels each).
  2. q, k, v = BN(W m) (D/2, D/2, D); pixel values pv = BN(W p) (D).
  3. The clustering head predicts from (p, m); its mask logits give the hard assignment;
     centers += drop_path(k-means update).
  4. centers += drop_path(BN0(W selfattn(q, k, v))); centers = act(centers).
  5. centers = act(centers + drop_path(BN0(W act(BN(W centers))))) (FFN).
  BN0 = BN with gamma initialized to 0.
  """

  def __init__(self, channels: int = 256, num_heads: int = 8, ffn_channels: int = 2048,
               drop_path_keep_prob: float = 1.0, head_channels: int = 256,
               embedding_channels: int = 128, num_classes: int = 134,
               activation: str = "gelu", norm_layer=None, **kwargs):
    super().__init__(**kwargs)
    key_depth = channels // 2
    if key_depth % num_heads or channels % num_heads:
      raise ValueError(f"{self.name}: channels={channels} gives key depth {key_depth} and value "
                       f"depth {channels}, which must be divisible by num_heads={num_heads}")
    self.channels = channels
    self.num_heads = num_heads
    self.ffn_channels = ffn_channels
    self.drop_path_keep_prob = drop_path_keep_prob
    self.head_channels = head_channels
    self.embedding_channels = embedding_channels
    self.num_classes = num_classes
    self.activation = activation
    self.norm_layer = norm.get(norm_layer)
    self._key_depth = key_depth
    self._activation_fn = activations.get_activation(activation)
    qkv_init = keras.initializers.TruncatedNormal(stddev=channels ** -0.5)
    nl = self.norm_layer
    self.memory_conv1_bn_act = conv.Conv1x1(channels, norm_layer=nl, activation=activation,
                                            name="memory_conv1_bn_act")
    self.pixel_conv1_bn_act = conv.Conv1x1(channels, norm_layer=nl, activation=activation,
                                           name="pixel_conv1_bn_act")
    self.memory_qkv_conv_bn = conv.Conv1x1(2 * key_depth + channels, norm_layer=nl,
                                           kernel_initializer=qkv_init,
                                           name="memory_qkv_conv_bn")
    self.pixel_v_conv_bn = conv.Conv1x1(channels, norm_layer=nl, kernel_initializer=qkv_init,
                                        name="pixel_v_conv_bn")
    self.clustering_predictor = heads.PredictionHead(
        head_channels, embedding_channels, num_classes, activation, norm_layer=nl,
        name="auxiliary_clustering_predictor")
    self.kmeans_attention = kmax_attention.KMeansCrossAttention(channels, norm_layer=nl,
                                                                name="kmeans_attention")
    self.memory_attention = CenterSelfAttention(num_heads, channels, activation, norm_layer=nl,
                                                name="memory_attention")
    self.memory_conv3_bn = conv.Conv1x1(channels, norm_layer=nl, bn_gamma_initializer="zeros",
                                        name="memory_conv3_bn")
    self.memory_ffn_conv1_bn_act = conv.Conv1x1(ffn_channels, norm_layer=nl,
                                                activation=activation,
                                                name="memory_ffn_conv1_bn_act")
    self.memory_ffn_conv2_bn = conv.Conv1x1(channels, norm_layer=nl,
                                            bn_gamma_initializer="zeros",
                                            name="memory_ffn_conv2_bn")
    self.drop_paths = [drop_path.DropPath(drop_path_keep_prob, name=f"drop_path_{part}")
                       for part in ("kmeans", "attention", "ffn")]

  def call(self, pixels, centers, training=None):
    num_centers = ops.shape(centers)[1]
    heads_ = self.num_heads
    dk, dv = self._key_depth // heads_, self.channels // heads_
    memory = self.memory_conv1_bn_act(centers, training=training)
    pixel = self.pixel_conv1_bn_act(self._activation_fn(pixels), training=training)
    qkv = self.memory_qkv_conv_bn(memory, training=training)
    query, key, value = ops.split(qkv, [self._key_depth, 2 * self._key_depth], axis=-1)
    pixel_value = self.pixel_v_conv_bn(pixel, training=training)

    prediction = self.clustering_predictor(pixel, memory, memory, training=training)
    update = self.kmeans_attention(prediction[heads.MASK_LOGITS], pixel_value, training=training)
    centers = centers + self.drop_paths[0](update, training=training)

    attended = self.memory_attention(
        ops.reshape(query, (-1, num_centers, heads_, dk)),
        ops.reshape(key, (-1, num_centers, heads_, dk)),
        ops.reshape(value, (-1, num_centers, heads_, dv)), training=training)
    attended = self.memory_conv3_bn(attended, training=training)
    centers = self._activation_fn(centers + self.drop_paths[1](attended, training=training))

    ffn = self.memory_ffn_conv1_bn_act(centers, training=training)
    ffn = self.memory_ffn_conv2_bn(ffn, training=training)
    centers = self._activation_fn(centers + self.drop_paths[2](ffn, training=training))
    return centers, prediction

  def get_config(self):
    config = super().get_config()
    config.update(channels=self.channels, num_heads=self.num_heads,
                  ffn_channels=self.ffn_channels, drop_path_keep_prob=self.drop_path_keep_prob,
                  head_channels=self.head_channels, embedding_channels=self.embedding_channels,
                  num_classes=self.num_classes, activation=self.activation,
                  norm_layer=self.norm_layer.get_config())
    return config


@keras.saving.register_keras_serializable(package="kmax_tf")
class KMaXTransformerDecoder(composite.BuiltOnFirstCall, keras.Model):
  """Pixel-decoder endpoint dict -> same dict plus:

  - `transformer_class_feature`, `transformer_mask_feature` `[B, N, D]`: act(BN(W centers)) with
    separate weights,
  - `feature_panoptic` = `decoder_output`, `feature_semantic` = `stage5`,
  - `auxiliary_outputs_pred`: tuple with one clustering prediction dict per layer.

  Args:
    num_blocks: layers at strides 32, 16, 8 (deeplab2: 2, 2, 2).
    num_mask_slots: N cluster centers (learned, TruncatedNormal(1.0)).
    channels: center width D (deeplab2: 256); ffn_channels: FFN hidden width (2048).
    drop_path_keep_prob: constant keep probability of every layer.
    head_channels, embedding_channels, num_classes: clustering-head settings (the final head's).
  """

  def __init__(self, num_blocks: Sequence[int] = (2, 2, 2), num_mask_slots: int = 128,
               channels: int = 256, ffn_channels: int = 2048, drop_path_keep_prob: float = 1.0,
               head_channels: int = 256, embedding_channels: int = 128, num_classes: int = 134,
               norm_layer=None, **kwargs):
    super().__init__(**kwargs)
    if len(num_blocks) != 3:
      raise ValueError(f"{self.name}: num_blocks needs 3 entries (strides 32, 16, 8), got "
                       f"{tuple(num_blocks)}")
    self.num_blocks = tuple(int(n) for n in num_blocks)
    self.num_mask_slots = num_mask_slots
    self.channels = channels
    self.ffn_channels = ffn_channels
    self.drop_path_keep_prob = drop_path_keep_prob
    self.head_channels = head_channels
    self.embedding_channels = embedding_channels
    self.num_classes = num_classes
    self.norm_layer = norm.get(norm_layer)
    self.kmax_layers = []
    for (stride, _), count in zip(STRIDE_ENDPOINTS, self.num_blocks):
      for index in range(count):
        self.kmax_layers.append(KMaXDecoderLayer(
            channels, 8, ffn_channels, drop_path_keep_prob, head_channels, embedding_channels,
            num_classes, norm_layer=self.norm_layer, name=f"kmax_layer_os{stride}_{index}"))
    self.cluster_centers = self.add_weight(
        name="cluster_centers", shape=(1, num_mask_slots, channels),
        initializer=keras.initializers.TruncatedNormal(stddev=1.0))
    self.class_embedding_projection = conv.Conv1x1(channels, norm_layer=self.norm_layer,
                                                   activation="gelu",
                                                   name="class_embedding_projection")
    self.mask_embedding_projection = conv.Conv1x1(channels, norm_layer=self.norm_layer,
                                                  activation="gelu",
                                                  name="mask_embedding_projection")

  def call(self, endpoints, training=None):
    endpoints = dict(endpoints)
    batch = ops.shape(endpoints["decoder_stage1"])[0]
    centers = ops.tile(ops.cast(self.cluster_centers, self.compute_dtype), (batch, 1, 1))
    predictions = []
    layer_index = 0
    for (_, endpoint), count in zip(STRIDE_ENDPOINTS, self.num_blocks):
      for _ in range(count):
        centers, prediction = self.kmax_layers[layer_index](endpoints[endpoint], centers,
                                                            training=training)
        predictions.append(prediction)
        layer_index += 1
    endpoints["transformer_class_feature"] = self.class_embedding_projection(
        centers, training=training)
    endpoints["transformer_mask_feature"] = self.mask_embedding_projection(
        centers, training=training)
    endpoints["feature_panoptic"] = endpoints["decoder_output"]
    endpoints["feature_semantic"] = endpoints["stage5"]
    endpoints[AUXILIARY_OUTPUTS] = tuple(predictions)
    return endpoints

  def get_config(self):
    return {**super().get_config(), "num_blocks": list(self.num_blocks),
            "num_mask_slots": self.num_mask_slots, "channels": self.channels,
            "ffn_channels": self.ffn_channels, "drop_path_keep_prob": self.drop_path_keep_prob,
            "head_channels": self.head_channels, "embedding_channels": self.embedding_channels,
            "num_classes": self.num_classes, "norm_layer": self.norm_layer.get_config()}
