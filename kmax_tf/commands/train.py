"""`kmax-tf train ...`: the training binary (same flags as `python -m kmax_tf.trainer.train`)."""

_HELP_FLAGS = ("-h", "--help", "-?", "--helpshort")


def register(subparsers) -> None:
  # No arguments of its own: `cli.main` passes every argument after `train` to absl, which also
  # answers `--help`.
  parser = subparsers.add_parser(
      "train", add_help=False,
      help="Train/evaluate with deeplab2's flags (--config_file --mode --model_dir ...).")
  parser.set_defaults(handler=_train)


def _train(args) -> int:
  from kmax_tf.trainer import train  # pylint: disable=import-outside-toplevel

  if any(flag in _HELP_FLAGS for flag in args.flags):
    # absl's own help lists the flags of the `__main__` module, here the console script's
    # wrapper, which defines none.
    print(train.usage())
    return 0
  train.run(["kmax-tf train", *args.flags], raise_flag_errors=True)
  return 0
