"""Residual blocks start as their shortcut; shapes, strides and drop-path settings."""
import layer_harness
import numpy as np
import pytest

from kmax_tf.model.layers import blocks
from kmax_tf.model.layers import norm

_NORM = norm.BatchNormFactory(momentum=0.9, epsilon=1e-5, synchronized=False)


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


@pytest.mark.parametrize("cls,kwargs", [
    (blocks.ResidualBlock, dict(filters_list=(8, 8, 16), strides=2, dilation_rate=2,
                                block_type="axial", activation="gelu", drop_path_keep_prob=0.8,
                                norm_layer=_NORM)),
    (blocks.BlockGroup, dict(filters=8, block_types=("axial", "bottleneck"), strides=2,
                             dilation_rate=2, drop_path_keep_probs=(0.8, 0.7), activation="gelu",
                             norm_layer=_NORM)),
])
def test_layer_contract(cls, kwargs):
  x = np.random.default_rng(2).normal(size=(2, 9, 7, 8)).astype(np.float32)
  layer_harness.run_layer_test(cls, kwargs, (x,))


def test_errors():
  with pytest.raises(ValueError, match="keep probs"):
    blocks.BlockGroup(4, ("axial", "axial"), drop_path_keep_probs=(0.8,))
  with pytest.raises(ValueError, match="block_type"):
    blocks.ResidualBlock((4, 4, 16), block_type="global")
