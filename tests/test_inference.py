"""kmax_tf.inference.Predictor: post-processing at the padded input size, then crop (and
resize), the same with static sizes (eager) and dynamic ones (the SavedModel's trace)."""
import numpy as np
import pytest
import tensorflow as tf

from kmax_tf import geometry, inference, postprocess
from kmax_tf.datasets import get_dataset
from kmax_tf.protos import evaluator_pb2

DATASET = get_dataset("synthetic_panoptic")  # 3 things + 3 stuff + void = 7 class logits
KEYS = ("panoptic_pred", "semantic_pred", "instance_pred", "semantic_scores", "instance_scores")


class FakeKMaX:
  """Random logits, a function of the input size only, at stride 4 of the 32k + 1 padded input
  (the kMaX output contract)."""

  def __call__(self, images, training=False, semantic_logits=True):
    assert not training and not semantic_logits
    shape = tf.shape(images)
    low = (geometry.padded_length(shape[1:3]) - 1) // 4 + 1
    mask_logits = 4.0 * tf.random.stateless_normal(
        tf.concat([shape[:1], low, [6]], 0), seed=[1, 2])
    class_logits = 4.0 * tf.random.stateless_normal(tf.stack([shape[0], 6, 7]), seed=[3, 4])
    return {"pixel_space_mask_logits": mask_logits, "transformer_class_logits": class_logits}


def make_options():
  options = evaluator_pb2.EvaluatorOptions(transformer_post_processing="maskwise")
  options.maskwise_postprocessing.transformer_class_confidence_threshold_thing = 0.2
  options.maskwise_postprocessing.transformer_class_confidence_threshold_stuff = 0.2
  return options


def make_predictor():
  return inference.Predictor(FakeKMaX(), DATASET, make_options())


@pytest.mark.parametrize("height,width", [(1, 1), (30, 27), (33, 70)])
def test_predictions_are_the_padded_post_processing_cropped(height, width):
  predictor = make_predictor()
  images = tf.zeros([2, height, width, 3])
  predictions = predictor(images)
  outputs = FakeKMaX()(images, semantic_logits=False)
  padded = (-(-(height - 1) // 32) * 32 + 1, -(-(width - 1) // 32) * 32 + 1)
  full = postprocess.PostProcessor.from_options(make_options(), DATASET, padded)(
      outputs["pixel_space_mask_logits"], outputs["transformer_class_logits"])
  for key in KEYS:
    np.testing.assert_array_equal(predictions[key], full[key][:, :height, :width], err_msg=key)
  assert set(predictions) == set(KEYS) | {"pixel_space_mask_logits", "transformer_class_logits"}
  # The SavedModel's trace: sizes unknown until run time.
  traced = tf.function(predictor, input_signature=[tf.TensorSpec([None, None, None, 3])])
  dynamic = traced(images)
  for key in KEYS:
    np.testing.assert_array_equal(dynamic[key], predictions[key], err_msg=key)


def test_valid_region_is_cropped_and_resized_to_the_output_size():
  predictor = make_predictor()
  images = tf.zeros([1, 40, 50, 3])
  whole = predictor(images)
  resized = predictor(images, valid_size=tf.constant([9, 12]), output_size=tf.constant([17, 4]))
  # Nearest neighbour with aligned corners: output pixel i reads input pixel
  # round(i * (9 - 1) / (17 - 1)) = round(i / 2) (halves round up) and columns 0, 4, 7, 11.
  rows = np.floor(np.arange(17) / 2 + 0.5).astype(int)
  cols = [0, 4, 7, 11]
  for key in KEYS:
    np.testing.assert_array_equal(resized[key], np.asarray(whole[key])[:, rows][:, :, cols],
                                  err_msg=key)
