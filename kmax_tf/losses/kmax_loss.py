"""The kMaX-DeepLab training objective: all loss terms, deep supervision and the total
(deeplab2's `max_deeplab_loss.py`).

Per step: ground-truth masks are built at the prediction resolution, the final output is matched
to them once, and every decoder output (final + one per decoder layer) gets the PQ-style class
and dice terms, the mask-ID cross-entropy and the instance discrimination loss with that same
matching and the same stop-gradient weights; the semantic loss is applied to the final output
only. Every term is a `[B]` tensor (per-image reduction; the trainer averages over the batch),
already multiplied by its config weight; auxiliary terms carry the same weight as the main ones.

Key names follow deeplab2: `pq_style_loss_class_term`, `pq_style_loss_mask_dice_term`,
`mask_id_cross_entropy_loss`, `instance_discrimination_loss`, `semantic_loss`,
`aux_{i}<name>` (no separator; `aux_0` is the first decoder layer) and `total_loss`.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import keras
import tensorflow as tf

from kmax_tf import datasets
from kmax_tf.losses import instance_discrimination, mask_id, pq_style, semantic
from kmax_tf.losses.ground_truth import build_mask_ground_truth
from kmax_tf.losses.matching import match
from kmax_tf.losses.reductions import check_top_k_percent

PQ_CLASS = "pq_style_loss_class_term"
PQ_DICE = "pq_style_loss_mask_dice_term"
MASK_ID = "mask_id_cross_entropy_loss"
INSTANCE_DISCRIMINATION = "instance_discrimination_loss"
SEMANTIC = "semantic_loss"
TOTAL = "total_loss"

_MASK_LOGITS = "pixel_space_mask_logits"
_FEATURES = "pixel_space_normalized_feature"
_CLASS_LOGITS = "transformer_class_logits"
_SEMANTIC_LOGITS = "semantic_logits"
_AUXILIARY = "auxiliary_outputs_pred"
# Decoder layers when `transformer_decoder_num_blocks` is empty: 2 at each of strides 32/16/8.
_DEFAULT_DECODER_LAYERS = 6


@dataclasses.dataclass(frozen=True)
class TermOptions:
  """Weight and hard-example fraction of one loss term."""
  weight: float
  top_k_percent: float = 1.0


class KMaXLoss:
  """Callable `loss(targets, outputs) -> {name: [B] float32}` (see the module docstring).

  Args:
    thing_class_ids, stuff_class_ids: dataset semantic ids in class-logit order.
    ignore_label: void semantic id.
    max_thing_id: thing-mask slots in the targets (`thing_id_class_gt` is `[B, max_thing_id]`).
    num_semantic_classes: channels expected in `semantic_logits`.
    pq_style, mask_id, instance_discrimination, semantic: options of each term; None leaves
      the term out (as an absent field does in the config).
    instance_discrimination_sample_k: pixels sampled per image for instance discrimination.
    instance_discrimination_sample_temperature: exponent of the inverse-area sampling weights.
    num_auxiliary_outputs: decoder layers supervised besides the final output (0 for eval).
    focal_alpha: weight of matched slots in the class term (and of the dice term).
    instance_discrimination_temperature: temperature of the similarity logits.
    seed: seed of the pixel sampling. The sampler's state is a variable (`seed_generator.state`)
      that the trainer checkpoints, so a resumed run draws the same pixels as an uninterrupted
      one; stateless draws also keep it reproducible under XLA.
  """

  def __init__(self, *, thing_class_ids: Sequence[int], stuff_class_ids: Sequence[int],
               ignore_label: int, max_thing_id: int, num_semantic_classes: int,
               pq_style: TermOptions | None, mask_id: TermOptions | None,
               instance_discrimination: TermOptions | None, semantic: TermOptions | None,
               instance_discrimination_sample_k: int,
               instance_discrimination_sample_temperature: float,
               num_auxiliary_outputs: int, focal_alpha: float = 0.75,
               instance_discrimination_temperature: float = (
                   instance_discrimination.DEFAULT_TEMPERATURE),
               seed: int | None = None):
    if instance_discrimination is not None and instance_discrimination_sample_k <= 0:
      raise ValueError(
          "instance_discrimination_loss needs model_options.max_deeplab."
          "instance_discrimination_sample_k > 0 (the pixel-contrastive loss of kMaX); "
          "MaX-DeepLab's mask-average variant (sample_k = 0) is not implemented")
    for name, term in (("pq_style_loss", pq_style), ("mask_id_cross_entropy_loss", mask_id),
                       ("instance_discrimination_loss", instance_discrimination),
                       ("semantic_loss", semantic)):
      if term is not None:
        check_top_k_percent(term.top_k_percent, name)
    self.thing_class_ids = tuple(thing_class_ids)
    self.stuff_class_ids = tuple(stuff_class_ids)
    self.ignore_label = ignore_label
    self.max_thing_id = max_thing_id
    self.num_semantic_classes = num_semantic_classes
    self.pq_style = pq_style
    self.mask_id = mask_id
    self.instance_discrimination = instance_discrimination
    self.semantic = semantic
    self.sample_k = instance_discrimination_sample_k
    self.sample_temperature = instance_discrimination_sample_temperature
    self.num_auxiliary_outputs = num_auxiliary_outputs
    self.focal_alpha = focal_alpha
    self.instance_discrimination_temperature = instance_discrimination_temperature
    self.seed_generator = keras.random.SeedGenerator(seed)

  @property
  def loss_names(self) -> tuple[str, ...]:
    """Keys of the returned dict, `total_loss` last."""
    per_output = []
    if self.pq_style is not None:
      per_output += [PQ_CLASS, PQ_DICE]
    if self.mask_id is not None:
      per_output.append(MASK_ID)
    if self.instance_discrimination is not None:
      per_output.append(INSTANCE_DISCRIMINATION)
    names = list(per_output) + ([SEMANTIC] if self.semantic is not None else [])
    for index in range(self.num_auxiliary_outputs):
      names += [f"aux_{index}{name}" for name in per_output]
    return tuple(names) + (TOTAL,)

  def _decoder_outputs(self, outputs: Mapping) -> list[Mapping]:
    heads = [outputs]
    if self.num_auxiliary_outputs:
      if _AUXILIARY not in outputs:
        raise ValueError(f"outputs lack '{_AUXILIARY}' but the loss supervises "
                         f"{self.num_auxiliary_outputs} decoder layers (training=True)")
      auxiliary = tuple(outputs[_AUXILIARY])
      if len(auxiliary) != self.num_auxiliary_outputs:
        raise ValueError(f"outputs['{_AUXILIARY}'] has {len(auxiliary)} entries, expected "
                         f"{self.num_auxiliary_outputs} (one per decoder layer)")
      heads += list(auxiliary)
    flat = []
    for index, head in enumerate(heads):
      where = "outputs" if index == 0 else f"outputs['{_AUXILIARY}'][{index - 1}]"
      for key in (_MASK_LOGITS, _FEATURES, _CLASS_LOGITS):
        if key not in head:
          raise ValueError(f"{where} lacks '{key}'")
      mask_logits = tf.cast(head[_MASK_LOGITS], tf.float32)
      features = tf.cast(head[_FEATURES], tf.float32)
      if mask_logits.shape.rank != 4 or features.shape.rank != 4:
        raise ValueError(f"{where}: '{_MASK_LOGITS}' {mask_logits.shape} and '{_FEATURES}' "
                         f"{features.shape} must be [B, h, w, channels]")
      if index and mask_logits.shape[1:] != heads[0][_MASK_LOGITS].shape[1:]:
        raise ValueError(f"{where}['{_MASK_LOGITS}'] has shape {mask_logits.shape}, expected the "
                         f"final output's {heads[0][_MASK_LOGITS].shape} (resized to stride 4)")
      _, height, width, num_slots = mask_logits.shape
      flat.append({
          _MASK_LOGITS: tf.reshape(mask_logits, [-1, height * width, num_slots]),
          _FEATURES: tf.reshape(features, [-1, height * width, features.shape[-1]]),
          _CLASS_LOGITS: tf.cast(head[_CLASS_LOGITS], tf.float32),
      })
    return flat

  def __call__(self, targets: Mapping[str, tf.Tensor],
               outputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Computes every term.

    Args:
      targets: batched data-pipeline targets; uses `semantic_gt`, `thing_id_mask_gt`,
        `thing_id_class_gt` ([B, max_thing_id]) and `semantic_loss_weight`.
      outputs: model outputs (any float dtype; computed in float32).

    Returns:
      dict of `[B]` float32 tensors keyed by `loss_names`.
    """
    for key in ("semantic_gt", "thing_id_mask_gt", "thing_id_class_gt"):
      if key not in targets:
        raise ValueError(f"targets lack '{key}'")
    if targets["thing_id_class_gt"].shape[-1] != self.max_thing_id:
      raise ValueError(f"targets['thing_id_class_gt'] has shape "
                       f"{targets['thing_id_class_gt'].shape}; expected [B, {self.max_thing_id}] "
                       "(max_thing_id of the dataset options)")
    heads = self._decoder_outputs(outputs)
    final = heads[0]
    height, width = outputs[_MASK_LOGITS].shape[1:3]
    num_classes = len(self.thing_class_ids) + len(self.stuff_class_ids) + 1
    if final[_CLASS_LOGITS].shape[-1] != num_classes:
      raise ValueError(f"outputs['{_CLASS_LOGITS}'] has shape {final[_CLASS_LOGITS].shape}; "
                       f"expected {num_classes} classes (things + stuff + void)")

    gt = build_mask_ground_truth(
        targets["semantic_gt"], targets["thing_id_mask_gt"], targets["thing_id_class_gt"],
        (height, width), thing_class_ids=self.thing_class_ids,
        stuff_class_ids=self.stuff_class_ids, ignore_label=self.ignore_label)
    result = match(gt, final[_MASK_LOGITS], final[_CLASS_LOGITS])
    class_targets, class_weights = pq_style.class_term_targets(
        gt, result, final[_MASK_LOGITS], self.focal_alpha)

    losses = {}
    for index, head in enumerate(heads):
      prefix = "" if index == 0 else f"aux_{index - 1}"
      if self.pq_style is not None:
        losses[prefix + PQ_CLASS] = self.pq_style.weight * pq_style.class_term(
            head[_CLASS_LOGITS], class_targets, class_weights)
        losses[prefix + PQ_DICE] = self.pq_style.weight * pq_style.mask_dice_term(
            head[_MASK_LOGITS], gt, result, self.focal_alpha)
      if self.mask_id is not None:
        losses[prefix + MASK_ID] = self.mask_id.weight * mask_id.mask_id_cross_entropy(
            head[_MASK_LOGITS], gt, result, self.mask_id.top_k_percent)
      if self.instance_discrimination is not None:
        # Each output draws its own pixels, as deeplab2 does.
        samples = instance_discrimination.sample_pixels(gt, self.sample_k,
                                                        self.sample_temperature,
                                                        self.seed_generator)
        losses[prefix + INSTANCE_DISCRIMINATION] = (
            self.instance_discrimination.weight *
            instance_discrimination.instance_discrimination_loss(
                head[_FEATURES], gt, samples, self.instance_discrimination_temperature,
                self.instance_discrimination.top_k_percent))
      if index == 0 and self.semantic is not None:
        losses[SEMANTIC] = self.semantic.weight * self._semantic_loss(targets, outputs)
    losses[TOTAL] = tf.add_n(list(losses.values()))
    return {name: losses[name] for name in self.loss_names}

  def _semantic_loss(self, targets, outputs) -> tf.Tensor:
    if _SEMANTIC_LOGITS not in outputs:
      raise ValueError(f"outputs lack '{_SEMANTIC_LOGITS}' but the config has a semantic_loss")
    if "semantic_loss_weight" not in targets:
      raise ValueError("targets lack 'semantic_loss_weight'")
    logits = tf.cast(outputs[_SEMANTIC_LOGITS], tf.float32)
    if logits.shape[-1] != self.num_semantic_classes:
      raise ValueError(f"outputs['{_SEMANTIC_LOGITS}'] has shape {logits.shape}; expected "
                       f"{self.num_semantic_classes} channels (the dataset's num_classes)")
    return semantic.semantic_cross_entropy(
        logits, targets["semantic_gt"], targets["semantic_loss_weight"],
        ignore_label=self.ignore_label, top_k_percent=self.semantic.top_k_percent)


def _term(loss_options, field: str) -> TermOptions | None:
  if not loss_options.HasField(field):
    return None
  term = getattr(loss_options, field)
  return TermOptions(weight=term.weight, top_k_percent=term.top_k_percent)


def build_loss(options, training: bool = True, seed: int | None = None) -> KMaXLoss:
  """Builds the loss of an `ExperimentOptions`.

  Weights and hard-example fractions come from `trainer_options.loss_options`, the instance
  discrimination sampling from `model_options.max_deeplab`, class bookkeeping from the training
  dataset's descriptor. `training=False` builds the evaluation loss: final output only.
  """
  dataset = datasets.get_dataset(options.train_dataset_options.dataset)
  loss_options = options.trainer_options.loss_options
  max_deeplab = options.model_options.max_deeplab
  if loss_options.HasField("semantic_loss") and (
      loss_options.semantic_loss.name not in ("", "softmax_cross_entropy")):
    raise ValueError(f"trainer_options.loss_options.semantic_loss.name: kMaX supports "
                     f"'softmax_cross_entropy', got {loss_options.semantic_loss.name!r}")
  num_layers = (sum(max_deeplab.transformer_decoder_num_blocks)
                or _DEFAULT_DECODER_LAYERS)
  return KMaXLoss(
      thing_class_ids=dataset.thing_class_ids,
      stuff_class_ids=dataset.stuff_class_ids,
      ignore_label=dataset.ignore_label,
      max_thing_id=options.train_dataset_options.max_thing_id,
      num_semantic_classes=dataset.num_classes,
      pq_style=_term(loss_options, "pq_style_loss"),
      mask_id=_term(loss_options, "mask_id_cross_entropy_loss"),
      instance_discrimination=_term(loss_options, "instance_discrimination_loss"),
      semantic=_term(loss_options, "semantic_loss"),
      instance_discrimination_sample_k=max_deeplab.instance_discrimination_sample_k,
      instance_discrimination_sample_temperature=(
          max_deeplab.instance_discrimination_sample_temperature),
      num_auxiliary_outputs=num_layers if training else 0,
      seed=seed)
