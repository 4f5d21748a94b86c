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
  args = build_parser().parse_args(argv)
  return args.handler(args)


if __name__ == "__main__":
  sys.exit(main())
