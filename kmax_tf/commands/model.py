"""`kmax-tf model summary --config_file F [--format text|json]`: parameter counts per component."""
from __future__ import annotations

import json

from kmax_tf.commands import config as config_command


def register(subparsers) -> None:
  parser = subparsers.add_parser("model", help="Inspect the model a config builds.")
  commands = parser.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)
  summary = commands.add_parser(
      "summary", help="Trainable / non-trainable parameter counts per component and in total.")
  summary.add_argument("--config_file", required=True, metavar="FILE")
  summary.add_argument("--format", choices=("text", "json"), default="text")
  config_command.add_override_argument(
      summary, "Value for a ${NAME} placeholder (repeatable; optional here).")
  summary.set_defaults(handler=_summary)


def summarize(options) -> dict:
  """Builds the model of `options` and returns the JSON-mode summary object."""
  from kmax_tf.model import builder  # pylint: disable=import-outside-toplevel

  counts = builder.component_parameter_counts(builder.build_model(options))
  return {
      "trainable_params": sum(c[0] for c in counts.values()),
      "non_trainable_params": sum(c[1] for c in counts.values()),
      "components": {name: c[0] for name, c in counts.items()},
      "non_trainable_components": {name: c[1] for name, c in counts.items()},
  }


def _summary(args) -> int:
  from kmax_tf import config  # pylint: disable=import-outside-toplevel

  # Placeholders (data paths, experiment names) do not affect the architecture.
  options = config.load_config(args.config_file, config.parse_overrides(args.override),
                               validate=False)
  result = summarize(options)
  if args.format == "json":
    print(json.dumps(result, sort_keys=True))
    return 0
  print(f"{'component':<22}{'trainable':>14}{'non-trainable':>16}")
  for name, trainable in result["components"].items():
    print(f"{name:<22}{trainable:>14,}{result['non_trainable_components'][name]:>16,}")
  print(f"{'total':<22}{result['trainable_params']:>14,}{result['non_trainable_params']:>16,}")
  return 0
