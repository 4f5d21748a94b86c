"""Config -> model. The one place that reads config messages and dataset-derived settings.

deeplab2 hard-codes some architecture choices by dataset name; kmax-tf keeps them in the dataset
descriptor (`kmax_tf.datasets`) and reads them here:

| setting                                   | COCO / ADE20K | Cityscapes |
|-------------------------------------------|---------------|------------|
| num_mask_slots                            | 128           | 256        |
| pixel_decoder_output_stride               | 4             | 2          |
| use_auxiliary_semantic_decoder            | yes           | no         |
| transformer_decoder_drop_path_keep_prob   | 0.8 (ADE 1.0) | 0.8        |

The kmax-tf size fields of `MaXDeepLabOptions` (pixel_decoder_width_multiplier, ...,
num_mask_slots) override widths and depths; left unset they give deeplab2's architecture.
"""
from __future__ import annotations

import importlib

import keras
import numpy as np

from kmax_tf import config_validation
from kmax_tf import datasets
from kmax_tf.model import heads
from kmax_tf.model import kmax_deeplab
from kmax_tf.model import pixel_decoder
from kmax_tf.model import semantic_decoder
from kmax_tf.model import transformer_decoder
from kmax_tf.model.backbones import axial_resnet
from kmax_tf.model.backbones import resnet
from kmax_tf.model.layers import norm

# Endpoint strides: ResNet stems are stride 2, the ConvNeXt stem is stride 4.
_RESNET_STRIDES = {"stage1": 2, "stage2": 4, "stage3": 8, "stage4": 16, "stage5": 32}
_CONVNEXT_STRIDES = {"stage1": 4, "stage2": 4, "stage3": 8, "stage4": 16, "stage5": 32}
# Input side used to create the weights (sizes do not affect any weight shape).
_BUILD_SIZE = 33


def dataset_of(options):
  """The dataset descriptor of the training dataset (or the eval one if there is none)."""
  name = options.train_dataset_options.dataset or options.eval_dataset_options.dataset
  return datasets.get_dataset(name)


def norm_factory(options) -> norm.BatchNormFactory:
  solver = options.trainer_options.solver_options
  return norm.BatchNormFactory(momentum=solver.batchnorm_momentum,
                               epsilon=solver.batchnorm_epsilon,
                               synchronized=solver.use_sync_batchnorm)


def build_backbone(backbone_options, norm_layer):
  """Dispatch by `backbone.name`; returns a model mapping images to the endpoint dict."""
  name = backbone_options.name
  if name not in config_validation.KMAX_BACKBONES:
    raise ValueError(f"Unsupported backbone {name!r}; supported: "
                     f"{', '.join(config_validation.KMAX_BACKBONES)}")
  if name.startswith("kmax_convnext_"):
    # Imported lazily: ConvNeXt lives in its own module and is not needed by ResNet models.
    convnext = importlib.import_module("kmax_tf.model.backbones.convnext")
    variant = name[len("kmax_"):]
    return convnext.build_convnext(variant, backbone_options.drop_path_keep_prob, name=variant)
  build = resnet.build_resnet50 if name == "kmax_resnet50" else axial_resnet.build_axial_resnet50
  return build(drop_path_keep_prob=backbone_options.drop_path_keep_prob,
               width_multiplier=backbone_options.backbone_width_multiplier,
               stem_width_multiplier=backbone_options.stem_width_multiplier,
               layer_multiplier=backbone_options.backbone_layer_multiplier,
               norm_layer=norm_layer, name=name[len("kmax_"):])


def pixel_decoder_settings(max_deeplab_options, output_stride: int):
  """(dims, num_blocks, block_types) of the pixel decoder for a highest-resolution stride."""
  if output_stride == 4:
    dims, num_blocks = (512, 256, 128, 64), (1, 5, 1, 1)
  elif output_stride == 2:
    dims, num_blocks = (512, 256, 128, 64, 32), (1, 5, 1, 1, 1)
  else:
    raise ValueError(f"pixel decoder output stride must be 4 or 2, got {output_stride}")
  block_types = ("axial", "axial") + ("bottleneck",) * (len(dims) - 2)
  multiplier = max_deeplab_options.pixel_decoder_width_multiplier
  dims = tuple(int(round(d * multiplier)) for d in dims)
  if max_deeplab_options.pixel_decoder_num_blocks:
    num_blocks = tuple(max_deeplab_options.pixel_decoder_num_blocks)
    if len(num_blocks) != len(dims):
      raise ValueError(f"max_deeplab.pixel_decoder_num_blocks has {len(num_blocks)} entries; "
                       f"the pixel decoder at output stride {output_stride} has {len(dims)} "
                       "stages")
  return dims, num_blocks, block_types


def build_model(options, build: bool = True) -> kmax_deeplab.KMaXDeepLab:
  """`ExperimentOptions` -> `KMaXDeepLab`; with `build`, its weights exist on return."""
  model_options = options.model_options
  if model_options.WhichOneof("meta_architecture") != "max_deeplab":
    raise ValueError("model_options.max_deeplab is required for kMaX-DeepLab")
  kmax = model_options.max_deeplab
  dataset = dataset_of(options)
  semantic_classes = kmax.auxiliary_semantic_head.output_channels
  if semantic_classes != dataset.num_classes:
    raise ValueError(
        f"max_deeplab.auxiliary_semantic_head.output_channels={semantic_classes} but dataset "
        f"{dataset.name} has {dataset.num_classes} classes")
  norm_layer = norm_factory(options)
  encoder = build_backbone(model_options.backbone, norm_layer)
  is_convnext = model_options.backbone.name.startswith("kmax_convnext_")
  dims, num_blocks, block_types = pixel_decoder_settings(
      kmax, dataset.pixel_decoder_output_stride)
  pixel_decoder_ = pixel_decoder.KMaXPixelDecoder(
      dims, num_blocks, block_types,
      endpoint_strides=_CONVNEXT_STRIDES if is_convnext else _RESNET_STRIDES,
      norm_layer=norm_layer, name="pixel_decoder")
  num_classes = dataset.num_class_logits
  head_options = kmax.pixel_space_head
  transformer_decoder_ = transformer_decoder.KMaXTransformerDecoder(
      num_blocks=tuple(kmax.transformer_decoder_num_blocks) or (2, 2, 2),
      num_mask_slots=kmax.num_mask_slots or dataset.num_mask_slots,
      channels=kmax.transformer_decoder_channels,
      ffn_channels=kmax.transformer_decoder_ffn_channels,
      drop_path_keep_prob=dataset.transformer_decoder_drop_path_keep_prob,
      head_channels=head_options.head_channels,
      embedding_channels=head_options.output_channels, num_classes=num_classes,
      norm_layer=norm_layer, name="transformer_decoder")
  head = heads.PredictionHead(head_options.head_channels, head_options.output_channels,
                              num_classes, norm_layer=norm_layer, name="head")
  semantic_head = heads.PanopticHead(kmax.auxiliary_semantic_head.head_channels,
                                     semantic_classes, norm_layer=norm_layer,
                                     name="semantic_head")
  semantic_decoder_ = None
  if dataset.use_auxiliary_semantic_decoder:
    decoder = model_options.decoder
    semantic_decoder_ = semantic_decoder.SemanticDecoder(
        "stage5" if decoder.feature_key == "feature_semantic" else decoder.feature_key,
        [low.feature_key for low in kmax.auxiliary_low_level],
        [low.channels_project for low in kmax.auxiliary_low_level],
        decoder.aspp_channels, decoder.decoder_channels, list(decoder.atrous_rates),
        conv_type=decoder.decoder_conv_type,
        aspp_only_1x1_projection=decoder.aspp_use_only_1x1_proj_conv,
        norm_layer=norm_layer, name="semantic_decoder")
  model = kmax_deeplab.KMaXDeepLab(encoder, pixel_decoder_, transformer_decoder_, head,
                                   semantic_head, semantic_decoder_, name="kmax_deeplab")
  if build:
    # A symbolic call creates every weight without running the network (as deeplab2 does).
    model(keras.Input((_BUILD_SIZE, _BUILD_SIZE, 3), batch_size=1), training=False)
  return model


def component_parameter_counts(model: kmax_deeplab.KMaXDeepLab) -> dict[str, tuple[int, int]]:
  """`{component: (trainable, non_trainable)}` for backbone, pixel_decoder, transformer_decoder
  (with its clustering predictors), heads (final head) and aux_semantic (decoder + head)."""
  def count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)

  def counts(*layers):
    layers = [layer for layer in layers if layer is not None]
    return (sum(count(layer.trainable_weights) for layer in layers),
            sum(count(layer.non_trainable_weights) for layer in layers))

  return {"backbone": counts(model.encoder), "pixel_decoder": counts(model.pixel_decoder),
          "transformer_decoder": counts(model.transformer_decoder),
          "heads": counts(model.head),
          "aux_semantic": counts(model.semantic_decoder, model.semantic_head)}
