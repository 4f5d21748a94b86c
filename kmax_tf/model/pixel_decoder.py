"""kMaX pixel decoder (deeplab2 `pixel_decoder/kmax.py`, `KMaXPixelDecoder`).

From the backbone's stride-32 endpoint upwards: LayerNorm(endpoint) -> block group -> fuse with
the next finer LayerNorm'd endpoint -> block group ... Axial blocks at strides 32 and 16 make it
play the role of a transformer encoder; the finer stages use bottleneck blocks whose 3x3 convs
are dilated by 2 (deeplab2 builds them with output_stride 16 and input stride 32).
"""
from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from kmax_tf.model.layers import blocks
from kmax_tf.model.layers import norm
from kmax_tf.model.layers import resized_fuse

# Backbone endpoint consumed by each decoder stage, coarsest first.
STAGE_ENDPOINTS = ("stage5", "stage4", "stage3", "stage2", "stage1")
DEFAULT_ENDPOINT_STRIDES = {"stage1": 2, "stage2": 4, "stage3": 8, "stage4": 16, "stage5": 32}


@keras.saving.register_keras_serializable(package="kmax_tf")
class KMaXPixelDecoder(keras.Model):
  """Endpoint dict -> same dict plus `decoder_stage1..{n-1}` and `decoder_output`.

  Stage i works at the stride of `STAGE_ENDPOINTS[i]` and outputs `4 * dims[i]` channels:
  `decoder_stage1` is stride 32 (`4*dims[0]` ch), ..., `decoder_output` is the finest stage.

  Args:
    dims: base widths per stage (deeplab2: 512, 256, 128, 64[, 32]).
    num_blocks: blocks per stage (deeplab2: 1, 5, 1, 1[, 1]).
    block_types: 'axial' or 'bottleneck' per stage.
    endpoint_strides: stride of each backbone endpoint `stageK` (ConvNeXt's stage1 is stride 4).
  """

  def __init__(self, dims: Sequence[int] = (512, 256, 128, 64),
               num_blocks: Sequence[int] = (1, 5, 1, 1),
               block_types: Sequence[str] = ("axial", "axial", "bottleneck", "bottleneck"),
               endpoint_strides: dict | None = None, norm_layer=None, **kwargs):
    super().__init__(**kwargs)
    if not len(dims) == len(num_blocks) == len(block_types):
      raise ValueError(f"{self.name}: dims {tuple(dims)}, num_blocks {tuple(num_blocks)} and "
                       f"block_types {tuple(block_types)} must have the same length")
    if len(dims) not in (4, 5):
      raise ValueError(f"{self.name}: 4 or 5 stages are supported, got {len(dims)}")
    self.dims = tuple(int(d) for d in dims)
    self.num_blocks = tuple(int(n) for n in num_blocks)
    self.block_types = tuple(block_types)
    self.endpoint_strides = dict(endpoint_strides or DEFAULT_ENDPOINT_STRIDES)
    self.norm_layer = norm.get(norm_layer)
    num_stages = len(self.dims)
    self.backbone_norms = [keras.layers.LayerNormalization(epsilon=1e-6, name=f"backbone_norm{i}")
                           for i in range(num_stages)]
    self.stages = [
        blocks.BlockGroup(self.dims[i], (self.block_types[i],) * self.num_blocks[i],
                          dilation_rate=2, activation="gelu", norm_layer=self.norm_layer,
                          name=f"stage{i}")
        for i in range(num_stages)]
    self.skip_connections = None

  def build(self, input_shape):
    missing = [k for k in STAGE_ENDPOINTS[:len(self.dims)] if k not in input_shape]
    if missing:
      raise ValueError(f"{self.name}: backbone endpoints {missing} missing; got "
                       f"{sorted(input_shape)}")
    self.skip_connections = []
    for i in range(len(self.dims) - 1):
      coarse, fine = STAGE_ENDPOINTS[i], STAGE_ENDPOINTS[i + 1]
      self.skip_connections.append(resized_fuse.ResizedFuse(
          self.dims[i + 1], input_channels=(4 * self.dims[i], input_shape[fine][-1]),
          resize_inputs=(self.endpoint_strides[coarse] != self.endpoint_strides[fine], False),
          activation="gelu", norm_layer=self.norm_layer, name=f"skip_connection{i}"))

  def call(self, endpoints, training=None):
    endpoints = dict(endpoints)
    x = self.backbone_norms[0](endpoints[STAGE_ENDPOINTS[0]])
    for i, skip_connection in enumerate(self.skip_connections):
      x = self.stages[i](x, training=training)
      endpoints[f"decoder_stage{i + 1}"] = x
      skip = self.backbone_norms[i + 1](endpoints[STAGE_ENDPOINTS[i + 1]])
      x = skip_connection([x, skip], size=ops.shape(skip)[1:3], training=training)
    endpoints["decoder_output"] = self.stages[-1](x, training=training)
    return endpoints

  def get_config(self):
    return {**super().get_config(), "dims": list(self.dims), "num_blocks": list(self.num_blocks),
            "block_types": list(self.block_types), "endpoint_strides": self.endpoint_strides,
            "norm_layer": self.norm_layer.get_config()}
