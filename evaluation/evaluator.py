"""Runs a kMaX model over an evaluation dataset and reports PQ/SQ/RQ, mIoU and COCO AP.

Per image (batch size 1, as in deeplab2): model -> post-processing at the padded input size
(area limits count pixels there) -> crop the bottom/right padding and resize back to the raw
size (nearest) -> metric updates on the raw-size labels. With `save_predictions`, writes COCO
panoptic predictions (`panoptic/<name>.png` + `panoptic.json`) and colour overlays of the first
`num_vis_samples` images (`vis/<name>.png`).

Assumes the evaluation pipeline does not rescale images (true for every kMaX config): the valid
region of the model input is the top-left `size_raw`.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from kmax_tf import inference, panoptic_files
from kmax_tf.evaluation import coco_ap, miou, panoptic_quality


class Evaluator:
  """Evaluates `model` (kmax-tf output contract) with the thresholds of `evaluator_options`.

  Args:
    model: callable `model(images [1, H, W, 3], training=False, semantic_logits=False) -> dict`
      with `pixel_space_mask_logits` and `transformer_class_logits` (the auxiliary semantic
      branch is skipped: no metric reads it).
    dataset: the `DatasetDescriptor`.
    evaluator_options: an `EvaluatorOptions` message.
    output_dir: where predictions go when `save_predictions` is set (`override_save_dir` wins).
    crowd_convention: "official" or "deeplab2" for PQ (see `pq_core`).
  """

  def __init__(self, model, dataset, evaluator_options, output_dir: str | None = None,
               crowd_convention: str = "official"):
    self.model = model
    self.dataset = dataset
    self.options = evaluator_options
    self.crowd_convention = crowd_convention
    self.save_dir = evaluator_options.override_save_dir or output_dir
    if evaluator_options.save_predictions and not self.save_dir:
      raise ValueError("save_predictions needs an output_dir or override_save_dir")
    predictor = inference.Predictor(model, dataset, evaluator_options)
    # One trace per input size (post-processing needs static sizes); the crop and raw sizes are
    # tensors so that they do not retrace it.
    self._predict = tf.function(predictor) if evaluator_options.use_tf_function else predictor

  def _metrics(self):
    d = self.dataset
    return (
        panoptic_quality.PanopticQuality(
            d.num_classes, d.ignore_label, d.panoptic_label_divisor,
            thing_class_ids=d.thing_class_ids, crowd_convention=self.crowd_convention),
        miou.MeanIoU(d.num_classes, d.ignore_label),
        coco_ap.PanopticInstanceAP(d.num_classes, d.thing_class_ids, d.panoptic_label_divisor,
                                   d.ignore_label))

  def evaluate(self, eval_dataset, num_steps: int | None = None,
               overlays: list | None = None) -> dict:
    """Runs over `eval_dataset` (batch-1 dicts: image, size_raw, panoptic_raw, semantic_raw,
    is_crowd_raw, image_name); `num_steps` defaults to `eval_steps` (-1: all). Colour overlays
    (uint8 `[H, W, 3]` at raw size) of the first `num_vis_samples` images are appended to
    `overlays` if it is a list."""
    if num_steps is None:
      num_steps = self.options.eval_steps
    pq, iou, ap = self._metrics()
    saved = []
    start = time.perf_counter()
    step = 0
    for sample in eval_dataset:
      if 0 <= num_steps <= step:
        break
      images = tf.convert_to_tensor(sample["image"], tf.float32)
      if images.shape.rank != 4 or images.shape[0] != 1:
        raise ValueError(f"Evaluation needs batch size 1; image has shape {images.shape}")
      raw_size = [int(v) for v in np.asarray(sample["size_raw"]).reshape(-1)[:2]]
      valid = [min(raw_size[0], images.shape[1]), min(raw_size[1], images.shape[2])]
      predictions = self._predict(images, tf.constant(valid, tf.int32),
                                  tf.constant(raw_size, tf.int32))
      panoptic = predictions["panoptic_pred"][0].numpy()
      gt_panoptic = np.asarray(sample["panoptic_raw"])[0]
      is_crowd = np.asarray(sample["is_crowd_raw"])[0]
      pq.update_state(gt_panoptic, panoptic, is_crowd=is_crowd)
      iou.update_state(np.asarray(sample["semantic_raw"])[0],
                       predictions["semantic_pred"][0].numpy())
      ap.update_state(gt_panoptic, panoptic, predictions["semantic_scores"][0].numpy(),
                      predictions["instance_scores"][0].numpy(), is_crowd=is_crowd)
      if overlays is not None and step < self.options.num_vis_samples:
        image = np.asarray(sample["image"])[0]
        overlays.append(panoptic_files.panoptic_overlay(
            image[:panoptic.shape[0], :panoptic.shape[1]], panoptic, self.dataset))
      if self.options.save_predictions:
        name = np.asarray(sample["image_name"]).reshape(-1)[0]
        name = name.decode() if isinstance(name, bytes) else str(name)
        saved.append(self._save(name, panoptic, np.asarray(sample["image"])[0],
                                with_overlay=step < self.options.num_vis_samples))
      step += 1
      print(f"\r[eval] {step} images, {time.perf_counter() - start:.1f}s", end="",
            file=sys.stderr, flush=True)
    print(file=sys.stderr)

    results = pq.detailed_results()
    ap_stats = ap.result()
    results.update(
        miou=float(iou.result()), ap=dict(zip(coco_ap.STAT_NAMES, map(float, ap_stats))),
        num_images=step)
    if saved:
      panoptic_files.write_panoptic_json(self.save_dir, saved, self.dataset)
    return results

  def _save(self, name: str, panoptic: np.ndarray, image: np.ndarray, with_overlay: bool):
    annotation = panoptic_files.save_panoptic_png(self.save_dir, name, panoptic, self.dataset)
    if with_overlay:
      os.makedirs(os.path.join(self.save_dir, "vis"), exist_ok=True)
      overlay = panoptic_files.panoptic_overlay(image[:panoptic.shape[0], :panoptic.shape[1]],
                                                panoptic, self.dataset)
      Image.fromarray(overlay).save(os.path.join(self.save_dir, "vis", f"{name}.png"))
    return annotation


def summary_logs(results: dict) -> dict:
  """deeplab2's eval summary names (`evaluation/pq/PQ`, ...) from `Evaluator.evaluate` results."""
  logs = {f"evaluation/pq/{key.upper()}": results["all"][key]
          for key in ("pq", "sq", "rq", "tp", "fn", "fp")}
  logs["evaluation/iou/IoU"] = results["miou"]
  logs["evaluation/ap/AP_Mask"] = results["ap"]["AP"]
  return logs


def build_orbit_evaluator(options, model, strategy, model_dir: str, eval_dataset=None,
                          global_step=None, num_summary_images: int = 3):
  """An `orbit.AbstractEvaluator` for `train_lib`: runs `Evaluator` on the host (batch 1).

  `eval_dataset` (an iterable of eval samples) defaults to the eval split read by
  `kmax_tf.data.reader.build_dataset(options.eval_dataset_options, is_training=False)`.
  Predictions go to `<model_dir>/vis` unless `override_save_dir` is set. With `global_step`,
  each evaluation also writes the overlays of its first `num_summary_images` images
  (`images/panoptic_prediction_<i>`) to the default summary writer (Orbit's eval writer).
  """
  import orbit  # pylint: disable=import-outside-toplevel
  from kmax_tf.datasets import get_dataset  # pylint: disable=import-outside-toplevel
  del strategy  # Batch-1 evaluation runs on the host, as deeplab2 reduces PQ/AP there.
  if eval_dataset is None:
    from kmax_tf.data import reader  # pylint: disable=import-outside-toplevel
    eval_dataset = reader.build_dataset(options.eval_dataset_options, is_training=False)
  runner = Evaluator(model, get_dataset(options.eval_dataset_options.dataset),
                     options.evaluator_options, output_dir=os.path.join(model_dir, "vis"))

  class _OrbitEvaluator(orbit.AbstractEvaluator):

    def evaluate(self, num_steps):
      overlays = [] if global_step is not None else None
      results = runner.evaluate(eval_dataset, num_steps=int(num_steps), overlays=overlays)
      for index, overlay in enumerate((overlays or [])[:num_summary_images]):
        tf.summary.image(f"images/panoptic_prediction_{index}", overlay[None], step=global_step)
      return summary_logs(results)

  return _OrbitEvaluator()
