"""Input pipeline throughput at COCO training settings (crop 1281, resize 1281, scale 0.3-1.7,
simple_classification_policy AutoAugment, panoptic copy-paste 0.5 all/random/none) on synthetic
640x480 JPEG images whose labels use COCO-like ids.

Prints one JSON line: images/s of the full COCO augmentation and, as the in-process baseline,
of the same pipeline without AutoAugment and copy-paste (decode + resize + scale + crop + flip +
targets), and their ratio; also the CPU seconds per image of each (robust to other processes on
a shared machine) and the 1-minute load average before and after.

  python benchmarks/input_pipeline.py [--images 48] [--batch_size 8]
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np


def write_records(directory, num_images, coco_ids=True):
  """One shard of `num_images` 640x480 JPEG scenes with raw panoptic labels (COCO-sized).

  `coco_ids`: label classes remapped to COCO ids (coco_panoptic); else synthetic_panoptic's.
  """
  from kmax_tf.data import shards, synthetic, tfexample
  # synthetic stuff 1-3 -> COCO stuff 81-83, things 4-6 -> COCO things 1-3.
  remap = np.array([0, 81, 82, 83, 1, 2, 3]) if coco_ids else np.arange(7)

  def records():
    for index in range(num_images):
      image, panoptic = synthetic.draw_scene(synthetic.scene_rng(0, "train", index), 640)
      image, panoptic = image[:480], panoptic[:480]
      panoptic = remap[panoptic // 256] * 256 + panoptic % 256
      yield tfexample.make_example(tfexample.encode_image(image, "jpeg"), "jpeg",
                                   f"bench_{index}", panoptic_label=panoptic.astype(np.int32))
  shards.write_shard(os.path.join(directory, "train-00000-of-00001.tfrecord"), records())


def _options(pattern, batch_size, full):
  from kmax_tf.protos import dataset_pb2
  options = dataset_pb2.DatasetOptions(
      dataset="coco_panoptic", file_pattern=[pattern], batch_size=batch_size,
      crop_size=[1281, 1281], min_resize_value=[1281], max_resize_value=[1281],
      thing_id_mask_annotations=True, max_thing_id=128)
  aug = options.augmentations
  aug.min_scale_factor, aug.max_scale_factor, aug.scale_factor_step_size = 0.3, 1.7, 0.1
  if full:
    aug.autoaugment_policy_name = "simple_classification_policy"
    aug.panoptic_copy_paste.panoptic_copy_paste_scale = 0.5
    aug.panoptic_copy_paste.panoptic_copy_paste_thing_option = "all"
    aug.panoptic_copy_paste.panoptic_copy_paste_stuff_option = "random"
    aug.panoptic_copy_paste.panoptic_copy_paste_void_option = "none"
  return options


def _throughput(options, num_batches):
  """(images/s, CPU seconds of this process per image) over `num_batches` batches."""
  from kmax_tf.data import reader
  iterator = iter(reader.build_dataset(options, True))
  next(iterator)  # tracing and warm-up
  start, start_cpu = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    next(iterator)
  num_images = num_batches * options.batch_size
  return (num_images / (time.perf_counter() - start),
          (time.process_time() - start_cpu) / num_images)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--images", type=int, default=48, help="images timed per pipeline")
  parser.add_argument("--batch_size", type=int, default=8)
  args = parser.parse_args()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  num_batches = max(1, args.images // args.batch_size)
  with tempfile.TemporaryDirectory() as directory:
    write_records(directory, 64)
    pattern = os.path.join(directory, "train-*.tfrecord")
    load_before = os.getloadavg()[0]
    baseline, baseline_cpu = _throughput(_options(pattern, args.batch_size, False), num_batches)
    full, full_cpu = _throughput(_options(pattern, args.batch_size, True), num_batches)
  print(json.dumps({
      "benchmark": "input_pipeline", "crop_size": 1281, "source_size": [480, 640],
      "batch_size": args.batch_size, "images_timed": num_batches * args.batch_size,
      "cpu_count": os.cpu_count(),
      "images_per_s_full_coco_augmentation": round(full, 2),
      "images_per_s_baseline_no_autoaugment_no_copy_paste": round(baseline, 2),
      "ratio_full_to_baseline": round(full / baseline, 3),
      # On a shared machine wall-clock throughput depends on the other processes; the CPU time
      # this process spends per image does much less, and 2 / it is the rate 2 free cores give.
      "cpu_s_per_image_full": round(full_cpu, 3),
      "cpu_s_per_image_baseline": round(baseline_cpu, 3),
      "images_per_s_full_on_2_free_cores_from_cpu_time": round(2 / full_cpu, 2),
      "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
      "target_images_per_s": 5.0}))


if __name__ == "__main__":
  main()
