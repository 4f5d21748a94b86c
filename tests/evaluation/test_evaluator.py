"""Evaluator end to end with a fake model whose predictions are known, so every metric is too.

Raw image 30x27 (padded by the model to 33x33). The fake model reads the slot owning each pixel
from image channel 0 and emits one-hot mask logits (x20) at the padded size; the evaluator does
not depend on the logits' stride, so stride 1 keeps the predicted masks exact. Slots:
  0 -> stuff class 1 everywhere else, 1 and 2 -> thing class 4 (two instances, correct),
  3 -> thing class 6 where the ground truth is a class-5 instance; slots 4, 5 -> void class.
Ground truth also has a void patch (rows 0-1, cols 20-26) that slot 0 covers.
"""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from kmax_tf import geometry, panoptic_files
from kmax_tf.datasets import get_dataset
from kmax_tf.evaluation import evaluator, pq_files
from kmax_tf.protos import evaluator_pb2

DATASET = get_dataset("synthetic_panoptic")  # class index order: things 4,5,6, stuff 1,2,3, void
DIVISOR = DATASET.panoptic_label_divisor
SLOT_CLASS_INDEX = [3, 0, 0, 2, 6, 6]  # class-logit index per slot (6 = void)


class FakeKMaX(keras.Model):

  def call(self, images, training=False, semantic_logits=True):
    # The evaluator asks for no semantic logits: this fake has none to give.
    assert not semantic_logits
    height, width = images.shape[1], images.shape[2]
    pad_h = geometry.padded_length(height, 32) - height
    pad_w = geometry.padded_length(width, 32) - width
    slots = tf.pad(tf.cast(images[..., 0], tf.int32), [[0, 0], [0, pad_h], [0, pad_w]])
    class_logits = tf.one_hot(SLOT_CLASS_INDEX, 7) * 20.0
    return {"pixel_space_mask_logits": tf.one_hot(slots, 6) * 20.0,
            "transformer_class_logits": tf.tile(class_logits[None], [tf.shape(images)[0], 1, 1])}


def make_sample():
  slots = np.zeros((30, 27), np.int32)
  slots[2:10, 2:10] = 1
  slots[12:20, 12:22] = 2
  slots[22:28, 2:11] = 3
  panoptic = np.full((30, 27), 1 * DIVISOR)
  panoptic[slots == 1] = 4 * DIVISOR + 1
  panoptic[slots == 2] = 4 * DIVISOR + 2
  panoptic[slots == 3] = 5 * DIVISOR + 1
  panoptic[0:2, 20:27] = 0
  image = np.repeat(slots[..., None], 3, axis=-1).astype(np.float32)
  return {"image": image[None], "size_raw": np.array([[30, 27]]),
          "panoptic_raw": panoptic[None], "semantic_raw": (panoptic // DIVISOR)[None],
          "is_crowd_raw": np.zeros((1, 30, 27), bool), "image_name": np.array([b"img0"])}


def make_options(**kwargs):
  options = evaluator_pb2.EvaluatorOptions(
      transformer_post_processing="maskwise", thing_area_limit=40, stuff_area_limit=40,
      **kwargs)
  options.maskwise_postprocessing.transformer_class_confidence_threshold_stuff = 0.5
  return options


@pytest.mark.parametrize("use_tf_function", [True, False])
def test_metrics_are_known_exactly(use_tf_function):
  runner = evaluator.Evaluator(FakeKMaX(), DATASET, make_options(use_tf_function=use_tf_function))
  results = runner.evaluate([make_sample(), make_sample()])
  # PQ per class: 1 stuff TP (IoU 1: the void patch leaves the union), 4 two TPs (IoU 1),
  # 5 one FN, 6 one FP -> PQ = SQ = RQ = (1 + 1 + 0 + 0) / 4.
  assert results["all"]["pq"] == pytest.approx(0.5)
  assert results["all"]["sq"] == pytest.approx(0.5) and results["all"]["rq"] == pytest.approx(0.5)
  assert results["things"]["pq"] == pytest.approx(1 / 3) and results["stuff"]["pq"] == 1.0
  assert results["per_class"][4]["tp"] == 4.0 and results["per_class"][6]["fp"] == 2.0
  # mIoU over classes 1, 4, 5, 6 (void ignored): (1 + 1 + 0 + 0) / 4.
  assert results["miou"] == pytest.approx(0.5)
  # AP: class 4 perfect (1.0), class 5 has no detection (0.0), class 6 has no GT (excluded).
  assert results["ap"]["AP"] == pytest.approx(0.5)
  assert results["num_images"] == 2 and results["crowd_convention"] == "official"


def test_saved_predictions_are_valid_coco_panoptic(tmp_path):
  options = make_options(save_predictions=True, num_vis_samples=1)
  runner = evaluator.Evaluator(FakeKMaX(), DATASET, options, output_dir=str(tmp_path))
  sample = make_sample()
  runner.evaluate([sample])
  with open(tmp_path / "panoptic.json") as f:
    predictions = json.load(f)
  assert [a["file_name"] for a in predictions["annotations"]] == ["img0.png"]
  assert os.path.exists(tmp_path / "vis" / "img0.png")
  # Score the saved files with pq_files against the ground truth written the same way.
  os.makedirs(tmp_path / "gt")
  panoptic = sample["panoptic_raw"][0]
  ids = np.where(panoptic == 0, 0, panoptic + 1)
  Image.fromarray(panoptic_files.ids_to_rgb(ids)).save(tmp_path / "gt" / "img0.png")
  segments = [{"id": int(i), "category_id": int((i - 1) // DIVISOR), "iscrowd": 0,
               "area": int((ids == i).sum())} for i in np.unique(ids) if i]
  with open(tmp_path / "gt.json", "w") as f:
    json.dump({"annotations": [{"image_id": "img0", "file_name": "img0.png",
                                "segments_info": segments}],
               "categories": predictions["categories"]}, f)
  results = pq_files.pq_compute(str(tmp_path / "gt.json"), str(tmp_path / "panoptic.json"),
                                str(tmp_path / "gt"), str(tmp_path / "panoptic"))
  assert results["All"]["pq"] == pytest.approx(0.5) and results["All"]["n"] == 4


def test_batch_size_must_be_one():
  runner = evaluator.Evaluator(FakeKMaX(), DATASET, make_options(use_tf_function=False))
  sample = make_sample()
  sample["image"] = np.concatenate([sample["image"]] * 2)
  with pytest.raises(ValueError, match="batch size 1"):
    runner.evaluate([sample])


def test_orbit_evaluator_logs_deeplab2_names(tmp_path):
  from kmax_tf.protos import config_pb2
  options = config_pb2.ExperimentOptions()
  options.eval_dataset_options.dataset = "synthetic_panoptic"
  options.evaluator_options.CopyFrom(make_options())
  orbit_evaluator = evaluator.build_orbit_evaluator(
      options, FakeKMaX(), tf.distribute.get_strategy(), str(tmp_path),
      eval_dataset=[make_sample()])
  logs = orbit_evaluator.evaluate(tf.constant(-1))
  assert logs["evaluation/pq/PQ"] == pytest.approx(0.5)
  assert logs["evaluation/iou/IoU"] == pytest.approx(0.5)
  assert logs["evaluation/ap/AP_Mask"] == pytest.approx(0.5)
