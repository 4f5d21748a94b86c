"""Checkpointing that survives being killed: resume from the newest readable checkpoint.

`tf.train.CheckpointManager` writes a checkpoint atomically (data files first, the `checkpoint`
index last), so a run killed mid-save leaves the previous checkpoint as the latest. A checkpoint
that is listed but cannot be read (a truncated or corrupted file) makes this manager fall back to
the one before it, with a warning, instead of failing the restart.
"""
from __future__ import annotations

from absl import logging
import tensorflow as tf

# What a damaged checkpoint raises when read.
_READ_ERRORS = (tf.errors.DataLossError, tf.errors.NotFoundError, tf.errors.InvalidArgumentError,
                tf.errors.OutOfRangeError, tf.errors.OpError, RuntimeError, ValueError)


class ResilientCheckpointManager(tf.train.CheckpointManager):
  """A `CheckpointManager` whose `restore_or_initialize` skips unreadable checkpoints."""

  def restore_or_initialize(self):
    """Restores the newest readable checkpoint, else runs `init_fn`; returns the path or None."""
    for path in reversed(self.checkpoints):
      try:
        self.checkpoint.restore(path).assert_existing_objects_matched()
      except _READ_ERRORS as error:
        logging.warning("Checkpoint %s is unreadable (%s: %s); falling back to the previous one.",
                        path, type(error).__name__, str(error).split("\n")[0])
        continue
      logging.info("Restored %s", path)
      return path
    if self._init_fn is not None:
      self._init_fn()
      logging.info("No checkpoint in %s; initialized from scratch or initial_checkpoint.",
                   self.directory)
    return None
