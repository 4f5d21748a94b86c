"""Benchmark: kmax-tf vs deeplab2 on the same config and the same (converted) weights.

  python benchmarks/vs_deeplab2.py --deeplab2_dir PATH [--config_file F] [--crop 129]

PATH is a directory from which `import deeplab2` works (a deeplab2 checkout with its protos
compiled, e.g. the parent of `deeplab2/`); it is only put on `sys.path`, nothing is copied.
deeplab2 runs on tf_keras (TF_USE_LEGACY_KERAS=1, set here before TensorFlow is imported) and
kmax-tf on Keras 3, in the same process.

Steps: build deeplab2's KMaXDeepLab and kmax-tf's model from the same textproto; randomise every
deeplab2 variable (BN statistics, gammas, layer scales and zero-initialised weights too, so that
no branch is silently zero); save it with `tf.train.Checkpoint(**model.checkpoint_items)` as
deeplab2's trainer does; convert that checkpoint into the kmax-tf model; run both on the same
random image. Prints one JSON line: max |difference| of each output (target <= 1e-4), whether
`panoptic_pred` is identical (deeplab2's post-processor vs kmax_tf.postprocess), the first
component whose outputs differ (each component -- encoder, pixel decoder, transformer decoder,
final head -- is fed deeplab2's inputs, so differences do not accumulate), and forward / train-step times of both (median of --repeats, after a warm-up).
The train step is forward(training=True) + backward of a proxy loss (mean of squares of the mask,
class and semantic logits, main and auxiliary) + SGD update: it times the network, not the loss.
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
  theirs_fn = tf.function(lambda t: dl2(t, training=False, post_processing=True))
  ours_fn = tf.function(lambda t: model(t, training=False))
  theirs, ours = theirs_fn(x), ours_fn(x)
  diffs = {k: _max_diff(theirs[k], ours[k]) for k in _OUTPUTS}
  dataset = builder.dataset_of(ours_options)
  post = postprocess.PostProcessor.from_options(ours_options.evaluator_options, dataset,
                                                (crop, crop))
  ours_panoptic = post(ours["pixel_space_mask_logits"], ours["transformer_class_logits"])
  panoptic_identical = bool(np.array_equal(theirs["panoptic_pred"].numpy(),
                                           ours_panoptic["panoptic_pred"].numpy()))
  components, first_difference = _components(dl2, model, x, args.tolerance)

  times = {
      "deeplab2_forward_s": timing.median_seconds(
          lambda: [v.numpy() for v in theirs_fn(x).values()], args.repeats, warmup=1),
      "kmax_tf_forward_s": timing.median_seconds(
          lambda: [v.numpy() for v in ours_fn(x).values()], args.repeats, warmup=1),
  }
  theirs_step = _train_step_fn(dl2, lambda t: dl2(t, training=True))
  ours_step = _train_step_fn(model, lambda t: model(t, training=True))
  times["deeplab2_train_step_s"] = timing.median_seconds(lambda: theirs_step(x).numpy(), args.repeats,
                                                          warmup=1)
  times["kmax_tf_train_step_s"] = timing.median_seconds(lambda: ours_step(x).numpy(), args.repeats,
                                                         warmup=1)
  times["ratio_forward"] = times["kmax_tf_forward_s"] / times["deeplab2_forward_s"]
  times["ratio_train_step"] = times["kmax_tf_train_step_s"] / times["deeplab2_train_step_s"]

  numeric = [v for v in diffs.values() if isinstance(v, float)]
  print(json.dumps({
      "benchmark": "vs_deeplab2", "config": os.path.basename(config_file), "crop": crop,
      "batch": args.batch, "max_abs_logit_diff": max(numeric) if numeric else None,
      "output_diffs": diffs, "within_tolerance": bool(
          len(numeric) == len(diffs) and max(numeric) <= args.tolerance),
      "panoptic_pred_identical": panoptic_identical,
      "first_differing_component": first_difference, "component_diffs": components,
      "build_s": {"deeplab2": build_deeplab2, "kmax_tf": build_ours}, **times,
  }, sort_keys=False))


if __name__ == "__main__":
  main()
