"""`kmax-tf config check FILE...`: parse and validate configs, one summary line per file."""
from __future__ import annotations

import sys


def register(subparsers) -> None:
  parser = subparsers.add_parser("config", help="Inspect experiment configs.")
  commands = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
  check = commands.add_parser(
      "check", help="Parse and validate textproto configs; exit non-zero on any error.")
  check.add_argument("files", nargs="+", metavar="FILE")
  add_override_argument(check)
  check.set_defaults(handler=_check)


def add_override_argument(parser, help_text: str = "Value for a ${NAME} placeholder "
                          "(repeatable).") -> None:
  """`--override NAME=VALUE` (repeatable), the placeholder flag every config-reading command
  takes; `kmax_tf.config.parse_overrides` turns its values into the loader's dict."""
  parser.add_argument("--override", action="append", default=[], metavar="NAME=VALUE",
                      help=help_text)


def _summary(options, unresolved) -> str:
  train = options.train_dataset_options
  crop = "x".join(str(v) for v in train.crop_size) or "-"
  parts = [
      f"dataset={train.dataset or '-'}",
      f"backbone={options.model_options.backbone.name}",
      f"crop={crop}",
      f"batch={train.batch_size}",
      f"steps={options.trainer_options.solver_options.training_number_of_steps}",
  ]
  if unresolved:
    parts.append("placeholders=" + ",".join(sorted({p.name for p in unresolved})))
  return " ".join(parts)


def _check(args) -> int:
  from kmax_tf import config  # pylint: disable=import-outside-toplevel

  overrides = config.parse_overrides(args.override)
  failures = 0
  for path in args.files:
    try:
      options, unresolved = config.load_config_with_placeholders(path, overrides)
    except config.ConfigError as error:
      print(error, file=sys.stderr)
      failures += 1
      continue
    print(f"{path}: OK {_summary(options, unresolved)}")
  return 1 if failures else 0
