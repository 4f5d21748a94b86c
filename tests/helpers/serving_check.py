"""Serves an exported SavedModel at several image sizes and compares it with the Keras model.

TensorFlow chooses its CPU kernels (oneDNN or Eigen) when it loads, so tests run this script in
one subprocess per kernel family (`TF_ENABLE_ONEDNN_OPTS=1` / `0`):

  python tests/helpers/serving_check.py --config_file F --checkpoint C --saved_model D \
      --sizes 1x1 3000x40 [--override NAME=VALUE ...] [--panoptic_npz OUT.npz]

Each size gets a random uint8 image (seeded by the size). Prints one JSON line:
`{"onednn": bool, "sizes": {"HxW": {"mismatched_pixels": {key: n}, "max_abs_diff": {key: x}}}}`,
integer maps counted pixel by pixel and float outputs by their largest absolute difference;
`--panoptic_npz` also saves each size's served `panoptic_pred`, to compare kernel families.
"""
import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.util import _pywrap_util_port  # noqa: E402

from kmax_tf import config, export, inference  # noqa: E402
from kmax_tf.model import builder  # noqa: E402


def image_of_size(height: int, width: int) -> np.ndarray:
  """A random uint8 `[height, width, 3]` image, the same for the same size."""
  return np.random.default_rng(height * 100003 + width).integers(
      0, 256, (height, width, 3), dtype=np.uint8)


def reference(model, options, image):
  """The Keras model through `inference.Predictor`, eagerly: post-processing at the static
  padded size, as in the evaluator. uint8 `[H, W, 3]` -> the export's outputs with batch 1."""
  predictor = inference.Predictor(model, builder.dataset_of(options), options.evaluator_options,
                                  semantic_logits=True)
  return predictor(tf.constant(image[None], tf.float32))


def compare(served, expected) -> dict:
  """Pixel mismatches of the integer outputs and largest differences of the float ones."""
  result = {"mismatched_pixels": {}, "max_abs_diff": {}}
  for key, value in served.items():
    value, other = np.asarray(value), np.asarray(expected[key])
    if value.shape != other.shape:
      raise AssertionError(f"{key}: served shape {value.shape}, Keras model {other.shape}")
    if value.dtype.kind == "i":
      result["mismatched_pixels"][key] = int(np.sum(value != other))
    else:
      result["max_abs_diff"][key] = float(np.max(np.abs(value - other), initial=0.0))
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--config_file", required=True)
  parser.add_argument("--checkpoint", required=True)
  parser.add_argument("--saved_model", required=True)
  parser.add_argument("--sizes", nargs="+", required=True, help="HxW")
  parser.add_argument("--override", action="append", default=[], help="NAME=VALUE")
  parser.add_argument("--panoptic_npz")
  args = parser.parse_args()
  options = config.load_config(args.config_file,
                               dict(item.split("=", 1) for item in args.override))
  model = export.build_inference_model(options, args.checkpoint)
  serve = tf.saved_model.load(args.saved_model).signatures[export.DEFAULT_SIGNATURE]
  results, panoptic = {}, {}
  for size in args.sizes:
    image = image_of_size(*map(int, size.split("x")))
    served = serve(input_tensor=tf.constant(image))
    results[size] = compare(served, reference(model, options, image))
    panoptic[size] = served["panoptic_pred"].numpy()
  if args.panoptic_npz:
    np.savez_compressed(args.panoptic_npz, **panoptic)
  print(json.dumps({"onednn": bool(_pywrap_util_port.IsMklEnabled()), "sizes": results}))


if __name__ == "__main__":
  main()
