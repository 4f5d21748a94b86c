"""`kmax-tf demo [--output_dir D] [--quick]`: data -> train -> evaluate -> export -> overlays."""
import os


def register(subparsers) -> None:
  parser = subparsers.add_parser(
      "demo", help="Train, evaluate and export a small kMaX model on the built-in synthetic "
      "dataset (CPU, about 15 minutes); prints a JSON summary last.")
  parser.add_argument("--output_dir", default=os.path.join(os.getcwd(), "kmax_demo"),
                      help="Where data, checkpoints, the SavedModel and overlays go.")
  parser.add_argument("--quick", action="store_true",
                      help="A few steps on the micro config: checks every stage, not accuracy.")
  parser.add_argument("--train_steps", type=int, default=None,
                      help="Override the number of training steps.")
  parser.add_argument("--seed", type=int, default=0)
  parser.set_defaults(handler=_demo)


def _demo(args) -> int:
  from absl import logging  # pylint: disable=import-outside-toplevel
  from kmax_tf import demo  # pylint: disable=import-outside-toplevel

  logging.set_verbosity(logging.INFO)
  summary = demo.run_demo(args.output_dir, quick=args.quick, seed=args.seed,
                          train_steps=args.train_steps)
  print(demo.main_json(summary))
  return 0
