"""Shared by the converters: COCO-panoptic-format annotations -> deeplab2 panoptic labels, and
the parallel, atomic, checked writing of a split.

COCO panoptic format (used by COCO, Cityscapes' createPanopticImgs, Mask2Former's ADE20K script):
a JSON with `annotations: [{image_id, file_name, segments_info: [{id, category_id, area,
iscrowd}]}]` and one RGB PNG per image whose pixel colour encodes the segment id as
`R + 256 * G + 256**2 * B` (`panoptic_files.rgb_to_ids`).

deeplab2's label rules (build_coco_data.py & co.): pixels of no segment are void; category ids are
mapped to semantic ids; thing segments get instance ids 1, 2, ... per class in the order of
`segments_info`; crowd thing segments get instance 0 and, with `treat_crowd_as_ignore` (default),
become void; a stuff segment marked crowd is an error; segment areas are checked.
"""
from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
from typing import Callable, Mapping, Sequence

import numpy as np

from kmax_tf import datasets, images, panoptic_files
from kmax_tf.data import reader, shards, tfexample


def read_segment_ids(png_data: bytes, source: str) -> np.ndarray:
  """uint32 `[H, W]` segment ids of a COCO-panoptic RGB PNG."""
  image = images.open_image(png_data, source)
  if image.mode != "RGB":
    raise ValueError(f"{source}: panoptic PNG must be RGB, got mode {image.mode}")
  return panoptic_files.rgb_to_ids(np.asarray(image))


def segments_to_panoptic(segment_ids: np.ndarray, segments: Sequence[Mapping], *,
                         category_map: Mapping[int, int], thing_ids: Sequence[int],
                         ignore_label: int, divisor: int, treat_crowd_as_ignore: bool = True,
                         source: str = "") -> np.ndarray:
  """deeplab2 int32 panoptic label (`semantic * divisor + instance`) of one annotation.

  Args:
    segment_ids: `[H, W]` ids decoded from the PNG.
    segments: the annotation's `segments_info`.
    category_map: source category id -> semantic id.
    thing_ids: semantic ids of thing classes.
    ignore_label, divisor: dataset facts.
    treat_crowd_as_ignore: crowd -> void (True) or thing class with instance 0 (False).
    source: name used in error messages.
  """
  thing_ids = set(thing_ids)
  semantic = np.full(segment_ids.shape, ignore_label, np.int64)
  instance = np.zeros(segment_ids.shape, np.int64)
  instance_count = collections.Counter()
  for segment in segments:
    pixels = segment_ids == segment["id"]
    if "area" in segment and int(pixels.sum()) != segment["area"]:
      raise ValueError(f"{source}: segment {segment['id']} has {int(pixels.sum())} pixels, "
                       f"the annotation says {segment['area']}")
    if segment["category_id"] not in category_map:
      raise ValueError(f"{source}: segment {segment['id']} has unknown category_id "
                       f"{segment['category_id']}")
    category = category_map[segment["category_id"]]
    semantic[pixels] = category
    crowd = bool(segment.get("iscrowd", 0))
    if category in thing_ids:
      if crowd:
        if treat_crowd_as_ignore:
          semantic[pixels] = ignore_label
        continue
      instance_count[category] += 1
      if instance_count[category] >= divisor:
        raise ValueError(f"{source}: more than {divisor - 1} instances of class {category}")
      instance[pixels] = instance_count[category]
    elif crowd:
      raise ValueError(f"{source}: stuff segment {segment['id']} (class {category}) is crowd")
  return (semantic * divisor + instance).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class PanopticJob:
  """Everything a worker needs to build one record (picklable)."""
  image_path: str
  filename: str
  panoptic_png: str | None
  segments: tuple
  category_map: Mapping[int, int]
  thing_ids: tuple
  ignore_label: int
  divisor: int
  treat_crowd_as_ignore: bool = True
  image_format: str | None = "jpeg"  # None: PNG or JPEG from the file's content.


def make_record(job: PanopticJob) -> tuple[dict, collections.Counter]:
  """Returns the example's features and counts (segments, things, crowd) of one image.

  Runs in worker processes, so it uses numpy and PIL only (no TensorFlow).
  """
  with open(job.image_path, "rb") as f:
    image_data = f.read()
  stats = collections.Counter(images=1)
  label = None
  if job.panoptic_png is not None:
    with open(job.panoptic_png, "rb") as f:
      segment_ids = read_segment_ids(f.read(), job.panoptic_png)
    label = segments_to_panoptic(
        segment_ids, job.segments, category_map=job.category_map, thing_ids=job.thing_ids,
        ignore_label=job.ignore_label, divisor=job.divisor,
        treat_crowd_as_ignore=job.treat_crowd_as_ignore, source=job.panoptic_png)
    for segment in job.segments:
      stats["segments"] += 1
      stats["crowd_segments"] += int(bool(segment.get("iscrowd", 0)))
      stats["thing_segments"] += int(job.category_map.get(segment["category_id"])
                                     in job.thing_ids)
  image_format = job.image_format or ("png" if image_data[:4] == b"\x89PNG" else "jpeg")
  record = tfexample.make_features(image_data, image_format, job.filename,
                                  panoptic_label=label, source=job.image_path)
  return record, stats


def _pool(workers: int):
  if workers <= 1:
    return None
  # Fork (not spawn, which re-runs the parent's __main__): the workers only run numpy/PIL code,
  # never TensorFlow, so forking a process that has TensorFlow loaded is safe.
  return multiprocessing.get_context("fork").Pool(workers)


def write_split(jobs: Sequence, make: Callable, *, output_dir: str, split: str,
                num_shards: int, workers: int, descriptor, full_check: bool = False) -> dict:
  """Builds records with `workers` processes, writes `num_shards` shards, reads them back.

  Args:
    jobs: one picklable job per image, in output order.
    make: top-level function job -> (`tfexample.make_features` dict, Counter of statistics);
      run in the worker processes, so it must not use TensorFlow.
    output_dir, split, num_shards: output `{split}-XXXXX-of-YYYYY.tfrecord` files.
    workers: processes building records (1: in this process).
    descriptor: `DatasetDescriptor` the labels are checked against when reading back.
    full_check: decode every record when reading back (default: the first 2 of each shard).

  Returns:
    Summary dict (split, images, shards, statistics, records checked).
  """
  from tqdm import tqdm
  os.makedirs(output_dir, exist_ok=True)
  chunks = shards.split_evenly(list(jobs), num_shards)
  stats = collections.Counter()
  paths = []
  pool = _pool(workers)
  try:
    results = pool.imap(make, jobs, chunksize=4) if pool else map(make, jobs)
    with tqdm(total=len(jobs), desc=f"{split}", unit="image") as bar:
      for index, chunk in enumerate(chunks):
        def records(count=len(chunk)):
          for _ in range(count):
            record, record_stats = next(results)
            stats.update(record_stats)
            bar.update(1)
            yield tfexample.serialize(record)
        path = os.path.join(output_dir, shards.shard_name(split, index, num_shards))
        shards.write_shard(path, records())
        paths.append(path)
  finally:
    if pool:
      pool.terminate()
  check = reader.validate_records(paths, descriptor,
                                  max_records_per_file=None if full_check else 2,
                                  expected_counts=[len(c) for c in chunks])
  return {"split": split, "images": len(jobs), "shards": num_shards,
          "records_read_back": check["records"], **dict(stats)}


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def coco_format_jobs(image_paths: Sequence[str], annotations_json: str | None,
                     panoptic_dir: str | None, *, category_map: Mapping[int, int],
                     thing_ids: Sequence[int], ignore_label: int, divisor: int,
                     treat_crowd_as_ignore: bool, image_format: str | None = "jpeg",
                     image_key: Callable[[str], str] = _stem,
                     annotation_key: Callable[[Mapping], str] = lambda a: _stem(a["file_name"]),
                     ) -> list[PanopticJob]:
  """Pairs each image with its annotation: `image_key(path) == annotation_key(annotation)`.

  The image key is also the stored image/filename. Without `annotations_json` (test splits) the
  jobs carry no label.
  """
  import json
  annotations = {}
  if annotations_json is not None:
    with open(annotations_json, encoding="utf-8") as f:
      data = json.load(f)
    for annotation in data["annotations"]:
      name = annotation_key(annotation)
      if name in annotations:
        raise ValueError(f"{annotations_json}: image {name} is annotated twice")
      annotations[name] = annotation
  jobs = []
  for path in image_paths:
    name = image_key(path)
    png, segments = None, ()
    if annotations_json is not None:
      if name not in annotations:
        raise ValueError(f"{path}: no annotation in {annotations_json}")
      png = os.path.join(panoptic_dir, annotations[name]["file_name"])
      segments = tuple(annotations[name]["segments_info"])
    jobs.append(PanopticJob(
        image_path=path, filename=name, panoptic_png=png, segments=segments,
        category_map=dict(category_map), thing_ids=tuple(thing_ids), ignore_label=ignore_label,
        divisor=divisor, treat_crowd_as_ignore=treat_crowd_as_ignore,
        image_format=image_format))
  return jobs


def dataset_jobs(dataset_name: str, image_paths: Sequence[str], annotations: str | None, *,
                 category_map: Mapping[int, int], treat_crowd_as_ignore: bool,
                 **options) -> list[PanopticJob]:
  """`coco_format_jobs` with the thing ids, ignore label and divisor of a registered dataset.

  `annotations` names the COCO panoptic JSON `<annotations>.json` and its PNG folder
  `<annotations>/`, or is None for an unlabelled split; `options` as in `coco_format_jobs`.
  """
  descriptor = datasets.get_dataset(dataset_name)
  return coco_format_jobs(
      image_paths, None if annotations is None else f"{annotations}.json", annotations,
      category_map=category_map, thing_ids=descriptor.thing_class_ids,
      ignore_label=descriptor.ignore_label, divisor=descriptor.panoptic_label_divisor,
      treat_crowd_as_ignore=treat_crowd_as_ignore, **options)


def convert_splits(dataset_name: str, split_jobs: Callable, root: str, output_dir: str,
                   splits: Sequence[str] = ("train", "val"), *, num_shards: int = 1000,
                   workers: int = 2, treat_crowd_as_ignore: bool = True,
                   full_check: bool = False) -> list[dict]:
  """Writes every split of a panoptic dataset found under `root`;
  `split_jobs(root, split, treat_crowd_as_ignore)` lists its `PanopticJob`s. Returns one summary
  per split."""
  descriptor = datasets.get_dataset(dataset_name)
  return [write_split(split_jobs(root, split, treat_crowd_as_ignore), make_record,
                      output_dir=output_dir, split=split, num_shards=num_shards,
                      workers=workers, descriptor=descriptor, full_check=full_check)
          for split in splits]


def run_converter(dataset_name: str, convert: Callable, root: str, args) -> dict:
  """The `kmax-tf data convert` result of one official-dataset converter."""
  return {"dataset": dataset_name, "output_dir": args.output_dir, "splits": convert(
      root, args.output_dir, args.splits, num_shards=args.num_shards, workers=args.workers,
      treat_crowd_as_ignore=not args.keep_crowd, full_check=args.full_check)}
