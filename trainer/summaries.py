"""TensorBoard images of training: an input image and the model's panoptic prediction over it."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from kmax_tf import geometry, postprocess
from kmax_tf.evaluation import evaluator as evaluator_lib


class PanopticOverlay:
  """Callable `overlay(images) -> uint8 [B, H, W, 3]`: inference-mode prediction drawn over
  `images` (float32 `[B, H, W, 3]`, 0..255) with the evaluator's thresholds and colours.

  Runs eagerly on the host, so it adds nothing to the traced train step.
  """

  def __init__(self, model, dataset, evaluator_options):
    self._model = model
    self._dataset = dataset
    self._options = postprocess.PostProcessingOptions.from_evaluator_options(evaluator_options)

  def __call__(self, images) -> np.ndarray:
    images = tf.convert_to_tensor(images, tf.float32)
    height, width = images.shape[1], images.shape[2]
    outputs = self._model(images, training=False, semantic_logits=False)
    processor = postprocess.PostProcessor(
        self._options, self._dataset.thing_class_ids, self._dataset.stuff_class_ids,
        self._dataset.ignore_label, self._dataset.panoptic_label_divisor,
        (geometry.padded_length(height, 32), geometry.padded_length(width, 32)))
    predictions = postprocess.undo_padding(
        processor(outputs["pixel_space_mask_logits"], outputs["transformer_class_logits"]),
        (height, width), (height, width))
    panoptic = predictions["panoptic_pred"].numpy()
    pixels = images.numpy()
    return np.stack([evaluator_lib.panoptic_overlay(image, prediction, self._dataset)
                     for image, prediction in zip(pixels, panoptic)])


def write_images(tag: str, images, step) -> None:
  """`tf.summary.image` of uint8 or 0..255 float `[B, H, W, 3]` under the default writer."""
  images = tf.convert_to_tensor(np.asarray(images, np.uint8))
  tf.summary.image(tag, images, step=step, max_outputs=int(images.shape[0]))
