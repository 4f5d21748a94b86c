"""Panoptic predictions for image files, from an exported SavedModel or a config + checkpoint.

For each image `<name>.<ext>` it writes, under the output directory:
- `panoptic/<name>.png` and `panoptic.json`: COCO panoptic format (the format `kmax-tf eval pq`
  reads); category ids are the dataset's evaluation ids, every segment has iscrowd 0;
- `semantic/<name>.png`: the semantic id (the dataset's class index) of every pixel, 8-bit
  grayscale (16-bit for datasets with more than 256 classes);
- `vis/<name>.png`: the image blended with class colours, each segment labelled with its class
  name.

Images are read as `kmax_tf.images.read_rgb` reads them: EXIF orientation applied (outputs are
upright as viewers show the image), 16-bit grayscale scaled to 8 bits.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from kmax_tf import images, panoptic_files

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# The five post-processing outputs, per image `[H, W]`.
PREDICTION_KEYS = ("panoptic_pred", "semantic_pred", "instance_pred", "semantic_scores",
                   "instance_scores")

# uint8 `[H, W, 3]` image -> {key: `[H, W]` numpy array} for PREDICTION_KEYS.
PredictFn = Callable[[np.ndarray], dict]


def list_images(paths: Iterable[str]) -> list[str]:
  """Image files named by `paths` (files, or folders whose image files are taken in name order).

  Raises FileNotFoundError for a missing path, ValueError when no image is found or two images
  share a file stem (their outputs would overwrite each other).
  """
  images = []
  for path in paths:
    if os.path.isdir(path):
      images.extend(os.path.join(path, name) for name in sorted(os.listdir(path))
                    if name.lower().endswith(IMAGE_EXTENSIONS))
    elif os.path.isfile(path):
      images.append(path)
    else:
      raise FileNotFoundError(f"--input {path} does not exist")
  if not images:
    raise ValueError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) in {list(paths)}")
  stems = {}
  for image in images:
    stem = image_name(image)
    if stem in stems:
      raise ValueError(f"{stems[stem]} and {image} have the same name {stem!r}; their "
                       "predictions would overwrite each other")
    stems[stem] = image
  return images


def image_name(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def _unbatch(outputs) -> dict:
  return {key: np.asarray(outputs[key])[0] for key in PREDICTION_KEYS}


def saved_model_predictor(saved_model_dir: str):
  """(predict_fn, dataset descriptor) of a SavedModel written by `kmax-tf export`."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from kmax_tf import datasets, export  # pylint: disable=import-outside-toplevel
  metadata = export.read_metadata(saved_model_dir)
  serve = tf.saved_model.load(saved_model_dir).signatures[export.DEFAULT_SIGNATURE]

  def predict_fn(image):
    return _unbatch(serve(**{export.INPUT_KEY: tf.constant(image, tf.uint8)}))

  return predict_fn, datasets.get_dataset(metadata["dataset"])


def checkpoint_predictor(options, checkpoint: str):
  """(predict_fn, dataset descriptor) of the model of `options` with `checkpoint`'s weights,
  computing the predictions its export would serve (not the raw `semantic_logits`, which
  predictions do not need)."""
  from kmax_tf import export  # pylint: disable=import-outside-toplevel
  from kmax_tf.model import builder  # pylint: disable=import-outside-toplevel
  dataset = builder.dataset_of(options)
  inference = export.InferenceModel(export.build_inference_model(options, checkpoint), dataset,
                                    options.evaluator_options, semantic_logits=False)
  return (lambda image: _unbatch(inference(image))), dataset


def write_semantic_png(path: str, semantic: np.ndarray, num_classes: int) -> None:
  dtype = np.uint8 if num_classes <= 256 else np.uint16
  Image.fromarray(semantic.astype(dtype)).save(path)


def predict_files(predict_fn: PredictFn, dataset, image_paths: Iterable[str], output_dir: str,
                  progress: bool = True) -> dict:
  """Runs `predict_fn` on every image and writes the files of the module docstring.

  An image that cannot be read or decoded is reported on stderr and skipped; `panoptic.json`
  lists the images predicted, and is written even when an unexpected error stops the loop.

  Returns the paths written: {"panoptic_json", "panoptic_dir", "semantic_dir", "vis_dir"},
  "num_images" (predicted) and "failures": [{"path", "error"}] of the skipped images.
  """
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  image_paths = list(image_paths)
  paths = {"panoptic_json": os.path.join(output_dir, "panoptic.json"),
           "panoptic_dir": os.path.join(output_dir, "panoptic"),
           "semantic_dir": os.path.join(output_dir, "semantic"),
           "vis_dir": os.path.join(output_dir, "vis")}
  for key in ("panoptic_dir", "semantic_dir", "vis_dir"):
    os.makedirs(paths[key], exist_ok=True)
  annotations, failures = [], []
  try:
    for path in tqdm(image_paths, desc="predict", unit="image", disable=not progress):
      try:
        image = images.read_rgb(path)
      except ValueError as error:
        failures.append({"path": path, "error": str(error)})
        tqdm.write(f"skipped {error}", file=sys.stderr)
        continue
      name = image_name(path)
      predictions = predict_fn(image)
      panoptic = predictions["panoptic_pred"]
      annotations.append(panoptic_files.save_panoptic_png(output_dir, name, panoptic, dataset))
      write_semantic_png(os.path.join(paths["semantic_dir"], f"{name}.png"),
                         predictions["semantic_pred"], dataset.num_classes)
      Image.fromarray(panoptic_files.labelled_overlay(image, panoptic, dataset)).save(
          os.path.join(paths["vis_dir"], f"{name}.png"))
  finally:
    panoptic_files.write_panoptic_json(output_dir, annotations, dataset)
  paths["num_images"] = len(annotations)
  paths["failures"] = failures
  return paths
