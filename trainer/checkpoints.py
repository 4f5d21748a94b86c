"""The trainer's checkpoints: resume from the newest readable one, or start a new run from
`initial_checkpoint` / `pretrained_weights`.

`tf.train.CheckpointManager` writes a checkpoint atomically (data files first, the `checkpoint`
index last), so a run killed mid-save leaves the previous checkpoint as the latest. A checkpoint
that is listed but cannot be read (a truncated or corrupted file) makes this manager fall back to
the one before it, with a warning, instead of failing the restart.

A save killed before it finished leaves its shards in a `<prefix>_temp/` directory (TensorFlow
writes them there and moves them into place last); the trainer removes those on start.

A new run (nothing to resume) is initialised like deeplab2's (`initialize_from_options`), reading
deeplab2 checkpoints through `kmax_tf.convert_deeplab2` and kmax-tf ones through
`kmax_tf.weight_io`.
"""
from __future__ import annotations

from absl import logging
import tensorflow as tf

from kmax_tf import convert_deeplab2
from kmax_tf import weight_io

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


def initialize_from_options(model, model_options) -> None:
  """deeplab2's initialisation of a new training run, in deeplab2's order.

  1. `backbone.pretrained_weights` into the backbone: deeplab2 reads it while building ConvNeXt
     (and MOAT) backbones and ignores it for the (Axial-)ResNets, so does this;
  2. `initial_checkpoint` over it (`load_initial_checkpoint`), as deeplab2's trainer does before
     the first step, without the semantic head's last layer when
     `restore_semantic_last_layer_from_initial_checkpoint` is false (e.g. to fine-tune on a
     dataset with other classes). `restore_instance_last_layer_from_initial_checkpoint` names
     Panoptic-DeepLab layers that kMaX does not have, so, as in deeplab2, it changes nothing.
  Nothing happens when neither is set.
  """
  pretrained = model_options.backbone.pretrained_weights
  if pretrained:
    if "convnext" in model_options.backbone.name:
      convert_deeplab2.load_pretrained_weights(model.encoder, pretrained)
    else:
      logging.warning("backbone.pretrained_weights is ignored for %s (deeplab2 reads it only "
                      "for ConvNeXt backbones); use initial_checkpoint",
                      model_options.backbone.name)
  if model_options.initial_checkpoint:
    skip = (() if model_options.restore_semantic_last_layer_from_initial_checkpoint
            else (convert_deeplab2.SEMANTIC_LAST_LAYER,))
    load_initial_checkpoint(model, model_options.initial_checkpoint, skip)


def load_initial_checkpoint(model, path: str, skip_prefixes: tuple[str, ...] = ()) -> None:
  """Loads `initial_checkpoint` into `model`: a deeplab2 checkpoint of any form (full model or
  pretrained backbone) or a kmax-tf checkpoint (possibly partial); variables whose kmax-tf key
  starts with one of `skip_prefixes` keep their values."""
  if convert_deeplab2.is_deeplab2_checkpoint(path):
    convert_deeplab2.assign_from_deeplab2(model, path, skip_prefixes)
  else:
    weight_io.restore_model_variables(model, path, require_all=False,
                                      skip_prefixes=skip_prefixes)
