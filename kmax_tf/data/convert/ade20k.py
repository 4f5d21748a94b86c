"""ADE20K panoptic -> deeplab2 TFRecords (deeplab2's build_ade20k_data.py layout).

Reads `{root}/images/{training,validation}/*.jpg`, `{root}/ade20k_panoptic_{train,val}.json` and
PNGs in `{root}/ade20k_panoptic_{train,val}/` (the output of Mask2Former's
`prepare_ade20k_pan_seg.py`). Category ids there are 0..149 with 255 for void; deeplab2's
semantic ids are `category + 1` (void 0). Labels use divisor 1000.
"""
from __future__ import annotations

import glob
import os

from kmax_tf.data.convert import panoptic

_IMAGE_DIRS = {"train": "training", "val": "validation"}


def category_map() -> dict[int, int]:
  mapping = {c: c + 1 for c in range(150)}
  mapping[255] = 0
  return mapping


def split_jobs(root: str, split: str, treat_crowd_as_ignore: bool = True):
  if split not in _IMAGE_DIRS:
    raise ValueError(f"unknown ADE20K split {split!r}; use one of {sorted(_IMAGE_DIRS)}")
  image_dir = os.path.join(root, "images", _IMAGE_DIRS[split])
  images = sorted(glob.glob(os.path.join(image_dir, "*.jpg")))
  if not images:
    raise ValueError(f"no images in {image_dir}")
  return panoptic.dataset_jobs(
      "ade20k_panoptic", images, os.path.join(root, f"ade20k_panoptic_{split}"),
      category_map=category_map(), treat_crowd_as_ignore=treat_crowd_as_ignore)


def convert(root: str, output_dir: str, splits=("train", "val"),
            **options) -> list[dict]:
  """Converts the splits (`options` as in `panoptic.convert_splits`); returns one summary per
  split."""
  return panoptic.convert_splits("ade20k_panoptic", split_jobs, root, output_dir, splits,
                                 **options)


def run(args) -> dict:
  return panoptic.run_converter("ade20k_panoptic", convert, args.ade20k_root, args)
