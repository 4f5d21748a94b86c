"""Batch-norm folding: the folded micro model computes the unfolded one's outputs, and grappler
fuses its convolutions with their bias and activation."""
import collections

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow.python.grappler import tf_optimizer  # pylint: disable=no-name-in-module
from tensorflow.python.util import _pywrap_util_port  # pylint: disable=no-name-in-module

from kmax_tf import config, configs
from kmax_tf.model import builder, fold_batch_norm
from kmax_tf.model.layers import axial_attention, blocks, conv

_CONFIG = configs.config_path("synthetic/kmax_micro.textproto")


@pytest.fixture(scope="module")
def models():
  """(unfolded, folded) micro models with the same random weights and BN statistics."""
  options = config.load_config(_CONFIG, {"DATA_DIR": "/unused", "EXPERIMENT_NAME": "fold"})
  images = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, 65, 65, 3)), tf.float32)
  pair = []
  for _ in range(2):
    model = builder.build_model(options)
    model(images, training=False)
    pair.append(model)
  _random_statistics(pair[0].variables, np.random.default_rng(1), shift_std=0.1)
  for variable, twin in zip(pair[0].variables, pair[1].variables):
    assert variable.shape == twin.shape
    twin.assign(variable)
  folded = fold_batch_norm.fold_batch_norms(pair[1])
  return pair[0], pair[1], folded, images


def test_folded_model_agrees(models):
  unfolded, folded, count, images = models
  layers = list(folded._flatten_layers())  # pylint: disable=protected-access
  expected = sum(1 for layer in layers if isinstance(layer, (conv.Conv2DSame, conv.Conv1x1))
                 and layer.batch_norm is not None)
  expected += sum(1 for layer in layers if isinstance(layer, conv.SeparableConv2DSame))
  # An axial attention layer folds its qkv, similarity and retrieved-output batch norms.
  axial = [layer for layer in layers if isinstance(layer, axial_attention.AxialAttention)]
  assert axial and all(isinstance(layer, fold_batch_norm.FoldedAxialAttention) for layer in axial)
  expected += 3 * len(axial)
  # The batch norm before each ReLU block group's output stays (see _relu_group_outputs).
  kept = _relu_group_outputs(folded)
  assert kept and all(type(layer.batch_norm) is keras.layers.BatchNormalization for layer in kept)
  assert count == expected - len(kept) > 0
  # The encoder and pixel decoder hold most folded layers; their outputs agree to float32
  # rounding. The transformer decoder's k-means argmax amplifies rounding (random batch-norm
  # statistics do not normalise, see benchmarks/vs_deeplab2.py): one flipped assignment moves a
  # cluster center, so the mask and class logits are not compared here (tests/test_export.py
  # compares the folded export's with the unfolded model's on milder statistics).
  reference = unfolded.pixel_decoder(unfolded.encoder(images / 127.5 - 1.0, training=False),
                                     training=False)
  outputs = folded.pixel_decoder(folded.encoder(images / 127.5 - 1.0, training=False),
                                 training=False)
  for key, value in reference.items():
    scale = float(np.max(np.abs(value)))
    np.testing.assert_allclose(outputs[key], value, rtol=0, atol=1e-5 * scale, err_msg=key)
  reference = unfolded(images, training=False)
  outputs = folded(images, training=False)
  for key in ("pixel_space_normalized_feature", "semantic_logits"):
    scale = float(np.max(np.abs(reference[key])))
    np.testing.assert_allclose(outputs[key], reference[key], rtol=0, atol=1e-5 * scale,
                               err_msg=key)


def _relu_group_outputs(model):
  """The last convolution of every ReLU block group (whose residual sum is the group's output)."""
  return [layer.blocks[-1].conv3_bn for layer in model._flatten_layers()  # pylint: disable=protected-access
          if isinstance(layer, blocks.BlockGroup) and layer.activation == "relu"]


def _random_statistics(variables, rng, shift_std):
  """Random batch-norm statistics, gammas and betas (zero shifts and unit scales would hide a
  misplaced one): scales uniform in [0.5, 1.5], means and betas normal with `shift_std`."""
  for variable in variables:
    if "moving_variance" in variable.path or "gamma" in variable.path:
      variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    elif "moving_mean" in variable.path or "beta" in variable.path:
      variable.assign(rng.normal(0.0, shift_std, variable.shape).astype("float32"))


@pytest.mark.parametrize("length", [1, 7, 20])
def test_folded_axial_attention_agrees(length):
  """The folded layer sums scaled products where the unfolded one normalises concatenated maps:
  same outputs up to float32 rounding, including the similarity shifts it drops (the softmax
  over keys removes a constant per head)."""
  rng = np.random.default_rng(length)
  layers = [axial_attention.AxialAttention(16, 24, num_heads=4) for _ in range(2)]
  inputs = tf.constant(rng.normal(size=(3, length, 12)), tf.float32)
  for layer in layers:
    layer(inputs, training=False)
  _random_statistics(layers[0].weights, rng, shift_std=0.5)
  layers[1].set_weights(layers[0].get_weights())
  assert fold_batch_norm.fold_batch_norms(layers[1]) == 3
  assert isinstance(layers[1], fold_batch_norm.FoldedAxialAttention)
  reference = layers[0](inputs, training=False).numpy()
  np.testing.assert_allclose(layers[1](inputs, training=False), reference, rtol=0,
                             atol=2e-6 * np.abs(reference).max())
  with pytest.raises(ValueError, match="folded attention layer is for inference only"):
    layers[1](inputs, training=True)


def test_folding_twice_changes_nothing(models):
  _, folded, _, images = models
  before = folded(images, training=False)
  assert fold_batch_norm.fold_batch_norms(folded) == 0
  after = folded(images, training=False)
  for key, value in before.items():
    np.testing.assert_array_equal(after[key], value, err_msg=key)


def test_folded_batch_norm_refuses_training(models):
  _, folded, _, images = models
  with pytest.raises(ValueError, match="folded batch norm is for inference only"):
    folded(images, training=True)


def _optimized_op_counts(model):
  """Op types of the graph grappler makes of the model's inference function on the CPU."""
  function = tf.function(lambda x: model(x, training=False)).get_concrete_function(
      tf.TensorSpec([1, None, None, 3], tf.float32))
  meta_graph = tf.compat.v1.train.export_meta_graph(graph_def=function.graph.as_graph_def(),
                                                    graph=function.graph)
  for node in meta_graph.graph_def.node:  # the remapper fuses only ops placed on a CPU
    node.device = "/device:CPU:0"
  meta_graph.collection_def["train_op"].node_list.value.extend(
      [tensor.name for tensor in function.outputs])
  graph = tf_optimizer.OptimizeGraph(config_pb2.ConfigProto(), meta_graph)
  return collections.Counter(node.op for node in graph.node)


def test_grappler_fuses_folded_convolutions(models):
  unfolded, folded, _, _ = models
  before, after = _optimized_op_counts(unfolded), _optimized_op_counts(folded)
  # Every folded undilated Conv2DSame becomes one _FusedConv2D (dilated ones are a sum of 1x1
  # convolutions or sit between space-to-batch ops); unfolded, only those with a bias fuse.
  folded_convs = sum(
      1 for layer in folded._flatten_layers()  # pylint: disable=protected-access
      if isinstance(layer, conv.Conv2DSame) and
      isinstance(layer.batch_norm, fold_batch_norm.FoldedBatchNorm) and layer.dilation_rate == 1)
  assert after["_FusedConv2D"] - before["_FusedConv2D"] == folded_convs
  # Every folded 1x1 projection and axial attention's qkv projection becomes one _FusedMatMul
  # (MatMul + bias): both multiply the flattened `[B*L, C]` activations.
  folded_matmuls = sum(
      1 for layer in folded._flatten_layers()  # pylint: disable=protected-access
      if isinstance(layer, axial_attention.AxialAttention) or (
          isinstance(layer, conv.Conv1x1) and
          isinstance(layer.batch_norm, fold_batch_norm.FoldedBatchNorm)))
  assert after["_FusedMatMul"] - before["_FusedMatMul"] == folded_matmuls > 0
  # Depthwise convolution + bias fuses only with oneDNN on; the folded batch norms' rsqrt is gone
  # either way.
  assert after["Rsqrt"] < before["Rsqrt"]


@pytest.mark.skipif(not _pywrap_util_port.IsMklEnabled(), reason="oneDNN is off in this process")
def test_onednn_remapper_optimizes_the_folded_graph(models, capfd):
  """With oneDNN, grappler's remapper fuses Conv2D + BiasAdd + Add + Relu without checking that
  the Add has no other reader; folding the batch norm before a backbone endpoint (a residual sum
  the pixel decoder's layer norm also reads) made it fail on the whole graph, which then ran
  without any of its fusions. The failure is only logged, so the log is what is checked."""
  _, folded, _, images = models
  capfd.readouterr()
  # A fixed input size: the fusion needs the sum's operands to have equal known shapes.
  tf.function(lambda x: folded(x, training=False))(images)
  assert "remapper failed" not in capfd.readouterr().err
