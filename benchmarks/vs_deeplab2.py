"""Benchmark: kmax-tf vs deeplab2 on the same config and the same (converted) weights.

  python benchmarks/vs_deeplab2.py --deeplab2_dir PATH [--config_file F] [--crop 129] [--no_timing]

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
"""
import argparse
import json
import os
import re
import sys
import tempfile
import time

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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--deeplab2_dir", required=True)
  parser.add_argument("--config_file", default=None,
                      help="textproto (default: kmax-tf's shipped COCO R50 config)")
  parser.add_argument("--crop", type=int, default=129)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--tolerance", type=float, default=1e-4)
  parser.add_argument("--no_timing", action="store_true", help="only the numerical comparison")
  args = parser.parse_args(argv)
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

  options = _deeplab2_options(config_file, crop)
  descriptor = deeplab2_dataset.MAP_NAME_TO_DATASET_INFO[options.train_dataset_options.dataset]
  start = time.perf_counter()
  dl2 = deeplab2_kmax.KMaXDeepLab(options, descriptor)
  dl2(tf.keras.Input([crop, crop, 3], batch_size=args.batch), training=False)
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
