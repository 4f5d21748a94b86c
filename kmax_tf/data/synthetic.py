"""The built-in `synthetic_panoptic` dataset: drawn scenes written as deeplab2 TFRecords.

Classes (`kmax_tf.datasets.SYNTHETIC_CLASSES`): void 0; stuff 1-3 (sky, grass, sand) drawn as
textured bands separated by wavy boundaries; things 4-6 (disc, square, triangle) drawn as
overlapping filled shapes of varied size, rotation, colour and count.

Each class has its own look so that a tiny model learns it within minutes on a CPU: the stuff
classes differ in base colour and texture (smooth vertical gradient / diagonal stripes / speckles)
and each thing class has its own colour range besides its shape. A 2-pixel void frame (black in
the image) keeps some void pixels in every image. There are no crowd regions.

Occlusion is controlled: a new shape is only accepted if every earlier instance keeps at least
`_MIN_VISIBLE_FRACTION` of its area, so every instance stays recognisable.

Every image is drawn from its own generator seeded with `(seed, split, index)`, so the output is
the same for the same seed whatever the sharding.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw

from kmax_tf.data import shards, tfexample

VOID, SKY, GRASS, SAND, DISC, SQUARE, TRIANGLE = range(7)
LABEL_DIVISOR = 256
_BORDER = 2
_MIN_VISIBLE_FRACTION = 0.6
_MAX_INSTANCES = 6
# RGB ranges (low, high) per thing class: reds, blues, yellows.
_THING_COLOR_RANGES = {
    DISC: ((170, 0, 30), (255, 70, 110)),
    SQUARE: ((0, 30, 150), (70, 110, 255)),
    TRIANGLE: ((215, 150, 0), (255, 220, 60)),
}
_SPLIT_IDS = {"train": 0, "val": 1}


def _stuff_texture(rng: np.random.Generator, stuff: int, size: int) -> np.ndarray:
  """float `[size, size, 3]` texture of one stuff class."""
  y, x = np.mgrid[0:size, 0:size].astype(np.float32)
  noise = rng.normal(0.0, 1.0, (size, size, 1)).astype(np.float32)
  if stuff == SKY:
    base = np.array([90, 150, 225], np.float32) + rng.uniform(-15, 15, 3)
    shade = (y / size)[..., None] * np.array([40, 40, 20], np.float32)
    return base + shade + 3.0 * noise
  if stuff == GRASS:
    base = np.array([55, 135, 45], np.float32) + rng.uniform(-15, 15, 3)
    period = rng.uniform(4.0, 7.0)
    stripes = np.sin((x + y) * (2 * np.pi / period))[..., None] * np.array([20, 30, 10])
    return base + stripes + 8.0 * noise
  base = np.array([215, 185, 130], np.float32) + rng.uniform(-15, 15, 3)
  speckles = (rng.uniform(size=(size, size, 1)) < 0.12) * -45.0
  return base + speckles + 5.0 * noise


def _shape_mask(rng: np.random.Generator, thing: int, size: int) -> np.ndarray:
  """bool `[size, size]` mask of one randomly placed, sized and rotated shape."""
  radius = rng.uniform(0.06, 0.2) * size
  cy, cx = rng.uniform(0.1 * size, 0.9 * size, 2)
  canvas = Image.new("L", (size, size), 0)
  draw = ImageDraw.Draw(canvas)
  if thing == DISC:
    ry = radius * rng.uniform(0.8, 1.0)
    draw.ellipse([cx - radius, cy - ry, cx + radius, cy + ry], fill=1)
  else:
    corners = 4 if thing == SQUARE else 3
    angle = rng.uniform(0, 2 * np.pi)
    points = [(cx + radius * np.cos(angle + 2 * np.pi * k / corners),
               cy + radius * np.sin(angle + 2 * np.pi * k / corners)) for k in range(corners)]
    draw.polygon(points, fill=1)
  return np.asarray(canvas, bool)


def draw_scene(rng: np.random.Generator, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
  """Draws one scene.

  Returns:
    image: uint8 `[size, size, 3]`.
    panoptic: int32 `[size, size]`, `semantic * 256 + instance` (instances 1.. per class).
  """
  if size < 16:
    raise ValueError(f"synthetic images need at least 16 pixels per side, got {size}")
  y, x = np.mgrid[0:size, 0:size].astype(np.float32)
  num_stuff = rng.integers(1, 4)
  stuff_classes = rng.permutation([SKY, GRASS, SAND])[:num_stuff]
  band = np.zeros((size, size), np.int64)
  for level in np.sort(rng.uniform(0.25, 0.75, num_stuff - 1)) * size:
    wave = rng.uniform(2, 0.08 * size) * np.sin(x * rng.uniform(0.02, 0.12) + rng.uniform(0, 6))
    band += (y > level + wave).astype(np.int64)
  semantic = stuff_classes[band]
  image = np.zeros((size, size, 3), np.float32)
  for stuff in stuff_classes:
    image = np.where((semantic == stuff)[..., None], _stuff_texture(rng, stuff, size), image)
  panoptic = semantic.astype(np.int64) * LABEL_DIVISOR

  areas = {}
  counts = {DISC: 0, SQUARE: 0, TRIANGLE: 0}
  for _ in range(rng.integers(1, _MAX_INSTANCES + 1)):
    for _attempt in range(10):
      thing = int(rng.choice([DISC, SQUARE, TRIANGLE]))
      mask = _shape_mask(rng, thing, size)
      if mask.sum() < 30:
        continue
      survivors_ok = all(
          np.sum((panoptic == pid) & ~mask) >= _MIN_VISIBLE_FRACTION * area
          for pid, area in areas.items())
      if survivors_ok:
        break
    else:
      continue
    counts[thing] += 1
    pid = thing * LABEL_DIVISOR + counts[thing]
    panoptic[mask] = pid
    areas[pid] = int(mask.sum())
    low, high = _THING_COLOR_RANGES[thing]
    color = rng.uniform(low, high)
    fill = color + rng.normal(0, 4.0, (size, size, 3))
    image = np.where(mask[..., None], fill, image)

  border = np.ones((size, size), bool)
  border[_BORDER:-_BORDER, _BORDER:-_BORDER] = False
  panoptic[border] = VOID * LABEL_DIVISOR
  image[border] = 0
  return np.clip(np.round(image), 0, 255).astype(np.uint8), panoptic.astype(np.int32)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
  return np.random.default_rng([seed, _SPLIT_IDS[split], index])


def default_num_shards(num_examples: int) -> int:
  return max(1, min(8, num_examples // 64))


def write_split(output_dir: str, split: str, num_examples: int, *, image_size: int = 128,
                seed: int = 0, image_format: str = "png", num_shards: int | None = None) -> list:
  """Writes `num_examples` scenes as `{split}-XXXXX-of-YYYYY.tfrecord`; returns the paths."""
  num_shards = num_shards or default_num_shards(num_examples)
  paths = []
  for shard_index, indices in enumerate(shards.split_evenly(range(num_examples), num_shards)):
    def examples(indices=indices):
      for index in indices:
        image, panoptic = draw_scene(scene_rng(seed, split, index), image_size)
        yield tfexample.make_example(
            tfexample.encode_image(image, image_format), image_format,
            f"synthetic_{split}_{index:06d}", panoptic_label=panoptic)
    path = os.path.join(output_dir, shards.shard_name(split, shard_index, num_shards))
    shards.write_shard(path, examples())
    paths.append(path)
  return paths


def write_dataset(output_dir: str, num_train: int, num_eval: int, *, image_size: int = 128,
                  seed: int = 0, image_format: str = "png") -> dict:
  """Writes the train and val splits; returns {"train": [paths], "val": [paths]}."""
  if num_train < 0 or num_eval < 0:
    raise ValueError("numbers of examples must be >= 0")
  os.makedirs(output_dir, exist_ok=True)
  result = {}
  for split, count in (("train", num_train), ("val", num_eval)):
    if count:
      result[split] = write_split(output_dir, split, count, image_size=image_size, seed=seed,
                                  image_format=image_format)
  return result
