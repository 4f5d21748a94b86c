"""Model weights in kmax-tf checkpoints: which variables are saved, under which keys, and how a
checkpoint path is found and loaded.

The trainer saves `ModelVariables` beside its own state; the converter writes the same layout
from deeplab2 checkpoints; export, evaluation and the demo load it with `restore_model_variables`.
"""
from __future__ import annotations

from absl import logging
import tensorflow as tf


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


def resolve_checkpoint(path: str) -> str:
  """The checkpoint prefix `path` names: `path` itself, or for a directory its latest checkpoint.

  Raises:
    FileNotFoundError: the directory holds no checkpoint, or the prefix has no `.index` file.
  """
  if tf.io.gfile.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest is None:
      raise FileNotFoundError(f"No checkpoint in directory {path}")
    path = latest
  if not tf.io.gfile.exists(f"{path}.index"):
    raise FileNotFoundError(f"No checkpoint {path} ({path}.index is missing)")
  return path


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
  path = resolve_checkpoint(path)
  node = ModelVariables(model, include_seed_states=False)
  node.by_path = {key: variable for key, variable in node.by_path.items()
                  if not key.startswith(tuple(skip_prefixes))}
  status = tf.train.Checkpoint(model=node).restore(path).expect_partial()
  if require_all:
    status.assert_existing_objects_matched()
  else:
    status.assert_nontrivial_match()
  logging.info("Loaded %d model variables from %s", len(node.by_path), path)
