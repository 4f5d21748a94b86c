"""COCO panoptic -> deeplab2 TFRecords (deeplab2's build_coco_data.py layout and label rules).

Reads `{coco_root}/{train,val,test}2017/*.jpg`, `{coco_root}/annotations/panoptic_{split}2017.json`
and `{coco_root}/annotations/panoptic_{split}2017/*.png`. COCO category ids (1..200 with gaps) map
to the contiguous semantic ids 1..133 of `coco_panoptic` (the inverse of the descriptor's
`eval_category_ids`); the test split has no labels.
"""
from __future__ import annotations

import glob
import os

from kmax_tf import datasets
from kmax_tf.data.convert import panoptic

_IMAGE_DIRS = {"train": "train2017", "val": "val2017", "test": "test2017"}


def category_map() -> dict[int, int]:
  """COCO category id -> semantic id."""
  descriptor = datasets.get_dataset("coco_panoptic")
  return {coco_id: semantic for semantic, coco_id in enumerate(descriptor.eval_category_ids)
          if semantic != descriptor.ignore_label}


def split_jobs(coco_root: str, split: str, treat_crowd_as_ignore: bool = True):
  if split not in _IMAGE_DIRS:
    raise ValueError(f"unknown COCO split {split!r}; use one of {sorted(_IMAGE_DIRS)}")
  images = sorted(glob.glob(os.path.join(coco_root, _IMAGE_DIRS[split], "*.jpg")))
  if not images:
    raise ValueError(f"no images in {os.path.join(coco_root, _IMAGE_DIRS[split])}")
  annotations = os.path.join(coco_root, "annotations", f"panoptic_{split}2017")
  return panoptic.dataset_jobs(
      "coco_panoptic", images, annotations if split != "test" else None,
      category_map=category_map(), treat_crowd_as_ignore=treat_crowd_as_ignore)


def convert(coco_root: str, output_dir: str, splits=("train", "val"),
            **options) -> list[dict]:
  """Converts the splits (`options` as in `panoptic.convert_splits`); returns one summary per
  split."""
  return panoptic.convert_splits("coco_panoptic", split_jobs, coco_root, output_dir, splits,
                                 **options)


def run(args) -> dict:
  return panoptic.run_converter("coco_panoptic", convert, args.coco_root, args)
