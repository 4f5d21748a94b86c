"""Tests for kmax_tf.datasets: the facts other modules rely on."""
import numpy as np
import pytest

from kmax_tf import datasets


def test_coco_descriptor():
  coco = datasets.get_dataset("coco_panoptic")
  assert (coco.num_classes, coco.ignore_label, coco.panoptic_label_divisor) == (134, 0, 256)
  assert coco.thing_class_ids == tuple(range(1, 81))
  assert coco.stuff_class_ids == tuple(range(81, 134))
  assert coco.num_class_logits == 134  # Void id 0 has no logit; the last logit is void.
  assert len(coco.class_names) == 134 and coco.class_names[1] == "person"
  assert coco.colormap.shape == (134, 3) and coco.colormap.dtype == np.uint8
  # Official COCO category ids have gaps (1..200 for 133 classes) and stay increasing.
  assert coco.eval_category_ids[1] == 1 and coco.eval_category_ids[133] == 200
  assert list(coco.eval_category_ids[1:]) == sorted(coco.eval_category_ids[1:])
  assert (coco.num_mask_slots, coco.pixel_decoder_output_stride) == (128, 4)
  assert coco.use_auxiliary_semantic_decoder
  assert coco.transformer_decoder_drop_path_keep_prob == 0.8


def test_category_ids_in_panoptic_files():
  coco = datasets.get_dataset("coco_panoptic")
  # COCO has no category 12: semantic 11 is "fire hydrant" (11), semantic 12 "stop sign" (13).
  assert (coco.category_id(11), coco.category_id(12), coco.category_id(133)) == (11, 13, 200)
  # Cityscapes train ids -> label ids: road 7, person 24, bicycle 33.
  cityscapes = datasets.get_dataset("cityscapes_panoptic")
  assert [cityscapes.category_id(c) for c in (0, 11, 18)] == [7, 24, 33]
  # Without official ids a class is its own category.
  synthetic = datasets.get_dataset("synthetic_panoptic")
  assert synthetic.eval_category_ids is None
  assert [synthetic.category_id(c) for c in range(synthetic.num_classes)] == list(
      range(synthetic.num_classes))


def test_cityscapes_descriptor():
  city = datasets.get_dataset("cityscapes_panoptic")
  assert (city.num_classes, city.ignore_label, city.panoptic_label_divisor) == (19, 255, 1000)
  assert city.thing_class_ids == tuple(range(11, 19))
  assert city.stuff_class_ids == tuple(range(11))
  assert city.num_class_logits == 20  # Void (255) lies outside the ids: it gets its own logit.
  assert (city.num_mask_slots, city.pixel_decoder_output_stride) == (256, 2)
  assert not city.use_auxiliary_semantic_decoder
  assert city.eval_category_ids[0] == 7 and city.eval_category_ids[18] == 33


def test_ade20k_descriptor():
  ade = datasets.get_dataset("ade20k_panoptic")
  assert (ade.num_classes, ade.ignore_label, ade.panoptic_label_divisor) == (151, 0, 1000)
  assert len(ade.thing_class_ids) == 100
  assert len(ade.stuff_class_ids) == 50
  assert ade.num_class_logits == 151
  assert ade.transformer_decoder_drop_path_keep_prob == 1.0


def test_synthetic_descriptor_partitions_classes():
  synthetic = datasets.get_dataset("synthetic_panoptic")
  ids = {synthetic.ignore_label, *synthetic.thing_class_ids, *synthetic.stuff_class_ids}
  assert ids == set(range(synthetic.num_classes))
  assert not set(synthetic.thing_class_ids) & set(synthetic.stuff_class_ids)


def test_unknown_dataset_names_the_known_ones():
  with pytest.raises(ValueError, match="known datasets: coco_panoptic"):
    datasets.get_dataset("kitti")
