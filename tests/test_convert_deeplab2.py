"""deeplab2 checkpoint conversion, on checkpoints with deeplab2's exact variable names and shapes.

`tests/data/deeplab2_variables/*.json` list (key, shape) of checkpoints written by deeplab2 itself
(see the README there). Each test writes a checkpoint with those keys and shapes and random values
(`tests/helpers/deeplab2_checkpoints.py`, no deeplab2 needed), converts it, and checks that the
kmax-tf model restored from the converted checkpoint holds exactly the source tensors.
"""
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
from kmax_tf.model.backbones import convnext
# The trainer's initialisation from deeplab2 checkpoints is tested here, with the models and
# checkpoints of the conversion tests.
from kmax_tf.trainer import checkpoints

import deeplab2_checkpoints  # tests/helpers

_MODELS = {}


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


def _assert_holds(model, values, form):
  _, mapping = convert_deeplab2.build_mapping({k: v.shape for k, v in values.items()}, model)
  by_path = weight_io.ModelVariables(model).by_path
  for key, value in values.items():
    variable = by_path[mapping[key]]
    np.testing.assert_array_equal(variable.numpy(), value.reshape(variable.shape),
                                  err_msg=f"{form}: {key} -> {mapping[key]}")


def _convert_and_check(model, listing, tmp_path):
  values = deeplab2_checkpoints.write_checkpoint(listing["variables"], str(tmp_path / "deeplab2" / "ckpt-1"))
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
  _assert_holds(model, values, form)
  return values


@pytest.mark.parametrize("listing_name", ["coco_r50_os32_full", "coco_r50_os32_encoder",
                                          "coco_r50_os32_garden"])
def test_resnet50_checkpoints_convert_and_load(listing_name, tmp_path):
  listing = deeplab2_checkpoints.listing(listing_name)
  model = _model(listing["kmax_tf_config"])
  values = _convert_and_check(model, listing, tmp_path)
  mapped = len(convert_deeplab2.build_mapping(
      {k: v.shape for k, v in values.items()}, model)[1])
  if listing["form"] == "full":
    # Every model weight (all but RNG states) came from deeplab2.
    assert mapped == len([v for v in model.variables if "seed_generator" not in v.path])
    # The optimizer's variables, global_step and save_counter were in the checkpoint, skipped.
    assert any(key.startswith("optimizer/") for key, _ in listing["variables"])
  else:
    assert mapped == len(model.encoder.variables)


@pytest.mark.slow
@pytest.mark.parametrize("listing_name", ["coco_convnext_tiny_os32_full",
                                          "coco_convnext_tiny_os32_keras",
                                          "coco_convnext_large_os32_full",
                                          "coco_convnext_large_os32_keras"])
def test_convnext_checkpoints_convert_and_load(listing_name, tmp_path):
  listing = deeplab2_checkpoints.listing(listing_name)
  _convert_and_check(_model(listing["kmax_tf_config"]), listing, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("listing_name", ["coco_axial_r50_os32_full",
                                          "coco_axial_r50_os32_encoder",
                                          "cityscapes_r50_os32_full"])
def test_more_backbones_and_datasets_convert_and_load(listing_name, tmp_path):
  listing = deeplab2_checkpoints.listing(listing_name)
  _convert_and_check(_model(listing["kmax_tf_config"]), listing, tmp_path)


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
  values = deeplab2_checkpoints.write_checkpoint(listing["variables"], str(tmp_path / "imagenet" / "ckpt-7"), seed=1)
  # SaveV2 writes no `checkpoint` index file, so the prefix is given, not the directory.
  assert convert_deeplab2.is_deeplab2_checkpoint(str(tmp_path / "imagenet" / "ckpt-7"))
  _zero(model.encoder.variables)
  checkpoints.load_initial_checkpoint(model, str(tmp_path / "imagenet" / "ckpt-7"))
  _assert_holds(model, values, "encoder")

  # A kmax-tf checkpoint (here: the model as it now is) goes through restore_model_variables.
  saved = tf.train.Checkpoint(model=weight_io.ModelVariables(model)).save(
      str(tmp_path / "kmax" / "ckpt"))
  assert not convert_deeplab2.is_deeplab2_checkpoint(saved)
  _zero(model.encoder.variables)
  checkpoints.load_initial_checkpoint(model, str(tmp_path / "kmax"))
  _assert_holds(model, values, "kmax-tf")


def _convnext_tiny_backbone():
  if "convnext_tiny" not in _MODELS:
    _MODELS["convnext_tiny"] = convnext.build_convnext("convnext_tiny")
  return _MODELS["convnext_tiny"]


def test_pretrained_weights_load_into_convnext_backbone(tmp_path):
  # deeplab2's ConvNeXt `pretrained_weights`: a TF checkpoint of the Keras ConvNeXt model.
  listing = deeplab2_checkpoints.listing("coco_convnext_tiny_os32_keras")
  backbone = _convnext_tiny_backbone()
  values = deeplab2_checkpoints.write_checkpoint(listing["variables"], str(tmp_path / "weights"), seed=2)
  _zero(backbone.variables)
  assert convert_deeplab2.load_pretrained_weights(backbone, str(tmp_path / "weights")) == "keras"
  _, mapping = convert_deeplab2.build_backbone_mapping({k: v.shape for k, v in values.items()},
                                                       backbone)
  assert len(mapping) == len(backbone.variables)
  by_path = {v.path: v for v in backbone.variables}
  for key, value in values.items():
    np.testing.assert_array_equal(by_path[mapping[key]].numpy(), value.reshape(
        by_path[mapping[key]].shape), err_msg=key)


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
  values = deeplab2_checkpoints.write_checkpoint(deeplab2_checkpoints.listing("coco_convnext_tiny_os32_keras")["variables"],
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
  values = deeplab2_checkpoints.write_checkpoint(listing["variables"], str(tmp_path / "r50" / "ckpt-1"), seed=4)
  _zero(model.encoder.variables)
  checkpoints.initialize_from_options(model, _model_options(
      "kmax_resnet50", pretrained_weights=str(tmp_path / "does_not_exist"),
      initial_checkpoint=str(tmp_path / "r50" / "ckpt-1")))
  _assert_holds(model, values, "encoder")


def test_cli_reports_mismatches_and_exits_nonzero(tmp_path, capsys):
  # deeplab2's full-width ResNet-50 stem does not fit the tiny config's quarter-width backbone.
  stem = [[key, shape] for key, shape in deeplab2_checkpoints.listing("coco_r50_os32_encoder")["variables"]
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
