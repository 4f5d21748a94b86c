"""kmax-tf: kMaX-DeepLab (k-means Mask Transformer) in TensorFlow 2 / Keras 3.

Subpackages: `model` (Keras layers and the meta-architecture), `losses`, `ops` (TF Hungarian
matcher), `data` (deeplab2 TFRecords, augmentation, converters, synthetic data), `trainer`
(Orbit training binary), `evaluation` (PQ, mIoU, AP) and `configs` (shipped textprotos).
"""
__version__ = "0.1.0"
