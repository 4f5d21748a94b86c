"""Panoptic Quality (PQ = SQ x RQ) on integer panoptic maps, as a streaming Keras metric.

The matching rules live in `pq_core.match_segments` (shared with the COCO-file evaluator); this
module maps deeplab2-style panoptic maps (`semantic * divisor + instance`) onto them.
"""
from __future__ import annotations

import keras
import numpy as np

from kmax_tf.evaluation import pq_core
from kmax_tf.evaluation.pq_core import CROWD_CONVENTIONS


class PanopticQuality(keras.metrics.Metric):
  """Streaming PQ over panoptic maps `semantic * max_instances_per_category + instance`.

  deeplab2's semantics: segments are the unique ids; the void segment is exactly
  `ignored_label * max_instances_per_category`; other ids of the ignored category are neither
  segments nor void. `result()` is the mean over classes with `tp + fn + fp > 0` of
  `[pq, sq, rq, tp, fn, fp]` (so tp/fn/fp are per-class averages, as deeplab2 reports them).

  The four accumulators are `[num_classes]` float64 variables with SUM aggregation, so per-replica
  metrics add up. `update_state` runs eagerly (numpy).

  `offset` (deeplab2's bound for encoding id pairs, a required argument there) is accepted so
  that deeplab2-style calls work, and ignored.
  """

  def __init__(self, num_classes: int, ignored_label: int, max_instances_per_category: int,
               offset: int | None = None, thing_class_ids=None, crowd_convention: str = "deeplab2",
               name: str = "panoptic_quality", **kwargs):
    super().__init__(name=name, **kwargs)
    if crowd_convention not in CROWD_CONVENTIONS:
      raise ValueError(f"crowd_convention must be one of {CROWD_CONVENTIONS}, "
                       f"got {crowd_convention!r}")
    self.num_classes = int(num_classes)
    self.ignored_label = int(ignored_label)
    self.max_instances_per_category = int(max_instances_per_category)
    # Segments are remapped to compact indices here: no id pair needs encoding.
    del offset
    self.thing_class_ids = None if thing_class_ids is None else tuple(thing_class_ids)
    self.crowd_convention = crowd_convention
    self._accumulators = {
        key: self.add_variable(shape=(self.num_classes,), initializer="zeros", dtype="float64",
                               aggregation="sum", name=f"total_{key}")
        for key in ("iou", "tp", "fn", "fp")}

  def compare_and_accumulate(self, y_true: np.ndarray, y_pred: np.ndarray,
                             is_crowd: np.ndarray | None = None):
    """Statistics `(iou, tp, fn, fp)` `[num_classes]` of one image `[H, W]`.

    `is_crowd` (bool `[H, W]`, optional) marks ground-truth crowd pixels; they then form one
    crowd region per category (official convention) or become void (deeplab2 convention).
    """
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_pred = np.asarray(y_pred).astype(np.int64).ravel()
    if y_true.shape != y_pred.shape:
      raise ValueError(f"y_true and y_pred differ in size: {y_true.size} vs {y_pred.size}")
    divisor = self.max_instances_per_category
    void_id = self.ignored_label * divisor
    crowd_base = max(int(y_true.max(initial=0)), void_id) + 1
    if is_crowd is not None:
      is_crowd = np.asarray(is_crowd, bool).ravel() & (y_true // divisor != self.ignored_label)
      if self.crowd_convention == "deeplab2":
        y_true = np.where(is_crowd, void_id, y_true)
      else:
        # Offset crowd pixels past every real id: one crowd segment per category.
        y_true = np.where(is_crowd, crowd_base + (y_true // divisor) * divisor, y_true)

    gt_ids, gt_inverse, gt_counts = np.unique(y_true, return_inverse=True, return_counts=True)
    gt_crowd = gt_ids >= crowd_base
    gt_category = np.where(gt_crowd, gt_ids - crowd_base, gt_ids) // divisor
    is_segment = gt_category != self.ignored_label
    num_gt = int(is_segment.sum())
    gt_slot = np.where(is_segment, np.cumsum(is_segment), num_gt + 1)
    gt_slot[gt_ids == void_id] = 0

    pred_ids, pred_inverse = np.unique(y_pred, return_inverse=True)
    pred_category = pred_ids // divisor
    pred_is_segment = pred_category != self.ignored_label
    pred_slot = np.where(pred_is_segment, np.cumsum(pred_is_segment), 0)

    categories = np.concatenate([gt_category[is_segment], pred_category[pred_is_segment]])
    if categories.size and (categories.min() < 0 or categories.max() >= self.num_classes):
      raise ValueError(
          f"panoptic ids encode classes outside [0, {self.num_classes}) (divisor {divisor}): "
          f"found class {int(categories.min())}..{int(categories.max())}")
    return pq_core.match_segments(gt_slot[gt_inverse], pred_slot[pred_inverse],
                          gt_category[is_segment], gt_counts[is_segment].astype(np.float64),
                          gt_crowd[is_segment], pred_category[pred_is_segment],
                          self.num_classes)

  def update_state(self, y_true, y_pred, sample_weight=None, is_crowd=None):
    """Adds one image `[H, W]` or a batch `[B, H, W]` of panoptic maps (sample_weight unused)."""
    del sample_weight
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim not in (2, 3):
      raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must both be [H, W] "
                       "or [B, H, W]")
    if y_true.ndim == 2:
      y_true, y_pred = y_true[None], y_pred[None]
      is_crowd = None if is_crowd is None else np.asarray(is_crowd)[None]
    totals = [np.zeros(self.num_classes) for _ in range(4)]
    for b in range(y_true.shape[0]):
      stats = self.compare_and_accumulate(
          y_true[b], y_pred[b], None if is_crowd is None else is_crowd[b])
      for total, value in zip(totals, stats):
        total += value
    for variable, total in zip(self._accumulators.values(), totals):
      variable.assign_add(total)

  def _numpy_state(self):
    return [np.asarray(v.numpy()) for v in self._accumulators.values()]

  def result(self):
    """`[pq, sq, rq, tp, fn, fp]` (float64) averaged over classes that appear."""
    averages, _ = pq_core.summarize(*self._numpy_state())
    return np.array([averages[k] for k in ("pq", "sq", "rq", "tp", "fn", "fp")])

  def detailed_results(self) -> dict:
    """{"all", "things", "stuff": {pq, sq, rq, tp, fn, fp, n}, "per_class": {id: {...}},
    "crowd_convention"}; things/stuff need `thing_class_ids`."""
    state = self._numpy_state()
    results = {"crowd_convention": self.crowd_convention}
    results["all"], per_class = pq_core.summarize(*state)
    if self.thing_class_ids is not None:
      things = list(self.thing_class_ids)
      stuff = [c for c in range(self.num_classes)
               if c not in set(things) and c != self.ignored_label]
      results["things"], _ = pq_core.summarize(*state, category_subset=things)
      results["stuff"], _ = pq_core.summarize(*state, category_subset=stuff)
    results["per_class"] = {
        c: {k: float(v[c]) for k, v in per_class.items()}
        for c in range(self.num_classes) if state[1][c] + state[2][c] + state[3][c] > 0}
    return results

  def reset_state(self):
    for variable in self._accumulators.values():
      variable.assign(np.zeros(self.num_classes))

  def reset_states(self):
    """deeplab2 / tf.keras name of `reset_state`."""
    self.reset_state()

  def get_config(self):
    config = super().get_config()
    config.update(num_classes=self.num_classes, ignored_label=self.ignored_label,
                  max_instances_per_category=self.max_instances_per_category,
                  thing_class_ids=self.thing_class_ids,
                  crowd_convention=self.crowd_convention)
    return config
