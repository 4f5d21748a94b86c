"""The shipped configs carry deeplab2's settings and parse like deeplab2's own files."""
import pathlib

import pytest
from google.protobuf import text_format

from kmax_tf import config
from kmax_tf.protos import config_pb2

_REPO = pathlib.Path(__file__).resolve().parents[1]
_CONFIGS = _REPO / "configs"
_REFERENCE = _REPO / "tests" / "deeplab2_configs"


@pytest.mark.parametrize("reference,shipped", [
    ("coco_kmax_meta_r50_os32.textproto", "coco/kmax_deeplab/kmax_meta_r50_os32.textproto"),
    ("cityscapes_kmax_meta_convnext_tiny_os32.textproto",
     "cityscapes/kmax_deeplab/kmax_meta_convnext_tiny_os32.textproto"),
])
def test_shipped_config_equals_deeplab2_file(reference, shipped):
  expected = text_format.Parse((_REFERENCE / reference).read_text(), config_pb2.ExperimentOptions())
  actual = text_format.Parse((_CONFIGS / shipped).read_text(), config_pb2.ExperimentOptions())
  assert actual == expected


# (file, backbone, keep prob, crop, batch, steps, lr, min/max scale, policy, ID k, thresholds
#  thing/stuff, overlap, area thing/stuff, reorder mask weight) from deeplab2's configs.
_TABLE = [
    ("coco/kmax_deeplab/kmax_meta_axial_r50_os32", "kmax_axial_resnet50", 0.8, (1281, 1281), 64,
     150000, 5e-4, (0.3, 1.7), "simple_classification_policy", 4096, (0.7, 0.5), 0.8, (400, 6400),
     1.0),
    *[(f"coco/kmax_deeplab/kmax_meta_convnext_{v}_os32", f"kmax_convnext_{v}", keep, (1281, 1281),
       64, 150000, 5e-4, (0.3, 1.7), "simple_classification_policy", 4096, (0.7, 0.5), 0.8,
       (400, 6400), 1.0)
      for v, keep in (("tiny", 0.7), ("small", 0.6), ("base", 0.5), ("large", 0.4))],
    *[(f"cityscapes/kmax_deeplab/kmax_meta_{b}_os32", f"kmax_{n}", keep, (1025, 2049), 32, 60000,
       3e-4, (0.5, 2.0), "simple_classification_policy_magnitude_scale_0.2", 4096, (0.5, 0.3), 0.9,
       (256, 2048), 0.0)
      for b, n, keep in (("r50", "resnet50", 1.0), ("axial_r50", "axial_resnet50", 0.8),
                         ("convnext_tiny", "convnext_tiny", 0.8),
                         ("convnext_small", "convnext_small", 0.7),
                         ("convnext_base", "convnext_base", 0.6),
                         ("convnext_large", "convnext_large", 0.4))],
    ("ade20k/kmax_deeplab/kmax_meta_r50_os32", "kmax_resnet50", 1.0, (641, 641), 64, 100000, 5e-4,
     (0.5, 2.0), "simple_classification_policy", 1024, (0.4, 0.4), 0.8, (0, 0), 1.0),
    ("ade20k/kmax_deeplab/kmax_meta_r50_os32_res1281", "kmax_resnet50", 1.0, (1281, 1281), 64,
     100000, 5e-4, (0.5, 2.0), "simple_classification_policy", 4096, (0.4, 0.4), 0.8, (0, 0), 1.0),
    ("ade20k/kmax_deeplab/kmax_meta_convnext_large_os32", "kmax_convnext_large", 0.3, (641, 641),
     64, 100000, 5e-4, (0.5, 2.0), "simple_classification_policy", 1024, (0.4, 0.4), 0.8, (0, 0),
     1.0),
    ("ade20k/kmax_deeplab/kmax_meta_convnext_large_os32_res1281", "kmax_convnext_large", 0.3,
     (1281, 1281), 64, 100000, 5e-4, (0.5, 2.0), "simple_classification_policy", 4096, (0.4, 0.4),
     0.8, (0, 0), 1.0),
]


@pytest.mark.parametrize("row", _TABLE, ids=[r[0] for r in _TABLE])
def test_config_settings_match_deeplab2_table(row):
  (name, backbone, keep, crop, batch, steps, lr, scale, policy, sample_k, thresholds, overlap,
   areas, mask_weight) = row
  options = config.load_config(_CONFIGS / f"{name}.textproto")
  model = options.model_options
  assert (model.backbone.name, round(model.backbone.drop_path_keep_prob, 6)) == (backbone, keep)
  train, evaluation = options.train_dataset_options, options.eval_dataset_options
  assert tuple(train.crop_size) == crop == tuple(evaluation.crop_size)
  assert (train.batch_size, evaluation.batch_size) == (batch, 1)
  solver = options.trainer_options.solver_options
  assert solver.training_number_of_steps == steps
  assert solver.base_learning_rate == pytest.approx(lr)
  assert (solver.warmup_steps, solver.optimizer) == (5000, "adamw")
  assert solver.backbone_learning_rate_multiplier == pytest.approx(0.1)
  assert solver.adamw_weight_decay == pytest.approx(0.05)
  augment = train.augmentations
  assert (augment.min_scale_factor, augment.max_scale_factor) == pytest.approx(scale)
  assert augment.autoaugment_policy_name == policy
  assert augment.panoptic_copy_paste.panoptic_copy_paste_thing_option == "all"
  assert model.max_deeplab.instance_discrimination_sample_k == sample_k
  maskwise = options.evaluator_options.maskwise_postprocessing
  assert (maskwise.transformer_class_confidence_threshold_thing,
          maskwise.transformer_class_confidence_threshold_stuff) == pytest.approx(thresholds)
  assert maskwise.overlapping_threshold == pytest.approx(overlap)
  assert maskwise.reorder_mask_weight == mask_weight
  assert (options.evaluator_options.thing_area_limit,
          options.evaluator_options.stuff_area_limit) == areas
  if backbone.startswith("kmax_convnext"):
    assert model.backbone.pretrained_weights == "${PRETRAINED_WEIGHTS}"
  else:
    assert model.initial_checkpoint == "${INIT_CHECKPOINT}"
