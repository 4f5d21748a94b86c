"""Builder: exact deeplab2 parameter counts, dataset-derived settings, backbone dispatch.

Reference counts: the COCO R50 figures measured on deeplab2 (commit 64bc1c1), and for every config
in configs/ `deeplab2_parameter_counts.json` beside this file, measured from deeplab2 itself (its
"how" field says how). Weight shapes do not depend on the input size, so models are built on the
builder's small symbolic input.
"""
import json
import pathlib

import keras
import pytest

from kmax_tf import config
from kmax_tf import config_validation
from kmax_tf.model import builder
from kmax_tf.model.backbones import convnext

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def _load(relative):
  return config.load_config(CONFIGS / relative, validate=False)


def _build_without_values(relative):
  # Shapes without values: no memory or initialisation time for the 244M-parameter ConvNeXt-L.
  with keras.StatelessScope(initialize_variables=False):
    return builder.build_model(_load(relative))


def test_coco_r50_matches_deeplab2_exactly():
  counts = builder.component_parameter_counts(
      _build_without_values("coco/kmax_deeplab/kmax_meta_r50_os32.textproto"))
  trainable = {name: c[0] for name, c in counts.items()}
  assert trainable == {"backbone": 23508032, "pixel_decoder": 21151040,
                       "transformer_decoder": 10706016 + 1041456,  # + 6 clustering predictors
                       "heads": 173576, "aux_semantic": 15856742}
  assert sum(trainable.values()) == 72436862
  assert sum(c[0] + c[1] for c in counts.values()) == 72650796  # with BN moving statistics


DEEPLAB2_COUNTS = pathlib.Path(__file__).with_name("deeplab2_parameter_counts.json")


def _deeplab2_counts():
  with open(DEEPLAB2_COUNTS) as f:
    return json.load(f)["configs"]


def test_every_shipped_config_has_a_deeplab2_measurement():
  shipped = {str(path.relative_to(CONFIGS)) for path in CONFIGS.glob("*/kmax_deeplab/*.textproto")}
  assert len(shipped) == 16
  assert shipped == set(_deeplab2_counts())


@pytest.mark.slow
@pytest.mark.parametrize("relative", sorted(_deeplab2_counts()))
def test_config_matches_deeplab2_per_component(relative):
  expected = _deeplab2_counts()[relative]
  counts = builder.component_parameter_counts(_build_without_values(relative))
  assert {name: list(pair) for name, pair in counts.items()} == expected["components"]
  assert [sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())] == (
      expected["total"])


def test_dataset_derived_settings_for_cityscapes():
  model = builder.build_model(_load("cityscapes/kmax_deeplab/kmax_meta_r50_os32.textproto"),
                              build=False)
  assert model.transformer_decoder.num_mask_slots == 256
  assert model.transformer_decoder.drop_path_keep_prob == 0.8
  assert model.semantic_decoder is None  # semantic head directly on stage5
  assert model.pixel_decoder.dims == (512, 256, 128, 64, 32)
  assert model.head.num_classes == 20  # 19 classes + void


def test_dataset_derived_settings_for_ade20k_and_size_fields():
  ade = builder.build_model(_load("ade20k/kmax_deeplab/kmax_meta_r50_os32.textproto"),
                            build=False)
  assert ade.transformer_decoder.drop_path_keep_prob == 1.0
  assert ade.transformer_decoder.num_mask_slots == 128 and ade.head.num_classes == 151
  tiny = builder.build_model(_load("synthetic/kmax_tiny.textproto"), build=False)
  assert tiny.pixel_decoder.dims == (64, 32, 16, 8)
  assert tiny.pixel_decoder.num_blocks == (1, 1, 1, 1)
  assert tiny.transformer_decoder.num_blocks == (1, 1, 1)
  assert tiny.transformer_decoder.channels == 64
  assert tiny.transformer_decoder.ffn_channels == 256
  assert tiny.transformer_decoder.num_mask_slots == 16
  assert tiny.encoder.block_counts == (1, 1, 2, 1)


def test_config_errors():
  options = _load("synthetic/kmax_tiny.textproto")
  options.model_options.backbone.name = "kmax_swin_tiny"
  with pytest.raises(ValueError, match="kmax_swin_tiny"):
    builder.build_model(options, build=False)
  options = _load("synthetic/kmax_tiny.textproto")
  options.model_options.max_deeplab.auxiliary_semantic_head.output_channels = 9
  with pytest.raises(ValueError, match="output_channels=9"):
    builder.build_model(options, build=False)
  options = _load("synthetic/kmax_tiny.textproto")
  del options.model_options.max_deeplab.pixel_decoder_num_blocks[:]
  options.model_options.max_deeplab.pixel_decoder_num_blocks.extend([1, 1])
  with pytest.raises(ValueError, match="pixel_decoder_num_blocks"):
    builder.build_model(options, build=False)


def test_every_validated_backbone_name_has_a_builder():
  # The builder dispatches on the one name list the validator checks configs against: ConvNeXt
  # names by variant, the rest to the two ResNets.
  names = set(config_validation.KMAX_BACKBONES)
  convnext_names = {name for name in names if name.startswith("kmax_convnext_")}
  assert {name.removeprefix("kmax_convnext_") for name in convnext_names} <= set(
      convnext.CONVNEXT_VARIANTS)
  assert names - convnext_names == {"kmax_resnet50", "kmax_axial_resnet50"}


def test_convnext_dispatch_uses_stride4_stem():
  model = builder.build_model(
      _load("coco/kmax_deeplab/kmax_meta_convnext_tiny_os32.textproto"), build=False)
  assert model.pixel_decoder.endpoint_strides["stage1"] == 4
  assert model.encoder.name == "convnext_tiny"
