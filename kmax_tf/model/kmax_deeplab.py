"""kMaX-DeepLab meta-architecture (deeplab2 `kmax_deeplab.py`, `KMaXDeepLab`).

images -> normalise (x / 127.5 - 1) -> pad bottom/right to 32k+1 -> backbone -> pixel decoder ->
kMaX transformer decoder -> final prediction head (+ auxiliary semantic decoder/head).
No post-processing happens inside the model.
"""
from __future__ import annotations

import keras
from keras import ops

from kmax_tf import geometry
from kmax_tf.model import heads
from kmax_tf.model import transformer_decoder
from kmax_tf.model.layers import composite

# Largest stride of the backbone; padded inputs are OUTPUT_STRIDE * k + 1 pixels.
OUTPUT_STRIDE = 32
SEMANTIC_LOGITS = "semantic_logits"


def pad_to_output_stride(images):
  """Pads `[B, H, W, C]` with zeros at the bottom/right to `padded_length(H), padded_length(W)`.

  Zero after normalisation is the value 127.5 deeplab2's input pipeline pads with.
  """
  shape = ops.shape(images)
  pad_h = (OUTPUT_STRIDE - (shape[1] - 1) % OUTPUT_STRIDE) % OUTPUT_STRIDE
  pad_w = (OUTPUT_STRIDE - (shape[2] - 1) % OUTPUT_STRIDE) % OUTPUT_STRIDE
  return ops.pad(images, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]])


@keras.saving.register_keras_serializable(package="kmax_tf")
class KMaXDeepLab(composite.BuiltOnFirstCall, keras.Model):
  """`call(images [B, H, W, 3] in 0..255, training, semantic_logits=True)` -> dict of float32
  tensors.

  With (h, w) the size of `feature_panoptic` (stride 4, or the pixel-decoder output stride, of
  the padded input):
    pixel_space_mask_logits [B, h, w, N], pixel_space_normalized_feature [B, h, w, E],
    transformer_class_logits [B, N, C], semantic_logits [B, hs, ws, num_semantic_classes];
  when training, also `auxiliary_outputs_pred`: one dict per kMaX layer with the first three
  keys, mask logits and features resized (bilinear, aligned corners) to (h, w).

  `semantic_logits=False` (inference only) skips the auxiliary semantic branch and leaves
  `semantic_logits` out: it feeds only the training loss, the panoptic post-processing never
  reads it, and at 641x641 it is 11-22% of the inference time (COCO R50, 2 CPU cores).

  Args:
    encoder: images -> endpoint dict (`stage1..5`, `res1..5`).
    pixel_decoder: `KMaXPixelDecoder`; transformer_decoder: `KMaXTransformerDecoder`.
    head: final `PredictionHead`; semantic_head: `PanopticHead` for `semantic_logits`.
    semantic_decoder: `SemanticDecoder`, or None to apply the semantic head directly to
      `feature_semantic` (stride 32; deeplab2's Cityscapes setting).
  """

  def __init__(self, encoder, pixel_decoder, transformer_decoder_, head, semantic_head,
               semantic_decoder=None, **kwargs):
    super().__init__(**kwargs)
    self.encoder = encoder
    self.pixel_decoder = pixel_decoder
    self.transformer_decoder = transformer_decoder_
    self.head = head
    self.semantic_head = semantic_head
    self.semantic_decoder = semantic_decoder

  def call(self, images, training=None, semantic_logits=True):
    if len(images.shape) != 4 or images.shape[-1] != 3:
      raise ValueError(f"{self.name}: images must be [B, H, W, 3], got shape {images.shape}")
    if training and not semantic_logits:
      raise ValueError(f"{self.name}: semantic_logits=False is for inference; the training "
                       "loss needs them")
    x = ops.cast(images, "float32") / 127.5 - 1.0
    x = pad_to_output_stride(x)
    endpoints = self.encoder(x, training=training)
    endpoints = self.pixel_decoder(endpoints, training=training)
    endpoints = self.transformer_decoder(endpoints, training=training)
    outputs = dict(self.head(endpoints["feature_panoptic"],
                             endpoints["transformer_class_feature"],
                             endpoints["transformer_mask_feature"], training=training))
    if semantic_logits:
      if self.semantic_decoder is not None:
        semantic_feature = self.semantic_decoder(endpoints, training=training)
      else:
        semantic_feature = endpoints["feature_semantic"]
      outputs[SEMANTIC_LOGITS] = ops.cast(
          self.semantic_head(semantic_feature, training=training), "float32")
    if training:
      size = ops.shape(outputs[heads.MASK_LOGITS])[1:3]
      auxiliary = []
      for prediction in endpoints[transformer_decoder.AUXILIARY_OUTPUTS]:
        prediction = dict(prediction)
        for key in (heads.MASK_LOGITS, heads.NORMALIZED_FEATURE):
          prediction[key] = geometry.resize_align_corners(prediction[key], size)
        auxiliary.append(prediction)
      outputs[transformer_decoder.AUXILIARY_OUTPUTS] = tuple(auxiliary)
    return outputs

  def get_config(self):
    serialize = keras.saving.serialize_keras_object
    return {**super().get_config(), "encoder": serialize(self.encoder),
            "pixel_decoder": serialize(self.pixel_decoder),
            "transformer_decoder_": serialize(self.transformer_decoder),
            "head": serialize(self.head), "semantic_head": serialize(self.semantic_head),
            "semantic_decoder": (serialize(self.semantic_decoder)
                                 if self.semantic_decoder is not None else None)}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    for key in ("encoder", "pixel_decoder", "transformer_decoder_", "head", "semantic_head",
                "semantic_decoder"):
      if config.get(key) is not None:
        config[key] = keras.saving.deserialize_keras_object(config[key])
    return cls(**config)
