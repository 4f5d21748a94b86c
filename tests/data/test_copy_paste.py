"""Panoptic copy-paste: ids stay unique, options are honoured, image follows the label."""
import numpy as np
import pytest
import tensorflow as tf

from kmax_tf.data import copy_paste

D = 256
THINGS, STUFF = (4, 5), (1, 2, 3)
PAD = 0 * D + 1


def _pair(seed):
  rng = np.random.default_rng(seed)
  def label():
    lab = rng.choice([1 * D, 2 * D, 0], size=(16, 16)).astype(np.int32)
    for _ in range(4):
      y, x = rng.integers(0, 12, 2)
      lab[y:y + 4, x:x + 4] = rng.choice(THINGS) * D + rng.integers(1, 6)
    return lab
  target, source = label(), label()
  source[:, 12:] = PAD  # padded area of the pasted sample
  return target, source


@pytest.mark.parametrize("seed", range(6))
def test_pasted_ids_are_unique_and_options_hold(seed):
  target, source = _pair(seed)
  image = np.zeros((16, 16, 3), np.float32)
  paste_image = np.ones((16, 16, 3), np.float32)
  out_image, out_label = copy_paste.panoptic_copy_paste(
      tf.constant(image), tf.constant(target[..., None]), tf.constant(paste_image),
      tf.constant(source[..., None]), tf.constant([seed, 7], tf.int64), divisor=D,
      ignore_label=0, padding_value=PAD, thing_ids=THINGS, stuff_ids=STUFF,
      thing_option="all", stuff_option="random", void_option="none")
  out_label, out_image = out_label.numpy()[..., 0], out_image.numpy()
  pasted = out_image[..., 0] == 1
  # Image and label agree on where pasting happened.
  expected_pasted_label = np.where(
      source % D == 0, source, (source // D) * D + (D - 1 - source % D))
  np.testing.assert_array_equal(out_label[pasted], expected_pasted_label[pasted])
  np.testing.assert_array_equal(out_label[~pasted], target[~pasted])
  # Never padding or void; every thing pixel of the source ("all").
  assert not pasted[source == PAD].any() and not pasted[source == 0].any()
  assert pasted[np.isin(source // D, THINGS) & (source % D > 0)].all()
  # Instance ids stay unique: each thing id of the output comes from one source only.
  things = np.isin(out_label // D, THINGS) & (out_label % D > 0)
  for pid in np.unique(out_label[things]):
    assert len(np.unique(pasted[out_label == pid])) == 1


def test_void_option_all_and_stuff_none():
  target, source = _pair(0)
  _, out = copy_paste.panoptic_copy_paste(
      tf.zeros((16, 16, 3)), tf.constant(target[..., None]), tf.ones((16, 16, 3)),
      tf.constant(source[..., None]), tf.constant([1, 2], tf.int64), divisor=D, ignore_label=0,
      padding_value=PAD, thing_ids=THINGS, stuff_ids=STUFF, thing_option="none",
      stuff_option="none", void_option="all")
  out = out.numpy()[..., 0]
  np.testing.assert_array_equal(out[source == 0], 0)
  keep = source != 0
  np.testing.assert_array_equal(out[keep], target[keep])


def test_too_many_instances_is_an_error():
  target, source = _pair(1)
  source[0, 0] = 4 * D + D // 2
  with pytest.raises(tf.errors.InvalidArgumentError, match="divisor // 2"):
    copy_paste.panoptic_copy_paste(
        tf.zeros((16, 16, 3)), tf.constant(target[..., None]), tf.ones((16, 16, 3)),
        tf.constant(source[..., None]), tf.constant([1, 2], tf.int64), divisor=D,
        ignore_label=0, padding_value=PAD, thing_ids=THINGS, stuff_ids=STUFF)
