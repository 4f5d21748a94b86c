"""Cityscapes panoptic -> deeplab2 TFRecords (deeplab2's build_cityscapes_data.py layout).

Reads `{root}/leftImg8bit/{split}/{city}/*_leftImg8bit.png` and the panoptic annotations that
cityscapesScripts' `createPanopticImgs --use-train-id` writes:
`{root}/gtFine/cityscapes_panoptic_{split}_trainId.json` and PNGs in
`{root}/gtFine/cityscapes_panoptic_{split}_trainId/`. Category ids there are already train ids
0..18 (void 255); annotations are matched on `image_id` == the image name without
`_leftImg8bit.png`, which is also the stored image/filename. Labels use divisor 1000.
"""
from __future__ import annotations

import glob
import os

from kmax_tf import datasets
from kmax_tf.data.convert import panoptic

_IMAGE_SUFFIX = "_leftImg8bit.png"


def _image_key(path: str) -> str:
  return os.path.basename(path)[:-len(_IMAGE_SUFFIX)]


def split_jobs(root: str, split: str, treat_crowd_as_ignore: bool = True):
  images = sorted(glob.glob(os.path.join(root, "leftImg8bit", split, "*", "*" + _IMAGE_SUFFIX)))
  if not images:
    raise ValueError(f"no *{_IMAGE_SUFFIX} images in {os.path.join(root, 'leftImg8bit', split)}")
  annotations = os.path.join(root, "gtFine", f"cityscapes_panoptic_{split}_trainId")
  num_classes = datasets.get_dataset("cityscapes_panoptic").num_classes
  return panoptic.dataset_jobs(
      "cityscapes_panoptic", images, annotations if split != "test" else None,
      category_map={i: i for i in range(num_classes)},
      treat_crowd_as_ignore=treat_crowd_as_ignore, image_format="png", image_key=_image_key, annotation_key=lambda a: a["image_id"])


def convert(root: str, output_dir: str, splits=("train", "val"),
            **options) -> list[dict]:
  """Converts the splits (`options` as in `panoptic.convert_splits`); returns one summary per
  split."""
  return panoptic.convert_splits("cityscapes_panoptic", split_jobs, root, output_dir, splits,
                                 **options)


def run(args) -> dict:
  return panoptic.run_converter("cityscapes_panoptic", convert, args.cityscapes_root, args)
