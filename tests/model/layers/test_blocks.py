"""Residual blocks start as their shortcut; shapes, strides and drop-path settings."""
import numpy as np
import pytest

from kmax_tf.model.layers import blocks


def _relu(x):
  return np.maximum(x, 0)


@pytest.mark.parametrize("block_type", ["bottleneck", "axial"])
def test_fresh_block_is_its_activated_shortcut(block_type):
  # conv3's BN gamma starts at 0, so at inference the residual branch adds exactly 0.
  x = np.random.default_rng(0).normal(size=(2, 5, 7, 32)).astype(np.float32)
  block = blocks.ResidualBlock((16, 8, 32), block_type=block_type, activation="relu")
  np.testing.assert_allclose(block(x, training=False).numpy(), _relu(x), atol=1e-6)
  assert block.shortcut is None


def test_strided_identity_shortcut_subsamples():
  x = np.random.default_rng(1).normal(size=(1, 9, 7, 16)).astype(np.float32)
  block = blocks.ResidualBlock((4, 4, 16), strides=2, activation="relu")
  np.testing.assert_allclose(block(x, training=False).numpy(), _relu(x)[:, ::2, ::2], atol=1e-6)


def test_projection_shortcut_when_width_changes():
  block = blocks.ResidualBlock((4, 4, 16), strides=2)
  y = block(np.zeros((1, 9, 9, 8), np.float32))
  assert y.shape == (1, 5, 5, 16)
  assert block.shortcut is not None and block.shortcut.strides == 2


def test_block_group_widths_and_dilation():
  group = blocks.BlockGroup(8, ("bottleneck", "axial"), dilation_rate=2,
                            drop_path_keep_probs=(1.0, 0.9), activation="gelu")
  y = group(np.zeros((2, 9, 9, 8), np.float32))
  assert y.shape == (2, 9, 9, 32)
  first, second = group.blocks
  assert first.filters_list == (8, 8, 32) and second.filters_list == (16, 8, 32)
  assert first.conv2_bn_act.dilation_rate == 2 and first.drop_path is None
  assert second.drop_path.keep_prob == 0.9


def test_config_round_trip_and_errors():
  group = blocks.BlockGroup(8, ("axial",), drop_path_keep_probs=(0.8,), name="g")
  assert blocks.BlockGroup.from_config(group.get_config()).get_config() == group.get_config()
  with pytest.raises(ValueError, match="keep probs"):
    blocks.BlockGroup(4, ("axial", "axial"), drop_path_keep_probs=(0.8,))
  with pytest.raises(ValueError, match="block_type"):
    blocks.ResidualBlock((4, 4, 16), block_type="global")
