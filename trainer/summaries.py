"""TensorBoard images of training: an input image and the model's panoptic prediction over it."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from kmax_tf import inference, panoptic_files


class PanopticOverlay:
  """Callable `overlay(images) -> uint8 [B, H, W, 3]`: inference-mode prediction drawn over
  `images` (float32 `[B, H, W, 3]`, 0..255) with the evaluator's thresholds and colours.

  Runs eagerly on the host, so it adds nothing to the traced train step.
  """

  def __init__(self, model, dataset, evaluator_options):
    self._dataset = dataset
    self._predictor = inference.Predictor(model, dataset, evaluator_options)

  def __call__(self, images) -> np.ndarray:
    images = tf.convert_to_tensor(images, tf.float32)
    panoptic = self._predictor(images)["panoptic_pred"].numpy()
    return np.stack([panoptic_files.panoptic_overlay(image, prediction, self._dataset)
                     for image, prediction in zip(images.numpy(), panoptic)])


def write_images(tag: str, images, step) -> None:
  """`tf.summary.image` of uint8 or 0..255 float `[B, H, W, 3]` under the default writer."""
  images = tf.convert_to_tensor(np.asarray(images, np.uint8))
  tf.summary.image(tag, images, step=step, max_outputs=int(images.shape[0]))
