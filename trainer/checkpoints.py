"""Checkpointing that survives being killed: resume from the newest readable checkpoint.

`tf.train.CheckpointManager` writes a checkpoint atomically (data files first, the `checkpoint`
index last), so a run killed mid-save leaves the previous checkpoint as the latest. A checkpoint
that is listed but cannot be read (a truncated or corrupted file) makes this manager fall back to
the one before it, with a warning, instead of failing the restart.

A save killed before it finished leaves its shards in a `<prefix>_temp/` directory (TensorFlow
writes them there and moves them into place last); the trainer removes those on start.
"""
from __future__ import annotations

from absl import logging
import tensorflow as tf

# What a damaged checkpoint raises when read. A data file cut short (full disk, lost node) makes
# the checkpoint reader raise IndexError ("Read less bytes than requested").
_READ_ERRORS = (tf.errors.DataLossError, tf.errors.NotFoundError, tf.errors.InvalidArgumentError,
                tf.errors.OutOfRangeError, tf.errors.OpError, RuntimeError, ValueError, IndexError)


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

  def remove_unfinished_saves(self) -> list[str]:
    """Deletes the `<prefix>_temp/` directories of saves that were killed; returns their paths.

    Only the process that writes checkpoints may call this: the directory of a save in progress
    looks the same.
    """
    removed = []
    for path in sorted(tf.io.gfile.glob(f"{self._checkpoint_prefix}-*_temp")):
      if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
        logging.warning("Removed %s, left by a checkpoint save that did not finish.", path)
        removed.append(path)
    return removed


class ModelVariables(tf.Module):
  """Checkpoint node holding every variable of a Keras model under its Keras path.

  `tf.train.Checkpoint(model=keras_model)` tracks only what TensorFlow's object graph reaches
  through Keras 3 attributes, which misses sub-layers kept in Python containers; checkpoints then
  lose weights silently. Keying each variable by `variable.path` (unique within a model, stable
  across runs and independent of tracking quirks) saves all of them, seed-generator states
  included, under readable names.
  """

  def __init__(self, model, include_seed_states: bool = True):
    """`include_seed_states=False` leaves out the RNG states of dropout/drop-path layers.

    Keras names those states by a process-wide counter (`seed_generator_<n>`), not by their
    layer, so they line up only between processes that build the same objects in the same order
    (a resumed training run does); loading weights into a second model built in the same
    process (export after training) must skip them.
    """
    super().__init__(name="model_variables")
    by_path = {}
    prefix = f"{model.name}/"
    for variable in model.variables:
      if not include_seed_states and is_seed_state(variable):
        continue
      # Relative to the model, so auto-uniquified model names ("model_1") do not matter.
      key = variable.path[len(prefix):] if variable.path.startswith(prefix) else variable.path
      if key in by_path and by_path[key] is not variable:
        raise ValueError(f"Two variables of {model.name} share the path {key!r}")
      by_path[key] = variable
    self.by_path = by_path


def is_seed_state(variable) -> bool:
  """Whether `variable` is the state of a `keras.random.SeedGenerator`."""
  return variable.path.rsplit("/", 1)[-1] == "seed_generator_state"


def restore_model_variables(model, path: str, require_all: bool = True,
                            skip_prefixes: tuple[str, ...] = ()) -> None:
  """Loads a kmax-tf checkpoint's model weights into `model`.

  Args:
    model: the Keras model.
    path: a checkpoint prefix or a directory (its latest checkpoint).
    require_all: every model variable must be in the checkpoint; otherwise at least one must
      (e.g. a backbone-only `initial_checkpoint`).
    skip_prefixes: model variables whose path (relative to the model) starts with one of these
      keep their values, whatever the checkpoint holds for them (shape included).
  """
  if tf.io.gfile.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest is None:
      raise FileNotFoundError(f"No checkpoint in directory {path}")
    path = latest
  node = ModelVariables(model, include_seed_states=False)
  node.by_path = {key: variable for key, variable in node.by_path.items()
                  if not key.startswith(tuple(skip_prefixes))}
  status = tf.train.Checkpoint(model=node).restore(path).expect_partial()
  if require_all:
    status.assert_existing_objects_matched()
  else:
    status.assert_nontrivial_match()
  logging.info("Loaded %d model variables from %s", len(node.by_path), path)
