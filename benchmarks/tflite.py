"""Benchmark: `kmax-tf export --format tflite` (TFLite + XNNPACK) against the same folded network
in TensorFlow, batch 1, on CPU; prints one JSON line.

  python benchmarks/tflite.py [--size 641] [--rounds 5] [--config_file F]

Both sides run the network of the export (batch norms folded, no semantic branch, no
post-processing) on the same float32 image, in one process, alternating (each round times one
call of each, the order swapping every round) after one warm-up call each; `ratio` is TFLite /
TensorFlow. The weights are random (a kmax-tf checkpoint with batch-norm statistics drawn near
their defaults): `max_abs_diff` per output against `max_abs` (the output's scale) and
`mask_argmax_agreement` (the fraction of pixels whose arg-max mask slot agrees) show how close
the two are. TensorFlow's side depends on TF_ENABLE_ONEDNN_OPTS; TFLite's does not.
"""
import argparse
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402  pylint: disable=wrong-import-position
import tensorflow as tf  # noqa: E402  pylint: disable=wrong-import-position

import timing  # benchmarks/timing.py  # noqa: E402  pylint: disable=wrong-import-position

_DEFAULT_CONFIG = "coco/kmax_deeplab/kmax_meta_r50_os32.textproto"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config_file", default=None,
                      help="textproto (default: kmax-tf's shipped COCO R50 config)")
  parser.add_argument("--size", type=int, default=641, help="square input side, 32k + 1")
  parser.add_argument("--rounds", type=int, default=5)
  args = parser.parse_args(argv)
  # pylint: disable=import-outside-toplevel
  import kmax_tf
  from kmax_tf import config, configs, export, weight_io
  from kmax_tf.model import builder

  config_file = args.config_file or str(configs.config_path(_DEFAULT_CONFIG))
  options = config.load_config(
      config_file, {"DATA_DIR": "unused", "EXPERIMENT_NAME": "unused"}, validate=False)
  rng = np.random.default_rng(0)
  model = builder.build_model(options)
  for variable in model.variables:
    if "moving_mean" in variable.path:
      variable.assign(rng.normal(0.0, 0.1, variable.shape).astype("float32"))
    elif "moving_variance" in variable.path:
      variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
  image = rng.uniform(0, 255, (1, args.size, args.size, 3)).astype(np.float32)
  with tempfile.TemporaryDirectory() as tmp:
    prefix = tf.train.Checkpoint(model=weight_io.ModelVariables(model)).save(
        os.path.join(tmp, "ckpt", "ckpt"))
    path = export.export_tflite(options, prefix, tmp, (args.size, args.size))
    size_mb = os.path.getsize(path) / 2**20
    runner = tf.lite.Interpreter(model_path=path, num_threads=os.cpu_count()).get_signature_runner()
    folded = export.build_inference_model(options, prefix)
  network = export.tflite_network(folded)
  tensor = tf.constant(image)

  def run_tflite():
    return runner(**{export.INPUT_KEY: image})

  def run_tensorflow():
    return {key: value.numpy() for key, value in network(tensor).items()}

  tflite_s, tensorflow_s = timing.alternating_medians([run_tflite, run_tensorflow], args.rounds)
  ours, reference = run_tflite(), run_tensorflow()
  mask_key = "pixel_space_mask_logits"
  print(json.dumps({
      "benchmark": "tflite", "config": os.path.basename(config_file), "size": args.size,
      "batch": 1, "cpus": os.cpu_count(), "tensorflow": tf.__version__,
      "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
      "kmax_tf_package": os.path.dirname(kmax_tf.__file__), "rounds": args.rounds,
      "tflite_mb": round(size_mb, 1), "tflite_s": round(tflite_s, 4),
      "tensorflow_s": round(tensorflow_s, 4), "ratio": round(tflite_s / tensorflow_s, 3),
      "max_abs_diff": {key: float(np.max(np.abs(ours[key] - reference[key])))
                       for key in export.TFLITE_OUTPUT_KEYS},
      "max_abs": {key: float(np.max(np.abs(reference[key]))) for key in export.TFLITE_OUTPUT_KEYS},
      "mask_argmax_agreement": float(np.mean(
          np.argmax(ours[mask_key], -1) == np.argmax(reference[mask_key], -1))),
      "load_average": os.getloadavg()[0]}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
