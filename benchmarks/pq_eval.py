"""Benchmark: `kmax-tf eval pq` (kmax_tf.evaluation.pq_files) against panopticapi's `pq_compute`.

Generates COCO panoptic GT and predictions (default 500 images of 640x480, rectangles; ellipses
with `--shapes ellipses`, whose outlines change on almost every row as real ones do), runs
panopticapi (panopticapi-lite) as it runs itself (a pool of cpu_count processes) and pq_files
with the same number of workers, in this process, and prints one JSON line: timings, the speed
ratio, the largest PQ/SQ/RQ difference over All/Things/Stuff and over categories, our CPU time
per image with one worker, and the machine load.

  python benchmarks/pq_eval.py [--num_images 500] [--height 480] [--width 640] [--repeats 1]
      [--shapes rectangles|ellipses] [--data_dir DIR]
"""
import argparse
import contextlib
import importlib.util
import io
import json
import multiprocessing
import os
import pathlib
import tempfile
import time

from panopticapi.evaluation import pq_compute as panopticapi_pq_compute

from kmax_tf.evaluation import pq_files

_SYNTHETIC = pathlib.Path(__file__).resolve().parents[1] / "tests" / "evaluation" / (
    "synthetic_coco_panoptic.py")


def _load_generator():
  spec = importlib.util.spec_from_file_location("synthetic_coco_panoptic", _SYNTHETIC)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _cpu_seconds():
  """User + system CPU time of this process and its finished children (pq_files' workers)."""
  times = os.times()
  return times.user + times.system + times.children_user + times.children_system


def _max_difference(ours, theirs, per_class=False):
  if per_class:
    return float(max(abs(ours["per_class"][c][k] - v[k])
                     for c, v in theirs["per_class"].items() for k in ("pq", "sq", "rq")))
  return float(max(abs(ours[g][k] - theirs[g][k]) for g in ("All", "Things", "Stuff")
                   for k in ("pq", "sq", "rq")))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--num_images", type=int, default=500)
  parser.add_argument("--height", type=int, default=480)
  parser.add_argument("--width", type=int, default=640)
  parser.add_argument("--repeats", type=int, default=1,
                      help="Alternating runs of each; the best time of each is reported.")
  parser.add_argument("--shapes", choices=("rectangles", "ellipses"), default="rectangles",
                      help="Segment shapes. Rectangles leave most rows equal to the row above, "
                      "which the PNG reader exploits; ellipses, like real outlines, do not.")
  parser.add_argument("--data_dir", help="Keep the generated set here and reuse it if present "
                      "(a reused set keeps the shapes it was generated with); default: a "
                      "temporary folder.")
  args = parser.parse_args()
  workers = multiprocessing.cpu_count()  # what panopticapi uses
  with tempfile.TemporaryDirectory() as scratch:
    root = args.data_dir or scratch
    names = [os.path.join(root, n) for n in ("gt.json", "gt", "pred.json", "pred")]
    if not os.path.exists(names[2]):
      _load_generator().write_synthetic_set(root, args.num_images, args.height, args.width,
                                            seed=0, num_categories=40, shapes=args.shapes)
    gt_json, gt_folder, pred_json, pred_folder = names
    with open(gt_json, encoding="utf-8") as f:
      num_images = len(json.load(f)["annotations"])
    # Warm the page cache so neither side pays for the first read of the PNGs.
    for folder in (gt_folder, pred_folder):
      for path in pathlib.Path(folder).iterdir():
        path.read_bytes()
    files = (gt_json, pred_json, gt_folder, pred_folder)
    theirs_times, ours_times = [], []
    for _ in range(args.repeats):
      start = time.perf_counter()
      with contextlib.redirect_stdout(io.StringIO()):  # its progress lines and table
        theirs = panopticapi_pq_compute(*files)
      theirs_times.append(time.perf_counter() - start)
      start = time.perf_counter()
      ours = pq_files.pq_compute(*files, workers=workers)
      ours_times.append(time.perf_counter() - start)
    cpu_start = _cpu_seconds()
    single = pq_files.pq_compute(*files, workers=1)
    ours_cpu = _cpu_seconds() - cpu_start
  record = {
      "benchmark": "pq_eval",
      "images": num_images,
      "size": [args.height, args.width],
      "shapes": args.shapes,
      "workers": workers,
      "crowd_convention": ours["crowd_convention"],
      "panopticapi_seconds": round(min(theirs_times), 3),
      "kmax_tf_seconds": round(min(ours_times), 3),
      "speed_ratio": round(min(theirs_times) / min(ours_times), 2),
      "max_abs_difference_pq_sq_rq": _max_difference(ours, theirs),
      "max_abs_difference_per_class": _max_difference(ours, theirs, per_class=True),
      "identical_to_1e-9": _max_difference(ours, theirs) < 1e-9,
      "single_process_max_abs_difference": _max_difference(single, theirs),
      "kmax_tf_cpu_ms_per_image_one_process": round(1000 * ours_cpu / num_images, 2),
      "pq": ours["All"]["pq"],
      "uptime_load": [round(x, 2) for x in os.getloadavg()],
  }
  print(json.dumps(record))


if __name__ == "__main__":
  main()
