"""`kmax-tf convert deeplab2 --config_file F --checkpoint CKPT --output_dir D`.

Converts a deeplab2 kMaX-DeepLab checkpoint (a full model, or an ImageNet-pretrained backbone)
into a kmax-tf checkpoint for the model `--config_file` builds.
"""
from __future__ import annotations

from kmax_tf.commands import config as config_command


def register(subparsers) -> None:
  parser = subparsers.add_parser("convert", help="Convert checkpoints of other implementations.")
  commands = parser.add_subparsers(dest="convert_command", metavar="SOURCE", required=True)
  deeplab2 = commands.add_parser(
      "deeplab2", help="deeplab2 kMaX-DeepLab checkpoint (full model or pretrained backbone) -> "
      "kmax-tf checkpoint. Stops with the full list of unmapped, missing or mismatched variables.")
  deeplab2.add_argument("--config_file", required=True, metavar="FILE",
                        help="The config of the model the checkpoint belongs to.")
  deeplab2.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="deeplab2 checkpoint prefix, or a directory (its latest checkpoint).")
  deeplab2.add_argument("--output_dir", required=True, metavar="DIR")
  config_command.add_override_argument(
      deeplab2, "Value for a ${NAME} placeholder (repeatable; optional here).")
  deeplab2.set_defaults(handler=_deeplab2)


def _deeplab2(args) -> int:
  # pylint: disable=import-outside-toplevel
  from kmax_tf import config
  from kmax_tf import convert_deeplab2
  from kmax_tf.model import builder

  try:
    # Placeholders (data paths, experiment names) do not affect the architecture.
    options = config.load_config(args.config_file,
                                 config.parse_overrides(args.override), validate=False)
    model = builder.build_model(options)
    saved = convert_deeplab2.convert(model, args.checkpoint, args.output_dir)
  except convert_deeplab2.ConversionError as error:
    # The problems concern this checkpoint: name it on the error line.
    raise convert_deeplab2.ConversionError(f"{args.checkpoint}: {error}") from error
  print(saved)
  return 0
