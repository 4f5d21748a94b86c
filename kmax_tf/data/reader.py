"""Reads deeplab2 segmentation TFRecords into model inputs and training/evaluation targets.

`build_dataset(dataset_options, is_training)` is the entry point (deeplab2's
`runner_utils.create_dataset` + `InputReader` + `PanopticSampleGenerator`):

  files (shuffled per epoch, repeated when training) -> interleave records (32 files at a time
  when training, in order at evaluation) -> shuffle 1000 -> decode and check -> preprocess
  (kmax_tf.data.augment) -> [copy-paste with a second, independently shuffled stream]
  -> targets (kmax_tf.data.targets) -> batch (drop remainder) -> prefetch.

Each record carries its file name and index through decoding, so a bad record (undecodable
image, label size mismatch, label value outside the dataset's classes) stops the pipeline with an
error naming both. `validate_records` checks files eagerly, including corrupt or truncated
records, and can count bad records instead of failing.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import tensorflow as tf

from kmax_tf import datasets
from kmax_tf.data import augment, copy_paste, targets, tfexample

SHUFFLE_BUFFER_SIZE = 1000
NUM_FILES_INTERLEAVED = 32

_FEATURES = {
    tfexample.KEY_ENCODED_IMAGE: tf.io.FixedLenFeature((), tf.string),
    tfexample.KEY_IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string),
    tfexample.KEY_IMAGE_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
    tfexample.KEY_IMAGE_HEIGHT: tf.io.FixedLenFeature((), tf.int64),
    tfexample.KEY_IMAGE_WIDTH: tf.io.FixedLenFeature((), tf.int64),
}
_LABEL_FEATURES = {
    tfexample.KEY_ENCODED_LABEL: tf.io.FixedLenFeature((), tf.string),
    tfexample.KEY_LABEL_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="raw"),
}


class RecordError(ValueError):
  """A record that cannot be used; the message names the file and the record index."""


def list_files(file_patterns: Sequence[str] | str) -> list[str]:
  """Sorted files matching any of the patterns; ValueError naming the patterns if none."""
  if isinstance(file_patterns, str):
    file_patterns = [file_patterns]
  files = sorted({f for pattern in file_patterns for f in tf.io.gfile.glob(pattern)})
  if not files:
    raise ValueError(f"No files match {list(file_patterns)}")
  return files


def check_message(error: tf.errors.OpError) -> str:
  """The first line of a failed check's message, without TensorFlow's function-node prefix."""
  line = error.message.splitlines()[0]
  return re.sub(r"^\{\{function_node [^}]*\}\}\s*(assertion failed: )?", "", line)


def _where(file_name, index):
  return ["file", file_name, "record", index]


def decode_record(serialized, descriptor: datasets.DatasetDescriptor, *, file_name="",
                  index=-1, decode_label: bool = True) -> dict:
  """Parses and checks one record.

  Returns a dict with image uint8 `[H, W, 3]`, image_name string, height/width int32 scalars and
  label int32 `[H, W, 1]` panoptic (PNG semantic labels become `semantic * divisor`, i.e. no
  instances). The checks (known image format, label size (raw byte count or PNG size), label
  values in the dataset's classes) fail with an InvalidArgumentError naming `file_name` and
  `index`.
  """
  spec = dict(_FEATURES, **(_LABEL_FEATURES if decode_label else {}))
  parsed = tf.io.parse_single_example(serialized, spec)
  height = tf.cast(parsed[tfexample.KEY_IMAGE_HEIGHT], tf.int32)
  width = tf.cast(parsed[tfexample.KEY_IMAGE_WIDTH], tf.int32)
  encoded = parsed[tfexample.KEY_ENCODED_IMAGE]
  magic = tf.strings.substr(encoded, 0, 4)
  known = (tf.strings.substr(magic, 0, 3) == b"\xff\xd8\xff") | (magic == b"\x89PNG")
  check = tf.debugging.Assert(known, ["undecodable image (neither JPEG nor PNG) in"]
                              + _where(file_name, index))
  with tf.control_dependencies([check]):
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
  size_check = tf.debugging.Assert(
      tf.reduce_all(tf.shape(image)[:2] == tf.stack([height, width])),
      ["image size differs from image/height, image/width in"] + _where(file_name, index))
  with tf.control_dependencies([size_check]):
    image = tf.identity(image)
  image.set_shape([None, None, 3])
  sample = {"image": image, "image_name": parsed[tfexample.KEY_IMAGE_FILENAME],
            "height": height, "width": width}
  if not decode_label:
    return sample

  encoded_label = parsed[tfexample.KEY_ENCODED_LABEL]
  divisor = descriptor.panoptic_label_divisor

  def raw_label():
    length_check = tf.debugging.Assert(
        tf.strings.length(encoded_label) == height * width * 4,
        ["raw label byte length is not 4 * height * width in"] + _where(file_name, index))
    with tf.control_dependencies([length_check]):
      flat = tf.io.decode_raw(encoded_label, tf.int32, little_endian=True)
    return tf.reshape(flat, tf.stack([height, width, 1]))

  def png_label():
    semantic = tf.io.decode_png(encoded_label, channels=1)
    # A PNG carries its own size; a wrong one would be stretched over the image by resizing.
    size_check = tf.debugging.Assert(
        tf.reduce_all(tf.shape(semantic)[:2] == tf.stack([height, width])),
        ["PNG label size", tf.shape(semantic)[:2], "differs from the image size",
         tf.stack([height, width]), "in"] + _where(file_name, index))
    with tf.control_dependencies([size_check]):
      return tf.cast(semantic, tf.int32) * divisor

  label = tf.cond(parsed[tfexample.KEY_LABEL_FORMAT] == "png", png_label, raw_label)
  label.set_shape([None, None, 1])
  semantic = label // divisor
  valid = (((semantic >= 0) & (semantic < descriptor.num_classes))
           | (semantic == descriptor.ignore_label))
  bad = tf.boolean_mask(label, ~valid)
  value_check = tf.debugging.Assert(
      tf.size(bad) == 0,
      [f"panoptic label value outside the classes of {descriptor.name} in"]
      + _where(file_name, index) + ["values", bad[:5]])
  with tf.control_dependencies([value_check]):
    sample["label"] = tf.identity(label)
  return sample


@dataclasses.dataclass(frozen=True)
class SampleOptions:
  """Plain-value view of `DatasetOptions` for the per-sample generator."""
  crop_size: tuple[int, int]
  min_resize_value: tuple[int, ...] = ()
  max_resize_value: tuple[int, ...] = ()
  resize_factor: int | None = None
  min_scale_factor: float = 1.0
  max_scale_factor: float = 1.0
  scale_factor_step_size: float = 0.0
  autoaugment_policy_name: str = ""
  copy_paste_scale: float = 0.0
  copy_paste_thing_option: str = "random"
  copy_paste_stuff_option: str = "random"
  copy_paste_void_option: str = "none"
  thing_id_mask_annotations: bool = True
  max_thing_id: int = 128
  small_instance_threshold: int = 0
  small_instance_weight: float = 1.0

  @classmethod
  def from_proto(cls, options) -> "SampleOptions":
    if len(options.crop_size) != 2:
      raise ValueError(f"crop_size must have 2 values, got {list(options.crop_size)}")
    aug = options.augmentations
    paste = aug.panoptic_copy_paste
    has_paste = aug.HasField("panoptic_copy_paste")
    return cls(
        crop_size=tuple(options.crop_size),
        min_resize_value=tuple(options.min_resize_value),
        max_resize_value=tuple(options.max_resize_value),
        resize_factor=options.resize_factor or None,
        min_scale_factor=aug.min_scale_factor,
        max_scale_factor=aug.max_scale_factor,
        scale_factor_step_size=aug.scale_factor_step_size,
        autoaugment_policy_name=aug.autoaugment_policy_name,
        copy_paste_scale=paste.panoptic_copy_paste_scale if has_paste else 0.0,
        copy_paste_thing_option=paste.panoptic_copy_paste_thing_option,
        copy_paste_stuff_option=paste.panoptic_copy_paste_stuff_option,
        copy_paste_void_option=paste.panoptic_copy_paste_void_option,
        thing_id_mask_annotations=options.thing_id_mask_annotations,
        max_thing_id=options.max_thing_id,
        small_instance_threshold=(options.small_instance_threshold
                                  if options.increase_small_instance_weights else 0),
        small_instance_weight=options.small_instance_weight,
    )


def make_sample(decoded: dict, seed, descriptor: datasets.DatasetDescriptor,
                options: SampleOptions, is_training: bool, paste_source: dict | None = None):
  """Preprocesses one decoded record (and optional copy-paste source) into model inputs/targets.

  Training output: image float32 `[Hc, Wc, 3]` and the keys of `targets.panoptic_targets`.
  Evaluation adds resized_image, image_name, size_raw int32 `[2]`, and semantic_raw,
  panoptic_raw int32 / is_crowd_raw bool `[H, W]` at the original size.
  """
  divisor = descriptor.panoptic_label_divisor
  void = descriptor.ignore_label * divisor
  common = dict(crop_size=options.crop_size, is_training=is_training,
                min_resize_value=options.min_resize_value,
                max_resize_value=options.max_resize_value,
                resize_factor=options.resize_factor,
                autoaugment_policy_name=options.autoaugment_policy_name)
  seeds = tf.random.split(seed, 3)
  resized_image, image, label = augment.preprocess(
      decoded["image"], decoded.get("label"), seeds[0], label_pad_value=void,
      min_scale_factor=options.min_scale_factor, max_scale_factor=options.max_scale_factor,
      scale_factor_step_size=options.scale_factor_step_size, **common)
  if paste_source is not None:
    # Padding of the pasted sample gets its own value so that it is never pasted as void.
    _, paste_image, paste_label = augment.preprocess(
        paste_source["image"], paste_source["label"], seeds[1], label_pad_value=void + 1,
        min_scale_factor=options.min_scale_factor * options.copy_paste_scale,
        max_scale_factor=options.max_scale_factor * options.copy_paste_scale,
        scale_factor_step_size=options.scale_factor_step_size, **common)
    image, label = copy_paste.panoptic_copy_paste(
        image, label, paste_image, paste_label, seeds[2], divisor=divisor,
        ignore_label=descriptor.ignore_label, padding_value=void + 1,
        thing_ids=descriptor.thing_class_ids, stuff_ids=descriptor.stuff_class_ids,
        thing_option=options.copy_paste_thing_option,
        stuff_option=options.copy_paste_stuff_option,
        void_option=options.copy_paste_void_option)
  if label is None:  # unlabelled evaluation data (decode_groundtruth_label: false)
    return {"image": image, "resized_image": resized_image, "image_name": decoded["image_name"],
            "size_raw": tf.stack([decoded["height"], decoded["width"]])}
  sample = targets.panoptic_targets(
      label[..., 0], ignore_label=descriptor.ignore_label, divisor=divisor,
      thing_ids=descriptor.thing_class_ids, max_thing_id=options.max_thing_id,
      small_instance_threshold=options.small_instance_threshold,
      small_instance_weight=options.small_instance_weight,
      thing_id_annotations=options.thing_id_mask_annotations)
  sample["image"] = image
  if not is_training:
    raw = decoded["label"][..., 0]
    semantic, _, crowd = targets.semantic_and_crowd(
        raw, divisor=divisor, thing_ids=descriptor.thing_class_ids)
    sample.update(resized_image=resized_image, image_name=decoded["image_name"],
                  size_raw=tf.stack([decoded["height"], decoded["width"]]),
                  semantic_raw=semantic, panoptic_raw=raw, is_crowd_raw=crowd)
  return sample


def _records(files: Sequence[str], is_training: bool, deterministic: bool, seed,
             input_context) -> tf.data.Dataset:
  """(file name, index, serialized record) triples."""
  num_pipelines = input_context.num_input_pipelines if input_context else 1
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  shard_records = num_pipelines > 1 and len(files) < num_pipelines
  if num_pipelines > 1 and not shard_records:
    files = files[pipeline_id::num_pipelines]
  dataset = tf.data.Dataset.from_tensor_slices(list(files))
  if is_training:
    dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()

  def read(path):
    return tf.data.TFRecordDataset(path).enumerate().map(
        lambda index, record: (path, index, record))

  dataset = dataset.interleave(
      read, cycle_length=min(NUM_FILES_INTERLEAVED, len(files)) if is_training else 1,
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic or not is_training)
  if shard_records:
    dataset = dataset.shard(num_pipelines, pipeline_id)
  if is_training:
    dataset = dataset.shuffle(SHUFFLE_BUFFER_SIZE, seed=seed)
  return dataset


def build_dataset(dataset_options, is_training: bool, *, deterministic: bool = False,
                  seed: int | None = None, input_context: tf.distribute.InputContext | None = None,
                  skip_bad_records: bool = False) -> tf.data.Dataset:
  """tf.data pipeline for `DatasetOptions` (a `kmax_tf.protos.dataset_pb2.DatasetOptions`).

  Args:
    dataset_options: the train or eval dataset options of an experiment.
    is_training: augment, shuffle and repeat (True) or evaluate in file order (False).
    deterministic: same element order and augmentations on every run (seed defaults to 0).
    seed: base seed of shuffling and augmentation.
    input_context: per-replica input pipeline (files are split across pipelines, or records
      when there are fewer files than pipelines); the batch becomes the per-replica batch.
    skip_bad_records: drop records that fail decoding/checks instead of stopping (a warning is
      logged per dropped record).

  Returns:
    Training: batches of `batch_size` (global; per replica under `input_context`) dicts of image
    and targets at the crop size. Evaluation: batches of 1 with the evaluation keys.
  """
  descriptor = datasets.get_dataset(dataset_options.dataset)
  options = SampleOptions.from_proto(dataset_options)
  if not is_training and dataset_options.batch_size != 1:
    raise ValueError(f"evaluation batch_size must be 1, got {dataset_options.batch_size}")
  if deterministic and seed is None:
    seed = 0
  files = list_files(list(dataset_options.file_pattern))
  decode_label = dataset_options.decode_groundtruth_label or is_training

  def decoded_stream(stream_seed):
    dataset = _records(files, is_training, deterministic, stream_seed, input_context)
    dataset = dataset.map(
        lambda path, index, record: decode_record(record, descriptor, file_name=path,
                                                  index=index, decode_label=decode_label),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic or not is_training)
    if skip_bad_records:
      dataset = dataset.ignore_errors(log_warning=True)
    return dataset

  dataset = decoded_stream(seed)
  use_paste = is_training and options.copy_paste_scale > 0
  if use_paste:
    dataset = tf.data.Dataset.zip(
        (dataset, decoded_stream(None if seed is None else seed + 1)))
  else:
    dataset = dataset.map(lambda decoded: (decoded, None))
  seeds = tf.data.Dataset.random(seed=seed).batch(2)
  dataset = tf.data.Dataset.zip((dataset, seeds))
  dataset = dataset.map(
      lambda pair, sample_seed: make_sample(pair[0], sample_seed, descriptor, options,
                                            is_training, pair[1]),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic or not is_training)
  batch_size = dataset_options.batch_size
  if input_context is not None and is_training:
    batch_size = input_context.get_per_replica_batch_size(batch_size)
  dataset = dataset.batch(batch_size, drop_remainder=is_training)
  return dataset.prefetch(tf.data.AUTOTUNE)


def validate_records(files: Sequence[str], descriptor: datasets.DatasetDescriptor, *,
                     skip_bad_records: bool = False, max_records_per_file: int | None = None,
                     expected_counts: Sequence[int] | None = None) -> dict:
  """Reads records eagerly and checks each one.

  Checks: the record parses, the image decodes to image/height x image/width, the label has the
  right size and only values of the dataset's classes. A corrupt or truncated record also ends its
  file (nothing after it can be read).

  Args:
    files: TFRecord paths.
    descriptor: the dataset the labels must belong to.
    skip_bad_records: count bad records (and list them) instead of raising.
    max_records_per_file: decode at most this many records per file (all are still counted).
    expected_counts: optional number of records expected per file.

  Returns:
    {"records": readable records that passed the checks, "bad": [(file, index, problem)],
     "per_file": [readable records per file]}.

  Raises:
    RecordError naming the file and record index of the first bad record (unless skipping).
  """
  decode = tf.function(lambda record, path, index: decode_record(
      record, descriptor, file_name=path, index=index))
  bad, per_file, undecodable = [], [], 0
  for file_number, path in enumerate(files):
    index = 0
    iterator = iter(tf.data.TFRecordDataset(path))
    while True:
      try:
        record = next(iterator)
      except StopIteration:
        break
      except tf.errors.OpError as e:
        problem = f"corrupt or truncated record: {e.message}"
        if not skip_bad_records:
          raise RecordError(f"{path}: record {index}: {problem}") from e
        bad.append((path, index, problem))
        break
      if max_records_per_file is None or index < max_records_per_file:
        try:
          decode(record, path, tf.constant(index, tf.int64))
        except tf.errors.InvalidArgumentError as e:
          problem = check_message(e)
          if not skip_bad_records:
            raise RecordError(f"{path}: record {index}: {problem}") from e
          bad.append((path, index, problem))
          undecodable += 1
      index += 1
    per_file.append(index)
    if expected_counts is not None and index != expected_counts[file_number]:
      raise RecordError(f"{path}: read {index} records, expected {expected_counts[file_number]}")
  return {"records": sum(per_file) - undecodable, "bad": bad, "per_file": per_file}
