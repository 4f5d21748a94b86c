"""Checks on a parsed `ExperimentOptions` that protobuf parsing cannot make."""
from __future__ import annotations

from kmax_tf import datasets
from kmax_tf.config import ConfigError


def validate(options, text: str, path, unresolved) -> None:
  """Raises `ConfigError` (with the field's line) for the first problem found."""
  del unresolved  # TODO(foundation): full validation lands with issue 3.
  for field in ("train_dataset_options", "eval_dataset_options"):
    if options.HasField(field):
      name = getattr(options, field).dataset
      if name and name not in datasets.DATASET_NAMES:
        raise ConfigError(path, 0, 0, f"{field}.dataset: unknown dataset {name!r}")
  del text
