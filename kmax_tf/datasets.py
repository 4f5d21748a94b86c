"""Dataset descriptors: the facts about a dataset that the model, data, losses and metrics share.

One table holds every dataset-dependent choice deeplab2 derives from the dataset name (number of
mask slots, pixel-decoder output stride, whether the auxiliary semantic decoder exists, the
transformer-decoder drop-path keep probability), so nothing downstream tests for substrings of
dataset names.

Panoptic labels are encoded as `semantic * panoptic_label_divisor + instance_id`; pixels whose
semantic id is `ignore_label` are void. On thing classes instance 0 marks a crowd region.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Mapping, Sequence

import numpy as np

_METADATA_DIR = pathlib.Path(__file__).resolve().parent / "dataset_metadata"


@dataclasses.dataclass(frozen=True)
class DatasetDescriptor:
  """Static description of a panoptic dataset.

  Attributes:
    name: registry name used in configs (`DatasetOptions.dataset`).
    splits_to_sizes: number of images per split.
    num_classes: number of semantic ids, including the void id where it is inside the range
      (COCO: 134 = void 0 + 133 categories; Cityscapes: 19 train ids, void 255 outside).
    ignore_label: semantic id of void pixels.
    panoptic_label_divisor: `panoptic = semantic * divisor + instance`.
    class_has_instances_list: semantic ids of thing classes.
    class_names: name per semantic id in `range(num_classes)` ("void" for the void id).
    colormap: uint8 `[num_classes, 3]` RGB colour per semantic id.
    num_mask_slots: kMaX cluster centers N (128 COCO/ADE20K, 256 Cityscapes).
    pixel_decoder_output_stride: stride of the last pixel-decoder stage (2 Cityscapes, else 4).
    use_auxiliary_semantic_decoder: whether the ASPP semantic decoder is built.
    transformer_decoder_drop_path_keep_prob: keep probability of the kMaX decoder layers.
    eval_category_ids: optional id used by the official annotation files per semantic id (COCO
      category ids; Cityscapes label ids); identity when None.
  """
  name: str
  splits_to_sizes: Mapping[str, int]
  num_classes: int
  ignore_label: int
  panoptic_label_divisor: int
  class_has_instances_list: tuple[int, ...]
  class_names: tuple[str, ...]
  colormap: np.ndarray
  num_mask_slots: int = 128
  pixel_decoder_output_stride: int = 4
  use_auxiliary_semantic_decoder: bool = True
  transformer_decoder_drop_path_keep_prob: float = 0.8
  eval_category_ids: tuple[int, ...] | None = None

  @property
  def thing_class_ids(self) -> tuple[int, ...]:
    return tuple(self.class_has_instances_list)

  @property
  def stuff_class_ids(self) -> tuple[int, ...]:
    """Non-void, non-thing semantic ids in ascending order."""
    things = set(self.class_has_instances_list)
    return tuple(c for c in range(self.num_classes)
                 if c != self.ignore_label and c not in things)

  @property
  def num_class_logits(self) -> int:
    """Width of `transformer_class_logits`: every real class plus one void logit.

    deeplab2 gives the void id its own slot only when it lies outside `range(num_classes)`
    (Cityscapes: 19 + 1 = 20); where void is id 0 (COCO 134, ADE20K 151) the last logit stands
    for void and id 0 has none.
    """
    if self.ignore_label >= self.num_classes:
      return self.num_classes + 1
    return self.num_classes

  def is_thing(self, semantic_id: int) -> bool:
    return semantic_id in set(self.class_has_instances_list)

  def category_id(self, semantic_id: int) -> int:
    """The id of a semantic class in COCO panoptic files (`eval_category_ids`, else itself)."""
    return int(self.eval_category_ids[semantic_id] if self.eval_category_ids else semantic_id)


def _load_metadata(file_name: str) -> list[dict]:
  with open(_METADATA_DIR / file_name, encoding="utf-8") as f:
    return json.load(f)


def _coco() -> DatasetDescriptor:
  categories = _load_metadata("coco_panoptic.json")
  names = ["void"] + [c["name"] for c in categories]
  colors = [[0, 0, 0]] + [c["color"] for c in categories]
  return DatasetDescriptor(
      name="coco_panoptic",
      splits_to_sizes={"train": 118287, "val": 5000, "test": 40670},
      num_classes=134,
      ignore_label=0,
      panoptic_label_divisor=256,
      class_has_instances_list=tuple(c["id"] for c in categories if c["isthing"]),
      class_names=tuple(names),
      colormap=np.asarray(colors, np.uint8),
      eval_category_ids=(0,) + tuple(c["coco_id"] for c in categories),
  )


def _ade20k() -> DatasetDescriptor:
  categories = _load_metadata("ade20k_panoptic.json")
  return DatasetDescriptor(
      name="ade20k_panoptic",
      splits_to_sizes={"train": 20210, "val": 2000},
      num_classes=151,
      ignore_label=0,
      panoptic_label_divisor=1000,
      class_has_instances_list=tuple(c["id"] for c in categories if c["isthing"]),
      class_names=("void",) + tuple(c["name"] for c in categories[1:]),
      colormap=np.asarray([c["color"] for c in categories], np.uint8),
      transformer_decoder_drop_path_keep_prob=1.0,
  )


# Cityscapes train ids 0..18: (name, RGB colour, official label id).
_CITYSCAPES_CLASSES = (
    ("road", (128, 64, 128), 7), ("sidewalk", (244, 35, 232), 8),
    ("building", (70, 70, 70), 11), ("wall", (102, 102, 156), 12),
    ("fence", (190, 153, 153), 13), ("pole", (153, 153, 153), 17),
    ("traffic light", (250, 170, 30), 19), ("traffic sign", (220, 220, 0), 20),
    ("vegetation", (107, 142, 35), 21), ("terrain", (152, 251, 152), 22),
    ("sky", (70, 130, 180), 23), ("person", (220, 20, 60), 24),
    ("rider", (255, 0, 0), 25), ("car", (0, 0, 142), 26), ("truck", (0, 0, 70), 27),
    ("bus", (0, 60, 100), 28), ("train", (0, 80, 100), 31),
    ("motorcycle", (0, 0, 230), 32), ("bicycle", (119, 11, 32), 33),
)


def _cityscapes() -> DatasetDescriptor:
  return DatasetDescriptor(
      name="cityscapes_panoptic",
      splits_to_sizes={"train_fine": 2975, "val_fine": 500, "trainval_fine": 3475,
                       "test_fine": 1525},
      num_classes=19,
      ignore_label=255,
      panoptic_label_divisor=1000,
      class_has_instances_list=tuple(range(11, 19)),
      class_names=tuple(c[0] for c in _CITYSCAPES_CLASSES),
      colormap=np.asarray([c[1] for c in _CITYSCAPES_CLASSES], np.uint8),
      num_mask_slots=256,
      pixel_decoder_output_stride=2,
      use_auxiliary_semantic_decoder=False,
      eval_category_ids=tuple(c[2] for c in _CITYSCAPES_CLASSES),
  )


# The built-in dataset (kmax_tf/data/synthetic.py draws it): void 0, three textured stuff
# backgrounds and three shape classes as things.
SYNTHETIC_CLASSES = (
    ("void", (0, 0, 0), False),
    ("sky", (70, 130, 180), False),
    ("grass", (107, 142, 35), False),
    ("sand", (220, 190, 130), False),
    ("disc", (220, 20, 60), True),
    ("square", (0, 0, 142), True),
    ("triangle", (250, 170, 30), True),
)


def _synthetic() -> DatasetDescriptor:
  return DatasetDescriptor(
      name="synthetic_panoptic",
      splits_to_sizes={"train": 256, "val": 32},
      num_classes=len(SYNTHETIC_CLASSES),
      ignore_label=0,
      panoptic_label_divisor=256,
      class_has_instances_list=tuple(
          i for i, c in enumerate(SYNTHETIC_CLASSES) if c[2]),
      class_names=tuple(c[0] for c in SYNTHETIC_CLASSES),
      colormap=np.asarray([c[1] for c in SYNTHETIC_CLASSES], np.uint8),
      num_mask_slots=128,
  )


_BUILDERS = {
    "coco_panoptic": _coco,
    "cityscapes_panoptic": _cityscapes,
    "ade20k_panoptic": _ade20k,
    "synthetic_panoptic": _synthetic,
}

DATASET_NAMES: Sequence[str] = tuple(_BUILDERS)


@functools.cache
def get_dataset(name: str) -> DatasetDescriptor:
  """Returns the descriptor registered under `name`; raises ValueError naming the known ones."""
  if name not in _BUILDERS:
    raise ValueError(
        f"Unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}")
  return _BUILDERS[name]()
