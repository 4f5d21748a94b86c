"""Per-image PQ statistics from compact segment indices, and PQ/SQ/RQ summaries (numpy only).

Shared by the Keras metric (`panoptic_quality`) and the COCO-file evaluator (`pq_files`). Both
crowd conventions go through `match_segments`:

- "official" (panopticapi's `pq_compute`): a crowd region is never matched, keeps its pixels in
  the union of overlapping predictions, and forgives an unmatched prediction *of its own
  category* when void + crowd overlap exceeds half of the prediction.
- "deeplab2" (its converters write crowd as void): crowd pixels are void, so they leave the union
  and forgive an unmatched prediction of *any* category. Reads a few tenths of PQ higher.
"""
from __future__ import annotations

import numpy as np

CROWD_CONVENTIONS = ("official", "deeplab2")


def match_segments(gt_index: np.ndarray, pred_index: np.ndarray, gt_category: np.ndarray,
                   gt_area: np.ndarray, gt_crowd: np.ndarray, pred_category: np.ndarray,
                   num_categories: int, crowd_of_category: np.ndarray | None = None,
                   pixel_weight: np.ndarray | None = None):
  """PQ statistics of one image from compact segment indices.

  Args:
    gt_index: int `[P]` per pixel: 0 void, 1..G the G ground-truth segments, G + 1 pixels that
      are neither (labels absent from the segment list: not void, never matched).
    pred_index: int `[P]` per pixel: 0 no segment, 1..Q the Q predicted segments.
    gt_category, gt_area, gt_crowd: `[G]` dense category index, area (panopticapi takes it from
      the JSON) and crowd flag of each ground-truth segment.
    pred_category: `[Q]` dense category index of each predicted segment (its area is counted).
    num_categories: length of the returned arrays.
    crowd_of_category: `[num_categories]` ground-truth segment (0-based) whose overlap forgives
      unmatched predictions of that category, -1 for none. Default: the last crowd segment of the
      category in list order (what panopticapi's dictionary ends up holding).
    pixel_weight: optional int `[P]`, how many pixels each entry stands for (default 1).

  Returns:
    `(iou_sum, tp, fn, fp)`, float64 arrays `[num_categories]`.
  """
  num_gt, num_pred = len(gt_category), len(pred_category)
  cols = num_pred + 1
  intersection = np.bincount(gt_index.astype(np.int64) * cols + pred_index, pixel_weight,
                             minlength=(num_gt + 2) * cols).reshape(num_gt + 2, cols)
  pred_area = intersection[:, 1:].sum(axis=0)
  void_overlap = intersection[0, 1:]
  pairs = intersection[1:num_gt + 1, 1:].astype(np.float64)  # [G, Q]
  union = gt_area[:, None] + pred_area[None, :] - pairs - void_overlap[None, :]
  iou = np.divide(pairs, union, out=np.zeros_like(pairs), where=union > 0)
  candidate = ((gt_category[:, None] == pred_category[None, :]) & ~gt_crowd[:, None] &
               (pairs > 0))
  # IoU > 0.5 makes a match unique on both sides, so no assignment step is needed.
  matched = candidate & (iou > 0.5)
  gt_matched = matched.any(axis=1)
  pred_matched = matched.any(axis=0)
  tp = np.bincount(gt_category[gt_matched], minlength=num_categories).astype(np.float64)
  iou_sum = np.bincount(gt_category, weights=np.where(matched, iou, 0.0).sum(axis=1),
                        minlength=num_categories)
  fn = np.bincount(gt_category[~gt_matched & ~gt_crowd],
                   minlength=num_categories).astype(np.float64)

  if crowd_of_category is None:
    crowd_of_category = np.full(num_categories, -1)
    for segment in np.flatnonzero(gt_crowd):
      crowd_of_category[gt_category[segment]] = segment
  crowd = crowd_of_category[pred_category]  # [Q]
  has_crowd = crowd >= 0
  crowd_overlap = np.zeros(num_pred)
  crowd_overlap[has_crowd] = pairs[crowd[has_crowd], np.flatnonzero(has_crowd)]
  forgiven = (void_overlap + crowd_overlap) > 0.5 * pred_area
  fp = np.bincount(pred_category[~pred_matched & ~forgiven],
                   minlength=num_categories).astype(np.float64)
  return iou_sum, tp, fn, fp


def summarize(iou_sum, tp, fn, fp, category_subset=None):
  """Per-category and averaged PQ/SQ/RQ from accumulated statistics (numpy arrays `[K]`).

  Averages run over categories (optionally restricted to `category_subset` indices) with
  `tp + fn + fp > 0`; PQ/SQ/RQ are 0 when no category qualifies.
  Returns `(averages dict with pq, sq, rq, tp, fn, fp, n; per-category dict of arrays)`.
  """
  iou_sum, tp, fn, fp = (np.asarray(a, np.float64) for a in (iou_sum, tp, fn, fp))
  denominator = tp + 0.5 * fn + 0.5 * fp
  sq = np.divide(iou_sum, tp, out=np.zeros_like(tp), where=tp > 0)
  rq = np.divide(tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
  per_category = {"pq": sq * rq, "sq": sq, "rq": rq, "tp": tp, "fn": fn, "fp": fp}
  present = tp + fn + fp > 0
  if category_subset is not None:
    selected = np.zeros_like(present)
    selected[np.asarray(category_subset, np.int64)] = True
    present &= selected
  count = int(present.sum())
  averages = {key: float(value[present].mean()) if count else 0.0
              for key, value in per_category.items()}
  averages["n"] = count
  return averages, per_category
