"""A custom dataset in COCO panoptic format -> deeplab2 TFRecords plus its categories file.

Input: a directory of images, a COCO-panoptic JSON with its own `categories`
(`[{id, name, isthing, color?}]`), `images` (`[{id, file_name}]`) and `annotations`, and the
directory of its RGB panoptic PNGs. Categories get the semantic ids 1..K in the order they are
listed (0 is void); `{output_dir}/categories.json` records the mapping and the dataset facts
(num_classes, ignore_label 0, panoptic_label_divisor, thing ids, names, colours).
"""
from __future__ import annotations

import json
import os

import numpy as np

from kmax_tf import datasets
from kmax_tf.data.convert import panoptic

CATEGORIES_FILE = "categories.json"


def dataset_info(categories: list[dict], divisor: int, name: str = "custom_panoptic") -> dict:
  """The categories file content for COCO-style `categories`."""
  if not categories:
    raise ValueError("the panoptic JSON has no categories")
  entries = []
  for semantic, category in enumerate(categories, start=1):
    color = category.get("color") or [int(v) for v in
                                      np.random.default_rng(semantic).integers(0, 256, 3)]
    entries.append({"id": semantic, "source_id": category["id"], "name": category["name"],
                    "isthing": int(bool(category.get("isthing", 0))), "color": list(color)})
  return {"name": name, "num_classes": len(entries) + 1, "ignore_label": 0,
          "panoptic_label_divisor": divisor, "categories": entries}


def descriptor_from_info(info: dict) -> datasets.DatasetDescriptor:
  """A `DatasetDescriptor` for a categories file (void 0 + the listed categories)."""
  categories = info["categories"]
  return datasets.DatasetDescriptor(
      name=info["name"], splits_to_sizes={}, num_classes=info["num_classes"],
      ignore_label=info["ignore_label"], panoptic_label_divisor=info["panoptic_label_divisor"],
      class_has_instances_list=tuple(c["id"] for c in categories if c["isthing"]),
      class_names=("void",) + tuple(c["name"] for c in categories),
      colormap=np.asarray([[0, 0, 0]] + [c["color"] for c in categories], np.uint8))


def convert(images_dir: str, panoptic_json: str, panoptic_dir: str, output_dir: str, *,
            split: str = "train", label_divisor: int = 256, num_shards: int = 10,
            workers: int = 2, treat_crowd_as_ignore: bool = True,
            full_check: bool = False) -> dict:
  """Writes `{split}-*.tfrecord` and `categories.json`; returns the split summary."""
  with open(panoptic_json, encoding="utf-8") as f:
    data = json.load(f)
  info = dataset_info(data.get("categories", []), label_divisor)
  descriptor = descriptor_from_info(info)
  category_map = {c["source_id"]: c["id"] for c in info["categories"]}
  file_names = {image["id"]: image["file_name"] for image in data.get("images", [])}
  for annotation in data["annotations"]:
    if annotation["image_id"] not in file_names:
      raise ValueError(f"{panoptic_json}: annotation {annotation['file_name']} refers to "
                       f"image_id {annotation['image_id']}, which is not in `images`")
  paths = sorted(os.path.join(images_dir, file_names[a["image_id"]]) for a in data["annotations"])
  jobs = panoptic.coco_format_jobs(
      paths, panoptic_json, panoptic_dir, category_map=category_map,
      thing_ids=descriptor.thing_class_ids, ignore_label=0, divisor=label_divisor,
      treat_crowd_as_ignore=treat_crowd_as_ignore, image_format=None,
      annotation_key=lambda a: os.path.splitext(file_names[a["image_id"]])[0])
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, CATEGORIES_FILE), "w", encoding="utf-8") as f:
    json.dump(info, f, indent=1)
  return panoptic.write_split(jobs, panoptic.make_record, output_dir=output_dir, split=split,
                              num_shards=num_shards, workers=workers, descriptor=descriptor,
                              full_check=full_check)


def run(args) -> dict:
  summary = convert(args.images_dir, args.panoptic_json, args.panoptic_dir, args.output_dir,
                    split=args.split, label_divisor=args.label_divisor,
                    num_shards=args.num_shards, workers=args.workers,
                    treat_crowd_as_ignore=not args.keep_crowd, full_check=args.full_check)
  return {"dataset": "folder", "output_dir": args.output_dir,
          "categories_file": os.path.join(args.output_dir, CATEGORIES_FILE), "splits": [summary]}
