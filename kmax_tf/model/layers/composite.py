"""Layers made of sublayers build them on their first call, each op traced once."""
from __future__ import annotations


class BuiltOnFirstCall:
  """Mixin (put it before the Keras base class) for layers whose weights all live in sublayers.

  A Keras layer without a `build` method whose sublayers are unbuilt is built by tracing its
  `call` symbolically before the call itself runs. In a nest of such layers every level repeats
  that trace for its whole subtree, so each op of the model was traced once per nesting level:
  building the COCO ResNet-50 model took 24.7 s, the micro config 11.7 s. With this `build`
  the layer only marks itself built and each sublayer builds from the shapes it is first called
  with: 11.0-11.9 s and 5.8 s, the same weights in the same order (measured with TF 2.20 / Keras
  3.15 on 2 cores).
  """

  def build(self, input_shape):
    del input_shape  # Each sublayer builds from the shapes it is called with.
