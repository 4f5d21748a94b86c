"""Training binary with deeplab2's flags.

  python -m kmax_tf.trainer.train --config_file=F --mode=train --model_dir=D [--num_gpus=N]
      [--master=TPU] [--override NAME=VALUE ...]

(also `kmax-tf train ...` with the same flags). `--mode` is one of train, eval, train_and_eval,
continuous_eval. Placeholders such as `${TRAIN_SET}` are taken from the environment or
`--override`.
"""
from __future__ import annotations

import sys

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", None, ["train", "eval", "train_and_eval", "continuous_eval"],
                  "What to run.")
flags.DEFINE_string("model_dir", None, "Base directory for checkpoints and summaries; the "
                    "experiment writes to model_dir/<experiment_name>.")
flags.DEFINE_string("config_file", None, "Textproto ExperimentOptions.")
flags.DEFINE_string("master", None, "TPU name or address; selects TPUStrategy.")
flags.DEFINE_integer("num_gpus", 0, "0: CPU; 1: one GPU; >1: MirroredStrategy.")
flags.DEFINE_multi_string("override", [], "NAME=VALUE for a ${NAME} config placeholder.")
flags.DEFINE_integer("seed", None, "Random seed of initialization, data order and augmentation.")
flags.DEFINE_bool("deterministic", False, "Deterministic ops and input pipeline (slower).")
flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA (one device only).")
flags.DEFINE_enum("mixed_precision", None, ["mixed_bfloat16", "mixed_float16"],
                  "Keras mixed-precision policy (losses and logits stay float32).")
flags.DEFINE_bool("skip_bad_records", False, "Drop training records that cannot be read or fail "
                  "their checks (each logged, counted in the log and in TensorBoard) instead "
                  "of stopping.")
flags.DEFINE_integer("max_steps", None, "Stop after this many steps (default: the config's "
                     "training_number_of_steps).")


def _required_fields(mode: str):
  from kmax_tf import config_validation  # pylint: disable=import-outside-toplevel
  fields = ()
  if "train" in mode:
    fields += config_validation.TRAIN_FIELDS
  if "eval" in mode:
    fields += config_validation.EVAL_FIELDS
  return fields


def main(argv):
  del argv
  from kmax_tf import config  # pylint: disable=import-outside-toplevel
  from kmax_tf.trainer import train_lib  # pylint: disable=import-outside-toplevel

  if "eval" in FLAGS.mode and FLAGS.num_gpus > 1:
    raise app.UsageError("Evaluation runs on one device: use --num_gpus <= 1 for eval modes.")
  try:
    overrides = config.parse_overrides(FLAGS.override)
  except config.ConfigError as error:
    # A malformed flag, not a config problem: the message alone and exit code 1, which
    # `kmax-tf train` turns into its one error line.
    raise SystemExit(str(error)) from None
  run_options = train_lib.RunOptions(
      seed=FLAGS.seed, deterministic=FLAGS.deterministic, jit_compile=FLAGS.jit_compile,
      mixed_precision=FLAGS.mixed_precision, max_steps=FLAGS.max_steps,
      skip_bad_records=FLAGS.skip_bad_records)
  try:
    options = config.load_config(FLAGS.config_file, overrides,
                                 required_fields=_required_fields(FLAGS.mode))
    train_lib.run_experiment(FLAGS.mode, options, FLAGS.model_dir, FLAGS.master, FLAGS.num_gpus,
                             run_options)
  except (config.ConfigError, train_lib.ModelDirError) as error:
    logging.error("%s", error)
    print(error, file=sys.stderr)
    return 2
  return 0


def usage() -> str:
  """This binary's usage and its flags with their help texts and defaults."""
  return f"{__doc__}\n{FLAGS.module_help(__name__)}"


def _parse_flags_or_raise(argv):
  """absl's flag parsing with errors raised as ValueError (one line from `kmax-tf train`),
  where absl's own parser prints them and exits."""
  try:
    return FLAGS(argv)
  except flags.Error as error:
    raise ValueError(f"{error} (see --help)") from None


def run(argv=None, raise_flag_errors: bool = False):
  """Entry point shared by `python -m kmax_tf.trainer.train` and `kmax-tf train`
  (`raise_flag_errors`: a bad or missing flag raises ValueError instead of exiting)."""
  flags.mark_flags_as_required(["mode", "model_dir", "config_file"])
  if raise_flag_errors:
    app.run(main, argv=argv, flags_parser=_parse_flags_or_raise)
  else:
    app.run(main, argv=argv)


if __name__ == "__main__":
  run()
