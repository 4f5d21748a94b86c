"""kmax-tf: kMaX-DeepLab (k-means Mask Transformer) in TensorFlow 2 / Keras 3.

Subpackages: `model` (Keras layers and the meta-architecture), `losses`, `ops` (TF Hungarian
matcher), `data` (deeplab2 TFRecords, augmentation, converters, synthetic data), `trainer`
(Orbit training binary), `evaluation` (PQ, mIoU, AP) and `configs` (shipped textprotos).
"""
__version__ = "0.1.0"

# In a source checkout, `trainer/`, `evaluation/` and `configs/` sit next to `kmax_tf/` and are
# mapped to `kmax_tf.trainer`, ... only by installation (setup.py's package_dir). Extending the
# package path makes the same names resolve when the checkout itself is on sys.path (e.g.
# `python -m kmax_tf.trainer.train` run from the repository root, where `-m` puts the checkout
# ahead of an installed copy). Installed copies have no setup.py beside them, so this is inert.
def _extend_path_in_source_checkout():
  import os  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if (os.path.isfile(os.path.join(root, "setup.py"))
      and os.path.isfile(os.path.join(root, "trainer", "__init__.py"))):
    __path__.append(root)  # pylint: disable=undefined-variable


_extend_path_in_source_checkout()
