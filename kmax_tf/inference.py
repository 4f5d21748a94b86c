"""The one inference path: kMaX model -> post-processing at the padded input size -> crop.

The model pads its input bottom/right to the next `32k + 1` size; post-processing runs at that
padded size (its area limits count pixels there) and the maps are cropped back to the valid
region (and, for the evaluator, resized to the raw label size). The evaluator, the training
summaries' overlays, the exported SavedModel and `kmax-tf predict` all go through
`Predictor.__call__`.
"""
from __future__ import annotations

import tensorflow as tf

from kmax_tf import geometry, postprocess

# Raw model outputs passed through next to the post-processing outputs.
RAW_OUTPUT_KEYS = ("pixel_space_mask_logits", "pixel_space_normalized_feature",
                   "transformer_class_logits", "semantic_logits")


class Predictor:
  """Callable `predictor(images, valid_size=None, output_size=None) -> dict` of a kMaX model
  with the post-processing of `evaluator_options`.

  Args:
    model: a kMaX model (`kmax_tf.model.builder.build_model`).
    dataset: its `DatasetDescriptor`.
    evaluator_options: `EvaluatorOptions` with the post-processing thresholds.
    semantic_logits: whether to compute and return the raw `semantic_logits`; False skips the
      auxiliary semantic branch, which no post-processing output needs.
  """

  def __init__(self, model, dataset, evaluator_options, semantic_logits: bool = False):
    self.model = model
    self.semantic_logits = semantic_logits
    self.postprocessor = postprocess.PostProcessor.from_options(evaluator_options, dataset)

  def __call__(self, images, valid_size=None, output_size=None) -> dict[str, tf.Tensor]:
    """Predictions for `images`.

    Args:
      images: float32 `[B, H, W, 3]` in 0..255; H and W may be dynamic (in a `tf.function`).
      valid_size: (height, width) of the image region to predict for (ints or int32 `[2]`),
        the top-left part of `images`; defaults to (H, W).
      output_size: (height, width) the cropped maps are resized to (nearest, aligned
        corners); defaults to `valid_size` (no resize).

    Returns:
      `panoptic_pred`, `semantic_pred`, `instance_pred` int32 and `semantic_scores`,
      `instance_scores` float32 `[B, h_out, w_out]` (see `postprocess.PostProcessor`), and the
      raw model outputs of `RAW_OUTPUT_KEYS` it computed.
    """
    outputs = self.model(images, training=False, semantic_logits=self.semantic_logits)
    # The model pads its input to 32k + 1 pixels. Static sizes stay Python ints (one
    # post-processing graph per traced size), dynamic ones are int32 tensors.
    if images.shape[1:3].is_fully_defined():
      size = tuple(images.shape[1:3])
      padded_size = tuple(geometry.padded_length(length) for length in size)
    else:
      size = tf.shape(images)[1:3]
      padded_size = geometry.padded_length(size)
    predictions = self.postprocessor(outputs["pixel_space_mask_logits"],
                                     outputs["transformer_class_logits"], output_size=padded_size)
    if valid_size is None:
      valid_size = size
    if output_size is None:
      predictions = postprocess.crop_padding(predictions, valid_size)
    else:
      predictions = postprocess.undo_padding(predictions, valid_size, output_size)
    predictions.update({key: outputs[key] for key in RAW_OUTPUT_KEYS if key in outputs})
    return predictions
