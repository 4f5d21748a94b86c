"""The error and placeholder types shared by `kmax_tf.config` and `kmax_tf.config_validation`.

Kept apart so that the validator needs nothing from the loader that calls it.
"""
from __future__ import annotations

import dataclasses


class ConfigError(ValueError):
  """A config that cannot be parsed or would not run.

  `str()` is `FILE:LINE:COL: message`, or the message alone when the problem is not in a file
  (`path` None: a malformed `--override`).
  """

  def __init__(self, path, line: int, column: int, message: str):
    self.path = None if path is None else str(path)
    self.line, self.column, self.message = line, column, message
    super().__init__(message if path is None else f"{self.path}:{line}:{column}: {message}")


@dataclasses.dataclass(frozen=True)
class Placeholder:
  """A `${NAME}` occurrence left in the text (not resolved by environment or overrides)."""
  name: str
  line: int
  column: int
