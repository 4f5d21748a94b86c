"""`kmax-tf data ...`: write the synthetic dataset, convert datasets to TFRecords, check records.

  kmax-tf data synthetic --output_dir D --num_train N --num_eval M [--image_size S] [--seed K]
  kmax-tf data convert coco --coco_root R --output_dir D [--splits train val]
  kmax-tf data convert cityscapes --cityscapes_root R --output_dir D
  kmax-tf data convert ade20k --ade20k_root R --output_dir D
  kmax-tf data convert folder --images_dir I --panoptic_json J --panoptic_dir P --output_dir D
  kmax-tf data check --dataset NAME --file_pattern 'D/train-*.tfrecord' [--skip_bad_records]
"""
from __future__ import annotations

import argparse
import json


def _add_convert_common(parser: argparse.ArgumentParser, num_shards: int):
  parser.add_argument("--output_dir", required=True)
  parser.add_argument("--num_shards", type=int, default=num_shards,
                      help=f"shards per split (deeplab2 uses {num_shards})")
  parser.add_argument("--workers", type=int, default=2, help="parallel worker processes")
  parser.add_argument("--full_check", action="store_true",
                      help="decode every written record when reading back (default: the first "
                           "records of each shard; record counts are always checked)")


def register(subparsers) -> None:
  parser = subparsers.add_parser("data", help="datasets: synthetic data, converters, checks")
  commands = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

  synthetic = commands.add_parser(
      "synthetic", help="write the built-in synthetic_panoptic dataset as TFRecords")
  synthetic.add_argument("--output_dir", required=True)
  synthetic.add_argument("--num_train", type=int, default=256)
  synthetic.add_argument("--num_eval", type=int, default=32)
  synthetic.add_argument("--image_size", type=int, default=128)
  synthetic.add_argument("--seed", type=int, default=0)
  synthetic.add_argument("--image_format", choices=("png", "jpeg"), default="png")
  synthetic.set_defaults(handler=_synthetic)

  convert = commands.add_parser("convert", help="convert a dataset to deeplab2 TFRecords")
  sources = convert.add_subparsers(dest="source", metavar="SOURCE", required=True)
  coco = sources.add_parser("coco", help="COCO panoptic (train2017/, val2017/, annotations/)")
  coco.add_argument("--coco_root", required=True)
  coco.add_argument("--splits", nargs="+", default=["train", "val"])
  coco.add_argument("--keep_crowd", action="store_true",
                    help="keep crowd as thing pixels with instance 0 (default: crowd -> void, "
                         "deeplab2's treat_crowd_as_ignore)")
  _add_convert_common(coco, 1000)
  coco.set_defaults(handler=_convert)

  cityscapes = sources.add_parser(
      "cityscapes", help="Cityscapes gtFine panoptic (cityscapesScripts createPanopticImgs "
                         "--use-train-id output)")
  cityscapes.add_argument("--cityscapes_root", required=True)
  cityscapes.add_argument("--splits", nargs="+", default=["train", "val"])
  cityscapes.add_argument("--keep_crowd", action="store_true")
  _add_convert_common(cityscapes, 10)
  cityscapes.set_defaults(handler=_convert)

  ade20k = sources.add_parser("ade20k", help="ADE20K panoptic (Mask2Former's prepare script)")
  ade20k.add_argument("--ade20k_root", required=True)
  ade20k.add_argument("--splits", nargs="+", default=["train", "val"])
  ade20k.add_argument("--keep_crowd", action="store_true")
  _add_convert_common(ade20k, 1000)
  ade20k.set_defaults(handler=_convert)

  folder = sources.add_parser(
      "folder", help="a custom dataset in COCO panoptic format with its own categories")
  folder.add_argument("--images_dir", required=True)
  folder.add_argument("--panoptic_json", required=True)
  folder.add_argument("--panoptic_dir", required=True)
  folder.add_argument("--split", default="train")
  folder.add_argument("--label_divisor", type=int, default=256)
  folder.add_argument("--keep_crowd", action="store_true")
  _add_convert_common(folder, 10)
  folder.set_defaults(handler=_convert)

  check = commands.add_parser("check", help="decode and check every record of TFRecord files")
  check.add_argument("--dataset", required=True, help="dataset name, e.g. coco_panoptic")
  check.add_argument("--file_pattern", required=True, nargs="+")
  check.add_argument("--skip_bad_records", action="store_true",
                     help="count and list bad records instead of stopping at the first")
  check.set_defaults(handler=_check)


def _synthetic(args) -> int:
  from kmax_tf.data import synthetic
  paths = synthetic.write_dataset(args.output_dir, args.num_train, args.num_eval,
                                  image_size=args.image_size, seed=args.seed,
                                  image_format=args.image_format)
  print(json.dumps({"output_dir": args.output_dir, "num_train": args.num_train,
                    "num_eval": args.num_eval, "shards": {k: len(v) for k, v in paths.items()}}))
  return 0


def _convert(args) -> int:
  import importlib
  summary = importlib.import_module(f"kmax_tf.data.convert.{args.source}").run(args)
  print(json.dumps(summary))
  return 0


def _check(args) -> int:
  from kmax_tf import datasets
  from kmax_tf.data import reader
  files = reader.list_files(args.file_pattern)
  result = reader.validate_records(files, datasets.get_dataset(args.dataset),
                                   skip_bad_records=args.skip_bad_records)
  print(json.dumps({"files": len(files), "records": result["records"],
                    "bad_records": [{"file": f, "index": i, "problem": p}
                                    for f, i, p in result["bad"]]}))
  return 1 if result["bad"] else 0
