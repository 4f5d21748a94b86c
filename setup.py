"""Packaging for kmax-tf.

The repository keeps `trainer/` and `evaluation/` at the top level (next to `kmax_tf/`), but they
install as `kmax_tf.trainer` and `kmax_tf.evaluation` so that nothing generic lands in
site-packages. The protobuf modules generated from `protos/*.proto` are committed under
`kmax_tf/protos/` (tests/test_protos.py fails when they are stale; `python protos/generate.py`
regenerates them), so installing needs no protoc.
"""
import setuptools

_PACKAGE_DIRS = {
    "kmax_tf": "kmax_tf",
    "kmax_tf.trainer": "trainer",
    "kmax_tf.evaluation": "evaluation",
    # Shipped so that `kmax-tf demo` and `--config_file synthetic/...` work from an installed wheel.
    "kmax_tf.configs": "configs",
}


def _packages():
  packages = []
  for name, directory in _PACKAGE_DIRS.items():
    packages.append(name)
    packages.extend(f"{name}.{sub}" for sub in setuptools.find_packages(directory))
  return packages


setuptools.setup(
    name="kmax-tf",
    version="0.1.0",
    description="kMaX-DeepLab (k-means Mask Transformer) in TensorFlow 2 / Keras 3, "
    "compatible with deeplab2 configs.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=_packages(),
    package_dir=_PACKAGE_DIRS,
    package_data={"kmax_tf": ["dataset_metadata/*.json"],
                  "kmax_tf.configs": ["*/*.textproto", "*/*/*.textproto"]},
    install_requires=[
        "tensorflow==2.20.*",
        "tf-models-official==2.20.*",
        "keras>=3.10",
        "pycocotools",
        "numpy",
        "scipy",
        # The committed *_pb2.py modules are protoc 7.35 gencode, which needs a runtime at least as new.
        "protobuf>=7.35.1",
        "absl-py",
        "pillow",
        "tqdm",  # Converter progress bars.
        "opencv-python-headless",  # Fast PNG decoding in `kmax-tf eval pq` (libpng).
        # libdeflate: inflates panoptic PNGs ~17x faster than zlib (`kmax-tf eval pq`).
        "deflate>=0.9",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist", "grpcio-tools"],
    },
    entry_points={"console_scripts": ["kmax-tf=kmax_tf.cli:main"]},
)
