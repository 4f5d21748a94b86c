"""The `kmax-tf` console script: dispatches to the modules in `kmax_tf.commands`."""
import argparse
import importlib
import sys

# Order is the order shown by `kmax-tf --help`.
_COMMAND_MODULES = (
    "demo",
    "config",
    "model",
    "data",
    "train",
    "eval",
    "export",
    "predict",
    "convert",
)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="kmax-tf",
      description="kMaX-DeepLab in TensorFlow 2 / Keras 3, compatible with deeplab2 configs.")
  subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
  for name in _COMMAND_MODULES:
    importlib.import_module(f"kmax_tf.commands.{name}").register(subparsers)
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  # `kmax-tf train` hands its flags to absl, which parses and checks them (deeplab2's flags,
  # both `--flag=value` and `--flag value`); argparse's REMAINDER would not collect them when an
  # option comes first, so they arrive as the unknown arguments here.
  args, unknown = parser.parse_known_args(argv)
  if args.command == "train":
    args.flags = unknown
  elif unknown:
    parser.error(f"unrecognized arguments: {' '.join(unknown)}")
  return args.handler(args)


if __name__ == "__main__":
  sys.exit(main())
