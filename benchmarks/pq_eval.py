"""Benchmark: `kmax-tf eval pq` machinery vs a panopticapi-equivalent loop on a generated set.

Generates COCO panoptic GT and predictions (default 500 images of 640x480), runs the
panopticapi re-statement from tests/evaluation/panopticapi_reference.py (panopticapi itself is
not on PyPI; the re-statement performs the same numpy work per image) and
`kmax_tf.evaluation.pq_files.pq_compute`, both on one process, and prints one JSON line with
the timings, the speed ratio and the largest difference between the two result sets.

  python benchmarks/pq_eval.py [--num_images 500] [--height 480] [--width 640] [--workers 2]
"""
import argparse
import importlib.util
import json
import pathlib
import tempfile
import time

from kmax_tf.evaluation import pq_files

_REFERENCE = pathlib.Path(__file__).resolve().parents[1] / "tests" / "evaluation" / (
    "panopticapi_reference.py")


def _load_reference():
  spec = importlib.util.spec_from_file_location("panopticapi_reference", _REFERENCE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _max_difference(ours, theirs):
  diffs = [abs(ours[g][k] - theirs[g][k]) for g in ("All", "Things", "Stuff")
           for k in ("pq", "sq", "rq")]
  diffs += [abs(ours["per_class"][c][k] - v[k]) for c, v in theirs["per_class"].items()
            for k in ("pq", "sq", "rq")]
  return max(diffs)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_images", type=int, default=500)
  parser.add_argument("--height", type=int, default=480)
  parser.add_argument("--width", type=int, default=640)
  parser.add_argument("--workers", type=int, default=2,
                      help="Also time pq_files with this many processes (0 to skip).")
  args = parser.parse_args()
  reference = _load_reference()
  with tempfile.TemporaryDirectory() as root:
    gt_json, gt_folder, pred_json, pred_folder = reference.write_synthetic_set(
        root, args.num_images, args.height, args.width, seed=0, num_categories=40)
    # Warm the page cache so neither side pays for the first read of the PNGs.
    for folder in (gt_folder, pred_folder):
      for path in pathlib.Path(folder).iterdir():
        path.read_bytes()
    start = time.perf_counter()
    theirs = reference.pq_compute(gt_json, gt_folder, pred_json, pred_folder)
    reference_seconds = time.perf_counter() - start
    start = time.perf_counter()
    ours = pq_files.pq_compute(gt_json, pred_json, gt_folder, pred_folder, workers=1)
    ours_seconds = time.perf_counter() - start
    record = {
        "benchmark": "pq_eval",
        "num_images": args.num_images,
        "size": [args.height, args.width],
        "crowd_convention": ours["crowd_convention"],
        "reference_seconds": round(reference_seconds, 3),
        "kmax_tf_seconds": round(ours_seconds, 3),
        "speed_ratio": round(reference_seconds / ours_seconds, 2),
        "max_abs_difference": _max_difference(ours, theirs),
        "pq": ours["All"]["pq"],
    }
    if args.workers > 1:
      start = time.perf_counter()
      parallel = pq_files.pq_compute(gt_json, pred_json, gt_folder, pred_folder,
                                     workers=args.workers)
      record[f"kmax_tf_seconds_workers{args.workers}"] = round(time.perf_counter() - start, 3)
      # Chunks are summed in another order, so floats may differ in the last bits.
      record["workers_max_abs_difference"] = _max_difference(parallel, ours)
  print(json.dumps(record))


if __name__ == "__main__":
  main()
