"""`kmax-tf predict (--saved_model D | --config_file F --checkpoint C) --input PATH...
--output_dir O`: COCO panoptic PNGs + JSON, semantic PNGs and labelled overlays for images."""
from __future__ import annotations

import json
import sys

from kmax_tf.commands import config as config_command


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "predict", help="Panoptic predictions for image files or folders (COCO panoptic PNG+JSON, "
      "semantic PNGs, overlays).")
  model = parser.add_mutually_exclusive_group(required=True)
  model.add_argument("--saved_model", metavar="DIR", help="A SavedModel from `kmax-tf export`.")
  model.add_argument("--config_file", metavar="FILE", help="Config (with --checkpoint).")
  parser.add_argument("--checkpoint", help="kmax-tf checkpoint prefix or directory.")
  parser.add_argument("--input", required=True, nargs="+", metavar="PATH",
                      help="Image files and/or folders of images.")
  parser.add_argument("--output_dir", required=True)
  config_command.add_override_argument(
      parser, "Value for a ${NAME} placeholder of --config_file (repeatable).")
  parser.add_argument("--no_progress", action="store_true", help="Hide the progress bar.")
  parser.set_defaults(handler=_predict)


def _predict(args) -> int:
  from kmax_tf import config, predict  # pylint: disable=import-outside-toplevel
  if args.config_file and not args.checkpoint:
    print("kmax-tf predict: error: --config_file needs --checkpoint", file=sys.stderr)
    return 2
  images = predict.list_images(args.input)
  if args.saved_model:
    predict_fn, dataset = predict.saved_model_predictor(args.saved_model)
  else:
    options = config.load_config(args.config_file, config.parse_overrides(args.override))
    predict_fn, dataset = predict.checkpoint_predictor(options, args.checkpoint)
  written = predict.predict_files(predict_fn, dataset, images, args.output_dir,
                                  progress=not args.no_progress)
  print(json.dumps(written))
  failures = written["failures"]
  if failures:
    # Each failure was reported when met; this line sums them up for scripts and logs.
    print(f"kmax-tf predict: error: {len(failures)} of {len(images)} images could not be read "
          f"(the others are in {written['panoptic_json']}): "
          + ", ".join(failure["path"] for failure in failures), file=sys.stderr)
    return 1
  return 0
