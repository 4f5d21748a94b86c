"""deeplab2 kMaX-DeepLab checkpoints -> kmax-tf checkpoints.

deeplab2 saves object-based TF checkpoints whose keys follow its Python attribute names
(`tf.train.Checkpoint(**model.checkpoint_items)`): `encoder/_stage2/_block1/_conv1_bn_act/_conv/
kernel/.ATTRIBUTES/VARIABLE_VALUE`, `transformer_decoder/_kmax_decoder/3/_block1_transformer/...`.
kmax-tf checkpoints key every variable by its Keras path (`kmax_tf.weight_io.ModelVariables`).

The mapping is by NAME: each deeplab2 key goes through an ordered list of rewrite rules
(`_RULES`, plus the two model-dependent renames: the backbone's name and the kMaX layers' names)
that turns it into a kmax-tf variable key. Names were chosen over matching by creation order and
shape because a checkpoint alone carries no creation order (keys come back sorted) and many
variables share a shape (every BN of a block), so shape matching cannot be verified; a name map
either hits an existing variable or fails loudly. After mapping, everything is checked at once:
deeplab2 variables that map to nothing, kmax-tf variables nothing maps to, two sources for one
target, and shape mismatches; any of them raises `ConversionError` listing all of them.

Shapes: deeplab2's 1-D convolutions (`[1, Cin, Cout]`) are kmax-tf dense kernels (`[Cin, Cout]`),
and the per-(head, channel) BN of the kMaX self-attention is `[1, heads, 1, channels]` there and
`[heads * channels]` here (heads-major in both). A value is therefore accepted when its shape
equals the target's after dropping size-1 axes, or when the target is 1-D with the same number
of elements; values are reshaped in C order. Nothing is ever transposed.

Forms of deeplab2 checkpoint recognised (`checkpoint_form`):
  full:    a kMaX model saved by deeplab2's trainer (optimizer slots, `global_step`,
           `save_counter` are ignored);
  encoder: an ImageNet (Axial-)ResNet `initial_checkpoint`, keys under `encoder/`;
  garden:  the same as a TF-Model-Garden vision checkpoint, keys under `backbone/_encoder/`;
  keras:   ConvNeXt `pretrained_weights` (Keras `save_weights` of the ConvNeXt model: keys at the
           root, e.g. `stages/0/layer_with_weights-0/...`).
Backbone-only forms must cover exactly the kmax-tf backbone's variables.

The trainer's initialisation of a new run (`kmax_tf.trainer.checkpoints.initialize_from_options`)
reads `backbone.pretrained_weights` with `load_pretrained_weights` (any backbone form) and a
deeplab2 `initial_checkpoint` with `assign_from_deeplab2` (any form).
"""
from __future__ import annotations

import os
import re

from absl import logging
import numpy as np
import tensorflow as tf

from kmax_tf import weight_io

FULL, ENCODER, GARDEN, KERAS = "full", "encoder", "garden", "keras"
_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
# deeplab2's `semantic_last_layer` checkpoint item: the 1x1 classifier of the auxiliary semantic
# head, left untouched when restore_semantic_last_layer_from_initial_checkpoint is false.
SEMANTIC_LAST_LAYER = "semantic_head/final_conv/"
# Checkpoint bookkeeping and training state that has no counterpart in the model.
_IGNORED_ROOTS = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter", "global_step", "optimizer",
                  "backbone_optimizer", "keras_api")
# deeplab2's final-head checkpoint items that become sub-layers of kmax-tf's `head`.
_HEAD_ITEMS = ("pixel_space_feature_batch_norm", "pixel_space_head", "pixel_space_mask_batch_norm",
               "transformer_class_head", "transformer_mask_head")


def _one_based(match):
  return f"/{match.group(1)}{int(match.group(2)) - 1}/"


# Axial attention relative position embeddings are plain weights in kmax-tf.
_RPE_RULE = (r"_rpe/embeddings$", "_rpe")
# Applied in order to a key already stripped of `/.ATTRIBUTES/VARIABLE_VALUE` and of the leading
# underscores of its parts (deeplab2 attribute names are private `_name`s).
_RULES = (
    # Final heads and the semantic head.
    (r"^(%s)/" % "|".join(_HEAD_ITEMS), r"head/\1/"),
    (r"^semantic_head_without_last_layer/", "semantic_head/conv_block/"),
    (r"^semantic_last_layer/", "semantic_head/final_conv/"),
    # Depthwise-separable conv blocks: deeplab2 nests a depthwise and a pointwise conv_bn_act.
    (r"/conv1_bn_act/depthwise/batch_norm/", "/depthwise_batch_norm/"),
    (r"/conv1_bn_act/depthwise/depthwise_conv/depthwise_kernel$", "/depthwise/kernel"),
    (r"/conv1_bn_act/pointwise/", "/pointwise/"),
    # Semantic decoder: 1-based names become 0-based; ASPP branches lose a wrapper level.
    (r"/(fusion_conv|low_level_conv)(\d+)/", _one_based),
    (r"/(aspp_conv\d+|aspp_pool)/conv_bn_act/", r"/\1/"),
    # Pixel decoder: lists of layers become numbered layers.
    (r"/backbone_norms/(\d+)/", r"/backbone_norm\1/"),
    (r"/skip_connections/(\d+)/", r"/skip_connection\1/"),
    (r"^pixel_decoder/stages/(\d+)/", r"pixel_decoder/stage\1/"),
    # kMaX layers: the k-means update lives in its own sub-layer.
    (r"/block1_transformer/(kmeans_memory_)", r"/kmeans_attention/\1"),
    (r"/block1_transformer/", "/"),
    _RPE_RULE,
)


def _minus_one(match):
  return f"downsampling_block_{int(match.group(1)) - 1}/{match.group(2)}/"


# For keys relative to the backbone. deeplab2's ConvNeXt keeps its stem, downsampling layers and
# stages in Python lists of Keras `Sequential`s, which save the layers that have weights as
# `layer_with_weights-<n>`: stem = [pad, conv, norm], downsampling = [pad, norm, conv],
# stage i = [block i_0, block i_1, ...].
_BACKBONE_RULES = (
    (r"^downsample_layers/0/layer_with_weights-0/", "stem/conv/"),
    (r"^downsample_layers/0/layer_with_weights-1/", "stem/norm/"),
    (r"^downsample_layers/(\d+)/layer_with_weights-0/", r"downsample_layers/\1/norm/"),
    (r"^downsample_layers/(\d+)/layer_with_weights-1/", r"downsample_layers/\1/conv/"),
    (r"^downsample_layers/(\d+)/(norm|conv)/", _minus_one),
    (r"^stages/(\d+)/layer_with_weights-(\d+)/", r"convnext_stage_\1/convnext_block_\1_\2/"),
    (r"/layer_scale$", "/layer_scale/layer_scale"),
    _RPE_RULE,
)


class ConversionError(ValueError):
  """The checkpoint does not fit the model; the message lists every problem."""


def _strip(key: str) -> str:
  if key.endswith(_VALUE_SUFFIX):
    key = key[:-len(_VALUE_SUFFIX)]
  return "/".join(part.lstrip("_") or part for part in key.split("/"))


def is_model_value(key: str) -> bool:
  """Whether a raw checkpoint key holds a model variable (not optimizer/bookkeeping state)."""
  return (key.split("/")[0] not in _IGNORED_ROOTS and "/.OPTIMIZER_SLOT/" not in key
          and key.endswith(_VALUE_SUFFIX))


def checkpoint_form(keys) -> str:
  """`full`, `encoder`, `garden` or `keras` for the model-variable keys of a deeplab2 checkpoint."""
  roots = {key.split("/")[0] for key in keys}
  if "transformer_decoder" in roots or "pixel_decoder" in roots:
    return FULL
  if any(key.startswith("backbone/_encoder/") for key in keys):
    return GARDEN
  if roots == {"encoder"}:
    return ENCODER
  return KERAS


# Where the backbone's variables sit in each form (keras: at the root).
_BACKBONE_PREFIXES = {FULL: "encoder/", ENCODER: "encoder/", GARDEN: "backbone/_encoder/",
                      KERAS: ""}


def _rewrite(key: str, rules) -> str:
  for pattern, replacement in rules:
    key = re.sub(pattern, replacement, key)
  return key


def backbone_key(deeplab2_key: str, backbone_name: str, form: str) -> str:
  """The kmax-tf key (`<backbone name>/...`) of a deeplab2 backbone variable key."""
  relative = _strip(deeplab2_key[len(_BACKBONE_PREFIXES[form]):])
  return f"{backbone_name}/" + _rewrite(relative, _BACKBONE_RULES)


def kmax_key(deeplab2_key: str, model, form: str = FULL) -> str:
  """The kmax-tf variable key (`ModelVariables` key) a raw deeplab2 checkpoint key maps to.

  Keys that no rule recognises come back stripped but otherwise unchanged (and then match no
  kmax-tf variable, so `build_mapping` reports them).
  """
  if deeplab2_key.startswith(_BACKBONE_PREFIXES[form]):
    return backbone_key(deeplab2_key, model.encoder.name, form)
  key = _rewrite(_strip(deeplab2_key), _RULES)
  # deeplab2 numbers the kMaX layers 0..5 over all strides; kmax-tf names them by stride.
  layers = [layer.name for layer in model.transformer_decoder.kmax_layers]
  match = re.match(r"^transformer_decoder/kmax_decoder/(\d+)/", key)
  if match and int(match.group(1)) < len(layers):
    key = f"transformer_decoder/{layers[int(match.group(1))]}/" + key[match.end():]
  return key


def _compatible(source_shape, target_shape) -> bool:
  source_shape, target_shape = list(source_shape), list(target_shape)
  if source_shape == target_shape:
    return True
  if [d for d in source_shape if d != 1] == [d for d in target_shape if d != 1]:
    return True
  return len(target_shape) == 1 and int(np.prod(source_shape)) == target_shape[0]


def _target_variables(model) -> dict:
  """`{key: variable}` a full conversion must fill: all weights but RNG states."""
  by_path = weight_io.ModelVariables(model).by_path
  return {k: v for k, v in by_path.items() if "seed_generator" not in k}


def _backbone_variables(backbone) -> dict:
  """`{<backbone name>/...: variable}` of a backbone, alone or inside a kMaX model."""
  targets = {}
  for variable in backbone.variables:
    if "seed_generator" in variable.path:
      continue
    # Inside a model the path may carry the model's name first; keys start at the backbone.
    start = variable.path.find(f"{backbone.name}/")
    targets[variable.path[max(start, 0):]] = variable
  return targets


def _match(source_shapes: dict, keys, targets: dict, key_fn, form: str, what: str) -> dict:
  """`{source key: target key}`; raises `ConversionError` listing every problem at once."""
  mapping, problems, sources_of = {}, [], {}
  for key in sorted(keys):
    target = key_fn(key)
    if target not in targets:
      problems.append(f"unmapped deeplab2 variable {key} {list(source_shapes[key])} "
                      f"(-> {target}, not a variable of the model)")
      continue
    target_shape = list(targets[target].shape)
    if not _compatible(source_shapes[key], target_shape):
      problems.append(f"shape mismatch: deeplab2 {key} {list(source_shapes[key])} vs kmax-tf "
                      f"{target} {target_shape}")
    sources_of.setdefault(target, []).append(key)
    mapping[key] = target
  for target, sources in sources_of.items():
    if len(sources) > 1:
      problems.append(f"kmax-tf variable {target} has several sources: {', '.join(sources)}")
  for target in sorted(set(targets) - set(sources_of)):
    problems.append(f"missing: kmax-tf variable {target} {list(targets[target].shape)} has no "
                    "deeplab2 variable")
  if problems:
    raise ConversionError(f"{len(problems)} problem(s) mapping a deeplab2 {form} checkpoint onto "
                          f"{what}:\n  " + "\n  ".join(problems))
  return mapping


def _model_keys(source_shapes: dict) -> list:
  keys = [k for k in source_shapes if is_model_value(k)]
  if not keys:
    raise ConversionError("the checkpoint holds no model variables")
  return keys


def build_backbone_mapping(source_shapes: dict, backbone) -> tuple[str, dict]:
  """Maps a backbone-only deeplab2 checkpoint listing (`encoder`, `garden` or `keras` form) onto
  a kmax-tf backbone; returns (form, `{raw deeplab2 key: backbone variable key}`).

  Raises:
    ConversionError: for a full kMaX checkpoint, or listing every unmapped, missing, duplicate
      and mismatched variable.
  """
  keys = _model_keys(source_shapes)
  form = checkpoint_form(keys)
  if form == FULL:
    raise ConversionError("a full kMaX-DeepLab checkpoint is not a backbone checkpoint (give it "
                          "as model_options.initial_checkpoint instead)")
  mapping = _match(source_shapes, keys, _backbone_variables(backbone),
                   lambda key: backbone_key(key, backbone.name, form), form, backbone.name)
  return form, mapping


def build_mapping(source_shapes: dict, model,
                  skip_prefixes: tuple[str, ...] = ()) -> tuple[str, dict]:
  """Maps a deeplab2 checkpoint listing onto `model`.

  Args:
    source_shapes: `{raw checkpoint key: shape}` (e.g. from `tf.train.list_variables`).
    model: a built kmax-tf `KMaXDeepLab`.
    skip_prefixes: kmax-tf variable keys starting with one of these are left out on both sides
      (neither mapped nor reported missing).

  Returns:
    (form, `{raw deeplab2 key: kmax-tf key}`), covering every model value of the checkpoint and
    every kmax-tf variable of the model (of its backbone for backbone-only forms).

  Raises:
    ConversionError: with the full list of unmapped, missing, duplicate and mismatched variables.
  """
  keys = _model_keys(source_shapes)
  form = checkpoint_form(keys)
  if form != FULL:
    return build_backbone_mapping(source_shapes, model.encoder)
  skip = tuple(skip_prefixes)
  keys = [key for key in keys if not kmax_key(key, model, form).startswith(skip)]
  targets = {key: value for key, value in _target_variables(model).items()
             if not key.startswith(skip)}
  return form, _match(source_shapes, keys, targets, lambda key: kmax_key(key, model, form),
                      form, model.name)


def _assign(reader, mapping: dict, targets: dict) -> None:
  for key, target in mapping.items():
    variable = targets[target]
    value = np.reshape(reader.get_tensor(key), variable.shape)
    variable.assign(value.astype(variable.dtype))


def assign_from_deeplab2(model, path: str, skip_prefixes: tuple[str, ...] = ()) -> str:
  """Loads a deeplab2 checkpoint (prefix or directory) into `model` but the variables under
  `skip_prefixes` (see `build_mapping`); returns its form."""
  path = weight_io.resolve_checkpoint(path)
  reader = tf.train.load_checkpoint(path)
  form, mapping = build_mapping(reader.get_variable_to_shape_map(), model, skip_prefixes)
  targets = _target_variables(model) if form == FULL else _backbone_variables(model.encoder)
  _assign(reader, mapping, targets)
  logging.info("Loaded %d variables of a deeplab2 %s checkpoint %s", len(mapping), form, path)
  return form


def load_pretrained_weights(backbone, path: str) -> str:
  """deeplab2's `backbone.pretrained_weights`: loads a backbone checkpoint into `backbone`.

  deeplab2 calls `load_weights(path)` on its freshly built ConvNeXt, i.e. reads a TF checkpoint
  of that Keras model (`keras` form: the ImageNet weights converted from the official ConvNeXt
  release); the `encoder` and `garden` backbone forms are accepted too. Every backbone variable
  must be filled (deeplab2 only asserts a non-trivial match; a partial backbone is a wrong file
  here). Returns the checkpoint's form.
  """
  path = weight_io.resolve_checkpoint(path)
  reader = tf.train.load_checkpoint(path)
  form, mapping = build_backbone_mapping(reader.get_variable_to_shape_map(), backbone)
  _assign(reader, mapping, _backbone_variables(backbone))
  logging.info("Loaded %d pretrained %s weights (deeplab2 %s form) from %s", len(mapping),
               backbone.name, form, path)
  return form


def _global_step(path: str) -> int:
  reader = tf.train.load_checkpoint(path)
  key = "global_step" + _VALUE_SUFFIX
  return int(reader.get_tensor(key)) if reader.has_tensor(key) else 0


def is_deeplab2_checkpoint(path: str) -> bool:
  """True for a deeplab2 checkpoint, False for a kmax-tf one (its variables under `model/`)."""
  keys = [key for key, _ in tf.train.list_variables(weight_io.resolve_checkpoint(path))
          if is_model_value(key)]
  return not all(key.startswith("model/by_path/") for key in keys)


def convert(model, checkpoint: str, output_dir: str) -> str:
  """Converts a deeplab2 checkpoint for `model` into a kmax-tf checkpoint in `output_dir`.

  Returns the written checkpoint prefix; `restore_model_variables(model, output_dir)` loads it.
  Backbone-only checkpoints give a checkpoint whose other variables keep `model`'s initial values.
  The checkpoint also holds deeplab2's `global_step` (0 if absent) so that the trainer's
  checkpoint manager, whose objects are `global_step` and `model` in eval mode, restores it from
  `model_dir` like one of its own.
  """
  checkpoint = weight_io.resolve_checkpoint(checkpoint)
  assign_from_deeplab2(model, checkpoint)
  os.makedirs(output_dir, exist_ok=True)
  step = tf.Variable(_global_step(checkpoint), dtype=tf.int64, trainable=False)
  saved = tf.train.Checkpoint(global_step=step, model=weight_io.ModelVariables(model)).save(
      os.path.join(output_dir, "ckpt"))
  logging.info("Wrote %s", saved)
  return saved
