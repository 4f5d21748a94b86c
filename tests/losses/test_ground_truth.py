"""build_mask_ground_truth on a hand-built 5x5 label subsampled to 3x3."""
import numpy as np

from kmax_tf.losses.ground_truth import build_mask_ground_truth

# Synthetic classes: void 0, stuff 1-3, things 4-6; max_thing_id 3 -> K = 3 + 3 masks.
THINGS, STUFF = (4, 5, 6), (1, 2, 3)


def test_masks_classes_validity_and_areas():
  semantic = np.array([[1, 1, 4, 4, 5],
                       [1, 1, 4, 6, 5],
                       [0, 0, 5, 5, 5],
                       [2, 9, 5, 5, 5],
                       [2, 2, 4, 4, 4]], np.int32)[None]
  thing_id = np.full_like(semantic, -1)
  thing_id[0][semantic[0] == 5] = 0
  thing_id[0, 1, 3] = 2  # a class-6 instance only on an odd pixel: vanishes at stride 2
  # class-4 pixels keep thing id -1: crowd
  thing_class = np.array([[5, -1, 6]], np.float32)
  gt = build_mask_ground_truth(semantic, thing_id, thing_class, (3, 3), thing_class_ids=THINGS,
                               stuff_class_ids=STUFF, ignore_label=0)
  # Pixels kept: rows/cols 0, 2, 4 -> semantic [[1,4,5],[0,5,5],[2,4,4]].
  np.testing.assert_array_equal(gt.pixel_mask_id.numpy().reshape(3, 3),
                                [[3, -1, 0], [-1, 0, 0], [4, -1, -1]])
  np.testing.assert_array_equal(gt.pixel_non_void.numpy().reshape(3, 3),
                                [[1, 1, 1], [0, 1, 1], [1, 1, 1]])
  np.testing.assert_array_equal(gt.mask_area, [[3, 0, 0, 1, 1, 0]])
  # Mask 2 (class 6) has no pixel left; mask 1 has no class; stuff 3 is absent.
  np.testing.assert_array_equal(gt.mask_valid, [[1, 0, 0, 1, 1, 0]])
  # Class order: things 4, 5, 6 then stuff 1, 2, 3.
  np.testing.assert_array_equal(np.argmax(gt.mask_class_one_hot[0], -1)[[0, 3, 4]], [1, 3, 4])
  np.testing.assert_array_equal(gt.mask_class_one_hot.numpy()[0, [1, 2, 5]].sum(), 0)
  np.testing.assert_allclose(gt.inverse_pixel_mask_area.numpy().reshape(3, 3),
                             9 / np.array([[1, 1, 3], [1, 3, 3], [1, 1, 1]]))
  np.testing.assert_array_equal(gt.pixel_mask_one_hot.numpy().sum(-1).reshape(3, 3),
                                gt.pixel_mask_id.numpy().reshape(3, 3) >= 0)


def test_ignore_label_outside_class_range():
  """Cityscapes-style void 255 is outside the class table and joins no mask."""
  semantic = np.array([[[255, 0], [12, 3]]], np.int32)
  thing_id = np.array([[[-1, -1], [0, -1]]], np.int32)
  gt = build_mask_ground_truth(semantic, thing_id, np.array([[12, -1]], np.float32), (2, 2),
                               thing_class_ids=(11, 12), stuff_class_ids=(0, 3),
                               ignore_label=255)
  np.testing.assert_array_equal(gt.pixel_mask_id, [[-1, 2, 0, 3]])
  np.testing.assert_array_equal(gt.pixel_non_void, [[0, 1, 1, 1]])
  np.testing.assert_array_equal(gt.mask_valid, [[1, 0, 1, 1]])
