"""`kmax-tf eval pq`: panoptic quality of COCO panoptic format predictions (panopticapi rules)."""
import json
import os
import sys
import time


def register(subparsers):
  parser = subparsers.add_parser("eval", help="Evaluate predictions.")
  commands = parser.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND", required=True)
  pq = commands.add_parser(
      "pq", help="PQ/SQ/RQ of COCO panoptic PNG+JSON predictions (same numbers as panopticapi).")
  pq.add_argument("--gt_json", required=True, help="Ground-truth panoptic JSON.")
  pq.add_argument("--gt_folder", help="Ground-truth PNG folder (default: gt_json without .json).")
  pq.add_argument("--pred_json", required=True, help="Predicted panoptic JSON.")
  pq.add_argument("--pred_folder", help="Predicted PNG folder (default: pred_json without .json).")
  pq.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                  help="Processes reading images (default: one per CPU, as panopticapi).")
  pq.add_argument("--crowd_convention", choices=("official", "deeplab2"), default="official",
                  help="official: panopticapi's crowd rules; deeplab2: crowd regions are void.")
  pq.set_defaults(handler=_run_pq)


def _run_pq(args) -> int:
  from kmax_tf.evaluation import pq_files  # numpy, OpenCV, libdeflate; no TensorFlow needed.
  start = time.perf_counter()
  results = pq_files.pq_compute(args.gt_json, args.pred_json, args.gt_folder, args.pred_folder,
                                workers=args.workers, crowd_convention=args.crowd_convention)
  for warning in results["warnings"]:
    print(f"kmax-tf eval pq: warning: {warning}", file=sys.stderr)
  print(pq_files.format_table(results))
  summary = {key: results[key] for key in ("All", "Things", "Stuff", "crowd_convention",
                                           "num_images")}
  summary["seconds"] = round(time.perf_counter() - start, 3)
  print(json.dumps(summary))
  return 0
