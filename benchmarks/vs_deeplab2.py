"""Benchmark: kmax-tf vs deeplab2 on the same config and the same (converted) weights.

  python benchmarks/vs_deeplab2.py --deeplab2_dir PATH [--config_file F] [--crop 129] [--no_timing]
  python benchmarks/vs_deeplab2.py --deeplab2_dir PATH --train [--float64] [--config_file F]

PATH is a directory from which `import deeplab2` works (a deeplab2 checkout with its protos
compiled, e.g. the parent of `deeplab2/`); it is only put on `sys.path`, nothing is copied.
deeplab2 runs on tf_keras (TF_USE_LEGACY_KERAS=1, set here before TensorFlow is imported) and
kmax-tf on Keras 3, in the same process.

Steps: build deeplab2's KMaXDeepLab and kmax-tf's model from the same textproto; randomise every
deeplab2 variable (BN statistics, gammas, layer scales and zero-initialised weights too, so that
no branch is silently zero); save it with `tf.train.Checkpoint(**model.checkpoint_items)` as
deeplab2's trainer does; convert that checkpoint into the kmax-tf model; run both on the same
random image. Prints one JSON line with:

- `max_abs_logit_diff` (mask and class logits; target <= --tolerance, `within_tolerance`),
  `output_diffs` (every output), whether `panoptic_pred` is identical (deeplab2's post-processor
  vs kmax_tf.postprocess), the largest |logit| and the float32 spacing there;
- `decoder_trace`: both transformer decoders chained on their own pixel features; per kMaX layer
  the number of pixels whose k-means assignment (argmax) differs, and the largest top-2 logit gap
  among them, and the mask-logit and center differences; `assignment_flips` is their total;
- `deeplab2_noise_floor`: how much deeplab2's OWN transformer decoder + head outputs move when its
  pixel-decoder outputs are perturbed by one float32 rounding (x * (1 +- 2^-24)). Random BN
  statistics do not normalise, so activations and logits grow to hundreds and every kMaX layer
  amplifies rounding: agreeing within --tolerance needs the same float32 operations as deeplab2,
  not just the same formula (this is why `axial_attention.flat_matmul` exists);
- `with_deeplab2_grouped_depthwise_conv` (ConvNeXt backbones): the same comparison with kmax-tf's
  depthwise convolutions computed by deeplab2's grouped-conv op instead of the native depthwise
  kernel (`_with_grouped_depthwise_convs`), which isolates the one op that differs;
- `component_diffs` / `first_differing_component`: each component (encoder, pixel decoder,
  transformer decoder, final head) fed deeplab2's inputs, so differences do not accumulate;
- forward / train-step times of both (median of --repeats, after a warm-up); the forward is the
  network alone (deeplab2 without its post-processor, as kmax-tf's call). The train step is
  forward(training=True) + backward of a proxy loss (mean of squares of the mask, class and
  semantic logits, main and auxiliary) + SGD update: it times the network, not the loss.

`--train` (batch 2 by default) compares training instead and prints one JSON line:
- the same synthetic panoptic labels (stuff bands, things large and small, a crowd region, void)
  through deeplab2's PanopticSampleGenerator (evaluation mode: no crop, flip or resize) and
  kmax_tf.data.targets (`pipeline_targets_differing`: differing elements per key);
- both models with the same random weights as above, in training mode (BN on batch statistics)
  with drop path and dropout off; instance-discrimination pixels drawn from the same Gumbel
  noise on both sides, each side building its own sampling logits;
- `loss_terms` ({term: [deeplab2, kmax_tf]}, per-term batch means as both trainers take them),
  `loss_worst_rel`, and `kmax_tf_loss_on_deeplab2_outputs` (kmax-tf's loss on deeplab2's outputs
  and targets: the loss alone, without the two networks' rounding differences);
- `targets`: ground-truth masks, classes, Hungarian assignment (`matching_cost` of each side),
  class targets and weights of the final output;
- `gradients` per group (encoder, pixel_decoder, transformer_decoder, heads): `worst_rel` (max
  |difference| / max |deeplab2| over the group), `norm_rel`, `cosine`; `gradient_worst_rel`,
  `gradient_min_cosine`;
- `deeplab2_noise_floor`: the same figures for deeplab2 against itself with the images moved by
  one float32 rounding, i.e. what rounding alone does to this training step;
- three steps of each side's optimizer(s) from the config's solver (deeplab2's own optimizer
  construction and backbone split): `weights_worst_rel_after_3_steps`, the updates per group,
  BN moving statistics, and `optimizer_split` (variables on which the sides disagree about weight
  decay or the backbone optimizer).
deeplab2's matching runs with cost constants 1 instead of +-999 (`--deeplab2_matching exact`;
see kmax_tf/losses/matching.py for why), unless `--deeplab2_matching shipped`.
`--train --float64` builds and runs both sides in float64 (`precision` in the JSON line), which
takes float32 rounding, and the k-means argmax flips and matching changes it causes with random
weights, out of the comparison: a difference of formula then stands out by orders of magnitude.
Neither side is float64-clean as shipped; `_run_in_float64` lists what it rewrites. deeplab2's
post-processor cannot run in float64, so --float64 goes with --train only.
"""
import argparse
import json
import os
import re
import sys
import tempfile
import time
import types

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import timing  # benchmarks/timing.py, next to this script

_OUTPUTS = ("pixel_space_mask_logits", "transformer_class_logits", "semantic_logits",
            "pixel_space_normalized_feature")


def _deeplab2_options(path, crop):
  from google.protobuf import text_format  # pylint: disable=import-outside-toplevel
  from deeplab2 import config_pb2  # pylint: disable=import-outside-toplevel

  with open(path, encoding="utf-8") as f:
    text = re.sub(r"\$\{[A-Z_]+\}", "unused", f.read())
  options = text_format.Parse(text, config_pb2.ExperimentOptions())
  options.model_options.backbone.ClearField("pretrained_weights")
  options.model_options.ClearField("initial_checkpoint")
  for dataset_options in (options.train_dataset_options, options.eval_dataset_options):
    del dataset_options.crop_size[:]
    dataset_options.crop_size.extend([crop, crop])
  return options


def _randomise(variables, rng):
  """Random values everywhere; variances and scales stay positive and near 1."""
  for variable in variables:
    name, shape = variable.name, variable.shape.as_list()
    if re.search(r"(moving_variance|gamma|layer_scale)", name):
      value = rng.uniform(0.5, 1.5, shape)
    elif re.search(r"(moving_mean|beta|bias)", name):
      value = rng.normal(0.0, 0.1, shape)
    else:
      fan_in = max(1, int(np.prod(shape[:-1])))
      value = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
    variable.assign(value.astype(variable.dtype.as_numpy_dtype))


def _max_diff(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    return f"shape {list(a.shape)} vs {list(b.shape)}"
  return float(np.max(np.abs(a - b))) if a.size else 0.0


def _compare_dicts(reference, ours):
  out = {}
  for key in sorted(set(reference) & set(ours)):
    if isinstance(reference[key], tf.Tensor) and isinstance(ours[key], tf.Tensor):
      out[key] = _max_diff(reference[key], ours[key])
  return out


def _components(dl2, model, x, tolerance):
  """Per-component max differences, each component fed deeplab2's inputs."""
  report = {}
  normalised = x / 127.5 - 1.0
  stages = [
      ("encoder", dl2._pixel_encoder, model.encoder, normalised),  # pylint: disable=protected-access
  ]
  endpoints = dl2._pixel_encoder(normalised, training=False)  # pylint: disable=protected-access
  stages.append(("pixel_decoder", dl2._pixel_decoder, model.pixel_decoder, endpoints))  # pylint: disable=protected-access
  decoded = dl2._pixel_decoder(endpoints, training=False)  # pylint: disable=protected-access
  stages.append(("transformer_decoder", dl2._transformer_decoder,  # pylint: disable=protected-access
                 model.transformer_decoder, decoded))
  transformed = dl2._transformer_decoder(decoded, training=False)  # pylint: disable=protected-access

  def our_head(features, training):
    return model.head(features["feature_panoptic"], features["transformer_class_feature"],
                      features["transformer_mask_feature"], training=training)

  stages.append(("head", dl2._predictor, our_head, transformed))  # pylint: disable=protected-access
  first = None
  for name, theirs, ours, inputs in stages:
    try:
      diffs = _compare_dicts(theirs(inputs, training=False), ours(inputs, training=False))
    except Exception as error:  # pylint: disable=broad-except
      diffs = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
    report[name] = diffs
    bad = [k for k, v in diffs.items() if not isinstance(v, float) or v > tolerance]
    if first is None and bad:
      first = f"{name}: {', '.join(bad)}"
  return report, first


_MASK, _CLASS = _OUTPUTS[0], _OUTPUTS[1]


def _decoder_trace(dl2, model, x):
  """Both transformer decoders chained on their OWN pixel features, layer by layer.

  Per kMaX layer: pixels whose k-means assignment (argmax over clusters) differs, the largest
  top-2 gap of deeplab2's mask logits among them (a tie within rounding is a gap near the
  float32 spacing of the logits), and the max |difference| of mask logits and cluster centers.
  """
  # pylint: disable=protected-access
  from kmax_tf.model import transformer_decoder  # pylint: disable=import-outside-toplevel

  normalised = x / 127.5 - 1.0
  theirs_pixels = dl2._pixel_decoder(dl2._pixel_encoder(normalised, training=False),
                                     training=False)
  ours_pixels = model.pixel_decoder(model.encoder(normalised, training=False), training=False)
  theirs_decoder, ours_decoder = dl2._transformer_decoder, model.transformer_decoder
  theirs_centers = theirs_decoder._prepare_cluster_centers(theirs_pixels["decoder_stage1"])
  ours_centers = tf.tile(tf.convert_to_tensor(ours_decoder.cluster_centers), [x.shape[0], 1, 1])
  trace, index = [], 0
  for (stride, endpoint), count in zip(transformer_decoder.STRIDE_ENDPOINTS,
                                       ours_decoder.num_blocks):
    for _ in range(count):
      _, theirs_centers, (theirs_pred,) = theirs_decoder._kmax_decoder[index](
          (theirs_pixels[endpoint], theirs_centers, ()), training=False)
      ours_centers, ours_pred = ours_decoder.kmax_layers[index](
          ours_pixels[endpoint], ours_centers, training=False)
      theirs_logits = theirs_pred[_MASK].numpy()
      flipped = theirs_logits.argmax(-1) != ours_pred[_MASK].numpy().argmax(-1)
      top2 = np.sort(theirs_logits[flipped], axis=-1)[:, -2:]
      trace.append({
          "layer": index, "stride": stride, "assignment_flips": int(flipped.sum()),
          "max_top2_gap_at_flips": float(np.max(top2[:, 1] - top2[:, 0])) if top2.size else None,
          "mask_logit_diff": _max_diff(theirs_logits, ours_pred[_MASK]),
          "center_diff": _max_diff(theirs_centers, ours_centers)})
      index += 1
  return trace


def _noise_floor(dl2, x, rng):
  """Max change of deeplab2's own mask/class logits when its pixel-decoder outputs are perturbed
  by one float32 rounding: x * (1 +- 2^-24), random signs."""
  # pylint: disable=protected-access
  endpoints = dl2._pixel_encoder(x / 127.5 - 1.0, training=False)
  decoded = dl2._pixel_decoder(endpoints, training=False)

  def tail(features):
    return dl2._predictor(dl2._transformer_decoder(features, training=False), training=False)

  reference = tail(decoded)
  perturbed = dict(decoded)
  for key in set(decoded) - set(endpoints):
    signs = rng.choice([-1.0, 1.0], decoded[key].shape).astype(np.float32)
    perturbed[key] = decoded[key] * (1.0 + 2.0 ** -24 * signs)
  moved = tail(perturbed)
  return {k: _max_diff(reference[k], moved[k]) for k in (_MASK, _CLASS)}


def _compare(dl2, model, post, x):
  """End-to-end output differences, `panoptic_pred` identity and the per-layer decoder trace."""
  theirs = dl2(x, training=False, post_processing=True)
  ours = model(x, training=False)
  diffs = {k: _max_diff(theirs[k], ours[k]) for k in _OUTPUTS}
  ours_panoptic = post(ours[_MASK], ours[_CLASS])
  largest = max(float(np.max(np.abs(theirs[k]))) for k in (_MASK, _CLASS))
  trace = _decoder_trace(dl2, model, x)
  return {
      "max_abs_logit_diff": max(diffs[_MASK], diffs[_CLASS]), "output_diffs": diffs,
      "panoptic_pred_identical": bool(np.array_equal(theirs["panoptic_pred"].numpy(),
                                                     ours_panoptic["panoptic_pred"].numpy())),
      "max_abs_logit": largest, "float32_spacing_at_max_logit": float(
          np.spacing(np.float32(largest))),
      "assignment_flips": sum(layer["assignment_flips"] for layer in trace),
      "decoder_trace": trace}


def _with_grouped_depthwise_convs(model, fn):
  """Runs `fn()` with kmax-tf's ConvNeXt depthwise convolutions computed by deeplab2's op.

  deeplab2's ConvNeXt runs its 7x7 depthwise convolutions as a grouped `Conv2D` (groups = C),
  which TensorFlow executes through XLA on CPU; kmax-tf uses the native depthwise kernel (its
  `ChannelwiseConv2D`, ~28x faster). The two sum the 49 taps in different orders. Swapping the
  op isolates that one difference. Returns None when the model has no such layer.
  """
  # pylint: disable=import-outside-toplevel
  import keras  # Keras 3 (kmax-tf); TF_USE_LEGACY_KERAS only redirects tf.keras
  from kmax_tf.model.backbones import convnext

  layers = [layer for layer in model.encoder._flatten_layers()  # pylint: disable=protected-access
            if isinstance(layer, convnext.ChannelwiseConv2D)]
  if not layers:
    return None
  native = convnext.ChannelwiseConv2D.convolution_op
  convnext.ChannelwiseConv2D.convolution_op = keras.layers.Conv2D.convolution_op
  try:
    return fn()
  finally:
    convnext.ChannelwiseConv2D.convolution_op = native


def _train_step_fn(model, call):
  """A compiled step; plain SGD via `assign_sub` works on tf_keras and Keras 3 variables alike."""

  def loss_of(outputs):
    terms = [outputs[k] for k in _OUTPUTS[:3]]
    for aux in outputs.get("auxiliary_outputs_pred", ()):
      terms += [aux[k] for k in _OUTPUTS[:2] if k in aux]
    return tf.add_n([tf.reduce_mean(tf.square(tf.cast(t, tf.float32))) for t in terms])

  variables = model.trainable_variables

  @tf.function
  def step(images):
    with tf.GradientTape() as tape:
      loss = loss_of(call(images))
    grads = tape.gradient(loss, variables)
    for variable, grad in zip(variables, grads):
      if grad is not None:
        variable.assign_sub(1e-6 * tf.convert_to_tensor(grad))
    return loss

  return step


# ---------------------------------------------------------------------------------------------
# --train: one batch through both losses, gradients and three optimizer steps.

_TARGET_KEYS = ("semantic_gt", "semantic_loss_weight", "thing_id_mask_gt", "thing_id_class_gt")
_TOTAL = "total_loss"


def _panoptic_labels(descriptor, crop, batch, rng):
  """int32 `[batch, crop, crop]` panoptic labels with stuff bands, thing instances (large and
  small, several of one class), a crowd region and void pixels (a block and a border strip)."""
  divisor, ignore = descriptor.panoptic_label_divisor, descriptor.ignore_label
  things = list(descriptor.class_has_instances_list)
  stuff = [c for c in range(descriptor.num_classes) if c not in things and c != ignore]
  labels = []
  for _ in range(batch):
    label = np.zeros([crop, crop], np.int64)
    bands = np.sort(rng.choice(np.arange(1, crop), 2, replace=False))
    for top, bottom, cls in zip([0, *bands], [*bands, crop], rng.choice(stuff, 3, replace=False)):
      label[top:bottom] = cls * divisor
    instance_of = {}
    for index in range(9):
      cls = int(rng.choice(things[:3] if index % 3 == 0 else things))
      size = int(rng.integers(4, 9)) if index < 3 else int(rng.integers(crop // 8, crop // 3))
      y, x = rng.integers(0, crop - size, 2)
      instance_of[cls] = instance_of.get(cls, 0) + 1
      label[y:y + size, x:x + size] = cls * divisor + instance_of[cls]
    y, x = rng.integers(0, crop - crop // 6, 2)
    label[y:y + crop // 6, x:x + crop // 6] = int(rng.choice(things)) * divisor  # crowd
    y, x = rng.integers(0, crop - crop // 8, 2)
    label[y:y + crop // 8, x:x + crop // 8] = ignore * divisor
    label[:, :3] = ignore * divisor
    labels.append(label.astype(np.int32))
  return np.stack(labels)


def _deeplab2_targets(descriptor, dataset_options, images, labels):
  """deeplab2's PanopticSampleGenerator, evaluation mode (no random crop, flip or scaling) and no
  resizing (the labels are made at crop size)."""
  from deeplab2.data import sample_generator  # pylint: disable=import-outside-toplevel

  focus = None
  if dataset_options.increase_small_instance_weights:
    focus = {"threshold": dataset_options.small_instance_threshold,
             "weight": dataset_options.small_instance_weight}
  generator = sample_generator.PanopticSampleGenerator(
      dataset_info=descriptor._asdict(), is_training=False,
      crop_size=list(dataset_options.crop_size), thing_id_mask_annotations=True,
      max_thing_id=dataset_options.max_thing_id, sigma=dataset_options.sigma,
      focus_small_instances=focus)
  height, width = labels.shape[1:]
  samples = [generator(dict(image=tf.constant(image), image_name="", label=tf.constant(
      label[..., None]), height=height, width=width)) for image, label in zip(images, labels)]
  return {k: tf.stack([sample[k] for sample in samples]) for k in _TARGET_KEYS}


def _kmax_tf_targets(options, labels):
  # pylint: disable=import-outside-toplevel
  from kmax_tf.data import reader, targets
  from kmax_tf.model import builder

  descriptor = builder.dataset_of(options)
  sample = reader.SampleOptions.from_proto(options.train_dataset_options)
  samples = [targets.panoptic_targets(
      label, ignore_label=descriptor.ignore_label, divisor=descriptor.panoptic_label_divisor,
      thing_ids=descriptor.thing_class_ids, max_thing_id=sample.max_thing_id,
      small_instance_threshold=sample.small_instance_threshold,
      small_instance_weight=sample.small_instance_weight) for label in labels]
  return {k: tf.stack([s[k] for s in samples]) for k in _TARGET_KEYS}


def _without_randomness(dl2, model):
  """Drop path keep probability 1 and dropout rate 0 in both models (BN still trains)."""
  # pylint: disable=import-outside-toplevel,protected-access
  import keras
  from deeplab2.model.layers import drop_path as deeplab2_drop_path
  from kmax_tf.model.layers import drop_path

  for layer in dl2.submodules:
    # DropPath layers hold one keep probability, block groups (kMaX decoder) one per block.
    keep = getattr(layer, "_drop_path_keep_prob", None)
    if isinstance(keep, list):
      layer._drop_path_keep_prob = [1.0] * len(keep)
    elif isinstance(layer, deeplab2_drop_path.DropPath):
      layer._drop_path_keep_prob = 1.0
    elif isinstance(layer, tf.keras.layers.Dropout):
      layer.rate = 0.0
  for layer in model._flatten_layers():
    if isinstance(layer, drop_path.DropPath):
      layer.keep_prob = 1.0
    elif isinstance(layer, keras.layers.Dropout):
      layer.rate = 0.0


class _Patches:
  """Replaces attributes for the duration of a `with` block and records what wrapped calls
  returned (`calls[name]`, one entry per call)."""

  def __init__(self):
    self.calls, self._undo = {}, []

  def replace(self, owner, name, value):
    self._undo.append((owner, name, owner.__dict__.get(name, _MISSING)))
    setattr(owner, name, value)

  def record(self, owner, name, keep=lambda args, result: result):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
      result = original(*args, **kwargs)
      self.calls.setdefault(name, []).append(keep(args, result))
      return result

    self.replace(owner, name, wrapper)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    for owner, name, value in reversed(self._undo):
      if value is _MISSING:
        delattr(owner, name)
      else:
        setattr(owner, name, value)


_MISSING = object()


class _AsFloat64:
  """A module (`tf`, `keras.ops`, `np`) as seen by a module under --float64: its `float32`
  attribute is `float64`, float32 dtypes (object, numpy type or name) passed to its functions
  become float64, and TensorFlow's constructors that default to float32 (`one_hot`, `ones`,
  `zeros`, `constant` of a Python float) give float64.
  Classes are returned unchanged (isinstance, subclassing)."""

  # Position of the dtype argument of TensorFlow functions whose default dtype is float32.
  _DTYPE_POSITION = {"one_hot": 5, "ones": 1, "zeros": 1}

  def __init__(self, module):
    self._module = module

  def __getattr__(self, name):
    value = getattr(self._module, name)
    if name == "float32":
      return getattr(self._module, "float64")
    if isinstance(value, types.ModuleType):
      return _AsFloat64(value)
    if not callable(value) or isinstance(value, type):
      return value
    default = self._DTYPE_POSITION.get(name) if self._module.__name__.startswith(
        "tensorflow") else None

    def call(*args, **kwargs):
      if default is not None and len(args) <= default and "dtype" not in kwargs:
        kwargs["dtype"] = tf.float64
      elif name == "constant" and len(args) == 1 and isinstance(args[0], float):
        kwargs.setdefault("dtype", tf.float64)  # a Python float would become float32
      return value(*map(_float64_dtype, args), **{k: _float64_dtype(v)
                                                  for k, v in kwargs.items()})
    return call


def _float64_dtype(value):
  if isinstance(value, str):
    return "float64" if value == "float32" else value
  if value is tf.float32:
    return tf.float64
  return np.float64 if value is np.float32 else value


def _run_in_float64():
  """Makes deeplab2 and kmax-tf build and compute in float64 (call before building either).

  The layers follow the frameworks' default float type (tf_keras `floatx`, Keras 3's dtype
  policy); what hard-codes float32 is rewritten here instead of edited in either source:
  - deeplab2: `tf.float32` in its losses (base_loss, max_deeplab_loss), matching and
    `axial_block_groups` (drop path);
  - kmax-tf: `ops.cast(x, "float32")` / `dtype="float32"` where mixed precision must not reach
    (images, heads, similarity and k-means BNs, resized fusion, semantic decoder), and
    `tf.float32` in the losses.
  Every loaded module of either package sees `tf`, `ops` and `np` through `_AsFloat64`, and the
  BN factory drops its explicit float32. Both sides' align-corners bilinear resizes reach
  TensorFlow's kernel, which outputs float32 whatever its input; float64 inputs are interpolated
  by `_interpolate_align_corners` instead.
  """
  # pylint: disable=import-outside-toplevel
  import keras
  from deeplab2.model import kmax_deeplab  # noqa: F401
  from deeplab2.model.loss import loss_builder, max_deeplab_loss  # noqa: F401
  from deeplab2.data import sample_generator  # noqa: F401
  from deeplab2.trainer import trainer, runner_utils  # noqa: F401
  from kmax_tf import convert_deeplab2  # noqa: F401
  from kmax_tf.data import targets  # noqa: F401
  from kmax_tf.losses import kmax_loss  # noqa: F401
  from kmax_tf.model import builder  # noqa: F401
  from kmax_tf.model.layers import norm
  from kmax_tf.trainer import optimizer  # noqa: F401
  from tensorflow.python.ops import gen_image_ops

  tf.keras.backend.set_floatx("float64")  # tf_keras: deeplab2
  keras.config.set_floatx("float64")
  keras.config.set_dtype_policy("float64")
  originals = {id(tf): tf, id(keras.ops): keras.ops, id(np): np}
  for name, module in list(sys.modules.items()):
    # Target generation stays as it is (its float outputs, pixel weights, are cast afterwards),
    # and so does kmax-tf's learning-rate schedule (float32, cast to each variable's dtype).
    if (module is None or name.split(".")[0] not in ("deeplab2", "kmax_tf")
        or name.startswith(("deeplab2.data", "kmax_tf.data", "kmax_tf.trainer"))):
      continue
    for attribute in ("tf", "ops", "np"):
      value = module.__dict__.get(attribute)
      if value is not None and id(value) in originals:
        setattr(module, attribute, _AsFloat64(value))
  factory = norm.BatchNormFactory.__call__
  norm.BatchNormFactory.__call__ = lambda self, *args, dtype=None, **kwargs: factory(
      self, *args, **kwargs)
  kernel = gen_image_ops.resize_bilinear

  def resize_bilinear(images, size, align_corners=False, half_pixel_centers=False, name=None):
    if images.dtype != tf.float64 or not align_corners or half_pixel_centers:
      return kernel(images, size, align_corners=align_corners,
                    half_pixel_centers=half_pixel_centers, name=name)
    for axis in (1, 2):
      images = _interpolate_align_corners(images, size[axis - 1], axis)
    return images

  gen_image_ops.resize_bilinear = resize_bilinear


def _interpolate_align_corners(images, size, axis):
  """Linear interpolation of `images` along `axis` to `size` samples, corners aligned, in the
  images' dtype (TensorFlow's bilinear resize kernel always outputs float32)."""
  length = tf.shape(images)[axis]
  scale = tf.cast(length - 1, tf.float64) / tf.cast(tf.maximum(size - 1, 1), tf.float64)
  position = tf.cast(tf.range(size), tf.float64) * scale
  low = tf.minimum(tf.cast(tf.floor(position), tf.int32), length - 1)
  high = tf.minimum(low + 1, length - 1)
  shape = [1, 1, 1, 1]
  shape[axis] = -1
  fraction = tf.reshape(position - tf.cast(low, tf.float64), shape)
  below = tf.gather(images, low, axis=axis)
  return below + (tf.gather(images, high, axis=axis) - below) * fraction


def _shared_sampling(patches, dl2_loss_module, noises):
  """Both losses draw their instance-discrimination pixels by the Gumbel-top-k trick from the
  same uniforms (`noises[i]` for the i-th decoder output of a step); each side builds its own
  sampling logits, so equal samples mean equal sampling rules. Returns a `reset()` to call
  before each step."""
  from kmax_tf.ops import replica_random  # pylint: disable=import-outside-toplevel

  counters = {"deeplab2": 0, "kmax_tf": 0}

  def take(side):
    counters[side] += 1
    return tf.constant(noises[(counters[side] - 1) % len(noises)])

  def deeplab2_gumbel_topk(logits, k):
    indices = tf.math.top_k(logits - tf.math.log(-tf.math.log(take("deeplab2"))), k).indices
    patches.calls.setdefault("deeplab2_samples", []).append(indices)
    return indices

  patches.replace(dl2_loss_module, "_gumbel_topk_sample", deeplab2_gumbel_topk)
  patches.replace(replica_random, "uniform", lambda *args, **kwargs: take("kmax_tf"))

  def reset():
    counters.update(deeplab2=0, kmax_tf=0)
  return reset


def _deeplab2_loss(options, descriptor, dl2):
  from deeplab2.model.loss import loss_builder  # pylint: disable=import-outside-toplevel

  return loss_builder.DeepLabFamilyLoss(
      loss_options=options.trainer_options.loss_options, deeplab_options=options.model_options,
      num_classes=descriptor.num_classes, ignore_label=descriptor.ignore_label,
      ignore_depth=descriptor.ignore_depth, thing_class_ids=descriptor.class_has_instances_list,
      auxiliary_output_number=dl2.auxiliary_output_number)


def _losses_and_gradients(call, loss_fn, targets, images, variables):
  """The trainers' step: per-term batch means (deeplab2 maps NaN to 0, kmax-tf stops on it) and
  the gradient of the mean total loss (one replica)."""
  with tf.GradientTape() as tape:
    outputs = call(images)
    losses = {k: tf.reduce_mean(v) for k, v in loss_fn(targets, outputs).items()}
  gradients = tape.gradient(losses[_TOTAL], variables)
  return {k: float(v) for k, v in losses.items()}, gradients, outputs


def _training_output_diffs(theirs, ours):
  """`_rel` of every training output, final and auxiliary (`aux_i/<key>`)."""
  diffs = {k: _rel(theirs[k], ours[k]) for k in _OUTPUTS if k in theirs and k in ours}
  for index, (aux_theirs, aux_ours) in enumerate(zip(theirs.get("auxiliary_outputs_pred", ()),
                                                     ours.get("auxiliary_outputs_pred", ()))):
    diffs.update({f"aux_{index}/{k}": _rel(aux_theirs[k], aux_ours[k])
                  for k in _OUTPUTS if k in aux_theirs and k in aux_ours})
  return diffs


def _deeplab2_noise_floor_step(dl2, loss, targets, images, variables, reset_sampling, rng):
  """deeplab2's own losses and gradients with the images perturbed by one rounding of their
  precision (x * (1 +- 2^-24) in float32, 2^-53 in float64): how far its training step moves by
  rounding alone. Its BN moving statistics are restored afterwards, so the optimizer steps are
  unaffected."""
  statistics = [(v, v.numpy()) for v in dl2.non_trainable_weights]
  dtype = images.dtype.as_numpy_dtype
  signs = rng.choice([-1.0, 1.0], images.shape).astype(dtype)
  reset_sampling()
  losses, gradients, _ = _losses_and_gradients(
      lambda t: dl2(t, training=True), lambda y, p: loss(y, p), targets,
      images * (1.0 + np.finfo(dtype).eps / 2 * signs), variables)
  for variable, value in statistics:
    variable.assign(value)
  return losses, gradients


def _rel(reference, ours):
  """max |reference - ours| / max |reference| (0 when both are all zero), over the flattened
  values (deeplab2 and kmax-tf shape a few variables differently)."""
  reference = np.ravel(np.asarray(reference, np.float64))
  ours = np.ravel(np.asarray(ours, np.float64))
  scale = np.max(np.abs(reference)) if reference.size else 0.0
  diff = np.max(np.abs(reference - ours)) if reference.size else 0.0
  return float(diff / scale) if scale > 0 else float(diff)


def _variable_pairs(dl2, model):
  """[(deeplab2 variable, kmax-tf variable, kmax-tf key)] after conversion, paired by value:
  every deeplab2 variable was randomised, so its bytes identify the kmax-tf copy."""
  from kmax_tf import weight_io  # pylint: disable=import-outside-toplevel

  ours_by_bytes = {}
  for key, variable in weight_io.ModelVariables(model, include_seed_states=False).by_path.items():
    ours_by_bytes.setdefault(np.asarray(variable.numpy(), np.float32).tobytes(), []).append(
        (variable, key))
  pairs = []
  for variable in dl2.weights:
    found = ours_by_bytes.get(np.asarray(variable.numpy(), np.float32).tobytes(), [])
    if len(found) != 1:
      raise RuntimeError(f"deeplab2 variable {variable.name} has {len(found)} kmax-tf copies")
    pairs.append((variable, *found[0]))
  return pairs


def _group(key, model):
  for prefix, group in ((model.encoder.name + "/", "encoder"), ("pixel_decoder/", "pixel_decoder"),
                        ("transformer_decoder/", "transformer_decoder")):
    if key.startswith(prefix):
      return group
  return "heads"


def _agreement_by_group(pairs, model, reference, ours):
  """Per variable group, arrays of the trainable variables in `pairs` order (None = no
  gradient on that side): `worst_rel` = max |difference| / max |reference| over the group,
  `norm_rel` = ||difference|| / ||reference||, the cosine similarity, and the variable with the
  largest own max |difference| / max |reference| (`worst_variable`, with that ratio and its
  share of the group's largest |reference|: variables whose gradient is zero up to rounding,
  e.g. BN offsets before a softmax, show up there with a tiny share)."""
  groups = {}
  for (_, _, key), theirs, mine in zip(pairs, reference, ours):
    if theirs is None and mine is None:
      continue
    theirs = np.zeros(1) if theirs is None else np.ravel(np.asarray(theirs, np.float64))
    mine = np.zeros_like(theirs) if mine is None else np.ravel(np.asarray(mine, np.float64))
    group = groups.setdefault(_group(key, model), [])
    group.append((key, theirs, mine))
  report = {}
  for name, members in sorted(groups.items()):
    theirs = np.concatenate([m[1] for m in members])
    mine = np.concatenate([m[2] for m in members])
    scale = np.max(np.abs(theirs))
    key, rel, share = max(((k, _rel(a, b), np.max(np.abs(a)) / scale) for k, a, b in members),
                          key=lambda item: item[1])
    report[name] = {
        "worst_rel": float(np.max(np.abs(theirs - mine)) / scale),
        "norm_rel": float(np.linalg.norm(theirs - mine) / np.linalg.norm(theirs)),
        "cosine": float(theirs @ mine / (np.linalg.norm(theirs) * np.linalg.norm(mine))),
        "worst_variable": key, "worst_variable_rel": rel,
        "worst_variable_scale_in_group": float(share), "variables": len(members)}
  return report


def _deeplab2_optimizers(options, dl2):
  """deeplab2's optimizer(s) and its own split of the gradients between them."""
  # pylint: disable=import-outside-toplevel,protected-access
  from deeplab2.trainer import trainer as deeplab2_trainer

  solver = options.trainer_options.solver_options
  backbone = None
  if solver.HasField("backbone_learning_rate_multiplier"):
    backbone = deeplab2_trainer._create_optimizer(
        solver, learning_rate_multiplier=solver.backbone_learning_rate_multiplier)
  state = types.SimpleNamespace(_optimizer=deeplab2_trainer._create_optimizer(solver),
                                _backbone_optimizer=backbone, _model=dl2, _config=options)

  def apply(gradients, variables):
    if solver.use_gradient_clipping and solver.clip_gradient_norm > 0:
      gradients, _ = tf.clip_by_global_norm(gradients, solver.clip_gradient_norm)
    deeplab2_trainer.Trainer._apply_gradients_to_optimizers(state, list(zip(gradients, variables)))
  return state, apply


def _optimizer_split_agreement(pairs, dl2_state, dl2, ours):
  """Variables on which the two sides disagree about weight decay or the backbone optimizer."""
  # pylint: disable=import-outside-toplevel,protected-access
  from deeplab2.trainer import runner_utils

  encoder = dl2.checkpoint_items["encoder"]
  encoder_names = [v.name for v in encoder.trainable_variables]
  backbone_ids = {id(v) for v in ours.backbone_variables}
  trainable = {id(v) for v in dl2.trainable_variables}
  decay, backbone = [], []
  for theirs, variable, key in pairs:
    if id(theirs) not in trainable:
      continue
    in_backbone = runner_utils.check_if_variable_in_backbone(
        theirs, dl2.checkpoint_items["encoder"].name, encoder_names)
    theirs_optimizer = dl2_state._backbone_optimizer if in_backbone else dl2_state._optimizer
    ours_optimizer = ours.backbone if id(variable) in backbone_ids else ours.main
    if theirs_optimizer is None:  # no backbone multiplier: one optimizer on both sides
      theirs_optimizer, in_backbone = dl2_state._optimizer, id(variable) in backbone_ids
    if in_backbone != (id(variable) in backbone_ids):
      backbone.append(key)
    if theirs_optimizer._do_weight_decay(theirs.name) != ours_optimizer._use_weight_decay(variable):
      decay.append(key)
  return {"weight_decay_differs": decay, "backbone_optimizer_differs": backbone}


def _target_agreement(patches, dl2_gt_items, ours_calls):
  """Ground-truth masks, Hungarian assignment and class/mask targets of the final output."""
  (_, non_void, mask_one_hot, _, mask_valid, class_one_hot, area, inverse_area) = dl2_gt_items
  gt = ours_calls["build_mask_ground_truth"][0]
  result = ours_calls["match"][0]
  class_targets, class_weights = ours_calls["class_term_targets"][0]
  weights, (_, permutation) = patches.calls["nonsquare_hungarian_matching"][0]
  theirs_assignment = permutation.numpy() * mask_valid.numpy()[:, :, None]
  ours_assignment = result.assignment.numpy()
  class_call = patches.calls["_pq_style_loss_class_term"][0]
  dice_call = patches.calls["_pq_style_loss_mask_dice_term"][0]
  num_masks = mask_valid.shape[1]

  def differing(a, b):
    return int(np.sum(np.asarray(a) != np.asarray(b)))

  return {
      "valid_masks": [int(np.sum(mask_valid)), int(np.sum(gt.mask_valid))],
      "mask_one_hot_differing": differing(mask_one_hot, gt.pixel_mask_one_hot),
      "mask_class_differing": differing(class_one_hot, gt.mask_class_one_hot),
      "mask_valid_differing": differing(mask_valid, gt.mask_valid),
      "pixel_non_void_differing": differing(non_void, gt.pixel_non_void),
      "mask_area_differing": differing(area[..., 0], gt.mask_area),
      "inverse_area_worst_rel": _rel(inverse_area, gt.inverse_pixel_mask_area),
      "assignment_differing": differing(theirs_assignment, ours_assignment),
      # Summed -dice * class probability of each side's assignment (lower is better).
      "matching_cost": [float(np.sum(weights * theirs_assignment)),
                        float(np.sum(weights * ours_assignment))],
      "class_targets_differing": differing(class_call["gt_key"], class_targets),
      "class_weights_worst_rel": _rel(class_call["weight_key"], class_weights),
      "dice_weights_worst_rel": _rel(dice_call["weight_key"][:, :num_masks],
                                     gt.mask_valid * tf.maximum(result.matched_class_prob, 1e-5)),
  }


# deeplab2 writes +-999 into the matching cost for invalid masks and padding; in float32 that
# loses similarities below 6e-5 and its solver returns suboptimal assignments on an untrained
# model (kmax_tf/losses/matching.py). With 1 instead it finds the exact optimum, as kmax-tf does.
_EXACT_MATCHING_CONSTANT = 1.0


def _train(args, options, descriptor, dl2, ours_options, model, rng):
  """The --train comparison; returns the JSON fields."""
  # pylint: disable=import-outside-toplevel,protected-access
  from deeplab2.model.loss import max_deeplab_loss
  from kmax_tf.losses import kmax_loss, pq_style
  from kmax_tf.trainer import optimizer as optimizer_lib

  crop, batch = args.crop, args.batch
  from kmax_tf.model import builder
  from kmax_tf.losses import instance_discrimination

  stride = builder.dataset_of(ours_options).pixel_decoder_output_stride
  num_pixels = ((crop - 1) // stride + 1) ** 2
  sample_k = min(options.model_options.max_deeplab.instance_discrimination_sample_k, num_pixels)
  options.model_options.max_deeplab.instance_discrimination_sample_k = sample_k
  ours_options.model_options.max_deeplab.instance_discrimination_sample_k = sample_k

  _without_randomness(dl2, model)
  dtype = np.float64 if args.float64 else np.float32
  images = rng.uniform(0, 255, (batch, crop, crop, 3)).astype(dtype)
  labels = _panoptic_labels(descriptor, crop, batch, rng)
  dl2_targets, ours_targets = (
      {k: tf.cast(v, dtype) if v.dtype.is_floating else v for k, v in side.items()}
      for side in (_deeplab2_targets(descriptor, options.train_dataset_options, images, labels),
                   _kmax_tf_targets(ours_options, labels)))
  pipeline = {k: int(np.sum(dl2_targets[k].numpy() != tf.cast(ours_targets[k], dl2_targets[
      k].dtype).numpy())) for k in _TARGET_KEYS}
  x = tf.constant(images)

  dl2_loss = _deeplab2_loss(options, descriptor, dl2)
  ours_loss = kmax_loss.build_loss(ours_options, training=True)
  pairs = _variable_pairs(dl2, model)
  dl2_trainable = {id(v) for v in dl2.trainable_variables}
  trainable_pairs = [p for p in pairs if id(p[0]) in dl2_trainable]
  dl2_variables = [p[0] for p in trainable_pairs]
  ours_variables = [p[1] for p in trainable_pairs]
  if {id(v) for v in ours_variables} != {id(v) for v in model.trainable_variables}:
    raise RuntimeError("trainable variables differ between deeplab2 and kmax-tf")

  dl2_state, dl2_apply = _deeplab2_optimizers(options, dl2)
  ours_optimizers = optimizer_lib.build_optimizers(
      ours_options.trainer_options.solver_options, model.trainable_variables,
      model.encoder.trainable_variables)
  noises = [rng.uniform(1e-6, 1.0, (batch, num_pixels)).astype(dtype)
            for _ in range(1 + dl2.auxiliary_output_number)]
  before = [(theirs.numpy(), ours.numpy()) for theirs, ours, _ in trainable_pairs]
  steps = []
  with _Patches() as patches:
    reset = _shared_sampling(patches, max_deeplab_loss, noises)
    inner = dl2_loss._multi_term_losses[0]
    patches.record(max_deeplab_loss, "nonsquare_hungarian_matching",
                   keep=lambda args, result: (args[0].numpy(), result))
    if args.deeplab2_matching == "exact":
      for name in ("_MATCHING_POSITIVE_CONSTANT", "_MATCHING_NEGATIVE_CONSTANT"):
        patches.replace(max_deeplab_loss, name, _EXACT_MATCHING_CONSTANT)
    patches.record(inner, "_pre_process_ground_truth")
    for name in ("_pq_style_loss_class_term", "_pq_style_loss_mask_dice_term"):
      patches.record(inner, name, keep=lambda args, result: {
          "gt_key": args[0]["gt_key"], "weight_key": args[1]["weight_key"]})
    for owner, name in ((kmax_loss, "build_mask_ground_truth"), (kmax_loss, "match"),
                        (pq_style, "class_term_targets"),
                        (instance_discrimination, "sample_pixels")):
      patches.record(owner, name)
    for step in range(args.train_steps):
      reset()
      theirs_losses, theirs_gradients, theirs_outputs = _losses_and_gradients(
          lambda t: dl2(t, training=True), lambda y, p: dl2_loss(y, p), dl2_targets, x,
          dl2_variables)
      ours_losses, ours_gradients, ours_outputs = _losses_and_gradients(
          lambda t: model(t, training=True), ours_loss, ours_targets, x, ours_variables)
      steps.append({"deeplab2": theirs_losses, "kmax_tf": ours_losses})
      if step == 0:
        output_diffs = _training_output_diffs(theirs_outputs, ours_outputs)
        reset()
        # kmax-tf's loss on deeplab2's outputs and targets: separates the loss from the model.
        cross = {k: float(tf.reduce_mean(v)) for k, v in ours_loss(dl2_targets, {
            k: v for k, v in theirs_outputs.items()}).items()}
        first = (theirs_losses, ours_losses, theirs_gradients, ours_gradients)
        floor_losses, floor_gradients = _deeplab2_noise_floor_step(
            dl2, dl2_loss, dl2_targets, x, dl2_variables, reset, rng)
        ours_calls = {k: patches.calls[k][:1] for k in ("build_mask_ground_truth", "match",
                                                    "class_term_targets")}
        targets = _target_agreement(patches, patches.calls["_pre_process_ground_truth"][0],
                                    ours_calls)
        outputs_count = 1 + dl2.auxiliary_output_number
        samples_differing = sum(
            int(np.sum(np.sort(a.numpy(), -1) != np.sort(b.numpy(), -1))) for a, b in zip(
                patches.calls["deeplab2_samples"][:outputs_count],
                patches.calls["sample_pixels"][:outputs_count], strict=True))
      dl2_apply(theirs_gradients, dl2_variables)
      ours_optimizers.apply_gradients(
          {id(v): g for v, g in zip(ours_variables, ours_gradients) if g is not None})

  theirs_losses, ours_losses, theirs_gradients, ours_gradients = first
  terms = {k: [theirs_losses[k], ours_losses.get(k)] for k in theirs_losses}
  missing = sorted(set(ours_losses) ^ set(theirs_losses))
  numpy = lambda gradients: [None if g is None else tf.convert_to_tensor(g).numpy()
                             for g in gradients]
  theirs_gradients, ours_gradients = numpy(theirs_gradients), numpy(ours_gradients)
  gradients = _agreement_by_group(trainable_pairs, model, theirs_gradients, ours_gradients)
  floor = _agreement_by_group(trainable_pairs, model, theirs_gradients,
                              numpy(floor_gradients))
  weights_rel, worst_weight = max((_rel(theirs.numpy(), ours.numpy()), key)
                                  for theirs, ours, key in trainable_pairs)
  updates = _agreement_by_group(
      trainable_pairs, model,
      [theirs.numpy().astype(np.float64) - start for (theirs, _, _), (start, _) in zip(
          trainable_pairs, before)],
      [ours.numpy().astype(np.float64) - start for (_, ours, _), (_, start) in zip(
          trainable_pairs, before)])
  statistics_rel = max(_rel(theirs.numpy(), ours.numpy()) for theirs, ours, _ in pairs
                       if id(theirs) not in dl2_trainable)
  return {
      "deeplab2_matching": args.deeplab2_matching,
      "instance_discrimination_sample_k": sample_k,
      "instance_discrimination_samples_differing": samples_differing,
      "pipeline_targets_differing": pipeline,
      "loss_terms": terms, "loss_terms_missing_on_one_side": missing,
      "loss_worst_rel": max(abs(a - b) / max(abs(a), 1e-12) for a, b in terms.values()
                            if b is not None),
      "targets": targets,
      "training_output_worst_rel": output_diffs,
      "kmax_tf_loss_on_deeplab2_outputs_worst_rel": max(
          abs(theirs_losses[k] - cross[k]) / max(abs(theirs_losses[k]), 1e-12) for k in cross),
      "kmax_tf_loss_on_deeplab2_outputs": cross,
      "gradients": gradients,
      "gradient_worst_rel": max(g["worst_rel"] for g in gradients.values()),
      "gradient_min_cosine": min(g["cosine"] for g in gradients.values()),
      "deeplab2_noise_floor": {
          "loss_worst_rel": max(abs(theirs_losses[k] - floor_losses[k]) /
                                max(abs(theirs_losses[k]), 1e-12) for k in floor_losses),
          "gradient_worst_rel": max(g["worst_rel"] for g in floor.values()),
          "gradient_min_cosine": min(g["cosine"] for g in floor.values()),
          "gradients": floor},
      "optimizer_split": _optimizer_split_agreement(pairs, dl2_state, dl2, ours_optimizers),
      "weights_worst_rel_after_3_steps": weights_rel, "weights_worst_variable": worst_weight,
      "updates_after_3_steps": updates,
      "bn_statistics_worst_rel_after_3_steps": statistics_rel,
      "total_loss_per_step": [[s["deeplab2"][_TOTAL], s["kmax_tf"][_TOTAL]] for s in steps],
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--deeplab2_dir", required=True)
  parser.add_argument("--config_file", default=None,
                      help="textproto (default: kmax-tf's shipped COCO R50 config)")
  parser.add_argument("--crop", type=int, default=129)
  parser.add_argument("--batch", type=int, default=None, help="default 1 (2 with --train)")
  parser.add_argument("--train", action="store_true",
                      help="compare targets, losses, gradients and 3 optimizer steps instead")
  parser.add_argument("--train_steps", type=int, default=3, help=argparse.SUPPRESS)
  parser.add_argument("--deeplab2_matching", choices=("exact", "shipped"), default="exact",
                      help="--train: deeplab2's matching with cost constants 1 instead of its "
                      "+-999 (exact optimum, as kmax-tf), or as shipped")
  parser.add_argument("--float64", action="store_true",
                      help="both sides build and compute in float64 (with --train only)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--tolerance", type=float, default=1e-4)
  parser.add_argument("--no_timing", action="store_true", help="only the numerical comparison")
  args = parser.parse_args(argv)
  if args.batch is None:
    args.batch = 2 if args.train else 1
  if args.float64 and not args.train:
    parser.error("--float64 needs --train (deeplab2's post-processor is float32 only)")
  sys.path.insert(0, os.path.abspath(args.deeplab2_dir))

  # pylint: disable=import-outside-toplevel
  from deeplab2.data import dataset as deeplab2_dataset
  from deeplab2.model import kmax_deeplab as deeplab2_kmax
  from kmax_tf import config as kmax_config
  from kmax_tf import configs
  from kmax_tf import convert_deeplab2
  from kmax_tf import postprocess
  from kmax_tf.model import builder

  config_file = args.config_file or str(
      configs.config_path("coco/kmax_deeplab/kmax_meta_r50_os32.textproto"))
  crop = args.crop
  rng = np.random.default_rng(0)

  if args.float64:
    _run_in_float64()
  options = _deeplab2_options(config_file, crop)
  descriptor = deeplab2_dataset.MAP_NAME_TO_DATASET_INFO[options.train_dataset_options.dataset]
  start = time.perf_counter()
  dl2 = deeplab2_kmax.KMaXDeepLab(options, descriptor)
  # deeplab2's post-processor multiplies float32 casts of its own with the logits (max_deeplab.py
  # _get_mask_id_and_semantic_maps), so it cannot run in float64; --train does not use it.
  dl2(tf.keras.Input([crop, crop, 3], batch_size=args.batch), training=False,
      post_processing=not args.float64)
  build_deeplab2 = time.perf_counter() - start
  _randomise(dl2.weights, rng)

  ours_options = kmax_config.load_config(config_file, {"DATA_DIR": "unused",
                                                       "EXPERIMENT_NAME": "unused"},
                                         validate=False)
  start = time.perf_counter()
  model = builder.build_model(ours_options)
  build_ours = time.perf_counter() - start
  with tempfile.TemporaryDirectory() as tmp:
    saved = tf.train.Checkpoint(**dl2.checkpoint_items).save(os.path.join(tmp, "ckpt"))
    convert_deeplab2.assign_from_deeplab2(model, saved)

  if args.train:
    print(json.dumps({"benchmark": "vs_deeplab2_train", "config": os.path.basename(config_file),
                      "crop": crop, "batch": args.batch,
                      "precision": "float64" if args.float64 else "float32",
                      **_train(args, options, descriptor, dl2, ours_options, model, rng)}))
    return
  x = tf.constant(rng.uniform(0, 255, (args.batch, crop, crop, 3)).astype(np.float32))
  post = postprocess.PostProcessor.from_options(ours_options.evaluator_options,
                                                builder.dataset_of(ours_options), (crop, crop))
  comparison = _compare(dl2, model, post, x)
  grouped = _with_grouped_depthwise_convs(model, lambda: _compare(dl2, model, post, x))
  if grouped is not None:
    comparison["with_deeplab2_grouped_depthwise_conv"] = {
        k: grouped[k] for k in ("max_abs_logit_diff", "output_diffs", "panoptic_pred_identical",
                                "assignment_flips")}
  noise_floor = _noise_floor(dl2, x, rng)
  components, first_difference = _components(dl2, model, x, args.tolerance)

  times = {}
  if not args.no_timing:
    # Both networks alone: kmax-tf's call returns logits, so deeplab2's post-processor stays out.
    theirs_fn = tf.function(lambda t: dl2(t, training=False, post_processing=False))
    ours_fn = tf.function(lambda t: model(t, training=False))
    times["deeplab2_forward_s"] = timing.median_seconds(
        lambda: [v.numpy() for v in theirs_fn(x).values()], args.repeats, warmup=1)
    times["kmax_tf_forward_s"] = timing.median_seconds(
        lambda: [v.numpy() for v in ours_fn(x).values()], args.repeats, warmup=1)
    theirs_step = _train_step_fn(dl2, lambda t: dl2(t, training=True))
    ours_step = _train_step_fn(model, lambda t: model(t, training=True))
    times["deeplab2_train_step_s"] = timing.median_seconds(lambda: theirs_step(x).numpy(),
                                                            args.repeats, warmup=1)
    times["kmax_tf_train_step_s"] = timing.median_seconds(lambda: ours_step(x).numpy(),
                                                           args.repeats, warmup=1)
    times["ratio_forward"] = times["kmax_tf_forward_s"] / times["deeplab2_forward_s"]
    times["ratio_train_step"] = times["kmax_tf_train_step_s"] / times["deeplab2_train_step_s"]

  print(json.dumps({
      "benchmark": "vs_deeplab2", "config": os.path.basename(config_file), "crop": crop,
      "batch": args.batch, "tolerance": args.tolerance,
      "within_tolerance": comparison["max_abs_logit_diff"] <= args.tolerance, **comparison,
      "deeplab2_noise_floor": noise_floor, "first_differing_component": first_difference,
      "component_diffs": components,
      "build_s": {"deeplab2": build_deeplab2, "kmax_tf": build_ours}, **times,
  }, sort_keys=False))


if __name__ == "__main__":
  main()
