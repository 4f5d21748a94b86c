"""PQ on COCO panoptic format files (JSON + RGB PNG folders), numbers identical to panopticapi.

Implements the rules of panopticapi's `pq_compute` (VOID = id 0, crowd handling, IoU > 0.5,
ground-truth areas from the JSON, predicted areas from the PNG, the same sanity errors) through
`pq_core.match_segments`. It is faster because PNGs are decoded by `panoptic_png` (batched,
only rows that differ from the row above), pixels are counted as horizontal runs of equal
(ground truth, prediction) pairs, it never sorts pixels (run ids are mapped to compact segment
indices by a binary search over the ids the JSON lists; the intersections of a batch of images
are one weighted `np.bincount`), and `--workers` spreads images over processes.

`crowd_convention="deeplab2"` instead turns ground-truth crowd segments into VOID (deeplab2's
converters), which forgives predictions of any category over crowd and drops crowd from unions.
"""
from __future__ import annotations

import json
import multiprocessing
import os
from typing import Sequence

import cv2
import numpy as np
# np.unique imports numpy.ma on first use (numpy 2.x, 15-40 ms); importing it here, before the
# workers fork, spares every worker that cost.
import numpy.ma  # pylint: disable=unused-import

from kmax_tf.evaluation import panoptic_png, pq_core

_GROUPS = (("All", None), ("Things", True), ("Stuff", False))
_BATCH = 16  # image pairs per libpng call (panoptic_png) and per `match_segments` call

def _read(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise FileNotFoundError(f"Cannot read PNG {path}: {e}") from e


def _map_ids(ids: np.ndarray, segment_ids: Sequence[int], slots: np.ndarray) -> np.ndarray:
  """`slots[k]` where ids equal `segment_ids[k]` (the last listed, for a repeated id), 0 where an
  unlisted id is 0, -1 elsewhere.

  A binary search over the few listed ids: `ids` holds one entry per run, not per pixel. (A
  lookup table over all 2^24 ids took ~80 ms per process to fault in its pages.)
  """
  listed = np.asarray(segment_ids, np.int64)
  if not listed.size:
    return np.where(ids == 0, 0, -1)
  order = np.argsort(listed, kind="stable")
  listed = listed[order]
  position = np.searchsorted(listed, ids, side="right") - 1
  found = position >= 0
  found[found] = listed[position[found]] == ids[found]
  mapped = np.where(found, np.asarray(slots, np.int64)[order][position], -1)
  mapped[~found & (ids == 0)] = 0
  return mapped


def _runs(gt_key, gt_rows, pred_key, pred_rows, height):
  """Run-length form of a ground-truth/prediction pair of key-row images: `(gt_ids, pred_ids,
  weight)` `[N]`, one entry per horizontal run of equal (ground truth, prediction) pixels in
  the union of both images' key rows, weighing its length times the rows that repeat it.
  Segment outlines change few pixels per row, so N is far below the pixel count."""
  rows = np.union1d(gt_key, pred_key)
  gt = gt_rows if len(rows) == len(gt_key) else gt_rows[
      np.searchsorted(gt_key, rows, side="right") - 1]
  pred = pred_rows if len(rows) == len(pred_key) else pred_rows[
      np.searchsorted(pred_key, rows, side="right") - 1]
  width = gt.shape[1]
  starts = np.empty(gt.shape, bool)
  starts[:, 0] = True
  np.not_equal(gt[:, 1:], gt[:, :-1], out=starts[:, 1:])
  starts[:, 1:] |= pred[:, 1:] != pred[:, :-1]
  starts = np.flatnonzero(starts)
  lengths = np.diff(starts, append=gt.size)
  weight = lengths * np.diff(rows, append=height)[starts // width]
  return gt.ravel()[starts], pred.ravel()[starts], weight


def batch_stats(annotation_pairs: Sequence[tuple[dict, dict]], images: Sequence,
                category_index: dict, crowd_convention: str = "official"):
  """PQ statistics `(iou, tp, fn, fp)` `[K + 1]` summed over a batch of images (index K
  collects unknown GT categories, which panopticapi counts but never averages).

  `annotation_pairs`: (ground truth, prediction) annotations; `images`: for each pair, the ground
  truth's then the prediction's `(key_rows, ids, height)` from `panoptic_png.decode_batch`. Rows
  between key rows repeat the row above in both images, so each row of the union of key rows
  stands for itself and the rows repeating it (its pixels weigh that many rows).
  """
  if crowd_convention not in pq_core.CROWD_CONVENTIONS:
    raise ValueError(f"crowd_convention must be one of {pq_core.CROWD_CONVENTIONS}, "
                     f"got {crowd_convention!r}")
  num_categories = len(category_index)
  kept, dropped, pred_lists = [], [], []
  for gt_annotation, pred_annotation in annotation_pairs:
    segments = gt_annotation["segments_info"]
    dropped_ids = []
    if crowd_convention == "deeplab2":  # crowd segments read as VOID
      dropped_ids = [s["id"] for s in segments if s.get("iscrowd", 0)]
      segments = [s for s in segments if not s.get("iscrowd", 0)]
    kept.append(segments)
    dropped.append(dropped_ids)
    pred_lists.append(pred_annotation["segments_info"])
  gt_offsets = np.cumsum([0] + [len(k) for k in kept])
  pred_offsets = np.cumsum([0] + [len(p) for p in pred_lists])
  num_gt, num_pred = int(gt_offsets[-1]), int(pred_offsets[-1])
  unlisted = num_gt + 1

  gt_index, pred_index, weights = [], [], []
  for i, ((gt_annotation, pred_annotation), gt_image, pred_image) in enumerate(
      zip(annotation_pairs, images[0::2], images[1::2])):
    (gt_key, gt_rows, height), (pred_key, pred_rows, pred_height) = gt_image, pred_image
    if (height, gt_rows.shape[1]) != (pred_height, pred_rows.shape[1]):
      raise ValueError(f"Image {gt_annotation['image_id']}: ground truth is {height}x"
                       f"{gt_rows.shape[1]}, prediction {pred_height}x{pred_rows.shape[1]} "
                       f"({pred_annotation['file_name']})")
    gt_ids, pred_ids, weight = _runs(gt_key, gt_rows, pred_key, pred_rows, height)
    weights.append(weight)
    gt_slots = np.concatenate([gt_offsets[i] + np.arange(1, len(kept[i]) + 1),
                               np.zeros(len(dropped[i]), np.int64)])
    slots = _map_ids(gt_ids, [s["id"] for s in kept[i]] + dropped[i], gt_slots)
    slots[slots < 0] = unlisted
    gt_index.append(slots)
    slots = _map_ids(pred_ids, [s["id"] for s in pred_lists[i]],
                     pred_offsets[i] + np.arange(1, len(pred_lists[i]) + 1))
    if (slots < 0).any():
      unknown = np.unique(pred_ids[slots < 0])
      raise KeyError(f"In the image with ID {gt_annotation['image_id']} segments with IDs "
                     f"{unknown.tolist()} are presented in PNG and not presented in JSON.")
    pred_index.append(slots)
  gt_index, pred_index, weights = (np.concatenate(a) for a in (gt_index, pred_index, weights))

  pred_area = np.bincount(pred_index, weights=weights, minlength=num_pred + 1)[1:]
  absent = np.flatnonzero(pred_area == 0)
  if absent.size:
    i = int(np.searchsorted(pred_offsets, absent[0], side="right") - 1)
    missing = [s["id"] for s, a in zip(pred_lists[i], pred_area[pred_offsets[i]:]) if a == 0]
    raise KeyError(f"In the image with ID {annotation_pairs[i][0]['image_id']} the following "
                   f"segment IDs {missing} are presented in JSON and not presented in PNG.")
  pred_category = []
  for (gt_annotation, _), segments in zip(annotation_pairs, pred_lists):
    for segment in segments:
      if segment["category_id"] not in category_index:
        raise KeyError(f"In the image with ID {gt_annotation['image_id']} segment with ID "
                       f"{segment['id']} has unknown category_id {segment['category_id']}.")
      pred_category.append(category_index[segment["category_id"]])
  gt_segments = [s for segments in kept for s in segments]
  return pq_core.match_segments(
      gt_index, pred_index,
      np.array([category_index.get(s["category_id"], num_categories) for s in gt_segments],
               np.int64),
      np.array([s["area"] for s in gt_segments], np.float64),
      np.array([bool(s.get("iscrowd", 0)) for s in gt_segments], bool),
      np.array(pred_category, np.int64), num_categories + 1, pixel_weight=weights,
      gt_image=np.repeat(np.arange(len(kept)), [len(k) for k in kept]))


def _chunk_stats(args):
  pairs, gt_folder, pred_folder, category_index, crowd_convention = args
  totals = np.zeros((4, len(category_index) + 1))
  # OpenCV's own threads cost more than they save on these small calls (one process: 0.68-0.77 s
  # instead of 0.90-1.08 s for 500 image pairs), and workers already use every core.
  opencv_threads = cv2.getNumThreads()
  cv2.setNumThreads(1)
  try:
    for start in range(0, len(pairs), _BATCH):
      batch = pairs[start:start + _BATCH]
      paths = [os.path.join(folder, annotation["file_name"]) for pair in batch
               for folder, annotation in zip((gt_folder, pred_folder), pair)]
      images = panoptic_png.decode_batch([_read(p) for p in paths], paths)
      totals += np.stack(batch_stats(batch, images, category_index, crowd_convention))
  finally:
    cv2.setNumThreads(opencv_threads)
  return totals


def pq_compute(gt_json_file: str, pred_json_file: str, gt_folder: str | None = None,
               pred_folder: str | None = None, workers: int = 1,
               crowd_convention: str = "official") -> dict:
  """Returns panopticapi's result dict: {"All", "Things", "Stuff": {pq, sq, rq, n},
  "per_class": {category_id: {pq, sq, rq}}} plus "crowd_convention" and "num_images".

  Differs only where panopticapi crashes: a group without categories gives zeros.
  """
  with open(gt_json_file, encoding="utf-8") as f:
    gt_json = json.load(f)
  with open(pred_json_file, encoding="utf-8") as f:
    pred_json = json.load(f)
  gt_folder = gt_folder or gt_json_file.replace(".json", "")
  pred_folder = pred_folder or pred_json_file.replace(".json", "")
  for folder in (gt_folder, pred_folder):
    if not os.path.isdir(folder):
      raise FileNotFoundError(f"Folder {folder} with segmentations doesn't exist")
  categories = gt_json["categories"]
  category_index = {c["id"]: i for i, c in enumerate(categories)}
  predictions = {a["image_id"]: a for a in pred_json["annotations"]}
  pairs = []
  for gt_annotation in gt_json["annotations"]:
    if gt_annotation["image_id"] not in predictions:
      raise KeyError(f"no prediction for the image with id: {gt_annotation['image_id']}")
    pairs.append((gt_annotation, predictions[gt_annotation["image_id"]]))

  workers = max(1, min(int(workers), len(pairs)))
  chunks = [(pairs[i::workers], gt_folder, pred_folder, category_index, crowd_convention)
            for i in range(workers)]
  if workers == 1:
    totals = _chunk_stats(chunks[0])
  else:
    # fork: workers need nothing but numpy, OpenCV and libdeflate, and spawned children re-run
    # the parent's __main__ (under pytest they never come up).
    with multiprocessing.get_context("fork").Pool(workers) as pool:
      totals = sum(pool.map(_chunk_stats, chunks))
  stats = totals[:, :len(categories)]

  is_thing = np.array([c.get("isthing", 0) == 1 for c in categories])
  results = {"crowd_convention": crowd_convention, "num_images": len(pairs)}
  for name, thing in _GROUPS:
    subset = None if thing is None else np.flatnonzero(is_thing == thing)
    averages, per_category = pq_core.summarize(*stats, category_subset=subset)
    results[name] = {k: averages[k] for k in ("pq", "sq", "rq", "n")}
  results["per_class"] = {
      c["id"]: {k: float(per_category[k][i]) for k in ("pq", "sq", "rq")}
      for i, c in enumerate(categories)}
  return results


def format_table(results: dict) -> str:
  """panopticapi's printed table (percentages)."""
  lines = [f"{'':10s}| {'PQ':>5s}  {'SQ':>5s}  {'RQ':>5s} {'N':>5s}", "-" * 38]
  for name, _ in _GROUPS:
    r = results[name]
    lines.append(f"{name:10s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  "
                 f"{100 * r['rq']:5.1f} {r['n']:5d}")
  lines.append(f"crowd convention: {results['crowd_convention']}")
  return "\n".join(lines)
