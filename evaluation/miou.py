"""Mean IoU with an ignore label, as deeplab2 reports it (Keras' MeanIoU, per-class access)."""
from __future__ import annotations

import keras
import numpy as np


class MeanIoU(keras.metrics.MeanIoU):
  """Streaming mIoU over semantic maps; pixels whose ground truth is `ignore_label` are skipped.

  Keras' MeanIoU already averages over classes with a non-zero denominator (deeplab2's
  behaviour: the void id, never predicted by the zero-threshold pass, drops out), and its
  confusion-matrix variable sums across replicas. `ignore_label` may lie outside
  `range(num_classes)` (Cityscapes 255).
  """

  def __init__(self, num_classes: int, ignore_label: int, name: str = "IoU", **kwargs):
    super().__init__(num_classes=num_classes, ignore_class=ignore_label, name=name, **kwargs)

  def per_class_iou(self) -> np.ndarray:
    """float64 `[num_classes]` IoU per class; NaN for classes absent from both maps."""
    confusion = np.asarray(self.total_cm.numpy(), np.float64)
    intersection = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
      return np.where(union > 0, intersection / union, np.nan)
