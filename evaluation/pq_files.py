"""PQ on COCO panoptic format files (JSON + RGB PNG folders), numbers identical to panopticapi.

Implements the rules of panopticapi's `pq_compute` (VOID = id 0, crowd handling, IoU > 0.5,
ground-truth areas from the JSON, predicted areas from the PNG, the same sanity errors) through
`pq_core.match_segments`. It is faster because PNGs are decoded by `panoptic_png` (batched,
only rows that differ from the row above), it never sorts pixels (PNG ids are mapped to compact
segment indices with a lookup table over the 2^24 RGB ids the JSON lists, intersections are one
weighted `np.bincount`), and `--workers` spreads images over processes.

`crowd_convention="deeplab2"` instead turns ground-truth crowd segments into VOID (deeplab2's
converters), which forgives predictions of any category over crowd and drops crowd from unions.
"""
from __future__ import annotations

import json
import multiprocessing
import os
from typing import Sequence

import numpy as np

from kmax_tf.evaluation import panoptic_png, pq_core

_NUM_RGB_IDS = 1 << 24
_GROUPS = (("All", None), ("Things", True), ("Stuff", False))
_BATCH = 16  # image pairs decoded together (panoptic_png vectorises across a batch)

# Per-process lookup table (RGB id -> segment slot), allocated on first use; entries are reset
# after every use.
_LOOKUP: list[np.ndarray] = []


def _read(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise FileNotFoundError(f"Cannot read PNG {path}: {e}") from e


def _map_ids(ids: np.ndarray, segment_ids: Sequence[int]) -> np.ndarray:
  """Slots 1..S for the listed segment ids in order, 0 for an unlisted id 0, -1 otherwise."""
  if not _LOOKUP:
    _LOOKUP.append(np.full(_NUM_RGB_IDS, -1, np.int32))
  table = _LOOKUP[0]
  listed = np.asarray(segment_ids, np.int64)
  table[0] = 0
  table[listed] = np.arange(1, len(listed) + 1, dtype=np.int32)
  try:
    return table[ids]
  finally:
    table[listed] = -1
    table[0] = -1


def image_stats(gt_annotation: dict, pred_annotation: dict, gt_image, pred_image,
                category_index: dict, crowd_convention: str = "official"):
  """PQ statistics `(iou, tp, fn, fp)` `[K + 1]` of one image (index K collects unknown GT
  categories, which panopticapi counts but never averages).

  `gt_image`, `pred_image`: `(key_rows, ids, height)` from `panoptic_png.decode_batch`. Rows
  between key rows repeat the row above in both images, so each row of the union of key rows
  stands for itself and the rows repeating it (its pixels weigh that many rows).
  """
  image_id = gt_annotation["image_id"]
  num_categories = len(category_index)
  (gt_key, gt_rows, height), (pred_key, pred_rows, pred_height) = gt_image, pred_image
  if (height, gt_rows.shape[1]) != (pred_height, pred_rows.shape[1]):
    raise ValueError(f"Image {image_id}: ground truth is {height}x{gt_rows.shape[1]}, "
                     f"prediction {pred_height}x{pred_rows.shape[1]} "
                     f"({pred_annotation['file_name']})")
  rows = np.union1d(gt_key, pred_key)
  gt_ids = gt_rows[np.searchsorted(gt_key, rows, side="right") - 1].ravel()
  pred_ids = pred_rows[np.searchsorted(pred_key, rows, side="right") - 1].ravel()
  weight = np.repeat(np.diff(rows, append=height), gt_rows.shape[1])

  gt_segments = gt_annotation["segments_info"]
  if crowd_convention not in pq_core.CROWD_CONVENTIONS:
    raise ValueError(f"crowd_convention must be one of {pq_core.CROWD_CONVENTIONS}, "
                     f"got {crowd_convention!r}")
  dropped = []
  if crowd_convention == "deeplab2":
    dropped = [s["id"] for s in gt_segments if s.get("iscrowd", 0)]
    gt_segments = [s for s in gt_segments if not s.get("iscrowd", 0)]
  num_gt = len(gt_segments)
  gt_slots = _map_ids(gt_ids, [s["id"] for s in gt_segments] + dropped)
  unlisted = gt_slots < 0
  gt_slots[gt_slots > num_gt] = 0  # dropped crowd segments read as VOID
  gt_slots[unlisted] = num_gt + 1

  pred_segments = pred_annotation["segments_info"]
  pred_slots = _map_ids(pred_ids, [s["id"] for s in pred_segments])
  if (pred_slots < 0).any():
    unknown = np.unique(pred_ids[pred_slots < 0])
    raise KeyError(f"In the image with ID {image_id} segments with IDs {unknown.tolist()} are "
                   "presented in PNG and not presented in JSON.")
  pred_area = np.bincount(pred_slots, weights=weight, minlength=len(pred_segments) + 1)[1:]
  if (pred_area == 0).any():
    missing = [s["id"] for s, a in zip(pred_segments, pred_area) if a == 0]
    raise KeyError(f"In the image with ID {image_id} the following segment IDs {missing} are "
                   "presented in JSON and not presented in PNG.")
  pred_category = []
  for segment in pred_segments:
    if segment["category_id"] not in category_index:
      raise KeyError(f"In the image with ID {image_id} segment with ID {segment['id']} has "
                     f"unknown category_id {segment['category_id']}.")
    pred_category.append(category_index[segment["category_id"]])

  gt_category = np.array([category_index.get(s["category_id"], num_categories)
                          for s in gt_segments], np.int64)
  return pq_core.match_segments(
      gt_slots, pred_slots, gt_category,
      np.array([s["area"] for s in gt_segments], np.float64),
      np.array([bool(s.get("iscrowd", 0)) for s in gt_segments], bool),
      np.array(pred_category, np.int64), num_categories + 1, pixel_weight=weight)


def _chunk_stats(args):
  pairs, gt_folder, pred_folder, category_index, crowd_convention = args
  totals = np.zeros((4, len(category_index) + 1))
  for start in range(0, len(pairs), _BATCH):
    batch = pairs[start:start + _BATCH]
    paths = [os.path.join(folder, annotation["file_name"]) for pair in batch
             for folder, annotation in zip((gt_folder, pred_folder), pair)]
    images = panoptic_png.decode_batch([_read(p) for p in paths], paths)
    for i, (gt_annotation, pred_annotation) in enumerate(batch):
      totals += np.stack(image_stats(gt_annotation, pred_annotation, images[2 * i],
                                     images[2 * i + 1], category_index, crowd_convention))
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
    # fork: workers need nothing but numpy/PIL, and spawned children re-run the parent's
    # __main__ (under pytest they never come up).
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
