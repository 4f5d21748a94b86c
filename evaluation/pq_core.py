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
                   num_categories: int, pixel_weight: np.ndarray | None = None,
                   gt_image: np.ndarray | None = None):
  """PQ statistics of one image, or of several at once, from compact segment indices.

  Several images are matched in one call by concatenating their pixels and segment lists, with
  each image's segment indices offset past the previous images' (0 and G + 1 are shared):
  segments of different images share no pixel, so they never pair.

  Args:
    gt_index: int `[P]` per pixel: 0 void, 1..G the G ground-truth segments, G + 1 pixels that
      are neither (labels absent from the segment list: not void, never matched).
    pred_index: int `[P]` per pixel: 0 no segment, 1..Q the Q predicted segments.
    gt_category, gt_area, gt_crowd: `[G]` dense category index, area (panopticapi takes it from
      the JSON) and crowd flag of each ground-truth segment.
    pred_category: `[Q]` dense category index of each predicted segment (its area is counted).
    num_categories: length of the returned arrays.
    pixel_weight: optional int `[P]`, how many pixels each entry stands for (default 1).
    gt_image: optional int `[G]`, the image of each ground-truth segment (default: all one
      image). An unmatched prediction is forgiven by the last crowd segment of its category in
      its image's list order (what panopticapi's per-image dictionary ends up holding).

  Returns:
    `(iou_sum, tp, fn, fp)`, float64 arrays `[num_categories]`.
  """
  num_gt, num_pred = len(gt_category), len(pred_category)
  cols = num_pred + 1
  counts = np.bincount(gt_index.astype(np.int64) * cols + pred_index, pixel_weight,
                       minlength=(num_gt + 2) * cols)
  pred_area = counts.reshape(num_gt + 2, cols)[:, 1:].sum(axis=0)
  void_overlap = counts[1:cols]
  # Only ground-truth/prediction pairs that share pixels can match or forgive: work on those.
  entries = cols + np.flatnonzero(counts[cols:(num_gt + 1) * cols])
  gt, pred = np.divmod(entries, cols)
  has_pred = pred > 0
  entries, gt, pred = entries[has_pred], gt[has_pred] - 1, pred[has_pred] - 1
  pairs = counts[entries].astype(np.float64)
  union = gt_area[gt] + pred_area[pred] - pairs - void_overlap[pred]
  iou = np.divide(pairs, union, out=np.zeros_like(pairs), where=union > 0)
  same_category = gt_category[gt] == pred_category[pred]
  # IoU > 0.5 makes a match unique on both sides, so no assignment step is needed.
  matched = same_category & ~gt_crowd[gt] & (iou > 0.5)
  gt_matched = np.zeros(num_gt, bool)
  gt_matched[gt[matched]] = True
  pred_matched = np.zeros(num_pred, bool)
  pred_matched[pred[matched]] = True
  tp = np.bincount(gt_category[gt_matched], minlength=num_categories).astype(np.float64)
  iou_sum = np.bincount(gt_category[gt[matched]], weights=iou[matched],
                        minlength=num_categories)
  fn = np.bincount(gt_category[~gt_matched & ~gt_crowd],
                   minlength=num_categories).astype(np.float64)

  forgiving = _last_crowd_of_each_category(gt_category, gt_crowd, gt_image, num_categories)
  from_crowd = forgiving[gt] & same_category
  crowd_overlap = np.bincount(pred[from_crowd], weights=pairs[from_crowd], minlength=num_pred)
  forgiven = (void_overlap + crowd_overlap) > 0.5 * pred_area
  fp = np.bincount(pred_category[~pred_matched & ~forgiven],
                   minlength=num_categories).astype(np.float64)
  return iou_sum, tp, fn, fp


def _last_crowd_of_each_category(gt_category, gt_crowd, gt_image, num_categories):
  """bool `[G]`: the crowd segments listed last for their (image, category)."""
  crowd = np.flatnonzero(gt_crowd)
  image = 0 if gt_image is None else np.asarray(gt_image)[crowd]
  group = image * num_categories + gt_category[crowd]
  # np.unique returns first occurrences; reversed, those are the last ones.
  _, from_end = np.unique(group[::-1], return_index=True)
  last = np.zeros(len(gt_category), bool)
  last[crowd[len(crowd) - 1 - from_end]] = True
  return last


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
