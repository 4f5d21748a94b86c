"""SavedModel export of a kMaX model with post-processing, for TF Serving and plain TensorFlow.

Signatures (deeplab2's `serving_default`, plus a batched one):

- `serving_default`: `input_tensor` uint8 `[H, W, 3]` (one RGB image, no batch dimension).
- `serving_batch`: `input_tensor` uint8 `[B, H, W, 3]` (images of one size).

Outputs, batch-first (batch 1 for `serving_default`):
  `panoptic_pred`, `semantic_pred`, `instance_pred` int32 `[B, H, W]` and `semantic_scores`,
  `instance_scores` float32 `[B, H, W]` at the input size; the raw model outputs
  `pixel_space_mask_logits` `[B, h, w, N]`, `pixel_space_normalized_feature` `[B, h, w, E]`,
  `semantic_logits` `[B, hs, ws, K]` (at strides of the padded input; left out, with the
  auxiliary semantic branch that computes it, by `semantic_logits=False`) and
  `transformer_class_logits` `[B, N, C]`.

Unlike deeplab2, one export serves every input size: images are not resized into the eval crop.
The model pads each input bottom/right to the next `32k + 1` size (with the value 127.5 in image
space), post-processing runs at that padded size and the maps are cropped back. The area limits
of `evaluator_options` (`thing_area_limit`, `stuff_area_limit`) therefore count pixels of the
padded input at its own scale, not of a resized crop: tune them for the image sizes you serve.

The SavedModel holds only TensorFlow functions and variables: loading it needs TensorFlow, not
kmax_tf. `assets.extra/kmax_tf.json` records the dataset and thresholds for `kmax-tf predict`.
"""
from __future__ import annotations

import contextlib
import json
import os

import tensorflow as tf

from kmax_tf.model import builder
from kmax_tf.model import fold_batch_norm
from kmax_tf.model.layers import activations
from kmax_tf import geometry
from kmax_tf import inference
from kmax_tf import weight_io

DEFAULT_SIGNATURE = "serving_default"
BATCH_SIGNATURE = "serving_batch"
INPUT_KEY = "input_tensor"
# TF Serving ignores `assets.extra`; it is the SavedModel place for caller-side metadata.
METADATA_FILE = os.path.join("assets.extra", "kmax_tf.json")


TFLITE_FILE = "model.tflite"
# The network's outputs a TFLite export returns (post-processing stays with the caller).
TFLITE_OUTPUT_KEYS = ("pixel_space_mask_logits", "pixel_space_normalized_feature",
                      "transformer_class_logits")


def inference_options(options):
  """A copy of `ExperimentOptions` for inference: backbone drop path off (as deeplab2 exports)."""
  options = type(options).FromString(options.SerializeToString())
  options.model_options.backbone.drop_path_keep_prob = 1.0
  return options


def build_inference_model(options, checkpoint: str, tflite: bool = False):
  """Builds the model of `options` for inference, loads a kmax-tf training checkpoint (a prefix
  or a directory holding checkpoints) and folds its batch norms into the convolutions
  (`fold_batch_norm`: the model is for inference only). `tflite`: with the GELU form TFLite's
  converter knows (`activations.tf_gelu_everywhere`)."""
  path = weight_io.resolve_checkpoint(checkpoint)  # A wrong path fails before the model is built.
  with activations.tf_gelu_everywhere() if tflite else contextlib.nullcontext():
    model = builder.build_model(inference_options(options))
  weight_io.restore_model_variables(model, path)
  fold_batch_norm.fold_batch_norms(model)
  return model


class InferenceModel:
  """`inference.Predictor` for uint8 images of any size (the function the SavedModel serves).

  Args:
    model: a kMaX model (`kmax_tf.model.builder.build_model`).
    dataset: its `DatasetDescriptor`.
    evaluator_options: `EvaluatorOptions` with the post-processing thresholds.
    semantic_logits: whether to compute and return the raw `semantic_logits` (deeplab2's
      exports do); False skips the auxiliary semantic branch, which no other output needs.
  """

  def __init__(self, model, dataset, evaluator_options, semantic_logits: bool = True):
    self.model = model
    self.dataset = dataset
    self.predictor = inference.Predictor(model, dataset, evaluator_options, semantic_logits)
    self.serve_batch = tf.function(
        self._predict_batch, autograph=False,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_KEY)])
    self.serve_image = tf.function(
        self._predict_image, autograph=False,
        input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name=INPUT_KEY)])

  def _predict_batch(self, input_tensor):
    """uint8 `[B, H, W, 3]` -> the output dict of the module docstring."""
    input_tensor = _checked_input(input_tensor, rank=4)
    return self.predictor(tf.cast(input_tensor, tf.float32))

  def _predict_image(self, input_tensor):
    """uint8 `[H, W, 3]` -> the output dict with batch 1."""
    input_tensor = _checked_input(input_tensor, rank=3)
    # Calls the batch function's graph instead of tracing the model a second time.
    return self.serve_batch(tf.expand_dims(input_tensor, 0))

  def __call__(self, images):
    """Eager convenience: uint8 `[H, W, 3]` or `[B, H, W, 3]` -> dict of tensors, batch-first."""
    images = tf.convert_to_tensor(images)
    check_input(images, batched=images.shape.rank == 4)
    return (self.serve_batch if images.shape.rank == 4 else self.serve_image)(images)


def _checked_input(input_tensor, rank: int):
  """`input_tensor` after run-time checks of its rank, channels and size.

  Signatures check only the dtype of their inputs, not the declared shape, and TensorFlow infers
  the shapes of the whole graph from the actual input before running any op, so a wrong rank
  must be caught by an op whose shape function fails first with a clear message:
  `tf.ensure_shape` ("Shape of tensor input_tensor [1,5,5,3] is not compatible with expected
  shape [?,?,3]"). An assertion adds the empty-image and empty-batch checks (convolutions of an empty
  batch fail later with "Incompatible shapes: [16] vs. [0,97,65,3]"); both are on the data path,
  so every later op waits for them.
  """
  expected = "[B, H, W, 3]" if rank == 4 else "[H, W, 3]"
  input_tensor = tf.ensure_shape(input_tensor, [None] * (rank - 1) + [3])
  shape = tf.shape(input_tensor)
  what = "batch of at least one image" if rank == 4 else "image"
  non_empty = tf.debugging.Assert(tf.reduce_all(shape[:-1] > 0), [
      f"{INPUT_KEY} must be a uint8 {expected} RGB {what} with at least one pixel; got shape",
      shape], summarize=rank)
  with tf.control_dependencies([non_empty]):
    return tf.identity(input_tensor)


def check_input(images: tf.Tensor, batched: bool) -> None:
  """Raises ValueError naming the problem if `images` is not uint8 `[H, W, 3]` (or
  `[B, H, W, 3]` when `batched`)."""
  expected = "[B, H, W, 3]" if batched else "[H, W, 3]"
  rank = 4 if batched else 3
  if images.dtype != tf.uint8:
    raise ValueError(f"{INPUT_KEY} must be uint8 {expected} RGB, got dtype {images.dtype.name}")
  if images.shape.rank != rank:
    raise ValueError(f"{INPUT_KEY} must be uint8 {expected} RGB, got shape {images.shape}")
  if images.shape[-1] != 3:
    raise ValueError(f"{INPUT_KEY} must be uint8 {expected} RGB (3 channels), got shape "
                     f"{images.shape}")


def export_saved_model(options, checkpoint: str, output_dir: str,
                       semantic_logits: bool = True) -> str:
  """Writes the SavedModel of `options` with the weights of `checkpoint` to `output_dir`
  (`semantic_logits` as in `InferenceModel`).

  Returns `output_dir`.
  """
  return save_model(build_inference_model(options, checkpoint), options, output_dir,
                    semantic_logits)


def tflite_network(model):
  """The function a TFLite export converts: float32 images `[B, H, W, 3]` -> the
  `TFLITE_OUTPUT_KEYS` outputs of `model` (no semantic branch, no post-processing)."""
  return tf.function(lambda images: {
      key: value for key, value in model(images, training=False, semantic_logits=False).items()
      if key in TFLITE_OUTPUT_KEYS})


def export_tflite(options, checkpoint: str, output_dir: str, size=None) -> str:
  """Writes `output_dir/model.tflite`: the network of `options` with the weights of
  `checkpoint` for one input size, TFLite builtin ops only (XNNPACK runs it on CPUs).

  Input `input_tensor` float32 `[1, H, W, 3]`, RGB in 0..255, with H and W of the form 32k + 1
  (`size`, default the eval crop size; pad other images, as the SavedModel does); outputs
  `TFLITE_OUTPUT_KEYS` (`transformer_class_logits` `[1, N, C]`, the others at stride 4). No
  post-processing: `postprocess.PostProcessor` turns the outputs into panoptic maps.
  Returns the file's path.
  """
  height, width = size or tuple(options.eval_dataset_options.crop_size)
  for length in (height, width):
    if length < 1 or geometry.padded_length(length) != length:
      raise ValueError(f"TFLite input size {height}x{width}: each side must be 32k + 1 "
                       f"(e.g. 513, 641, 1025); pad images to it")
  model = build_inference_model(options, checkpoint, tflite=True)
  concrete = tflite_network(model).get_concrete_function(
      tf.TensorSpec([1, height, width, 3], tf.float32, name=INPUT_KEY))
  # The converter freezes the variables it finds on the function's owner into constants (others
  # stay TFLite resource variables, uninitialised) and, for a module owner, writes a
  # `serving_default` signature with the input and output names. It needs the TensorFlow
  # variables themselves, not the Keras 3 objects wrapping them.
  owner = tf.Module()
  owner.model_variables = [variable.value for variable in model.variables]
  converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], owner)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  flatbuffer = converter.convert()
  os.makedirs(output_dir, exist_ok=True)
  path = os.path.join(output_dir, TFLITE_FILE)
  # Written beside and renamed: an interrupted export leaves no truncated model.tflite.
  with open(path + ".tmp", "wb") as f:
    f.write(flatbuffer)
  os.replace(path + ".tmp", path)
  return path


def save_model(model, options, output_dir: str, semantic_logits: bool = True) -> str:
  """Writes the SavedModel of a built kMaX `model` (e.g. just trained, in memory) with the
  post-processing of `options.evaluator_options` to `output_dir` (`semantic_logits` as in
  `InferenceModel`); returns `output_dir`."""
  dataset = builder.dataset_of(options)
  serving_model = InferenceModel(model, dataset, options.evaluator_options, semantic_logits)
  # Only the signatures and the variables are saved: no Keras object and no other tf.function
  # (saving those would retrace the model), so loading needs neither Keras classes nor kmax_tf.
  # The variables are listed explicitly because TensorFlow's object graph misses Keras 3
  # sub-layers kept in Python containers.
  root = tf.Module()
  root.model_variables = list(serving_model.model.variables)
  tf.saved_model.save(root, output_dir, signatures={
      DEFAULT_SIGNATURE: serving_model.serve_image.get_concrete_function(),
      BATCH_SIGNATURE: serving_model.serve_batch.get_concrete_function()})
  write_metadata(output_dir, dataset, options)
  return output_dir


def write_metadata(output_dir: str, dataset, options) -> None:
  """`assets.extra/kmax_tf.json`: the dataset name and the settings the export used."""
  from google.protobuf import text_format  # pylint: disable=import-outside-toplevel
  path = os.path.join(output_dir, METADATA_FILE)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"dataset": dataset.name, "signatures": [DEFAULT_SIGNATURE, BATCH_SIGNATURE],
               "evaluator_options": text_format.MessageToString(options.evaluator_options)},
              f, indent=1)


def read_metadata(saved_model_dir: str) -> dict:
  """The metadata `export_saved_model` wrote; raises FileNotFoundError for other SavedModels."""
  path = os.path.join(saved_model_dir, METADATA_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: {saved_model_dir} was not written by "
                            "`kmax-tf export`")
  with open(path, encoding="utf-8") as f:
    return json.load(f)
