"""Checks on a parsed `ExperimentOptions` that protobuf parsing cannot make.

Protobuf parsing already rejects unknown fields, wrong types and unbalanced braces. This module
rejects configs that parse but would not run, or would silently run something else: unknown
dataset/backbone names, malformed crop sizes, class counts that disagree with the dataset,
thresholds out of range, unknown values of string "enums", and `${NAME}` placeholders left in a
field that the current command uses. Each error is positioned at the offending field's line.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

from kmax_tf import datasets
from kmax_tf.config_types import ConfigError, Placeholder

# The backbones `kmax_tf.model.builder` builds (ConvNeXt: the variants deeplab2's kMaX configs use).
KMAX_BACKBONES = (
    "kmax_resnet50", "kmax_axial_resnet50", "kmax_convnext_tiny", "kmax_convnext_small",
    "kmax_convnext_base", "kmax_convnext_large",
)
AUTOAUGMENT_POLICIES = (
    "simple_classification_policy", "simple_classification_policy_magnitude_scale_0.2",
)
_STRING_CHOICES = {
    "evaluator_options.transformer_post_processing": ("pixelwise", "maskwise"),
    "trainer_options.solver_options.learning_policy": ("poly", "cosine"),
    "trainer_options.solver_options.optimizer": ("adam", "adamw", "sgd"),
}
_COPY_PASTE_CHOICES = ("none", "random", "all")
# Fields a command reads; a placeholder left in one of them is an error for that command.
TRAIN_FIELDS = ("experiment_name", "train_dataset_options.file_pattern",
                "model_options.initial_checkpoint", "model_options.backbone.pretrained_weights")
EVAL_FIELDS = ("experiment_name", "eval_dataset_options.file_pattern")

_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|#.*|[{}<>:\[\],;]|[^\s{}<>:\[\],;"\'#]+')
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")


class FieldLocator:
  """Maps dotted field paths (`train_dataset_options.crop_size`) to positions in a textproto.

  A light scan of the token structure (protobuf's parser keeps no positions of parsed fields).
  Positions are (line, column) of the field name, 1-based; a repeated field maps to its first
  occurrence.
  """

  def __init__(self, text: str):
    self._entries: list[tuple[int, int, str]] = []
    stack: list[str] = []
    expect_name = True
    current = None
    for line_number, line in enumerate(text.split("\n"), start=1):
      for match in _TOKEN.finditer(line):
        token = match.group(0)
        if token.startswith("#"):
          break
        if token in ("{", "<"):
          stack.append(current or "")
          expect_name = True
        elif token in ("}", ">"):
          if stack:
            stack.pop()
          expect_name = True
        elif token == ":":
          expect_name = False
        elif token in ("[", "]", ",", ";"):
          continue
        elif expect_name and _IDENTIFIER.fullmatch(token):
          current = token
          self._entries.append((line_number, match.start() + 1, ".".join(stack + [token])))
          # Next comes ':' and a value, or '{' (a message field may omit the colon).
          expect_name = False
        else:
          expect_name = True
    self._positions: dict[str, tuple[int, int]] = {}
    for line_number, column, path in self._entries:
      self._positions.setdefault(path, (line_number, column))

  def position(self, path: str) -> tuple[int, int]:
    """Position of `path`, else of its closest present ancestor, else (1, 1)."""
    parts = path.split(".")
    while parts:
      found = self._positions.get(".".join(parts))
      if found:
        return found
      parts.pop()
    return (1, 1)

  def field_at(self, line: int, column: int) -> str | None:
    """Dotted path of the field whose value is at (line, column)."""
    candidates = [e for e in self._entries if e[0] == line and e[1] < column]
    return max(candidates)[2] if candidates else None


class _Checker:
  """Collects nothing: raises at the first problem, positioned with the locator."""

  def __init__(self, text: str, path):
    self.locator = FieldLocator(text)
    self._path = path

  def fail(self, field: str, message: str):
    line, column = self.locator.position(field)
    raise ConfigError(self._path, line, column, f"{field}: {message}")

  def check_range(self, field: str, value: float, low: float, high: float,
                  low_open: bool = False):
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
      bracket = "(" if low_open else "["
      self.fail(field, f"{value:.6g} is outside {bracket}{low}, {high}]")

  def check_choice(self, field: str, value: str, choices: Sequence[str]):
    if value not in choices:
      self.fail(field, f"{value!r} is not one of {', '.join(repr(c) for c in choices)}")


def _get(options, dotted: str):
  value = options
  for part in dotted.split("."):
    value = getattr(value, part)
  return value


def validate(options, text: str, path, unresolved: Iterable[Placeholder],
             required_fields: Sequence[str] = ()) -> None:
  """Raises `ConfigError` for the first problem in `options` (parsed from `text` at `path`).

  Args:
    options: the parsed `ExperimentOptions`.
    text: the textproto after placeholder substitution (for positions).
    path: the file name used in messages.
    unresolved: placeholders left in the text.
    required_fields: dotted fields the caller will use; an unresolved placeholder in one of them
      (or nested below it) is an error. Use `TRAIN_FIELDS` / `EVAL_FIELDS`.
  """
  check = _Checker(text, path)
  for placeholder in unresolved:
    field = check.locator.field_at(placeholder.line, placeholder.column)
    if field and any(field == f or field.startswith(f + ".") for f in required_fields):
      raise ConfigError(
          path, placeholder.line, placeholder.column,
          f"{field}: unresolved placeholder ${{{placeholder.name}}}; set the environment "
          f"variable {placeholder.name} or pass --override {placeholder.name}=VALUE")

  if not options.ListFields():
    raise ConfigError(path, 1, 1, "empty config: no field is set (a kMaX config needs at least "
                      "`model_options { backbone { name: ... } max_deeplab { ... } }`)")
  for field in ("train_dataset_options", "eval_dataset_options"):
    if options.HasField(field):
      _validate_dataset(check, options, field)
  # Checked after the dataset fields: errors in fields written come before a missing block.
  model = options.model_options
  if model.WhichOneof("meta_architecture") != "max_deeplab":
    check.fail("model_options", "kmax-tf builds kMaX-DeepLab only: the config needs a "
               "`model_options { max_deeplab { ... } }` block")
  check.check_choice("model_options.backbone.name", model.backbone.name, KMAX_BACKBONES)
  check.check_range("model_options.backbone.drop_path_keep_prob",
                    model.backbone.drop_path_keep_prob, 0.0, 1.0, low_open=True)
  if model.max_deeplab.HasField("num_mask_slots") and model.max_deeplab.num_mask_slots < 1:
    # Written out, 0 reads as a model without mask slots; only an unset field means the default.
    check.fail("model_options.max_deeplab.num_mask_slots",
               f"{model.max_deeplab.num_mask_slots}: must be positive (leave it out for the "
               "dataset's number)")
  if options.train_dataset_options.HasField("dataset"):
    _validate_model_against_dataset(check, options)
  if options.HasField("trainer_options"):
    _validate_trainer(check, options)
  if options.HasField("evaluator_options"):
    _validate_evaluator(check, options)


def _validate_dataset(check: _Checker, options, field: str):
  dataset_options = getattr(options, field)
  # An unset dataset is allowed here (deeplab2's example config has none); the builders that
  # need it fail with their own message.
  if dataset_options.HasField("dataset"):
    check.check_choice(f"{field}.dataset", dataset_options.dataset, datasets.DATASET_NAMES)
  crop = list(dataset_options.crop_size)
  if len(crop) != 2:
    check.fail(f"{field}.crop_size", f"needs exactly two values [height, width], got {crop}")
  for value in crop:
    if value < 33 or (value - 1) % 32:
      check.fail(f"{field}.crop_size",
                 f"{value} is not of the form 32*k+1 (e.g. 641, 1025, 1281): kMaX's strided "
                 "label subsampling and corner-aligned resizing need it")
  if dataset_options.batch_size < 1:
    check.fail(f"{field}.batch_size", f"must be positive, got {dataset_options.batch_size}")
  if field == "eval_dataset_options" and dataset_options.batch_size != 1:
    check.fail(f"{field}.batch_size", "evaluation runs with batch size 1 (as deeplab2)")
  for resize_field in ("min_resize_value", "max_resize_value"):
    values = list(getattr(dataset_options, resize_field))
    if len(values) > 2 or any(v < 0 for v in values):
      check.fail(f"{field}.{resize_field}", f"expects one or two non-negative values, got {values}")
  if dataset_options.max_thing_id < 1:
    check.fail(f"{field}.max_thing_id", f"must be positive, got {dataset_options.max_thing_id}")
  if dataset_options.HasField("augmentations"):
    augmentations = dataset_options.augmentations
    prefix = f"{field}.augmentations"
    if not 0 < augmentations.min_scale_factor <= augmentations.max_scale_factor:
      check.fail(f"{prefix}.min_scale_factor",
                 f"need 0 < min_scale_factor ({augmentations.min_scale_factor}) <= "
                 f"max_scale_factor ({augmentations.max_scale_factor})")
    if augmentations.scale_factor_step_size < 0:
      check.fail(f"{prefix}.scale_factor_step_size", "must be non-negative")
    if augmentations.autoaugment_policy_name:
      check.check_choice(f"{prefix}.autoaugment_policy_name",
                         augmentations.autoaugment_policy_name, AUTOAUGMENT_POLICIES)
    if augmentations.HasField("panoptic_copy_paste"):
      copy_paste = augmentations.panoptic_copy_paste
      for option in ("thing", "stuff", "void"):
        name = f"panoptic_copy_paste_{option}_option"
        check.check_choice(f"{prefix}.panoptic_copy_paste.{name}", getattr(copy_paste, name),
                           _COPY_PASTE_CHOICES)
      check.check_range(f"{prefix}.panoptic_copy_paste.panoptic_copy_paste_scale",
                        copy_paste.panoptic_copy_paste_scale, 0.0, 1.0)


def _validate_model_against_dataset(check: _Checker, options):
  dataset = datasets.get_dataset(options.train_dataset_options.dataset)
  kmax = options.model_options.max_deeplab
  head = "model_options.max_deeplab.auxiliary_semantic_head.output_channels"
  if kmax.auxiliary_semantic_head.output_channels != dataset.num_classes:
    check.fail(head, f"{kmax.auxiliary_semantic_head.output_channels} classes, but dataset "
               f"{dataset.name!r} has {dataset.num_classes}")
  if options.HasField("eval_dataset_options") and options.eval_dataset_options.dataset:
    if options.eval_dataset_options.dataset != dataset.name:
      check.fail("eval_dataset_options.dataset",
                 f"{options.eval_dataset_options.dataset!r} differs from the train dataset "
                 f"{dataset.name!r}; the model's classes come from the train dataset")
  if kmax.HasField("transformer_decoder_drop_path_keep_prob") and (
      abs(kmax.transformer_decoder_drop_path_keep_prob
          - dataset.transformer_decoder_drop_path_keep_prob) > 1e-6):
    check.fail("model_options.max_deeplab.transformer_decoder_drop_path_keep_prob",
               f"{kmax.transformer_decoder_drop_path_keep_prob} differs from the keep probability "
               f"{dataset.transformer_decoder_drop_path_keep_prob} that {dataset.name!r} uses "
               "(deeplab2 takes it from the dataset, and so does kmax-tf)")
  if kmax.instance_discrimination_sample_k < 0:
    check.fail("model_options.max_deeplab.instance_discrimination_sample_k", "must be >= 0")
  stride = dataset.pixel_decoder_output_stride
  height, width = options.train_dataset_options.crop_size
  pixels = ((height - 1) // stride + 1) * ((width - 1) // stride + 1)
  if kmax.instance_discrimination_sample_k > pixels:
    check.fail("model_options.max_deeplab.instance_discrimination_sample_k",
               f"samples {kmax.instance_discrimination_sample_k} pixels but a {height}x{width} "
               f"crop has only {pixels} at stride {stride}")
  if kmax.pixel_decoder_width_multiplier <= 0:
    check.fail("model_options.max_deeplab.pixel_decoder_width_multiplier", "must be positive")


def _validate_trainer(check: _Checker, options):
  trainer = options.trainer_options
  solver = trainer.solver_options
  for field, choices in _STRING_CHOICES.items():
    if field.startswith("trainer_options."):
      check.check_choice(field, _get(options, field), choices)
  prefix = "trainer_options.solver_options"
  if solver.base_learning_rate <= 0:
    check.fail(f"{prefix}.base_learning_rate", "must be positive")
  if solver.training_number_of_steps < 1:
    check.fail(f"{prefix}.training_number_of_steps", "must be positive")
  if solver.warmup_steps < 0:
    check.fail(f"{prefix}.warmup_steps", "must be >= 0")
  if solver.backbone_learning_rate_multiplier < 0:
    check.fail(f"{prefix}.backbone_learning_rate_multiplier", "must be >= 0")
  for field in ("save_checkpoints_steps", "save_summaries_steps", "steps_per_loop",
                "num_checkpoints_to_keep"):
    if getattr(trainer, field) < 1:
      check.fail(f"trainer_options.{field}", "must be positive")
  losses = trainer.loss_options
  for loss in ("semantic_loss", "pq_style_loss", "mask_id_cross_entropy_loss",
               "instance_discrimination_loss"):
    if losses.HasField(loss):
      single = getattr(losses, loss)
      check.check_range(f"trainer_options.loss_options.{loss}.top_k_percent",
                        single.top_k_percent, 0.0, 1.0, low_open=True)
      if single.weight < 0:
        check.fail(f"trainer_options.loss_options.{loss}.weight", "must be >= 0")
  if losses.HasField("semantic_loss") and losses.semantic_loss.name != "softmax_cross_entropy":
    check.fail("trainer_options.loss_options.semantic_loss.name",
               f"{losses.semantic_loss.name!r}: kMaX uses 'softmax_cross_entropy'")


def _validate_evaluator(check: _Checker, options):
  evaluator = options.evaluator_options
  field = "evaluator_options.transformer_post_processing"
  check.check_choice(field, evaluator.transformer_post_processing, _STRING_CHOICES[field])
  for name in ("pixel_confidence_threshold", "transformer_class_confidence_threshold"):
    check.check_range(f"evaluator_options.{name}", getattr(evaluator, name), 0.0, 1.0)
  for name in ("thing_area_limit", "stuff_area_limit"):
    if getattr(evaluator, name) < 0:
      check.fail(f"evaluator_options.{name}", "must be >= 0")
  maskwise = evaluator.maskwise_postprocessing
  prefix = "evaluator_options.maskwise_postprocessing"
  for name in ("transformer_class_confidence_threshold_thing",
               "transformer_class_confidence_threshold_stuff", "overlapping_threshold"):
    check.check_range(f"{prefix}.{name}", getattr(maskwise, name), 0.0, 1.0)
  for name in ("reorder_class_weight", "reorder_mask_weight"):
    if getattr(maskwise, name) < 0:
      check.fail(f"{prefix}.{name}", "must be >= 0")
