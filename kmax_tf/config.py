"""Loads deeplab2-style textproto configs into `ExperimentOptions`, with `${NAME}` substitution.

Every error is a `ConfigError`; one in a config file starts with `FILE:LINE:COL:` and names the
field.
"""
from __future__ import annotations

import os
import pathlib
import re
from typing import Mapping, Sequence

from google.protobuf import text_format

from kmax_tf import config_validation
from kmax_tf.config_types import ConfigError, Placeholder
from kmax_tf.protos import config_pb2

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# text_format errors look like "12:5 : Message type ... has no field named ...".
_TEXT_FORMAT_POSITION = re.compile(r"^(\d+):(\d+)\s*:\s*(.*)$", re.S)


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
  """`["A=1", "B=x"]` -> `{"A": "1", "B": "x"}`, the placeholder values of `--override` flags.

  Raises:
    ConfigError: for a pair without `=` or without a name (no position: it is not in a file).
  """
  overrides = {}
  for pair in pairs:
    name, sep, value = pair.partition("=")
    if not sep or not name:
      raise ConfigError(None, 0, 0, f"--override expects NAME=VALUE, got {pair!r}")
    overrides[name] = value
  return overrides


def substitute_placeholders(text: str, values: Mapping[str, str]) -> tuple[str, list[Placeholder]]:
  """Replaces `${NAME}` with `values[NAME]` where known; returns the text and what is left.

  Substitution is done line by line so that the line numbers of later errors stay those of the
  file on disk.
  """
  unresolved = []
  lines = text.split("\n")
  for number, line in enumerate(lines, start=1):
    def replace(match, number=number):
      name = match.group(1)
      if name in values:
        return values[name]
      unresolved.append(Placeholder(name, number, match.start() + 1))
      return match.group(0)
    lines[number - 1] = _PLACEHOLDER.sub(replace, line)
  return "\n".join(lines), unresolved


def parse_config_text(text: str, path="<string>") -> config_pb2.ExperimentOptions:
  """Parses textproto `text`; errors become `ConfigError` with the position in `path`."""
  options = config_pb2.ExperimentOptions()
  try:
    text_format.Parse(text, options)
  except text_format.ParseError as error:
    line, column = error.GetLine(), error.GetColumn()
    message = str(error)
    match = _TEXT_FORMAT_POSITION.match(message)
    if match:
      line, column, message = int(match.group(1)), int(match.group(2)), match.group(3)
    raise ConfigError(path, line or 0, column or 0, message.strip()) from None
  return options


def read_config_text(path: pathlib.Path) -> str:
  """The UTF-8 text of the config file `path`; a `ConfigError` if it is unreadable or not UTF-8
  (positioned at the first undecodable byte, the column counted in bytes)."""
  try:
    data = path.read_bytes()
  except OSError as error:
    raise ConfigError(path, 0, 0, f"cannot read config: {error.strerror}") from None
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as error:
    line_start = data.rfind(b"\n", 0, error.start) + 1
    raise ConfigError(path, data.count(b"\n", 0, error.start) + 1, error.start - line_start + 1,
                      f"not UTF-8 text: byte 0x{data[error.start]:02x} ({error.reason}); "
                      "textproto configs are UTF-8") from None


def load_config(path, overrides: Mapping[str, str] | None = None, *, use_environment: bool = True,
                validate: bool = True,
                required_fields: Sequence[str] = ()) -> config_pb2.ExperimentOptions:
  """Reads a textproto `ExperimentOptions`.

  Args:
    path: the textproto file.
    overrides: values for `${NAME}` placeholders; they win over the environment.
    use_environment: also take placeholder values from `os.environ`.
    validate: run `kmax_tf.config_validation.validate` (dataset/backbone names, crop sizes,
      class counts, thresholds, string choices).
    required_fields: dotted fields the caller will use (e.g. `config_validation.TRAIN_FIELDS`);
      a placeholder left unresolved in one of them is an error. Elsewhere placeholders are
      allowed (deeplab2 configs ship `${TRAIN_SET}` and friends).

  Raises:
    ConfigError: on a parse or validation error, positioned in `path`.
  """
  options, _ = load_config_with_placeholders(
      path, overrides, use_environment=use_environment, validate=validate,
      required_fields=required_fields)
  return options


def load_config_with_placeholders(
    path, overrides: Mapping[str, str] | None = None, *, use_environment: bool = True,
    validate: bool = True, required_fields: Sequence[str] = ()
) -> tuple[config_pb2.ExperimentOptions, list[Placeholder]]:
  """`load_config`, also returning the placeholders left unresolved."""
  path = pathlib.Path(path)
  text = read_config_text(path)
  values = dict(os.environ) if use_environment else {}
  values.update(overrides or {})
  text, unresolved = substitute_placeholders(text, values)
  options = parse_config_text(text, path)
  if validate:
    config_validation.validate(options, text, path, unresolved, required_fields)
  return options, unresolved
