"""Benchmark: kmax-tf's exported SavedModel against deeplab2's inference, end to end, on CPU.

  python benchmarks/serving.py --deeplab2_dir PATH [--sizes 641 1281] [--rounds 5]
      [--config_file F]

PATH as in `vs_deeplab2.py` (a directory from which `import deeplab2` works); both run in this
process, deeplab2 on tf_keras and kmax-tf on Keras 3. One JSON line.

- deeplab2: `model(image, training=False)` (network + its post-processor) in a `tf.function`,
  float32 `[1, S, S, 3]`, every output fetched; the model is built for an S x S crop (its
  post-processor works at the crop size) and randomised as in `vs_deeplab2.py`.
- kmax-tf: `kmax-tf export`'s SavedModel (`export.export_saved_model` of a kmax-tf checkpoint,
  loaded with `tf.saved_model.load`), signature `serving_default`, uint8 `[S, S, 3]`, every
  output fetched; the weights are deeplab2's random ones converted, so both post-process the
  same predictions.

Each round times one call of each, alternating which goes first, after one warm-up call of
each; medians over the rounds and their ratio (kmax-tf / deeplab2). `panoptic_pred_agreement`
is the fraction of pixels where both give the same `panoptic_pred`, `max_abs_logit_diff` the
largest difference of the mask and class logits (random weights whose batch norms do not
normalise make large logits, `max_abs_logit` gives their scale: compare with `vs_deeplab2.py`'s
noise floor, not with 0). `unoptimized_keras_agreement` and `unoptimized_keras_max_abs_logit_diff`
compare the export with the converted kmax-tf Keras model itself, unfolded, through the same
post-processing (`inference.Predictor`): what the export's graph optimizations change.
`kmax_tf_op_seconds` is one profiled serving call split by op type (conv, matmul/einsum,
elementwise, resize inside the network; `post_processing` is every op outside it: the
post-processor, the input checks, padding and cropping), `kmax_tf_top_ops` its largest op types
as [type, seconds, executions]. `load_average` is the 1-minute load before and after: the machine
may be shared, ratios from alternating rounds are what compare. `kmax_tf_package` is the kmax_tf
that was measured: a script's own directory, not the working directory, starts `sys.path`, so an
installed copy wins over the checkout unless `PYTHONPATH` names the checkout.
"""
import argparse
import json
import os
import sys
import tempfile

import vs_deeplab2  # benchmarks/vs_deeplab2.py: sets TF_USE_LEGACY_KERAS before TensorFlow loads

import numpy as np  # noqa: E402  pylint: disable=wrong-import-order
import tensorflow as tf  # noqa: E402  pylint: disable=wrong-import-order

import op_profile  # benchmarks/op_profile.py  # noqa: E402
import timing  # benchmarks/timing.py  # noqa: E402

_DEFAULT_CONFIG = "coco/kmax_deeplab/kmax_meta_r50_os32.textproto"
_LOGITS = ("pixel_space_mask_logits", "transformer_class_logits")


def _fetch_all(outputs):
  return [value.numpy() for value in tf.nest.flatten(outputs)]


def _build_deeplab2(config_file, size, rng, weights_of=None):
  """deeplab2's model for an S x S crop, randomised, or with the weights of `weights_of` (the
  model of another crop: the variables do not depend on the crop)."""
  # pylint: disable=import-outside-toplevel
  from deeplab2.data import dataset as deeplab2_dataset
  from deeplab2.model import kmax_deeplab as deeplab2_kmax

  options = vs_deeplab2._deeplab2_options(config_file, size)  # pylint: disable=protected-access
  descriptor = deeplab2_dataset.MAP_NAME_TO_DATASET_INFO[options.train_dataset_options.dataset]
  model = deeplab2_kmax.KMaXDeepLab(options, descriptor)
  model(tf.keras.Input([size, size, 3], batch_size=1), training=False)
  if weights_of is None:
    vs_deeplab2._randomise(model.weights, rng)  # pylint: disable=protected-access
  else:
    for variable, source in zip(model.weights, weights_of.weights, strict=True):
      variable.assign(source)
  return model


def _export_kmax_tf(config_file, deeplab2_model, output_dir):
  """`kmax-tf export` of `deeplab2_model`'s weights (converted to a kmax-tf checkpoint).

  Returns (the loaded `serving_default`, the network's name scope, the unoptimized Keras
  model's inference: `inference.Predictor` of the converted, unfolded model, uint8 image in).
  """
  # pylint: disable=import-outside-toplevel
  from kmax_tf import config as kmax_config
  from kmax_tf import convert_deeplab2
  from kmax_tf import export
  from kmax_tf import inference
  from kmax_tf.model import builder

  options = kmax_config.load_config(
      config_file, {"DATA_DIR": "unused", "EXPERIMENT_NAME": "unused"}, validate=False)
  model = builder.build_model(options)
  saved = tf.train.Checkpoint(**deeplab2_model.checkpoint_items).save(
      os.path.join(output_dir, "deeplab2", "ckpt"))
  prefix = convert_deeplab2.convert(model, saved, os.path.join(output_dir, "kmax_tf"))
  export.export_saved_model(options, prefix, os.path.join(output_dir, "saved_model"))
  loaded = tf.saved_model.load(os.path.join(output_dir, "saved_model"))
  predictor = inference.Predictor(model, builder.dataset_of(options), options.evaluator_options,
                                  semantic_logits=True)
  unoptimized = tf.function(lambda image: predictor(tf.cast(image, tf.float32)[None]))
  return loaded.signatures[export.DEFAULT_SIGNATURE], model.name, unoptimized


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--deeplab2_dir", required=True)
  parser.add_argument("--config_file", default=None,
                      help="textproto (default: kmax-tf's shipped COCO R50 config)")
  parser.add_argument("--sizes", type=int, nargs="+", default=[641, 1281])
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args(argv)
  sys.path.insert(0, os.path.abspath(args.deeplab2_dir))
  import kmax_tf  # pylint: disable=import-outside-toplevel
  from kmax_tf import configs  # pylint: disable=import-outside-toplevel

  config_file = args.config_file or str(configs.config_path(_DEFAULT_CONFIG))
  rng = np.random.default_rng(0)
  result = {"benchmark": "serving", "config": os.path.basename(config_file), "batch": 1,
            "cpus": os.cpu_count(), "tensorflow": tf.__version__,
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
            "kmax_tf_package": os.path.dirname(kmax_tf.__file__),
            "rounds": args.rounds, "load_average_before": os.getloadavg()[0], "sizes": {}}
  with tempfile.TemporaryDirectory() as tmp:
    serving = network_scope = first_model = unoptimized = None
    for size in args.sizes:
      deeplab2_model = _build_deeplab2(config_file, size, rng, first_model)
      if serving is None:  # one export serves every size
        first_model = deeplab2_model
        serving, network_scope, unoptimized = _export_kmax_tf(config_file, deeplab2_model, tmp)
      image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
      ours_input = tf.constant(image)
      theirs_input = tf.constant(image[None].astype(np.float32))
      theirs = tf.function(lambda x, m=deeplab2_model: m(x, training=False))

      def run_ours(x=ours_input):
        return _fetch_all(serving(input_tensor=x))

      def run_theirs(x=theirs_input, fn=theirs):
        return _fetch_all(fn(x))

      ours_s, theirs_s = timing.alternating_medians([run_ours, run_theirs], args.rounds)
      ours_out, theirs_out = serving(input_tensor=ours_input), theirs(theirs_input)
      keras_out = unoptimized(ours_input)
      by_category, by_op = op_profile.profile(run_ours, network_scope)
      result["sizes"][str(size)] = {
          "deeplab2_s": round(theirs_s, 4), "kmax_tf_s": round(ours_s, 4),
          "ratio": round(ours_s / theirs_s, 3),
          "panoptic_pred_agreement": float(np.mean(
              ours_out["panoptic_pred"].numpy() == theirs_out["panoptic_pred"].numpy())),
          "max_abs_logit_diff": {key: float(np.max(np.abs(ours_out[key] - theirs_out[key])))
                                 for key in _LOGITS},
          "unoptimized_keras_agreement": float(np.mean(
              ours_out["panoptic_pred"].numpy() == keras_out["panoptic_pred"].numpy())),
          "unoptimized_keras_max_abs_logit_diff": {
              key: float(np.max(np.abs(ours_out[key] - keras_out[key]))) for key in _LOGITS},
          "max_abs_logit": {key: float(np.max(np.abs(theirs_out[key]))) for key in _LOGITS},
          "kmax_tf_op_seconds": {k: round(v, 4) for k, v in by_category.items()},
          "kmax_tf_top_ops": [[op, round(seconds, 4), count] for op, seconds, count in by_op[:15]]}
  result["load_average_after"] = os.getloadavg()[0]
  print(json.dumps(result))


if __name__ == "__main__":
  main()
