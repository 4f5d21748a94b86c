"""`kmax-tf train ...`: the training binary (same flags as `python -m kmax_tf.trainer.train`)."""
import argparse


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "train", add_help=False,
      help="Train/evaluate with deeplab2's flags (--config_file --mode --model_dir ...).")
  parser.add_argument("flags", nargs=argparse.REMAINDER)
  parser.set_defaults(handler=_train)


def _train(args) -> int:
  from kmax_tf.trainer import train  # pylint: disable=import-outside-toplevel

  train.run(["kmax-tf train", *args.flags])
  return 0
