"""COCO instance-segmentation AP of the thing segments of panoptic predictions (pycocotools).

As deeplab2's `PanopticInstanceAveragePrecision`: ground-truth instances are the panoptic ids of
thing classes (crowd flag from `is_crowd`), predictions are the thing segments of the panoptic
output, each scored (mean semantic score) x (mean instance score) over its pixels. Masks are
kept as RLE until `result()` runs COCOeval(iouType="segm").
"""
from __future__ import annotations

import contextlib
import io
from typing import Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _encode(panoptic: np.ndarray, ids: np.ndarray) -> list[dict]:
  masks = np.asfortranarray((panoptic[:, :, None] == ids[None, None, :]).astype(np.uint8))
  return mask_utils.encode(masks)


def instance_scores(panoptic: np.ndarray, ids: np.ndarray, semantic_scores: np.ndarray,
                    instance_scores_map: np.ndarray) -> np.ndarray:
  """Per id in `ids`: mean of `semantic_scores` times mean of `instance_scores_map`."""
  _, index = np.unique(np.concatenate([ids, panoptic.ravel()]), return_inverse=True)
  pixel_index = index[len(ids):]
  count = np.bincount(pixel_index, minlength=index.max() + 1)
  semantic = np.bincount(pixel_index, weights=semantic_scores.ravel(), minlength=len(count))
  instance = np.bincount(pixel_index, weights=instance_scores_map.ravel(), minlength=len(count))
  own = index[:len(ids)]
  return (semantic[own] / count[own]) * (instance[own] / count[own])


class PanopticInstanceAP:
  """Accumulates images; `result()` returns the 12 COCO stats (`STAT_NAMES`), AP first.

  Returns -1 for every stat when there is no ground-truth instance at all (COCOeval's "absent");
  0 when there are instances but no prediction.
  """

  def __init__(self, num_classes: int, thing_class_ids: Sequence[int], label_divisor: int,
               ignored_label: int):
    self.num_classes = int(num_classes)
    self.thing_class_ids = tuple(int(c) for c in thing_class_ids)
    self.label_divisor = int(label_divisor)
    self.ignored_label = int(ignored_label)
    self.reset_state()

  def reset_state(self):
    self._images, self._gt, self._pred = [], [], []

  reset_states = reset_state

  def _thing_ids(self, panoptic: np.ndarray) -> np.ndarray:
    ids = np.unique(panoptic)
    classes = ids // self.label_divisor
    return ids[np.isin(classes, self.thing_class_ids) & (classes != self.ignored_label)]

  def update_state(self, groundtruth_panoptic, predicted_panoptic, semantic_scores,
                   instance_score_map, is_crowd=None):
    """Adds one image (all `[H, W]` numpy-convertible)."""
    gt = np.asarray(groundtruth_panoptic).astype(np.int64)
    pred = np.asarray(predicted_panoptic).astype(np.int64)
    if gt.shape != pred.shape or gt.ndim != 2:
      raise ValueError(f"groundtruth_panoptic {gt.shape} and predicted_panoptic {pred.shape} "
                       "must be equal [H, W] maps")
    image_id = len(self._images) + 1
    self._images.append({"id": image_id, "height": gt.shape[0], "width": gt.shape[1]})
    gt_ids = self._thing_ids(gt)
    crowd_map = (np.zeros(gt.shape, bool) if is_crowd is None
                 else np.asarray(is_crowd, bool))
    for segment_id, rle in zip(gt_ids, _encode(gt, gt_ids)):
      self._gt.append({
          "id": len(self._gt) + 1, "image_id": image_id,
          "category_id": int(segment_id // self.label_divisor), "segmentation": rle,
          "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist(),
          "iscrowd": int(crowd_map[gt == segment_id].any())})
    pred_ids = self._thing_ids(pred)
    scores = instance_scores(pred, pred_ids, np.asarray(semantic_scores, np.float64),
                             np.asarray(instance_score_map, np.float64))
    for segment_id, rle, score in zip(pred_ids, _encode(pred, pred_ids), scores):
      self._pred.append({"image_id": image_id, "category_id": int(segment_id //
                                                                 self.label_divisor),
                         "segmentation": rle, "score": float(score)})

  def result(self) -> np.ndarray:
    if not self._gt:
      return np.full(len(STAT_NAMES), -1.0)
    if not self._pred:
      return np.zeros(len(STAT_NAMES))
    with contextlib.redirect_stdout(io.StringIO()):
      gt = COCO()
      gt.dataset = {"images": self._images, "annotations": self._gt,
                    "categories": [{"id": c} for c in self.thing_class_ids]}
      gt.createIndex()
      evaluator = COCOeval(gt, gt.loadRes(self._pred), iouType="segm")
      evaluator.evaluate()
      evaluator.accumulate()
      evaluator.summarize()
    return np.asarray(evaluator.stats, np.float64)
