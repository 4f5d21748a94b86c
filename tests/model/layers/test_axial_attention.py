"""Axial attention against a numpy computation of the same formula, at several lengths."""
import layer_harness
import numpy as np
import pytest
import tensorflow as tf

from kmax_tf.model.layers import axial_attention
from kmax_tf.model.layers import norm

_NORM = norm.BatchNormFactory(momentum=0.9, epsilon=1e-5, synchronized=False)
EPS = 1e-3  # BN epsilon of the default factory; inference BN with fresh stats is x / sqrt(1+eps)


def _softmax(x, axis):
  x = x - x.max(axis=axis, keepdims=True)
  e = np.exp(x)
  return e / e.sum(axis=axis, keepdims=True)


def _numpy_axial(x, layer):
  """x [B, L, C] -> [B, L, Dv]; BN in inference mode with fresh moving stats and set gammas."""
  heads = layer.num_heads
  dk, dv = layer.total_key_depth // heads, layer.total_value_depth // heads
  scale = 1 / np.sqrt(1 + EPS)
  qkv = x @ layer.qkv_kernel.numpy() * scale
  q, k, v = np.split(qkv, [layer.total_key_depth, 2 * layer.total_key_depth], axis=-1)
  b, length = x.shape[:2]
  q, k = q.reshape(b, length, heads, dk), k.reshape(b, length, heads, dk)
  v = v.reshape(b, length, heads, dv)
  pos = np.arange(length)
  index = np.clip(pos[None, :] - pos[:, None] + 254, 0, 508)   # [query, key]
  rq, rk = layer.query_rpe.numpy()[index], layer.key_rpe.numpy()[index]
  rv = layer.value_rpe.numpy()[index]
  gamma = layer.batch_norm_similarity.gamma.numpy().reshape(3, heads)
  sims = [np.einsum("blhd,bmhd->bhlm", q, k), np.einsum("blhd,lmd->bhlm", q, rq),
          np.einsum("bmhd,lmd->bhlm", k, rk)]
  logits = sum(s * scale * g[None, :, None, None] for s, g in zip(sims, gamma))
  w = _softmax(logits, axis=-1)
  out = (np.einsum("bhlm,bmhd->blhd", w, v) + np.einsum("bhlm,lmd->blhd", w, rv)) * scale
  return out.reshape(b, length, heads * dv)


@pytest.mark.parametrize("length", [5, 12])
def test_matches_numpy(length):
  rng = np.random.default_rng(length)
  layer = axial_attention.AxialAttention(8, 16, num_heads=2)
  x = rng.normal(size=(3, length, 6)).astype(np.float32)
  layer(x)
  layer.batch_norm_similarity.gamma.assign(rng.uniform(0.5, 1.5, size=6).astype(np.float32))
  y = layer(x, training=False).numpy()
  np.testing.assert_allclose(y, _numpy_axial(x.astype(np.float64), layer), rtol=2e-4, atol=2e-4)


def test_relative_index_is_clipped_beyond_max_span():
  index = np.asarray(axial_attention.relative_distance_index(300))
  assert index.shape == (300, 300)
  assert index[0, 0] == 254 and index[0, 10] == 264 and index[10, 0] == 244
  assert index.min() == 0 and index.max() == 508
  assert index[299, 0] == 0 and index[0, 299] == 508


def test_weights_do_not_depend_on_length():
  layer = axial_attention.AxialAttention(8, 16, num_heads=2)
  first = layer(np.zeros((1, 7, 4), np.float32))
  second = layer(np.zeros((1, 140, 4), np.float32))  # longer than deeplab2's 129 limit
  assert first.shape == (1, 7, 16) and second.shape == (1, 140, 16)
  # qkv kernel, 3 RPE tables, BN(qkv) 2*32, BN(similarity) 2*3*2, BN(retrieved) 2*2*16.
  expected = 4 * 32 + 509 * (4 + 4 + 8) + 64 + 12 + 64
  assert sum(int(np.prod(w.shape)) for w in layer.trainable_weights) == expected


@pytest.mark.parametrize("height,width,strides,out", [(9, 5, 1, (9, 5)), (9, 5, 2, (5, 3))])
def test_2d_shapes(height, width, strides, out):
  layer = axial_attention.AxialAttention2D(8, strides=strides, num_heads=2)
  y = layer(np.random.default_rng(0).normal(size=(2, height, width, 6)).astype(np.float32))
  assert y.shape == (2,) + out + (16,)


def test_2d_is_height_then_width_attention():
  rng = np.random.default_rng(4)
  layer = axial_attention.AxialAttention2D(8, num_heads=2)
  x = rng.normal(size=(1, 4, 3, 6)).astype(np.float32)
  y = layer(x, training=False).numpy()
  columns = np.transpose(x, (0, 2, 1, 3)).reshape(3, 4, 6)
  h = _numpy_axial(columns.astype(np.float64), layer.height_axis)          # [W, H, 16]
  rows = np.transpose(h.reshape(1, 3, 4, 16), (0, 2, 1, 3)).reshape(4, 3, 16)
  expected = _numpy_axial(rows, layer.width_axis).reshape(1, 4, 3, 16)
  np.testing.assert_allclose(y, expected, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("cls,kwargs,shape", [
    (axial_attention.AxialAttention, dict(total_key_depth=8, total_value_depth=4, num_heads=2,
                                          norm_layer=_NORM), (2, 5, 6)),
    (axial_attention.AxialAttention2D, dict(filters=4, strides=2, key_expansion=2.0,
                                            value_expansion=1.0, num_heads=2, norm_layer=_NORM),
     (2, 5, 4, 6)),
])
def test_layer_contract(cls, kwargs, shape):
  x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
  layer_harness.run_layer_test(cls, kwargs, (x,))


def test_bad_depth():
  with pytest.raises(ValueError, match="divisible"):
    axial_attention.AxialAttention(6, 16, num_heads=4)


def test_flat_matmul_rounds_like_deeplab2_einsum():
  """deeplab2 computes the qkv projection with `tf.einsum("nlc,cd->nld")`: one flattened matmul.
  `flat_matmul` must give those float32 bits exactly (keras.ops.einsum, a matmul per sequence,
  differs by ~5e-6 at this shape), since the kMaX decoder amplifies any rounding difference."""
  rng = np.random.default_rng(0)
  x = tf.constant(rng.standard_normal((3, 7, 64)).astype(np.float32))
  kernel = tf.constant(rng.standard_normal((64, 48)).astype(np.float32))
  reference = tf.einsum("nlc,cd->nld", x, kernel).numpy()
  np.testing.assert_array_equal(axial_attention.flat_matmul(x, kernel).numpy(),
                                reference.reshape(21, 48))
