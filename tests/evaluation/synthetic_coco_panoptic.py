"""Test and benchmark support: writes a generated COCO panoptic set (JSON + RGB PNGs).

Loaded by file path from tests/evaluation/test_pq_files.py and benchmarks/pq_eval.py (it is not
part of the package).
"""
import json
import os

import numpy as np
from PIL import Image

from kmax_tf import panoptic_files


def _paint(array, box, value, shapes):
  """Sets the rectangle `box` = (y0, x0, y1, x1) of `array`, or the ellipse inscribed in it."""
  y0, x0, y1, x1 = box
  if shapes == "rectangles":
    array[y0:y1, x0:x1] = value
    return
  y, x = np.ogrid[y0:y1, x0:x1]
  inside = (((y - (y0 + y1 - 1) / 2) / ((y1 - y0) / 2)) ** 2 +
            ((x - (x0 + x1 - 1) / 2) / ((x1 - x0) / 2)) ** 2) <= 1
  array[y0:y1, x0:x1][inside] = value


def write_synthetic_set(root, num_images, height, width, seed=0, num_categories=8,
                        shapes="rectangles"):
  """Writes gt/ + gt.json and pred/ + pred.json in COCO panoptic format under `root`.

  Categories 1..num_categories (odd ids are things). GT: random rectangles (or, with
  `shapes="ellipses"`, the ellipses inscribed in them, whose outlines change on almost every row
  as real object outlines do) over a stuff background, some void and crowd. Predictions: GT
  segments with shifted boxes, some relabelled, dropped or split, plus spurious boxes, so every
  rule (TP, FN, FP, void, crowd) is exercised.
  Returns (gt_json, gt_folder, pred_json, pred_folder).
  """
  rng = np.random.default_rng(seed)
  categories = [{"id": c, "name": f"c{c}", "isthing": c % 2, "color": [0, 0, 0]}
                for c in range(1, num_categories + 1)]
  things = [c for c in range(1, num_categories + 1) if c % 2]
  stuffs = [c for c in range(1, num_categories + 1) if not c % 2]
  folders = {k: os.path.join(root, k) for k in ("gt", "pred")}
  for folder in folders.values():
    os.makedirs(folder, exist_ok=True)
  annotations = {"gt": [], "pred": []}

  def boxes(count, scale):
    y0 = rng.integers(0, height - 2, count)
    x0 = rng.integers(0, width - 2, count)
    hh = rng.integers(2, max(3, int(height * scale)), count)
    ww = rng.integers(2, max(3, int(width * scale)), count)
    return [(a, b, min(height, a + c), min(width, b + d)) for a, b, c, d in zip(y0, x0, hh, ww)]

  for image_id in range(num_images):
    gt_cat = np.full((height, width), rng.choice(stuffs), np.int64)
    gt_inst = np.zeros((height, width), np.int64)
    gt_crowd = np.zeros((height, width), bool)
    for box in boxes(2, 0.5):
      _paint(gt_cat, box, rng.choice(stuffs), shapes)
    for k, box in enumerate(boxes(rng.integers(3, 12), 0.3)):
      _paint(gt_cat, box, rng.choice(things), shapes)
      _paint(gt_inst, box, k + 1, shapes)
      _paint(gt_crowd, box, rng.random() < 0.15, shapes)
    for box in boxes(2, 0.1):
      _paint(gt_cat, box, 0, shapes)
    # Predictions: perturb the GT label map.
    pred_cat, pred_inst = gt_cat.copy(), gt_inst.copy()
    shift = rng.integers(-4, 5, 2)
    pred_cat = np.roll(pred_cat, shift, axis=(0, 1))
    pred_inst = np.roll(pred_inst, shift, axis=(0, 1))
    for box in boxes(rng.integers(1, 6), 0.25):
      _paint(pred_cat, box, rng.choice(things + stuffs), shapes)
      _paint(pred_inst, box, 100 + rng.integers(0, 3), shapes)
    relabel = {c: rng.choice(things + stuffs) for c in range(1, num_categories + 1)
               if rng.random() < 0.1}
    for old, new in relabel.items():
      pred_cat[gt_cat == old] = new
    pred_cat[pred_cat == 0] = rng.choice(stuffs)
    for name, cat_map, inst_map, crowd in (("gt", gt_cat, gt_inst, gt_crowd),
                                           ("pred", pred_cat, pred_inst, None)):
      key = cat_map * 1000 + np.where(np.isin(cat_map, things), inst_map, 0)
      key[cat_map == 0] = 0
      unique = np.unique(key)
      unique = unique[unique != 0]
      # Random, distinct, non-zero RGB ids.
      rgb_ids = 1 + rng.choice((1 << 24) - 1, size=len(unique), replace=False)
      id_map = np.zeros_like(key)
      segments = []
      for k, rgb_id in zip(unique, rgb_ids):
        where = key == k
        id_map[where] = rgb_id
        segment = {"id": int(rgb_id), "category_id": int(k // 1000)}
        if name == "gt":
          segment["area"] = int(where.sum())
          segment["iscrowd"] = int(crowd[where].any() and k % 1000 > 0)
        segments.append(segment)
      file_name = f"{image_id:06d}.png"
      Image.fromarray(panoptic_files.ids_to_rgb(id_map)).save(
          os.path.join(folders[name], file_name))
      annotations[name].append({"image_id": image_id, "file_name": file_name,
                                "segments_info": segments})
  paths = []
  for name in ("gt", "pred"):
    path = os.path.join(root, f"{name}.json")
    with open(path, "w") as f:
      json.dump({"annotations": annotations[name], "categories": categories,
                 "images": [{"id": i} for i in range(num_images)]}, f)
    paths += [path, folders[name]]
  return tuple(paths)
