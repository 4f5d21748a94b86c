"""Panoptic prediction files and pictures: COCO panoptic PNG/JSON, segment id <-> RGB, overlays.

COCO panoptic format: one RGB PNG per image whose pixel colour encodes the segment id as
`R + 256 G + 256^2 B` (0 = void), and a JSON with `annotations: [{image_id, file_name,
segments_info: [{id, category_id, iscrowd, area, bbox}]}]` and `categories`.

numpy, PIL and OpenCV only (no TensorFlow): shared by the evaluator, `kmax-tf predict`, the
training summaries, the dataset converters and the COCO-file PQ (`kmax-tf eval pq`).
"""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
from PIL import Image, ImageDraw

_TO_RGBA = {"RGB": cv2.COLOR_RGB2RGBA, "BGR": cv2.COLOR_BGR2RGBA}


def ids_to_rgb(ids: np.ndarray) -> np.ndarray:
  """uint8 `[..., 3]` colours `(R, G, B)` of segment ids `[...]` in [0, 256^3)."""
  ids = np.asarray(ids)
  if ids.size and (ids.min() < 0 or ids.max() >= 1 << 24):
    raise ValueError(f"segment ids must lie in [0, 2^24), got {ids.min()}..{ids.max()}")
  return np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)


def rgb_to_ids(colours: np.ndarray, order: str = "RGB") -> np.ndarray:
  """uint32 segment ids `R + 256 G + 256^2 B` `[...]` of uint8 colours `[..., 3]`, whose
  channels are in `order` ("RGB", or "BGR" as OpenCV decodes)."""
  colours = np.asarray(colours)
  if colours.dtype != np.uint8 or colours.shape[-1:] != (3,):
    raise ValueError(f"colours must be uint8 [..., 3], got {colours.dtype} {colours.shape}")
  if order not in _TO_RGBA:
    raise ValueError(f"order must be one of {sorted(_TO_RGBA)}, got {order!r}")
  if not colours.size:  # OpenCV rejects empty images
    return np.zeros(colours.shape[:-1], np.uint32)
  # OpenCV reorders channels several times faster than numpy's strided copies (this is on the
  # PNG decoding path of `kmax-tf eval pq`); RGBA bytes read as a little-endian uint32 are
  # R + 256 G + 256^2 B + 256^3 A.
  rgba = cv2.cvtColor(np.ascontiguousarray(colours).reshape(1, -1, 3), _TO_RGBA[order])
  ids = rgba.view("<u4").reshape(colours.shape[:-1])
  ids &= 0xFFFFFF
  return ids


def _void(panoptic: np.ndarray, dataset) -> np.ndarray:
  """bool `[H, W]`: pixels of the panoptic map whose class is the dataset's ignore label."""
  return panoptic // dataset.panoptic_label_divisor == dataset.ignore_label


def save_panoptic_png(save_dir: str, name: str, panoptic: np.ndarray, dataset) -> dict:
  """Writes `<save_dir>/panoptic/<name>.png` in COCO panoptic format (segment id = panoptic id
  + 1, 0 = void) for an int `[H, W]` panoptic map `semantic * divisor + instance`, and returns
  its annotation (`image_id`, `file_name`, `segments_info`)."""
  d = dataset
  folder = os.path.join(save_dir, "panoptic")
  os.makedirs(folder, exist_ok=True)
  void = _void(panoptic, d)
  # +1 keeps id 0 free for VOID even where class 0 is real (Cityscapes road, instance 0).
  segment_map = np.where(void, 0, panoptic + 1).astype(np.int64)
  ids, areas = np.unique(segment_map[segment_map > 0], return_counts=True)
  segments = []
  for segment_id, area in zip(ids, areas):
    semantic = int((segment_id - 1) // d.panoptic_label_divisor)
    rows, cols = np.nonzero(segment_map == segment_id)
    segments.append({"id": int(segment_id), "category_id": d.category_id(semantic), "iscrowd": 0,
                     "area": int(area),
                     "bbox": [int(cols.min()), int(rows.min()), int(np.ptp(cols)) + 1,
                              int(np.ptp(rows)) + 1]})
  file_name = f"{name}.png"
  Image.fromarray(ids_to_rgb(segment_map)).save(os.path.join(folder, file_name))
  return {"image_id": name, "file_name": file_name, "segments_info": segments}


def write_panoptic_json(save_dir: str, annotations, dataset) -> None:
  """Writes `<save_dir>/panoptic.json` with `annotations` and the dataset's categories."""
  d = dataset
  categories = []
  for semantic, class_name in enumerate(d.class_names):
    if semantic == d.ignore_label:
      continue
    categories.append({
        "id": d.category_id(semantic),
        "name": class_name, "isthing": int(d.is_thing(semantic))})
  with open(os.path.join(save_dir, "panoptic.json"), "w", encoding="utf-8") as f:
    json.dump({"annotations": annotations, "categories": categories}, f)


def panoptic_overlay(image: np.ndarray, panoptic: np.ndarray, dataset) -> np.ndarray:
  """uint8 `[H, W, 3]`: `image` `[H, W, 3]` (0..255) blended half and half with the class
  colours of the panoptic map `panoptic` `[H, W]` (void pixels keep the image)."""
  d = dataset
  void = _void(panoptic, d)
  semantic = np.clip(panoptic // d.panoptic_label_divisor, 0, len(d.colormap) - 1)
  colours = d.colormap[semantic].astype(np.float32)
  # Shift thing instances' colours apart so neighbouring instances stay distinguishable.
  instance = panoptic % d.panoptic_label_divisor
  colours += ((instance[..., None] * np.array([37, 17, 53])) % 64 - 32) * (instance[..., None] > 0)
  overlay = np.where(void[..., None], image, 0.5 * image + 0.5 * np.clip(colours, 0, 255))
  return overlay.astype(np.uint8)


def labelled_overlay(image: np.ndarray, panoptic: np.ndarray, dataset) -> np.ndarray:
  """`panoptic_overlay` with each segment's class name written at its centroid."""
  canvas = Image.fromarray(panoptic_overlay(image, panoptic, dataset))
  draw = ImageDraw.Draw(canvas)
  for segment in np.unique(panoptic[~_void(panoptic, dataset)]):
    rows, cols = np.nonzero(panoptic == segment)
    name = dataset.class_names[segment // dataset.panoptic_label_divisor]
    # Dark text with a light outline stays readable on any class colour.
    draw.text((float(cols.mean()), float(rows.mean())), name, fill=(0, 0, 0), anchor="mm",
              stroke_width=1, stroke_fill=(255, 255, 255))
  return np.asarray(canvas)
