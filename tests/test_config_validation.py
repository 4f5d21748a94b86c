"""Tests for kmax_tf.config_validation: each error kind, positioned at the offending field."""
import pathlib

import pytest

from kmax_tf import config
from kmax_tf import config_validation
from kmax_tf.configs import config_path

_TINY = pathlib.Path(config_path("synthetic/kmax_tiny.textproto")).read_text()


def _line_of(text, needle, occurrence=1):
  """1-based line number of the `occurrence`-th line containing `needle`."""
  hits = [i for i, line in enumerate(text.split("\n"), start=1) if needle in line]
  return hits[occurrence - 1]


def _load(tmp_path, text, **kwargs):
  path = tmp_path / "exp.textproto"
  path.write_text(text)
  return config.load_config(path, **kwargs)


def test_tiny_config_is_valid(tmp_path):
  options = _load(tmp_path, _TINY, overrides={"DATA_DIR": "/d", "EXPERIMENT_NAME": "t"},
                  required_fields=config_validation.TRAIN_FIELDS)
  assert options.train_dataset_options.dataset == "synthetic_panoptic"


@pytest.mark.parametrize("old,new,needle,occurrence,fragment", [
    ('name: "kmax_resnet50"', 'name: "resnet9000"', 'name: "resnet9000"', 1,
     "model_options.backbone.name: 'resnet9000' is not one of"),
    ('dataset: "synthetic_panoptic"', 'dataset: "mnist"', 'dataset: "mnist"', 1,
     "train_dataset_options.dataset: 'mnist' is not one of"),
    # Inconsistent class count: the semantic head must have the dataset's 7 classes.
    ("output_channels: 7", "output_channels: 8", "output_channels: 8", 1,
     "8 classes, but dataset 'synthetic_panoptic' has 7"),
    ("pixel_confidence_threshold: 0.2", "pixel_confidence_threshold: 1.4",
     "pixel_confidence_threshold", 1, "1.4 is outside [0.0, 1.0]"),
    ("overlapping_threshold: 0.8", "overlapping_threshold: -0.1", "overlapping_threshold", 1,
     "outside [0.0, 1.0]"),
    # A string-valued "enum" with an unknown value.
    ('transformer_post_processing: "maskwise"', 'transformer_post_processing: "boxwise"',
     "transformer_post_processing", 1, "'boxwise' is not one of 'pixelwise', 'maskwise'"),
    ('optimizer: "adamw"', 'optimizer: "lamb"', "optimizer", 1, "'lamb' is not one of"),
    # Crop sizes: exactly two, each 32k+1.
    ("crop_size: 129\n  crop_size: 129", "crop_size: 128\n  crop_size: 129", "crop_size: 128", 1,
     "128 is not of the form 32*k+1"),
    ("crop_size: 129\n  crop_size: 129", "crop_size: 129", "crop_size: 129", 1,
     "needs exactly two values"),
    ("instance_discrimination_sample_k: 256", "instance_discrimination_sample_k: 5000",
     "instance_discrimination_sample_k", 1, "has only 1089 at stride 4"),
])
def test_validation_errors_are_positioned(tmp_path, old, new, needle, occurrence, fragment):
  assert old in _TINY
  text = _TINY.replace(old, new, 1)
  with pytest.raises(config.ConfigError) as error:
    _load(tmp_path, text)
  assert fragment in error.value.message
  assert error.value.line == _line_of(text, needle, occurrence)


def test_unresolved_placeholder_in_a_used_field_is_an_error(tmp_path):
  # Allowed when nothing needs the field (e.g. `config check`) ...
  _load(tmp_path, _TINY)
  # ... an error when the command reads it.
  with pytest.raises(config.ConfigError) as error:
    _load(tmp_path, _TINY, overrides={"EXPERIMENT_NAME": "t"},
          required_fields=config_validation.TRAIN_FIELDS)
  assert error.value.line == _line_of(_TINY, "${DATA_DIR}/train")
  assert "train_dataset_options.file_pattern: unresolved placeholder ${DATA_DIR}" in str(
      error.value)
  # The eval split's pattern is not read by training, so only the train one is reported.
  assert "DATA_DIR=VALUE" in str(error.value)


def test_decoder_keep_probability_must_match_dataset(tmp_path):
  text = _TINY.replace("num_mask_slots: 16",
                       "num_mask_slots: 16\n    transformer_decoder_drop_path_keep_prob: 0.5")
  with pytest.raises(config.ConfigError, match="differs from the keep probability 0.8"):
    _load(tmp_path, text)


def test_field_locator_handles_nesting_comments_and_colon_before_brace():
  text = ('# comment with name: "x" {\n'
          'model_options: {\n'
          '  backbone { name: "a" }  # trailing { comment\n'
          '  decoder {\n'
          '    feature_key: "x#y"\n'
          '  }\n'
          '}\n')
  locator = config_validation.FieldLocator(text)
  assert locator.position("model_options") == (2, 1)
  assert locator.position("model_options.backbone.name") == (3, 14)
  assert locator.position("model_options.decoder.feature_key") == (5, 5)
  # Absent fields fall back to the closest ancestor.
  assert locator.position("model_options.decoder.aspp_channels") == (4, 3)
  assert locator.field_at(5, 19) == "model_options.decoder.feature_key"
