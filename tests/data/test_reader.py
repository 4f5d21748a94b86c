"""Reader: deterministic pipeline, target consistency, eval samples, sharding, bad records."""
import os

import numpy as np
import pytest
import tensorflow as tf

from kmax_tf import datasets
from kmax_tf.data import reader, shards, synthetic, tfexample
from kmax_tf.protos import dataset_pb2

SYNTHETIC = datasets.get_dataset("synthetic_panoptic")


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("synthetic"))
  synthetic.write_split(directory, "train", 12, image_size=32, seed=5, num_shards=3)
  synthetic.write_split(directory, "val", 2, image_size=32, seed=5, num_shards=1)
  return directory


def _options(pattern, batch_size=4, **augmentations):
  options = dataset_pb2.DatasetOptions(
      dataset="synthetic_panoptic", file_pattern=[pattern], batch_size=batch_size,
      crop_size=[33, 33], min_resize_value=[33], max_resize_value=[33],
      thing_id_mask_annotations=True, max_thing_id=16)
  options.augmentations.min_scale_factor = 0.5
  options.augmentations.max_scale_factor = 1.5
  options.augmentations.scale_factor_step_size = 0.25
  for key, value in augmentations.items():
    if key.startswith("panoptic_copy_paste"):
      setattr(options.augmentations.panoptic_copy_paste, key, value)
    else:
      setattr(options.augmentations, key, value)
  return options


def _take(dataset, n):
  return [{k: v.numpy() for k, v in batch.items()} for batch in dataset.take(n)]


def test_deterministic_mode_repeats_exactly(synthetic_dir):
  options = _options(os.path.join(synthetic_dir, "train-*"), batch_size=2)
  a = _take(reader.build_dataset(options, True, deterministic=True, seed=1), 2)
  b = _take(reader.build_dataset(options, True, deterministic=True, seed=1), 2)
  c = _take(reader.build_dataset(options, True, deterministic=True, seed=2), 1)
  for x, y in zip(a, b):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  assert not np.array_equal(a[0]["image"], c[0]["image"])


@pytest.mark.parametrize("copy_paste", [False, True])
def test_restart_from_input_position_continues_exactly(synthetic_dir, copy_paste):
  """What the trainer checkpoints instead of the pipeline's buffers: (epoch, position) per stream.

  12 records, batches of 2: the restart at batch 5 is in epoch 0 and the batches after it
  cross into epoch 1.
  """
  paste = dict(panoptic_copy_paste_scale=0.5) if copy_paste else {}
  options = _options(os.path.join(synthetic_dir, "train-*"), batch_size=2, **paste)
  uninterrupted = _take(reader.build_dataset(options, True, deterministic=True, seed=3), 9)
  positions = np.concatenate([batch["input_position"] for batch in uninterrupted])
  assert positions[:, 0].tolist() == [0] * 12 + [1] * 6
  assert positions[:, 1].tolist() == list(range(1, 13)) + list(range(1, 7))
  resumed = _take(reader.build_dataset(options, True, deterministic=True, seed=3,
                                       start=uninterrupted[4]["input_position"][-1]), 4)
  for expected, batch in zip(uninterrupted[5:], resumed):
    for key in expected:
      np.testing.assert_array_equal(batch[key], expected[key], err_msg=key)
  assert (positions[:, 2:] != 0).any() == copy_paste


def test_training_batch_targets_are_consistent(synthetic_dir):
  options = _options(os.path.join(synthetic_dir, "train-*"),
                     autoaugment_policy_name="simple_classification_policy",
                     panoptic_copy_paste_scale=0.5, panoptic_copy_paste_thing_option="all")
  [batch] = _take(reader.build_dataset(options, True, deterministic=True), 1)
  assert batch["image"].shape == (4, 33, 33, 3) and batch["image"].dtype == np.float32
  assert batch["thing_id_class_gt"].shape == (4, 16)
  np.testing.assert_array_equal(batch["semantic_gt"], batch["panoptic_gt"] // 256)
  for mask, classes, semantic in zip(batch["thing_id_mask_gt"], batch["thing_id_class_gt"],
                                     batch["semantic_gt"]):
    count = int((classes >= 0).sum())
    assert (classes[count:] == -1).all()
    assert sorted(np.unique(mask[mask >= 0]).tolist()) == list(range(count))
    for k in range(count):
      assert (semantic[mask == k] == classes[k]).all()


def test_eval_samples_keep_raw_labels(synthetic_dir):
  options = _options(os.path.join(synthetic_dir, "val-*"), batch_size=1)
  samples = _take(reader.build_dataset(options, False), 5)
  assert len(samples) == 2  # no repeat at evaluation, file order
  for index, sample in enumerate(samples):
    _, panoptic = synthetic.draw_scene(synthetic.scene_rng(5, "val", index), 32)
    assert sample["image_name"][0] == f"synthetic_val_{index:06d}".encode()
    np.testing.assert_array_equal(sample["panoptic_raw"][0], panoptic)
    np.testing.assert_array_equal(sample["semantic_raw"][0], panoptic // 256)
    np.testing.assert_array_equal(sample["size_raw"][0], [32, 32])
    assert sample["image"].shape == (1, 33, 33, 3)
    assert sample["resized_image"].shape == (1, 33, 33, 3)


def test_input_context_splits_files_or_records(synthetic_dir):
  def names(pattern, pipeline):
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                         num_replicas_in_sync=2)
    dataset = reader._records(reader.list_files(pattern), False, True, None, context)
    return [os.path.basename(f.numpy().decode()) + f":{int(i)}" for _, f, i, _, _ in dataset]
  train = os.path.join(synthetic_dir, "train-*")
  first, second = names(train, 0), names(train, 1)
  assert not set(first) & set(second) and len(first) + len(second) == 12
  val = os.path.join(synthetic_dir, "val-*")  # one file, two pipelines: records are split
  assert names(val, 0) == ["val-00000-of-00001.tfrecord:0"]
  assert names(val, 1) == ["val-00000-of-00001.tfrecord:1"]


def _write(path, records):
  shards.write_shard(path, records)
  return path


def _good(index):
  image, panoptic = synthetic.draw_scene(synthetic.scene_rng(0, "train", index), 32)
  return tfexample.make_features(tfexample.encode_image(image, "png"), "png", f"g{index}",
                                 panoptic_label=panoptic)


def test_label_outside_classes_names_file_and_record(tmp_path):
  bad = _good(1)
  label = np.frombuffer(bad[tfexample.KEY_ENCODED_LABEL], "<i4").copy()
  label[0] = 9 * 256  # class 9 does not exist
  bad[tfexample.KEY_ENCODED_LABEL] = label.tobytes()
  path = _write(str(tmp_path / "bad-00000-of-00001.tfrecord"),
                [tfexample.serialize(_good(0)), tfexample.serialize(bad)])
  with pytest.raises(reader.RecordError, match=r"bad-00000-of-00001.tfrecord: record 1: .*"
                                               r"outside the classes"):
    reader.validate_records([path], SYNTHETIC)
  result = reader.validate_records([path], SYNTHETIC, skip_bad_records=True)
  assert result["records"] == 1 and [b[1] for b in result["bad"]] == [1]
  # The training pipeline stops with the file and record index in the message...
  options = _options(path, batch_size=1)
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"(?s)bad-00000-of-00001.*record.*1"):
    _take(reader.build_dataset(options, False), 2)
  # ...or drops the record when asked to.
  assert len(_take(reader.build_dataset(options, False, skip_bad_records=True), 5)) == 1


def test_undecodable_image_and_truncated_file(tmp_path):
  broken = _good(0)
  broken[tfexample.KEY_ENCODED_IMAGE] = b"GIF89a-not-really"
  path = _write(str(tmp_path / "img.tfrecord"), [tfexample.serialize(broken)])
  with pytest.raises(reader.RecordError, match=r"img.tfrecord: record 0: .*undecodable image"):
    reader.validate_records([path], SYNTHETIC)

  path = _write(str(tmp_path / "cut.tfrecord"),
                [tfexample.serialize(_good(i)) for i in range(3)])
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) - 50])
  with pytest.raises(reader.RecordError, match=r"cut.tfrecord: record 2: corrupt or truncated"):
    reader.validate_records([path], SYNTHETIC)
  result = reader.validate_records([path], SYNTHETIC, skip_bad_records=True)
  assert result["records"] == 2 and result["bad"][0][1] == 2


def _bad_files(tmp_path):
  """{kind: (path, index of the bad record)}: a truncated shard, random bytes, a missing key."""
  cut = _write(str(tmp_path / "cut.tfrecord"), [tfexample.serialize(_good(i)) for i in range(3)])
  with open(cut, "r+b") as f:
    f.truncate(os.path.getsize(cut) - 50)
  noise = str(tmp_path / "noise.tfrecord")
  with open(noise, "wb") as f:
    f.write(np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes())
  keyless = _good(5)
  del keyless[tfexample.KEY_IMAGE_HEIGHT]
  missing = _write(str(tmp_path / "missing.tfrecord"),
                   [tfexample.serialize(r) for r in (_good(3), keyless, _good(4))])
  return {"truncated": (cut, 2), "random_bytes": (noise, 0), "missing_key": (missing, 1)}


@pytest.mark.parametrize("kind", ["truncated", "random_bytes", "missing_key"])
def test_training_on_a_bad_file_names_file_and_record(tmp_path, kind):
  path, index = _bad_files(tmp_path)[kind]
  good = _write(str(tmp_path / "good.tfrecord"), [tfexample.serialize(_good(9))])
  options = _options(str(tmp_path / "*.tfrecord"), batch_size=1)
  del options.file_pattern[:]
  options.file_pattern.extend([good, path])
  problem = "feature image/height is missing" if kind == "missing_key" else "truncated or corrupt"
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=rf"(?s){problem}.*\[{path}\] \[record\] \[{index}\]"):
    _take(reader.build_dataset(options, True, deterministic=True), 6)


def test_training_skips_and_counts_bad_records(tmp_path):
  bad = _bad_files(tmp_path)
  _write(str(tmp_path / "good.tfrecord"), [tfexample.serialize(_good(9))])
  options = _options(str(tmp_path / "*.tfrecord"), batch_size=1)
  with pytest.raises(tf.errors.InvalidArgumentError):
    _take(reader.build_dataset(options, True, deterministic=True), 8)
  samples = _take(reader.build_dataset(options, True, deterministic=True, skip_bad_records=True), 8)
  # An epoch has 5 good records (cut: 2, missing: 2, good: 1) and one bad record per bad file.
  epochs = [int(s["input_position"][0, 0]) for s in samples]
  assert epochs == [0] * 5 + [1] * 3
  # Dropped records are counted in the sample after them: all of epoch 0's, and those of
  # epoch 1 that came before its first sample (all of them bad, so its position counts them).
  skipped = [int(s["skipped_records"][0]) for s in samples]
  assert sum(skipped[:6]) == len(bad) + int(samples[5]["input_position"][0, 1]) - 1


def test_no_files_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="No files match"):
    reader.list_files(str(tmp_path / "nothing-*.tfrecord"))


def test_png_semantic_label_becomes_panoptic_without_instances(tmp_path):
  semantic = np.array([[0, 1, 4], [5, 6, 2]], np.uint8)
  features = tfexample.make_features(
      tfexample.encode_image(np.zeros((2, 3, 3), np.uint8), "png"), "png", "sem",
      semantic_png=tfexample.encode_image(semantic, "png"))
  decoded = reader.decode_record(tfexample.serialize(features), SYNTHETIC)
  np.testing.assert_array_equal(decoded["label"].numpy()[..., 0], semantic.astype(int) * 256)


def test_png_label_of_another_size_is_rejected_naming_the_record(tmp_path):
  good = tfexample.make_features(
      tfexample.encode_image(np.zeros((4, 6, 3), np.uint8), "png"), "png", "ok",
      semantic_png=tfexample.encode_image(np.ones((4, 6), np.uint8), "png"))
  stretched = dict(good, **{tfexample.KEY_ENCODED_LABEL:  # make_features would refuse it
                            tfexample.encode_image(np.ones((2, 3), np.uint8), "png")})
  path = _write(str(tmp_path / "sem-00000-of-00001.tfrecord"),
                [tfexample.serialize(good), tfexample.serialize(stretched)])
  with pytest.raises(reader.RecordError,
                     match=r"sem-00000-of-00001.tfrecord: record 1: \[PNG label size\] \[2 3\]"):
    reader.validate_records([path], SYNTHETIC)
  options = _options(path, batch_size=1)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"(?s)PNG label size.*sem-00000-of-00001.tfrecord.*record.*1"):
    _take(reader.build_dataset(options, False), 2)


def test_cli_parses_data_commands():
  import argparse
  from kmax_tf.commands import data as data_command
  parser = argparse.ArgumentParser()
  data_command.register(parser.add_subparsers(dest="command"))
  args = parser.parse_args(["data", "convert", "coco", "--coco_root", "r", "--output_dir", "o"])
  assert (args.source, args.num_shards, args.keep_crowd) == ("coco", 1000, False)
  args = parser.parse_args(["data", "synthetic", "--output_dir", "d", "--num_train", "3"])
  assert (args.num_train, args.num_eval, args.image_size, args.seed) == (3, 32, 128, 0)


def test_unlabelled_evaluation(synthetic_dir):
  options = _options(os.path.join(synthetic_dir, "val-*"), batch_size=1)
  options.decode_groundtruth_label = False
  [sample] = _take(reader.build_dataset(options, False), 1)
  assert sorted(sample) == ["image", "image_name", "resized_image", "size_raw"]
