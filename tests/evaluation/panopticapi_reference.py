"""Test support: a plain re-statement of panopticapi's `pq_compute`, and a data generator.

panopticapi is not on PyPI (`pip download panopticapi` finds nothing), so this module restates
its per-image loop independently: pixel ids by `np.unique` on `gt * 256^3 + pred`, Python
dictionaries and loops over segment pairs, exactly the rules of panopticapi/evaluation.py
(VOID = 0; crowd never matched, kept in unions, forgiving unmatched predictions of its category
via the last crowd segment of that category; IoU > 0.5; GT area from the JSON). It performs the
same numpy work per image as panopticapi, so benchmarks/pq_eval.py also uses it as the speed
baseline. Loaded by file path from tests and the benchmark (it is not part of the package).
"""
import json
import os

import numpy as np
from PIL import Image

OFFSET = 256 ** 3
VOID = 0


def _ids_from_png(path):
  rgb = np.array(Image.open(path), dtype=np.uint32)
  return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def image_statistics(gt_ann, pred_ann, gt_folder, pred_folder, stats):
  """Adds one image's per-category [iou, tp, fn, fp] to `stats` (dict category -> list)."""
  gt = _ids_from_png(os.path.join(gt_folder, gt_ann["file_name"]))
  pred = _ids_from_png(os.path.join(pred_folder, pred_ann["file_name"]))
  gt_info = {s["id"]: s for s in gt_ann["segments_info"]}
  pred_info = {s["id"]: dict(s) for s in pred_ann["segments_info"]}
  pred_area = {}
  for label, count in zip(*np.unique(pred, return_counts=True)):
    if label not in pred_info:
      if label == VOID:
        continue
      raise KeyError(f"segment {label} in PNG but not in JSON")
    pred_area[label] = count
  if set(pred_area) != set(pred_info):
    raise KeyError("segment in JSON but not in PNG")

  overlap = {}
  for key, count in zip(*np.unique(gt.astype(np.uint64) * OFFSET + pred.astype(np.uint64),
                                   return_counts=True)):
    overlap[(int(key // OFFSET), int(key % OFFSET))] = int(count)

  def cat(category):
    return stats.setdefault(category, [0.0, 0, 0, 0])

  gt_done, pred_done = set(), set()
  for (g, p), inter in overlap.items():
    if g not in gt_info or p not in pred_info or gt_info[g]["iscrowd"] == 1:
      continue
    if gt_info[g]["category_id"] != pred_info[p]["category_id"]:
      continue
    union = pred_area[p] + gt_info[g]["area"] - inter - overlap.get((VOID, p), 0)
    if inter / union > 0.5:
      entry = cat(gt_info[g]["category_id"])
      entry[0] += inter / union
      entry[1] += 1
      gt_done.add(g)
      pred_done.add(p)

  crowd_by_category = {}
  for g, info in gt_info.items():
    if g in gt_done:
      continue
    if info["iscrowd"] == 1:
      crowd_by_category[info["category_id"]] = g
      continue
    cat(info["category_id"])[2] += 1
  for p, info in pred_info.items():
    if p in pred_done:
      continue
    ignored = overlap.get((VOID, p), 0)
    if info["category_id"] in crowd_by_category:
      ignored += overlap.get((crowd_by_category[info["category_id"]], p), 0)
    if ignored / pred_area[p] > 0.5:
      continue
    cat(info["category_id"])[3] += 1


def pq_compute(gt_json_file, gt_folder, pred_json_file, pred_folder):
  """{"All"|"Things"|"Stuff": {pq, sq, rq, n}, "per_class": {id: {pq, sq, rq}}}."""
  with open(gt_json_file) as f:
    gt_json = json.load(f)
  with open(pred_json_file) as f:
    pred_json = json.load(f)
  predictions = {a["image_id"]: a for a in pred_json["annotations"]}
  stats = {}
  for gt_ann in gt_json["annotations"]:
    image_statistics(gt_ann, predictions[gt_ann["image_id"]], gt_folder, pred_folder, stats)
  categories = {c["id"]: c for c in gt_json["categories"]}
  results = {}
  for name, want_thing in (("All", None), ("Things", True), ("Stuff", False)):
    total_pq = total_sq = total_rq = 0.0
    n = 0
    per_class = {}
    for cid, info in categories.items():
      if want_thing is not None and (info["isthing"] == 1) != want_thing:
        continue
      iou, tp, fn, fp = stats.get(cid, [0.0, 0, 0, 0])
      if tp + fn + fp == 0:
        per_class[cid] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
        continue
      n += 1
      per_class[cid] = {"pq": iou / (tp + 0.5 * fp + 0.5 * fn),
                        "sq": iou / tp if tp else 0.0,
                        "rq": tp / (tp + 0.5 * fp + 0.5 * fn)}
      total_pq += per_class[cid]["pq"]
      total_sq += per_class[cid]["sq"]
      total_rq += per_class[cid]["rq"]
    results[name] = {"pq": total_pq / n, "sq": total_sq / n, "rq": total_rq / n, "n": n}
    if name == "All":
      results["per_class"] = per_class
  return results


def _id_to_rgb(ids):
  return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def write_synthetic_set(root, num_images, height, width, seed=0, num_categories=8):
  """Writes gt/ + gt.json and pred/ + pred.json in COCO panoptic format under `root`.

  Categories 1..num_categories (odd ids are things). GT: random rectangles over a stuff
  background, some void and crowd. Predictions: GT segments with shifted boxes, some relabelled,
  dropped or split, plus spurious boxes, so every rule (TP, FN, FP, void, crowd) is exercised.
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
    for y0, x0, y1, x1 in boxes(2, 0.5):
      gt_cat[y0:y1, x0:x1] = rng.choice(stuffs)
    for k, (y0, x0, y1, x1) in enumerate(boxes(rng.integers(3, 12), 0.3)):
      gt_cat[y0:y1, x0:x1] = rng.choice(things)
      gt_inst[y0:y1, x0:x1] = k + 1
      gt_crowd[y0:y1, x0:x1] = rng.random() < 0.15
    for y0, x0, y1, x1 in boxes(2, 0.1):
      gt_cat[y0:y1, x0:x1] = 0
    # Predictions: perturb the GT label map.
    pred_cat, pred_inst = gt_cat.copy(), gt_inst.copy()
    shift = rng.integers(-4, 5, 2)
    pred_cat = np.roll(pred_cat, shift, axis=(0, 1))
    pred_inst = np.roll(pred_inst, shift, axis=(0, 1))
    for y0, x0, y1, x1 in boxes(rng.integers(1, 6), 0.25):
      pred_cat[y0:y1, x0:x1] = rng.choice(things + stuffs)
      pred_inst[y0:y1, x0:x1] = 100 + rng.integers(0, 3)
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
      rgb_ids = rng.choice(np.arange(1, 1 << 24), size=len(unique), replace=False)
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
      Image.fromarray(_id_to_rgb(id_map)).save(os.path.join(folders[name], file_name))
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
