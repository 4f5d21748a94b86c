"""`kmax-tf export --config_file F --checkpoint C --output_dir D [--format tflite]`: SavedModel for
TF Serving, or the network as TFLite at one input size."""
from __future__ import annotations

import json

from kmax_tf.commands import config as config_command


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "export", help="Write a SavedModel (signatures serving_default [H,W,3] and serving_batch "
      "[B,H,W,3], uint8, any size) with post-processing.")
  parser.add_argument("--config_file", required=True, metavar="FILE")
  parser.add_argument("--checkpoint", required=True,
                      help="kmax-tf checkpoint prefix, or a directory (its latest checkpoint).")
  parser.add_argument("--output_dir", required=True, help="SavedModel directory to write.")
  parser.add_argument("--no_semantic_logits", action="store_true",
                      help="Leave out the raw semantic_logits output and the auxiliary semantic "
                      "branch computing it (faster; the panoptic, semantic and instance "
                      "predictions do not use it).")
  parser.add_argument("--format", choices=("saved_model", "tflite"), default="saved_model",
                      help="tflite: output_dir/model.tflite, the network only (no "
                      "post-processing), builtin ops, for one input size.")
  parser.add_argument("--tflite_size", type=int, nargs=2, metavar=("H", "W"), default=None,
                      help="TFLite input size, each side 32k + 1 (default: the eval crop size).")
  config_command.add_override_argument(parser)
  parser.set_defaults(handler=_export)


def _export(args) -> int:
  from kmax_tf import config, export  # pylint: disable=import-outside-toplevel
  # Data paths are irrelevant to an export: placeholders may stay unresolved.
  options = config.load_config(args.config_file, config.parse_overrides(args.override))
  if args.format == "tflite":
    path = export.export_tflite(options, args.checkpoint, args.output_dir, args.tflite_size)
    print(json.dumps({"tflite": path}))
    return 0
  export.export_saved_model(options, args.checkpoint, args.output_dir,
                            semantic_logits=not args.no_semantic_logits)
  print(json.dumps({"saved_model": args.output_dir,
                    "signatures": [export.DEFAULT_SIGNATURE, export.BATCH_SIGNATURE]}))
  return 0
