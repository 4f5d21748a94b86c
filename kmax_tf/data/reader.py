"""Reads deeplab2 segmentation TFRecords into model inputs and training/evaluation targets.

`build_dataset(dataset_options, is_training)` is the entry point (deeplab2's
`runner_utils.create_dataset` + `InputReader` + `PanopticSampleGenerator`):

  per epoch: files (shuffled when training) -> interleave records (32 files at a time when
  training, in order at evaluation) -> shuffle 1000 (training) -> decode and check ->
  preprocess (kmax_tf.data.augment) -> [copy-paste with a second, independently shuffled
  stream] -> targets (kmax_tf.data.targets) -> batch (drop remainder) -> prefetch.

Training repeats epochs, each shuffled by a seed derived from the base seed and the epoch, with
per-sample augmentation seeds derived from the record's (epoch, position): a training stream is
resumed exactly from a seed and a position (`input_position`) instead of a checkpoint of the
pipeline's buffers. Each record carries its file name and index through decoding, so a bad
record (truncated or corrupt file, missing feature, undecodable image, label size mismatch,
label value outside the dataset's classes) stops the pipeline with an error naming both, or is
dropped and counted with `skip_bad_records`. `validate_records` checks files eagerly and can
count bad records instead of failing.
"""
from __future__ import annotations

import dataclasses
import random
import re
from typing import Sequence

import tensorflow as tf

from kmax_tf import datasets
from kmax_tf.data import augment, copy_paste, targets, tfexample

SHUFFLE_BUFFER_SIZE = 1000
NUM_FILES_INTERLEAVED = 32

# Features every record must have exactly one value of; parsed as VarLenFeature so that a missing
# one fails a check naming it (and the record) instead of a parse error naming neither.
_REQUIRED_FEATURES = {
    tfexample.KEY_ENCODED_IMAGE: tf.string,
    tfexample.KEY_IMAGE_FILENAME: tf.string,
    tfexample.KEY_IMAGE_HEIGHT: tf.int64,
    tfexample.KEY_IMAGE_WIDTH: tf.int64,
}
_REQUIRED_LABEL_FEATURES = {tfexample.KEY_ENCODED_LABEL: tf.string}
_OPTIONAL_FEATURES = {
    tfexample.KEY_IMAGE_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
    tfexample.KEY_LABEL_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="raw"),
}
# TFRecord framing around each record's data: length (8 bytes) and its CRC (4), data CRC (4).
_RECORD_FRAMING_BYTES = 16
# Graph-level seed of each training epoch's shuffles (their op seed comes from the base seed).
_GRAPH_SEED = 1
# Training streams are endless; `Dataset.range` needs an end.
_MAX_EPOCHS = 2**62
# Training samples carry `input_position`: where the main and the copy-paste stream continue
# after the sample, as (epoch, position within the epoch's seeded order) of each stream's next
# record (the copy-paste stream's are zeros without copy-paste); `build_dataset(start=...)`.
POSITION_SIZE = 4


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
  required = dict(_REQUIRED_FEATURES, **(_REQUIRED_LABEL_FEATURES if decode_label else {}))
  spec = dict(_OPTIONAL_FEATURES,
              **{key: tf.io.VarLenFeature(dtype) for key, dtype in required.items()})
  parsed = tf.io.parse_single_example(serialized, spec)
  for key in required:
    values = parsed[key].values
    present = tf.debugging.Assert(
        tf.size(values) == 1,
        [f"feature {key} is missing (or not one value) in"] + _where(file_name, index))
    with tf.control_dependencies([present]):
      parsed[key] = tf.reshape(values, [])
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


def _read_file(path, size) -> tf.data.Dataset:
  """(path, index, serialized record, unreadable) of each record of one TFRecord file.

  A truncated or corrupt record ends its file (TFRecordDataset moves on to the next file after a
  read error) with an error that names neither file nor record. Here the error is dropped and
  found instead by the bytes read falling short of the file's `size`: the file then yields one
  more element, `unreadable` true and empty, with the index of the first record not read.
  """
  records = tf.data.TFRecordDataset(path).ignore_errors().map(lambda record: (record, False))
  end = tf.data.Dataset.from_tensors((tf.constant(b""), True))

  def account(state, element):
    offset, count = state
    record, is_end = element
    next_offset = offset + tf.cast(tf.strings.length(record), tf.int64) + _RECORD_FRAMING_BYTES
    state = (tf.where(is_end, offset, next_offset), tf.where(is_end, count, count + 1))
    return state, (count, record, is_end, is_end & (offset != size))

  accounted = records.concatenate(end).scan(
      (tf.constant(0, tf.int64), tf.constant(0, tf.int64)), account)
  accounted = accounted.filter(lambda index, record, is_end, unreadable: ~is_end | unreadable)
  return accounted.map(lambda index, record, is_end, unreadable: (path, index, record, unreadable))


def _epoch_seed(seed, epoch):
  """The shuffle seed of one epoch: each epoch has its own order, fixed by `seed`."""
  return seed * 1_000_003 + epoch


def _records(files: Sequence[str], is_training: bool, deterministic: bool, seed,
             input_context, start: tuple[int, int] = (0, 0)) -> tf.data.Dataset:
  """(tags, file name, index, serialized record, unreadable) tuples.

  `tags` is int64 `[2]`: (epoch, position of the record within its epoch). An epoch's order is a
  function of `seed` and the epoch only (files shuffled, 32 interleaved, records shuffled in a
  buffer of 1000), so a stream restarted at `start` = (epoch, position) continues exactly where
  a deterministic run left it: it skips that epoch's first `position` records, read but not
  decoded. Training streams are endless; evaluation reads the files once, in order.
  """
  num_pipelines = input_context.num_input_pipelines if input_context else 1
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  shard_records = num_pipelines > 1 and len(files) < num_pipelines
  if num_pipelines > 1 and not shard_records:
    files = files[pipeline_id::num_pipelines]
  sizes = [tf.io.gfile.stat(path).length for path in files]
  files_and_sizes = tf.data.Dataset.from_tensor_slices(
      (list(files), tf.constant(sizes, tf.int64)))
  cycle_length = min(NUM_FILES_INTERLEAVED, len(files)) if is_training else 1

  def one_epoch(epoch):
    dataset = files_and_sizes
    if is_training:
      # Traced by flat_map, so this seeds this function's graph only: the order depends on
      # `seed` and the epoch alone, whatever the global seed (at 0, Dataset.shuffle would
      # refuse the tensor seed).
      tf.random.set_seed(_GRAPH_SEED)
      dataset = dataset.shuffle(len(files), seed=_epoch_seed(seed, epoch))
    dataset = dataset.interleave(
        _read_file, cycle_length=cycle_length, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic or not is_training)
    if shard_records:
      dataset = dataset.shard(num_pipelines, pipeline_id)
    if is_training:
      dataset = dataset.shuffle(SHUFFLE_BUFFER_SIZE, seed=_epoch_seed(seed, epoch))
    return dataset.enumerate().map(
        lambda position, record: (tf.stack([epoch, position]),) + record)

  if not is_training:
    return one_epoch(tf.constant(0, tf.int64))
  start_epoch, start_position = (int(value) for value in start)
  return tf.data.Dataset.range(start_epoch, _MAX_EPOCHS).flat_map(
      lambda epoch: one_epoch(epoch).skip(
          tf.where(epoch == start_epoch, tf.constant(start_position, tf.int64), 0)))


def resolve_seed(seed: int | None, deterministic: bool, is_training: bool) -> int:
  """The base seed `build_dataset` uses: `seed`, else 0 when deterministic or evaluating, else a
  random one (callers that checkpoint the input stream resolve it first and keep it)."""
  if seed is not None:
    return seed
  return 0 if deterministic or not is_training else random.randrange(2**31 - 1)


def build_dataset(dataset_options, is_training: bool, *, deterministic: bool = False,
                  seed: int | None = None, input_context: tf.distribute.InputContext | None = None,
                  skip_bad_records: bool = False,
                  start: Sequence[int] | None = None) -> tf.data.Dataset:
  """tf.data pipeline for `DatasetOptions` (a `kmax_tf.protos.dataset_pb2.DatasetOptions`).

  Args:
    dataset_options: the train or eval dataset options of an experiment.
    is_training: augment, shuffle and repeat (True) or evaluate in file order (False).
    deterministic: same element order and augmentations on every run (seed defaults to 0).
    seed: base seed of shuffling and augmentation (training: a random one if None).
    input_context: per-replica input pipeline (files are split across pipelines, or records
      when there are fewer files than pipelines); the batch becomes the per-replica batch.
    skip_bad_records: drop records that fail reading, decoding or checks instead of stopping (a
      warning naming the record is logged per dropped record; training samples count them).
    start: training only: where to start, the `input_position` of the last sample consumed
      (POSITION_SIZE values); None: the beginning.

  Returns:
    Training: batches of `batch_size` (global; per replica under `input_context`) dicts of image
    and targets at the crop size, plus `input_position` int64 `[B, POSITION_SIZE]` and
    `skipped_records` int64 `[B]` (bad records dropped just before each sample). Evaluation:
    batches of 1 with the evaluation keys.
  """
  descriptor = datasets.get_dataset(dataset_options.dataset)
  options = SampleOptions.from_proto(dataset_options)
  if not is_training and dataset_options.batch_size != 1:
    raise ValueError(f"evaluation batch_size must be 1, got {dataset_options.batch_size}")
  seed = resolve_seed(seed, deterministic, is_training)
  start = tuple(start) if start is not None else (0,) * POSITION_SIZE
  if len(start) != POSITION_SIZE:
    raise ValueError(f"start must have {POSITION_SIZE} values, got {start}")
  files = list_files(list(dataset_options.file_pattern))
  decode_label = dataset_options.decode_groundtruth_label or is_training
  # Counting the records dropped before each sample needs the decoded records in input order.
  in_order = deterministic or not is_training or skip_bad_records

  def decode(tags, path, index, record, unreadable):
    readable = tf.debugging.Assert(
        ~unreadable,
        ["truncated or corrupt record (or not a TFRecord file) in"] + _where(path, index))
    with tf.control_dependencies([readable]):
      record = tf.identity(record)
    return tags, decode_record(record, descriptor, file_name=path, index=index,
                               decode_label=decode_label)

  def decoded_stream(stream_seed, stream_start):
    """(tags, decoded record, records dropped just before it)."""
    dataset = _records(files, is_training, deterministic, stream_seed, input_context,
                       stream_start).enumerate()
    dataset = dataset.map(lambda number, record: (number,) + decode(*record),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=in_order)
    if skip_bad_records:
      dataset = dataset.ignore_errors(log_warning=True)

    def count_dropped(previous, element):
      number, tags, decoded = element
      return number, (tags, decoded, number - previous - 1)

    return dataset.scan(tf.constant(-1, tf.int64), count_dropped)

  dataset = decoded_stream(seed, start[:2])
  use_paste = is_training and options.copy_paste_scale > 0
  if use_paste:
    dataset = tf.data.Dataset.zip((dataset, decoded_stream(seed + 1, start[2:])))
  else:
    dataset = dataset.map(lambda *stream: (stream, None))

  def sample(stream, paste_stream):
    tags, decoded, dropped = stream
    # Stateless per-sample seed: the same record position gets the same augmentation after a
    # restart, with no random-number state to carry.
    sample_seed = tf.stack([tf.constant(seed, tf.int64), tags[0] * 2**32 + tags[1]])
    result = make_sample(decoded, sample_seed, descriptor, options, is_training,
                         None if paste_stream is None else paste_stream[1])
    if is_training:
      after = tf.constant([0, 1], tf.int64)  # The stream resumes with the next record.
      paste_next = tf.zeros([2], tf.int64) if paste_stream is None else paste_stream[0] + after
      result["input_position"] = tf.concat([tags + after, paste_next], 0)
      result["skipped_records"] = dropped + (0 if paste_stream is None else paste_stream[2])
    return result

  dataset = dataset.map(sample, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=deterministic or not is_training)
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
