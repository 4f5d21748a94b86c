"""PQ on COCO panoptic format files (JSON + RGB PNG folders), numbers identical to panopticapi.

Implements the rules of panopticapi's `pq_compute` (VOID = id 0, crowd handling, IoU > 0.5,
ground-truth areas from the JSON, predicted areas from the PNG, the same sanity errors) through
`pq_core.match_segments`. It is faster because PNGs are decoded by `panoptic_png` (batched,
only rows that differ from the row above), pixels are counted as horizontal runs of equal
(ground truth, prediction) pairs, it never sorts pixels (run ids are mapped to compact segment
indices by one binary search per batch of images; a batch's intersections are one weighted
`np.bincount`), and `--workers` forked processes take batches as they come free.

`crowd_convention="deeplab2"` instead turns ground-truth crowd segments into VOID (deeplab2's
converters), which forgives predictions of any category over crowd and drops crowd from unions.
"""
from __future__ import annotations

import collections
import ctypes
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
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters

def _read(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise FileNotFoundError(f"Cannot read PNG {path}: {e}") from e


def _keys(pair: np.ndarray, ids: np.ndarray) -> np.ndarray:
  """int64 keys of (pair in the batch, segment id), unique across a batch; -1 for ids no PNG
  can hold (outside 24 bits), which then match nothing."""
  ids = ids.astype(np.int64)
  return np.where((ids >= 0) & (ids < 1 << 24), pair << 24 | ids, -1)


def _listed_keys(listed: Sequence[tuple[int, int]]) -> np.ndarray:
  """`_keys` of the (pair, segment id) tuples of JSON segment lists."""
  pair_and_id = np.array(listed, np.int64).reshape(-1, 2)
  return _keys(pair_and_id[:, 0], pair_and_id[:, 1])


def _map_ids(keys: np.ndarray, listed: Sequence[int], slots: Sequence[int]) -> np.ndarray:
  """`slots[k]` where `keys` equal `listed[k]` (the last listed, for a repeated key), -1
  elsewhere.

  A binary search over the few listed keys: `keys` holds one entry per run, not per pixel. (A
  lookup table over all 2^24 ids took ~80 ms per process to fault in its pages.)
  """
  listed = np.asarray(listed, np.int64)
  if not listed.size:
    return np.full(len(keys), -1, np.int64)
  order = np.argsort(listed, kind="stable")
  listed = listed[order]
  position = np.searchsorted(listed, keys, side="right") - 1
  found = position >= 0
  found[found] = listed[position[found]] == keys[found]
  return np.where(found, np.asarray(slots, np.int64)[order][position], -1)


def _runs(image_pairs):
  """Run-length form of ground-truth/prediction pairs of key-row images of one width:
  `(pair, gt_ids, pred_ids, weight)` `[N]`, one entry per horizontal run of equal (ground
  truth, prediction) pixels in the union of each pair's key rows, weighing its length times the
  rows that repeat it. Segment outlines change few pixels per row, so N is far below the pixel
  count. All pairs are handled at once: their rows are stacked, each pair's offset past the
  previous pairs' heights.
  """
  heights = np.array([gt[2] for gt, _ in image_pairs])
  ends = np.cumsum(heights)
  offsets = ends - heights
  # (key rows, their ids) of all ground truths, then of all predictions, stacked.
  stacked = [(np.concatenate([image[0] + offset for image, offset in zip(side, offsets)]),
              np.concatenate([image[1] for image in side])) for side in zip(*image_pairs)]
  rows = np.union1d(stacked[0][0], stacked[1][0])
  # Each side's ids at every row of the union. Row 0 of every image is a key row, so a search
  # never lands in the previous image.
  gt, pred = (ids if len(keys) == len(rows) else ids[np.searchsorted(keys, rows, "right") - 1]
              for keys, ids in stacked)
  pair_of_row = np.searchsorted(offsets, rows, side="right") - 1
  # A pair's last key row repeats up to the next pair's row 0, which is its first key row.
  repeats = np.diff(rows, append=ends[-1])
  width = gt.shape[1]
  starts = np.empty(gt.shape, bool)
  starts[:, 0] = True
  np.not_equal(gt[:, 1:], gt[:, :-1], out=starts[:, 1:])
  starts[:, 1:] |= pred[:, 1:] != pred[:, :-1]
  starts = np.flatnonzero(starts)
  row = starts // width
  weight = np.diff(starts, append=gt.size) * repeats[row]
  return pair_of_row[row], gt.ravel()[starts], pred.ravel()[starts], weight


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
  kept, pred_lists, by_width = [], [], {}
  gt_listed, gt_slots, pred_listed, num_gt = [], [], [], 0
  for i, ((gt_annotation, pred_annotation), gt_image, pred_image) in enumerate(
      zip(annotation_pairs, images[0::2], images[1::2])):
    (_, gt_rows, height), (_, pred_rows, pred_height) = gt_image, pred_image
    if (height, gt_rows.shape[1]) != (pred_height, pred_rows.shape[1]):
      raise ValueError(f"Image {gt_annotation['image_id']}: ground truth is {height}x"
                       f"{gt_rows.shape[1]}, prediction {pred_height}x{pred_rows.shape[1]} "
                       f"({pred_annotation['file_name']})")
    by_width.setdefault(gt_rows.shape[1], []).append(i)
    segments = gt_annotation["segments_info"]
    if crowd_convention == "deeplab2":  # crowd segments read as VOID
      dropped = [s["id"] for s in segments if s.get("iscrowd", 0)]
      segments = [s for s in segments if not s.get("iscrowd", 0)]
    else:
      dropped = []
    gt_listed += [(i, s["id"]) for s in segments] + [(i, d) for d in dropped]
    gt_slots += list(range(num_gt + 1, num_gt + 1 + len(segments))) + [0] * len(dropped)
    num_gt += len(segments)
    kept.append(segments)
    pred_lists.append(pred_annotation["segments_info"])
    pred_listed += [(i, s["id"]) for s in pred_annotation["segments_info"]]
  num_pred = len(pred_listed)
  pred_offsets = np.cumsum([0] + [len(p) for p in pred_lists])

  runs = [_runs([(images[2 * i], images[2 * i + 1]) for i in members])
          for members in by_width.values()]
  pair = np.concatenate([np.asarray(members)[r[0]] for members, r in zip(by_width.values(), runs)])
  gt_ids, pred_ids, weights = (np.concatenate([r[k] for r in runs]) for k in (1, 2, 3))
  gt_index = _map_ids(_keys(pair, gt_ids), _listed_keys(gt_listed), gt_slots)
  gt_unlisted = gt_index < 0
  gt_index[gt_unlisted] = np.where(gt_ids[gt_unlisted] == 0, 0, num_gt + 1)
  pred_index = _map_ids(_keys(pair, pred_ids), _listed_keys(pred_listed),
                        np.arange(1, num_pred + 1))
  pred_unlisted = pred_index < 0
  pred_index[pred_unlisted & (pred_ids == 0)] = 0
  pred_unknown = pred_unlisted & (pred_ids != 0)
  if pred_unknown.any():
    i = int(pair[pred_unknown].min())
    unknown = np.unique(pred_ids[pred_unknown & (pair == i)])
    raise KeyError(f"In the image with ID {annotation_pairs[i][0]['image_id']} segments with "
                   f"IDs {unknown.tolist()} are presented in PNG and not presented in JSON.")

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


def _batch_totals(start: int, job: tuple) -> np.ndarray:
  """`batch_stats` of the `_BATCH` pairs from `start`, as float64 `[4, K + 1]`.

  `job`: (pairs, gt_folder, pred_folder, category_index, crowd_convention).
  """
  pairs, gt_folder, pred_folder, category_index, crowd_convention = job
  batch = pairs[start:start + _BATCH]
  paths = [os.path.join(folder, annotation["file_name"]) for pair in batch
           for folder, annotation in zip((gt_folder, pred_folder), pair)]
  images = panoptic_png.decode_batch([_read(p) for p in paths], paths)
  return np.stack(batch_stats(batch, images, category_index, crowd_convention))


def _take_batches(job: tuple, counter) -> dict[int, np.ndarray]:
  """Evaluates batches, each taken from the shared `counter` by whichever process is free,
  until none is left; returns {first pair index: `_batch_totals`}."""
  totals = {}
  while True:
    with counter.get_lock():
      start = counter.value
      counter.value += _BATCH
    if start >= len(job[0]):
      return totals
    totals[start] = _batch_totals(start, job)


def _keep_freed_memory() -> None:
  """Has glibc's malloc keep freed memory in the heap instead of returning it to the system.

  A batch's large buffers (~1.5 MB each: the key-row PNG, OpenCV's decoded rows, the run
  arrays) otherwise come back as fresh pages for every batch: ~40K page faults and a fifth of
  the time for 500 image pairs. Only forked workers call this: it lasts for the process.
  Elsewhere than glibc, a no-op.
  """
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    return
  mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's largest on 64-bit systems
  mallopt(_M_TRIM_THRESHOLD, 1 << 30)


def _worker(job: tuple, counter, connection) -> None:
  """A forked worker: sends `_take_batches`, or the exception it raised, to the parent."""
  _keep_freed_memory()
  # OpenCV's own threads cost more than they save on these small calls (one process: 0.68-0.77 s
  # instead of 0.90-1.08 s for 500 image pairs), and the workers already use every core.
  cv2.setNumThreads(1)
  try:
    connection.send(_take_batches(job, counter))
  except Exception as e:  # pylint: disable=broad-except
    connection.send(e)
  finally:
    connection.close()


def _one_entry_per_id(annotation: dict, side: str, warnings: list) -> dict:
  """`annotation` with one `segments_info` entry per segment id, as panopticapi's per-image
  dictionaries keep: the last entry, at the place of the first. A repeated id adds a line to
  `warnings`."""
  segments = annotation["segments_info"]
  by_id = {segment["id"]: segment for segment in segments}
  if len(by_id) == len(segments):
    return annotation
  repeated = sorted(i for i, n in collections.Counter(s["id"] for s in segments).items() if n > 1)
  warnings.append(f"image {annotation['image_id']}: segment ids {repeated} are listed more than "
                  f"once in the {side} JSON; the last entry of each counts (as in panopticapi)")
  return dict(annotation, segments_info=list(by_id.values()))


def pq_compute(gt_json_file: str, pred_json_file: str, gt_folder: str | None = None,
               pred_folder: str | None = None, workers: int = 1,
               crowd_convention: str = "official") -> dict:
  """Returns panopticapi's result dict: {"All", "Things", "Stuff": {pq, sq, rq, n},
  "per_class": {category_id: {pq, sq, rq}}} plus "crowd_convention", "num_images" and
  "warnings" (lines about input panopticapi accepts silently: segment ids listed twice in one
  image, ground-truth categories missing from the categories list).

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
  pairs, warnings = [], []
  for gt_annotation in gt_json["annotations"]:
    if gt_annotation["image_id"] not in predictions:
      raise KeyError(f"no prediction for the image with id: {gt_annotation['image_id']}")
    pairs.append(tuple(_one_entry_per_id(annotation, side, warnings) for annotation, side in (
        (gt_annotation, "ground-truth"), (predictions[gt_annotation["image_id"]], "prediction"))))
  unlisted = collections.Counter(s["category_id"] for gt_annotation, _ in pairs
                                 for s in gt_annotation["segments_info"]
                                 if s["category_id"] not in category_index)
  if unlisted:
    warnings.append(f"ground-truth category ids {sorted(unlisted)} ({sum(unlisted.values())} "
                    "segments) are not in the categories list: their segments are matched, as "
                    "in panopticapi, but count in no average")

  job = (pairs, gt_folder, pred_folder, category_index, crowd_convention)
  starts = range(0, len(pairs), _BATCH)
  workers = max(1, min(int(workers), len(starts)))
  # Forked, not spawned: workers need nothing but numpy, OpenCV and libdeflate, and spawned
  # children re-run the parent's __main__ (under pytest they never come up). Plain processes
  # and pipes: a Pool takes ~10 ms more to start and stop. Even one worker is forked, so that
  # its malloc settings stay out of this process.
  context = multiprocessing.get_context("fork")
  counter = context.Value("q", 0)
  workers_and_pipes = []
  try:
    for _ in range(workers):
      receiver, sender = context.Pipe(duplex=False)
      worker = context.Process(target=_worker, args=(job, counter, sender), daemon=True)
      worker.start()
      sender.close()
      workers_and_pipes.append((worker, receiver))
    batches = {}
    for worker, receiver in workers_and_pipes:
      try:
        result = receiver.recv()
      except EOFError:
        worker.join()
        raise RuntimeError(
            f"An eval pq worker process died (exit code {worker.exitcode})") from None
      if isinstance(result, Exception):
        raise result
      batches.update(result)
  finally:
    for worker, receiver in workers_and_pipes:
      worker.terminate()
      worker.join()
      receiver.close()
  # Summed in batch order, so the numbers do not depend on the worker count.
  totals = sum((batches[start] for start in starts), np.zeros((4, len(categories) + 1)))
  stats = totals[:, :len(categories)]

  is_thing = np.array([c.get("isthing", 0) == 1 for c in categories])
  results = {"crowd_convention": crowd_convention, "num_images": len(pairs),
             "warnings": warnings}
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
