"""deeplab2 checkpoint conversion, on checkpoints with deeplab2's exact variable names and shapes.

`tests/data/deeplab2_variables/*.json` list (key, shape) of checkpoints written by deeplab2 itself
(see the README there). Each test writes a checkpoint with those keys and shapes and random values
(`tests/helpers/deeplab2_checkpoints.py`, no deeplab2 needed), converts it, and checks the
kmax-tf model restored from the converted checkpoint against an oracle of its own, not against
the converter's mapping: the random source tensors are all different, so the variable each one
landed in is read off the model (`_landed`); every tensor must land in a variable of its own, and
those of the hand-written tables below exactly where deeplab2's layer names say. Converted layers
are also run against numpy computations from the deeplab2-side arrays.
"""
import hashlib
import types

import numpy as np
import pytest
import tensorflow as tf

from kmax_tf import cli
from kmax_tf import config
from kmax_tf import configs
from kmax_tf import convert_deeplab2
from kmax_tf import weight_io
from kmax_tf.model import builder
from kmax_tf.model.backbones import axial_resnet
from kmax_tf.model.backbones import convnext
# The trainer's initialisation from deeplab2 checkpoints is tested here, with the models and
# checkpoints of the conversion tests.
from kmax_tf.trainer import checkpoints

import deeplab2_checkpoints  # tests/helpers

_MODELS = {}
_VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"

# deeplab2 key (without _VALUE) -> kmax-tf variable key, written from deeplab2's attribute names
# and kmax-tf's layer names, for every kind of layer. Backbones, relative to the backbone:
_RESNET50 = {  # conv + BN: stem, bottleneck convs, projection shortcut
    "_stem/_conv/kernel": "stem/conv/kernel",
    "_stem/_batch_norm/gamma": "stem/batch_norm/gamma",
    "_stem/_batch_norm/beta": "stem/batch_norm/beta",
    "_stem/_batch_norm/moving_mean": "stem/batch_norm/moving_mean",
    "_stem/_batch_norm/moving_variance": "stem/batch_norm/moving_variance",
    "_stage2/_block1/_conv1_bn_act/_conv/kernel": "stage2/block1/conv1_bn_act/conv/kernel",
    "_stage2/_block1/_conv2_bn_act/_conv/kernel": "stage2/block1/conv2_bn_act/conv/kernel",
    "_stage2/_block1/_conv3_bn/_batch_norm/gamma": "stage2/block1/conv3_bn/batch_norm/gamma",
    "_stage2/_block1/_shortcut/_conv/kernel": "stage2/block1/shortcut/conv/kernel",
    "_stage2/_block1/_shortcut/_batch_norm/beta": "stage2/block1/shortcut/batch_norm/beta",
    "_stage3/_block2/_conv2_bn_act/_conv/kernel": "stage3/block2/conv2_bn_act/conv/kernel",
    "_stage3/_block3/_conv2_bn_act/_conv/kernel": "stage3/block3/conv2_bn_act/conv/kernel",
    "_stage5/_block3/_conv3_bn/_batch_norm/moving_variance":
        "stage5/block3/conv3_bn/batch_norm/moving_variance",
}
_AXIAL_RESNET50 = {  # Inception stem, axial blocks from stride 16
    "_stem/_conv1_bn_act/_conv/kernel": "stem/conv1_bn_act/conv/kernel",
    "_stem/_conv2_bn_act/_batch_norm/gamma": "stem/conv2_bn_act/batch_norm/gamma",
    "_stem/_conv3_bn/_batch_norm/gamma": "stem/conv3_bn/batch_norm/gamma",
    "_stage4/_block1/_conv2_bn_act/_conv/kernel": "stage4/block1/conv2_bn_act/conv/kernel",
    "_stage4/_block2/_attention/_height_axis/qkv_kernel":
        "stage4/block2/attention/height_axis/qkv_kernel",
    "_stage4/_block2/_attention/_width_axis/qkv_kernel":
        "stage4/block2/attention/width_axis/qkv_kernel",
    "_stage4/_block2/_attention/_height_axis/_query_rpe/embeddings":
        "stage4/block2/attention/height_axis/query_rpe",
    "_stage4/_block2/_attention/_height_axis/_key_rpe/embeddings":
        "stage4/block2/attention/height_axis/key_rpe",
    "_stage4/_block2/_attention/_width_axis/_batch_norm_similarity/gamma":
        "stage4/block2/attention/width_axis/batch_norm_similarity/gamma",
    "_stage4/_block2/_attention/_width_axis/_batch_norm_retrieved_output/beta":
        "stage4/block2/attention/width_axis/batch_norm_retrieved_output/beta",
    "_stage5/_block3/_attention/_width_axis/_value_rpe/embeddings":
        "stage5/block3/attention/width_axis/value_rpe",
}
_CONVNEXT = {  # every size; Sequentials: stem [pad, conv, norm], downsampling [pad, norm, conv]
    "downsample_layers/0/layer_with_weights-0/kernel": "stem/conv/kernel",
    "downsample_layers/0/layer_with_weights-0/bias": "stem/conv/bias",
    "downsample_layers/0/layer_with_weights-1/gamma": "stem/norm/gamma",
    "downsample_layers/0/layer_with_weights-1/beta": "stem/norm/beta",
    "downsample_layers/2/layer_with_weights-0/gamma": "downsampling_block_1/norm/gamma",
    "downsample_layers/2/layer_with_weights-1/kernel": "downsampling_block_1/conv/kernel",
    "stages/1/layer_with_weights-1/depthwise_conv/kernel":
        "convnext_stage_1/convnext_block_1_1/depthwise_conv/kernel",
    "stages/1/layer_with_weights-1/pointwise_conv1/kernel":
        "convnext_stage_1/convnext_block_1_1/pointwise_conv1/kernel",
    "stages/1/layer_with_weights-1/pointwise_conv2/bias":
        "convnext_stage_1/convnext_block_1_1/pointwise_conv2/bias",
    "stages/1/layer_with_weights-1/layer_scale":
        "convnext_stage_1/convnext_block_1_1/layer_scale/layer_scale",
    "stages/2/layer_with_weights-0/norm/gamma": "convnext_stage_2/convnext_block_2_0/norm/gamma",
}
# Everything after the backbone, COCO settings (two kMaX layers per stride, which deeplab2
# numbers 0..5 over strides 32, 16, 8).
_KMAX = "transformer_decoder/_kmax_decoder/%d/_block1_transformer/"
_DECODERS_AND_HEADS = {
    # Pixel decoder: axial attention, backbone norms, skip connections.
    "pixel_decoder/_stages/0/_block1/_attention/_height_axis/qkv_kernel":
        "pixel_decoder/stage0/block1/attention/height_axis/qkv_kernel",
    "pixel_decoder/_stages/0/_block1/_attention/_width_axis/qkv_kernel":
        "pixel_decoder/stage0/block1/attention/width_axis/qkv_kernel",
    "pixel_decoder/_stages/1/_block3/_attention/_height_axis/_query_rpe/embeddings":
        "pixel_decoder/stage1/block3/attention/height_axis/query_rpe",
    "pixel_decoder/_stages/1/_block3/_attention/_height_axis/_key_rpe/embeddings":
        "pixel_decoder/stage1/block3/attention/height_axis/key_rpe",
    "pixel_decoder/_stages/0/_block1/_attention/_height_axis/_batch_norm_qkv/gamma":
        "pixel_decoder/stage0/block1/attention/height_axis/batch_norm_qkv/gamma",
    "pixel_decoder/_stages/0/_block1/_attention/_height_axis/_batch_norm_similarity/beta":
        "pixel_decoder/stage0/block1/attention/height_axis/batch_norm_similarity/beta",
    "pixel_decoder/_stages/0/_block1/_attention/_width_axis/_batch_norm_retrieved_output/"
    "moving_mean":
        "pixel_decoder/stage0/block1/attention/width_axis/batch_norm_retrieved_output/moving_mean",
    "pixel_decoder/_stages/2/_block1/_conv2_bn_act/_conv/kernel":
        "pixel_decoder/stage2/block1/conv2_bn_act/conv/kernel",
    "pixel_decoder/_backbone_norms/0/gamma": "pixel_decoder/backbone_norm0/gamma",
    "pixel_decoder/_backbone_norms/1/beta": "pixel_decoder/backbone_norm1/beta",
    "pixel_decoder/_skip_connections/0/_resized_conv_bn1/_conv/kernel":
        "pixel_decoder/skip_connection0/resized_conv_bn1/conv/kernel",
    "pixel_decoder/_skip_connections/0/_resized_conv_bn2/_conv/kernel":
        "pixel_decoder/skip_connection0/resized_conv_bn2/conv/kernel",
    # kMaX layers: k-means cross-attention, center self-attention, FFN, clustering head.
    _KMAX % 3 + "_kmeans_memory_conv3_bn/_conv/kernel":
        "transformer_decoder/kmax_layer_os16_1/kmeans_attention/kmeans_memory_conv3_bn/conv/kernel",
    _KMAX % 3 + "_kmeans_memory_batch_norm_retrieved_value/gamma":
        "transformer_decoder/kmax_layer_os16_1/kmeans_attention/"
        "kmeans_memory_batch_norm_retrieved_value/gamma",
    _KMAX % 2 + "_memory_qkv_conv_bn/_conv/kernel":
        "transformer_decoder/kmax_layer_os16_0/memory_qkv_conv_bn/conv/kernel",
    _KMAX % 0 + "_pixel_conv1_bn_act/_conv/kernel":
        "transformer_decoder/kmax_layer_os32_0/pixel_conv1_bn_act/conv/kernel",
    _KMAX % 1 + "_pixel_v_conv_bn/_conv/kernel":
        "transformer_decoder/kmax_layer_os32_1/pixel_v_conv_bn/conv/kernel",
    _KMAX % 1 + "_memory_attention/_batch_norm_retrieved_value/gamma":
        "transformer_decoder/kmax_layer_os32_1/memory_attention/batch_norm_retrieved_value/gamma",
    _KMAX % 4 + "_memory_attention/_batch_norm_similarity/beta":
        "transformer_decoder/kmax_layer_os8_0/memory_attention/batch_norm_similarity/beta",
    _KMAX % 5 + "_memory_conv3_bn/_conv/kernel":
        "transformer_decoder/kmax_layer_os8_1/memory_conv3_bn/conv/kernel",
    _KMAX % 5 + "_memory_ffn_conv1_bn_act/_conv/kernel":
        "transformer_decoder/kmax_layer_os8_1/memory_ffn_conv1_bn_act/conv/kernel",
    _KMAX % 4 + "_memory_ffn_conv2_bn/_batch_norm/moving_mean":
        "transformer_decoder/kmax_layer_os8_0/memory_ffn_conv2_bn/batch_norm/moving_mean",
    _KMAX % 3 + "_auxiliary_clustering_predictor/_transformer_class_head/_conv/kernel":
        "transformer_decoder/kmax_layer_os16_1/auxiliary_clustering_predictor/"
        "transformer_class_head/conv/kernel",
    _KMAX % 0 + "_auxiliary_clustering_predictor/_pixel_space_head/final_conv/bias":
        "transformer_decoder/kmax_layer_os32_0/auxiliary_clustering_predictor/pixel_space_head/"
        "final_conv/bias",
    "transformer_decoder/cluster_centers": "transformer_decoder/cluster_centers",
    "transformer_decoder/_class_embedding_projection/_conv/kernel":
        "transformer_decoder/class_embedding_projection/conv/kernel",
    "transformer_decoder/_mask_embedding_projection/_conv/kernel":
        "transformer_decoder/mask_embedding_projection/conv/kernel",
    # Final heads.
    "transformer_class_head/_conv/kernel": "head/transformer_class_head/conv/kernel",
    "transformer_class_head/_conv/bias": "head/transformer_class_head/conv/bias",
    "transformer_mask_head/_conv/kernel": "head/transformer_mask_head/conv/kernel",
    "pixel_space_head/conv_block/_conv1_bn_act/_depthwise/_depthwise_conv/depthwise_kernel":
        "head/pixel_space_head/conv_block/depthwise/kernel",
    "pixel_space_head/conv_block/_conv1_bn_act/_pointwise/_conv/kernel":
        "head/pixel_space_head/conv_block/pointwise/conv/kernel",
    "pixel_space_head/final_conv/kernel": "head/pixel_space_head/final_conv/kernel",
    "pixel_space_mask_batch_norm/gamma": "head/pixel_space_mask_batch_norm/gamma",
    "pixel_space_mask_batch_norm/beta": "head/pixel_space_mask_batch_norm/beta",
    "pixel_space_feature_batch_norm/moving_variance":
        "head/pixel_space_feature_batch_norm/moving_variance",
    "semantic_head_without_last_layer/_conv1_bn_act/_pointwise/_conv/kernel":
        "semantic_head/conv_block/pointwise/conv/kernel",
    "semantic_last_layer/kernel": "semantic_head/final_conv/kernel",
    "semantic_last_layer/bias": "semantic_head/final_conv/bias",
    # Semantic decoder: ASPP branches (deeplab2's 1-based fusion/low-level convs).
    "semantic_decoder/_aspp/_conv_bn_act/_conv/kernel":
        "semantic_decoder/aspp/conv_bn_act/conv/kernel",
    "semantic_decoder/_aspp/_aspp_conv1/_conv_bn_act/_conv/kernel":
        "semantic_decoder/aspp/aspp_conv1/conv/kernel",
    "semantic_decoder/_aspp/_aspp_conv3/_conv_bn_act/_conv/kernel":
        "semantic_decoder/aspp/aspp_conv3/conv/kernel",
    "semantic_decoder/_aspp/_aspp_pool/_conv_bn_act/_conv/kernel":
        "semantic_decoder/aspp/aspp_pool/conv/kernel",
    "semantic_decoder/_aspp/_aspp_pool/_conv_bn_act/_batch_norm/gamma":
        "semantic_decoder/aspp/aspp_pool/batch_norm/gamma",
    "semantic_decoder/_aspp/_proj_conv_bn_act/_conv/kernel":
        "semantic_decoder/aspp/proj_conv_bn_act/conv/kernel",
    "semantic_decoder/_fusion_conv1/_conv1_bn_act/_pointwise/_conv/kernel":
        "semantic_decoder/fusion_conv0/pointwise/conv/kernel",
    "semantic_decoder/_fusion_conv2/_conv1_bn_act/_depthwise/_depthwise_conv/depthwise_kernel":
        "semantic_decoder/fusion_conv1/depthwise/kernel",
    "semantic_decoder/_low_level_conv1/_conv/kernel":
        "semantic_decoder/low_level_conv0/conv/kernel",
    "semantic_decoder/_low_level_conv2/_batch_norm/gamma":
        "semantic_decoder/low_level_conv1/batch_norm/gamma",
}


def _expected(backbone_table, backbone_name, prefix, decoders=True):
  """Raw deeplab2 key -> kmax-tf key: the backbone table under the checkpoint's backbone
  `prefix` (`encoder/`, `backbone/_encoder/`, or none), plus the decoders of a full model."""
  expected = {f"{prefix}{key}{_VALUE}": f"{backbone_name}/{target}"
              for key, target in backbone_table.items()}
  if decoders:
    expected.update({key + _VALUE: target for key, target in _DECODERS_AND_HEADS.items()})
  return expected


_EXPECTED = {
    "coco_r50_os32_full": _expected(_RESNET50, "resnet50", "encoder/"),
    "coco_r50_os32_encoder": _expected(_RESNET50, "resnet50", "encoder/", decoders=False),
    "coco_r50_os32_garden": _expected(_RESNET50, "resnet50", "backbone/_encoder/",
                                      decoders=False),
    "coco_axial_r50_os32_full": _expected(_AXIAL_RESNET50, "axial_resnet50", "encoder/"),
    "coco_axial_r50_os32_encoder": _expected(_AXIAL_RESNET50, "axial_resnet50", "encoder/",
                                             decoders=False),
    "coco_convnext_tiny_os32_full": _expected(_CONVNEXT, "convnext_tiny", "encoder/"),
    "coco_convnext_tiny_os32_keras": _expected(_CONVNEXT, "convnext_tiny", "",
                                               decoders=False),
    "coco_convnext_large_os32_full": _expected(_CONVNEXT, "convnext_large", "encoder/"),
    "coco_convnext_large_os32_keras": _expected(_CONVNEXT, "convnext_large", "",
                                                decoders=False),
    "cityscapes_r50_os32_full": _expected(_RESNET50, "resnet50", "encoder/", decoders=False),
}


def _model(config_relative):
  """One built model per config for the whole module (building a full-size model is slow)."""
  if config_relative not in _MODELS:
    options = config.load_config(configs.config_path(config_relative),
                                 {"DATA_DIR": "unused", "EXPERIMENT_NAME": "unused"},
                                 validate=False)
    _MODELS[config_relative] = builder.build_model(options)
  return _MODELS[config_relative]


def _zero(variables):
  for variable in variables:
    variable.assign(tf.zeros(variable.shape, variable.dtype))


def _model_variables(model, backbone_only=False):
  """`{kmax-tf key: variable}` of a model, or of its backbone."""
  variables = weight_io.ModelVariables(model).by_path
  if backbone_only:
    variables = {k: v for k, v in variables.items() if k.startswith(f"{model.encoder.name}/")}
  return variables


def _digest(array) -> bytes:
  # C-order bytes: the converter only reshapes (drops size-1 axes, flattens per-head BNs).
  return hashlib.sha256(np.ascontiguousarray(array, np.float32).tobytes()).digest()


def _landed(variables: dict, values: dict) -> dict:
  """`{deeplab2 key: kmax-tf key}` read off the variables' contents (the random source tensors
  are all different, so each one names its key)."""
  source_of = {_digest(value): key for key, value in values.items()}
  assert len(source_of) == len(values), "two source tensors are equal: the oracle needs them apart"
  landed = {}
  for name, variable in variables.items():
    key = source_of.get(_digest(variable.numpy()))
    if key is not None:
      assert key not in landed, f"{key} landed in both {landed[key]} and {name}"
      landed[key] = name
  return landed


def _assert_holds(variables: dict, values: dict, expected: dict, what: str):
  """Every source tensor sits, unchanged, in a variable of its own; those of `expected` (raw
  deeplab2 key -> kmax-tf key) in the named one."""
  absent = set(expected) - set(values)
  assert not absent, f"{what}: not in the checkpoint: {absent}"
  landed = _landed(variables, values)
  lost = sorted(set(values) - set(landed))
  assert not lost, f"{what}: {len(lost)} deeplab2 tensors are in no variable, e.g. {lost[:3]}"
  wrong = {key: (landed[key], target) for key, target in expected.items()
           if landed[key] != target}
  assert not wrong, f"{what}: (landed, expected) per deeplab2 key: {wrong}"


def _convert_and_check(model, listing_name, tmp_path):
  listing = deeplab2_checkpoints.listing(listing_name)
  values = deeplab2_checkpoints.write_checkpoint(listing["variables"],
                                                 str(tmp_path / "deeplab2" / "ckpt-1"))
  form = listing["form"]
  saved = convert_deeplab2.convert(model, str(tmp_path / "deeplab2" / "ckpt-1"),
                                   str(tmp_path / "out"))
  # The converter fills the model too; zero it so that only the written checkpoint can restore.
  backbone_only = form != convert_deeplab2.FULL
  _zero(model.encoder.variables if backbone_only else model.variables)
  weight_io.restore_model_variables(model, str(tmp_path / "out"), require_all=not backbone_only)
  assert tf.train.latest_checkpoint(str(tmp_path / "out")) == saved
  # deeplab2's step count is carried over (0 for backbone checkpoints, which have none).
  step = tf.train.load_checkpoint(saved).get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE")
  assert step == (0 if backbone_only else deeplab2_checkpoints.GLOBAL_STEP)
  _assert_holds(_model_variables(model, backbone_only), values, _EXPECTED[listing_name],
                listing_name)
  return values


def _check_converted_layers(model, values):
  """Converted layers of the COCO ResNet-50 model against numpy from the deeplab2 arrays."""
  def source(key):
    return values[key + _VALUE].astype(np.float64)

  rng = np.random.default_rng(7)
  # Stem: 7x7 stride-2 conv, padded 3 on every side, then inference BN.
  x = rng.standard_normal((1, 9, 9, 3)).astype(np.float32)
  padded = np.pad(x[0].astype(np.float64), ((3, 3), (3, 3), (0, 0)))
  windows = np.lib.stride_tricks.sliding_window_view(padded, (7, 7), axis=(0, 1))[::2, ::2]
  conv = np.einsum("hwcij,ijco->hwo", windows, source("encoder/_stem/_conv/kernel"))
  bn = {name: source(f"encoder/_stem/_batch_norm/{name}")
        for name in ("gamma", "beta", "moving_mean", "moving_variance")}
  variance = bn["moving_variance"] + model.encoder.stem.batch_norm.epsilon
  usable = variance > 0  # the listing's values are N(0, 1), variances included
  expected = ((conv - bn["moving_mean"]) / np.sqrt(np.abs(variance)) * bn["gamma"]
              + bn["beta"])
  got = model.encoder.stem(x, training=False).numpy()[0]
  assert got.shape == (5, 5, 64) and usable.sum() > 16
  np.testing.assert_allclose(got[..., usable], expected[..., usable], rtol=1e-4, atol=1e-3)
  # Class head: 1-D conv with bias over the cluster centers.
  centers = rng.standard_normal((1, 4, 256)).astype(np.float32)
  expected = (centers[0] @ source("transformer_class_head/_conv/kernel")[0]
              + source("transformer_class_head/_conv/bias"))
  np.testing.assert_allclose(model.head.transformer_class_head(centers).numpy()[0], expected,
                             rtol=1e-4, atol=1e-4)
  # Semantic head's last layer: 1x1 conv with bias.
  features = rng.standard_normal((1, 3, 2, 256)).astype(np.float32)
  expected = (features[0] @ source("semantic_last_layer/kernel")[0, 0]
              + source("semantic_last_layer/bias"))
  np.testing.assert_allclose(model.semantic_head.final_conv(features).numpy()[0], expected,
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("listing_name", ["coco_r50_os32_full", "coco_r50_os32_encoder",
                                          "coco_r50_os32_garden"])
def test_resnet50_checkpoints_convert_and_load(listing_name, tmp_path):
  listing = deeplab2_checkpoints.listing(listing_name)
  model = _model(listing["kmax_tf_config"])
  values = _convert_and_check(model, listing_name, tmp_path)
  if listing["form"] == "full":
    # Every model weight (all but RNG states) came from deeplab2.
    assert len(values) == len([v for v in model.variables if "seed_generator" not in v.path])
    # The optimizer's variables, global_step and save_counter were in the checkpoint, skipped.
    assert any(key.startswith("optimizer/") for key, _ in listing["variables"])
    _check_converted_layers(model, values)
  else:
    assert len(values) == len(model.encoder.variables)


@pytest.mark.parametrize("first,second", [
    ("_stem/_batch_norm/gamma", "_stem/_batch_norm/beta"),
    ("_stage3/_block2/_conv2_bn_act/_conv/kernel", "_stage3/_block3/_conv2_bn_act/_conv/kernel"),
])
def test_the_oracle_catches_swapped_same_shaped_variables(first, second, tmp_path, monkeypatch):
  listing = deeplab2_checkpoints.listing("coco_r50_os32_encoder")
  model = _model(listing["kmax_tf_config"])
  values = deeplab2_checkpoints.write_checkpoint(listing["variables"], str(tmp_path / "ckpt-1"))
  first, second = (f"encoder/{key}{_VALUE}" for key in (first, second))
  assert values[first].shape == values[second].shape
  build_mapping = convert_deeplab2.build_mapping

  def swapped(*args, **kwargs):
    form, mapping = build_mapping(*args, **kwargs)
    mapping[first], mapping[second] = mapping[second], mapping[first]
    return form, mapping

  monkeypatch.setattr(convert_deeplab2, "build_mapping", swapped)
  _zero(model.encoder.variables)
  checkpoints.load_initial_checkpoint(model, str(tmp_path / "ckpt-1"))
  with pytest.raises(AssertionError, match=f"{first}.*{second}|{second}.*{first}"):
    _assert_holds(_model_variables(model, backbone_only=True), values,
                  _EXPECTED["coco_r50_os32_encoder"], "swapped")


@pytest.mark.slow
@pytest.mark.parametrize("listing_name", ["coco_convnext_tiny_os32_full",
                                          "coco_convnext_tiny_os32_keras",
                                          "coco_convnext_large_os32_full",
                                          "coco_convnext_large_os32_keras"])
def test_convnext_checkpoints_convert_and_load(listing_name, tmp_path):
  listing = deeplab2_checkpoints.listing(listing_name)
  _convert_and_check(_model(listing["kmax_tf_config"]), listing_name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("listing_name", ["coco_axial_r50_os32_full",
                                          "coco_axial_r50_os32_encoder",
                                          "cityscapes_r50_os32_full"])
def test_more_backbones_and_datasets_convert_and_load(listing_name, tmp_path):
  listing = deeplab2_checkpoints.listing(listing_name)
  _convert_and_check(_model(listing["kmax_tf_config"]), listing_name, tmp_path)


def test_every_problem_is_listed():
  listing = deeplab2_checkpoints.listing("coco_r50_os32_full")
  model = _model(listing["kmax_tf_config"])
  shapes = dict((key, shape) for key, shape in listing["variables"])
  dropped = "pixel_decoder/_stages/1/_block3/_attention/_height_axis/qkv_kernel" \
            "/.ATTRIBUTES/VARIABLE_VALUE"
  del shapes[dropped]
  shapes["encoder/_stage6/_block1/_conv/kernel/.ATTRIBUTES/VARIABLE_VALUE"] = [3, 3, 8, 8]
  resized = "semantic_last_layer/kernel/.ATTRIBUTES/VARIABLE_VALUE"
  shapes[resized] = [1, 1, 256, 19]
  with pytest.raises(convert_deeplab2.ConversionError) as error:
    convert_deeplab2.build_mapping(shapes, model)
  message = str(error.value)
  assert "3 problem(s)" in message
  assert "missing: kmax-tf variable pixel_decoder/stage1/block3/attention/height_axis/qkv_kernel" \
         in message
  assert "unmapped deeplab2 variable encoder/_stage6/_block1/_conv/kernel" in message
  assert f"shape mismatch: deeplab2 {resized} [1, 1, 256, 19]" in message


def test_initial_checkpoint_accepts_deeplab2_and_kmax_tf_formats(tmp_path):
  listing = deeplab2_checkpoints.listing("coco_r50_os32_encoder")
  model = _model(listing["kmax_tf_config"])
  values = deeplab2_checkpoints.write_checkpoint(
      listing["variables"], str(tmp_path / "imagenet" / "ckpt-7"), seed=1)
  # SaveV2 writes no `checkpoint` index file, so the prefix is given, not the directory.
  assert convert_deeplab2.is_deeplab2_checkpoint(str(tmp_path / "imagenet" / "ckpt-7"))
  _zero(model.encoder.variables)
  checkpoints.load_initial_checkpoint(model, str(tmp_path / "imagenet" / "ckpt-7"))
  expected = _EXPECTED["coco_r50_os32_encoder"]
  _assert_holds(_model_variables(model, backbone_only=True), values, expected, "encoder")

  # A kmax-tf checkpoint (here: the model as it now is) goes through restore_model_variables.
  saved = tf.train.Checkpoint(model=weight_io.ModelVariables(model)).save(
      str(tmp_path / "kmax" / "ckpt"))
  assert not convert_deeplab2.is_deeplab2_checkpoint(saved)
  _zero(model.encoder.variables)
  checkpoints.load_initial_checkpoint(model, str(tmp_path / "kmax"))
  _assert_holds(_model_variables(model, backbone_only=True), values, expected, "kmax-tf")


def _convnext_tiny_backbone():
  if "convnext_tiny" not in _MODELS:
    _MODELS["convnext_tiny"] = convnext.build_convnext("convnext_tiny")
  return _MODELS["convnext_tiny"]


def test_pretrained_weights_load_into_convnext_backbone(tmp_path):
  # deeplab2's ConvNeXt `pretrained_weights`: a TF checkpoint of the Keras ConvNeXt model.
  listing = deeplab2_checkpoints.listing("coco_convnext_tiny_os32_keras")
  backbone = _convnext_tiny_backbone()
  values = deeplab2_checkpoints.write_checkpoint(listing["variables"], str(tmp_path / "weights"),
                                                 seed=2)
  _zero(backbone.variables)
  assert convert_deeplab2.load_pretrained_weights(backbone, str(tmp_path / "weights")) == "keras"
  assert len(values) == len(backbone.variables)
  _assert_holds({v.path: v for v in backbone.variables}, values,
                _EXPECTED["coco_convnext_tiny_os32_keras"], "keras")


def test_encoder_checkpoint_loads_into_axial_resnet_backbone(tmp_path):
  listing = deeplab2_checkpoints.listing("coco_axial_r50_os32_encoder")
  backbone = axial_resnet.build_axial_resnet50()
  backbone(np.zeros((1, 33, 33, 3), np.float32))
  values = deeplab2_checkpoints.write_checkpoint(listing["variables"], str(tmp_path / "ckpt-1"))
  assert convert_deeplab2.load_pretrained_weights(backbone, str(tmp_path / "ckpt-1")) == "encoder"
  _assert_holds({v.path: v for v in backbone.variables}, values,
                _EXPECTED["coco_axial_r50_os32_encoder"], "encoder")


def test_pretrained_weights_reject_full_and_foreign_checkpoints():
  backbone = _convnext_tiny_backbone()
  full = dict(deeplab2_checkpoints.listing("coco_convnext_tiny_os32_full")["variables"])
  with pytest.raises(convert_deeplab2.ConversionError, match="initial_checkpoint"):
    convert_deeplab2.build_backbone_mapping(full, backbone)
  # A ResNet-50 ImageNet checkpoint does not fit ConvNeXt: every problem is listed.
  resnet = dict(deeplab2_checkpoints.listing("coco_r50_os32_encoder")["variables"])
  with pytest.raises(convert_deeplab2.ConversionError) as error:
    convert_deeplab2.build_backbone_mapping(resnet, backbone)
  message = str(error.value)
  assert "unmapped deeplab2 variable encoder/_stage2/_block1/_conv1_bn_act/_conv/kernel" in message
  assert ("shape mismatch: deeplab2 encoder/_stem/_conv/kernel/.ATTRIBUTES/VARIABLE_VALUE "
          "[7, 7, 3, 64] vs kmax-tf convnext_tiny/stem/conv/kernel [4, 4, 3, 96]") in message
  assert "missing: kmax-tf variable convnext_tiny/stem/norm/gamma [96]" in message


def _model_options(backbone_name, pretrained_weights="", initial_checkpoint=""):
  options = config.load_config(configs.config_path("synthetic/kmax_tiny.textproto"),
                               {"DATA_DIR": "unused", "EXPERIMENT_NAME": "unused"},
                               validate=False).model_options
  options.backbone.name = backbone_name
  options.backbone.pretrained_weights = pretrained_weights
  options.initial_checkpoint = initial_checkpoint
  return options


def test_initialize_from_options_follows_deeplab2(tmp_path):
  # ConvNeXt: `pretrained_weights` goes into the backbone (deeplab2 loads it at build time).
  values = deeplab2_checkpoints.write_checkpoint(
      deeplab2_checkpoints.listing("coco_convnext_tiny_os32_keras")["variables"],
      str(tmp_path / "convnext"), seed=3)
  backbone = _convnext_tiny_backbone()
  _zero(backbone.variables)
  checkpoints.initialize_from_options(
      types.SimpleNamespace(encoder=backbone),
      _model_options("kmax_convnext_tiny", pretrained_weights=str(tmp_path / "convnext")))
  stem = "downsample_layers/0/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
  kernel = {v.path: v for v in backbone.variables}["convnext_tiny/stem/conv/kernel"]
  np.testing.assert_array_equal(kernel.numpy(), values[stem])

  # ResNet: deeplab2 ignores `pretrained_weights` (no file is even opened) and loads
  # `initial_checkpoint`.
  listing = deeplab2_checkpoints.listing("coco_r50_os32_encoder")
  model = _model(listing["kmax_tf_config"])
  values = deeplab2_checkpoints.write_checkpoint(
      listing["variables"], str(tmp_path / "r50" / "ckpt-1"), seed=4)
  _zero(model.encoder.variables)
  checkpoints.initialize_from_options(model, _model_options(
      "kmax_resnet50", pretrained_weights=str(tmp_path / "does_not_exist"),
      initial_checkpoint=str(tmp_path / "r50" / "ckpt-1")))
  _assert_holds(_model_variables(model, backbone_only=True), values,
                _EXPECTED["coco_r50_os32_encoder"], "encoder")


def test_cli_reports_mismatches_and_exits_nonzero(tmp_path, capsys):
  # deeplab2's full-width ResNet-50 stem does not fit the tiny config's quarter-width backbone.
  stem = [[key, shape]
          for key, shape in deeplab2_checkpoints.listing("coco_r50_os32_encoder")["variables"]
          if key.startswith("encoder/_stem/")]
  deeplab2_checkpoints.write_checkpoint(stem, str(tmp_path / "ckpt-1"))
  code = cli.main(["convert", "deeplab2",
                   "--config_file", str(configs.config_path("synthetic/kmax_tiny.textproto")),
                   "--checkpoint", str(tmp_path / "ckpt-1"), "--output_dir", str(tmp_path / "o")])
  assert code == 1
  err = capsys.readouterr().err
  assert "shape mismatch: deeplab2 encoder/_stem/_conv/kernel/.ATTRIBUTES/VARIABLE_VALUE " \
         "[7, 7, 3, 64] vs kmax-tf resnet50/stem/conv/kernel [7, 7, 3, 16]" in err
  assert "missing: kmax-tf variable resnet50/stage2/block1/conv1_bn_act/conv/kernel" in err
  assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("restore_semantic_last_layer", [True, False])
def test_initial_checkpoint_can_leave_the_semantic_last_layer(tmp_path,
                                                              restore_semantic_last_layer):
  source = _model("synthetic/kmax_micro.textproto")
  rng = np.random.default_rng(5)
  for variable in source.variables:
    if "seed_generator" not in variable.path:
      variable.assign(rng.standard_normal(variable.shape).astype(variable.dtype))
  saved = tf.train.Checkpoint(model=weight_io.ModelVariables(source)).save(
      str(tmp_path / "kmax" / "ckpt"))
  target = builder.build_model(config.load_config(
      configs.config_path("synthetic/kmax_micro.textproto"),
      {"DATA_DIR": "unused", "EXPERIMENT_NAME": "unused"}, validate=False))
  before = {k: v.numpy() for k, v in weight_io.ModelVariables(target).by_path.items()}
  options = _model_options("kmax_resnet50", initial_checkpoint=saved)
  options.restore_semantic_last_layer_from_initial_checkpoint = restore_semantic_last_layer
  checkpoints.initialize_from_options(target, options)

  restored = weight_io.ModelVariables(source).by_path
  last_layer = [k for k in before if k.startswith(convert_deeplab2.SEMANTIC_LAST_LAYER)]
  assert sorted(last_layer) == ["semantic_head/final_conv/bias", "semantic_head/final_conv/kernel"]
  for key, variable in weight_io.ModelVariables(target).by_path.items():
    if "seed_generator" in key:
      continue
    kept = key in last_layer and not restore_semantic_last_layer
    expected = before[key] if kept else restored[key].numpy()
    np.testing.assert_array_equal(variable.numpy(), expected, err_msg=key)


def test_deeplab2_mapping_can_leave_the_semantic_last_layer():
  listing = deeplab2_checkpoints.listing("coco_r50_os32_full")
  model = _model(listing["kmax_tf_config"])
  shapes = {key: shape for key, shape in listing["variables"]}
  _, everything = convert_deeplab2.build_mapping(shapes, model)
  _, without = convert_deeplab2.build_mapping(shapes, model,
                                              (convert_deeplab2.SEMANTIC_LAST_LAYER,))
  left_out = {everything[key] for key in set(everything) - set(without)}
  assert left_out == {"semantic_head/final_conv/kernel", "semantic_head/final_conv/bias"}
